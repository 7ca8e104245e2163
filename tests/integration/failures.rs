//! When the upstream cannot answer, remedy answers 502/504 itself, says why, and counts it
//! with origin="proxy"; a response broken mid-body reaches the connector broken.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::config::Source;
use crate::support::{Answer, Config, Remedy, Upstream, raw, send, source};

/// The source `api` at `url`, with timeouts short enough for a test to see them pass.
fn api(url: impl std::fmt::Display) -> Source {
    source("api", url).prefix("/api").set(
        "timeouts",
        "{ connect: 1s, response_header: 500ms, idle: 500ms }",
    )
}

/// The same source, waiting 30 s for a head: a test that outlasts the head timeout is about
/// something else.
fn patient_api(url: impl std::fmt::Display) -> Source {
    api(url).set(
        "timeouts",
        "{ connect: 1s, response_header: 30s, idle: 500ms }",
    )
}

#[test]
fn refused_upstream_is_502_from_the_proxy() {
    let mut u = Upstream::http();
    let url = u.url();
    u.stop();
    let remedy = Remedy::start(Config::new().source(api(&url)));
    let r = send(remedy.proxy, "/api/x");
    assert_eq!(r.status, 502);
    assert!(r.text().contains("connect"), "{}", r.text());
    let s = remedy.scrape();
    assert_eq!(s.responses("api", 502, "retry_later", "proxy"), 1.0);
    assert_eq!(s.errors("api", "connect"), 1.0);
    assert_eq!(s.in_flight("api"), 0.0);
    remedy.wait_log("upstream unreachable");
}

#[test]
fn stalled_upstream_is_504_from_the_proxy() {
    let u = Upstream::builder().route("/stall", Answer::stall()).http();
    let remedy = Remedy::start(Config::new().source(api(u.url())));
    let r = send(remedy.proxy, "/api/stall");
    assert_eq!(r.status, 504);
    let s = remedy.scrape();
    assert_eq!(s.responses("api", 504, "reduce_query_volume", "proxy"), 1.0);
    assert_eq!(s.errors("api", "timeout"), 1.0);
    assert_eq!(s.in_flight("api"), 0.0);
}

#[test]
fn a_reused_upstream_connection_still_times_out_a_stalled_head() {
    let u = Upstream::builder().route("/stall", Answer::stall()).http();
    let remedy = Remedy::start(Config::new().source(api(u.url())));
    assert_eq!(send(remedy.proxy, "/api/x").status, 200);
    assert_eq!(send(remedy.proxy, "/api/stall").status, 504);
    // The stalled request went out on the first request's connection, which is then dropped.
    assert_eq!(u.accepted(), 1);
    assert_eq!(send(remedy.proxy, "/api/x").status, 200);
    assert_eq!(u.accepted(), 2);
    assert_eq!(remedy.scrape().errors("api", "timeout"), 1.0);
}

#[test]
fn untrusted_certificate_is_502_tls() {
    let u = Upstream::tls();
    let remedy = Remedy::start(Config::new().source(api(u.url())));
    let r = send(remedy.proxy, "/api/x");
    assert_eq!(r.status, 502);
    let s = remedy.scrape();
    assert_eq!(
        s.errors("api", "tls"),
        1.0,
        "{}\n{}",
        r.text(),
        remedy.logs()
    );
    assert_eq!(s.responses("api", 502, "retry_later", "proxy"), 1.0);
}

#[test]
fn unknown_host_is_502_dns() {
    let remedy = Remedy::start(Config::new().source(api("http://no-such-host.invalid")));
    let r = send(remedy.proxy, "/api/x");
    assert!(r.status == 502 || r.status == 504, "{}", r.status);
    let s = remedy.scrape();
    let dns = s.errors("api", "dns");
    assert_eq!(dns, 1.0, "{}", r.text());
}

