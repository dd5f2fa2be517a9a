//! The client's side: a connect request, the opening request, and the check of the
//! server's answer.

use std::any::Any;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::handler::{CloseInfo, ConnError, Handler};
use super::id::ConnId;
use super::slot::{Phase, Slots};
use super::worker::{Rt, Worker, WorkerCtx};
use super::ws::mark_dirty;
use crate::driver::Driver;
use crate::proto::close::CloseCode;
use crate::proto::conn::Role;
use crate::proto::frame::Status;
use crate::proto::handshake::{self, ClientRequest, HeadLimits, Response};
use crate::proto::HandshakeError;

/// A bad `ws://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlError(pub String);

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UrlError {}

/// What to connect to, and how: a `ws://` URL (resolved when made), subprotocols to
/// offer, extra header fields (`Cookie`, `Authorization`, ...), an `Origin`, a
/// timeout for the connect and the handshake together, and a source address.
#[derive(Clone, Debug)]
pub struct ConnectRequest {
    pub(crate) addr: SocketAddr,
    pub(crate) host: String,
    pub(crate) path: String,
    pub(crate) protocols: Vec<String>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) origin: Option<String>,
    pub(crate) timeout: Duration,
    pub(crate) source: Option<IpAddr>,
}

impl ConnectRequest {
    /// A request for `url` (`ws://host[:port][/path]`; the port defaults to 80). A
    /// host name is resolved here, blocking; an IP address is not. `wss://` is refused
    /// until TLS lands.
    pub fn new(url: &str) -> Result<ConnectRequest, UrlError> {
        let rest = if let Some(r) = url.strip_prefix("ws://") {
            r
        } else if url.starts_with("wss://") {
            return Err(UrlError("wss:// is not supported yet (no TLS)".into()));
        } else {
            return Err(UrlError(format!("{url:?}: not a ws:// URL")));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_owned()),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(UrlError(format!(
                "{url:?}: no host (or user info, unsupported)"
            )));
        }
        let (host, port) = split_host_port(authority)
            .ok_or_else(|| UrlError(format!("{url:?}: bad host or port")))?;
        let addr = match host.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port),
            Err(_) => (host, port)
                .to_socket_addrs()
                .map_err(|e| UrlError(format!("{host}: {e}")))?
                .next()
                .ok_or_else(|| UrlError(format!("{host}: no address")))?,
        };
        Ok(ConnectRequest {
            addr,
            host: authority.to_owned(),
            path,
            protocols: Vec::new(),
            headers: Vec::new(),
            origin: None,
            timeout: Duration::from_secs(10),
            source: None,
        })
    }

    /// Connects to `addr` instead of the URL's address (the URL still gives `Host`
    /// and the path).
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Subprotocols to offer, most preferred first.
    pub fn protocols<I: IntoIterator<Item = S>, S: Into<String>>(mut self, p: I) -> Self {
        self.protocols = p.into_iter().map(Into::into).collect();
        self
    }

    /// Adds a header field to the request (`Cookie`, `Authorization`, ...).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The `Origin` to send.
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    /// Time for the TCP connect and the opening handshake together; default 10 s.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// The local address to connect from (for more source ports than one address has).
    pub fn source(mut self, ip: IpAddr) -> Self {
        self.source = Some(ip);
        self
    }

    /// The address connected to.
    pub fn remote(&self) -> SocketAddr {
        self.addr
    }

    /// The `Host` header value (host, and port when given).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The request target: path and query.
    pub fn path(&self) -> &str {
        &self.path
    }
}

fn split_host_port(a: &str) -> Option<(&str, u16)> {
    if let Some(rest) = a.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &rest[..end];
        let port = match &rest[end + 1..] {
            "" => 80,
            p => p.strip_prefix(':')?.parse().ok()?,
        };
        return Some((host, port));
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => Some((h, p.parse().ok()?)),
        Some(_) => None,
        None => Some((a, 80)),
    }
}

/// What a client connection's handshake answer is checked against.
#[derive(Debug)]
pub(crate) struct ClientHandshake {
    accept: [u8; 28],
    protocols: Vec<String>,
}

/// A connect posted from another thread, with its data.
pub(crate) struct Pending {
    pub(crate) req: ConnectRequest,
    pub(crate) data: Box<dyn Any + Send>,
}

/// splitmix64
pub(crate) fn next_rand(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Starts `req` on this worker: the socket, the slot, the opening request queued (it
/// goes out once connected). Gives the data back with the error if the socket could
/// not even be made.
pub(crate) fn start<D>(
    slots: &mut Slots<D>,
    rt: &mut Rt,
    driver: &mut Driver,
    req: &ConnectRequest,
    data: D,
) -> Result<ConnId, (ConnError, D)> {
    let token = match driver.connect(req.addr, req.source) {
        Ok(t) => t,
        Err(e) => return Err((ConnError::Connect(e), data)),
    };
    let idx = rt.new_slot(
        slots,
        token,
        Role::Client,
        Phase::Connecting,
        Some(data),
        req.timeout,
    );
    let protocols: Vec<&str> = req.protocols.iter().map(String::as_str).collect();
    let extra: Vec<(&str, &str)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let creq = ClientRequest {
        host: &req.host,
        path: &req.path,
        protocols: &protocols,
        extensions: None,
        origin: req.origin.as_deref(),
        extra: &extra,
    };
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&next_rand(&mut rt.rng).to_le_bytes());
    nonce[8..].copy_from_slice(&next_rand(&mut rt.rng).to_le_bytes());
    rt.ctl.clear();
    let accept = handshake::write_client_request(&mut rt.ctl, &creq, nonce);
    let Some(slot) = slots.get_mut(idx) else {
        unreachable!("the slot was just made");
    };
    slot.out.push_bytes(&mut rt.pool, &rt.ctl);
    slot.cold().client = Some(Box::new(ClientHandshake {
        accept,
        protocols: req.protocols.clone(),
    }));
    mark_dirty(slot, &mut rt.dirty, idx);
    Ok(ConnId::new(rt.index, slot.seq, idx))
}

impl<D> WorkerCtx<'_, D> {
    /// Opens a client connection on this worker with `data`; its id now, `on_open` (or
    /// `on_error` and `on_close`) later. The data comes back with the error if the
    /// socket could not be made.
    pub fn connect(&mut self, req: &ConnectRequest, data: D) -> Result<ConnId, (ConnError, D)> {
        start(self.slots, self.rt, self.driver, req, data)
    }
}

