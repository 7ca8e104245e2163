//! The admin listener. Routes:
//!
//! | path | answer |
//! |---|---|
//! | `GET /metrics` | Prometheus text exposition of every remedy and `process_*` metric |
//! | `GET /rules` | the Prometheus rules file for the live catalog and config |
//! | `GET /catalog` | the live FAQ catalog as JSON |
//! | `GET /dashboard` | the Grafana dashboard JSON |
//! | `GET /-/healthy` | 200 while the process runs |
//! | `GET /-/ready` | 200 once both listeners are bound and the config is loaded; 503 while draining |
//! | `POST /-/reload` | reloads the config file; 200, or 500 with the reason; 403 unless `admin.enable_reload` or basic auth, or from another `Origin` |
//!
//! It runs on its own thread, so a scrape never competes with proxied requests for a worker.
//! With `--web.config.file` it serves TLS and requires basic auth on every route, as
//! Prometheus exporters do.

pub mod webconfig;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::admin::webconfig::WebConfig;
use crate::proxy::accept::accept;
use crate::proxy::listener::h2::Http1Only;
use crate::sidecar::Sidecar;

/// Puts the calling thread (and the threads it starts) in the idle scheduling class. On a CPU it
/// shares with a proxy worker, the admin thread then runs only while the worker has nothing to
/// do, and a worker that wakes takes the CPU back at once: a scrape never delays a proxied
/// request, even in a pod with a single CPU. It is not starved: under full load the kernel
/// still gives it a small share, enough for scrapes and probes.
#[cfg(target_os = "linux")]
fn yield_to_the_proxy() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: a system call on the calling thread with a valid parameter; no memory is shared.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "the admin thread keeps the normal scheduling class"
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn yield_to_the_proxy() {}

/// Serves the admin listener until the process exits, with TLS and basic auth when a
/// `--web.config.file` asks for them.
pub fn serve_blocking(
    sidecar: Arc<Sidecar>,
    listener: std::net::TcpListener,
    web: Option<Arc<WebConfig>>,
) {
    yield_to_the_proxy();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the admin runtime");
            return;
        }
    };
    runtime.block_on(async move {
        match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => serve(sidecar, listener, web).await,
            Err(e) => tracing::error!(error = %e, "cannot serve the admin listener"),
        }
    });
}

/// The accept loop: each connection on a task of its own.
async fn serve(
    sidecar: Arc<Sidecar>,
    listener: tokio::net::TcpListener,
    web: Option<Arc<WebConfig>>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(10));
    let tls = web
        .as_ref()
        .and_then(|w| w.tls.clone())
        .map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (stream, _) = accept(&listener, "admin").await;
        let connection = connection(
            sidecar.clone(),
            web.clone(),
            http.clone(),
            tls.clone(),
            stream,
        );
        tokio::spawn(connection);
    }
}

/// Serves one connection. One that carried a scrape rendered after the drain, written out in
/// full (the connection closes after it), tells the sidecar its final counts have gone.
async fn connection(
    sidecar: Arc<Sidecar>,
    web: Option<Arc<WebConfig>>,
    http: http1::Builder,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stream: tokio::net::TcpStream,
) {
    let final_scrape = Arc::new(AtomicBool::new(false));
    let service = {
        let (sidecar, final_scrape) = (sidecar.clone(), final_scrape.clone());
        service_fn(move |req: Request<Incoming>| {
            let (sidecar, web, final_scrape) = (sidecar.clone(), web.clone(), final_scrape.clone());
            async move {
                Ok::<_, Infallible>(answer(&sidecar, web.as_deref(), &final_scrape, req).await)
            }
        })
    };
    let served = match tls {
        Some(acceptor) => match acceptor.accept(stream).await {
            Ok(s) => {
                let io = TokioIo::new(Http1Only::new(s));
                http.serve_connection(io, service).await
            }
            Err(e) => {
                tracing::debug!(error = %e, "admin TLS handshake failed");
                return;
            }
        },
        None => {
            let io = TokioIo::new(Http1Only::new(stream));
            http.serve_connection(io, service).await
        }
    };
    match served {
        Ok(()) if final_scrape.load(Ordering::Acquire) => sidecar.final_scrape_served(),
        Err(e) if e.is_parse_version_h2() => tracing::warn!(
            "an HTTP/2 client on the admin listener was refused with HTTP_1_1_REQUIRED: it \
             speaks HTTP/1.1 (Prometheus scrapes it so)"
        ),
        _ => {}
    }
}

