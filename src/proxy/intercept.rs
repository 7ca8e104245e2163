//! `CONNECT`, what clients send for `https://` URLs through `HTTPS_PROXY`.
//!
//! With `proxy.intercept` on, a `CONNECT` to a host a source names (on port 443 or the port
//! of that source's upstream) is answered 200 and the tunnel is served as remedy's own TLS:
//! the SNI must name the `CONNECT` host, the certificate is that host's leaf from the
//! interception CA, and every request inside goes through [`super::handle`] like any other,
//! routed to that host's source. A `CONNECT` to a `proxy.intercept.tunnel` entry is passed
//! through unobserved; any other is refused 403. With interception off every `CONNECT` is
//! refused 405. Each is counted in `remedy_intercept_connections_total`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http::header::HeaderValue;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;

use super::exchange::{Exchange, Via};
use super::respond::{self, Answer};
use super::response_body::ResponseBody;
use super::routes::Routes;
use super::stalled::Watched;
use crate::intercept_ca::Authority;
use crate::metrics::ConnectOutcome;
use crate::proxy::drain::{Drain, Watcher};
use crate::proxy::listener::h2_refusals::Refusal;
use crate::proxy::listener::limits::within;
use crate::proxy::listener::{Guarded, InService, Limits, RefusalCounter, Requests, Served, Slots};
use crate::proxy::route::NoRoute;

/// How long a tunnelled host has to accept the TCP connection.
const TUNNEL_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the proxy listener lends its tunnels: the live routes, its HTTP settings and limits,
/// and the drain that tunnels' connections join. A tunnel keeps the `max_connections` slot of
/// the connection it was opened on, since that connection's bytes carry it.
pub struct Tunnels {
    routes: Arc<ArcSwap<Routes>>,
    http: http1::Builder,
    /// HTTP/2, for a connector that negotiates it by ALPN.
    h2: http2::Builder<TokioExecutor>,
    limits: Limits,
    slots: Arc<Slots>,
    /// Taken at shutdown: a `CONNECT` after it is refused.
    graceful: Mutex<Option<Drain>>,
    handshakes: HandshakeLog,
}

impl Tunnels {
    pub fn new(
        routes: Arc<ArcSwap<Routes>>,
        http: http1::Builder,
        h2: http2::Builder<TokioExecutor>,
        limits: Limits,
        slots: Arc<Slots>,
    ) -> Arc<Self> {
        Arc::new(Tunnels {
            routes,
            http,
            h2,
            limits,
            slots,
            graceful: Mutex::new(Some(Drain::default())),
            handshakes: HandshakeLog::default(),
        })
    }

    /// Stops opening tunnels and waits for the requests in open ones to be answered.
    pub async fn shutdown(&self) {
        let graceful = self
            .graceful
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(g) = graceful {
            g.shutdown().await;
        }
    }

    /// A watcher for one tunnel's connection, unless the listener is shutting down.
    fn watcher(&self) -> Option<Watcher> {
        self.graceful
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(Drain::watcher)
    }

    /// Answers one `CONNECT` and, for a tunnel, leaves a task to serve it once hyper hands
    /// the connection over. `request` keeps it in service on its connection until answered.
    pub async fn connect(
        self: Arc<Self>,
        routes: Arc<Routes>,
        request: &InService,
        mut req: Request<Incoming>,
        client_ip: HeaderValue,
    ) -> Response<ResponseBody> {
        let mut ex = Exchange::new(&routes, Instant::now(), &req);
        match self.decide(&routes, &req) {
            Err(no) => {
                routes.connects.count(ConnectOutcome::Refused);
                respond::render(&mut ex, Answer::Refused(no))
            }
            Ok(opened) => match self.watcher() {
                None => respond::render(&mut ex, Answer::ShuttingDown),
                Some(watcher) => {
                    let upgrade = hyper::upgrade::on(&mut req);
                    match self
                        .open(&routes, opened, upgrade, request, client_ip, watcher)
                        .await
                    {
                        Ok(()) => {
                            let mut resp = Response::new(ResponseBody::Full { data: None });
                            *resp.status_mut() = StatusCode::OK;
                            resp
                        }
                        Err(failed) => respond::render(&mut ex, failed),
                    }
                }
            },
        }
    }

