//! Hostile or broken clients get an HTTP error or a closed connection, never a forwarded
//! request, and never affect other connections.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::{Answer, Config, Remedy, Upstream, raw, read_one, send, source};

/// One worker, and the source `api` at `u`, matched by prefix and by host: the limits of
/// the `proxy` section are what each test sets.
fn limited(u: &Upstream) -> Config {
    Config::new()
        .section("runtime", "{ worker_threads: 1 }")
        .source(
            source("api", u.url())
                .prefix("/api")
                .hosts(&["api.example.com"]),
        )
}

#[test]
fn oversized_headers_are_answered_431() {
    let u = Upstream::http();
    let remedy = Remedy::start(
        limited(&u)
            .proxy("max_header_bytes", "8192")
            .proxy("max_headers", "20"),
    );
    let big = format!(
        "GET /api/x HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    assert_eq!(
        raw(remedy.proxy, big.as_bytes()).map(|r| r.status),
        Some(431)
    );
    let mut many = String::from("GET /api/x HTTP/1.1\r\nHost: x\r\n");
    for i in 0..30 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(
        raw(remedy.proxy, many.as_bytes()).map(|r| r.status),
        Some(431)
    );
    assert_eq!(u.hits(), 0);
    assert_eq!(send(remedy.proxy, "/api/x").status, 200);
    // hyper's parser answered both before remedy saw them: counted all the same.
    let s = remedy.scrape();
    assert_eq!(s.responses("unmatched", 431, "unlisted", "proxy"), 2.0);
}

#[test]
fn requests_the_parser_refuses_are_counted_as_the_answers_sent() {
    let u = Upstream::http();
    let remedy = Remedy::start(
        limited(&u)
            .proxy("max_header_bytes", "8192")
            .proxy("max_headers", "20"),
    );
    for bad in [
        &b"GET /api/x HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n"[..],
        b"GET /api/x HTTP/9.9\r\nHost: x\r\n\r\n",
        b"G@T /api/x HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        assert_eq!(raw(remedy.proxy, bad).map(|r| r.status), Some(400));
    }
    // A refusal is counted when its connection ends, which may come just after the client
    // has read the 400: poll for the count, then check it does not go past three.
    let counted = || {
        remedy
            .scrape()
            .responses("unmatched", 400, "check_request_config", "proxy")
    };
    crate::support::wait_for("three refusals counted", Duration::from_secs(10), || {
        (counted() >= 3.0).then_some(())
    });
    assert_eq!(counted(), 3.0);
    assert_eq!(u.hits(), 0);
}

