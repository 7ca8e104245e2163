//! Keeps secrets out of log lines.
//!
//! remedy never logs header values (so `Authorization`, `Cookie` and the like never reach a
//! log line). Paths are logged with the values of query parameters
//! whose names look like credentials replaced by `REDACTED`.

use std::borrow::Cow;

/// Parameter-name fragments that mark a credential (matched case-insensitively).
const SECRET_NAMES: &[&str] = &[
    "token",
    "key",
    "secret",
    "signature",
    "sig",
    "password",
    "passwd",
    "pwd",
    "auth",
    "credential",
    "session",
    "code",
];

pub const REDACTED: &str = "REDACTED";

/// `path?query` with credential-like parameter values replaced.
pub fn path_and_query<'a>(path: &'a str, query: Option<&'a str>) -> Cow<'a, str> {
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
            Some((name, _)) if is_secret_name(name) => {
                out.push_str(name);
                out.push('=');
                out.push_str(REDACTED);
            }
            _ => out.push_str(pair),
        }
    }
    Cow::Owned(out)
}

fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_NAMES.iter().any(|s| lower.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_parameters_are_redacted() {
        for (query, want) in [
            ("token=abc&page=2", "/x?token=REDACTED&page=2"),
            ("access_token=abc", "/x?access_token=REDACTED"),
            ("API_KEY=k&q=a%20b", "/x?API_KEY=REDACTED&q=a%20b"),
            ("X-Amz-Signature=s&flag", "/x?X-Amz-Signature=REDACTED&flag"),
            ("client_secret=s", "/x?client_secret=REDACTED"),
            ("page=1", "/x?page=1"),
        ] {
            assert_eq!(path_and_query("/x", Some(query)), want);
        }
        assert_eq!(path_and_query("/x", None), "/x");
    }
}
