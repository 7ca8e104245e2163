//! Prometheus recording and alerting rules, generated from the catalog and the config.
//!
//! One alert per remediation key, on the share of a source's responses with that key over
//! `alerts.window`, guarded by a minimum request rate; plus remedy's own alerts. Every alert
//! carries the FAQ's meaning and advised action word for word, so the fix is in the page.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::catalog::{
    Catalog, DESCRIPTORS_ALERT, HANDSHAKES_ALERT, IN_FLIGHT_ALERT, NAMED_ALERTS,
    NEAR_RATE_LIMIT_ALERT, NEAR_RATE_LIMIT_MEANING, RATE_LIMIT_KEY, RELOAD_ALERT, Remediation,
    UNMATCHED_ALERT, UNREACHABLE_ALERT, advice_text, codes_phrase, meaning_text, own_alert_text,
};
use crate::config::{AlertOverride, Config, HumanDuration, Severity};
use crate::metrics::SOURCE_UNMATCHED;

/// What an alert fires on, after defaults and the config's overrides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Share of the source's responses, in (0, 1].
    pub threshold: f64,
    pub for_: HumanDuration,
    /// How long the alert stays firing once the condition clears; zero leaves it out.
    pub keep_firing_for: HumanDuration,
    pub severity: Severity,
    /// Responses within the window below which the alert stays silent.
    pub min_requests: u64,
}

/// The defaults per remediation key (or own alert name), before overrides.
///
/// `for` stays well inside the window, so that a run shorter than one scrape interval,
/// whose counts the window holds for one window's length, still fires; `keep_firing_for`
/// keeps a CronJob's alert up between runs. The guard counts responses, not a rate: a
/// fail-fast run makes one call.
pub fn default_settings(key: &str) -> Settings {
    use Severity::{Critical, Warning};
    let (threshold, for_s, keep_s, min_requests, severity) = match key {
        // A rejected credential or permission fails every call until a human acts, and a
        // fail-fast run makes one call: that one call is the incident.
        "check_credentials" | "check_permissions" => (0.5, 0, 3600, 1, Critical),
        // The same request will be refused the same way on every run.
        "reduce_request_parameters" => (0.1, 60, 1800, 1, Warning),
        "check_request_config" => (0.1, 60, 1800, 3, Warning),
        // Connectors probe for resources that may be gone; a few 404s are normal.
        "check_resource_availability" => (0.1, 120, 1800, 10, Warning),
        "reduce_concurrency" => (0.05, 60, 1800, 10, Warning),
        // Server trouble comes and goes: a single 5xx among many responses never pages.
        "retry_later" => (0.05, 120, 900, 20, Warning),
        "reduce_query_volume" => (0.05, 120, 900, 5, Warning),
        UNMATCHED_ALERT => (0.01, 60, 900, 5, Warning),
        UNREACHABLE_ALERT => (0.05, 60, 900, 3, Critical),
        IN_FLIGHT_ALERT => (0.05, 60, 900, 5, Warning),
        // Every such answer is a call the connector did not get made.
        DESCRIPTORS_ALERT => (0.01, 0, 900, 1, Critical),
        RELOAD_ALERT => (1.0, 300, 0, 0, Warning),
        // The threshold is a share of the quota used; one response that states it is enough.
        NEAR_RATE_LIMIT_ALERT => (0.9, 60, 0, 1, Warning),
        // A connector that does not trust the CA fails every call it makes through the tunnel;
        // a fail-fast run makes one.
        HANDSHAKES_ALERT => (0.5, 0, 1800, 1, Critical),
        _ => (0.1, 60, 1800, 5, Warning),
    };
    Settings {
        threshold,
        for_: HumanDuration(Duration::from_secs(for_s)),
        keep_firing_for: HumanDuration(Duration::from_secs(keep_s)),
        severity,
        min_requests,
    }
}

