//! The config file: its schema, with each field's doc the user's documentation and each
//! default beside it (`impl Default`), and the loading that turns YAML into a [`Config`].
//!
//! Parsing is strict (`deny_unknown_fields`, and the typed durations, addresses, URLs and
//! names of [`values`]);
//! [`validate`] then checks what a single field cannot, section by section, and [`locate`]
//! finds the line of the key an error is about. Every rejection is a [`ConfigError`] naming
//! the file, the line and the key path, so a user reading
//! `remedy.yaml:14: sources[1].match.path_prefix: ...` knows exactly what to fix.

pub mod locate;
mod summary;
mod validate;
mod values;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::catalog::{Catalog, EntryOverride};
pub use crate::observe::body_errors::{BodyErrorsConfig, RuleConfig, RuleErrors};
use locate::Locator;
pub use summary::summary;
pub use validate::{Invalid, prefixes_overlap, tunnel_target};
use values::listen_address;
pub use values::{HumanDuration, SourceName, UpstreamUrl};

/// A config file that cannot be used, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file as the user named it.
    pub file: String,
    /// 1-based line of the offending key, where known.
    pub line: Option<usize>,
    /// Key path such as `sources[1].timeouts.connect`; empty for the whole file.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The whole config file. Every section may be left out but `sources`, which validation
/// requires to hold at least one source.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The listener the connector sends its API calls to.
    pub proxy: ProxyConfig,
    /// The listener for `/metrics`, `/rules` and the health endpoints.
    pub admin: AdminConfig,
    /// The upstream APIs, each with the matchers that pick it.
    pub sources: Vec<SourceConfig>,
    /// Overrides of, and additions to, the built-in FAQ catalog.
    #[serde(rename = "catalog")]
    pub catalog_overrides: Vec<EntryOverride>,
    pub alerts: AlertsConfig,
    pub metrics: MetricsConfig,
    pub runtime: RuntimeConfig,
    pub shutdown: ShutdownConfig,
    pub reload: ReloadConfig,
    /// The built-in catalog with `catalog_overrides` applied; filled in by validation.
    #[serde(skip)]
    pub catalog: Catalog,
}

/// `proxy`: the listener the connector calls, and its limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Address of the proxy listener, `IP:port`. Keep it on loopback: only the connector in
    /// the same pod should reach it.
    #[serde(deserialize_with = "listen_address")]
    pub listen: SocketAddr,
    /// Connections served at once; further connections wait in the kernel's backlog.
    pub max_connections: usize,
    /// Most header fields in one request; more is answered 431.
    pub max_headers: usize,
    /// Most bytes of request line and headers; more is answered 431.
    pub max_header_bytes: usize,
    /// Time a client has to send the whole request head, against slow-header clients.
    pub header_read_timeout: HumanDuration,
    /// Longest a response may wait for the connector to read any of it; past it the response
    /// is aborted and its connection closed, against readers that stop reading.
    pub send_timeout: HumanDuration,
    /// Query parameters whose values log lines show in clear, beside the built-in harmless
    /// names; every other value is logged as `REDACTED`.
    pub log_query_params: Vec<String>,
    /// `CONNECT` for the sources' hosts answered with remedy's own TLS, so that `https://`
    /// calls through `HTTPS_PROXY` are observed too.
    pub intercept: InterceptConfig,
    /// HTTP/2 inside intercepted tunnels, for connectors that offer it (gRPC clients do).
    pub http2: Http2Config,
}

/// `proxy.http2`: what one HTTP/2 connection from the connector may hold, sized for a sidecar.
/// The header list is bounded by `proxy.max_header_bytes`, as an HTTP/1.1 head is.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Http2Config {
    /// Streams (calls) open at once on one connection; a client opens more once some end.
    pub max_concurrent_streams: u32,
    /// Bytes of one stream's request body the connector may send before remedy has passed
    /// them upstream.
    pub initial_stream_window_size: u32,
    /// The same for all of a connection's streams together.
    pub initial_connection_window_size: u32,
    /// How long a connection may stay without a stream before remedy closes it with a GOAWAY
    /// (clients keep their channels open for the next call, so longer than
    /// `header_read_timeout`, but not for ever).
    pub idle_timeout: HumanDuration,
}

