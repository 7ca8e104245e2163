//! Generated artifacts (rules, runbooks, dashboard) match what the binary generates, and the
//! real Prometheus tools accept them. `REMEDY_UPDATE_GOLDEN=1 cargo test --test integration generated::`
//! rewrites the committed files.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::support::{Answer, Config, Remedy, Upstream, send, source};

use crate::support::tools::{assert_golden, root, run as tool};

fn remedy(args: &[&str]) -> String {
    crate::support::tools::remedy_stdout(args)
}

fn temp_file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn committed_runbooks_match_the_catalog() {
    assert_golden("docs/runbooks.md", &remedy(&["runbook"]));
}

#[test]
fn committed_dashboard_matches_the_catalog() {
    assert_golden(
        "config/grafana/remedy-dashboard.json",
        &remedy(&["dashboard"]),
    );
}

#[test]
fn committed_default_rules_match_the_binary() {
    assert_golden("config/prometheus/remedy-rules.yaml", &remedy(&["rules"]));
}

#[test]
fn promtool_accepts_default_rules_and_rules_with_overrides() {
    let (ok, out) = tool(
        "promtool",
        &["check", "rules", "config/prometheus/remedy-rules.yaml"],
    );
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS: 36 rules found"), "{out}");

    let text = remedy(&["rules", "--config", "tests/data/rules-overrides.yaml"]);
    assert!(text.contains("alert: ConnectorResolveConflict"));
    assert!(text.contains("runbook_url: https://runbooks.example.com/remedy/resolve_conflict"));
    assert!(text.contains("[10m]"));
    assert!(text.contains("sum by (namespace, cronjob, source) "));
    assert!(text.contains("keep_firing_for: 2h"));
    // ConnectorNearRateLimit takes its threshold from the overrides and the 429 advice from
    // the catalog in use.
    let near = text
        .split("- alert: ")
        .find(|a| a.starts_with("ConnectorNearRateLimit"))
        .expect("ConnectorNearRateLimit");
    assert!(near.contains("[10m])) >= 0.8"), "{near}");
    assert!(near.contains("remediation: Spread the schedules of extracts in the same source."));
    let (_dir, path) = temp_file("rules.yaml", &text);
    let (ok, out) = tool("promtool", &["check", "rules", path.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS: 38 rules found"), "{out}");

    let wrapped = remedy(&["rules", "--format", "prometheusrule"]);
    let doc: serde_yaml::Value = serde_yaml::from_str(&wrapped).unwrap();
    assert_eq!(doc["kind"], "PrometheusRule");
    let (_dir, path) = temp_file("spec.yaml", &serde_yaml::to_string(&doc["spec"]).unwrap());
    let (ok, out) = tool("promtool", &["check", "rules", path.to_str().unwrap()]);
    assert!(ok, "{out}");
}

#[test]
fn promtool_unit_tests_of_every_alert_pass() {
    let (ok, out) = tool(
        "promtool",
        &["test", "rules", "tests/rules/alerts.test.yml"],
    );
    assert!(ok, "{out}");
    // Short Jobs, overlapping and consecutive runs, long-running connectors.
    let (ok, out) = tool("promtool", &["test", "rules", "tests/rules/runs.test.yml"]);
    assert!(ok, "{out}");
    // The recording rules a fleet's dashboards read, and the catalog from the rules.
    let (ok, out) = tool("promtool", &["test", "rules", "tests/rules/fleet.test.yml"]);
    assert!(ok, "{out}");
    let tested: BTreeSet<String> =
        std::fs::read_to_string(root().join("tests/rules/alerts.test.yml"))
            .unwrap()
            .lines()
            .filter_map(|l| l.trim().strip_prefix("alertname: "))
            .map(str::to_owned)
            .collect();
    let rules = remedy(&["rules"]);
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(tested.contains(alert), "{alert} has no promtool unit test");
    }
}

#[test]
fn every_dashboard_query_is_valid_promql_over_existing_metrics() {
    let dashboard: serde_json::Value = serde_json::from_str(&remedy(&["dashboard"])).unwrap();
    let queries = remedy::artifacts::dashboard::queries(&dashboard, "5m", "1h");
    assert!(queries.len() >= 9, "{queries:?}");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in queries.iter().enumerate() {
        let expr = serde_json::to_string(q).unwrap();
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {expr}\n"
        ));
    }
    let (_dir, path) = temp_file("dashboard-queries.yaml", &rules);
    let (ok, out) = tool("promtool", &["check", "rules", path.to_str().unwrap()]);
    assert!(ok, "{out}\n{rules}");

    // Every remedy metric a query names exists in a live scrape.
    let u = Upstream::builder()
        .route(
            "/429",
            Answer::status(429)
                .header("retry-after", 5)
                .header("ratelimit-remaining", 1),
        )
        .route(
            "/grpc-quota",
            Answer::status(200)
                .header("content-type", "application/grpc")
                .header("grpc-status", 8),
        )
        .http();
    let r = Remedy::start(
        Config::new()
            .source(
                source("api", u.url())
                    .prefix("/api")
                    .set("routes", "['/{page}']"),
            )
            .source(source("down", "http://127.0.0.1:9").prefix("/down")),
    );
    send(r.proxy, "/api/429");
    send(r.proxy, "/api/grpc-quota");
    send(r.proxy, "/down/x");
    // What a run exports, and what the rules record (the catalog's remedy_faq_info).
    let recorded: String = remedy(&["rules"])
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record: "))
        .map(|name| format!("\n{name}{{"))
        .collect();
    let scrape = r.scrape().text + &recorded;
    let names: BTreeSet<&str> = queries
        .iter()
        .flat_map(|q| q.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|w| w.starts_with("remedy_"))
        .collect();
    for name in names {
        assert!(
            scrape.contains(&format!("\n{name}{{")),
            "{name} is not in /metrics"
        );
    }
}

