//! Every answer remedy makes itself is one [`Answer`]: its status, the status it is counted
//! as, the error kind it counts, whether it closes the connection, its log line and its body,
//! all decided here and rendered by [`render`]. The request's guard then counts what the
//! connector receives. Also here: the count of what hyper's parser refused before remedy saw a
//! request.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use tokio::time::Instant;

use super::exchange::Exchange;
use super::outcome::{CLIENT_CLOSED, Pending};
use super::request_body::BadRequest;
use super::response_body::ResponseBody;
use super::routes::Routes;
use super::upstream::Failure;
use crate::metrics::{ErrorKind, Origin};
use crate::observe::grpc;
use crate::proxy::route::NoRoute;

/// An answer remedy makes instead of forwarding one from the upstream.
#[derive(Debug)]
pub enum Answer {
    /// A request remedy does not forward (400, 403, 404, 405, 421, 501), counted under
    /// `source="unmatched"`.
    Refused(NoRoute),
    /// The source's `max_in_flight` is reached: 503, with remedy's own remediation.
    InFlightCap,
    /// The system gave remedy no file descriptor for the upstream connection: 503, remedy's own
    /// failure (`raise_file_descriptor_limit`), never counted against the API.
    OutOfDescriptors(Failure),
    /// The upstream gave no response head: 504 for a timeout, else 502.
    Unreachable(Failure),
    /// The upstream sent a head and broke before any of its body: 502, `kind="reset"`.
    BrokeBeforeBody { cause: String },
    /// The connector's request could not be forwarded whole: its fault, not the upstream's.
    BadRequest(BadRequest),
    /// A `CONNECT` that came after shutdown began: no tunnel is opened.
    ShuttingDown,
    /// A gRPC call to an upstream that negotiated HTTP/1.1: a trailers-only gRPC UNAVAILABLE
    /// (HTTP 200), what a gRPC client understands, counted `origin="proxy"`, `kind="protocol"`.
    GrpcUnavailable,
    /// A gRPC call whose stream the API reset before its head, with this HTTP/2 error code:
    /// answered as the status a gRPC client reads that reset as (gRPC's mapping of HTTP/2
    /// errors), trailers-only, and counted as the API's answer (`origin="upstream"`).
    GrpcReset(u32),
    /// A host in `proxy.intercept.tunnel` did not take the connection.
    TunnelFailed {
        host: String,
        port: u16,
        cause: String,
    },
}