impl Default for Http2Config {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 100,
            initial_stream_window_size: 256 * 1024,
            initial_connection_window_size: 1024 * 1024,
            idle_timeout: HumanDuration::secs(300),
        }
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8780)),
            max_connections: 1024,
            max_headers: 100,
            max_header_bytes: 64 * 1024,
            header_read_timeout: HumanDuration::secs(10),
            send_timeout: HumanDuration::secs(30),
            log_query_params: Vec::new(),
            intercept: InterceptConfig::default(),
            http2: Http2Config::default(),
        }
    }
}

/// `proxy.intercept`: off unless `enabled`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InterceptConfig {
    pub enabled: bool,
    /// Where `ca.pem` and `bundle.pem` are written for the connector; the key never is.
    pub ca_dir: Option<PathBuf>,
    /// A CA of the user's instead of the one remedy makes (PEM certificate and PKCS#8 key).
    pub ca_cert_file: Option<PathBuf>,
    pub ca_key_file: Option<PathBuf>,
    /// `CONNECT` to these is passed through unobserved: `host` (port 443) or `host:port`.
    pub tunnel: Vec<String>,
}

/// `admin`: the listener Prometheus scrapes.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener, `IP:port`, scraped by Prometheus.
    #[serde(deserialize_with = "listen_address")]
    pub listen: SocketAddr,
    /// Serve `POST /-/reload` without basic auth (with basic auth set in the web config it is
    /// served to authenticated clients either way). Off: SIGHUP and the file watch still reload.
    pub enable_reload: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 9780)),
            enable_reload: false,
        }
    }
}

/// One upstream API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The `source` label value: `[a-z][a-z0-9_]*`.
    pub name: SourceName,
    /// `http` or `https` URL of the API, with an optional base path.
    pub upstream: UpstreamUrl,
    /// Which requests belong to this source.
    #[serde(rename = "match")]
    pub matcher: MatchConfig,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Send the connector's `Host` header upstream instead of the upstream's.
    #[serde(default)]
    pub preserve_host: bool,
    /// PEM file of extra CA certificates trusted for this upstream, besides the public roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Requests in flight to this upstream at most; more are answered 503 at once
    /// (`origin="proxy"`) instead of queueing without bound. Unlimited when absent.
    #[serde(default)]
    pub max_in_flight: Option<NonZeroUsize>,
    /// Most header fields in one of the upstream's response heads; a head with more is a 502
    /// counted `kind="protocol"`. APIs send a few dozen.
    #[serde(default = "default_max_response_headers")]
    pub max_response_headers: usize,
    /// Most bytes of the upstream's status line and headers (HTTP/1.1), or of its header list
    /// (HTTP/2); past it, a 502 counted `kind="protocol"`. APIs send a few kilobytes.
    #[serde(default = "default_max_response_header_bytes")]
    pub max_response_header_bytes: usize,
    /// Where this API reports errors inside a JSON body: a built-in pack or rules of the user's.
    #[serde(default)]
    pub body_errors: Option<BodyErrorsConfig>,
    /// Most bytes of a body read for `body_errors`, after decompression.
    #[serde(default = "crate::observe::body_errors::default_max_bytes")]
    pub body_errors_max_bytes: usize,
    /// The endpoints the connector calls, as templates in the upstream's path with `{name}`
    /// placeholders (`/v1/reports/{report_id}`, `/act_{account}/insights`), matched after the
    /// prefix is stripped: each response is also counted by its template, or `other`, in
    /// `remedy_upstream_route_responses_total`. Empty: no such counting, nothing paid.
    #[serde(default)]
    pub routes: Vec<String>,
    /// Most templates in `routes`, so that the `route` label stays bounded.
    #[serde(default = "default_max_routes")]
    pub max_routes: usize,
}

fn default_max_routes() -> usize {
    50
}

fn default_max_response_headers() -> usize {
    100
}

fn default_max_response_header_bytes() -> usize {
    64 * 1024
}

