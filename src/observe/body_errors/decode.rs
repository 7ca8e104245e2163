//! The body's content coding undone for the scanner only, and only as far as the window: the
//! decoders write into a [`Window`] that refuses bytes past its room, so a small compressed
//! frame cannot grow past the window however well it compresses. The connector's bytes are
//! never touched: the decoders read copies of the frames' slices.

use std::io::{self, Write};

use brotli_decompressor::DecompressorWriter;
use flate2::write::{DeflateDecoder, GzDecoder, ZlibDecoder};
use http::HeaderMap;
use http::header::CONTENT_ENCODING;

/// Decompressed bytes waiting for the scanner, and how many more the window takes.
pub(super) struct Window {
    pub(super) out: Vec<u8>,
    room: usize,
}

impl Window {
    pub(super) fn full(&self) -> bool {
        self.room == 0
    }
}

impl Write for Window {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.room == 0 {
            // An error, not Ok(0): the decoders stop here instead of trying again.
            return Err(io::Error::other("body_errors window is full"));
        }
        let n = buf.len().min(self.room);
        self.out.extend_from_slice(&buf[..n]);
        self.room -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The decoder for one body's `Content-Encoding`.
pub(super) enum Decoder {
    Gzip(Box<GzDecoder<Window>>),
    Zlib(Box<ZlibDecoder<Window>>),
    /// Raw deflate, as some servers send for `deflate` against RFC 9110.
    Raw(Box<DeflateDecoder<Window>>),
    /// `deflate` before its first two bytes say zlib or raw.
    Deflate(Option<u8>, usize),
    Brotli(Box<DecompressorWriter<Window>>),
}

/// How a body is coded, as far as reading it goes.
pub(super) enum Coding {
    Identity,
    Coded(Decoder),
}

/// `Content-Encoding`, when remedy can read it: none, `gzip`, `deflate` or `br`, once.
pub(super) fn coding(headers: &HeaderMap, room: usize) -> Option<Coding> {
    let mut values = headers.get_all(CONTENT_ENCODING).iter();
    let Some(v) = values.next() else {
        return Some(Coding::Identity);
    };
    if values.next().is_some() {
        return None;
    }
    let v = v.to_str().ok()?.trim();
    let window = || Window {
        out: Vec::new(),
        room,
    };
    let d = if v.eq_ignore_ascii_case("identity") {
        return Some(Coding::Identity);
    } else if v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip") {
        Decoder::Gzip(Box::new(GzDecoder::new(window())))
    } else if v.eq_ignore_ascii_case("deflate") {
        Decoder::Deflate(None, room)
    } else if v.eq_ignore_ascii_case("br") {
        Decoder::Brotli(Box::new(DecompressorWriter::new(window(), 4096)))
    } else {
        return None;
    };
    Some(Coding::Coded(d))
}

/// What a write into the decoder came to.
pub(super) enum Wrote {
    /// The input was taken; what it decoded to is in the window.
    Taken(usize),
    /// The window is full: reading ends here.
    Full,
    /// The input is not what its coding says.
    Corrupt,
}

impl Decoder {
    /// Writes as much of `input` as the decoder takes at once.
    pub(super) fn write(&mut self, input: &[u8]) -> Wrote {
        if let Decoder::Deflate(first, room) = self {
            // RFC 9110's `deflate` is zlib (RFC 1950): CM 8 and a header check that divides
            // by 31. Anything else is taken as raw deflate.
            let Some(&b) = input.first() else {
                return Wrote::Taken(0);
            };
            let Some(a) = *first else {
                *first = Some(b);
                return Wrote::Taken(1);
            };
            let window = Window {
                out: Vec::new(),
                room: *room,
            };
            let zlib = a & 0x0f == 8 && (u16::from(a) << 8 | u16::from(b)) % 31 == 0;
            let mut d = if zlib {
                Decoder::Zlib(Box::new(ZlibDecoder::new(window)))
            } else {
                Decoder::Raw(Box::new(DeflateDecoder::new(window)))
            };
            if let w @ (Wrote::Full | Wrote::Corrupt) = d.write_all(&[a]) {
                return w;
            }
            *self = d;
        }
        let result = match self {
            Decoder::Gzip(d) => d.write(input).and_then(|n| d.flush().map(|()| n)),
            Decoder::Zlib(d) => d.write(input).and_then(|n| d.flush().map(|()| n)),
            Decoder::Raw(d) => d.write(input).and_then(|n| d.flush().map(|()| n)),
            Decoder::Brotli(d) => d.write(input),
            Decoder::Deflate(..) => unreachable!("decided above"),
        };
        match result {
            Ok(n) => Wrote::Taken(n),
            Err(_) if self.window().is_some_and(|w| w.full()) => Wrote::Full,
            Err(_) => Wrote::Corrupt,
        }
    }

    fn write_all(&mut self, mut input: &[u8]) -> Wrote {
        while !input.is_empty() {
            match self.write(input) {
                Wrote::Taken(0) => return Wrote::Corrupt,
                Wrote::Taken(n) => input = &input[n..],
                w => return w,
            }
        }
        Wrote::Taken(0)
    }

    /// The window the decoder writes into.
    pub(super) fn window(&mut self) -> Option<&mut Window> {
        Some(match self {
            Decoder::Gzip(d) => d.get_mut(),
            Decoder::Zlib(d) => d.get_mut(),
            Decoder::Raw(d) => d.get_mut(),
            Decoder::Brotli(d) => d.get_mut(),
            Decoder::Deflate(..) => return None,
        })
    }
}
