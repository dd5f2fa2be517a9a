//! tokio-websockets echo server, as its `examples/echo_server.rs` does it:
//! `ServerBuilder::accept`, then echo every text and binary message with `send`, each
//! connection an `unconstrained` task on tokio's current_thread runtime. The example's
//! `frame_size(usize::MAX)` and `Limits::unlimited()` are kept.
//!
//! Usage: tokio-websockets-echo [--host 127.0.0.1] [--port 9001] [--core N] [--nodelay]
//!                              [--broadcast] [--tls-cert CHAIN.pem --tls-key KEY.pem]
//!
//! `--broadcast` publishes every message to every connection (the sender too) instead
//! of echoing it, the way its users do pub/sub: one `tokio::sync::broadcast` channel,
//! each connection's task `select!`s between its socket and its receiver, and feeds
//! every message already in the channel before one flush. The channel holds 65,536
//! messages (a lagging receiver loses messages, which is reported on stderr, never
//! silently); `compare`'s fan-out rows run it so.
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
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio_websockets::{Config, Limits, Message, ServerBuilder, WebSocketStream};

/// The opening handshake as the example does it, then the echo, or with `--broadcast`
/// the fan-out through `tx`.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(conn: S, tx: Option<broadcast::Sender<Message>>) {
    let Ok((_request, server)) = ServerBuilder::new()
        .config(Config::default().frame_size(usize::MAX))
        .limits(Limits::unlimited())
        .accept(conn)
        .await
    else {
        return;
    };
    match tx {
        None => echo(server).await,
        Some(tx) => fan_out(server, tx).await,
    }
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut server: WebSocketStream<S>) {
    while let Some(Ok(item)) = server.next().await {
        if (item.is_text() || item.is_binary()) && server.send(item).await.is_err() {
            break;
        }
    }
}

/// `--broadcast`: every text and binary message to every connection's task.
async fn fan_out<S: AsyncRead + AsyncWrite + Unpin>(
    mut server: WebSocketStream<S>,
    tx: broadcast::Sender<Message>,
) {
    let mut rx = tx.subscribe();
    loop {
        tokio::select! {
            item = server.next() => match item {
                Some(Ok(m)) if m.is_text() || m.is_binary() => {
                    let _ = tx.send(m);
                }
                Some(Ok(_)) => {}
                _ => break,
            },
            m = rx.recv() => {
                let m = match m {
                    Ok(m) => m,
                    Err(RecvError::Lagged(n)) => {
                        eprintln!("tokio-websockets-echo: a connection lost {n} messages (lagged)");
                        continue;
                    }
                    Err(RecvError::Closed) => break,
                };
                if server.feed(m).await.is_err() {
                    break;
                }
                let mut failed = false;
                loop {
                    match rx.try_recv() {
                        Ok(m) => {
                            if server.feed(m).await.is_err() {
                                failed = true;
                                break;
                            }
                        }
                        Err(TryRecvError::Lagged(n)) => {
                            eprintln!("tokio-websockets-echo: a connection lost {n} messages (lagged)");
                        }
                        Err(_) => break,
                    }
                }
                if failed || server.flush().await.is_err() {
                    break;
                }
            }
        }
    }
}

fn main() {
    let (
        peer_common::Opts {
            addr,
            nodelay,
            broadcast: fan_out,
            tls,
        },
        rt,
    ) = peer_common::start_with(true);
    let (tx, _) = broadcast::channel::<Message>(1 << 16);
    rt.block_on(async move {
        let listener = TcpListener::bind(&addr).await.expect("bind");
        let scheme = if tls.is_some() { "wss" } else { "ws" };
        let how = if fan_out { " (broadcast)" } else { "" };
        eprintln!("tokio-websockets-echo: listening on {scheme}://{addr}{how}");
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                continue;
            };
            if nodelay {
                let _ = conn.set_nodelay(true);
            }
            let tx = fan_out.then(|| tx.clone());
            match &tls {
                None => tokio::spawn(tokio::task::unconstrained(serve(conn, tx))),
                Some(acceptor) => {
                    let handshake = acceptor.accept(conn);
                    tokio::spawn(tokio::task::unconstrained(async move {
                        if let Ok(conn) = handshake.await {
                            serve(conn, tx).await;
                        }
                    }))
                }
            };
        }
    })
}