/// `sources[].match`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatchConfig {
    /// Requests whose path starts with this segment prefix; the prefix is stripped.
    pub path_prefix: Option<String>,
    /// Requests whose `Host` header or absolute-form URI names one of these hosts.
    pub hosts: Vec<String>,
}

/// `sources[].timeouts`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// Time to open the TCP connection (and finish TLS) to the upstream; past it, 502.
    pub connect: HumanDuration,
    /// Time from sending the request to the upstream's response head; past it, 504.
    pub response_header: HumanDuration,
    /// Longest pause between two chunks of a body, and how long a pooled connection is kept.
    pub idle: HumanDuration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: HumanDuration::secs(5),
            response_header: HumanDuration::secs(60),
            idle: HumanDuration::secs(90),
        }
    }
}

/// `alerts`: how the generated rules aggregate, and each alert's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// Range of the rate windows in alert expressions.
    pub window: HumanDuration,
    /// Runbook link template; `{remediation}` is replaced by the key.
    pub runbook_url: String,
    /// Labels every alert is aggregated by, and so names: a pod label the PodMonitor copies
    /// onto the series (the CronJob's name, say) lets an alert name the extract. Must hold
    /// `source`.
    pub group_by: Vec<String>,
    /// Per remediation key (or remedy's own alert name): threshold, for, keep_firing_for,
    /// severity, min_requests.
    pub overrides: BTreeMap<String, AlertOverride>,
}

pub const DEFAULT_RUNBOOK_URL: &str =
    "https://github.com/remedy-sidecar/remedy/blob/main/docs/runbooks.md#{remediation}";

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            window: HumanDuration::secs(300),
            runbook_url: DEFAULT_RUNBOOK_URL.to_owned(),
            group_by: vec!["namespace".to_owned(), "source".to_owned()],
            overrides: BTreeMap::new(),
        }
    }
}

/// `alerts.overrides.KEY`: what differs from the alert's defaults.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertOverride {
    /// Share of the source's responses (0–1) above which the alert fires.
    pub threshold: Option<f64>,
    /// How long the condition must hold.
    #[serde(rename = "for")]
    pub for_: Option<HumanDuration>,
    /// How long the alert keeps firing after the condition clears (Prometheus 2.42+): a
    /// CronJob's failure stays visible between its runs.
    pub keep_firing_for: Option<HumanDuration>,
    /// `severity` label: critical, warning or info.
    pub severity: Option<Severity>,
    /// Responses the source must have had within `alerts.window` for the alert to be
    /// considered.
    pub min_requests: Option<u64>,
    /// Older form of `min_requests`, in requests per second: it now means
    /// `min_requests = ceil(min_rate × window)`.
    pub min_rate: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// `metrics`: the series remedy exports.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Buckets of `remedy_upstream_request_duration_seconds`, in seconds, increasing.
    pub duration_buckets: Vec<f64>,
    /// `lean` (what a run counted) or `full` (zeros, per-class latency and the FAQ's info
    /// series from every pod, as before `lean`).
    pub series: crate::metrics::Series,
}

/// OpenTelemetry's HTTP buckets, extended to five minutes for slow report APIs.
pub const DEFAULT_BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            duration_buckets: DEFAULT_BUCKETS.to_vec(),
            series: crate::metrics::Series::default(),
        }
    }
}

/// `runtime`: the proxy's threads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Proxy worker threads; default: the CPUs the container may use, at least 1.
    pub worker_threads: Option<NonZeroUsize>,
}

/// `shutdown`: what happens after SIGTERM.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// After SIGTERM, in-flight requests may finish within this.
    pub drain_timeout: HumanDuration,
    /// Then `/metrics` stays up until one scrape has seen the final counts, and remedy exits
    /// right after it; this is only the longest it waits (for pods nobody scrapes).
    pub linger: HumanDuration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_timeout: HumanDuration::secs(30),
            linger: HumanDuration::secs(60),
        }
    }
}

