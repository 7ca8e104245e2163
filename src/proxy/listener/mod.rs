//! The proxy listener's view of each connection's bytes: request-smuggling guard and
//! header read timeout.
//!
//! hyper accepts a request that carries both `Content-Length` and `Transfer-Encoding` (it
//! reads the body as chunked, drops `Content-Length` and closes the connection after), and
//! no longer shows the request's `Content-Length` to the service. A proxy should refuse such a
//! request outright (RFC 9112 §6.3), so this wrapper reads the same bytes hyper reads, finds
//! each request head and its body framing, and leaves a verdict per request that the proxy
//! checks before forwarding anything.
//!
//! The same wrapper keeps `proxy.header_read_timeout`: a connection with no request in service
//! (idle, or part-way through a head) for that long is closed, as hyper's own timeout would.
//! hyper arms and drops a timer for every request; this one is armed once per connection and
//! moves only when it fires ([`LazyDeadline`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::proxy::deadline::LazyDeadline;

/// One connection's requests, as its reader and its service both see them.
#[derive(Debug)]
pub struct Requests {
    /// Heads the guard has judged.
    judged: AtomicU64,
    /// 1 + the index of the head the guard refused, or 0. A refused head is the last one the
    /// guard judges: it stops inspecting the connection there.
    refused: AtomicU64,
    /// 1 + the index of the first request the guard could not follow, or 0: that request and
    /// every later one are refused, so the guard is never blind while the connection serves.
    blind_from: AtomicU64,
    /// Requests handed to the service.
    served: AtomicU64,
    /// Requests in service: handed over and their response not yet sent.
    in_flight: AtomicU64,
    /// When the connection last had no request in service, in nanoseconds after `born`.
    idle_since: AtomicU64,
    born: Instant,
    /// A `CONNECT` was answered 200: the bytes from here on are a tunnel's, not requests.
    tunnel: AtomicBool,
    /// The connection's `proxy.max_connections` slot, held as long as the connection's bytes
    /// are read: through a tunnel too, which outlives the connection's HTTP serving.
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Default for Requests {
    fn default() -> Self {
        Requests {
            judged: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            blind_from: AtomicU64::new(0),
            served: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            born: Instant::now(),
            tunnel: AtomicBool::new(false),
            _slot: None,
        }
    }
}

impl Requests {
    /// A connection's requests, holding its listener slot until the last of its bytes.
    pub fn holding(slot: tokio::sync::OwnedSemaphorePermit) -> Self {
        Requests {
            _slot: Some(slot),
            ..Requests::default()
        }
    }

    fn judge(&self, refuse: bool) {
        let index = self.judged.fetch_add(1, Relaxed);
        if refuse {
            self.refused.store(index + 1, Relaxed);
        }
    }

    /// Takes the next request into service: whether it must be refused, and a guard that
    /// marks it answered when dropped (with the response body).
    pub fn serve(self: &Arc<Self>) -> (bool, InService) {
        let index = self.served.fetch_add(1, Relaxed);
        self.in_flight.fetch_add(1, Relaxed);
        let blind_from = self.blind_from.load(Relaxed);
        let refuse =
            self.refused.load(Relaxed) == index + 1 || (blind_from != 0 && index + 1 >= blind_from);
        (refuse, InService(self.clone()))
    }

