//! The request's life, in phases: route, admit, rewrite the request, forward, observe the
//! response head, stream the body back, record the outcome exactly once.
//!
//! Recording is tied to a [`Pending`] guard created when the request is routed and dropped
//! when the response body ends, fails or is abandoned, so every request is counted once
//! whatever happens to either side.
//!
//! The modules, in the order a request meets them: [`listener`] (each connection's bytes:
//! the framing guard, the header-read deadline, the connection limit), [`route`] (request
//! parts to a source, or why none), this module's phases, `headers` (what is rewritten on
//! the way), [`upstream`] (pools, TLS, timeouts; `failure` inside), `request_body` (the connector's body on its way up),
//! `response_body` (the answer streamed back), and `respond` (every answer remedy makes itself).
//! Beside them: [`deadline`] and [`redact`], which the phases use; `intercept`, for
//! `CONNECT`; [`drain`] and [`trim`], for the process's life.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use hyper::body::Incoming;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

pub mod deadline;
pub mod drain;
mod headers;
mod intercept;
pub mod listener;
pub mod redact;
mod request_body;
mod respond;
mod response_body;
pub mod route;
pub mod trim;
pub mod upstream;

pub use headers::client_ip;
pub use intercept::Tunnels;
pub use respond::{count_parser_refusal, parser_refusal};
pub use response_body::{IdleTimeout, ResponseBody};

use crate::config::{self, SourceConfig};
use crate::intercept_ca::Authority;
use crate::metrics::{Connects, ErrorKind, Origin, Outcome, Recorder, SourceMetrics};
use crate::proxy::listener::{Answering, InService};
use crate::proxy::redact::Redactor;
use crate::proxy::route::{NoRoute, Router};
use headers::{rewrite_request, strip_hop_by_hop};
use respond::{bad_request, broken_before_body, refuse, unreachable};
use upstream::{SendError, UpstreamBody, UpstreamClient};

/// Everything a request needs from the live config; swapped whole on reload.
pub struct Routes {
    router: Router,
    redact: Redactor,
    targets: Vec<Target>,
    unmatched: Arc<SourceMetrics>,
    /// Present while `proxy.intercept` is on.
    intercept: Option<Intercepting>,
    connects: Connects,
}

/// `proxy.intercept` as the live config has it.
struct Intercepting {
    authority: Arc<Authority>,
    /// `proxy.intercept.tunnel`, as host and port.
    tunnels: Vec<(String, u16)>,
}

/// How a request reached the proxy.
pub enum Via {
    /// The proxy listener.
    Listener,
    /// The proxy listener, as a `CONNECT`: what opens a tunnel.
    Connect(Arc<Tunnels>),
    /// Inside a `CONNECT` tunnel to this host.
    Tunnel(Arc<str>),
}

/// One source, ready to forward to.
pub struct Target {
    upstream_url: config::UpstreamUrl,
    preserve_host: bool,
    idle: Duration,
    client: UpstreamClient,
    metrics: Arc<SourceMetrics>,
    limit: Option<Arc<Semaphore>>,
    /// How the API states a reset, when its vendor is known.
    reset_style: crate::observe::ratelimit::ResetStyle,
    /// The IETF rate-limit policy the API last announced.
    policies: crate::observe::ratelimit::Policies,
}

impl Routes {
    /// Builds clients and metric handles for every source of `config`; `authority` signs
    /// for the tunnels while `proxy.intercept` is on.
    pub fn new(
        config: &config::Config,
        recorder: &Recorder,
        authority: Option<Arc<Authority>>,
    ) -> Result<Self, (usize, upstream::BuildError)> {
        let targets = config
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| Target::new(s, recorder, &config.catalog).map_err(|e| (i, e)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Routes {
            router: Router::new(&config.sources),
            redact: Redactor::new(&config.proxy.log_query_params),
            targets,
            unmatched: Arc::new(recorder.unmatched(&config.catalog)),
            intercept: authority.map(|authority| Intercepting {
                authority,
                tunnels: config
                    .proxy
                    .intercept
                    .tunnel
                    .iter()
                    .filter_map(|t| config::tunnel_target(t).ok())
                    .collect(),
            }),
            connects: recorder.connects(),
        })
    }
}

