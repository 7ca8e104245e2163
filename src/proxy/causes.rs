//! What an error's chain of causes says: all of it as one line for a log, outermost first, or
//! the HTTP/2 reset it carries.

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

/// What `pick` takes of the first of `e`'s causes, outermost first, that it takes anything of.
fn first<'e, T>(
    e: &'e (dyn StdError + 'static),
    mut pick: impl FnMut(&'e (dyn StdError + 'static)) -> Option<T>,
) -> Option<T> {
    let mut cause = Some(e);
    while let Some(err) = cause {
        if let Some(found) = pick(err) {
            return Some(found);
        }
        cause = err.source();
    }
    None
}

/// The h2 crate's error in `e`'s causes, which hyper wraps.
fn h2_error<'e>(e: &'e (dyn StdError + 'static)) -> Option<&'e h2::Error> {
    first(e, |err| err.downcast_ref::<h2::Error>())
}

/// The HTTP/2 error code of the `RST_STREAM` or `GOAWAY` found in `e`'s causes, if one is
/// there. hyper's server resets a stream whose body fails with the code it finds the same way,
/// `INTERNAL_ERROR` without one.
pub fn reset_reason(e: &(dyn StdError + 'static)) -> Option<u32> {
    h2_error(e)?.reason().map(u32::from)
}

/// The same, only for a reset the peer sent for one stream (not a `GOAWAY`, nor remedy's own).
pub fn peer_reset_reason(e: &(dyn StdError + 'static)) -> Option<u32> {
    let h2 = h2_error(e)?;
    (h2.is_reset() && h2.is_remote())
        .then(|| h2.reason().map(u32::from))
        .flatten()
}

/// Whether `e`'s causes hold a connection that broke on remedy's side of it: its socket
/// failed (hyper hands h2's socket errors on as `io::Error`s), what came back was no HTTP/2
/// (h2 gave up on it), or it ended before it was ready to take a request; rather than a
/// `GOAWAY` or a reset the peer sent.
pub fn connection_broke(e: &(dyn StdError + 'static)) -> bool {
    first(e, |err| {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return Some(h2.is_io() || (h2.is_go_away() && h2.is_library()));
        }
        let canceled = err
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled);
        (canceled || err.is::<std::io::Error>()).then_some(true)
    })
    .unwrap_or(false)
}
