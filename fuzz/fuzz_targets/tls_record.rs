//! The TLS layer (`soliton::tls::TlsLayer`) on arbitrary bytes. One acceptor (a
//! self-signed certificate for `localhost`) and four connectors (TLS 1.3 or 1.2 only,
//! with or without resumption) are made once; per input, a server layer and a client
//! layer, then the input as a list of chunks fed to the SERVER layer's `decode`:
//!
//! * byte 0: bit 0 = a fresh server (no handshake first: the chunks are the first bytes
//!   it sees); bits 1-2 = the connector (bit 1: TLS 1.2 only, bit 2: no resumption).
//!   Without bit 0, a real handshake is pumped in memory and a little data goes each
//!   way first.
//! * then chunks: a control byte `c`, `kind = c & 3`, `len = c >> 2` (63: the length is
//!   the next two bytes, little-endian), then `len` bytes (fewer at the end):
//!   0, 1: the bytes as they are (after the handshake: as if a peer sent them);
//!   2: the bytes are plaintext the real client encodes (in two `encode` calls, cut at
//!   a point taken from the bytes), then (as the engine does) the client flushes when
//!   `wants_write()` (the layer stages small pieces until the flush,
//!   and sends its pending handshake flight then), and those wire bytes go to the
//!   server; 3: the same with one bit flipped on the wire, or, for an empty chunk, the
//!   client's `close_notify`. For kinds 2 and 3, a length beyond the end of the input
//!   (only the two-byte form can do that) repeats the bytes there are (zeros if none)
//!   up to that length: plaintext pieces of 16 KiB or more, which the layer encrypts
//!   straight into the wire instead of staging them, fit in libFuzzer's 4 KiB inputs.
//!   After each server `decode`, what the server flushes goes to the client.
//!
//! Asserted besides "no panic": plaintext out of the server is never more than the wire
//! bytes fed to it, and is always a prefix of what the real client encoded (nothing the
//! fuzzer writes decrypts); the client gets no plaintext (the server sends none);
//! after `decode` fails, or after the peer's `close_notify`, `decode` returns Ok and
//! appends nothing, and `flush` does not panic; `flush` appends nothing when
//! `wants_write()` was false (the engine flushes only when it is true, so such bytes
//! would never go out); a plain HTTP request as the first bytes is answered with a plain
//! 400; with only real client chunks (no raw or flipped bytes, no close), a final pump
//! completes the handshake without error and delivers exactly what the client encoded,
//! then a probe byte each way goes through (both ends are open), and a fresh server
//! reports the SNI the client sent (`localhost`). Any SNI the server reports is a
//! non-empty lower-case host name (the fresh-server mode feeds arbitrary first records
//! to the server's ClientHello SNI parser, `tls::sni::client_hello_sni`, which is
//! crate-private).
//!
//! `SOLITON_FUZZ_SEEDS=<dir>` writes seed inputs (with real ClientHellos and records)
//! to `<dir>` on the first run.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use soliton::layer::{Layer, LayerError};
use soliton::tls::rustls;
use soliton::tls::{self_signed, CertKey, TlsAcceptor, TlsConnector, TlsLayer};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

const HOST: &str = "localhost";

/// `encode`, then `flush` when the layer wants to write (what the engine does): the
/// layer may keep small pieces staged until the flush.
fn send(l: &mut TlsLayer, plain: &[u8], wire: &mut Vec<u8>) -> Result<(), LayerError> {
    l.encode(plain, wire)?;
    flush(l, wire)
}

/// `flush` when the layer wants to write; when it does not, a flush must add nothing
/// (the engine would never send it).
fn flush(l: &mut TlsLayer, wire: &mut Vec<u8>) -> Result<(), LayerError> {
    let wants = l.wants_write();
    let at = wire.len();
    let r = l.flush(wire);
    if !wants {
        assert_eq!(wire.len(), at, "flush wrote bytes while wants_write() was false");
    }
    r
}

/// Handshake done both ways as far as `tls()` shows: a version and a cipher suite.
fn negotiated(l: &TlsLayer) -> bool {
    let i = l.tls().unwrap();
    !i.version.is_empty() && !i.cipher.is_empty()
}

