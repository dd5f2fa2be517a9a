//! The permessage-deflate codec (RFC 7692 §7.2): raw DEFLATE streams from zlib-rs,
//! one message at a time, into caller-owned buffers.

use zlib_rs::{DeflateFlush, InflateFlush, Status};

use super::super::utf8::StreamingUtf8;

/// The bytes a sync flush ends with; stripped from each compressed message by the
/// sender and appended again by the receiver (RFC 7692 §7.2.1, §7.2.2).
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Most output one inflate step produces: how far past `max_message` a message can
/// grow its buffer before it is refused.
pub const INFLATE_STEP: usize = 16 << 10;

/// The compressor of one direction.
///
/// Built for one window size, memLevel and takeover rule. With context takeover the
/// window carries over from message to message (a dedicated deflater: one per
/// connection); without, the stream is reset after each message, so one deflater can
/// serve every connection of a worker that agreed on the same window (shared mode).
pub struct Deflater {
    /// `None` for an 8-bit window, which zlib cannot write as raw DEFLATE: such a
    /// deflater never compresses (sending uncompressed is always allowed).
    z: Option<zlib_rs::Deflate>,
    no_context_takeover: bool,
    threshold: usize,
    window_bits: u8,
    mem_level: u8,
}

impl core::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Deflater")
            .field("window_bits", &self.window_bits)
            .field("mem_level", &self.mem_level)
            .field("no_context_takeover", &self.no_context_takeover)
            .field("threshold", &self.threshold)
            .finish()
    }
}

/// What [`Deflater::compress`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compressed {
    /// The compressed payload was appended: send it with RSV1 set.
    Yes,
    /// Nothing was appended (below the threshold, not smaller, or an 8-bit window):
    /// send the payload as it is, RSV1 clear.
    No,
}

impl Deflater {
    /// A deflater for raw DEFLATE with `window_bits` (9..=15; 8 gives one that never
    /// compresses, larger values are cut to 15) and zlib's `mem_level` (1..=9, clamped),
    /// at compression level 6 (zlib's default). Allocates its state once.
    pub fn new(window_bits: u8, mem_level: u8, no_context_takeover: bool) -> Deflater {
        let window_bits = window_bits.min(15);
        let mem_level = mem_level.clamp(1, 9);
        let z = (window_bits >= 9).then(|| {
            zlib_rs::Deflate::new_with_config(zlib_rs::DeflateConfig {
                level: 6,
                window_bits: -i32::from(window_bits),
                mem_level: i32::from(mem_level),
                ..zlib_rs::DeflateConfig::default()
            })
        });
        Deflater {
            z,
            no_context_takeover,
            threshold: 0,
            window_bits,
            mem_level,
        }
    }

    /// The same deflater, leaving messages shorter than `threshold` bytes uncompressed.
    pub fn with_threshold(mut self, threshold: usize) -> Deflater {
        self.threshold = threshold;
        self
    }

    /// Whether the stream restarts with every message (no context takeover).
    pub fn no_context_takeover(&self) -> bool {
        self.no_context_takeover
    }

    /// The window this deflater writes with (8 means it never compresses).
    pub fn window_bits(&self) -> u8 {
        self.window_bits
    }

    /// Forgets the context: the next message starts a fresh stream. Always allowed
    /// (the peer's inflater keeps its window either way).
    pub fn reset(&mut self) {
        if let Some(z) = self.z.as_mut() {
            z.reset();
        }
    }

