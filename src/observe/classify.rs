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
        let code = code.into();
        match self
            .0
            .iter_mut()
            .find(|e| e.code == code && e.status == status)
        {
            Some(e) => e.count += 1,
            None => self.0.push(ApiError {
                code,
                status,
                count: 1,
            }),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &ApiError> {
        self.0.iter()
    }

    /// The HTTP status whose remediation the response takes: the most frequent error's, the
    /// first reported of those equally frequent.
    pub fn status(&self) -> Option<u16> {
        let mut best: Option<&ApiError> = None;
        for e in &self.0 {
            if best.is_none_or(|b| e.count > b.count) {
                best = Some(e);
            }
        }
        best.map(|e| e.status)
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
    }
}
