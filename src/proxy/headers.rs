//! The headers remedy changes on the way through: hop-by-hop headers (RFC 9110 §7.6.1) go in
//! both directions, `X-Forwarded-For`, `-Proto` and `-Host` are remedy's own, and `Host` is
//! the upstream's unless the source preserves the connector's.

use std::net::SocketAddr;

use http::Request;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop headers (RFC 9110 §7.6.1) and `Transfer-Encoding`, removed in both directions
/// (hyper frames each side's body itself).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::TRANSFER_ENCODING,
];

/// The index of `name` in [`HOP_BY_HOP`]: one match on the name rather than nine comparisons.
fn hop_by_hop(name: &HeaderName) -> Option<usize> {
    Some(match name.as_str() {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "proxy-authenticate" => 3,
        "proxy-authorization" => 4,
        "te" => 5,
        "trailer" => 6,
        "upgrade" => 7,
        "transfer-encoding" => 8,
        _ => return None,
    })
}

/// Removes the hop-by-hop headers; whether `Transfer-Encoding` was among them.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) -> bool {
    // One pass over the names finds which are present; most messages carry at most
    // `Connection: keep-alive`, so nothing is allocated and only present names are removed.
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = hop_by_hop(name) {
            present |= 1 << i;
        }
    }
    // `TE: trailers` passes: it is the one value HTTP/2 allows, and gRPC sends it so that a
    // server can tell a proxy that would drop its trailers (gRPC's PROTOCOL-HTTP2.md).
    const TE: u16 = 1 << 5;
    if present & TE != 0
        && headers
            .get_all(header::TE)
            .iter()
            .all(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"trailers"))
    {
        present &= !TE;
    }
    if present == 0 {
        return false;
    }
    // Headers the sender named in `Connection` are hop-by-hop too; `close` and `keep-alive`
    // are the usual tokens (often the whole value) and need no lookup of their own.
    let usual =
        |t: &[u8]| t.eq_ignore_ascii_case(b"keep-alive") || t.eq_ignore_ascii_case(b"close");
    let connection = headers.get_all(header::CONNECTION);
    if present & 1 != 0 && !connection.iter().all(|v| usual(v.as_bytes())) {
        let named: Vec<HeaderName> = connection
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|t| !usual(t))
            .filter_map(|t| HeaderName::from_bytes(t).ok())
            .collect();
        for name in &named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    present & (1 << 8) != 0
}

/// The connector's address as a header value, made once per connection.
pub fn client_ip(peer: SocketAddr) -> HeaderValue {
    HeaderValue::from_str(&peer.ip().to_string()).expect("an IP address is a valid header value")
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Every `X-Forwarded-For` the connector sent, in order, then the connector's address.
fn forwarded_for(headers: &HeaderMap, client_ip: &HeaderValue) -> Option<HeaderValue> {
    let mut chain = headers.get_all(X_FORWARDED_FOR).iter();
    let Some(first) = chain.next() else {
        return Some(client_ip.clone());
    };
    let mut joined = first.as_bytes().to_vec();
    for v in chain {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(v.as_bytes());
    }
    joined.extend_from_slice(b", ");
    joined.extend_from_slice(client_ip.as_bytes());
    HeaderValue::from_bytes(&joined).ok()
}

/// Rewrites `req`'s headers in place (moving a request costs a copy of its head).
/// `https` says the connector spoke TLS to remedy (inside a tunnel).
pub(super) fn rewrite_request<B>(
    req: &mut Request<B>,
    client_ip: &HeaderValue,
    preserve_host: bool,
    https: bool,
) {
    // First, so that a `Host` the connector named in `Connection` is not forwarded either.
    // (A request with both framings never gets here: the guard refuses it.)
    strip_hop_by_hop(req.headers_mut());
    let original_host = match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => req.headers().get(header::HOST).cloned(),
    };
    let headers = req.headers_mut();
    if let Some(v) = forwarded_for(headers, client_ip) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    let proto = if https { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    // remedy sets `X-Forwarded-Host` or removes it: a connector's own never passes.
    match original_host {
        Some(h) => {
            if preserve_host {
                headers.insert(header::HOST, h.clone());
            }
            headers.insert(X_FORWARDED_HOST, h);
        }
        None => {
            headers.remove(X_FORWARDED_HOST);
        }
    }
    if !preserve_host {
        // The client sets `Host` (or `:authority`) from the upstream URI.
        headers.remove(header::HOST);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rewrites `req` as the handler does for a connector at 127.0.0.1:5000.
    fn rewrite_from_loopback<B>(req: &mut Request<B>, preserve_host: bool) {
        rewrite_request(
            req,
            &client_ip("127.0.0.1:5000".parse().unwrap()),
            preserve_host,
            false,
        );
    }

    #[test]
    fn every_hop_by_hop_name_is_matched_to_its_own_index() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop(name), Some(i), "{name}");
        }
        assert_eq!(hop_by_hop(&header::CONTENT_LENGTH), None);
        assert_eq!(hop_by_hop(&HeaderName::from_static("x-te")), None);
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-trace"),
        );
        h.insert("x-trace", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::AUTHORIZATION));
    }

    /// `TE: trailers` (gRPC's) passes; any other `TE` is hop-by-hop.
    #[test]
    fn te_trailers_passes_and_other_te_values_do_not() {
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        assert!(!strip_hop_by_hop(&mut h));
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
        h.append(header::TE, HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut h);
        assert!(!h.contains_key(header::TE));
    }

    #[test]
    fn every_hop_by_hop_header_goes_and_end_to_end_ones_stay() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("close"));
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("X-Trace ,Upgrade"),
        );
        for name in HOP_BY_HOP.iter().skip(1) {
            h.insert(name, HeaderValue::from_static("v"));
        }
        h.insert("x-trace", HeaderValue::from_static("1"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-length", "x-kept"]);

        let mut plain = HeaderMap::new();
        plain.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain.len(), 1);
    }

    #[test]
    fn forwarded_headers_are_set_and_host_dropped() {
        let mut req = Request::builder()
            .uri("/github/x")
            .header(header::HOST, "127.0.0.1:8780")
            .header("x-forwarded-for", "10.0.0.1")
            .body(())
            .unwrap();
        rewrite_from_loopback(&mut req, false);
        let h = req.headers();
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-host"], "127.0.0.1:8780");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert!(!h.contains_key(header::HOST));
    }

    #[test]
    fn every_forwarded_for_the_connector_sent_is_kept_in_order_before_its_address() {
        let mut req = Request::builder()
            .uri("/github/x")
            .header("x-forwarded-for", "10.0.0.1")
            .header("x-forwarded-for", "10.0.0.2, 10.0.0.3")
            .body(())
            .unwrap();
        rewrite_from_loopback(&mut req, false);
        let all: Vec<_> = req.headers().get_all("x-forwarded-for").iter().collect();
        assert_eq!(all, ["10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1"]);
    }

    #[test]
    fn a_host_named_in_connection_is_not_forwarded() {
        let mut req = Request::builder()
            .uri("/github/x")
            .header(header::HOST, "127.0.0.1:8780")
            .header(header::CONNECTION, "host")
            .body(())
            .unwrap();
        rewrite_from_loopback(&mut req, true);
        assert!(!req.headers().contains_key(header::HOST));
        assert!(!req.headers().contains_key("x-forwarded-host"));
    }

    #[test]
    fn preserve_host_keeps_the_connector_host() {
        let mut req = Request::builder()
            .uri("http://api.github.com/user")
            .body(())
            .unwrap();
        rewrite_from_loopback(&mut req, true);
        assert_eq!(req.headers()[header::HOST], "api.github.com");
    }
}
