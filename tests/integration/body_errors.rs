//! Errors inside JSON bodies: each pack's answers, plain and compressed, small and several MiB,
//! with the errors first or last, cut short or malformed, pass to curl byte for byte, and the
//! counts are exact: every error in `remedy_upstream_api_errors_total` under the status it
//! stands for, the response under that status's remediation with the `code` it had.

use std::io::Write;
use std::process::Command;

use crate::support::{Answer, Config, Remedy, Scrape, Upstream, source, wait_for};

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(body).unwrap();
    e.finish().unwrap()
}

fn brotli(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut e = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        e.write_all(body).unwrap();
    }
    out
}

/// A JSON answer, cut into frames of `frame` bytes, coded as `coding` when there is one.
fn json(status: u16, coding: Option<&str>, body: &[u8], frame: usize) -> (Answer, Vec<u8>) {
    let sent = match coding {
        Some("gzip") => gzip(body),
        Some("br") => brotli(body),
        _ => body.to_vec(),
    };
    let parts: Vec<(&[u8], u64)> = sent.chunks(frame).map(|c| (c, 1)).collect();
    let mut a = Answer::body(&parts)
        .with_status(status)
        .header("content-type", "application/json; charset=utf-8");
    if let Some(c) = coding {
        a = a.header("content-encoding", c);
    }
    (a, sent)
}

const TIKTOK_LIMIT: &[u8] =
    br#"{"code": 40100, "message": "Too many requests.", "request_id": "2026120603", "data": {}}"#;
const TIKTOK_OK: &[u8] =
    br#"{"code": 0, "message": "OK", "request_id": "2026120604", "data": {"list": [{"code": 40100}]}}"#;
const GQL_UNAUTH: &[u8] = br#"{"data": null, "errors": [
  {"message": "Not signed in", "extensions": {"code": "UNAUTHENTICATED"}},
  {"message": "Not signed in", "extensions": {"code": "UNAUTHENTICATED"}},
  {"message": "New kind", "extensions": {"code": "SOMETHING_NEW"}}]}"#;
const HUBSPOT_207: &[u8] = br#"{"status": "COMPLETE", "results": [{"id": "1"}], "numErrors": 3,
  "errors": [{"status": "error", "category": "RATE_LIMITS", "message": "a"},
             {"status": "error", "category": "VALIDATION_ERROR", "message": "b"},
             {"status": "error", "category": "RATE_LIMITS", "message": "c"}]}"#;
const SALESFORCE: &[u8] = br#"{"compositeResponse": [
  {"body": {"id": "001"}, "httpStatusCode": 201, "referenceId": "a"},
  {"body": [{"errorCode": "NOT_FOUND", "message": "x"}], "httpStatusCode": 404, "referenceId": "b"},
  {"body": [{"errorCode": "PROCESSING_HALTED"}], "httpStatusCode": 400, "referenceId": "c"},
  {"body": [{"errorCode": "NOT_FOUND", "message": "x"}], "httpStatusCode": 404, "referenceId": "d"}]}"#;
const META_BATCH: &[u8] = br#"[{"code": 200, "headers": [], "body": "{\"id\":\"1\"}"}, null,
  {"code": 400, "headers": [], "body": "{\"error\":{\"code\":100}}"},
  {"code": 500, "headers": [], "body": "{}"}]"#;
const META_THROTTLED: &[u8] =
    br#"{"error": {"message": "(#17) User request limit reached", "type": "OAuthException", "code": 17}}"#;
const GQL_CUT: &[u8] = br#"{"errors": [{"message": "x", "extensions": {"code": "FORBIDDEN"}}"#;

/// A GraphQL answer of several MiB: `n` orders, with one THROTTLED error first or last.
fn big_graphql(n: usize, errors_first: bool) -> Vec<u8> {
    let order = r#"{"id": "gid://shopify/Order/450789469", "note": "ring the bell"}"#;
    let data = format!(r#""data": {{"orders": [{}]}}"#, vec![order; n].join(","));
    let errors = r#""errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}]"#;
    let body = if errors_first {
        format!("{{{errors}, {data}}}")
    } else {
        format!("{{{data}, {errors}}}")
    };
    body.into_bytes()
}

/// The body curl received for `path`, as sent (no decoding).
fn curl(remedy: &Remedy, path: &str) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-sS", "--fail-with-body", "-o", "-"])
        .arg(format!("http://{}{path}", remedy.proxy))
        .output()
        .expect("curl runs");
    out.stdout
}

fn api_errors(s: &Scrape, source: &str, api_code: &str, code: &str) -> f64 {
    s.get(
        "remedy_upstream_api_errors_total",
        &[("source", source), ("api_code", api_code), ("code", code)],
    )
    .unwrap_or(0.0)
}

