//! A `Connection` driven like a runtime drives it (the `Harness` of the engine's
//! `proto/conn/tests.rs`: carry buffer, drain what was consumed), over the input cut at
//! points taken from its first bytes. Checks the call contract (never more consumed
//! than given; after an error the state is CLOSED and a close frame went out, unless
//! ours had already), that text is UTF-8 and sizes keep to the limits, and that the
//! cuts change nothing: the same input fed whole gives the same events, error and output.
#![no_main]

use libfuzzer_sys::fuzz_target;
use soliton::proto::{
    CloseCode, Connection, Event, Limits, Message, ProtocolError, ReadyState, Role,
};

/// An owned copy of an event.
#[derive(Debug, PartialEq, Eq)]
enum Ev {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

struct Harness {
    conn: Connection,
    limits: Limits,
    carry: Vec<u8>,
    assembly: Vec<u8>,
    out: Vec<u8>,
    events: Vec<Ev>,
    error: Option<ProtocolError>,
}

impl Harness {
    fn new(role: Role, limits: Limits, rsv: u8, close_first: bool) -> Self {
        let mut h = Harness {
            conn: Connection::new(role, limits, 42),
            limits,
            carry: Vec::new(),
            assembly: Vec::new(),
            out: Vec::new(),
            events: Vec::new(),
            error: None,
        };
        h.conn.set_allowed_rsv(rsv);
        if close_first {
            h.conn.close(CloseCode::new(4000), "bye", &mut h.out);
        }
        h
    }

    fn feed(&mut self, chunk: &[u8]) {
        self.carry.extend_from_slice(chunk);
        let mut pos = 0;
        loop {
            let given = self.carry.len() - pos;
            let (out_before, close_sent_before) = (self.out.len(), self.conn.close_sent());
            match self
                .conn
                .poll_read(&mut self.carry[pos..], &mut self.assembly, &mut self.out)
            {
                Ok((n, ev)) => {
                    assert!(n <= given, "consumed {n} of {given}");
                    pos += n;
                    let Some(ev) = ev else { break };
                    self.events.push(match ev {
                        Event::Message(Message::Text(s)) => {
                            assert_eq!(std::str::from_utf8(s.as_bytes()), Ok(s));
                            assert!(s.len() as u64 <= self.limits.max_message);
                            Ev::Text(s.to_owned())
                        }
                        Event::Message(Message::Binary(b)) => {
                            assert!(b.len() as u64 <= self.limits.max_message);
                            Ev::Binary(b.to_vec())
                        }
                        Event::Ping(p) => Ev::Ping(p.to_vec()),
                        Event::Pong(p) => Ev::Pong(p.to_vec()),
                        Event::Close { code, reason } => {
                            assert_eq!(std::str::from_utf8(reason.as_bytes()), Ok(reason));
                            Ev::Close(code.map(|c| c.get()), reason.to_owned())
                        }
                    });
                }
                Err(e) => {
                    assert_eq!(self.conn.ready_state(), ReadyState::Closed);
                    assert!(self.conn.failed() && self.conn.should_close_transport());
                    assert!(
                        self.out.len() > out_before || close_sent_before,
                        "{e:?}: no close frame"
                    );
                    self.error = Some(e);
                    pos = self.carry.len();
                    break;
                }
            }
        }
        self.carry.drain(..pos);
    }
}

fuzz_target!(|data: &[u8]| {
    let [flags, frame, message, a, b, c, wire @ ..] = data else {
        return;
    };
    let role = if flags & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let limits = Limits {
        max_frame: *frame as u64 * 2,
        max_message: *message as u64 * 4,
    };
    let (rsv, close_first) = (flags & 0x70, flags & 0x80 != 0);
    let mut cuts = [*a, *b, *c].map(|x| (x as usize * 3).min(wire.len()));
    cuts.sort_unstable();
    let mut split = Harness::new(role, limits, rsv, close_first);
    let mut prev = 0;
    for cut in cuts.into_iter().chain([wire.len()]) {
        split.feed(&wire[prev..cut]);
        prev = cut;
    }
    let mut whole = Harness::new(role, limits, rsv, close_first);
    whole.feed(wire);
    assert_eq!((&split.events, split.error), (&whole.events, whole.error));
    assert_eq!((&split.out, &split.carry), (&whole.out, &whole.carry));
    assert_eq!(split.conn.ready_state(), whole.conn.ready_state());
});
