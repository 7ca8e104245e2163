//! A tunnelled HTTP/2 stream's response body under a watchdog. h2 sends a stream's data only as
//! far as the connector's window lets it, and hyper does not ask for a stream's next frame while
//! its window is closed: `proxy.send_timeout`, which watches the connection's socket writes,
//! never sees such a stream, since the socket itself is free. Here each stream is watched: one
//! that has handed hyper a frame and not been asked for the next for `send_timeout` (a second
//! while `proxy.max_connections` runs out) is cut. Its upstream body and connection slot are
//! let go and it is counted at once; the connector gets the stream's reset the next time hyper
//! looks at it (its window opens, or the connection ends).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::Instant;

use super::listener::Slots;
use super::response_body::ResponseBody;

/// The body, and the connection slot its stream holds, until it ends or is cut.
type Held = (Pin<Box<ResponseBody>>, Option<OwnedSemaphorePermit>);

struct Shared {
    held: Mutex<Option<Held>>,
    /// When the body last handed hyper a frame without being asked for the next one since, in
    /// nanoseconds after `born`; 0 while it is not waiting.
    waiting_since: AtomicU64,
    born: Instant,
    /// The watchdog cut the body: hyper is to reset the stream, not end it.
    cut: AtomicBool,
    /// The body ended or hyper dropped it: the watchdog has nothing more to watch.
    done: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Held>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A stream's body, as hyper polls it.
pub struct Watched(Arc<Shared>);

/// The stream was cut: what hyper resets it with.
#[derive(Debug, thiserror::Error)]
#[error("the connector read nothing of the stream for proxy.send_timeout; cut")]
pub struct Cut;

impl Watched {
    /// `body` holding `slot`; a watchdog on a task of its own cuts it once it has waited for
    /// the connector past `send_timeout` (or a second while `slots` run out).
    pub fn new(
        body: ResponseBody,
        slot: Option<OwnedSemaphorePermit>,
        send_timeout: Duration,
        slots: Arc<Slots>,
    ) -> Self {
        let streamed = body.is_streamed();
        let shared = Arc::new(Shared {
            held: Mutex::new(Some((Box::pin(body), slot))),
            waiting_since: AtomicU64::new(0),
            born: Instant::now(),
            cut: AtomicBool::new(false),
            done: Notify::new(),
        });
        if streamed {
            tokio::spawn(watch(shared.clone(), send_timeout, slots));
        }
        Watched(shared)
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.0.done.notify_one();
    }
}

/// How often a watchdog looks again while its body is waiting: slots may run out meanwhile.
const LOOK_AGAIN: Duration = Duration::from_secs(1);

async fn watch(s: Arc<Shared>, send_timeout: Duration, slots: Arc<Slots>) {
    loop {
        let now = Instant::now();
        let limit = slots.allow(send_timeout);
        let next = match s.waiting_since.load(Relaxed) {
            0 => now + limit,
            since => {
                let since = s.born + Duration::from_nanos(since);
                if now >= since + limit {
                    s.cut.store(true, Relaxed);
                    let held = s.lock().take();
                    if let Some((body, _slot)) = held {
                        // Dropped here, off hyper's task: the upstream's body, the slot.
                        Pin::into_inner(body).cut(now - since);
                    }
                    return;
                }
                (since + limit).min(now + LOOK_AGAIN)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = s.done.notified() => return,
        }
    }
}

impl Body for Watched {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let s = &self.0;
        s.waiting_since.store(0, Relaxed);
        let mut held = s.lock();
        let Some((body, _)) = held.as_mut() else {
            return Poll::Ready(Some(Err(Cut.into())));
        };
        let polled = body.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) => {
                let nanos = s.born.elapsed().as_nanos().try_into().unwrap_or(u64::MAX);
                s.waiting_since.store(nanos.max(1), Relaxed);
            }
            // Ended or failed: let the slot and the watchdog go now, not when hyper drops it.
            Poll::Ready(_) => {
                *held = None;
                s.done.notify_one();
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        !self.0.cut.load(Relaxed)
            && self
                .0
                .lock()
                .as_ref()
                .is_none_or(|(body, _)| body.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.0
            .lock()
            .as_ref()
            .map_or_else(SizeHint::default, |(body, _)| body.size_hint())
    }
}
