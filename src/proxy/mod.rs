//! The request's life, in phases: route, admit, rewrite the request, forward, observe the
//! response head, stream the body back, record the outcome exactly once.
//!
//! Recording is tied to a [`Pending`] guard created when the request is routed and dropped
//! when the response body ends, fails or is abandoned, so every request is counted once
//! whatever happens to either side.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

pub mod deadline;
pub mod drain;
mod intercept;
pub mod listener;
pub mod memory;
pub mod redact;
pub mod route;
pub mod upstream;

pub use intercept::Tunnels;

use crate::ca::Authority;
use crate::config::{self, SourceConfig};
use crate::metrics::{Connects, ErrorKind, Origin, Outcome, Recorder, SourceMetrics};
use crate::proxy::deadline::LazyDeadline;
use crate::proxy::listener::{Answering, InService};
use crate::proxy::upstream::connector_body::BadRequest;

use crate::proxy::redact::Redactor;
use crate::proxy::route::{NoRoute, Router};
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
    reset_style: crate::ratelimit::ResetStyle,
    /// The IETF rate-limit policy the API last announced.
    policies: crate::ratelimit::Policies,
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
            reset_style: crate::ratelimit::ResetStyle::for_host(s.upstream.authority.host()),
            policies: crate::ratelimit::Policies::default(),
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
    let resp = async {
        let (target, path) = route(&routes, ambiguous_framing, &req, tunnel.as_deref(), start)?;
        let mut pending = admit(target, start)?;
        let seen = Seen::of(&routes, &req);
        rewrite_request(&mut req, &client_ip, target.preserve_host, tunnel.is_some());
        let resp = forward(&routes, target, &mut pending, &seen, path, req, start).await?;
        observe_head(target, &mut pending, &seen, &resp, start);
        stream_back(&routes, target, pending, &seen, resp).await
    };
    let resp = resp.await.unwrap_or_else(|answered| *answered);
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
        let uri = req.uri().clone();
        let logged_path = tracing::enabled!(tracing::Level::DEBUG).then(|| {
            routes
                .redact
                .path_and_query(uri.path(), uri.query())
                .into_owned()
        });
        Seen {
            method: req.method().clone(),
            uri,
            logged_path,
        }
    }

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
            Err(_) => {
                pending.status = 503;
                tracing::warn!(
                    source = target.metrics.name(),
                    "in-flight cap reached: answering 503"
                );
                return Err(Box::new(text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "remedy: this source's max_in_flight is reached; retry later\n",
                )));
            }
        }
    }
    Ok(pending)
}

/// Phase 4: sends the request and waits for the response head; a request the connector
/// could not send whole is a 400, an upstream that cannot be reached a 502 or 504.
async fn forward(
    routes: &Routes,
    target: &Target,
    pending: &mut Pending,
    seen: &Seen,
    path: PathAndQuery,
    req: Request<Incoming>,
    start: Instant,
) -> Result<Response<UpstreamBody>, Answered> {
    match target.client.send(path, req, start).await {
        Ok(sent) => Ok(sent),
        Err(SendError::Connector(bad)) => {
            let path = seen.path(routes);
            Err(Box::new(bad_request(
                pending,
                target,
                &seen.method,
                &path,
                bad,
            )))
        }
        Err(SendError::Upstream(failure)) => Err(Box::new(unreachable(
            routes, target, pending, seen, &failure,
        ))),
    }
}

