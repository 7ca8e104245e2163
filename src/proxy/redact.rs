//! Keeps secrets out of log lines.
//!
//! remedy never logs header values (so `Authorization`, `Cookie` and the like never reach a
//! log line). Paths are logged with every query parameter's value replaced by `REDACTED`,
//! except for parameters whose names are on a short list of names known to be harmless
//! (paging, sorting, dates, fields), which `proxy.log_query_params` extends. A credential under
//! a name nobody thought of (`jwt`, `assertion`, `ticket`, ...) is thus safe by default.

use std::borrow::Cow;

/// Query parameters whose values are logged in clear (compared case-insensitively, with a
/// trailing `[]` ignored).
pub const HARMLESS: &[&str] = &[
    "after",
    "before",
    "count",
    "cursor",
    "date",
    "dimensions",
    "end",
    "end_date",
    "expand",
    "fields",
    "filter",
    "format",
    "from",
    "granularity",
    "id",
    "ids",
    "include",
    "lang",
    "level",
    "limit",
    "locale",
    "max_results",
    "metrics",
    "offset",
    "order",
    "order_by",
    "page",
    "page_size",
    "per_page",
    "since",
    "sort",
    "sort_by",
    "start",
    "start_date",
    "status",
    "time_increment",
    "timezone",
    "to",
    "type",
    "until",
    "version",
    "view",
];

pub const REDACTED: &str = "REDACTED";

/// Which query values a log line may show.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Names from the config, lower-cased, beside [`HARMLESS`].
    extra: Vec<String>,
}

impl Redactor {
    pub fn new(extra: &[String]) -> Self {
        Redactor {
            extra: extra.iter().map(|n| n.to_ascii_lowercase()).collect(),
        }
    }

    /// `path?query` with every value replaced whose name is not known to be harmless.
    pub fn path_and_query<'a>(&self, path: &'a str, query: Option<&'a str>) -> Cow<'a, str> {
        let Some(query) = query else {
            return Cow::Borrowed(path);
        };
        let mut out = String::with_capacity(path.len() + query.len() + 1);
        out.push_str(path);
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((name, _)) if !self.is_harmless(name) => {
                    out.push_str(name);
                    out.push('=');
                    out.push_str(REDACTED);
                }
                _ => out.push_str(pair),
            }
        }
        Cow::Owned(out)
    }

    fn is_harmless(&self, name: &str) -> bool {
        let name = name.strip_suffix("[]").unwrap_or(name);
        HARMLESS.iter().any(|h| h.eq_ignore_ascii_case(name))
            || self.extra.iter().any(|h| h.eq_ignore_ascii_case(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_is_redacted_but_known_harmless_ones() {
        let r = Redactor::default();
        for (query, want) in [
            ("token=abc&page=2", "/x?token=REDACTED&page=2"),
            ("access_token=abc", "/x?access_token=REDACTED"),
            ("API_KEY=k&limit=5", "/x?API_KEY=REDACTED&limit=5"),
            ("X-Amz-Signature=s&flag", "/x?X-Amz-Signature=REDACTED&flag"),
            ("Page=1&fields[]=a", "/x?Page=1&fields[]=a"),
            (
                "jwt=e&pass=p&refresh=r",
                "/x?jwt=REDACTED&pass=REDACTED&refresh=REDACTED",
            ),
            (
                "assertion=a&client_assertion=c",
                "/x?assertion=REDACTED&client_assertion=REDACTED",
            ),
            (
                "bearer=b&ticket=t&otp=1&pin=2",
                "/x?bearer=REDACTED&ticket=REDACTED&otp=REDACTED&pin=REDACTED",
            ),
            ("sid=s&state=st", "/x?sid=REDACTED&state=REDACTED"),
        ] {
            assert_eq!(r.path_and_query("/x", Some(query)), want);
        }
        assert_eq!(r.path_and_query("/x", None), "/x");
    }

    #[test]
    fn the_config_adds_names_to_log_in_clear() {
        let r = Redactor::new(&["Report_Id".to_owned()]);
        assert_eq!(
            r.path_and_query("/x", Some("report_id=7&q=secret")),
            "/x?report_id=7&q=REDACTED"
        );
    }
}
