//! Rendering /metrics for 100 sources with the full catalog pre-initialised.

use criterion::{Criterion, criterion_group, criterion_main};
use remedy::catalog::Catalog;
use remedy::metrics::Recorder;

fn render(c: &mut Criterion) {
    let recorder = Recorder::new(&remedy::config::DEFAULT_BUCKETS);
    let catalog = Catalog::builtin();
    recorder.set_catalog(&catalog);
    let _sources: Vec<_> = (0..100)
        .map(|i| recorder.source(&format!("source_{i}"), &catalog))
        .collect();
    let bytes = recorder.render().len();
    let mut g = c.benchmark_group("render_metrics");
    g.throughput(criterion::Throughput::Bytes(bytes as u64));
    g.bench_function("100_sources_full_catalog", |b| b.iter(|| recorder.render()));
    g.finish();
}

criterion_group!(benches, render);
criterion_main!(benches);
