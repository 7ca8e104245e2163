use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use proptest::prelude::*;

use super::BodyErrorsConfig;
use super::*;
use super::{rules, scan};

fn rules(pack: &str, max_bytes: usize) -> Arc<Rules> {
    Arc::new(Rules::compile(&BodyErrorsConfig::Pack(pack.into()), max_bytes).unwrap())
}

fn headers(content_type: &str, coding: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_TYPE, content_type.parse().unwrap());
    if let Some(c) = coding {
        h.insert(CONTENT_ENCODING, c.parse().unwrap());
    }
    h
}

fn encode(coding: &str, body: &[u8]) -> Vec<u8> {
    match coding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(body).unwrap();
            e.finish().unwrap()
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(body).unwrap();
            e.finish().unwrap()
        }
        "raw-deflate" => {
            let mut e =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(body).unwrap();
            e.finish().unwrap()
        }
        "br" => {
            let mut out = Vec::new();
            {
                let mut e = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                e.write_all(body).unwrap();
            }
            out
        }
        _ => body.to_vec(),
    }
}

/// Reads `sent` (coded as `coding`) in frames of `step` bytes; the errors by code, and whether
/// the reader finished before the body did.
fn read(
    rules: &Arc<Rules>,
    coding: Option<&str>,
    sent: &[u8],
    step: usize,
) -> (Vec<(String, u16, u32)>, bool) {
    let header = coding.map(|c| if c == "raw-deflate" { "deflate" } else { c });
    let mut r = Reader::for_response(rules, StatusCode::OK, &headers("application/json", header))
        .expect("a JSON response is read");
    let list = |e: ApiErrors| {
        e.iter()
            .map(|x| (x.code.to_string(), x.status, x.count))
            .collect::<Vec<_>>()
    };
    for frame in sent.chunks(step.max(1)) {
        if let Read::Done(e) = r.read(&Bytes::copy_from_slice(frame)) {
            return (list(e), true);
        }
    }
    (list(r.finish()), false)
}

/// Batch answers state each item's HTTP status: 4xx and 5xx are errors, and nothing else is,
/// so that an API's odd value (600, 999) cannot add a series.
#[test]
fn item_statuses_count_from_400_to_599_only() {
    for (pack, body, expected) in [
        (
            "meta_batch",
            r#"[{"code":200},{"code":400},{"code":599},{"code":600},{"code":999},{"code":399}]"#,
            &[400, 599][..],
        ),
        (
            "salesforce_composite",
            r#"{"compositeResponse":[{"httpStatusCode":404},{"httpStatusCode":503},{"httpStatusCode":600},{"httpStatusCode":1000},{"httpStatusCode":201}]}"#,
            &[404, 503][..],
        ),
    ] {
        let (found, _) = read(&rules(pack, 64 << 10), None, body.as_bytes(), 7);
        let statuses: Vec<u16> = found.iter().map(|(_, s, _)| *s).collect();
        assert_eq!(statuses, expected, "{pack}: {found:?}");
    }
}

#[test]
fn only_json_in_a_known_coding_is_read() {
    let r = rules("tiktok", 65536);
    let ok = StatusCode::OK;
    for ct in [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/graphql-response+json",
        "text/json",
        "text/javascript; charset=UTF-8",
    ] {
        assert!(
            Reader::for_response(&r, ok, &headers(ct, None)).is_some(),
            "{ct}"
        );
    }
    for ct in [
        "text/html",
        "application/grpc",
        "application/x-ndjson",
        "json",
        "text/plain",
    ] {
        assert!(
            Reader::for_response(&r, ok, &headers(ct, None)).is_none(),
            "{ct}"
        );
    }
    assert!(Reader::for_response(&r, ok, &HeaderMap::new()).is_none());
    for coding in ["gzip", "x-gzip", "deflate", "br", "identity"] {
        let h = headers("application/json", Some(coding));
        assert!(Reader::for_response(&r, ok, &h).is_some(), "{coding}");
    }
    for coding in ["zstd", "compress", "gzip, br"] {
        let h = headers("application/json", Some(coding));
        assert!(Reader::for_response(&r, ok, &h).is_none(), "{coding}");
    }
    let h = headers("application/json", None);
    assert!(Reader::for_response(&r, StatusCode::NO_CONTENT, &h).is_none());
    assert!(Reader::for_response(&r, StatusCode::NOT_MODIFIED, &h).is_none());
    assert!(Reader::for_response(&r, StatusCode::TOO_MANY_REQUESTS, &h).is_some());
}

