//! What a config means, checked after it parsed: what a single field cannot say on its own
//! (duplicate names, overlapping matchers, unknown remediation keys, two listeners on one port,
//! a CA that is not one), section by section. Each finding is an [`Invalid`]: the key path and
//! the reason, to which the caller adds the file and the line.

use std::collections::HashMap;
use std::time::Duration;

use super::{
    AdminConfig, AlertsConfig, Config, InterceptConfig, MetricsConfig, ProxyConfig, ReloadConfig,
    SourceConfig,
};
use crate::catalog::Catalog;

/// A config that parsed but cannot be used: where, as a key path, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Key path such as `sources[1].timeouts.connect`.
    pub path: String,
    pub reason: String,
}

fn invalid(path: String, reason: String) -> Invalid {
    Invalid { path, reason }
}

pub(super) fn validate(c: &mut Config) -> Result<(), Invalid> {
    let hosts = validate_sources(&c.sources)?;
    c.catalog = Catalog::with_overrides(&c.catalog_overrides)
        .map_err(|(i, e)| invalid(format!("catalog[{i}]"), e.to_string()))?;
    validate_metrics(&c.metrics)?;
    validate_alerts(&c.alerts, &c.catalog)?;
    validate_reload(&c.reload)?;
    validate_proxy(&c.proxy)?;
    validate_listeners(&c.proxy, &c.admin)?;
    validate_intercept(&c.proxy.intercept, &hosts)
}

