//! The request-smuggling guard: reads the bytes hyper reads, finds each request head and the
//! body framing it declares, and leaves a verdict per request that the proxy checks before
//! forwarding anything.
//!
//! hyper accepts a request that carries both `Content-Length` and `Transfer-Encoding` (it
//! reads the body as chunked, drops `Content-Length` and closes the connection after), and
//! no longer shows the request's `Content-Length` to the service. A proxy should refuse such a
//! request outright (RFC 9112 §6.3); and a connection whose framing the guard cannot follow
//! has every later request refused, so the guard is never blind while the connection serves.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Longest head the guard buffers; past it hyper answers 431 and closes anyway (and should a
/// larger `max_header_bytes` let hyper take it, the connection's requests are refused).
const MAX_HEAD: usize = 128 * 1024;
/// Longest chunk-size line (with its extensions) or trailer line; a longer one fails the
/// connection.
pub const MAX_LINE: usize = 4096;
/// Most bytes of trailers after the last chunk; more fail the connection.
pub const MAX_TRAILERS: usize = 16 * 1024;
/// Headers the guard parses on the stack; a head with more (up to `proxy.max_headers`) is
/// parsed again with room for them all.
const GUARD_HEADERS: usize = 128;

/// The guard's verdicts on one connection's request heads, read by its service.
#[derive(Debug, Default)]
pub struct Verdicts {
    /// Heads the guard has judged.
    judged: AtomicU64,
    /// 1 + the index of the head the guard refused, or 0. A refused head is the last one the
    /// guard judges: it stops inspecting the connection there.
    refused: AtomicU64,
    /// 1 + the index of the first request the guard could not follow, or 0: that request and
    /// every later one are refused.
    blind_from: AtomicU64,
}

impl Verdicts {
    fn judge(&self, refuse: bool) {
        let index = self.judged.fetch_add(1, Relaxed);
        if refuse {
            self.refused.store(index + 1, Relaxed);
        }
    }

    /// From the next head on, the guard cannot follow the connection.
    fn go_blind(&self) {
        let next = self.judged.load(Relaxed);
        self.blind_from.store(next + 1, Relaxed);
    }

    /// Whether the request the service takes as its `index`th (from 0) must be refused.
    pub fn refuses(&self, index: u64) -> bool {
        let blind_from = self.blind_from.load(Relaxed);
        self.refused.load(Relaxed) == index + 1 || (blind_from != 0 && index + 1 >= blind_from)
    }
}

#[derive(Debug)]
enum State {
    /// Reading a request head; the bytes so far are in `head`.
    Head,
    /// Inside a body of known length.
    Fixed(u64),
    /// Reading a chunk-size line (in `line`).
    ChunkSize,
    /// Inside chunk data, then its CRLF.
    ChunkData(u64),
    /// Reading trailer lines after the last chunk, with the trailer bytes so far.
    Trailers(usize),
    /// The guard cannot follow the framing any more; every later request is refused.
    Off,
}

/// What a complete head says about the body that follows.
enum Framing {
    Length(u64),
    Chunked,
    Refuse,
    Unknown,
}

/// Where one connection's bytes stand: in a head, a body, a chunk line or trailers.
#[derive(Debug)]
pub struct Framer {
    state: State,
    head: Vec<u8>,
    line: Vec<u8>,
    /// `proxy.max_headers`, so that the guard parses every header hyper accepts.
    max_headers: usize,
}

impl Framer {
    pub fn new(max_headers: usize) -> Self {
        Framer {
            state: State::Head,
            head: Vec::new(),
            line: Vec::new(),
            max_headers,
        }
    }

