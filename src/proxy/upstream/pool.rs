//! Plain-HTTP/1.1 upstream connections, kept idle between requests and driven by the request
//! that holds them.
//!
//! hyper-util's pooled client runs each connection as a task of its own and passes every
//! request and response head across channels to it, so a proxied request wakes two or three
//! tasks. Here the request's task polls the upstream connection itself, while it waits for the
//! head and while the body streams back: the connector's socket, the upstream's and the
//! bookkeeping between them are one task, as in nginx's event loop. A connection goes back to
//! the pool only after a complete exchange, when hyper says it is ready for the next request.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response, Uri, header};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant as Deadline;
use tower_service::Service;

use crate::metrics::ErrorKind;
use crate::proxy::deadline::LazyDeadline;
use crate::proxy::upstream::failure::Failure;

/// The most an upstream connection buffers of what it reads, unless a larger response head
/// must fit.
pub const UPSTREAM_READ_BUFFER: usize = 64 * 1024;

/// What a response head from the upstream may hold (`max_response_headers`,
/// `max_response_header_bytes`); a head over either is an error hyper reports as a parse error.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub headers: usize,
    pub bytes: usize,
}

impl HeadLimits {
    /// The read buffer: [`UPSTREAM_READ_BUFFER`], or more when a head may be larger.
    pub fn read_buffer(&self) -> usize {
        self.bytes.max(UPSTREAM_READ_BUFFER)
    }
}

/// Idle connections to one upstream, most recently used last.
pub struct Pool {
    idle: Mutex<Vec<Idle>>,
    connector: HttpConnector,
    /// `http://host:port`, what the connector dials.
    origin: Uri,
    /// The `Host` header for requests that do not keep the connector's.
    host: HeaderValue,
    idle_timeout: Duration,
    head: HeadLimits,
    sweeping: AtomicBool,
}

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

struct Conn {
    sender: SendRequest<Incoming>,
    /// `None` once the connection has closed.
    driver: Option<Connection<TokioIo<TcpStream>, Incoming>>,
    /// The response-head deadline, one timer for all the connection's requests.
    head_deadline: LazyDeadline,
}

impl Conn {
    /// Lets the connection read and write; forgets it once it has closed.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(driver) = &mut self.driver
            && Pin::new(driver).poll(cx).is_ready()
        {
            self.driver = None;
        }
    }

    /// Whether a new request can be sent now. Polls once without a waker, which is enough to
    /// notice a peer's close or finish the previous exchange's bookkeeping.
    fn is_reusable(&mut self) -> bool {
        if !self.sender.is_ready() {
            self.drive(&mut Context::from_waker(Waker::noop()));
        }
        self.driver.is_some() && self.sender.is_ready()
    }
}

impl Pool {
    /// A pool for `origin` (`http://host[:port]`), with idle connections closed after
    /// `idle_timeout`.
    pub fn new(
        origin: Uri,
        connector: HttpConnector,
        idle_timeout: Duration,
        head: HeadLimits,
    ) -> Arc<Self> {
        let host = origin
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .unwrap_or_else(|| HeaderValue::from_static(""));
        Arc::new(Pool {
            idle: Mutex::new(Vec::new()),
            connector,
            origin,
            host,
            idle_timeout,
            head,
            sweeping: AtomicBool::new(false),
        })
    }

