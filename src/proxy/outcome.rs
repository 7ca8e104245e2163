//! The guard that records a request exactly once, whatever ends it: the end of the response
//! body, a failure, or the connector going away first.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::metrics::{ErrorKind, Origin, Outcome, SourceMetrics};
use crate::observe::classify::ApiErrors;
use crate::observe::grpc;

/// The status counted when the connector disconnects before the response head (nginx's
/// "client closed request").
pub const CLIENT_CLOSED: u16 = 499;

/// HTTP/2's `CANCEL` error code.
const CANCEL: u32 = 0x8;

/// A request not yet counted. Dropped, it records its [`Outcome`] once: what the connector
/// received by then, 499 if nothing.
pub struct Pending {
    metrics: Arc<SourceMetrics>,
    start: Instant,
    /// The status the connector receives.
    pub status: u16,
    /// Who made that status.
    pub origin: Origin,
    /// Why remedy answered 502/504 itself, when it did.
    pub error: Option<ErrorKind>,
    /// remedy's own remediation key, where its status and origin do not give it.
    pub remediation: Option<&'static str>,
    /// The source's endpoint the request called (`routes`), when it declares them.
    pub endpoint: Option<u16>,
    /// The source's `max_in_flight` slot, held until the request is counted.
    pub permit: Option<OwnedSemaphorePermit>,
    /// What the API reported inside the response, once its head or its end has said.
    pub api_errors: Option<Box<ApiErrors>>,
    /// A gRPC call whose client has not yet been given a status: what its end counts as
    /// when no `grpc-status` settles it.
    pub grpc: Option<GrpcCall>,
}

/// A gRPC call not yet settled by a `grpc-status`.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcCall {
    /// When the call's `grpc-timeout` runs out, if it has one, as remedy can tell it.
    pub deadline: Option<Instant>,
}

/// How much earlier than its `grpc-timeout` says, counted from its arrival, a call's client
/// may reach its deadline: the client measured the timeout before the request reached remedy,
/// which on a loaded machine can take a while. A fifth of the timeout, at most this: a connector
/// that cancels on its own that close to its deadline is rare.
const DEADLINE_SLACK: Duration = Duration::from_millis(500);

impl GrpcCall {
    /// A call that arrived at `start` with `headers`.
    pub fn new(start: Instant, headers: &http::HeaderMap) -> Self {
        GrpcCall {
            deadline: grpc::timeout(headers)
                .and_then(|t| start.checked_add(t - (t / 5).min(DEADLINE_SLACK))),
        }
    }

    fn past_deadline(self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

impl Pending {
    /// A request of the source `metrics` counts, arrived at `start`; in flight from now.
    pub fn new(metrics: Arc<SourceMetrics>, start: Instant) -> Self {
        metrics.start();
        Pending {
            metrics,
            start,
            status: CLIENT_CLOSED,
            origin: Origin::Proxy,
            error: None,
            remediation: None,
            endpoint: None,
            permit: None,
            api_errors: None,
            grpc: None,
        }
    }

    /// The API reported an error inside the response: `code`, standing for HTTP `status`.
    pub fn api_error(&mut self, code: impl Into<std::borrow::Cow<'static, str>>, status: u16) {
        self.api_errors.get_or_insert_default().add(code, status);
    }

    /// What a `body_errors` reader found in the body.
    pub fn api_errors_found(&mut self, found: ApiErrors) {
        if found.is_empty() {
            return;
        }
        if tracing::enabled!(tracing::Level::DEBUG) {
            let errors: Vec<String> = found
                .iter()
                .map(|e| format!("{}={}x{}", e.code, e.status, e.count))
                .collect();
            tracing::debug!(
                source = self.source(),
                status = self.status,
                errors = errors.join(" "),
                "API reported errors inside the response"
            );
        }
        self.api_errors.get_or_insert_default().merge(found);
    }

    /// A gRPC call's status, from the head of a trailers-only answer or from the trailers: one
    /// that is not OK is an error the API reported, standing for the HTTP status Google's API
    /// design guide gives it.
    pub fn grpc_status(&mut self, status: grpc::Status) {
        self.grpc = None;
        if !status.is_ok() {
            self.api_error(status.name(), status.http_status());
        }
    }

    /// The stream ended without trailers: a gRPC client reads that as UNKNOWN.
    pub fn grpc_ended(&mut self) {
        if self.grpc.is_some() {
            self.grpc_status(grpc::Status::UNKNOWN);
        }
    }

    /// The answer's stream was reset towards the connector with the HTTP/2 error code
    /// `reason`: counted as the status a gRPC client gives that, which this returns.
    pub fn grpc_reset(&mut self, reason: u32) -> Option<grpc::Status> {
        let call = self.grpc?;
        let status = grpc::Status::of_reset(reason, call.past_deadline());
        self.grpc_status(status);
        Some(status)
    }

    /// The `source` label it is counted under.
    pub fn source(&self) -> &str {
        self.metrics.name()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // A call whose connector went away before its status: it cancelled, or its deadline
        // passed (the client resets the stream either way).
        self.grpc_reset(CANCEL);
        self.metrics.record(&Outcome {
            status: self.status,
            origin: self.origin,
            elapsed: self.start.elapsed(),
            error: self.error,
            remediation: self.remediation,
            endpoint: self.endpoint,
            api_errors: self.api_errors.take(),
        });
    }
}
