//! HTTPS through `HTTPS_PROXY`: real clients (curl, Python requests, openssl) send `CONNECT`
//! to remedy and trust the bundle it writes; their calls are counted like any other.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{Answer, Config, Remedy, Upstream, raw, source};

const HOST: &str = "api.example.test";

/// remedy intercepting `api.example.test` and `other.example.test` for a TLS fixture,
/// `untrusted.example.test` for the same fixture without its CA, and tunnelling `tunnel`.
struct Setup {
    upstream: Upstream,
    remedy: Remedy,
    ca_dir: tempfile::TempDir,
}

impl Setup {
    fn start(tunnel: &str, env: &[(&str, &str)]) -> Self {
        Self::start_with(tunnel, env, |config| config)
    }

    /// With `adjust` applied to the config: more `proxy` fields, or other sections.
    fn start_with(
        tunnel: &str,
        env: &[(&str, &str)],
        adjust: impl FnOnce(Config) -> Config,
    ) -> Self {
        let upstream = Upstream::builder()
            .route("/429", Answer::status(429).header("retry-after", 30))
            .route("/quota", Answer::quota(5))
            .route("/download", Answer::download(100 * 1024 * 1024))
            .route("/upload", Answer::count_upload())
            .route(
                "/slow",
                Answer::status(200).delay(Duration::from_millis(800)),
            )
            .tls();
        let ca_dir = tempfile::tempdir().unwrap();
        let hosts = [HOST, "other.example.test"];
        let config = adjust(Setup::config(&upstream, ca_dir.path(), tunnel, &hosts));
        let remedy = Remedy::start_with_env(config, env);
        Setup {
            upstream,
            remedy,
            ca_dir,
        }
    }

    /// Interception on, writing its files to `ca_dir` and passing `tunnel` through; the source
    /// `api` intercepts `hosts` and trusts the fixture's certificate, `untrusted` does not.
    fn config(upstream: &Upstream, ca_dir: &Path, tunnel: &str, hosts: &[&str]) -> Config {
        let intercept = format!(
            "{{ enabled: true, ca_dir: '{}', tunnel: [{tunnel}] }}",
            ca_dir.display()
        );
        Config::new()
            .proxy("intercept", intercept)
            .source(
                source("api", upstream.url())
                    .ca_file(upstream.ca_file.as_ref().unwrap())
                    .hosts(hosts),
            )
            .source(source("untrusted", upstream.url()).hosts(&["untrusted.example.test"]))
    }

    fn bundle(&self) -> PathBuf {
        self.ca_dir.path().join("bundle.pem")
    }

    fn ca(&self) -> PathBuf {
        self.ca_dir.path().join("ca.pem")
    }

    fn proxy_url(&self) -> String {
        format!("http://{}", self.remedy.proxy)
    }

    /// curl through remedy as `HTTPS_PROXY`, trusting only the bundle: status and body.
    fn curl(&self, url: &str, extra: &[&str]) -> (u16, String) {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
            .arg("--cacert")
            .arg(self.bundle())
            .args(["--proxy", &self.proxy_url()])
            .args(extra)
            .arg(url)
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .output()
            .expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (
            code.trim().parse().unwrap_or(0),
            format!("{body}{}", String::from_utf8_lossy(&out.stderr)),
        )
    }

    fn intercepted(&self, outcome: &str) -> f64 {
        self.remedy
            .scrape()
            .get(
                "remedy_intercept_connections_total",
                &[("outcome", outcome)],
            )
            .unwrap_or(0.0)
    }
}

