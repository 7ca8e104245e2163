//! The interception CA: the certificates remedy presents to the connector inside a `CONNECT`
//! tunnel, and the files that let the connector trust them.
//!
//! remedy's own CA is made at start: an ECDSA P-256 key that lives only in this process's
//! memory, and X.509 name constraints that permit the sources' hosts and nothing else, so
//! the certificate is worthless for any other name even to whoever reads it from the shared
//! directory. It is valid [`CA_LIFETIME`]; a process that runs longer makes a successor
//! [`CA_RENEW_BEFORE`] its end. A reload that adds hosts makes one more CA for just those
//! hosts. Every CA in use is written to `ca.pem` and `bundle.pem`; the older ones stay until
//! they expire, so a connector that read the files earlier keeps working for the hosts it knew.
//!
//! A CA of the user's (`ca_cert_file`, `ca_key_file`) is checked at start and signs for
//! every host; its constraints, if any, are its own.
//!
//! Leaf certificates have keys of their own, are cached per host, are renewed at half their
//! life and never outlive the CA that signed them. Nothing here logs a key.

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    NameConstraints,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// How long a CA remedy makes is valid.
pub const CA_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long before its end a CA gets a successor.
pub const CA_RENEW_BEFORE: Duration = Duration::from_secs(2 * 24 * 3600);
/// The longest a leaf certificate is valid; it is renewed at half of it.
pub const LEAF_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Certificates start this long before they are made, for clocks a little behind.
const BACKDATE: Duration = Duration::from_secs(300);

/// Why the CA or a certificate cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {message}")]
    File {
        key: &'static str,
        path: String,
        message: String,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot make a certificate: {0}")]
    Make(#[from] rcgen::Error),
    #[error("cannot serve a certificate: {0}")]
    Serve(#[from] rustls::Error),
}

impl CaError {
    /// The config key the error is about.
    pub fn key(&self) -> &'static str {
        match self {
            CaError::File { key, .. } => key,
            _ => "proxy.intercept.ca_dir",
        }
    }
}

/// One CA that signs leaves.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    not_before: SystemTime,
    not_after: SystemTime,
    /// The hosts its name constraints permit; `None` for the user's CA, which signs for any.
    permits: Option<Vec<String>>,
}

impl Ca {
    fn covers(&self, host: &str) -> bool {
        self.permits.as_ref().is_none_or(|p| {
            p.iter().any(|c| {
                host == c
                    || (host.len() > c.len()
                        && host.ends_with(c.as_str())
                        && host.as_bytes()[host.len() - c.len() - 1] == b'.')
            })
        })
    }

    /// Signs a fresh leaf for `host`, valid from now (a little before) for at most
    /// [`LEAF_LIFETIME`] and never past the CA's own end.
    fn sign(&self, host: &str, now: SystemTime) -> Result<Leaf, CaError> {
        let key = KeyPair::generate()?;
        // The host is the subject alternative name, as an IP address or a DNS name. A DNS
        // leaf repeats it as its common name; an IP leaf has none, since OpenSSL checks a
        // common name against the CA's DNS constraints and an address is not one.
        let mut params = CertificateParams::new(vec![host.to_owned()])?;
        params.distinguished_name = DistinguishedName::new();
        if host.parse::<IpAddr>().is_err() {
            params.distinguished_name.push(DnType::CommonName, host);
        }
        let not_before = (now - BACKDATE).max(self.not_before);
        let not_after = (now + LEAF_LIFETIME).min(self.not_after);
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?.der().clone();
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(
                    vec![cert.clone()],
                    PrivateKeyDer::Pkcs8(key.serialize_der().into()),
                )?;
        // A connector that offers HTTP/2 gets it (gRPC clients refuse a TLS connection that
        // did not negotiate it); one that offers only HTTP/1.1, or nothing, gets that.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let renew_at = not_before + (not_after.duration_since(not_before).unwrap_or_default() / 2);
        Ok(Leaf {
            config: Arc::new(config),
            cert,
            renew_at,
        })
    }
}

