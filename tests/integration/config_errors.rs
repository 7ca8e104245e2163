//! Bad config never starts: each file under tests/data/invalid-*.yaml is rejected with the
//! exact message in its .err sibling (file, line, key path, reason) and exit code 1.

use std::path::Path;
use std::process::Command;

use crate::support::tools::remedy;

fn invalid_files() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("invalid-") && n.ends_with(".yaml"))
        .map(|n| format!("tests/data/{n}"))
        .collect();
    files.sort();
    assert!(files.len() >= 26, "the table lost its cases: {files:?}");
    files
}

#[test]
fn every_invalid_config_names_line_and_key_and_exits_1() {
    for file in invalid_files() {
        let out = remedy(&["check-config", "--config", &file]);
        let want = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(file.replace(".yaml", ".err")),
        )
        .unwrap();
        assert_eq!(out.status.code(), Some(1), "{file}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), want, "{file}");
    }
}

/// `run` refuses what `check-config` refuses, with the same words, before it listens: two
/// listeners on one port would otherwise die on "Address already in use".
#[test]
fn run_refuses_an_invalid_config_before_listening() {
    for file in [
        "tests/data/invalid-overlapping-prefixes.yaml",
        "tests/data/invalid-listen-same-address.yaml",
        "tests/data/invalid-listen-wildcard-port.yaml",
    ] {
        let out = remedy(&["run", "--config", file]);
        assert_eq!(out.status.code(), Some(1), "{file}");
        let want = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(file.replace(".yaml", ".err")),
        )
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr, want, "{file}");
        assert!(!stderr.contains("listening"), "{stderr}");
    }
}

