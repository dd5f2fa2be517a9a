//! The server under test: a `ws://` or `wss://` URL, resolved once, plus what the
//! opening handshake should carry (subprotocols, extra header fields, Origin) and, for
//! `wss://`, whom to trust, as the engine's [`ConnectRequest`].

use std::net::IpAddr;

use soliton::client::ConnectRequest;

/// Where to connect and what to ask for.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// The URL as given.
    pub(crate) url: String,
    /// The request every connection makes.
    pub(crate) req: ConnectRequest,
}

impl Target {
    pub(crate) fn new(
        url: &str,
        protocols: &[String],
        headers: &[String],
        origin: Option<String>,
    ) -> Result<Target, String> {
        let mut req = ConnectRequest::new(url)
            .map_err(|e| format!("{url}: {e}"))?
            .protocols(protocols.to_vec());
        for h in headers {
            let (k, v) = h
                .split_once(':')
                .ok_or_else(|| format!("--header {h:?}: expected 'Name: value'"))?;
            let k = k.trim();
            if k.is_empty() || k.bytes().any(|b| b <= b' ' || b >= 0x7f) {
                return Err(format!("--header {h:?}: bad field name"));
            }
            req = req.header(k, v.trim());
        }
        if let Some(o) = origin {
            req = req.origin(o);
        }
        Ok(Target {
            url: url.to_string(),
            req,
        })
    }

    /// `wss://`: trust `ca` (a PEM file), or nothing at all (`insecure`), or the system's
    /// roots; `resume: false` makes every handshake a full one.
    pub(crate) fn tls(
        mut self,
        ca: Option<&std::path::Path>,
        insecure: bool,
        resume: bool,
    ) -> Result<Target, String> {
        use soliton::tls::TlsConnector;
        if !self.req.is_secure() {
            if ca.is_some() || insecure {
                return Err(format!(
                    "{}: --ca and --insecure are for wss:// URLs",
                    self.url
                ));
            }
            return Ok(self);
        }
        let c = match (ca, insecure) {
            (Some(_), true) => return Err("--ca and --insecure exclude each other".into()),
            (Some(f), false) => TlsConnector::with_ca_file(f).map_err(|e| e.to_string())?,
            (None, true) => TlsConnector::insecure(),
            (None, false) => TlsConnector::system().map_err(|e| e.to_string())?,
        };
        // many connections at once each resume a session of their own
        let c = if resume {
            c.with_ticket_pool(1 << 16)
        } else {
            c.without_resumption()
        };
        self.req = self.req.tls(c);
        Ok(self)
    }
}

/// Fanout across nodes: the distinct URLs that connections go to, the publishers' URL
/// first (node 0), then the `--subscriber-url`s in the order given (a URL given twice,
/// or the publishers' URL given again, is one node). Nodes are told apart by the URL
/// as written.
#[derive(Clone, Debug, Default)]
pub(crate) struct Nodes {
    /// One per node.
    pub(crate) urls: Vec<String>,
    /// For each subscriber URL (in the order given), the index of its node.
    pub(crate) of_subscriber_url: Vec<u16>,
}

impl Nodes {
    /// The nodes of a run with publishers on `url` and subscribers spread over
    /// `subscriber_urls`; none (no per-node figures) when that list is empty.
    pub(crate) fn new(url: &str, subscriber_urls: &[String]) -> Result<Nodes, String> {
        let mut n = Nodes::default();
        if subscriber_urls.is_empty() {
            return Ok(n);
        }
        n.urls.push(url.to_string());
        for u in subscriber_urls {
            let i = match n.urls.iter().position(|x| x == u) {
                Some(i) => i,
                None => {
                    n.urls.push(u.clone());
                    n.urls.len() - 1
                }
            };
            let i = u16::try_from(i).map_err(|_| "--subscriber-url: too many nodes")?;
            n.of_subscriber_url.push(i);
        }
        Ok(n)
    }

    /// The node of the `k`-th subscriber: it connects to subscriber URL `k % len` (0,
    /// the publishers' node, when there are no subscriber URLs).
    pub(crate) fn of_subscriber(&self, k: usize) -> u16 {
        let n = self.of_subscriber_url.len();
        if n == 0 {
            return 0;
        }
        self.of_subscriber_url[k % n]
    }

    /// Subscribers asked for on each node (the k-th on [`Self::of_subscriber`]`(k)`).
    pub(crate) fn subscribers(&self, subscribers: usize) -> Vec<u64> {
        let mut per = vec![0; self.urls.len()];
        let n = self.of_subscriber_url.len();
        for (t, &node) in self.of_subscriber_url.iter().enumerate() {
            // k in 0..subscribers with k % n == t
            per[node as usize] += subscribers.saturating_sub(t).div_ceil(n) as u64;
        }
        per
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
    fn targets() {
        let t = Target::new(
            "ws://127.0.0.1:9001/chat?x=1",
            &["chat".into()],
            &["Cookie: a=b".into()],
            None,
        )
        .unwrap();
        assert_eq!(t.req.remote(), "127.0.0.1:9001".parse().unwrap());
        let t = Target::new("wss://127.0.0.1/", &[], &[], None).unwrap();
        assert_eq!(t.req.remote(), "127.0.0.1:443".parse().unwrap());
        assert!(t.clone().tls(None, true, true).is_ok());
        assert!(t
            .tls(Some(std::path::Path::new("/nonexistent.pem")), false, true)
            .unwrap_err()
            .contains("nonexistent"));
        assert!(Target::new("ws://127.0.0.1/", &[], &[], None)
            .unwrap()
            .tls(None, true, true)
            .is_err());
        assert!(Target::new("http://x/", &[], &[], None).is_err());
        assert!(Target::new("ws://127.0.0.1/", &[], &["nocolon".into()], None).is_err());
    }

    #[test]
    fn nodes_are_distinct_urls_publishers_first() {
        let n = Nodes::new("ws://a/", &[]).unwrap();
        assert!(n.urls.is_empty());
        let subs = ["ws://a/", "ws://b/", "ws://c/", "ws://b/"].map(String::from);
        let n = Nodes::new("ws://a/", &subs).unwrap();
        assert_eq!(n.urls, ["ws://a/", "ws://b/", "ws://c/"]);
        assert_eq!(n.of_subscriber_url, [0, 1, 2, 1]);
        // 10 subscribers over 4 URLs: 3, 3, 2, 2; b is given twice
        assert_eq!(n.subscribers(10), [3, 5, 2]);
        assert_eq!(n.subscribers(1), [1, 0, 0]);
        let per = (0..10).fold([0u64; 3], |mut per, k| {
            per[n.of_subscriber(k) as usize] += 1;
            per
        });
        assert_eq!(
            per.to_vec(),
            n.subscribers(10),
            "the count follows the placement"
        );
        assert_eq!(Nodes::new("ws://a/", &[]).unwrap().of_subscriber(5), 0);
        let n = Nodes::new("ws://p/", &subs[1..3]).unwrap();
        assert_eq!(n.urls, ["ws://p/", "ws://b/", "ws://c/"]);
        assert_eq!(n.subscribers(7), [0, 4, 3]);
    }

    #[test]
    fn ranges() {
        let v = parse_sources("127.0.0.2-127.0.0.4,127.0.0.9").unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(parse_cores("0,2-4").unwrap(), vec![0, 2, 3, 4]);
        assert!(parse_sources("127.0.0.5-127.0.0.1").is_err());
    }
}