    /// The moment from which the header read timeout runs, if no request is in service.
    fn idle_since(&self) -> Option<Instant> {
        (self.in_flight.load(Relaxed) == 0 && !self.tunnel.load(Relaxed))
            .then(|| self.born + Duration::from_nanos(self.idle_since.load(Relaxed)))
    }
}

/// A request in service; dropped once its response has been handed to the connection.
#[derive(Debug)]
pub struct InService(Arc<Requests>);

impl InService {
    /// This request is a `CONNECT` answered 200: the guard stops reading the connection as
    /// requests and its header read timeout stops, since the tunnel's own connection keeps
    /// them from here on.
    pub fn open_tunnel(&self) {
        self.0.tunnel.store(true, Relaxed);
    }
}

impl Drop for InService {
    fn drop(&mut self) {
        let r = &self.0;
        if r.in_flight.fetch_sub(1, Relaxed) == 1 {
            let nanos = r.born.elapsed().as_nanos().try_into().unwrap_or(u64::MAX);
            r.idle_since.store(nanos, Relaxed);
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in service until hyper drops it, which it does
    /// once the body has ended (or the connection has).
    pub struct Answering<B> {
        #[pin]
        body: B,
        request: InService,
    }
}

impl<B> Answering<B> {
    pub fn new(body: B, request: InService) -> Self {
        Answering { body, request }
    }
}

impl<B: Body> Body for Answering<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.project().body.poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Longest head the guard buffers; past it hyper answers 431 and closes anyway (and should a
/// larger `max_header_bytes` let hyper take it, the connection's requests are refused).
const MAX_HEAD: usize = 128 * 1024;
/// Longest chunk-size line (with its extensions) or trailer line; a longer one fails the
/// connection.
pub const MAX_LINE: usize = 4096;
/// Most bytes of trailers after the last chunk; more fail the connection.
pub const MAX_TRAILERS: usize = 16 * 1024;

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

pin_project_lite::pin_project! {
    /// Passes every byte through untouched; only observes.
    pub struct Guarded<IO> {
        #[pin]
        inner: IO,
        state: State,
        head: Vec<u8>,
        line: Vec<u8>,
        requests: Arc<Requests>,
        header_read_timeout: Duration,
        header_deadline: LazyDeadline,
        timeouts: Timeouts,
        slots: Arc<Slots>,
        // Since when writes to the connector have waited for it to read, if they do now.
        write_blocked: Option<Instant>,
        send_deadline: LazyDeadline,
    }
}

/// The proxy listener's limits for one connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// `proxy.header_read_timeout`.
    pub header_read: Duration,
    /// `proxy.send_timeout`.
    pub send: Duration,
    /// `proxy.max_headers`, so that the guard parses every header hyper accepts.
    pub max_headers: usize,
}

/// The proxy listener's connection slots (`proxy.max_connections`), as the send timeout sees
/// them: while nearly all are taken, a connector that has read nothing for a second loses its
/// connection, so that readers that stop reading cannot lock out those that read.
#[derive(Debug)]
pub struct Slots {
    free: Arc<tokio::sync::Semaphore>,
    /// Free slots at or below which the listener is under pressure.
    reserve: usize,
}

/// How long a stalled write may wait while the listener is under pressure, and how often a
/// stalled write looks again.
const UNDER_PRESSURE: Duration = Duration::from_secs(1);

impl Slots {
    /// `free` holds the listener's `max_connections` permits; a tenth of them is the reserve.
    pub fn new(free: Arc<tokio::sync::Semaphore>, max_connections: usize) -> Arc<Self> {
        Arc::new(Slots {
            free,
            reserve: (max_connections / 10).max(1),
        })
    }

    fn under_pressure(&self) -> bool {
        self.free.available_permits() <= self.reserve
    }
}

impl<IO> Guarded<IO> {
    pub fn new(inner: IO, requests: Arc<Requests>, timeouts: Timeouts, slots: Arc<Slots>) -> Self {
        Guarded {
            inner,
            state: State::Head,
            head: Vec::new(),
            line: Vec::new(),
            requests,
            header_read_timeout: timeouts.header_read,
            header_deadline: LazyDeadline::default(),
            timeouts,
            slots,
            write_blocked: None,
            send_deadline: LazyDeadline::default(),
        }
    }
}

/// A write that waited: an error once the connector has read nothing for `send_timeout` (or
/// for a second, while the listener's slots are nearly all taken), so that hyper aborts the
/// response and frees what it holds; otherwise wait, looking again at least every second.
fn poll_send_timeout<T>(
    blocked: &mut Option<Instant>,
    deadline: &mut LazyDeadline,
    (timeout, slots): (Duration, &Slots),
    polled: Poll<io::Result<T>>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<T>> {
    if polled.is_ready() {
        *blocked = None;
        return polled;
    }
    let since = *blocked.get_or_insert_with(Instant::now);
    loop {
        let now = Instant::now();
        let pressed = slots.under_pressure();
        let limit = if pressed {
            timeout.min(UNDER_PRESSURE)
        } else {
            timeout
        };
        if now >= since + limit {
            let why = if pressed {
                "the connector read nothing for a second while proxy.max_connections was nearly reached".to_owned()
            } else {
                format!("the connector read nothing for proxy.send_timeout ({timeout:?})")
            };
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)));
        }
        if !deadline.poll_passed((since + limit).min(now + UNDER_PRESSURE), cx) {
            return Poll::Pending;
        }
    }
}

/// What a complete head says about the body that follows.
enum Framing {
    Length(u64),
    Chunked,
    Refuse,
    Unknown,
}

/// Headers the guard parses on the stack; a head with more (up to `proxy.max_headers`) is
/// parsed again with room for them all.
const GUARD_HEADERS: usize = 128;

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

/// Advances the framing state over `data`. An error is a line too long to follow: the
/// connection must fail rather than be served unwatched.
fn observe(
    state: &mut State,
    head: &mut Vec<u8>,
    line: &mut Vec<u8>,
    requests: &Requests,
    max_headers: usize,
    mut data: &[u8],
) -> Result<(), &'static str> {
    while !data.is_empty() {
        match state {
            State::Off => return Ok(()),
            State::Head => {
                // Blank lines before a request line are allowed (RFC 9112 §2.2).
                if head.is_empty() {
                    let skip = data
                        .iter()
                        .take_while(|b| **b == b'\r' || **b == b'\n')
                        .count();
                    data = &data[skip..];
                    if data.is_empty() {
                        return Ok(());
                    }
                }
                // A head that arrives whole is parsed where it lies, without a copy.
                let start = head.len();
                let parsed = if start == 0 {
                    framing(data, max_headers)
                } else {
                    head.extend_from_slice(data);
                    framing(head, max_headers)
                };
                match parsed {
                    None => {
                        if start == 0 {
                            head.extend_from_slice(data);
                        }
                        if head.len() > MAX_HEAD {
                            go_blind(state, requests);
                        }
                        return Ok(());
                    }
                    Some((len, f)) => {
                        let used = len - start;
                        data = &data[used.min(data.len())..];
                        head.clear();
                        match f {
                            Framing::Length(0) => *state = State::Head,
                            Framing::Length(n) => *state = State::Fixed(n),
                            Framing::Chunked => *state = State::ChunkSize,
                            Framing::Refuse => {
                                requests.judge(true);
                                go_blind(state, requests);
                                return Ok(());
                            }
                            Framing::Unknown => {
                                go_blind(state, requests);
                                return Ok(());
                            }
                        }
                        requests.judge(false);
                    }
                }
            }
            State::Fixed(n) => {
                let take = (*n).min(data.len() as u64);
                *n -= take;
                data = &data[take as usize..];
                if *n == 0 {
                    *state = State::Head;
                }
            }
            State::ChunkData(n) => {
                let take = (*n).min(data.len() as u64);
                *n -= take;
                data = &data[take as usize..];
                if *n == 0 {
                    *state = State::ChunkSize;
                }
            }
            State::ChunkSize | State::Trailers(_) => {
                let found = data.iter().position(|b| *b == b'\n');
                let piece = &data[..found.unwrap_or(data.len())];
                if line.len() + piece.len() > MAX_LINE {
                    return Err(if matches!(state, State::Trailers(_)) {
                        "a trailer line longer than 4096 bytes"
                    } else {
                        "a chunk-size line (with its extensions) longer than 4096 bytes"
                    });
                }
                line.extend_from_slice(piece);
                let Some(end) = found else {
                    return Ok(());
                };
                data = &data[end + 1..];
                let text = line.trim_ascii();
                *state = match *state {
                    State::Trailers(_) if text.is_empty() => State::Head,
                    State::Trailers(so_far) => {
                        let total = so_far + line.len() + 1;
                        if total > MAX_TRAILERS {
                            return Err("trailers longer than 16384 bytes");
                        }
                        State::Trailers(total)
                    }
                    // The CRLF that ends a chunk's data.
                    _ if text.is_empty() => State::ChunkSize,
                    _ => {
                        let size = text.split(|b| *b == b';').next().unwrap_or_default();
                        match std::str::from_utf8(size)
                            .ok()
                            .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
                        {
                            Some(0) => State::Trailers(0),
                            Some(n) => State::ChunkData(n),
                            None => {
                                line.clear();
                                go_blind(state, requests);
                                return Ok(());
                            }
                        }
                    }
                };
                line.clear();
            }
        }
    }
    Ok(())
}

