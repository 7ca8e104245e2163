//! The JSON scanner: a resumable tokenizer fed chunk by chunk, checking the grammar as it goes,
//! and the path it is at, kept only as far as some rule's pointer still matches it. Inside a
//! container no rule reaches into, only the grammar is checked; a string's contents are
//! skipped with `memchr`, and its text is kept only where a rule may need it. A value at a
//! rule's pointer is judged by the rule.
//!
//! What it accepts is what `serde_json` accepts, less two checks the answer does not depend
//! on: control characters inside strings and the pairing of `\u` surrogates. Reading ends
//! when the document does; bytes after it are not read.

use std::borrow::Cow;

use memchr::memchr2;

use super::rules::{Mask, Rule, Rules};

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

/// What the grammar allows next, outside a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Value,
    /// After `[`.
    ValueOrClose,
    /// After `{`.
    KeyOrClose,
    /// After `,` in an object.
    Key,
    Colon,
    CommaOrClose,
}

/// The token being read, which a chunk may cut anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    Between,
    /// Inside a string (a member name when `key`), after a backslash when `escape`.
    Str {
        key: bool,
        escape: bool,
    },
    /// The hex digits of a `\u` escape still to come.
    Hex {
        key: bool,
        left: u8,
        code: u16,
    },
    Number(Num),
    /// The rest of `true`, `false` or `null`.
    Literal(&'static [u8]),
}

/// Where a number is in JSON's grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    E,
    ESign,
    Exp,
}

impl Num {
    fn next(self, b: u8) -> Option<Num> {
        use Num::*;
        Some(match (self, b) {
            (Minus, b'0') => Zero,
            (Minus, b'1'..=b'9') => Int,
            (Int, b'0'..=b'9') => Int,
            (Zero | Int, b'.') => Dot,
            (Zero | Int | Frac, b'e' | b'E') => E,
            (Dot | Frac, b'0'..=b'9') => Frac,
            (E, b'+' | b'-') => ESign,
            (E | ESign | Exp, b'0'..=b'9') => Exp,
            _ => return None,
        })
    }

    fn complete(self) -> bool {
        matches!(self, Num::Zero | Num::Int | Num::Frac | Num::Exp)
    }
}

/// A container on the path no rule has left: the rules that still match it, and for an array
/// the index of its next element.
struct Level {
    array: bool,
    alive: Mask,
    index: u32,
}

/// Deepest nesting read; deeper is not an answer any API gives.
const MAX_NESTING: usize = 512;

/// Most bytes of a string or number kept for a rule: longer is no value a rule lists.
const MAX_TEXT: usize = 256;

pub(super) struct Scan {
    /// Every open container, `true` for an array.
    open: Vec<bool>,
    /// The open containers some rule still reaches into: a prefix of `open`.
    levels: Vec<Level>,
    expect: Expect,
    lex: Lex,
    /// The rules that match the value named by the member name just read.
    named: Mask,
    /// The rules the scalar being read is at the pointer of.
    at: Mask,
    /// Whether the current token's text is kept: a member name on the path, a value at a
    /// pointer.
    keep: bool,
    text: Vec<u8>,
    /// The rules naming one value whose value was read.
    read: Mask,
}

