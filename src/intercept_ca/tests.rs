use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::*;

fn hosts(names: &[&str]) -> Vec<String> {
    names.iter().map(|h| h.to_string()).collect()
}

/// remedy's own CA for `names`, its files in a fresh folder, made now.
fn own_ca(names: &[&str]) -> (tempfile::TempDir, Authority, SystemTime) {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let a = Authority::new(dir.path(), None, hosts(names), now).unwrap();
    (dir, a, now)
}

fn cas_in(dir: &Path) -> Vec<CertificateDer<'static>> {
    crate::pem::certificates(&dir.join("ca.pem")).unwrap()
}

/// Verifies `leaf` for `name` at `at` against the CAs in `dir`'s ca.pem, as a connector would.
fn verify(dir: &Path, leaf: &CertificateDer<'_>, name: &str, at: SystemTime) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas_in(dir) {
        roots.add(ca).unwrap();
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    let at = UnixTime::since_unix_epoch(at.duration_since(SystemTime::UNIX_EPOCH).unwrap());
    verifier
        .verify_server_cert(
            leaf,
            &[],
            &ServerName::try_from(name.to_owned()).unwrap(),
            &[],
            at,
        )
        .map(drop)
        .map_err(|e| e.to_string())
}

fn not_after(cert: &[u8]) -> SystemTime {
    let (_, x) = x509_parser::parse_x509_certificate(cert).unwrap();
    SystemTime::UNIX_EPOCH + Duration::from_secs(x.validity().not_after.timestamp() as u64)
}

#[test]
fn a_leaf_for_a_listed_host_verifies_and_one_for_another_name_does_not() {
    let (dir, a, now) = own_ca(&["api.example.test"]);
    let leaf = a.certificate("api.example.test", now).unwrap();
    verify(dir.path(), &leaf, "api.example.test", now).unwrap();

    let outside = a.sign_unchecked("bank.example.org").unwrap();
    let outside = CertificateDer::from_pem_slice(outside.as_bytes()).unwrap();
    let refused = verify(dir.path(), &outside, "bank.example.org", now).unwrap_err();
    assert!(
        refused.contains("NameConstraint") || refused.contains("name constraint"),
        "{refused}"
    );
}

#[test]
fn leaves_are_cached_then_renewed_at_half_life_with_a_key_of_their_own() {
    let (dir, a, now) = own_ca(&["api.example.test"]);
    let first = a.certificate("api.example.test", now).unwrap();
    let again = a
        .certificate("api.example.test", now + Duration::from_secs(60))
        .unwrap();
    assert_eq!(first, again, "cached within its half life");
    let later = now + LEAF_LIFETIME / 2 + Duration::from_secs(1);
    let renewed = a.certificate("api.example.test", later).unwrap();
    assert_ne!(first, renewed);
    let key_of = |c: &CertificateDer<'_>| {
        let (_, x) = x509_parser::parse_x509_certificate(c).unwrap();
        x.public_key().raw.to_vec()
    };
    assert_ne!(key_of(&first), key_of(&renewed), "a fresh key per leaf");
    let ca = cas_in(dir.path()).swap_remove(0);
    assert_ne!(key_of(&first), key_of(&ca), "never the CA's key");
}

#[test]
fn the_ca_is_renewed_before_its_end_and_no_leaf_outlives_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let start = SystemTime::now();
    let a = Authority::new(dir.path(), None, hosts(&["api.example.test"]), start).unwrap();
    let ca_end = not_after(&cas_in(dir.path())[0]);

    // Just before renewal: the first CA signs, and the leaf ends with it at the latest.
    let before = ca_end - CA_RENEW_BEFORE - Duration::from_secs(60);
    let leaf = a.certificate("api.example.test", before).unwrap();
    assert!(not_after(&leaf) <= ca_end);
    assert_eq!(cas_in(dir.path()).len(), 1);

    // Within CA_RENEW_BEFORE of the end: a successor is written beside the first CA.
    let renewing = ca_end - CA_RENEW_BEFORE + Duration::from_secs(60);
    let leaf = a.certificate("api.example.test", renewing).unwrap();
    assert_eq!(cas_in(dir.path()).len(), 2, "old and new CA both trusted");
    verify(dir.path(), &leaf, "api.example.test", renewing).unwrap();
    let successor_end = not_after(&cas_in(dir.path())[1]);
    assert!(successor_end > ca_end);

    // Past the first CA's end: it is gone from the files.
    let after = ca_end + Duration::from_secs(60);
    let leaf = a
        .certificate("api.example.test", after + LEAF_LIFETIME)
        .unwrap();
    assert_eq!(cas_in(dir.path()).len(), 1);
    assert!(not_after(&leaf) <= successor_end);
}

