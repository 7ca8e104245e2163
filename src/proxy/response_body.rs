//! The body sent to the connector: the upstream's, streamed frame by frame under the
//! source's `idle` timeout, or one remedy wrote. The request's [`Pending`] guard rides in
//! the streamed body and records the outcome when the body ends, fails or is dropped.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::causes::{causes, reset_reason};
use super::deadline::LazyDeadline;
use super::outcome::Pending;
use super::upstream::UpstreamBody;
use crate::observe::{body_errors, grpc};

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
            observe: Observe,
        },
        Full { data: Option<Bytes> },
    }
}

/// What the body is read for on its way, besides its end and, for a gRPC answer whose status
/// was not in its head, the trailers (the request's guard says whether it waits for them).
pub struct Observe {
    /// The source's `body_errors` reader, until it has its answer.
    pub reader: Option<Box<body_errors::Reader>>,
}

impl Observe {
    /// Shows `frame` to the readers; what they conclude goes to `pending`.
    fn frame(&mut self, frame: &Frame<Bytes>, pending: &mut Option<Pending>) {
        if let Some(reader) = &mut self.reader
            && let Some(data) = frame.data_ref()
            && let body_errors::Read::Done(errors) = reader.read(data)
        {
            self.reader = None;
            if let Some(p) = pending {
                p.api_errors_found(errors);
            }
        }
        if let (Some(trailers), Some(p)) = (frame.trailers_ref(), pending)
            && p.grpc.is_some()
        {
            p.grpc_status(grpc::Status::in_trailers(trailers));
        }
    }

    /// After a frame: `ended`, the body has no more. hyper ends an HTTP/2 stream with the
    /// last frame and may not ask for the end, so what the end concludes is concluded here.
    fn end_if(&mut self, ended: bool, pending: &mut Option<Pending>) {
        let waiting = self.reader.is_some() || pending.as_ref().is_some_and(|p| p.grpc.is_some());
        if waiting && ended {
            self.end(pending);
        }
    }

    /// The body ended whole.
    fn end(&mut self, pending: &mut Option<Pending>) {
        if let Some(p) = pending {
            if let Some(reader) = self.reader.take() {
                p.api_errors_found(reader.finish());
            }
            p.grpc_ended();
        }
    }
}

/// HTTP/2's `INTERNAL_ERROR`, which hyper's server resets a stream with when its body fails
/// without a reason of its own (an upstream connection that broke, remedy's idle timeout).
const INTERNAL_ERROR: u32 = 0x2;

/// The upstream paused longer than the source's `idle` timeout inside a body.
#[derive(Debug, thiserror::Error)]
#[error("upstream body idle for longer than {0:?}")]
pub struct IdleTimeout(Duration);

impl ResponseBody {
    /// Whether the body streams the upstream's (rather than one remedy wrote).
    pub fn is_streamed(&self) -> bool {
        matches!(self, ResponseBody::Stream { .. })
    }

    /// The connector has read nothing of this body for `waited` while it had more to send (its
    /// HTTP/2 window stayed closed): the response is given up, counted as the reset its
    /// connector will get, and the upstream's body dropped with it.
    pub fn cut(self, waited: Duration) {
        if let ResponseBody::Stream {
            pending: Some(mut p),
            ..
        } = self
        {
            p.grpc_reset(INTERNAL_ERROR);
            tracing::warn!(
                source = p.source(),
                status = p.status,
                ?waited,
                "the connector read nothing of an HTTP/2 stream for proxy.send_timeout (a second \
                 while proxy.max_connections is nearly reached); the stream is cut"
            );
        }
    }

    /// The upstream's body on its way to the connector; `held` is what was already read of
    /// it: a frame, or the failure that is passed on once the head has gone.
    pub(super) fn streaming(
        body: UpstreamBody,
        held: Option<Result<Frame<Bytes>, hyper::Error>>,
        idle_after: Duration,
        pending: Pending,
        observe: Observe,
    ) -> Self {
        let (held, deferred) = match held {
            Some(Ok(frame)) => (Some(frame), None),
            Some(Err(e)) => (None, Some(e)),
            None => (None, None),
        };
        ResponseBody::Stream {
            body,
            held,
            sent: false,
            deferred,
            idle: LazyDeadline::default(),
            idle_after,
            last_progress: None,
            pending: Some(pending),
            observe,
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
                observe,
            } => {
                if let Some(frame) = held.take() {
                    *sent = true;
                    observe.frame(&frame, pending);
                    if deferred.is_none() {
                        observe.end_if(body.is_end_stream(), pending);
                    }
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
                        observe.frame(&frame, pending);
                        observe.end_if(body.is_end_stream(), pending);
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
                        if let Some(mut p) = pending.take() {
                            p.grpc_reset(reset_reason(&e).unwrap_or(INTERNAL_ERROR));
                            tracing::warn!(
                                source = p.source(),
                                status = p.status,
                                cause = %causes(&e),
                                "upstream failed mid-body; the connector sees a broken response"
                            );
                        }
                        Poll::Ready(Some(Err(e.into())))
                    }
                    Poll::Ready(None) => {
                        observe.end(pending);
                        pending.take();
                        Poll::Ready(None)
                    }
                    Poll::Pending => {
                        let since = *last_progress.get_or_insert_with(Instant::now);
                        if !idle.poll_passed(since + *idle_after, cx) {
                            return Poll::Pending;
                        }
                        if let Some(mut p) = pending.take() {
                            p.grpc_reset(INTERNAL_ERROR);
                            tracing::warn!(
                                source = p.source(),
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
