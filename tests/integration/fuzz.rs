//! A bounded mutation fuzzer over the proxy listener. Five seed requests (a GET, a POST with
//! `Content-Length`, a chunked POST, an absolute-form GET and a GET with 40 headers) are
//! mutated with byte flips, inserted CRLFs, `Transfer-Encoding` and `Content-Length` headers,
//! `..`, `%2e`, `%00`, long runs, deletions and repeats, from a fixed seed so that a failure
//! reproduces (`REMEDY_FUZZ_SEED` and `REMEDY_FUZZ_CASES` change them).
//!
//! What must hold: remedy stays up and never panics; every answer is a well-formed HTTP/1.1
//! response or a closed connection; nothing reaches the upstream outside the source's base
//! path or with a dot segment; no request the client sent once reaches the upstream twice;
//! and remedy's counters equal the answers the clients got.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::{Config, Remedy, Upstream, send, source};

const SEED: u64 = 0x5eed_2026;
const CASES: usize = 10_000;
const CLIENTS: usize = 4;

/// SplitMix64: small, fast and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A case's id, with a check so that a mutated id is never taken for another case's.
fn fuzz_id(case: usize) -> String {
    let check = Rng(case as u64 ^ 0xabcd).next() as u32;
    format!("{case:05}-{check:08x}")
}

fn case_of(id: &str) -> Option<usize> {
    let (case, _) = id.split_once('-')?;
    let case: usize = case.parse().ok()?;
    (fuzz_id(case) == id).then_some(case)
}

fn seed_request(kind: usize, id: &str) -> Vec<u8> {
    let common = format!("Host: api.example.com\r\nX-Fuzz-Id: {id}\r\nConnection: close\r\n");
    match kind {
        0 => format!("GET /api/items?page=1&sort=asc HTTP/1.1\r\n{common}\r\n").into_bytes(),
        1 => format!(
            "POST /api/upload HTTP/1.1\r\n{common}Content-Type: application/json\r\nContent-Length: 17\r\n\r\n{{\"query\":\"q1 q2\"}}"
        )
        .into_bytes(),
        2 => format!(
            "POST /api/upload HTTP/1.1\r\n{common}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        .into_bytes(),
        3 => format!("GET http://api.example.com/api/reports/7 HTTP/1.1\r\n{common}\r\n")
            .into_bytes(),
        _ => {
            let mut r = format!("GET /api/items/42 HTTP/1.1\r\n{common}");
            for i in 0..40 {
                r.push_str(&format!("X-Header-{i}: value-{i}\r\n"));
            }
            r.push_str("\r\n");
            r.into_bytes()
        }
    }
}

const INSERTS: [&[u8]; 6] = [
    b"\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Content-Length: 5\r\n",
    b"..",
    b"%2e",
    b"%00",
];

fn mutate(rng: &mut Rng, req: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(req.len() + 1);
        match rng.below(6) {
            0 if !req.is_empty() => {
                let i = at.min(req.len() - 1);
                req[i] ^= 1 << rng.below(8);
            }
            1 => {
                let ins = INSERTS[rng.below(INSERTS.len())];
                req.splice(at..at, ins.iter().copied());
            }
            2 => {
                let byte = [b'a', b'/', b'.', b'%', b' ', b'\r', b'0', b';'][rng.below(8)];
                let n = 100 + rng.below(5_000);
                req.splice(at..at, std::iter::repeat_n(byte, n));
            }
            3 => {
                let end = (at + 1 + rng.below(40)).min(req.len());
                req.drain(at.min(end)..end);
            }
            _ => {
                let end = (at + 1 + rng.below(80)).min(req.len());
                let piece = req[at.min(end)..end].to_vec();
                req.splice(end..end, piece);
            }
        }
    }
}

/// The statuses of the responses in `bytes` (a body may be cut short by a closed connection), or why they are not well-formed.
fn responses(bytes: &[u8]) -> Result<Vec<u16>, String> {
    let mut statuses = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        let head = match resp.parse(rest) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Err("a truncated response head".into()),
            Err(e) => return Err(format!("a malformed response head: {e}")),
        };
        let status = resp.code.ok_or("no status")?;
        let header = |name: &str| {
            resp.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
        };
        rest = &rest[head..];
        // The status counts once its head is in, even if the body is then cut short.
        if status >= 200 {
            statuses.push(status);
        }
        if let Some(len) = header("content-length") {
            let len: usize = len.parse().map_err(|_| format!("Content-Length {len}"))?;
            if rest.len() < len {
                // Broken mid-body: the connector sees a closed connection.
                return Ok(statuses);
            }
            rest = &rest[len..];
        } else if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            loop {
                let Some(line) = rest.windows(2).position(|w| w == b"\r\n") else {
                    return Ok(statuses);
                };
                let size = std::str::from_utf8(&rest[..line])
                    .ok()
                    .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
                    .ok_or("a malformed chunk size")?;
                let end = line + 2 + size + 2;
                if rest.len() < end {
                    return Ok(statuses);
                }
                rest = &rest[end..];
                if size == 0 {
                    break;
                }
            }
        } else if status >= 200 && status != 204 && status != 304 {
            rest = &[];
        }
    }
    Ok(statuses)
}

