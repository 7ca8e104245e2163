//! What a newcomer meets first: the README's shell examples work as written on a machine
//! without internet, `scripts/demo` shows remedy paging with the FAQ's advice and stops what it
//! started, and the binary says which revision it is.
//!
//! The README's examples and the demo use the fixed ports a user types (8780, 8781, 9780,
//! 9790, 9793), so the two tests here take turns.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::support::tools::{remedy, root};
use crate::support::{Config, Remedy, Scrape, send, source, wait_for};

/// Held by each test that uses the README's fixed ports.
static FIXED_PORTS: Mutex<()> = Mutex::new(());

const DEMO_PORTS: [u16; 5] = [8780, 8781, 9780, 9790, 9793];

/// The release binary the README and the demo run, which must be as new as its sources.
fn fresh_release_binary() -> PathBuf {
    let bin = root().join("target/release/remedy");
    let stale = Command::new("find")
        .args([
            "src",
            "config/catalog.yaml",
            "build.rs",
            "Cargo.toml",
            "Cargo.lock",
        ])
        .args(["-newer", "target/release/remedy", "-print", "-quit"])
        .current_dir(root())
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(true);
    assert!(
        bin.exists() && !stale,
        "{} is missing or older than its sources: run the tests through scripts/test, which builds it first",
        bin.display()
    );
    bin
}

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn assert_ports_free(ports: &[u16], when: &str) {
    let taken: Vec<u16> = ports.iter().copied().filter(|p| !port_free(*p)).collect();
    assert!(taken.is_empty(), "ports {taken:?} are in use {when}");
}

/// One line of a README example: a command, with continuation lines joined.
#[derive(Debug, Clone, PartialEq)]
enum Example {
    /// Started in the background (`... &`): what the other examples talk to.
    Background(String),
    /// Runs offline and must succeed.
    Run(String),
    /// Not run here, and why.
    Elsewhere(String, &'static str),
}

fn classify(cmd: &str) -> Example {
    if let Some(background) = cmd.strip_suffix('&') {
        return Example::Background(background.trim().to_owned());
    }
    let why = match cmd.split_whitespace().next().unwrap_or_default() {
        "helm" | "kubectl" => Some("needs a Kubernetes cluster"),
        "scripts/test" => Some("the test command itself"),
        "scripts/demo" => Some("run by scripts_demo_pages_with_the_faqs_advice"),
        _ if cmd.contains(" run --config ") => Some("runs until stopped: its config is checked"),
        _ => None,
    };
    match why {
        Some(why) => Example::Elsewhere(cmd.to_owned(), why),
        None => Example::Run(cmd.to_owned()),
    }
}

/// Every command in the README's `sh` blocks, comments dropped.
fn readme_examples() -> Vec<Example> {
    let text = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut examples = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_sh = trimmed == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let code = match trimmed.find(" #") {
            Some(at) if !trimmed[..at].contains('\'') => &trimmed[..at],
            _ => trimmed,
        };
        if code.starts_with('#') || code.is_empty() {
            continue;
        }
        match code.strip_suffix('\\') {
            Some(part) => pending.push_str(part),
            None => {
                pending.push_str(code);
                examples.push(classify(pending.trim()));
                pending.clear();
            }
        }
    }
    examples
}

/// The processes an example started in the background, stopped however the test ends.
struct Background(Vec<Child>);

