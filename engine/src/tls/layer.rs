//! One connection's TLS as a [`Layer`]: rustls's unbuffered connection, over buffers
//! the layer owns (and frees when idle).
//!
//! ```text
//!  receive buffer ──(whole records decrypted in place)──► plaintext ──► plain
//!        └─ a partial record waits in `inbuf` (freed once it is used)
//!  plain frames ──► `stage` ──(one encrypt per flush, 16 KiB records)──► wire
//!  handshake messages, alerts, close_notify ──► `out` ──► wire
//! ```
//!
//! rustls's buffered connection keeps a receive buffer of at least 4 KiB for the
//! connection's life (grown and shrunk in 4 KiB steps, zeroed and copied as it goes) and
//! encrypts each write into a record of its own; here nothing is held between messages,
//! records are decrypted where the driver put them, and what the protocol queued in a
//! loop iteration (a frame's header and its payload, several frames) goes out as few
//! full records as it fills.

use std::fmt;

use rustls::client::UnbufferedClientConnection;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, UnbufferedStatus, WriteTraffic,
};

use crate::layer::{Layer, LayerError, TlsInfo};

/// What a server answers, in plain text, to a plain HTTP request on its TLS port.
const PLAIN_ON_TLS: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\
Content-Length: 61\r\nConnection: close\r\n\r\n\
This port speaks TLS: connect with wss:// (or https://).\r\n\r\n";

pub(crate) enum Conn {
    Server(UnbufferedServerConnection),
    Client(UnbufferedClientConnection),
}

impl Conn {
    /// One call into rustls over `buf`, handled by [`step`].
    fn step(
        &mut self,
        buf: &mut [u8],
        at: &mut usize,
        io: &mut Io<'_>,
    ) -> Result<Step, LayerError> {
        match self {
            Conn::Server(c) => step(c.process_tls_records(buf), at, io),
            Conn::Client(c) => step(c.process_tls_records(buf), at, io),
        }
    }
}

/// One connection's TLS: a rustls unbuffered connection behind the [`Layer`] interface.
pub struct TlsLayer {
    conn: Conn,
    /// Received bytes not processed yet: a partial record (or a handshake message
    /// spanning records). Empty (no allocation) between messages.
    inbuf: Vec<u8>,
    /// TLS bytes the layer made itself (handshake messages, alerts, close_notify), to
    /// go out before anything else at the next flush.
    out: Vec<u8>,
    /// Plaintext queued by the protocol, encrypted at the next flush (or once the
    /// handshake allows it).
    stage: Vec<u8>,
    /// The handshake is done: application data may be sent.
    open: bool,
    /// A server that has not seen the client's first record yet.
    first: bool,
    /// Failed: nothing more is read or sent but the alert (or `raw`).
    failed: bool,
    /// The peer sent `close_notify`.
    peer_closed: bool,
    /// `close_notify` is owed once the staged plaintext is out.
    closing: bool,
    /// Plain bytes to send instead of TLS (the answer to plain HTTP).
    raw: Option<&'static [u8]>,
    /// The host name the client asked for (server side).
    sni: Option<Box<str>>,
}

impl fmt::Debug for TlsLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsLayer")
            .field("server", &matches!(self.conn, Conn::Server(_)))
            .field("open", &self.open)
            .field("failed", &self.failed)
            .finish()
    }
}

/// How one call into rustls ended.
enum Step {
    /// Call again.
    More,
    /// Nothing more to do with these bytes (what is left is a partial record).
    Done,
}

/// Per-record overhead of TLS 1.3 and 1.2 AEAD records, with room: header 5, content
/// type 1, tag 16 (1.2: explicit nonce 8 + tag 16).
const RECORD_OVERHEAD: usize = 40;
/// Largest plaintext of one record.
const RECORD_PLAIN: usize = 16 * 1024;

/// Encrypts `data` into `wire` (as many records as it takes).
fn encrypt_into<Data>(
    w: &mut WriteTraffic<'_, Data>,
    data: &[u8],
    wire: &mut Vec<u8>,
) -> Result<(), LayerError> {
    let mut need = data.len() + (data.len() / RECORD_PLAIN + 1) * RECORD_OVERHEAD;
    loop {
        let at = wire.len();
        wire.resize(at + need, 0);
        match w.encrypt(data, &mut wire[at..]) {
            Ok(n) => {
                wire.truncate(at + n);
                return Ok(());
            }
            Err(EncryptError::InsufficientSize(s)) if s.required_size > need => {
                wire.truncate(at);
                need = s.required_size;
            }
            Err(e) => {
                wire.truncate(at);
                return Err(LayerError(format!("TLS: {e}")));
            }
        }
    }
}

/// What one call into rustls may touch besides the connection.
struct Io<'a> {
    /// Decrypted application data goes here.
    plain: &'a mut Vec<u8>,
    /// Handshake messages and alerts go here.
    out: &'a mut Vec<u8>,
    /// Staged plaintext, encrypted once the handshake allows it...
    stage: &'a mut Vec<u8>,
    /// ...into this buffer (`out` when `None`), followed by `app`.
    dst: Option<&'a mut Vec<u8>>,
    /// Plaintext to encrypt after the staged bytes (straight from the caller's buffer).
    app: &'a [u8],
    /// `app` was encrypted.
    app_sent: bool,
    open: bool,
    peer_closed: bool,
    closing: bool,
}

