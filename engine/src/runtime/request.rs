//! What a client connection asks for: a `ws://` URL resolved, subprotocols, header
//! fields, a timeout, a source address; and what its handshake answer is checked
//! against.

use std::any::Any;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::proto::deflate::ClientOffer;

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
    pub(crate) deflate: Option<ClientOffer>,
    /// `wss://`: the host name for SNI and certificate checks.
    pub(crate) tls_host: Option<String>,
    /// `wss://`: the trust and session cache to use (default: the system's roots).
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::tls::TlsConnector>,
}

impl ConnectRequest {
    /// A request for `url` (`ws://host[:port][/path]`, port 80 by default, or
    /// `wss://...`, port 443 by default, TLS with the system's roots unless
    /// [`tls`](ConnectRequest::tls) says otherwise). A host name is resolved here,
    /// blocking; an IP address is not.
    pub fn new(url: &str) -> Result<ConnectRequest, UrlError> {
        let (rest, secure) = if let Some(r) = url.strip_prefix("ws://") {
            (r, false)
        } else if let Some(r) = url.strip_prefix("wss://") {
            if cfg!(not(feature = "tls")) {
                return Err(UrlError(
                    "wss:// needs TLS: soliton was built without its `tls` feature".into(),
                ));
            }
            (r, true)
        } else {
            return Err(UrlError(format!("{url:?}: not a ws:// or wss:// URL")));
        };
        let default_port = if secure { 443 } else { 80 };
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
        let (host, port) = split_host_port(authority, default_port)
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
            deflate: None,
            tls_host: secure.then(|| host.to_owned()),
            #[cfg(feature = "tls")]
            tls: None,
        })
    }

    /// `wss://`: whom to trust, and the session cache (see
    /// [`TlsConnector`](crate::tls::TlsConnector)); the default is the system's roots.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, c: crate::tls::TlsConnector) -> Self {
        self.tls = Some(c);
        self
    }

    /// The URL was `wss://`.
    pub fn is_secure(&self) -> bool {
        self.tls_host.is_some()
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

    /// Offers permessage-deflate (RFC 7692) with these parameters; what the server
    /// answers decides (no answer: no compression). The client's `Config::deflate` gives
    /// the memLevel and the threshold, and with `Dedicated` lets it keep context where
    /// the server allows it.
    pub fn deflate(mut self, offer: ClientOffer) -> Self {
        self.deflate = Some(offer);
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

fn split_host_port(a: &str, default_port: u16) -> Option<(&str, u16)> {
    if let Some(rest) = a.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &rest[..end];
        let port = match &rest[end + 1..] {
            "" => default_port,
            p => p.strip_prefix(':')?.parse().ok()?,
        };
        return Some((host, port));
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => Some((h, p.parse().ok()?)),
        Some(_) => None,
        None => Some((a, default_port)),
    }
}

/// What a client connection's handshake answer is checked against.
#[derive(Debug)]
pub(crate) struct ClientHandshake {
    pub(crate) accept: [u8; 28],
    pub(crate) protocols: Vec<String>,
    pub(crate) deflate: Option<ClientOffer>,
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
        let r = ConnectRequest::new("wss://127.0.0.1/x").unwrap();
        assert_eq!(r.remote(), "127.0.0.1:443".parse().unwrap());
        assert!(r.is_secure());
        assert!(!ConnectRequest::new("ws://127.0.0.1/x").unwrap().is_secure());
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
