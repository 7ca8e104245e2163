//! Prometheus recording and alerting rules, generated from the catalog and the config.
//!
//! One alert per remediation key, on the share of a source's responses with that key over
//! `alerts.window`, guarded by a minimum request rate; plus remedy's own alerts. Every alert
//! carries the FAQ's meaning and advised action word for word, so the fix is in the page.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::catalog::{Catalog, Remediation};
use crate::config::{AlertOverride, Config, Dur, Severity};
use crate::metrics::SOURCE_UNMATCHED;

pub const UNMATCHED_ALERT: &str = "RemedyUnmatchedRequests";
pub const UNREACHABLE_ALERT: &str = "RemedyUpstreamUnreachable";
pub const RELOAD_ALERT: &str = "RemedyConfigReloadFailed";

/// remedy's own alerts; their names are also keys of `alerts.overrides`.
pub const OWN_ALERTS: &[&str] = &[UNMATCHED_ALERT, UNREACHABLE_ALERT, RELOAD_ALERT];

/// What an alert fires on, after defaults and the config's overrides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Share of the source's responses, in (0, 1].
    pub threshold: f64,
    pub for_: Dur,
    pub severity: Severity,
    /// Requests per second below which the alert stays silent.
    pub min_rate: f64,
}

const DEFAULT_MIN_RATE: f64 = 0.02;

/// The defaults per remediation key (or own alert name), before overrides.
pub fn default_settings(key: &str) -> Settings {
    let (threshold, minutes, severity) = match key {
        // A rejected credential or permission fails every call until a human acts.
        "check_credentials" | "check_permissions" => (0.5, 2, Severity::Critical),
        // Rate limits and server trouble come and go: page only when they persist.
        "reduce_concurrency" | "retry_later" | "reduce_query_volume" => {
            (0.05, 15, Severity::Warning)
        }
        UNMATCHED_ALERT => (0.01, 5, Severity::Warning),
        UNREACHABLE_ALERT => (0.05, 5, Severity::Critical),
        RELOAD_ALERT => (1.0, 5, Severity::Warning),
        _ => (0.1, 10, Severity::Warning),
    };
    Settings {
        threshold,
        for_: Dur(Duration::from_secs(minutes * 60)),
        severity,
        min_rate: DEFAULT_MIN_RATE,
    }
}

/// The settings of `key` under `config`'s overrides.
pub fn settings(config: &Config, key: &str) -> Settings {
    let mut s = default_settings(key);
    if let Some(AlertOverride {
        threshold,
        for_,
        severity,
        min_rate,
    }) = config.alerts.overrides.get(key)
    {
        s.threshold = threshold.unwrap_or(s.threshold);
        s.for_ = for_.unwrap_or(s.for_);
        s.severity = severity.unwrap_or(s.severity);
        s.min_rate = min_rate.unwrap_or(s.min_rate);
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
    },
    Alert {
        alert: String,
        expr: String,
        #[serde(rename = "for")]
        for_: String,
        labels: BTreeMap<String, String>,
        annotations: BTreeMap<String, String>,
    },
}

const RESPONSES: &str = "remedy_upstream_responses_total";
const BY: &str = "namespace, source";

/// Text of remedy's own alerts: (remediation key, meaning, advised action).
pub fn own_alert_text(alert: &str) -> (&'static str, &'static str, &'static str) {
    match alert {
        UNMATCHED_ALERT => (
            "add_source",
            "The connector sends requests that no configured source matches. remedy answers them 404 and never forwards them, so the connector's calls fail.",
            "Add a source whose match.path_prefix or match.hosts covers these requests, or point the connector at an existing source's prefix. remedy's debug log names each refused path.",
        ),
        UNREACHABLE_ALERT => (
            "check_upstream_reachability",
            "remedy cannot reach the upstream API: connections are refused, reset, time out, fail TLS or DNS. remedy answers 502 or 504 itself (origin=\"proxy\").",
            "Check egress from the pod (NetworkPolicy, DNS, proxy settings), the source's upstream URL and ca_file, and the timeouts. remedy_upstream_request_errors_total gives the kind of failure; remedy's warn log gives the cause.",
        ),
        _ => (
            "fix_config",
            "The last reload of remedy's config failed; remedy keeps serving with the previous config.",
            "Run remedy check-config on the file (or read remedy's error log, which names the key and line), fix it, and reload again.",
        ),
    }
}