/// Makes a CA whose name constraints permit `hosts` (and their subdomains) only.
fn make_ca(hosts: &[String], now: SystemTime) -> Result<Ca, CaError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "remedy");
    params
        .distinguished_name
        .push(DnType::CommonName, "remedy interception CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.name_constraints = Some(name_constraints(hosts));
    let not_before = now - BACKDATE;
    let not_after = now + CA_LIFETIME;
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    let cert = params.self_signed(&key)?;
    Ok(Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
        not_before,
        not_after,
        permits: Some(hosts.to_vec()),
    })
}

/// The sources' hosts permitted (DNS names with their subdomains, IP addresses alone), and
/// every address of a family no source lists excluded: with DNS names only permitted, a
/// verifier would otherwise take a certificate for any IP address at all.
fn name_constraints(hosts: &[String]) -> NameConstraints {
    let ips: Vec<IpAddr> = hosts.iter().filter_map(|h| h.parse().ok()).collect();
    let permitted_subtrees = hosts
        .iter()
        .map(|h| match h.parse::<IpAddr>() {
            Ok(ip) => GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(ip, max_prefix(ip))),
            Err(_) => GeneralSubtree::DnsName(h.clone()),
        })
        .collect();
    let every = |ip: IpAddr| GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(ip, 0));
    let mut excluded_subtrees = Vec::new();
    if !ips.iter().any(IpAddr::is_ipv4) {
        excluded_subtrees.push(every(IpAddr::from([0u8; 4])));
    }
    if !ips.iter().any(IpAddr::is_ipv6) {
        excluded_subtrees.push(every(IpAddr::from([0u16; 8])));
    }
    NameConstraints {
        permitted_subtrees,
        excluded_subtrees,
    }
}

fn max_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

/// A CA of the user's, read and checked.
pub struct UserCa(Ca);

impl UserCa {
    /// Reads the certificate and its PKCS#8 key; refuses a certificate that is not a CA, a
    /// key that is not the certificate's, and a CA that is not valid now.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Self, CaError> {
        let cert_err = |message: String| CaError::File {
            key: "proxy.intercept.ca_cert_file",
            path: cert_file.display().to_string(),
            message,
        };
        let key_err = |message: String| CaError::File {
            key: "proxy.intercept.ca_key_file",
            path: key_file.display().to_string(),
            message,
        };
        let der = crate::pem::certificates(cert_file)
            .map_err(|e| cert_err(strip_path(e, cert_file)))?
            .swap_remove(0);
        let key_pem = std::fs::read_to_string(key_file)
            .map_err(|e| key_err(format!("cannot read it: {e}")))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|_| {
            key_err(
                "holds no PKCS#8 private key (\"BEGIN PRIVATE KEY\"); convert one with \
                 `openssl pkcs8 -topk8 -nocrypt`, or set cert-manager's \
                 privateKey.encoding: PKCS8"
                    .into(),
            )
        })?;
        let (_, x509) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| cert_err(format!("not a readable X.509 certificate: {e}")))?;
        let is_ca = x509
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|b| b.value.ca);
        if !is_ca {
            return Err(cert_err(
                "is not a CA certificate (its basicConstraints do not say CA:TRUE)".into(),
            ));
        }
        if let Ok(Some(ku)) = x509.key_usage()
            && !ku.value.key_cert_sign()
        {
            return Err(cert_err(
                "its keyUsage does not allow signing certificates (keyCertSign)".into(),
            ));
        }
        if x509.public_key().subject_public_key.data.as_ref()
            != rcgen::PublicKeyData::der_bytes(&key)
        {
            return Err(key_err(format!(
                "this key does not belong to the certificate in {}",
                cert_file.display()
            )));
        }
        let at = |t: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
        let not_before = at(x509.validity().not_before.timestamp());
        let not_after = at(x509.validity().not_after.timestamp());
        let now = SystemTime::now();
        if now >= not_after || now < not_before {
            return Err(cert_err(format!(
                "is not valid now (valid from {} to {})",
                httpdate::fmt_http_date(not_before),
                httpdate::fmt_http_date(not_after)
            )));
        }
        let issuer = Issuer::from_ca_cert_der(&der, key)
            .map_err(|e| cert_err(format!("cannot sign with it: {e}")))?;
        Ok(UserCa(Ca {
            issuer,
            pem: pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec())),
            not_before,
            not_after,
            permits: None,
        }))
    }
}