/// One admin request, past the web config's basic auth; a scrape rendered after the drain
/// closes its connection and marks `final_scrape`.
async fn answer(
    sidecar: &Arc<Sidecar>,
    web: Option<&WebConfig>,
    final_scrape: &AtomicBool,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if let Some(w) = web
        && !w.authorized(auth)
    {
        let mut r = reply(
            StatusCode::UNAUTHORIZED,
            "text/plain; charset=utf-8",
            "Unauthorized\n",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"remedy\""),
        );
        return r;
    }
    let is_final =
        req.method() == Method::GET && req.uri().path() == "/metrics" && sidecar.is_drained();
    let authenticated = web.is_some_and(|w| w.has_users());
    let mut resp = respond(sidecar, &req, authenticated).await;
    if is_final {
        // Closing the connection after this response tells us, when `serve_connection`
        // returns, that every byte was written out.
        resp.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        final_scrape.store(true, Ordering::Release);
    }
    resp
}

/// Whether `POST /-/reload` is served: when `admin.enable_reload` is on, or to a client that
/// passed the web config's basic auth (as Prometheus guards its lifecycle API).
fn reload_allowed(sidecar: &Sidecar, authenticated: bool) -> bool {
    sidecar.config().admin.enable_reload || authenticated
}

/// A request without `Origin` (curl, a probe, kubectl) or whose `Origin` names the admin
/// listener it came to; a page elsewhere in a browser sends its own origin and is refused.
fn same_origin(req: &Request<Incoming>) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return true;
    };
    let host = req.headers().get(header::HOST).map(|h| h.as_bytes());
    let authority = origin.to_str().ok().and_then(|o| {
        o.strip_prefix("http://")
            .or_else(|| o.strip_prefix("https://"))
    });
    matches!((authority, host), (Some(a), Some(h)) if a.as_bytes().eq_ignore_ascii_case(h))
}

/// Serves one admin request; `authenticated` when it passed the web config's basic auth.
async fn respond(
    sidecar: &Arc<Sidecar>,
    req: &Request<Incoming>,
    authenticated: bool,
) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    const JSON: &str = "application/json";
    const YAML: &str = "application/yaml";
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            sidecar.recorder().render(),
        ),
        (&Method::GET, "/rules") => {
            let config = sidecar.config();
            reply(
                StatusCode::OK,
                YAML,
                crate::artifacts::rules::render(&config),
            )
        }
        (&Method::GET, "/catalog") => {
            let config = sidecar.config();
            let entries: Vec<_> = config.catalog.entries().collect();
            let body = serde_json::to_vec_pretty(&entries).unwrap_or_default();
            reply(StatusCode::OK, JSON, body)
        }
        (&Method::GET, "/dashboard") => {
            let config = sidecar.config();
            reply(
                StatusCode::OK,
                JSON,
                crate::artifacts::dashboard::render(&config.catalog),
            )
        }
        (&Method::GET, "/-/healthy") => reply(StatusCode::OK, TEXT, "remedy is healthy.\n"),
        (&Method::GET, "/-/ready") if sidecar.is_ready() => {
            reply(StatusCode::OK, TEXT, "remedy is ready.\n")
        }
        (&Method::GET, "/-/ready") => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            "remedy is not ready.\n",
        ),
        (&Method::POST, "/-/reload") if !reload_allowed(sidecar, authenticated) => reply(
            StatusCode::FORBIDDEN,
            TEXT,
            "the reload endpoint is off: set admin.enable_reload: true, or basic auth in the \
             web config (SIGHUP reloads too)\n",
        ),
        (&Method::POST, "/-/reload") if !same_origin(req) => {
            reply(StatusCode::FORBIDDEN, TEXT, "cross-origin reload refused\n")
        }
        (&Method::POST, "/-/reload") => {
            let s = sidecar.clone();
            match tokio::task::spawn_blocking(move || s.reload()).await {
                Ok(Ok(())) => reply(StatusCode::OK, TEXT, "config reloaded.\n"),
                Ok(Err(e)) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    TEXT,
                    format!("reload failed, running config kept: {e}\n"),
                ),
                Err(_) => reply(StatusCode::INTERNAL_SERVER_ERROR, TEXT, "reload panicked\n"),
            }
        }
        (_, "/-/reload") => reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "use POST /-/reload\n"),
        (&Method::GET, "/") => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            "<html><head><title>remedy</title></head><body><h1>remedy</h1><ul>\
             <li><a href=\"/metrics\">/metrics</a></li><li><a href=\"/rules\">/rules</a></li>\
             <li><a href=\"/catalog\">/catalog</a></li><li><a href=\"/dashboard\">/dashboard</a></li>\
             <li><a href=\"/-/healthy\">/-/healthy</a></li><li><a href=\"/-/ready\">/-/ready</a></li>\
             </ul></body></html>\n",
        ),
        _ => reply(StatusCode::NOT_FOUND, TEXT, "not found\n"),
    }
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}