impl Answer {
    /// The status the connector is sent.
    pub fn status(&self) -> StatusCode {
        match self {
            Answer::Refused(why) => match why {
                NoRoute::Connect | NoRoute::ConnectInTunnel => StatusCode::METHOD_NOT_ALLOWED,
                NoRoute::ConnectRefused => StatusCode::FORBIDDEN,
                NoRoute::Misdirected => StatusCode::MISDIRECTED_REQUEST,
                NoRoute::UnsafePath(_)
                | NoRoute::BadHost(_)
                | NoRoute::BadConnectTarget
                | NoRoute::AmbiguousFraming => StatusCode::BAD_REQUEST,
                NoRoute::Unmatched => StatusCode::NOT_FOUND,
                NoRoute::UnsupportedCoding => StatusCode::NOT_IMPLEMENTED,
            },
            Answer::InFlightCap | Answer::ShuttingDown | Answer::OutOfDescriptors(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Answer::GrpcUnavailable | Answer::GrpcReset(_) => StatusCode::OK,
            Answer::Unreachable(f) if f.kind == ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Answer::Unreachable(_) | Answer::BrokeBeforeBody { .. } => StatusCode::BAD_GATEWAY,
            Answer::TunnelFailed { .. } => StatusCode::BAD_GATEWAY,
            Answer::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The status the request is counted as: what the connector receives, or 499 when it has
    /// gone and receives nothing.
    pub fn counted_status(&self) -> u16 {
        match self {
            Answer::BadRequest(bad) if bad.connector_gone() => CLIENT_CLOSED,
            _ => self.status().as_u16(),
        }
    }

    /// Why remedy answered for an upstream it could not use, as
    /// `remedy_upstream_request_errors_total` counts it.
    pub fn error_kind(&self) -> Option<ErrorKind> {
        match self {
            Answer::Unreachable(f) => Some(f.kind),
            Answer::BrokeBeforeBody { .. } => Some(ErrorKind::Reset),
            Answer::GrpcUnavailable => Some(ErrorKind::Protocol),
            _ => None,
        }
    }

    /// The remediation it is counted with when not the one its status and origin give
    /// (remedy's 503 is `raise_max_in_flight`; its gRPC 200 `check_upstream_reachability`).
    pub fn remediation(&self) -> Option<&'static str> {
        match self {
            Answer::OutOfDescriptors(_) => Some(crate::catalog::DESCRIPTORS_KEY),
            _ => None,
        }
    }

    /// Who made the answer's status: remedy, except for an API's reset that remedy renders.
    pub fn origin(&self) -> Origin {
        match self {
            Answer::GrpcReset(_) => Origin::Upstream,
            _ => Origin::Proxy,
        }
    }

    /// Whether the connection closes after the answer: when what follows on it cannot be
    /// trusted (a request whose body or framing remedy could not follow), or is no request at
    /// all (a refused `CONNECT`'s tunnel bytes).
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            Answer::BadRequest(_)
                | Answer::Refused(
                    NoRoute::Connect
                        | NoRoute::ConnectInTunnel
                        | NoRoute::BadConnectTarget
                        | NoRoute::ConnectRefused
                        | NoRoute::AmbiguousFraming
                        | NoRoute::UnsupportedCoding
                )
        )
    }

    /// The answer's body: what remedy did, and why.
    fn body(&self, ex: &Exchange<'_>) -> String {
        let upstream = ex
            .target
            .map(|t| t.upstream_url.to_string())
            .unwrap_or_default();
        match self {
            Answer::Refused(why) => format!("remedy: {why}\n"),
            Answer::InFlightCap => {
                "remedy: this source's max_in_flight is reached; retry later\n".to_owned()
            }
            Answer::OutOfDescriptors(f) => format!(
                "remedy ran out of file descriptors and could not connect to {upstream}: {}\n",
                f.cause
            ),
            Answer::Unreachable(f) if f.kind == ErrorKind::Protocol => format!(
                "remedy: upstream {upstream} answered with what remedy cannot pass on \
                 (protocol): {}\n",
                f.cause
            ),
            Answer::Unreachable(f) => format!(
                "remedy: upstream {upstream} unreachable ({}): {}\n",
                f.kind.as_str(),
                f.cause
            ),
            Answer::BrokeBeforeBody { cause } => format!(
                "remedy: upstream {upstream} broke its response before the body (reset): {cause}\n"
            ),
            Answer::BadRequest(bad) => format!("remedy: {bad}\n"),
            Answer::ShuttingDown => "remedy is shutting down: no tunnel opened\n".to_owned(),
            Answer::GrpcUnavailable => format!(
                "remedy: the upstream {upstream} does not speak HTTP/2 (it negotiated HTTP/1.1), \
                 and a gRPC call needs it"
            ),
            Answer::TunnelFailed { host, port, cause } => {
                format!("remedy: tunnelled host {host}:{port} unreachable: {cause}\n")
            }
            Answer::GrpcReset(reason) => format!(
                "the upstream {upstream} reset the call's stream (HTTP/2 error {:?})",
                h2::Reason::from(*reason)
            ),
        }
    }

