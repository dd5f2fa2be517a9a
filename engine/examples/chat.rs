//! Chat rooms with a cookie login: rooms are topics, the user comes from a session
//! cookie checked in `on_upgrade`, and the page and the login are plain HTTP on the
//! same port.
//!
//! ```sh
//! cargo run --release -p soliton --example chat -- --port 9002
//! # then open http://127.0.0.1:9002/ in two tabs: log in, chat
//! ```
//!
//! Or by hand:
//!
//! ```sh
//! curl -si -X POST 'http://127.0.0.1:9002/login?user=alice'   # Set-Cookie: session=...
//! cargo run --release -p soliton --example client -- 'ws://127.0.0.1:9002/chat?room=lobby' \
//!     --protocol chat --header 'Cookie: session=TOKEN'
//! ```
//!
//! The protocol:
//!
//! * `GET /` answers the chat page (`chat.html`) to a browser with a session, and a
//!   login form to one without.
//! * `GET` or `POST /login?user=NAME` starts a session: `Set-Cookie: session=TOKEN`
//!   and `303 See Other` to `/?name=NAME`.
//! * The WebSocket is `/chat?room=ROOM` (default `lobby`), with the subprotocol `chat`
//!   or `superchat` (the server prefers `chat`). No session cookie: 401; no
//!   subprotocol in common: 400. A `name` in the query is ignored: the name is the
//!   session's.
//! * Text is published to the room as `NAME: TEXT` (the sender gets it too); lines
//!   from the server start with `* ` (`* welcome ...`, `* NAME joined ROOM`,
//!   `* NAME left ROOM`). Binary messages are echoed to their sender alone.
//!
//! Sessions live in memory, in one table every worker shares; a real service keeps
//! them where its HTTP login writes them and reads them here the same way.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use soliton::proto::handshake::Request;
use soliton::proto::Message;
use soliton::server::{Backend, Builder, CloseInfo, ConnId, Handler, HttpResponse, Reject};
use soliton::server::{Server, ServerHandle, UpgradeRequest, WebSocket};

/// The page; it opens `new WebSocket('/chat?room=ROOM&name=NAME', ['chat', 'superchat'])`.
const PAGE: &str = include_str!("chat.html");

/// What a browser without a session gets at `/`. (A GET form, so that the login works
/// without script; `POST /login?user=NAME` does the same for `fetch` or `curl`.)
const LOGIN_FORM: &str = r#"<!DOCTYPE html>
<meta charset="utf-8"><title>Soliton chat: log in</title>
<form action="/login" method="get">
  <input name="user" placeholder="your name" maxlength="32" autofocus required>
  <button>Log in</button>
</form>
"#;

/// Session token -> user name, shared by every worker: the login may land on one
/// worker and the WebSocket on another. Written once per login, read once per
/// upgrade: the lock is off the message path.
#[derive(Clone, Default)]
struct Sessions(Arc<RwLock<HashMap<String, String>>>);

impl Sessions {
    fn login(&self, user: &str) -> String {
        let token = new_token();
        let mut table = self.0.write().unwrap_or_else(|e| e.into_inner());
        table.insert(token.clone(), user.to_owned());
        token
    }

    fn user(&self, token: &str) -> Option<String> {
        let table = self.0.read().unwrap_or_else(|e| e.into_inner());
        table.get(token).cloned()
    }

    /// The user of the request's `Cookie: session=TOKEN`, if that session exists.
    fn user_of(&self, req: &Request<'_>) -> Option<String> {
        let cookies = req.header_str("cookie")?;
        let token = cookies
            .split(';')
            .find_map(|c| c.trim().strip_prefix("session="))?;
        self.user(token)
    }
}

/// One per worker thread.
struct Chat {
    sessions: Sessions,
    /// To announce a departure: `on_close` has no connection left to publish from.
    server: ServerHandle,
    /// Scratch for the `NAME: TEXT` line, reused by every message of this worker.
    line: String,
}

/// A member of a room: what the upgrade decided, kept for the connection's life.
struct Member {
    user: String,
    /// `room:NAME`: topics are one namespace for the whole server, so name them by kind.
    /// An `Rc` so that each message clones a pointer, not the name.
    topic: Rc<str>,
}

impl Member {
    fn room(&self) -> &str {
        &self.topic["room:".len()..]
    }
}

impl Handler for Chat {
    type Data = Member;

    /// Requests that are not upgrades: the page, the login form, the login.
    fn on_http(&mut self, req: &Request<'_>) -> HttpResponse {
        match (req.method(), req.path()) {
            ("GET", "/") => match self.sessions.user_of(req) {
                Some(_) => html(PAGE),
                None => html(LOGIN_FORM),
            },
            ("GET" | "POST", "/login") => {
                let raw = query_param(req.query(), "user").unwrap_or("");
                let user = match checked(raw, 32) {
                    Some(u) if !u.is_empty() => u,
                    _ => return HttpResponse::new(400, "user: 1 to 32 characters\n"),
                };
                let token = self.sessions.login(&user);
                let mut r = HttpResponse::new(303, format!("logged in as {user}\n"));
                r.headers = vec![
                    (
                        "Set-Cookie".into(),
                        format!("session={token}; Path=/; HttpOnly; SameSite=Strict"),
                    ),
                    // the page fills its name box from ?name=
                    ("Location".into(), format!("/?name={raw}")),
                ];
                r
            }
            _ => HttpResponse::new(404, "the chat is at /\n"),
        }
    }

