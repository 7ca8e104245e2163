//! Pure routing: a request's method, URI and `Host` header → the source it belongs to, or
//! why none takes it.
//!
//! remedy is not an open proxy. A request reaches an upstream only when a configured matcher
//! names it, and only under that source's base path: paths that could climb out of a prefix
//! (dot segments, encoded slashes, backslashes, doubled slashes) are refused before matching.

use std::collections::HashMap;

use http::{Method, Uri};

use crate::config::SourceConfig;

/// Matchers of every source, built once per config.
#[derive(Debug, Clone, Default)]
pub struct Router {
    /// Prefix → source index. Prefixes never overlap (config validation), so at most one
    /// matches; lookups try the path's own segment boundaries, not every prefix.
    prefixes: HashMap<String, usize>,
    /// Most segments in any prefix: how many boundaries a lookup needs to try.
    prefix_depth: usize,
    /// Lower-cased host → source index.
    hosts: HashMap<String, usize>,
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed<'a> {
    /// Index into the config's sources.
    pub source: usize,
    /// The path to append to the upstream's base path; always starts with `/`.
    pub path: &'a str,
    /// The query, byte for byte, without `?`.
    pub query: Option<&'a str>,
}

/// Why a request is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoRoute {
    #[error(
        "remedy does not tunnel CONNECT while proxy.intercept is off: status codes inside a \
         TLS tunnel cannot be observed. Turn interception on, and give the connector \
         remedy's CA bundle (SSL_CERT_FILE, REQUESTS_CA_BUNDLE) from proxy.intercept.ca_dir:\n\n\
         proxy:\n  intercept:\n    enabled: true\n    ca_dir: /var/run/remedy\n\n\
         or send plain-HTTP requests (HTTP_PROXY=http://..., or a base URL pointing at remedy) \
         and remedy forwards them to the upstream over TLS."
    )]
    Connect,
    #[error(
        "a CONNECT names host:port and nothing else (no scheme, path or userinfo), with a port \
         from 1 to 65535"
    )]
    BadConnectTarget,
    #[error(
        "a CONNECT inside an intercepted tunnel: remedy opens no tunnel within a tunnel. Send \
         the requests themselves inside this one"
    )]
    ConnectInTunnel,
    #[error(
        "no source names this CONNECT's host, so remedy neither intercepts nor tunnels it. \
         Add a source whose match.hosts names the host (its requests are then counted), or \
         list the host in proxy.intercept.tunnel to pass it through unobserved:\n\n\
         sources:\n  - name: example\n    upstream: https://api.example.com\n    \
         match: {{ hosts: [api.example.com] }}\n"
    )]
    ConnectRefused,
    #[error(
        "this request names a host other than the one its CONNECT tunnel was opened for; \
         open a tunnel for each host"
    )]
    Misdirected,
    #[error("the request path is not allowed: {0}")]
    UnsafePath(&'static str),
    #[error("the request's host is not acceptable: {0}")]
    BadHost(&'static str),
    #[error(
        "remedy refuses this request's framing: it carries both Content-Length and \
         Transfer-Encoding, or an earlier request on this connection could not be followed \
         (request smuggling guard)"
    )]
    AmbiguousFraming,
    #[error(
        "the request's Transfer-Encoding names a coding other than chunked; remedy forwards \
         only chunked bodies faithfully (send the body with Content-Encoding instead)"
    )]
    UnsupportedCoding,
    #[error(
        "no source matched this request. Add a source to remedy's config whose \
         match.path_prefix starts this path, or whose match.hosts names this host:\n\n\
         sources:\n  - name: example\n    upstream: https://api.example.com\n    \
         match: {{ path_prefix: /example, hosts: [api.example.com] }}\n"
    )]
    Unmatched,
}

impl NoRoute {
    /// A few words for log lines.
    pub fn short(self) -> &'static str {
        match self {
            NoRoute::Connect => "CONNECT is not tunnelled",
            NoRoute::ConnectRefused => "CONNECT to a host no source names",
            NoRoute::ConnectInTunnel => "CONNECT inside a tunnel",
            NoRoute::BadConnectTarget => "CONNECT to no usable host:port",
            NoRoute::Misdirected => "a host other than the tunnel's",
            NoRoute::UnsafePath(why) | NoRoute::BadHost(why) => why,
            NoRoute::AmbiguousFraming => "ambiguous framing or a connection the guard lost",
            NoRoute::UnsupportedCoding => "a transfer coding other than chunked",
            NoRoute::Unmatched => "no source matched",
        }
    }
}

