//! The whole chain on loopback: connector traffic from curl → remedy (release build) → upstream
//! fixtures; Prometheus scraping remedy every second with remedy's own `/rules`; Alertmanager
//! with the example config from `config/alertmanager/`, delivering to a webhook run here.
//!
//! Passes only when each expected alert reaches the webhook firing, for the right source, with
//! the FAQ's advised action word for word; nothing fires for the quiet source; the inhibition
//! rule holds; every dashboard query returns data; and the alerts resolve once errors stop.
//! Takes about a minute. Logs of every process stay in the folder the failure names (or,
//! with `REMEDY_E2E_KEEP=1`, always, with the webhook payload in `webhook-example.json`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{Answer, Config, Upstream, send, source, wait_for};
use serde_json::Value;

/// Every process started here, killed when the test ends however it ends.
struct Procs {
    children: Vec<(String, Child)>,
    dir: PathBuf,
}

impl Procs {
    /// A fresh folder for the processes' logs and data.
    fn new(prefix: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .unwrap()
            .keep();
        Procs {
            children: Vec::new(),
            dir,
        }
    }

    fn start(&mut self, name: &str, cmd: &mut Command) {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {name} ({e}); logs in {}", self.dir.display())
            });
        self.children.push((name.to_owned(), child));
    }

    /// Whether the last process started as `name` has exited.
    fn exited(&mut self, name: &str) -> bool {
        self.children
            .iter_mut()
            .rev()
            .find(|(n, _)| n == name)
            .is_some_and(|(_, c)| matches!(c.try_wait(), Ok(Some(_))))
    }

    fn stop(&mut self, name: &str) {
        if let Some((_, c)) = self.children.iter_mut().find(|(n, _)| n == name) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() || std::env::var_os("REMEDY_E2E_KEEP").is_some() {
            eprintln!("e2e logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A port free a moment ago, for the tools that must be told theirs (Prometheus and
/// Alertmanager cannot report a port they chose): `start_stack` starts them again on other
/// ports should another process take one in between.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get_json(addr: &str, path_and_query: &str) -> Option<Value> {
    let addr: SocketAddr = addr.parse().ok()?;
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let (_, body) = text.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
}

fn query(prom: &str, promql: &str) -> Vec<Value> {
    let mut q = String::new();
    for b in promql.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            q.push(b as char);
        } else {
            q.push_str(&format!("%{b:02X}"));
        }
    }
    http_get_json(prom, &format!("/api/v1/query?query={q}"))
        .and_then(|v| v["data"]["result"].as_array().cloned())
        .unwrap_or_default()
}

/// A webhook receiver: every POST body, parsed as JSON.
fn webhook(received: Arc<Mutex<Vec<Value>>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(stream);
            let mut len = 0usize;
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            if reader.read_exact(&mut body).is_ok()
                && let Ok(v) = serde_json::from_slice(&body)
            {
                received.lock().unwrap().push(v);
            }
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    addr
}

/// Alerts the webhook received: (alertname, source, status, annotations).
fn delivered(received: &Mutex<Vec<Value>>) -> Vec<(String, String, String, Value)> {
    received
        .lock()
        .unwrap()
        .iter()
        .flat_map(|n| n["alerts"].as_array().cloned().unwrap_or_default())
        .map(|a| {
            (
                a["labels"]["alertname"].as_str().unwrap_or("").to_owned(),
                a["labels"]["source"].as_str().unwrap_or("").to_owned(),
                a["status"].as_str().unwrap_or("").to_owned(),
                a["annotations"].clone(),
            )
        })
        .collect()
}

