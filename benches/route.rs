//! Routing one request among 100 sources, by path prefix and by host.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Method, Uri};
use remedy::proxy::route::Router;

fn config_with_100_sources() -> remedy::config::Config {
    let mut yaml = String::from("sources:\n");
    for i in 0..100 {
        yaml.push_str(&format!(
            "  - {{ name: s{i}, upstream: 'https://api{i}.example.com', match: {{ path_prefix: /api{i}, hosts: [api{i}.example.com] }} }}\n"
        ));
    }
    remedy::config::parse(&yaml, "bench.yaml").unwrap()
}

fn route(c: &mut Criterion) {
    let config = config_with_100_sources();
    let router = Router::new(&config.sources);
    let by_prefix: Uri = "/api99/v3/reports/daily?from=2026-01-01&to=2026-01-31"
        .parse()
        .unwrap();
    let by_host: Uri = "/v3/reports/daily?from=2026-01-01".parse().unwrap();
    let mut g = c.benchmark_group("route_among_100_sources");
    g.bench_function("last_path_prefix", |b| {
        b.iter(|| {
            router
                .route(&Method::GET, black_box(&by_prefix), None)
                .unwrap()
                .source
        })
    });
    g.bench_function("host_header", |b| {
        b.iter(|| {
            router
                .route(&Method::GET, black_box(&by_host), Some("api57.example.com"))
                .unwrap()
                .source
        })
    });
    g.finish();
}

criterion_group!(benches, route);
criterion_main!(benches);
