//! gRPC's outcome of a call, which HTTP's status line does not carry: every gRPC response is
//! HTTP 200, and the call's status is `grpc-status` in the trailers, or in the head of a
//! "trailers-only" answer (an error before any message). Each status stands for the HTTP
//! status Google's API design guide gives it (`google.rpc.Code`).

use std::time::Duration;

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
    pub const CANCELLED: Status = Status(1);
    pub const UNKNOWN: Status = Status(2);
    pub const DEADLINE_EXCEEDED: Status = Status(4);
    pub const PERMISSION_DENIED: Status = Status(7);
    pub const RESOURCE_EXHAUSTED: Status = Status(8);
    pub const INTERNAL: Status = Status(13);
    pub const UNAVAILABLE: Status = Status(UNAVAILABLE);

    /// The status `headers` (a trailers-only head, or the trailers) carry, as a gRPC client
    /// reads it: the last `grpc-status` when there are several; INTERNAL for a value that is
    /// no decimal number (`-1`, `abc`, `8.0`), as grpcio reports it, while ` 8 `, `08` and `+8`
    /// read as 8; `None` without one.
    pub fn of(headers: &HeaderMap) -> Option<Status> {
        let v = headers.get_all("grpc-status").iter().next_back()?;
        let parsed = std::str::from_utf8(v.as_bytes())
            .ok()
            .and_then(|v| v.trim().parse().ok());
        Some(parsed.map_or(Status::INTERNAL, Status))
    }

    /// What a gRPC client reads as the status of trailers: theirs, or UNKNOWN without one.
    pub fn in_trailers(trailers: &HeaderMap) -> Status {
        Status::of(trailers).unwrap_or(Status::UNKNOWN)
    }

    /// The status a gRPC client gives a call whose stream was reset with the HTTP/2 error
    /// code `reason` (gRPC's "PROTOCOL-HTTP2", "Errors"), `past_deadline` telling a `CANCEL`
    /// that came at or after the call's `grpc-timeout` (DEADLINE_EXCEEDED) from one before it
    /// (CANCELLED).
    pub fn of_reset(reason: u32, past_deadline: bool) -> Status {
        match reason {
            // REFUSED_STREAM: the server took nothing of the call.
            0x7 => Status::UNAVAILABLE,
            0x8 if past_deadline => Status::DEADLINE_EXCEEDED,
            0x8 => Status::CANCELLED,
            // ENHANCE_YOUR_CALM: the server asks the client to slow down.
            0xb => Status::RESOURCE_EXHAUSTED,
            // INADEQUATE_SECURITY.
            0xc => Status::PERMISSION_DENIED,
            // NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT,
            // FRAME_SIZE_ERROR, COMPRESSION_ERROR, CONNECT_ERROR, and codes HTTP/2 does not have.
            _ => Status::INTERNAL,
        }
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

/// A call's `grpc-timeout` (gRPC's "PROTOCOL-HTTP2": one to eight digits and a unit, `H`, `M`,
/// `S`, `m`, `u` or `n`); `None` without one or for a value that is not of that form.
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.as_bytes();
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
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
        for (value, read) in [
            ("8", 8),
            (" 0 ", 0),
            // As grpcio reads them.
            (" 8 ", 8),
            ("08", 8),
            ("+8", 8),
            ("-1", 13),
            ("abc", 13),
            ("8.0", 13),
            ("", 13),
            ("99999999999", 13),
        ] {
            assert_eq!(
                Status::of(&with("grpc-status", value)),
                Some(Status(read)),
                "{value:?}"
            );
        }
        assert_eq!(Status::of(&HeaderMap::new()), None);
        assert_eq!(Status::in_trailers(&HeaderMap::new()), Status::UNKNOWN);
        let mut twice = with("grpc-status", "0");
        twice.append("grpc-status", HeaderValue::from_static("8"));
        assert_eq!(Status::of(&twice), Some(Status(8)), "the last one wins");
    }

    /// gRPC's "PROTOCOL-HTTP2", "Errors": what a client reports for a stream reset with each
    /// HTTP/2 error code.
    #[test]
    fn a_reset_stands_for_the_status_grpcs_http2_mapping_gives_it() {
        for (reason, before, after) in [
            (0x0, "INTERNAL", "INTERNAL"),
            (0x1, "INTERNAL", "INTERNAL"),
            (0x2, "INTERNAL", "INTERNAL"),
            (0x3, "INTERNAL", "INTERNAL"),
            (0x4, "INTERNAL", "INTERNAL"),
            (0x6, "INTERNAL", "INTERNAL"),
            (0x7, "UNAVAILABLE", "UNAVAILABLE"),
            (0x8, "CANCELLED", "DEADLINE_EXCEEDED"),
            (0x9, "INTERNAL", "INTERNAL"),
            (0xa, "INTERNAL", "INTERNAL"),
            (0xb, "RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED"),
            (0xc, "PERMISSION_DENIED", "PERMISSION_DENIED"),
            (0xff, "INTERNAL", "INTERNAL"),
        ] {
            assert_eq!(Status::of_reset(reason, false).name(), before, "{reason}");
            assert_eq!(Status::of_reset(reason, true).name(), after, "{reason}");
        }
    }

    #[test]
    fn a_timeout_is_read_in_every_unit_and_nothing_else() {
        for (value, read) in [
            ("1H", Some(Duration::from_secs(3600))),
            ("2M", Some(Duration::from_secs(120))),
            ("3S", Some(Duration::from_secs(3))),
            ("250m", Some(Duration::from_millis(250))),
            ("99999999u", Some(Duration::from_micros(99_999_999))),
            ("7n", Some(Duration::from_nanos(7))),
            ("123456789S", None),
            ("S", None),
            ("1s", None),
            ("-1S", None),
            ("1.5S", None),
        ] {
            assert_eq!(timeout(&with("grpc-timeout", value)), read, "{value}");
        }
        assert_eq!(timeout(&HeaderMap::new()), None);
    }
}
