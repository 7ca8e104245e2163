//! An upstream API fixture built by the test: each route names the end of a path and the
//! [`Answer`] it gets (status, headers, delay, and a body that is echoed, streamed, dripped, stalled,
//! broken, counted or a quota counted down). A path no route names is echoed as JSON with 200.
//!
//! ```text
//! let api = Upstream::builder()
//!     .route("/429", Answer::status(429).header("retry-after", 30))
//!     .route("/big", Answer::download(100 << 20))
//!     .http();
//! ```
//!
//! Plain HTTP/1.1, or TLS with a generated certificate and ALPN h2/http1.1.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::sync::oneshot;

pub struct Upstream {
    pub addr: SocketAddr,
    hits: Arc<Seen>,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    close_all: tokio::sync::mpsc::UnboundedSender<oneshot::Sender<()>>,
    /// PEM of the certificate, for a source's `ca_file` (TLS fixtures only).
    pub ca_file: Option<PathBuf>,
    _dir: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    /// A fixture that echoes every request with 200.
    pub fn http() -> Self {
        Self::builder().http()
    }

    /// The TLS fixture that echoes every request with 200.
    pub fn tls() -> Self {
        Self::builder().tls()
    }

    pub fn builder() -> Builder {
        Builder::default()
    }

    /// `h2c`: plain connections may speak HTTP/2 with prior knowledge too.
    fn start(tls: Option<tokio_rustls::TlsAcceptor>, routes: Routes, h2c: bool) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(Seen::default());
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let (close_all, mut close_rx) =
            tokio::sync::mpsc::unbounded_channel::<oneshot::Sender<()>>();
        let counted = hits.clone();
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (accepted_in, open_in) = (accepted.clone(), open.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let mut conns = tokio::task::JoinSet::new();
                loop {
                    let (stream, _) = tokio::select! {
                        a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                        Some(done) = close_rx.recv() => {
                            conns.abort_all();
                            while conns.join_next().await.is_some() {}
                            let _ = done.send(());
                            continue;
                        }
                        _ = &mut stop_rx => break,
                    };
                    accepted_in.fetch_add(1, Ordering::SeqCst);
                    let hits = counted.clone();
                    let routes = routes.clone();
                    let tls = tls.clone();
                    let open = OpenGuard::new(open_in.clone());
                    conns.spawn(async move {
                        let _open = open;
                        let svc = service_fn(move |req| respond(req, hits.clone(), routes.clone()));
                        let mut builder = auto::Builder::new(TokioExecutor::new());
                        if tls.is_none() && !h2c {
                            builder = builder.http1_only();
                        }
                        match tls {
                            Some(acceptor) => {
                                if let Ok(s) = acceptor.accept(stream).await {
                                    let _ = builder.serve_connection(TokioIo::new(s), svc).await;
                                }
                            }
                            None => {
                                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                    });
                }
                // Stopping closes the listener and every open connection at once.
                conns.abort_all();
            });
        });
        Upstream {
            addr,
            hits,
            accepted,
            open,
            close_all,
            ca_file: None,
            _dir: None,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT` or `https://...`.
    pub fn url(&self) -> String {
        let scheme = if self.ca_file.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// Requests the fixture has received.
    pub fn hits(&self) -> usize {
        self.hits.count.load(Ordering::SeqCst)
    }

    /// Bytes of downloads and gRPC messages sent so far.
    pub fn sent(&self) -> usize {
        self.hits.sent.load(Ordering::SeqCst)
    }

    /// Once what it sends has stopped moving (the readers' windows and buffers are full):
    /// polled until two looks a tenth of a second apart agree, for at most 30 s.
    pub fn wait_until_sending_stalls(&self) -> usize {
        let until = std::time::Instant::now() + Duration::from_secs(30);
        let mut last = usize::MAX;
        loop {
            let now = self.sent();
            if now == last && now > 0 {
                return now;
            }
            assert!(
                std::time::Instant::now() < until,
                "still sending after 30 s"
            );
            last = now;
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every request target received so far, with its `x-fuzz-id` header when it had one.
    pub fn targets(&self) -> Vec<(String, Option<String>)> {
        self.hits.targets.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Closes every open connection, as a server's keep-alive timeout does, and returns once
    /// they are closed; the listener stays.
    pub fn close_connections(&self) {
        let (done, closed) = oneshot::channel();
        self.close_all.send(done).expect("fixture running");
        closed
            .blocking_recv()
            .expect("fixture closed its connections");
    }

    /// Closes the listener and every connection; later connects are refused.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Counts a connection as open until its task ends or is aborted.
struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    fn new(open: Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::SeqCst);
        OpenGuard(open)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The requests a fixture received.
#[derive(Default)]
struct Seen {
    count: AtomicUsize,
    /// Bytes of downloads and gRPC messages handed to hyper.
    sent: Arc<AtomicUsize>,
    targets: std::sync::Mutex<Vec<(String, Option<String>)>>,
}

/// What the fixture answers on one path: a status, headers, a delay before the head, and the
/// shape of the body. Built by the test, as linkerd2-proxy's integration servers are.
#[derive(Clone)]
pub struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    delay: Duration,
    body: Shape,
}

#[derive(Clone)]
enum Shape {
    /// The request as JSON: method, target, path, query, version, headers, body.
    Echo,
    /// N bytes, streamed in 64 KiB frames.
    Download(u64),
    /// N one-byte frames, one per interval, with a `Content-Length`.
    Drip(u64, Duration),
    /// No head at all.
    Stall,
    /// 3 bytes of a stated 10, then nothing.
    StallBody,
    /// 100 bytes of a stated 1000, a pause, then a broken connection.
    BreakMidBody,
    /// The upload's length as `{"body_len":N}`, without keeping the body.
    CountUpload,
    /// The parts in order, each repeated its count of times, in frames of at most 64 KiB.
    Parts(Arc<[Part]>),
    /// A quota of N calls counted down in `X-RateLimit-*` headers (reset in 60 s); once it
    /// is used up, 429 with `Retry-After: 60`.
    Quota(usize, Arc<AtomicUsize>),
    /// A gRPC answer: N messages of SIZE bytes, then its end.
    Grpc(u32, usize, GrpcEnd),
}

/// How the fixture's gRPC answer ends after its messages.
#[derive(Clone, Debug)]
pub enum GrpcEnd {
    /// Trailers with these fields (none or others: trailers without `grpc-status`).
    Trailers(Vec<(&'static str, &'static str)>),
    /// The last message ends the stream: no trailers at all.
    NoTrailers,
    /// `RST_STREAM` with this HTTP/2 error code.
    Reset(u32),
    /// Nothing more, for ever.
    Stall,
}

impl Answer {
    fn new(body: Shape) -> Self {
        Answer {
            status: 200,
            headers: Vec::new(),
            delay: Duration::ZERO,
            body,
        }
    }

    /// The request echoed as JSON, with this status.
    pub fn status(code: u16) -> Self {
        Answer::new(Shape::Echo).with_status(code)
    }

    pub fn with_status(mut self, code: u16) -> Self {
        self.status = code;
        self
    }

    pub fn header(mut self, name: &str, value: impl ToString) -> Self {
        self.headers.push((name.to_owned(), value.to_string()));
        self
    }

    /// Waits this long before the head.
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }

    /// A gRPC answer (`content-type: application/grpc`): `messages` empty messages, then `end`.
    pub fn grpc(messages: u32, end: GrpcEnd) -> Self {
        Answer::grpc_messages(messages, 0, end)
    }

    /// A gRPC answer of `messages` messages of `size` bytes each, then `end`.
    pub fn grpc_messages(messages: u32, size: usize, end: GrpcEnd) -> Self {
        Answer::new(Shape::Grpc(messages, size, end)).header("content-type", "application/grpc")
    }

    pub fn download(bytes: u64) -> Self {
        Answer::new(Shape::Download(bytes))
    }

    pub fn drip(bytes: u64, every: Duration) -> Self {
        Answer::new(Shape::Drip(bytes, every))
    }

    pub fn stall() -> Self {
        Answer::new(Shape::Stall)
    }

    pub fn stall_body() -> Self {
        Answer::new(Shape::StallBody)
    }

    pub fn break_mid_body() -> Self {
        Answer::new(Shape::BreakMidBody)
    }

    pub fn count_upload() -> Self {
        Answer::new(Shape::CountUpload)
    }

    pub fn quota(calls: usize) -> Self {
        Answer::new(Shape::Quota(calls, Arc::default()))
    }

    /// A body of `parts` in order, each `(bytes, times)` repeated; every part starts a frame,
    /// and repeats are grouped into frames of up to 64 KiB. The bytes are sent as given (a
    /// compressed body with its `content-encoding` header, set by the test).
    pub fn body(parts: &[(&[u8], u64)]) -> Self {
        Answer::new(Shape::Parts(
            parts.iter().map(|(b, n)| Part::new(b, *n)).collect(),
        ))
    }
}

/// One part of a [`Shape::Parts`] body.
#[derive(Clone)]
pub struct Part {
    one: Bytes,
    /// As many copies as fit in 64 KiB (at least one), sent as one frame.
    frame: Bytes,
    per_frame: u64,
    times: u64,
}

impl Part {
    fn new(bytes: &[u8], times: u64) -> Self {
        let per_frame = (CHUNK / bytes.len().max(1)).max(1) as u64;
        Part {
            one: Bytes::copy_from_slice(bytes),
            frame: Bytes::from(bytes.repeat(per_frame as usize)),
            per_frame,
            times,
        }
    }
}

/// An upstream fixture under construction: the answers by path. A request gets the answer of
/// the longest route its path ends with; a path no route names is echoed with 200.
#[derive(Default)]
pub struct Builder {
    routes: HashMap<String, Answer>,
}

impl Builder {
    /// Answers `reply` to requests whose path is `path` or ends with it.
    pub fn route(mut self, path: &str, reply: Answer) -> Self {
        self.routes.insert(path.to_owned(), reply);
        self
    }

    /// `/CODE` answers CODE, echoing the request, for each code.
    pub fn statuses(self, codes: &[u16]) -> Self {
        codes.iter().fold(self, |b, &code| {
            b.route(&format!("/{code}"), Answer::status(code))
        })
    }

    /// Plain HTTP/1.1, and HTTP/2 with prior knowledge (h2c).
    pub fn http(self) -> Upstream {
        Upstream::start(None, Arc::new(self.routes), true)
    }

    /// Plain HTTP/1.1 only: an HTTP/2 preface is a bad HTTP/1.1 request.
    pub fn http1_only(self) -> Upstream {
        Upstream::start(None, Arc::new(self.routes), false)
    }

    /// TLS with a fresh self-signed certificate for 127.0.0.1, offering h2 and http/1.1.
    pub fn tls(self) -> Upstream {
        self.tls_offering(&[b"h2", b"http/1.1"])
    }

    /// TLS that offers only http/1.1 by ALPN: an API that does not speak HTTP/2.
    pub fn tls_http1_only(self) -> Upstream {
        self.tls_offering(&[b"http/1.1"])
    }

    fn tls_offering(self, alpn: &[&[u8]]) -> Upstream {
        let ck = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])
        .expect("certificate");
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, ck.cert.pem()).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let mut u = Upstream::start(Some(acceptor), Arc::new(self.routes), true);
        u.ca_file = Some(ca);
        u._dir = Some(dir);
        u
    }
}

