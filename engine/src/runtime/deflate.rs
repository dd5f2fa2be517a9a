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
//!   keeps context (dedicated mode). The budget (`Config::deflate_budget`) counts the
//!   decompressors at the agreement (a connection that agreed may need one at any time:
//!   past the budget, new connections are agreed without context takeover) and the
//!   compressors when made (past the budget a message is compressed with the worker's
//!   compressor instead: this side may always forget its history).

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

/// A worker's compression state.
#[derive(Default)]
pub(crate) struct Codecs {
    /// The parameter sets agreed on this worker; a slot names one by index + 1.
    sets: Vec<DeflateParams>,
    shared_inflater: Option<Inflater>,
    shared_deflaters: [Option<Deflater>; 7],
    /// Memory of own codecs (estimated): decompressors reserved at agreement, and the
    /// compressors made.
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
        if cfg.mode == DeflateMode::Dedicated && self.own_bytes + OWN_INFLATER_BYTES > budget {
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

    /// A connection of `role` agreed to `params`: reserves its own decompressor's
    /// memory when its peer keeps context (whether or not it is made).
    pub(crate) fn agreed(&mut self, role: Role, params: DeflateParams) {
        if !peer_resets(role, params) {
            self.own_bytes += OWN_INFLATER_BYTES;
        }
    }

    /// The connection's own decompressor (its memory reserved at the agreement), made
    /// now if need be.
    pub(crate) fn own_inflater(
        own: &mut Option<Box<OwnCodec>>,
        role: Role,
        params: DeflateParams,
    ) -> &mut Inflater {
        own.get_or_insert_with(Box::default)
            .inflater
            .get_or_insert_with(|| params.inflater(role))
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

    /// The connection's own compressor, made now if need be and the budget allows;
    /// `None`: use the worker's for this message.
    pub(crate) fn own_deflater<'a>(
        &mut self,
        own: &'a mut Option<Box<OwnCodec>>,
        role: Role,
        params: DeflateParams,
        cfg: &DeflateConfig,
        budget: usize,
    ) -> Option<&'a mut Deflater> {
        let own = own.get_or_insert_with(Box::default);
        if own.deflater.is_none() {
            if self.own_bytes + OWN_DEFLATER_BYTES > budget {
                return None;
            }
            self.own_bytes += OWN_DEFLATER_BYTES;
        }
        Some(
            own.deflater
                .get_or_insert_with(|| params.deflater(role, cfg.mem_level, cfg.threshold)),
        )
    }

    /// Drops a connection's own compressor (it may: the peer does not depend on this
    /// side's history), when the connection goes idle.
    pub(crate) fn drop_own_deflater(&mut self, own: &mut Option<Box<OwnCodec>>) {
        if let Some(d) = own.as_mut().and_then(|o| o.deflater.take()) {
            drop(d);
            self.own_bytes = self.own_bytes.saturating_sub(OWN_DEFLATER_BYTES);
        }
    }

    /// A connection that agreed to `params` is gone with its own codecs: their memory
    /// (and its reservation) is free again.
    pub(crate) fn release(
        &mut self,
        own: Option<Box<OwnCodec>>,
        role: Role,
        params: DeflateParams,
    ) {
        let mut n = 0;
        if !peer_resets(role, params) {
            n += OWN_INFLATER_BYTES;
        }
        if own.is_some_and(|o| o.deflater.is_some()) {
            n += OWN_DEFLATER_BYTES;
        }
        self.own_bytes = self.own_bytes.saturating_sub(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(takeover: bool) -> DeflateParams {
        DeflateParams {
            server_no_context_takeover: !takeover,
            client_no_context_takeover: !takeover,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        }
    }

    /// Decompressors are counted at the agreement, compressors when made; past the
    /// budget the policy falls back to shared and no compressor is made; everything
    /// is given back when the connections go.
    #[test]
    fn the_budget_counts_what_connections_may_and_do_hold() {
        let cfg = DeflateConfig {
            mode: DeflateMode::Dedicated,
            ..DeflateConfig::default()
        };
        let budget = 2 * OWN_INFLATER_BYTES + OWN_DEFLATER_BYTES;
        let mut c = Codecs::default();
        let p = params(true);
        assert_eq!(c.policy(&cfg, budget).mode, DeflateMode::Dedicated);
        c.agreed(Role::Server, p);
        c.agreed(Role::Server, p);
        assert_eq!(c.own_bytes, 2 * OWN_INFLATER_BYTES);
        let (mut a, mut b) = (None, None);
        assert!(c
            .own_deflater(&mut a, Role::Server, p, &cfg, budget)
            .is_some());
        assert!(
            c.own_deflater(&mut b, Role::Server, p, &cfg, budget)
                .is_none(),
            "over the budget: the worker's compressor serves"
        );
        assert_eq!(c.policy(&cfg, budget).mode, DeflateMode::Shared);
        // a shared agreement reserves nothing
        c.agreed(Role::Server, params(false));
        c.release(a, Role::Server, p);
        c.release(b, Role::Server, p);
        c.release(None, Role::Server, params(false));
        assert_eq!(c.own_bytes, 0);
        assert_eq!(c.policy(&cfg, budget).mode, DeflateMode::Dedicated);
    }

    #[test]
    fn parameter_sets_are_interned() {
        let mut c = Codecs::default();
        let a = c.code(params(true));
        let b = c.code(params(false));
        assert_eq!((a, b, c.code(params(true))), (1, 2, 1));
        assert_eq!(c.params(2), Some(params(false)));
        assert_eq!(c.params(0), None);
    }
}