struct Setup {
    acceptor: TlsAcceptor,
    /// Index: bit 0 = TLS 1.2 only, bit 1 = no resumption.
    connectors: [TlsConnector; 4],
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        let (cert, key) = self_signed(&[HOST]);
        let acceptor = TlsAcceptor::new(
            CertKey::from_pem(cert.as_bytes(), key.as_bytes()).unwrap(),
            vec![],
        )
        .unwrap();
        let ca: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        let tls13 = TlsConnector::with_ca_certs(ca.clone()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in ca {
            roots.add(c).unwrap();
        }
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tls12 = TlsConnector::from_config(Arc::new(cfg));
        let s = Setup {
            acceptor,
            connectors: [
                tls13.clone(),
                tls12.clone(),
                tls13.without_resumption(),
                tls12.without_resumption(),
            ],
        };
        if let Some(dir) = std::env::var_os("SOLITON_FUZZ_SEEDS") {
            write_seeds(&s, std::path::Path::new(&dir));
        }
        s
    })
}

/// Moves what each side wants to send to the other until neither does.
fn pump(
    c: &mut TlsLayer,
    s: &mut TlsLayer,
    pc: &mut Vec<u8>,
    ps: &mut Vec<u8>,
) -> Result<(), String> {
    for _ in 0..32 {
        let mut wc = Vec::new();
        flush(c, &mut wc).map_err(|e| format!("client flush: {e}"))?;
        let mut ws = Vec::new();
        flush(s, &mut ws).map_err(|e| format!("server flush: {e}"))?;
        if wc.is_empty() && ws.is_empty() {
            return Ok(());
        }
        s.decode(&mut wc, ps).map_err(|e| format!("server: {e}"))?;
        c.decode(&mut ws, pc).map_err(|e| format!("client: {e}"))?;
    }
    Err("the exchange did not settle".into())
}

/// A connected pair, with a little data sent each way and received.
fn connected(st: &Setup, connector: usize) -> (TlsLayer, TlsLayer) {
    let mut s = st.acceptor.layer().unwrap();
    let mut c = st.connectors[connector].layer(HOST).unwrap();
    let (mut pc, mut ps) = (Vec::new(), Vec::new());
    pump(&mut c, &mut s, &mut pc, &mut ps).unwrap();
    assert!(negotiated(&c) && negotiated(&s));
    assert_eq!(s.tls().unwrap().server_name.as_deref(), Some(HOST));
    let mut w = Vec::new();
    send(&mut c, b"GET /chat HTTP/1.1\r\n\r\n", &mut w).unwrap();
    s.decode(&mut w, &mut ps).unwrap();
    assert_eq!(ps, b"GET /chat HTTP/1.1\r\n\r\n");
    let mut w = Vec::new();
    send(&mut s, b"HTTP/1.1 101 Switching Protocols\r\n\r\n", &mut w).unwrap();
    c.decode(&mut w, &mut pc).unwrap();
    assert_eq!(pc, b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
    pump(&mut c, &mut s, &mut pc, &mut ps).unwrap();
    (s, c)
}

/// The chunks of an input: (kind, bytes, the length declared).
struct Chunks<'a>(&'a [u8]);