type Routes = Arc<HashMap<String, Answer>>;

async fn respond(
    req: Request<Incoming>,
    hits: Arc<Seen>,
    routes: Routes,
) -> Result<Response<FixtureBody>, Infallible> {
    hits.count.fetch_add(1, Ordering::SeqCst);
    let id = req
        .headers()
        .get("x-fuzz-id")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    hits.targets
        .lock()
        .unwrap()
        .push((req.uri().to_string(), id));
    let reply = route(&routes, req.uri().path());
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut head = Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        head = head.header(name, value);
    }
    let body = match reply.body {
        Shape::Echo => {
            head = head.header("content-type", "application/json");
            FixtureBody::full(echo(req).await)
        }
        Shape::Download(n) => FixtureBody::Repeat {
            remaining: n,
            sent: hits.sent.clone(),
        },
        Shape::Drip(n, every) => {
            head = head.header("content-length", n);
            FixtureBody::Drip {
                remaining: n,
                every,
                next: Box::pin(tokio::time::sleep(every)),
            }
        }
        Shape::Stall => std::future::pending().await,
        Shape::StallBody => {
            head = head.header("content-length", "10");
            FixtureBody::Stalled { sent: false }
        }
        Shape::BreakMidBody => {
            head = head.header("content-length", "1000");
            FixtureBody::Broken {
                sent: false,
                pause: Box::pin(tokio::time::sleep(Duration::from_millis(100))),
            }
        }
        Shape::CountUpload => {
            let mut body = req.into_body();
            let mut n: u64 = 0;
            while let Some(Ok(frame)) = body.frame().await {
                n += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            FixtureBody::full(format!("{{\"body_len\":{n}}}"))
        }
        Shape::Parts(parts) => FixtureBody::Parts {
            parts,
            index: 0,
            left: None,
        },
        Shape::Quota(limit, used) => {
            let used = used.fetch_add(1, Ordering::SeqCst) + 1;
            head = head
                .header("x-ratelimit-limit", limit)
                .header("x-ratelimit-remaining", limit.saturating_sub(used))
                .header("x-ratelimit-reset", 60);
            if used > limit {
                head = head.status(429).header("retry-after", 60);
            }
            FixtureBody::full("quota\n")
        }
        Shape::Grpc(messages, size, end) => {
            let mut message = vec![0u8; 5 + size];
            message[1..5].copy_from_slice(&(size as u32).to_be_bytes());
            FixtureBody::Grpc {
                messages,
                message: Bytes::from(message),
                end: Some(end),
                sent: hits.sent.clone(),
            }
        }
    };
    Ok(head.body(body).unwrap())
}