#[test]
fn reset_mid_body_reaches_the_connector_as_a_broken_response() {
    let u = Upstream::builder()
        .route("/reset-mid-body", Answer::break_mid_body())
        .http();
    let remedy = Remedy::start(Config::new().source(api(u.url())));
    let reply = raw(
        remedy.proxy,
        b"GET /api/reset-mid-body HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        reply.is_none(),
        "a shortened body was passed off as complete: {reply:?}"
    );
    let s = remedy.scrape();
    assert_eq!(s.responses("api", 200, "none", "upstream"), 1.0);
    assert_eq!(s.in_flight("api"), 0.0);
}

#[test]
fn body_stalled_past_idle_timeout_is_aborted() {
    let u = Upstream::builder()
        .route("/stall-body", Answer::stall_body())
        .http();
    let remedy = Remedy::start(Config::new().source(api(u.url())));
    let reply = raw(
        remedy.proxy,
        b"GET /api/stall-body HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(reply.is_none(), "{reply:?}");
    remedy.wait_log("idle timeout");
    assert_eq!(remedy.scrape().in_flight("api"), 0.0);
}

#[test]
fn a_slow_body_that_keeps_coming_outlasts_the_idle_timeout() {
    let u = Upstream::builder()
        .route("/drip", Answer::drip(8, Duration::from_millis(200)))
        .http();
    let remedy = Remedy::start(Config::new().source(api(u.url())));
    // Eight chunks 200 ms apart: 1.6 s in all, never more than 500 ms without one.
    let r = send(remedy.proxy, "/api/drip");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"dddddddd");
    let s = remedy.scrape();
    assert_eq!(s.responses("api", 200, "none", "upstream"), 1.0);
    assert_eq!(s.sum("remedy_upstream_request_errors_total", &[]), 0.0);
}

