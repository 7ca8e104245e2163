//! The guard that records a request exactly once, whatever ends it: the end of the response
//! body, a failure, or the connector going away first.

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::metrics::{ErrorKind, Origin, Outcome, SourceMetrics};

/// The status counted when the connector disconnects before the response head (nginx's
/// "client closed request").
pub const CLIENT_CLOSED: u16 = 499;

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
    /// The source's `max_in_flight` slot, held until the request is counted.
    pub permit: Option<OwnedSemaphorePermit>,
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
            permit: None,
        }
    }

    /// The `source` label it is counted under.
    pub fn source(&self) -> &str {
        self.metrics.name()
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
