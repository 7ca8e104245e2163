//! One request's context, which every phase of its life takes (as pingora's phases take
//! `ctx`): the routes it started with, when it arrived, what was seen of it, the source it was
//! routed to and the guard that counts it.

use std::sync::Arc;

use http::Request;
use tokio::time::Instant;

use super::outcome::{GrpcCall, Pending};
use super::routes::{Routes, Target};

/// How a request reached the proxy.
pub enum Via {
    /// The proxy listener.
    Listener,
    /// Inside a `CONNECT` tunnel to this host.
    Tunnel(Arc<str>),
}

/// What the phases after the rewrite still need of the connector's request, which has gone
/// upstream by then.
pub struct Seen {
    pub method: http::Method,
    /// A gRPC call (`content-type: application/grpc` over HTTP/2, which gRPC needs): it goes
    /// upstream over HTTP/2. Over HTTP/1.1 the header is not looked up at all.
    pub grpc: Option<GrpcCall>,
    /// For log lines (a reference-counted clone, not a copy).
    pub uri: http::Uri,
    /// The redacted path and query, made once when debug lines are logged.
    logged_path: Option<String>,
    /// The `Host` header (or the absolute-form URI's host), when debug lines are logged.
    logged_host: Option<String>,
}

/// One request, from its arrival to the answer handed to hyper.
pub struct Exchange<'r> {
    pub routes: &'r Routes,
    /// When the request arrived: its duration runs from here.
    pub start: Instant,
    pub seen: Seen,
    /// The source, once routed.
    pub target: Option<&'r Target>,
    /// Counts the request once, from admission (or refusal) on.
    pub outcome: Option<Pending>,
}

impl<'r> Exchange<'r> {
    pub fn new<B>(routes: &'r Routes, start: Instant, req: &Request<B>) -> Self {
        let mut seen = Seen {
            method: req.method().clone(),
            grpc: (req.version() == http::Version::HTTP_2
                && crate::observe::grpc::is_grpc(req.headers()))
            .then(|| GrpcCall::new(start, req.headers())),
            uri: req.uri().clone(),
            logged_path: None,
            logged_host: None,
        };
        if tracing::enabled!(tracing::Level::DEBUG) {
            seen.logged_path = Some(Self::redact(routes, &seen.uri));
            let host = req.headers().get(http::header::HOST);
            seen.logged_host = host
                .and_then(|h| h.to_str().ok())
                .or(seen.uri.host())
                .map(str::to_owned);
        }
        Exchange {
            routes,
            start,
            seen,
            target: None,
            outcome: None,
        }
    }

    /// The request's path and query with credentials redacted, as every log line gives it.
    pub fn path(&self) -> String {
        match &self.seen.logged_path {
            Some(p) => p.clone(),
            None => Self::redact(self.routes, &self.seen.uri),
        }
    }

    /// The redacted path, when debug lines are logged.
    pub fn logged_path(&self) -> Option<&str> {
        self.seen.logged_path.as_deref()
    }

    /// The host the request named, when debug lines are logged.
    pub fn logged_host(&self) -> Option<&str> {
        self.seen.logged_host.as_deref()
    }

    fn redact(routes: &Routes, uri: &http::Uri) -> String {
        routes
            .redact
            .path_and_query(uri.path(), uri.query())
            .into_owned()
    }

    /// The `source` label the request is counted under, once it is.
    pub fn source(&self) -> &str {
        self.outcome.as_ref().map_or("", Pending::source)
    }
}
