//! Key path → line in the YAML text, so that an error names the line a user opens the file at.
//!
//! serde_yaml reports the mapping that holds a bad key, not the key; the text is read once
//! more here, as events with their positions, into the line of every key path and the path
//! and line of every scalar value.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Where each key path of one YAML text starts.
pub struct Locator {
    /// The line of every key path, `""` being the whole document's mapping.
    lines: HashMap<String, usize>,
    /// `(path, line, text)` of every scalar value.
    values: Vec<(String, usize, String)>,
}

impl Locator {
    /// Reads `text`; a text the YAML parser gives up on keeps what it read until then.
    pub fn new(text: &str) -> Self {
        let mut recv = Recv {
            stack: Vec::new(),
            lines: HashMap::new(),
            values: Vec::new(),
        };
        // The text already parsed with serde_yaml; a locator failure only costs the line.
        let _ = Parser::new_from_str(text).load(&mut recv, false);
        Locator {
            lines: recv.lines,
            values: recv.values,
        }
    }

    /// The path and line of the scalar `value` below `parent`.
    pub fn value_at(&self, parent: &str, value: &str) -> Option<(String, usize)> {
        self.values
            .iter()
            .find(|(p, _, v)| v == value && is_below(p, parent))
            .map(|(p, l, _)| (p.clone(), *l))
    }

    /// The shortest key path below `parent` that starts on `line`.
    pub fn key_at(&self, parent: &str, line: usize) -> Option<String> {
        self.lines
            .iter()
            .filter(|(p, l)| **l == line && is_below(p, parent))
            .map(|(p, _)| p)
            .min_by_key(|p| p.len())
            .cloned()
    }

    /// The line of `path`, or of its nearest located parent: the document's mapping last, and
    /// line 1 for a file with no mapping at all (empty, or only comments).
    pub fn line(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(l) = self.lines.get(p) {
                return Some(*l);
            }
            p = p.rfind(['.', '[']).map_or("", |cut| &p[..cut]);
            if p.is_empty() {
                return Some(self.lines.get("").copied().unwrap_or(1));
            }
        }
    }
}

/// `parent.key`, or `key` below the document.
pub fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// `sources[0].name` is below `sources[0]` and below the root (`""`).
fn is_below(path: &str, parent: &str) -> bool {
    path.len() > parent.len()
        && path.starts_with(parent)
        && (parent.is_empty() || matches!(path.as_bytes()[parent.len()], b'.' | b'['))
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

/// The parser's events, folded into paths.
struct Recv {
    stack: Vec<Frame>,
    lines: HashMap<String, usize>,
    values: Vec<(String, usize, String)>,
}

impl Recv {
    /// The path of the value now starting, advancing the parent past it.
    fn value_path(&mut self) -> Option<String> {
        match self.stack.last_mut()? {
            Frame::Map { path, key } => key.take().map(|k| join(path, &k)),
            Frame::Seq { path, index } => {
                *index += 1;
                Some(format!("{path}[{}]", *index - 1))
            }
        }
    }
}

impl MarkedEventReceiver for Recv {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(s, ..) => {
                if let Some(Frame::Map {
                    path,
                    key: key @ None,
                }) = self.stack.last_mut()
                {
                    let p = join(path, &s);
                    self.lines.entry(p).or_insert(mark.line());
                    *key = Some(s);
                } else if let Some(p) = self.value_path() {
                    self.lines.entry(p.clone()).or_insert(mark.line());
                    self.values.push((p, mark.line(), s));
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let path = self.value_path().unwrap_or_default();
                self.lines.entry(path.clone()).or_insert(mark.line());
                self.stack.push(if matches!(ev, Event::MappingStart(..)) {
                    Frame::Map { path, key: None }
                } else {
                    Frame::Seq { path, index: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::Alias(_) => {
                self.value_path();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_keys_and_their_parents_are_found() {
        let text = "a:\n  b: 1\nlist:\n  - x: 1\n  - x: 2\n    y:\n      z: 3\n";
        let l = Locator::new(text);
        assert_eq!(l.line("a.b"), Some(2));
        assert_eq!(l.line("list[1].x"), Some(5));
        assert_eq!(l.line("list[1].y.z"), Some(7));
        assert_eq!(l.line("list[1].nope"), Some(5));
        assert_eq!(l.line(""), Some(1));
        assert_eq!(l.line("missing"), Some(1));
        assert_eq!(Locator::new("# nothing\n").line("sources"), Some(1));
    }

    #[test]
    fn values_and_keys_are_found_below_a_parent() {
        let l = Locator::new("a:\n  b: x\nc:\n  d: x\n");
        assert_eq!(l.value_at("c", "x"), Some(("c.d".into(), 4)));
        assert_eq!(l.key_at("", 3), Some("c".into()));
    }
}