    /// What a `CONNECT` opens: an intercepted or a passed-through tunnel, or why neither.
    fn decide(&self, routes: &Routes, req: &Request<Incoming>) -> Result<Opened, NoRoute> {
        let Some(intercept) = &routes.intercept else {
            return Err(NoRoute::Connect);
        };
        let (host, port) = target(req.uri()).ok_or(NoRoute::BadConnectTarget)?;
        let tunnelled = |host: &str| {
            intercept
                .tunnels
                .iter()
                .any(|(h, p)| h == host && *p == port)
        };
        match routes.router.by_host(&host) {
            Some(source) if port == 443 || port == routes.targets[source].upstream_port() => {
                Ok(Opened::Intercepted { host })
            }
            None if tunnelled(&host) => Ok(Opened::Tunnelled { host, port }),
            _ => Err(NoRoute::ConnectRefused),
        }
    }

    /// Opens the tunnel `opened` once the `CONNECT` is answered: intercepted, served by a task
    /// of its own; passed through, spliced to the host once it takes the connection.
    async fn open(
        self: &Arc<Self>,
        routes: &Routes,
        opened: Opened,
        upgrade: OnUpgrade,
        request: &InService,
        client_ip: HeaderValue,
        watcher: Watcher,
    ) -> Result<(), Answer> {
        match opened {
            Opened::Tunnelled { host, port } => {
                let upstream = tokio::time::timeout(
                    TUNNEL_CONNECT_TIMEOUT,
                    TcpStream::connect((host.as_str(), port)),
                )
                .await;
                routes.connects.count(ConnectOutcome::Tunnelled);
                let upstream = match upstream {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return Err(tunnel_failed(host, port, e.to_string())),
                    Err(_) => return Err(tunnel_failed(host, port, "timed out".into())),
                };
                tracing::debug!(%host, port, "CONNECT tunnelled unobserved");
                request.open_tunnel();
                tokio::spawn(splice(upgrade, upstream));
            }
            Opened::Intercepted { host } => {
                request.open_tunnel();
                let authority = routes
                    .intercept
                    .as_ref()
                    .map(|i| i.authority.clone())
                    .expect("decided with interception on");
                spawn_serve(self.clone(), upgrade, host, authority, client_ip, watcher);
            }
        }
        Ok(())
    }

    /// Serves a tunnel as remedy's TLS, and the requests inside it.
    async fn serve(
        self: Arc<Self>,
        upgrade: OnUpgrade,
        host: String,
        authority: Arc<Authority>,
        client_ip: HeaderValue,
        watcher: Watcher,
    ) {
        let connects = self.routes.load().connects.clone();
        let tls = match self.handshake(upgrade, &host, &authority).await {
            Ok(tls) => tls,
            Err(failed) => {
                connects.count(ConnectOutcome::HandshakeFailed);
                self.handshakes.failed(&host, failed);
                return;
            }
        };
        connects.count(ConnectOutcome::Intercepted);
        let http2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let requests = Arc::new(Requests::default());
        let routes = self.routes.clone();
        let tunnel_host: Arc<str> = host.into();
        // Each request through the phases. Written out once for each kind of connection, so
        // that each dispatcher has a service of its own type: it is then the service's only
        // caller, inlines it, and makes each request's future in place rather than copy it in.
        macro_rules! service {
            ($requests:expr) => {{
                let requests = $requests.clone();
                service_fn(move |req| {
                    let (refuse, request) = requests.serve();
                    let (routes, client_ip) = (routes.load_full(), client_ip.clone());
                    let via = Via::Tunnel(tunnel_host.clone());
                    Served::phases(super::handle(routes, client_ip, refuse, req, via), request)
                })
            }};
        }
        let (limits, slots) = (self.limits, self.slots.clone());
        let ended = if http2 {
            // Each stream forwards on an upstream connection of its own (HTTP/1.1 upstreams):
            // the tunnel's slot covers one stream at a time, every other stream takes a slot of
            // the listener's, or waits for one, so that max_connections bounds descriptors.
            let own = Arc::new(Semaphore::new(1));
            let service = {
                let (requests, slots) = (requests.clone(), slots.clone());
                service_fn(move |req| {
                    let (refuse, request) = requests.serve();
                    let (routes, client_ip) = (routes.load_full(), client_ip.clone());
                    let via = Via::Tunnel(tunnel_host.clone());
                    let (own, slots) = (own.clone(), slots.clone());
                    let send_timeout = limits.send;
                    let phases = async move {
                        let slot = match own.clone().try_acquire_owned() {
                            Ok(own) => Some(own),
                            Err(_) => tokio::select! {
                                own = own.acquire_owned() => own.ok(),
                                shared = slots.take() => shared,
                            },
                        };
                        let resp = super::handle(routes, client_ip, refuse, req, via).await;
                        resp.map(|body| Watched::new(body, slot, send_timeout, slots))
                    };
                    Served::phases(phases, request)
                })
            };
            let (idle, idle_slots) = (requests.clone(), slots.clone());
            let idle = async move { idle.idle(limits, &idle_slots).await };
            let counted = self.routes.clone();
            let count: RefusalCounter =
                Arc::new(move |r: Refusal| respond::count_refusal(&counted.load(), r.status()));
            let io = Guarded::http2(tls, requests, limits, slots).counting_refusals(count);
            let conn = self.h2.serve_connection(TokioIo::new(io), service);
            watcher.watch(conn, idle, |c| c.graceful_shutdown()).await
        } else {
            let service = service!(requests);
            let io = TokioIo::new(Guarded::new(tls, requests, limits, slots));
            let conn = self.http.serve_connection(io, service);
            let idle = std::future::pending();
            watcher.watch(conn, idle, |c| c.graceful_shutdown()).await
        };
        if let Some(Err(e)) = ended {
            tracing::debug!(error = %e, "tunnelled connection ended with an error");
            respond::count_parser_refusal(&self.routes.load(), &e);
        }
    }
}