#[test]
fn slow_header_clients_are_cut_off_without_hurting_others() {
    let u = Upstream::http();
    let remedy = Remedy::start(limited(&u).proxy("header_read_timeout", "500ms"));
    let mut slow = TcpStream::connect(remedy.proxy).unwrap();
    slow.write_all(b"GET /api/x HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    assert_eq!(send(remedy.proxy, "/api/x").status, 200);
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    slow.read_to_end(&mut buf)
        .expect("the slow client was never cut off");
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    assert_eq!(u.hits(), 1);
}

/// A connection to the proxy for several requests in turn.
fn keep_alive(remedy: &Remedy) -> TcpStream {
    let s = TcpStream::connect(remedy.proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

#[test]
fn requests_slower_than_the_header_read_timeout_are_not_cut() {
    let u = Upstream::builder()
        .route("/drip", Answer::drip(5, Duration::from_millis(200)))
        .route("/upload", Answer::count_upload())
        .http();
    let remedy = Remedy::start(limited(&u).proxy("header_read_timeout", "300ms"));
    let mut s = keep_alive(&remedy);
    // A response that takes about a second to stream.
    s.write_all(b"GET /api/drip HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let r = read_one(&mut s).expect("the slow response, whole");
    assert_eq!((r.status, r.body.len()), (200, 5));
    // An upload that takes about a second to send, on the same connection.
    s.write_all(b"POST /api/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
        .unwrap();
    for byte in b"abcde" {
        std::thread::sleep(Duration::from_millis(200));
        s.write_all(&[*byte]).unwrap();
    }
    let r = read_one(&mut s).expect("the upload's answer");
    assert_eq!(r.json()["body_len"], 5, "{}", r.text());
    assert_eq!(u.hits(), 2);
}

#[test]
fn a_connection_idle_past_the_header_read_timeout_is_closed() {
    let u = Upstream::http();
    let remedy = Remedy::start(limited(&u).proxy("header_read_timeout", "300ms"));
    let mut s = keep_alive(&remedy);
    for _ in 0..2 {
        s.write_all(b"GET /api/x HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert_eq!(read_one(&mut s).map(|r| r.status), Some(200));
    }
    // Then nothing: remedy closes the connection rather than keep it forever.
    let mut buf = [0u8; 64];
    assert_eq!(
        s.read(&mut buf).unwrap(),
        0,
        "expected the connection closed"
    );
    assert_eq!(send(remedy.proxy, "/api/x").status, 200);
}

#[test]
fn connections_beyond_the_cap_wait_until_one_closes() {
    let u = Upstream::http();
    let remedy = Remedy::start(limited(&u).proxy("max_connections", "2"));
    let keep = |s: &mut TcpStream| {
        s.write_all(b"GET /api/x HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    };
    let mut first = TcpStream::connect(remedy.proxy).unwrap();
    keep(&mut first);
    let mut second = TcpStream::connect(remedy.proxy).unwrap();
    keep(&mut second);
    let mut third = TcpStream::connect(remedy.proxy).unwrap();
    third
        .write_all(b"GET /api/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let err = third
        .read(&mut buf)
        .expect_err("the third connection was served above the cap");
    assert!(matches!(
        err.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut
    ));
    drop(first);
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let n = third.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
}

#[test]
fn smuggling_attempts_never_reach_the_upstream_as_a_second_request() {
    let u = Upstream::http();
    let remedy = Remedy::start(limited(&u));
    // CL.TE: a front end that trusted Content-Length would see one request; a back end that
    // trusted Transfer-Encoding would see a second, smuggled GET.
    let attack = b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let reply = raw(remedy.proxy, attack).expect("an answer");
    assert_eq!(reply.status, 400);
    assert!(
        reply.text().contains("Transfer-Encoding"),
        "{}",
        reply.text()
    );
    // TE.CL, the other order of the same two headers.
    let attack = b"POST /api/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n";
    assert_eq!(raw(remedy.proxy, attack).map(|r| r.status), Some(400));
    // Differing Content-Length values are refused outright.
    let dup =
        b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabc";
    assert_eq!(raw(remedy.proxy, dup).map(|r| r.status), Some(400));
    assert_eq!(
        u.hits(),
        0,
        "the upstream saw a request with ambiguous framing"
    );
    // Two refused by remedy's guard, the duplicate Content-Length by hyper's parser: all three
    // counted.
    let s = remedy.scrape();
    assert_eq!(
        s.responses("unmatched", 400, "check_request_config", "proxy"),
        3.0
    );
    // Pipelined requests with honest framing still pass.
    let pipelined = b"POST /api/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /api/b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut stream = TcpStream::connect(remedy.proxy).unwrap();
    stream.write_all(pipelined).unwrap();
    let mut all = String::new();
    stream.read_to_string(&mut all).unwrap();
    assert_eq!(all.matches("HTTP/1.1 200").count(), 2, "{all}");
    assert_eq!(u.hits(), 2);
}

#[test]
fn host_and_authority_disagreeing_cannot_pick_another_upstream() {
    let u = Upstream::http();
    let remedy = Remedy::start(limited(&u));
    // The absolute URI names an unconfigured host: refused even though Host names a source.
    let r = raw(
        remedy.proxy,
        b"GET http://169.254.169.254/latest/meta-data HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 404);
    // The absolute URI names the source: it goes to the source's upstream, whatever Host says.
    let r = raw(
        remedy.proxy,
        b"GET http://api.example.com/v1 HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["target"], "/v1");
    assert_eq!(u.hits(), 1);
}

#[test]
fn readers_that_stop_reading_are_cut_off_after_the_send_timeout() {
    let u = Upstream::builder()
        .route("/download", Answer::download(100_000_000))
        .http();
    let remedy = Remedy::start(limited(&u).proxy("send_timeout", "1s"));
    let idle_kib = remedy.rss_kib();
    // Readers that ask for 100 MB each and never read a byte.
    let readers = stalled_readers(&remedy, 20);
    // Counted at the upstream, which only grows: the in-flight gauge may already be
    // falling again on a loaded machine, as readers pass the send timeout.
    wait_hits(&u, 20);
    // Another client is served while they stall.
    assert_eq!(send(remedy.proxy, "/api/x").status, 200);
    // Each is aborted once it has read nothing for a second, and its buffers go with it.
    remedy.wait_in_flight("api", 0.0);
    for mut s in readers {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0usize;
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                Err(e) => panic!("the connection stayed open: {e}"),
            }
        }
        assert!(got < 100_000_000, "a stalled reader got the whole body");
    }
    let peak_kib = remedy.peak_rss_kib();
    crate::support::wait_for(
        "resident memory back near idle",
        Duration::from_secs(10),
        || (remedy.rss_kib() < idle_kib + (peak_kib - idle_kib) / 2 + 1024).then_some(()),
    );
    eprintln!(
        "RSS idle {idle_kib} KiB, peak {peak_kib} KiB, after {} KiB",
        remedy.rss_kib()
    );
    assert_eq!(send(remedy.proxy, "/api/x").status, 200);
}

#[test]
fn dot_segments_hidden_behind_path_parameters_are_refused() {
    let u = Upstream::http();
    let remedy = Remedy::start(limited(&u).proxy("max_headers", "100"));
    for path in [
        "/api/..;/admin",
        "/api/%2e%2e;/admin",
        "/api/..%3b/admin",
        "/api/..;jsessionid=1/admin",
    ] {
        assert_eq!(send(remedy.proxy, path).status, 400, "{path}");
    }
    assert_eq!(u.hits(), 0);
    assert_eq!(send(remedy.proxy, "/api/a;b=1").status, 200);
}

#[test]
fn a_transfer_coding_other_than_chunked_is_501_and_never_forwarded() {
    let u = Upstream::builder()
        .route("/upload", Answer::count_upload())
        .http();
    let remedy = Remedy::start(limited(&u).proxy("max_headers", "100"));
    for te in ["gzip, chunked", "chunked, gzip", "deflate"] {
        let req = format!(
            "POST /api/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {te}\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        );
        let r = raw(remedy.proxy, req.as_bytes());
        // hyper itself refuses a coding after chunked (the body's end cannot be found).
        let status = r.map(|r| r.status);
        assert!(matches!(status, Some(501) | Some(400)), "{te}: {status:?}");
    }
    let r = raw(
        remedy.proxy,
        b"POST /api/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 501);
    assert!(r.text().contains("chunked"), "{}", r.text());
    assert_eq!(u.hits(), 0);
    let chunked = raw(
        remedy.proxy,
        b"POST /api/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(chunked.status, 200);
}

#[test]
fn a_chunk_line_too_long_to_follow_cannot_switch_the_smuggling_guard_off() {
    let u = Upstream::http();
    let remedy = Remedy::start(limited(&u).proxy("max_headers", "100"));
    let mut s = TcpStream::connect(remedy.proxy).unwrap();
    let mut first =
        b"POST /api/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4;e=".to_vec();
    first.extend(std::iter::repeat_n(b'x', 4200));
    s.write_all(&first).unwrap();
    let _ = s.write_all(
        b"\r\nabcd\r\n0\r\n\r\nPOST /api/b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(!text.contains(" 200 "), "{text}");
    assert!(
        u.targets().iter().all(|(t, _)| !t.ends_with("/b")),
        "{:?}",
        u.targets()
    );
}

#[test]
fn more_headers_than_the_guard_keeps_on_the_stack_are_still_guarded() {
    let u = Upstream::http();
    let remedy = Remedy::start(limited(&u).proxy("max_headers", "300"));
    let mut head = String::from("POST /api/b HTTP/1.1\r\nHost: x\r\n");
    for i in 0..150 {
        head.push_str(&format!("X-H{i}: v\r\n"));
    }
    // Forwarded (the fixture itself refuses more than 100 headers: its 431 comes back).
    let plain = format!("{head}Content-Length: 0\r\nConnection: close\r\n\r\n");
    assert_eq!(raw(remedy.proxy, plain.as_bytes()).unwrap().status, 431);
    assert_eq!(u.accepted(), 1);
    let both = format!("{head}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert_eq!(raw(remedy.proxy, both.as_bytes()).unwrap().status, 400);
    assert_eq!(u.accepted(), 1, "the ambiguous request was forwarded");
    let s = remedy.scrape();
    assert_eq!(s.responses("api", 431, "unlisted", "upstream"), 1.0);
}

#[test]
fn max_header_bytes_is_exact_however_the_head_arrives() {
    let u = Upstream::http();
    let remedy = Remedy::start(limited(&u).proxy("max_header_bytes", "65536"));
    let head_of = |len: usize| {
        let start = "GET /api/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: ";
        let pad = len - start.len() - 4;
        format!("{start}{}\r\n\r\n", "p".repeat(pad))
    };
    for (len, status) in [(65_536, 200), (65_537, 431), (114_680, 431)] {
        let head = head_of(len);
        assert_eq!(head.len(), len);
        // In one write, and again in small pieces.
        assert_eq!(
            raw(remedy.proxy, head.as_bytes()).map(|r| r.status),
            Some(status),
            "{len}"
        );
        let mut s = TcpStream::connect(remedy.proxy).unwrap();
        for piece in head.as_bytes().chunks(1000) {
            if s.write_all(piece).is_err() {
                break;
            }
        }
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        let want = format!("HTTP/1.1 {status} ");
        assert!(
            got.starts_with(want.as_bytes()),
            "{len} in pieces: {:?}",
            String::from_utf8_lossy(&got[..got.len().min(40)])
        );
    }
    assert_eq!(u.hits(), 2);
}

#[test]
fn readers_that_stop_reading_cannot_lock_out_a_connector_that_reads() {
    let u = Upstream::builder()
        .route("/download", Answer::download(100_000_000))
        .http();
    let remedy = Remedy::start(
        limited(&u)
            .proxy("max_connections", "10")
            .proxy("send_timeout", "10m"),
    );
    // More readers than connection slots, each asking for 100 MB and reading none of it.
    let readers = stalled_readers(&remedy, 15);
    wait_hits(&u, 10);
    // A connector that reads is served long before the send timeout, while every slot was
    // held: stalled readers lose their connections once the slots run short.
    let r = send(remedy.proxy, "/api/x");
    assert_eq!(r.status, 200);
    drop(readers);
}

/// Waits until the upstream has received `n` requests.
fn wait_hits(u: &Upstream, n: usize) {
    crate::support::wait_for(
        &format!("{n} requests at the upstream"),
        Duration::from_secs(10),
        || (u.hits() >= n).then_some(()),
    );
}

/// `n` connections that each ask for 100 MB and never read a byte of it.
fn stalled_readers(remedy: &Remedy, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(remedy.proxy).unwrap();
            s.write_all(b"GET /api/download HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            s
        })
        .collect()
}

/// What a listener sends back to an HTTP/2 connection preface, read until it closes: the two
/// frame types and the GOAWAY's error code.
fn answer_to_an_http2_preface(addr: std::net::SocketAddr) -> (Vec<u8>, u32) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let mut types = Vec::new();
    let mut error = 0;
    let mut at = 0;
    while at + 9 <= got.len() {
        let len = usize::from(got[at + 2]) | usize::from(got[at + 1]) << 8;
        types.push(got[at + 3]);
        if got[at + 3] == 0x7 && len >= 8 {
            error = u32::from_be_bytes(got[at + 13..at + 17].try_into().unwrap());
        }
        at += 9 + len;
    }
    (types, error)
}

/// An HTTP/2 client on either listener is refused as HTTP/2 refuses it, with a SETTINGS frame
/// and a GOAWAY carrying HTTP_1_1_REQUIRED (13), not a silently closed connection; on the proxy
/// listener the refusal is counted as 505, on the admin listener it is logged.
#[test]
fn an_http2_preface_is_refused_in_http2_and_counted() {
    let remedy =
        Remedy::start(Config::new().source(source("api", "http://127.0.0.1:9").prefix("/api")));
    for addr in [remedy.proxy, remedy.admin] {
        assert_eq!(
            answer_to_an_http2_preface(addr),
            (vec![0x4, 0x7], 13),
            "{addr}"
        );
    }
    crate::support::wait_for(
        "the refusal counted",
        std::time::Duration::from_secs(10),
        || {
            (remedy
                .scrape()
                .responses("unmatched", 505, "unlisted", "proxy")
                == 1.0)
                .then_some(())
        },
    );
    remedy.wait_log("an HTTP/2 client on the admin listener was refused");
    // curl, with prior knowledge, meets the refusal, and the next HTTP/1.1 request is served.
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--http2-prior-knowledge",
            &format!("http://{}/api/x", remedy.proxy),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    crate::support::wait_for("curl's refusal counted", Duration::from_secs(10), || {
        (remedy
            .scrape()
            .responses("unmatched", 505, "unlisted", "proxy")
            == 2.0)
            .then_some(())
    });
}
