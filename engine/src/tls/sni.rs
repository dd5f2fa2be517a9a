//! The host name a client asks for (SNI, RFC 6066 §3), read from the ClientHello's
//! bytes on the wire: rustls's unbuffered server connection does not report it.
//!
//! A bounds-checked walk over the first handshake record: record header, handshake
//! header, version, random, session id, cipher suites, compression methods, then the
//! extensions until `server_name` (0). Anything malformed or missing gives `None`; the
//! handshake itself is rustls's to judge.

/// The SNI host name in `rec`, the start of the first TLS record a client sent.
pub(crate) fn client_hello_sni(rec: &[u8]) -> Option<Box<str>> {
    let mut r = Reader(rec);
    // record: type 22 (handshake), version, length
    if r.u8()? != 22 {
        return None;
    }
    r.skip(2)?;
    let len = r.u16()? as usize;
    let mut r = Reader(r.0.get(..len.min(r.0.len()))?);
    // handshake: type 1 (ClientHello), 24-bit length
    if r.u8()? != 1 {
        return None;
    }
    r.skip(3)?;
    r.skip(2 + 32)?; // legacy version, random
    let sid = r.u8()? as usize;
    r.skip(sid)?;
    let suites = r.u16()? as usize;
    r.skip(suites)?;
    let comp = r.u8()? as usize;
    r.skip(comp)?;
    let ext_len = r.u16()? as usize;
    let mut ext = Reader(r.take(ext_len.min(r.0.len()))?);
    while let (Some(kind), Some(n)) = (ext.u16(), ext.u16()) {
        let body = ext.take(n as usize)?;
        if kind != 0 {
            continue;
        }
        // server_name_list: length, then (type 0 = host_name, length, name)
        let mut s = Reader(body);
        let list = s.u16()? as usize;
        let mut s = Reader(s.take(list)?);
        while let Some(t) = s.u8() {
            let n = s.u16()? as usize;
            let name = s.take(n)?;
            if t == 0 {
                let name = std::str::from_utf8(name).ok()?;
                let ok = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
                return ok.then(|| name.to_ascii_lowercase().into_boxed_str());
            }
        }
        return None;
    }
    None
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (a, b) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = b;
        Some(a)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello record with the given extensions (type, body).
    fn hello(exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut e = Vec::new();
        for (t, b) in exts {
            e.extend_from_slice(&t.to_be_bytes());
            e.extend_from_slice(&(b.len() as u16).to_be_bytes());
            e.extend_from_slice(b);
        }
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one suite
        body.extend_from_slice(&[1, 0]); // null compression
        body.extend_from_slice(&(e.len() as u16).to_be_bytes());
        body.extend_from_slice(&e);
        let mut hs = vec![1, 0];
        hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
        hs.extend_from_slice(&body);
        let mut rec = vec![22, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    fn sni(name: &str) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
        v.push(0);
        v.extend_from_slice(&(name.len() as u16).to_be_bytes());
        v.extend_from_slice(name.as_bytes());
        v
    }

    #[test]
    fn finds_the_name_after_other_extensions() {
        let rec = hello(&[(10, vec![0, 2, 0, 29]), (0, sni("Chat.Example.com"))]);
        assert_eq!(client_hello_sni(&rec).as_deref(), Some("chat.example.com"));
    }

    #[test]
    fn none_without_sni_or_on_garbage_and_never_panics() {
        assert_eq!(client_hello_sni(&hello(&[(10, vec![0, 2, 0, 29])])), None);
        assert_eq!(client_hello_sni(&hello(&[(0, sni("bad name"))])), None);
        assert_eq!(client_hello_sni(b"GET / HTTP/1.1\r\n"), None);
        let rec = hello(&[(0, sni("a.test"))]);
        for cut in 0..rec.len() {
            let _ = client_hello_sni(&rec[..cut]);
        }
        let mut x = 1u32;
        for _ in 0..2000 {
            let mut r = rec.clone();
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let i = x as usize % r.len();
            r[i] = (x >> 8) as u8;
            let _ = client_hello_sni(&r);
        }
    }
}
