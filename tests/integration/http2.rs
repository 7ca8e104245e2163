//! HTTP/2 inside an intercepted tunnel, against clients that abuse it: rapid reset (HEADERS
//! then RST_STREAM, thousands of times), a CONTINUATION flood, a header-list bomb (one HPACK
//! table entry referenced thousands of times), and a SETTINGS flood. Each is written frame by
//! frame over a real TLS tunnel that negotiated h2; remedy stays up with bounded memory, forwards
//! none of it, and serves another connector meanwhile.

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use crate::support::tunnel::{self, Tunnel};
use crate::support::{Config, Remedy, Upstream, source};

const HOST: &str = "api.example.test";
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

struct Setup {
    remedy: Remedy,
    upstream: Upstream,
    ca_dir: tempfile::TempDir,
}

impl Setup {
    fn start() -> Self {
        Self::with(|c| c)
    }

    /// With more settings of the test's own.
    fn with(more: impl FnOnce(Config) -> Config) -> Self {
        Self::against(Upstream::http(), more)
    }

    /// Against `upstream`, with more settings of the test's own.
    fn against(upstream: Upstream, more: impl FnOnce(Config) -> Config) -> Self {
        let ca_dir = tempfile::tempdir().unwrap();
        let remedy = Remedy::start(
            more(Config::new())
                .proxy(
                    "intercept",
                    format!("{{ enabled: true, ca_dir: '{}' }}", ca_dir.path().display()),
                )
                .source(source("api", upstream.url()).hosts(&[HOST])),
        );
        Setup {
            remedy,
            upstream,
            ca_dir,
        }
    }

    /// A tunnel that negotiated h2, past the client's preface and an empty SETTINGS.
    fn h2(&self) -> Tunnel {
        let mut t = tunnel::open(
            self.remedy.proxy,
            HOST,
            &self.ca_dir.path().join("ca.pem"),
            &[b"h2"],
        );
        assert_eq!(t.conn.alpn_protocol(), Some(&b"h2"[..]));
        t.write_all(PREFACE).unwrap();
        t.write_all(&frame(SETTINGS, 0, 0, &[])).unwrap();
        t
    }

    /// Another connector's call, through curl over HTTP/2, while or after the abuse.
    fn served(&self) -> bool {
        let out = Command::new("curl")
            .args(["-sS", "--http2", "--max-time", "20", "-o", "/dev/null"])
            .args(["-w", "%{http_code} %{http_version}"])
            .arg("--cacert")
            .arg(self.ca_dir.path().join("bundle.pem"))
            .args(["--proxy", &format!("http://{}", self.remedy.proxy)])
            .arg(format!("https://{HOST}/served"))
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout) == "200 2"
    }

    /// Runs `abuse` on a fresh h2 tunnel; asserts that remedy lived through it with its peak
    /// memory at most `mib` MiB above where it started, served another connector after it, and
    /// forwarded nothing of it. Returns what remedy sent on the abused connection.
    fn withstands(&mut self, mib: u64, abuse: impl FnOnce(&mut Tunnel)) -> Vec<u8> {
        assert!(self.served(), "a connector is served before");
        let (before, hits) = (self.remedy.rss_kib(), self.upstream.hits());
        let mut t = self.h2();
        abuse(&mut t);
        let sink = read_until_closed(&mut t);
        drop(t);
        assert!(
            self.remedy.is_running(),
            "remedy died:\n{}",
            self.remedy.logs()
        );
        assert!(self.served(), "a connector is served after");
        let grew = self.remedy.peak_rss_kib().saturating_sub(before);
        assert!(grew < mib * 1024, "peak memory grew by {grew} KiB");
        assert_eq!(
            self.upstream.hits(),
            hits + 1,
            "only the connector's call went upstream"
        );
        assert!(!self.remedy.logs().contains("panicked"));
        sink
    }
}

/// What remedy sends until it closes the connection (or 30 s pass), read without writing: a
/// TLS stream's own read would first flush what remedy no longer takes.
fn read_until_closed(t: &mut Tunnel) -> Vec<u8> {
    let mut got = Vec::new();
    while let Ok(n) = t.conn.read_tls(&mut t.sock) {
        if n == 0 || t.conn.process_new_packets().is_err() {
            break;
        }
        let _ = t.conn.reader().read_to_end(&mut got);
    }
    got
}

