//! YAML → typed, validated [`Config`].
//!
//! Parsing is strict (`deny_unknown_fields`, typed durations, URLs and names), then a second
//! pass checks what a single field cannot: duplicate source names, overlapping matchers,
//! unknown remediation keys. Every rejection is a [`ConfigError`] naming the file, the line
//! and the key path, so a user reading `remedy.yaml:14: sources[1].match.path_prefix: ...`
//! knows exactly what to fix.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::catalog::{self, Catalog, EntryOverride};

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

/// The whole config file. Every section but `sources` may be left out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The listener the connector sends its API calls to.
    #[serde(default)]
    pub proxy: ProxyConfig,
    /// The listener for `/metrics`, `/rules` and the health endpoints.
    #[serde(default)]
    pub admin: AdminConfig,
    /// The upstream APIs, each with the matchers that pick it.
    pub sources: Vec<SourceConfig>,
    /// Overrides of, and additions to, the built-in FAQ catalog.
    #[serde(default, rename = "catalog")]
    pub catalog_overrides: Vec<EntryOverride>,
    #[serde(default)]
    pub alerts: AlertsConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    #[serde(default)]
    pub reload: ReloadConfig,
    /// The built-in catalog with `catalog_overrides` applied; filled in by validation.
    #[serde(skip, default = "Catalog::builtin")]
    pub catalog: Catalog,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Address of the proxy listener. Keep it on loopback: only the connector in the same
    /// pod should reach it.
    #[serde(default = "default_proxy_listen")]
    pub listen: SocketAddr,
    /// Connections served at once; further connections wait in the kernel's backlog.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most header fields in one request; more is answered 431.
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// Most bytes of request line and headers; more is answered 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Time a client has to send the whole request head, against slow-header clients.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: Dur,
    /// Longest a response may wait for the connector to read any of it; past it the response
    /// is aborted and its connection closed, against readers that stop reading.
    #[serde(default = "default_send_timeout")]
    pub send_timeout: Dur,
    /// Query parameters whose values log lines show in clear, beside the built-in harmless
    /// names; every other value is logged as `REDACTED`.
    #[serde(default)]
    pub log_query_params: Vec<String>,
    /// `CONNECT` for the sources' hosts answered with remedy's own TLS, so that `https://`
    /// calls through `HTTPS_PROXY` are observed too.
    #[serde(default)]
    pub intercept: InterceptConfig,
}

/// `proxy.intercept`: off unless `enabled`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterceptConfig {
    #[serde(default)]
    pub enabled: bool,
    /// Where `ca.pem` and `bundle.pem` are written for the connector; the key never is.
    pub ca_dir: Option<PathBuf>,
    /// A CA of the user's instead of the one remedy makes (PEM certificate and PKCS#8 key).
    pub ca_cert_file: Option<PathBuf>,
    pub ca_key_file: Option<PathBuf>,
    /// `CONNECT` to these is passed through unobserved: `host` (port 443) or `host:port`.
    #[serde(default)]
    pub tunnel: Vec<String>,
}

fn default_proxy_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8780))
}
fn default_max_connections() -> usize {
    1024
}
fn default_max_headers() -> usize {
    100
}
fn default_max_header_bytes() -> usize {
    64 * 1024
}
fn default_header_read_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}
fn default_send_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen: default_proxy_listen(),
            max_connections: default_max_connections(),
            max_headers: default_max_headers(),
            max_header_bytes: default_max_header_bytes(),
            header_read_timeout: default_header_read_timeout(),
            send_timeout: default_send_timeout(),
            log_query_params: Vec::new(),
            intercept: InterceptConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener, scraped by Prometheus.
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// Serve `POST /-/reload` without basic auth (with basic auth set in the web config it is
    /// served to authenticated clients either way). Off: SIGHUP and the file watch still reload.
    #[serde(default)]
    pub enable_reload: bool,
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9780))
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
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
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Requests whose path starts with this segment prefix; the prefix is stripped.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Requests whose `Host` header or absolute-form URI names one of these hosts.
    #[serde(default)]
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// Time to open the TCP connection (and finish TLS) to the upstream; past it, 502.
    #[serde(default = "default_connect")]
    pub connect: Dur,
    /// Time from sending the request to the upstream's response head; past it, 504.
    #[serde(default = "default_response_header")]
    pub response_header: Dur,
    /// Longest pause between two chunks of a body, and how long a pooled connection is kept.
    #[serde(default = "default_idle")]
    pub idle: Dur,
}

