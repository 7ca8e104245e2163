//! Recording one response: remedy's cached handles, side by side with the naive way
//! (`with_label_values` and a formatted code per response).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use prometheus::{IntCounterVec, Opts};
use remedy::catalog::Catalog;
use remedy::metrics::{Origin, Outcome, Recorder};

fn record(c: &mut Criterion) {
    let recorder = Recorder::new(&remedy::config::DEFAULT_BUCKETS);
    let catalog = Catalog::builtin();
    let source = recorder.source("github", &catalog);
    let outcome = Outcome {
        status: 429,
        origin: Origin::Upstream,
        elapsed: Duration::from_millis(12),
        error: None,
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

criterion_group!(benches, record);
criterion_main!(benches);