impl Target {
    fn new(
        s: &SourceConfig,
        recorder: &Recorder,
        catalog: &crate::catalog::Catalog,
    ) -> Result<Self, upstream::BuildError> {
        Ok(Target {
            upstream_url: s.upstream.clone(),
            preserve_host: s.preserve_host,
            idle: s.timeouts.idle.0,
            client: UpstreamClient::new(s)?,
            metrics: Arc::new(recorder.source(s.name.as_str(), catalog)),
            limit: s.max_in_flight.map(|n| Arc::new(Semaphore::new(n.get()))),
            reset_style: crate::observe::ratelimit::ResetStyle::for_host(
                s.upstream.authority.host(),
            ),
            policies: crate::observe::ratelimit::Policies::default(),
        })
    }

    fn upstream_path(&self, path: &str, query: Option<&str>) -> Option<PathAndQuery> {
        let base = &self.upstream_url.base_path;
        // Exactly the length: `Bytes` takes over a full `Vec` as is, and allocates a shared
        // header for one with spare capacity.
        let len = base.len() + path.len() + query.map_or(0, |q| q.len() + 1);
        let mut pq = String::with_capacity(len);
        pq.push_str(base);
        pq.push_str(path);
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        PathAndQuery::try_from(pq).ok()
    }
}

/// Counts one request when dropped: at the end of the response body, on a failure, or when
/// the connector goes away first (then as 499, nginx's "client closed request").
pub struct Pending {
    metrics: Arc<SourceMetrics>,
    start: Instant,
    status: u16,
    origin: Origin,
    error: Option<ErrorKind>,
    _permit: Option<OwnedSemaphorePermit>,
}

/// The status counted when the connector disconnects before the response head.
pub const CLIENT_CLOSED: u16 = 499;

impl Pending {
    fn new(metrics: Arc<SourceMetrics>, start: Instant) -> Self {
        metrics.start();
        Pending {
            metrics,
            start,
            status: CLIENT_CLOSED,
            origin: Origin::Proxy,
            error: None,
            _permit: None,
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.metrics.record(&Outcome {
            status: self.status,
            origin: self.origin,
            elapsed: self.start.elapsed(),
            error: self.error,
        });
    }
}

/// Serves one request from the connector. Never fails: every problem is an HTTP answer.
/// `request` keeps it counted as in service on its connection until the response has gone.
///
/// The request's life, phase by phase: [`route`], [`admit`], [`rewrite_request`],
/// [`forward`], [`observe_head`], [`stream_back`]. From admission on, a [`Pending`] guard
/// records the request exactly once, whichever phase ends it.
pub async fn handle(
    routes: Arc<Routes>,
    client_ip: HeaderValue,
    (ambiguous_framing, request): (bool, InService),
    mut req: Request<Incoming>,
    via: Via,
) -> Result<Response<Answering<ResponseBody>>, Infallible> {
    let start = Instant::now();
    let tunnel = match via {
        Via::Connect(tunnels) if !ambiguous_framing => {
            // Boxed: the rare `CONNECT` adds a pointer, not its state, to every request.
            let resp = Box::pin(tunnels.connect(&routes, &request, req, client_ip, start)).await;
            return Ok(resp.map(|b| Answering::new(b, request)));
        }
        Via::Tunnel(host) => Some(host),
        Via::Listener | Via::Connect(_) => None,
    };
    // A labeled block rather than an async one with `?`: the phases run in this function's
    // own state machine, and the request is not moved into a nested one.
    let resp = 'life: {
        /// A phase's result, or the answer that ends the request's life here.
        macro_rules! or_answer {
            ($phase:expr) => {
                match $phase {
                    Ok(value) => value,
                    Err(answered) => break 'life *answered,
                }
            };
        }
        let (target, path) = or_answer!(route(
            &routes,
            ambiguous_framing,
            &req,
            tunnel.as_deref(),
            start
        ));
        let mut pending = or_answer!(admit(target, start));
        let seen = Seen::of(&routes, &req);
        rewrite_request(&mut req, &client_ip, target.preserve_host, tunnel.is_some());
        let sent = target.client.send(path, req, start).await;
        let resp = or_answer!(forward(&routes, target, &mut pending, &seen, sent));
        observe_head(target, &mut pending, &seen, &resp, start);
        or_answer!(stream_back(&routes, target, pending, &seen, resp).await)
    };
    Ok(resp.map(|b| Answering::new(b, request)))
}