    /// The answer's log line: a warning where the upstream or remedy's own limit is at fault,
    /// debug where the connector's request is.
    fn log(&self, ex: &Exchange<'_>, upstream_status: u16) {
        let (source, method) = (ex.source(), &ex.seen.method);
        match self {
            Answer::Refused(why) => {
                if tracing::enabled!(tracing::Level::DEBUG) {
                    tracing::debug!(
                        %method,
                        path = ex.path(),
                        host = ex.logged_host().unwrap_or(""),
                        reason = why.short(),
                        "request not forwarded"
                    );
                }
            }
            Answer::InFlightCap => {
                tracing::warn!(source, "in-flight cap reached: answering 503");
            }
            Answer::OutOfDescriptors(f) => tracing::warn!(
                source,
                %method,
                path = ex.path(),
                status = 503,
                cause = %f.cause,
                "out of file descriptors: answering 503; raise the open-files limit or lower \
                 proxy.max_connections"
            ),
            Answer::Unreachable(f) if f.kind == ErrorKind::Protocol => tracing::warn!(
                source,
                %method,
                path = ex.path(),
                status = 502,
                kind = f.kind.as_str(),
                cause = %f.cause,
                "upstream answered with what remedy cannot pass on"
            ),
            Answer::Unreachable(f) => tracing::warn!(
                source,
                %method,
                path = ex.path(),
                status = self.status().as_u16(),
                kind = f.kind.as_str(),
                cause = %f.cause,
                "upstream unreachable"
            ),
            Answer::BrokeBeforeBody { cause } => tracing::warn!(
                source,
                %method,
                path = ex.path(),
                upstream_status,
                status = 502,
                kind = ErrorKind::Reset.as_str(),
                %cause,
                "upstream broke its response before the body"
            ),
            Answer::BadRequest(bad) => tracing::debug!(
                source,
                %method,
                path = ex.path(),
                reason = bad.short(),
                cause = %bad,
                "bad request: not forwarded whole"
            ),
            Answer::ShuttingDown => {}
            Answer::GrpcUnavailable => tracing::warn!(
                source,
                %method,
                path = ex.path(),
                grpc_status = grpc::UNAVAILABLE,
                kind = ErrorKind::Protocol.as_str(),
                "a gRPC call to an upstream that does not speak HTTP/2: answered UNAVAILABLE"
            ),
            Answer::TunnelFailed { host, port, cause } => {
                tracing::warn!(%host, port, cause, "tunnelled host unreachable");
            }
            Answer::GrpcReset(reason) => tracing::debug!(
                source,
                %method,
                path = ex.path(),
                reason = ?h2::Reason::from(*reason),
                "the upstream reset a gRPC call's stream before its head"
            ),
        }
    }
}