    /// Compresses one whole message payload and appends it to `out`, without the
    /// trailing `00 00 ff ff`.
    ///
    /// Returns [`Compressed::No`] with `out` unchanged when the payload is below the
    /// threshold, when compression would not make it smaller, or for an 8-bit window.
    /// After a message that was compressed but is then sent uncompressed the stream is
    /// reset (with context takeover the peer never sees that message, so later ones may
    /// not refer to it).
    pub fn compress(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Compressed {
        let Some(z) = self.z.as_mut() else {
            return Compressed::No;
        };
        if payload.len() < self.threshold {
            return Compressed::No;
        }
        let start = out.len();
        let ok = sync_flush(z, payload, out, start);
        let n = out.len() - start;
        let smaller = ok
            && n >= TAIL.len()
            && out[out.len() - TAIL.len()..] == TAIL
            && n - TAIL.len() < payload.len().max(1);
        if smaller {
            out.truncate(out.len() - TAIL.len());
        } else {
            out.truncate(start);
        }
        if self.no_context_takeover || !smaller {
            z.reset();
        }
        if smaller {
            Compressed::Yes
        } else {
            Compressed::No
        }
    }
}

/// Deflates `input` with a sync flush into `out` (from `start` on). `false` on a zlib
/// error, which a valid stream does not produce.
fn sync_flush(z: &mut zlib_rs::Deflate, input: &[u8], out: &mut Vec<u8>, start: usize) -> bool {
    // a sync flush of n bytes rarely needs more than n + 5 per 16 KiB block + 6
    let mut room = input.len() + input.len() / 1024 + 32;
    let mut consumed = 0usize;
    let mut len = start;
    loop {
        out.resize(len + room, 0);
        let before_in = z.total_in();
        let before_out = z.total_out();
        let r = z.compress(&input[consumed..], &mut out[len..], DeflateFlush::SyncFlush);
        consumed += (z.total_in() - before_in) as usize;
        let produced = (z.total_out() - before_out) as usize;
        len += produced;
        match r {
            Ok(_) if produced < room && consumed == input.len() => break,
            Ok(_) => room = room.max(4096),
            Err(_) => {
                out.truncate(len);
                return false;
            }
        }
    }
    out.truncate(len);
    true
}

/// Why an inflated message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InflateError {
    /// The message inflates past the size limit (close 1009).
    TooLarge,
    /// Not a valid DEFLATE stream (close 1007).
    Corrupt,
    /// A text message inflates to invalid UTF-8 (close 1007).
    InvalidUtf8,
}

/// The decompressor of one direction.
///
/// It always inflates with a 15-bit window: zlib-rs allocates the full 32 KiB window
/// whatever the window bits (so a smaller one would save nothing), and the largest
/// window inflates every conforming stream, including zlib peers that agreed on 8 bits
/// and (as zlib does) wrote with 9.
///
/// A message is inflated within one call of `Connection::poll_read_with` (its
/// compressed fragments wait in the assembly buffer until the last one is in), so an
/// inflater that resets per message can be shared by every connection of a worker.
pub struct Inflater {
    z: zlib_rs::Inflate,
    reset_per_message: bool,
    /// Reset before the next message: the last one ended the stream (BFINAL) or failed.
    dirty: bool,
    /// Output of the current message so far.
    produced: usize,
    /// The current message ended the DEFLATE stream; later input is ignored.
    ended: bool,
}

impl core::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Inflater")
            .field("reset_per_message", &self.reset_per_message)
            .field("produced", &self.produced)
            .finish()
    }
}

/// Where a piece of compressed input lives.
#[derive(Clone, Copy)]
enum Input<'s> {
    Slice(&'s [u8]),
    /// `out[from..to]`: compressed bytes kept in front of where the output goes.
    Prefix(usize, usize),
}

impl Inflater {
    /// An inflater; `reset_per_message` when the peer does not take over its context
    /// (or when the inflater is shared by several connections). Allocates its state
    /// once.
    pub fn new(reset_per_message: bool) -> Inflater {
        Inflater {
            z: zlib_rs::Inflate::new(false, 15),
            reset_per_message,
            dirty: false,
            produced: 0,
            ended: false,
        }
    }

    /// Whether the stream restarts with every message.
    pub fn resets_per_message(&self) -> bool {
        self.reset_per_message
    }

    /// Starts a message: resets the stream first if this inflater resets per message,
    /// or if the last message ended the stream or failed.
    pub fn begin(&mut self) {
        if self.reset_per_message || self.dirty {
            self.z.reset(false);
            self.dirty = false;
        }
        self.produced = 0;
        self.ended = false;
    }

    /// Inflates one piece of the current message's compressed payload, appending the
    /// output to `out` in steps of at most [`INFLATE_STEP`] bytes. Fails as soon as the
    /// message's output passes `max_message` (then `out` holds `max_message + 1` bytes
    /// of it, and its capacity grew by at most `max_message` plus one step) or, with
    /// `utf8`, as soon as the output cannot be UTF-8.
    pub fn feed(
        &mut self,
        piece: &[u8],
        out: &mut Vec<u8>,
        max_message: usize,
        utf8: Option<&mut StreamingUtf8>,
    ) -> Result<(), InflateError> {
        self.run(Input::Slice(piece), out, max_message, utf8)
    }