fn default_connect() -> Dur {
    Dur(Duration::from_secs(5))
}
fn default_response_header() -> Dur {
    Dur(Duration::from_secs(60))
}
fn default_idle() -> Dur {
    Dur(Duration::from_secs(90))
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: default_connect(),
            response_header: default_response_header(),
            idle: default_idle(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Range of the rate windows in alert expressions.
    #[serde(default = "default_window")]
    pub window: Dur,
    /// Runbook link template; `{remediation}` is replaced by the key.
    #[serde(default = "default_runbook_url")]
    pub runbook_url: String,
    /// Labels every alert is aggregated by, and so names: a pod label the PodMonitor copies
    /// onto the series (the CronJob's name, say) lets an alert name the extract. Must hold
    /// `source`.
    #[serde(default = "default_group_by")]
    pub group_by: Vec<String>,
    /// Per remediation key (or remedy's own alert name): threshold, for, keep_firing_for,
    /// severity, min_requests.
    #[serde(default)]
    pub overrides: BTreeMap<String, AlertOverride>,
}

fn default_group_by() -> Vec<String> {
    vec!["namespace".to_owned(), "source".to_owned()]
}

pub const DEFAULT_RUNBOOK_URL: &str =
    "https://github.com/remedy-sidecar/remedy/blob/main/docs/runbooks.md#{remediation}";

fn default_window() -> Dur {
    Dur(Duration::from_secs(300))
}
fn default_runbook_url() -> String {
    DEFAULT_RUNBOOK_URL.to_owned()
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            window: default_window(),
            runbook_url: default_runbook_url(),
            group_by: default_group_by(),
            overrides: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertOverride {
    /// Share of the source's responses (0–1) above which the alert fires.
    pub threshold: Option<f64>,
    /// How long the condition must hold.
    #[serde(rename = "for")]
    pub for_: Option<Dur>,
    /// How long the alert keeps firing after the condition clears (Prometheus 2.42+): a
    /// CronJob's failure stays visible between its runs.
    pub keep_firing_for: Option<Dur>,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Buckets of `remedy_upstream_request_duration_seconds`, in seconds, increasing.
    #[serde(default = "default_buckets")]
    pub duration_buckets: Vec<f64>,
}

/// OpenTelemetry's HTTP buckets, extended to five minutes for slow report APIs.
pub const DEFAULT_BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

fn default_buckets() -> Vec<f64> {
    DEFAULT_BUCKETS.to_vec()
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            duration_buckets: default_buckets(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Proxy worker threads; default: the CPUs the container may use, at least 1.
    #[serde(default)]
    pub worker_threads: Option<NonZeroUsize>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// After SIGTERM, in-flight requests may finish within this.
    #[serde(default = "default_drain")]
    pub drain_timeout: Dur,
    /// Then `/metrics` stays up until one scrape has seen the final counts, and remedy exits
    /// right after it; this is only the longest it waits (for pods nobody scrapes).
    #[serde(default = "default_linger")]
    pub linger: Dur,
}

fn default_drain() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_linger() -> Dur {
    Dur(Duration::from_secs(60))
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_timeout: default_drain(),
            linger: default_linger(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// Re-read the config file when its content changes, checking this often (Kubernetes
    /// updates a mounted ConfigMap in place). Off when absent; SIGHUP and `POST /-/reload`
    /// work either way.
    #[serde(default)]
    pub watch_interval: Option<Dur>,
}

/// A duration written as `250ms`, `5s`, `15m`, `1h30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map(Dur).map_err(|e| {
            serde::de::Error::custom(format!(
                "bad duration {s:?}: {e} (write it like 250ms, 5s, 15m or 1h30m)"
            ))
        })
    }
}