/// The guard cannot follow the framing from here: every request the connection hands over
/// from now on is refused (hyper refuses or closes on most such input anyway).
fn go_blind(state: &mut State, requests: &Requests) {
    *state = State::Off;
    let next = requests.judged.load(Relaxed);
    requests.blind_from.store(next + 1, Relaxed);
}

impl<IO: AsyncRead> AsyncRead for Guarded<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        match this.inner.poll_read(cx, buf) {
            Poll::Ready(Ok(())) if this.requests.tunnel.load(Relaxed) => Poll::Ready(Ok(())),
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                let max_headers = this.timeouts.max_headers;
                match observe(
                    this.state,
                    this.head,
                    this.line,
                    this.requests,
                    max_headers,
                    new,
                ) {
                    Ok(()) => Poll::Ready(Ok(())),
                    Err(why) => Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why))),
                }
            }
            // Only a read that has to wait needs the deadline, to be woken by it.
            Poll::Pending => match this.requests.idle_since() {
                Some(since)
                    if this
                        .header_deadline
                        .poll_passed(since + *this.header_read_timeout, cx) =>
                {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "no request head within proxy.header_read_timeout ({:?})",
                            this.header_read_timeout
                        ),
                    )))
                }
                _ => Poll::Pending,
            },
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }
}

