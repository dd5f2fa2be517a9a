//! fastwebsockets echo server, as its `examples/echo_server.rs` does it: hyper's HTTP/1
//! server with upgrades, `fastwebsockets::upgrade::upgrade`, a `FragmentCollector`
//! (whole messages, UTF-8 checked), each connection task `unconstrained`, on tokio's
//! current_thread runtime. Only the per-connection prints of the example are left out.
//!
//! Usage: fastwebsockets-echo [--host 127.0.0.1] [--port 9001] [--core N] [--nodelay]
//!
//! Like the example, it leaves Nagle's algorithm on (no `TCP_NODELAY`) unless
//! `--nodelay` is given; `compare` runs it as the example does.

use fastwebsockets::{upgrade, OpCode, WebSocketError};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use tokio::net::TcpListener;

async fn handle_client(fut: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = fastwebsockets::FragmentCollector::new(fut.await?);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => break,
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
    Ok(())
}

async fn server_upgrade(
    mut req: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, fut) = upgrade::upgrade(&mut req)?;
    tokio::task::spawn(async move {
        let _ = tokio::task::unconstrained(handle_client(fut)).await;
    });
    Ok(response)
}

fn main() {
    let (
        peer_common::Opts {
            addr, nodelay, tls, ..
        },
        rt,
    ) = peer_common::start();
    if tls.is_some() {
        eprintln!("fastwebsockets-echo: no wss:// mode; --tls-cert/--tls-key are not supported");
        std::process::exit(2);
    }
    rt.block_on(async move {
        let listener = TcpListener::bind(&addr).await.expect("bind");
        eprintln!("fastwebsockets-echo: listening on ws://{addr}");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            if nodelay {
                let _ = stream.set_nodelay(true);
            }
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let conn = http1::Builder::new()
                    .serve_connection(io, service_fn(server_upgrade))
                    .with_upgrades();
                let _ = conn.await;
            });
        }
    })
}
