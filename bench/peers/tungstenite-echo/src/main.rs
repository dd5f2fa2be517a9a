//! tokio-tungstenite echo server, as its `examples/echo-server.rs` does it:
//! `accept_async`, then `split` and `forward` the text and binary messages back, each
//! connection its own task, on tokio's current_thread runtime (the example's
//! `#[tokio::main]` would be multi-threaded; this is the per-core comparison).
//!
//! Usage: tungstenite-echo [--host 127.0.0.1] [--port 9001] [--core N] [--nodelay]
//!                         [--tls-cert CHAIN.pem --tls-key KEY.pem]
//!
//! With `--tls-cert` and `--tls-key` it serves wss://: each connection's TLS handshake
//! (tokio-rustls, see `peer_common::tls_acceptor`) comes first, then `accept_async` on
//! the TLS stream; a failed handshake drops the connection.
//!
//! Like the example, it leaves Nagle's algorithm on (no `TCP_NODELAY`) unless
//! `--nodelay` is given; `compare` runs it as the example does.

use futures_util::{future, StreamExt, TryStreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

async fn accept_connection<S: AsyncRead + AsyncWrite + Unpin>(stream: S) {
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
    let (
        peer_common::Opts {
            addr, nodelay, tls, ..
        },
        rt,
    ) = peer_common::start();
    rt.block_on(async move {
        let listener = TcpListener::bind(&addr).await.expect("bind");
        let scheme = if tls.is_some() { "wss" } else { "ws" };
        eprintln!("tungstenite-echo: listening on {scheme}://{addr}");
        loop {
            if let Ok((stream, _)) = listener.accept().await {
                if nodelay {
                    let _ = stream.set_nodelay(true);
                }
                match &tls {
                    None => tokio::spawn(accept_connection(stream)),
                    Some(acceptor) => {
                        let handshake = acceptor.accept(stream);
                        tokio::spawn(async move {
                            if let Ok(stream) = handshake.await {
                                accept_connection(stream).await;
                            }
                        })
                    }
                };
            }
        }
    })
}
