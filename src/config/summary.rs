//! `remedy check-config`'s one-screen summary of a valid config.

use std::fmt::Write;

use super::{BodyErrorsConfig, Config};
use crate::catalog::Catalog;

/// The listeners, each source with its matchers and timeouts, interception, the catalog (codes
/// built in, added and overridden, counted apart) and the alert settings.
pub fn summary(c: &Config, file: &str) -> String {
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
        if let Some(b) = &src.body_errors {
            let what = match b {
                BodyErrorsConfig::Pack(name) => format!("pack {name}"),
                BodyErrorsConfig::Rules(r) => format!("{} rules of its own", r.len()),
            };
            let _ = writeln!(
                s,
                "  {:<16}    errors in JSON bodies: {what}, reading at most {} bytes of each",
                "", src.body_errors_max_bytes
            );
        }
        if !src.routes.is_empty() {
            let _ = writeln!(
                s,
                "  {:<16}    routes ({} of at most {}, then other):",
                "",
                src.routes.len(),
                src.max_routes
            );
            for r in &src.routes {
                let _ = writeln!(s, "  {:<16}      {r}", "");
            }
        }
    }
    interception(&mut s, c);
    let builtin = Catalog::builtin();
    let added = c
        .catalog
        .entries()
        .filter(|e| builtin.get(e.code).is_none())
        .count();
    let mut overridden: Vec<u16> = c
        .catalog_overrides
        .iter()
        .map(|o| o.code)
        .filter(|code| builtin.get(*code).is_some())
        .collect();
    overridden.sort_unstable();
    overridden.dedup();
    let _ = writeln!(
        s,
        "catalog: {} codes ({} built in, {} of them overridden; {} added), {} remediation keys",
        c.catalog.len(),
        c.catalog.len() - added,
        overridden.len(),
        added,
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

/// `interception: off`, or the hosts intercepted, those tunnelled, and where the CA comes
/// from and goes.
fn interception(s: &mut String, c: &Config) {
    let i = &c.proxy.intercept;
    if !i.enabled {
        let _ = writeln!(s, "interception: off (CONNECT is answered 405)");
        return;
    }
    let mut hosts: Vec<&str> = c
        .sources
        .iter()
        .flat_map(|src| src.matcher.hosts.iter().map(String::as_str))
        .collect();
    hosts.sort_unstable();
    let ca = match &i.ca_cert_file {
        Some(cert) => format!("the CA in {}", cert.display()),
        None => "a CA remedy makes at start".to_owned(),
    };
    let dir = i.ca_dir.as_deref().map(|d| d.display().to_string());
    let _ = writeln!(s, "interception: on, with {ca}");
    let _ = writeln!(s, "  intercepted: {}", hosts.join(", "));
    let tunnel = if i.tunnel.is_empty() {
        "none".to_owned()
    } else {
        i.tunnel.join(", ")
    };
    let _ = writeln!(s, "  tunnelled:   {tunnel}");
    let _ = writeln!(
        s,
        "  ca_dir:      {} (ca.pem, bundle.pem)",
        dir.unwrap_or_default()
    );
}