/// Handles one status from rustls.
fn step<Data>(
    st: UnbufferedStatus<'_, '_, Data>,
    at: &mut usize,
    io: &mut Io<'_>,
) -> Result<Step, LayerError> {
    *at += st.discard;
    let state = st.state.map_err(|e| LayerError(format!("TLS: {e}")))?;
    Ok(match state {
        ConnectionState::ReadTraffic(mut r) => {
            while let Some(rec) = r.next_record() {
                let rec = rec.map_err(|e| LayerError(format!("TLS: {e}")))?;
                io.plain.extend_from_slice(rec.payload);
            }
            Step::More
        }
        ConnectionState::EncodeTlsData(mut e) => {
            let mut need = 4096;
            loop {
                let len = io.out.len();
                io.out.resize(len + need, 0);
                match e.encode(&mut io.out[len..]) {
                    Ok(n) => {
                        io.out.truncate(len + n);
                        break;
                    }
                    Err(EncodeError::InsufficientSize(s)) if s.required_size > need => {
                        io.out.truncate(len);
                        need = s.required_size;
                    }
                    Err(_) => {
                        io.out.truncate(len);
                        break;
                    }
                }
            }
            Step::More
        }
        ConnectionState::TransmitTlsData(t) => {
            // the bytes in `out` go at the next flush
            t.done();
            Step::More
        }
        ConnectionState::WriteTraffic(mut w) => {
            io.open = true;
            if !io.out.is_empty() {
                // what rustls made first goes first
                if let Some(d) = io.dst.as_deref_mut() {
                    d.append(io.out);
                }
            }
            let dst = match io.dst.as_deref_mut() {
                Some(d) => d,
                None => &mut *io.out,
            };
            if !io.stage.is_empty() {
                encrypt_into(&mut w, io.stage, dst)?;
                io.stage.clear();
            }
            if !io.app.is_empty() && !io.app_sent {
                encrypt_into(&mut w, io.app, dst)?;
                io.app_sent = true;
            }
            if io.closing {
                io.closing = false;
                let at = dst.len();
                dst.resize(at + RECORD_OVERHEAD + 8, 0);
                match w.queue_close_notify(&mut dst[at..]) {
                    Ok(n) => dst.truncate(at + n),
                    Err(_) => dst.truncate(at),
                }
            }
            Step::Done
        }
        ConnectionState::PeerClosed => {
            io.peer_closed = true;
            Step::Done
        }
        // BlockedHandshake (more bytes needed), Closed, ReadEarlyData (never: early data
        // is not enabled) and states of later versions
        _ => Step::Done,
    })
}

impl TlsLayer {
    pub(crate) fn new(conn: Conn) -> TlsLayer {
        let server = matches!(conn, Conn::Server(_));
        let mut l = TlsLayer {
            conn,
            inbuf: Vec::new(),
            out: Vec::new(),
            stage: Vec::new(),
            open: false,
            first: server,
            failed: false,
            peer_closed: false,
            closing: false,
            raw: None,
            sni: None,
        };
        if !server {
            // the ClientHello, into `out`
            let mut none = Vec::new();
            if l.run(&mut [], &mut none, None, &[]).is_err() {
                l.failed = true;
            }
        }
        l
    }

    /// Runs rustls over `buf` until it needs more bytes; returns how many bytes of
    /// `buf` it is done with (the rest must come back, first, with the next bytes).
    /// Staged plaintext is encrypted to `dst` (or `out`) once the handshake allows.
    /// `app` (with `dst`) is encrypted after the staged bytes if the handshake allows
    /// it; the second value says whether it was.
    fn run(
        &mut self,
        buf: &mut [u8],
        plain: &mut Vec<u8>,
        dst: Option<&mut Vec<u8>>,
        app: &[u8],
    ) -> Result<(usize, bool), LayerError> {
        let mut at = 0;
        let mut io = Io {
            plain,
            out: &mut self.out,
            stage: &mut self.stage,
            dst,
            app,
            app_sent: false,
            open: self.open,
            peer_closed: self.peer_closed,
            closing: self.closing,
        };
        let r = loop {
            match self.conn.step(&mut buf[at..], &mut at, &mut io) {
                Ok(Step::More) => {}
                Ok(Step::Done) => break Ok(at),
                Err(e) => break Err(e),
            }
        };
        if r.is_err() {
            // the alert rustls queued for the failure, into `out`: one more call, with
            // the bytes it has not discarded (rustls's handshake joiner keeps positions
            // in them), which hands over the queued alert before it reads anything
            io.dst = None;
            let from = at.min(buf.len());
            let _ = self.conn.step(&mut buf[from..], &mut 0, &mut io);
        } else if let Some(d) = io.dst.as_deref_mut() {
            d.append(io.out);
        }
        let app_sent = io.app_sent;
        (self.open, self.peer_closed, self.closing) = (io.open, io.peer_closed, io.closing);
        self.failed |= r.is_err();
        r.map(|used| (used, app_sent))
    }

