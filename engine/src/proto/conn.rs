//! The per-connection protocol state machine, for both roles, without I/O.
//!
//! # Call order
//! After the opening handshake the runtime makes a [`Connection`] and then, for every
//! batch of received bytes:
//!
//! ```text
//! loop {
//!     match conn.poll_read(&mut buf[pos..], &mut assembly, &mut out) {
//!         Ok((n, Some(event))) => { pos += n; /* hand `event` to the application */ }
//!         Ok((n, None))        => { pos += n; break } // keep buf[pos..] for next time
//!         Err(e)               => { /* a close frame for e is in `out`: flush, close */ }
//!     }
//! }
//! ```
//!
//! * `buf` is owned by the caller and unmasked **in place**; events borrow from it (or
//!   from `assembly` for a message that arrived in fragments), so a message that is
//!   whole in one read reaches the application with no copy.
//! * Bytes left unconsumed are an incomplete frame: the caller keeps them and presents
//!   them again, at the start of `buf`, with more bytes after them. The parts already
//!   unmasked and validated are not processed again (no re-parse from the start).
//! * `out` receives the frames the protocol sends by itself: a pong for each ping, the
//!   echo of a close, the close frame that fails the connection on an error.
//! * Messages the application sends are framed with [`Connection::frame_header`]
//!   (server role: header bytes, then the payload slice unchanged, ready for
//!   `writev`) or [`Connection::write_frame`] (copies, and masks in the client role).
//!
//! # permessage-deflate
//! After negotiating it ([`super::deflate`]) the runtime calls
//! `set_allowed_rsv(RSV1)` and reads with [`Connection::poll_read_with`], passing the
//! [`Inflater`] to use for this call (its own or the worker's shared one). RSV1 is
//! then allowed on the first frame of a data message (on a control or continuation
//! frame it is still 1002). Such a message is inflated into `assembly` once its last
//! frame is in, and the event borrows the inflated bytes; its size limit applies to
//! the inflated size (1009). Compressed messages are sent with
//! [`Connection::write_compressed`]. [`Connection::poll_read`] is `poll_read_with`
//! without an inflater: the uncompressed path pays one branch on the RSV bits.
//!
//! The connection never reads a clock: timeouts (close handshake, idle) are deadlines
//! that the runtime keeps.

use super::close::{parse_close_payload, write_close_payload, CloseCode};
use super::deflate::{Compressed, Deflater, InflateError, Inflater};
use super::error::ProtocolError;
use super::frame::{
    DecodeRules, FrameHeader, OpCode, Status, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, RSV1,
};
use super::mask::apply_mask;
use super::utf8::{self, StreamingUtf8};

/// Which end of the connection this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Accepts connections: expects masked frames, sends unmasked ones.
    Server,
    /// Opens connections: sends masked frames, expects unmasked ones.
    Client,
}

/// The WebSocket ready states (as in the browser API).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ReadyState {
    /// The opening handshake is under way.
    Connecting = 0,
    /// Messages flow both ways.
    Open = 1,
    /// A close frame was sent or received, not both yet.
    Closing = 2,
    /// The close handshake is complete, or the connection failed.
    Closed = 3,
}

/// Size limits, checked from frame headers before any payload is buffered. A
/// connection keeps each in 32 bits: a limit above `u32::MAX` (4 GiB − 1) acts as
/// `u32::MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame payload (1009 past it). Default 16 MiB.
    pub max_frame: u64,
    /// Largest message, all fragments together (1009 past it). Default 16 MiB.
    pub max_message: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: 16 << 20,
            max_message: 16 << 20,
        }
    }
}

/// A data message, borrowed from the receive buffer or the assembly buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message (validated UTF-8).
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

impl<'a> Message<'a> {
    /// The payload bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        match *self {
            Message::Text(s) => s.as_bytes(),
            Message::Binary(b) => b,
        }
    }

    /// The opcode this message is sent with.
    pub fn opcode(&self) -> OpCode {
        match self {
            Message::Text(_) => OpCode::Text,
            Message::Binary(_) => OpCode::Binary,
        }
    }
}

