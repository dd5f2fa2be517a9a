//! The server's side of the opening handshake: the request head, the policy, the
//! application's verdict, and the 101 or the HTTP error that answers it.

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::Worker;
use crate::proto::conn::Role;
use crate::proto::deflate::{negotiate_server, DeflateMode};
use crate::proto::frame::{Status, RSV1};
use crate::proto::handshake::{self, Negotiation, Request};
use crate::runtime::handler::{Handler, HttpResponse, UpgradeRequest};
use crate::runtime::slot::Phase;
use crate::runtime::ws::mark_dirty;

impl<H: Handler> Worker<H> {
    /// Handles the request head; returns the head's length once the connection is
    /// open, or `None` (need more, or the connection is answered and closing).
    pub(crate) fn server_handshake(&mut self, idx: usize, buf: &mut [u8]) -> Option<usize> {
        let cfg = self.rt.cfg.clone();
        let slot = self.slots.get_mut(idx)?;
        let head_len = match slot.cold().scanner.feed(buf, &cfg.handshake.limits) {
            Ok(Status::Complete(n)) => n,
            Ok(Status::Partial) => return None,
            Err(e) => {
                self.http_error(idx, e.status(), e.as_str());
                return None;
            }
        };
        let peer = slot.cold.as_ref().and_then(|c| c.peer);
        let req = match Request::parse(&buf[..head_len], &cfg.handshake.limits) {
            Ok(r) => r,
            Err(e) => {
                self.http_error(idx, e.status(), e.as_str());
                return None;
            }
        };
        let accepted = match handshake::negotiate(&req, &cfg.handshake) {
            Ok(Negotiation::Upgrade(a)) => a,
            Ok(Negotiation::Http) => {
                let handler = &mut self.handler;
                let resp = catch_unwind(AssertUnwindSafe(|| handler.on_http(&req)))
                    .unwrap_or_else(|_| HttpResponse::new(500, "internal error\n"));
                let headers: Vec<(&str, &str)> = resp
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                self.respond_and_close(idx, resp.status, &resp.body, &headers);
                return None;
            }
            Err(e) => {
                self.http_error(idx, e.status(), e.as_str());
                return None;
            }
        };
        let up = UpgradeRequest {
            request: &req,
            peer,
            protocol: std::cell::Cell::new(
                accepted
                    .protocol
                    .and_then(|chosen| req.protocols().find(|p| *p == chosen)),
            ),
            headers: Default::default(),
        };
        let handler = &mut self.handler;
        let data = match catch_unwind(AssertUnwindSafe(|| handler.on_upgrade(&up))) {
            Ok(Ok(d)) => d,
            Ok(Err(rej)) => {
                self.respond_and_close(idx, rej.status, &rej.body, &[]);
                return None;
            }
            Err(_) => {
                self.respond_and_close(idx, 500, "internal error\n", &[]);
                return None;
            }
        };
        let accepted = handshake::Accepted {
            protocol: up.protocol.get(),
            ..accepted
        };
        let extra = up.headers.into_inner();
        let extra: Vec<(&str, &str)> = extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        // permessage-deflate: the first acceptable offer, under the policy in force
        let agreement = if cfg.deflate.mode == DeflateMode::Off {
            None
        } else {
            let policy = self.rt.codecs.policy(&cfg.deflate, cfg.deflate_budget);
            negotiate_server(req.extensions(), &policy)
        };
        self.rt.ctl.clear();
        handshake::write_accept_response(
            &mut self.rt.ctl,
            &accepted,
            agreement.as_ref().map(|a| a.response.as_str()),
            &extra,
        );
        let code = agreement.map_or(0, |a| {
            self.rt.codecs.agreed(Role::Server, a.params);
            self.rt.codecs.code(a.params)
        });
        let slot = self.slots.get_mut(idx)?;
        if code != 0 {
            slot.deflate = code;
            slot.proto.set_allowed_rsv(RSV1);
        }
        slot.out.push_bytes(&mut self.rt.pool, &self.rt.ctl);
        mark_dirty(slot, &mut self.rt.dirty, idx);
        slot.data = Some(data);
        slot.cold().protocol = accepted.protocol.map(Box::from);
        self.rt.metrics.handshake(101);
        self.opened(idx);
        Some(head_len)
    }

    pub(crate) fn http_error(&mut self, idx: usize, status: u16, why: &str) {
        let body = format!("{why}\n");
        self.respond_and_close(idx, status, &body, &[]);
    }

    fn respond_and_close(&mut self, idx: usize, status: u16, body: &str, extra: &[(&str, &str)]) {
        self.rt.ctl.clear();
        handshake::write_error_response(&mut self.rt.ctl, status, body, extra);
        let Some(slot) = self.slots.get_mut(idx) else {
            return;
        };
        self.rt.metrics.handshake(status);
        let id = crate::runtime::id::ConnId::new(self.rt.index, slot.seq, idx);
        let peer = slot.cold.as_ref().and_then(|c| c.peer);
        let reason = body.lines().next().unwrap_or_default();
        tracing::debug!(
            conn = %id,
            peer = peer.map(tracing::field::display),
            status,
            reason,
            "handshake answered without upgrading"
        );
        slot.out.push_bytes(&mut self.rt.pool, &self.rt.ctl);
        slot.phase = Phase::HttpThenClose;
        slot.flags.set_close_after_flush(true);
        mark_dirty(slot, &mut self.rt.dirty, idx);
    }
}