/// Runs a Python program with `env`; returns its stdout, failing on a non-zero exit.
fn python(program: &str, env: &[(&str, &Path)]) -> String {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", program])
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("python3 runs");
    assert!(
        out.status.success(),
        "python failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn curl_through_https_proxy_is_counted_with_source_code_and_remediation() {
    let s = Setup::start("", &[]);
    let (code, body) = s.curl(&format!("https://{HOST}/reports/429"), &[]);
    assert_eq!(code, 429, "{body}");
    let (code, body) = s.curl(&format!("https://{HOST}/echo?q=a%20b"), &[]);
    assert_eq!(code, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    // The fixture speaks HTTP/2, where the target carries the upstream's authority.
    assert_eq!(
        echo["target"],
        format!("{}/echo?q=a%20b", s.upstream.url()),
        "the query byte for byte, the authority the upstream's as in every mode"
    );
    let header = |name: &str| {
        echo["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h[0] == name)
            .map(|h| h[1].as_str().unwrap().to_owned())
    };
    assert_eq!(header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(header("x-forwarded-host").as_deref(), Some(HOST));

    let (code, body) = s.curl(&format!("https://{HOST}/quota"), &[]);
    assert_eq!(code, 200, "{body}");

    let m = s.remedy.scrape();
    assert_eq!(
        m.responses("api", 429, "reduce_concurrency", "upstream"),
        1.0
    );
    assert_eq!(m.responses("api", 200, "none", "upstream"), 2.0);
    assert_eq!(
        m.get("remedy_upstream_retry_after_seconds", &[("source", "api")]),
        Some(30.0)
    );
    assert_eq!(
        m.get("remedy_upstream_ratelimit_remaining", &[("source", "api")]),
        Some(4.0)
    );
    assert_eq!(
        m.get("remedy_upstream_ratelimit_limit", &[("source", "api")]),
        Some(5.0)
    );
    assert_eq!(s.intercepted("intercepted"), 3.0);
    assert_eq!(s.upstream.hits(), 3);
    // The start-up line says where the CA came from, in words that cannot be misread.
    assert!(
        s.remedy
            .logs()
            .contains(r#""ca":"made by remedy at start""#),
        "{}",
        s.remedy.logs()
    );
}

#[test]
fn python_requests_streams_bodies_byte_for_byte_both_ways_with_bounded_memory() {
    let s = Setup::start("", &[]);
    // Warm up, then measure what a 100 MiB download and an 8 MiB upload add.
    assert_eq!(s.curl(&format!("https://{HOST}/warm-up"), &[]).0, 200);
    let before = s.remedy.rss_kib();
    let program = format!(
        r#"
import hashlib, os, requests
size = 100 * 1024 * 1024
proxied = requests.get("https://{HOST}/download", stream=True, timeout=60)
digest, got = hashlib.sha256(), 0
for chunk in proxied.iter_content(256 * 1024):
    digest.update(chunk); got += len(chunk)
direct = requests.Session(); direct.trust_env = False
straight = direct.get("{url}/download", verify=os.environ["FIXTURE_CA"], stream=True, timeout=60)
want = hashlib.sha256()
for chunk in straight.iter_content(256 * 1024):
    want.update(chunk)
assert proxied.status_code == 200 and got == size, (proxied.status_code, got)
assert digest.hexdigest() == want.hexdigest()
body = os.urandom(8 * 1024 * 1024)
up = requests.post("https://{HOST}/upload", data=body, timeout=60)
assert up.json()["body_len"] == len(body), up.text
text = "".join(chr(33 + b % 90) for b in os.urandom(4096))
echo = requests.post("https://{HOST}/echo", data=text.encode(), timeout=60).json()
assert echo["body"] == text
print("ok", got)
"#,
        url = s.upstream.url(),
    );
    let out = python(
        &program,
        &[
            ("HTTPS_PROXY", Path::new(&s.proxy_url())),
            ("REQUESTS_CA_BUNDLE", &s.bundle()),
            ("FIXTURE_CA", s.upstream.ca_file.as_ref().unwrap()),
        ],
    );
    assert!(out.starts_with("ok 104857600"), "{out}");
    let peak = s.remedy.peak_rss_kib();
    assert!(
        peak < before + 16 * 1024,
        "remedy held bodies in memory: {before} KiB before, peak {peak} KiB"
    );
    let m = s.remedy.scrape();
    assert_eq!(m.responses("api", 200, "none", "upstream"), 4.0);
}

/// A `CONNECT` names `host:port` and nothing else: an impossible port, an empty or signed one,
/// userinfo or the absolute form are answered 400, not taken as port 443.
#[test]
fn a_connect_that_names_no_usable_host_and_port_is_a_400() {
    let s = Setup::start("", &[]);
    let targets = [
        format!("{HOST}:65536"),
        format!("{HOST}:99999"),
        format!("{HOST}:"),
        format!("{HOST}:+443"),
        format!("{HOST}:0"),
        HOST.to_owned(),
        format!("user@{HOST}:443"),
        format!("http://{HOST}:443/"),
    ];
    for target in &targets {
        let reply = raw(
            s.remedy.proxy,
            format!("CONNECT {target} HTTP/1.1\r\nHost: {HOST}:443\r\n\r\n").as_bytes(),
        )
        .unwrap_or_else(|| panic!("{target}: no answer"));
        assert_eq!(reply.status, 400, "{target}: {}", reply.text());
    }
    assert_eq!(s.intercepted("refused"), targets.len() as f64);
    assert_eq!(
        s.intercepted("intercepted") + s.intercepted("handshake_failed"),
        0.0
    );
    // The same host on 443, written as RFC 9112 has it, is intercepted.
    assert_eq!(s.curl(&format!("https://{HOST}/x/200"), &[]).0, 200);
}

/// A `CONNECT` sent inside an intercepted tunnel is answered 405 for what it is (no tunnel
/// within a tunnel), not as if interception were off.
#[test]
fn a_connect_inside_a_tunnel_is_refused_for_what_it_is() {
    use std::io::Write;
    let s = Setup::start("", &[]);
    let mut tunnel = crate::support::tunnel::open(s.remedy.proxy, HOST, &s.ca(), &[b"http/1.1"]);
    write!(
        tunnel,
        "CONNECT other.example.test:443 HTTP/1.1\r\nHost: other.example.test:443\r\n\r\n"
    )
    .unwrap();
    let reply =
        String::from_utf8_lossy(&crate::support::tunnel::read_all(&mut tunnel)).into_owned();
    assert!(reply.starts_with("HTTP/1.1 405"), "{reply}");
    assert!(reply.contains("inside an intercepted tunnel"), "{reply}");
    assert!(!reply.contains("proxy.intercept is off"), "{reply}");
    assert_eq!(s.upstream.hits(), 0);
}

#[test]
fn a_connect_to_an_unlisted_host_is_refused_403_and_nothing_is_forwarded() {
    let s = Setup::start("", &[]);
    let r = raw(
        s.remedy.proxy,
        b"CONNECT bank.example.org:443 HTTP/1.1\r\nHost: bank.example.org:443\r\n\r\n",
    )
    .expect("an answer");
    assert_eq!(r.status, 403);
    assert!(r.text().contains("match.hosts"), "{}", r.text());
    // A listed host on a port that is neither 443 nor its upstream's is refused too.
    let r = raw(
        s.remedy.proxy,
        format!("CONNECT {HOST}:8443 HTTP/1.1\r\nHost: {HOST}:8443\r\n\r\n").as_bytes(),
    )
    .expect("an answer");
    assert_eq!(r.status, 403);
    assert_eq!(s.upstream.hits(), 0);
    assert_eq!(s.upstream.accepted(), 0);
    assert_eq!(s.intercepted("refused"), 2.0);
    assert_eq!(
        s.remedy
            .scrape()
            .responses("unmatched", 403, "check_permissions", "proxy"),
        2.0
    );
}

#[test]
fn a_handshake_whose_sni_is_not_the_connect_host_is_refused() {
    let s = Setup::start("", &[]);
    let bundle = s.bundle();
    let out = Command::new("openssl")
        .args(["s_client", "-proxy", &s.remedy.proxy.to_string()])
        .args(["-connect", &format!("{HOST}:443")])
        .args(["-servername", "other.example.test", "-verify_return_error"])
        .arg("-CAfile")
        .arg(&bundle)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the handshake went through:\n{text}");
    assert!(!text.contains("BEGIN CERTIFICATE"), "{text}");
    s.remedy
        .wait_log(r#"the SNI \"other.example.test\" does not name the CONNECT host"#);
    assert_eq!(s.upstream.hits(), 0);
    assert_eq!(s.intercepted("handshake_failed"), 1.0);
    assert_eq!(s.intercepted("intercepted"), 0.0);
}

/// A connector that does not trust remedy's CA: each failed handshake is counted as such (not
/// as intercepted), and logged once per host per minute with the count, not once per attempt.
#[test]
fn failed_handshakes_are_counted_and_logged_once_per_host_per_interval() {
    let s = Setup::start("", &[]);
    let untrusting = |s: &Setup| {
        Command::new("curl")
            .args(["-sS", "--max-time", "20", "-o", "/dev/null"])
            .args(["--cacert", "tests/data/pki/ca.crt"])
            .args(["--proxy", &s.proxy_url()])
            .arg(format!("https://{HOST}/x/200"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .output()
            .expect("curl runs")
    };
    for _ in 0..5 {
        assert!(!untrusting(&s).status.success());
    }
    crate::support::wait_for(
        "five failed handshakes counted",
        Duration::from_secs(10),
        || (s.intercepted("handshake_failed") == 5.0).then_some(()),
    );
    assert_eq!(s.intercepted("intercepted"), 0.0);
    assert_eq!(s.upstream.hits(), 0);
    s.remedy
        .wait_log("TLS handshakes with the connector failed");
    let lines = s
        .remedy
        .logs()
        .lines()
        .filter(|l| l.contains("TLS handshakes with the connector failed"))
        .count();
    assert_eq!(lines, 1, "{}", s.remedy.logs());
    // A connector that trusts it is intercepted as before.
    assert_eq!(s.curl(&format!("https://{HOST}/x/200"), &[]).0, 200);
    assert_eq!(s.intercepted("intercepted"), 1.0);
}

#[test]
fn an_upstream_with_an_untrusted_certificate_is_a_502_tls_whatever_the_connector_trusts() {
    let s = Setup::start("", &[]);
    let (code, body) = s.curl("https://untrusted.example.test/x", &[]);
    assert_eq!(code, 502, "{body}");
    assert!(body.contains("tls"), "{body}");
    let m = s.remedy.scrape();
    assert_eq!(m.errors("untrusted", "tls"), 1.0);
    assert_eq!(m.responses("untrusted", 502, "retry_later", "proxy"), 1.0);
}

#[test]
fn a_listed_tunnel_is_passed_through_unobserved() {
    let plain = Upstream::builder().statuses(&[201]).http();
    let s = Setup::start(&format!("'{}'", plain.addr), &[]);
    let (code, body) = s.curl(&format!("http://{}/x/201", plain.addr), &["--proxytunnel"]);
    assert_eq!(code, 201, "{body}");
    assert_eq!(plain.hits(), 1);
    assert_eq!(s.intercepted("tunnelled"), 1.0);
    let m = s.remedy.scrape();
    assert_eq!(
        m.sum("remedy_upstream_responses_total", &[("code", "201")]),
        0.0,
        "a tunnel is not observed"
    );
}

#[test]
fn openssl_verifies_a_listed_leaf_against_ca_pem_and_the_name_constraints_refuse_others() {
    let s = Setup::start("", &[]);
    let out = Command::new("openssl")
        .args(["s_client", "-proxy", &s.remedy.proxy.to_string()])
        .args(["-connect", &format!("{HOST}:443"), "-servername", HOST])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let begin = text
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a certificate");
    let end = text.find("-----END CERTIFICATE-----").unwrap() + 25;
    let dir = tempfile::tempdir().unwrap();
    let leaf = dir.path().join("leaf.pem");
    std::fs::write(&leaf, format!("{}\n", &text[begin..end])).unwrap();
    let verify = |cert: &Path| {
        Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(s.ca())
            .arg(cert)
            .output()
            .expect("openssl runs")
    };
    let ok = verify(&leaf);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );

    // A certificate for another name, signed by a CA made the same way, fails to verify.
    let authority = remedy::intercept_ca::Authority::new(
        dir.path(),
        None,
        vec![HOST.to_owned()],
        std::time::SystemTime::now(),
    )
    .unwrap();
    let own = dir.path().join("own-leaf.pem");
    std::fs::write(&own, authority.sign_unchecked(HOST).unwrap()).unwrap();
    let outside = dir.path().join("outside.pem");
    std::fs::write(
        &outside,
        authority.sign_unchecked("bank.example.org").unwrap(),
    )
    .unwrap();
    let check = |cert: &Path| {
        Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(dir.path().join("ca.pem"))
            .arg(cert)
            .output()
            .expect("openssl runs")
    };
    assert!(check(&own).status.success());
    let refused = check(&outside);
    let why = String::from_utf8_lossy(&refused.stdout).into_owned()
        + &String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{why}");
    assert!(why.contains("permitted subtree violation"), "{why}");

    // Nor does one for an IP address: with DNS hosts only, every address is excluded.
    let address = dir.path().join("address.pem");
    std::fs::write(&address, authority.sign_unchecked("10.1.2.3").unwrap()).unwrap();
    let refused = check(&address);
    let why = String::from_utf8_lossy(&refused.stdout).into_owned()
        + &String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{why}");
    assert!(why.contains("excluded subtree violation"), "{why}");
}

/// A source that names an IP address beside DNS names: OpenSSL clients (curl here) accept the
/// address's leaf, which carries it as a SAN and no common name for the DNS constraints to
/// refuse.
#[test]
fn an_ip_literal_host_beside_dns_hosts_is_intercepted_for_openssl_clients() {
    let upstream = Upstream::tls();
    let ca_dir = tempfile::tempdir().unwrap();
    let remedy = Remedy::start(Setup::config(
        &upstream,
        ca_dir.path(),
        "",
        &[HOST, "127.0.0.1"],
    ));
    let s = Setup {
        upstream,
        remedy,
        ca_dir,
    };
    let (code, body) = s.curl("https://127.0.0.1/x/200", &[]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        s.remedy.scrape().responses("api", 200, "none", "upstream"),
        1.0
    );
}

#[test]
fn no_key_material_reaches_ca_dir_or_any_log_line() {
    let keylog = tempfile::tempdir().unwrap();
    let keylog_file = keylog.path().join("keys.log");
    let s = Setup::start(
        "",
        &[
            ("REMEDY_LOG", "debug"),
            ("SSLKEYLOGFILE", keylog_file.to_str().unwrap()),
        ],
    );
    assert_eq!(s.curl(&format!("https://{HOST}/x/200"), &[]).0, 200);
    assert_eq!(s.curl("https://untrusted.example.test/x", &[]).0, 502);
    s.remedy.wait_log("proxied");
    let mut names: Vec<String> = std::fs::read_dir(s.ca_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["bundle.pem", "ca.pem"]);
    for file in ["bundle.pem", "ca.pem"] {
        let text = std::fs::read_to_string(s.ca_dir.path().join(file)).unwrap();
        assert!(!text.contains("PRIVATE KEY"), "{file} holds a key");
    }
    let logs = s.remedy.logs();
    assert!(
        logs.contains("leaf certificate made"),
        "debug logging is on"
    );
    for secret in ["PRIVATE KEY", "BEGIN", "CLIENT_RANDOM", "TRAFFIC_SECRET"] {
        assert!(
            !logs.contains(secret),
            "a log line holds {secret:?}:\n{logs}"
        );
    }
    assert!(!keylog_file.exists(), "SSLKEYLOGFILE is never written");
}

/// At `REMEDY_LOG=trace` the TLS libraries still log at debug at most: rustls's trace lines
/// carry the ClientHello and the handshake's certificates.
#[test]
fn tls_libraries_log_at_debug_at_most_even_at_trace_level() {
    let s = Setup::start("", &[("REMEDY_LOG", "trace")]);
    assert_eq!(s.curl(&format!("https://{HOST}/x/200"), &[]).0, 200);
    s.remedy.wait_log("proxied");
    let logs = s.remedy.logs();
    let mut tls_lines = 0;
    for line in logs.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let target = v["log.target"]
            .as_str()
            .or(v["target"].as_str())
            .unwrap_or_default();
        if target.starts_with("rustls") || target.contains("_rustls") {
            tls_lines += 1;
            assert_ne!(v["level"], "TRACE", "{line}");
        }
    }
    assert!(tls_lines > 0, "rustls logs at debug still:\n{logs}");
    for handshake_data in ["clienthello", "ClientHello", "CertificateDer", "BEGIN"] {
        assert!(!logs.contains(handshake_data), "{handshake_data}:\n{logs}");
    }
}

#[test]
fn a_host_added_by_a_reload_is_intercepted_without_a_restart() {
    let s = Setup::start("", &[]);
    let (_, said) = s.curl("https://new.example.test/x/200", &[]);
    assert!(
        said.contains("CONNECT tunnel failed, response 403"),
        "{said}"
    );
    let hosts = [HOST, "other.example.test", "new.example.test"];
    s.remedy
        .rewrite_config(Setup::config(&s.upstream, s.ca_dir.path(), "", &hosts));
    s.remedy.signal("HUP");
    crate::support::wait_for(
        "a CA for the new host",
        std::time::Duration::from_secs(10),
        || {
            let ca = std::fs::read_to_string(s.ca()).ok()?;
            (ca.matches("BEGIN CERTIFICATE").count() == 2).then_some(())
        },
    );
    let (code, body) = s.curl("https://new.example.test/x/200", &[]);
    assert_eq!(code, 200, "{body}");
    // The first CA still signs for the hosts it had.
    assert_eq!(s.curl(&format!("https://{HOST}/x/200"), &[]).0, 200);
    assert_eq!(
        s.remedy.scrape().responses("api", 200, "none", "upstream"),
        2.0
    );
}

#[test]
fn a_tunnel_holds_the_slot_of_the_connection_it_was_opened_on() {
    // One connection slot: the tunnel needs no second one, and frees it when it ends.
    let s = Setup::start_with("", &[], |c| c.proxy("max_connections", 1));
    for round in 0..3 {
        let (code, body) = s.curl(&format!("https://{HOST}/x/200"), &[]);
        assert_eq!(code, 200, "round {round}: {body}");
    }
    assert_eq!(s.intercepted("intercepted"), 3.0);
}

/// 150 idle tunnels at `max_connections: 100`, 100 stalled after their TLS handshake and 50
/// before their ClientHello, cannot keep a connector that sends requests waiting for a slot:
/// while the slots run out, a tunnel that has not finished its handshake or sent a request has
/// a second, not `header_read_timeout` (a minute here, longer than the connector waits).
#[test]
fn idle_tunnels_at_the_connection_cap_cannot_lock_a_connector_out() {
    use std::io::Write;
    let s = Setup::start_with("", &[], |c| {
        c.proxy("max_connections", 100)
            .proxy("header_read_timeout", "60s")
    });
    let handshaken: Vec<_> = (0..100)
        .map(|_| crate::support::tunnel::open(s.remedy.proxy, HOST, &s.ca(), &[b"http/1.1"]))
        .collect();
    let silent: Vec<_> = (0..50)
        .map(|_| {
            let mut tcp = std::net::TcpStream::connect(s.remedy.proxy).unwrap();
            write!(
                tcp,
                "CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\n\r\n"
            )
            .unwrap();
            tcp
        })
        .collect();
    let (code, body) = s.curl(&format!("https://{HOST}/x/200"), &["--max-time", "30"]);
    assert_eq!(code, 200, "the connector was locked out: {body}");
    drop((handshaken, silent));
}

#[test]
fn a_request_in_a_tunnel_finishes_and_is_counted_when_remedy_drains() {
    let s = Setup::start_with("", &[], |c| {
        c.section("shutdown", "{ drain_timeout: 5s, linger: 30s }")
    });
    std::thread::scope(|scope| {
        let slow = scope.spawn(|| s.curl(&format!("https://{HOST}/slow"), &[]));
        s.remedy.wait_in_flight("api", 1.0);
        s.remedy.signal("TERM");
        // The drain waits for the request inside the tunnel: once it is over, the request is
        // answered and counted, and the scrape that follows sees it.
        s.remedy.wait_log("drained");
        let m = s.remedy.scrape();
        assert_eq!(m.in_flight("api"), 0.0);
        assert_eq!(m.responses("api", 200, "none", "upstream"), 1.0);
        let (code, body) = slow.join().unwrap();
        assert_eq!(code, 200, "the drain let it finish: {body}");
    });
}