impl<H: Handler> Worker<H> {
    /// A connect posted from another thread.
    pub(crate) fn start_connect(&mut self, driver: &mut Driver, p: Pending) {
        let Ok(data) = p.data.downcast::<H::Data>() else {
            return; // a handle of another data type: cannot happen through the API
        };
        if self.shutdown.is_some() {
            self.fail_unstarted(ConnError::Timeout, *data);
            return;
        }
        if let Err((e, data)) = start(&mut self.slots, &mut self.rt, driver, &p.req, *data) {
            self.fail_unstarted(e, data);
        }
    }

    /// A connect that never got a socket: `on_error` and `on_close` (1006) all the same.
    fn fail_unstarted(&mut self, e: ConnError, mut data: H::Data) {
        self.rt.seq += 1;
        let id = ConnId::new(self.rt.index, self.rt.seq, u32::MAX as usize);
        let handler = &mut self.handler;
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            handler.on_error(id, &mut data, &e);
            handler.on_close(
                id,
                data,
                CloseInfo {
                    code: CloseCode::ABNORMAL,
                    reason: "",
                    was_clean: false,
                },
            );
        }));
    }

    /// Handles the response head; returns its length once the connection is open, or
    /// `None` (need more, or the connection failed).
    pub(crate) fn client_handshake(&mut self, idx: usize, buf: &mut [u8]) -> Option<usize> {
        let limits = HeadLimits::default();
        let slot = self.slots.get_mut(idx)?;
        let head_len = match slot.cold().scanner.feed(buf, &limits) {
            Ok(Status::Complete(n)) => n,
            Ok(Status::Partial) => return None,
            Err(_) => {
                self.fail_handshake(idx, ConnError::Handshake("malformed response head"));
                return None;
            }
        };
        let resp = match Response::parse(&buf[..head_len], &limits) {
            Ok(r) => r,
            Err(_) => {
                self.fail_handshake(idx, ConnError::Handshake("malformed response"));
                return None;
            }
        };
        let hs = slot.cold.as_mut().and_then(|c| c.client.take())?;
        let offered: Vec<&str> = hs.protocols.iter().map(String::as_str).collect();
        let verdict = handshake::check_response(&resp, &hs.accept, &offered);
        let protocol = match verdict {
            Ok(a) => {
                if a.extensions.is_some() {
                    // nothing was offered: any extension answered is a violation
                    self.fail_handshake(idx, ConnError::Handshake("extension not offered"));
                    return None;
                }
                a.protocol.map(Box::from)
            }
            Err(HandshakeError::BadStatus(s)) => {
                self.fail_handshake(idx, ConnError::Status(s));
                return None;
            }
            Err(e) => {
                self.fail_handshake(idx, ConnError::Handshake(e.as_str()));
                return None;
            }
        };
        if let Some(slot) = self.slots.get_mut(idx) {
            slot.cold().protocol = protocol;
        }
        self.opened(idx);
        Some(head_len)
    }

    fn fail_handshake(&mut self, idx: usize, e: ConnError) {
        if let Some(slot) = self.slots.get_mut(idx) {
            slot.flags.set_reset(true);
        }
        self.finish(idx, Some(e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let r = ConnectRequest::new("ws://127.0.0.1:9001/chat?x=1").unwrap();
        assert_eq!(r.remote(), "127.0.0.1:9001".parse().unwrap());
        assert_eq!((r.host(), r.path()), ("127.0.0.1:9001", "/chat?x=1"));
        let r = ConnectRequest::new("ws://[::1]:80").unwrap();
        assert_eq!(r.remote(), "[::1]:80".parse().unwrap());
        assert_eq!(r.path(), "/");
        let r = ConnectRequest::new("ws://[::1]").unwrap();
        assert_eq!(r.remote(), "[::1]:80".parse().unwrap());
        assert_eq!(
            ConnectRequest::new("ws://127.0.0.1?q").unwrap().path(),
            "/?q"
        );
        assert_eq!(
            ConnectRequest::new("ws://127.0.0.1").unwrap().remote(),
            "127.0.0.1:80".parse().unwrap()
        );
        assert!(ConnectRequest::new("wss://x/")
            .unwrap_err()
            .0
            .contains("TLS"));
        for bad in [
            "http://x/",
            "ws://127.0.0.1:99999/",
            "ws:///path",
            "ws://user@127.0.0.1/",
            "ws://:80/",
            "ws://[::1/",
        ] {
            assert!(ConnectRequest::new(bad).is_err(), "{bad}");
        }
    }
}
