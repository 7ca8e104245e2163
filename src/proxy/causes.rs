//! An error as one line for a log: each cause in its chain, outermost first.

use std::error::Error as StdError;

/// `outer: inner: innermost`, for logs.
pub fn causes(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        let s = err.to_string();
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = err.source();
    }
    out
}
