//! Each connection of the proxy listener (and of an intercepted tunnel): its bytes watched by
//! the smuggling guard ([`framing`]), its time limits and slot ([`limits`]), and its requests
//! as the service sees them.
//!
//! [`Guarded`] wraps the connection's IO. Reads pass through untouched and go to the guard; a
//! read fails when the guard meets a line too long to follow, or when no request head came
//! within `proxy.header_read_timeout`. Writes pass through untouched and fail when the
//! connector has read nothing for `proxy.send_timeout` (a second, while the listener is nearly
//! out of slots). hyper arms and drops a timer for every request; these are armed once per
//! connection and move only when they fire ([`LazyDeadline`]).

pub mod framing;
pub mod h2;
pub mod h2_refusals;
pub mod limits;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Response;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::proxy::deadline::LazyDeadline;
use crate::proxy::trim::Open;
use framing::{Framer, Verdicts};
use h2_refusals::{FrameWatch, Refusal};
pub use limits::{Limits, Slots};

/// One connection's requests, as its reader and its service both see them.
#[derive(Debug)]
pub struct Requests {
    /// What the smuggling guard said of each head.
    verdicts: Verdicts,
    /// Requests handed to the service.
    served: AtomicU64,
    /// Requests in service: handed over and their response not yet sent.
    in_flight: AtomicU64,
    /// When the connection last had no request in service, in nanoseconds after `born`.
    idle_since: AtomicU64,
    born: Instant,
    /// A `CONNECT` was answered 200: the bytes from here on are a tunnel's, not requests.
    tunnel: AtomicBool,
    /// The connection's `proxy.max_connections` slot, held as long as the connection's bytes
    /// are read: through a tunnel too, which outlives the connection's HTTP serving.
    _slot: Option<(tokio::sync::OwnedSemaphorePermit, Open)>,
}

impl Default for Requests {
    fn default() -> Self {
        Requests {
            verdicts: Verdicts::default(),
            served: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            born: Instant::now(),
            tunnel: AtomicBool::new(false),
            _slot: None,
        }
    }
}

impl Requests {
    /// A connection's requests, holding its listener slot and its place among the open
    /// connections until the last of its bytes.
    pub fn holding(slot: tokio::sync::OwnedSemaphorePermit, open: Open) -> Self {
        Requests {
            _slot: Some((slot, open)),
            ..Requests::default()
        }
    }

    /// Takes the next request into service: whether it must be refused, and a guard that
    /// marks it answered when dropped (with the response body).
    pub fn serve(self: &Arc<Self>) -> (bool, InService) {
        let index = self.served.fetch_add(1, Relaxed);
        self.in_flight.fetch_add(1, Relaxed);
        (self.verdicts.refuses(index), InService(self.clone()))
    }

    /// Once an HTTP/2 connection has had no stream for `limits.http2_idle`, or none at all for
    /// `limits.header_read` (a second for either while the listener is nearly out of slots):
    /// then it is closed with a GOAWAY rather than cut, with `header_read` to end (given).
    pub async fn idle(&self, limits: Limits, slots: &Slots) -> Duration {
        let mut deadline = LazyDeadline::default();
        std::future::poll_fn(|cx| {
            loop {
                let Some(since) = self.idle_since() else {
                    // Streams in service: look again later.
                    if deadline.poll_passed(Instant::now() + limits.header_read, cx) {
                        continue;
                    }
                    return Poll::Pending;
                };
                let limit = if self.served.load(Relaxed) == 0 {
                    limits.header_read
                } else {
                    limits.http2_idle
                };
                return limits::poll_idle_limit(since, limit, slots, &mut deadline, cx)
                    .map(|_| limits.header_read);
            }
        })
        .await
    }

    /// The moment from which the header read timeout runs, if no request is in service.
    fn idle_since(&self) -> Option<Instant> {
        (self.in_flight.load(Relaxed) == 0 && !self.tunnel.load(Relaxed))
            .then(|| self.born + Duration::from_nanos(self.idle_since.load(Relaxed)))
    }
}

