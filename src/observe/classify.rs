//! A response's classification beyond its status line, decided once and handed to the
//! recorder as one value: the errors the API reported inside the response (a gRPC status, the
//! errors a `body_errors` rule found), each with the HTTP status it stands for. The response is
//! counted with the remediation of its most frequent error's status, while its `code` stays
//! what the connector received.
//!
//! The decision comes at one of two points, as linkerd2-proxy's classifier has it: at the head
//! (a trailers-only gRPC answer, whose status is in its head) or at the end of the stream (the
//! gRPC status in the trailers, or what a body reader found).

use std::borrow::Cow;

/// One kind of error the API reported, and how many times in the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The API's own code: a gRPC status name, a vendor's code, or `other`.
    pub code: Cow<'static, str>,
    /// The HTTP status it stands for.
    pub status: u16,
    pub count: u32,
}

/// The errors an API reported inside one response; empty when it reported none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiErrors(Vec<ApiError>);

impl ApiErrors {
    /// One error reported as `code`, standing for HTTP `status`.
    pub fn add(&mut self, code: impl Into<Cow<'static, str>>, status: u16) {
        self.add_count(code.into(), status, 1);
    }

    fn add_count(&mut self, code: Cow<'static, str>, status: u16, count: u32) {
        match self
            .0
            .iter_mut()
            .find(|e| e.code == code && e.status == status)
        {
            Some(e) => e.count = e.count.saturating_add(count),
            None => self.0.push(ApiError {
                code,
                status,
                count,
            }),
        }
    }

    /// Adds every error of `other`.
    pub fn merge(&mut self, other: ApiErrors) {
        for e in other.0 {
            self.add_count(e.code, e.status, e.count);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &ApiError> {
        self.0.iter()
    }

    /// The HTTP status whose remediation the response takes: the one most errors stand for,
    /// whatever their codes; the first reported of those equally frequent.
    pub fn status(&self) -> Option<u16> {
        let mut best: Option<(u16, u32)> = None;
        for e in &self.0 {
            if best.is_some_and(|(s, _)| s == e.status) {
                continue;
            }
            let total: u32 = self
                .0
                .iter()
                .filter(|x| x.status == e.status)
                .map(|x| x.count)
                .fold(0, u32::saturating_add);
            if best.is_none_or(|(_, n)| total > n) {
                best = Some((e.status, total));
            }
        }
        best.map(|(s, _)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_counted_by_code_and_the_most_frequent_decides() {
        let mut e = ApiErrors::default();
        assert_eq!(e.status(), None);
        e.add("VALIDATION_ERROR", 400);
        e.add("RATE_LIMITS", 429);
        e.add("RATE_LIMITS", 429);
        e.add(String::from("VALIDATION_ERROR"), 400);
        e.add("RATE_LIMITS", 429);
        assert_eq!(e.status(), Some(429));
        let counts: Vec<(&str, u32)> = e.iter().map(|x| (&*x.code, x.count)).collect();
        assert_eq!(counts, [("VALIDATION_ERROR", 2), ("RATE_LIMITS", 3)]);
        let mut tie = ApiErrors::default();
        tie.add("A", 401);
        tie.add("B", 403);
        assert_eq!(tie.status(), Some(401));
        // Two codes standing for one status outnumber a third code.
        let mut items = ApiErrors::default();
        items.add("VALIDATION_ERROR", 400);
        items.add("VALIDATION_ERROR", 400);
        items.add("RATE_LIMITS", 429);
        items.add("THROTTLED", 429);
        items.add("RATE_LIMITS", 429);
        assert_eq!(items.status(), Some(429));
        let mut merged = ApiErrors::default();
        merged.add("RATE_LIMITS", 429);
        merged.merge(items);
        let counts: Vec<(&str, u32)> = merged.iter().map(|x| (&*x.code, x.count)).collect();
        assert_eq!(
            counts,
            [
                ("RATE_LIMITS", 3),
                ("VALIDATION_ERROR", 2),
                ("THROTTLED", 1)
            ]
        );
    }
}