    /// A server's first record, once whole (it starts `buf`): the SNI of its ClientHello.
    fn note_client_hello(&mut self, buf: &[u8]) {
        if !self.first || buf.len() < 5 {
            return;
        }
        let len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
        if buf.len() >= 5 + len {
            self.sni = super::sni::client_hello_sni(buf);
            self.first = false;
        }
    }

    /// Runs rustls over the bytes it has not discarded yet (its handshake joiner keeps
    /// positions in them; they hold no whole record, as decode ran every one, so no
    /// plaintext comes of it), encrypting what is staged, then `app`, into `wire`.
    fn seal(&mut self, wire: &mut Vec<u8>, app: &[u8]) -> Result<bool, LayerError> {
        let mut pending = std::mem::take(&mut self.inbuf);
        let mut none = Vec::new();
        let r = self.run(&mut pending, &mut none, Some(wire), app);
        debug_assert!(none.is_empty(), "decode leaves no whole record behind");
        let (used, sent) = r?;
        if used < pending.len() {
            pending.drain(..used);
            self.inbuf = pending;
        }
        Ok(sent)
    }
}

/// The first bytes of a plain HTTP request: an upper-case method and a space.
pub(crate) fn looks_like_http(b: &[u8]) -> bool {
    let n = b
        .iter()
        .take(8)
        .take_while(|c| c.is_ascii_uppercase())
        .count();
    n >= 3 && b.get(n) == Some(&b' ')
}

impl Layer for TlsLayer {
    fn decode(&mut self, wire: &mut [u8], plain: &mut Vec<u8>) -> Result<(), LayerError> {
        if self.failed || self.peer_closed || wire.is_empty() {
            return Ok(());
        }
        if self.first && self.inbuf.is_empty() && looks_like_http(wire) {
            self.first = false;
            self.failed = true;
            self.raw = Some(PLAIN_ON_TLS);
            return Err(LayerError("plain HTTP on the TLS port".into()));
        }
        if self.inbuf.is_empty() {
            self.note_client_hello(wire);
            let (used, _) = self.run(wire, plain, None, &[])?;
            if used < wire.len() {
                self.inbuf.extend_from_slice(&wire[used..]);
            }
        } else {
            let mut buf = std::mem::take(&mut self.inbuf);
            buf.extend_from_slice(wire);
            self.note_client_hello(&buf);
            let (used, _) = self.run(&mut buf, plain, None, &[])?;
            if used < buf.len() {
                buf.drain(..used);
                self.inbuf = buf;
            }
        }
        Ok(())
    }

    fn encode(&mut self, plain: &[u8], wire: &mut Vec<u8>) -> Result<(), LayerError> {
        if self.failed {
            return Ok(());
        }
        // a whole frame (the out-queue keeps a frame's header and payload together)
        // of at least a record goes straight from the queue into records on the wire;
        // smaller pieces are gathered so that they share records
        if self.open && self.stage.is_empty() && plain.len() >= RECORD_PLAIN {
            wire.append(&mut self.out);
            if self.seal(wire, plain)? {
                return Ok(());
            }
        }
        self.stage.extend_from_slice(plain);
        Ok(())
    }

    fn wants_write(&self) -> bool {
        self.raw.is_some()
            || !self.out.is_empty()
            || (self.open && (!self.stage.is_empty() || self.closing))
    }

    fn flush(&mut self, wire: &mut Vec<u8>) -> Result<(), LayerError> {
        if let Some(raw) = self.raw.take() {
            wire.extend_from_slice(raw);
            return Ok(());
        }
        if self.open && !self.failed && (!self.stage.is_empty() || self.closing) {
            self.seal(wire, &[])?;
        }
        wire.append(&mut self.out);
        // nothing held between messages
        if self.stage.capacity() > 0 && self.stage.is_empty() {
            self.stage = Vec::new();
        }
        if self.out.capacity() > 0 {
            self.out = Vec::new();
        }
        Ok(())
    }

    fn close(&mut self) {
        if !self.failed {
            self.closing = true;
        }
    }

    fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    fn tls(&self) -> Option<TlsInfo> {
        let (c, server): (&rustls::CommonState, bool) = match &self.conn {
            Conn::Server(c) => (c, true),
            Conn::Client(c) => (c, false),
        };
        Some(TlsInfo {
            version: c.protocol_version().and_then(|v| v.as_str()).unwrap_or(""),
            cipher: c
                .negotiated_cipher_suite()
                .and_then(|s| s.suite().as_str())
                .unwrap_or(""),
            resumed: matches!(c.handshake_kind(), Some(rustls::HandshakeKind::Resumed)),
            server_name: if server { self.sni.clone() } else { None },
            alpn: c
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned().into_boxed_str()),
        })
    }
}