/// The error code of the GOAWAY among `frames`, if remedy sent one.
fn goaway(frames: &[u8]) -> Option<u32> {
    let mut at = 0;
    while at + 9 <= frames.len() {
        let len = u32::from_be_bytes([0, frames[at], frames[at + 1], frames[at + 2]]) as usize;
        if frames[at + 3] == 0x7 && at + 17 <= frames.len() {
            return Some(u32::from_be_bytes(
                frames[at + 13..at + 17].try_into().unwrap(),
            ));
        }
        at += 9 + len;
    }
    None
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK string literal, not Huffman-coded, for lengths under 127.
fn literal(s: &[u8]) -> Vec<u8> {
    assert!(s.len() < 127);
    let mut out = vec![s.len() as u8];
    out.extend_from_slice(s);
    out
}

/// An HPACK integer with an `n`-bit prefix under `first`'s other bits.
fn integer(first: u8, n: u32, mut v: usize) -> Vec<u8> {
    let max = (1usize << n) - 1;
    if v < max {
        return vec![first | v as u8];
    }
    let mut out = vec![first | max as u8];
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
    out
}

/// GET `/x` to `HOST`: `:method GET`, `:scheme https`, `:path` and `:authority` by static index.
fn request_block() -> Vec<u8> {
    request_block_to("/x")
}

/// GET `path` to `HOST`.
fn request_block_to(path: &str) -> Vec<u8> {
    let mut b = vec![0x82, 0x87, 0x04];
    b.extend(literal(path.as_bytes()));
    b.push(0x01);
    b.extend(literal(HOST.as_bytes()));
    b
}

/// Writes as much of `bytes` as remedy takes; it may close the connection before the end.
fn push(t: &mut Tunnel, bytes: &[u8]) {
    for chunk in bytes.chunks(64 * 1024) {
        if t.write_all(chunk).is_err() || t.flush().is_err() {
            return;
        }
    }
}

/// HTTP/2's ENHANCE_YOUR_CALM and PROTOCOL_ERROR, which remedy closes an abusive connection
/// with.
const ENHANCE_YOUR_CALM: u32 = 0xb;
const PROTOCOL_ERROR: u32 = 0x1;

#[test]
fn rapid_reset_cannot_take_remedy_down() {
    let mut s = Setup::start();
    let sent = s.withstands(32, |t| {
        let block = request_block();
        let mut bytes = Vec::new();
        for i in 0..5000u32 {
            let stream = 2 * i + 1;
            bytes.extend(frame(HEADERS, END_HEADERS | END_STREAM, stream, &block));
            bytes.extend(frame(RST_STREAM, 0, stream, &0x8u32.to_be_bytes()));
        }
        push(t, &bytes);
    });
    assert_eq!(goaway(&sent), Some(ENHANCE_YOUR_CALM));
}

#[test]
fn a_continuation_flood_cannot_take_remedy_down() {
    let mut s = Setup::start();
    let sent = s.withstands(32, |t| {
        push(t, &frame(HEADERS, 0, 1, &request_block()));
        // One header after another, never ending the block: 1,000 frames of 16 KiB.
        let mut field = vec![0x00];
        field.extend(literal(b"x-flood"));
        field.extend(literal(&[b'v'; 100]));
        let payload: Vec<u8> = field
            .iter()
            .copied()
            .cycle()
            .take(16 * 1024 - 100)
            .collect();
        let continuation = frame(CONTINUATION, 0, 1, &payload);
        let bytes: Vec<u8> = continuation
            .iter()
            .copied()
            .cycle()
            .take(continuation.len() * 1000)
            .collect();
        push(t, &bytes);
    });
    assert_eq!(goaway(&sent), Some(PROTOCOL_ERROR));
    // The connection h2 refused is counted, as the answer its connector got.
    let refused = s.remedy.scrape().sum(
        "remedy_upstream_responses_total",
        &[("source", "unmatched"), ("code", "400")],
    );
    assert_eq!(refused, 1.0);
}

#[test]
fn a_header_list_bomb_cannot_take_remedy_down() {
    let mut s = Setup::start();
    let sent = s.withstands(32, |t| {
        // One table entry of about 4 KB, then 16,000 one-byte references to it: a 16 KiB frame
        // that decodes to 64 MB of headers.
        let mut block = request_block();
        block.push(0x40);
        block.extend(literal(b"x-bomb"));
        let value = vec![b'b'; 4000];
        block.extend(integer(0x00, 7, value.len()));
        block.extend(&value);
        block.extend(std::iter::repeat_n(0xbe, 12_000));
        push(t, &frame(HEADERS, END_HEADERS | END_STREAM, 1, &block));
    });
    assert_eq!(goaway(&sent), Some(ENHANCE_YOUR_CALM));
}

#[test]
fn a_settings_flood_cannot_take_remedy_down() {
    let mut s = Setup::start();
    let sent = s.withstands(32, |t| {
        // SETTINGS_INITIAL_WINDOW_SIZE over and over, never reading the acknowledgements.
        let one = frame(SETTINGS, 0, 0, &[0x0, 0x4, 0x0, 0x1, 0x0, 0x0]);
        let bytes: Vec<u8> = one
            .iter()
            .copied()
            .cycle()
            .take(one.len() * 100_000)
            .collect();
        t.sock
            .set_write_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        push(t, &bytes);
    });
    // Each was acknowledged, in turn, as the client read: nothing piled up.
    let acks = sent
        .windows(9)
        .filter(|f| f == &[0, 0, 0, 4, 1, 0, 0, 0, 0])
        .count();
    assert!(acks >= 100_000, "{acks} acknowledgements");
}

/// An HTTP/1.1 connector in base-URL mode, against an API that offers h2: remedy's calls to it
/// share one HTTP/2 connection. Three downloads whose connector has stopped reading hold their
/// own streams' windows, not the connection's: the next small calls are answered at once.
#[test]
fn slow_downloads_do_not_stall_other_calls_over_a_shared_http2_upstream() {
    use crate::support::Answer;
    let api = Upstream::builder()
        .route("/big", Answer::download(256 << 20))
        .tls();
    let ca = api.ca_file.as_deref().unwrap();
    let remedy =
        Remedy::start(Config::new().source(source("api", api.url()).prefix("/api").ca_file(ca)));
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut s = std::net::TcpStream::connect(remedy.proxy).unwrap();
        s.write_all(b"GET /api/big HTTP/1.1\r\nHost: api\r\n\r\n")
            .unwrap();
        let mut head = [0u8; 64];
        s.read_exact(&mut head).unwrap();
        assert!(head.starts_with(b"HTTP/1.1 200"));
        slow.push(s);
    }
    let held = api.wait_until_sending_stalls();
    let url = format!("http://{}/api/small", remedy.proxy);
    for _ in 0..5 {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .arg(&url)
            .output()
            .unwrap();
        let answered = (out.status.success(), String::from_utf8_lossy(&out.stdout));
        assert_eq!(
            answered,
            (true, "200".into()),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let echoed = crate::support::request(remedy.proxy, "GET", "/api/v", &[], b"").json();
    assert_eq!(echoed["version"], "HTTP/2.0", "the upstream hop is HTTP/2");
    assert_eq!(
        api.accepted(),
        1,
        "one HTTP/2 connection carried every call"
    );
    assert!(
        held > 3 << 20,
        "the slow downloads filled what they could ({held} bytes)"
    );
    drop(slow);
}

/// An HTTP/2 connection that stays without a stream past `proxy.http2.idle_timeout` (or sends
/// none at all within `header_read_timeout`) is closed with a GOAWAY, as RFC 9113 §6.8 asks,
/// so that its client knows to open another rather than meet a dead socket.
#[test]
fn idle_http2_connections_are_closed_with_a_goaway() {
    let s = Setup::with(|c| {
        c.proxy("http2", "{ idle_timeout: 1s }")
            .proxy("header_read_timeout", "1s")
    });
    let mut served = s.h2();
    served
        .write_all(&frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            1,
            &request_block(),
        ))
        .unwrap();
    let after_a_stream = read_until_closed(&mut served);
    assert_eq!(goaway(&after_a_stream), Some(0), "a GOAWAY with NO_ERROR");
    assert!(
        after_a_stream.windows(3).any(|w| w == b"\"/x"),
        "the stream was answered first"
    );
    let mut silent = s.h2();
    assert_eq!(goaway(&read_until_closed(&mut silent)), Some(0));
    assert_eq!(s.upstream.hits(), 1);
}

/// Each stream of a tunnel beyond its first takes one of `proxy.max_connections` (or waits for
/// one), since each may hold an upstream connection. Of four slots, the tunnel's connection
/// holds one (its first stream rides on it) and the listener one for the next connection it
/// accepts: ten stalled calls make three upstream connections, and a stream that ends lets a
/// waiting one through.
#[test]
fn a_tunnels_streams_take_connection_slots() {
    use crate::support::Answer;
    let upstream = Upstream::builder().route("/x", Answer::stall()).http();
    let s = Setup::against(upstream, |c| c.proxy("max_connections", 4));
    let mut t = s.h2();
    for stream in (1..20).step_by(2) {
        let block = request_block_to(&format!("/x?stream={stream}"));
        t.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, stream, &block))
            .unwrap();
    }
    t.flush().unwrap();
    s.remedy.wait_in_flight("api", 3.0);
    crate::support::wait_for("three calls upstream", Duration::from_secs(10), || {
        (s.upstream.hits() == 3).then_some(())
    });
    // Streams are served in no set order: end one that went upstream.
    let (first, _) = s.upstream.targets()[0].clone();
    let upstream: u32 = first.rsplit('=').next().unwrap().parse().unwrap();
    t.write_all(&frame(RST_STREAM, 0, upstream, &0x8u32.to_be_bytes()))
        .unwrap();
    t.flush().unwrap();
    crate::support::wait_for(
        "a waiting stream to go upstream",
        Duration::from_secs(10),
        || (s.upstream.hits() == 4).then_some(()),
    );
    assert_eq!(s.remedy.scrape().in_flight("api"), 3.0);
}