/// Sends one case and returns what came back, the connection closed by either side.
fn exchange(addr: SocketAddr, req: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("the proxy accepts");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // remedy may answer and close before reading everything: a failed write is an answer too.
    let _ = s.write_all(req);
    let _ = s.shutdown(Shutdown::Write);
    let mut got = Vec::new();
    if let Err(e) = s.read_to_end(&mut got) {
        assert!(
            e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut,
            "remedy kept a connection open for 20 s: {:?}",
            String::from_utf8_lossy(&req[..req.len().min(300)])
        );
    }
    got
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn mutated_requests_never_crash_leak_past_the_base_path_or_go_uncounted() {
    let seed = env_or("REMEDY_FUZZ_SEED", SEED);
    let cases = env_or("REMEDY_FUZZ_CASES", CASES);
    let u = Upstream::http();
    let mut remedy = Remedy::start(
        Config::new().proxy("header_read_timeout", "2s").source(
            source("api", format!("{}/base", u.url()))
                .prefix("/api")
                .hosts(&["api.example.com"])
                .set("timeouts", "{ connect: 1s, response_header: 2s, idle: 2s }"),
        ),
    );
    let next = AtomicUsize::new(0);
    let sent: Vec<(usize, Vec<u8>, Vec<u16>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..CLIENTS)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let case = next.fetch_add(1, Ordering::Relaxed);
                        if case >= cases {
                            return done;
                        }
                        let mut rng = Rng(seed ^ (case as u64).wrapping_mul(0x1000_0000_01b3));
                        let mut req = seed_request(rng.below(5), &fuzz_id(case));
                        mutate(&mut rng, &mut req);
                        let reply = exchange(remedy.proxy, &req);
                        let statuses = responses(&reply).unwrap_or_else(|e| {
                            panic!(
                                "case {case} (seed {seed:#x}): {e}\nsent: {:?}\ngot: {:?}",
                                String::from_utf8_lossy(&req),
                                String::from_utf8_lossy(&reply)
                            )
                        });
                        done.push((case, req, statuses));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a fuzz client"))
            .collect()
    });
    assert_eq!(sent.len(), cases);

    assert!(remedy.is_running(), "remedy exited:\n{}", remedy.logs());
    assert!(!remedy.logs().contains("panicked"), "{}", remedy.logs());

    // Nothing outside the base path, no dot segment, no request twice.
    let mut arrived: HashMap<usize, usize> = HashMap::new();
    for (target, id) in u.targets() {
        let path = target.split('?').next().unwrap_or_default();
        assert!(
            path == "/base" || path.starts_with("/base/"),
            "outside the base path: {target}"
        );
        for segment in path.split('/') {
            let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
            let bare = decoded.split(';').next().unwrap_or_default();
            assert!(bare != "." && bare != "..", "a dot segment: {target}");
        }
        if let Some(case) = id.as_deref().and_then(case_of) {
            *arrived.entry(case).or_default() += 1;
        }
    }
    let by_case: HashMap<usize, &Vec<u8>> = sent.iter().map(|(c, r, _)| (*c, r)).collect();
    for (case, n) in &arrived {
        let needle = fuzz_id(*case).into_bytes();
        let copies = by_case[case]
            .windows(needle.len())
            .filter(|w| *w == needle)
            .count();
        assert!(
            *n <= copies,
            "case {case} reached the upstream {n} times, sent {copies}: {:?}",
            String::from_utf8_lossy(by_case[case])
        );
    }

    // The counters hold exactly the answers the clients got (499: the client got none).
    let answers: usize = sent.iter().map(|(_, _, s)| s.len()).sum();
    let scrape = remedy.scrape();
    let counted = scrape.sum("remedy_upstream_responses_total", &[])
        - scrape.sum("remedy_upstream_responses_total", &[("code", "499")]);
    let mut by_status: HashMap<u16, usize> = HashMap::new();
    for s in sent.iter().flat_map(|(_, _, s)| s) {
        *by_status.entry(*s).or_default() += 1;
    }
    let counted_by_status: HashMap<u16, f64> = [200, 400, 404, 405, 414, 431, 501, 502, 504]
        .into_iter()
        .map(|c| {
            let code = c.to_string();
            let n = scrape.sum("remedy_upstream_responses_total", &[("code", &code)]);
            (c, n)
        })
        .filter(|(_, n)| *n > 0.0)
        .collect();
    assert_eq!(
        counted, answers as f64,
        "answers by status: {by_status:?}\ncounted by status: {counted_by_status:?}"
    );
    // And the proxy still serves.
    assert_eq!(send(remedy.proxy, "/api/after").status, 200);
    eprintln!(
        "{cases} cases from seed {seed:#x}: {answers} answers {by_status:?}, {} reached the upstream",
        u.targets().len()
    );
}
