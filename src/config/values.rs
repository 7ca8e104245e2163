//! The config's value types, each parsed and checked as it is read: durations as people
//! write them, listen addresses, source names safe as label values, and upstream URLs.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::catalog;

/// A duration as the config writes it (`250ms`, `5s`, `15m`, `1h30m`), printed in Prometheus
/// syntax (`90s` → `1m30s`) where the rules use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn secs(s: u64) -> Self {
        HumanDuration(Duration::from_secs(s))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "bad duration {s:?}: {e} (write it like 250ms, 5s, 15m or 1h30m)"
                ))
            })
    }
}

impl fmt::Display for HumanDuration {
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

/// A listen address: an IP address and a port. Host names are refused rather than resolved,
/// since what a name resolves to inside a pod is not what the user meant to bind.
pub(super) fn listen_address<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    parse_listen(&s).map_err(serde::de::Error::custom)
}

pub(super) fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    let example = "write it like 127.0.0.1:8780, 0.0.0.0:9780 or [::1]:8780";
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!(
            "{s:?} is not an IP address and a port: both are needed; {example}"
        ));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.parse::<std::net::IpAddr>().is_err() {
        return Err(format!(
            "{s:?}: {host:?} is not an IP address (host names are not resolved); {example}"
        ));
    }
    Err(format!(
        "{s:?}: {port:?} is not a port (a number from 0 to 65535); {example}"
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn listen_values_that_are_not_an_ip_and_a_port_say_what_is_needed() {
        assert_eq!(parse_listen("[::1]:80"), Ok("[::1]:80".parse().unwrap()));
        for (bad, says) in [
            ("localhost:8780", "\"localhost\" is not an IP address"),
            ("127.0.0.1:99999", "\"99999\" is not a port"),
            ("8780", "both are needed"),
            ("127.0.0.1", "both are needed"),
        ] {
            let e = parse_listen(bad).unwrap_err();
            assert!(
                e.contains(says) && e.contains("127.0.0.1:8780"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn durations_print_in_prometheus_syntax() {
        for (d, s) in [
            (90_000, "1m30s"),
            (300_000, "5m"),
            (250, "250ms"),
            (0, "0s"),
        ] {
            assert_eq!(HumanDuration(Duration::from_millis(d)).to_string(), s);
        }
    }
}
