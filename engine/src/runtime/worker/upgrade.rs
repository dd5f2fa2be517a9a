//! The server's side of the opening handshake: the request head, the policy, the
//! application's verdict, and the 101 or the HTTP error that answers it.

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::Worker;
use crate::proto::conn::Role;
use crate::proto::deflate::{negotiate_server, Agreement, DeflateMode};
use crate::proto::frame::{Status, RSV1};
use crate::proto::handshake::{self, Negotiation, Request};
use crate::runtime::handler::{Handler, HttpResponse, Upgrade, UpgradeRequest};
use crate::runtime::id::ConnId;
use crate::runtime::mailbox::Verdict;
use crate::runtime::slot::{Deferred, Phase};
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
        let seq = slot.seq();
        let id = ConnId::new(self.rt.index, seq, idx);
        let up = UpgradeRequest {
            request: &req,
            peer,
            protocol: std::cell::Cell::new(
                accepted
                    .protocol
                    .and_then(|chosen| req.protocols().find(|p| *p == chosen)),
            ),
            headers: Default::default(),
            id,
            shared: &self.rt.shared,
        };
        let handler = &mut self.handler;
        let verdict = catch_unwind(AssertUnwindSafe(|| handler.on_upgrade_request(&up)));
        // permessage-deflate: the first acceptable offer, under the policy in force
        let agreement = if cfg.deflate.mode == DeflateMode::Off {
            None
        } else {
            let policy = self.rt.codecs.policy(&cfg.deflate, cfg.deflate_budget);
            negotiate_server(req.extensions(), &policy)
        };
        let protocol = up.protocol.get();
        let extra = up.headers.into_inner();
        match verdict {
            Ok(Upgrade::Accept(data)) => {
                self.accept_upgrade(idx, accepted.accept, protocol, agreement, &extra, data);
                Some(head_len)
            }
            Ok(Upgrade::Reject(rej)) => {
                tracing::debug!(conn = %id, peer = ?peer, status = rej.status, "upgrade refused by the application");
                self.respond_and_close(idx, rej.status, &rej.body, &[]);
                None
            }
            Ok(Upgrade::Defer) => {
                let slot = self.slots.get_mut(idx)?;
                slot.cold().deferred = Some(Box::new(Deferred {
                    accept: accepted.accept,
                    protocol: protocol.map(Box::from),
                    offered: req.protocols().map(Box::from).collect(),
                    agreement,
                    headers: extra,
                }));
                Some(head_len)
            }
            Err(_) => {
                self.respond_and_close(idx, 500, "internal error\n", &[]);
                None
            }
        }
    }

    /// Answers an accepted upgrade with 101 and opens the connection.
    fn accept_upgrade(
        &mut self,
        idx: usize,
        accept: [u8; 28],
        protocol: Option<&str>,
        agreement: Option<Agreement>,
        extra: &[(String, String)],
        data: H::Data,
    ) {
        let accepted = handshake::Accepted { accept, protocol };
        let extra: Vec<(&str, &str)> = extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
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
        let Some(slot) = self.slots.get_mut(idx) else {
            return;
        };
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
    }

    /// Whether `idx` waits for the verdict on a deferred upgrade.
    pub(crate) fn is_deferred(&self, idx: usize) -> bool {
        self.slots
            .get(idx)
            .and_then(|s| s.cold.as_ref())
            .is_some_and(|c| c.deferred.is_some())
    }

    /// The application's verdict on a deferred upgrade (ignored if the connection has
    /// gone, or is not waiting for one).
    pub(crate) fn complete_upgrade(&mut self, id: ConnId, verdict: Verdict) {
        let idx = id.idx();
        let Some(slot) = self.slots.get_mut(idx) else {
            return;
        };
        if slot.seq() != id.seq() || slot.phase != Phase::Handshake {
            return;
        }
        let Some(d) = slot.cold.as_mut().and_then(|c| c.deferred.take()) else {
            return;
        };
        match verdict {
            Verdict::Reject(rej) => {
                tracing::debug!(conn = %id, status = rej.status, "deferred upgrade refused by the application");
                self.respond_and_close(idx, rej.status, &rej.body, &[]);
            }
            Verdict::Accept {
                data,
                protocol,
                mut headers,
            } => {
                let Ok(data) = data.downcast::<H::Data>() else {
                    tracing::warn!(conn = %id, "deferred upgrade accepted with data of another type than the handler's");
                    self.respond_and_close(idx, 500, "internal error\n", &[]);
                    return;
                };
                let protocol = match protocol {
                    Some(p) if d.offered.iter().any(|o| **o == *p) => Some(p.into_boxed_str()),
                    Some(p) => {
                        tracing::debug!(conn = %id, protocol = %p, "deferred upgrade: a subprotocol the client did not offer; keeping the one chosen");
                        d.protocol
                    }
                    None => d.protocol,
                };
                let mut extra = d.headers;
                extra.append(&mut headers);
                self.accept_upgrade(
                    idx,
                    d.accept,
                    protocol.as_deref(),
                    d.agreement,
                    &extra,
                    *data,
                );
                // what arrived meanwhile (a client may pipeline frames behind its request)
                if self.slots.get(idx).is_some_and(|s| s.has_carry()) {
                    self.process_carry(idx);
                }
            }
        }
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
        let id = ConnId::new(self.rt.index, slot.seq(), idx);
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