/// The frame of `kind` for `stream` among `frames`, with its payload.
fn find_frame(frames: &[u8], kind: u8, stream: u32) -> Option<&[u8]> {
    let mut at = 0;
    while at + 9 <= frames.len() {
        let len = u32::from_be_bytes([0, frames[at], frames[at + 1], frames[at + 2]]) as usize;
        let id = u32::from_be_bytes(frames[at + 5..at + 9].try_into().unwrap()) & 0x7fff_ffff;
        if frames[at + 3] == kind && id == stream && at + 9 + len <= frames.len() {
            return Some(&frames[at + 9..at + 9 + len]);
        }
        at += 9 + len;
    }
    None
}

/// What remedy sends until `done` says it is enough (or 30 s pass).
fn read_until(t: &mut Tunnel, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    t.sock
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    while !done(&got) && std::time::Instant::now() < until {
        match t.conn.read_tls(&mut t.sock) {
            Ok(0) => break,
            Ok(_) => {
                if t.conn.process_new_packets().is_err() {
                    break;
                }
                let _ = t.conn.reader().read_to_end(&mut got);
            }
            Err(_) => {}
        }
    }
    got
}

/// A stream whose window the connector keeps closed sends nothing, which no socket write
/// shows: after `proxy.send_timeout` remedy cuts it, lets its upstream connection and slot go
/// and counts it, and the connector gets a reset once its window opens.
#[test]
fn a_stream_whose_window_stays_closed_is_cut_after_send_timeout() {
    use crate::support::Answer;
    const WINDOW_UPDATE: u8 = 0x8;
    let upstream = Upstream::builder()
        .route("/x", Answer::download(64 << 20))
        .http();
    let Setup {
        remedy,
        upstream,
        ca_dir,
    } = Setup::against(upstream, |c| c.proxy("send_timeout", "1s"));
    let mut t = tunnel::open(remedy.proxy, HOST, &ca_dir.path().join("ca.pem"), &[b"h2"]);
    t.write_all(PREFACE).unwrap();
    // SETTINGS_INITIAL_WINDOW_SIZE = 0: no stream may be sent a byte of data.
    t.write_all(&frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 0]))
        .unwrap();
    t.write_all(&frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &request_block(),
    ))
    .unwrap();
    t.flush().unwrap();
    remedy.wait_in_flight("api", 1.0);
    remedy.wait_in_flight("api", 0.0);
    crate::support::wait_for(
        "the upstream connection to close",
        Duration::from_secs(10),
        || (upstream.open() == 0).then_some(()),
    );
    assert_eq!(
        remedy.scrape().responses("api", 200, "none", "upstream"),
        1.0
    );
    assert!(remedy.logs().contains("the stream is cut"));
    t.write_all(&frame(WINDOW_UPDATE, 0, 1, &65_535u32.to_be_bytes()))
        .unwrap();
    t.flush().unwrap();
    let got = read_until(&mut t, |f| find_frame(f, RST_STREAM, 1).is_some());
    let reset = find_frame(&got, RST_STREAM, 1).expect("the stream is reset");
    assert_eq!(reset, 0x2u32.to_be_bytes(), "INTERNAL_ERROR");
}