/// The settings of `key` under `config`'s overrides.
pub fn settings(config: &Config, key: &str) -> Settings {
    let mut s = default_settings(key);
    if let Some(AlertOverride {
        threshold,
        for_,
        keep_firing_for,
        severity,
        min_requests,
        min_rate,
    }) = config.alerts.overrides.get(key)
    {
        s.threshold = threshold.unwrap_or(s.threshold);
        s.for_ = for_.unwrap_or(s.for_);
        s.keep_firing_for = keep_firing_for.unwrap_or(s.keep_firing_for);
        s.severity = severity.unwrap_or(s.severity);
        s.min_requests = min_requests.unwrap_or(s.min_requests);
        if let Some(rate) = min_rate {
            s.min_requests = (rate * config.alerts.window.0.as_secs_f64()).ceil() as u64;
        }
    }
    s
}

#[derive(Debug, Serialize)]
pub struct RulesFile {
    pub groups: Vec<Group>,
}

#[derive(Debug, Serialize)]
pub struct Group {
    pub name: String,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Rule {
    Record {
        record: String,
        expr: String,
        /// Static labels of the recorded series (the catalog's, for `remedy_faq_info`).
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        labels: BTreeMap<String, String>,
    },
    Alert {
        alert: String,
        expr: String,
        #[serde(rename = "for")]
        for_: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        keep_firing_for: Option<String>,
        labels: BTreeMap<String, String>,
        annotations: BTreeMap<String, String>,
    },
}

use super::promql::{MATCHED, Shape, counted_from_zero};
use crate::metrics::names::{self, RESPONSES};

/// The rules for `config` as a Prometheus rules file.
pub fn build(config: &Config) -> RulesFile {
    let shape = Shape::new(config);
    let recording = recording_rules(&shape);
    let mut alerts: Vec<Rule> = config
        .catalog
        .remediations()
        .iter()
        .map(|r| remediation_alert(config, &shape, r))
        .collect();
    alerts.extend(own_alerts(config, &shape));
    RulesFile {
        groups: vec![
            Group {
                name: "remedy.recording".into(),
                rules: recording,
            },
            Group {
                name: "remedy.alerts".into(),
                rules: alerts,
            },
            Group {
                name: "remedy.catalog".into(),
                rules: catalog_rules(&config.catalog),
            },
        ],
    }
}

/// `level:metric:operations` names shared by the dashboard and users' own alerts; every run
/// counted from zero, as in the alerts, and the pod aggregated away, so that a dashboard over
/// thousands of short runs reads a few series per source.
pub fn recording_rules(shape: &Shape) -> Vec<Rule> {
    let Shape {
        by,
        level,
        window,
        window_seconds,
        ..
    } = shape;
    let per = |extra: &str| format!("sum by ({by}{extra}) {}", shape.responses(MATCHED));
    let per_second = |metric: &str, extra: &str| {
        format!(
            "sum by ({by}{extra}) {} / {window_seconds}",
            counted_from_zero(metric, MATCHED, window)
        )
    };
    let responses = recorded(RESPONSES);
    let bucket = format!("{}_bucket", names::DURATION);
    vec![
        record(format!("{level}:{responses}:increase{window}"), per("")),
        record(
            format!("{level}:{responses}:rate{window}"),
            format!("{} / {window_seconds}", per("")),
        ),
        record(
            format!("{level}_class:{responses}:rate{window}"),
            format!("{} / {window_seconds}", per(", class")),
        ),
        record(
            format!("{level}_remediation:{responses}:rate{window}"),
            format!("{} / {window_seconds}", per(", remediation")),
        ),
        record(
            format!("{level}_remediation:{responses}:ratio_rate{window}"),
            format!(
                "{}\n/ ignoring (remediation) group_left\n{}",
                per(", remediation"),
                per("")
            ),
        ),
        record(
            format!("{level}_code_remediation:{responses}:increase{window}"),
            per(", code, remediation"),
        ),
        record(
            format!(
                "{level}_api_code:{}:rate{window}",
                recorded(names::API_ERRORS)
            ),
            per_second(names::API_ERRORS, ", api_code, code"),
        ),
        record(
            format!("{level}_kind:{}:rate{window}", recorded(names::ERRORS)),
            per_second(names::ERRORS, ", kind"),
        ),
        record(
            format!("{level}_le:{bucket}:rate{window}"),
            per_second(&bucket, ", le"),
        ),
        record(
            format!("{level}:remedy_runs:count{window}"),
            shape.runs(MATCHED),
        ),
        record(
            format!("{level}:{}:max{window}", names::USED_RATIO),
            shape.used_ratio(),
        ),
    ]
}

fn record(record: String, expr: String) -> Rule {
    Rule::Record {
        record,
        expr,
        labels: BTreeMap::new(),
    }
}

/// `remedy_faq_info`, one series per catalog code, made by the rules once for all pods: the
/// catalog of the config the rules were generated from.
pub fn catalog_rules(catalog: &crate::catalog::Catalog) -> Vec<Rule> {
    catalog
        .entries()
        .map(|e| Rule::Record {
            record: names::FAQ_INFO.into(),
            expr: "vector(1)".into(),
            labels: BTreeMap::from([
                ("code".to_owned(), e.code.to_string()),
                ("name".to_owned(), e.name.clone()),
                ("remediation".to_owned(), e.remediation.clone()),
                ("advice".to_owned(), e.advice_text()),
            ]),
        })
        .collect()
}

fn labels(severity: Severity, remediation: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("severity".to_owned(), severity.as_str().to_owned()),
        ("remediation".to_owned(), remediation.to_owned()),
    ])
}