#[test]
fn every_pack_is_counted_exactly_and_every_byte_passes_unchanged() {
    let big_first = big_graphql(70_000, true);
    let big_last = big_graphql(70_000, false);
    assert!(big_first.len() > 4 << 20);
    let routes: Vec<(&str, (Answer, Vec<u8>))> = vec![
        ("/tiktok/limit", json(200, None, TIKTOK_LIMIT, 7)),
        ("/tiktok/limit-gz", json(200, Some("gzip"), TIKTOK_LIMIT, 5)),
        ("/tiktok/limit-br", json(200, Some("br"), TIKTOK_LIMIT, 5)),
        ("/tiktok/ok", json(200, None, TIKTOK_OK, 9)),
        ("/gql/unauth", json(200, None, GQL_UNAUTH, 13)),
        ("/gql/unauth-gz", json(200, Some("gzip"), GQL_UNAUTH, 3)),
        ("/gql/cut", json(200, None, GQL_CUT, 8)),
        ("/shop/first", json(200, None, &big_first, 16384)),
        ("/shop/first-gz", json(200, Some("gzip"), &big_first, 16384)),
        ("/shop/last", json(200, None, &big_last, 16384)),
        ("/shop/last-gz", json(200, Some("gzip"), &big_last, 16384)),
        ("/hub/batch", json(207, None, HUBSPOT_207, 50)),
        ("/sf/composite", json(200, Some("gzip"), SALESFORCE, 40)),
        ("/meta/batch", json(200, None, META_BATCH, 30)),
        ("/meta/throttled", json(400, None, META_THROTTLED, 30)),
        ("/plain/limit", json(200, None, TIKTOK_LIMIT, 7)),
    ];
    let mut builder = Upstream::builder();
    for (path, (answer, _)) in &routes {
        builder = builder.route(path, answer.clone());
    }
    let html = Answer::body(&[(TIKTOK_LIMIT, 1)]).header("content-type", "text/html");
    let u = builder.route("/tiktok/html", html).http();
    let remedy = Remedy::start(
        Config::new()
            .source(
                source("tiktok", format!("{}/tiktok", u.url()))
                    .prefix("/tiktok")
                    .set("body_errors", "tiktok"),
            )
            .source(
                source("gql", format!("{}/gql", u.url()))
                    .prefix("/gql")
                    .set("body_errors", "graphql"),
            )
            .source(
                source("shop", format!("{}/shop", u.url()))
                    .prefix("/shop")
                    .set("body_errors", "shopify_graphql"),
            )
            .source(
                source("hub", format!("{}/hub", u.url()))
                    .prefix("/hub")
                    .set("body_errors", "hubspot_batch"),
            )
            .source(
                source("sf", format!("{}/sf", u.url()))
                    .prefix("/sf")
                    .set("body_errors", "salesforce_composite"),
            )
            .source(
                source("meta", format!("{}/meta", u.url()))
                    .prefix("/meta")
                    .set("body_errors", "meta_batch"),
            )
            .source(source("plain", format!("{}/plain", u.url())).prefix("/plain")),
    );
    for (path, (_, sent)) in &routes {
        let got = curl(&remedy, path);
        assert!(
            got == *sent,
            "{path}: {} bytes received of {} sent",
            got.len(),
            sent.len()
        );
    }
    assert_eq!(curl(&remedy, "/tiktok/html"), TIKTOK_LIMIT);
    let s = wait_for(
        "every response counted",
        std::time::Duration::from_secs(10),
        || {
            let s = remedy.scrape();
            let n = s.sum("remedy_upstream_responses_total", &[("origin", "upstream")]);
            (n == routes.len() as f64 + 1.0).then_some(s)
        },
    );

    // TikTok: three rate limits (plain, gzip, br) under 429's remediation with code 200; the
    // OK answer (a nested 40100 is not the answer's code) and the HTML page are not errors.
    assert_eq!(api_errors(&s, "tiktok", "40100", "429"), 3.0);
    assert_eq!(
        s.responses("tiktok", 200, "reduce_concurrency", "upstream"),
        3.0
    );
    assert_eq!(s.responses("tiktok", 200, "none", "upstream"), 2.0);
    // GraphQL: each error once; the response takes the most frequent one's remediation.
    assert_eq!(api_errors(&s, "gql", "UNAUTHENTICATED", "401"), 4.0);
    assert_eq!(api_errors(&s, "gql", "other", "500"), 2.0);
    assert_eq!(
        s.responses("gql", 200, "check_credentials", "upstream"),
        2.0
    );
    // Cut short: counted by its status.
    assert_eq!(s.responses("gql", 200, "none", "upstream"), 1.0);
    // Several MiB: errors first are found plain and compressed; errors past the window not.
    assert_eq!(api_errors(&s, "shop", "THROTTLED", "429"), 2.0);
    assert_eq!(
        s.responses("shop", 200, "reduce_concurrency", "upstream"),
        2.0
    );
    assert_eq!(s.responses("shop", 200, "none", "upstream"), 2.0);
    // HubSpot 207: every failed item counted; the response is a rate limit (2 of 3).
    assert_eq!(api_errors(&s, "hub", "RATE_LIMITS", "429"), 2.0);
    assert_eq!(api_errors(&s, "hub", "VALIDATION_ERROR", "400"), 1.0);
    assert_eq!(
        s.responses("hub", 207, "reduce_concurrency", "upstream"),
        1.0
    );
    // Salesforce composite: the 404s outnumber the 400.
    assert_eq!(api_errors(&s, "sf", "404", "404"), 2.0);
    assert_eq!(api_errors(&s, "sf", "400", "400"), 1.0);
    assert_eq!(
        s.responses("sf", 200, "check_resource_availability", "upstream"),
        1.0
    );
    // Meta: a batch's failed items; a single call rate limited with HTTP 400 and code 17.
    assert_eq!(api_errors(&s, "meta", "400", "400"), 1.0);
    assert_eq!(api_errors(&s, "meta", "500", "500"), 1.0);
    assert_eq!(
        s.responses("meta", 200, "check_request_config", "upstream"),
        1.0
    );
    assert_eq!(api_errors(&s, "meta", "17", "429"), 1.0);
    assert_eq!(
        s.responses("meta", 400, "reduce_concurrency", "upstream"),
        1.0
    );
    // A source without body_errors reads nothing.
    assert_eq!(s.responses("plain", 200, "none", "upstream"), 1.0);
    assert_eq!(
        s.sum("remedy_upstream_api_errors_total", &[("source", "plain")]),
        0.0
    );
}

