//! The cost of reading a JSON answer for `body_errors`, beside passing the same frames on
//! without a reader (a source without `body_errors`): a small answer read whole, TikTok's
//! error settled at its first field, and a 10 MiB answer whose reading stops at the 64 KiB
//! window, plain and gzip.

use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::{HeaderMap, StatusCode};
use remedy::config::BodyErrorsConfig;
use remedy::observe::body_errors::{Read, Reader, Rules};

const SMALL: &str = r#"{"data": {"shop": {"name": "Bench Shop", "orders": {"edges": [{"node": {"id": "gid://shopify/Order/1", "totalPrice": "10.00"}}, {"node": {"id": "gid://shopify/Order/2", "totalPrice": "12.50"}}]}}}, "extensions": {"cost": {"requestedQueryCost": 12, "actualQueryCost": 12, "throttleStatus": {"maximumAvailable": 2000.0, "currentlyAvailable": 1988, "restoreRate": 100.0}}}}"#;
const TIKTOK: &str =
    r#"{"code": 40100, "message": "Too many requests.", "request_id": "20261206", "data": {}}"#;

fn big() -> Vec<u8> {
    let order =
        r#"{"id": "gid://shopify/Order/450789469", "note": "ring the bell", "total": "10.00"},"#;
    let mut body = String::from(r#"{"data": {"orders": ["#);
    while body.len() < 10 << 20 {
        body.push_str(order);
    }
    body.push_str("{}]}}");
    body.into_bytes()
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(body).unwrap();
    e.finish().unwrap()
}

/// The body in frames of 16 KiB, as an HTTP/1.1 upstream's chunks arrive.
fn frames(body: &[u8]) -> Vec<Bytes> {
    body.chunks(16 << 10).map(Bytes::copy_from_slice).collect()
}

fn headers(coding: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_TYPE, "application/json".parse().unwrap());
    if let Some(c) = coding {
        h.insert(CONTENT_ENCODING, c.parse().unwrap());
    }
    h
}

/// What the proxy does with each frame without a reader: hands it on.
fn pass(frames: &[Bytes]) -> usize {
    frames.iter().map(|f| black_box(f.clone()).len()).sum()
}

/// The same, with the reader shown each frame until it is done.
fn read(rules: &Arc<Rules>, h: &HeaderMap, frames: &[Bytes]) -> usize {
    let mut reader = Reader::for_response(rules, StatusCode::OK, h);
    let mut n = 0;
    for f in frames {
        if let Some(r) = &mut reader
            && let Read::Done(e) = r.read(f)
        {
            black_box(e);
            reader = None;
        }
        n += black_box(f.clone()).len();
    }
    if let Some(r) = reader {
        black_box(r.finish());
    }
    n
}

fn body_errors(c: &mut Criterion) {
    let pack = |name: &str| {
        Arc::new(Rules::compile(&BodyErrorsConfig::Pack(name.into()), 64 << 10).unwrap())
    };
    let (graphql, tiktok, shopify) = (pack("graphql"), pack("tiktok"), pack("shopify_graphql"));
    let small = frames(SMALL.as_bytes());
    let tt = frames(TIKTOK.as_bytes());
    let big_plain = frames(&big());
    let big_gzip = frames(&gzip(&big()));
    let (plain, gz) = (headers(None), headers(Some("gzip")));

    let mut g = c.benchmark_group("body_errors_small");
    g.throughput(Throughput::Bytes(SMALL.len() as u64));
    g.bench_function("without_body_errors", |b| b.iter(|| pass(&small)));
    g.bench_function("graphql_read_whole", |b| {
        b.iter(|| read(&graphql, &plain, &small))
    });
    g.bench_function("tiktok_40100_settled", |b| {
        b.iter(|| read(&tiktok, &plain, &tt))
    });
    g.finish();

    let mut g = c.benchmark_group("body_errors_10mib");
    g.sample_size(20);
    g.bench_function("without_body_errors", |b| b.iter(|| pass(&big_plain)));
    g.bench_function("shopify_plain_window", |b| {
        b.iter(|| read(&shopify, &plain, &big_plain))
    });
    g.bench_function("shopify_gzip_window", |b| {
        b.iter(|| read(&shopify, &gz, &big_gzip))
    });
    g.finish();
}

criterion_group!(benches, body_errors);
criterion_main!(benches);