impl Drop for Background {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `cmd` as the README's reader would, in bash from the repository root, with no proxy
/// variables of this environment's in the way.
fn bash(cmd: &str) -> (bool, String) {
    let out = Command::new("bash")
        .args(["-c", cmd])
        .current_dir(root())
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// 2xx responses remedy counted for its configured sources.
fn answered_2xx(admin: std::net::SocketAddr) -> f64 {
    let scrape = Scrape::parse(send(admin, "/metrics").text());
    ["crm", "ads"]
        .iter()
        .map(|s| {
            scrape.sum(
                "remedy_upstream_responses_total",
                &[("source", s), ("class", "2xx")],
            )
        })
        .sum()
}

#[test]
fn the_readme_shell_examples_work_as_written_offline() {
    let _turn = FIXED_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    fresh_release_binary();
    let examples = readme_examples();
    let background: Vec<&String> = examples
        .iter()
        .filter_map(|e| match e {
            Example::Background(c) => Some(c),
            _ => None,
        })
        .collect();
    let runs: Vec<&String> = examples
        .iter()
        .filter_map(|e| match e {
            Example::Run(c) => Some(c),
            _ => None,
        })
        .collect();
    assert!(
        background.len() == 2 && runs.iter().filter(|c| c.contains("curl")).count() >= 3,
        "the README lost its runnable examples: {examples:#?}"
    );
    assert_ports_free(&DEMO_PORTS[..3], "before the README's examples start");
    let _ = std::fs::remove_dir_all(root().join("target/demo/ca"));
    let mut started = Background(Vec::new());
    for cmd in &background {
        let child = Command::new("bash")
            .args(["-c", &format!("exec {cmd}")])
            .current_dir(root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        started.0.push(child);
    }
    let admin: std::net::SocketAddr = "127.0.0.1:9780".parse().unwrap();
    wait_for("the README's remedy", Duration::from_secs(20), || {
        std::net::TcpStream::connect(admin)
            .ok()
            .filter(|_| send(admin, "/-/ready").status == 200)
    });
    wait_for("the README's stand-in API", Duration::from_secs(20), || {
        (!port_free(8781)).then_some(())
    });
    for example in &examples {
        match example {
            Example::Run(cmd) if cmd.contains("curl") => {
                let before = answered_2xx(admin);
                let (ok, out) = bash(cmd);
                assert!(ok, "README example failed: {cmd}\n{out}");
                assert_eq!(
                    answered_2xx(admin),
                    before + 1.0,
                    "README example not answered 2xx through remedy: {cmd}\n{out}"
                );
            }
            Example::Run(cmd) => {
                let (ok, out) = bash(cmd);
                assert!(ok, "README example failed: {cmd}\n{out}");
            }
            Example::Elsewhere(cmd, _) if cmd.contains(" run --config ") => {
                let config = cmd.split(" --config ").nth(1).unwrap().trim();
                let out = remedy(&["check-config", "--config", config]);
                assert!(out.status.success(), "{cmd}: its config is invalid");
            }
            Example::Background(_) | Example::Elsewhere(..) => {}
        }
    }
}

/// Runs `scripts/demo` with `args` (five minutes at most): its exit code and output.
fn demo(args: &[&str]) -> (Option<i32>, String) {
    let out_path = tempfile::NamedTempFile::new().unwrap();
    let out_file = std::fs::File::create(out_path.path()).unwrap();
    let mut child = Command::new("scripts/demo")
        .args(args)
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(out_file.try_clone().unwrap())
        .stderr(out_file)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (status, std::fs::read_to_string(out_path.path()).unwrap())
}

#[test]
fn scripts_demo_pages_with_the_faqs_advice() {
    let _turn = FIXED_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    fresh_release_binary();
    assert_ports_free(&DEMO_PORTS, "before the demo");
    let catalog = remedy::catalog::Catalog::builtin();
    let advice = |code| catalog.get(code).unwrap().advice_text();

    let (code, out) = demo(&[]);
    assert_eq!(code, Some(0), "scripts/demo failed:\n{out}");
    for needle in [
        "ConnectorCredentialsRejected  source=crm".to_owned(),
        "ConnectorRateLimited  source=ads".to_owned(),
        format!("remediation: {}", advice(401)),
        format!("remediation: {}", advice(429)),
        "remedy drained and exited 0".to_owned(),
        "after Prometheus's final scrape".to_owned(),
        "Prometheus:   http://127.0.0.1:9790/alerts".to_owned(),
        "Alertmanager: http://127.0.0.1:9793/#/alerts".to_owned(),
    ] {
        assert!(out.contains(&needle), "{needle:?} missing from:\n{out}");
    }
    assert_ports_free(&DEMO_PORTS, "after the demo: it must stop what it started");

    // --keep leaves Prometheus and Alertmanager up, and names their processes.
    let (code, out) = demo(&["--keep"]);
    assert_eq!(code, Some(0), "scripts/demo --keep failed:\n{out}");
    assert_ports_free(&DEMO_PORTS[..3], "after the demo: the API and remedy stop");
    let pids = std::fs::read_to_string(root().join("target/demo/pids")).unwrap();
    let up = ["127.0.0.1:9790", "127.0.0.1:9793"].map(|a| send(a.parse().unwrap(), "/-/ready"));
    for pid in pids.split_whitespace() {
        let _ = Command::new("kill").arg(pid).status();
    }
    assert!(
        up.iter().all(|r| r.status == 200),
        "Prometheus and Alertmanager are up after --keep:\n{out}"
    );
    assert!(
        out.contains(&format!("stop them with: kill {}", pids.trim())),
        "{out}"
    );
    wait_for(
        "the kept processes to stop",
        Duration::from_secs(20),
        || DEMO_PORTS.iter().all(|p| port_free(*p)).then_some(()),
    );
}

/// The revision `build.rs` gives the binary: the checkout's `HEAD`, or `unknown` outside git.
fn expected_revision(dir: &Path) -> String {
    Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(dir)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[test]
fn version_and_build_info_name_the_revision_built_from() {
    let revision = expected_revision(root());
    let out = remedy(&["--version"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "remedy {} (revision {revision})\n",
            env!("CARGO_PKG_VERSION")
        )
    );
    let r = Remedy::start(Config::new().source(source("api", "http://127.0.0.1:9").prefix("/api")));
    let scrape = r.scrape();
    assert_eq!(
        scrape.get(
            "remedy_build_info",
            &[
                ("revision", revision.as_str()),
                ("version", env!("CARGO_PKG_VERSION"))
            ]
        ),
        Some(1.0),
        "{revision}"
    );
}
