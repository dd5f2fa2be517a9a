//! The smallest useful server: every message goes back to its sender.
//!
//! ```sh
//! cargo run --release -p soliton --example echo -- --port 9001
//! cargo run --release -p soliton --example client -- ws://127.0.0.1:9001/
//! ```
//!
//! `--backend auto|uring|epoll` picks the I/O driver (default `auto`: io_uring where
//! the kernel allows it, else epoll). One worker thread per core, each with its own
//! listener on the port (`SO_REUSEPORT`). Ctrl-C closes every connection with 1001 and
//! waits up to two seconds for the close handshakes.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use soliton::proto::Message;
use soliton::server::{Backend, Builder, Handler, Reject, Server, ServerHandle};
use soliton::server::{UpgradeRequest, WebSocket};

/// One per worker thread: made on that thread, so it need not be `Send`.
struct Echo;

impl Handler for Echo {
    /// Nothing to keep per connection.
    type Data = ();

    /// Every upgrade is accepted (the default refuses with 404). This is where a real
    /// server reads `req.request.path()`, cookies or tokens: see `chat.rs`.
    fn on_upgrade(&mut self, _req: &UpgradeRequest<'_, '_>) -> Result<(), Reject> {
        Ok(())
    }

    /// `msg` borrows the worker's receive buffer (unmasked and UTF-8-checked in
    /// place); `send` queues it, text stays text and binary stays binary.
    fn on_message(&mut self, ws: &mut WebSocket<'_, ()>, msg: Message<'_>) {
        ws.send(msg);
    }
}

/// Starts the echo server on the builder's address; returns once every worker runs.
/// (`pub(crate)`: tests/tests/examples.rs runs it too.)
pub(crate) fn start(builder: Builder) -> io::Result<ServerHandle> {
    builder.start(|_worker| Echo)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (port, backend) = args()?;
    let server = start(
        Server::builder()
            .addr(SocketAddr::from(([127, 0, 0, 1], port)))
            .backend(backend),
    )?;
    println!(
        "echo: listening on ws://{}/ ({} workers, {}); Ctrl-C to stop",
        server.local_addr(),
        server.workers(),
        server.backend().name()
    );
    wait_for_ctrl_c()?;
    println!("echo: shutting down");
    server.shutdown(Duration::from_secs(2))?;
    Ok(())
}

/// Blocks until SIGINT or SIGTERM.
fn wait_for_ctrl_c() -> io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?
        .forever()
        .next();
    Ok(())
}

const USAGE: &str = "usage: echo [--port N] [--backend auto|uring|epoll]";

/// `--port N` (default 9001) and `--backend auto|uring|epoll` (default auto).
fn args() -> Result<(u16, Backend), String> {
    let (mut port, mut backend) = (9001, Backend::Auto);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--port" => port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--backend" => backend = value()?.parse()?,
            _ => return Err(USAGE.into()),
        }
    }
    Ok((port, backend))
}