/// An answer remedy made itself, ending the request's phases early. Boxed, so that the
/// phases' results stay small on the path that forwards.
type Answered = Box<Response<ResponseBody>>;

/// What the phases after the rewrite still need of the connector's request.
struct Seen {
    method: http::Method,
    /// For the warn line of a failure (a reference-counted clone, not a copy).
    uri: http::Uri,
    /// The redacted path and query, made only when debug lines are logged.
    logged_path: Option<String>,
}

impl Seen {
    fn of<B>(routes: &Routes, req: &Request<B>) -> Self {
        let mut seen = Seen {
            method: req.method().clone(),
            uri: req.uri().clone(),
            logged_path: None,
        };
        if tracing::enabled!(tracing::Level::DEBUG) {
            seen.logged_path = Some(seen.path(routes));
        }
        seen
    }

    /// The request's path and query with credentials redacted, as every log line gives it.
    fn path(&self, routes: &Routes) -> String {
        routes
            .redact
            .path_and_query(self.uri.path(), self.uri.query())
            .into_owned()
    }
}

/// Phase 1: the source the request belongs to and the path it has there, or the refusal
/// (counted under `source="unmatched"`).
fn route<'r>(
    routes: &'r Routes,
    ambiguous_framing: bool,
    req: &Request<Incoming>,
    tunnel: Option<&str>,
    start: Instant,
) -> Result<(&'r Target, PathAndQuery), Answered> {
    let refuse = |no| Err(Box::new(refuse(&routes.unmatched, start, no)));
    if let Some(no) = unfollowable(ambiguous_framing, req) {
        return refuse(no);
    }
    let routed = crate::proxy::route::host_header(req.version(), req.headers()).and_then(|h| {
        let host = h.and_then(|h| h.to_str().ok());
        match tunnel {
            Some(t) => routes
                .router
                .route_in_tunnel(t, req.method(), req.uri(), host),
            None => routes.router.route(req.method(), req.uri(), host),
        }
    });
    match routed {
        Ok(r) => {
            let target = &routes.targets[r.source];
            match target.upstream_path(r.path, r.query) {
                Some(path) => Ok((target, path)),
                None => refuse(NoRoute::UnsafePath("it does not form a valid upstream URI")),
            }
        }
        Err(no) => {
            log_refusal(routes, req, no);
            refuse(no)
        }
    }
}

/// A request whose framing the guard could not follow, or whose body coding remedy cannot
/// forward faithfully.
fn unfollowable(ambiguous_framing: bool, req: &Request<Incoming>) -> Option<NoRoute> {
    if ambiguous_framing {
        tracing::debug!(method = %req.method(), "request not forwarded: ambiguous framing");
        return Some(NoRoute::AmbiguousFraming);
    }
    (!crate::proxy::route::only_chunked(req.headers())).then_some(NoRoute::UnsupportedCoding)
}

fn log_refusal(routes: &Routes, req: &Request<Incoming>, no: NoRoute) {
    if tracing::enabled!(tracing::Level::DEBUG) {
        let host = req.headers().get(header::HOST);
        tracing::debug!(
            method = %req.method(),
            path = %routes.redact.path_and_query(req.uri().path(), req.uri().query()),
            host = host.and_then(|h| h.to_str().ok()).unwrap_or(""),
            reason = no.short(),
            "request not forwarded"
        );
    }
}