impl fmt::Display for Dur {
    /// Prometheus duration syntax: `90s` → `1m30s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        let (h, m, s, ms) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
        for (v, unit) in [(h, "h"), (m, "m"), (s, "s"), (ms, "ms")] {
            if v > 0 {
                write!(f, "{v}{unit}")?;
            }
        }
        Ok(())
    }
}

/// A source name, safe as a Prometheus label value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceName(String);

impl SourceName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SourceName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "unmatched" {
            return Err(serde::de::Error::custom(
                "source name \"unmatched\" is reserved for requests no source matches",
            ));
        }
        if catalog::is_label_safe(&s) {
            Ok(SourceName(s))
        } else {
            Err(serde::de::Error::custom(format!(
                "bad source name {s:?}: it must match [a-z][a-z0-9_]* (it becomes the `source` label)"
            )))
        }
    }
}

/// An upstream API's URL: scheme, authority and a base path without trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    /// Empty, or `/v1` style: prepended to the forwarded path.
    pub base_path: String,
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}

impl std::str::FromStr for UpstreamUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let uri: http::Uri = s
            .parse()
            .map_err(|e| format!("bad upstream URL {s:?}: {e}"))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| format!("bad upstream URL {s:?}: it needs http:// or https://"))?;
        if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
            return Err(format!(
                "bad upstream URL {s:?}: scheme must be http or https"
            ));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("bad upstream URL {s:?}: it has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "bad upstream URL {s:?}: credentials do not belong in the URL; the connector sends its own"
            ));
        }
        if authority.host().is_empty() {
            return Err(format!("bad upstream URL {s:?}: it has no host"));
        }
        if uri.query().is_some() || s.contains('#') {
            return Err(format!(
                "bad upstream URL {s:?}: a query or fragment cannot be combined with forwarded paths"
            ));
        }
        let base_path = uri.path().trim_end_matches('/').to_owned();
        Ok(UpstreamUrl {
            scheme,
            authority,
            base_path,
        })
    }
}

impl<'de> Deserialize<'de> for UpstreamUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Every default, no sources and the built-in catalog: what `remedy rules` and
/// `remedy dashboard` use without `--config`.
pub fn defaults() -> Config {
    let mut c: Config = serde_yaml::from_str("sources: []").expect("an empty config parses");
    c.catalog = Catalog::builtin();
    c
}

