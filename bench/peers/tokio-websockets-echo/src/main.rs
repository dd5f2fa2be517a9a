//! tokio-websockets echo server, as its `examples/echo_server.rs` does it:
//! `ServerBuilder::accept`, then echo every text and binary message with `send`, each
//! connection an `unconstrained` task on tokio's current_thread runtime. The example's
//! `frame_size(usize::MAX)` and `Limits::unlimited()` are kept.
//!
//! Usage: tokio-websockets-echo [--host 127.0.0.1] [--port 9001] [--core N] [--nodelay]
//!
//! Like the example, it leaves Nagle's algorithm on (no `TCP_NODELAY`) unless
//! `--nodelay` is given; `compare` runs it as the example does.

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_websockets::{Config, Limits, ServerBuilder};

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
        eprintln!("tokio-websockets-echo: listening on ws://{addr}");
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                continue;
            };
            if nodelay {
                let _ = conn.set_nodelay(true);
            }
            tokio::spawn(tokio::task::unconstrained(async move {
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
            }));
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