impl Tunnels {
    /// remedy's TLS with the connector inside the tunnel: the SNI must name the `CONNECT` host
    /// (clients send none for an IP address), and each step must come within
    /// `proxy.header_read_timeout`, or a second while the listener runs out of slots.
    async fn handshake(
        &self,
        upgrade: OnUpgrade,
        host: &str,
        authority: &Authority,
    ) -> Result<TlsStream<TokioIo<Upgraded>>, Handshake> {
        let limit = self.limits.header_read;
        let upgraded = upgrade.await.map_err(|_| Handshake::Closed)?;
        let hello = tokio_rustls::LazyConfigAcceptor::new(
            rustls::server::Acceptor::default(),
            TokioIo::new(upgraded),
        );
        let start = within(hello, limit, &self.slots)
            .await
            .ok_or(Handshake::TimedOut)?
            .map_err(|_| Handshake::Closed)?;
        let sni = start.client_hello().server_name().map(str::to_owned);
        let named = match &sni {
            Some(name) => name.eq_ignore_ascii_case(host),
            None => host.parse::<IpAddr>().is_ok(),
        };
        if !named {
            return Err(Handshake::OtherHost(sni.unwrap_or_default()));
        }
        let config = authority
            .server_config(host, SystemTime::now())
            .map_err(|e| Handshake::NoCertificate(e.to_string()))?;
        within(start.into_stream(config), limit, &self.slots)
            .await
            .ok_or(Handshake::TimedOut)?
            .map_err(|e| Handshake::Failed(e.to_string()))
    }
}

/// Why a tunnel's TLS handshake with the connector did not complete.
#[derive(Debug)]
enum Handshake {
    /// The connector closed the tunnel before its ClientHello.
    Closed,
    /// No ClientHello, or no finished handshake, in time.
    TimedOut,
    /// The ClientHello's SNI names another host than the `CONNECT`.
    OtherHost(String),
    /// No certificate could be made for the host.
    NoCertificate(String),
    /// The handshake failed: mostly a connector that does not trust remedy's CA.
    Failed(String),
}

impl std::fmt::Display for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Handshake::Closed => f.write_str("the tunnel closed before a TLS ClientHello"),
            Handshake::TimedOut => f.write_str(
                "no TLS handshake within proxy.header_read_timeout (a second while \
                 proxy.max_connections was nearly reached)",
            ),
            Handshake::OtherHost(sni) => write!(
                f,
                "the SNI {sni:?} does not name the CONNECT host; open a tunnel for each host"
            ),
            Handshake::NoCertificate(e) => write!(f, "no certificate for the host: {e}"),
            Handshake::Failed(e) => write!(
                f,
                "{e}; does the connector trust bundle.pem from proxy.intercept.ca_dir?"
            ),
        }
    }
}

/// How often each host's failed handshakes are logged: a connector that does not trust
/// remedy's CA fails every attempt, and a line for each would flood the log.
const HANDSHAKE_LOG_EVERY: Duration = Duration::from_secs(60);