impl Router {
    pub fn new(sources: &[SourceConfig]) -> Self {
        let prefixes: HashMap<String, usize> = sources
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.matcher.path_prefix.clone().map(|p| (p, i)))
            .collect();
        let prefix_depth = prefixes
            .keys()
            .map(|p| p.matches('/').count())
            .max()
            .unwrap_or(0);
        let hosts = sources
            .iter()
            .enumerate()
            .flat_map(|(i, s)| {
                s.matcher
                    .hosts
                    .iter()
                    .map(move |h| (h.to_ascii_lowercase(), i))
            })
            .collect();
        Router {
            prefixes,
            prefix_depth,
            hosts,
        }
    }

    /// The source for a request. `host` is the `Host` header, if any.
    pub fn route<'a>(
        &self,
        method: &Method,
        uri: &'a Uri,
        host: Option<&str>,
    ) -> Result<Routed<'a>, NoRoute> {
        let path = admissible(method, uri)?;
        let query = uri.query();
        // Absolute-form (a client using HTTP_PROXY): the URI's host decides, nothing else.
        if let Some(authority_host) = uri.host() {
            return self
                .by_host(authority_host)
                .map(|source| Routed {
                    source,
                    path,
                    query,
                })
                .ok_or(NoRoute::Unmatched);
        }
        if let Some((source, rest)) = self.by_prefix(path) {
            return Ok(Routed {
                source,
                path: rest,
                query,
            });
        }
        host.and_then(|h| self.by_host(strip_port(h)))
            .map(|source| Routed {
                source,
                path,
                query,
            })
            .ok_or(NoRoute::Unmatched)
    }

    /// The source for a request inside a `CONNECT` tunnel to `tunnel_host`: the source that
    /// names that host, with the whole path. A `Host` or absolute-form URI that names another
    /// host is misdirected (a connection is for one origin, RFC 9110 §7.4).
    pub fn route_in_tunnel<'a>(
        &self,
        tunnel_host: &str,
        method: &Method,
        uri: &'a Uri,
        host: Option<&str>,
    ) -> Result<Routed<'a>, NoRoute> {
        if method == Method::CONNECT {
            return Err(NoRoute::ConnectInTunnel);
        }
        let path = admissible(method, uri)?;
        let named = uri.host().or(host.map(strip_port));
        if named.is_some_and(|h| !h.eq_ignore_ascii_case(tunnel_host)) {
            return Err(NoRoute::Misdirected);
        }
        self.by_host(tunnel_host)
            .map(|source| Routed {
                source,
                path,
                query: uri.query(),
            })
            .ok_or(NoRoute::Unmatched)
    }

    /// The source whose prefix is a whole-segment prefix of `path`, and the rest of the path.
    fn by_prefix<'a>(&self, path: &'a str) -> Option<(usize, &'a str)> {
        if self.prefixes.is_empty() {
            return None;
        }
        if let Some(i) = self.prefixes.get("/") {
            return Some((*i, path));
        }
        // Boundaries: every `/` after the first byte, then the end of the path.
        let ends = path
            .match_indices('/')
            .map(|(i, _)| i)
            .filter(|i| *i > 0)
            .chain(std::iter::once(path.len()))
            .take(self.prefix_depth);
        for end in ends {
            if let Some(i) = self.prefixes.get(&path[..end]) {
                let rest = &path[end..];
                return Some((*i, if rest.is_empty() { "/" } else { rest }));
            }
        }
        None
    }

    /// The source that names `host` in `match.hosts`.
    pub fn by_host(&self, host: &str) -> Option<usize> {
        if let Some(i) = self.hosts.get(host) {
            return Some(*i);
        }
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.hosts.get(&host.to_ascii_lowercase()).copied();
        }
        None
    }
}

