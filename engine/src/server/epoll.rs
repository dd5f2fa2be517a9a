//! The epoll backend (mio, edge-triggered): one receive buffer per worker; a partial
//! frame's tail is copied into a pooled per-connection buffer, and later reads go
//! straight into it; writes are queued during an iteration and flushed with one
//! `writev` per connection at its end (large payloads are written at once).

use std::io;
use std::os::fd::OwnedFd;
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::handler::Handler;
use super::worker::Core;
use crate::sys;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKE: Token = Token(usize::MAX - 2);

pub(crate) fn run<H: Handler>(mut core: Core<H>, listener: OwnedFd) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), WAKE)?;
    core.shared.mailboxes[core.index].set_waker(Box::new(move || {
        let _ = waker.wake();
    }));
    let lfd = sys::raw(&listener);
    poll.registry()
        .register(&mut SourceFd(&lfd), LISTENER, Interest::READABLE)?;
    let mut listening = true;
    core.direct_write_min = 1024;
    let mut buf = vec![0u8; core.cfg.recv_buffer_size];
    let mut events = Events::with_capacity(1024);
    let mut spare = sys::spare_fd();
    let mut dirty = Vec::new();
    let mut next_timer: Option<Instant> = None;
    // Commands posted before the waker was installed.
    core.on_commands();
    loop {
        let timeout = next_timer.map(|t| t.saturating_duration_since(Instant::now()));
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        core.set_now(Instant::now());
        for ev in events.iter() {
            match ev.token() {
                LISTENER => accept_all(&mut core, &poll, lfd, &mut spare),
                WAKE => core.on_commands(),
                Token(idx) => {
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        read_all(&mut core, idx, &mut buf);
                    }
                    if ev.is_writable() && core.slots.contains(idx) {
                        core.flush_sync(idx);
                    }
                }
            }
        }
        next_timer = core.on_tick();
        // one write per connection per iteration (corking)
        core.take_dirty(&mut dirty);
        for &idx in &dirty {
            core.flush_sync(idx);
        }
        if core.shutdown.is_some() {
            if listening {
                let _ = poll.registry().deregister(&mut SourceFd(&lfd));
                listening = false;
            }
            if core.shutdown_done() {
                return Ok(());
            }
            let soon = core.now + std::time::Duration::from_millis(50);
            next_timer = Some(next_timer.map_or(soon, |t| t.min(soon)));
        }
    }
}

fn accept_all<H: Handler>(core: &mut Core<H>, poll: &Poll, lfd: i32, spare: &mut Option<OwnedFd>) {
    loop {
        match sys::accept(lfd) {
            Ok(fd) => {
                let raw = sys::raw(&fd);
                if let Some(idx) = core.on_accept(fd) {
                    let r = poll.registry().register(
                        &mut SourceFd(&raw),
                        Token(idx),
                        Interest::READABLE | Interest::WRITABLE,
                    );
                    if r.is_err() {
                        core.finish(idx);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) => {
                // Out of descriptors: give up the spare to accept and reset one waiting
                // connection, so the listener does not stay readable and spin. (accept
                // reports EMFILE before it looks at the queue, so an empty queue shows
                // up only once the spare is free: stop there.)
                if spare.take().is_some() {
                    let accepted = match sys::accept(lfd) {
                        Ok(fd) => {
                            let _ = sys::set_linger_zero(sys::raw(&fd));
                            drop(fd); // frees the slot the spare takes back
                            true
                        }
                        Err(_) => false,
                    };
                    *spare = sys::spare_fd();
                    if accepted {
                        continue;
                    }
                    return;
                }
                eprintln!(
                    "soliton: worker {}: accept: {e} (connections dropped)",
                    core.index
                );
                return;
            }
            // ECONNABORTED and friends: that connection is gone, try the next
            Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => continue,
            Err(e) => {
                eprintln!("soliton: worker {}: accept: {e}", core.index);
                return;
            }
        }
    }
}

fn read_all<H: Handler>(core: &mut Core<H>, idx: usize, buf: &mut [u8]) {
    let chunk = buf.len();
    loop {
        let Some(slot) = core.slots.get(idx) else {
            return;
        };
        let fd = sys::raw(&slot.fd);
        let (res, want) = if let Some(carry) = core.carry_mut(idx) {
            // a partial frame is pending: read straight behind it, no copy
            let old = carry.len();
            carry.resize(old + chunk, 0);
            let r = sys::read(fd, &mut carry[old..]);
            carry.truncate(old + *r.as_ref().unwrap_or(&0));
            if let Ok(n) = r {
                if n > 0 {
                    core.process_carry(idx);
                }
            }
            (r, chunk)
        } else {
            let r = sys::read(fd, buf);
            if let Ok(n) = r {
                if n > 0 {
                    core.on_read(idx, &mut buf[..n]);
                }
            }
            (r, chunk)
        };
        match res {
            Ok(0) => {
                core.on_eof(idx);
                return;
            }
            // a short read drained the socket: the next arrival raises a new edge
            Ok(n) if n < want => return,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                core.on_eof(idx);
                return;
            }
        }
    }
}