/// A request in service; dropped once its response has been handed to the connection.
#[derive(Debug)]
pub struct InService(Arc<Requests>);

impl InService {
    /// This request is a `CONNECT` answered 200: the guard stops reading the connection as
    /// requests and its header read timeout stops, since the tunnel's own connection keeps
    /// them from here on.
    pub fn open_tunnel(&self) {
        self.0.tunnel.store(true, Relaxed);
    }
}

impl Drop for InService {
    fn drop(&mut self) {
        let r = &self.0;
        if r.in_flight.fetch_sub(1, Relaxed) == 1 {
            let nanos = r.born.elapsed().as_nanos().try_into().unwrap_or(u64::MAX);
            r.idle_since.store(nanos, Relaxed);
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in service until hyper drops it, which it does
    /// once the body has ended (or the connection has).
    pub struct Answering<B> {
        #[pin]
        body: B,
        request: InService,
    }
}

impl<B> Answering<B> {
    pub fn new(body: B, request: InService) -> Self {
        Answering { body, request }
    }
}

/// A `CONNECT`'s answer on its way to hyper, boxed: [`Served::Boxed`].
pub type BoxedAnswer<B> = Pin<Box<dyn Future<Output = Response<Answering<B>>> + Send>>;

pin_project_lite::pin_project! {
    /// What hyper awaits for one request: the request's `phases`, whose response body then
    /// goes out in [`Answering`] with its request. Written out rather than as an `async` block
    /// around the phases, which would keep the request's arguments a second time beside the
    /// phases' state and copy the whole of it once more on its first poll.
    #[project = ServedProj]
    pub enum Served<F, B> {
        Phases {
            #[pin]
            phases: F,
            request: Option<InService>,
        },
        /// A `CONNECT`: boxed, so that the rare case adds a pointer, not its state, to
        /// every request.
        Boxed { answer: BoxedAnswer<B> },
    }
}

impl<F, B> Served<F, B> {
    pub fn phases(phases: F, request: InService) -> Self {
        Served::Phases {
            phases,
            request: Some(request),
        }
    }
}

impl<F: Future<Output = Response<B>>, B> Future for Served<F, B> {
    type Output = Result<Response<Answering<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ServedProj::Phases { phases, request } => {
                let resp = std::task::ready!(phases.poll(cx));
                let request = request.take().expect("a request is answered once");
                Poll::Ready(Ok(resp.map(|body| Answering::new(body, request))))
            }
            ServedProj::Boxed { answer } => answer.as_mut().poll(cx).map(Ok),
        }
    }
}

impl<B: Body> Body for Answering<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.project().body.poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A connection's IO: every byte passes through untouched, read by the smuggling guard;
    /// reads fail on a line too long to follow or a head that does not come in time, writes on
    /// a connector that stopped reading.
    pub struct Guarded<IO> {
        #[pin]
        inner: IO,
        // The smuggling guard, for HTTP/1.1; HTTP/2 frames every message itself.
        framer: Option<Framer>,
        requests: Arc<Requests>,
        header_deadline: LazyDeadline,
        limits: Limits,
        slots: Arc<Slots>,
        // Since when writes to the connector have waited for it to read, if they do now.
        write_blocked: Option<Instant>,
        send_deadline: LazyDeadline,
        // No byte has been read yet: the first ones may be an HTTP/2 preface.
        fresh: bool,
        // HTTP/2's own refusals, read off what is written, and who counts them.
        refusals: Option<(FrameWatch, RefusalCounter)>,
    }
}

/// Counts a refusal of the HTTP/2 layer ([`h2_refusals`]).
pub type RefusalCounter = Arc<dyn Fn(Refusal) + Send + Sync>;

impl<IO> Guarded<IO> {
    /// An HTTP/1.1 connection's IO, watched by the smuggling guard.
    pub fn new(inner: IO, requests: Arc<Requests>, limits: Limits, slots: Arc<Slots>) -> Self {
        Self::with_framer(inner, requests, limits, slots, true)
    }

