//! Reads `/metrics` with a Prometheus text parser (prometheus-parse).

use prometheus_parse::Value;

pub struct Scrape {
    pub text: String,
    parsed: prometheus_parse::Scrape,
}

impl Scrape {
    pub fn parse(text: String) -> Self {
        let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
            .expect("the exposition parses");
        Scrape { text, parsed }
    }

    /// The value of the one sample of `name` whose labels are exactly `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.parsed
            .samples
            .iter()
            .find(|s| {
                s.metric == name
                    && labels.len() == s.labels.len()
                    && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
            })
            .map(|s| match &s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
                Value::Histogram(_) | Value::Summary(_) => f64::NAN,
            })
    }

    /// Sum over samples of `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.parsed
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match &s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
                _ => 0.0,
            })
            .sum()
    }

    /// `remedy_upstream_responses_total` for one full label set; 0 when remedy has not
    /// counted it (with the default `metrics.series: lean`, a series appears with its first
    /// count).
    pub fn responses(&self, source: &str, code: u16, remediation: &str, origin: &str) -> f64 {
        let code_s = code.to_string();
        let class = format!("{}xx", code / 100);
        self.get(
            "remedy_upstream_responses_total",
            &[
                ("source", source),
                ("code", &code_s),
                ("class", &class),
                ("remediation", remediation),
                ("origin", origin),
            ],
        )
        .unwrap_or(0.0)
    }

    pub fn in_flight(&self, source: &str) -> f64 {
        self.get("remedy_upstream_requests_in_flight", &[("source", source)])
            .expect("in-flight gauge")
    }

    /// `remedy_upstream_request_errors_total`; 0 when remedy has not counted it.
    pub fn errors(&self, source: &str, kind: &str) -> f64 {
        self.get(
            "remedy_upstream_request_errors_total",
            &[("source", source), ("kind", kind)],
        )
        .unwrap_or(0.0)
    }
}
