//! What one run costs Prometheus: the series a fresh remedy with one source exports after a
//! run that saw a few status codes, against the budget; `metrics.series: full` restores the
//! series exported at 0 from the start.

use crate::support::{Config, Remedy, Scrape, Upstream, send, source};

/// Most series one run of one source may export by default.
const BUDGET: usize = 40;

fn series(s: &Scrape) -> Vec<&str> {
    s.text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect()
}

/// A run of one source: a few successes, a rate limit, a server error, and a call remedy
/// could not forward (the upstream refuses connections).
fn run(extra: &str) -> (Remedy, Scrape) {
    let api = Upstream::builder().statuses(&[429, 500]).http();
    let mut config = Config::new()
        .source(source("crm", api.url()).prefix("/crm"))
        .source(source("gone", "http://127.0.0.1:9").prefix("/gone"));
    if !extra.is_empty() {
        config = config.section("metrics", extra);
    }
    let remedy = Remedy::start(config);
    for path in ["/crm/a", "/crm/b", "/crm/429", "/crm/500", "/crm/c"] {
        send(remedy.proxy, path);
    }
    let s = remedy.scrape();
    drop(api);
    (remedy, s)
}

#[test]
fn one_run_of_one_source_stays_within_the_series_budget() {
    let (_remedy, s) = run("");
    let all = series(&s);
    let crm: Vec<&&str> = all
        .iter()
        .filter(|l| !l.contains("source=\"gone\""))
        .collect();
    assert!(
        crm.len() <= BUDGET,
        "{} series for one run of one source, budget {BUDGET}:\n{}",
        crm.len(),
        crm.iter().map(|l| **l).collect::<Vec<_>>().join("\n")
    );
    // What the run counted is all there, with its latency.
    assert_eq!(s.responses("crm", 200, "none", "upstream"), 3.0);
    assert_eq!(
        s.responses("crm", 429, "reduce_concurrency", "upstream"),
        1.0
    );
    assert_eq!(s.responses("crm", 500, "retry_later", "upstream"), 1.0);
    assert_eq!(
        s.get(
            "remedy_upstream_request_duration_seconds_count",
            &[("source", "crm")]
        ),
        Some(5.0)
    );
    // A source that was never called exports its in-flight gauge and nothing else.
    let gone: Vec<&&str> = all
        .iter()
        .filter(|l| l.contains("source=\"gone\""))
        .collect();
    assert_eq!(gone.len(), 1, "{gone:?}");
    assert!(
        !s.text.contains("remedy_faq_info{"),
        "the rules serve the catalog"
    );
}

#[test]
fn full_series_restore_the_zeros_the_classes_and_the_catalog() {
    let (_remedy, s) = run("{ series: full }");
    assert!(series(&s).len() > 100, "{}", series(&s).len());
    assert_eq!(
        s.responses("gone", 401, "check_credentials", "upstream"),
        0.0
    );
    assert_eq!(s.errors("gone", "tls"), 0.0);
    assert_eq!(
        s.get(
            "remedy_upstream_request_duration_seconds_count",
            &[("source", "crm"), ("class", "2xx")]
        ),
        Some(3.0)
    );
    assert!(s.text.contains("remedy_faq_info{advice="));
}