/// A one-screen summary of a valid config, for `remedy check-config`.
pub fn summary(c: &Config, file: &str) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "{file}: valid");
    let _ = writeln!(s, "proxy listen:  {}", c.proxy.listen);
    let _ = writeln!(s, "admin listen:  {}", c.admin.listen);
    let _ = writeln!(s, "sources ({}):", c.sources.len());
    for src in &c.sources {
        let mut matchers = Vec::new();
        if let Some(p) = &src.matcher.path_prefix {
            matchers.push(format!("path_prefix {p}"));
        }
        if !src.matcher.hosts.is_empty() {
            matchers.push(format!("hosts {}", src.matcher.hosts.join(", ")));
        }
        let t = &src.timeouts;
        let _ = writeln!(
            s,
            "  {:<16} -> {}  [{}]  timeouts connect={} response_header={} idle={}",
            src.name.as_str(),
            src.upstream,
            matchers.join("; "),
            t.connect,
            t.response_header,
            t.idle
        );
    }
    let added = c
        .catalog
        .entries()
        .filter(|e| Catalog::builtin().get(e.code).is_none())
        .count();
    let _ = writeln!(
        s,
        "catalog: {} codes ({} built in, {} added, {} overrides), {} remediation keys",
        c.catalog.len(),
        c.catalog.len() - added,
        added,
        c.catalog_overrides.len(),
        c.catalog.remediations().len()
    );
    let _ = writeln!(
        s,
        "alerts: window {}, {} overrides",
        c.alerts.window,
        c.alerts.overrides.len()
    );
    s
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
    let mut config: Config = serde_yaml::from_str(text).map_err(|e| {
        let mut err = from_serde(&e, file);
        // serde_yaml names the map that holds the bad key; name the key itself: by the
        // quoted bad value when the message has one, else by the line.
        let quoted = err
            .message
            .split('"')
            .nth(1)
            .filter(|_| err.message.contains('"'));
        if let Some((key, line)) = quoted.and_then(|v| locate.value_at(&err.path, v)) {
            err.path = key;
            err.line = Some(line);
        } else if let Some(line) = err.line
            && let Some(key) = locate.key_at(&err.path, line)
        {
            err.path = key;
        }
        err
    })?;
    let fail = |path: String, message: String| ConfigError {
        file: file.to_owned(),
        line: locate.line(&path),
        path,
        message,
    };
    validate(&mut config).map_err(|(path, message)| fail(path, message))?;
    Ok(config)
}

fn from_serde(e: &serde_yaml::Error, file: &str) -> ConfigError {
    let mut message = e.to_string();
    let line = e.location().map(|l| l.line());
    if let Some(at) = message.rfind(" at line ") {
        message.truncate(at);
    }
    // serde_yaml puts the key path first: "sources[0].timeouts: unknown field ...".
    let (path, message) = match message.split_once(": ") {
        Some((p, m)) if !p.contains(' ') && p != "." => (p.to_owned(), m.to_owned()),
        _ => (String::new(), message),
    };
    ConfigError {
        file: file.to_owned(),
        line,
        path,
        message,
    }
}

type Invalid = (String, String);

fn validate(c: &mut Config) -> Result<(), Invalid> {
    let hosts = validate_sources(&c.sources)?;
    c.catalog = Catalog::with_overrides(&c.catalog_overrides)
        .map_err(|(i, e)| (format!("catalog[{i}]"), e.to_string()))?;
    validate_metrics(&c.metrics)?;
    validate_alerts(&c.alerts, &c.catalog)?;
    validate_reload(&c.reload)?;
    validate_proxy(&c.proxy)?;
    validate_intercept(&c.proxy.intercept, &hosts)
}