#[test]
fn connector_disconnect_mid_download_leaves_nothing_in_flight() {
    let u = Upstream::builder()
        .route("/download", Answer::download(1_000_000_000))
        .http();
    let remedy = Remedy::start(Config::new().source(api(u.url())));
    let mut s = TcpStream::connect(remedy.proxy).unwrap();
    s.write_all(b"GET /api/download HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 65536];
    let mut got = 0;
    while got < 1_000_000 {
        got += s.read(&mut buf).unwrap();
    }
    assert_eq!(remedy.scrape().in_flight("api"), 1.0);
    drop(s);
    remedy.wait_in_flight("api", 0.0);
    assert_eq!(
        remedy.scrape().responses("api", 200, "none", "upstream"),
        1.0
    );
}

#[test]
fn connector_disconnect_mid_upload_cancels_the_upstream_request() {
    let u = Upstream::builder()
        .route("/upload", Answer::count_upload())
        .http();
    let remedy = Remedy::start(Config::new().source(patient_api(u.url())));
    let mut s = TcpStream::connect(remedy.proxy).unwrap();
    s.write_all(b"POST /api/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
        .unwrap();
    let chunk = vec![b'u'; 64 * 1024];
    for _ in 0..16 {
        s.write_all(&chunk).unwrap();
    }
    remedy.wait_in_flight("api", 1.0);
    drop(s);
    remedy.wait_in_flight("api", 0.0);
    // The upstream saw the request start and end without a complete body; nothing is counted
    // as a success.
    assert_eq!(u.hits(), 1);
    assert_eq!(
        remedy.scrape().responses("api", 200, "none", "upstream"),
        0.0
    );
}

#[test]
fn connector_disconnect_before_the_head_counts_499() {
    let u = Upstream::builder().route("/stall", Answer::stall()).http();
    let remedy = Remedy::start(Config::new().source(patient_api(u.url())));
    let mut s = TcpStream::connect(remedy.proxy).unwrap();
    s.write_all(b"GET /api/stall HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    remedy.wait_in_flight("api", 1.0);
    drop(s);
    remedy.wait_in_flight("api", 0.0);
    assert_eq!(
        remedy.scrape().responses("api", 499, "unlisted", "proxy"),
        1.0
    );
}

#[test]
fn in_flight_cap_answers_503_instead_of_queueing() {
    let u = Upstream::builder().route("/stall", Answer::stall()).http();
    let config = Config::new().source(patient_api(u.url()).set("max_in_flight", 1));
    let remedy = Remedy::start(config);
    let mut held = TcpStream::connect(remedy.proxy).unwrap();
    held.write_all(b"GET /api/stall HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    remedy.wait_in_flight("api", 1.0);
    let r = send(remedy.proxy, "/api/x");
    assert_eq!(r.status, 503);
    drop(held);
    let s = remedy.scrape();
    assert_eq!(s.responses("api", 503, "raise_max_in_flight", "proxy"), 1.0);
    let retry_later = [("code", "503"), ("remediation", "retry_later")];
    assert_eq!(s.sum("remedy_upstream_responses_total", &retry_later), 0.0);
    assert_eq!(s.sum("remedy_upstream_request_errors_total", &[]), 0.0);
}

/// An upstream that answers every connection with `bytes`, whatever was asked, then closes.
fn raw_upstream(bytes: &'static [u8]) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().map_while(Result::ok) {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let _ = conn.write_all(bytes);
        }
    });
    addr
}

/// A head over the source's limits, or a status line that is not HTTP: the API answered, so
/// remedy's 502 is counted `kind="protocol"`, not as a reset of an unreachable upstream; and the
/// limits are settings that let such a head through.
#[test]
fn an_upstream_head_remedy_cannot_pass_on_is_a_502_counted_protocol() {
    let many = (0..150).fold(Answer::status(200), |a, i| a.header(&format!("x-h{i}"), i));
    let big = Answer::status(200).header("x-big", "v".repeat(70 * 1024));
    let u = Upstream::builder()
        .route("/many", many)
        .route("/big", big)
        .http();
    let malformed = raw_upstream(b"HTTP/1.1 2000 OK\r\ncontent-length: 0\r\n\r\n");
    let remedy = Remedy::start(
        Config::new()
            .source(patient_api(u.url()))
            .source(source("odd", format!("http://{malformed}")).prefix("/odd")),
    );
    for path in ["/api/many", "/api/big", "/odd/x"] {
        let r = send(remedy.proxy, path);
        assert_eq!(r.status, 502, "{path}");
        assert!(r.text().contains("(protocol)"), "{path}: {}", r.text());
    }
    let s = remedy.scrape();
    assert_eq!(s.errors("api", "protocol"), 2.0);
    assert_eq!(s.errors("odd", "protocol"), 1.0);
    assert_eq!(s.errors("api", "reset") + s.errors("odd", "reset"), 0.0);
    remedy.wait_log("upstream answered with what remedy cannot pass on");

    let roomy = Remedy::start(
        Config::new().source(
            patient_api(u.url())
                .set("max_response_headers", 200)
                .set("max_response_header_bytes", 128 * 1024),
        ),
    );
    for path in ["/api/many", "/api/big"] {
        let r = send(roomy.proxy, path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    assert_eq!(send(roomy.proxy, "/api/many").header("x-h149"), Some("149"));
}

/// An HTTP/2 upstream's header list up to `max_response_header_bytes` passes, as over
/// HTTP/1.1 (HTTP/2's own default stops at 16 KiB).
#[test]
fn an_http2_upstreams_large_head_passes_within_the_limit() {
    let u = Upstream::builder()
        .route(
            "/big",
            Answer::status(200).header("x-big", "v".repeat(40 * 1024)),
        )
        .tls();
    let remedy = Remedy::start(
        Config::new().source(patient_api(u.url()).ca_file(u.ca_file.as_ref().unwrap())),
    );
    let r = send(remedy.proxy, "/api/big");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-big").map(str::len), Some(40 * 1024));
}
