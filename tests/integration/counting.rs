//! Every response is counted once, by source, code, class, remediation and origin.

use crate::support::{Answer, Config, Remedy, Upstream, send, source};

/// alpha at `a`, and beta at `b` under the base path `/v2`.
fn two_sources(a: &Upstream, b: &Upstream) -> Config {
    Config::new()
        .source(source("alpha", a.url()).prefix("/alpha"))
        .source(source("beta", format!("{}/v2", b.url())).prefix("/beta"))
}

#[test]
fn every_faq_code_is_counted_exactly_for_two_sources() {
    let codes = [400, 401, 403, 404, 414, 429, 500, 502, 503, 504, 200, 418];
    let a = Upstream::builder().statuses(&codes).http();
    let b = Upstream::builder().statuses(&codes).http();
    let remedy = Remedy::start(two_sources(&a, &b));
    let faq = [
        (400, "check_request_config"),
        (401, "check_credentials"),
        (403, "check_permissions"),
        (404, "check_resource_availability"),
        (414, "reduce_request_parameters"),
        (429, "reduce_concurrency"),
        (500, "retry_later"),
        (502, "retry_later"),
        (503, "retry_later"),
        (504, "reduce_query_volume"),
    ];
    // alpha gets each code once, beta twice: counts must not bleed between sources.
    for (code, _) in faq.iter().chain([(200, "none"), (418, "unlisted")].iter()) {
        assert_eq!(send(remedy.proxy, &format!("/alpha/{code}")).status, *code);
        for _ in 0..2 {
            assert_eq!(send(remedy.proxy, &format!("/beta/{code}")).status, *code);
        }
    }
    let s = remedy.scrape();
    for (code, remediation) in faq.iter().chain([(200, "none"), (418, "unlisted")].iter()) {
        assert_eq!(
            s.responses("alpha", *code, remediation, "upstream"),
            1.0,
            "{code}"
        );
        assert_eq!(
            s.responses("beta", *code, remediation, "upstream"),
            2.0,
            "{code}"
        );
    }
    assert_eq!(s.responses("alpha", 502, "retry_later", "proxy"), 0.0);
    assert_eq!(s.in_flight("alpha"), 0.0);
    assert_eq!(s.in_flight("beta"), 0.0);
    // Every response's duration, in the source's histogram.
    assert!(
        s.text
            .contains("remedy_upstream_request_duration_seconds_count{source=\"beta\"} 24\n")
    );
    assert_eq!((a.hits(), b.hits()), (12, 24));
}