/// The answer of the longest route the path ends with (so a source's base path does not
/// matter), or the echo.
fn route(routes: &Routes, path: &str) -> Answer {
    routes
        .iter()
        .filter(|(r, _)| path.ends_with(r.as_str()))
        .max_by_key(|(r, _)| r.len())
        .map_or_else(|| Answer::status(200), |(_, a)| a.clone())
}

/// The request as JSON.
async fn echo(req: Request<Incoming>) -> String {
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    serde_json::json!({
        "method": parts.method.as_str(),
        "target": parts.uri.to_string(),
        "path": parts.uri.path(),
        "query": parts.uri.query().unwrap_or(""),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    })
    .to_string()
}

pub enum FixtureBody {
    Full(Option<Bytes>),
    Repeat {
        remaining: u64,
        sent: Arc<AtomicUsize>,
    },
    Stalled {
        sent: bool,
    },
    /// One byte per `every`.
    Drip {
        remaining: u64,
        every: std::time::Duration,
        next: Pin<Box<tokio::time::Sleep>>,
    },
    /// [`Shape::Parts`]: the part being sent and how many of its copies are left.
    Parts {
        parts: Arc<[Part]>,
        index: usize,
        left: Option<u64>,
    },
    /// 100 bytes, a pause so they leave the server, then an error.
    Broken {
        sent: bool,
        pause: Pin<Box<tokio::time::Sleep>>,
    },
    /// [`Shape::Grpc`]: the messages left, one message framed, then the end.
    Grpc {
        messages: u32,
        message: Bytes,
        end: Option<GrpcEnd>,
        sent: Arc<AtomicUsize>,
    },
}