impl<'a> Iterator for Chunks<'a> {
    type Item = (u8, &'a [u8], usize);

    fn next(&mut self) -> Option<Self::Item> {
        let (&c, mut rest) = self.0.split_first()?;
        let mut len = (c >> 2) as usize;
        if len == 63 {
            len = match rest {
                [a, b, r @ ..] => {
                    rest = r;
                    u16::from_le_bytes([*a, *b]) as usize
                }
                _ => {
                    let n = rest.len();
                    rest = &rest[n..];
                    0
                }
            };
        }
        let declared = len;
        let len = len.min(rest.len());
        let (chunk, rest) = rest.split_at(len);
        self.0 = rest;
        Some((c & 3, chunk, declared))
    }
}

/// The encoding of one chunk (for seeds).
fn chunk(kind: u8, bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    if bytes.len() < 63 {
        v.push((bytes.len() as u8) << 2 | kind);
    } else {
        v.push(63 << 2 | kind);
        v.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    }
    v.extend_from_slice(bytes);
    v
}

fn write_seeds(st: &Setup, dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    // a real ClientHello (the first flight of a fresh client)
    // (it carries SNI: the server_name extension with the connector's host)
    let mut hello = Vec::new();
    st.connectors[2]
        .layer(HOST)
        .unwrap()
        .flush(&mut hello)
        .unwrap();
    let mut hello12 = Vec::new();
    st.connectors[3]
        .layer(HOST)
        .unwrap()
        .flush(&mut hello12)
        .unwrap();
    // a real encrypted record, from another connection (its keys differ)
    let (_, mut c) = connected(st, 0);
    let mut record = Vec::new();
    send(&mut c, b"a record from another connection", &mut record).unwrap();
    assert!(!record.is_empty());
    let (_, mut c) = connected(st, 1);
    let mut record12 = Vec::new();
    send(&mut c, b"a TLS 1.2 record", &mut record12).unwrap();
    assert!(!record12.is_empty());

    let cat = |flags: u8, chunks: &[Vec<u8>]| -> Vec<u8> {
        let mut v = vec![flags];
        for c in chunks {
            v.extend_from_slice(c);
        }
        v
    };
    let (h1, h2) = hello.split_at(hello.len() / 3);
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        (
            "seed-after-handshake-13",
            cat(
                0,
                &[
                    chunk(2, b"hello"),
                    chunk(0, &record),
                    chunk(3, b"flip"),
                    chunk(3, b""),
                ],
            ),
        ),
        (
            "seed-after-handshake-12",
            cat(
                2,
                &[
                    chunk(2, b"data"),
                    chunk(0, &record12),
                    chunk(0, &[0x17, 3, 3, 0, 5, 1, 2, 3, 4, 5]),
                ],
            ),
        ),
        (
            "seed-plain-alert-after-handshake",
            cat(0, &[chunk(0, &[0x15, 3, 3, 0, 2, 1, 0]), chunk(2, b"x")]),
        ),
        (
            "seed-fresh-real-clienthello",
            cat(5, &[chunk(0, h1), chunk(1, h2)]),
        ),
        (
            "seed-fresh-real-clienthello-12",
            cat(7, &[chunk(0, &hello12)]),
        ),
        (
            "seed-fresh-real-handshake",
            cat(
                1,
                &[
                    chunk(2, b""),
                    chunk(2, b"GET / HTTP/1.1\r\n\r\n"),
                    chunk(2, b"more"),
                ],
            ),
        ),
        (
            // a piece of 16 KiB or more (declared, repeated): straight into records
            "seed-after-handshake-big",
            {
                let mut v = cat(0, &[chunk(2, b"small, staged")]);
                v.extend_from_slice(&[63 << 2 | 2, 0x20, 0x4e]); // 20000 bytes of...
                v.extend_from_slice(b"big");
                v
            },
        ),
        (
            "seed-after-handshake-big-12",
            {
                let mut v = vec![2];
                v.extend_from_slice(&[63 << 2 | 2, 0x01, 0x40]); // 16385 zeros
                v
            },
        ),
        (
            "seed-fresh-handshake-big",
            {
                let mut v = cat(1, &[chunk(2, b""), chunk(2, b"")]);
                v.extend_from_slice(&[63 << 2 | 2, 0x00, 0x40]); // 16384 bytes of...
                v.extend_from_slice(b"xy");
                v
            },
        ),
        (
            "seed-fresh-plain-http",
            cat(1, &[chunk(0, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")]),
        ),
    ];
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let st = setup();
    let fresh = flags & 1 != 0;
    let connector = ((flags >> 1) & 3) as usize;
    let (mut server, mut client) = if fresh {
        (
            st.acceptor.layer().unwrap(),
            st.connectors[connector].layer(HOST).unwrap(),
        )
    } else {
        connected(st, connector)
    };

    let mut fed = 0usize; // wire bytes given to the server
    let mut plain = Vec::new(); // what the server decoded
    let mut sent = Vec::new(); // plaintext the real client encoded
    let mut client_plain = Vec::new();
    let mut server_failed = false;
    let mut client_failed = false;
    let mut client_closed = false;
    let mut clean = true; // only real client bytes so far
    let mut first = true;

    for (kind, bytes, declared) in Chunks(rest) {
        // client plaintext: a truncated chunk is repeated up to its declared length
        let grown;
        let bytes = if kind >= 2 && declared > bytes.len() {
            grown = if bytes.is_empty() {
                vec![0; declared]
            } else {
                bytes.iter().copied().cycle().take(declared).collect()
            };
            &grown[..]
        } else {
            bytes
        };
        let mut wire = Vec::new();
        if kind < 2 || client_failed {
            wire.extend_from_slice(bytes);
            clean = false;
        } else if kind == 3 && bytes.is_empty() {
            client.close();
            client_closed = true;
            let _ = flush(&mut client, &mut wire);
        } else {
            // two encodes (as a frame's header and payload), then one flush, as the
            // engine does in a loop iteration: the first piece may be staged while the
            // second is 16 KiB or more
            let k = bytes
                .iter()
                .fold(bytes.len(), |a, &b| a.wrapping_mul(31).wrapping_add(b as usize));
            let (a, b) = bytes.split_at((k >> 3) % (bytes.len() + 1));
            // (a superset if it fails: the client sends nothing more after that)
            sent.extend_from_slice(bytes);
            let r = [a, b]
                .into_iter()
                .filter(|p| !p.is_empty())
                .try_for_each(|p| client.encode(p, &mut wire))
                .and_then(|()| flush(&mut client, &mut wire));
            if r.is_err() {
                client_failed = true;
                clean = false;
            }
            if kind == 3 && !wire.is_empty() {
                let at = k % wire.len();
                wire[at] ^= 1 << (k / 7 % 8);
                clean = false;
            }
        }

        let before = plain.len();
        let was_done = server_failed || server.peer_closed();
        fed += wire.len();
        let looks_http = first && fresh && wire.len() >= 4 && {
            let n = wire.iter().take(8).take_while(|c| c.is_ascii_uppercase()).count();
            n >= 3 && wire.get(n) == Some(&b' ')
        };
        if !wire.is_empty() {
            first = false;
        }
        let copy = wire.clone();
        let r = server.decode(&mut wire, &mut plain);
        if was_done {
            assert!(r.is_ok(), "decode after a failure or close_notify: {r:?}");
            assert_eq!(plain.len(), before, "plaintext after a failure or close_notify");
        }
        assert!(plain.len() <= fed, "{} plaintext bytes from {fed} wire bytes", plain.len());
        assert!(
            sent.starts_with(&plain),
            "the server decoded bytes the client never sent"
        );
        if r.is_err() {
            server_failed = true;
            // once failed, nothing more is read
            let mut again = copy;
            let before = plain.len();
            assert!(server.decode(&mut again, &mut plain).is_ok());
            assert_eq!(plain.len(), before);
        }
        if looks_http {
            assert!(r.is_err(), "plain HTTP accepted on the TLS port");
        }

        // what the server answers goes to the client
        let mut back = Vec::new();
        let _ = flush(&mut server, &mut back);
        if looks_http {
            assert!(back.starts_with(b"HTTP/1.1 400 "), "no plain 400 to plain HTTP");
        }
        if !client_failed && client.decode(&mut back, &mut client_plain).is_err() {
            client_failed = true;
            clean = false;
        }
        assert!(client_plain.is_empty(), "the client got plaintext the server never sent");
    }

    if clean && !server_failed && !client_closed {
        let mut ps = Vec::new();
        if let Err(e) = pump(&mut client, &mut server, &mut client_plain, &mut ps) {
            panic!("a clean exchange failed: {e}");
        }
        plain.extend_from_slice(&ps);
        assert_eq!(plain, sent, "a clean exchange lost or changed bytes");
        assert!(client_plain.is_empty());
        // both ends are open: a probe byte each way
        let mut w = Vec::new();
        send(&mut client, b"!", &mut w).expect("client probe");
        let mut ps = Vec::new();
        server.decode(&mut w, &mut ps).expect("server decodes the probe");
        assert_eq!(ps, b"!", "the handshake did not complete (client to server)");
        let mut w = Vec::new();
        send(&mut server, b"?", &mut w).expect("server probe");
        client.decode(&mut w, &mut client_plain).expect("client decodes the probe");
        assert_eq!(client_plain, b"?", "the handshake did not complete (server to client)");
        assert!(negotiated(&server) && negotiated(&client));
        if fresh {
            // the ClientHello came whole as the first record: its SNI was read
            assert_eq!(server.tls().unwrap().server_name.as_deref(), Some(HOST));
        }
    }
    if let Some(name) = server.tls().unwrap().server_name {
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'),
            "SNI {name:?} is not a lower-case host name"
        );
    }

    server.close();
    let mut back = Vec::new();
    let _ = flush(&mut server, &mut back);
    let _ = server.wants_write();
    let _ = server.tls();
});
