//! `CONNECT`, what clients send for `https://` URLs through `HTTPS_PROXY`.
//!
//! With `proxy.intercept` on, a `CONNECT` to a host a source names (on port 443 or the port
//! of that source's upstream) is answered 200 and the tunnel is served as remedy's own TLS:
//! the SNI must name the `CONNECT` host, the certificate is that host's leaf from the
//! interception CA, and every request inside goes through [`super::handle`] like any other,
//! routed to that host's source. A `CONNECT` to a `proxy.intercept.tunnel` entry is passed
//! through unobserved; any other is refused 403. With interception off every `CONNECT` is
//! refused 405. Each is counted in `remedy_intercept_connections_total`.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http::header::HeaderValue;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::exchange::{Exchange, Via};
use super::respond::{self, Answer};
use super::response_body::ResponseBody;
use super::routes::Routes;
use crate::intercept_ca::Authority;
use crate::metrics::ConnectOutcome;
use crate::proxy::drain::{Drain, Watcher};
use crate::proxy::listener::{Answering, Guarded, InService, Limits, Requests, Slots};
use crate::proxy::route::NoRoute;

/// How long a tunnelled host has to accept the TCP connection.
const TUNNEL_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the proxy listener lends its tunnels: the live routes, its HTTP settings and limits,
/// and the drain that tunnels' connections join. A tunnel keeps the `max_connections` slot of
/// the connection it was opened on, since that connection's bytes carry it.
pub struct Tunnels {
    routes: Arc<ArcSwap<Routes>>,
    http: http1::Builder,
    limits: Limits,
    slots: Arc<Slots>,
    /// Taken at shutdown: a `CONNECT` after it is refused.
    graceful: Mutex<Option<Drain>>,
}

impl Tunnels {
    pub fn new(
        routes: Arc<ArcSwap<Routes>>,
        http: http1::Builder,
        limits: Limits,
        slots: Arc<Slots>,
    ) -> Arc<Self> {
        Arc::new(Tunnels {
            routes,
            http,
            limits,
            slots,
            graceful: Mutex::new(Some(Drain::default())),
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
        let (host, port) =
            target(req.uri()).ok_or(NoRoute::BadHost("a CONNECT names host:port"))?;
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
                routes.connects.count(ConnectOutcome::Intercepted);
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
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let limit = self.limits.header_read;
        let hello = tokio_rustls::LazyConfigAcceptor::new(
            rustls::server::Acceptor::default(),
            TokioIo::new(upgraded),
        );
        let start = match tokio::time::timeout(limit, hello).await {
            Ok(Ok(start)) => start,
            Ok(Err(e)) => {
                tracing::debug!(%host, error = %e, "tunnel closed before a TLS ClientHello");
                return;
            }
            Err(_) => {
                tracing::debug!(%host, "no TLS ClientHello within proxy.header_read_timeout");
                return;
            }
        };
        // Clients send no SNI for an IP address.
        let sni = start.client_hello().server_name().map(str::to_owned);
        let named = match &sni {
            Some(name) => name.eq_ignore_ascii_case(&host),
            None => host.parse::<IpAddr>().is_ok(),
        };
        if !named {
            tracing::warn!(
                connect_host = %host,
                sni = sni.as_deref().unwrap_or(""),
                "TLS handshake refused: the SNI does not name the CONNECT host"
            );
            return;
        }
        let config = match authority.server_config(&host, SystemTime::now()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(%host, error = %e, "no certificate for an intercepted host");
                return;
            }
        };
        let tls = match tokio::time::timeout(limit, start.into_stream(config)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                // Usually the connector does not trust remedy's CA: say where it is.
                tracing::warn!(
                    %host,
                    error = %e,
                    "TLS handshake with the connector failed; does it trust bundle.pem from proxy.intercept.ca_dir?"
                );
                return;
            }
            Err(_) => {
                tracing::debug!(%host, "TLS handshake not done within proxy.header_read_timeout");
                return;
            }
        };
        let requests = Arc::new(Requests::default());
        let io = Guarded::new(tls, requests.clone(), self.limits, self.slots.clone());
        let routes = self.routes.clone();
        let tunnel_host: Arc<str> = host.into();
        let service = service_fn(move |req| {
            let (refuse, request) = requests.serve();
            let answered = super::handle(
                routes.load_full(),
                client_ip.clone(),
                refuse,
                req,
                Via::Tunnel(tunnel_host.clone()),
            );
            async move { Ok::<_, Infallible>(answered.await.map(|b| Answering::new(b, request))) }
        });
        let conn = self.http.serve_connection(TokioIo::new(io), service);
        if let Err(e) = watcher.watch(conn, |c| c.graceful_shutdown()).await {
            tracing::debug!(error = %e, "tunnelled connection ended with an error");
            respond::count_parser_refusal(&self.routes.load(), &e);
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

/// The `CONNECT` target as a lower-case host (IPv6 without brackets) and a port.
fn target(uri: &http::Uri) -> Option<(String, u16)> {
    let authority = uri.authority()?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    (!host.is_empty()).then(|| {
        (
            host.to_ascii_lowercase(),
            authority.port_u16().unwrap_or(443),
        )
    })
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
