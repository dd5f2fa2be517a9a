//! Publishing: one serialized frame, shared by every subscriber on every worker.

use std::sync::Arc;

use super::Worker;
use crate::batch::{BatchRef, BatchWriter};
use crate::pool::BatchSlice;
use crate::proto::conn::Role;
use crate::proto::deflate::write_server_message;
use crate::proto::OpCode;
use crate::runtime::deflate::keeps_context;
use crate::runtime::handler::Handler;
use crate::runtime::id::ConnId;
use crate::runtime::mailbox::Command;
use crate::runtime::slot::Phase;
use crate::runtime::ws::ConnCtx;

impl<H: Handler> Worker<H> {
    /// Delivers publishes queued by handlers, in the order they were made: one shared
    /// frame for every receiver. (The check is inlined where it runs after every
    /// handler call; the delivery is not.)
    #[inline(always)]
    pub(crate) fn run_publishes(&mut self) {
        if !self.rt.publishes.is_empty() {
            self.deliver_publishes();
        }
    }

    #[inline(never)]
    fn deliver_publishes(&mut self) {
        for (topic, frame) in std::mem::take(&mut self.rt.publishes) {
            for (i, mb) in self.rt.shared.mailboxes.iter().enumerate() {
                if i != self.rt.index {
                    mb.post(Command::Publish {
                        topic: topic.clone(),
                        frame: frame.clone(),
                    });
                }
            }
            self.rt.shared.forward(&topic, &frame);
            self.publish_local(&topic, &frame);
        }
    }

    /// A publish to this worker's subscribers of `topic`: the same `frame` for every
    /// plain receiver; for receivers that agreed to permessage-deflate, one frame
    /// compressed once per window size and shared likewise, or (a receiver whose own
    /// compressor keeps context) compressed by its own compressor. Client connections
    /// get the message framed (masked) for them.
    pub(crate) fn publish_local(&mut self, topic: &str, frame: &Arc<[u8]>) {
        let Some((opcode, payload)) = split_frame(frame) else {
            return;
        };
        // compressed frames made for this publish, by window bits
        let mut compressed: Vec<(u8, Arc<[u8]>)> = Vec::new();
        // the plain frame, written once into the worker's batch for every receiver
        // (`None` inside: no batch could be had, queue the frame itself)
        let mut slice: Option<Option<BatchSlice>> = None;
        let mut members = std::mem::take(&mut self.rt.fanout);
        members.clear();
        members.extend_from_slice(self.rt.topics.members(topic));
        for &idx in &members {
            let Some(slot) = self.slots.get_mut(idx) else {
                continue;
            };
            if slot.proto.close_sent() || slot.flags.reset() || slot.phase != Phase::Open {
                continue;
            }
            let role = slot.proto.role();
            let params = self.rt.codecs.params(slot.deflate);
            let id = ConnId::new(self.rt.index, slot.seq(), idx);
            let shared_window = match params {
                Some(p)
                    if role == Role::Server && !keeps_context(role, p, &self.rt.cfg.deflate) =>
                {
                    Some(p.max_window_bits(role))
                }
                None if role == Role::Server => None,
                _ => {
                    // its own compressor, or a client connection: framed for it alone
                    let mut ctx = ConnCtx {
                        id,
                        idx,
                        slot,
                        rt: &mut self.rt,
                    };
                    ctx.send_with(opcode, payload.len(), |v| v.extend_from_slice(payload));
                    continue;
                }
            };
            let f = match shared_window {
                None if frame.len() <= BATCH_FRAME_MAX => {
                    let s = slice.get_or_insert_with(|| self.rt.batches.append(frame));
                    if let Some(s) = s {
                        // over its limit: no new range (and no batch held) for it
                        let fresh = slot.buffered() <= self.rt.cfg.backpressure_limit;
                        ConnCtx {
                            id,
                            idx,
                            slot,
                            rt: &mut self.rt,
                        }
                        .send_slice(s, frame, fresh);
                        continue;
                    }
                    frame
                }
                None => frame,
                Some(w) => match compressed.iter().position(|(cw, _)| *cw == w) {
                    Some(i) => &compressed[i].1,
                    None => {
                        let cfg = self.rt.cfg.deflate;
                        let d = self.rt.codecs.shared_deflater(w, &cfg);
                        let mut v = Vec::with_capacity(payload.len() + 16);
                        write_server_message(d, opcode, payload, &mut v);
                        compressed.push((w, Arc::from(v)));
                        &compressed[compressed.len() - 1].1
                    }
                },
            };
            ConnCtx {
                id,
                idx,
                slot,
                rt: &mut self.rt,
            }
            .send_shared(f);
        }
        self.rt.fanout = members;
    }
}

