//! The JSON scanner: actson's push parser, fed chunk by chunk, and the path it is at, kept only
//! as far as some rule's pointer still matches it. A container no rule reaches into is skipped
//! (parsed, but not tracked); a value at a rule's pointer is judged by the rule.

use std::borrow::Cow;

use actson::feeder::JsonFeeder;
use actson::options::JsonParserOptionsBuilder;
use actson::{JsonEvent, JsonParser};
use bytes::Bytes;

use super::rules::{Rule, Rules};

/// One bit per rule.
type Mask = u32;

/// Where the scan stands after a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Progress {
    /// All of the chunk was read; the document goes on.
    More,
    /// Every rule names one value and all were read: nothing later can change the answer.
    Settled,
    /// The document ended.
    Complete,
    /// The bytes are not JSON.
    Malformed,
}

/// The chunk being read, shared with the frame it came in.
#[derive(Default)]
struct Feed {
    data: Bytes,
    pos: usize,
    done: bool,
}

impl JsonFeeder for Feed {
    fn has_input(&self) -> bool {
        self.pos < self.data.len()
    }

    fn is_done(&self) -> bool {
        self.done && !self.has_input()
    }

    fn next_input(&mut self) -> Option<u8> {
        let b = self.data.get(self.pos).copied();
        self.pos += usize::from(b.is_some());
        b
    }
}

/// A container on the path: the rules that still match it, and for an array the index of
/// its next element.
struct Level {
    array: bool,
    alive: Mask,
    index: u32,
}

pub(super) struct Scan {
    parser: JsonParser<Feed>,
    levels: Vec<Level>,
    /// Depth inside a container no rule reaches into.
    skipping: u32,
    /// The rules that match the value named by the member name just read.
    named: Mask,
    /// The rules naming one value whose value was read.
    read: Mask,
    started: bool,
}

/// Deepest nesting read; deeper is not an answer any API gives.
const MAX_NESTING: usize = 512;

impl Scan {
    pub(super) fn new() -> Self {
        let options = JsonParserOptionsBuilder::default()
            .with_max_depth(MAX_NESTING)
            .build();
        Scan {
            parser: JsonParser::new_with_options(Feed::default(), options),
            levels: Vec::new(),
            skipping: 0,
            named: 0,
            read: 0,
            started: false,
        }
    }

