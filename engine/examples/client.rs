//! The engine's client role: open N connections to a WebSocket URL, send messages
//! one at a time on each, print every echo with its round-trip time, close with
//! 1000 "done" and exit.
//!
//! ```sh
//! cargo run --release -p soliton --example echo -- --port 9001 &
//! cargo run --release -p soliton --example client -- ws://127.0.0.1:9001/ --connections 4 --messages 5
//! ```
//!
//! Options: `--connections N` (default 2), `--messages N` per connection (default 3),
//! `--protocol NAME` (a subprotocol to offer; repeatable), `--header "Name: value"`
//! (repeatable: `Cookie`, `Authorization`, ...), `--backend auto|uring|epoll`. A
//! `wss://` URL is checked against the system's roots.
//!
//! Against `deferred_upgrade.rs`, which greets before echoing:
//!
//! ```sh
//! cargo run --release -p soliton --example client -- ws://127.0.0.1:9003/ws \
//!     --header "Authorization: Bearer token-alice"
//! ```
//!
//! The client runs the same workers, drivers and [`Handler`] trait as the server:
//! callbacks start at `on_open` (or `on_error` when the connect or the handshake
//! fails) and always end at `on_close`, on the worker the connection was opened on.

use std::io;
use std::sync::mpsc::{channel, Sender};
use std::time::{Duration, Instant};

use soliton::client::{Client, ClientBuilder, CloseInfo, ConnError, ConnId, ConnectRequest};
use soliton::client::{Handler, WebSocket};
use soliton::proto::{CloseCode, Message};
use soliton::server::Backend;

/// The command line: the URL and request, and how much to send.
struct Options {
    url: String,
    request: ConnectRequest,
    connections: usize,
    messages: usize,
}

/// One per connection: what it sent last and when, and its round trips so far.
struct Conn {
    n: usize,
    sent: usize,
    expected: String,
    sent_at: Instant,
    rtts: Vec<Duration>,
}

/// A connection's outcome, sent to `main` from `on_close`.
struct Done {
    n: usize,
    rtts: Vec<Duration>,
    clean: bool,
}

/// One per client worker.
struct Pinger {
    messages: usize,
    done: Sender<Done>,
}

impl Pinger {
    /// Sends the connection's next message and remembers what should come back.
    fn send_next(&self, ws: &mut WebSocket<'_, Conn>) {
        let c = ws.data();
        c.sent += 1;
        let text = format!(
            "message {} of {} from connection {}",
            c.sent, self.messages, c.n
        );
        c.sent_at = Instant::now();
        ws.send_text(&text);
        ws.data().expected = text;
    }
}

impl Handler for Pinger {
    type Data = Conn;

    fn on_open(&mut self, ws: &mut WebSocket<'_, Conn>) {
        let n = ws.data().n;
        println!("[{n}] open, subprotocol {:?}", ws.protocol());
        self.send_next(ws);
    }

    fn on_message(&mut self, ws: &mut WebSocket<'_, Conn>, msg: Message<'_>) {
        let c = ws.data();
        let Message::Text(text) = msg else {
            println!("[{}] binary message, {} B", c.n, msg.as_bytes().len());
            return;
        };
        if text != c.expected {
            // a greeting or anything else the server says on its own
            println!("[{}] server says: {text}", c.n);
            return;
        }
        let rtt = c.sent_at.elapsed();
        c.rtts.push(rtt);
        println!("[{}] echo {:?} in {} us", c.n, text, rtt.as_micros());
        if c.sent < self.messages {
            self.send_next(ws);
        } else {
            // the close handshake: on_close follows once the server's close arrives
            ws.close(CloseCode::NORMAL, "done");
        }
    }

    fn on_error(&mut self, _id: ConnId, c: &mut Conn, error: &ConnError) {
        println!("[{}] failed: {error}", c.n);
    }

    fn on_close(&mut self, _id: ConnId, c: Conn, info: CloseInfo<'_>) {
        println!(
            "[{}] closed: {} {:?}, clean: {}",
            c.n,
            info.code.get(),
            info.reason,
            info.was_clean
        );
        let _ = self.done.send(Done {
            n: c.n,
            rtts: c.rtts,
            clean: info.was_clean,
        });
    }
}