    /// Advances over `data`, judging each head it completes. An error is a line too long to
    /// follow: the connection must fail rather than be served unwatched.
    pub fn observe(&mut self, verdicts: &Verdicts, mut data: &[u8]) -> Result<(), &'static str> {
        while !data.is_empty() {
            data = match self.state {
                State::Off => return Ok(()),
                State::Head => self.head(verdicts, data),
                State::Fixed(n) => self.skip(n, data, State::Fixed, State::Head),
                State::ChunkData(n) => self.skip(n, data, State::ChunkData, State::ChunkSize),
                State::ChunkSize | State::Trailers(_) => self.line(verdicts, data)?,
            };
        }
        Ok(())
    }

    /// Passes over body bytes: `n` are left of the body or chunk; `within` is the state while
    /// some are left, `then` the state after the last.
    fn skip<'d>(
        &mut self,
        n: u64,
        data: &'d [u8],
        within: fn(u64) -> State,
        then: State,
    ) -> &'d [u8] {
        let take = n.min(data.len() as u64);
        self.state = if n == take { then } else { within(n - take) };
        &data[take as usize..]
    }

    /// Reads head bytes; once the head is complete, judges it and moves into its body.
    fn head<'d>(&mut self, verdicts: &Verdicts, mut data: &'d [u8]) -> &'d [u8] {
        // Blank lines before a request line are allowed (RFC 9112 §2.2).
        if self.head.is_empty() {
            let skip = data
                .iter()
                .take_while(|b| **b == b'\r' || **b == b'\n')
                .count();
            data = &data[skip..];
            if data.is_empty() {
                return data;
            }
        }
        // A head that arrives whole is parsed where it lies, without a copy.
        let start = self.head.len();
        let parsed = if start == 0 {
            framing(data, self.max_headers)
        } else {
            self.head.extend_from_slice(data);
            framing(&self.head, self.max_headers)
        };
        let Some((len, f)) = parsed else {
            if start == 0 {
                self.head.extend_from_slice(data);
            }
            if self.head.len() > MAX_HEAD {
                self.go_blind(verdicts);
            }
            return &[];
        };
        let rest = &data[(len - start).min(data.len())..];
        self.head.clear();
        self.state = match f {
            Framing::Length(0) => State::Head,
            Framing::Length(n) => State::Fixed(n),
            Framing::Chunked => State::ChunkSize,
            Framing::Refuse => {
                verdicts.judge(true);
                self.go_blind(verdicts);
                return &[];
            }
            Framing::Unknown => {
                self.go_blind(verdicts);
                return &[];
            }
        };
        verdicts.judge(false);
        rest
    }

    /// Reads a chunk-size line or a trailer line, and moves on once it is whole.
    fn line<'d>(&mut self, verdicts: &Verdicts, data: &'d [u8]) -> Result<&'d [u8], &'static str> {
        let found = data.iter().position(|b| *b == b'\n');
        let piece = &data[..found.unwrap_or(data.len())];
        if self.line.len() + piece.len() > MAX_LINE {
            return Err(if matches!(self.state, State::Trailers(_)) {
                "a trailer line longer than 4096 bytes"
            } else {
                "a chunk-size line (with its extensions) longer than 4096 bytes"
            });
        }
        self.line.extend_from_slice(piece);
        let Some(end) = found else {
            return Ok(&[]);
        };
        let text = self.line.trim_ascii();
        self.state = match self.state {
            State::Trailers(_) if text.is_empty() => State::Head,
            State::Trailers(so_far) => {
                let total = so_far + self.line.len() + 1;
                if total > MAX_TRAILERS {
                    return Err("trailers longer than 16384 bytes");
                }
                State::Trailers(total)
            }
            // The CRLF that ends a chunk's data.
            _ if text.is_empty() => State::ChunkSize,
            _ => match chunk_size(text) {
                Some(0) => State::Trailers(0),
                Some(n) => State::ChunkData(n),
                None => {
                    self.line.clear();
                    self.go_blind(verdicts);
                    return Ok(&[]);
                }
            },
        };
        self.line.clear();
        Ok(&data[end + 1..])
    }

    /// The guard cannot follow the framing from here: every request the connection hands over
    /// from now on is refused (hyper refuses or closes on most such input anyway).
    fn go_blind(&mut self, verdicts: &Verdicts) {
        self.state = State::Off;
        verdicts.go_blind();
    }
}

/// The size a chunk-size line gives, its extensions left aside.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let size = line.split(|b| *b == b';').next().unwrap_or_default();
    std::str::from_utf8(size)
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
}

fn framing(head: &[u8], max_headers: usize) -> Option<(usize, Framing)> {
    // Left uninitialised: httparse writes only the headers it finds.
    let mut storage =
        [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; GUARD_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head, &mut storage) {
        Ok(httparse::Status::Complete(len)) => Some((len, framing_of(req.headers))),
        Ok(httparse::Status::Partial) => None,
        Err(httparse::Error::TooManyHeaders) if max_headers > GUARD_HEADERS => {
            let mut many = vec![httparse::EMPTY_HEADER; max_headers];
            let mut req = httparse::Request::new(&mut many);
            match req.parse(head) {
                Ok(httparse::Status::Complete(len)) => Some((len, framing_of(req.headers))),
                Ok(httparse::Status::Partial) => None,
                Err(_) => Some((head.len(), Framing::Unknown)),
            }
        }
        Err(_) => Some((head.len(), Framing::Unknown)),
    }
}