impl FixtureBody {
    fn full(s: impl Into<Bytes>) -> Self {
        FixtureBody::Full(Some(s.into()))
    }
}

const CHUNK: usize = 64 * 1024;
static ZEROS: [u8; CHUNK] = [b'x'; CHUNK];

impl Body for FixtureBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match &mut *self {
            FixtureBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            FixtureBody::Repeat { remaining, sent } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                let n = (*remaining).min(CHUNK as u64) as usize;
                *remaining -= n as u64;
                sent.fetch_add(n, Ordering::SeqCst);
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&ZEROS[..n])))))
            }
            FixtureBody::Drip {
                remaining,
                every,
                next,
            } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                std::task::ready!(next.as_mut().poll(cx));
                next.as_mut().reset(tokio::time::Instant::now() + *every);
                *remaining -= 1;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"d")))))
            }
            FixtureBody::Parts { parts, index, left } => loop {
                let Some(part) = parts.get(*index) else {
                    return Poll::Ready(None);
                };
                let n = *left.get_or_insert(part.times);
                if n == 0 {
                    *index += 1;
                    *left = None;
                    continue;
                }
                let frame = if n >= part.per_frame {
                    *left = Some(n - part.per_frame);
                    part.frame.clone()
                } else {
                    *left = Some(0);
                    Bytes::from(part.one.repeat(n as usize))
                };
                return Poll::Ready(Some(Ok(Frame::data(frame))));
            },
            FixtureBody::Stalled { sent } => {
                if *sent {
                    Poll::Pending
                } else {
                    *sent = true;
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"abc")))))
                }
            }
            FixtureBody::Grpc {
                messages,
                message,
                end,
                sent,
            } => {
                if *messages > 0 {
                    *messages -= 1;
                    sent.fetch_add(message.len(), Ordering::SeqCst);
                    return Poll::Ready(Some(Ok(Frame::data(message.clone()))));
                }
                match end.take() {
                    Some(GrpcEnd::Trailers(fields)) => {
                        let mut trailers = http::HeaderMap::new();
                        for (name, value) in fields {
                            trailers.append(name, http::HeaderValue::from_static(value));
                        }
                        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                    }
                    // hyper resets the stream with the reason it finds in the error.
                    Some(GrpcEnd::Reset(code)) => {
                        Poll::Ready(Some(Err(h2::Error::from(h2::Reason::from(code)).into())))
                    }
                    Some(GrpcEnd::Stall) => {
                        *end = Some(GrpcEnd::Stall);
                        Poll::Pending
                    }
                    Some(GrpcEnd::NoTrailers) | None => Poll::Ready(None),
                }
            }
            FixtureBody::Broken { sent, pause } => {
                if *sent {
                    std::task::ready!(pause.as_mut().poll(cx));
                    Poll::Ready(Some(Err("fixture breaks the body".into())))
                } else {
                    *sent = true;
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&ZEROS[..100])))))
                }
            }
        }
    }

    /// A gRPC answer of no message and no trailers is trailers-only: its head ends the stream.
    fn is_end_stream(&self) -> bool {
        match self {
            FixtureBody::Full(b) => b.is_none(),
            FixtureBody::Grpc { messages, end, .. } => {
                *messages == 0 && matches!(end, Some(GrpcEnd::NoTrailers))
            }
            _ => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            FixtureBody::Repeat { remaining, .. } => SizeHint::with_exact(*remaining),
            _ => SizeHint::default(),
        }
    }
}