/// Starts Alertmanager on the example config (its receivers pointed at a webhook run here)
/// and Prometheus on `prometheus_yml` plus `rules.yaml` from the procs' folder; returns
/// Prometheus's address and what the webhook receives.
fn start_stack(procs: &mut Procs, prometheus_yml: &str) -> (String, Arc<Mutex<Vec<Value>>>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = procs.dir.clone();
    let logs = dir.display().to_string();
    let received = Arc::new(Mutex::new(Vec::new()));
    let hook = webhook(received.clone());
    for attempt in 1..=5 {
        let (prom_port, am_port) = (free_port(), free_port());
        write_stack_configs(&dir, root, &hook, am_port, prometheus_yml);
        procs.start(
            "alertmanager",
            Command::new("prometheus-alertmanager")
                .arg(format!(
                    "--config.file={}",
                    dir.join("alertmanager.yml").display()
                ))
                .arg(format!("--storage.path={}", dir.join("am-data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
                .arg("--cluster.listen-address="),
        );
        procs.start(
            "prometheus",
            Command::new("prometheus")
                .arg(format!(
                    "--config.file={}",
                    dir.join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("prom-data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{prom_port}")),
        );
        let prom = format!("127.0.0.1:{prom_port}");
        let am_addr = format!("127.0.0.1:{am_port}");
        let up = wait_for(
            &format!("Prometheus and Alertmanager up (logs in {logs})"),
            Duration::from_secs(30),
            || {
                if procs.exited("prometheus") || procs.exited("alertmanager") {
                    return Some(false);
                }
                http_get_json(&prom, "/api/v1/status/buildinfo")?;
                http_get_json(&am_addr, "/api/v2/status")?;
                Some(true)
            },
        );
        if up {
            return (prom, received);
        }
        eprintln!("attempt {attempt}: a port was taken meanwhile; starting again on others");
        procs.stop("prometheus");
        procs.stop("alertmanager");
    }
    panic!("Prometheus and Alertmanager did not start (logs in {logs})");
}

/// Alertmanager's config (the example, its receivers pointed at `hook`) and Prometheus's
/// (`prometheus_yml` plus the rules and Alertmanager on `am_port`), in `dir`.
fn write_stack_configs(
    dir: &Path,
    root: &Path,
    hook: &SocketAddr,
    am_port: u16,
    prometheus_yml: &str,
) {
    let example =
        std::fs::read_to_string(root.join("config/alertmanager/alertmanager.yml")).unwrap();
    let mut am: serde_yaml::Value = serde_yaml::from_str(&example).unwrap();
    for r in am["receivers"].as_sequence_mut().unwrap() {
        let name = r["name"].clone();
        *r = serde_yaml::from_str(&format!(
            "{{ name: {}, webhook_configs: [ {{ url: 'http://{hook}/', send_resolved: true }} ] }}",
            name.as_str().unwrap()
        ))
        .unwrap();
    }
    for key in ["group_wait", "group_interval"] {
        am["route"][key] = "1s".into();
    }
    std::fs::write(
        dir.join("alertmanager.yml"),
        serde_yaml::to_string(&am).unwrap(),
    )
    .unwrap();
    std::fs::copy(
        root.join("config/alertmanager/remedy.tmpl"),
        dir.join("remedy.tmpl"),
    )
    .unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "rule_files: [rules.yaml]\n\
             alerting: {{ alertmanagers: [ {{ static_configs: [ {{ targets: ['127.0.0.1:{am_port}'] }} ] }} ] }}\n\
             {prometheus_yml}"
        ),
    )
    .unwrap();
}

/// Starts remedy (the release build) on `config`, waits until it is ready, and writes the rules
/// it serves where Prometheus loads them; returns its proxy and admin addresses.
/// Both listeners on port 0 and a quick shutdown: the start of each config `start_remedy`
/// runs (which, unlike the launcher, writes the config as it is).
fn on_port_zero() -> Config {
    Config::new()
        .section("proxy", "{ listen: 127.0.0.1:0 }")
        .section("admin", "{ listen: 127.0.0.1:0 }")
        .section("shutdown", "{ drain_timeout: 1s, linger: 0s }")
}

fn start_remedy(procs: &mut Procs, config: &Config) -> (SocketAddr, SocketAddr) {
    let dir = procs.dir.clone();
    let config_path = dir.join("remedy.yaml");
    std::fs::write(&config_path, config.to_string()).unwrap();
    procs.start(
        "remedy",
        Command::new(release_binary())
            .args(["--log-format", "json", "run", "--config"])
            .arg(&config_path)
            .env("REMEDY_LOG", "info"),
    );
    // Both listeners bind port 0; remedy's log says which ports they got.
    let address = |message: &str| -> Option<SocketAddr> {
        let log = std::fs::read_to_string(dir.join("remedy.log")).ok()?;
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["message"] == message)
            .and_then(|v| v["address"].as_str()?.parse().ok())
    };
    let (proxy, admin) = wait_for(
        &format!("remedy ready (logs in {})", dir.display()),
        Duration::from_secs(20),
        || {
            let (proxy, admin) = (address("proxy listening")?, address("admin listening")?);
            (send(admin, "/-/ready").status == 200).then_some((proxy, admin))
        },
    );
    // Prometheus loads the rules remedy itself serves.
    let rules = send(admin, "/rules");
    assert_eq!(rules.status, 200);
    std::fs::write(dir.join("rules.yaml"), rules.body).unwrap();
    (proxy, admin)
}

/// A Prometheus config part: scrape remedy's admin listener, and evaluate rules, every second.
fn scrape_every_second(admin: SocketAddr) -> String {
    format!(
        "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
         scrape_configs:\n  - {{ job_name: remedy, static_configs: [ {{ targets: ['{admin}'] }} ] }}\n"
    )
}

fn release_binary() -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/remedy");
    assert!(
        bin.exists(),
        "{} is missing: run the tests through scripts/test, which builds it first",
        bin.display()
    );
    bin
}