/// Something the peer sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A whole data message.
    Message(Message<'a>),
    /// A ping (a pong has been queued in `out` already, unless closing).
    Ping(&'a [u8]),
    /// A pong.
    Pong(&'a [u8]),
    /// The peer's close frame (the echo has been queued in `out` if we had not sent a
    /// close yet).
    Close {
        /// The status code, if the frame had one.
        code: Option<CloseCode>,
        /// The reason (UTF-8, possibly empty).
        reason: &'a str,
    },
}

/// A frame whose header is parsed and whose payload is partly processed.
#[derive(Clone, Copy, Debug)]
struct Pending {
    header: FrameHeader,
    header_len: u8,
    /// Payload bytes already unmasked (and UTF-8 checked, for text).
    processed: u64,
}

/// A fragmented message in progress (its payload is in `assembly`; still compressed
/// for a compressed message).
#[derive(Clone, Copy, Debug)]
struct Fragmented {
    text: bool,
    compressed: bool,
    len: u64,
}

/// What a connection keeps only while a frame or a message is under way: a frame split
/// across reads, a message in fragments, and the UTF-8 state of its text. Boxed, so that
/// a connection between messages (an idle one above all) does not carry it.
#[derive(Debug, Default)]
struct InMessage {
    pending: Option<Pending>,
    fragmented: Option<Fragmented>,
    utf8: StreamingUtf8,
}

crate::bits::bit_flags! {
    /// A connection's one-bit states.
    ConnFlags:
    /// Our close frame went out.
    close_sent set_close_sent = 1;
    /// The peer's close frame came in.
    close_received set_close_received = 2;
    /// The connection failed on a protocol error.
    failed set_failed = 4;
    /// The assembly buffer holds a message already handed out: clear it first.
    clear_assembly set_clear_assembly = 8;
}

/// The protocol state of one WebSocket connection: 24 bytes between messages (a unit
/// test keeps it so), because an idle connection costs what its state does.
#[derive(Debug)]
pub struct Connection {
    /// The frame or message under way, if any.
    msg: Option<Box<InMessage>>,
    /// [`Limits`], each held in 32 bits (a larger limit acts as `u32::MAX`).
    max_frame: u32,
    max_message: u32,
    /// The masking keys' generator (client role).
    mask_state: u32,
    role: Role,
    state: ReadyState,
    f: ConnFlags,
    allowed_rsv: u8,
}

/// A serialized frame header, ready to be written before its payload.
#[derive(Clone, Copy, Debug)]
pub struct HeaderBytes {
    bytes: [u8; MAX_HEADER_LEN],
    len: u8,
}

impl HeaderBytes {
    /// The header of an unmasked (server) frame of `len` payload bytes, no RSV bits.
    pub fn unmasked(opcode: OpCode, fin: bool, len: usize) -> HeaderBytes {
        Self::new(opcode, fin, len, None)
    }

    /// The header of a masked (client) frame of `len` payload bytes, no RSV bits.
    pub fn masked(opcode: OpCode, fin: bool, len: usize, key: [u8; 4]) -> HeaderBytes {
        Self::new(opcode, fin, len, Some(key))
    }

    fn new(opcode: OpCode, fin: bool, len: usize, mask: Option<[u8; 4]>) -> HeaderBytes {
        let h = FrameHeader {
            fin,
            rsv: 0,
            opcode,
            mask,
            payload_len: len as u64,
        };
        let mut bytes = [0u8; MAX_HEADER_LEN];
        let n = h.encode(&mut bytes);
        HeaderBytes {
            bytes,
            len: n as u8,
        }
    }

    /// The header bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// The header bytes followed by zeros up to [`MAX_HEADER_LEN`]: a fixed-size copy
    /// that is cheaper than a variable-length one for a caller that can cut it back.
    pub fn padded(&self) -> &[u8; MAX_HEADER_LEN] {
        &self.bytes
    }
}

/// An attempt to send after the close frame went out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendAfterClose;

impl Connection {
    /// A connection in the OPEN state. `mask_seed` seeds the generator of masking keys
    /// (client role; pass real randomness); it is unused in the server role.
    pub fn new(role: Role, limits: Limits, mask_seed: u64) -> Self {
        let cap = |v: u64| v.min(u64::from(u32::MAX)) as u32;
        Connection {
            msg: None,
            max_frame: cap(limits.max_frame),
            max_message: cap(limits.max_message),
            // xorshift32 must not start at 0
            mask_state: ((mask_seed ^ mask_seed >> 32) as u32) | 1,
            role,
            state: ReadyState::Open,
            f: ConnFlags::default(),
            allowed_rsv: 0,
        }
    }

    /// Lets a negotiated extension own RSV bits (e.g. [`super::frame::RSV1`]).
    pub fn set_allowed_rsv(&mut self, rsv: u8) {
        self.allowed_rsv = rsv;
    }

    /// The role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The ready state.
    pub fn ready_state(&self) -> ReadyState {
        self.state
    }

    /// Whether our close frame has been queued.
    pub fn close_sent(&self) -> bool {
        self.f.close_sent()
    }

    /// Whether the peer's close frame has arrived.
    pub fn close_received(&self) -> bool {
        self.f.close_received()
    }

    /// Whether the connection failed on a protocol error.
    pub fn failed(&self) -> bool {
        self.f.failed()
    }

    /// Both close frames went across and no error occurred.
    pub fn was_clean(&self) -> bool {
        self.f.close_sent() && self.f.close_received() && !self.f.failed()
    }

    /// Whether this side should now close the transport once `out` is flushed: the
    /// close handshake is done or the connection failed (RFC 6455 §7.1.1: the server
    /// closes TCP first; a client waits for the server, up to a deadline).
    pub fn should_close_transport(&self) -> bool {
        self.state == ReadyState::Closed && (self.role == Role::Server || self.f.failed())
    }

    /// Whether a message in fragments is being assembled.
    pub fn is_assembling(&self) -> bool {
        self.fragmented().is_some()
    }

    #[inline]
    fn pending(&self) -> Option<Pending> {
        self.msg.as_ref().and_then(|m| m.pending)
    }

    #[inline]
    fn fragmented(&self) -> Option<Fragmented> {
        self.msg.as_ref().and_then(|m| m.fragmented)
    }

    /// The state of the frame or message under way, made when one starts.
    #[inline]
    fn msg(&mut self) -> &mut InMessage {
        self.msg.get_or_insert_with(Box::default)
    }

    fn set_pending(&mut self, p: Option<Pending>) {
        match (&mut self.msg, p) {
            (Some(m), p) => m.pending = p,
            (None, None) => {}
            (None, p) => self.msg().pending = p,
        }
    }

    fn set_fragmented(&mut self, f: Option<Fragmented>) {
        match (&mut self.msg, f) {
            (Some(m), f) => m.fragmented = f,
            (None, None) => {}
            (None, f) => self.msg().fragmented = f,
        }
    }

    /// Whether a [`poll_read_with`](Self::poll_read_with) of `buf` may need an
    /// inflater: a compressed message is under way, or `buf` starts a frame with RSV1.
    /// A runtime that makes decompressors on demand asks this first.
    pub fn may_inflate(&self, buf: &[u8]) -> bool {
        if self.fragmented().is_some_and(|f| f.compressed) {
            return true;
        }
        match self.pending() {
            Some(p) => p.header.rsv & RSV1 != 0,
            None => buf.first().is_some_and(|b| b & RSV1 != 0),
        }
    }

    fn rules(&self) -> DecodeRules {
        DecodeRules {
            expect_masked: self.role == Role::Server,
            allowed_rsv: self.allowed_rsv,
            max_frame: u64::from(self.max_frame),
        }
    }

    fn next_mask(&mut self) -> [u8; 4] {
        // xorshift32 with a multiplicative output mix: fast, and seeded by the caller
        // with real randomness
        let mut x = self.mask_state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask_state = x;
        x.wrapping_mul(0x9e37_79b9).to_ne_bytes()
    }

    fn update_state(&mut self) {
        let f = self.f;
        self.state = if f.close_sent() && (f.close_received() || f.failed()) {
            ReadyState::Closed
        } else if f.close_sent() || f.close_received() {
            ReadyState::Closing
        } else {
            ReadyState::Open
        };
    }

    /// Fails the connection: queues a close frame with the error's code.
    fn fail(&mut self, e: ProtocolError, out: &mut Vec<u8>) -> ProtocolError {
        if !self.f.close_sent() {
            self.push_close(Some(e.close_code()), e.as_str(), out);
        }
        self.f.set_failed(true);
        self.msg = None;
        self.update_state();
        e
    }

    fn push_close(&mut self, code: Option<CloseCode>, reason: &str, out: &mut Vec<u8>) {
        let mut payload = [0u8; 125];
        let n = write_close_payload(code, reason, &mut payload);
        self.push_frame(OpCode::Close, true, &payload[..n], out);
        self.f.set_close_sent(true);
    }

    fn push_frame(&mut self, opcode: OpCode, fin: bool, payload: &[u8], out: &mut Vec<u8>) {
        let mask = match self.role {
            Role::Client => Some(self.next_mask()),
            Role::Server => None,
        };
        push_plain_frame(opcode, fin, mask, payload, out);
    }

    /// Processes received bytes; see the module docs for the call order.
    ///
    /// Returns the bytes consumed and the next event, or `None` when the rest of `buf`
    /// is an incomplete frame. On an error a close frame carrying the error's close code
    /// has been appended to `out`, the state is CLOSED, and later input is ignored.
    ///
    /// A compressed message (RSV1, allowed only after `set_allowed_rsv(RSV1)`) fails
    /// the connection with [`ProtocolError::MissingInflater`] here: use
    /// [`poll_read_with`](Self::poll_read_with).
    // inlined into the runtime's frame loop: called once per frame (an out-of-line
    // call cost 13 instructions per pipelined 20 B echo, callgrind)
    #[inline(always)]
    pub fn poll_read<'a>(
        &mut self,
        buf: &'a mut [u8],
        assembly: &'a mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<(usize, Option<Event<'a>>), ProtocolError> {
        self.read(buf, assembly, out, None)
    }

    /// [`poll_read`](Self::poll_read) for a connection that negotiated
    /// permessage-deflate: `inflater` inflates the compressed messages completed in
    /// this call (the runtime's choice: the connection's own, or a worker's shared one
    /// that resets per message). A compressed message is inflated into `assembly` when
    /// its last frame is in (earlier fragments wait there compressed, so each piece is
    /// inflated exactly once, and all in this call), in steps of
    /// [`super::deflate::INFLATE_STEP`]; its text is checked as it is inflated. Past
    /// `max_message` inflated bytes it fails with 1009, on invalid compressed data
    /// with 1007.
    pub fn poll_read_with<'a>(
        &mut self,
        buf: &'a mut [u8],
        assembly: &'a mut Vec<u8>,
        out: &mut Vec<u8>,
        inflater: Option<&mut Inflater>,
    ) -> Result<(usize, Option<Event<'a>>), ProtocolError> {
        self.read(buf, assembly, out, inflater)
    }

    /// Inflates a compressed message: the compressed fragments in `assembly[..prefix]`,
    /// then `last`, then the tail; the output goes after `prefix`.
    #[cold]
    #[inline(never)]
    fn inflate_into(
        &mut self,
        inflater: Option<&mut Inflater>,
        prefix: usize,
        last: &[u8],
        assembly: &mut Vec<u8>,
        text: bool,
    ) -> Result<(), ProtocolError> {
        let inflater = inflater.ok_or(ProtocolError::MissingInflater)?;
        let max = self.max_message as usize;
        let mut utf8 = StreamingUtf8::new();
        let r = (|| {
            inflater.begin();
            if prefix > 0 {
                inflater.feed_prefix(0, prefix, assembly, max, text.then_some(&mut utf8))?;
            }
            inflater.feed(last, assembly, max, text.then_some(&mut utf8))?;
            inflater.finish(assembly, max, text.then_some(&mut utf8))
        })();
        r.map_err(|e| match e {
            InflateError::TooLarge => ProtocolError::MessageTooLarge,
            InflateError::Corrupt => ProtocolError::InvalidCompressedData,
            InflateError::InvalidUtf8 => ProtocolError::InvalidUtf8,
        })?;
        if text && utf8.finish().is_err() {
            return Err(ProtocolError::InvalidUtf8);
        }
        Ok(())
    }

    #[inline(always)]
    fn read<'a>(
        &mut self,
        buf: &'a mut [u8],
        assembly: &'a mut Vec<u8>,
        out: &mut Vec<u8>,
        inflater: Option<&mut Inflater>,
    ) -> Result<(usize, Option<Event<'a>>), ProtocolError> {
        let r = self.read_frames(buf, assembly, out, inflater);
        // between messages (no frame split, no fragments) the message state goes
        if self
            .msg
            .as_ref()
            .is_some_and(|m| m.pending.is_none() && m.fragmented.is_none())
        {
            self.msg = None;
        }
        r
    }

    #[inline(always)]
    fn read_frames<'a>(
        &mut self,
        buf: &'a mut [u8],
        assembly: &'a mut Vec<u8>,
        out: &mut Vec<u8>,
        mut inflater: Option<&mut Inflater>,
    ) -> Result<(usize, Option<Event<'a>>), ProtocolError> {
        if self.f.clear_assembly() {
            assembly.clear();
            self.f.set_clear_assembly(false);
        }
        if self.f.failed() || self.f.close_received() {
            // nothing after a close frame or a failure is processed
            return Ok((buf.len(), None));
        }
        let mut pos = 0usize;
        loop {
            // The common case first, in a few instructions: a whole unfragmented text or
            // binary frame of less than 64 KiB, with no extension bit, while no frame or
            // message is in progress. Anything else takes the general path below.
            if self.msg.is_none() {
                if let Some((start, next, text)) = self.small_frame(buf, pos) {
                    let payload: &'a [u8] = &buf[start..next];
                    if !text {
                        return Ok((next, Some(Event::Message(Message::Binary(payload)))));
                    }
                    return match utf8::validate(payload) {
                        Ok(s) => Ok((next, Some(Event::Message(Message::Text(s))))),
                        Err(_) => Err(self.fail(ProtocolError::InvalidUtf8, out)),
                    };
                }
            }
            let (p, whole_at_first_sight) = match self.pending() {
                Some(p) => (p, false),
                None => match FrameHeader::decode(&buf[pos..], &self.rules()) {
                    Ok(Status::Partial) => return Ok((pos, None)),
                    Err(e) => return Err(self.fail(e, out)),
                    Ok(Status::Complete((header, header_len))) => {
                        if let Err(e) = self.check_sequence(&header) {
                            return Err(self.fail(e, out));
                        }
                        let p = Pending {
                            header,
                            header_len: header_len as u8,
                            processed: 0,
                        };
                        let whole = (buf.len() - pos - header_len) as u64 >= header.payload_len;
                        (p, whole)
                    }
                },
            };
            let h = p.header;
            let start = pos + p.header_len as usize;
            let avail = (buf.len() - start) as u64;
            let (text, compressed) = match h.opcode {
                OpCode::Text => (true, h.rsv & RSV1 != 0),
                OpCode::Binary => (false, h.rsv & RSV1 != 0),
                OpCode::Continuation => self
                    .fragmented()
                    .map_or((false, false), |f| (f.text, f.compressed)),
                _ => (false, false),
            };
            // compressed text is checked once inflated
            let plain_text = text && !compressed;
            let single = h.fin && h.opcode != OpCode::Continuation;
            if avail < h.payload_len {
                // incomplete frame: unmask and check what has arrived, keep the rest
                let seg = &mut buf[start + p.processed as usize..];
                if let Some(key) = h.mask {
                    apply_mask(seg, key, p.processed as usize);
                }
                if plain_text && self.msg().utf8.feed(seg).is_err() {
                    return Err(self.fail(ProtocolError::InvalidUtf8, out));
                }
                self.set_pending(Some(Pending {
                    processed: avail,
                    ..p
                }));
                return Ok((pos, None));
            }
            self.set_pending(None);
            let next = start + h.payload_len as usize;
            let fresh = &mut buf[start + p.processed as usize..next];
            if let Some(key) = h.mask {
                apply_mask(fresh, key, p.processed as usize);
            }
            // a text frame that is a whole message seen whole at once is validated in one
            // pass below; anything else goes through the streaming validator
            if plain_text
                && !(single && whole_at_first_sight)
                && self.msg().utf8.feed(fresh).is_err()
            {
                return Err(self.fail(ProtocolError::InvalidUtf8, out));
            }
            pos = next;
            // Each arm that hands out a borrow of `buf` or `assembly` returns at once, so
            // the borrow is made only on the returning path.
            match h.opcode {
                OpCode::Ping => {
                    let payload: &'a [u8] = &buf[start..next];
                    if !self.f.close_sent() {
                        self.push_frame(OpCode::Pong, true, payload, out);
                    }
                    return Ok((pos, Some(Event::Ping(payload))));
                }
                OpCode::Pong => return Ok((pos, Some(Event::Pong(&buf[start..next])))),
                OpCode::Close => {
                    let payload: &'a [u8] = &buf[start..next];
                    let (code, reason) = match parse_close_payload(payload) {
                        Ok(Some((c, r))) => (Some(c), r),
                        Ok(None) => (None, ""),
                        Err(e) => return Err(self.fail(e, out)),
                    };
                    self.f.set_close_received(true);
                    self.set_fragmented(None);
                    if !self.f.close_sent() {
                        // echo the code (RFC 6455 §5.5.1) and the reason, as browsers,
                        // Node `ws` and Python `websockets` do
                        self.push_close(code, reason, out);
                    }
                    self.update_state();
                    return Ok((pos, Some(Event::Close { code, reason })));
                }
                OpCode::Text | OpCode::Binary if h.fin && compressed => {
                    assembly.clear();
                    let r =
                        self.inflate_into(inflater.take(), 0, &buf[start..next], assembly, text);
                    if let Err(e) = r {
                        return Err(self.fail(e, out));
                    }
                    self.f.set_clear_assembly(true);
                    return Ok((pos, Some(Event::Message(inflated(assembly, 0, text)))));
                }
                OpCode::Text | OpCode::Binary if h.fin => {
                    let payload: &'a [u8] = &buf[start..next];
                    if !text {
                        return Ok((pos, Some(Event::Message(Message::Binary(payload)))));
                    }
                    let finished = whole_at_first_sight || self.msg().utf8.finish().is_ok();
                    return match utf8::validate(payload) {
                        Ok(s) if finished => Ok((pos, Some(Event::Message(Message::Text(s))))),
                        _ => Err(self.fail(ProtocolError::InvalidUtf8, out)),
                    };
                }
                OpCode::Text | OpCode::Binary => {
                    assembly.clear();
                    assembly.extend_from_slice(&buf[start..next]);
                    self.set_fragmented(Some(Fragmented {
                        text,
                        compressed,
                        len: h.payload_len,
                    }));
                }
                OpCode::Continuation if h.fin && compressed => {
                    self.set_fragmented(None);
                    let prefix = assembly.len();
                    let r = self.inflate_into(
                        inflater.take(),
                        prefix,
                        &buf[start..next],
                        assembly,
                        text,
                    );
                    if let Err(e) = r {
                        return Err(self.fail(e, out));
                    }
                    self.f.set_clear_assembly(true);
                    return Ok((pos, Some(Event::Message(inflated(assembly, prefix, text)))));
                }
                OpCode::Continuation => {
                    assembly.extend_from_slice(&buf[start..next]);
                    let Some(f) = self.msg.as_mut().and_then(|m| m.fragmented.as_mut()) else {
                        unreachable!("check_sequence refuses a continuation with no message")
                    };
                    f.len += h.payload_len;
                    if h.fin {
                        self.set_fragmented(None);
                        self.f.set_clear_assembly(true);
                        let whole: &'a [u8] = assembly;
                        if !text {
                            return Ok((pos, Some(Event::Message(Message::Binary(whole)))));
                        }
                        let finished = self.msg().utf8.finish().is_ok();
                        return match utf8::validate(whole) {
                            Ok(s) if finished => Ok((pos, Some(Event::Message(Message::Text(s))))),
                            _ => Err(self.fail(ProtocolError::InvalidUtf8, out)),
                        };
                    }
                }
            }
        }
    }

    /// [`read`](Self::read)'s fast path: is there a whole final text or binary frame
    /// with a 7-bit or a (minimal) 16-bit length and no RSV bit at `buf[pos..]`, masked
    /// as the role expects and within the limits? If so it is unmasked in place, and
    /// its payload's range and whether it is text come back. `None`: not such a frame,
    /// or not all of it here (the general path decides, and refuses what is wrong).
    #[inline(always)]
    fn small_frame(&self, buf: &mut [u8], pos: usize) -> Option<(usize, usize, bool)> {
        let masked = self.role == Role::Server;
        let (&b0, &b1) = (buf.get(pos)?, buf.get(pos + 1)?);
        let len = (b1 & 0x7f) as usize;
        if (b0 != 0x81 && b0 != 0x82) || (b1 & 0x80 != 0) != masked {
            return None;
        }
        if len > 125 {
            return self.medium_frame(buf, pos);
        }
        let start = pos + if masked { 6 } else { 2 };
        let next = start + len;
        if next > buf.len() || len as u32 > self.max_frame.min(self.max_message) {
            return None;
        }
        if masked {
            let key = [buf[pos + 2], buf[pos + 3], buf[pos + 4], buf[pos + 5]];
            apply_mask(&mut buf[start..next], key, 0);
        }
        Some((start, next, b0 == 0x81))
    }

    /// [`Self::small_frame`] for a 16-bit length (126 B to 64 KiB; the general decoder
    /// was about 100 of the server's 1,900 user-space instructions per 1 KiB echo),
    /// apart so that the 7-bit case stays as short as it was. The first two bytes are
    /// checked by the caller. Its tail repeats `small_frame`'s with other constant
    /// offsets on purpose: one shared helper taking the offset cost the 7-bit path 20
    /// instructions a message (callgrind, 20 B echo: 442 -> 462 in `process`).
    #[inline(never)]
    fn medium_frame(&self, buf: &mut [u8], pos: usize) -> Option<(usize, usize, bool)> {
        let masked = self.role == Role::Server;
        if buf[pos + 1] & 0x7f != 126 {
            return None;
        }
        let len = u16::from_be_bytes([*buf.get(pos + 2)?, *buf.get(pos + 3)?]) as usize;
        // a length that fits 7 bits must use them (the general path says 1002)
        if len < 126 {
            return None;
        }
        let start = pos + if masked { 8 } else { 4 };
        let next = start + len;
        if next > buf.len() || len as u32 > self.max_frame.min(self.max_message) {
            return None;
        }
        if masked {
            let key = [buf[pos + 4], buf[pos + 5], buf[pos + 6], buf[pos + 7]];
            apply_mask(&mut buf[start..next], key, 0);
        }
        Some((start, next, buf[pos] == 0x81))
    }

    /// The rules that depend on the state: message sequence and message size; and
    /// RSV1 (permessage-deflate's "compressed" bit, RFC 7692 §6) only on the first
    /// frame of a data message.
    fn check_sequence(&self, h: &FrameHeader) -> Result<(), ProtocolError> {
        if h.rsv & RSV1 != 0 && !matches!(h.opcode, OpCode::Text | OpCode::Binary) {
            return Err(ProtocolError::ReservedBits);
        }
        let max_message = u64::from(self.max_message);
        match (h.opcode, self.fragmented()) {
            (OpCode::Text | OpCode::Binary, Some(_)) => Err(ProtocolError::ExpectedContinuation),
            (OpCode::Continuation, None) => Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Continuation, Some(f)) if f.len + h.payload_len > max_message => {
                Err(ProtocolError::MessageTooLarge)
            }
            (OpCode::Text | OpCode::Binary, None) if h.payload_len > max_message => {
                Err(ProtocolError::MessageTooLarge)
            }
            _ => Ok(()),
        }
    }

    /// The header for a data frame of `len` bytes that the application sends, for the
    /// server role (no mask): write it, then the payload unchanged. Fails after our
    /// close frame went out.
    pub fn frame_header(
        &mut self,
        opcode: OpCode,
        fin: bool,
        len: usize,
    ) -> Result<HeaderBytes, SendAfterClose> {
        if self.f.close_sent() {
            return Err(SendAfterClose);
        }
        debug_assert_eq!(
            self.role,
            Role::Server,
            "client frames need a mask: use write_frame"
        );
        Ok(HeaderBytes::unmasked(opcode, fin, len))
    }

    /// Appends a whole frame (header and payload, masked in the client role) to `out`.
    /// Control frames longer than 125 bytes are cut to 125. Fails after our close
    /// frame went out.
    pub fn write_frame(
        &mut self,
        opcode: OpCode,
        fin: bool,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), SendAfterClose> {
        if self.f.close_sent() {
            return Err(SendAfterClose);
        }
        let payload = if opcode.is_control() {
            &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)]
        } else {
            payload
        };
        self.push_frame(opcode, fin, payload, out);
        if opcode == OpCode::Close {
            self.f.set_close_sent(true);
            self.update_state();
        }
        Ok(())
    }

    /// The header for a data frame of `len` bytes that this side sends, and the mask key
    /// its payload must be masked with (client role; `None` for a server): for a
    /// caller that writes the payload itself. Fails after our close frame went out.
    #[inline]
    pub fn send_header(
        &mut self,
        opcode: OpCode,
        fin: bool,
        len: usize,
    ) -> Result<(HeaderBytes, Option<[u8; 4]>), SendAfterClose> {
        if self.f.close_sent() {
            return Err(SendAfterClose);
        }
        Ok(match self.role {
            Role::Server => (HeaderBytes::unmasked(opcode, fin, len), None),
            Role::Client => {
                let key = self.next_mask();
                (HeaderBytes::masked(opcode, fin, len, key), Some(key))
            }
        })
    }

    /// Appends a whole data message as one frame (masked in the client role): its
    /// payload compressed by `deflater` with RSV1 set, or as it is when the deflater
    /// declines (below its threshold, not smaller). Returns which. A control or
    /// continuation opcode is written uncompressed, as [`write_frame`](Self::write_frame)
    /// does. Fails after our close frame went out.
    pub fn write_compressed(
        &mut self,
        deflater: &mut Deflater,
        opcode: OpCode,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Compressed, SendAfterClose> {
        if !matches!(opcode, OpCode::Text | OpCode::Binary) {
            return self
                .write_frame(opcode, true, payload, out)
                .map(|()| Compressed::No);
        }
        if self.f.close_sent() {
            return Err(SendAfterClose);
        }
        let mask = match self.role {
            Role::Client => Some(self.next_mask()),
            Role::Server => None,
        };
        Ok(write_message_frame(deflater, opcode, payload, mask, out))
    }

    /// Starts the close handshake: queues a close frame (once). The code must be one
    /// that may be sent ([`CloseCode::is_sendable`]); another is sent as 1000.
    pub fn close(&mut self, code: Option<CloseCode>, reason: &str, out: &mut Vec<u8>) {
        if self.f.close_sent() {
            return;
        }
        let code = code.map(|c| {
            if c.is_sendable() {
                c
            } else {
                CloseCode::NORMAL
            }
        });
        self.push_close(code, reason, out);
        self.update_state();
    }
}