/// `sources`: at least one, names and matchers unique, timeouts above zero, CA files
/// readable by the same reader `run` uses. Returns every source's hosts.
fn validate_sources(sources: &[SourceConfig]) -> Result<HashMap<String, usize>, Invalid> {
    if sources.is_empty() {
        return Err((
            "sources".into(),
            "no sources: add at least one upstream API to forward to".into(),
        ));
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut hosts: HashMap<String, usize> = HashMap::new();
    let mut prefixes: Vec<(String, usize)> = Vec::new();
    for (i, s) in sources.iter().enumerate() {
        let at = |key: &str| format!("sources[{i}]{key}");
        if let Some(first) = names.insert(s.name.as_str(), i) {
            return Err((
                at(".name"),
                format!(
                    "duplicate source name {:?} (also sources[{first}])",
                    s.name.as_str()
                ),
            ));
        }
        if s.matcher.path_prefix.is_none() && s.matcher.hosts.is_empty() {
            return Err((
                at(".match"),
                "a source needs a path_prefix, hosts, or both".into(),
            ));
        }
        if let Some(p) = &s.matcher.path_prefix {
            check_prefix(p).map_err(|m| (at(".match.path_prefix"), m))?;
            if let Some((other, j)) = prefixes.iter().find(|(o, _)| prefixes_overlap(o, p)) {
                return Err((
                    at(".match.path_prefix"),
                    format!(
                        "path_prefix {p:?} overlaps {other:?} of sources[{j}]: a request could match both"
                    ),
                ));
            }
            prefixes.push((p.clone(), i));
        }
        for (k, h) in s.matcher.hosts.iter().enumerate() {
            let key = at(&format!(".match.hosts[{k}]"));
            let host = check_host(h).map_err(|m| (key.clone(), m))?;
            if let Some(j) = hosts.insert(host, i) {
                return Err((
                    key,
                    format!(
                        "host {h:?} is matched by sources[{j}] too: a request could match both"
                    ),
                ));
            }
        }
        validate_source_settings(s, &at)?;
    }
    Ok(hosts)
}

/// One source's timeouts (above zero) and `ca_file` (read by the same reader the upstream's
/// TLS client uses, so a file accepted here is one `run` accepts).
fn validate_source_settings(s: &SourceConfig, at: &dyn Fn(&str) -> String) -> Result<(), Invalid> {
    let t = &s.timeouts;
    for (key, d) in [
        ("connect", t.connect),
        ("response_header", t.response_header),
        ("idle", t.idle),
    ] {
        if d.0.is_zero() {
            return Err((at(&format!(".timeouts.{key}")), "must be above 0".into()));
        }
    }
    // The same reader the upstream's TLS client uses: a file accepted here is one
    // `run` accepts.
    if let Some(ca) = &s.ca_file {
        crate::pem::add_roots(ca, rustls::RootCertStore::empty())
            .map_err(|e| (at(".ca_file"), e.to_string()))?;
    }
    Ok(())
}

/// `metrics.duration_buckets`: positive and strictly increasing.
fn validate_metrics(m: &MetricsConfig) -> Result<(), Invalid> {
    let b = &m.duration_buckets;
    if b.is_empty() || b.iter().any(|v| !v.is_finite() || *v <= 0.0) {
        return Err((
            "metrics.duration_buckets".into(),
            "buckets must be positive numbers of seconds, at least one".into(),
        ));
    }
    if b.windows(2).any(|w| w[0] >= w[1]) {
        return Err((
            "metrics.duration_buckets".into(),
            "buckets must be strictly increasing".into(),
        ));
    }
    Ok(())
}

/// `alerts`: the window, the runbook URL, overrides of known keys with sane values, and
/// `group_by`.
fn validate_alerts(a: &AlertsConfig, catalog: &Catalog) -> Result<(), Invalid> {
    if a.window.0 < Duration::from_secs(1) {
        return Err(("alerts.window".into(), "must be at least 1s".into()));
    }
    if !a.runbook_url.contains("{remediation}") {
        return Err((
            "alerts.runbook_url".into(),
            "must contain {remediation}, replaced by each alert's remediation key".into(),
        ));
    }
    let keys: Vec<&str> = catalog.remediations().iter().map(|r| r.key).collect();
    for (key, o) in &a.overrides {
        let path = format!("alerts.overrides.{key}");
        if !keys.contains(&key.as_str()) && !crate::catalog::NAMED_ALERTS.contains(&key.as_str()) {
            return Err((
                path,
                format!(
                    "unknown remediation key {key:?}; known: {}, or an alert name ({})",
                    keys.join(", "),
                    crate::catalog::NAMED_ALERTS.join(", ")
                ),
            ));
        }
        if let Some(t) = o.threshold
            && !(t > 0.0 && t <= 1.0)
        {
            return Err((
                format!("{path}.threshold"),
                format!("{t} is not a share: use a number in (0, 1], e.g. 0.05 for 5%"),
            ));
        }
        if let Some(r) = o.min_rate
            && !(r >= 0.0 && r.is_finite())
        {
            return Err((
                format!("{path}.min_rate"),
                "must be a rate in requests per second, 0 or more".into(),
            ));
        }
        if o.min_rate.is_some() && o.min_requests.is_some() {
            return Err((
                format!("{path}.min_rate"),
                "set min_requests (responses per window) or min_rate, not both".into(),
            ));
        }
    }
    validate_group_by(&a.group_by)?;
    Ok(())
}

/// `reload.watch_interval`: off, or at least 100ms.
fn validate_reload(r: &ReloadConfig) -> Result<(), Invalid> {
    if let Some(d) = r.watch_interval
        && d.0 < Duration::from_millis(100)
    {
        return Err((
            "reload.watch_interval".into(),
            "must be at least 100ms (or left out to turn watching off)".into(),
        ));
    }
    Ok(())
}

/// `proxy`: the listener's limits.
fn validate_proxy(p: &ProxyConfig) -> Result<(), Invalid> {
    if p.max_connections == 0 {
        return Err(("proxy.max_connections".into(), "must be at least 1".into()));
    }
    if p.max_header_bytes < 8192 {
        return Err((
            "proxy.max_header_bytes".into(),
            "must be at least 8192".into(),
        ));
    }
    if p.max_headers == 0 {
        return Err(("proxy.max_headers".into(), "must be at least 1".into()));
    }
    Ok(())
}

/// `proxy.intercept`: where the CA goes, the user's CA if named, and tunnels that no source
/// claims. `hosts` are every source's hosts.
fn validate_intercept(i: &InterceptConfig, hosts: &HashMap<String, usize>) -> Result<(), Invalid> {
    for (k, t) in i.tunnel.iter().enumerate() {
        let key = format!("proxy.intercept.tunnel[{k}]");
        let (host, _) = tunnel_target(t).map_err(|m| (key.clone(), m))?;
        if let Some(j) = hosts.get(&host) {
            return Err((
                key,
                format!(
                    "{host:?} is a host of sources[{j}]: a CONNECT to it is intercepted and \
                     counted, so it cannot be tunnelled too"
                ),
            ));
        }
    }
    if !i.enabled {
        return Ok(());
    }
    if i.ca_dir.is_none() {
        return Err((
            "proxy.intercept.ca_dir".into(),
            "required when interception is enabled: remedy writes ca.pem and bundle.pem there \
             for the connector to trust (for example /var/run/remedy)"
                .into(),
        ));
    }
    if hosts.is_empty() {
        return Err((
            "proxy.intercept.enabled".into(),
            "no source names match.hosts: interception serves the hosts sources name".into(),
        ));
    }
    match (&i.ca_cert_file, &i.ca_key_file) {
        (None, None) => Ok(()),
        (Some(cert), Some(key)) => crate::ca::UserCa::load(cert, key)
            .map(drop)
            .map_err(|e| (e.key().into(), e.to_string())),
        (Some(_), None) => Err((
            "proxy.intercept.ca_key_file".into(),
            "ca_cert_file needs its key in ca_key_file".into(),
        )),
        (None, Some(_)) => Err((
            "proxy.intercept.ca_cert_file".into(),
            "ca_key_file needs its certificate in ca_cert_file".into(),
        )),
    }
}

/// A `proxy.intercept.tunnel` entry as host and port: `host` means port 443.
pub fn tunnel_target(entry: &str) -> Result<(String, u16), String> {
    let (host, port) = match entry.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{entry:?}: the port must be a number from 1 to 65535"))?,
        ),
        None => (entry, 443),
    };
    let host = check_host(host).map_err(|_| {
        format!(
            "{entry:?} must be a host name such as oauth2.googleapis.com, with :port if not 443"
        )
    })?;
    Ok((host, port))
}

