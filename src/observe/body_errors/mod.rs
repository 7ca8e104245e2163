//! Errors an API reports inside a JSON body (TikTok's `code`, GraphQL's `errors`, the items of
//! a batch), for sources that opt in with `body_errors`.
//!
//! A [`Reader`] is made per response when the source has rules and the response is JSON in a
//! coding remedy reads; each frame on its way to the connector is shown to it and passed on
//! unchanged and unheld. It reads at most the window (`body_errors_max_bytes`, decompressed)
//! and stops as soon as it has its answer. What it found counts only when the JSON it read was
//! well formed: a body that is not JSON, is cut short or is malformed is counted by its status.

mod config;
mod decode;
pub mod packs;
mod rules;
mod scan;

use http::header::CONTENT_TYPE;
use http::{HeaderMap, StatusCode};

pub use config::{BodyErrorsConfig, RuleConfig, RuleErrors, default_max_bytes};
pub use rules::{MAX_RULES, Rules};

use super::classify::ApiErrors;
use decode::{Coding, Decoder, Wrote};
use scan::{Progress, Scan};

/// One response's body on its way past the rules.
pub struct Reader {
    rules: std::sync::Arc<Rules>,
    scan: Scan,
    decoder: Option<Decoder>,
    /// Bytes of the body (as sent) the window still takes.
    room: usize,
    found: ApiErrors,
}

/// What reading a frame came to.
pub enum Read {
    /// The reader wants the next frame.
    More,
    /// Reading is over: the errors found (none when the JSON was not well formed).
    Done(ApiErrors),
}

impl Reader {
    /// A reader for a response with `status` and `headers`, when it may hold JSON errors:
    /// a JSON content type, a body, and a coding remedy reads.
    pub fn for_response(
        rules: &std::sync::Arc<Rules>,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Option<Box<Reader>> {
        if status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
            || !is_json(headers)
        {
            return None;
        }
        let decoder = match decode::coding(headers, rules.max_bytes)? {
            Coding::Identity => None,
            Coding::Coded(d) => Some(d),
        };
        Some(Box::new(Reader {
            rules: rules.clone(),
            scan: Scan::new(),
            decoder,
            room: rules.max_bytes,
            found: ApiErrors::default(),
        }))
    }

    /// Reads one frame's bytes; it keeps none of them.
    pub fn read(&mut self, data: &[u8]) -> Read {
        let take = data.len().min(self.room);
        self.room -= take;
        let window_ends = self.room == 0;
        let progress = match &mut self.decoder {
            None => {
                let rules = &*self.rules;
                let found = &mut self.found;
                self.scan
                    .feed(&data[..take], rules, &mut |c, s| found.add(c, s))
            }
            Some(d) => Self::decode(
                &mut self.scan,
                d,
                &self.rules,
                &mut self.found,
                &data[..take],
            ),
        };
        match progress {
            Progress::More if window_ends => self.done(Progress::Settled),
            Progress::More => Read::More,
            p => self.done(p),
        }
    }

    /// The body ended.
    pub fn finish(mut self) -> ApiErrors {
        let rules = &*self.rules;
        let found = &mut self.found;
        let p = self.scan.finish(rules, &mut |c, s| found.add(c, s));
        match self.done(p) {
            Read::Done(errors) => errors,
            Read::More => ApiErrors::default(),
        }
    }

    fn done(&mut self, p: Progress) -> Read {
        match p {
            Progress::More => Read::More,
            Progress::Settled | Progress::Complete => Read::Done(std::mem::take(&mut self.found)),
            Progress::Malformed => Read::Done(ApiErrors::default()),
        }
    }

    /// Decodes `input` and scans what it decodes to, until the input is used up, the window
    /// is full or the scan has its answer.
    fn decode(
        scan: &mut Scan,
        d: &mut Decoder,
        rules: &Rules,
        found: &mut ApiErrors,
        mut input: &[u8],
    ) -> Progress {
        let mut add = |c, s| found.add(c, s);
        loop {
            let wrote = d.write(input);
            let mut full = matches!(wrote, Wrote::Full);
            if let Some(w) = d.window() {
                full |= w.full();
                if !w.out.is_empty() {
                    let progress = scan.feed(&w.out, rules, &mut add);
                    w.out.clear();
                    if progress != Progress::More {
                        return progress;
                    }
                }
            }
            match wrote {
                // The window is full and all of it was read: the answer is what it holds.
                _ if full => return Progress::Settled,
                Wrote::Corrupt => return Progress::Malformed,
                Wrote::Taken(n) => {
                    input = &input[n..];
                    if input.is_empty() {
                        return Progress::More;
                    }
                    if n == 0 {
                        // The stream ended before the input did: bytes after it are not
                        // the document.
                        return Progress::Malformed;
                    }
                }
                Wrote::Full => unreachable!("handled as full"),
            }
        }
    }
}

/// `application/json`, `application/*+json` (GraphQL's `graphql-response+json`, problem
/// details) and `text/json`; `text/javascript`, which Meta's Graph API has answered with.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(v) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = v.split(';').next().unwrap_or_default().trim();
    let Some((kind, sub)) = essence.split_once('/') else {
        return false;
    };
    let json = sub.eq_ignore_ascii_case("json");
    if kind.eq_ignore_ascii_case("application") {
        json || sub
            .get(sub.len().saturating_sub(5)..)
            .is_some_and(|end| end.eq_ignore_ascii_case("+json"))
    } else if kind.eq_ignore_ascii_case("text") {
        json || sub.eq_ignore_ascii_case("javascript")
    } else {
        false
    }
}

#[cfg(test)]
mod tests;