/// One round of connector traffic through curl; returns the status codes it saw.
fn traffic(proxy: SocketAddr, urls: &[String]) -> Vec<u16> {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--noproxy", "127.0.0.1", "-w", "%{http_code}\\n"])
        .env("http_proxy", format!("http://{proxy}"));
    for u in urls {
        cmd.args(["-o", "/dev/null", u]);
    }
    let out = cmd.output().expect("curl runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn a_connector_error_becomes_an_alert_that_says_what_to_do() {
    let mut procs = Procs::new("remedy-e2e-");
    let dir = procs.dir.clone();
    let logs = dir.display().to_string();

    let crm = Upstream::builder().statuses(&[401]).http();
    let ads = Upstream::builder()
        .route(
            "/429",
            Answer::status(429)
                .header("retry-after", 30)
                .header("ratelimit-remaining", 0),
        )
        // Google Ads' quota error as gRPC answers it: HTTP 200, the status in the head.
        .route(
            "/grpc-quota",
            Answer::status(200)
                .header("content-type", "application/grpc")
                .header("grpc-status", 8),
        )
        .http();
    let mut analytics = Upstream::builder()
        .route("/503", Answer::status(503).header("retry-after", 5))
        .statuses(&[404])
        .http();
    // TikTok's Business API: HTTP 200 whatever happened, the rate limit in the body's code.
    let tiktok = Upstream::builder()
        .route(
            "/limited",
            Answer::body(&[(
                br#"{"code": 40100, "message": "Too many requests", "data": {}}"#,
                1,
            )])
            .header("content-type", "application/json"),
        )
        .route(
            "/fine",
            Answer::body(&[(br#"{"code": 0, "message": "OK", "data": {"list": []}}"#, 1)])
                .header("content-type", "application/json"),
        )
        .http();
    let quiet = Upstream::http();
    let quick = "{ threshold: 0.1, for: 5s, keep_firing_for: 0s, min_requests: 2 }";
    let config = on_port_zero()
        .source(
            source("crm", crm.url())
                .prefix("/crm")
                .set("routes", "['/deals/{deal}']"),
        )
        .source(source("ads", ads.url()).hosts(&["ads.example.test"]))
        .source(
            source("analytics", analytics.url())
                .prefix("/analytics")
                .set("timeouts", "{ connect: 1s }"),
        )
        .source(source("quiet", quiet.url()).prefix("/quiet"))
        .source(
            source("tiktok", tiktok.url())
                .prefix("/tiktok")
                .set("body_errors", "tiktok"),
        )
        .section(
            "alerts",
            format!(
                "{{ window: 20s, overrides: {{ check_credentials: {quick}, reduce_concurrency: {quick}, \
                 retry_later: {quick}, check_resource_availability: {quick}, \
                 RemedyUpstreamUnreachable: {quick} }} }}"
            ),
        );
    let (proxy, admin) = start_remedy(&mut procs, &config);
    let (prom, received) = start_stack(&mut procs, &scrape_every_second(admin));
    let run = Stack {
        prom,
        received,
        proxy,
        logs,
    };

    let p = format!("http://{proxy}");
    let mut round: Vec<String> = Vec::new();
    for _ in 0..2 {
        round.push(format!("{p}/crm/deals/200?page=1"));
        round.push(format!("{p}/quiet/ok"));
        round.push("http://ads.example.test/campaigns/200".into());
    }
    round.push(format!("{p}/crm/deals/401"));
    round.push("http://ads.example.test/campaigns/429".into());
    round.push("http://ads.example.test/campaigns/grpc-quota".into());
    round.push(format!("{p}/tiktok/report/limited"));
    round.push(format!("{p}/tiktok/report/fine"));
    round.push(format!("{p}/analytics/report/503"));
    round.push(format!("{p}/analytics/report/404"));
    round.push(format!("{p}/analytics/report/200"));

    step_errors_fire_their_alerts(&run, &round, &mut analytics);
    step_notifications_say_what_to_do(&run, &dir);
    step_every_dashboard_query_returns_data(&run);
    step_the_alerts_resolve_when_errors_stop(&run, &p);
    procs.stop("remedy");
}

/// The alerts a round of errors should raise: one per failing source and key.
fn expected_firing() -> BTreeSet<(&'static str, &'static str)> {
    [
        ("ConnectorCredentialsRejected", "crm"),
        ("ConnectorRateLimited", "ads"),
        ("ConnectorRateLimited", "tiktok"),
        ("UpstreamServerErrors", "analytics"),
        ("RemedyUpstreamUnreachable", "analytics"),
    ]
    .into()
}

/// A test's Prometheus, what its webhook received, remedy's proxy and where the logs are.
struct Stack {
    prom: String,
    received: Arc<Mutex<Vec<Value>>>,
    proxy: SocketAddr,
    logs: String,
}

/// Errors on every source but `quiet` until each expected alert reaches the webhook; once
/// `ConnectorResourceNotFound` fires in Prometheus (and is held back by the inhibition),
/// analytics' upstream dies, so remedy's own 502s raise `RemedyUpstreamUnreachable`.
fn step_errors_fire_their_alerts(run: &Stack, round: &[String], analytics: &mut Upstream) {
    let (prom, received, logs) = (&run.prom, &run.received, &run.logs);
    let want_firing = expected_firing();
    let started = Instant::now();
    let mut saw_404_alert_in_prometheus = false;
    let mut killed = false;
    let mut codes_seen = BTreeSet::new();
    loop {
        let codes = traffic(run.proxy, round);
        codes_seen.extend(codes);
        let firing_in_prom = query(prom, "ALERTS{alertstate=\"firing\"}");
        if firing_in_prom.iter().any(|a| {
            a["metric"]["alertname"] == "ConnectorResourceNotFound"
                && a["metric"]["source"] == "analytics"
        }) && delivered(received)
            .iter()
            .any(|(n, s, st, _)| n == "UpstreamServerErrors" && s == "analytics" && st == "firing")
        {
            saw_404_alert_in_prometheus = true;
        }
        if !killed && saw_404_alert_in_prometheus {
            analytics.stop();
            killed = true;
        }
        let got: BTreeSet<(String, String)> = delivered(received)
            .into_iter()
            .filter(|(_, _, st, _)| st == "firing")
            .map(|(n, s, _, _)| (n, s))
            .collect();
        if killed
            && want_firing
                .iter()
                .all(|(n, s)| got.contains(&((*n).to_owned(), (*s).to_owned())))
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not every expected alert arrived: got {got:?}, prometheus firing {firing_in_prom:?}; logs in {logs}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        [200, 401, 429, 503, 404, 502]
            .iter()
            .all(|c| codes_seen.contains(c)),
        "the connector saw {codes_seen:?}"
    );
}

/// What the webhook received says what to do, word for word, with a runbook link; and the
/// inhibited 404 alert never reached it.
fn step_notifications_say_what_to_do(run: &Stack, dir: &Path) {
    let received = &run.received;
    let catalog = remedy::catalog::Catalog::builtin();
    let advice = |code: u16| catalog.get(code).unwrap().advice_text();
    for (name, source, status, ann) in delivered(received) {
        assert_ne!(source, "quiet", "{name} fired for the quiet source");
        assert!(
            !(name == "ConnectorResourceNotFound" && source == "analytics"),
            "the inhibition rule did not hold: {name} reached the webhook ({status})"
        );
        let want = match name.as_str() {
            "ConnectorCredentialsRejected" => advice(401),
            "ConnectorRateLimited" => advice(429),
            "UpstreamServerErrors" => advice(503),
            _ => continue,
        };
        assert_eq!(ann["remediation"].as_str(), Some(want.as_str()), "{name}");
        assert!(
            ann["runbook_url"]
                .as_str()
                .is_some_and(|u| u.starts_with("https://")),
            "{name}"
        );
    }
    let mut example = None;
    for n in received.lock().unwrap().iter() {
        if n["alerts"][0]["labels"]["alertname"] == "ConnectorCredentialsRejected" {
            example = Some(n.clone());
        }
    }
    std::fs::write(
        dir.join("webhook-example.json"),
        serde_json::to_string_pretty(&example).unwrap(),
    )
    .unwrap();
}

/// Every dashboard query returns data from this Prometheus.
fn step_every_dashboard_query_returns_data(run: &Stack) {
    let (prom, logs) = (&run.prom, &run.logs);
    let catalog = remedy::catalog::Catalog::builtin();
    let dashboard: Value =
        serde_json::from_str(&remedy::artifacts::dashboard::render(&catalog)).unwrap();
    for expr in remedy::artifacts::dashboard::queries(&dashboard, "20s", "10m") {
        assert!(
            !query(prom, &expr).is_empty(),
            "no data for dashboard query {expr}; logs in {logs}"
        );
    }
}

/// Errors stop; every alert that fired is resolved at the webhook.
fn step_the_alerts_resolve_when_errors_stop(run: &Stack, p: &str) {
    let (received, logs) = (&run.received, &run.logs);
    let want_firing = expected_firing();
    let healthy: Vec<String> = vec![
        format!("{p}/crm/deals/200"),
        "http://ads.example.test/campaigns/200".into(),
        format!("{p}/quiet/ok"),
        format!("{p}/tiktok/report/fine"),
    ];
    let resolving = Instant::now();
    loop {
        traffic(run.proxy, &healthy);
        let resolved: BTreeSet<(String, String)> = delivered(received)
            .into_iter()
            .filter(|(_, _, st, _)| st == "resolved")
            .map(|(n, s, _, _)| (n, s))
            .collect();
        if want_firing
            .iter()
            .all(|(n, s)| resolved.contains(&((*n).to_owned(), (*s).to_owned())))
        {
            break;
        }
        assert!(
            resolving.elapsed() < Duration::from_secs(90),
            "alerts did not resolve: {resolved:?}; logs in {logs}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A connector counts an API's quota down: `ConnectorNearRateLimit` reaches the webhook, with
/// the FAQ's 429 advice and the seconds to reset, while Prometheus has counted no 429; then the
/// 429s come and `ConnectorRateLimited` follows.
#[test]
fn the_quota_warning_arrives_before_the_first_429() {
    let mut procs = Procs::new("remedy-e2e-quota-");
    let dir = procs.dir.clone();
    let logs = dir.display().to_string();
    let api = Upstream::builder()
        .route("/quota", Answer::quota(100))
        .http();
    let config = on_port_zero()
        .source(source("ads", api.url()).prefix("/ads"))
        .section(
            "alerts",
            "{ window: 30s, overrides: { ConnectorNearRateLimit: { for: 2s }, \
             reduce_concurrency: { threshold: 0.1, for: 2s, keep_firing_for: 0s, min_requests: 2 } } }",
        );
    let (proxy, admin) = start_remedy(&mut procs, &config);
    let (prom, received) = start_stack(&mut procs, &scrape_every_second(admin));
    let p = format!("http://{proxy}");
    let arrived = |alert: &str| {
        delivered(&received)
            .into_iter()
            .find(|(n, s, st, _)| n == alert && s == "ads" && st == "firing")
            .map(|(_, _, _, ann)| ann)
    };
    // 429s Prometheus holds: 0 while no series of one exists (a series appears with its
    // first count).
    let counted_429 = || {
        query(
            &prom,
            "sum(remedy_upstream_responses_total{code=\"429\"}) or vector(0)",
        )
        .first()
        .and_then(|v| v["value"][1].as_str()?.parse::<f64>().ok())
    };

    // Phase 1: 92 of the quota's 100 calls; then calls that state no quota keep the source busy.
    let quota: Vec<String> = (0..92).map(|_| format!("{p}/ads/quota")).collect();
    assert!(traffic(proxy, &quota).iter().all(|c| *c == 200));
    let started = Instant::now();
    let warning = loop {
        assert_eq!(traffic(proxy, &[format!("{p}/ads/report")]), [200]);
        if let Some(ann) = arrived("ConnectorNearRateLimit") {
            break ann;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "ConnectorNearRateLimit did not arrive; logs in {logs}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(
        counted_429(),
        Some(0.0),
        "a 429 was counted before the warning"
    );
    let advice = remedy::catalog::Catalog::builtin()
        .get(429)
        .unwrap()
        .advice_text();
    assert_eq!(warning["remediation"].as_str(), Some(advice.as_str()));
    let summary = warning["summary"].as_str().unwrap_or_default();
    assert!(
        summary.starts_with("ads has used 92% of the quota its API reports; its last response said the quota is restored in 1m 0s. 1 run called it"),
        "{summary}"
    );

    // Phase 2: the quota runs out; the 429s are counted and their own alert follows.
    let more: Vec<String> = (0..20).map(|_| format!("{p}/ads/quota")).collect();
    let codes = traffic(proxy, &more);
    assert_eq!(codes.iter().filter(|c| **c == 429).count(), 12, "{codes:?}");
    let started = Instant::now();
    while arrived("ConnectorRateLimited").is_none() {
        traffic(proxy, &more[..2]);
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "ConnectorRateLimited did not arrive; logs in {logs}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(counted_429().is_some_and(|n| n >= 12.0));
    procs.stop("remedy");
}

/// Scrape interval of the scheduled-runs test; every run makes its calls and gets SIGTERM
/// well within it.
const RUN_SCRAPE: Duration = Duration::from_secs(6);

/// One extract run: a fresh remedy process, discovered through file_sd as a pod would be,
/// that makes its calls and gets SIGTERM at once, as when its connector exits.
struct Run {
    remedy: crate::support::Remedy,
    name: String,
}

/// Scheduled runs as a cluster has them: Prometheus scraping every [`RUN_SCRAPE`] and
/// discovering each run's remedy through file_sd, the sources' fixtures, and what each run's
/// connector received, per (source, code).
struct Schedule {
    procs: Procs,
    prom: String,
    received: Arc<Mutex<Vec<Value>>>,
    targets: PathBuf,
    config: Config,
    live: Vec<(String, SocketAddr)>,
    tally: BTreeMap<(String, u16), u64>,
    logs: String,
    _upstreams: [Upstream; 3],
}

impl Schedule {
    /// `crm` answering 401, `ads` 429 and `analytics` 503, with alert windows scaled to the
    /// scrape interval (the defaults' shapes otherwise: `for` 0s on 401, a guard in responses).
    fn start() -> Self {
        let mut procs = Procs::new("remedy-e2e-runs-");
        let dir = procs.dir.clone();
        let crm = Upstream::builder().statuses(&[401]).http();
        let ads = Upstream::builder().statuses(&[429]).http();
        let analytics = Upstream::builder().statuses(&[503]).http();
        let config = Config::new()
            .section("shutdown", "{ drain_timeout: 2s, linger: 30s }")
            .source(source("crm", crm.url()).prefix("/crm"))
            .source(source("ads", ads.url()).prefix("/ads"))
            .source(source("analytics", analytics.url()).prefix("/analytics"))
            .section(
                "alerts",
                "{ window: 30s, overrides: { check_credentials: { keep_firing_for: 1m }, \
                 reduce_concurrency: { for: 0s, keep_firing_for: 1m }, \
                 retry_later: { for: 0s, keep_firing_for: 1m } } }",
            );
        let config_path = dir.join("remedy.yaml");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let rules = crate::support::tools::remedy_stdout(&[
            "rules",
            "--config",
            config_path.to_str().unwrap(),
        ]);
        std::fs::write(dir.join("rules.yaml"), rules).unwrap();
        let targets = dir.join("targets.json");
        std::fs::write(&targets, "[]").unwrap();
        let (prom, received) = start_stack(
            &mut procs,
            &format!(
                "global: {{ scrape_interval: {}s, evaluation_interval: 1s }}\n\
                 scrape_configs:\n  - {{ job_name: remedy, file_sd_configs: [ {{ files: ['{}'] }} ] }}\n",
                RUN_SCRAPE.as_secs(),
                targets.display()
            ),
        );
        Schedule {
            logs: dir.display().to_string(),
            procs,
            prom,
            received,
            targets,
            config,
            live: Vec::new(),
            tally: BTreeMap::new(),
            _upstreams: [crm, ads, analytics],
        }
    }

    /// Writes the live runs to the file Prometheus discovers targets from.
    fn discover(&self) {
        let groups: Vec<Value> = self
            .live
            .iter()
            .map(|(pod, a)| {
                serde_json::json!({ "targets": [a.to_string()], "labels": { "namespace": "data", "pod": pod } })
            })
            .collect();
        let tmp = self.targets.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_string(&groups).unwrap()).unwrap();
        std::fs::rename(&tmp, &self.targets).unwrap();
    }

    /// As in a cluster, where a pod is discovered while it starts: the run begins once
    /// Prometheus has the target (its scrape manager takes up to 5s to pick up new targets),
    /// before any scrape of it.
    fn start_run(&mut self, name: &str) -> Run {
        let remedy = crate::support::Remedy::start(&self.config);
        self.live.push((name.to_owned(), remedy.admin));
        self.discover();
        let url = format!("http://{}/metrics", remedy.admin);
        wait_for(
            &format!("Prometheus to discover {name}"),
            Duration::from_secs(20),
            || {
                let t = http_get_json(&self.prom, "/api/v1/targets")?;
                t["data"]["activeTargets"]
                    .as_array()?
                    .iter()
                    .any(|t| t["scrapeUrl"] == url.as_str())
                    .then_some(())
            },
        );
        Run {
            remedy,
            name: name.to_owned(),
        }
    }

    /// The run's connector calls `source` once per code, and what it received is tallied.
    fn call(&mut self, run: &Run, source: &str, codes: &[u16]) {
        let urls: Vec<String> = codes
            .iter()
            .enumerate()
            .map(|(i, c)| format!("http://{}/{source}/r{i}/{c}", run.remedy.proxy))
            .collect();
        for code in traffic(run.remedy.proxy, &urls) {
            *self.tally.entry((source.to_owned(), code)).or_default() += 1;
        }
    }

    /// SIGTERM, then the run is over once remedy exits after its final scrape; returns the
    /// time from its drain to its exit.
    fn finish(&mut self, mut run: Run) -> Duration {
        run.remedy.signal("TERM");
        run.remedy.wait_log("drained");
        let drained = Instant::now();
        assert_eq!(
            run.remedy.wait_exit(Duration::from_secs(40)),
            Some(0),
            "{} did not exit; logs in {}",
            run.name,
            self.logs
        );
        let delay = drained.elapsed();
        assert!(
            run.remedy.logs().contains("final scrape served; exiting"),
            "{} exited without its final scrape: {}",
            run.name,
            run.remedy.logs()
        );
        self.live.retain(|(n, _)| *n != run.name);
        self.discover();
        delay
    }
}

#[test]
fn runs_shorter_than_a_scrape_interval_are_counted_whole_and_page() {
    let mut schedule = Schedule::start();
    step_each_run_exits_within_a_scrape_of_its_drain(&mut schedule);
    step_prometheus_holds_what_the_connectors_received(&schedule);
    step_the_failing_runs_page_with_the_faqs_advice(&schedule);
    step_one_503_in_50_never_pages(&schedule);
    schedule.procs.stop("prometheus");
}

/// A fail-fast run (one call, 401), two overlapping runs against `ads` with two thirds of
/// their calls throttled, and a run with one 503 in 50: each remedy exits after its final
/// scrape, within one scrape interval of its drain.
fn step_each_run_exits_within_a_scrape_of_its_drain(schedule: &mut Schedule) {
    let mut delays = Vec::new();
    let run = schedule.start_run("crm-extract-1");
    schedule.call(&run, "crm", &[401]);
    delays.push(schedule.finish(run));
    let (a, b) = (
        schedule.start_run("ads-hourly-1"),
        schedule.start_run("ads-backfill-1"),
    );
    let throttled: Vec<u16> = (0..12)
        .map(|i| if i % 3 == 0 { 200 } else { 429 })
        .collect();
    schedule.call(&a, "ads", &throttled);
    schedule.call(&b, "ads", &throttled);
    delays.push(schedule.finish(a));
    delays.push(schedule.finish(b));
    let run = schedule.start_run("analytics-extract-1");
    let mostly_fine: Vec<u16> = (0..50).map(|i| if i == 25 { 503 } else { 200 }).collect();
    schedule.call(&run, "analytics", &mostly_fine);
    delays.push(schedule.finish(run));
    eprintln!("drain-to-exit delays of the runs: {delays:?} (scrape interval {RUN_SCRAPE:?})");
    for d in &delays {
        assert!(
            *d <= RUN_SCRAPE + Duration::from_secs(1),
            "a run waited {d:?} after its drain, more than one scrape interval ({RUN_SCRAPE:?})"
        );
    }
}

/// Prometheus holds exactly the responses the connectors received.
fn step_prometheus_holds_what_the_connectors_received(schedule: &Schedule) {
    let held = query(
        &schedule.prom,
        "sum by (source, code) (max_over_time(remedy_upstream_responses_total[10m]) > 0)",
    );
    let held: BTreeMap<(String, u16), u64> = held
        .iter()
        .map(|s| {
            (
                (
                    s["metric"]["source"].as_str().unwrap().to_owned(),
                    s["metric"]["code"].as_str().unwrap().parse().unwrap(),
                ),
                s["value"][1].as_str().unwrap().parse::<f64>().unwrap() as u64,
            )
        })
        .collect();
    assert_eq!(
        held, schedule.tally,
        "Prometheus against the connectors' tally; logs in {}",
        schedule.logs
    );
}

/// The fail-fast 401 and the overlapping 429 runs page, with the FAQ's advice; once both
/// overlapping runs' final scrapes are in, the rate-limit alert names the two runs.
fn step_the_failing_runs_page_with_the_faqs_advice(schedule: &Schedule) {
    let catalog = remedy::catalog::Catalog::builtin();
    let started = Instant::now();
    loop {
        let got = delivered(&schedule.received);
        let firing = |name: &str, source: &str| {
            got.iter()
                .find(|(n, s, st, _)| n == name && s == source && st == "firing")
                .map(|(_, _, _, a)| a.clone())
        };
        if let (Some(crm), Some(ads)) = (
            firing("ConnectorCredentialsRejected", "crm"),
            firing("ConnectorRateLimited", "ads"),
        ) {
            assert_eq!(
                crm["remediation"].as_str(),
                Some(catalog.get(401).unwrap().advice_text().as_str())
            );
            assert_eq!(
                ads["remediation"].as_str(),
                Some(catalog.get(429).unwrap().advice_text().as_str())
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the runs' alerts did not arrive: {got:?}; logs in {}",
            schedule.logs
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    wait_for(
        &format!(
            "ConnectorRateLimited to name both runs; logs in {}",
            schedule.logs
        ),
        Duration::from_secs(30),
        || {
            let alerts = http_get_json(&schedule.prom, "/api/v1/alerts")?;
            alerts["data"]["alerts"]
                .as_array()?
                .iter()
                .any(|a| {
                    a["labels"]["alertname"] == "ConnectorRateLimited"
                        && a["annotations"]["summary"]
                            .as_str()
                            .is_some_and(|s| s.starts_with("2 runs called ads in the last 30s;"))
                })
                .then_some(())
        },
    );
}

/// Two scrape intervals' more evaluations of the alerts: the single 503 among 50 never pages.
fn step_one_503_in_50_never_pages(schedule: &Schedule) {
    let last_evaluation = || -> Option<String> {
        let rules = http_get_json(&schedule.prom, "/api/v1/rules")?;
        rules["data"]["groups"]
            .as_array()?
            .iter()
            .find(|g| g["name"] == "remedy.alerts")?["lastEvaluation"]
            .as_str()
            .map(str::to_owned)
    };
    let mut seen = BTreeSet::new();
    let wanted = 2 * RUN_SCRAPE.as_secs() as usize;
    wait_for(
        "two scrape intervals' more evaluations of the alerts",
        RUN_SCRAPE * 4,
        || {
            seen.extend(last_evaluation());
            (seen.len() > wanted).then_some(())
        },
    );
    let fired_5xx = query(&schedule.prom, "ALERTS{alertname=\"UpstreamServerErrors\"}");
    assert!(fired_5xx.is_empty(), "{fired_5xx:?}");
    assert!(
        !delivered(&schedule.received)
            .iter()
            .any(|(n, _, _, _)| n == "UpstreamServerErrors"),
        "one 503 in 50 paged"
    );
}
