//! permessage-deflate (RFC 7692), without I/O: negotiation and the codec.
//!
//! ```text
//!  handshake ──► negotiate_server(req.extensions(), &config) ──► Agreement { params, response }
//!                 (client: ClientOffer::header_value / check_response)     │
//!                                                                          ▼
//!  conn.set_allowed_rsv(RSV1)      write_accept_response(.., Some(response.as_str()), ..)
//!
//!  receive: conn.poll_read_with(buf, assembly, out, Some(&mut inflater))
//!           RSV1 on a message's first frame ─► its payload (all fragments) is inflated
//!           into `assembly` in 16 KiB steps, UTF-8 checked as it comes, 1009 past
//!           max_message, 1007 if corrupt
//!  send:    conn.write_compressed(&mut deflater, opcode, payload, out)   (one connection)
//!           write_server_message(&mut deflater, opcode, payload, out)   (a broadcast,
//!           compressed once, for every receiver that agreed on the same parameters)
//! ```
//!
//! # Who owns what
//! * [`DeflateMode::Shared`]: both directions without context takeover. One [`Deflater`]
//!   per agreed server window (at most 7: 9..=15) and one [`Inflater`] (reset per
//!   message) per worker serve every connection; an idle connection holds nothing.
//! * [`DeflateMode::Dedicated`]: a [`Deflater`] and an [`Inflater`] per connection,
//!   made with [`DeflateParams::deflater`] and [`DeflateParams::inflater`]; each
//!   resets per message only where the agreement says so.
//!
//! A message is inflated within one `poll_read_with` call (its earlier fragments wait,
//! compressed, in the assembly buffer), so a shared inflater is never left half-way
//! through one connection's message when another connection uses it.

mod codec;
mod negotiate;

pub use codec::{Compressed, Deflater, InflateError, Inflater, INFLATE_STEP, TAIL};
pub use negotiate::{
    negotiate_server, Agreement, ClientOffer, ClientWindowOffer, DeflateConfig, DeflateMode,
    DeflateParams, ExtensionValue, EXTENSION_NAME,
};

use super::conn::write_message_frame;
use super::frame::OpCode;

/// Appends one whole unmasked (server) frame for a data message to `out`: compressed
/// with RSV1 set when [`Deflater::compress`] says it is worth it, the payload as it is
/// otherwise. For a broadcast: compress a publish once per agreed parameter set and
/// send the same bytes to every receiver. The deflater must not take over context
/// (receivers' inflaters have different histories): it is reset after the message
/// whatever it was built with.
pub fn write_server_message(
    deflater: &mut Deflater,
    opcode: OpCode,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Compressed {
    let c = write_message_frame(deflater, opcode, payload, None, out);
    if !deflater.no_context_takeover() {
        deflater.reset();
    }
    c
}
