//! A source's `body_errors`, compiled: each rule's JSON pointer as segments and what the value
//! found there means. The same compilation validates the config, so a config accepted by
//! `check-config` is one `run` can use.

use std::borrow::Cow;

use super::config::{BodyErrorsConfig, RuleConfig, RuleErrors};
use super::packs::{self, PackVerdict};

/// Most rules one source may have: each is one bit of the scanner's masks.
pub const MAX_RULES: usize = 32;
/// One bit per rule.
pub(super) type Mask = u32;
/// Deepest pointer a rule may name.
pub(super) const MAX_DEPTH: usize = 32;

/// One segment of a pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seg {
    /// A member name, or an array index when it is a decimal number.
    Key(Box<str>, Option<u32>),
    /// `*`: every element of an array.
    Each,
}

impl Seg {
    pub(super) fn matches_name(&self, name: &[u8]) -> bool {
        matches!(self, Seg::Key(k, _) if k.as_bytes() == name)
    }

    pub(super) fn matches_index(&self, index: u32) -> bool {
        match self {
            Seg::Each => true,
            Seg::Key(_, i) => *i == Some(index),
        }
    }
}

/// What the value at a rule's pointer means.
#[derive(Debug, Clone)]
enum Verdict {
    /// An HTTP status: 400 to 599 is an error standing for itself, any other number none.
    HttpStatus,
    Table {
        ok: Vec<Cow<'static, str>>,
        errors: Vec<(Cow<'static, str>, u16)>,
        other: Option<u16>,
    },
}

#[derive(Debug, Clone)]
pub(super) struct Rule {
    pub(super) pointer: Vec<Seg>,
    verdict: Verdict,
}

impl Rule {
    /// A pointer without `*` names one value: once it is read, the rule has its answer.
    pub(super) fn single(&self) -> bool {
        !self.pointer.contains(&Seg::Each)
    }

    /// The error a value found at the pointer reports, as `(api_code, HTTP status)`.
    pub(super) fn judge(&self, value: &[u8]) -> Option<(Cow<'static, str>, u16)> {
        match &self.verdict {
            Verdict::HttpStatus => {
                let status: u16 = std::str::from_utf8(value).ok()?.parse().ok()?;
                (400..=599)
                    .contains(&status)
                    .then(|| (Cow::Owned(status.to_string()), status))
            }
            Verdict::Table { ok, errors, other } => {
                if ok.iter().any(|v| v.as_bytes() == value) {
                    return None;
                }
                match errors.iter().find(|(v, _)| v.as_bytes() == value) {
                    Some((code, status)) => Some((code.clone(), *status)),
                    None => other.map(|s| (Cow::Borrowed("other"), s)),
                }
            }
        }
    }
}

/// A source's rules and how much of a body it reads.
#[derive(Debug, Clone)]
pub struct Rules {
    pub(super) rules: Vec<Rule>,
    /// Most bytes read of a body, after decompression.
    pub(super) max_bytes: usize,
    /// Whether every rule names one value, so that reading may stop once all were read.
    pub(super) all_single: bool,
    /// The rules naming one value, one bit each.
    pub(super) singles: Mask,
    /// By depth: the rules whose pointer has exactly that many segments, and more.
    pub(super) at_depth: [Mask; MAX_DEPTH + 1],
    pub(super) deeper: [Mask; MAX_DEPTH + 1],
    /// The pack's name, or `own rules`.
    name: Cow<'static, str>,
}

impl Rules {
    /// Compiles `config`; a mistake is returned as the key path below `body_errors` (such as
    /// `.rules[1].pointer`) and the reason.
    pub fn compile(config: &BodyErrorsConfig, max_bytes: usize) -> Result<Self, (String, String)> {
        let (rules, name) = match config {
            BodyErrorsConfig::Pack(name) => {
                let pack = find_pack(name)?;
                (pack_rules(pack), Cow::Borrowed(pack.name))
            }
            BodyErrorsConfig::Rules(own) => (own_rules(own)?, Cow::Borrowed("own rules")),
        };
        let mut at_depth = [0; MAX_DEPTH + 1];
        let mut deeper = [0; MAX_DEPTH + 1];
        let mut singles = 0;
        for (i, r) in rules.iter().enumerate() {
            at_depth[r.pointer.len()] |= 1 << i;
            for d in deeper.iter_mut().take(r.pointer.len()) {
                *d |= 1 << i;
            }
            if r.single() {
                singles |= 1 << i;
            }
        }
        Ok(Rules {
            all_single: rules.iter().all(Rule::single),
            singles,
            at_depth,
            deeper,
            rules,
            max_bytes,
            name,
        })
    }