#[test]
fn admin_serves_the_same_rules_dashboard_and_catalog() {
    let u = Upstream::http();
    let r = Remedy::start(
        Config::new()
            .source(source("api", u.url()).prefix("/api"))
            .section(
                "catalog",
                "[{ code: 408, name: Request Timeout, meaning: m, advice: [Slow down.], remediation: retry_later }]",
            ),
    );
    let config = r.config_path.to_str().unwrap().to_owned();
    let rules = send(r.admin, "/rules");
    assert_eq!(rules.status, 200);
    assert_eq!(rules.text(), remedy(&["rules", "--config", &config]));
    assert!(rules.text().contains("408 Request Timeout"));
    let dash = send(r.admin, "/dashboard");
    assert_eq!(dash.text(), remedy(&["dashboard", "--config", &config]));
    let catalog = send(r.admin, "/catalog").json();
    let codes: Vec<u64> = catalog
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_u64().unwrap())
        .collect();
    assert_eq!(
        codes,
        [400, 401, 403, 404, 408, 414, 429, 500, 502, 503, 504]
    );
    assert_eq!(catalog[4]["remediation"], "retry_later");
}

#[test]
fn alertmanager_example_passes_amtool() {
    let (ok, out) = tool(
        "amtool",
        &["check-config", "config/alertmanager/alertmanager.yml"],
    );
    assert!(ok, "{out}");
    assert!(out.contains("3 inhibit rules"), "{out}");
}

#[test]
fn the_runbook_queries_use_the_configured_window() {
    let text = remedy(&["runbook", "--config", "tests/data/rules-overrides.yaml"]);
    assert!(text.contains("[10m]"), "{text}");
    assert!(!text.contains("[5m]"), "{text}");
}

/// The rules in a second engine: Debian's vmalert (VictoriaMetrics 1.79) parses every
/// expression as MetricsQL and every annotation template. It predates `keep_firing_for`
/// (vmalert 1.92): it refuses the default rules by naming that field, and loads the rules
/// made with it off, as docs/fleet.md tells users of such engines to make them.
#[test]
fn the_rules_load_in_vmalert_with_keep_firing_for_off() {
    let dir = tempfile::tempdir().unwrap();
    let check = |rules: &str| {
        let path = dir.path().join("rules.yaml");
        std::fs::write(&path, rules).unwrap();
        let rule = format!("-rule={}", path.display());
        tool(
            "vmalert",
            &[
                "-dryRun",
                &rule,
                "-rule.validateExpressions",
                "-rule.validateTemplates",
            ],
        )
    };
    let (ok, out) = check(&remedy(&["rules"]));
    assert!(
        !ok && out.contains("unknown fields in rule: keep_firing_for"),
        "{out}"
    );
    let off = remedy(&["rules", "--config", "tests/data/rules-vmalert-1.79.yaml"]);
    assert!(!off.contains("keep_firing_for"));
    let (ok, out) = check(&off);
    assert!(ok, "{out}");
    // It does check: a broken expression is refused.
    let (ok, _) = check(&off.replacen("offset 5m", "offset 5x", 1));
    assert!(!ok, "vmalert accepted a broken expression");
}
