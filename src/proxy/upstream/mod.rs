//! Connections to one upstream API: keep-alive pools, TLS by rustls (public roots plus an
//! optional CA file), HTTP/2 by ALPN, and the `connect` / `response_header` timeouts. A
//! failure becomes an [`ErrorKind`], which the proxy turns into a 502 or 504.
//!
//! A plain-HTTP upstream's requests without a body go through [`Pool`], whose connections
//! the request's own task drives. TLS upstreams, and uploads, use hyper-util's client, which
//! gives each connection a task of its own: an upload then keeps flowing to the upstream even
//! while the connector is not reading an early answer.

pub mod failure;
pub mod pool;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use http_body::Body;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

use crate::config::SourceConfig;
use crate::metrics::ErrorKind;
use crate::proxy::causes::{connection_broke, peer_reset_reason};
use crate::proxy::request_body::{BadRequest, ConnectorBody};
pub use crate::proxy::upstream::failure::Failure;
use crate::proxy::upstream::pool::{HeadLimits, Lease, Pool};

/// What the upstream may send of one HTTP/2 stream before remedy has passed it on to the
/// connector: the most a stalled call holds in remedy's memory.
pub const UPSTREAM_STREAM_WINDOW: u32 = 1024 * 1024;

/// The same for all of an HTTP/2 connection's streams together. Every call to a source shares
/// one connection, and h2 gives a connection's window back only as the connector reads, so a
/// window near the sum of a few streams' (hyper's default is 5 MiB for 2 MiB streams) lets three
/// calls whose connectors read slowly stall every other call to the API. A gigabyte, as Go's
/// HTTP/2 transport has it, leaves each stream bounded by its own window alone.
pub const UPSTREAM_CONNECTION_WINDOW: u32 = 1 << 30;

/// Why a request got no response head: the upstream's failure, or the connector's.
#[derive(Debug)]
pub enum SendError {
    Upstream(Failure),
    Connector(BadRequest),
    /// A gRPC call, and the upstream negotiated HTTP/1.1 (or, over `http://`, did not speak
    /// HTTP/2 with prior knowledge): gRPC needs HTTP/2.
    NoHttp2,
    /// A gRPC call whose stream the API reset before its head, with this HTTP/2 error code:
    /// the API's answer, which a gRPC client reads as a status.
    GrpcReset(u32),
}

impl From<Failure> for SendError {
    fn from(f: Failure) -> Self {
        SendError::Upstream(f)
    }
}

/// What [`UpstreamClient::send`] gives: the response head, or why there is none.
pub type Sent = Result<Response<UpstreamBody>, SendError>;

/// What the pool's send gives: the response head and its connection's lease, or the failure
/// (`None`: no head by the deadline).
type PoolSent = Result<(Response<Incoming>, Lease), Option<Failure>>;

/// The connection pools for one source.
pub struct UpstreamClient {
    scheme: Scheme,
    authority: Authority,
    client: Client<HttpsConnector<HttpConnector>, ConnectorBody>,
    /// For `http://` upstreams.
    direct: Option<Arc<Pool>>,
    /// For gRPC calls to `http://` upstreams: HTTP/2 with prior knowledge (h2c).
    h2c: Option<Client<HttpConnector, ConnectorBody>>,
    response_header: Duration,
}

/// Why a source's client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("CA file: {0}")]
    CaFile(#[from] crate::pem::PemError),
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
}