/// What every request passes before it is matched: not a `CONNECT`, a path that spells only
/// its segments, and an absolute-form URI only as `http://` or `https://` without a user.
fn admissible<'a>(method: &Method, uri: &'a Uri) -> Result<&'a str, NoRoute> {
    if method == Method::CONNECT {
        return Err(NoRoute::Connect);
    }
    let path = uri.path();
    check_path(path)?;
    if uri.host().is_some() {
        check_absolute(uri)?;
    }
    Ok(path)
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// Refuses paths that could address anything but what their segments spell.
pub fn check_path(path: &str) -> Result<(), NoRoute> {
    if !path.starts_with('/') {
        return Err(NoRoute::UnsafePath("it must start with /"));
    }
    if path.contains("//") {
        return Err(NoRoute::UnsafePath("doubled slashes are refused"));
    }
    if path.contains('\\') {
        return Err(NoRoute::UnsafePath("backslashes are refused"));
    }
    let bytes = path.as_bytes();
    for (i, _) in path.match_indices('%') {
        let hex = bytes.get(i + 1..i + 3);
        match hex.map(|h| [h[0].to_ascii_lowercase(), h[1].to_ascii_lowercase()]) {
            Some([b'2', b'f']) | Some([b'5', b'c']) => {
                return Err(NoRoute::UnsafePath("encoded slashes are refused"));
            }
            Some([b'0', b'0']) => return Err(NoRoute::UnsafePath("encoded NUL is refused")),
            Some([a, b]) if a.is_ascii_hexdigit() && b.is_ascii_hexdigit() => {}
            _ => return Err(NoRoute::UnsafePath("malformed percent-encoding")),
        }
    }
    for segment in path.split('/') {
        if is_dot_segment(without_parameters(segment)) {
            return Err(NoRoute::UnsafePath("dot segments are refused"));
        }
    }
    Ok(())
}