fn check_prefix(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("path_prefix {p:?} must start with /"));
    }
    if p.len() > 1 && p.ends_with('/') {
        return Err(format!(
            "path_prefix {p:?} must not end with / (it matches whole segments already)"
        ));
    }
    if p.contains("//") || p.contains('?') || p.contains('%') || p.contains('#') {
        return Err(format!(
            "path_prefix {p:?} must be plain path segments, without //, ?, # or %"
        ));
    }
    if p.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(format!("path_prefix {p:?} must not hold . or .. segments"));
    }
    Ok(())
}

/// Two prefixes overlap when one matches a path the other matches too.
pub fn prefixes_overlap(a: &str, b: &str) -> bool {
    let segment_prefix = |short: &str, long: &str| {
        short == "/"
            || long == short
            || (long.starts_with(short) && long.as_bytes()[short.len()] == b'/')
    };
    segment_prefix(a, b) || segment_prefix(b, a)
}

/// Lower-cased host without port; rejects anything else.
fn check_host(h: &str) -> Result<String, String> {
    let ok = !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if ok {
        Ok(h.to_ascii_lowercase())
    } else {
        Err(format!(
            "host {h:?} must be a bare host name such as api.github.com (no scheme, port or path)"
        ))
    }
}

/// `sources[0].name` is below `sources[0]` and below the root (`""`).
fn is_below(path: &str, parent: &str) -> bool {
    path.len() > parent.len()
        && path.starts_with(parent)
        && (parent.is_empty() || matches!(path.as_bytes()[parent.len()], b'.' | b'['))
}

