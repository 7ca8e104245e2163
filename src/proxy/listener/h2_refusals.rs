//! What the HTTP/2 layer refuses on its own, read off the frames remedy writes to a tunnel's
//! connector. h2 answers a header block over `proxy.max_header_bytes` with a 431 that ends the
//! stream and, at once, `RST_STREAM` (`PROTOCOL_ERROR`), refuses a stream beyond
//! `proxy.http2.max_concurrent_streams` with `REFUSED_STREAM`, and closes a connection that breaks the protocol (a flood, a malformed
//! frame) with a `GOAWAY`, all before remedy's service sees a request. hyper says nothing of
//! them; the frames do. Each is counted as the answer the connector got, under
//! `source="unmatched"`, as hyper's parser refusals on HTTP/1.1 are.

/// A refusal, as the status it is counted as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 431, then `PROTOCOL_ERROR`: a header block over the limit.
    HeaderBlockTooLarge,
    /// `REFUSED_STREAM` alone: the stream was not taken (over the concurrent streams), so its
    /// client may send it again; counted as 503, HTTP's "not now".
    Stream,
    /// A `GOAWAY` with an error: the connector broke the protocol; counted as 400.
    Connection,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::HeaderBlockTooLarge => 431,
            Refusal::Stream => 503,
            Refusal::Connection => 400,
        }
    }
}

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const GOAWAY: u8 = 0x7;
const PROTOCOL_ERROR: u32 = 0x1;
const REFUSED_STREAM: u32 = 0x7;
const END_STREAM: u8 = 0x1;

/// Follows the frames of an HTTP/2 connection's writes, however they are split.
#[derive(Debug, Default)]
pub struct FrameWatch {
    /// The frame header being read, and how much of it.
    head: [u8; 9],
    have: usize,
    /// Of the frame whose header is read: its type, flags, stream, and payload bytes still to
    /// pass.
    kind: u8,
    flags: u8,
    stream: u32,
    left: usize,
    /// The first payload bytes of a `RST_STREAM` or `GOAWAY`.
    payload: [u8; 8],
    got: usize,
    /// The stream of the last frame, when it was a HEADERS frame that ended its stream: h2's
    /// 431 is such a frame and then, at once, `PROTOCOL_ERROR` on the same stream.
    ended_by_headers: Option<u32>,
}

impl FrameWatch {
    /// Reads `bytes`, the next ones written; `found` is told of each refusal.
    pub fn observe(&mut self, mut bytes: &[u8], mut found: impl FnMut(Refusal)) {
        while !bytes.is_empty() {
            if self.have < 9 {
                let take = (9 - self.have).min(bytes.len());
                self.head[self.have..self.have + take].copy_from_slice(&bytes[..take]);
                self.have += take;
                bytes = &bytes[take..];
                if self.have < 9 {
                    return;
                }
                let h = self.head;
                self.left = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
                self.kind = h[3];
                self.flags = h[4];
                self.stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                self.got = 0;
            } else {
                let take = self.left.min(bytes.len());
                let keep = take.min(self.payload.len() - self.got);
                self.payload[self.got..self.got + keep].copy_from_slice(&bytes[..keep]);
                self.got += keep;
                self.left -= take;
                bytes = &bytes[take..];
            }
            if self.have == 9 && self.left == 0 {
                self.ended(&mut found);
                self.have = 0;
            }
        }
    }

    /// A whole frame has passed.
    fn ended(&mut self, found: &mut impl FnMut(Refusal)) {
        let word = |at: usize| {
            let p = &self.payload;
            u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]])
        };
        let ended_by_headers = self.ended_by_headers.take();
        let reset = (self.kind == RST_STREAM && self.got >= 4).then(|| word(0));
        match (self.kind, reset) {
            (HEADERS, _) if self.flags & END_STREAM != 0 => {
                self.ended_by_headers = Some(self.stream);
            }
            (_, Some(PROTOCOL_ERROR)) if ended_by_headers == Some(self.stream) => {
                found(Refusal::HeaderBlockTooLarge);
            }
            (_, Some(REFUSED_STREAM)) => found(Refusal::Stream),
            (GOAWAY, _) if self.got >= 8 && word(4) != 0 => found(Refusal::Connection),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        framed(kind, 0, stream, payload)
    }

    fn framed(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// Each run of frames, split at every byte, as the refusals found in it.
    #[test]
    fn refusals_are_read_off_the_frames_however_they_are_split() {
        let refused = frame(RST_STREAM, 3, &REFUSED_STREAM.to_be_bytes());
        let protocol = frame(RST_STREAM, 3, &PROTOCOL_ERROR.to_be_bytes());
        let cancel = frame(RST_STREAM, 3, &8u32.to_be_bytes());
        let answer = |stream| framed(HEADERS, END_STREAM | 0x4, stream, &[0x88; 20]);
        let head = |stream| framed(HEADERS, 0x4, stream, &[0x88; 20]);
        let data = frame(0x0, 3, &[b'x'; 40]);
        let goaway = |code: u32| {
            frame(
                GOAWAY,
                0,
                &[&7u32.to_be_bytes()[..], &code.to_be_bytes()].concat(),
            )
        };
        let settings = frame(0x4, 0, &[]);
        for (frames, expected) in [
            (
                vec![answer(3), protocol.clone()],
                vec![Refusal::HeaderBlockTooLarge],
            ),
            (vec![head(3), protocol.clone()], vec![]),
            (vec![answer(1), protocol.clone()], vec![]),
            (vec![answer(3), data.clone(), protocol.clone()], vec![]),
            (
                vec![settings.clone(), refused.clone()],
                vec![Refusal::Stream],
            ),
            (vec![answer(3), refused.clone()], vec![Refusal::Stream]),
            (vec![head(3), cancel.clone()], vec![]),
            (vec![goaway(0xb)], vec![Refusal::Connection]),
            (vec![goaway(0)], vec![]),
            (vec![head(3), data, settings, cancel], vec![]),
        ] {
            let bytes = frames.concat();
            for split in 0..=bytes.len() {
                let mut watch = FrameWatch::default();
                let mut got = Vec::new();
                watch.observe(&bytes[..split], |r| got.push(r));
                watch.observe(&bytes[split..], |r| got.push(r));
                assert_eq!(got, expected, "split at {split} of {frames:?}");
            }
        }
    }
}