#[test]
fn every_coding_gives_the_same_answer_in_any_frame_size() {
    let tiktok = rules("tiktok", 65536);
    let graphql = rules("graphql", 65536);
    let tt = br#"{"code": 40100, "message": "Too many requests", "request_id": "x", "data": {}}"#;
    let gql =
        br#"{"data": null, "errors": [{"message": "no", "extensions": {"code": "UNAUTHENTICATED"}},
        {"message": "no", "extensions": {"code": "UNAUTHENTICATED"}}]}"#;
    for coding in [
        None,
        Some("gzip"),
        Some("deflate"),
        Some("raw-deflate"),
        Some("br"),
    ] {
        let (tt_sent, gql_sent) = (
            encode(coding.unwrap_or(""), tt),
            encode(coding.unwrap_or(""), gql),
        );
        for step in [1, 2, 5, 64, 100_000] {
            assert_eq!(
                read(&tiktok, coding, &tt_sent, step).0,
                [("40100".into(), 429, 1)],
                "{coding:?} step {step}"
            );
            assert_eq!(
                read(&graphql, coding, &gql_sent, step),
                (vec![("UNAUTHENTICATED".into(), 401, 2)], true),
                "{coding:?} step {step}"
            );
        }
    }
}

/// A success body of `items` records, with `errors` put first or last.
fn big_graphql(items: usize, errors_first: bool) -> Vec<u8> {
    let data = format!(
        r#""data": {{"orders": [{}]}}"#,
        vec![
            r#"{"id": "gid://shopify/Order/1", "note": "a note of some length to fill the page"}"#;
            items
        ]
        .join(",")
    );
    let errors = r#""errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}]"#;
    if errors_first {
        format!("{{{errors}, {data}}}").into_bytes()
    } else {
        format!("{{{data}, {errors}}}").into_bytes()
    }
}

#[test]
fn the_window_bounds_what_is_read_plain_or_compressed() {
    let shopify = rules("shopify_graphql", 65536);
    // Several MiB: errors first are found, in the first frames; errors last are past the
    // window, and what the window held was well formed, so no error is counted.
    let first = big_graphql(40_000, true);
    let last = big_graphql(40_000, false);
    assert!(first.len() > 3 << 20);
    for coding in [None, Some("gzip"), Some("br"), Some("deflate")] {
        let c = coding.unwrap_or("");
        let (errors, early) = read(&shopify, coding, &encode(c, &first), 16384);
        assert_eq!(errors, [("THROTTLED".into(), 429, 1)], "{coding:?}");
        assert!(early, "{coding:?}: reading stopped at the window");
        let (errors, early) = read(&shopify, coding, &encode(c, &last), 16384);
        assert_eq!(errors, [], "{coding:?}");
        assert!(early, "{coding:?}: reading stopped at the window");
    }
    // With a window the size of the body, the errors at its end are found.
    let wide = rules("shopify_graphql", 8 << 20);
    assert_eq!(
        read(&wide, Some("gzip"), &encode("gzip", &last), 16384).0,
        [("THROTTLED".into(), 429, 1)]
    );
}

#[test]
fn a_compression_bomb_stops_at_the_window() {
    // 1 GiB of spaces inside an array compresses to about a megabyte in gzip; the reader
    // stops after the window's worth, without inflating the rest.
    let graphql = rules("graphql", 65536);
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(b"{\"errors\": [").unwrap();
    let spaces = vec![b' '; 1 << 20];
    for _ in 0..64 {
        e.write_all(&spaces).unwrap();
    }
    let sent = e.finish().unwrap();
    let mut r = Reader::for_response(
        &graphql,
        StatusCode::OK,
        &headers("application/json", Some("gzip")),
    )
    .unwrap();
    let mut frames = 0;
    for frame in sent.chunks(16384) {
        frames += 1;
        if let Read::Done(e) = r.read(&Bytes::copy_from_slice(frame)) {
            assert!(e.is_empty());
            break;
        }
    }
    assert!(
        frames < 10,
        "stopped after {frames} frames of {}",
        sent.len() / 16384
    );
}

#[test]
fn truncated_corrupt_and_not_json_bodies_count_no_errors() {
    let graphql = rules("graphql", 65536);
    let body = br#"{"errors": [{"extensions": {"code": "FORBIDDEN"}}]}"#;
    // Cut short: the document never closes.
    assert_eq!(read(&graphql, None, &body[..body.len() - 2], 7).0, []);
    // A gzip stream cut short, and one with a corrupt byte.
    let gz = encode("gzip", body);
    assert_eq!(read(&graphql, Some("gzip"), &gz[..gz.len() / 2], 7).0, []);
    let mut bad = gz.clone();
    bad[12] ^= 0xff;
    assert_eq!(read(&graphql, Some("gzip"), &bad, 7).0, []);
    // Not gzip at all under a gzip header.
    assert_eq!(read(&graphql, Some("gzip"), body, 7).0, []);
    assert_eq!(read(&graphql, None, b"<html>oops</html>", 3).0, []);
}