#[test]
fn with_full_series_catalog_codes_are_exported_at_zero_from_start() {
    let (a, b) = (Upstream::http(), Upstream::http());
    let remedy = Remedy::start(two_sources(&a, &b).section("metrics", "{ series: full }"));
    let s = remedy.scrape();
    for source in ["alpha", "beta"] {
        assert_eq!(
            s.responses(source, 401, "check_credentials", "upstream"),
            0.0
        );
        assert_eq!(
            s.responses(source, 504, "reduce_query_volume", "proxy"),
            0.0
        );
        assert_eq!(s.errors(source, "connect"), 0.0);
    }
    assert_eq!(
        s.responses("unmatched", 404, "check_resource_availability", "proxy"),
        0.0
    );
    assert_eq!(
        s.get("remedy_config_last_reload_successful", &[]),
        Some(1.0)
    );
    assert_eq!(
        s.sum(
            "remedy_faq_info",
            &[("code", "429"), ("remediation", "reduce_concurrency")]
        ),
        1.0
    );
    assert_eq!(
        s.sum(
            "remedy_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(s.text.contains("process_resident_memory_bytes "));
}

#[test]
fn retry_after_in_both_forms_and_rate_limit_headers_set_the_gauges() {
    let at =
        httpdate::fmt_http_date(std::time::SystemTime::now() + std::time::Duration::from_secs(600));
    let a = Upstream::builder()
        .route(
            "/throttled",
            Answer::status(429)
                .header("retry-after", 120)
                .header("ratelimit-remaining", 7),
        )
        .route(
            "/seven",
            Answer::status(200).header("ratelimit-remaining", 7),
        )
        .route(
            "/garbled",
            Answer::status(200).header("ratelimit-remaining", "lots"),
        )
        .http();
    let b = Upstream::builder()
        .route(
            "/unavailable",
            Answer::status(503)
                .header("retry-after", &at)
                .header("x-ratelimit-remaining", 3),
        )
        .http();
    let remedy = Remedy::start(two_sources(&a, &b));
    send(remedy.proxy, "/alpha/throttled");
    let gauge = |s: &crate::support::Scrape, name: &str, source: &str| {
        s.get(name, &[("source", source)]).expect(name)
    };
    let s = remedy.scrape();
    assert_eq!(
        gauge(&s, "remedy_upstream_retry_after_seconds", "alpha"),
        120.0
    );
    // A 429 is an exhausted window, whatever else the answer states.
    let exhausted = [Some(0.0), None, Some(1.0), Some(120.0)];
    assert_eq!(quota(&s, "alpha"), exhausted);
    // A later answer replaces what it states and leaves the rest.
    send(remedy.proxy, "/alpha/seven");
    let seven = [Some(7.0), None, Some(1.0), Some(120.0)];
    assert_eq!(quota(&remedy.scrape(), "alpha"), seven);
    // A value that does not parse is passed on untouched and changes no gauge.
    let r = send(remedy.proxy, "/alpha/garbled");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("ratelimit-remaining"), Some("lots"));
    assert_eq!(quota(&remedy.scrape(), "alpha"), seven);

    send(remedy.proxy, "/beta/unavailable");
    let s = remedy.scrape();
    let secs = gauge(&s, "remedy_upstream_retry_after_seconds", "beta");
    assert!((590.0..=600.0).contains(&secs), "date form gave {secs}");
    assert_eq!(quota(&s, "beta"), [Some(3.0), None, None, None]);
}

/// The four quota gauges of `source`: remaining, limit, used ratio, seconds to reset.
fn quota(s: &crate::support::Scrape, source: &str) -> Vec<Option<f64>> {
    remedy::metrics::QUOTA_GAUGES
        .iter()
        .map(|(name, _)| s.get(name, &[("source", source)]))
        .collect()
}

#[test]
fn metrics_pass_promtool_check_metrics() {
    let a = Upstream::builder()
        .route("/429", Answer::status(429).header("retry-after", 1))
        .http();
    let b = Upstream::builder().statuses(&[418]).http();
    let remedy = Remedy::start(two_sources(&a, &b));
    for path in ["/alpha/x", "/alpha/429", "/nope", "/beta/418"] {
        send(remedy.proxy, path);
    }
    let text = remedy.scrape().text;
    let (ok, out) =
        crate::support::tools::run_with_input("promtool", &["check", "metrics"], text.as_bytes());
    assert!(ok, "promtool check metrics: {out}");
}

#[test]
fn a_quota_counted_down_shows_in_the_gauges_before_the_first_429() {
    let a = Upstream::builder()
        .route("/reports", Answer::quota(100))
        .http();
    let b = Upstream::http();
    let remedy = Remedy::start(two_sources(&a, &b));
    for _ in 0..95 {
        assert_eq!(send(remedy.proxy, "/alpha/reports").status, 200);
    }
    let q = quota(&remedy.scrape(), "alpha");
    assert_eq!((q[0], q[1], q[3]), (Some(5.0), Some(100.0), Some(60.0)));
    assert!(q[2].is_some_and(|u| (u - 0.95).abs() < 1e-9), "{q:?}");
    assert_eq!(
        remedy
            .scrape()
            .responses("alpha", 429, "reduce_concurrency", "upstream"),
        0.0
    );
    let statuses: Vec<u16> = (0..10)
        .map(|_| send(remedy.proxy, "/alpha/reports").status)
        .collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429, 429, 429]);
    assert_eq!(quota(&remedy.scrape(), "alpha")[2], Some(1.0));
    assert_eq!(
        remedy
            .scrape()
            .responses("alpha", 429, "reduce_concurrency", "upstream"),
        5.0
    );
}

/// HTTP allows statuses up to 999 and remedy passes them on as sent: each is counted as the
/// code the connector received, in a class of its own, never as 599.
#[test]
fn statuses_beyond_599_are_counted_as_received() {
    let u = Upstream::builder().statuses(&[600, 799, 999]).http();
    let remedy = Remedy::start(Config::new().source(source("api", u.url()).prefix("/api")));
    for code in [600, 799, 999, 999] {
        assert_eq!(send(remedy.proxy, &format!("/api/{code}")).status, code);
    }
    let s = remedy.scrape();
    for (code, class, n) in [
        ("600", "6xx", 1.0),
        ("799", "7xx", 1.0),
        ("999", "9xx", 2.0),
    ] {
        assert_eq!(
            s.get(
                "remedy_upstream_responses_total",
                &[
                    ("source", "api"),
                    ("code", code),
                    ("class", class),
                    ("remediation", "unlisted"),
                    ("origin", "upstream")
                ]
            ),
            Some(n),
            "{code}"
        );
    }
    assert_eq!(
        s.sum("remedy_upstream_responses_total", &[("code", "599")]),
        0.0
    );
    // Each timed, in the source's histogram.
    assert_eq!(
        s.get(
            "remedy_upstream_request_duration_seconds_count",
            &[("source", "api")]
        ),
        Some(s.sum("remedy_upstream_responses_total", &[("source", "api")]))
    );
}
