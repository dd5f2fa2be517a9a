//! tokio-tungstenite echo server, as its `examples/echo-server.rs` does it:
//! `accept_async`, then `split` and `forward` the text and binary messages back, each
//! connection its own task, on tokio's current_thread runtime (the example's
//! `#[tokio::main]` would be multi-threaded; this is the per-core comparison).
//!
//! Usage: tungstenite-echo [--host 127.0.0.1] [--port 9001] [--core N] [--nodelay]
//!
//! Like the example, it leaves Nagle's algorithm on (no `TCP_NODELAY`) unless
//! `--nodelay` is given; `compare` runs it as the example does.

use futures_util::{future, StreamExt, TryStreamExt};
use tokio::net::{TcpListener, TcpStream};

async fn accept_connection(stream: TcpStream) {
    let Ok(ws_stream) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (write, read) = ws_stream.split();
    // as the example: forward text and binary messages only
    let _ = read
        .try_filter(|msg| future::ready(msg.is_text() || msg.is_binary()))
        .forward(write)
        .await;
}

fn main() {
    let (addr, core, nodelay) = args();
    if let Some(c) = core {
        pin(c);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(&addr).await.expect("bind");
        eprintln!("tungstenite-echo: listening on ws://{addr}");
        loop {
            if let Ok((stream, _)) = listener.accept().await {
                if nodelay {
                    let _ = stream.set_nodelay(true);
                }
                tokio::spawn(accept_connection(stream));
            }
        }
    })
}

/// `--host`, `--port`, `--core`, `--nodelay`.
fn args() -> (String, Option<usize>, bool) {
    let (mut host, mut port, mut core) = ("127.0.0.1".to_string(), 9001u16, None);
    let mut nodelay = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "--nodelay" {
            nodelay = true;
            continue;
        }
        let v = it.next().unwrap_or_else(|| usage(&a));
        match a.as_str() {
            "--host" => host = v,
            "--port" => port = v.parse().unwrap_or_else(|_| usage(&a)),
            "--core" => core = Some(v.parse().unwrap_or_else(|_| usage(&a))),
            _ => usage(&a),
        }
    }
    (format!("{host}:{port}"), core, nodelay)
}

fn usage(at: &str) -> ! {
    eprintln!(
        "bad argument {at:?}; usage: [--host 127.0.0.1] [--port 9001] [--core N] [--nodelay]"
    );
    std::process::exit(2)
}

fn pin(core: usize) {
    let id = core_affinity::get_core_ids().and_then(|ids| ids.into_iter().find(|c| c.id == core));
    if !id.is_some_and(core_affinity::set_for_current) {
        eprintln!("cannot pin to core {core}");
    }
}
