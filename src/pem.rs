//! The PEM files a config names: CA bundles, certificates and private keys. One reader for
//! all of them, so that `check-config`, `run` and the web config judge a file alike.

use std::path::Path;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a PEM file cannot be used; names the file.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Bad { path: String, message: String },
}

fn read(path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|source| PemError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn bad(path: &Path, message: impl ToString) -> PemError {
    PemError::Bad {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Every certificate in the file: at least one, and every `CERTIFICATE` block well formed.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(path, format!("malformed PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad(path, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// `store` with every certificate of the file added as a trust anchor; a certificate that
/// cannot be one refuses the whole file.
pub fn add_roots(path: &Path, mut store: RootCertStore) -> Result<RootCertStore, PemError> {
    for cert in certificates(path)? {
        store
            .add(cert)
            .map_err(|e| bad(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(store)
}

/// The file's private key (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| bad(path, format!("no usable PEM private key: {e}")))
}
