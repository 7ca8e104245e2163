//! gRPC and HTTP/2 through interception, with clients nobody here wrote: grpcio (the gRPC stack
//! of Google Ads' and GA4's Python libraries) calling a grpcio server through `https_proxy`
//! and trusting remedy's `ca.pem`, and httpx with `http2=True`. Every call is counted with the
//! remediation its gRPC status stands for, while its `code` stays the 200 the client received.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

use crate::support::tools::{must, root};
use crate::support::{Answer, Config, GrpcEnd, Remedy, Scrape, Upstream, source};

const HOST: &str = "api.example.test";

/// A grpcio server on TLS, with a certificate for 127.0.0.1.
struct GrpcServer {
    child: Child,
    port: u16,
    ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl GrpcServer {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        let mut child = Command::new("python3")
            .arg(peers())
            .arg("server")
            .args([&cert, &key])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with grpcio: run the tests through scripts/test, which installs it");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = serde_json::from_str::<Value>(&line).expect("the server's port")["port"]
            .as_u64()
            .unwrap() as u16;
        GrpcServer {
            child,
            port,
            ca_file: cert,
            _dir: dir,
        }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn peers() -> PathBuf {
    root().join("tests/integration/grpc_peers.py")
}

/// remedy intercepting `HOST` for `upstream` (a URL), trusting `ca_file`.
fn intercepting(upstream: &str, ca_file: Option<&Path>, ca_dir: &Path) -> Remedy {
    intercepting_with(upstream, ca_file, ca_dir, |c| c)
}

/// The same, with more settings of the test's own.
fn intercepting_with(
    upstream: &str,
    ca_file: Option<&Path>,
    ca_dir: &Path,
    more: impl FnOnce(Config) -> Config,
) -> Remedy {
    let mut api = source("ads", upstream).hosts(&[HOST]);
    if let Some(ca) = ca_file {
        api = api.ca_file(ca);
    }
    Remedy::start(
        more(Config::new())
            .proxy(
                "intercept",
                format!("{{ enabled: true, ca_dir: '{}' }}", ca_dir.display()),
            )
            .source(api),
    )
}

/// A grpcio client that reaches `HOST` through remedy as its proxy, taking calls on its
/// standard input and printing what each got.
struct GrpcClient {
    child: Child,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

impl GrpcClient {
    /// The next line the client printed.
    fn line(&mut self) -> Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }
}

impl Drop for GrpcClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn grpc_client(remedy: &Remedy, ca_dir: &Path) -> GrpcClient {
    let mut child = Command::new("python3")
        .arg(peers())
        .args(["client", &format!("{HOST}:443")])
        .arg(ca_dir.join("ca.pem"))
        .env("https_proxy", format!("http://{}", remedy.proxy))
        .env_remove("grpc_proxy")
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    GrpcClient {
        stdin: child.stdin.take().unwrap(),
        stdout: BufReader::new(child.stdout.take().unwrap()),
        child,
    }
}

/// remedy intercepting `HOST` for a grpcio server, the folder of its CA, and the server.
fn intercepting_grpcio() -> (GrpcServer, tempfile::TempDir, Remedy) {
    let server = GrpcServer::start();
    let ca_dir = tempfile::tempdir().unwrap();
    let remedy = intercepting(
        &format!("https://127.0.0.1:{}", server.port),
        Some(&server.ca_file),
        ca_dir.path(),
    );
    (server, ca_dir, remedy)
}

/// Runs `calls` through a grpcio client that reaches `HOST` through `remedy` as its proxy;
/// what it got for each.
fn grpc_calls(remedy: &Remedy, ca_dir: &Path, calls: &[Value]) -> Vec<Value> {
    let mut client = grpc_client(remedy, ca_dir);
    for c in calls {
        writeln!(client.stdin, "{c}").unwrap();
    }
    calls.iter().map(|_| client.line()).collect()
}

fn responses(s: &Scrape, remediation: &str, origin: &str) -> f64 {
    s.sum(
        "remedy_upstream_responses_total",
        &[
            ("source", "ads"),
            ("code", "200"),
            ("remediation", remediation),
            ("origin", origin),
        ],
    )
}

fn api_errors(s: &Scrape, api_code: &str, code: &str) -> f64 {
    s.sum(
        "remedy_upstream_api_errors_total",
        &[("source", "ads"), ("api_code", api_code), ("code", code)],
    )
}

#[test]
fn grpc_calls_are_counted_with_the_remediation_their_status_stands_for() {
    let (_server, ca_dir, remedy) = intercepting_grpcio();
    let unary = |arg: &str| json!({ "call": "Unary", "arg": arg });
    let calls = [
        unary("ok"),
        unary("ok"),
        // Google Ads' quota error, twice, before any message: trailers-only answers.
        unary("fail:8"),
        unary("fail:8"),
        unary("fail:16"),
        unary("fail:5"),
        // A server stream that ends OK, and one that ends RESOURCE_EXHAUSTED after its messages.
        json!({ "call": "Stream", "arg": "150:100:0" }),
        json!({ "call": "Stream", "arg": "120:10:8" }),
        // Streams from the client, and both ways in ping-pong (a held message would stall it).
        json!({ "call": "Upload", "count": 8, "size": 1 << 20 }),
        json!({ "call": "Chat", "count": 50 }),
    ];
    let got = grpc_calls(&remedy, ca_dir.path(), &calls);
    let outcome: Vec<(&str, u64)> = got
        .iter()
        .map(|g| {
            (
                g["status"].as_str().unwrap(),
                g["messages"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcome,
        [
            ("OK", 1),
            ("OK", 1),
            ("RESOURCE_EXHAUSTED", 0),
            ("RESOURCE_EXHAUSTED", 0),
            ("UNAUTHENTICATED", 0),
            ("NOT_FOUND", 0),
            ("OK", 150),
            ("RESOURCE_EXHAUSTED", 120),
            ("OK", 1),
            ("OK", 50),
        ],
        "{got:#?}"
    );
    assert_eq!(got[8]["first"], (8 << 20).to_string());
    let s = remedy.scrape();
    assert_eq!(responses(&s, "none", "upstream"), 5.0, "{}", s.text);
    assert_eq!(responses(&s, "reduce_concurrency", "upstream"), 3.0);
    assert_eq!(responses(&s, "check_credentials", "upstream"), 1.0);
    assert_eq!(
        responses(&s, "check_resource_availability", "upstream"),
        1.0
    );
    assert_eq!(
        s.sum("remedy_upstream_responses_total", &[("source", "ads")]),
        10.0
    );
    assert_eq!(api_errors(&s, "RESOURCE_EXHAUSTED", "429"), 3.0);
    assert_eq!(api_errors(&s, "UNAUTHENTICATED", "401"), 1.0);
    assert_eq!(api_errors(&s, "NOT_FOUND", "404"), 1.0);
    assert_eq!(s.sum("remedy_upstream_api_errors_total", &[]), 5.0);
    assert_eq!(
        s.get(
            "remedy_intercept_connections_total",
            &[("outcome", "intercepted")]
        ),
        Some(1.0),
        "one channel, one tunnel"
    );
    assert_eq!(s.in_flight("ads"), 0.0);
}

/// A server stream of 100 MiB passes through at the pace the client reads it, with remedy's
/// memory flat: HTTP/2's flow control on both sides bounds what remedy holds.
#[test]
fn a_hundred_mib_server_stream_flows_with_flat_memory() {
    let (_server, ca_dir, remedy) = intercepting_grpcio();
    let before = remedy.rss_kib();
    let got = grpc_calls(
        &remedy,
        ca_dir.path(),
        &[json!({ "call": "Stream", "arg": format!("100:{}:0", 1 << 20) })],
    );
    assert_eq!(got[0]["status"], "OK");
    assert_eq!(got[0]["bytes"], 100 << 20);
    let grew = remedy.peak_rss_kib().saturating_sub(before);
    eprintln!("peak memory grew by {grew} KiB");
    assert!(grew < 48 * 1024, "peak memory grew by {grew} KiB");
    assert_eq!(responses(&remedy.scrape(), "none", "upstream"), 1.0);
}

/// An API that does not speak HTTP/2 cannot take a gRPC call: remedy answers it as gRPC does,
/// a trailers-only UNAVAILABLE that says why, counted as its own answer (`origin="proxy"`,
/// remedy's own remediation, `kind="protocol"`), never as the API's.
/// Over TLS (ALPN says http/1.1) and over plain `http://` (no h2c: the API answers the HTTP/2
/// preface as HTTP/1.1) alike.
#[test]
fn a_grpc_call_to_an_upstream_without_http2_is_answered_unavailable_and_says_why() {
    for http1 in [
        Upstream::builder().tls_http1_only(),
        Upstream::builder().http1_only(),
    ] {
        let ca_dir = tempfile::tempdir().unwrap();
        let remedy = intercepting(&http1.url(), http1.ca_file.as_deref(), ca_dir.path());
        let got = grpc_calls(
            &remedy,
            ca_dir.path(),
            &[json!({ "call": "Unary", "arg": "ok" })],
        );
        assert_eq!(got[0]["status"], "UNAVAILABLE", "{}: {got:?}", http1.url());
        let details = got[0]["details"].as_str().unwrap_or_default();
        assert!(details.contains("does not speak HTTP/2"), "{details}");
        assert_eq!(http1.hits(), 0);
        let s = remedy.scrape();
        assert_eq!(responses(&s, "check_upstream_reachability", "proxy"), 1.0);
        assert_eq!(s.errors("ads", "protocol"), 1.0, "{}", s.text);
        assert_eq!(s.sum("remedy_upstream_api_errors_total", &[]), 0.0);
    }
}

/// httpx offering h2 gets it from remedy, and remedy forwards its call to an API that speaks
/// only HTTP/1.1.
#[test]
fn httpx_over_http2_reaches_an_http1_api_through_remedy() {
    let api = Upstream::http();
    let ca_dir = tempfile::tempdir().unwrap();
    let remedy = intercepting(&api.url(), None, ca_dir.path());
    let program = format!(
        "import httpx\n\
         with httpx.Client(http2=True, verify='{bundle}', proxy='http://{proxy}') as c:\n\
         \x20   r = c.get('https://{HOST}/reports/1?page=2')\n\
         \x20   print(r.status_code, r.http_version, r.json()['target'])\n",
        bundle = ca_dir.path().join("bundle.pem").display(),
        proxy = remedy.proxy,
    );
    let out = Command::new("python3")
        .args(["-c", &program])
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.trim(), "200 HTTP/2 /reports/1?page=2");
    assert_eq!(responses(&remedy.scrape(), "none", "upstream"), 1.0);
    assert_eq!(api.hits(), 1);
}

/// gRPC needs HTTP/2: a request over HTTP/1.1 that says `application/grpc` is no gRPC call,
/// and goes upstream over HTTP/1.1 like any other, rather than being turned into HTTP/2.
#[test]
fn an_http1_request_that_says_grpc_goes_upstream_over_http1() {
    let api = Upstream::http();
    let remedy = Remedy::start(Config::new().source(source("api", api.url()).prefix("/api")));
    let url = format!("http://{}/api/call", remedy.proxy);
    let header = "content-type: application/grpc";
    let text = must(
        "curl",
        &["-sS", "--fail-with-body", "--http1.1", "-H", header, &url],
    );
    let echo: Value = serde_json::from_str(&text).expect("the API's echo");
    assert_eq!(echo["version"], "HTTP/1.1", "{echo}");
    assert_eq!(api.hits(), 1);
    assert_eq!(
        remedy.scrape().responses("api", 200, "none", "upstream"),
        1.0
    );
}

/// Every call to an API shares one HTTP/2 connection upstream. Three server streams whose
/// client has stopped reading hold what remedy may buffer of each, and no more: a unary call on
/// another channel to the same API is answered at once, as it would be calling the API directly.
#[test]
fn stalled_server_streams_do_not_stall_another_call_to_the_same_api() {
    let api = Upstream::builder()
        .route("/Stream", Answer::grpc_messages(400, 1 << 20, ok()))
        .route("/Unary", Answer::grpc(1, ok()))
        .tls();
    let ca_dir = tempfile::tempdir().unwrap();
    let remedy = intercepting(&api.url(), api.ca_file.as_deref(), ca_dir.path());
    let mut client = grpc_client(&remedy, ca_dir.path());
    let spec = json!({ "call": "StalledThenUnary", "streams": 3, "calls": 5, "timeout": 10 });
    writeln!(client.stdin, "{spec}").unwrap();
    assert_eq!(client.line()["stalled"], true);
    api.wait_until_sending_stalls();
    writeln!(client.stdin, "go").unwrap();
    let got = client.line();
    assert_eq!(got["status"], "OK", "{got}");
    assert_eq!(got["messages"], 5);
}

fn ok() -> GrpcEnd {
    GrpcEnd::Trailers(vec![("grpc-status", "0")])
}

/// A call the API ends without a status a client can read, or by resetting its stream, is
/// counted as what grpcio reports for it, never as success: no status UNKNOWN, a malformed one
/// INTERNAL, and each HTTP/2 reset, before the head or after it, as gRPC's mapping of HTTP/2
/// errors has it (ENHANCE_YOUR_CALM is RESOURCE_EXHAUSTED, and pages for a rate limit).
#[test]
fn grpc_calls_the_api_ends_without_a_readable_status_count_what_the_client_saw() {
    let trailers = |fields: &[(&'static str, &'static str)]| {
        Answer::grpc(1, GrpcEnd::Trailers(fields.to_vec()))
    };
    let head_only = |status| Answer::grpc(0, GrpcEnd::NoTrailers).header("grpc-status", status);
    let cases = [
        ("NoStatus", trailers(&[("x-other", "1")]), "UNKNOWN"),
        (
            "NoTrailers",
            Answer::grpc(1, GrpcEnd::NoTrailers),
            "UNKNOWN",
        ),
        ("Minus", trailers(&[("grpc-status", "-1")]), "INTERNAL"),
        ("Letters", trailers(&[("grpc-status", "abc")]), "INTERNAL"),
        ("Decimal", trailers(&[("grpc-status", "8.0")]), "INTERNAL"),
        (
            "Plus",
            trailers(&[("grpc-status", "+8")]),
            "RESOURCE_EXHAUSTED",
        ),
        (
            "Zero",
            trailers(&[("grpc-status", "08")]),
            "RESOURCE_EXHAUSTED",
        ),
        (
            "Spaces",
            trailers(&[("grpc-status", " 8 ")]),
            "RESOURCE_EXHAUSTED",
        ),
        ("Beyond", trailers(&[("grpc-status", "99")]), "UNKNOWN"),
        ("TrailersOnly", head_only("16"), "UNAUTHENTICATED"),
        // A status in a head that does not end the stream is not read: the trailers are.
        (
            "HeadThenTrailers",
            Answer::grpc(0, GrpcEnd::Trailers(vec![("x-other", "1")])).header("grpc-status", "16"),
            "UNKNOWN",
        ),
        ("Internal", Answer::grpc(1, GrpcEnd::Reset(0x2)), "INTERNAL"),
        ("Cancel", Answer::grpc(1, GrpcEnd::Reset(0x8)), "CANCELLED"),
        (
            "Refused",
            Answer::grpc(1, GrpcEnd::Reset(0x7)),
            "UNAVAILABLE",
        ),
        (
            "Calm",
            Answer::grpc(1, GrpcEnd::Reset(0xb)),
            "RESOURCE_EXHAUSTED",
        ),
        (
            "CalmAtOnce",
            Answer::grpc(0, GrpcEnd::Reset(0xb)),
            "RESOURCE_EXHAUSTED",
        ),
    ];
    let mut api = Upstream::builder();
    for (method, answer, _) in &cases {
        api = api.route(&format!("/{method}"), answer.clone());
    }
    let api = api.tls();
    let ca_dir = tempfile::tempdir().unwrap();
    let remedy = intercepting(&api.url(), api.ca_file.as_deref(), ca_dir.path());
    // A client of its own for each call: once grpcio has met a malformed status on a
    // connection, it reports INTERNAL for every later call on it.
    let got: Vec<Value> = cases
        .iter()
        .map(|(m, _, _)| {
            let call = json!({ "call": "Unary", "method": format!("/test.Svc/{m}") });
            grpc_calls(&remedy, ca_dir.path(), &[call]).remove(0)
        })
        .collect();
    let seen: Vec<(&str, &str)> = cases
        .iter()
        .zip(&got)
        .map(|((m, _, _), g)| (*m, g["status"].as_str().unwrap()))
        .collect();
    let expected: Vec<(&str, &str)> = cases.iter().map(|(m, _, s)| (*m, *s)).collect();
    assert_eq!(seen, expected, "what grpcio reported");
    remedy.wait_in_flight("ads", 0.0);
    let s = remedy.scrape();
    // A code beyond `google.rpc.Code`, which grpcio reports as UNKNOWN, is counted `other`.
    let expected: Vec<(&str, &str)> = expected
        .into_iter()
        .map(|(m, s)| (m, if m == "Beyond" { "other" } else { s }))
        .collect();
    for (name, http) in [
        ("UNKNOWN", "500"),
        ("other", "500"),
        ("INTERNAL", "500"),
        ("RESOURCE_EXHAUSTED", "429"),
        ("UNAUTHENTICATED", "401"),
        ("CANCELLED", "499"),
        ("UNAVAILABLE", "503"),
    ] {
        let reported = expected.iter().filter(|(_, s)| *s == name).count();
        assert_eq!(
            api_errors(&s, name, http),
            reported as f64,
            "{name}\n{}",
            s.text
        );
    }
    assert_eq!(responses(&s, "none", "upstream"), 0.0, "{}", s.text);
    assert_eq!(responses(&s, "reduce_concurrency", "upstream"), 5.0);
}

/// A call whose deadline (`grpc-timeout`) passes is DEADLINE_EXCEEDED, as the client reports
/// it, whether the API had sent its head or not: counted with the remediation of 504.
#[test]
fn grpc_calls_past_their_deadline_count_as_deadline_exceeded() {
    let api = Upstream::builder()
        .route("/MidStream", Answer::grpc(2, GrpcEnd::Stall))
        .route("/NoHead", Answer::stall())
        .tls();
    let ca_dir = tempfile::tempdir().unwrap();
    let remedy = intercepting(&api.url(), api.ca_file.as_deref(), ca_dir.path());
    let got = grpc_calls(
        &remedy,
        ca_dir.path(),
        &[
            json!({ "call": "Stream", "method": "/test.Svc/MidStream", "timeout": 1 }),
            json!({ "call": "Unary", "method": "/test.Svc/NoHead", "timeout": 1 }),
        ],
    );
    let statuses: Vec<&str> = got.iter().map(|g| g["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED"]);
    assert_eq!(got[0]["messages"], 2);
    remedy.wait_in_flight("ads", 0.0);
    let s = remedy.scrape();
    assert_eq!(
        api_errors(&s, "DEADLINE_EXCEEDED", "504"),
        2.0,
        "{}",
        s.text
    );
    assert_eq!(responses(&s, "reduce_query_volume", "upstream"), 1.0);
    assert_eq!(
        s.responses("ads", 499, "reduce_query_volume", "proxy"),
        1.0,
        "{}",
        s.text
    );
}

/// A call whose metadata is over `proxy.max_header_bytes` is refused alone: the channel's
/// other calls go on, before and after it.
#[test]
fn a_call_with_oversized_metadata_is_refused_alone() {
    let (_server, ca_dir, remedy) = intercepting_grpcio();
    let got = grpc_calls(
        &remedy,
        ca_dir.path(),
        &[
            json!({ "call": "Unary", "arg": "ok" }),
            json!({ "call": "Unary", "arg": "ok", "metadata_bytes": 200 << 10 }),
            json!({ "call": "Unary", "arg": "ok" }),
        ],
    );
    let statuses: Vec<&str> = got.iter().map(|g| g["status"].as_str().unwrap()).collect();
    assert_eq!(statuses[0], "OK");
    // h2 answers 431 and resets the stream: grpcio reports UNKNOWN for the first, INTERNAL for
    // the second, whichever it reads first.
    assert!(["UNKNOWN", "INTERNAL"].contains(&statuses[1]), "{got:?}");
    assert_eq!(statuses[2], "OK", "{got:?}");
    let tunnels = remedy.scrape().get(
        "remedy_intercept_connections_total",
        &[("outcome", "intercepted")],
    );
    assert_eq!(tunnels, Some(1.0), "the channel kept its one tunnel");
    let refused = remedy.scrape().sum(
        "remedy_upstream_responses_total",
        &[("source", "unmatched"), ("code", "431")],
    );
    assert_eq!(refused, 1.0, "h2's 431 is counted");
}

/// A server stream whose client stops reading keeps its window closed: after
/// `proxy.send_timeout` remedy cuts it, and grpcio, reading again, gets the reset as INTERNAL,
/// which is what the call is counted as.
#[test]
fn a_server_stream_its_client_stops_reading_is_cut_and_counted_as_the_client_reads_it() {
    let api = Upstream::builder()
        .route("/Stream", Answer::grpc_messages(400, 1 << 20, ok()))
        .tls();
    let ca_dir = tempfile::tempdir().unwrap();
    let remedy = intercepting_with(&api.url(), api.ca_file.as_deref(), ca_dir.path(), |c| {
        c.proxy("send_timeout", "1s")
    });
    let mut client = grpc_client(&remedy, ca_dir.path());
    let call = json!({ "call": "Stream", "arg": "", "pause": true });
    writeln!(client.stdin, "{call}").unwrap();
    assert_eq!(client.line()["paused"], true);
    remedy.wait_log("the stream is cut");
    remedy.wait_in_flight("ads", 0.0);
    writeln!(client.stdin, "go").unwrap();
    let got = client.line();
    assert_eq!(got["status"], "INTERNAL", "{got}");
    assert!((got["messages"].as_u64().unwrap()) < 400, "{got}");
    let s = remedy.scrape();
    assert_eq!(api_errors(&s, "INTERNAL", "500"), 1.0, "{}", s.text);
}