/// `alerts.group_by`: Prometheus label names, each once, `source` among them.
fn validate_group_by(labels: &[String]) -> Result<(), (String, String)> {
    let path = "alerts.group_by".to_owned();
    for (i, l) in labels.iter().enumerate() {
        let mut chars = l.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !l.starts_with("__");
        if !valid {
            return Err((
                format!("{path}[{i}]"),
                format!("{l:?} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)"),
            ));
        }
        if labels[..i].contains(l) {
            return Err((format!("{path}[{i}]"), format!("{l:?} is listed twice")));
        }
    }
    if !labels.iter().any(|l| l == "source") {
        return Err((
            path,
            "must contain source: every alert is about one source".into(),
        ));
    }
    Ok(())
}

/// Finds the line of a key path in YAML text.
struct Locator {
    lines: HashMap<String, usize>,
    /// `(path, line, text)` of every scalar value.
    values: Vec<(String, usize, String)>,
}

impl Locator {
    fn new(text: &str) -> Self {
        use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
        use yaml_rust2::scanner::Marker;

        enum Frame {
            Map { path: String, key: Option<String> },
            Seq { path: String, index: usize },
        }
        struct Recv {
            stack: Vec<Frame>,
            lines: HashMap<String, usize>,
            values: Vec<(String, usize, String)>,
        }
        impl Recv {
            /// The path of the value now starting, advancing the parent past it.
            fn value_path(&mut self) -> Option<String> {
                match self.stack.last_mut()? {
                    Frame::Map { path, key } => key.take().map(|k| join(path, &k)),
                    Frame::Seq { path, index } => {
                        *index += 1;
                        Some(format!("{path}[{}]", *index - 1))
                    }
                }
            }
        }
        fn join(path: &str, key: &str) -> String {
            if path.is_empty() {
                key.to_owned()
            } else {
                format!("{path}.{key}")
            }
        }
        impl MarkedEventReceiver for Recv {
            fn on_event(&mut self, ev: Event, mark: Marker) {
                match ev {
                    Event::Scalar(s, ..) => {
                        if let Some(Frame::Map {
                            path,
                            key: key @ None,
                        }) = self.stack.last_mut()
                        {
                            let p = join(path, &s);
                            self.lines.entry(p).or_insert(mark.line());
                            *key = Some(s);
                        } else if let Some(p) = self.value_path() {
                            self.lines.entry(p.clone()).or_insert(mark.line());
                            self.values.push((p, mark.line(), s));
                        }
                    }
                    Event::MappingStart(..) | Event::SequenceStart(..) => {
                        let path = self.value_path().unwrap_or_default();
                        self.lines.entry(path.clone()).or_insert(mark.line());
                        self.stack.push(if matches!(ev, Event::MappingStart(..)) {
                            Frame::Map { path, key: None }
                        } else {
                            Frame::Seq { path, index: 0 }
                        });
                    }
                    Event::MappingEnd | Event::SequenceEnd => {
                        self.stack.pop();
                    }
                    Event::Alias(_) => {
                        self.value_path();
                    }
                    _ => {}
                }
            }
        }
        let mut recv = Recv {
            stack: Vec::new(),
            lines: HashMap::new(),
            values: Vec::new(),
        };
        // The text already parsed with serde_yaml; a locator failure only costs the line.
        let _ = Parser::new_from_str(text).load(&mut recv, false);
        Locator {
            lines: recv.lines,
            values: recv.values,
        }
    }

