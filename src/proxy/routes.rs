//! The live config as the proxy uses it: the router, each source ready to forward to (its
//! client, metric handles, in-flight cap and quota readers), the redactor for log lines and,
//! while `proxy.intercept` is on, the CA and the tunnels. Built whole for each config and
//! swapped whole on reload; a request keeps the routes it started with.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::uri::PathAndQuery;
use http::{HeaderMap, StatusCode};
use tokio::sync::Semaphore;

use crate::config::{self, SourceConfig};
use crate::endpoints::Endpoints;
use crate::intercept_ca::Authority;
use crate::metrics::{Connects, Recorder, SourceMetrics};
use crate::observe::{body_errors, ratelimit};
use crate::proxy::redact::Redactor;
use crate::proxy::route::Router;
use crate::proxy::upstream::{self, UpstreamClient};

/// Everything a request needs from the live config.
pub struct Routes {
    pub(super) router: Router,
    pub(super) redact: Redactor,
    pub(super) targets: Vec<Target>,
    /// The handles of requests no source takes (`source="unmatched"`).
    pub(super) unmatched: Arc<SourceMetrics>,
    /// Present while `proxy.intercept` is on.
    pub(super) intercept: Option<Intercepting>,
    pub(super) connects: Connects,
}

/// `proxy.intercept` as the live config has it.
pub(super) struct Intercepting {
    pub(super) authority: Arc<Authority>,
    /// `proxy.intercept.tunnel`, as host and port.
    pub(super) tunnels: Vec<(String, u16)>,
}

/// One source, ready to forward to.
pub struct Target {
    pub(super) upstream_url: config::UpstreamUrl,
    pub(super) preserve_host: bool,
    pub(super) idle: Duration,
    pub(super) client: UpstreamClient,
    pub(super) metrics: Arc<SourceMetrics>,
    pub(super) limit: Option<Arc<Semaphore>>,
    /// Where the API reports errors inside a JSON body, when the source says.
    pub(super) body_errors: Option<Arc<body_errors::Rules>>,
    /// The endpoints the source declares (`routes`), when it does.
    pub(super) endpoints: Option<Endpoints>,
    /// How the API states a reset, when its vendor is known.
    reset_style: ratelimit::ResetStyle,
    /// The IETF rate-limit policy the API last announced.
    policies: ratelimit::Policies,
}

impl Routes {
    /// The handles the source `name` counts with in these routes.
    pub fn source_metrics(&self, name: &str) -> Option<&Arc<SourceMetrics>> {
        self.targets
            .iter()
            .map(|t| &t.metrics)
            .find(|m| m.name() == name)
    }

    /// Builds clients and metric handles for every source of `config`; `authority` signs
    /// for the tunnels while `proxy.intercept` is on.
    pub fn new(
        config: &config::Config,
        recorder: &Recorder,
        authority: Option<Arc<Authority>>,
    ) -> Result<Self, (usize, upstream::BuildError)> {
        let targets = config
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| Target::new(s, recorder, &config.catalog).map_err(|e| (i, e)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Routes {
            router: Router::new(&config.sources),
            redact: Redactor::new(&config.proxy.log_query_params),
            targets,
            unmatched: Arc::new(recorder.unmatched(&config.catalog)),
            intercept: authority.map(|authority| Intercepting {
                authority,
                tunnels: config
                    .proxy
                    .intercept
                    .tunnel
                    .iter()
                    .filter_map(|t| config::tunnel_target(t).ok())
                    .collect(),
            }),
            connects: recorder.connects(),
        })
    }
}

impl Target {
    fn new(
        s: &SourceConfig,
        recorder: &Recorder,
        catalog: &crate::catalog::Catalog,
    ) -> Result<Self, upstream::BuildError> {
        Ok(Target {
            upstream_url: s.upstream.clone(),
            preserve_host: s.preserve_host,
            idle: s.timeouts.idle.0,
            client: UpstreamClient::new(s)?,
            metrics: Arc::new(recorder.source_with_routes(s.name.as_str(), catalog, &s.routes)),
            limit: s.max_in_flight.map(|n| Arc::new(Semaphore::new(n.get()))),
            body_errors: s.body_errors.as_ref().map(|b| {
                let rules = body_errors::Rules::compile(b, s.body_errors_max_bytes);
                Arc::new(rules.expect("validated with the config"))
            }),
            endpoints: (!s.routes.is_empty())
                .then(|| Endpoints::new(&s.routes).expect("validated with the config")),
            reset_style: ratelimit::ResetStyle::for_host(s.upstream.authority.host()),
            policies: ratelimit::Policies::default(),
        })
    }

    /// The path and query to send upstream: the upstream's base path, then `path`, then the
    /// query byte for byte; `None` when they do not form a valid URI.
    pub(super) fn upstream_path(&self, path: &str, query: Option<&str>) -> Option<PathAndQuery> {
        let base = &self.upstream_url.base_path;
        // Exactly the length: `Bytes` takes over a full `Vec` as is, and allocates a shared
        // header for one with spare capacity.
        let len = base.len() + path.len() + query.map_or(0, |q| q.len() + 1);
        let mut pq = String::with_capacity(len);
        pq.push_str(base);
        pq.push_str(path);
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        PathAndQuery::try_from(pq).ok()
    }

    /// The upstream's port: its URL's, or the scheme's.
    pub(super) fn upstream_port(&self) -> u16 {
        let u = &self.upstream_url;
        u.authority
            .port_u16()
            .unwrap_or(if u.scheme == http::uri::Scheme::HTTPS {
                443
            } else {
                80
            })
    }

    /// Reads the quota and `Retry-After` a response states into the source's gauges.
    pub(super) fn read_quota(&self, status: StatusCode, headers: &HeaderMap) {
        let seen = ratelimit::read(
            headers,
            status.as_u16(),
            SystemTime::now,
            self.reset_style,
            &self.policies,
            self.metrics.name(),
        );
        if let Some(secs) = seen.retry_after {
            self.metrics.retry_after(secs);
        }
        if let Some(w) = &seen.window {
            self.metrics.quota(w);
        }
    }
}
