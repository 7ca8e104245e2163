//! The admin listener can be protected as Prometheus exporters are: `--web.config.file` with
//! a TLS certificate and bcrypt basic-auth users (the exporter-toolkit format).

use std::process::Command;

use crate::support::{Config, Remedy, Upstream, source};

struct Secured {
    remedy: Remedy,
    ca: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn secured() -> Secured {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    std::fs::write(dir.path().join("server.crt"), ck.cert.pem()).unwrap();
    std::fs::write(
        dir.path().join("server.key"),
        ck.signing_key.serialize_pem(),
    )
    .unwrap();
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  prometheus: '{hash}'\n"
        ),
    )
    .unwrap();
    let u = Upstream::http();
    let remedy = Remedy::start_with(
        Config::new().source(source("api", u.url()).prefix("/api")),
        &[],
        &["--web.config.file", web.to_str().unwrap()],
    );
    Secured {
        remedy,
        ca: dir.path().join("server.crt"),
        _dir: dir,
    }
}

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/stdout", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "000"));
    (body.to_owned(), code.to_owned())
}

#[test]
fn metrics_need_tls_and_the_right_password() {
    let s = secured();
    let url = format!("https://{}/metrics", s.remedy.admin);
    let ca = s.ca.to_str().unwrap();
    let (body, code) = curl(&["--cacert", ca, "-u", "prometheus:s3cret", &url]);
    assert_eq!(code, "200");
    assert!(body.contains("remedy_upstream_requests_in_flight"));
    assert_eq!(
        curl(&["--cacert", ca, "-u", "prometheus:wrong", &url]).1,
        "401"
    );
    assert_eq!(curl(&["--cacert", ca, &url]).1, "401");
    assert_eq!(
        curl(&["--cacert", ca, "-u", "nobody:s3cret", &url]).1,
        "401"
    );
    // Plain HTTP gets no answer from a TLS listener.
    assert_eq!(
        curl(&[&format!("http://{}/metrics", s.remedy.admin)]).1,
        "000"
    );
}

#[test]
fn a_bad_web_config_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(&web, "basic_auth_users:\n  prometheus: plaintext\n").unwrap();
    let cfg = crate::support::launcher::write_config(
        dir.path(),
        Config::new().source(source("api", "http://127.0.0.1:1").prefix("/api")),
    );
    let out = Command::new(crate::support::launcher::binary())
        .args([
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--web.config.file",
            web.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("basic_auth_users.prometheus: not a bcrypt hash"),
        "{err}"
    );
}

#[test]
fn with_basic_auth_the_reload_endpoint_serves_authenticated_clients() {
    let s = secured();
    let url = format!("https://{}/-/reload", s.remedy.admin);
    let ca = s.ca.to_str().unwrap();
    let auth = ["--cacert", ca, "-u", "prometheus:s3cret", "-X", "POST"];
    assert_eq!(curl(&[&auth[..], &[url.as_str()]].concat()).1, "200");
    assert_eq!(
        curl(&["--cacert", ca, "-X", "POST", &url]).1,
        "401",
        "no password"
    );
    assert_eq!(
        curl(
            &[
                &auth[..],
                &["-H", "Origin: https://evil.example", url.as_str()]
            ]
            .concat()
        )
        .1,
        "403"
    );
}