/// A stream over `proxy.http2.max_concurrent_streams` is refused by h2 itself (`REFUSED_STREAM`),
/// before remedy's service sees it: counted all the same, as 503 under `source="unmatched"`.
#[test]
fn a_stream_over_the_concurrent_streams_is_refused_and_counted() {
    use crate::support::Answer;
    let upstream = Upstream::builder().route("/x", Answer::stall()).http();
    let s = Setup::against(upstream, |c| {
        c.proxy("http2", "{ max_concurrent_streams: 1 }")
    });
    let mut t = s.h2();
    for stream in [1, 3] {
        t.write_all(&frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            stream,
            &request_block(),
        ))
        .unwrap();
    }
    t.flush().unwrap();
    let got = read_until(&mut t, |f| find_frame(f, RST_STREAM, 3).is_some());
    assert_eq!(
        find_frame(&got, RST_STREAM, 3),
        Some(&7u32.to_be_bytes()[..]),
        "REFUSED_STREAM"
    );
    crate::support::wait_for("the refusal counted", Duration::from_secs(10), || {
        let refused = s.remedy.scrape().sum(
            "remedy_upstream_responses_total",
            &[("source", "unmatched"), ("code", "503")],
        );
        (refused == 1.0).then_some(())
    });
    crate::support::wait_for("the stream taken upstream", Duration::from_secs(10), || {
        (s.upstream.hits() == 1).then_some(())
    });
}