    /// The upgrade: a known session, a valid room, a subprotocol in common. Whatever
    /// is refused here never becomes a connection (the client sees the HTTP status).
    fn on_upgrade(&mut self, req: &UpgradeRequest<'_, '_>) -> Result<Member, Reject> {
        if req.request.path() != "/chat" {
            return Err(Reject::new(404, "the chat is at /chat?room=ROOM\n"));
        }
        let Some(user) = self.sessions.user_of(req.request) else {
            return Err(Reject::new(401, "log in first: POST /login?user=NAME\n"));
        };
        // the server's most preferred protocol that the client offered, if any
        if req.protocol().is_none() {
            return Err(Reject::new(
                400,
                "offer the subprotocol chat or superchat\n",
            ));
        }
        let room = match query_param(req.request.query(), "room") {
            None | Some("") => "lobby".to_owned(),
            Some(raw) => {
                checked(raw, 64).ok_or_else(|| Reject::new(400, "room: at most 64 characters\n"))?
            }
        };
        Ok(Member {
            user,
            topic: Rc::from(format!("room:{room}")),
        })
    }

    fn on_open(&mut self, ws: &mut WebSocket<'_, Member>) {
        let topic = ws.data().topic.clone();
        ws.subscribe(&topic);
        let others = self.server.num_subscribers(&topic).saturating_sub(1);
        let protocol = ws.protocol().unwrap_or_default().to_owned();
        let m = ws.data();
        let welcome = format!(
            "* welcome {} to {} ({others} already here), subprotocol {protocol}",
            m.user,
            m.room()
        );
        let joined = format!("* {} joined {}", m.user, m.room());
        ws.send_text(&welcome);
        // to every member on every worker, this one included; serialized once
        ws.publish(&topic, Message::Text(&joined));
    }

    fn on_message(&mut self, ws: &mut WebSocket<'_, Member>, msg: Message<'_>) {
        match msg {
            Message::Text(text) => {
                let m = ws.data();
                let topic = m.topic.clone();
                self.line.clear();
                self.line.push_str(&m.user);
                self.line.push_str(": ");
                self.line.push_str(text);
                ws.publish(&topic, Message::Text(&self.line));
            }
            Message::Binary(_) => {
                ws.send(msg);
            }
        }
    }

    /// The connection is gone, and with it its subscriptions; tell the room.
    fn on_close(&mut self, _id: ConnId, m: Member, _info: CloseInfo<'_>) {
        let left = format!("* {} left {}", m.user, m.room());
        self.server.publish(&m.topic, Message::Text(&left));
    }
}

/// Starts the chat on the builder's address (`pub(crate)`: tests/tests/examples.rs
/// runs it too).
pub(crate) fn start(builder: Builder) -> io::Result<ServerHandle> {
    let sessions = Sessions::default();
    builder
        .protocols(["chat", "superchat"])
        .start_with(move |_worker, server| Chat {
            sessions: sessions.clone(),
            server: server.clone(),
            line: String::new(),
        })
}

fn html(body: &str) -> HttpResponse {
    let mut r = HttpResponse::new(200, body);
    r.headers = vec![
        ("Content-Type".into(), "text/html; charset=utf-8".into()),
        ("Cache-Control".into(), "no-store".into()),
    ];
    r
}

/// The raw (still percent-encoded) value of `key` in a query string.
fn query_param<'q>(query: Option<&'q str>, key: &str) -> Option<&'q str> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then_some(v)
    })
}

/// `raw` percent-decoded (`+` is a space), if it is UTF-8 of at most `max` characters
/// and no control characters.
fn checked(raw: &str, max: usize) -> Option<String> {
    let mut bytes = Vec::with_capacity(raw.len());
    let mut it = raw.bytes();
    while let Some(b) = it.next() {
        bytes.push(match b {
            b'+' => b' ',
            b'%' => {
                let hex = [it.next()?, it.next()?];
                u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?
            }
            b => b,
        });
    }
    let s = String::from_utf8(bytes).ok()?;
    (s.chars().count() <= max && !s.chars().any(char::is_control)).then_some(s)
}

/// 128 bits no one can guess: std's SipHash keyed from the OS's randomness, over a
/// counter. Enough for an example without a dependency; a service uses its CSPRNG.
fn new_token() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let half = |salt: u64| {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(n);
        h.write_u64(salt);
        h.finish()
    };
    format!("{:016x}{:016x}", half(0), half(1))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (port, backend) = args()?;
    let server = start(
        Server::builder()
            .addr(SocketAddr::from(([127, 0, 0, 1], port)))
            .backend(backend),
    )?;
    println!(
        "chat: open http://{}/ (WebSocket at /chat?room=ROOM, {} workers, {}); Ctrl-C to stop",
        server.local_addr(),
        server.workers(),
        server.backend().name()
    );
    wait_for_ctrl_c()?;
    println!("chat: shutting down");
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

const USAGE: &str = "usage: chat [--port N] [--backend auto|uring|epoll]";

/// `--port N` (default 9002) and `--backend auto|uring|epoll` (default auto).
fn args() -> Result<(u16, Backend), String> {
    let (mut port, mut backend) = (9002, Backend::Auto);
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