#[test]
fn a_reload_that_adds_a_host_adds_a_ca_for_it_and_keeps_the_first() {
    let (dir, a, now) = own_ca(&["a.example.test"]);
    let first = a.certificate("a.example.test", now).unwrap();
    a.set_hosts(hosts(&["a.example.test", "b.example.test"]), now)
        .unwrap();
    assert_eq!(cas_in(dir.path()).len(), 2);
    assert_eq!(a.certificate("a.example.test", now).unwrap(), first);
    let b = a.certificate("b.example.test", now).unwrap();
    verify(dir.path(), &b, "b.example.test", now).unwrap();
    // The same hosts again add nothing.
    a.set_hosts(hosts(&["a.example.test", "b.example.test"]), now)
        .unwrap();
    assert_eq!(cas_in(dir.path()).len(), 2);
}

#[test]
fn the_files_hold_certificates_only_and_the_bundle_ends_with_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let a = Authority::new(
        dir.path(),
        None,
        hosts(&["api.example.test"]),
        SystemTime::now(),
    )
    .unwrap();
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["bundle.pem", "ca.pem"], "no key, no temporary file");
    let ca = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    let bundle = std::fs::read_to_string(dir.path().join("bundle.pem")).unwrap();
    for text in [&ca, &bundle] {
        assert!(!text.contains("PRIVATE"));
    }
    assert!(bundle.ends_with(&ca));
    assert_eq!(a.ca_pem(), ca);
    let roots = bundle.matches("BEGIN CERTIFICATE").count() - 1;
    assert_eq!(roots, webpki_root_certs::TLS_SERVER_ROOT_CERTS.len());
}

/// A user's CA, a leaf certificate (not a CA) and their keys, in `dir`.
fn user_files(dir: &Path) -> [PathBuf; 4] {
    let ca_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca = p.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["x.test".to_owned()])
        .unwrap()
        .self_signed(&leaf_key)
        .unwrap();
    let files = [
        ("ca.crt", ca.pem()),
        ("ca.key", ca_key.serialize_pem()),
        ("leaf.crt", leaf.pem()),
        ("leaf.key", leaf_key.serialize_pem()),
    ];
    files.map(|(name, text)| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    })
}

#[test]
fn a_users_ca_signs_for_any_host_and_bad_pairs_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let [ca, ca_key, leaf, leaf_key] = user_files(dir.path());
    let out = dir.path().join("out");
    let now = SystemTime::now();
    let a = Authority::new(&out, Some((&ca, &ca_key)), hosts(&["x.test"]), now).unwrap();
    let cert = a.certificate("x.test", now).unwrap();
    verify(&out, &cert, "x.test", now).unwrap();
    // A host added by a reload needs no new CA.
    a.set_hosts(hosts(&["x.test", "y.test"]), now).unwrap();
    assert_eq!(cas_in(&out).len(), 1);
    verify(&out, &a.certificate("y.test", now).unwrap(), "y.test", now).unwrap();

    let not_ca = UserCa::load(&leaf, &leaf_key).err().unwrap();
    assert_eq!(not_ca.key(), "proxy.intercept.ca_cert_file");
    assert!(not_ca.to_string().contains("leaf.crt"), "{not_ca}");
    assert!(not_ca.to_string().contains("not a CA"), "{not_ca}");

    let mismatch = UserCa::load(&ca, &leaf_key).err().unwrap();
    assert_eq!(mismatch.key(), "proxy.intercept.ca_key_file");
    assert!(mismatch.to_string().contains("leaf.key"), "{mismatch}");
    assert!(
        mismatch.to_string().contains("does not belong"),
        "{mismatch}"
    );

    let no_key = UserCa::load(&ca, &leaf).err().unwrap();
    assert_eq!(no_key.key(), "proxy.intercept.ca_key_file");
    assert!(no_key.to_string().contains("PKCS#8"), "{no_key}");
}