/// The body framing a parsed head declares.
fn framing_of(headers: &[httparse::Header<'_>]) -> Framing {
    let mut content_length = None;
    let mut transfer_encoding = false;
    let mut chunked_last = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
            match (content_length, v) {
                (_, None) => return Framing::Unknown,
                (Some(a), Some(b)) if a != b => return Framing::Unknown,
                (_, v) => content_length = v,
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            chunked_last = h
                .value
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        }
    }
    match (transfer_encoding, content_length) {
        (true, Some(_)) => Framing::Refuse,
        (true, None) if chunked_last => Framing::Chunked,
        (true, None) => Framing::Unknown,
        (false, n) => Framing::Length(n.unwrap_or(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts_for(chunks: &[&[u8]]) -> Vec<bool> {
        let v = Verdicts::default();
        let mut framer = Framer::new(200);
        for c in chunks {
            framer.observe(&v, c).unwrap();
        }
        (0..v.judged.load(Relaxed)).map(|i| v.refuses(i)).collect()
    }

    /// What observing `stream` in one piece gives: the error, or whether the guard went blind.
    fn observed(stream: &[u8]) -> Result<bool, &'static str> {
        let v = Verdicts::default();
        Framer::new(200).observe(&v, stream)?;
        Ok(v.blind_from.load(Relaxed) != 0)
    }

    #[test]
    fn a_line_too_long_to_follow_fails_the_connection() {
        let head = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut long_ext = head.to_vec();
        long_ext.extend_from_slice(b"4;e=");
        long_ext.extend(std::iter::repeat_n(b'x', 4200));
        assert!(observed(&long_ext).is_err());
        let mut trailers = head.to_vec();
        trailers.extend_from_slice(b"0\r\n");
        for i in 0..20 {
            trailers.extend_from_slice(format!("X-T{i}: {}\r\n", "v".repeat(1000)).as_bytes());
        }
        assert!(observed(&trailers).is_err());
        let mut fine = head.to_vec();
        fine.extend_from_slice(b"4;e=1\r\nabcd\r\n0\r\nX-T: 1\r\n\r\n");
        assert_eq!(observed(&fine), Ok(false));
    }

    #[test]
    fn heads_beyond_the_stack_slots_are_still_judged() {
        let mut head = String::from("POST /a HTTP/1.1\r\nHost: x\r\n");
        for i in 0..150 {
            head.push_str(&format!("X-H{i}: v\r\n"));
        }
        let both =
            format!("{head}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
        assert_eq!(verdicts_for(&[both.as_bytes()]), [true]);
    }

    #[test]
    fn a_head_the_guard_cannot_read_refuses_every_later_request() {
        assert_eq!(
            observed(b"GET /a HTTP/1.1\r\nBad Header: x\r\n\r\n"),
            Ok(true)
        );
        // Two heads it follows, then one it cannot: only that one and later ones are refused.
        let v = Verdicts::default();
        let stream = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nBad Header: x\r\n\r\n";
        Framer::new(200).observe(&v, stream).unwrap();
        let verdicts: Vec<bool> = (0..4).map(|i| v.refuses(i)).collect();
        assert_eq!(verdicts, [false, false, true, true]);
    }

    #[test]
    fn pipelined_requests_with_bodies_each_get_a_verdict() {
        let stream: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
GET /b HTTP/1.1\r\nHost: x\r\n\r\n\
POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\n\
POST /d HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(verdicts_for(&[stream]), [false, false, false, true]);
        // The same bytes split at every position give the same verdicts.
        for cut in 1..stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(
                verdicts_for(&[a, b]),
                [false, false, false, true],
                "cut {cut}"
            );
        }
    }

    #[test]
    fn smuggled_head_inside_a_body_is_not_a_request() {
        let body = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
        let head = format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        assert_eq!(verdicts_for(&[head.as_bytes(), body]), [false]);
    }
}