fn annotations(
    config: &Config,
    summary: String,
    description: String,
    remediation_text: String,
    key: &str,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("summary".to_owned(), summary),
        ("description".to_owned(), description),
        ("remediation".to_owned(), remediation_text),
        (
            "runbook_url".to_owned(),
            config.alerts.runbook_url.replace("{remediation}", key),
        ),
    ])
}

/// Said of a catalog alert's responses: an API may report the error in the status line, or
/// inside a response whose status is 200 (a gRPC status, a `body_errors` match).
const INSIDE: &str = " by status or by an error inside";

fn remediation_alert(config: &Config, shape: &Shape, r: &Remediation<'_>) -> Rule {
    let s = settings(config, r.key);
    let window = &shape.window;
    let codes = codes_phrase(r);
    let summary = if r.key == "reduce_concurrency" {
        // The FAQ's advice for 429 asks to reduce concurrent runs: say how many there were.
        format!(
            "{} called {{{{ $labels.source }}}} in the last {window}; {{{{ $value | humanizePercentage }}}} of responses were {codes}{INSIDE} ({}).",
            shape.runs_phrase(&config.alerts.group_by),
            r.key
        )
    } else {
        format!(
            "{{{{ $labels.source }}}}: {{{{ $value | humanizePercentage }}}} of responses over {window} were {codes}{INSIDE} ({}).",
            r.key
        )
    };
    let mut description = meaning_text(r);
    // Advice about one endpoint (fewer parameters, a resource gone): name the endpoint.
    if ROUTE_ALERTS.contains(&r.key) {
        description.push_str(&shape.worst_route_phrase(&config.alerts.group_by, r.key));
    }
    alert(
        config,
        r.alert,
        shape.share(&remediation_selector(r), s.threshold, s.min_requests),
        &s,
        r.key,
        summary,
        description,
        advice_text(r),
    )
}

/// The remediation keys whose advice is about one endpoint (414's "specify less parameters",
/// 404's "check if the API resource is still available"): their alerts name the worst route.
const ROUTE_ALERTS: [&str; 2] = ["reduce_request_parameters", "check_resource_availability"];

/// The responses a catalog alert counts. An alert whose codes are all 5xx counts only what the
/// API sent: remedy's own 502, 503 and 504 have alerts of their own (unreachable, in-flight).
fn remediation_selector(r: &Remediation<'_>) -> String {
    if r.codes().iter().all(|c| *c >= 500) {
        format!("remediation=\"{}\",origin=\"upstream\"", r.key)
    } else {
        format!("remediation=\"{}\"", r.key)
    }
}

/// One of remedy's own alerts: its name (which names its remediation key and texts in the
/// catalog), its expression under its settings, and its summary, where `{window}` stands for
/// `alerts.window`.
struct OwnAlert {
    name: &'static str,
    expr: fn(&Config, &Shape, &Settings) -> String,
    summary: &'static str,
}