impl UpstreamClient {
    pub fn new(source: &SourceConfig) -> Result<Self, BuildError> {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = &source.ca_file {
            roots = crate::pem::add_roots(path, roots)?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();

        let t = &source.timeouts;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(t.connect.0));
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(60)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http.clone());
        let upstream = &source.upstream;
        let head = HeadLimits {
            headers: source.max_response_headers,
            bytes: source.max_response_header_bytes,
        };
        let direct = (upstream.scheme == Scheme::HTTP).then(|| {
            let origin = Uri::builder()
                .scheme(Scheme::HTTP)
                .authority(upstream.authority.clone())
                .path_and_query("/")
                .build()
                .expect("a scheme and an authority make a URI");
            Pool::new(origin, http.clone(), t.idle.0, head)
        });
        let mut client = Client::builder(TokioExecutor::new());
        client
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(t.idle.0)
            .http1_max_buf_size(head.read_buffer())
            .http2_initial_stream_window_size(UPSTREAM_STREAM_WINDOW)
            .http2_initial_connection_window_size(UPSTREAM_CONNECTION_WINDOW)
            .http2_max_header_list_size(u32::try_from(head.bytes).unwrap_or(u32::MAX));
        if head.headers != 100 {
            client.http1_max_headers(head.headers);
        }
        let h2c = direct
            .is_some()
            .then(|| client.clone().http2_only(true).build(http));
        let client = client.build(https);
        Ok(UpstreamClient {
            scheme: upstream.scheme.clone(),
            authority: upstream.authority.clone(),
            client,
            direct,
            h2c,
            response_header: t.response_header.0,
        })
    }

    /// Sends `req` to `path` on the upstream and waits for the response head, within the
    /// `response_header` timeout counted from `start` (when the request arrived). The body
    /// that comes back drives the connection it arrives on, and hands it back to the pool
    /// once read whole. A gRPC call (`grpc`) goes over HTTP/2, which gRPC needs.
    ///
    /// Not an `async fn`: the future it gives is the pool's or the client's own, so the
    /// request's phases await it directly instead of through one more state machine that
    /// would hold and copy the request once more.
    pub fn send(
        &self,
        path: PathAndQuery,
        mut req: Request<Incoming>,
        start: Instant,
        grpc: bool,
    ) -> Sending<'_, impl Future<Output = PoolSent> + '_, impl Future<Output = Sent> + '_> {
        let deadline = start + self.response_header;
        // The upstream hop is remedy's own: HTTP/1.1 or HTTP/2 as the upstream's ALPN says,
        // whatever the connector spoke; HTTP/2 only for gRPC.
        *req.version_mut() = if grpc {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        match &self.direct {
            Some(pool) if !grpc && req.body().is_end_stream() => {
                *req.uri_mut() = Uri::from(path);
                Sending::Pooled {
                    sent: pool.send(req, deadline),
                    client: self,
                }
            }
            _ => Sending::Client {
                sent: self.send_by_client(path, req, deadline, grpc),
            },
        }
    }

    /// [`Self::send`] through hyper-util's client: a TLS upstream, an upload, or a gRPC call.
    async fn send_by_client(
        &self,
        path: PathAndQuery,
        mut req: Request<Incoming>,
        deadline: Instant,
        grpc: bool,
    ) -> Sent {
        *req.uri_mut() = Uri::from_parts({
            let mut uri = http::uri::Parts::default();
            uri.scheme = Some(self.scheme.clone());
            uri.authority = Some(self.authority.clone());
            uri.path_and_query = Some(path);
            uri
        })
        .expect("a scheme, an authority and a path make a URI");
        let (parts, body) = req.into_parts();
        let (body, watch) = ConnectorBody::new(body);
        let req = Request::from_parts(parts, body);
        let sent = match &self.h2c {
            Some(h2c) if grpc => h2c.request(req),
            _ => self.client.request(req),
        };
        let failure = match tokio::time::timeout_at(deadline, sent).await {
            Ok(Ok(resp)) => return Ok(resp.map(|body| UpstreamBody::new(body, None))),
            // hyper-util's error kinds are private: its text is all that tells (a test
            // with an HTTP/1.1-only upstream keeps this honest across upgrades).
            Ok(Err(e)) if grpc && e.to_string().contains("UserUnsupportedVersion") => {
                return Err(SendError::NoHttp2);
            }
            Ok(Err(e)) if grpc && let Some(reason) = peer_reset_reason(&e) => {
                return Err(SendError::GrpcReset(reason));
            }
            // An `http://` upstream that does not speak HTTP/2 with prior knowledge answers
            // its preface as an HTTP/1.1 request, and closes.
            Ok(Err(e)) if grpc && self.h2c.is_some() && !e.is_connect() && connection_broke(&e) => {
                return Err(SendError::NoHttp2);
            }
            Ok(Err(e)) => Failure::from_error(&e, ErrorKind::Reset),
            Err(_) => self.timed_out(),
        };
        // A body that broke, or that the upstream was still waiting for, is the
        // connector's failure whatever the upstream connection then did.
        let timed_out = failure.kind == ErrorKind::Timeout;
        Err(match watch.and_then(|w| w.blame(timed_out)) {
            Some(bad) => SendError::Connector(bad),
            None => SendError::Upstream(failure),
        })
    }

    fn timed_out(&self) -> Failure {
        Failure {
            out_of_descriptors: false,
            kind: ErrorKind::Timeout,
            cause: format!(
                "no response head within the response_header timeout of {:?}",
                self.response_header
            ),
        }
    }
}

pin_project_lite::pin_project! {
    /// [`UpstreamClient::send`]'s future: the pool's send, its answer made an
    /// [`UpstreamBody`] that holds the connection's lease, or the client's.
    #[project = SendingProj]
    pub enum Sending<'a, P, C> {
        Pooled {
            #[pin]
            sent: P,
            client: &'a UpstreamClient,
        },
        Client {
            #[pin]
            sent: C,
        },
    }
}

impl<P, C> Future for Sending<'_, P, C>
where
    P: Future<Output = PoolSent>,
    C: Future<Output = Sent>,
{
    type Output = Sent;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            SendingProj::Pooled { sent, client } => sent.poll(cx).map(|sent| match sent {
                Ok((resp, lease)) => Ok(resp.map(|body| UpstreamBody::new(body, Some(lease)))),
                Err(failure) => Err(failure.unwrap_or_else(|| client.timed_out()).into()),
            }),
            SendingProj::Client { sent } => sent.poll(cx),
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body from the upstream. On a pooled connection it drives that connection
    /// as it is read, and marks it reusable once the body has ended.
    pub struct UpstreamBody {
        #[pin]
        body: Incoming,
        lease: Option<Lease>,
    }
}

impl UpstreamBody {
    fn new(body: Incoming, mut lease: Option<Lease>) -> Self {
        if let Some(l) = lease.as_mut() {
            l.set_complete(body.is_end_stream());
        }
        UpstreamBody { body, lease }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, hyper::Error>>> {
        use std::task::Poll;
        let mut this = self.project();
        if let Some(l) = this.lease.as_mut() {
            l.drive(cx);
        }
        let polled = this.body.as_mut().poll_frame(cx);
        if let Some(l) = this.lease.as_mut() {
            match &polled {
                Poll::Ready(Some(Ok(_))) => l.set_complete(this.body.is_end_stream()),
                Poll::Ready(None) => l.set_complete(true),
                _ => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
