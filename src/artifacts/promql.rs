//! The PromQL that the rules and the dashboard are made of: how a source's responses are
//! counted within a window with every run from zero, summed by `alerts.group_by`, shared out
//! and guarded, and the Go templates that put a query's answer into an alert's summary.

use crate::config::Config;
use crate::metrics::QUOTA_GAUGES;
use crate::metrics::names::{RESPONSES, ROUTE_RESPONSES};

/// Every response of a configured source (not the refused, unmatched ones).
pub const MATCHED: &str = "source!=\"unmatched\"";

/// How the rules aggregate and over what range: `alerts.group_by` and `alerts.window`.
pub struct Shape {
    /// `alerts.group_by`, joined for a `by (...)` clause.
    pub by: String,
    /// The labels that tell one run (pod) from another, besides `by`.
    by_run: String,
    /// The recording rules' level, `namespace_source` by default.
    pub level: String,
    pub window: String,
    pub window_seconds: f64,
}

impl Shape {
    pub fn new(config: &Config) -> Self {
        let group_by = &config.alerts.group_by;
        let mut run_labels = group_by.clone();
        for l in ["pod", "instance"] {
            if !run_labels.iter().any(|g| g == l) {
                run_labels.push(l.to_owned());
            }
        }
        Shape {
            by: group_by.join(", "),
            by_run: run_labels.join(", "),
            level: group_by.join("_"),
            window: config.alerts.window.to_string(),
            window_seconds: config.alerts.window.0.as_secs_f64(),
        }
    }

    /// Each series' responses within the window, every run counted from zero.
    ///
    /// remedy's counters start at 0 in each process, but Prometheus may first see a short
    /// run's counters already raised, and `increase()` takes nothing from a series' first
    /// sample. So: a series that existed when the window opened contributes what it grew by
    /// since; one born inside the window contributes its whole value. Without extrapolation,
    /// the figure is the exact count the connector received. A counter that went down (the
    /// sidecar restarted in place) is taken from zero again.
    pub fn responses(&self, selector: &str) -> String {
        responses_from_zero(selector, &self.window)
    }

    /// Responses within the window, summed by `alerts.group_by`.
    pub fn sum(&self, selector: &str) -> String {
        format!("sum by ({}) {}", self.by, self.responses(selector))
    }

    /// The share of the quota used, by `alerts.group_by`: the highest of each run's last
    /// reading within the window.
    pub fn used_ratio(&self) -> String {
        format!(
            "max by ({}) (last_over_time({}{{{MATCHED}}}[{}]))",
            self.by, QUOTA_GAUGES[2].0, self.window
        )
    }

    /// How many runs (pods) had responses within the window, by `alerts.group_by`.
    pub fn runs(&self, selector: &str) -> String {
        format!(
            "count by ({}) (sum by ({}) {} > 0)",
            self.by,
            self.by_run,
            self.responses(selector)
        )
    }

    /// The share of responses matching `selector`, above `threshold`, among at least
    /// `min_requests` responses.
    pub fn share(&self, selector: &str, threshold: f64, min_requests: u64) -> String {
        let all = self.sum(MATCHED);
        format!(
            "(\n  {part}\n/\n  {all}\n) > {threshold}\nand on ({by})\n  {all} >= {min}",
            part = self.sum(&format!("{MATCHED},{selector}")),
            by = self.by,
            min = min_requests,
        )
    }

    /// A template fragment that names how many runs called the alert's source: "3 runs".
    pub fn runs_phrase(&self, group_by: &[String]) -> String {
        let query = |selector: &str| self.runs(&format!("{MATCHED},{selector}"));
        templated_query(
            group_by,
            query,
            "{{ $n := . | first | value }}{{ $n }} {{ if eq $n 1.0 }}run{{ else }}runs{{ end }}",
            "No run",
        )
    }

    /// A template fragment that names the route (a source's endpoint template) most of the
    /// window's responses with `remediation` came from, where the source declares routes;
    /// nothing where it does not.
    pub fn worst_route_phrase(&self, group_by: &[String], remediation: &str) -> String {
        let query = |selector: &str| {
            let selector = format!("{selector},remediation=\"{remediation}\"");
            format!(
                "topk(1, sum by (route) {})",
                counted_from_zero(ROUTE_RESPONSES, &selector, &self.window)
            )
        };
        templated_query(
            group_by,
            query,
            &format!(
                " The route they came from most: {{{{ . | first | label \"route\" }}}} ({{{{ . | first | value | humanize }}}} in the last {}).",
                self.window
            ),
            "",
        )
    }

    /// A template fragment that says when the alert's source's quota is restored.
    pub fn reset_phrase(&self, group_by: &[String]) -> String {
        let query = |selector: &str| {
            format!(
                "max by ({}) (last_over_time({}{{{MATCHED},{selector}}}[{}]))",
                self.by, QUOTA_GAUGES[3].0, self.window
            )
        };
        templated_query(
            group_by,
            query,
            "its last response said the quota is restored in {{ . | first | value | humanizeDuration }}",
            "the API did not say when it is restored",
        )
    }
}

/// A Go template that runs the query `build` makes for the alert's own labels (`group_by`),
/// then renders `found` on the result, or `otherwise` when there is none.
fn templated_query(
    group_by: &[String],
    build: impl Fn(&str) -> String,
    found: &str,
    otherwise: &str,
) -> String {
    let matchers: Vec<String> = group_by
        .iter()
        .enumerate()
        .map(|(i, l)| format!("{l}=%[{}]q", i + 1))
        .collect();
    let args: Vec<String> = group_by.iter().map(|l| format!("$labels.{l}")).collect();
    format!(
        "{{{{ with printf `{}` {} | query }}}}{found}{{{{ else }}}}{otherwise}{{{{ end }}}}",
        build(&matchers.join(",")),
        args.join(" ")
    )
}

/// [`Shape::responses`] over any range: each series' responses within `window`, every run
/// counted from zero. The dashboard uses it too.
pub fn responses_from_zero(selector: &str, window: &str) -> String {
    counted_from_zero(RESPONSES, selector, window)
}

/// What each series of the counter `metric` counted within `window`, every run from zero.
pub fn counted_from_zero(metric: &str, selector: &str, window: &str) -> String {
    let last = format!("last_over_time({metric}{{{selector}}}[{window}])");
    format!("({last} - {metric}{{{selector}}} offset {window} >= 0 or {last})")
}
