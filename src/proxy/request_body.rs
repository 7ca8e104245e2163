//! The connector's request body on its way to the upstream, watched, so that a failure on the
//! connector's side (broken chunked framing, a body cut short, a connector that stops sending)
//! is told apart from the upstream's.
//!
//! hyper reports a request body that fails while it is being sent as a failed request, the
//! same as a reset from the upstream; over HTTP/2 it resets the stream and the body's error is
//! not in the chain at all. So the body itself notes what went wrong, in a [`Watch`] the proxy
//! reads when the exchange fails, and blames the connector (400, `origin="proxy"`) instead of
//! the upstream.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// Why the connector's request could not be forwarded whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadRequest {
    /// The body's framing is broken (a bad chunk size, a missing CRLF): hyper's words.
    Framing(String),
    /// The connector ended its side of the connection (a FIN) before its body was complete;
    /// it may still read the answer.
    CutShort,
    /// The connection broke (a reset) before the body was complete: nobody reads an answer.
    Gone,
    /// The connector stopped sending its body, and the upstream waited for the rest.
    Stalled,
}

impl BadRequest {
    /// Whether the connector has gone and can read no answer (then counted as 499).
    pub fn connector_gone(&self) -> bool {
        matches!(self, BadRequest::Gone)
    }

    /// A short reason for the debug line.
    pub fn short(&self) -> &'static str {
        match self {
            BadRequest::Framing(_) => "malformed body",
            BadRequest::CutShort => "body cut short",
            BadRequest::Gone => "connection lost mid-body",
            BadRequest::Stalled => "body stalled",
        }
    }
}

impl BadRequest {
    /// hyper reports a framing error as an `InvalidInput` or `InvalidData` I/O error inside a
    /// body error, an end of the connector's bytes as an incomplete message or an
    /// `UnexpectedEof`, and a broken connection as any other I/O error.
    fn from_body_error(e: &hyper::Error) -> Self {
        use io::ErrorKind::{InvalidData, InvalidInput, UnexpectedEof};
        let io = std::error::Error::source(e).and_then(|c| c.downcast_ref::<io::Error>());
        match io {
            Some(io) if matches!(io.kind(), InvalidData | InvalidInput) => {
                BadRequest::Framing(io.to_string())
            }
            Some(io) if io.kind() == UnexpectedEof => BadRequest::CutShort,
            Some(_) => BadRequest::Gone,
            None if e.is_incomplete_message() => BadRequest::CutShort,
            None => BadRequest::Framing(super::causes::causes(e)),
        }
    }
}

impl fmt::Display for BadRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadRequest::Framing(cause) => write!(f, "the request body is malformed: {cause}"),
            BadRequest::CutShort => {
                f.write_str("the connector ended its side before the request body was complete")
            }
            BadRequest::Gone => {
                f.write_str("the connection broke before the request body was complete")
            }
            BadRequest::Stalled => f.write_str(
                "the request body stopped arriving before the upstream answered \
                 (the upstream waited for the rest)",
            ),
        }
    }
}

impl std::error::Error for BadRequest {}

/// What the body saw, shared with the proxy's handler.
#[derive(Debug, Default)]
pub struct Watch {
    failed: OnceLock<BadRequest>,
    /// The last poll found the connector had sent nothing new.
    waiting: AtomicBool,
    ended: AtomicBool,
}

impl Watch {
    /// Why the body failed, if it did; once the response head did not come in time, also a
    /// body that was still waiting for the connector.
    pub fn blame(&self, head_timed_out: bool) -> Option<BadRequest> {
        if let Some(bad) = self.failed.get() {
            return Some(bad.clone());
        }
        let stalled = head_timed_out
            && !self.ended.load(Ordering::Acquire)
            && self.waiting.load(Ordering::Acquire);
        stalled.then_some(BadRequest::Stalled)
    }
}

/// The connector's body, passing every frame through unchanged.
pub struct ConnectorBody {
    inner: Incoming,
    /// `None` for a request without a body, which has nothing to watch.
    watch: Option<Arc<Watch>>,
}

impl ConnectorBody {
    /// The body to send, and the watch over it when there is a body at all.
    pub fn new(inner: Incoming) -> (Self, Option<Arc<Watch>>) {
        let watch = (!inner.is_end_stream()).then(Arc::default);
        (
            ConnectorBody {
                inner,
                watch: watch.clone(),
            },
            watch,
        )
    }
}

impl Body for ConnectorBody {
    type Data = Bytes;
    type Error = BadRequest;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BadRequest>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let Some(watch) = &self.watch else {
            return polled.map_err(|e| BadRequest::Framing(e.to_string()));
        };
        watch.waiting.store(polled.is_pending(), Ordering::Release);
        match polled {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Some(Err(e))) => {
                let bad = BadRequest::from_body_error(&e);
                let _ = watch.failed.set(bad.clone());
                Poll::Ready(Some(Err(bad)))
            }
            Poll::Ready(None) => {
                watch.ended.store(true, Ordering::Release);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