    /// Sends `req` (origin-form URI) and drives the connection until the response head, which
    /// must come by `deadline` (`Err(None)` when it does not). A request that a reused
    /// connection closed before taking is sent once more on a new connection, as hyper-util's
    /// client does.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
        deadline: Deadline,
    ) -> Result<(Response<Incoming>, Lease), Option<Failure>> {
        if !req.headers().contains_key(header::HOST) {
            req.headers_mut().insert(header::HOST, self.host.clone());
        }
        let (mut conn, mut reused) = match self.checkout() {
            Some(conn) => (conn, true),
            None => (self.connect_by(deadline).await?, false),
        };
        loop {
            match exchange(&mut conn, req, deadline).await {
                Ok(resp) => {
                    let lease = Lease {
                        conn: Some(conn),
                        pool: self.clone(),
                        complete: false,
                    };
                    return Ok((resp, lease));
                }
                Err(Unanswered::Failed {
                    unsent: Some(unsent),
                    ..
                }) if reused => {
                    req = *unsent;
                    conn = self.connect_by(deadline).await?;
                    reused = false;
                }
                Err(Unanswered::Failed { error, .. }) => {
                    return Err(Some(Failure::from_error(&error, ErrorKind::Reset)));
                }
                Err(Unanswered::TimedOut) => return Err(None),
            }
        }
    }

    async fn connect_by(
        self: &Arc<Self>,
        deadline: Deadline,
    ) -> Result<Box<Conn>, Option<Failure>> {
        match tokio::time::timeout_at(deadline, Box::pin(self.connect())).await {
            Ok(conn) => conn.map_err(Some),
            Err(_) => Err(None),
        }
    }

    fn checkout(&self) -> Option<Box<Conn>> {
        loop {
            let mut idle = self.lock().pop()?;
            if idle.since.elapsed() < self.idle_timeout && idle.conn.is_reusable() {
                return Some(idle.conn);
            }
        }
    }

    async fn connect(self: &Arc<Self>) -> Result<Box<Conn>, Failure> {
        let io = self
            .connector
            .clone()
            .call(self.origin.clone())
            .await
            .map_err(|e| Failure::from_error(&e, ErrorKind::Connect))?;
        // Flat writes: a request head goes out in one `write`. Reads of at most 64 KiB: an
        // answer the connector is slow to take waits upstream (in the kernel's socket buffer),
        // not in remedy's memory.
        let mut http = http1::Builder::new();
        http.writev(false)
            .max_buf_size(self.head.read_buffer())
            .max_header_size(self.head.bytes);
        // hyper keeps up to 100 header slots on the stack; any other count puts them on the
        // heap for every response.
        if self.head.headers != 100 {
            http.max_headers(self.head.headers);
        }
        let (sender, driver) = http
            .handshake(io)
            .await
            .map_err(|e| Failure::from_error(&e, ErrorKind::Connect))?;
        self.start_sweeping();
        Ok(Box::new(Conn {
            sender,
            driver: Some(driver),
            head_deadline: LazyDeadline::default(),
        }))
    }

    /// Expired connections are left to checkout and the sweeper.
    fn put(&self, conn: Box<Conn>) {
        let since = Instant::now();
        self.lock().push(Idle { conn, since });
    }

    /// Closes connections idle past the timeout, for pools that see no more traffic.
    fn start_sweeping(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool: Weak<Pool> = Arc::downgrade(self);
        let every = self.idle_timeout.max(Duration::from_millis(100));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(pool) = pool.upgrade() else { return };
                let now = Instant::now();
                pool.lock().retain(|i| now - i.since < pool.idle_timeout);
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why an exchange brought no response head.
enum Unanswered {
    /// With the request when the connection closed before taking it.
    Failed {
        error: hyper::Error,
        unsent: Option<Box<Request<Incoming>>>,
    },
    TimedOut,
}

/// Sends one request and polls the connection until its response head arrives.
async fn exchange(
    conn: &mut Conn,
    req: Request<Incoming>,
    deadline: Deadline,
) -> Result<Response<Incoming>, Unanswered> {
    let mut head = pin!(conn.sender.try_send_request(req));
    poll_fn(|cx| {
        conn.drive(cx);
        match head.as_mut().poll(cx) {
            Poll::Ready(Ok(resp)) => Poll::Ready(Ok(resp)),
            Poll::Ready(Err(mut e)) => Poll::Ready(Err(Unanswered::Failed {
                unsent: e.take_message().map(Box::new),
                error: e.into_error(),
            })),
            Poll::Pending if conn.head_deadline.poll_passed(deadline, cx) => {
                Poll::Ready(Err(Unanswered::TimedOut))
            }
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// A connection in use by one response. The response body drives it; dropped after the
/// body ended, it goes back to the pool, otherwise it is closed.
pub struct Lease {
    conn: Option<Box<Conn>>,
    pool: Arc<Pool>,
    complete: bool,
}

impl Lease {
    /// Lets the connection read the rest of the response.
    pub fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(conn) = &mut self.conn {
            conn.drive(cx);
        }
    }

    /// Marks the response as fully read, which makes the connection reusable.
    pub fn set_complete(&mut self, complete: bool) {
        self.complete = complete;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take()
            && self.complete
            && conn.is_reusable()
        {
            self.pool.put(conn);
        }
    }
}