/// `reload`: re-reading the file without a signal.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReloadConfig {
    /// Re-read the config file when its content changes, checking this often (Kubernetes
    /// updates a mounted ConfigMap in place). Off when absent; SIGHUP and `POST /-/reload`
    /// work either way.
    pub watch_interval: Option<HumanDuration>,
}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| ConfigError {
        file: file.clone(),
        line: None,
        path: String::new(),
        message: format!("cannot read the config file: {e}"),
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
        let column = valid.len() - valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        ConfigError {
            file: file.clone(),
            line: Some(line),
            path: String::new(),
            message: format!(
                "not UTF-8 text: byte {} of the line cannot start a character",
                column + 1
            ),
        }
    })?;
    parse(&text, &file)
}

/// Parse and validate config text; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    let locate = Locator::new(text);
    let mut config: Config =
        serde_yaml::from_str(text).map_err(|e| from_serde(&e, file, &locate))?;
    validate::validate(&mut config).map_err(|Invalid { path, reason }| ConfigError {
        file: file.to_owned(),
        line: locate.line(&path),
        path,
        message: reason,
    })?;
    Ok(config)
}

/// serde_yaml's error, at the key it is about: serde_yaml names the mapping that holds a bad
/// key or lacks a required one, so the key is found by the quoted bad value when the message
/// has one, by the line otherwise, and a missing key is named below the mapping that lacks it,
/// at that mapping's line.
fn from_serde(e: &serde_yaml::Error, file: &str, locate: &Locator) -> ConfigError {
    let mut message = e.to_string();
    let mut line = e.location().map(|l| l.line());
    if let Some(at) = message.rfind(" at line ") {
        message.truncate(at);
    }
    // serde_yaml puts the key path first: "sources[0].timeouts: unknown field ...".
    let (mut path, mut message) = match message.split_once(": ") {
        Some((p, m)) if !p.contains(' ') && p != "." => (p.to_owned(), m.to_owned()),
        _ => (String::new(), message),
    };
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|m| m.strip_suffix('`'))
        .map(str::to_owned);
    let quoted = message.split('"').nth(1).filter(|_| message.contains('"'));
    if let Some(field) = missing {
        line = locate.line(&path).or(line);
        path = locate::join(&path, &field);
        message = format!("missing: {}", required(&field));
    } else if let Some((key, at)) = quoted.and_then(|v| locate.value_at(&path, v)) {
        path = key;
        line = Some(at);
    } else if let Some(key) = line.and_then(|l| locate.key_at(&path, l)) {
        path = key;
    }
    ConfigError {
        file: file.to_owned(),
        line,
        path,
        message,
    }
}

/// What a required key holds, for the error that says it is missing.
fn required(field: &str) -> String {
    match field {
        "name" => "a source needs `name`, its `source` label ([a-z][a-z0-9_]*)".into(),
        "upstream" => {
            "a source needs `upstream`, the URL of its API (such as https://api.example.com)".into()
        }
        "match" => {
            "a source needs `match` (a path_prefix, hosts, or both) to pick its requests".into()
        }
        "code" => "a catalog entry needs `code`, the status it is about".into(),
        _ => format!("`{field}` is required here"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const MINIMAL: &str = "sources:\n  - name: github\n    upstream: https://api.github.com\n    match: { path_prefix: /github }\n";

    #[test]
    fn minimal_config_takes_every_default() {
        let c = parse(MINIMAL, "t.yaml").unwrap();
        assert_eq!(c.proxy.listen, ProxyConfig::default().listen);
        assert_eq!(c.admin.listen.port(), 9780);
        assert_eq!(c.sources[0].timeouts.connect.0, Duration::from_secs(5));
        assert_eq!(c.metrics.duration_buckets, DEFAULT_BUCKETS);
        assert_eq!(c.shutdown.drain_timeout.0, Duration::from_secs(30));
        assert_eq!(c.catalog.len(), 10);
    }

    #[test]
    fn prefixes_overlap_by_whole_segments() {
        assert!(prefixes_overlap("/github", "/github"));
        assert!(prefixes_overlap("/github", "/github/v3"));
        assert!(prefixes_overlap("/", "/x"));
        assert!(!prefixes_overlap("/github", "/githubx"));
        assert!(!prefixes_overlap("/a/b", "/a/c"));
    }
}