/// The message event for inflated bytes in `assembly[from..]` (text already checked
/// while it was inflated; validated again here to borrow it as `&str`).
fn inflated(assembly: &[u8], from: usize, text: bool) -> Message<'_> {
    let bytes = &assembly[from..];
    if !text {
        return Message::Binary(bytes);
    }
    match utf8::validate(bytes) {
        Ok(s) => Message::Text(s),
        // unreachable: the streaming check passed on the same bytes
        Err(_) => Message::Binary(bytes),
    }
}

/// Appends a frame: header, then the payload, masked with `mask` if given.
fn push_plain_frame(
    opcode: OpCode,
    fin: bool,
    mask: Option<[u8; 4]>,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    let h = FrameHeader {
        fin,
        rsv: 0,
        opcode,
        mask,
        payload_len: payload.len() as u64,
    };
    let mut hb = [0u8; MAX_HEADER_LEN];
    let hl = h.encode(&mut hb);
    out.extend_from_slice(&hb[..hl]);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
}

/// Appends one whole data frame: compressed with RSV1 when the deflater compresses it,
/// plain otherwise. The payload is compressed straight into `out` after room for the
/// header its uncompressed length would need (a compressed payload is shorter, so its
/// header is no longer), and moved down only if the header turns out shorter.
pub(crate) fn write_message_frame(
    deflater: &mut Deflater,
    opcode: OpCode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
    out: &mut Vec<u8>,
) -> Compressed {
    let start = out.len();
    let mut h = FrameHeader {
        fin: true,
        rsv: RSV1,
        opcode,
        mask,
        payload_len: payload.len() as u64,
    };
    let room = h.encoded_len();
    out.resize(start + room, 0);
    if deflater.compress(payload, out) == Compressed::No {
        out.truncate(start);
        push_plain_frame(opcode, true, mask, payload, out);
        return Compressed::No;
    }
    let n = out.len() - start - room;
    h.payload_len = n as u64;
    let mut hb = [0u8; MAX_HEADER_LEN];
    let hl = h.encode(&mut hb);
    debug_assert!(hl <= room);
    if hl < room {
        out.copy_within(start + room.., start + hl);
        out.truncate(start + hl + n);
    }
    out[start..start + hl].copy_from_slice(&hb[..hl]);
    if let Some(key) = mask {
        apply_mask(&mut out[start + hl..], key, 0);
    }
    Compressed::Yes
}

#[cfg(test)]
mod tests;
