//! An upstream API fixture where the request picks the answer:
//!
//! - any path segment that is a status code (`/x/429`) sets the status;
//! - `retry_after=`, `ratelimit=` and `x_ratelimit=` in the query set those headers;
//! - `/download/N` streams N bytes, `/upload` counts the body without keeping it;
//! - `/drip/N/MS` sends N one-byte chunks MS milliseconds apart;
//! - `/slow/MS` waits MS milliseconds before answering, `/stall` never answers, `/stall-body` stops after 3 bytes of 10,
//!   `/reset-mid-body` breaks the connection after 100 bytes of 1000;
//! - `/quota/N` counts a quota of N calls down, in `X-RateLimit-*` headers (reset in 60 s), and
//!   answers 429 with `Retry-After: 60` once it is used up;
//! - `close=1` in the query answers with `Connection: close`;
//! - everything else echoes the request as JSON (method, target, version, headers, body).
//!
//! Plain HTTP/1.1, or TLS with a generated certificate and ALPN h2/http1.1.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

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
    /// Plain HTTP/1.1.
    pub fn http() -> Self {
        Self::start(None)
    }

    /// TLS with a fresh self-signed certificate for 127.0.0.1, offering h2 and http/1.1.
    pub fn tls() -> Self {
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
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut u = Self::start(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))));
        u.ca_file = Some(ca);
        u._dir = Some(dir);
        u
    }

    fn start(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
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
                    let tls = tls.clone();
                    let open = OpenGuard::new(open_in.clone());
                    conns.spawn(async move {
                        let _open = open;
                        let svc = service_fn(move |req| respond(req, hits.clone()));
                        let builder = auto::Builder::new(TokioExecutor::new());
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

type Reply = Response<FixtureBody>;

/// The requests a fixture received.
#[derive(Default)]
struct Seen {
    count: AtomicUsize,
    /// Calls to `/quota/N` so far.
    quota_used: AtomicUsize,
    targets: std::sync::Mutex<Vec<(String, Option<String>)>>,
}

async fn respond(req: Request<Incoming>, hits: Arc<Seen>) -> Result<Reply, Infallible> {
    hits.count.fetch_add(1, Ordering::SeqCst);
    let id = req
        .headers()
        .get("x-fuzz-id")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    hits.targets
        .lock()
        .unwrap()
        .push((req.uri().to_string(), id));
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    if let Some(limit) = path
        .rsplit_once("/quota/")
        .and_then(|(_, n)| n.parse::<usize>().ok())
    {
        let used = hits.quota_used.fetch_add(1, Ordering::SeqCst) + 1;
        let remaining = limit.saturating_sub(used);
        let builder = Response::builder()
            .header("x-ratelimit-limit", limit)
            .header("x-ratelimit-remaining", remaining)
            .header("x-ratelimit-reset", 60);
        let reply = if used > limit {
            builder.status(429).header("retry-after", 60)
        } else {
            builder.status(200)
        };
        return Ok(reply.body(FixtureBody::full("quota\n")).unwrap());
    }
    let status = path
        .split('/')
        .filter_map(|s| s.parse::<u16>().ok())
        .find(|c| (100..600).contains(c))
        .unwrap_or(200);
    let mut builder = Response::builder().status(status);
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("retry_after", v)) => {
                let v = v.replace("%20", " ").replace("%2C", ",");
                builder = builder.header("retry-after", v);
            }
            Some(("ratelimit", v)) => builder = builder.header("ratelimit-remaining", v),
            Some(("x_ratelimit", v)) => builder = builder.header("x-ratelimit-remaining", v),
            Some(("close", "1")) => builder = builder.header("connection", "close"),
            _ => {}
        }
    }
    if let Some(ms) = path
        .rsplit_once("/slow/")
        .and_then(|(_, ms)| ms.parse::<u64>().ok())
    {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let body = if path.ends_with("/stall") {
        std::future::pending::<()>().await;
        unreachable!()
    } else if path.ends_with("/stall-body") {
        builder = builder.header("content-length", "10");
        FixtureBody::Stalled { sent: false }
    } else if path.ends_with("/reset-mid-body") {
        builder = builder.header("content-length", "1000");
        FixtureBody::Broken {
            sent: false,
            pause: Box::pin(tokio::time::sleep(std::time::Duration::from_millis(100))),
        }
    } else if let Some(n) = path
        .rsplit_once("/download/")
        .and_then(|(_, n)| n.parse().ok())
    {
        FixtureBody::Repeat { remaining: n }
    } else if let Some((n, ms)) = path.rsplit_once("/drip/").and_then(|(_, rest)| {
        let (n, ms) = rest.split_once('/')?;
        Some((n.parse::<u64>().ok()?, ms.parse::<u64>().ok()?))
    }) {
        builder = builder.header("content-length", n.to_string());
        let every = std::time::Duration::from_millis(ms);
        FixtureBody::Drip {
            remaining: n,
            every,
            next: Box::pin(tokio::time::sleep(every)),
        }
    } else if path.ends_with("/upload") {
        let mut body = req.into_body();
        let mut n: u64 = 0;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                Err(_) => break,
            }
        }
        FixtureBody::full(format!("{{\"body_len\":{n}}}"))
    } else if path.ends_with("/hop-by-hop") {
        builder = builder
            .header("connection", "x-hop")
            .header("x-hop", "1")
            .header("keep-alive", "timeout=5")
            .header("x-kept", "1");
        FixtureBody::full("hop")
    } else {
        let method = req.method().to_string();
        let target = req.uri().to_string();
        let version = format!("{:?}", req.version());
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
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let echo = serde_json::json!({
            "method": method,
            "target": target,
            "path": path,
            "query": query,
            "version": version,
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
        });
        builder = builder.header("content-type", "application/json");
        FixtureBody::full(echo.to_string())
    };
    Ok(builder.body(body).unwrap())
}

pub enum FixtureBody {
    Full(Option<Bytes>),
    Repeat {
        remaining: u64,
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
    /// 100 bytes, a pause so they leave the server, then an error.
    Broken {
        sent: bool,
        pause: Pin<Box<tokio::time::Sleep>>,
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
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match &mut *self {
            FixtureBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            FixtureBody::Repeat { remaining } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                let n = (*remaining).min(CHUNK as u64) as usize;
                *remaining -= n as u64;
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
            FixtureBody::Stalled { sent } => {
                if *sent {
                    Poll::Pending
                } else {
                    *sent = true;
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"abc")))))
                }
            }
            FixtureBody::Broken { sent, pause } => {
                if *sent {
                    std::task::ready!(pause.as_mut().poll(cx));
                    Poll::Ready(Some(Err(std::io::Error::other("fixture breaks the body"))))
                } else {
                    *sent = true;
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&ZEROS[..100])))))
                }
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            FixtureBody::Repeat { remaining } => SizeHint::with_exact(*remaining),
            _ => SizeHint::default(),
        }
    }
}