    /// The pack's name, or `own rules`, for `check-config`.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The built-in pack `name`, or why there is none.
fn find_pack(name: &str) -> Result<&'static packs::Pack, (String, String)> {
    packs::pack(name).ok_or_else(|| {
        (
            String::new(),
            format!(
                "unknown pack {name:?}: the built-in packs are {}; or write your own as {{ rules: [...] }}",
                packs::names()
            ),
        )
    })
}

/// The rules of a built-in pack.
fn pack_rules(pack: &'static packs::Pack) -> Vec<Rule> {
    pack.rules
        .iter()
        .map(|r| Rule {
            pointer: parse_pointer(r.pointer).expect("built-in pointers parse"),
            verdict: match r.verdict {
                PackVerdict::HttpStatus => Verdict::HttpStatus,
                PackVerdict::Table { ok, errors, other } => Verdict::Table {
                    ok: ok.iter().map(|v| Cow::Borrowed(*v)).collect(),
                    errors: errors
                        .iter()
                        .map(|(v, s)| (Cow::Borrowed(*v), *s))
                        .collect(),
                    other,
                },
            },
        })
        .collect()
}

/// The user's own rules, each checked: a mistake names its key below `body_errors`.
fn own_rules(own: &[RuleConfig]) -> Result<Vec<Rule>, (String, String)> {
    if own.is_empty() {
        return Err((".rules".into(), "at least one rule is needed".into()));
    }
    if own.len() > MAX_RULES {
        return Err((
            ".rules".into(),
            format!("{} rules: at most {MAX_RULES}", own.len()),
        ));
    }
    own.iter()
        .enumerate()
        .map(|(i, r)| {
            let at = |key: &str| format!(".rules[{i}].{key}");
            let pointer = parse_pointer(&r.pointer).map_err(|m| (at("pointer"), m))?;
            let verdict = own_verdict(r).map_err(|(key, m)| (at(&key), m))?;
            Ok(Rule { pointer, verdict })
        })
        .collect()
}

/// What one rule of the user's makes of the value it reads; a mistake names its key.
fn own_verdict(r: &RuleConfig) -> Result<Verdict, (String, String)> {
    let table = match &r.errors {
        RuleErrors::HttpStatus if !r.ok.is_empty() || r.other.is_some() => {
            return Err((
                "errors".into(),
                "errors: http_status reads the value as a status; ok and other do not apply".into(),
            ));
        }
        RuleErrors::HttpStatus => return Ok(Verdict::HttpStatus),
        RuleErrors::Table(table) => table,
    };
    if table.is_empty() && r.other.is_none() {
        return Err((
            "errors".into(),
            "name at least one value and the HTTP status it stands for, or set other".into(),
        ));
    }
    for (value, status) in table {
        check_status(*status).map_err(|m| (format!("errors.{value}"), m))?;
        if r.ok.contains(value) {
            return Err((
                "ok".into(),
                format!("{value:?} is listed in both ok and errors"),
            ));
        }
    }
    if let Some(s) = r.other {
        check_status(s).map_err(|m| ("other".into(), m))?;
    }
    Ok(Verdict::Table {
        ok: r.ok.iter().map(|v| Cow::Owned(v.clone())).collect(),
        errors: table
            .iter()
            .map(|(v, s)| (Cow::Owned(v.clone()), *s))
            .collect(),
        other: r.other,
    })
}

fn check_status(s: u16) -> Result<(), String> {
    if (400..=599).contains(&s) {
        Ok(())
    } else {
        Err(format!(
            "{s} is not an error status: an error stands for an HTTP status from 400 to 599"
        ))
    }
}

/// An RFC 6901 JSON pointer (`/errors/0/code`, `~1` for `/` and `~0` for `~` in a name), in
/// which a `*` segment stands for every element of an array.
fn parse_pointer(p: &str) -> Result<Vec<Seg>, String> {
    if p.is_empty() {
        return Err("an empty pointer names the whole body; name the field, such as /code".into());
    }
    let Some(rest) = p.strip_prefix('/') else {
        return Err(format!(
            "{p:?} is not a JSON pointer: it starts with /, such as /code or /errors/*/extensions/code"
        ));
    };
    let segs: Vec<Seg> = rest
        .split('/')
        .map(|s| {
            if s == "*" {
                return Ok(Seg::Each);
            }
            if s.contains('~') && !valid_escapes(s) {
                return Err(format!(
                    "{p:?}: in {s:?}, ~ is written ~0 and / is written ~1"
                ));
            }
            let name = s.replace("~1", "/").replace("~0", "~");
            let index = (!s.is_empty()
                && s.bytes().all(|b| b.is_ascii_digit())
                && (s == "0" || !s.starts_with('0')))
            .then(|| s.parse().ok())
            .flatten();
            Ok(Seg::Key(name.into(), index))
        })
        .collect::<Result<_, _>>()?;
    if segs.len() > MAX_DEPTH {
        return Err(format!("{p:?} is {} deep: at most {MAX_DEPTH}", segs.len()));
    }
    Ok(segs)
}

fn valid_escapes(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter()
        .enumerate()
        .filter(|(_, c)| **c == b'~')
        .all(|(i, _)| matches!(b.get(i + 1), Some(b'0' | b'1')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_parse_as_rfc_6901_with_a_wildcard() {
        assert_eq!(
            parse_pointer("/errors/*/extensions/code").unwrap(),
            vec![
                Seg::Key("errors".into(), None),
                Seg::Each,
                Seg::Key("extensions".into(), None),
                Seg::Key("code".into(), None)
            ]
        );
        assert_eq!(
            parse_pointer("/a~1b/m~0n/0/10/01").unwrap(),
            vec![
                Seg::Key("a/b".into(), None),
                Seg::Key("m~n".into(), None),
                Seg::Key("0".into(), Some(0)),
                Seg::Key("10".into(), Some(10)),
                Seg::Key("01".into(), None)
            ]
        );
        assert!(parse_pointer("code").unwrap_err().contains("starts with /"));
        assert!(parse_pointer("").unwrap_err().contains("empty pointer"));
        assert!(parse_pointer("/a~2").unwrap_err().contains("~0"));
        assert!(
            parse_pointer(&"/a".repeat(33))
                .unwrap_err()
                .contains("at most 32")
        );
    }

    #[test]
    fn every_pack_compiles() {
        for p in packs::PACKS {
            let rules = Rules::compile(&BodyErrorsConfig::Pack(p.name.into()), 65536).unwrap();
            assert_eq!(rules.name(), p.name);
            assert_eq!(rules.rules.len(), p.rules.len());
        }
        let err = Rules::compile(&BodyErrorsConfig::Pack("tiktk".into()), 65536).unwrap_err();
        assert!(
            err.1.contains("tiktok, graphql, shopify_graphql"),
            "{err:?}"
        );
    }

    #[test]
    fn values_are_judged_by_the_table_or_as_statuses() {
        let tiktok = Rules::compile(&BodyErrorsConfig::Pack("tiktok".into()), 65536).unwrap();
        let r = &tiktok.rules[0];
        assert_eq!(r.judge(b"0"), None);
        assert_eq!(r.judge(b"40100"), Some(("40100".into(), 429)));
        assert_eq!(r.judge(b"40999"), Some(("other".into(), 400)));
        let sf = Rules::compile(
            &BodyErrorsConfig::Pack("salesforce_composite".into()),
            65536,
        )
        .unwrap();
        let r = &sf.rules[0];
        assert_eq!(r.judge(b"201"), None);
        assert_eq!(r.judge(b"404"), Some(("404".into(), 404)));
        assert_eq!(r.judge(b"not a number"), None);
        assert_eq!(r.judge(b"70000"), None);
    }
}
