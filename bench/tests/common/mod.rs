//! A `soliton-server` process for the tests that need the binary itself: started with
//! the given flags on loopback, its standard error read line by line on a thread of its
//! own, its address taken from the line that says where it listens; killed when
//! dropped.
#![allow(dead_code, unreachable_pub)]

use std::cell::RefCell;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

pub struct ServerProcess {
    pub child: Child,
    lines: Receiver<String>,
    /// Every line read from `lines` so far.
    seen: RefCell<Vec<String>>,
    pub addr: SocketAddr,
    /// How long to wait for a line.
    wait: Duration,
}

impl ServerProcess {
    /// Starts `soliton-server` with `args` and waits (up to `wait`) for its "listening
    /// on" line; `Err` with what it printed if it exits or says nothing of the kind.
    pub fn start(args: &[&str], wait: Duration) -> Result<ServerProcess, String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_soliton-server"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("soliton-server starts");
        let (tx, lines) = channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let end = Instant::now() + wait;
        let mut seen = Vec::new();
        loop {
            match lines.recv_timeout(end.saturating_duration_since(Instant::now())) {
                Ok(l) if l.contains("listening on") => {
                    // "listening on ws://ADDR (...)", or "listening on ADDR (...)" for
                    // the raw TCP echo
                    let at = l.split("listening on ").nth(1).map(|r| {
                        let r = r.split_once("://").map_or(r, |(_, a)| a);
                        r.split(' ').next().unwrap_or(r)
                    });
                    let addr = at.unwrap().parse().expect("the address it listens on");
                    seen.push(l);
                    return Ok(ServerProcess {
                        child,
                        lines,
                        seen: RefCell::new(seen),
                        addr,
                        wait,
                    });
                }
                Ok(l) => seen.push(l),
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().unwrap();
                    return Err(format!("{status}: {}", seen.join("\n")));
                }
            }
        }
    }

    /// The first standard-error line containing `what` since the server started
    /// (waiting for it if it has not come yet).
    pub fn wait_line(&self, what: &str) -> String {
        if let Some(l) = self.seen.borrow().iter().find(|l| l.contains(what)) {
            return l.clone();
        }
        self.next_line(what)
    }

    /// The next standard-error line containing `what` among those not read yet (a line
    /// printed again after an earlier one like it).
    pub fn next_line(&self, what: &str) -> String {
        let end = Instant::now() + self.wait;
        loop {
            match self
                .lines
                .recv_timeout(end.saturating_duration_since(Instant::now()))
            {
                Ok(l) => {
                    self.seen.borrow_mut().push(l.clone());
                    if l.contains(what) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "soliton-server never printed {what:?}: {:?}",
                    self.seen.borrow()
                ),
            }
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