/// `sources`: at least one, names and matchers unique, timeouts above zero, CA files
/// readable by the same reader `run` uses. Returns every source's hosts.
fn validate_sources(sources: &[SourceConfig]) -> Result<HashMap<String, usize>, Invalid> {
    if sources.is_empty() {
        return Err(invalid(
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
            return Err(invalid(
                at(".name"),
                format!(
                    "duplicate source name {:?} (also sources[{first}])",
                    s.name.as_str()
                ),
            ));
        }
        if s.matcher.path_prefix.is_none() && s.matcher.hosts.is_empty() {
            return Err(invalid(
                at(".match"),
                "a source needs a path_prefix, hosts, or both".into(),
            ));
        }
        if let Some(p) = &s.matcher.path_prefix {
            check_prefix(p).map_err(|m| invalid(at(".match.path_prefix"), m))?;
            if let Some((other, j)) = prefixes.iter().find(|(o, _)| prefixes_overlap(o, p)) {
                return Err(invalid(
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
            let host = check_host(h).map_err(|m| invalid(key.clone(), m))?;
            if let Some(j) = hosts.insert(host, i) {
                return Err(invalid(
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
            return Err(invalid(
                at(&format!(".timeouts.{key}")),
                "must be above 0".into(),
            ));
        }
    }
    if s.max_response_headers == 0 {
        return Err(invalid(
            at(".max_response_headers"),
            "must be at least 1".into(),
        ));
    }
    if !(8192..=16 << 20).contains(&s.max_response_header_bytes) {
        return Err(invalid(
            at(".max_response_header_bytes"),
            "must be from 8192 to 16777216 (16 MiB)".into(),
        ));
    }
    if !(1024..=16 << 20).contains(&s.body_errors_max_bytes) {
        return Err(invalid(
            at(".body_errors_max_bytes"),
            "must be from 1024 to 16777216 (16 MiB)".into(),
        ));
    }
    if s.max_routes == 0 || s.max_routes > 1000 {
        return Err(invalid(at(".max_routes"), "must be from 1 to 1000".into()));
    }
    if s.routes.len() > s.max_routes {
        return Err(invalid(
            at(".routes"),
            format!(
                "{} templates, more than max_routes ({}): the route label must stay bounded",
                s.routes.len(),
                s.max_routes
            ),
        ));
    }
    crate::endpoints::Endpoints::new(&s.routes)
        .map_err(|(i, why)| invalid(at(&format!(".routes[{i}]")), why.to_string()))?;
    // Compiled as `run` compiles it: rules accepted here are rules `run` uses.
    if let Some(b) = &s.body_errors {
        crate::observe::body_errors::Rules::compile(b, s.body_errors_max_bytes)
            .map_err(|(key, reason)| invalid(at(&format!(".body_errors{key}")), reason))?;
    }
    // The same reader the upstream's TLS client uses: a file accepted here is one
    // `run` accepts.
    if let Some(ca) = &s.ca_file {
        crate::pem::add_roots(ca, rustls::RootCertStore::empty())
            .map_err(|e| invalid(at(".ca_file"), e.to_string()))?;
    }
    Ok(())
}

/// `metrics.duration_buckets`: positive and strictly increasing.
fn validate_metrics(m: &MetricsConfig) -> Result<(), Invalid> {
    let b = &m.duration_buckets;
    if b.is_empty() || b.iter().any(|v| !v.is_finite() || *v <= 0.0) {
        return Err(invalid(
            "metrics.duration_buckets".into(),
            "buckets must be positive numbers of seconds, at least one".into(),
        ));
    }
    if b.windows(2).any(|w| w[0] >= w[1]) {
        return Err(invalid(
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
        return Err(invalid(
            "alerts.window".into(),
            "must be at least 1s".into(),
        ));
    }
    if !a.runbook_url.contains("{remediation}") {
        return Err(invalid(
            "alerts.runbook_url".into(),
            "must contain {remediation}, replaced by each alert's remediation key".into(),
        ));
    }
    let keys: Vec<&str> = catalog.remediations().iter().map(|r| r.key).collect();
    for (key, o) in &a.overrides {
        let path = format!("alerts.overrides.{key}");
        if !keys.contains(&key.as_str()) && !crate::catalog::NAMED_ALERTS.contains(&key.as_str()) {
            return Err(invalid(
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
            return Err(invalid(
                format!("{path}.threshold"),
                format!("{t} is not a share: use a number in (0, 1], e.g. 0.05 for 5%"),
            ));
        }
        if let Some(r) = o.min_rate
            && !(r >= 0.0 && r.is_finite())
        {
            return Err(invalid(
                format!("{path}.min_rate"),
                "must be a rate in requests per second, 0 or more".into(),
            ));
        }
        if o.min_rate.is_some() && o.min_requests.is_some() {
            return Err(invalid(
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
        return Err(invalid(
            "reload.watch_interval".into(),
            "must be at least 100ms (or left out to turn watching off)".into(),
        ));
    }
    Ok(())
}

/// `proxy`: the listener's limits.
fn validate_proxy(p: &ProxyConfig) -> Result<(), Invalid> {
    if p.max_connections == 0 {
        return Err(invalid(
            "proxy.max_connections".into(),
            "must be at least 1".into(),
        ));
    }
    if p.max_header_bytes < 8192 {
        return Err(invalid(
            "proxy.max_header_bytes".into(),
            "must be at least 8192".into(),
        ));
    }
    if p.max_headers == 0 {
        return Err(invalid(
            "proxy.max_headers".into(),
            "must be at least 1".into(),
        ));
    }
    let h2 = &p.http2;
    if h2.max_concurrent_streams == 0 {
        return Err(invalid(
            "proxy.http2.max_concurrent_streams".into(),
            "must be at least 1".into(),
        ));
    }
    if h2.idle_timeout.0.is_zero() {
        return Err(invalid(
            "proxy.http2.idle_timeout".into(),
            "must be more than 0s".into(),
        ));
    }
    for (key, size) in [
        ("initial_stream_window_size", h2.initial_stream_window_size),
        (
            "initial_connection_window_size",
            h2.initial_connection_window_size,
        ),
    ] {
        if !(65_535..=0x7fff_ffff).contains(&size) {
            return Err(invalid(
                format!("proxy.http2.{key}"),
                "must be from 65535 to 2147483647 bytes (RFC 9113's bounds)".into(),
            ));
        }
    }
    Ok(())
}

/// `proxy.listen` and `admin.listen`: each needs a port of its own. Port 0 (the kernel picks
/// one) never clashes; an unspecified address (`0.0.0.0`, `::`) takes its port on every
/// address, so it clashes with any other listener on that port.
fn validate_listeners(proxy: &ProxyConfig, admin: &AdminConfig) -> Result<(), Invalid> {
    let (p, a) = (proxy.listen, admin.listen);
    let clash = p.port() == a.port()
        && p.port() != 0
        && (p.ip() == a.ip() || p.ip().is_unspecified() || a.ip().is_unspecified());
    if !clash {
        return Ok(());
    }
    let why = if p == a {
        format!("{a} is proxy.listen too")
    } else {
        let wide = if a.ip().is_unspecified() { a } else { p };
        format!(
            "{a} and proxy.listen {p} share port {}: {wide} takes it on every address",
            a.port()
        )
    };
    Err(invalid(
        "admin.listen".into(),
        format!("{why}; the proxy and admin listeners need ports of their own"),
    ))
}

/// `proxy.intercept`: where the CA goes, the user's CA if named, and tunnels that no source
/// claims. `hosts` are every source's hosts.
fn validate_intercept(i: &InterceptConfig, hosts: &HashMap<String, usize>) -> Result<(), Invalid> {
    for (k, t) in i.tunnel.iter().enumerate() {
        let key = format!("proxy.intercept.tunnel[{k}]");
        let (host, _) = tunnel_target(t).map_err(|m| invalid(key.clone(), m))?;
        if let Some(j) = hosts.get(&host) {
            return Err(invalid(
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
        return Err(invalid(
            "proxy.intercept.ca_dir".into(),
            "required when interception is enabled: remedy writes ca.pem and bundle.pem there \
             for the connector to trust (for example /var/run/remedy)"
                .into(),
        ));
    }
    if hosts.is_empty() {
        return Err(invalid(
            "proxy.intercept.enabled".into(),
            "no source names match.hosts: interception serves the hosts sources name".into(),
        ));
    }
    match (&i.ca_cert_file, &i.ca_key_file) {
        (None, None) => Ok(()),
        (Some(cert), Some(key)) => crate::intercept_ca::UserCa::load(cert, key)
            .map(drop)
            .map_err(|e| invalid(e.key().into(), e.to_string())),
        (Some(_), None) => Err(invalid(
            "proxy.intercept.ca_cert_file".into(),
            "ca_cert_file needs its key in ca_key_file".into(),
        )),
        (None, Some(_)) => Err(invalid(
            "proxy.intercept.ca_key_file".into(),
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

/// `alerts.group_by`: Prometheus label names, each once, `source` among them.
fn validate_group_by(labels: &[String]) -> Result<(), Invalid> {
    let path = "alerts.group_by".to_owned();
    for (i, l) in labels.iter().enumerate() {
        let mut chars = l.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !l.starts_with("__");
        if !valid {
            return Err(invalid(
                format!("{path}[{i}]"),
                format!("{l:?} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)"),
            ));
        }
        if labels[..i].contains(l) {
            return Err(invalid(
                format!("{path}[{i}]"),
                format!("{l:?} is listed twice"),
            ));
        }
    }
    if !labels.iter().any(|l| l == "source") {
        return Err(invalid(
            path,
            "must contain source: every alert is about one source".into(),
        ));
    }
    Ok(())
}