#[test]
fn own_rules_count_what_they_name() {
    let body =
        br#"{"result": {"status": "throttled"}, "items": [{"s": 503}, {"s": 200}, {"s": 503}]}"#;
    let u = Upstream::builder()
        .route("/r", json(200, None, body, 11).0)
        .http();
    let rules = "{ rules: [ { pointer: /result/status, ok: [ok], errors: { throttled: 429 } }, \
                 { pointer: /items/*/s, errors: http_status } ] }";
    let remedy = Remedy::start(
        Config::new().source(
            source("own", format!("{}/own", u.url()))
                .prefix("/own")
                .set("body_errors", rules),
        ),
    );
    assert_eq!(curl(&remedy, "/own/r"), body);
    let s = wait_for("counted", std::time::Duration::from_secs(10), || {
        let s = remedy.scrape();
        (s.sum("remedy_upstream_responses_total", &[("source", "own")]) == 1.0).then_some(s)
    });
    assert_eq!(api_errors(&s, "own", "throttled", "429"), 1.0);
    assert_eq!(api_errors(&s, "own", "503", "503"), 2.0);
    assert_eq!(s.responses("own", 200, "retry_later", "upstream"), 1.0);
}

#[test]
fn a_gibibyte_json_body_streams_with_flat_memory_under_a_pack() {
    // 1 GiB of orders with the error at the end: read up to the window, then passed on.
    const ORDER: &[u8] = br#"{"id": "gid://shopify/Order/450789469", "note": "ring the bell"},"#;
    const HEAD: &[u8] = br#"{"data": {"orders": ["#;
    const TAIL: &[u8] = br#"{}]}, "errors": [{"extensions": {"code": "THROTTLED"}}]}"#;
    let times = (1u64 << 30) / ORDER.len() as u64;
    let body = Answer::body(&[(HEAD, 1), (ORDER, times), (TAIL, 1)])
        .header("content-type", "application/json");
    let u = Upstream::builder().route("/huge", body).http();
    let remedy = Remedy::start(
        Config::new().source(
            source("shop", u.url())
                .prefix("/shop")
                .set("body_errors", "shopify_graphql"),
        ),
    );
    curl(&remedy, "/shop/warm-up");
    let before = remedy.rss_kib();
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{size_download}"])
        .arg(format!("http://{}/shop/huge", remedy.proxy))
        .output()
        .unwrap();
    let size: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(
        size,
        (HEAD.len() + TAIL.len()) as u64 + times * ORDER.len() as u64
    );
    let peak = remedy.peak_rss_kib();
    assert!(
        peak < before + 16 * 1024,
        "peak RSS {peak} KiB against {before} KiB before the transfer"
    );
    let s = remedy.scrape();
    assert_eq!(s.responses("shop", 200, "none", "upstream"), 2.0);
    assert_eq!(
        s.sum("remedy_upstream_api_errors_total", &[("source", "shop")]),
        0.0
    );
}