/// Where the errors found go.
type Found<'f> = &'f mut dyn FnMut(Cow<'static, str>, u16);

impl Scan {
    pub(super) fn new() -> Self {
        Scan {
            open: Vec::new(),
            levels: Vec::new(),
            expect: Expect::Value,
            lex: Lex::Between,
            named: 0,
            at: 0,
            keep: false,
            text: Vec::new(),
            read: 0,
        }
    }

    /// Reads `chunk`, handing each error found to `found` as `(api_code, status)`.
    pub(super) fn feed(&mut self, chunk: &[u8], rules: &Rules, found: Found<'_>) -> Progress {
        let mut i = 0;
        while i < chunk.len() {
            let step = match self.lex {
                Lex::Between => {
                    // Punctuation and whitespace in one loop, until a token starts.
                    let mut j = i;
                    loop {
                        if j == chunk.len() {
                            break Ok(j);
                        }
                        if let Err(p) = self.between(chunk[j], rules) {
                            break Err(p);
                        }
                        j += 1;
                        if self.lex != Lex::Between {
                            break Ok(j);
                        }
                    }
                }
                Lex::Str { key, escape: false } => {
                    let rest = &chunk[i..];
                    // Most strings in API answers are short: a plain look at the first bytes
                    // before memchr's vector search.
                    match string_stop(rest) {
                        None => {
                            self.keep_text(rest);
                            Ok(chunk.len())
                        }
                        Some(j) => {
                            self.keep_text(&rest[..j]);
                            if rest[j] == b'"' {
                                self.lex = Lex::Between;
                                self.string_end(key, rules, found).map(|()| i + j + 1)
                            } else {
                                self.lex = Lex::Str { key, escape: true };
                                Ok(i + j + 1)
                            }
                        }
                    }
                }
                Lex::Str { key, escape: true } => self.escaped(chunk[i], key).map(|()| i + 1),
                Lex::Hex { key, left, code } => {
                    self.hex_digit(chunk[i], key, left, code).map(|()| i + 1)
                }
                Lex::Number(mut n) => {
                    let mut j = i;
                    while let Some(next) = chunk.get(j).and_then(|b| n.next(*b)) {
                        n = next;
                        j += 1;
                    }
                    self.keep_text(&chunk[i..j]);
                    self.lex = Lex::Number(n);
                    if j == chunk.len() {
                        Ok(j)
                    } else if n.complete() {
                        // The byte that ends the number is read as what follows it.
                        self.lex = Lex::Between;
                        self.scalar_end(rules, found).map(|()| j)
                    } else {
                        return Progress::Malformed;
                    }
                }
                Lex::Literal(rest) => {
                    if chunk[i] != rest[0] {
                        return Progress::Malformed;
                    }
                    if rest.len() > 1 {
                        self.lex = Lex::Literal(&rest[1..]);
                        Ok(i + 1)
                    } else {
                        self.lex = Lex::Between;
                        self.scalar_end(rules, found).map(|()| i + 1)
                    }
                }
            };
            match step {
                Ok(next) => i = next,
                Err(p) => return p,
            }
        }
        Progress::More
    }

    /// The byte after a backslash in a string.
    fn escaped(&mut self, b: u8, key: bool) -> Result<(), Progress> {
        let decoded = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 8,
            b'f' => 12,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                self.lex = Lex::Hex {
                    key,
                    left: 4,
                    code: 0,
                };
                return Ok(());
            }
            _ => return Err(Progress::Malformed),
        };
        self.keep_text(&[decoded]);
        self.lex = Lex::Str { key, escape: false };
        Ok(())
    }

    /// One hex digit of a `\u` escape, `left` of them still to come before it.
    fn hex_digit(&mut self, b: u8, key: bool, left: u8, code: u16) -> Result<(), Progress> {
        let d = (b as char).to_digit(16).ok_or(Progress::Malformed)?;
        let code = code << 4 | d as u16;
        self.lex = if left > 1 {
            Lex::Hex {
                key,
                left: left - 1,
                code,
            }
        } else {
            // A surrogate half is kept as U+FFFD: no rule lists one.
            let c = char::from_u32(code.into()).unwrap_or('\u{fffd}');
            self.keep_text(c.encode_utf8(&mut [0; 4]).as_bytes());
            Lex::Str { key, escape: false }
        };
        Ok(())
    }

    /// The body ended: a number at the root ends with it; anything else still open is cut
    /// short.
    pub(super) fn finish(&mut self, rules: &Rules, found: Found<'_>) -> Progress {
        if let Lex::Number(n) = self.lex
            && n.complete()
        {
            self.lex = Lex::Between;
            if let Err(p) = self.scalar_end(rules, found) {
                return p;
            }
        }
        Progress::Malformed
    }

    /// Outside a token: whitespace, punctuation, or the start of the next token.
    fn between(&mut self, b: u8, rules: &Rules) -> Result<(), Progress> {
        if matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            return Ok(());
        }
        let in_array = self.open.last().copied();
        match (self.expect, b) {
            (Expect::ValueOrClose, b']') | (Expect::KeyOrClose, b'}') => self.close(),
            (Expect::CommaOrClose, b']') if in_array == Some(true) => self.close(),
            (Expect::CommaOrClose, b'}') if in_array == Some(false) => self.close(),
            (Expect::CommaOrClose, b',') => {
                self.expect = if in_array == Some(true) {
                    Expect::Value
                } else {
                    Expect::Key
                };
                Ok(())
            }
            (Expect::Colon, b':') => {
                self.expect = Expect::Value;
                Ok(())
            }
            (Expect::KeyOrClose | Expect::Key, b'"') => {
                // A member name is kept while its object is on the path.
                self.keep = self.tracking();
                self.text.clear();
                self.lex = Lex::Str {
                    key: true,
                    escape: false,
                };
                Ok(())
            }
            (Expect::Value | Expect::ValueOrClose, _) => self.value_start(b, rules),
            _ => Err(Progress::Malformed),
        }
    }

    /// The first byte of a value.
    fn value_start(&mut self, b: u8, rules: &Rules) -> Result<(), Progress> {
        let depth = self.open.len();
        let mask = if self.tracking() {
            self.value_mask(rules)
        } else {
            0
        };
        match b {
            b'{' | b'[' => {
                if depth >= MAX_NESTING {
                    return Err(Progress::Malformed);
                }
                let array = b == b'[';
                self.open.push(array);
                let alive = mask & deeper(rules, depth);
                if alive != 0 {
                    self.levels.push(Level {
                        array,
                        alive,
                        index: 0,
                    });
                }
                self.expect = if array {
                    Expect::ValueOrClose
                } else {
                    Expect::KeyOrClose
                };
                return Ok(());
            }
            _ => {}
        }
        self.at = mask & at_depth(rules, depth);
        self.keep = self.at != 0;
        self.text.clear();
        self.lex = match b {
            b'"' => Lex::Str {
                key: false,
                escape: false,
            },
            b'-' => Lex::Number(Num::Minus),
            b'0' => Lex::Number(Num::Zero),
            b'1'..=b'9' => Lex::Number(Num::Int),
            b't' => Lex::Literal(b"rue"),
            b'f' => Lex::Literal(b"alse"),
            b'n' => Lex::Literal(b"ull"),
            _ => return Err(Progress::Malformed),
        };
        if matches!(self.lex, Lex::Number(_) | Lex::Literal(_)) {
            self.keep_text(&[b]);
        }
        Ok(())
    }

    fn string_end(&mut self, key: bool, rules: &Rules, found: Found<'_>) -> Result<(), Progress> {
        if !key {
            return self.scalar_end(rules, found);
        }
        self.named = match self.levels.last() {
            Some(l) if self.keep => {
                let depth = self.open.len() - 1;
                let name = &self.text;
                select(rules, l.alive, |r| {
                    r.pointer.get(depth).is_some_and(|s| s.matches_name(name))
                })
            }
            _ => 0,
        };
        self.expect = Expect::Colon;
        Ok(())
    }

    /// A string, number or literal value ended: judged when it is at a rule's pointer.
    fn scalar_end(&mut self, rules: &Rules, found: Found<'_>) -> Result<(), Progress> {
        if self.at != 0 {
            // Longer than any value a rule lists: judged as the empty value.
            let text: &[u8] = if self.text.len() > MAX_TEXT {
                b""
            } else {
                &self.text
            };
            for (i, rule) in rules.rules.iter().enumerate() {
                if self.at & (1 << i) != 0
                    && let Some((code, status)) = rule.judge(text)
                {
                    found(code, status);
                }
            }
            self.read |= self.at & rules.singles;
            self.at = 0;
            if rules.all_single && self.read == rules.singles {
                return Err(Progress::Settled);
            }
        }
        self.value_end()
    }

    fn close(&mut self) -> Result<(), Progress> {
        self.open.pop();
        if self.levels.len() > self.open.len() {
            self.levels.pop();
        }
        self.value_end()
    }

    /// A value ended: the document, when it was the root.
    fn value_end(&mut self) -> Result<(), Progress> {
        if self.open.is_empty() {
            return Err(Progress::Complete);
        }
        self.expect = Expect::CommaOrClose;
        Ok(())
    }

    /// Whether every open container is on some rule's path.
    fn tracking(&self) -> bool {
        self.levels.len() == self.open.len()
    }

    /// The rules that match the value starting now: by its member name in an object, by its
    /// index in an array, all of them at the root.
    fn value_mask(&mut self, rules: &Rules) -> Mask {
        let depth = self.levels.len();
        match self.levels.last_mut() {
            None => select(rules, Mask::MAX, |_| true),
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

    fn keep_text(&mut self, bytes: &[u8]) {
        if self.keep && self.text.len() <= MAX_TEXT {
            self.text.extend_from_slice(bytes);
        }
    }
}

/// The first `"` or `\\` in `s`. Most strings in API answers are short: eight bytes at a time
/// for the first 64, then memchr's vector search.
fn string_stop(s: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // A high bit for each zero byte; borrows only reach bytes above the first zero, so the
    // lowest bit set is exact.
    let zeros = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let mut i = 0;
    while let Some(word) = s.get(i..i + 8) {
        let w = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        let hits =
            zeros(w ^ u64::from_ne_bytes([b'"'; 8])) | zeros(w ^ u64::from_ne_bytes([b'\\'; 8]));
        if hits != 0 {
            return Some(i + hits.trailing_zeros() as usize / 8);
        }
        i += 8;
        if i == 64 {
            return memchr2(b'"', b'\\', &s[i..]).map(|k| k + i);
        }
    }
    s[i..]
        .iter()
        .position(|b| *b == b'"' || *b == b'\\')
        .map(|k| k + i)
}

fn at_depth(rules: &Rules, depth: usize) -> Mask {
    rules.at_depth.get(depth).copied().unwrap_or(0)
}

fn deeper(rules: &Rules, depth: usize) -> Mask {
    rules.deeper.get(depth).copied().unwrap_or(0)
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
    use crate::observe::body_errors::{BodyErrorsConfig, RuleConfig, RuleErrors};

    fn pack(name: &str) -> Rules {
        Rules::compile(&BodyErrorsConfig::Pack(name.into()), 1 << 20).unwrap()
    }

    /// Scans `body` cut into chunks of `step` bytes: the errors found and how it ended.
    fn scan(rules: &Rules, body: &str, step: usize) -> (Vec<(String, u16)>, Progress) {
        let mut s = Scan::new();
        let mut errors = Vec::new();
        let mut found = |c: Cow<'static, str>, st| errors.push((c.into_owned(), st));
        for chunk in body.as_bytes().chunks(step.max(1)) {
            match s.feed(chunk, rules, &mut found) {
                Progress::More => {}
                p => return (errors, p),
            }
        }
        let p = s.finish(rules, &mut found);
        (errors, p)
    }

    proptest::proptest! {
        #[test]
        fn string_stop_finds_the_first_quote_or_backslash(
            s in proptest::collection::vec(proptest::prop_oneof![
                proptest::prelude::any::<u8>(),
                proptest::strategy::Just(b'"'),
                proptest::strategy::Just(b'\\'),
                proptest::strategy::Just(b'a'),
            ], 0..200),
        ) {
            let naive = s.iter().position(|b| *b == b'"' || *b == b'\\');
            proptest::prop_assert_eq!(string_stop(&s), naive);
        }
    }

    #[test]
    fn string_stop_past_the_first_words() {
        for n in [0, 7, 8, 9, 63, 64, 65, 200] {
            let mut s = vec![b'a'; n];
            assert_eq!(string_stop(&s), None, "{n}");
            s.push(b'\\');
            s.push(b'"');
            assert_eq!(string_stop(&s), Some(n), "{n}");
        }
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
