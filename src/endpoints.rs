//! Which of a source's declared endpoints a request calls: `sources[].routes`, templates in the
//! upstream's path with `{name}` placeholders (OpenTelemetry's `url.template`), matched by
//! `matchit` (axum's router) after the source's prefix is stripped. A placeholder may sit inside
//! a segment (`/act_{account}/insights`, `/v1beta/properties/{property}:runReport`) and matches
//! one or more characters up to the next `/`; `{*rest}` matches the rest of the path. Of two
//! templates that both match, the more specific wins (a static segment over a placeholder), as
//! in axum; templates that would match the same paths with no order between them are refused.
//! Anything else is `other`, so the `route` label holds at most the templates and `other`.

/// The `route` label of a request no template matches.
pub const OTHER: &str = "other";

/// A source's templates, compiled.
#[derive(Debug, Clone)]
pub struct Endpoints {
    router: matchit::Router<u16>,
    /// The templates in config order, then `other`: the `route` label's values by index.
    names: Vec<String>,
}

/// Why a template is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("must start with /")]
    NotAPath,
    #[error(
        "can never match: remedy refuses a path with an empty, `.` or `..` segment, a `%`, a \
         backslash, `?` or `#` before it routes it"
    )]
    CannotMatch,
    #[error("{0}")]
    Refused(String),
}

impl Endpoints {
    /// The templates of `routes`, or the index and the reason of the first refused.
    pub fn new(routes: &[String]) -> Result<Self, (usize, TemplateError)> {
        let mut router = matchit::Router::new();
        for (i, t) in routes.iter().enumerate() {
            if !t.starts_with('/') {
                return Err((i, TemplateError::NotAPath));
            }
            if !can_match(t) {
                return Err((i, TemplateError::CannotMatch));
            }
            let index =
                u16::try_from(i).map_err(|_| (i, TemplateError::Refused("too many".into())))?;
            router.insert(t.as_str(), index).map_err(|e| {
                let why = match e {
                    matchit::InsertError::Conflict { with } => {
                        format!("overlaps {with:?}: both match the same paths")
                    }
                    other => other.to_string(),
                };
                (i, TemplateError::Refused(why))
            })?;
        }
        let mut names = routes.to_vec();
        names.push(OTHER.to_owned());
        Ok(Endpoints { router, names })
    }

    /// The index of the template `path` matches, or of `other` (the last).
    pub fn of(&self, path: &str) -> u16 {
        match self.router.at(path) {
            Ok(m) => *m.value,
            Err(_) => (self.names.len() - 1) as u16,
        }
    }

    /// The `route` label of index `i`.
    pub fn name(&self, i: u16) -> &str {
        self.names.get(usize::from(i)).map_or(OTHER, String::as_str)
    }

    /// Every `route` label value, `other` last.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// Whether a path remedy forwards can match `template`: remedy refuses empty, `.` and `..`
/// segments, `%`, backslashes, `?` and `#` before it routes a request.
fn can_match(template: &str) -> bool {
    let path = template.strip_prefix('/').unwrap_or(template);
    !template.contains(['%', '\\', '?', '#'])
        && (path.is_empty()
            || path
                .trim_end_matches('/')
                .split('/')
                .all(|seg| !seg.is_empty() && seg != "." && seg != ".."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(routes: &[&str]) -> Endpoints {
        Endpoints::new(&routes.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn a_path_is_counted_by_the_template_it_matches_or_other() {
        let e = endpoints(&[
            "/v1beta/properties/{property}:runReport",
            "/act_{account}/insights",
            "/v1/reports/{report_id}",
            "/v1/reports/summary",
            "/open_api/v1.3/report/integrated/get/",
            "/files/{*rest}",
        ]);
        for (path, route) in [
            (
                "/v1beta/properties/123:runReport",
                "/v1beta/properties/{property}:runReport",
            ),
            ("/v1beta/properties/123:batchRunReports", "other"),
            ("/act_42/insights", "/act_{account}/insights"),
            ("/act_/insights", "other"),
            ("/act_42/insights/x", "other"),
            ("/v1/reports/r-9", "/v1/reports/{report_id}"),
            ("/v1/reports/summary", "/v1/reports/summary"),
            ("/v1/reports", "other"),
            ("/v1/reports/a/b", "other"),
            (
                "/open_api/v1.3/report/integrated/get/",
                "/open_api/v1.3/report/integrated/get/",
            ),
            ("/files/a/b/c.csv", "/files/{*rest}"),
            ("/", "other"),
        ] {
            assert_eq!(e.name(e.of(path)), route, "{path}");
        }
        assert_eq!(e.names().len(), 7);
        assert_eq!(e.names().last().map(String::as_str), Some("other"));
    }

    #[test]
    fn templates_that_overlap_or_cannot_match_are_refused() {
        let refused = |routes: &[&str]| {
            Endpoints::new(&routes.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .map(|_| ())
                .unwrap_err()
        };
        assert_eq!(refused(&["/v1/{a}", "/v1/{b}"]).0, 1);
        assert_eq!(refused(&["/v1/x", "/v1/x"]).0, 1);
        assert_eq!(refused(&["/a/{x}{y}"]).0, 0);
        assert_eq!(refused(&["v1/x"]), (0, TemplateError::NotAPath));
        for cannot in [
            "/v1/../x", "/v1//x", "/v1/./x", "/v1/%2F", "/a\\b", "/a?b=1",
        ] {
            assert_eq!(
                refused(&["/ok", cannot]),
                (1, TemplateError::CannotMatch),
                "{cannot}"
            );
        }
        let why = refused(&["/v1/{a}", "/v1/{b}"]).1.to_string();
        assert!(why.contains("overlaps"), "{why}");
    }
}
