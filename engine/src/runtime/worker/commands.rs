//! Commands from other threads (publish, send, connect, shutdown) and the shutdown
//! that one of them starts.

use std::sync::Arc;
use std::time::Instant;

use super::Worker;
use crate::driver::Driver;
use crate::proto::close::CloseCode;
use crate::proto::conn::Role;
use crate::runtime::ctx::Task;
use crate::runtime::error::ConnError;
use crate::runtime::handler::Handler;
use crate::runtime::id::ConnId;
use crate::runtime::mailbox::{Command, ConnOp};
use crate::runtime::slot::Phase;
use crate::runtime::ws::ConnCtx;

impl<H: Handler> Worker<H> {
    /// Runs commands from other threads.
    pub(crate) fn on_commands(&mut self, driver: &mut Driver) {
        let mut cmds = std::mem::take(&mut self.commands);
        let mailbox = self.rt.shared.mailboxes[self.rt.index].clone();
        mailbox.take(&mut cmds);
        for c in cmds.drain(..) {
            match c {
                Command::Publish { topic, frame } => self.publish_local(&topic, &frame),
                Command::Send { id, frame } => {
                    mailbox.sub_pending(frame.len());
                    self.send_shared(id, frame);
                }
                Command::Conn { id, op } => self.conn_op(id, op),
                Command::Upgrade { id, verdict } => self.complete_upgrade(id, verdict),
                Command::Run(task) => {
                    if let Ok(task) = task.downcast::<Task<H>>() {
                        self.run_task(driver, *task);
                    }
                }
                Command::Connect(p) => self.start_connect(driver, *p),
                Command::Reconfigure(cfg) => self.rt.cfg = cfg,
                Command::Shutdown { deadline } => self.begin_shutdown(deadline),
            }
        }
        self.commands = cmds;
        self.run_publishes();
    }

    /// A frame for one connection from another thread: the same limits as `send`.
    fn send_shared(&mut self, id: ConnId, frame: Arc<[u8]>) {
        let idx = id.idx();
        let Some(slot) = self.slots.get_mut(idx) else {
            return;
        };
        if slot.seq() != id.seq() || slot.phase != Phase::Open || slot.proto.close_sent() {
            return;
        }
        ConnCtx {
            id,
            idx,
            slot,
            rt: &mut self.rt,
        }
        .send_shared(&frame);
    }

    /// A handle's request for one connection (ignored if it is gone).
    fn conn_op(&mut self, id: ConnId, op: ConnOp) {
        let idx = id.idx();
        let Some(slot) = self.slots.get_mut(idx) else {
            return;
        };
        if slot.seq() != id.seq() {
            return;
        }
        let open = slot.phase == Phase::Open && slot.data.is_some();
        let mut ctx = ConnCtx {
            id,
            idx,
            slot,
            rt: &mut self.rt,
        };
        match op {
            ConnOp::Terminate => ctx.terminate(),
            _ if !open => {}
            ConnOp::Close(code, reason) => ctx.close(code, &reason),
            ConnOp::Subscribe(t) => ctx.subscribe(&t),
            ConnOp::Unsubscribe(t) => ctx.unsubscribe(&t),
        }
    }

    fn begin_shutdown(&mut self, deadline: Instant) {
        self.shutdown = Some(deadline);
        for idx in self.slots.indexes() {
            match self.slots.get(idx).map(|s| (s.phase, s.proto.role())) {
                Some((Phase::Open, _)) => {
                    self.call(idx, |_, ws| {
                        ws.close(CloseCode::GOING_AWAY, "server shutdown")
                    });
                }
                Some((Phase::Handshake, Role::Server)) => {
                    self.http_error(idx, 503, "server shutting down");
                }
                Some((Phase::Connecting | Phase::Handshake, Role::Client)) => {
                    self.finish(idx, Some(ConnError::Timeout));
                }
                _ => {}
            }
        }
    }

    /// During shutdown: whether every connection is gone or the deadline passed (then
    /// the rest are dropped).
    pub(crate) fn shutdown_done(&mut self) -> bool {
        let Some(deadline) = self.shutdown else {
            return false;
        };
        if self.slots.is_empty() {
            return true;
        }
        if self.rt.timers.now() >= deadline {
            for idx in self.slots.indexes() {
                self.finish(idx, None);
            }
            return true;
        }
        false
    }
}
