//! `--web.config.file`: TLS and basic auth for the admin listener, in the format of the
//! Prometheus exporter-toolkit, so the file users already have for node_exporter works here.
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt
//!   key_file: server.key
//!   client_ca_file: ca.crt            # optional: verify client certificates
//!   client_auth_type: RequireAndVerifyClientCert
//!   min_version: TLS12
//! basic_auth_users:
//!   prometheus: $2y$10$...            # bcrypt hash
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine;
use serde::Deserialize;

/// The parsed file, ready to serve.
pub struct WebConfig {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    users: BTreeMap<String, String>,
    /// `Authorization` values already verified: bcrypt is slow on purpose, scrapes are frequent.
    verified: Mutex<HashSet<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    tls_server_config: Option<TlsFile>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
    #[serde(default)]
    http_server_config: Option<HttpFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: PathBuf,
    key_file: PathBuf,
    #[serde(default)]
    client_ca_file: Option<PathBuf>,
    #[serde(default)]
    client_auth_type: Option<String>,
    #[serde(default)]
    min_version: Option<String>,
    #[serde(default)]
    max_version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    #[serde(default)]
    http2: Option<bool>,
}

/// Why the web config cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct WebConfigError {
    file: String,
    message: String,
}

const MAX_CACHED: usize = 64;

impl WebConfig {
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let file = path.display().to_string();
        let fail = |message: String| WebConfigError {
            file: file.clone(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        let parsed: File = serde_yaml::from_str(&text).map_err(|e| fail(e.to_string()))?;
        // Relative paths are relative to the web config file, as in the exporter-toolkit.
        let base = path.parent().unwrap_or(Path::new("."));
        let tls = match parsed.tls_server_config {
            Some(t) => Some(Arc::new(tls_config(&t, base).map_err(fail)?)),
            None => None,
        };
        for (user, hash) in &parsed.basic_auth_users {
            if !hash.starts_with("$2") {
                return Err(fail(format!(
                    "basic_auth_users.{user}: not a bcrypt hash (make one with `htpasswd -nBC 10 {user}`)"
                )));
            }
        }
        if let Some(h) = parsed.http_server_config
            && h.http2 == Some(true)
        {
            tracing::debug!(
                "http_server_config.http2 has no effect: the admin listener speaks HTTP/1.1"
            );
        }
        Ok(WebConfig {
            tls,
            users: parsed.basic_auth_users,
            verified: Mutex::new(HashSet::new()),
        })
    }

    /// Whether basic auth is required at all.
    pub fn has_users(&self) -> bool {
        !self.users.is_empty()
    }

    /// Whether a request with this `Authorization` header may be served.
    pub fn authorized(&self, authorization: Option<&[u8]>) -> bool {
        if self.users.is_empty() {
            return true;
        }
        let Some(value) = authorization.and_then(|v| std::str::from_utf8(v).ok()) else {
            return false;
        };
        if self.cache().contains(value) {
            return true;
        }
        let Some(encoded) = value.strip_prefix("Basic ") else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Ok(pair) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, password)) = pair.split_once(':') else {
            return false;
        };
        let ok = self
            .users
            .get(user)
            .is_some_and(|hash| bcrypt::verify(password, hash).unwrap_or(false));
        if ok {
            let mut cache = self.cache();
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(value.to_owned());
        }
        ok
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn tls_config(t: &TlsFile, base: &Path) -> Result<rustls::ServerConfig, String> {
    let certs = crate::pem::certificates(&base.join(&t.cert_file))
        .map_err(|e| format!("tls_server_config.cert_file: {e}"))?;
    let key = crate::pem::private_key(&base.join(&t.key_file))
        .map_err(|e| format!("tls_server_config.key_file: {e}"))?;
    let versions: &[&rustls::SupportedProtocolVersion] = match (
        t.min_version.as_deref().unwrap_or("TLS12"),
        t.max_version.as_deref().unwrap_or("TLS13"),
    ) {
        ("TLS12", "TLS13") => &[&rustls::version::TLS13, &rustls::version::TLS12],
        ("TLS13", "TLS13") => &[&rustls::version::TLS13],
        ("TLS12", "TLS12") => &[&rustls::version::TLS12],
        (min, max) => {
            return Err(format!(
                "tls_server_config: versions {min}..{max} not supported: use TLS12 or TLS13"
            ));
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let auth = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let builder = match (auth, &t.client_ca_file) {
        ("NoClientCert", _) => builder.with_no_client_auth(),
        ("RequireAndVerifyClientCert" | "VerifyClientCertIfGiven", Some(ca)) => {
            let roots = crate::pem::add_roots(&base.join(ca), rustls::RootCertStore::empty())
                .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?;
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let verifier = if auth == "VerifyClientCertIfGiven" {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?,
            )
        }
        (other, None) if other != "NoClientCert" => {
            return Err(format!(
                "tls_server_config.client_auth_type {other} needs client_ca_file"
            ));
        }
        (other, _) => {
            return Err(format!(
                "tls_server_config.client_auth_type {other:?} is not supported: use NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert"
            ));
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
