//! How the upstream failed to give a response head: a closed [`ErrorKind`], which the proxy
//! answers as a 502 or 504, told from the error's chain of causes.

use std::error::Error as StdError;
use std::io;

use crate::metrics::ErrorKind;
use crate::proxy::causes::causes;

/// How the upstream failed to give a response head.
#[derive(Debug)]
pub struct Failure {
    pub kind: ErrorKind,
    /// The cause, for the warn log line.
    pub cause: String,
    /// The system gave remedy no file descriptor for the connection: remedy's own limit, not
    /// the upstream's failure.
    pub out_of_descriptors: bool,
}

impl Failure {
    /// The failure an error stands for; `fallback` is the kind when its causes do not tell.
    pub fn from_error(e: &(dyn StdError + 'static), fallback: ErrorKind) -> Self {
        Failure {
            kind: classify(e, fallback),
            cause: causes(e),
            out_of_descriptors: out_of_descriptors(e),
        }
    }
}

/// Whether `e`'s causes hold the system refusing remedy a file descriptor.
fn out_of_descriptors(e: &(dyn StdError + 'static)) -> bool {
    let mut stack: Vec<&(dyn StdError + 'static)> = vec![e];
    while let Some(err) = stack.pop() {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if crate::descriptors::ran_out(io) {
                return true;
            }
            if let Some(inner) = io.get_ref() {
                stack.push(inner);
            }
        }
        if let Some(next) = err.source() {
            stack.push(next);
        }
    }
    false
}

/// The failure kind, from the error's chain of causes; `fallback` when nothing in it tells.
fn classify(e: &(dyn StdError + 'static), fallback: ErrorKind) -> ErrorKind {
    let mut kind = fallback;
    // Causes hide behind `io::Error::get_ref` and boxed errors as well as `source()`.
    let mut stack: Vec<&(dyn StdError + 'static)> = vec![e];
    while let Some(err) = stack.pop() {
        if err.is::<rustls::Error>() {
            return ErrorKind::Tls;
        }
        // hyper could not parse the response: the API answered, with something that is not
        // HTTP remedy can pass on (a malformed status line, a head over the limits).
        if let Some(h) = err.downcast_ref::<hyper::Error>()
            && h.is_parse()
        {
            return ErrorKind::Protocol;
        }
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if io.kind() == io::ErrorKind::TimedOut {
                return ErrorKind::Timeout;
            }
            if let Some(inner) = io.get_ref() {
                stack.push(inner);
            }
        }
        if let Some(h) = err.downcast_ref::<hyper_util::client::legacy::Error>()
            && h.is_connect()
        {
            kind = ErrorKind::Connect;
        }
        // hyper-util's `ConnectError` is not public, and its message is the only thing that
        // tells a resolver failure from a refused connection: "dns error: ..." (a failure of
        // the resolver) versus "tcp connect error: ...". A test with an `.invalid` host keeps
        // this honest across upgrades (`failures::unknown_host_is_502_dns`).
        if err.to_string().starts_with("dns error") {
            return ErrorKind::Dns;
        }
        if let Some(next) = err.source() {
            stack.push(next);
        }
    }
    kind
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The system refusing a descriptor is remedy's own limit, however deep in the causes;
    /// a refused or reset connection is not.
    #[test]
    fn running_out_of_descriptors_is_told_from_the_upstreams_failures() {
        let wrapped = |e: io::Error| io::Error::other(e);
        for (e, own) in [
            (io::Error::from_raw_os_error(libc::EMFILE), true),
            (wrapped(io::Error::from_raw_os_error(libc::ENFILE)), true),
            (io::Error::from_raw_os_error(libc::ECONNREFUSED), false),
            (
                wrapped(io::Error::from_raw_os_error(libc::ECONNRESET)),
                false,
            ),
        ] {
            let f = Failure::from_error(&e, ErrorKind::Connect);
            assert_eq!(f.out_of_descriptors, own, "{e}");
        }
    }
}