const OWN: [OwnAlert; 6] = [
    OwnAlert {
        name: UNMATCHED_ALERT,
        expr: unmatched_share,
        summary: "{{ $value | humanizePercentage }} of the connector's requests over {window} matched no source and were refused.",
    },
    OwnAlert {
        name: UNREACHABLE_ALERT,
        // 200 from remedy itself is its gRPC UNAVAILABLE for an upstream without HTTP/2.
        expr: |_, shape, s| {
            shape.share(
                "origin=\"proxy\",code=~\"200|502|504\"",
                s.threshold,
                s.min_requests,
            )
        },
        summary: "{{ $labels.source }}: remedy could not reach the upstream for {{ $value | humanizePercentage }} of requests over {window}.",
    },
    OwnAlert {
        name: IN_FLIGHT_ALERT,
        expr: |_, shape, s| {
            shape.share(
                "origin=\"proxy\",code=\"503\",remediation=\"raise_max_in_flight\"",
                s.threshold,
                s.min_requests,
            )
        },
        summary: "{{ $labels.source }}: remedy refused {{ $value | humanizePercentage }} of requests over {window} at the source's max_in_flight.",
    },
    OwnAlert {
        name: DESCRIPTORS_ALERT,
        expr: |_, shape, s| {
            shape.share(
                "origin=\"proxy\",remediation=\"raise_file_descriptor_limit\"",
                s.threshold,
                s.min_requests,
            )
        },
        summary: "{{ $labels.source }}: remedy ran out of file descriptors for {{ $value | humanizePercentage }} of requests over {window}; those calls were never made.",
    },
    OwnAlert {
        name: HANDSHAKES_ALERT,
        expr: failed_handshakes,
        summary: "{{ $value | humanizePercentage }} of the connector's TLS handshakes with remedy over {window} failed; its calls through those tunnels were never made.",
    },
    OwnAlert {
        name: RELOAD_ALERT,
        expr: |_, _, _| format!("{} == 0", names::RELOAD_SUCCESSFUL),
        summary: "remedy on {{ $labels.instance }} failed to reload its config and runs the previous one.",
    },
];

fn own_alerts(config: &Config, shape: &Shape) -> Vec<Rule> {
    let mut rules: Vec<Rule> = OWN
        .iter()
        .map(|a| {
            let s = settings(config, a.name);
            let summary = a.summary.replace("{window}", &shape.window);
            own_alert(config, a.name, (a.expr)(config, shape, &s), &s, summary)
        })
        .collect();
    rules.push(near_rate_limit(config, shape));
    rules
}

/// `alerts.group_by` without `source`, for what belongs to no source.
fn by_sourceless(config: &Config) -> String {
    let by: Vec<&str> = config
        .alerts
        .group_by
        .iter()
        .map(String::as_str)
        .filter(|l| *l != "source")
        .collect();
    by.join(", ")
}

/// The share of the TLS handshakes in intercepted tunnels that failed, among at least
/// `min_requests` failures. A `CONNECT` belongs to no source.
fn failed_handshakes(config: &Config, shape: &Shape, s: &Settings) -> String {
    let by = by_sourceless(config);
    let sum = |selector: &str| {
        format!(
            "sum by ({by}) {}",
            counted_from_zero(names::INTERCEPT, selector, &shape.window)
        )
    };
    let failed = sum("outcome=\"handshake_failed\"");
    format!(
        "(\n  {failed}\n/\n  {}\n) > {t}\nand on ({by})\n  {failed} >= {m}",
        sum("outcome=~\"intercepted|handshake_failed\""),
        t = s.threshold,
        m = s.min_requests
    )
}

/// The share of all the connector's requests that matched no source. Unmatched requests belong
/// to no source: this aggregates by the rest of `group_by`.
fn unmatched_share(config: &Config, shape: &Shape, s: &Settings) -> String {
    let by = by_sourceless(config);
    let sum = |selector: &str| format!("sum by ({by}) {}", shape.responses(selector));
    let all = sum("");
    format!(
        "(\n  {}\n/\n  {all}\n) > {t}\nand on ({by})\n  {all} >= {m}",
        sum(&format!("source=\"{SOURCE_UNMATCHED}\"")),
        t = s.threshold,
        m = s.min_requests
    )
}