/// Round trips of every connection, and how many ended as planned (every echo, then
/// a clean close). (`pub(crate)`, as `run`: tests/tests/examples.rs runs them.)
pub(crate) struct Report {
    pub(crate) rtts: Vec<Duration>,
    pub(crate) clean: usize,
}

/// Runs the client: `connections` connections to `request`, `messages` each; waits
/// for every connection to end (or `timeout`), stops the workers.
pub(crate) fn run(
    builder: ClientBuilder,
    request: &ConnectRequest,
    connections: usize,
    messages: usize,
    timeout: Duration,
) -> io::Result<Report> {
    let (tx, rx) = channel();
    let client = builder.start(move |_worker| Pinger {
        messages,
        done: tx.clone(),
    })?;
    for n in 0..connections {
        let conn = Conn {
            n,
            sent: 0,
            expected: String::new(),
            sent_at: Instant::now(),
            rtts: Vec::with_capacity(messages),
        };
        client.connect(request.clone(), conn);
    }
    let deadline = Instant::now() + timeout;
    let mut report = Report {
        rtts: Vec::new(),
        clean: 0,
    };
    for _ in 0..connections {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(done) = rx.recv_timeout(left) else {
            println!("timed out: closing what is left");
            break;
        };
        if done.clean && done.rtts.len() == messages {
            report.clean += 1;
        } else {
            println!("[{}] ended early", done.n);
        }
        report.rtts.extend(done.rtts);
    }
    // every connection has ended (or the time is up): this closes what is left
    client.shutdown(Duration::from_secs(1))?;
    Ok(report)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (opts, backend) = args()?;
    let connections = opts.connections;
    println!(
        "client: {connections} x {} messages to {}",
        opts.messages, opts.url
    );
    let started = Instant::now();
    let mut report = run(
        Client::builder().backend(backend),
        &opts.request,
        connections,
        opts.messages,
        Duration::from_secs(30),
    )?;
    report.rtts.sort();
    let us = |d: Option<&Duration>| d.map_or(0, |d| d.as_micros());
    println!(
        "client: {}/{connections} connections got every echo and closed cleanly; \
         {} round trips in {} ms: min {} us, median {} us, max {} us",
        report.clean,
        report.rtts.len(),
        started.elapsed().as_millis(),
        us(report.rtts.first()),
        us(report.rtts.get(report.rtts.len() / 2)),
        us(report.rtts.last()),
    );
    if report.clean < connections {
        std::process::exit(1);
    }
    Ok(())
}

const USAGE: &str = "usage: client [ws://HOST:PORT/PATH] [--connections N] [--messages N] \
                     [--protocol NAME]... [--header 'Name: value']... [--backend auto|uring|epoll]";

/// The URL (default `ws://127.0.0.1:9001/`) and the options above.
fn args() -> Result<(Options, Backend), String> {
    let mut url = "ws://127.0.0.1:9001/".to_owned();
    let (mut connections, mut messages, mut backend) = (2, 3, Backend::Auto);
    let (mut protocols, mut headers) = (Vec::new(), Vec::new());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--connections" => connections = value()?.parse().map_err(|e| format!("{arg}: {e}"))?,
            "--messages" => messages = value()?.parse().map_err(|e| format!("{arg}: {e}"))?,
            "--protocol" => protocols.push(value()?),
            "--header" => {
                let h = value()?;
                let (name, v) = h
                    .split_once(':')
                    .ok_or(format!("{h:?}: not 'Name: value'"))?;
                headers.push((name.trim().to_owned(), v.trim().to_owned()));
            }
            "--backend" => backend = value()?.parse()?,
            u if u.starts_with("ws://") || u.starts_with("wss://") => url = u.to_owned(),
            _ => return Err(USAGE.into()),
        }
    }
    if messages == 0 {
        return Err("--messages: at least 1".into());
    }
    let mut request = ConnectRequest::new(&url)
        .map_err(|e| e.to_string())?
        .protocols(protocols);
    for (name, v) in headers {
        request = request.header(name, v);
    }
    let opts = Options {
        url,
        request,
        connections,
        messages,
    };
    Ok((opts, backend))
}