fn der(pem_text: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem_text.as_bytes()).unwrap()
}

#[test]
fn a_ca_for_dns_hosts_refuses_a_leaf_for_any_ip_address() {
    let (dir, a, now) = own_ca(&["api.example.test"]);
    for ip in ["10.1.2.3", "127.0.0.1", "::1"] {
        let leaf = der(&a.sign_unchecked(ip).unwrap());
        assert!(
            verify(dir.path(), &leaf, ip, now).is_err(),
            "a leaf for {ip} verified under a CA that names only DNS hosts"
        );
    }
}

#[test]
fn a_listed_ip_is_the_only_address_permitted() {
    let (dir, a, now) = own_ca(&["127.0.0.1", "api.example.test"]);
    let leaf = a.certificate("127.0.0.1", now).unwrap();
    assert_eq!(verify(dir.path(), &leaf, "127.0.0.1", now), Ok(()));
    let dns = a.certificate("api.example.test", now).unwrap();
    assert_eq!(verify(dir.path(), &dns, "api.example.test", now), Ok(()));
    for other in ["127.0.0.2", "::1"] {
        let leaf = der(&a.sign_unchecked(other).unwrap());
        assert!(verify(dir.path(), &leaf, other, now).is_err(), "{other}");
    }
}

#[test]
fn an_ip_leaf_names_its_address_as_a_san_and_has_no_common_name() {
    let (_dir, a, now) = own_ca(&["127.0.0.1", "api.example.test"]);
    let leaf = a.certificate("127.0.0.1", now).unwrap();
    let (_, x) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    assert_eq!(x.subject().iter_common_name().count(), 0);
    let san = x.subject_alternative_name().unwrap().unwrap();
    assert_eq!(
        san.value.general_names,
        [x509_parser::extensions::GeneralName::IPAddress(&[
            127, 0, 0, 1
        ])]
    );
    let dns = a.certificate("api.example.test", now).unwrap();
    let (_, x) = x509_parser::parse_x509_certificate(&dns).unwrap();
    assert_eq!(
        x.subject().iter_common_name().next().unwrap().as_str(),
        Ok("api.example.test")
    );
}

/// No `CONNECT` comes, yet the successor is written before the CA's end, and the old CA leaves
/// the files once it has expired: the renewal runs on a timer (here tokio's, paused and moved
/// on, with the clock following it).
#[tokio::test(start_paused = true)]
async fn the_ca_is_renewed_on_time_without_a_connect() {
    let (dir, a, start) = own_ca(&["api.example.test"]);
    let a = Arc::new(a);
    let t0 = tokio::time::Instant::now();
    let held = a.clone();
    let renewing = tokio::spawn(keep_renewed(
        move || Some(held.clone()),
        move || start + t0.elapsed(),
    ));
    let hour = Duration::from_secs(3600);
    tokio::time::sleep(CA_LIFETIME - CA_RENEW_BEFORE - hour).await;
    assert_eq!(cas_in(dir.path()).len(), 1, "renewed too early");
    tokio::time::sleep(2 * hour).await;
    let two = cas_in(dir.path());
    assert_eq!(two.len(), 2, "no successor before the CA's end");
    tokio::time::sleep(CA_RENEW_BEFORE).await;
    let one = cas_in(dir.path());
    assert_eq!(one, two[1..], "the expired CA is still in ca.pem");
    renewing.abort();
}
