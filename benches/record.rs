//! Recording one response: remedy's cached handles, side by side with the naive way
//! (`with_label_values` and a formatted code per response); and reading a response head's
//! rate-limit headers, beside that record path, for heads with none and with each common form.

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue};
use prometheus::{IntCounterVec, Opts};
use remedy::catalog::Catalog;
use remedy::metrics::{Origin, Outcome, Recorder};
use remedy::observe::ratelimit::{self, Policies, ResetStyle};

fn record(c: &mut Criterion) {
    let recorder = Recorder::new(&remedy::config::DEFAULT_BUCKETS);
    let catalog = Catalog::builtin();
    let source = recorder.source("github", &catalog);
    let outcome = Outcome {
        status: 429,
        origin: Origin::Upstream,
        elapsed: Duration::from_millis(12),
        error: None,
        remediation: None,
        endpoint: None,
        api_errors: None,
    };
    let mut g = c.benchmark_group("record_one_response");
    g.bench_function("remedy_cached_handles", |b| {
        b.iter(|| {
            source.start();
            source.record(black_box(&outcome));
        })
    });
    let naive = IntCounterVec::new(
        Opts::new("naive_total", "reference"),
        &["source", "code", "class", "remediation", "origin"],
    )
    .unwrap();
    g.bench_function("reference_with_label_values", |b| {
        b.iter(|| {
            let o = black_box(&outcome);
            let code = o.status.to_string();
            naive
                .with_label_values(&[
                    "github",
                    &code,
                    remedy::catalog::class_label(o.status),
                    catalog.remediation_label(o.status),
                    o.origin.as_str(),
                ])
                .inc();
        })
    });
    g.finish();
}

/// A typical JSON API response head, plus `extra`.
fn head(extra: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("date", "Mon, 02 Mar 2026 15:00:00 GMT"),
        ("content-type", "application/json; charset=utf-8"),
        ("content-length", "1532"),
        ("server", "nginx"),
        ("x-request-id", "5f2b7c1e-8a1d-4c3b-9e7f-1d2c3b4a5f6e"),
        ("cache-control", "no-cache"),
        ("vary", "Accept-Encoding"),
        ("strict-transport-security", "max-age=31536000"),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    {
        h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    h
}

fn ratelimit_headers(c: &mut Criterion) {
    let recorder = Recorder::new(&remedy::config::DEFAULT_BUCKETS);
    let source = recorder.source("github", &Catalog::builtin());
    let outcome = Outcome {
        status: 200,
        origin: Origin::Upstream,
        elapsed: Duration::from_millis(12),
        error: None,
        remediation: None,
        endpoint: None,
        api_errors: None,
    };
    let heads = [
        ("no_quota_headers", head(&[])),
        (
            "github_x_ratelimit",
            head(&[
                ("x-ratelimit-limit", "5000"),
                ("x-ratelimit-remaining", "4987"),
                ("x-ratelimit-reset", "1772464800"),
                ("x-ratelimit-used", "13"),
                ("x-ratelimit-resource", "core"),
            ]),
        ),
        (
            "ietf_structured",
            head(&[
                (
                    "ratelimit-policy",
                    "\"burst\";q=100;w=60, \"daily\";q=1000;w=86400",
                ),
                ("ratelimit", "\"burst\";r=50;t=30"),
            ]),
        ),
        (
            "hubspot_three_windows",
            head(&[
                ("x-hubspot-ratelimit-daily", "250000"),
                ("x-hubspot-ratelimit-daily-remaining", "200000"),
                ("x-hubspot-ratelimit-interval-milliseconds", "10000"),
                ("x-hubspot-ratelimit-max", "100"),
                ("x-hubspot-ratelimit-remaining", "5"),
            ]),
        ),
        (
            "meta_json",
            head(&[(
                "x-business-use-case-usage",
                r#"{"66782684":[{"type":"ads_management","call_count":95,"total_cputime":20,"total_time":20,"estimated_time_to_regain_access":0}]}"#,
            )]),
        ),
    ];
    let policies = Policies::default();
    let now = SystemTime::now();
    let mut g = c.benchmark_group("observe_response_head");
    g.bench_function("record_only", |b| {
        b.iter(|| {
            source.start();
            source.record(black_box(&outcome));
        })
    });
    let walk_names = [
        http::header::RETRY_AFTER,
        HeaderName::from_static("ratelimit-remaining"),
        HeaderName::from_static("x-ratelimit-remaining"),
    ];
    g.bench_function("reference_walk_for_three_names", |b| {
        b.iter(|| {
            let mut found = [None; 3];
            for (name, value) in black_box(&heads[0].1) {
                if let Some(i) = walk_names.iter().position(|n| n == name) {
                    found[i].get_or_insert(value);
                }
            }
            black_box(found);
            source.start();
            source.record(black_box(&outcome));
        })
    });
    for (name, h) in &heads {
        g.bench_function(format!("record_and_read_{name}"), |b| {
            b.iter(|| {
                let seen = ratelimit::read(
                    black_box(h),
                    200,
                    || now,
                    ResetStyle::Guess,
                    &policies,
                    "github",
                );
                if let Some(w) = &seen.window {
                    source.quota(w);
                }
                source.start();
                source.record(black_box(&outcome));
            })
        });
    }
    g.finish();
}

criterion_group!(benches, record, ratelimit_headers);
criterion_main!(benches);