/// Phase 2: admission under the source's in-flight cap; from here the request is counted
/// once by the guard returned, or answered 503 when the cap is reached.
fn admit(target: &Target, start: Instant) -> Result<Pending, Answered> {
    let mut pending = Pending::new(target.metrics.clone(), start);
    if let Some(limit) = &target.limit {
        match limit.clone().try_acquire_owned() {
            Ok(permit) => pending._permit = Some(permit),
            Err(_) => return Err(Box::new(respond::in_flight_cap(&mut pending, target))),
        }
    }
    Ok(pending)
}

/// Phase 4: what sending the request upstream gave (the driver awaits the send itself, so
/// the request is not moved once more): the response head, or for a request the connector
/// could not send whole a 400, for an upstream that cannot be reached a 502 or 504.
fn forward(
    routes: &Routes,
    target: &Target,
    pending: &mut Pending,
    seen: &Seen,
    sent: Result<Response<UpstreamBody>, SendError>,
) -> Result<Response<UpstreamBody>, Answered> {
    match sent {
        Ok(sent) => Ok(sent),
        Err(SendError::Connector(bad)) => {
            Err(Box::new(bad_request(routes, target, pending, seen, bad)))
        }
        Err(SendError::Upstream(failure)) => Err(Box::new(unreachable(
            routes, target, pending, seen, &failure,
        ))),
    }
}

/// Phase 5: the response head as the connector will get it: its status is what the guard
/// counts, its rate-limit headers go to the source's gauges.
fn observe_head(
    target: &Target,
    pending: &mut Pending,
    seen: &Seen,
    resp: &Response<UpstreamBody>,
    start: Instant,
) {
    pending.status = resp.status().as_u16();
    pending.origin = Origin::Upstream;
    observe_headers(target, resp.status(), resp.headers());
    if let Some(path) = &seen.logged_path {
        tracing::debug!(
            source = target.metrics.name(),
            method = %seen.method,
            path = path.as_str(),
            status = pending.status,
            origin = "upstream",
            head_ms = start.elapsed().as_secs_f64() * 1e3,
            "proxied"
        );
    }
}

/// Phase 6: the response, its body streamed back as it comes; the guard records the outcome
/// when the body ends, fails or is dropped.
async fn stream_back(
    routes: &Routes,
    target: &Target,
    mut pending: Pending,
    seen: &Seen,
    resp: Response<UpstreamBody>,
) -> Result<Response<ResponseBody>, Answered> {
    let (mut parts, mut body) = resp.into_parts();
    if strip_hop_by_hop(&mut parts.headers) {
        // hyper read the body by its chunks; a `Content-Length` beside them (RFC 9112 §6.3
        // says to ignore it) would frame the re-sent body wrongly.
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    let held = match peek(&mut body).await {
        // The upstream broke before the body began: nothing of this answer has reached the
        // connector, so remedy answers for it, as for a connection that failed before its head.
        Poll::Ready(Some(Err(e))) => {
            let answer = broken_before_body(routes, target, &mut pending, seen, &e);
            return Err(Box::new(answer));
        }
        Poll::Ready(Some(Ok(frame))) => Some(frame),
        Poll::Ready(None) | Poll::Pending => None,
    };
    let body = ResponseBody::streaming(body, held, target.idle, pending);
    Ok(Response::from_parts(parts, body))
}

/// Polls the upstream body once, without waiting: a break already known when the head
/// arrived shows here, before the head is handed on.
async fn peek(body: &mut UpstreamBody) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
    if body.is_end_stream() {
        return Poll::Ready(None);
    }
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await
}

/// Reads the quota and `Retry-After` a response states into the source's gauges.
fn observe_headers(target: &Target, status: StatusCode, headers: &HeaderMap) {
    let seen = crate::observe::ratelimit::read(
        headers,
        status.as_u16(),
        SystemTime::now,
        target.reset_style,
        &target.policies,
        target.metrics.name(),
    );
    if let Some(secs) = seen.retry_after {
        target.metrics.retry_after(secs);
    }
    if let Some(w) = &seen.window {
        target.metrics.quota(w);
    }
}