/// Frames of `body` cut at the given points.
fn cut(body: &[u8], cuts: &[usize]) -> Vec<Bytes> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    points.sort_unstable();
    let mut frames = Vec::new();
    let mut at = 0;
    for p in points.into_iter().chain([body.len()]) {
        frames.push(Bytes::copy_from_slice(&body[at..p]));
        at = p;
    }
    frames
}

fn arbitrary_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        prop_oneof![
            "[a-zA-Z_]{0,12}",
            Just("UNAUTHENTICATED".to_string()),
            Just("THROTTLED".to_string()),
            Just("40100".to_string()),
            ".{0,8}",
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("errors".to_string()),
                    Just("extensions".to_string()),
                    Just("code".to_string()),
                    Just("category".to_string()),
                    "[a-z]{1,6}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Reads `frames` under every pack, checking each frame is left as it was.
fn read_every_pack(coding: Option<&str>, frames: &[Bytes], max_bytes: usize) {
    for pack in packs::PACKS {
        let r = rules(pack.name, max_bytes);
        let h = headers("application/json", coding);
        let Some(mut reader) = Reader::for_response(&r, StatusCode::OK, &h) else {
            continue;
        };
        let mut done = false;
        for f in frames {
            let before = f.clone();
            if !done && matches!(reader.read(f), Read::Done(_)) {
                done = true;
            }
            assert_eq!(*f, before);
        }
        if !done {
            let _ = reader.finish();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn arbitrary_json_in_arbitrary_frames_never_panics(
        doc in arbitrary_json(),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
        window in 1024usize..4096,
    ) {
        let body = serde_json::to_vec(&doc).unwrap();
        read_every_pack(None, &cut(&body, &cuts), window);
        let gz = encode("gzip", &body);
        read_every_pack(Some("gzip"), &cut(&gz, &cuts), window);
        let br = encode("br", &body);
        read_every_pack(Some("br"), &cut(&br, &cuts), window);
    }

    #[test]
    fn arbitrary_bytes_under_any_coding_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..4096),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let frames = cut(&body, &cuts);
        for coding in [None, Some("gzip"), Some("deflate"), Some("br")] {
            read_every_pack(coding, &frames, 1024);
        }
    }

    #[test]
    fn arbitrary_compressed_windows_never_panic(
        doc in arbitrary_json(),
        flip in any::<(usize, u8)>(),
        keep in any::<usize>(),
    ) {
        // A compressed body, with one byte changed and cut anywhere.
        let body = serde_json::to_vec(&doc).unwrap();
        for coding in ["gzip", "deflate", "br"] {
            let mut sent = encode(coding, &body);
            let at = flip.0 % sent.len();
            sent[at] ^= flip.1;
            sent.truncate(keep % (sent.len() + 1));
            read_every_pack(Some(coding), &cut(&sent, &[keep / 3, keep / 7]), 1024);
        }
    }
}

#[test]
fn errors_found_match_a_full_parse() {
    // What the streaming scan counts is what a whole-document parse finds at the pointer.
    let graphql = rules("graphql", 1 << 20);
    let mut body = String::from(
        r#"{"data": {"a": [1, 2, {"errors": [{"extensions": {"code": "X"}}]}]}, "errors": ["#,
    );
    let codes = [
        "UNAUTHENTICATED",
        "FORBIDDEN",
        "UNAUTHENTICATED",
        "NEW_CODE",
        "BAD_USER_INPUT",
    ];
    body.push_str(
        &codes
            .iter()
            .map(|c| format!(r#"{{"message": "m", "extensions": {{"code": "{c}"}}}}"#))
            .collect::<Vec<_>>()
            .join(","),
    );
    body.push_str("]}");
    let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let whole = parsed["errors"].as_array().unwrap().len() as u32;
    let (errors, _) = read(&graphql, Some("gzip"), &encode("gzip", body.as_bytes()), 11);
    assert_eq!(errors.iter().map(|e| e.2).sum::<u32>(), whole);
    assert_eq!(
        errors,
        [
            ("UNAUTHENTICATED".into(), 401, 2),
            ("FORBIDDEN".into(), 403, 1),
            ("other".into(), 500, 1),
            ("BAD_USER_INPUT".into(), 400, 1)
        ]
    );
}

/// The values at `pointer` in `v`, found the slow way: a whole-document walk.
fn values_at<'v>(
    v: &'v serde_json::Value,
    pointer: &[rules::Seg],
    out: &mut Vec<&'v serde_json::Value>,
) {
    let Some((seg, rest)) = pointer.split_first() else {
        out.push(v);
        return;
    };
    match (seg, v) {
        (rules::Seg::Each, serde_json::Value::Array(items)) => {
            items.iter().for_each(|i| values_at(i, rest, out));
        }
        (rules::Seg::Key(_, Some(index)), serde_json::Value::Array(items)) => {
            if let Some(i) = items.get(*index as usize) {
                values_at(i, rest, out);
            }
        }
        (rules::Seg::Key(name, _), serde_json::Value::Object(m)) => {
            if let Some(i) = m.get(&**name) {
                values_at(i, rest, out);
            }
        }
        _ => {}
    }
}

/// The errors a whole-document parse finds under `rules`, sorted.
fn reference(rules: &Rules, doc: &serde_json::Value) -> Vec<(String, u16)> {
    let mut found = Vec::new();
    for r in &rules.rules {
        let mut at = Vec::new();
        values_at(doc, &r.pointer, &mut at);
        for v in at {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Object(_) | serde_json::Value::Array(_) => continue,
                other => other.to_string(),
            };
            if let Some((code, status)) = r.judge(text.as_bytes()) {
                found.push((code.into_owned(), status));
            }
            if r.single() {
                break;
            }
        }
    }
    found.sort();
    found
}

/// The errors the streaming scan finds in `frames`, sorted, and how it ended.
fn streamed(rules: &Rules, frames: &[Bytes]) -> (Vec<(String, u16)>, scan::Progress) {
    let mut s = scan::Scan::new();
    let mut found = Vec::new();
    let mut add = |c: std::borrow::Cow<'static, str>, st: u16| found.push((c.into_owned(), st));
    let mut end = scan::Progress::More;
    for f in frames {
        end = s.feed(f, rules, &mut add);
        if end != scan::Progress::More {
            break;
        }
    }
    if end == scan::Progress::More {
        end = s.finish(rules, &mut add);
    }
    found.sort();
    (found, end)
}

fn own_rules() -> Rules {
    use super::{RuleConfig, RuleErrors};
    let rule = |pointer: &str, errors: RuleErrors, other| RuleConfig {
        pointer: pointer.into(),
        ok: match errors {
            RuleErrors::HttpStatus => vec![],
            RuleErrors::Table(_) => vec!["0".into()],
        },
        errors,
        other,
    };
    Rules::compile(
        &BodyErrorsConfig::Rules(vec![
            rule(
                "/code",
                RuleErrors::Table(vec![("40100".into(), 429)]),
                Some(400),
            ),
            rule("/errors/1/code", RuleErrors::Table(vec![]), Some(503)),
            rule("/*/*/code", RuleErrors::HttpStatus, None),
            rule(
                "/a~1b/errors/*",
                RuleErrors::Table(vec![("true".into(), 403)]),
                None,
            ),
        ]),
        1 << 20,
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever the document and wherever the frames are cut, the streaming scan finds what a
    /// whole-document parse finds, compact or pretty-printed.
    #[test]
    fn the_scan_finds_what_a_whole_parse_finds(
        doc in arbitrary_json(),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
        pretty in any::<bool>(),
    ) {
        let body = if pretty {
            serde_json::to_vec_pretty(&doc).unwrap()
        } else {
            serde_json::to_vec(&doc).unwrap()
        };
        let frames = cut(&body, &cuts);
        let mut all: Vec<Rules> = packs::PACKS
            .iter()
            .map(|p| Rules::compile(&BodyErrorsConfig::Pack(p.name.into()), 1 << 20).unwrap())
            .collect();
        all.push(own_rules());
        for rules in &all {
            let (found, end) = streamed(rules, &frames);
            prop_assert!(
                matches!(end, scan::Progress::Complete | scan::Progress::Settled),
                "{end:?} for {}", String::from_utf8_lossy(&body)
            );
            prop_assert_eq!(found, reference(rules, &doc), "{}", String::from_utf8_lossy(&body));
        }
    }

    /// Bytes serde_json accepts as a document are accepted, with the same findings; bytes it
    /// rejects as cut short are never taken for a complete document.
    #[test]
    fn arbitrary_bytes_are_judged_as_serde_json_judges_them(
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            prop::collection::vec(prop::sample::select(b"{}[]:,\" 0123456789-+.eEtrufalsn\\ucode".to_vec()), 0..64),
        ],
    ) {
        let rules = own_rules();
        let (found, end) = streamed(&rules, &[Bytes::from(body.clone())]);
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(doc) => {
                prop_assert!(matches!(end, scan::Progress::Complete | scan::Progress::Settled), "{end:?}");
                prop_assert_eq!(found, reference(&rules, &doc));
            }
            Err(e) if e.is_eof() => {
                prop_assert_ne!(end, scan::Progress::Complete);
            }
            Err(_) => {}
        }
    }
}
