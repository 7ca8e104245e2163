//! gRPC's outcome of a call, which HTTP's status line does not carry: every gRPC response is
//! HTTP 200, and the call's status is `grpc-status` in the trailers, or in the head of a
//! "trailers-only" answer (an error before any message). Each status stands for the HTTP
//! status Google's API design guide gives it (`google.rpc.Code`).

use http::HeaderMap;
use http::header::CONTENT_TYPE;

/// Whether a request or response is gRPC: `content-type: application/grpc`, with or without
/// a `+proto`-style suffix. gRPC-Web (`application/grpc-web`) is plain HTTP/1.1 and left alone.
/// One comparison of a header that is there or not.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.len() >= 16
            && v[..16].eq_ignore_ascii_case(b"application/grpc")
            && !v[16..].starts_with(b"-")
    })
}

/// The gRPC status codes (`google.rpc.Code`): name, and the HTTP status it stands for.
pub const CODES: [(&str, u16); 17] = [
    ("OK", 200),
    ("CANCELLED", 499),
    ("UNKNOWN", 500),
    ("INVALID_ARGUMENT", 400),
    ("DEADLINE_EXCEEDED", 504),
    ("NOT_FOUND", 404),
    ("ALREADY_EXISTS", 409),
    ("PERMISSION_DENIED", 403),
    ("RESOURCE_EXHAUSTED", 429),
    ("FAILED_PRECONDITION", 400),
    ("ABORTED", 409),
    ("OUT_OF_RANGE", 400),
    ("UNIMPLEMENTED", 501),
    ("INTERNAL", 500),
    ("UNAVAILABLE", 503),
    ("DATA_LOSS", 500),
    ("UNAUTHENTICATED", 401),
];

/// `api_code` of a status outside `google.rpc.Code`, which keeps the label bounded.
pub const OTHER: &str = "other";

/// gRPC's UNAVAILABLE, which remedy answers a call with when it cannot make it.
pub const UNAVAILABLE: u32 = 14;

/// A call's `grpc-status`, as the API sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u32);

impl Status {
    /// The status `headers` (a trailers-only head, or the trailers) carry, if any.
    pub fn of(headers: &HeaderMap) -> Option<Status> {
        let v = headers.get("grpc-status")?;
        std::str::from_utf8(v.as_bytes())
            .ok()?
            .trim()
            .parse()
            .ok()
            .map(Status)
    }

    pub fn is_ok(self) -> bool {
        self.0 == 0
    }

    /// Its name (`RESOURCE_EXHAUSTED`), or `other` for a code `google.rpc.Code` does not have.
    pub fn name(self) -> &'static str {
        usize::try_from(self.0)
            .ok()
            .and_then(|i| CODES.get(i))
            .map_or(OTHER, |(name, _)| name)
    }

    /// The HTTP status it stands for; a code beyond `google.rpc.Code` stands for UNKNOWN's.
    pub fn http_status(self) -> u16 {
        usize::try_from(self.0)
            .ok()
            .and_then(|i| CODES.get(i))
            .map_or(500, |(_, status)| *status)
    }

    /// The status whose name is `name` (in any case).
    pub fn named(name: &str) -> Option<Status> {
        CODES
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|i| Status(i as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with(name: &'static str, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn grpc_is_told_by_its_content_type_and_grpc_web_is_not() {
        for (ct, grpc) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("Application/GRPC+json", true),
            ("application/grpc-web", false),
            ("application/grpc-web+proto", false),
            ("application/json", false),
            ("application/grp", false),
        ] {
            assert_eq!(is_grpc(&with("content-type", ct)), grpc, "{ct}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    /// Google's API design guide, "Errors": the HTTP mapping of every `google.rpc.Code`.
    #[test]
    fn every_status_stands_for_the_http_status_googles_guide_gives_it() {
        for (code, name, http) in [
            (3, "INVALID_ARGUMENT", 400),
            (9, "FAILED_PRECONDITION", 400),
            (11, "OUT_OF_RANGE", 400),
            (16, "UNAUTHENTICATED", 401),
            (7, "PERMISSION_DENIED", 403),
            (5, "NOT_FOUND", 404),
            (10, "ABORTED", 409),
            (6, "ALREADY_EXISTS", 409),
            (8, "RESOURCE_EXHAUSTED", 429),
            (1, "CANCELLED", 499),
            (13, "INTERNAL", 500),
            (2, "UNKNOWN", 500),
            (15, "DATA_LOSS", 500),
            (12, "UNIMPLEMENTED", 501),
            (14, "UNAVAILABLE", 503),
            (4, "DEADLINE_EXCEEDED", 504),
        ] {
            assert_eq!(
                (Status(code).name(), Status(code).http_status()),
                (name, http)
            );
            assert_eq!(Status::named(&name.to_lowercase()), Some(Status(code)));
        }
        assert_eq!((Status(99).name(), Status(99).http_status()), (OTHER, 500));
        assert!(Status(0).is_ok());
    }

    #[test]
    fn the_status_is_read_from_a_head_or_trailers() {
        assert_eq!(Status::of(&with("grpc-status", "8")), Some(Status(8)));
        assert_eq!(Status::of(&with("grpc-status", " 0 ")), Some(Status(0)));
        assert_eq!(Status::of(&with("grpc-status", "eight")), None);
        assert_eq!(Status::of(&HeaderMap::new()), None);
    }
}