/// Failed handshakes per host since its last warn line.
#[derive(Default)]
struct HandshakeLog(Mutex<HashMap<String, (Option<Instant>, u64)>>);

impl HandshakeLog {
    /// One warn line per host per [`HANDSHAKE_LOG_EVERY`], with the failures since the last;
    /// a connector that closes before its ClientHello is a debug line.
    fn failed(&self, host: &str, why: Handshake) {
        if matches!(why, Handshake::Closed) {
            tracing::debug!(%host, "{why}");
            return;
        }
        let mut hosts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (last, count) = hosts.entry(host.to_owned()).or_insert((None, 0));
        *count += 1;
        let now = Instant::now();
        if last.is_none_or(|at| now.duration_since(at) >= HANDSHAKE_LOG_EVERY) {
            tracing::warn!(
                %host,
                failed = *count,
                cause = %why,
                "TLS handshakes with the connector failed (one line per host per minute; \
                 remedy_intercept_connections_total{{outcome=\"handshake_failed\"}} counts them all)"
            );
            *last = Some(now);
            *count = 0;
        }
    }
}

/// A plain function, so that the type of [`Tunnels::connect`]'s future does not contain the
/// tunnel's, which contains the requests' (and so `connect`'s) again.
fn spawn_serve(
    tunnels: Arc<Tunnels>,
    upgrade: OnUpgrade,
    host: String,
    authority: Arc<Authority>,
    client_ip: HeaderValue,
    watcher: Watcher,
) {
    tokio::spawn(tunnels.serve(upgrade, host, authority, client_ip, watcher));
}

/// A tunnel a `CONNECT` may open.
enum Opened {
    /// remedy's TLS; the requests inside are routed to `host`'s source and counted.
    Intercepted { host: String },
    /// Passed through to `host:port` unobserved (`proxy.intercept.tunnel`).
    Tunnelled { host: String, port: u16 },
}

fn tunnel_failed(host: String, port: u16, cause: String) -> Answer {
    Answer::TunnelFailed { host, port, cause }
}

/// The `CONNECT` target as a lower-case host (IPv6 without brackets) and a port: the
/// authority form `host:port` and nothing else (RFC 9112 §3.2.3), with a port of digits from 1
/// to 65535. A scheme, a path, userinfo, or a port that is missing, empty, signed or out of
/// range is no target.
fn target(uri: &http::Uri) -> Option<(String, u16)> {
    if uri.scheme().is_some() || uri.path_and_query().is_some() {
        return None;
    }
    let authority = uri.authority()?;
    if authority.as_str().contains('@') {
        return None;
    }
    let port = authority.port()?;
    let digits = port.as_str();
    let port = (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse::<u16>().ok())
        .flatten()
        .filter(|p| *p > 0)?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    (!host.is_empty()).then(|| (host.to_ascii_lowercase(), port))
}

/// Copies a passed-through tunnel both ways until either side closes.
async fn splice(upgrade: OnUpgrade, mut upstream: TcpStream) {
    let Ok(upgraded) = upgrade.await else {
        return;
    };
    let mut connector = TokioIo::new(upgraded);
    if let Err(e) = tokio::io::copy_bidirectional(&mut connector, &mut upstream).await {
        tracing::debug!(error = %e, "tunnel ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every form a `CONNECT` target may take, as a row: what remedy reads of it, or nothing
    /// (answered 400). RFC 9112 §3.2.3: the authority form, `host:port`, and nothing else.
    #[test]
    fn connect_targets_are_the_authority_form_and_nothing_else() {
        for (written, read) in [
            ("api.example.com:443", Some(("api.example.com", 443))),
            ("API.Example.COM:8443", Some(("api.example.com", 8443))),
            ("127.0.0.1:443", Some(("127.0.0.1", 443))),
            ("[::1]:443", Some(("::1", 443))),
            ("api.example.com:65535", Some(("api.example.com", 65535))),
            ("api.example.com", None),
            ("api.example.com:", None),
            ("api.example.com:0", None),
            ("api.example.com:65536", None),
            ("api.example.com:+443", None),
            ("user@api.example.com:443", None),
            ("https://api.example.com:443", None),
            ("api.example.com:443/path", None),
            (":443", None),
        ] {
            let uri: Option<http::Uri> = written.parse().ok();
            let got = uri.as_ref().and_then(target);
            let got = got.as_ref().map(|(h, p)| (h.as_str(), *p));
            assert_eq!(got, read, "{written}");
        }
    }
}