/// Published frames up to this size are written once into the worker's batch and
/// queued as ranges of it; larger ones are queued as the shared frame itself.
const BATCH_FRAME_MAX: usize = 16 * 1024;
/// The size of a batch (a full one is replaced; the old one is freed with the last
/// queue that holds a range of it).
const BATCH_CAP: usize = 64 * 1024;

/// Batches a worker keeps alive at most, the current one and those that queues still
/// hold ranges of: `LIVE_BATCHES_MAX` × `BATCH_CAP` (4 MiB) bounds the memory batches
/// pin, whatever the receivers do. Past it, publishes are queued as before (copied or
/// shared) until queues let go of a batch.
const LIVE_BATCHES_MAX: usize = 64;

/// The worker's batches: the one written into and the earlier ones still held.
#[derive(Debug, Default)]
pub(crate) struct Batches {
    writer: Option<BatchWriter>,
    earlier: Vec<BatchRef>,
}

impl Batches {
    /// Writes `frame` into the current batch (a new one when it has no room left),
    /// or `None` when `LIVE_BATCHES_MAX` batches are alive.
    fn append(&mut self, frame: &[u8]) -> Option<BatchSlice> {
        if self.writer.as_ref().is_none_or(|w| w.room() < frame.len()) {
            self.earlier.retain(BatchRef::in_use);
            // the earlier ones held, the current one, and the new one
            if self.earlier.len() + usize::from(self.writer.is_some()) >= LIVE_BATCHES_MAX {
                return None;
            }
            if let Some(old) = self.writer.take() {
                self.earlier.push(old.watch());
            }
            self.writer = Some(BatchWriter::new(BATCH_CAP.max(frame.len())));
        }
        self.writer.as_mut().map(|w| w.append(frame))
    }
}

/// The opcode and payload of a whole unmasked frame made by `serialize`.
fn split_frame(frame: &[u8]) -> Option<(OpCode, &[u8])> {
    let opcode = OpCode::from_u8(*frame.first()? & 0x0f)?;
    let header = match frame.get(1)? & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    Some((opcode, frame.get(header..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// While queues hold ranges of `LIVE_BATCHES_MAX` batches, no new batch is made
    /// (publishes are queued as frames instead); once they let go, batching resumes.
    #[test]
    fn batches_alive_are_bounded_and_batching_resumes_when_they_are_freed() {
        let mut b = Batches::default();
        let frame = vec![7u8; BATCH_CAP / 2 + 1]; // one per batch
        let mut held = Vec::new();
        for i in 0..LIVE_BATCHES_MAX {
            let s = b.append(&frame).unwrap_or_else(|| panic!("batch {i}"));
            assert_eq!(s.bytes(), &frame[..]);
            held.push(s);
        }
        assert!(b.append(&frame).is_none(), "every live batch is held");
        assert!(
            b.append(&[1, 2]).is_some(),
            "a small frame fits the current one"
        );
        held.truncate(LIVE_BATCHES_MAX / 2);
        let s = b.append(&frame).expect("batches were let go of");
        assert_eq!(s.bytes(), &frame[..]);
        // unheld batches are not counted: many more go through
        drop(held);
        drop(s);
        for _ in 0..4 * LIVE_BATCHES_MAX {
            assert!(b.append(&frame).is_some());
        }
    }
}