/// Whether every `Transfer-Encoding` the request names is `chunked`: hyper decodes the
/// chunked framing and passes any other coding (`gzip, chunked`) through as body bytes while
/// the header is dropped as hop-by-hop, so the upstream would get a body it cannot decode.
pub fn only_chunked(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .all(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// An absolute-form URI is `http://` or `https://` and names no user: a proxy forwards it as
/// HTTP whatever the scheme said, and userinfo would be copied into `X-Forwarded-Host`.
fn check_absolute(uri: &Uri) -> Result<(), NoRoute> {
    let scheme = uri.scheme_str().unwrap_or_default();
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(NoRoute::BadHost(
            "only http:// and https:// URIs are proxied",
        ));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(NoRoute::BadHost("userinfo in the request URI is refused"));
    }
    Ok(())
}

/// The request's one `Host` header: HTTP/1.1 requires exactly one (RFC 9112 §3.2), HTTP/1.0
/// allows none; two would let the first and a later hop disagree about the target.
pub fn host_header(
    version: http::Version,
    headers: &http::HeaderMap,
) -> Result<Option<&http::HeaderValue>, NoRoute> {
    let mut all = headers.get_all(http::header::HOST).iter();
    let first = all.next();
    if all.next().is_some() {
        return Err(NoRoute::BadHost("more than one Host header"));
    }
    if first.is_none() && version == http::Version::HTTP_11 {
        return Err(NoRoute::BadHost("HTTP/1.1 requires a Host header"));
    }
    Ok(first)
}

/// The segment without its `;` parameters (`..;jsessionid=x` is `..`), the `;` literal or
/// percent-encoded: Tomcat and Spring strip them before resolving dot segments, so `/..;/`
/// behind a Java API climbs out of the base path like `/../`.
fn without_parameters(segment: &str) -> &str {
    let bytes = segment.as_bytes();
    let end = (0..bytes.len())
        .find(|&i| {
            bytes[i] == b';'
                || (bytes[i] == b'%'
                    && bytes.get(i + 1) == Some(&b'3')
                    && bytes.get(i + 2).map(|b| b | 0x20) == Some(b'b'))
        })
        .unwrap_or(bytes.len());
    &segment[..end]
}

/// `.` or `..`, literally or with the dots percent-encoded.
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        if rest[0] == b'.' {
            rest = &rest[1..];
        } else if rest.len() >= 3 && rest[0] == b'%' && rest[1] == b'2' && rest[2] | 0x20 == b'e' {
            rest = &rest[3..];
        } else {
            return false;
        }
        dots += 1;
    }
    dots == 1 || dots == 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn router() -> Router {
        let c = config::parse(
            "sources:\n\
             - { name: github, upstream: 'https://api.github.com', match: { path_prefix: /github, hosts: [api.github.com] } }\n\
             - { name: ghv, upstream: 'https://x', match: { path_prefix: /gitlab/v4 } }\n\
             - { name: hub, upstream: 'https://api.hubapi.com', match: { hosts: [api.hubapi.com] } }\n",
            "t.yaml",
        )
        .unwrap();
        Router::new(&c.sources)
    }

    fn route(method: Method, uri: &str, host: Option<&str>) -> Result<(usize, String), NoRoute> {
        let uri: Uri = uri.parse().unwrap();
        router().route(&method, &uri, host).map(|r| {
            let q = r.query.map(|q| format!("?{q}")).unwrap_or_default();
            (r.source, format!("{}{q}", r.path))
        })
    }

    #[test]
    fn routes_by_prefix_then_host() {
        type Case<'a> = (&'a str, Option<&'a str>, Result<(usize, &'a str), NoRoute>);
        let cases: &[Case] = &[
            (
                "/github/repos/x?a=1&b=%20",
                None,
                Ok((0, "/repos/x?a=1&b=%20")),
            ),
            ("/github", None, Ok((0, "/"))),
            ("/github/", None, Ok((0, "/"))),
            ("/gitlab/v4/graphql", None, Ok((1, "/graphql"))),
            ("/gitlab/v3", None, Err(NoRoute::Unmatched)),
            ("/githubx/y", None, Err(NoRoute::Unmatched)),
            (
                "/crm/v3/objects",
                Some("api.hubapi.com"),
                Ok((2, "/crm/v3/objects")),
            ),
            ("/crm", Some("API.HubApi.com:443"), Ok((2, "/crm"))),
            ("/crm", Some("other.example"), Err(NoRoute::Unmatched)),
            ("/crm", None, Err(NoRoute::Unmatched)),
            ("http://api.github.com/user?x", None, Ok((0, "/user?x"))),
            ("http://API.GITHUB.COM:80/user", None, Ok((0, "/user"))),
            // The absolute URI decides even when Host names a configured API.
            (
                "http://evil.example/github/x",
                Some("api.github.com"),
                Err(NoRoute::Unmatched),
            ),
        ];
        for (uri, host, want) in cases {
            let want = (*want).map(|(i, p)| (i, p.to_owned()));
            assert_eq!(route(Method::GET, uri, *host), want, "{uri} host={host:?}");
        }
    }

    #[test]
    fn connect_is_refused() {
        let uri: Uri = "api.github.com:443".parse().unwrap();
        assert_eq!(
            router().route(&Method::CONNECT, &uri, None),
            Err(NoRoute::Connect)
        );
    }

    #[test]
    fn escapes_are_refused() {
        for path in [
            "/github/../admin",
            "/github/%2e%2e/x",
            "/github/%2E./x",
            "/github/.",
            "/github/a%2fb",
            "/github/a%5Cb",
            "/github//x",
            "/github/a\\b",
            "/github/%zz",
            "/github/%2",
            "/github/%00",
            "/github/..;/admin",
            "/github/%2e%2e;/admin",
            "/github/..%3b/admin",
            "/github/..%3B/admin",
            "/github/.;x=1/admin",
            "/github/..;jsessionid=1/admin",
        ] {
            assert!(
                matches!(check_path(path), Err(NoRoute::UnsafePath(_))),
                "{path}"
            );
        }
        for ok in [
            "/github/a.b",
            "/github/..x",
            "/github/%20",
            "/",
            "/github/a;b=1",
            "/github/..x;y",
            "/github/;/x",
        ] {
            assert_eq!(check_path(ok), Ok(()), "{ok}");
        }
    }

    proptest::proptest! {
        /// Whatever the segments, a forwarded path never climbs out of the source's prefix.
        #[test]
        fn no_forwarded_path_escapes_its_prefix(
            segments in proptest::collection::vec(
                proptest::sample::select(vec![
                    "..", ".", "%2e%2e", "%2E.", ".%2e", "%2f", "%2F", "%5c", "%5C", "", "a", "api",
                    "github", "x%2ey", "..x", "%00", "%", "%zz", "~", "%252e", "..;", ".;a=1",
                    "%2e%2e;x", "..%3b", "..%3B", ";",
                ]),
                0..8,
            ),
            prefix in proptest::sample::select(vec!["/github", "/gitlab/v4", ""]),
        ) {
            let path = format!("{prefix}/{}", segments.join("/"));
            let Ok(uri) = path.parse::<Uri>() else { return Ok(()) };
            if let Ok(r) = router().route(&Method::GET, &uri, Some("api.hubapi.com")) {
                let p = r.path;
                proptest::prop_assert!(p.starts_with('/'));
                proptest::prop_assert!(!p.contains("//"));
                let lower = p.to_ascii_lowercase();
                proptest::prop_assert!(!lower.contains("%2f") && !lower.contains("%5c"));
                for seg in lower.split('/') {
                    let decoded = seg.replace("%2e", ".").replace("%3b", ";");
                    let bare = decoded.split(';').next().unwrap_or_default();
                    proptest::prop_assert!(bare != ".." && bare != ".", "{path} -> {p}");
                }
            }
        }
    }
}
