//! Every answer remedy makes itself, in one place: the refusals of requests it will not
//! forward (400, 403, 404, 405, 421, 501), its 502 and 504 for an upstream it cannot reach,
//! its 400 for a request body the connector broke, its 503s, and the count of what hyper's
//! parser refused before remedy saw a request. Each sets the status the request's
//! [`Pending`] guard records, so what the connector receives is what is counted.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use tokio::time::Instant;

use super::request_body::BadRequest;
use super::upstream::{self, causes};
use super::{CLIENT_CLOSED, Pending, ResponseBody, Routes, Seen, Target};
use crate::metrics::{ErrorKind, Origin, SourceMetrics};
use crate::proxy::route::NoRoute;

/// The upstream gave no response head: a 504 for a timeout, else a 502, with the failure's
/// kind counted and its cause logged and said in the body.
pub(super) fn unreachable(
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

/// The upstream sent a head and broke before any of its body: a 502 with `kind="reset"`,
/// which is what the connector receives.
pub(super) fn broken_before_body(
    routes: &Routes,
    target: &Target,
    pending: &mut Pending,
    seen: &Seen,
    e: &hyper::Error,
) -> Response<ResponseBody> {
    let cause = causes(e);
    tracing::warn!(
        source = target.metrics.name(),
        method = %seen.method,
        path = %seen.path(routes),
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
pub(super) fn bad_request(
    routes: &Routes,
    target: &Target,
    pending: &mut Pending,
    seen: &Seen,
    bad: BadRequest,
) -> Response<ResponseBody> {
    tracing::debug!(
        source = target.metrics.name(),
        method = %seen.method,
        path = %seen.path(routes),
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

pub(super) fn refuse(
    unmatched: &Arc<SourceMetrics>,
    start: Instant,
    why: NoRoute,
) -> Response<ResponseBody> {
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

pub(super) fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<ResponseBody> {
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

/// The source's `max_in_flight` is reached: a 503 with remedy's own remediation, so the
/// connector retries and the FAQ's advice about the API is not blamed.
pub(super) fn in_flight_cap(pending: &mut Pending, target: &Target) -> Response<ResponseBody> {
    pending.status = StatusCode::SERVICE_UNAVAILABLE.as_u16();
    tracing::warn!(
        source = target.metrics.name(),
        "in-flight cap reached: answering 503"
    );
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "remedy: this source's max_in_flight is reached; retry later\n",
    )
}

/// A `CONNECT` that came after shutdown began: no tunnel is opened.
pub(super) fn shutting_down() -> Response<ResponseBody> {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "remedy is shutting down: no tunnel opened\n",
    )
}

/// A host in `proxy.intercept.tunnel` did not take the connection.
pub(super) fn tunnel_failed(host: &str, port: u16, cause: &str) -> Response<ResponseBody> {
    tracing::warn!(%host, port, cause, "tunnelled host unreachable");
    text(
        StatusCode::BAD_GATEWAY,
        format!("remedy: tunnelled host {host}:{port} unreachable: {cause}\n"),
    )
}