fn unreachable(
    routes: &Routes,
    target: &Target,
    pending: &mut Pending,
    seen: &Seen,
    failure: &upstream::Failure,
) -> Response<ResponseBody> {
    let status = if failure.kind == ErrorKind::Timeout {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::BAD_GATEWAY
    };
    tracing::warn!(
        source = target.metrics.name(),
        method = %seen.method,
        path = %seen.path(routes),
        status = status.as_u16(),
        kind = failure.kind.as_str(),
        cause = %failure.cause,
        "upstream unreachable"
    );
    pending.status = status.as_u16();
    pending.error = Some(failure.kind);
    let body = format!(
        "remedy: upstream {} unreachable ({}): {}\n",
        target.upstream_url,
        failure.kind.as_str(),
        failure.cause
    );
    text(status, body)
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
            let answer = broken_before_body(&mut pending, target, seen, &routes.redact, &e);
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

/// The upstream sent a head and broke before any of its body: a 502 with `kind="reset"`,
/// which is what the connector receives.
fn broken_before_body(
    pending: &mut Pending,
    target: &Target,
    seen: &Seen,
    redact: &Redactor,
    e: &hyper::Error,
) -> Response<ResponseBody> {
    let cause = upstream::causes(e);
    tracing::warn!(
        source = target.metrics.name(),
        method = %seen.method,
        path = %redact.path_and_query(seen.uri.path(), seen.uri.query()),
        upstream_status = pending.status,
        status = 502,
        kind = ErrorKind::Reset.as_str(),
        %cause,
        "upstream broke its response before the body"
    );
    pending.status = StatusCode::BAD_GATEWAY.as_u16();
    pending.origin = Origin::Proxy;
    pending.error = Some(ErrorKind::Reset);
    text(
        StatusCode::BAD_GATEWAY,
        format!(
            "remedy: upstream {} broke its response before the body (reset): {cause}\n",
            target.upstream_url
        ),
    )
}

/// The connector's request could not be forwarded whole: its fault, not the upstream's. A
/// 400 (or 499 when the connector has gone) with `origin="proxy"` and no error kind; the
/// connection is closed after it, since the rest of the body cannot be found in its bytes.
fn bad_request(
    pending: &mut Pending,
    target: &Target,
    method: &http::Method,
    path: &str,
    bad: BadRequest,
) -> Response<ResponseBody> {
    tracing::debug!(
        source = target.metrics.name(),
        %method,
        path,
        reason = bad.short(),
        cause = %bad,
        "bad request: not forwarded whole"
    );
    pending.status = if bad.connector_gone() {
        CLIENT_CLOSED
    } else {
        StatusCode::BAD_REQUEST.as_u16()
    };
    let mut resp = text(StatusCode::BAD_REQUEST, format!("remedy: {bad}\n"));
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

fn refuse(unmatched: &Arc<SourceMetrics>, start: Instant, why: NoRoute) -> Response<ResponseBody> {
    let status = match why {
        NoRoute::Connect => StatusCode::METHOD_NOT_ALLOWED,
        NoRoute::ConnectRefused => StatusCode::FORBIDDEN,
        NoRoute::Misdirected => StatusCode::MISDIRECTED_REQUEST,
        NoRoute::UnsafePath(_) | NoRoute::BadHost(_) | NoRoute::AmbiguousFraming => {
            StatusCode::BAD_REQUEST
        }
        NoRoute::Unmatched => StatusCode::NOT_FOUND,
        NoRoute::UnsupportedCoding => StatusCode::NOT_IMPLEMENTED,
    };
    let mut pending = Pending::new(unmatched.clone(), start);
    pending.status = status.as_u16();
    let mut resp = text(status, format!("remedy: {why}\n"));
    if matches!(
        why,
        NoRoute::Connect
            | NoRoute::ConnectRefused
            | NoRoute::AmbiguousFraming
            | NoRoute::UnsupportedCoding
    ) {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// The status hyper answered on its own for a request head it could not parse, which
/// remedy's service never saw: 400, 414 or 431, as hyper's server sends them; `None` for an
/// error hyper sends no answer for. hyper tells a long URI from a large head only by the
/// error's text.
pub fn parser_refusal(e: &hyper::Error) -> Option<u16> {
    if !e.is_parse() || e.is_parse_status() || e.is_parse_version_h2() {
        return None;
    }
    let text = e.to_string();
    if e.is_parse_too_large() {
        return Some(if text.contains("URI") { 414 } else { 431 });
    }
    (!text.contains("internal error")).then_some(400)
}

/// Counts a request hyper refused before the service saw it, with `source="unmatched"` and
/// `origin="proxy"`, so that every answer the connector got is counted.
pub fn count_parser_refusal(routes: &Routes, e: &hyper::Error) {
    if let Some(status) = parser_refusal(e) {
        let mut pending = Pending::new(routes.unmatched.clone(), Instant::now());
        pending.status = status;
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::Full {
        data: Some(body.into()),
    });
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) and `Transfer-Encoding`, removed in both directions
/// (hyper frames each side's body itself).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::TRANSFER_ENCODING,
];

/// The index of `name` in [`HOP_BY_HOP`]: one match on the name rather than nine comparisons.
fn hop_by_hop(name: &HeaderName) -> Option<usize> {
    Some(match name.as_str() {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "proxy-authenticate" => 3,
        "proxy-authorization" => 4,
        "te" => 5,
        "trailer" => 6,
        "upgrade" => 7,
        "transfer-encoding" => 8,
        _ => return None,
    })
}

/// Removes the hop-by-hop headers; whether `Transfer-Encoding` was among them.
fn strip_hop_by_hop(headers: &mut HeaderMap) -> bool {
    // One pass over the names finds which are present; most messages carry at most
    // `Connection: keep-alive`, so nothing is allocated and only present names are removed.
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = hop_by_hop(name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return false;
    }
    // Headers the sender named in `Connection` are hop-by-hop too; `close` and `keep-alive`
    // are the usual tokens (often the whole value) and need no lookup of their own.
    let usual =
        |t: &[u8]| t.eq_ignore_ascii_case(b"keep-alive") || t.eq_ignore_ascii_case(b"close");
    let connection = headers.get_all(header::CONNECTION);
    if present & 1 != 0 && !connection.iter().all(|v| usual(v.as_bytes())) {
        let named: Vec<HeaderName> = connection
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|t| !usual(t))
            .filter_map(|t| HeaderName::from_bytes(t).ok())
            .collect();
        for name in &named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    present & (1 << 8) != 0
}

/// The connector's address as a header value, made once per connection.
pub fn client_ip(peer: SocketAddr) -> HeaderValue {
    HeaderValue::from_str(&peer.ip().to_string()).expect("an IP address is a valid header value")
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Rewrites `req`'s headers in place (moving a request costs a copy of its head).
/// `https` says the connector spoke TLS to remedy (inside a tunnel).
fn rewrite_request<B>(
    req: &mut Request<B>,
    client_ip: &HeaderValue,
    preserve_host: bool,
    https: bool,
) {
    // First, so that a `Host` the connector named in `Connection` is not forwarded either.
    // (A request with both framings never gets here: the guard refuses it.)
    strip_hop_by_hop(req.headers_mut());
    let original_host = match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => req.headers().get(header::HOST).cloned(),
    };
    let headers = req.headers_mut();
    // Every `X-Forwarded-For` the connector sent, in order, then its address.
    let mut chain = headers.get_all(X_FORWARDED_FOR).iter();
    let xff = match (chain.next(), chain.next()) {
        (None, _) => Some(client_ip.clone()),
        (Some(first), second) => {
            let mut joined = first.as_bytes().to_vec();
            for v in second.into_iter().chain(chain) {
                joined.extend_from_slice(b", ");
                joined.extend_from_slice(v.as_bytes());
            }
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(client_ip.as_bytes());
            HeaderValue::from_bytes(&joined).ok()
        }
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR, v);
    }
    let proto = if https { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    // remedy sets `X-Forwarded-Host` or removes it: a connector's own never passes.
    match original_host {
        Some(h) => {
            if preserve_host {
                headers.insert(header::HOST, h.clone());
            }
            headers.insert(X_FORWARDED_HOST, h);
        }
        None => {
            headers.remove(X_FORWARDED_HOST);
        }
    }
    if !preserve_host {
        // The client sets `Host` (or `:authority`) from the upstream URI.
        headers.remove(header::HOST);
    }
}

/// Reads the quota and `Retry-After` a response states into the source's gauges.
fn observe_headers(target: &Target, status: StatusCode, headers: &HeaderMap) {
    let seen = crate::ratelimit::read(
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

pin_project! {
    /// The body sent to the connector: the upstream's, streamed, or one remedy wrote.
    #[project = BodyProj]
    pub enum ResponseBody {
        Stream {
            #[pin]
            body: UpstreamBody,
            // The first frame, when it came with the head.
            held: Option<Frame<Bytes>>,
            // Whether the head has surely been written: a frame passed on, or a turn given.
            sent: bool,
            // A failure held back one turn, so that hyper writes the head first.
            deferred: Option<hyper::Error>,
            // Armed at the first wait for the upstream, so a body that arrives whole with its
            // head never touches the timer wheel, and then moved only when it fires.
            idle: LazyDeadline,
            idle_after: Duration,
            // When the last chunk came, from the first wait on.
            last_progress: Option<Instant>,
            pending: Option<Pending>,
        },
        Full { data: Option<Bytes> },
    }
}

/// The upstream paused longer than the source's `idle` timeout inside a body.
#[derive(Debug, thiserror::Error)]
#[error("upstream body idle for longer than {0:?}")]
pub struct IdleTimeout(Duration);

impl ResponseBody {
    /// The upstream's body on its way to the connector; `held` is a frame already read.
    fn streaming(
        body: UpstreamBody,
        held: Option<Frame<Bytes>>,
        idle_after: Duration,
        pending: Pending,
    ) -> Self {
        ResponseBody::Stream {
            body,
            held,
            sent: false,
            deferred: None,
            idle: LazyDeadline::default(),
            idle_after,
            last_progress: None,
            pending: Some(pending),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project() {
            BodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            BodyProj::Stream {
                mut body,
                held,
                sent,
                deferred,
                idle,
                idle_after,
                last_progress,
                pending,
            } => {
                if let Some(frame) = held.take() {
                    *sent = true;
                    return Poll::Ready(Some(Ok(frame)));
                }
                let polled = match deferred.take() {
                    Some(e) => Poll::Ready(Some(Err(e))),
                    None => body.as_mut().poll_frame(cx),
                };
                match polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        *sent = true;
                        if last_progress.is_some() {
                            *last_progress = Some(Instant::now());
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(Some(Err(e))) if !*sent => {
                        // hyper has the head but may not have written it: one more turn
                        // lets it flush, so the connector receives the status it is
                        // counted as (then a broken body) instead of an empty reply.
                        *sent = true;
                        *deferred = Some(e);
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                    Poll::Ready(Some(Err(e))) => {
                        if let Some(p) = pending.take() {
                            tracing::warn!(
                                source = p.metrics.name(),
                                status = p.status,
                                cause = %upstream::causes(&e),
                                "upstream failed mid-body; the connector sees a broken response"
                            );
                        }
                        Poll::Ready(Some(Err(e.into())))
                    }
                    Poll::Ready(None) => {
                        pending.take();
                        Poll::Ready(None)
                    }
                    Poll::Pending => {
                        let since = *last_progress.get_or_insert_with(Instant::now);
                        if !idle.poll_passed(since + *idle_after, cx) {
                            return Poll::Pending;
                        }
                        if let Some(p) = pending.take() {
                            tracing::warn!(
                                source = p.metrics.name(),
                                status = p.status,
                                idle = ?idle_after,
                                "upstream body stalled past the idle timeout; aborting the response"
                            );
                        }
                        Poll::Ready(Some(Err(IdleTimeout(*idle_after).into())))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full { data } => data.is_none(),
            ResponseBody::Stream {
                body,
                held,
                deferred,
                ..
            } => held.is_none() && deferred.is_none() && body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ResponseBody::Stream { body, held, .. } => {
                // The held frame is still to come: without it, a length the head states
                // would disagree with what is left.
                let extra = held
                    .as_ref()
                    .and_then(Frame::data_ref)
                    .map_or(0, |d| d.len() as u64);
                let inner = body.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + extra);
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + extra);
                }
                hint
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rewrites `req` as the handler does for a connector at 127.0.0.1:5000.
    fn rewrite_from_loopback<B>(req: &mut Request<B>, preserve_host: bool) {
        rewrite_request(
            req,
            &client_ip("127.0.0.1:5000".parse().unwrap()),
            preserve_host,
            false,
        );
    }

    #[test]
    fn every_hop_by_hop_name_is_matched_to_its_own_index() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop(name), Some(i), "{name}");
        }
        assert_eq!(hop_by_hop(&header::CONTENT_LENGTH), None);
        assert_eq!(hop_by_hop(&HeaderName::from_static("x-te")), None);
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-trace"),
        );
        h.insert("x-trace", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::AUTHORIZATION));
    }

    #[test]
    fn every_hop_by_hop_header_goes_and_end_to_end_ones_stay() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("close"));
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("X-Trace ,Upgrade"),
        );
        for name in HOP_BY_HOP.iter().skip(1) {
            h.insert(name, HeaderValue::from_static("v"));
        }
        h.insert("x-trace", HeaderValue::from_static("1"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-length", "x-kept"]);

        let mut plain = HeaderMap::new();
        plain.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain.len(), 1);
    }

    #[test]
    fn forwarded_headers_are_set_and_host_dropped() {
        let mut req = Request::builder()
            .uri("/github/x")
            .header(header::HOST, "127.0.0.1:8780")
            .header("x-forwarded-for", "10.0.0.1")
            .body(())
            .unwrap();
        rewrite_from_loopback(&mut req, false);
        let h = req.headers();
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-host"], "127.0.0.1:8780");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert!(!h.contains_key(header::HOST));
    }

    #[test]
    fn a_host_named_in_connection_is_not_forwarded() {
        let mut req = Request::builder()
            .uri("/github/x")
            .header(header::HOST, "127.0.0.1:8780")
            .header(header::CONNECTION, "host")
            .body(())
            .unwrap();
        rewrite_from_loopback(&mut req, true);
        assert!(!req.headers().contains_key(header::HOST));
        assert!(!req.headers().contains_key("x-forwarded-host"));
    }

    #[test]
    fn preserve_host_keeps_the_connector_host() {
        let mut req = Request::builder()
            .uri("http://api.github.com/user")
            .body(())
            .unwrap();
        rewrite_from_loopback(&mut req, true);
        assert_eq!(req.headers()[header::HOST], "api.github.com");
    }
}