    /// An HTTP/2 connection's IO: the same limits, no HTTP/1.1 framing to follow.
    pub fn http2(inner: IO, requests: Arc<Requests>, limits: Limits, slots: Arc<Slots>) -> Self {
        Self::with_framer(inner, requests, limits, slots, false)
    }

    fn with_framer(
        inner: IO,
        requests: Arc<Requests>,
        limits: Limits,
        slots: Arc<Slots>,
        http1: bool,
    ) -> Self {
        Guarded {
            inner,
            framer: http1.then(|| Framer::new(limits.max_headers)),
            requests,
            header_deadline: LazyDeadline::default(),
            limits,
            slots,
            write_blocked: None,
            send_deadline: LazyDeadline::default(),
            fresh: http1,
            refusals: None,
        }
    }

    /// An HTTP/2 connection's refusals of its own, read off its writes, go to `count`.
    pub fn counting_refusals(mut self, count: RefusalCounter) -> Self {
        self.refusals = Some((FrameWatch::default(), count));
        self
    }
}

/// Shows what a write took of `bufs` (`written` bytes) to the refusals' watch, if any.
fn watch_written<'b>(
    refusals: &mut Option<(FrameWatch, RefusalCounter)>,
    bufs: impl IntoIterator<Item = &'b [u8]>,
    written: usize,
) {
    let Some((watch, count)) = refusals else {
        return;
    };
    let mut left = written;
    for b in bufs {
        let n = left.min(b.len());
        watch.observe(&b[..n], |r| count(r));
        left -= n;
        if left == 0 {
            break;
        }
    }
}

impl<IO: AsyncRead + AsyncWrite> AsyncRead for Guarded<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut this = self.project();
        let before = buf.filled().len();
        match this.inner.as_mut().poll_read(cx, buf) {
            Poll::Ready(Ok(())) if this.requests.tunnel.load(Relaxed) => Poll::Ready(Ok(())),
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if std::mem::take(this.fresh) && h2::is_preface(new) {
                    // Best effort, which a fresh connection's socket takes at once; hyper then
                    // fails the connection on the preface, and the refusal is counted.
                    let _ = this.inner.poll_write(cx, h2::REFUSAL);
                }
                let Some(framer) = this.framer else {
                    return Poll::Ready(Ok(()));
                };
                match framer.observe(&this.requests.verdicts, new) {
                    Ok(()) => Poll::Ready(Ok(())),
                    Err(why) => Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why))),
                }
            }
            // Only a read that has to wait needs the deadline, to be woken by it.
            Poll::Pending => {
                let Some(since) = this.requests.idle_since() else {
                    return Poll::Pending;
                };
                // An HTTP/2 connection's idle limits end it with a GOAWAY: [`Requests::idle`].
                if this.framer.is_none() {
                    return Poll::Pending;
                }
                let limit = this.limits.header_read;
                let first = this.requests.served.load(Relaxed) == 0;
                let waited = if first {
                    limits::poll_idle_limit(since, limit, this.slots, this.header_deadline, cx)
                } else if this.header_deadline.poll_passed(since + limit, cx) {
                    Poll::Ready(limit)
                } else {
                    Poll::Pending
                };
                waited.map(|waited| {
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "no request head within {waited:?} (proxy.header_read_timeout, or a \
                             second while proxy.max_connections is nearly reached)"
                        ),
                    ))
                })
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }
}

impl<IO: AsyncWrite> AsyncWrite for Guarded<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            watch_written(this.refusals, [buf], n);
        }
        let limits = (this.limits.send, &**this.slots);
        limits::poll_send_timeout(this.write_blocked, this.send_deadline, limits, polled, cx)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let polled = this.inner.poll_flush(cx);
        let limits = (this.limits.send, &**this.slots);
        limits::poll_send_timeout(this.write_blocked, this.send_deadline, limits, polled, cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            watch_written(this.refusals, bufs.iter().map(|b| &**b), n);
        }
        let limits = (this.limits.send, &**this.slots);
        limits::poll_send_timeout(this.write_blocked, this.send_deadline, limits, polled, cx)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
