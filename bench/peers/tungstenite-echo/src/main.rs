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
    let (peer_common::Opts { addr, nodelay }, rt) = peer_common::start();
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
