//! A request remedy cannot forward whole because of the connector (broken chunked framing, a
//! body that stops arriving, a connector that goes away mid-body) is the connector's failure:
//! 400 (or 499 when it has gone) with origin="proxy", no upstream error kind, no warn line,
//! and the upstream connection pool unharmed.

use std::io::Write;
use std::net::TcpStream;

use crate::support::{Answer, Config, Remedy, Upstream, raw, read_one, send, source};

/// remedy with the source `api` at `u`, waiting a second for the upstream's head.
fn remedy_for(u: &Upstream) -> Remedy {
    Remedy::start(
        Config::new().source(source("api", u.url()).prefix("/api").set(
            "timeouts",
            "{ connect: 1s, response_header: 1s, idle: 30s }",
        )),
    )
}

/// Chunked bodies hyper refuses, with the reason it gives.
const MALFORMED_CHUNKED: [(&str, &[u8]); 4] = [
    ("Invalid chunk body LF", b"5\r\nhello\rX0\r\n\r\n"),
    ("Invalid chunk body CR", b"5\r\nhelloXY0\r\n\r\n"),
    ("missing size digit", b"\r\n\r\n"),
    ("invalid size digit", b"zz\r\nhello\r\n0\r\n\r\n"),
];

/// `n` answers counted as the connector's 400s, no upstream error kind, and the next request
/// served as usual.
fn assert_blamed_on_the_connector(remedy: &Remedy, n: f64) {
    let m = remedy.scrape();
    assert_eq!(m.responses("api", 400, "check_request_config", "proxy"), n);
    assert_eq!(m.sum("remedy_upstream_request_errors_total", &[]), 0.0);
    assert_eq!(send(remedy.proxy, "/api/after").status, 200);
}

fn chunked_post(body: &[u8]) -> Vec<u8> {
    let mut req =
        b"POST /api/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(body);
    req
}

#[test]
fn a_malformed_chunked_body_is_a_400_from_the_proxy_not_an_upstream_error() {
    let u = Upstream::builder()
        .route("/upload", Answer::count_upload())
        .http();
    let remedy = remedy_for(&u);
    // A kept-alive connection to the upstream, to see the pool survive what follows.
    assert_eq!(send(remedy.proxy, "/api/first").status, 200);
    for (i, (what, body)) in MALFORMED_CHUNKED.iter().enumerate() {
        let reply = raw(remedy.proxy, &chunked_post(body))
            .unwrap_or_else(|| panic!("{what}: no answer\n{}", remedy.logs()));
        assert_eq!(reply.status, 400, "{what}: {}", reply.text());
        assert_eq!(reply.header("connection"), Some("close"), "{what}");
        assert!(
            reply.text().contains("request body"),
            "{what}: {}",
            reply.text()
        );
        let s = remedy.scrape();
        let n = (i + 1) as f64;
        assert_eq!(
            s.responses("api", 400, "check_request_config", "proxy"),
            n,
            "{what}"
        );
        assert_eq!(
            s.sum("remedy_upstream_request_errors_total", &[]),
            0.0,
            "{what}"
        );
        assert_eq!(s.in_flight("api"), 0.0, "{what}");
        // The next request is served as usual.
        assert_eq!(send(remedy.proxy, "/api/after").status, 200, "{what}");
    }
    let logs = remedy.logs();
    assert!(!logs.contains("upstream unreachable"), "{logs}");
    assert!(!logs.contains("\"WARN\""), "{logs}");
    assert_eq!(
        remedy.scrape().responses("api", 200, "none", "upstream"),
        1.0 + MALFORMED_CHUNKED.len() as f64
    );
}

