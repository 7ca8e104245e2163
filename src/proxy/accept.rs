//! The proxy listener's accept loop, the top of the proxy: each connection takes a
//! `proxy.max_connections` slot, its bytes go through [`Guarded`], hyper serves HTTP/1.1 on it,
//! and each request goes to the request's phases ([`crate::proxy::handle`]), a `CONNECT` to the
//! [`Tunnels`]. At shutdown the loop stops accepting and in-flight requests get
//! `shutdown.drain_timeout`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::config::ProxyConfig;
use crate::proxy::drain::Drain;
use crate::proxy::intercept::Tunnels;
use crate::proxy::listener::{Answering, Guarded, Limits, Requests, Served, Slots};
use crate::proxy::trim::{self, Burst};
use crate::proxy::{self, Routes, Via};

/// The next connection. An accept error (out of file descriptors and the like) is logged and
/// backed off, never fatal; the admin listener accepts the same way.
pub async fn accept(listener: &TcpListener, which: &'static str) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                tracing::warn!(listener = which, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// What every connection of the listener is served with.
struct Shared {
    routes: Arc<ArcSwap<Routes>>,
    http: http1::Builder,
    limits: Limits,
    slots: Arc<Slots>,
    tunnels: Arc<Tunnels>,
    graceful: Drain,
    burst: Arc<Burst>,
}

/// Serves `listener` with the live `routes` until `stop` turns true, then drains for at most
/// `drain`.
pub async fn serve(
    routes: Arc<ArcSwap<Routes>>,
    proxy: &ProxyConfig,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) {
    // Fewer slots than max_connections when the descriptor limit cannot hold them all, so
    // that the admin listener and the rest keep theirs.
    let max = match crate::descriptors::Limit::current() {
        Ok(limit) => crate::descriptors::slots(proxy.max_connections, limit.soft),
        Err(_) => proxy.max_connections,
    };
    let connections = Arc::new(Semaphore::new(max));
    let http = http_settings(proxy);
    let limits = Limits {
        header_read: proxy.header_read_timeout.0,
        send: proxy.send_timeout.0,
        max_headers: proxy.max_headers,
        http2_idle: proxy.http2.idle_timeout.0,
    };
    let slots = Slots::new(connections.clone(), max);
    let tunnels = Tunnels::new(
        routes.clone(),
        http.clone(),
        http2_settings(proxy),
        limits,
        slots.clone(),
    );
    let shared = Shared {
        routes,
        http,
        limits,
        slots,
        tunnels,
        graceful: Drain::default(),
        burst: Arc::new(Burst::default()),
    };
    let trimmer = tokio::spawn(trim_after_bursts(shared.burst.clone()));
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = accept(&listener, "proxy") => accepted,
            _ = stop.changed() => break,
        };
        shared.serve_connection(stream, peer, permit);
    }
    drop(listener);
    trimmer.abort();
    let drained = async {
        shared.graceful.shutdown().await;
        shared.tunnels.shutdown().await;
    };
    if tokio::time::timeout(drain, drained).await.is_err() {
        tracing::warn!(?drain, "drain timeout passed with requests still in flight");
    }
}

/// hyper's HTTP/1.1 server as `proxy` sets it.
fn http_settings(p: &ProxyConfig) -> http1::Builder {
    let mut http = http1::Builder::new();
    // The header read timeout is kept by `Guarded`, which arms one timer per connection
    // rather than one per request. `max_header_size` is exact however the head arrives
    // (`max_buf_size` alone let a head that came in one read run past it). Flat writes: one
    // buffer per `write` costs less than a vectored write's queue for the small heads and
    // bodies of API calls.
    http.header_read_timeout(None)
        .max_header_size(p.max_header_bytes)
        .max_buf_size(p.max_header_bytes)
        .writev(false)
        .keep_alive(true);
    // hyper keeps up to 100 header slots on the stack; any other count puts them on the heap
    // for every request.
    if p.max_headers != 100 {
        http.max_headers(p.max_headers);
    }
    http
}

/// The largest HTTP/2 frame a connector may send: a header block may span five frames before
/// h2 takes it for a CONTINUATION flood and closes the whole connection (every call on it), so
/// frames of 16 KiB, HTTP/2's default, closed a channel for one call's 200 KiB of metadata. At
/// 64 KiB a block up to 320 KiB is read, and one over `proxy.max_header_bytes` is refused for
/// its stream alone (431 and `REFUSED_STREAM`).
const HTTP2_MAX_FRAME: u32 = 64 * 1024;

/// hyper's HTTP/2 server, for the tunnels whose connector negotiates it, as `proxy` sets it:
/// bounded streams, windows and header list (`proxy.max_header_bytes`, as for HTTP/1.1), a
/// send buffer of 64 KiB a stream, and the h2 crate's guards against rapid resets kept.
fn http2_settings(p: &ProxyConfig) -> http2::Builder<TokioExecutor> {
    let h2 = &p.http2;
    let mut http = http2::Builder::new(TokioExecutor::new());
    http.timer(TokioTimer::new())
        .max_concurrent_streams(h2.max_concurrent_streams)
        .initial_stream_window_size(h2.initial_stream_window_size)
        .initial_connection_window_size(h2.initial_connection_window_size)
        .max_header_list_size(u32::try_from(p.max_header_bytes).unwrap_or(u32::MAX))
        .max_frame_size(HTTP2_MAX_FRAME)
        .max_send_buf_size(64 * 1024)
        .max_local_error_reset_streams(256);
    http
}

/// Gives memory back to the system once a burst of connections has ended.
async fn trim_after_bursts(burst: Arc<Burst>) {
    loop {
        tokio::time::sleep(trim::CHECK_EVERY).await;
        if burst.trim() {
            tracing::debug!("a burst of connections ended; freed memory given back");
        }
    }
}

impl Shared {
    /// Serves one accepted connection on a task of its own, holding `permit` (its slot) for as
    /// long as its bytes are read.
    fn serve_connection(&self, stream: TcpStream, peer: SocketAddr, permit: OwnedSemaphorePermit) {
        let _ = stream.set_nodelay(true);
        let client_ip = proxy::client_ip(peer);
        let requests = Arc::new(Requests::holding(permit, self.burst.open()));
        let io = Guarded::new(stream, requests.clone(), self.limits, self.slots.clone());
        let (routes, tunnels) = (self.routes.clone(), self.tunnels.clone());
        let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let routes = routes.load_full();
            let (refuse, request) = requests.serve();
            let client_ip = client_ip.clone();
            if req.method() == hyper::Method::CONNECT && !refuse {
                let tunnels = tunnels.clone();
                Served::Boxed {
                    answer: Box::pin(async move {
                        let resp = tunnels.connect(routes, &request, req, client_ip).await;
                        resp.map(|b| Answering::new(b, request))
                    }),
                }
            } else {
                let phases = proxy::handle(routes, client_ip, refuse, req, Via::Listener);
                Served::phases(phases, request)
            }
        });
        let conn = self
            .http
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        let conn = self
            .graceful
            .watcher()
            .watch(conn, std::future::pending(), |c| c.graceful_shutdown());
        let routes = self.routes.clone();
        tokio::spawn(async move {
            if let Some(Err(e)) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
                proxy::count_parser_refusal(&routes.load(), &e);
            }
        });
    }
}
