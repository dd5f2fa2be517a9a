//! The client's side of the opening handshake on a worker: a connect posted from
//! another thread, and the check of the server's answer.

use super::Worker;
use crate::driver::Driver;
use crate::proto::close::CloseCode;
use crate::proto::conn::Role;
use crate::proto::frame::{Status, RSV1};
use crate::proto::handshake::{self, HeadLimits, Response};
use crate::proto::HandshakeError;
use crate::runtime::ctx::start;
use crate::runtime::error::ConnError;
use crate::runtime::handler::{CloseInfo, Handler};
use crate::runtime::id::ConnId;
use crate::runtime::request::Pending;

impl<H: Handler> Worker<H> {
    /// A connect posted from another thread.
    pub(crate) fn start_connect(&mut self, driver: &mut Driver, p: Pending) {
        let Ok(data) = p.data.downcast::<H::Data>() else {
            return; // a handle of another data type: cannot happen through the API
        };
        if self.shutdown.is_some() {
            self.fail_unstarted(ConnError::Timeout, *data);
            return;
        }
        if let Err((e, data)) = start(&mut self.slots, &mut self.rt, driver, &p.req, *data) {
            self.fail_unstarted(e, data);
        }
    }

    /// A connect that never got a socket: `on_error` and `on_close` (1006) all the same.
    fn fail_unstarted(&mut self, e: ConnError, mut data: H::Data) {
        self.rt.seq += 1;
        let id = ConnId::new(self.rt.index, self.rt.seq, u32::MAX as usize);
        let handler = &mut self.handler;
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            handler.on_error(id, &mut data, &e);
            handler.on_close(
                id,
                data,
                CloseInfo {
                    code: CloseCode::ABNORMAL,
                    reason: "",
                    was_clean: false,
                },
            );
        }));
    }

    /// Handles the response head; returns its length once the connection is open, or
    /// `None` (need more, or the connection failed).
    pub(crate) fn client_handshake(&mut self, idx: usize, buf: &mut [u8]) -> Option<usize> {
        let limits = HeadLimits::default();
        let slot = self.slots.get_mut(idx)?;
        let head_len = match slot.cold().scanner.feed(buf, &limits) {
            Ok(Status::Complete(n)) => n,
            Ok(Status::Partial) => return None,
            Err(_) => {
                self.fail_handshake(idx, ConnError::Handshake("malformed response head"));
                return None;
            }
        };
        let resp = match Response::parse(&buf[..head_len], &limits) {
            Ok(r) => r,
            Err(_) => {
                self.fail_handshake(idx, ConnError::Handshake("malformed response"));
                return None;
            }
        };
        let hs = slot.cold.as_mut().and_then(|c| c.client.take())?;
        let offered: Vec<&str> = hs.protocols.iter().map(String::as_str).collect();
        let verdict = handshake::check_response(&resp, &hs.accept, &offered);
        let protocol = match verdict {
            Ok(a) => {
                let deflate = match hs.deflate {
                    Some(offer) => match offer.check_response(a.extensions) {
                        Ok(p) => p,
                        Err(e) => {
                            self.fail_handshake(idx, ConnError::Handshake(e.as_str()));
                            return None;
                        }
                    },
                    // nothing was offered: any extension answered is a violation
                    None if a.extensions.is_some() => {
                        self.fail_handshake(idx, ConnError::Handshake("extension not offered"));
                        return None;
                    }
                    None => None,
                };
                if let Some(p) = deflate {
                    self.rt.codecs.agreed(Role::Client, p);
                    let code = self.rt.codecs.code(p);
                    if let Some(slot) = self.slots.get_mut(idx) {
                        slot.deflate = code;
                        slot.proto.set_allowed_rsv(RSV1);
                    }
                }
                a.protocol.map(Box::from)
            }
            Err(HandshakeError::BadStatus(s)) => {
                self.fail_handshake(idx, ConnError::Status(s));
                return None;
            }
            Err(e) => {
                self.fail_handshake(idx, ConnError::Handshake(e.as_str()));
                return None;
            }
        };
        if let Some(slot) = self.slots.get_mut(idx) {
            slot.cold().protocol = protocol;
        }
        self.opened(idx);
        Some(head_len)
    }

    fn fail_handshake(&mut self, idx: usize, e: ConnError) {
        if let Some(slot) = self.slots.get_mut(idx) {
            slot.flags.set_reset(true);
        }
        self.finish(idx, Some(e));
    }
}
