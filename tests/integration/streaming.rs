//! Bodies stream both ways: 100 MiB through remedy leaves its memory where it was.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use crate::support::{Answer, Config, Remedy, Upstream, send, source};

const SIZE: u64 = 100 * 1024 * 1024;
/// Headroom over the resident memory before the transfer: buffers, not bodies.
const BOUND_KIB: u64 = 16 * 1024;

/// An upstream, remedy in front of it after one warm-up request, and remedy's RSS then.
fn started() -> (Upstream, Remedy, u64) {
    let u = Upstream::builder()
        .route("/download", Answer::download(SIZE))
        .route("/upload", Answer::count_upload())
        .http();
    let remedy = Remedy::start(Config::new().source(source("bulk", u.url()).prefix("/bulk")));
    send(remedy.proxy, "/bulk/warm-up");
    let before = remedy.rss_kib();
    (u, remedy, before)
}

#[test]
fn hundred_mib_download_streams_with_bounded_memory() {
    let (_u, remedy, before) = started();

    let mut s = TcpStream::connect(remedy.proxy).unwrap();
    write!(
        s,
        "GET /bulk/download HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    let mut content_length = None;
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            content_length = Some(v.trim().parse::<u64>().unwrap());
        }
    }
    assert_eq!(content_length, Some(SIZE));
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    assert_eq!(got, SIZE);
    let peak = remedy.peak_rss_kib();
    assert!(
        peak < before + BOUND_KIB,
        "peak RSS {peak} KiB, before {before} KiB"
    );
    assert_eq!(
        remedy.scrape().responses("bulk", 200, "none", "upstream"),
        2.0
    );
}

#[test]
fn hundred_mib_upload_streams_with_bounded_memory() {
    let (_u, remedy, before) = started();

    let mut s = TcpStream::connect(remedy.proxy).unwrap();
    write!(
        s,
        "POST /bulk/upload HTTP/1.1\r\nHost: x\r\nContent-Length: {SIZE}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let chunk = vec![b'u'; 256 * 1024];
    let mut sent = 0u64;
    while sent < SIZE {
        s.write_all(&chunk).unwrap();
        sent += chunk.len() as u64;
    }
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.contains(&format!("{{\"body_len\":{SIZE}}}")),
        "{reply}"
    );
    let peak = remedy.peak_rss_kib();
    assert!(
        peak < before + BOUND_KIB,
        "peak RSS {peak} KiB, before {before} KiB"
    );
}
