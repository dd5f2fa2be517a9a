//! A tokio HTTP service that publishes to WebSocket topics through the async bridge.
//!
//! ```text
//! cargo run -p soliton --features tokio --example bridge -- [WS_PORT] [HTTP_PORT]
//! ```
//!
//! WebSocket clients join a topic by path (`ws://127.0.0.1:9001/news` joins `news`)
//! and what they send is published to their topic. The HTTP service, on its own port
//! with tokio's `TcpListener`, publishes a request's body to a topic:
//!
//! ```text
//! websocat ws://127.0.0.1:9001/news &
//! curl -d 'hello' http://127.0.0.1:8080/publish/news
//! ```
//!
//! The WebSocket connections live on the engine's worker threads; this program's
//! tokio runtime only sees their events and acts on them through the bridge.

use std::io;
use std::net::SocketAddr;

use soliton::bridge::{self, Bridge, BridgeOptions, Event};
use soliton::proto::Message;
use soliton::server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head and body the HTTP side reads.
const MAX_HEAD: usize = 8 << 10;
const MAX_BODY: usize = 1 << 20;

fn main() -> io::Result<()> {
    // one thread for the application; the connections have the engine's workers
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?
        .block_on(run())
}

async fn run() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let ws_port: u16 = args.next().and_then(|a| a.parse().ok()).unwrap_or(9001);
    let http_port: u16 = args.next().and_then(|a| a.parse().ok()).unwrap_or(8080);

    let builder = Server::builder().addr(SocketAddr::from(([127, 0, 0, 1], ws_port)));
    let (bridge, mut events) = bridge::serve(builder, BridgeOptions::new())?;
    let http = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], http_port))).await?;
    println!(
        "WebSocket on ws://{}/<topic>, HTTP on http://{}/publish/<topic>",
        bridge.local_addr(),
        http.local_addr()?
    );

    // the WebSocket side: join the path's topic, publish what comes in
    let b = bridge.clone();
    tokio::spawn(async move {
        let mut topics = std::collections::HashMap::new();
        while let Some(ev) = events.next().await {
            match ev {
                Event::Open { id, path, .. } => {
                    let topic = path.trim_start_matches('/').to_owned();
                    b.subscribe(id, &topic);
                    let hello = format!("joined {topic}");
                    // returns once the connection can take more (or it closed)
                    let _ = b.send(id, Message::Text(&hello)).await;
                    topics.insert(id, topic);
                }
                Event::Message { id, payload } => {
                    if let Some(topic) = topics.get(&id) {
                        b.publish(topic, payload.as_message());
                    }
                }
                Event::Close { id, .. } => {
                    topics.remove(&id);
                }
            }
        }
    });

    // the HTTP side: POST /publish/<topic>
    loop {
        let (stream, _) = http.accept().await?;
        let b = bridge.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_http(stream, &b).await {
                eprintln!("http: {e}");
            }
        });
    }
}

/// One request per connection: `POST /publish/<topic>` with a body publishes it.
async fn serve_http(mut stream: TcpStream, bridge: &Bridge) -> io::Result<()> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return respond(&mut stream, 431, "head too large\n").await;
        }
        let mut chunk = [0u8; 2048];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut request = lines.next().unwrap_or("").split_whitespace();
    let (method, target) = (request.next().unwrap_or(""), request.next().unwrap_or(""));
    let length: usize = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let Some(topic) = target.strip_prefix("/publish/").filter(|t| !t.is_empty()) else {
        return respond(&mut stream, 404, "POST /publish/<topic>\n").await;
    };
    if method != "POST" {
        return respond(&mut stream, 405, "POST /publish/<topic>\n").await;
    }
    if length > MAX_BODY {
        return respond(&mut stream, 413, "body too large\n").await;
    }
    let mut body = buf.split_off(head_end);
    while body.len() < length {
        let mut chunk = vec![0u8; length - body.len()];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    let receivers = bridge.handle().num_subscribers(topic);
    match std::str::from_utf8(&body) {
        Ok(text) => bridge.publish(topic, Message::Text(text)),
        Err(_) => bridge.publish(topic, Message::Binary(&body)),
    }
    let answer = format!("published {length} bytes to {receivers} subscribers of {topic}\n");
    respond(&mut stream, 200, &answer).await
}

async fn respond(stream: &mut TcpStream, status: u16, body: &str) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        _ => "Request Header Fields Too Large",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