#[test]
fn shipped_example_config_is_valid_and_summarised() {
    let out = remedy(&["check-config", "--config", "config/remedy.yaml"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("sources (3):"), "{text}");
    assert!(
        text.contains("github           -> https://api.github.com"),
        "{text}"
    );
    assert!(
        text.contains("catalog: 11 codes (10 built in, 0 of them overridden; 1 added)"),
        "{text}"
    );
    assert!(text.contains("interception: off"), "{text}");
}

/// The summary counts overridden and added codes apart (an override of a built-in code is not
/// an addition, and an added code not an override), and shows interception.
#[test]
fn the_summary_counts_overrides_and_additions_apart_and_shows_interception() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("remedy.yaml");
    std::fs::write(
        &path,
        "proxy:\n  intercept: { enabled: true, ca_dir: /tmp/remedy-ca, tunnel: [oauth2.googleapis.com] }\n\
         sources:\n  - { name: ads, upstream: 'https://ads.example', match: { hosts: [ads.example, api.ads.example] } }\n\
         catalog:\n  - { code: 429, advice: [Spread the schedules.] }\n  - { code: 503, name: Unavailable }\n\
         \x20 - { code: 409, name: Conflict, meaning: m, advice: [a], remediation: resolve_conflict }\n",
    )
    .unwrap();
    let out = remedy(&["check-config", "--config", path.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "catalog: 11 codes (10 built in, 2 of them overridden; 1 added), 9 remediation keys\n",
        "interception: on, with a CA remedy makes at start\n",
        "  intercepted: ads.example, api.ads.example\n",
        "  tunnelled:   oauth2.googleapis.com\n",
        "  ca_dir:      /tmp/remedy-ca (ca.pem, bundle.pem)\n",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
}

#[test]
fn config_file_is_also_read_from_the_environment_and_exporter_spelling() {
    let out = Command::new(crate::support::launcher::binary())
        .args(["check-config"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("REMEDY_CONFIG", "config/remedy.yaml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let out = remedy(&["check-config", "--config.file", "config/remedy.yaml"]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn explain_prints_meaning_and_advice() {
    let out = remedy(&["explain", "429"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("429 Too Many Requests\n"), "{text}");
    assert!(text.contains("Reduce the number of concurrent extract runs and/or spread the schedules of extracts in the same source."));
    // 429 also names the quota headers read and the gauges and alert they feed.
    for needle in [
        "RateLimit-Policy",
        "X-Shopify-Shop-Api-Call-Limit",
        "Sforce-Limit-Info",
        "X-Business-Use-Case-Usage",
        "remedy_upstream_ratelimit_remaining",
        "remedy_upstream_ratelimit_limit",
        "remedy_upstream_ratelimit_used_ratio",
        "remedy_upstream_ratelimit_reset_seconds",
        "ConnectorNearRateLimit",
    ] {
        assert!(text.contains(needle), "{needle} missing from: {text}");
    }
    let out = remedy(&["explain", "404"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("RateLimit"));
    let out = remedy(&["explain", "409", "--config", "config/remedy.yaml"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("resolve_conflict"));
    assert_eq!(remedy(&["explain", "1000"]).status.code(), Some(1));
    // A gRPC status is explained as the HTTP status it stands for, with the same advice.
    let out = remedy(&["explain", "RESOURCE_EXHAUSTED"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("RESOURCE_EXHAUSTED is gRPC status 8"),
        "{text}"
    );
    assert!(
        text.contains("api_code=\"RESOURCE_EXHAUSTED\", code=\"429\""),
        "{text}"
    );
    assert!(text.contains("\n429 Too Many Requests\n"), "{text}");
    assert!(
        text.contains("Reduce the number of concurrent extract runs"),
        "{text}"
    );
    let out = remedy(&["explain", "unauthenticated"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("401 Unauthorized"));
    assert_eq!(remedy(&["explain", "NOT_A_STATUS"]).status.code(), Some(1));
    let out = remedy(&["explain", "999"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("class=\"9xx\", remediation=\"unlisted\""),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `check-config` and `run` read a source's `ca_file` with one reader: a file that one
/// accepts the other accepts, and a file with a broken block is refused by both.
#[test]
fn check_config_and_run_judge_a_ca_file_alike() {
    let dir = tempfile::tempdir().unwrap();
    let ca = rcgen::generate_simple_self_signed(vec!["ca.example".into()]).unwrap();
    let good = ca.cert.pem();
    let cases = [
        ("good.pem", good.clone(), true),
        (
            "broken-block.pem",
            format!(
                "{good}-----BEGIN CERTIFICATE-----\n!!not base64!!\n-----END CERTIFICATE-----\n"
            ),
            false,
        ),
        ("empty.pem", String::new(), false),
    ];
    for (name, pem, usable) in cases {
        let ca_path = dir.path().join(name);
        std::fs::write(&ca_path, pem).unwrap();
        let config = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &config,
            format!(
                "proxy: {{ listen: 127.0.0.1:0 }}\nadmin: {{ listen: 127.0.0.1:0 }}\n\
                 shutdown: {{ drain_timeout: 1s, linger: 0s }}\n\
                 sources:\n  - {{ name: api, upstream: 'https://api.example', match: {{ path_prefix: /api }}, ca_file: '{}' }}\n",
                ca_path.display()
            ),
        )
        .unwrap();
        let config = config.to_str().unwrap();
        let checked = remedy(&["check-config", "--config", config]);
        assert_eq!(
            checked.status.success(),
            usable,
            "check-config on {name}: {}",
            String::from_utf8_lossy(&checked.stderr)
        );
        if usable {
            let remedy = crate::support::Remedy::start(std::fs::read_to_string(config).unwrap());
            assert_eq!(crate::support::send(remedy.admin, "/-/ready").status, 200);
        } else {
            let err = String::from_utf8_lossy(&checked.stderr).into_owned();
            assert!(err.contains(name) && err.contains("ca_file"), "{err}");
            let run = remedy(&["run", "--config", config]);
            assert_eq!(run.status.code(), Some(1), "run on {name}");
            assert_eq!(String::from_utf8_lossy(&run.stderr), err, "{name}");
        }
    }
}

/// A CA of the user's, with its own key, passes the checks that refuse the cases in
/// `tests/data/invalid-intercept-*.yaml`.
#[test]
fn the_users_own_ca_with_its_key_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = p.self_signed(&ca_key).unwrap();
    let file = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (ca_pem, ca_key_pem) = (
        file("ca.crt", ca.pem()),
        file("ca.key", ca_key.serialize_pem()),
    );
    let ca_dir = dir.path().join("out").display().to_string();
    let config = dir.path().join("good.yaml");
    std::fs::write(
        &config,
        format!(
            "proxy:\n  intercept:\n    enabled: true\n    ca_dir: '{ca_dir}'\n    ca_cert_file: '{ca_pem}'\n    ca_key_file: '{ca_key_pem}'\n\
             sources:\n  - {{ name: api, upstream: 'https://api.example.com', match: {{ hosts: [api.example.com] }} }}\n"
        ),
    )
    .unwrap();
    let out = remedy(&["check-config", "--config", config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("interception: on, with the CA in {ca_pem}\n")),
        "{text}"
    );
    let config = std::fs::read_to_string(&config)
        .unwrap()
        .replace("proxy:\n", "proxy:\n  listen: 127.0.0.1:0\n");
    let running = crate::support::Remedy::start(config);
    running.wait_log(r#""ca":"from proxy.intercept.ca_cert_file""#);
}
