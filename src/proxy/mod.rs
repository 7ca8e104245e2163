//! The request's life, in phases: [`route`], [`admit`], [`rewrite_request`], forward,
//! [`observe_head`], [`stream_back`]. Each phase takes the request's [`Exchange`]; a phase
//! that ends the request's life early returns the [`Answer`] remedy makes instead, rendered
//! in one place ([`respond`]). From admission on, the [`Pending`] guard records the request
//! exactly once, whichever phase ends it, or when the response body ends, fails or is
//! abandoned.
//!
//! The modules, in the order a request meets them: [`accept`] (the listener's accept loop),
//! [`listener`] (each connection's bytes: the framing guard, the header-read deadline, the send
//! timeout and the connection slots), [`route`]
//! (request parts to a source, or why none), [`exchange`] (the request's context), `outcome`
//! (the guard), `headers` (what is rewritten on the way), `request_body` (the connector's body
//! on its way up), [`upstream`] (pools, TLS, timeouts; `failure` inside), `response_body` (the
//! answer streamed back), and `respond` (every answer remedy makes itself). Beside them:
//! [`routes`] (the live config as the proxy uses it), [`deadline`] and [`redact`], which the
//! phases use; `intercept`, for `CONNECT`; [`drain`] and [`trim`], for the process's life.

use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response};
use http_body::{Body, Frame};
use hyper::body::Incoming;
use tokio::time::Instant;

pub mod accept;
mod causes;
pub mod deadline;
pub mod drain;
pub mod exchange;
mod headers;
pub mod intercept;
pub mod listener;
mod outcome;
pub mod redact;
mod request_body;
mod respond;
mod response_body;
pub mod route;
pub mod routes;
mod stalled;
pub mod trim;
pub mod upstream;

pub use exchange::{Exchange, Via};
pub use headers::client_ip;
pub use respond::{Answer, count_parser_refusal, count_refusal, parser_refusal};
pub use response_body::{IdleTimeout, Observe, ResponseBody};
pub use routes::Routes;

use crate::metrics::Origin;
use crate::observe::{body_errors, grpc};
use crate::proxy::outcome::Pending;
use crate::proxy::route::NoRoute;
use crate::proxy::routes::Target;
use headers::{rewrite_request, strip_hop_by_hop};
use upstream::{SendError, Sent, UpstreamBody};

/// Serves one request from the connector: never fails, every problem is an HTTP answer.
/// `ambiguous_framing` is the smuggling guard's verdict: such a request is refused.
pub async fn handle(
    routes: Arc<Routes>,
    client_ip: HeaderValue,
    ambiguous_framing: bool,
    mut req: Request<Incoming>,
    via: Via,
) -> Response<ResponseBody> {
    let mut ex = Exchange::new(&routes, Instant::now(), &req);
    let tunnel = match &via {
        Via::Tunnel(host) => Some(&**host),
        Via::Listener => None,
    };
    // A labeled block rather than an async one with `?`: the phases run in this function's
    // own state machine, and the request is not moved into a nested one.
    'life: {
        /// A phase's result, or the answer that ends the request's life here.
        macro_rules! or_answer {
            ($phase:expr) => {
                match $phase {
                    Ok(value) => value,
                    Err(answer) => break 'life respond::render(&mut ex, *answer),
                }
            };
        }
        let (target, path, endpoint) = or_answer!(route(&ex, ambiguous_framing, &req, tunnel));
        ex.target = Some(target);
        or_answer!(admit(&mut ex, target, endpoint));
        rewrite_request(&mut req, &client_ip, target.preserve_host, tunnel.is_some());
        let grpc = ex.seen.grpc.is_some();
        let sent = target.client.send(path, req, ex.start, grpc).await;
        let resp = or_answer!(forward(sent));
        observe_head(&mut ex, target, &resp);
        or_answer!(stream_back(&mut ex, target, resp).await)
    }
}

/// An answer that ends the request's phases early. Boxed, so that the phases' results stay
/// small on the path that forwards.
type Early = Box<Answer>;

/// Phase 1: the source the request belongs to, the path it has there, and the source's
/// endpoint it calls (when the source declares `routes`), or the refusal (counted under
/// `source="unmatched"`).
fn route<'r>(
    ex: &Exchange<'r>,
    ambiguous_framing: bool,
    req: &Request<Incoming>,
    tunnel: Option<&str>,
) -> Result<(&'r Target, PathAndQuery, Option<u16>), Early> {
    let refuse = |no| Err(Box::new(Answer::Refused(no)));
    if ambiguous_framing {
        return refuse(NoRoute::AmbiguousFraming);
    }
    if !route::only_chunked(req.headers()) {
        return refuse(NoRoute::UnsupportedCoding);
    }
    let routes = ex.routes;
    let routed = route::host_header(req.version(), req.headers()).and_then(|h| {
        let host = h.and_then(|h| h.to_str().ok());
        match tunnel {
            Some(t) => routes
                .router
                .route_in_tunnel(t, req.method(), req.uri(), host),
            None => routes.router.route(req.method(), req.uri(), host),
        }
    });
    let r = match routed {
        Ok(r) => r,
        Err(no) => return refuse(no),
    };
    let target = &routes.targets[r.source];
    let endpoint = target.endpoints.as_ref().map(|e| e.of(r.path));
    match target.upstream_path(r.path, r.query) {
        Some(path) => Ok((target, path, endpoint)),
        None => refuse(NoRoute::UnsafePath("it does not form a valid upstream URI")),
    }
}

