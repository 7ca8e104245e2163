//! Whatever text the config loader is given, it yields a config or an error that names a line
//! of the file: never a panic, never an error without a place.

use proptest::prelude::*;
use serde_yaml::{Mapping, Value};

/// Keys remedy knows, so that generated documents reach deep into validation.
const KEYS: &[&str] = &[
    "proxy",
    "admin",
    "sources",
    "name",
    "upstream",
    "match",
    "path_prefix",
    "hosts",
    "timeouts",
    "connect",
    "response_header",
    "idle",
    "listen",
    "max_in_flight",
    "ca_file",
    "preserve_host",
    "alerts",
    "overrides",
    "threshold",
    "for",
    "window",
    "group_by",
    "shutdown",
    "drain_timeout",
    "linger",
    "reload",
    "watch_interval",
    "catalog",
    "codes",
    "remediation",
    "runtime",
    "worker_threads",
    "max_connections",
    "max_headers",
    "max_header_bytes",
    "header_read_timeout",
    "min_requests",
    "min_rate",
    "severity",
    "keep_firing_for",
    "log",
    "level",
    "format",
    "unknown_key",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        (-1e6f64..1e6).prop_map(|f| Value::Number(f.into())),
        prop_oneof![
            Just("http://127.0.0.1:9".to_owned()),
            Just("https://api.example.com/v1".to_owned()),
            Just("127.0.0.1:0".to_owned()),
            Just("/api".to_owned()),
            Just("5s".to_owned()),
            Just("0s".to_owned()),
            Just("retry_later".to_owned()),
            Just("critical".to_owned()),
            "[ -~]{0,12}",
        ]
        .prop_map(Value::String),
    ]
}

fn document() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Sequence),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|pairs| {
                let mut m = Mapping::new();
                for (k, v) in pairs {
                    m.insert(Value::String(k.to_owned()), v);
                }
                Value::Mapping(m)
            }),
        ]
    })
}

/// The lines of `bytes` as remedy's YAML parser (libyaml, YAML 1.1) counts them: CRLF, a lone
/// CR, LF, and the Unicode breaks NEL, LS and PS each end one.
fn yaml_lines(bytes: &[u8]) -> usize {
    let (mut lines, mut i) = (1, 0);
    while i < bytes.len() {
        let step = match bytes[i..] {
            [b'\r', b'\n', ..] | [0xC2, 0x85, ..] => 2,
            [b'\r' | b'\n', ..] => 1,
            [0xE2, 0x80, 0xA8 | 0xA9, ..] => 3,
            _ => {
                i += 1;
                continue;
            }
        };
        lines += 1;
        i += step;
    }
    lines
}

/// An unterminated string ends at the end of the file: the error names the last line, counted
/// across every kind of line break the parser knows.
#[test]
fn every_line_break_the_parser_knows_is_counted() {
    for text in [
        "\"\n\n",
        "\"\r\r",
        "\"\r\n\r\n",
        "\"\u{85}\u{85}\u{85}",
        "\"\u{2028}\u{2028}",
        "\"\u{2029}",
    ] {
        let e = remedy::config::parse(text, "remedy.yaml").unwrap_err();
        assert_eq!(e.line, Some(yaml_lines(text.as_bytes())), "{text:?}: {e}");
    }
}

/// Checks the loader's answer for `text`.
fn judged(text: &str) -> Result<(), TestCaseError> {
    if let Err(e) = remedy::config::parse(text, "remedy.yaml") {
        let lines = yaml_lines(text.as_bytes());
        let line = e.line;
        prop_assert!(
            line.is_some_and(|l| (1..=lines + 1).contains(&l)),
            "no line of {lines} named: {e}\n---\n{text}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn any_yaml_document_is_a_config_or_an_error_with_a_line(doc in document()) {
        let text = serde_yaml::to_string(&doc).unwrap();
        judged(&text)?;
    }

    #[test]
    fn a_source_with_random_fields_is_a_config_or_an_error_with_a_line(
        fields in prop::collection::vec((prop::sample::select(KEYS), document()), 0..6)
    ) {
        let mut source = Mapping::new();
        source.insert("name".into(), "api".into());
        source.insert("upstream".into(), "http://127.0.0.1:9".into());
        for (k, v) in fields {
            source.insert(Value::String(k.to_owned()), v);
        }
        let mut root = Mapping::new();
        root.insert("sources".into(), Value::Sequence(vec![Value::Mapping(source)]));
        judged(&serde_yaml::to_string(&root).unwrap())?;
    }

    #[test]
    fn arbitrary_text_is_a_config_or_an_error_with_a_line(text in "(?s).{0,300}") {
        judged(&text)?;
    }

    #[test]
    fn arbitrary_bytes_in_a_file_are_an_error_with_a_line(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("remedy.yaml");
        std::fs::write(&path, &bytes).unwrap();
        if let Err(e) = remedy::config::load(&path) {
            let lines = yaml_lines(&bytes);
            prop_assert!(
                e.line.is_some_and(|l| (1..=lines + 1).contains(&l)),
                "no line named: {e}"
            );
        }
    }
}