    /// Reads `chunk`, handing each error found to `found` as `(api_code, status)`.
    pub(super) fn feed(
        &mut self,
        chunk: Bytes,
        rules: &Rules,
        found: &mut dyn FnMut(Cow<'static, str>, u16),
    ) -> Progress {
        self.parser.feeder.data = chunk;
        self.parser.feeder.pos = 0;
        self.run(rules, found)
    }

    /// The body ended: a document still open is truncated.
    pub(super) fn finish(
        &mut self,
        rules: &Rules,
        found: &mut dyn FnMut(Cow<'static, str>, u16),
    ) -> Progress {
        self.parser.feeder.done = true;
        match self.run(rules, found) {
            Progress::More => Progress::Malformed,
            p => p,
        }
    }

    fn run(&mut self, rules: &Rules, found: &mut dyn FnMut(Cow<'static, str>, u16)) -> Progress {
        loop {
            let event = match self.parser.next_event() {
                Ok(Some(JsonEvent::NeedMoreInput)) => return Progress::More,
                Ok(Some(e)) => e,
                Ok(None) => return Progress::Complete,
                Err(_) => return Progress::Malformed,
            };
            if let Some(p) = self.event(event, rules, found) {
                return p;
            }
        }
    }

    fn event(
        &mut self,
        event: JsonEvent,
        rules: &Rules,
        found: &mut dyn FnMut(Cow<'static, str>, u16),
    ) -> Option<Progress> {
        if self.skipping > 0 {
            match event {
                JsonEvent::StartObject | JsonEvent::StartArray => self.skipping += 1,
                JsonEvent::EndObject | JsonEvent::EndArray => {
                    self.skipping -= 1;
                    return self.closed();
                }
                _ => {}
            }
            return None;
        }
        match event {
            JsonEvent::StartObject | JsonEvent::StartArray => {
                let depth = self.levels.len();
                let alive = self.value_mask(rules) & deeper_than(rules, depth);
                if alive == 0 {
                    self.skipping = 1;
                } else {
                    self.levels.push(Level {
                        array: event == JsonEvent::StartArray,
                        alive,
                        index: 0,
                    });
                }
                None
            }
            JsonEvent::EndObject | JsonEvent::EndArray => {
                self.levels.pop();
                self.closed()
            }
            JsonEvent::FieldName => {
                let depth = self.levels.len() - 1;
                let alive = self.levels.last().map_or(0, |l| l.alive);
                let name = self.parser.current_str().unwrap_or_default();
                self.named = select(rules, alive, |r| {
                    r.pointer.get(depth).is_some_and(|s| s.matches_name(name))
                });
                None
            }
            JsonEvent::NeedMoreInput => None,
            scalar => {
                let depth = self.levels.len();
                let at =
                    self.value_mask(rules) & select(rules, Mask::MAX, |r| r.pointer.len() == depth);
                if at != 0 {
                    let text = match scalar {
                        JsonEvent::ValueTrue => "true",
                        JsonEvent::ValueFalse => "false",
                        JsonEvent::ValueNull => "null",
                        _ => self.parser.current_str().unwrap_or_default(),
                    };
                    for (i, rule) in rules.rules.iter().enumerate() {
                        if at & (1 << i) != 0
                            && let Some((code, status)) = rule.judge(text)
                        {
                            found(code, status);
                        }
                    }
                    self.read |= at & singles(rules);
                    if rules.all_single && self.read == singles(rules) {
                        return Some(Progress::Settled);
                    }
                }
                if self.levels.is_empty() {
                    return Some(Progress::Complete);
                }
                None
            }
        }
    }

    /// The rules that match the value starting now: by its member name in an object, by its
    /// index in an array, all of them at the root.
    fn value_mask(&mut self, rules: &Rules) -> Mask {
        let depth = self.levels.len();
        match self.levels.last_mut() {
            None => {
                self.started = true;
                all(rules)
            }
            Some(l) if l.array => {
                let index = l.index;
                l.index = l.index.saturating_add(1);
                select(rules, l.alive, |r| {
                    r.pointer
                        .get(depth - 1)
                        .is_some_and(|s| s.matches_index(index))
                })
            }
            Some(_) => self.named,
        }
    }

    /// A container closed: the document is complete when it was the root.
    fn closed(&self) -> Option<Progress> {
        (self.skipping == 0 && self.levels.is_empty() && self.started).then_some(Progress::Complete)
    }
}

fn all(rules: &Rules) -> Mask {
    select(rules, Mask::MAX, |_| true)
}

fn singles(rules: &Rules) -> Mask {
    select(rules, Mask::MAX, Rule::single)
}

fn deeper_than(rules: &Rules, depth: usize) -> Mask {
    select(rules, Mask::MAX, |r| r.pointer.len() > depth)
}

/// The rules of `among` for which `keep` holds.
fn select(rules: &Rules, among: Mask, keep: impl Fn(&Rule) -> bool) -> Mask {
    let mut m = 0;
    for (i, r) in rules.rules.iter().enumerate() {
        if among & (1 << i) != 0 && keep(r) {
            m |= 1 << i;
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BodyErrorsConfig, RuleConfig, RuleErrors};

    fn pack(name: &str) -> Rules {
        Rules::compile(&BodyErrorsConfig::Pack(name.into()), 1 << 20).unwrap()
    }

    /// Scans `body` cut into chunks of `step` bytes: the errors found and how it ended.
    fn scan(rules: &Rules, body: &str, step: usize) -> (Vec<(String, u16)>, Progress) {
        let mut s = Scan::new();
        let mut errors = Vec::new();
        let mut found = |c: Cow<'static, str>, st| errors.push((c.into_owned(), st));
        for chunk in body.as_bytes().chunks(step.max(1)) {
            match s.feed(Bytes::copy_from_slice(chunk), rules, &mut found) {
                Progress::More => {}
                p => return (errors, p),
            }
        }
        let p = s.finish(rules, &mut found);
        (errors, p)
    }

    #[test]
    fn tiktok_settles_at_its_top_level_code() {
        let r = pack("tiktok");
        let body = r#"{"code": 40100, "message": "Too many requests", "data": {"code": 0}}"#;
        for step in [1, 3, 7, 1000] {
            assert_eq!(
                scan(&r, body, step),
                (vec![("40100".into(), 429)], Progress::Settled),
                "step {step}"
            );
        }
        // A nested `code` is not the answer's.
        let ok = r#"{"data": {"list": [{"code": 40100}]}, "code": 0}"#;
        assert_eq!(scan(&r, ok, 5), (vec![], Progress::Settled));
        // Without a code, the document is read to its end.
        assert_eq!(
            scan(&r, r#"{"a": [1, {"b": 2}]}"#, 4),
            (vec![], Progress::Complete)
        );
    }

    #[test]
    fn graphql_errors_are_each_counted_wherever_they_are() {
        let r = pack("graphql");
        let body = r#"{"data": {"x": {"errors": [{"extensions": {"code": "FORBIDDEN"}}]}},
            "errors": [
              {"message": "a", "extensions": {"code": "UNAUTHENTICATED"}},
              {"message": "b", "extensions": {"code": "UNAUTHENTICATED", "more": [1,2]}},
              {"message": "c", "extensions": {"code": "SOMETHING_ELSE"}},
              {"message": "d", "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"}},
              {"message": "e", "type": "RATE_LIMITED"},
              {"message": "f"}
            ]}"#;
        let (errors, end) = scan(&r, body, 2);
        assert_eq!(end, Progress::Complete);
        assert_eq!(
            errors,
            vec![
                ("UNAUTHENTICATED".into(), 401),
                ("UNAUTHENTICATED".into(), 401),
                ("other".into(), 500),
                ("RATE_LIMITED".into(), 429),
            ]
        );
    }

    #[test]
    fn batches_count_every_failed_item() {
        let meta = pack("meta_batch");
        let body = r#"[{"code": 200, "body": "{}"}, null, {"code": 400, "body": "{\"error\":{\"code\":17}}"},
            {"code": 404}, {"code": 400}]"#;
        assert_eq!(
            scan(&meta, body, 9),
            (
                vec![
                    ("400".into(), 400),
                    ("404".into(), 404),
                    ("400".into(), 400)
                ],
                Progress::Complete
            )
        );
        // A single call's error object, rate limited with HTTP 400.
        let single = r#"{"error": {"message": "(#17) User request limit reached", "code": 17}}"#;
        assert_eq!(
            scan(&meta, single, 6),
            (vec![("17".into(), 429)], Progress::Complete)
        );
        let sf = pack("salesforce_composite");
        let body = r#"{"compositeResponse": [{"body": [{"errorCode": "NOT_FOUND"}], "httpStatusCode": 404},
            {"body": {"id": "001"}, "httpStatusCode": 201}]}"#;
        assert_eq!(
            scan(&sf, body, 13),
            (vec![("404".into(), 404)], Progress::Complete)
        );
    }

    #[test]
    fn indexes_and_escaped_names_match_as_rfc_6901_says() {
        let own = Rules::compile(
            &BodyErrorsConfig::Rules(vec![RuleConfig {
                pointer: "/a~1b/1/s".into(),
                errors: RuleErrors::Table(vec![("x".into(), 503)]),
                ok: vec![],
                other: None,
            }]),
            1 << 20,
        )
        .unwrap();
        let body = r#"{"a/b": [{"s": "x"}, {"s": "x"}, {"s": "x"}]}"#;
        assert_eq!(
            scan(&own, body, 3),
            (vec![("x".into(), 503)], Progress::Settled)
        );
    }

    #[test]
    fn what_is_not_json_or_ends_early_is_malformed() {
        let r = pack("graphql");
        for body in [
            "<html>502 Bad Gateway</html>",
            r#"{"errors": [{"extensions": {"code": "FORBIDDEN"}}"#,
            r#"{"errors": [}"#,
            "",
        ] {
            assert_eq!(scan(&r, body, 4).1, Progress::Malformed, "{body:?}");
        }
    }
}