/// Renders `answer` for the request `ex`: logs it, sets what its guard counts (a refusal is
/// counted under `source="unmatched"`), and makes the response.
pub(super) fn render(ex: &mut Exchange<'_>, answer: Answer) -> Response<ResponseBody> {
    if matches!(answer, Answer::Refused(_)) {
        ex.outcome = Some(Pending::new(ex.routes.unmatched.clone(), ex.start));
    }
    let upstream_status = ex.outcome.as_ref().map_or(0, |p| p.status);
    let mut grpc_status = grpc::Status::UNAVAILABLE;
    if let Some(pending) = &mut ex.outcome {
        pending.status = answer.counted_status();
        pending.origin = answer.origin();
        pending.remediation = answer.remediation();
        pending.error = answer.error_kind().or(pending.error);
        match answer {
            Answer::GrpcReset(reason) => {
                grpc_status = pending
                    .grpc_reset(reason)
                    .unwrap_or_else(|| grpc::Status::of_reset(reason, false));
            }
            // remedy's own answer: counted as such, never as a gRPC status of the API's.
            _ => pending.grpc = None,
        }
    }
    answer.log(ex, upstream_status);
    let mut resp = match answer {
        Answer::GrpcUnavailable | Answer::GrpcReset(_) => {
            grpc_trailers_only(grpc_status.0, &answer.body(ex))
        }
        _ => text(answer.status(), answer.body(ex)),
    };
    if answer.closes_connection() {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
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

/// A gRPC answer with no message: its status in the head, which HTTP/2 ends the stream with
/// ("Trailers-Only"). `message` is percent-encoded as gRPC's `grpc-message` wants.
fn grpc_trailers_only(status: u32, message: &str) -> Response<ResponseBody> {
    let mut encoded = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    let mut resp = Response::new(ResponseBody::Full { data: None });
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(status));
    if let Ok(v) = HeaderValue::from_str(&encoded) {
        h.insert("grpc-message", v);
    }
    resp
}

/// The status of a request head hyper refused before remedy's service saw it: 400, 414 or 431,
/// as hyper's server sends them; 505 HTTP Version Not Supported for an HTTP/2 preface, which
/// the listener answers with its HTTP/2 equivalent ([`h2::REFUSAL`]); `None` for an error
/// that is no refusal. hyper tells a long URI from a large head only by the error's text.
///
/// [`h2::REFUSAL`]: crate::proxy::listener::h2::REFUSAL
pub fn parser_refusal(e: &hyper::Error) -> Option<u16> {
    if e.is_parse_version_h2() {
        return Some(505);
    }
    if !e.is_parse() || e.is_parse_status() {
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
        count_refusal(routes, status);
    }
}

/// Counts an answer of `status` made before any request reached the service (hyper's parser,
/// the HTTP/2 layer), under `source="unmatched"` with `origin="proxy"`.
pub fn count_refusal(routes: &Routes, status: u16) {
    let mut pending = Pending::new(routes.unmatched.clone(), Instant::now());
    pending.status = status;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(kind: ErrorKind, out_of_descriptors: bool) -> Failure {
        Failure {
            kind,
            cause: "cause".to_owned(),
            out_of_descriptors,
        }
    }

    /// What hyper's HTTP/1.1 server makes of `bytes`, with a head of up to 128 KiB (room for a
    /// URI past hyper's own limit of 65,534 bytes): the error its connection ends with, if any.
    async fn served(bytes: Vec<u8>) -> Option<hyper::Error> {
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = tokio::io::duplex(256 * 1024);
        let mut http = hyper::server::conn::http1::Builder::new();
        http.max_header_size(128 * 1024).max_buf_size(128 * 1024);
        let service = hyper::service::service_fn(|_req| async {
            Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Empty::<Bytes>::new()))
        });
        let conn = http.serve_connection(hyper_util::rt::TokioIo::new(server), service);
        client.write_all(&bytes).await.unwrap();
        client.shutdown().await.unwrap();
        conn.await.err()
    }

    /// What hyper's parser refuses, as rows: the status it is counted as (the one hyper sends;
    /// 505 for an HTTP/2 preface, which the listener refuses in HTTP/2's own terms), or none
    /// for what is no refusal.
    #[tokio::test]
    async fn parser_refusals_are_counted_as_the_status_sent() {
        let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
        let big_head = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(140_000)
        );
        for (name, bytes, counted) in [
            (
                "a good request",
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
                None,
            ),
            (
                "a malformed request line",
                b"GET\x01/ HTTP/1.1\r\n\r\n".to_vec(),
                Some(400),
            ),
            (
                "a malformed header",
                b"GET / HTTP/1.1\r\nBad Header\r\n\r\n".to_vec(),
                Some(400),
            ),
            ("a URI over the limit", long_uri.into_bytes(), Some(414)),
            ("a head over the limit", big_head.into_bytes(), Some(431)),
            (
                "an HTTP/2 preface",
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
                Some(505),
            ),
        ] {
            let error = served(bytes).await;
            assert_eq!(
                error.as_ref().and_then(parser_refusal),
                counted,
                "{name}: {error:?}"
            );
        }
    }

    /// The answer; status sent and counted; error kind; closes; origin; own key.
    type Row = (
        Answer,
        u16,
        u16,
        Option<ErrorKind>,
        bool,
        Origin,
        Option<&'static str>,
    );

    /// Every answer remedy makes, as a row: the status sent, the status counted, the error kind
    /// counted, whether the connection closes, who made the status, and the key it is counted
    /// with where its status does not give it. A new variant is a new row.
    #[test]
    fn every_answer_as_sent_and_as_counted() {
        use ErrorKind::{Connect, Protocol, Reset, Timeout};
        let rows: Vec<Row> = vec![
            (
                Answer::Refused(NoRoute::Unmatched),
                404,
                404,
                None,
                false,
                Origin::Proxy,
                None,
            ),
            (
                Answer::Refused(NoRoute::Connect),
                405,
                405,
                None,
                true,
                Origin::Proxy,
                None,
            ),
            (
                Answer::Refused(NoRoute::ConnectInTunnel),
                405,
                405,
                None,
                true,
                Origin::Proxy,
                None,
            ),
            (
                Answer::Refused(NoRoute::ConnectRefused),
                403,
                403,
                None,
                true,
                Origin::Proxy,
                None,
            ),
            (
                Answer::Refused(NoRoute::BadConnectTarget),
                400,
                400,
                None,
                true,
                Origin::Proxy,
                None,
            ),
            (
                Answer::Refused(NoRoute::AmbiguousFraming),
                400,
                400,
                None,
                true,
                Origin::Proxy,
                None,
            ),
            (
                Answer::Refused(NoRoute::UnsupportedCoding),
                501,
                501,
                None,
                true,
                Origin::Proxy,
                None,
            ),
            (
                Answer::Refused(NoRoute::Misdirected),
                421,
                421,
                None,
                false,
                Origin::Proxy,
                None,
            ),
            (
                Answer::InFlightCap,
                503,
                503,
                None,
                false,
                Origin::Proxy,
                None,
            ),
            (
                Answer::OutOfDescriptors(failure(Connect, true)),
                503,
                503,
                None,
                false,
                Origin::Proxy,
                Some("raise_file_descriptor_limit"),
            ),
            (
                Answer::Unreachable(failure(Connect, false)),
                502,
                502,
                Some(Connect),
                false,
                Origin::Proxy,
                None,
            ),
            (
                Answer::Unreachable(failure(Timeout, false)),
                504,
                504,
                Some(Timeout),
                false,
                Origin::Proxy,
                None,
            ),
            (
                Answer::Unreachable(failure(Protocol, false)),
                502,
                502,
                Some(Protocol),
                false,
                Origin::Proxy,
                None,
            ),
            (
                Answer::BrokeBeforeBody { cause: "c".into() },
                502,
                502,
                Some(Reset),
                false,
                Origin::Proxy,
                None,
            ),
            (
                Answer::BadRequest(BadRequest::Stalled),
                400,
                400,
                None,
                true,
                Origin::Proxy,
                None,
            ),
            (
                Answer::BadRequest(BadRequest::CutShort),
                400,
                400,
                None,
                true,
                Origin::Proxy,
                None,
            ),
            (
                Answer::BadRequest(BadRequest::Gone),
                400,
                499,
                None,
                true,
                Origin::Proxy,
                None,
            ),
            (
                Answer::ShuttingDown,
                503,
                503,
                None,
                false,
                Origin::Proxy,
                None,
            ),
            (
                Answer::GrpcUnavailable,
                200,
                200,
                Some(Protocol),
                false,
                Origin::Proxy,
                None,
            ),
            (
                Answer::GrpcReset(0xb),
                200,
                200,
                None,
                false,
                Origin::Upstream,
                None,
            ),
            (
                Answer::TunnelFailed {
                    host: "h".into(),
                    port: 443,
                    cause: "c".into(),
                },
                502,
                502,
                None,
                false,
                Origin::Proxy,
                None,
            ),
        ];
        for (answer, sent, counted, kind, closes, origin, key) in rows {
            let got = (
                answer.status().as_u16(),
                answer.counted_status(),
                answer.error_kind(),
                answer.closes_connection(),
                answer.origin(),
                answer.remediation(),
            );
            assert_eq!(
                got,
                (sent, counted, kind, closes, origin, key),
                "{answer:?}"
            );
        }
    }
}