    /// Like [`feed`](Self::feed) for compressed bytes that sit in `out[from..to]`
    /// (before the output, which is appended after `out.len()`).
    pub(crate) fn feed_prefix(
        &mut self,
        from: usize,
        to: usize,
        out: &mut Vec<u8>,
        max_message: usize,
        utf8: Option<&mut StreamingUtf8>,
    ) -> Result<(), InflateError> {
        self.run(Input::Prefix(from, to), out, max_message, utf8)
    }

    /// Ends the current message: inflates the `00 00 ff ff` tail the sender stripped.
    /// After it the output is complete (a UTF-8 validator passed to the feeds still
    /// needs its `finish`). With `reset_per_message`, the stream restarts at the next
    /// [`begin`](Self::begin).
    pub fn finish(
        &mut self,
        out: &mut Vec<u8>,
        max_message: usize,
        utf8: Option<&mut StreamingUtf8>,
    ) -> Result<(), InflateError> {
        self.run(Input::Slice(&TAIL), out, max_message, utf8)?;
        if self.ended {
            self.dirty = true;
        }
        Ok(())
    }

    /// A whole message in one call: [`begin`](Self::begin), a
    /// [`feed`](Self::feed) per piece, [`finish`](Self::finish).
    pub fn inflate_message(
        &mut self,
        pieces: &[&[u8]],
        out: &mut Vec<u8>,
        max_message: usize,
    ) -> Result<(), InflateError> {
        self.begin();
        for p in pieces {
            self.feed(p, out, max_message, None)?;
        }
        self.finish(out, max_message, None)
    }

    fn run(
        &mut self,
        input: Input<'_>,
        out: &mut Vec<u8>,
        max_message: usize,
        mut utf8: Option<&mut StreamingUtf8>,
    ) -> Result<(), InflateError> {
        let r = self.run_inner(input, out, max_message, &mut utf8);
        if r.is_err() {
            self.dirty = true;
        }
        r
    }

    fn run_inner(
        &mut self,
        input: Input<'_>,
        out: &mut Vec<u8>,
        max_message: usize,
        utf8: &mut Option<&mut StreamingUtf8>,
    ) -> Result<(), InflateError> {
        let in_len = match input {
            Input::Slice(s) => s.len(),
            Input::Prefix(from, to) => to - from,
        };
        let mut consumed = 0usize;
        // the first step is sized after the input (text inflates ~3-5x), so a small
        // message does not zero a whole step; later ones are full steps
        let mut step = in_len.saturating_mul(4).clamp(256, INFLATE_STEP);
        while !self.ended {
            // room for one step, never past max_message + 1 for this message: one
            // byte over the limit is enough to know it is over
            let room = step.min(max_message.saturating_add(1) - self.produced.min(max_message));
            let len = out.len();
            if out.capacity() < len + room {
                // grow geometrically, but never past what the limit allows
                let cap = out.capacity().max(len);
                let bound = len + max_message.saturating_add(1).saturating_sub(self.produced);
                let want = (cap.saturating_mul(2)).clamp(len + room, bound.max(len + room));
                out.reserve_exact(want - len);
            }
            out.resize(len + room, 0);
            let before_in = self.z.total_in();
            let before_out = self.z.total_out();
            let r = match input {
                Input::Slice(s) => {
                    self.z
                        .decompress(&s[consumed..], &mut out[len..], InflateFlush::SyncFlush)
                }
                Input::Prefix(from, to) => {
                    let (src, dst) = out.split_at_mut(len);
                    self.z
                        .decompress(&src[from + consumed..to], dst, InflateFlush::SyncFlush)
                }
            };
            let took = (self.z.total_in() - before_in) as usize;
            let made = (self.z.total_out() - before_out) as usize;
            consumed += took;
            out.truncate(len + made);
            self.produced += made;
            let status = r.map_err(|_| InflateError::Corrupt)?;
            if self.produced > max_message {
                return Err(InflateError::TooLarge);
            }
            if let Some(v) = utf8.as_deref_mut() {
                v.feed(&out[len..]).map_err(|_| InflateError::InvalidUtf8)?;
            }
            match status {
                Status::StreamEnd => self.ended = true,
                // output full: there may be more to come from the input already taken
                _ if made == room => step = INFLATE_STEP,
                // all input taken and the output not full: this piece is done
                _ if consumed == in_len => break,
                // no progress with input left and room to spare cannot happen with a
                // sane stream; refuse rather than loop
                _ if took == 0 && made == 0 => return Err(InflateError::Corrupt),
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