impl<IO: AsyncWrite> AsyncWrite for Guarded<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write(cx, buf);
        let limits = (this.timeouts.send, &**this.slots);
        poll_send_timeout(this.write_blocked, this.send_deadline, limits, polled, cx)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let polled = this.inner.poll_flush(cx);
        let limits = (this.timeouts.send, &**this.slots);
        poll_send_timeout(this.write_blocked, this.send_deadline, limits, polled, cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write_vectored(cx, bufs);
        let limits = (this.timeouts.send, &**this.slots);
        poll_send_timeout(this.write_blocked, this.send_deadline, limits, polled, cx)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts_for(chunks: &[&[u8]]) -> Vec<bool> {
        let r = Arc::new(Requests::default());
        let (mut state, mut head, mut line) = (State::Head, Vec::new(), Vec::new());
        for c in chunks {
            observe(&mut state, &mut head, &mut line, &r, 200, c).unwrap();
        }
        (0..r.judged.load(Relaxed)).map(|_| r.serve().0).collect()
    }

    /// What observing `stream` in one piece gives: the error, or whether the guard went blind.
    fn observed(stream: &[u8]) -> Result<bool, &'static str> {
        let r = Arc::new(Requests::default());
        let (mut state, mut head, mut line) = (State::Head, Vec::new(), Vec::new());
        observe(&mut state, &mut head, &mut line, &r, 200, stream)?;
        Ok(r.blind_from.load(Relaxed) != 0)
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
        let r = Arc::new(Requests::default());
        let (mut state, mut head, mut line) = (State::Head, Vec::new(), Vec::new());
        let stream = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nBad Header: x\r\n\r\n";
        observe(&mut state, &mut head, &mut line, &r, 200, stream).unwrap();
        let verdicts: Vec<bool> = (0..4).map(|_| r.serve().0).collect();
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