    /// The path and line of the scalar `value` below `parent`.
    fn value_at(&self, parent: &str, value: &str) -> Option<(String, usize)> {
        self.values
            .iter()
            .find(|(p, _, v)| v == value && is_below(p, parent))
            .map(|(p, l, _)| (p.clone(), *l))
    }

    /// The shortest key path below `parent` that starts on `line`.
    fn key_at(&self, parent: &str, line: usize) -> Option<String> {
        self.lines
            .iter()
            .filter(|(p, l)| **l == line && is_below(p, parent))
            .map(|(p, _)| p)
            .min_by_key(|p| p.len())
            .cloned()
    }

    /// The line of `path`, or of its nearest located parent.
    fn line(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(l) = self.lines.get(p) {
                return Some(*l);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "sources:\n  - name: github\n    upstream: https://api.github.com\n    match: { path_prefix: /github }\n";

    #[test]
    fn minimal_config_takes_every_default() {
        let c = parse(MINIMAL, "t.yaml").unwrap();
        assert_eq!(c.proxy.listen, default_proxy_listen());
        assert_eq!(c.admin.listen.port(), 9780);
        assert_eq!(c.sources[0].timeouts.connect.0, Duration::from_secs(5));
        assert_eq!(c.metrics.duration_buckets, DEFAULT_BUCKETS);
        assert_eq!(c.shutdown.drain_timeout.0, Duration::from_secs(30));
        assert_eq!(c.catalog.len(), 10);
    }

    #[test]
    fn upstream_urls_split_into_parts() {
        let u: UpstreamUrl = "https://api.example.com:8443/v2/".parse().unwrap();
        assert_eq!(u.scheme, http::uri::Scheme::HTTPS);
        assert_eq!(u.authority.as_str(), "api.example.com:8443");
        assert_eq!(u.base_path, "/v2");
        for bad in [
            "ftp://x",
            "api.github.com",
            "https://u:p@x",
            "https://x/?a=1",
            "/path",
        ] {
            assert!(bad.parse::<UpstreamUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn prefixes_overlap_by_whole_segments() {
        assert!(prefixes_overlap("/github", "/github"));
        assert!(prefixes_overlap("/github", "/github/v3"));
        assert!(prefixes_overlap("/", "/x"));
        assert!(!prefixes_overlap("/github", "/githubx"));
        assert!(!prefixes_overlap("/a/b", "/a/c"));
    }

    #[test]
    fn durations_print_in_prometheus_syntax() {
        for (d, s) in [
            (90_000, "1m30s"),
            (300_000, "5m"),
            (250, "250ms"),
            (0, "0s"),
        ] {
            assert_eq!(Dur(Duration::from_millis(d)).to_string(), s);
        }
    }

    #[test]
    fn locator_finds_nested_keys() {
        let text = "a:\n  b: 1\nlist:\n  - x: 1\n  - x: 2\n    y:\n      z: 3\n";
        let l = Locator::new(text);
        assert_eq!(l.line("a.b"), Some(2));
        assert_eq!(l.line("list[1].x"), Some(5));
        assert_eq!(l.line("list[1].y.z"), Some(7));
        assert_eq!(l.line("list[1].nope"), Some(5));
    }
}