/// The rules for `config` as a Prometheus rules file.
pub fn build(config: &Config) -> RulesFile {
    let window = config.alerts.window.to_string();
    let recording = recording_rules(&window);
    let mut alerts: Vec<Rule> = config
        .catalog
        .remediations()
        .iter()
        .map(|r| remediation_alert(config, r, &window))
        .collect();
    alerts.extend(own_alerts(config, &window));
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
        ],
    }
}

/// `level:metric:operations` names shared by the dashboard and users' own alerts.
pub fn recording_rules(window: &str) -> Vec<Rule> {
    let matched = format!("{RESPONSES}{{source!=\"{SOURCE_UNMATCHED}\"}}");
    vec![
        Rule::Record {
            record: format!("namespace_source:remedy_upstream_responses:rate{window}"),
            expr: format!("sum by ({BY}) (rate({matched}[{window}]))"),
        },
        Rule::Record {
            record: format!("namespace_source_class:remedy_upstream_responses:rate{window}"),
            expr: format!("sum by ({BY}, class) (rate({matched}[{window}]))"),
        },
        Rule::Record {
            record: format!("namespace_source_remediation:remedy_upstream_responses:rate{window}"),
            expr: format!("sum by ({BY}, remediation) (rate({matched}[{window}]))"),
        },
        Rule::Record {
            record: format!(
                "namespace_source_remediation:remedy_upstream_responses:ratio_rate{window}"
            ),
            expr: format!(
                "sum by ({BY}, remediation) (rate({matched}[{window}]))\n\
                 / ignoring (remediation) group_left\n\
                 sum by ({BY}) (rate({matched}[{window}]))"
            ),
        },
    ]
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

/// `401 Unauthorized`, `500 Internal Server Error, 502 Bad Gateway or 503 Service Unavailable`.
pub fn codes_phrase(r: &Remediation<'_>) -> String {
    let names: Vec<String> = r
        .entries
        .iter()
        .map(|e| format!("{} {}", e.code, e.name))
        .collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

/// The FAQ's meaning for the key's codes; prefixed by code when several share the key.
pub fn meaning_text(r: &Remediation<'_>) -> String {
    if r.entries.len() == 1 {
        return r.entries[0].meaning.clone();
    }
    r.entries
        .iter()
        .map(|e| format!("{} {}: {}", e.code, e.name, e.meaning))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The FAQ's advice sentences for the key's codes, word for word, each once.
pub fn advice_sentences<'a>(r: &Remediation<'a>) -> Vec<&'a str> {
    let mut sentences: Vec<&str> = Vec::new();
    for e in &r.entries {
        for a in &e.advice {
            if !sentences.contains(&a.as_str()) {
                sentences.push(a);
            }
        }
    }
    sentences
}

/// The FAQ's advised action for the key as one paragraph.
pub fn advice_text(r: &Remediation<'_>) -> String {
    advice_sentences(r).join(" ")
}

fn share_expr(selector: &str, window: &str, s: &Settings) -> String {
    let all = format!("{RESPONSES}{{source!=\"{SOURCE_UNMATCHED}\"}}");
    format!(
        "(\n  sum by ({BY}) (rate({RESPONSES}{{{selector}}}[{window}]))\n/\n  \
         sum by ({BY}) (rate({all}[{window}]))\n) > {threshold}\n\
         and on ({BY})\n  sum by ({BY}) (rate({all}[{window}])) >= {min_rate}",
        threshold = s.threshold,
        min_rate = s.min_rate,
    )
}

fn remediation_alert(config: &Config, r: &Remediation<'_>, window: &str) -> Rule {
    let s = settings(config, r.key);
    let selector = format!(
        "source!=\"{SOURCE_UNMATCHED}\",remediation=\"{key}\"",
        key = r.key
    );
    Rule::Alert {
        alert: r.alert.to_owned(),
        expr: share_expr(&selector, window, &s),
        for_: s.for_.to_string(),
        labels: labels(s.severity, r.key),
        annotations: annotations(
            config,
            format!(
                "{{{{ $labels.source }}}}: {{{{ $value | humanizePercentage }}}} of responses over {window} were {} ({}).",
                codes_phrase(r),
                r.key
            ),
            meaning_text(r),
            advice_text(r),
            r.key,
        ),
    }
}

fn own_alerts(config: &Config, window: &str) -> Vec<Rule> {
    vec![
        own_alert(
            config,
            UNMATCHED_ALERT,
            |s| {
                format!(
                    "(\n  sum by (namespace) (rate({RESPONSES}{{source=\"{SOURCE_UNMATCHED}\"}}[{window}]))\n/\n  \
                     sum by (namespace) (rate({RESPONSES}[{window}]))\n) > {t}\n\
                     and on (namespace)\n  sum by (namespace) (rate({RESPONSES}[{window}])) >= {m}",
                    t = s.threshold,
                    m = s.min_rate
                )
            },
            format!(
                "{{{{ $value | humanizePercentage }}}} of the connector's requests over {window} matched no source and were refused."
            ),
        ),
        own_alert(
            config,
            UNREACHABLE_ALERT,
            |s| {
                share_expr(
                    &format!("source!=\"{SOURCE_UNMATCHED}\",origin=\"proxy\",code=~\"502|504\""),
                    window,
                    s,
                )
            },
            format!(
                "{{{{ $labels.source }}}}: remedy could not reach the upstream for {{{{ $value | humanizePercentage }}}} of requests over {window}."
            ),
        ),
        own_alert(
            config,
            RELOAD_ALERT,
            |_| "remedy_config_last_reload_successful == 0".into(),
            "remedy on {{ $labels.instance }} failed to reload its config and runs the previous one.".into(),
        ),
    ]
}

fn own_alert(
    config: &Config,
    alert: &str,
    expr: impl FnOnce(&Settings) -> String,
    summary: String,
) -> Rule {
    let s = settings(config, alert);
    let (key, meaning, advice) = own_alert_text(alert);
    Rule::Alert {
        alert: alert.into(),
        expr: expr(&s),
        for_: s.for_.to_string(),
        labels: labels(s.severity, key),
        annotations: annotations(config, summary, meaning.into(), advice.into(), key),
    }
}

/// Output format of `remedy rules`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
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
    names.extend(OWN_ALERTS.iter().map(|s| (*s).to_owned()));
    names
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
                "RemedyConfigReloadFailed",
            ]
        );
        let rules = build(&c);
        assert_eq!(rules.groups[1].rules.len(), names.len());
    }

    #[test]
    fn overrides_change_threshold_for_and_severity() {
        let c = config(
            "alerts:\n  window: 2m\n  overrides:\n    reduce_concurrency: { threshold: 0.2, for: 1m, severity: critical, min_rate: 1 }\n",
        );
        let s = settings(&c, "reduce_concurrency");
        assert_eq!(s.threshold, 0.2);
        assert_eq!(s.for_.to_string(), "1m");
        assert_eq!(s.severity, Severity::Critical);
        let text = render(&c);
        assert!(text.contains("rate(remedy_upstream_responses_total{source!=\"unmatched\",remediation=\"reduce_concurrency\"}[2m]))"));
        assert!(text.contains(") > 0.2\n"));
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
