//! permessage-deflate on a worker: which compressor and decompressor each connection
//! uses, who owns them, and what they cost.
//!
//! * **Shared** codecs belong to the worker: one decompressor (reset per message) for
//!   every connection whose peer resets its context per message, and one compressor per
//!   window size (9..=15 bits, reset per message) for every connection that does not
//!   keep context. An idle connection with compression negotiated costs one byte in its
//!   slot (which agreed parameter set it uses).
//! * **Own** codecs belong to a connection (in its `Cold` part), made on first use: a
//!   decompressor when the peer keeps context (it must), a compressor when this side
//!   keeps context (dedicated mode). A worker counts their memory and stops agreeing to
//!   context takeover past `Config::deflate_budget`.

use crate::proto::conn::Role;
use crate::proto::deflate::{DeflateConfig, DeflateMode, DeflateParams, Deflater, Inflater};

/// What a compressor with a 15-bit window and memLevel 8 holds, about (measured with a
/// counting allocator: docs/deflate.md); smaller settings hold less, so this bounds it.
pub(crate) const OWN_DEFLATER_BYTES: usize = 380 * 1024;
/// What a decompressor holds (its window is 32 KiB whatever the agreed size).
pub(crate) const OWN_INFLATER_BYTES: usize = 48 * 1024;

/// A connection's own codecs.
#[derive(Default)]
pub(crate) struct OwnCodec {
    pub(crate) inflater: Option<Inflater>,
    pub(crate) deflater: Option<Deflater>,
}

impl std::fmt::Debug for OwnCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnCodec")
            .field("inflater", &self.inflater.is_some())
            .field("deflater", &self.deflater.is_some())
            .finish()
    }
}

impl OwnCodec {
    /// The memory its codecs hold (estimated).
    pub(crate) fn bytes(&self) -> usize {
        self.inflater.as_ref().map_or(0, |_| OWN_INFLATER_BYTES)
            + self.deflater.as_ref().map_or(0, |_| OWN_DEFLATER_BYTES)
    }
}

/// A worker's compression state.
#[derive(Default)]
pub(crate) struct Codecs {
    /// The parameter sets agreed on this worker; a slot names one by index + 1.
    sets: Vec<DeflateParams>,
    shared_inflater: Option<Inflater>,
    shared_deflaters: [Option<Deflater>; 7],
    /// Memory of every connection's own codecs (estimated).
    pub(crate) own_bytes: usize,
    /// Payload bytes of messages sent on connections with compression agreed, and the
    /// bytes their frames took (compressed or not).
    pub(crate) sent_payload: u64,
    pub(crate) sent_wire: u64,
}

impl std::fmt::Debug for Codecs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codecs")
            .field("sets", &self.sets.len())
            .field("own_bytes", &self.own_bytes)
            .finish()
    }
}

/// Whether the peer of a connection of `role` resets its compressor per message (then
/// the worker's shared decompressor serves it).
pub(crate) fn peer_resets(role: Role, params: DeflateParams) -> bool {
    let peer = match role {
        Role::Server => Role::Client,
        Role::Client => Role::Server,
    };
    params.no_context_takeover(peer)
}

/// Whether a connection of `role` compresses with context takeover (its own
/// compressor): agreed, and the policy is dedicated.
pub(crate) fn keeps_context(role: Role, params: DeflateParams, cfg: &DeflateConfig) -> bool {
    !params.no_context_takeover(role) && cfg.mode == DeflateMode::Dedicated
}

impl Codecs {
    /// The slot code of `params` (1-based; made on first use). At most 255 sets per
    /// worker: 2 × 2 × 8 × 8 combinations exist, of which a worker sees a handful.
    pub(crate) fn code(&mut self, params: DeflateParams) -> u8 {
        if let Some(i) = self.sets.iter().position(|p| *p == params) {
            return (i + 1) as u8;
        }
        if self.sets.len() >= 255 {
            return 0; // cannot happen (see above); the connection then compresses nothing
        }
        self.sets.push(params);
        self.sets.len() as u8
    }

    /// The parameter set of slot code `code` (not 0).
    pub(crate) fn params(&self, code: u8) -> Option<DeflateParams> {
        self.sets.get((code as usize).checked_sub(1)?).copied()
    }

    /// The policy to negotiate with now: dedicated falls back to shared past the budget.
    pub(crate) fn policy(&self, cfg: &DeflateConfig, budget: usize) -> DeflateConfig {
        if cfg.mode == DeflateMode::Dedicated && self.own_bytes >= budget {
            DeflateConfig {
                mode: DeflateMode::Shared,
                ..*cfg
            }
        } else {
            *cfg
        }
    }

    /// The worker's decompressor (reset per message).
    pub(crate) fn shared_inflater(&mut self) -> &mut Inflater {
        self.shared_inflater
            .get_or_insert_with(|| Inflater::new(true))
    }

    /// The connection's own decompressor, made now if need be.
    pub(crate) fn own_inflater<'a>(
        &mut self,
        own: &'a mut Option<Box<OwnCodec>>,
        role: Role,
        params: DeflateParams,
    ) -> &'a mut Inflater {
        let own = own.get_or_insert_with(Box::default);
        if own.inflater.is_none() {
            self.own_bytes += OWN_INFLATER_BYTES;
        }
        own.inflater.get_or_insert_with(|| params.inflater(role))
    }

    /// The worker's compressor for `window` bits (reset per message): for every
    /// connection that does not keep context, and for a frame compressed once for all
    /// receivers of a publish that agreed to the same window.
    pub(crate) fn shared_deflater(&mut self, window: u8, cfg: &DeflateConfig) -> &mut Deflater {
        let w = window.clamp(9, 15);
        self.shared_deflaters[(w - 9) as usize].get_or_insert_with(|| {
            Deflater::new(w, cfg.mem_level, true).with_threshold(cfg.threshold)
        })
    }

    /// The connection's own compressor, made now if need be.
    pub(crate) fn own_deflater<'a>(
        &mut self,
        own: &'a mut Option<Box<OwnCodec>>,
        role: Role,
        params: DeflateParams,
        cfg: &DeflateConfig,
    ) -> &'a mut Deflater {
        let own = own.get_or_insert_with(Box::default);
        if own.deflater.is_none() {
            self.own_bytes += OWN_DEFLATER_BYTES;
        }
        own.deflater
            .get_or_insert_with(|| params.deflater(role, cfg.mem_level, cfg.threshold))
    }

    /// Drops a connection's own compressor (it may: the peer does not depend on this
    /// side's history), when the connection goes idle.
    pub(crate) fn drop_own_deflater(&mut self, own: &mut Option<Box<OwnCodec>>) {
        if let Some(d) = own.as_mut().and_then(|o| o.deflater.take()) {
            drop(d);
            self.own_bytes = self.own_bytes.saturating_sub(OWN_DEFLATER_BYTES);
        }
    }

    /// A connection's own codecs are gone: their memory is free again.
    pub(crate) fn release(&mut self, own: Option<Box<OwnCodec>>) {
        if let Some(o) = own {
            self.own_bytes = self.own_bytes.saturating_sub(o.bytes());
        }
    }
}
