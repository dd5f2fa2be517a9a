//! The server under test: a `ws://` URL, resolved once, plus what the opening
//! handshake should carry (subprotocols, extra header fields, Origin).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// Where to connect and what to ask for.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// The URL as given.
    pub(crate) url: String,
    /// Resolved server address.
    pub(crate) addr: SocketAddr,
    /// `Host` header value (host, and port when not 80).
    pub(crate) host: String,
    /// Request target: path and query.
    pub(crate) path: String,
    /// Subprotocols offered.
    pub(crate) protocols: Vec<String>,
    /// Extra header fields.
    pub(crate) headers: Vec<(String, String)>,
    /// `Origin`, if any.
    pub(crate) origin: Option<String>,
}

/// Parses `ws://HOST[:PORT][/PATH][?QUERY]` and resolves HOST.
pub(crate) fn parse_url(url: &str) -> Result<(SocketAddr, String, String), String> {
    let rest = if let Some(r) = url.strip_prefix("ws://") {
        r
    } else if url.starts_with("wss://") {
        return Err(format!(
            "{url}: wss:// needs TLS, which soliton-load does not support yet \
             (use ws://, or put a TLS-terminating proxy in front of the load generator)"
        ));
    } else {
        return Err(format!("{url}: expected a ws:// URL"));
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    if authority.is_empty() {
        return Err(format!("{url}: no host"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url}: unclosed [ in host"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("{url}: bad port {p:?}"))?,
            None if after.is_empty() => 80,
            None => return Err(format!("{url}: junk after ]")),
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse().map_err(|_| format!("{url}: bad port {p:?}"))?,
            ),
            None => (authority.to_string(), 80u16),
        }
    };
    let addr = match host.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| format!("{url}: cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{url}: {host} has no address"))?,
    };
    Ok((addr, authority.to_string(), path))
}

impl Target {
    pub(crate) fn new(
        url: &str,
        protocols: &[String],
        headers: &[String],
        origin: Option<String>,
    ) -> Result<Target, String> {
        let (addr, host, path) = parse_url(url)?;
        let mut hs = Vec::new();
        for h in headers {
            let (k, v) = h
                .split_once(':')
                .ok_or_else(|| format!("--header {h:?}: expected 'Name: value'"))?;
            let k = k.trim();
            if k.is_empty() || k.bytes().any(|b| b <= b' ' || b >= 0x7f) {
                return Err(format!("--header {h:?}: bad field name"));
            }
            hs.push((k.to_string(), v.trim().to_string()));
        }
        Ok(Target {
            url: url.to_string(),
            addr,
            host,
            path,
            protocols: protocols.to_vec(),
            headers: hs,
            origin,
        })
    }
}

/// Parses `--source`: addresses and inclusive ranges, comma-separated
/// (`127.0.0.2-127.0.0.60,10.0.0.5`).
pub(crate) fn parse_sources(s: &str) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let a: IpAddr = a.trim().parse().map_err(|_| format!("bad address {a:?}"))?;
                let b: IpAddr = b.trim().parse().map_err(|_| format!("bad address {b:?}"))?;
                match (a, b) {
                    (IpAddr::V4(a), IpAddr::V4(b)) => {
                        let (a, b) = (u32::from(a), u32::from(b));
                        if b < a || b - a > 1 << 20 {
                            return Err(format!("bad range {part:?}"));
                        }
                        out.extend((a..=b).map(|v| IpAddr::V4(v.into())));
                    }
                    (IpAddr::V6(a), IpAddr::V6(b)) => {
                        let (a, b) = (u128::from(a), u128::from(b));
                        if b < a || b - a > 1 << 20 {
                            return Err(format!("bad range {part:?}"));
                        }
                        out.extend((a..=b).map(|v| IpAddr::V6(v.into())));
                    }
                    _ => return Err(format!("range {part:?} mixes IPv4 and IPv6")),
                }
            }
            None => out.push(part.parse().map_err(|_| format!("bad address {part:?}"))?),
        }
    }
    if out.is_empty() {
        return Err("--source: no address".into());
    }
    Ok(out)
}

/// Parses `--cores`: `0`, `0,2`, `0-3`.
pub(crate) fn parse_cores(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.trim().parse().map_err(|_| format!("bad core {a:?}"))?;
                let b: usize = b.trim().parse().map_err(|_| format!("bad core {b:?}"))?;
                if b < a {
                    return Err(format!("bad core range {part:?}"));
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| format!("bad core {part:?}"))?),
        }
    }
    if out.is_empty() {
        return Err("--cores: no core".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let (a, h, p) = parse_url("ws://127.0.0.1:9001/chat?x=1").unwrap();
        assert_eq!(a, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(h, "127.0.0.1:9001");
        assert_eq!(p, "/chat?x=1");
        let (a, _, p) = parse_url("ws://[::1]:80").unwrap();
        assert_eq!(a, "[::1]:80".parse().unwrap());
        assert_eq!(p, "/");
        let (_, _, p) = parse_url("ws://127.0.0.1?q").unwrap();
        assert_eq!(p, "/?q");
        assert!(parse_url("wss://x/").unwrap_err().contains("TLS"));
        assert!(parse_url("http://x/").is_err());
        assert!(parse_url("ws://127.0.0.1:99999/").is_err());
    }

    #[test]
    fn ranges() {
        let v = parse_sources("127.0.0.2-127.0.0.4,127.0.0.9").unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(parse_cores("0,2-4").unwrap(), vec![0, 2, 3, 4]);
        assert!(parse_sources("127.0.0.5-127.0.0.1").is_err());
    }
}