fn strip_path(e: crate::pem::PemError, path: &Path) -> String {
    let text = e.to_string();
    let prefix = format!("{}: ", path.display());
    text.strip_prefix(&prefix)
        .map(str::to_owned)
        .unwrap_or(text)
}

/// A leaf in the cache.
struct Leaf {
    config: Arc<ServerConfig>,
    cert: CertificateDer<'static>,
    renew_at: SystemTime,
}

struct State {
    /// Oldest first; the newest CA that covers a host signs its leaves.
    cas: Vec<Ca>,
    leaves: HashMap<String, Leaf>,
    /// The hosts interception serves.
    hosts: Vec<String>,
}

/// The CA (or CAs) in use, the leaf cache and the files in `ca_dir`.
pub struct Authority {
    state: Mutex<State>,
    dir: PathBuf,
    /// The user brought the CA: remedy never makes one.
    users: bool,
}

impl Authority {
    /// Makes (or loads) the CA for `hosts` and writes `ca.pem` and `bundle.pem` to `dir`.
    pub fn new(
        dir: &Path,
        user: Option<(&Path, &Path)>,
        hosts: Vec<String>,
        now: SystemTime,
    ) -> Result<Self, CaError> {
        let (ca, users) = match user {
            Some((cert, key)) => (UserCa::load(cert, key)?.0, true),
            None => (make_ca(&hosts, now)?, false),
        };
        let authority = Authority {
            state: Mutex::new(State {
                cas: vec![ca],
                leaves: HashMap::new(),
                hosts,
            }),
            dir: dir.to_owned(),
            users,
        };
        authority.write_files(&authority.lock())?;
        Ok(authority)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The hosts after a reload: hosts no CA covers get a CA of their own, and their leaves
    /// are made on first use.
    pub fn set_hosts(&self, hosts: Vec<String>, now: SystemTime) -> Result<(), CaError> {
        let mut state = self.lock();
        state.leaves.retain(|h, _| hosts.contains(h));
        let uncovered: Vec<String> = hosts
            .iter()
            .filter(|h| !state.cas.iter().any(|ca| ca.covers(h)))
            .cloned()
            .collect();
        state.hosts = hosts;
        if uncovered.is_empty() {
            return Ok(());
        }
        tracing::info!(
            hosts = ?uncovered,
            "new hosts: a CA for them is added to ca.pem and bundle.pem"
        );
        state.cas.push(make_ca(&uncovered, now)?);
        self.write_files(&state)
    }

    /// The TLS server config that presents `host`'s leaf, made or renewed as needed.
    pub fn server_config(&self, host: &str, now: SystemTime) -> Result<Arc<ServerConfig>, CaError> {
        self.leaf(host, now, |leaf| leaf.config.clone())
    }

    /// The leaf certificate `host` is served with now.
    pub fn certificate(
        &self,
        host: &str,
        now: SystemTime,
    ) -> Result<CertificateDer<'static>, CaError> {
        self.leaf(host, now, |leaf| leaf.cert.clone())
    }

    /// A leaf for any name at all from the newest CA, past the check that it covers the name:
    /// what the tests use to show that the name constraints make such a leaf worthless.
    #[doc(hidden)]
    pub fn sign_unchecked(&self, host: &str) -> Result<String, CaError> {
        let state = self.lock();
        let ca = state.cas.last().expect("an authority has a CA");
        let leaf = ca.sign(host, SystemTime::now())?;
        Ok(pem::encode(&pem::Pem::new(
            "CERTIFICATE",
            leaf.cert.to_vec(),
        )))
    }

    fn leaf<T>(
        &self,
        host: &str,
        now: SystemTime,
        take: impl Fn(&Leaf) -> T,
    ) -> Result<T, CaError> {
        let mut state = self.lock();
        self.renew_cas(&mut state, now)?;
        if let Some(leaf) = state.leaves.get(host)
            && now < leaf.renew_at
        {
            return Ok(take(leaf));
        }
        let ca = state
            .cas
            .iter()
            .rev()
            .find(|ca| ca.covers(host) && ca.not_after > now)
            .ok_or_else(|| CaError::File {
                key: "proxy.intercept.ca_cert_file",
                path: host.to_owned(),
                message: "no valid CA covers this host".into(),
            })?;
        let leaf = ca.sign(host, now)?;
        tracing::debug!(host, "leaf certificate made");
        let taken = take(&leaf);
        state.leaves.insert(host.to_owned(), leaf);
        Ok(taken)
    }

