//! The proxy listener's limits on one connection: how long a head may take, how long a write
//! may wait for the connector to read, and the listener's connection slots, which shorten that
//! wait while they run out.

use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use crate::proxy::deadline::LazyDeadline;

/// The proxy listener's limits for one connection, from `proxy`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `proxy.header_read_timeout`.
    pub header_read: Duration,
    /// `proxy.send_timeout`.
    pub send: Duration,
    /// `proxy.max_headers`, so that the smuggling guard parses every header hyper accepts.
    pub max_headers: usize,
    /// `proxy.http2.idle_timeout`.
    pub http2_idle: Duration,
}

/// The proxy listener's connection slots (`proxy.max_connections`), as the send timeout sees
/// them: while nearly all are taken, a connector that has read nothing for a second loses its
/// connection, so that readers that stop reading cannot lock out those that read.
#[derive(Debug)]
pub struct Slots {
    free: Arc<tokio::sync::Semaphore>,
    /// Free slots at or below which the listener is under pressure.
    reserve: usize,
}

/// How long a stalled write may wait while the listener is under pressure, and how often a
/// stalled write looks again.
const UNDER_PRESSURE: Duration = Duration::from_secs(1);

impl Slots {
    /// `free` holds the listener's `max_connections` permits; a tenth of them is the reserve.
    pub fn new(free: Arc<tokio::sync::Semaphore>, max_connections: usize) -> Arc<Self> {
        Arc::new(Slots {
            free,
            reserve: (max_connections / 10).max(1),
        })
    }

    /// A slot for one more exchange on a connection that holds one already (a stream of an
    /// HTTP/2 tunnel beyond its first), once one is free; `None` once the listener has closed
    /// its slots.
    pub async fn take(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.free.clone().acquire_owned().await.ok()
    }

    fn under_pressure(&self) -> bool {
        self.free.available_permits() <= self.reserve
    }

    /// `limit`, or a second while the listener is under pressure.
    pub fn allow(&self, limit: Duration) -> Duration {
        if self.under_pressure() {
            limit.min(UNDER_PRESSURE)
        } else {
            limit
        }
    }
}

/// Whether a connection idle since `since` has waited past `limit`, or past a second while the
/// listener is under pressure (looked at again each second): a connection that has sent no
/// request yet, or a tunnel that has finished its handshake and sends nothing, cannot keep a
/// connector that would send a request waiting for its slot.
pub fn poll_idle_limit(
    since: Instant,
    limit: Duration,
    slots: &Slots,
    deadline: &mut LazyDeadline,
    cx: &mut Context<'_>,
) -> Poll<Duration> {
    loop {
        let now = Instant::now();
        let allowed = slots.allow(limit);
        if now >= since + allowed {
            return Poll::Ready(allowed);
        }
        if !deadline.poll_passed((since + allowed).min(now + UNDER_PRESSURE), cx) {
            return Poll::Pending;
        }
    }
}

/// `fut`'s output, if it comes within `limit`, or within a second while the listener's slots
/// are nearly all taken (looked at again each second): a connection that has sent nothing yet
/// (a tunnel's TLS handshake, say) cannot keep others waiting for its slot.
pub async fn within<F: std::future::Future>(
    fut: F,
    limit: Duration,
    slots: &Slots,
) -> Option<F::Output> {
    let start = Instant::now();
    let mut fut = std::pin::pin!(fut);
    loop {
        let now = Instant::now();
        let allowed = slots.allow(limit);
        if now >= start + allowed {
            return None;
        }
        let look_again = (start + allowed).min(now + UNDER_PRESSURE);
        if let Ok(out) = tokio::time::timeout_at(look_again, &mut fut).await {
            return Some(out);
        }
    }
}

/// A write that waited: an error once the connector has read nothing for `send_timeout` (or
/// for a second, while the listener's slots are nearly all taken), so that hyper aborts the
/// response and frees what it holds; otherwise wait, looking again at least every second.
pub fn poll_send_timeout<T>(
    blocked: &mut Option<Instant>,
    deadline: &mut LazyDeadline,
    (timeout, slots): (Duration, &Slots),
    polled: Poll<io::Result<T>>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<T>> {
    if polled.is_ready() {
        *blocked = None;
        return polled;
    }
    let since = *blocked.get_or_insert_with(Instant::now);
    loop {
        let now = Instant::now();
        let limit = slots.allow(timeout);
        if now >= since + limit {
            let why = if limit < timeout {
                "the connector read nothing for a second while proxy.max_connections was nearly reached".to_owned()
            } else {
                format!("the connector read nothing for proxy.send_timeout ({timeout:?})")
            };
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)));
        }
        if !deadline.poll_passed((since + limit).min(now + UNDER_PRESSURE), cx) {
            return Poll::Pending;
        }
    }
}
