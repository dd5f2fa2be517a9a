//! Publishing: one serialized frame, shared by every subscriber on every worker.

use std::sync::Arc;

use super::Worker;
use crate::runtime::handler::Handler;
use crate::runtime::id::ConnId;
use crate::runtime::mailbox::Command;
use crate::runtime::rt::Rt;
use crate::runtime::slot::Phase;
use crate::runtime::ws::mark_dirty;

impl<H: Handler> Worker<H> {
    /// Delivers publishes queued by handlers: one shared frame for every receiver.
    pub(crate) fn run_publishes(&mut self) {
        while let Some((topic, frame)) = self.rt.publishes.pop() {
            for (i, mb) in self.rt.shared.mailboxes.iter().enumerate() {
                if i != self.rt.index {
                    mb.post(Command::Publish {
                        topic: topic.clone(),
                        frame: frame.clone(),
                    });
                }
            }
            self.publish_local(&topic, &frame);
        }
    }

    pub(crate) fn publish_local(&mut self, topic: &str, frame: &Arc<[u8]>) {
        let Rt {
            topics,
            pool,
            dirty,
            cfg,
            shared,
            index,
            ..
        } = &mut self.rt;
        for idx in topics.members(topic) {
            let Some(slot) = self.slots.get_mut(idx) else {
                continue;
            };
            if slot.proto.close_sent() || slot.flags.reset() || slot.phase != Phase::Open {
                continue;
            }
            slot.out.push_shared(pool, frame.clone());
            mark_dirty(slot, dirty, idx);
            let b = slot.buffered();
            if b > cfg.max_buffered {
                slot.flags.set_reset(true);
            } else if b > cfg.backpressure_limit && !slot.flags.backpressured() {
                slot.flags.set_backpressured(true);
                shared.set_congested(ConnId::new(*index, slot.seq, idx), true);
            }
        }
    }
}
