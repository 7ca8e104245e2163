//! Requests reach the upstream as the connector sent them, and answers come back whole.

use std::process::Command;

use crate::support::{Answer, Config, Remedy, Upstream, request, send, source};

fn header<'a>(echo: &'a serde_json::Value, name: &str) -> Vec<&'a str> {
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0] == name)
        .map(|h| h[1].as_str().unwrap())
        .collect()
}

/// One source, `api`, at `u` under the base path `/base`, matched by prefix and by host.
fn one_source(u: &Upstream) -> Config {
    Config::new().source(
        source("api", format!("{}/base", u.url()))
            .prefix("/api")
            .hosts(&["api.example.com"]),
    )
}

#[test]
fn base_url_mode_keeps_query_body_and_headers_byte_for_byte() {
    let u = Upstream::http();
    let remedy = Remedy::start(one_source(&u));
    let r = request(
        remedy.proxy,
        "POST",
        "/api/reports/run?from=2026-01-01&q=a%20b&flag&x=%E2%9C%93",
        &[
            ("Authorization", "Bearer abc"),
            ("X-Custom", "  spaced value"),
            ("Content-Type", "application/json"),
        ],
        br#"{"report":"daily","n":1}"#,
    );
    assert_eq!(r.status, 200);
    let echo = r.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(
        echo["target"],
        "/base/reports/run?from=2026-01-01&q=a%20b&flag&x=%E2%9C%93"
    );
    assert_eq!(echo["body"], r#"{"report":"daily","n":1}"#);
    assert_eq!(header(&echo, "authorization"), ["Bearer abc"]);
    assert_eq!(header(&echo, "x-custom"), ["spaced value"]);
    assert_eq!(header(&echo, "host"), [u.addr.to_string().as_str()]);
    assert_eq!(header(&echo, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(header(&echo, "x-forwarded-proto"), ["http"]);
    assert_eq!(
        header(&echo, "x-forwarded-host"),
        [remedy.proxy.to_string().as_str()]
    );
}

#[test]
fn http_proxy_mode_with_curl_reaches_the_source_upstream() {
    let u = Upstream::http();
    let remedy = Remedy::start(one_source(&u));
    let out = Command::new("curl")
        .args([
            "-sS",
            "--noproxy",
            "",
            "http://api.example.com/v3/objects?limit=10",
        ])
        .env("http_proxy", format!("http://{}", remedy.proxy))
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let echo: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(echo["target"], "/base/v3/objects?limit=10");
    assert_eq!(header(&echo, "x-forwarded-host"), ["api.example.com"]);
    assert_eq!(header(&echo, "host"), [u.addr.to_string().as_str()]);
    assert!(header(&echo, "proxy-connection").is_empty());
    let s = remedy.scrape();
    assert_eq!(s.responses("api", 200, "none", "upstream"), 1.0);
}

#[test]
fn preserve_host_sends_the_connector_host() {
    let u = Upstream::http();
    let remedy = Remedy::start(
        Config::new().source(
            source("api", u.url())
                .hosts(&["api.example.com"])
                .set("preserve_host", true),
        ),
    );
    let r = request(
        remedy.proxy,
        "GET",
        "/x",
        &[("Host", "api.example.com")],
        b"",
    );
    assert_eq!(header(&r.json(), "host"), ["api.example.com"]);
}

#[test]
fn hop_by_hop_headers_are_removed_both_ways() {
    let u = Upstream::builder()
        .route(
            "/hop-by-hop",
            Answer::status(200)
                .header("connection", "x-hop")
                .header("x-hop", 1)
                .header("keep-alive", "timeout=5")
                .header("x-kept", 1),
        )
        .http();
    let remedy = Remedy::start(one_source(&u));
    let r = request(
        remedy.proxy,
        "GET",
        "/api/echo",
        &[
            ("Connection", "x-secret-hop"),
            ("X-Secret-Hop", "1"),
            ("Keep-Alive", "300"),
            ("TE", "gzip, trailers"),
            ("Proxy-Authorization", "Basic eDp5"),
        ],
        b"",
    );
    let echo = r.json();
    for gone in ["x-secret-hop", "keep-alive", "te", "proxy-authorization"] {
        assert!(header(&echo, gone).is_empty(), "{gone} was forwarded");
    }
    // `TE: trailers` alone passes: the one value HTTP/2 allows, by which gRPC tells a server
    // that the proxies on the way keep its trailers.
    let r = request(remedy.proxy, "GET", "/api/echo", &[("TE", "trailers")], b"");
    assert_eq!(header(&r.json(), "te"), ["trailers"]);
    let r = send(remedy.proxy, "/api/hop-by-hop");
    assert_eq!(r.header("x-kept"), Some("1"));
    assert_eq!(r.header("x-hop"), None);
    assert_eq!(r.header("keep-alive"), None);
}

#[test]
fn unmatched_request_is_never_forwarded() {
    let u = Upstream::http();
    let remedy = Remedy::start(one_source(&u));
    let r = send(remedy.proxy, "/other/x");
    assert_eq!(r.status, 404);
    assert!(r.text().contains("no source matched"), "{}", r.text());
    let r = request(
        remedy.proxy,
        "GET",
        "http://evil.example/api/x",
        &[("Host", "evil.example")],
        b"",
    );
    assert_eq!(r.status, 404);
    assert_eq!(u.hits(), 0);
    let s = remedy.scrape();
    assert_eq!(
        s.responses("unmatched", 404, "check_resource_availability", "proxy"),
        2.0
    );
}

#[test]
fn connect_is_answered_405_with_the_reason() {
    let u = Upstream::http();
    let remedy = Remedy::start(one_source(&u));
    let r = crate::support::raw(
        remedy.proxy,
        b"CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n",
    )
    .expect("a response");
    assert_eq!(r.status, 405);
    assert!(r.text().contains("TLS tunnel"), "{}", r.text());
    assert!(
        r.text().contains("intercept:\n    enabled: true"),
        "the body says how to turn interception on: {}",
        r.text()
    );
    assert_eq!(u.hits(), 0);
    let s = remedy.scrape();
    assert_eq!(s.responses("unmatched", 405, "unlisted", "proxy"), 1.0);
    assert_eq!(
        s.get(
            "remedy_intercept_connections_total",
            &[("outcome", "refused")]
        ),
        Some(1.0)
    );
}

#[test]
fn path_escapes_never_reach_the_upstream() {
    let u = Upstream::http();
    let remedy = Remedy::start(one_source(&u));
    for path in [
        "/api/../admin",
        "/api/%2e%2e/admin",
        "/api/a%2Fb",
        "/api//x",
        "/api/%5c",
    ] {
        let r = send(remedy.proxy, path);
        assert_eq!(r.status, 400, "{path}");
    }
    assert_eq!(u.hits(), 0);
}

#[test]
fn tls_upstream_speaks_http2_by_alpn_with_an_extra_ca() {
    let u = Upstream::tls();
    let remedy = Remedy::start(
        Config::new().source(
            source("secure", u.url())
                .prefix("/s")
                .ca_file(u.ca_file.as_ref().unwrap()),
        ),
    );
    for _ in 0..3 {
        let r = send(remedy.proxy, "/s/x?y=1");
        assert_eq!(r.status, 200, "{}", r.text());
        let echo = r.json();
        assert_eq!(echo["version"], "HTTP/2.0");
        assert_eq!(echo["path"], "/x");
    }
    assert_eq!(
        remedy.scrape().responses("secure", 200, "none", "upstream"),
        3.0
    );
}

#[test]
fn http_1_0_connectors_are_forwarded_as_http_1_1() {
    let u = Upstream::http();
    let remedy = Remedy::start(one_source(&u));
    for (method, body) in [("GET", ""), ("POST", "abc")] {
        let head = format!(
            "{method} /api/v HTTP/1.0\r\nHost: api.example.com\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let r = crate::support::raw(remedy.proxy, head.as_bytes()).expect("a complete answer");
        assert_eq!(r.status, 200, "{method}");
        let echo = r.json();
        assert_eq!(echo["version"], "HTTP/1.1", "{method}");
        assert_eq!(echo["body"], body, "{method}");
    }
}

#[test]
fn a_missing_or_doubled_host_or_a_foreign_scheme_is_refused() {
    let u = Upstream::http();
    let remedy = Remedy::start(one_source(&u));
    for bad in [
        &b"GET /api/x HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
        b"GET /api/x HTTP/1.1\r\nHost: api.example.com\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        b"GET ftp://api.example.com/api/x HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n",
        b"GET http://user:pw@api.example.com/x HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n",
    ] {
        let r = crate::support::raw(remedy.proxy, bad).expect("an answer");
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(bad));
        assert!(r.text().contains("host"), "{}", r.text());
    }
    assert_eq!(u.hits(), 0);
    let s = remedy.scrape();
    assert_eq!(
        s.responses("unmatched", 400, "check_request_config", "proxy"),
        4.0
    );
}

#[test]
fn forwarded_headers_are_remedys_own() {
    let u = Upstream::http();
    let remedy = Remedy::start(one_source(&u));
    // HTTP/1.0 without Host: a connector's X-Forwarded-Host does not pass.
    let r = crate::support::raw(
        remedy.proxy,
        b"GET /api/x HTTP/1.0\r\nX-Forwarded-Host: evil.example\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert!(header(&r.json(), "x-forwarded-host").is_empty());
    // Every X-Forwarded-For is kept, in order, and the connector's address appended.
    let r = request(
        remedy.proxy,
        "GET",
        "/api/x",
        &[
            ("X-Forwarded-For", "10.0.0.1"),
            ("X-Forwarded-For", "10.0.0.2, 10.0.0.3"),
        ],
        b"",
    );
    assert_eq!(
        header(&r.json(), "x-forwarded-for"),
        ["10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1"]
    );
}

/// An upstream that answers each of its first `connections` with `reply`, byte for byte, and
/// closes it.
fn raw_upstream(reply: &'static [u8], connections: usize) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in listener.incoming().take(connections).flatten() {
            let mut buf = [0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s.write_all(reply);
        }
    });
    addr
}

#[test]
fn an_upstream_answer_with_both_framings_reaches_the_connector_framed_once() {
    let addr = raw_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        4,
    );
    let remedy =
        Remedy::start(Config::new().source(source("api", format!("http://{addr}")).prefix("/api")));
    let r = send(remedy.proxy, "/api/x");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello");
    assert_eq!(r.header("content-length"), None);
    assert_eq!(
        remedy.scrape().responses("api", 200, "none", "upstream"),
        1.0
    );
}

#[test]
fn an_upstream_that_breaks_after_its_head_is_counted_as_what_the_connector_received() {
    use std::io::{Read, Write};
    // The head promises 100 bytes; the connection closes with none of them. Whether remedy
    // sees the close before handing the head on (then it answers 502 itself) or after (then
    // the connector gets the head and a broken body) depends on timing; the connector never
    // gets an empty reply, and the count is always the status it got.
    const ROUNDS: usize = 20;
    let addr = raw_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n",
        ROUNDS,
    );
    let remedy =
        Remedy::start(Config::new().source(source("api", format!("http://{addr}")).prefix("/api")));
    let (mut made, mut passed) = (0.0, 0.0);
    for _ in 0..ROUNDS {
        let mut s = std::net::TcpStream::connect(remedy.proxy).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        s.write_all(b"GET /api/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        let text = String::from_utf8_lossy(&got);
        if text.starts_with("HTTP/1.1 502 ") {
            assert!(text.contains("(reset)"), "{text}");
            made += 1.0;
        } else {
            assert!(
                text.starts_with("HTTP/1.1 200 ") && text.ends_with("\r\n\r\n"),
                "the connector got neither remedy's 502 nor the upstream's head: {text:?}"
            );
            passed += 1.0;
        }
    }
    let s = remedy.scrape();
    assert_eq!(s.responses("api", 200, "none", "upstream"), passed);
    assert_eq!(
        s.sum(
            "remedy_upstream_responses_total",
            &[("code", "502"), ("origin", "proxy")]
        ),
        made
    );
    assert_eq!(s.errors("api", "reset"), made);
    assert_eq!(s.in_flight("api"), 0.0);
}
