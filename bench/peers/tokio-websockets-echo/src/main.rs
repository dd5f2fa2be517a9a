//! tokio-websockets echo server, as its `examples/echo_server.rs` does it:
//! `ServerBuilder::accept`, then echo every text and binary message with `send`, each
//! connection an `unconstrained` task on tokio's current_thread runtime. The example's
//! `frame_size(usize::MAX)` and `Limits::unlimited()` are kept.
//!
//! Usage: tokio-websockets-echo [--host 127.0.0.1] [--port 9001] [--core N] [--nodelay]
//!                              [--tls-cert CHAIN.pem --tls-key KEY.pem]
//!
//! With `--tls-cert` and `--tls-key` it serves wss://: each connection's TLS handshake
//! (tokio-rustls, see `peer_common::tls_acceptor`) comes first, in the connection's
//! task, then `ServerBuilder::accept` on the TLS stream; a failed handshake drops the
//! connection. The handshake's SHA-1 stays `sha1_smol` in both modes.
//!
//! Like the example, it leaves Nagle's algorithm on (no `TCP_NODELAY`) unless
//! `--nodelay` is given; `compare` runs it as the example does.

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_websockets::{Config, Limits, ServerBuilder};

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(conn: S) {
    let Ok((_request, mut server)) = ServerBuilder::new()
        .config(Config::default().frame_size(usize::MAX))
        .limits(Limits::unlimited())
        .accept(conn)
        .await
    else {
        return;
    };
    while let Some(Ok(item)) = server.next().await {
        if (item.is_text() || item.is_binary()) && server.send(item).await.is_err() {
            break;
        }
    }
}

fn main() {
    let (peer_common::Opts { addr, nodelay, tls }, rt) = peer_common::start();
    rt.block_on(async move {
        let listener = TcpListener::bind(&addr).await.expect("bind");
        let scheme = if tls.is_some() { "wss" } else { "ws" };
        eprintln!("tokio-websockets-echo: listening on {scheme}://{addr}");
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                continue;
            };
            if nodelay {
                let _ = conn.set_nodelay(true);
            }
            match &tls {
                None => tokio::spawn(tokio::task::unconstrained(echo(conn))),
                Some(acceptor) => {
                    let handshake = acceptor.accept(conn);
                    tokio::spawn(tokio::task::unconstrained(async move {
                        if let Ok(conn) = handshake.await {
                            echo(conn).await;
                        }
                    }))
                }
            };
        }
    })
}