    /// When the CAs next need a look: the newest's renewal (for remedy's own), or the end of
    /// any, which then leaves the files.
    pub fn next_renewal(&self) -> SystemTime {
        let state = self.lock();
        let ends = state.cas.iter().map(|ca| ca.not_after);
        let renewal = state
            .cas
            .last()
            .filter(|_| !self.users)
            .map(|ca| ca.not_after - CA_RENEW_BEFORE);
        ends.chain(renewal).min().unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// Renews and prunes the CAs as of `now`, as the first leaf made after it would.
    pub fn renew(&self, now: SystemTime) -> Result<(), CaError> {
        let mut state = self.lock();
        self.renew_cas(&mut state, now)
    }

    /// Drops CAs that have expired and, for remedy's own, makes a successor once the newest
    /// is within [`CA_RENEW_BEFORE`] of its end.
    fn renew_cas(&self, state: &mut State, now: SystemTime) -> Result<(), CaError> {
        let before = state.cas.len();
        state.cas.retain(|ca| ca.not_after > now);
        let newest_ends = state.cas.last().map(|ca| ca.not_after);
        let renew = !self.users && newest_ends.is_none_or(|end| now + CA_RENEW_BEFORE >= end);
        if renew {
            let hosts = state.hosts.clone();
            state.cas.push(make_ca(&hosts, now)?);
            tracing::info!("interception CA renewed; ca.pem and bundle.pem rewritten");
        }
        if renew || state.cas.len() != before {
            self.write_files(state)?;
        }
        Ok(())
    }

    /// `ca.pem` (every CA in use) and `bundle.pem` (the public roots, then the CAs), each
    /// written whole to a temporary file and renamed over the old one.
    fn write_files(&self, state: &State) -> Result<(), CaError> {
        let cas: String = state.cas.iter().map(|ca| ca.pem.as_str()).collect();
        let mut bundle = String::with_capacity(256 * 1024);
        for root in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
            bundle.push_str(&pem::encode(&pem::Pem::new(
                "CERTIFICATE",
                CertificateDer::as_ref(root).to_vec(),
            )));
        }
        bundle.push_str(&cas);
        std::fs::create_dir_all(&self.dir).map_err(|source| CaError::Write {
            path: self.dir.display().to_string(),
            source,
        })?;
        write_atomically(&self.dir.join("ca.pem"), cas.as_bytes())?;
        write_atomically(&self.dir.join("bundle.pem"), bundle.as_bytes())
    }

    /// The CA certificates in use, PEM, oldest first.
    pub fn ca_pem(&self) -> String {
        self.lock().cas.iter().map(|ca| ca.pem.as_str()).collect()
    }
}

/// Keeps the interception CA renewed on time whether or not a connector calls: sleeps until
/// the next renewal is due (an hour at most, so that a CA a reload adds, or a changed clock,
/// is noticed), then renews. `authority` is the CA in use now, if interception is on.
pub async fn keep_renewed(
    authority: impl Fn() -> Option<Arc<Authority>>,
    now: impl Fn() -> SystemTime,
) {
    const AT_MOST: Duration = Duration::from_secs(3600);
    loop {
        let wait = authority().map_or(AT_MOST, |a| {
            a.next_renewal()
                .duration_since(now())
                .unwrap_or_default()
                .clamp(Duration::from_secs(1), AT_MOST)
        });
        tokio::time::sleep(wait).await;
        if let Some(a) = authority()
            && let Err(e) = a.renew(now())
        {
            tracing::error!(error = %e, "the interception CA could not be renewed");
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CaError> {
    let err = |source| CaError::Write {
        path: path.display().to_string(),
        source,
    };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("ca");
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let mut file = std::fs::File::create(&tmp).map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests;