/// The quota an API reports is nearly used up: the warning before its 429s. The used ratio
/// of each run's last reading within the window, so a run shorter than a scrape interval,
/// seen once, still fires for one window; and only while the source had responses in it,
/// so a reading left behind by a connector that stopped calling does not page forever.
fn near_rate_limit(config: &Config, shape: &Shape) -> Rule {
    let s = settings(config, NEAR_RATE_LIMIT_ALERT);
    let all = shape.sum(MATCHED);
    let expr = format!(
        "{ratio} >= {t}\nand on ({by})\n  {all} >= {m}",
        ratio = shape.used_ratio(),
        t = s.threshold,
        by = shape.by,
        m = s.min_requests,
    );
    let group_by = &config.alerts.group_by;
    let summary = format!(
        "{{{{ $labels.source }}}} has used {{{{ $value | humanizePercentage }}}} of the quota its API reports; {}. {} called it in the last {}.",
        shape.reset_phrase(group_by),
        shape.runs_phrase(group_by),
        shape.window,
    );
    let advice = config
        .catalog
        .remediations()
        .iter()
        .find(|r| r.key == RATE_LIMIT_KEY)
        .map(advice_text)
        .unwrap_or_default();
    alert(
        config,
        NEAR_RATE_LIMIT_ALERT,
        expr,
        &s,
        RATE_LIMIT_KEY,
        summary,
        NEAR_RATE_LIMIT_MEANING.into(),
        advice,
    )
}

fn own_alert(config: &Config, name: &str, expr: String, s: &Settings, summary: String) -> Rule {
    let (key, meaning, advice) = own_alert_text(name);
    alert(
        config,
        name,
        expr,
        s,
        key,
        summary,
        meaning.into(),
        advice.into(),
    )
}

#[allow(clippy::too_many_arguments)]
fn alert(
    config: &Config,
    name: &str,
    expr: String,
    s: &Settings,
    key: &str,
    summary: String,
    description: String,
    remediation_text: String,
) -> Rule {
    Rule::Alert {
        alert: name.into(),
        expr,
        for_: s.for_.to_string(),
        keep_firing_for: (!s.keep_firing_for.0.is_zero()).then(|| s.keep_firing_for.to_string()),
        labels: labels(s.severity, key),
        annotations: annotations(config, summary, description, remediation_text, key),
    }
}

/// Output format of `remedy rules`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// A Prometheus rules file.
    #[default]
    Rules,
    /// A `monitoring.coreos.com/v1` PrometheusRule for the Prometheus Operator.
    Prometheusrule,
}

/// The rules as YAML text.
pub fn render(config: &Config) -> String {
    render_as(config, Format::Rules)
}

pub fn render_as(config: &Config, format: Format) -> String {
    let rules = build(config);
    let header =
        "# Generated by `remedy rules` from remedy's FAQ catalog and config. Do not edit.\n";
    let body = match format {
        Format::Rules => serde_yaml::to_string(&rules),
        Format::Prometheusrule => {
            #[derive(Serialize)]
            struct Metadata {
                name: &'static str,
                labels: BTreeMap<&'static str, &'static str>,
            }
            #[derive(Serialize)]
            #[serde(rename_all = "camelCase")]
            struct PrometheusRule<'a> {
                api_version: &'static str,
                kind: &'static str,
                metadata: Metadata,
                spec: &'a RulesFile,
            }
            serde_yaml::to_string(&PrometheusRule {
                api_version: "monitoring.coreos.com/v1",
                kind: "PrometheusRule",
                metadata: Metadata {
                    name: "remedy",
                    labels: BTreeMap::from([("app.kubernetes.io/name", "remedy")]),
                },
                spec: &rules,
            })
        }
    };
    format!("{header}{}", body.expect("rules serialise to YAML"))
}

/// Every alert name the rules hold, for checks and docs.
pub fn alert_names(catalog: &Catalog) -> Vec<String> {
    let mut names: Vec<String> = catalog
        .remediations()
        .iter()
        .map(|r| r.alert.to_owned())
        .collect();
    names.extend(NAMED_ALERTS.iter().map(|s| (*s).to_owned()));
    names
}

