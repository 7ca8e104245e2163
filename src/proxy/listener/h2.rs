//! The answer to an HTTP/2 connection preface on a listener that speaks HTTP/1.1: the server's
//! preface (an empty SETTINGS frame) and a GOAWAY whose error code is HTTP_1_1_REQUIRED
//! (RFC 9113 §7), so that an HTTP/2 client learns what to do instead of meeting a closed
//! connection. hyper's HTTP/1.1 server then fails the connection on the preface, and the
//! refusal is counted (as 505 HTTP Version Not Supported on the proxy listener).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What an HTTP/2 client sends first (RFC 9113 §3.4), up to the request line's end.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// Whether the first bytes of a connection are an HTTP/2 connection preface.
pub fn is_preface(first: &[u8]) -> bool {
    first.starts_with(PREFACE)
}

const SAYS: &[u8] = b"this listener speaks HTTP/1.1";

/// An empty SETTINGS frame, then GOAWAY(last stream 0, HTTP_1_1_REQUIRED, why).
pub const REFUSAL: &[u8] = &{
    const GOAWAY_LEN: usize = 8 + SAYS.len();
    let mut out = [0u8; 9 + 9 + GOAWAY_LEN];
    // SETTINGS: length 0, type 0x4, no flags, stream 0.
    out[3] = 0x4;
    // GOAWAY: length, type 0x7, no flags, stream 0; last stream 0; error 0xd; debug data.
    let f = 9;
    out[f + 2] = GOAWAY_LEN as u8;
    out[f + 3] = 0x7;
    out[f + 9 + 7] = 0xd;
    let mut i = 0;
    while i < SAYS.len() {
        out[f + 17 + i] = SAYS[i];
        i += 1;
    }
    out
};

pin_project_lite::pin_project! {
    /// A connection's IO that answers an HTTP/2 preface with [`REFUSAL`]: the admin listener's,
    /// which has no smuggling guard to do it. Every byte passes through untouched.
    pub struct Http1Only<IO> {
        #[pin]
        inner: IO,
        fresh: bool,
    }
}

impl<IO> Http1Only<IO> {
    pub fn new(inner: IO) -> Self {
        Http1Only { inner, fresh: true }
    }
}

impl<IO: AsyncRead + AsyncWrite> AsyncRead for Http1Only<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.as_mut().poll_read(cx, buf);
        if polled.is_ready() && std::mem::take(this.fresh) && is_preface(&buf.filled()[before..]) {
            let _ = this.inner.poll_write(cx, REFUSAL);
        }
        polled
    }
}

impl<IO: AsyncWrite> AsyncWrite for Http1Only<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_settings_frame_then_a_goaway_asking_for_http_1_1() {
        assert_eq!(&REFUSAL[..9], [0, 0, 0, 4, 0, 0, 0, 0, 0]);
        let goaway = &REFUSAL[9..];
        let len = usize::from(goaway[2]);
        assert_eq!(goaway.len(), 9 + len);
        assert_eq!((goaway[3], goaway[4]), (0x7, 0));
        assert_eq!(&goaway[9..13], [0, 0, 0, 0], "last stream");
        assert_eq!(&goaway[13..17], [0, 0, 0, 0xd], "HTTP_1_1_REQUIRED");
        assert_eq!(&goaway[17..], SAYS);
        assert!(is_preface(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert!(!is_preface(b"GET / HTTP/1.1\r\n"));
    }
}