#[test]
fn the_reason_is_logged_at_debug_as_a_bad_request() {
    let u = Upstream::builder()
        .route("/upload", Answer::count_upload())
        .http();
    let remedy = Remedy::start_with_env(
        Config::new().source(source("api", u.url()).prefix("/api")),
        &[("REMEDY_LOG", "debug")],
    );
    let reply = raw(remedy.proxy, &chunked_post(MALFORMED_CHUNKED[2].1)).unwrap();
    assert_eq!(reply.status, 400);
    remedy.wait_log("bad request: not forwarded whole");
    let logs = remedy.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("bad request: not forwarded whole"))
        .unwrap();
    assert!(line.contains("\"DEBUG\""), "{line}");
    assert!(line.contains("malformed body"), "{line}");
    assert!(line.contains("size"), "{line}");
}

#[test]
fn a_body_that_stops_arriving_is_the_connectors_400_not_a_504() {
    let u = Upstream::builder()
        .route("/upload", Answer::count_upload())
        .http();
    let remedy = remedy_for(&u);
    let mut s = TcpStream::connect(remedy.proxy).unwrap();
    // Ten bytes announced, three sent, and the connection kept open.
    s.write_all(b"POST /api/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        .unwrap();
    let reply = read_one(&mut s).expect("an answer while the connection is open");
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(
        reply.text().contains("stopped arriving"),
        "{}",
        reply.text()
    );
    assert_blamed_on_the_connector(&remedy, 1.0);
}

#[test]
fn an_upstream_that_stalls_after_the_whole_body_is_still_a_504() {
    let u = Upstream::builder().route("/stall", Answer::stall()).http();
    let remedy = remedy_for(&u);
    let reply = raw(
        remedy.proxy,
        b"POST /api/stall HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    )
    .unwrap();
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert_eq!(remedy.scrape().errors("api", "timeout"), 1.0);
}

/// A connection with an upload of 1 MB under way, 64 KiB of it sent.
fn upload_in_flight(remedy: &Remedy) -> TcpStream {
    let mut s = TcpStream::connect(remedy.proxy).unwrap();
    s.write_all(b"POST /api/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        .unwrap();
    s.write_all(&[b'u'; 65536]).unwrap();
    remedy.wait_in_flight("api", 1.0);
    s
}

#[test]
fn a_connector_that_ends_its_side_mid_body_reads_a_400() {
    let u = Upstream::builder()
        .route("/upload", Answer::count_upload())
        .http();
    let remedy = remedy_for(&u);
    let mut s = upload_in_flight(&remedy);
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let reply = read_one(&mut s).expect("an answer on the half-closed connection");
    assert_eq!(reply.status, 400);
    assert!(reply.text().contains("ended its side"), "{}", reply.text());
    remedy.wait_in_flight("api", 0.0);
    let m = remedy.scrape();
    assert_eq!(
        m.responses("api", 400, "check_request_config", "proxy"),
        1.0
    );
    assert_eq!(m.sum("remedy_upstream_request_errors_total", &[]), 0.0);
}

#[test]
fn a_connector_whose_connection_breaks_mid_body_is_counted_499() {
    use std::os::fd::AsRawFd;
    let u = Upstream::builder()
        .route("/upload", Answer::count_upload())
        .http();
    let remedy = remedy_for(&u);
    let s = upload_in_flight(&remedy);
    // A zero linger time makes the close a reset, as a crashed connector's would be.
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a `linger` of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    drop(s);
    remedy.wait_in_flight("api", 0.0);
    let m = remedy.scrape();
    assert_eq!(m.responses("api", 499, "unlisted", "proxy"), 1.0);
    assert_eq!(m.sum("remedy_upstream_request_errors_total", &[]), 0.0);
}

#[test]
fn a_malformed_body_to_an_http2_upstream_is_the_connectors_400_too() {
    let u = Upstream::builder()
        .route("/upload", Answer::count_upload())
        .tls();
    let remedy = Remedy::start(
        Config::new().source(
            source("api", u.url())
                .prefix("/api")
                .ca_file(u.ca_file.as_ref().unwrap()),
        ),
    );
    let reply = raw(remedy.proxy, &chunked_post(MALFORMED_CHUNKED[0].1)).unwrap();
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_blamed_on_the_connector(&remedy, 1.0);
}