/// A counter's name in a recording rule's name, without `_total` (Prometheus's convention).
fn recorded(counter: &str) -> &str {
    counter.strip_suffix("_total").unwrap_or(counter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        crate::config::parse(
            &format!(
                "sources:\n  - {{ name: a, upstream: 'https://a.example', match: {{ path_prefix: /a }} }}\n{extra}"
            ),
            "t.yaml",
        )
        .unwrap()
    }

    #[test]
    fn one_alert_per_remediation_key_plus_own() {
        let c = config("");
        let names = alert_names(&c.catalog);
        assert_eq!(
            names,
            [
                "ConnectorBadRequests",
                "ConnectorCredentialsRejected",
                "ConnectorPermissionDenied",
                "ConnectorResourceNotFound",
                "ConnectorRequestURITooLong",
                "ConnectorRateLimited",
                "UpstreamServerErrors",
                "UpstreamGatewayTimeouts",
                "RemedyUnmatchedRequests",
                "RemedyUpstreamUnreachable",
                "RemedyInFlightLimitReached",
                "RemedyOutOfFileDescriptors",
                "RemedyConfigReloadFailed",
                "RemedyInterceptHandshakesFailing",
                "ConnectorNearRateLimit",
            ]
        );
        let rules = build(&c);
        assert_eq!(rules.groups[1].rules.len(), names.len());
    }

    #[test]
    fn overrides_change_threshold_for_keep_firing_for_and_severity() {
        let c = config(
            "alerts:\n  window: 2m\n  overrides:\n    reduce_concurrency: { threshold: 0.2, for: 1m, keep_firing_for: 2h, severity: critical, min_requests: 7 }\n",
        );
        let s = settings(&c, "reduce_concurrency");
        assert_eq!(s.threshold, 0.2);
        assert_eq!(s.for_.to_string(), "1m");
        assert_eq!(s.keep_firing_for.to_string(), "2h");
        assert_eq!(s.severity, Severity::Critical);
        assert_eq!(s.min_requests, 7);
        let text = render(&c);
        assert!(text.contains("last_over_time(remedy_upstream_responses_total{source!=\"unmatched\",remediation=\"reduce_concurrency\"}[2m])"));
        assert!(text.contains(") > 0.2\n"));
        assert!(text.contains(">= 7\n"));
        assert!(text.contains("keep_firing_for: 2h\n"));
    }

    #[test]
    fn min_rate_is_read_as_responses_per_window() {
        let c =
            config("alerts:\n  window: 5m\n  overrides:\n    retry_later: { min_rate: 0.02 }\n");
        assert_eq!(settings(&c, "retry_later").min_requests, 6);
    }

    #[test]
    fn a_run_born_inside_the_window_counts_from_zero() {
        let c = config("");
        let shape = Shape::new(&c);
        assert_eq!(
            shape.responses("code=\"401\""),
            "(last_over_time(remedy_upstream_responses_total{code=\"401\"}[5m]) - \
             remedy_upstream_responses_total{code=\"401\"} offset 5m >= 0 \
             or last_over_time(remedy_upstream_responses_total{code=\"401\"}[5m]))"
        );
    }

    #[test]
    fn group_by_names_the_aggregation_and_the_recording_rules() {
        let c = config("alerts:\n  group_by: [namespace, cronjob, source]\n");
        let text = render(&c);
        assert!(text.contains("sum by (namespace, cronjob, source) "));
        assert!(text.contains("namespace_cronjob_source:remedy_runs:count5m"));
        assert!(text.contains("cronjob=%[2]q"));
        // Unmatched requests have no source: their alert aggregates by the rest.
        assert!(text.contains("sum by (namespace, cronjob) ("));
    }

    #[test]
    fn multi_code_keys_name_every_code_and_advise_once() {
        let c = config("");
        let rs = c.catalog.remediations();
        let retry = rs.iter().find(|r| r.key == "retry_later").unwrap();
        assert_eq!(
            codes_phrase(retry),
            "500 Internal Server Error, 502 Bad Gateway or 503 Service Unavailable"
        );
        assert_eq!(
            advice_text(retry),
            "Due to the server side origins of this type of error, best option is to try again later."
        );
    }

    #[test]
    fn prometheusrule_wraps_the_same_groups() {
        let c = config("");
        let text = render_as(&c, Format::Prometheusrule);
        assert!(text.contains("apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\n"));
        assert!(text.contains("spec:\n  groups:\n"));
    }
}
