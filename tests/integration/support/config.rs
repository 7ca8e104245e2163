//! remedy's config for a test, built rather than hand-formatted YAML:
//!
//! ```text
//! Config::new()
//!     .proxy("max_connections", 2)
//!     .section("shutdown", "{ drain_timeout: 1s, linger: 0s }")
//!     .source(source("api", upstream.url()).prefix("/api").set("max_in_flight", 1))
//! ```
//!
//! The launcher puts both listeners on port 0 and shortens the shutdown unless the config
//! sets `proxy`, `admin` or `shutdown` itself; a config with [`Config::proxy`] fields listens on
//! port 0 as well.

use std::fmt;

/// A whole config file: the `proxy` section's fields, other top-level sections, the sources.
#[derive(Clone, Default)]
pub struct Config {
    proxy: Fields,
    sections: Fields,
    sources: Vec<Source>,
}

/// One source: its name, upstream and matchers, and any other fields.
#[derive(Clone)]
pub struct Source {
    name: String,
    upstream: String,
    matchers: Fields,
    fields: Fields,
}

/// `key: value` pairs in order, a later value for a key replacing the earlier one. Values
/// are YAML as written (flow style: `1s`, `[a, b]`, `{ idle: 300ms }`).
#[derive(Clone, Default)]
struct Fields(Vec<(String, String)>);

impl Fields {
    fn set(&mut self, key: &str, value: impl fmt::Display) {
        let value = value.to_string();
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(field) => field.1 = value,
            None => self.0.push((key.to_owned(), value)),
        }
    }

    fn flow(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A source named `name` that forwards to `upstream` (a URL, with a base path if any).
pub fn source(name: &str, upstream: impl fmt::Display) -> Source {
    Source {
        name: name.to_owned(),
        upstream: upstream.to_string(),
        matchers: Fields::default(),
        fields: Fields::default(),
    }
}

impl Source {
    /// `match.path_prefix`.
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.matchers.set("path_prefix", prefix);
        self
    }

    /// `match.hosts`.
    pub fn hosts(mut self, hosts: &[&str]) -> Self {
        self.matchers
            .set("hosts", format!("[{}]", hosts.join(", ")));
        self
    }

    /// `ca_file`.
    pub fn ca_file(self, path: &std::path::Path) -> Self {
        self.set("ca_file", format!("'{}'", path.display()))
    }

    /// Any other field of the source, as YAML.
    pub fn set(mut self, key: &str, value: impl fmt::Display) -> Self {
        self.fields.set(key, value);
        self
    }
}

impl Config {
    pub fn new() -> Self {
        Config::default()
    }

    pub fn source(mut self, source: Source) -> Self {
        self.sources.push(source);
        self
    }

    /// A field of the `proxy` section, which then listens on port 0.
    pub fn proxy(mut self, key: &str, value: impl fmt::Display) -> Self {
        self.proxy.set(key, value);
        self
    }

    /// A top-level section other than `proxy` and `sources`, as YAML.
    pub fn section(mut self, key: &str, value: impl fmt::Display) -> Self {
        self.sections.set(key, value);
        self
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.proxy.0.is_empty() {
            writeln!(f, "proxy: {{ listen: 127.0.0.1:0, {} }}", self.proxy.flow())?;
        }
        for (key, value) in &self.sections.0 {
            writeln!(f, "{key}: {value}")?;
        }
        if self.sources.is_empty() {
            return Ok(());
        }
        writeln!(f, "sources:")?;
        for s in &self.sources {
            write!(f, "  - {{ name: {}, upstream: '{}'", s.name, s.upstream)?;
            if !s.matchers.0.is_empty() {
                write!(f, ", match: {{ {} }}", s.matchers.flow())?;
            }
            if !s.fields.0.is_empty() {
                write!(f, ", {}", s.fields.flow())?;
            }
            writeln!(f, " }}")?;
        }
        Ok(())
    }
}
