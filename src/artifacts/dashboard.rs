//! The Grafana dashboard, generated from the catalog so its advice column and alert list
//! match the rules. No datasource UID is hard-coded: a `datasource` variable picks one.

use serde_json::{Value, json};

use crate::artifacts::{promql, rules};
use crate::catalog::{self, Catalog};
use crate::metrics::names;

/// Dashboard UID, stable so links and provisioning survive regeneration.
pub const UID: &str = "remedy-connectors";

const DS: &str = "${datasource}";

/// One panel's queries: `(expr, legend)`; instant queries are for tables.
struct Panel {
    title: &'static str,
    kind: &'static str,
    description: String,
    unit: &'static str,
    instant: bool,
    targets: Vec<(String, &'static str)>,
    width: u32,
    height: u32,
    /// A value drawn as a red line across a time series.
    threshold: Option<f64>,
}

fn panels(catalog: &Catalog) -> Vec<Panel> {
    let sel = "source=~\"$source\"";
    let alerts = rules::alert_names(catalog).join("|");
    let near = rules::default_settings(catalog::NEAR_RATE_LIMIT_ALERT).threshold;
    let [_, _, (used, _), (reset, _)] = crate::metrics::QUOTA_GAUGES;
    vec![
        Panel {
            title: "Requests per second by class",
            kind: "timeseries",
            description: "Responses the connector received, per source and status class, over the last 5 \
                          minutes, each run counted from zero (a run shorter than a scrape interval too).".into(),
            unit: "reqps",
            instant: false,
            targets: vec![(
                format!("sum by (source, class) {} / 300", promql::responses_from_zero(sel, "5m")),
                "{{source}} {{class}}",
            )],
            width: 12,
            height: 8,
            threshold: None,
        },
        Panel {
            title: "Error share by remediation",
            kind: "timeseries",
            description: "Share of each source's responses per FAQ remediation key (errors in the status \
                          line, and those the API reported inside a response); the alerts fire on this share."
                .into(),
            unit: "percentunit",
            instant: false,
            targets: vec![(
                format!(
                    "sum by (source, remediation) {}\n\
                     / ignoring (remediation) group_left\n\
                     sum by (source) {}",
                    promql::responses_from_zero(&format!("{sel},remediation!=\"none\""), "5m"),
                    promql::responses_from_zero(sel, "5m")
                ),
                "{{source}} {{remediation}}",
            )],
            width: 12,
            height: 8,
            threshold: None,
        },
        Panel {
            title: "Errors reported inside responses, by API code",
            kind: "timeseries",
            description: "Errors an API reported inside responses whose status line said otherwise: gRPC \
                          statuses (RESOURCE_EXHAUSTED, UNAUTHENTICATED, ...) and what a source's body_errors \
                          found (TikTok's 40100, Shopify's THROTTLED, ...), per source, the API's code and \
                          the HTTP status it stands for, whose remediation the response is counted with."
                .into(),
            unit: "reqps",
            instant: false,
            targets: vec![(
                format!(
                    "sum by (source, api_code, code) {} / 300",
                    promql::counted_from_zero(names::API_ERRORS, sel, "5m")
                ),
                "{{source}} {{api_code}} ({{code}})",
            )],
            width: 12,
            height: 8,
            threshold: None,
        },
        Panel {
            title: "429 share per source (last 5m)",
            kind: "timeseries",
            description: "Share of each source's responses that were 429 Too Many Requests within the last \
                          5 minutes, beside the runs that called it: what ConnectorRateLimited fires on.".into(),
            unit: "percentunit",
            instant: false,
            targets: vec![(
                format!(
                    "sum by (source) {}\n/\nsum by (source) {}",
                    promql::responses_from_zero(&format!("{sel},code=\"429\""), "5m"),
                    promql::responses_from_zero(sel, "5m")
                ),
                "{{source}} 429",
            )],
            width: 12,
            height: 8,
            threshold: None,
        },
        Panel {
            title: "Quota used per source (rate-limit headers)",
            kind: "timeseries",
            description: format!(
                "Share of each source's quota used, from the rate-limit headers its API sends (any dialect \
                 remedy reads: `remedy explain 429`), for the window nearest exhaustion. \
                 {near} fires at the red line ({t}, its default threshold), before the 429s beside it.",
                near = catalog::NEAR_RATE_LIMIT_ALERT,
                t = near,
            ),
            unit: "percentunit",
            instant: false,
            targets: vec![(
                format!("max by (source) (last_over_time({used}{{{sel}}}[5m]))"),
                "{{source}} used",
            )],
            width: 12,
            height: 8,
            threshold: Some(near),
        },
        Panel {
            title: "Runs calling each source (last 5m)",
            kind: "timeseries",
            description: "How many runs (pods) received responses from each source within the last 5 minutes, \
                          each run counted from zero. The FAQ's advice for 429 is to reduce this number, \
                          or to spread the runs' schedules.".into(),
            unit: "none",
            instant: false,
            targets: vec![(
                format!(
                    "count by (source) (sum by (source, pod, instance) {} > 0)",
                    promql::responses_from_zero(sel, "5m")
                ),
                "{{source}} runs",
            )],
            width: 12,
            height: 8,
            threshold: None,
        },
        Panel {
            title: "Seconds until the quota resets, and Retry-After",
            kind: "timeseries",
            description: "When each source's quota is restored, as its last response said, and the last \
                          Retry-After it sent.".into(),
            unit: "s",
            instant: false,
            targets: vec![
                (
                    format!("max by (source) (last_over_time({reset}{{{sel}}}[5m]))"),
                    "{{source}} reset",
                ),
                (
                    format!("max by (source) ({}{{{sel}}})", names::RETRY_AFTER),
                    "{{source}} retry-after",
                ),
            ],
            width: 12,
            height: 8,
            threshold: None,
        },
        Panel {
            title: "Failing codes and what to do",
            kind: "table",
            description: "Error responses in the selected range per source and code, with the FAQ's advised action.".into(),
            unit: "none",
            instant: true,
            targets: vec![(
                format!(
                    "(sum by (source, code, remediation) {} > 0)\n\
                     * on (code) group_left (name, advice)\n\
                     max by (code, name, advice) ({faq})",
                    promql::responses_from_zero(&format!("{sel},class=~\"4xx|5xx\""), "$__range"),
                    faq = names::FAQ_INFO
                ),
                "",
            )],
            width: 24,
            height: 8,
            threshold: None,
        },
        Panel {
            title: "Failing routes",
            kind: "table",
            description: "Error responses in the selected range per source, route (the endpoint \
                          template the request matched, for sources that declare routes) and code, \
                          the worst first: which of the connector's calls needs the fix."
                .into(),
            unit: "none",
            instant: true,
            targets: vec![(
                format!(
                    "sort_desc(sum by (source, route, code, remediation) {} > 0)",
                    promql::counted_from_zero(
                        names::ROUTE_RESPONSES,
                        &format!("{sel},code=~\"4..|5..\""),
                        "$__range"
                    )
                ),
                "",
            )],
            width: 24,
            height: 8,
            threshold: None,
        },
        Panel {
            title: "Latency p50 / p95 / p99",
            kind: "timeseries",
            description: "From the request's arrival at remedy to the end of the response body, over \
                          the last 5 minutes, each run counted from zero.".into(),
            unit: "s",
            instant: false,
            targets: [("0.5", "{{source}} p50"), ("0.95", "{{source}} p95"), ("0.99", "{{source}} p99")]
                .into_iter()
                .map(|(q, legend)| {
                    (
                        format!(
                            "histogram_quantile({q}, sum by (source, le) {})",
                            promql::counted_from_zero(&format!("{}_bucket", names::DURATION), sel, "5m")
                        ),
                        legend,
                    )
                })
                .collect(),
            width: 12,
            height: 8,
            threshold: None,
        },
        Panel {
            title: "In flight",
            kind: "timeseries",
            description: "Requests received and not yet fully answered.".into(),
            unit: "none",
            instant: false,
            targets: vec![(
                format!("sum by (source) ({}{{{sel}}})", names::IN_FLIGHT),
                "{{source}}",
            )],
            width: 12,
            height: 8,
            threshold: None,
        },
        Panel {
            title: "Errors made by remedy (origin=proxy)",
            kind: "timeseries",
            description: "502/504 remedy answered itself because the upstream was unreachable, by cause.".into(),
            unit: "reqps",
            instant: false,
            targets: vec![(
                format!(
                    "sum by (source, kind) {} / 300",
                    promql::counted_from_zero(names::ERRORS, sel, "5m")
                ),
                "{{source}} {{kind}}",
            )],
            width: 12,
            height: 8,
            threshold: None,
        },
        Panel {
            title: "Firing remedy alerts",
            kind: "table",
            description: "Alerts generated by remedy's rules that are firing now.".into(),
            unit: "none",
            instant: true,
            targets: vec![(
                format!("ALERTS{{alertstate=\"firing\",alertname=~\"{alerts}\"}}"),
                "",
            )],
            width: 24,
            height: 6,
            threshold: None,
        },
    ]
}

/// Every PromQL expression of a dashboard JSON, with Grafana's variables filled in (all
/// sources, the given rate interval and range): what checks run against Prometheus.
pub fn queries(dashboard: &Value, rate_interval: &str, range: &str) -> Vec<String> {
    let panels = dashboard["panels"].as_array().into_iter().flatten();
    panels
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .map(|e| {
            e.replace("$source", ".*")
                .replace("$__rate_interval", rate_interval)
                .replace("$__range", range)
        })
        .collect()
}

fn advice_markdown(catalog: &Catalog) -> String {
    let mut md =
        String::from("| code | name | remediation | advised action |\n|---|---|---|---|\n");
    for e in catalog.entries() {
        md.push_str(&format!(
            "| {} | {} | `{}` | {} |\n",
            e.code,
            e.name,
            e.remediation,
            e.advice_text()
        ));
    }
    md
}

/// The dashboard as a JSON value.
pub fn build(catalog: &Catalog) -> Value {
    let ds = json!({ "type": "prometheus", "uid": DS });
    let sources = format!("label_values({}, source)", names::RESPONSES);
    let mut out = Vec::new();
    let (mut x, mut y, mut row_h) = (0u32, 0u32, 0u32);
    let mut place = |w: u32, h: u32| {
        if x + w > 24 {
            x = 0;
            y += row_h;
            row_h = 0;
        }
        let pos = json!({ "x": x, "y": y, "w": w, "h": h });
        x += w;
        row_h = row_h.max(h);
        pos
    };
    for (id, p) in panels(catalog).into_iter().enumerate() {
        let targets: Vec<Value> = p
            .targets
            .iter()
            .enumerate()
            .map(|(i, (expr, legend))| {
                let mut t = json!({
                    "datasource": ds,
                    "expr": expr,
                    "legendFormat": legend,
                    "refId": char::from(b'A' + i as u8).to_string(),
                });
                if p.instant {
                    t["instant"] = json!(true);
                    t["range"] = json!(false);
                    t["format"] = json!("table");
                }
                t
            })
            .collect();
        let mut panel = json!({
            "id": id + 1,
            "type": p.kind,
            "title": p.title,
            "description": p.description,
            "datasource": ds,
            "gridPos": place(p.width, p.height),
            "fieldConfig": { "defaults": { "unit": p.unit }, "overrides": [] },
            "options": {},
            "targets": targets,
        });
        if let Some(t) = p.threshold {
            panel["fieldConfig"]["defaults"]["thresholds"] = json!({
                "mode": "absolute",
                "steps": [
                    { "color": "green", "value": null },
                    { "color": "red", "value": t },
                ],
            });
            panel["fieldConfig"]["defaults"]["custom"] =
                json!({ "thresholdsStyle": { "mode": "line" } });
        }
        if p.kind == "table" {
            panel["transformations"] = json!([{
                "id": "organize",
                "options": { "excludeByName": { "Time": true, "__name__": true } }
            }]);
        }
        out.push(panel);
    }
    out.push(json!({
        "id": out.len() + 1,
        "type": "text",
        "title": "What each code means (the FAQ)",
        "gridPos": place(24, 9),
        "options": { "mode": "markdown", "content": advice_markdown(catalog) },
    }));
    json!({
        "__inputs": [],
        "uid": UID,
        "title": "remedy: connector API errors",
        "description": "API responses of data connectors by source and status, with the FAQ's advised action for each error.",
        "tags": ["remedy", "connectors"],
        "timezone": "browser",
        "editable": true,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": { "from": "now-6h", "to": "now" },
        "templating": { "list": [
            {
                "name": "datasource",
                "label": "Data source",
                "type": "datasource",
                "query": "prometheus",
                "current": {},
                "hide": 0,
            },
            {
                "name": "source",
                "label": "Source",
                "type": "query",
                "datasource": ds,
                "query": { "query": sources, "refId": "sources" },
                "definition": sources,
                "refresh": 2,
                "multi": true,
                "includeAll": true,
                "allValue": ".*",
                "current": {},
                "sort": 1,
                "hide": 0,
            },
        ]},
        "annotations": { "list": [] },
        "links": [],
        "panels": out,
    })
}

/// The dashboard JSON text, pretty-printed with a trailing newline.
pub fn render(catalog: &Catalog) -> String {
    let mut s = serde_json::to_string_pretty(&build(catalog)).expect("JSON values serialise");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashboard_has_variables_and_no_fixed_datasource() {
        let d = build(&Catalog::builtin());
        let vars: Vec<&str> = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(vars, ["datasource", "source"]);
        assert_eq!(d["templating"]["list"][1]["multi"], true);
        for p in d["panels"].as_array().unwrap() {
            if let Some(uid) = p["datasource"]["uid"].as_str() {
                assert_eq!(uid, "${datasource}");
            }
        }
    }

    #[test]
    fn advice_column_comes_from_the_catalog() {
        let text = render(&Catalog::builtin());
        assert!(text.contains("Check that the credentials are correct and valid."));
        let qs = queries(&build(&Catalog::builtin()), "5m", "1h");
        assert!(qs.len() >= 9);
        assert!(qs.iter().all(|q| !q.contains('$')));
    }
}