/// Phase 2: admission under the source's in-flight cap; from here the request is counted
/// once by its guard, or answered 503 when the cap is reached.
fn admit(ex: &mut Exchange<'_>, target: &Target, endpoint: Option<u16>) -> Result<(), Early> {
    let pending = ex
        .outcome
        .insert(Pending::new(target.metrics.clone(), ex.start));
    pending.grpc = ex.seen.grpc;
    pending.endpoint = endpoint;
    if let Some(limit) = &target.limit {
        match limit.clone().try_acquire_owned() {
            Ok(permit) => pending.permit = Some(permit),
            Err(_) => return Err(Box::new(Answer::InFlightCap)),
        }
    }
    Ok(())
}

/// Phase 4: what sending the request upstream gave (the driver awaits the send itself, so
/// the request is not moved once more): the response head, or for a request the connector
/// could not send whole a 400, for an upstream that cannot be reached a 502 or 504.
fn forward(sent: Sent) -> Result<Response<UpstreamBody>, Early> {
    sent.map_err(|e| {
        Box::new(match e {
            SendError::Connector(bad) => Answer::BadRequest(bad),
            SendError::Upstream(failure) if failure.out_of_descriptors => {
                Answer::OutOfDescriptors(failure)
            }
            SendError::Upstream(failure) => Answer::Unreachable(failure),
            SendError::NoHttp2 => Answer::GrpcUnavailable,
            SendError::GrpcReset(reason) => Answer::GrpcReset(reason),
        })
    })
}

/// Phase 5: the response head as the connector will get it: its status is what the guard
/// counts, its rate-limit headers go to the source's gauges, and a gRPC answer's status, when
/// the head holds it and ends the stream (a trailers-only answer), is the call's outcome;
/// otherwise the guard waits for the trailers. An answer to a gRPC call that is not gRPC is
/// counted by its HTTP status, which a gRPC client reads too, and a 200 as UNKNOWN.
fn observe_head(ex: &mut Exchange<'_>, target: &Target, resp: &Response<UpstreamBody>) {
    let grpc = grpc::is_grpc(resp.headers());
    if let Some(pending) = &mut ex.outcome {
        pending.status = resp.status().as_u16();
        pending.origin = Origin::Upstream;
        let call = pending.grpc.take();
        if grpc {
            // Over HTTP/2 a client reads a status in the head only of a trailers-only
            // answer, which the head ends; otherwise it waits for the trailers.
            let trailers_only =
                resp.version() != http::Version::HTTP_2 || resp.body().is_end_stream();
            match grpc::Status::of(resp.headers()) {
                Some(status) if trailers_only => pending.grpc_status(status),
                _ => pending.grpc = Some(call.unwrap_or_default()),
            }
        } else if call.is_some() && resp.status() == http::StatusCode::OK {
            // A gRPC call answered 200 with something else than gRPC: its client reads UNKNOWN
            // (another status speaks for itself, as gRPC's HTTP mapping has it).
            pending.grpc = call;
            pending.grpc_status(grpc::Status::UNKNOWN);
        }
    }
    target.read_quota(resp.status(), resp.headers());
    if let Some(path) = ex.logged_path() {
        let (source, status) = (target.metrics.name(), resp.status().as_u16());
        let head_ms = ex.start.elapsed().as_secs_f64() * 1e3;
        let method = &ex.seen.method;
        // A declared endpoint's template rather than the path, which carries ids.
        let endpoint = ex.outcome.as_ref().and_then(|p| p.endpoint);
        match target.endpoints.as_ref().zip(endpoint) {
            Some((e, i)) => {
                let route = e.name(i);
                tracing::debug!(source, %method, route, status, origin = "upstream", head_ms, "proxied");
            }
            None => {
                tracing::debug!(source, %method, path, status, origin = "upstream", head_ms, "proxied");
            }
        }
    }
}

/// Phase 6: the response, its body streamed back as it comes; the guard records the outcome
/// when the body ends, fails or is dropped.
async fn stream_back(
    ex: &mut Exchange<'_>,
    target: &Target,
    resp: Response<UpstreamBody>,
) -> Result<Response<ResponseBody>, Early> {
    let (mut parts, mut body) = resp.into_parts();
    if strip_hop_by_hop(&mut parts.headers) {
        // hyper read the body by its chunks; a `Content-Length` beside them (RFC 9112 §6.3
        // says to ignore it) would frame the re-sent body wrongly.
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    let pending = ex.outcome.take().expect("admitted requests are counted");
    let held = match peek(&mut body).await {
        // The upstream broke before the body began: nothing of this answer has reached the
        // connector, so remedy answers for it, as for a connection that failed before its head.
        // A gRPC call's stream reset is the API's answer, which its client reads: passed on.
        Poll::Ready(Some(Err(e))) if pending.grpc.is_none() => {
            ex.outcome = Some(pending);
            let cause = causes::causes(&e);
            return Err(Box::new(Answer::BrokeBeforeBody { cause }));
        }
        Poll::Ready(held) => held,
        Poll::Pending => None,
    };
    let reader = target
        .body_errors
        .as_ref()
        .and_then(|rules| body_errors::Reader::for_response(rules, parts.status, &parts.headers));
    let observe = Observe { reader };
    let body = ResponseBody::streaming(body, held, target.idle, pending, observe);
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
