//! `wss://`: TLS as a connection [layer](crate::layer), with rustls (its unbuffered
//! connections, over buffers the layer owns: see [`TlsLayer`]) and the aws-lc-rs crypto
//! provider, for both roles and both backends.
//!
//! ```text
//!  driver's receive buffer ──decrypt in place──► plain bytes ──► proto
//!  proto's frames ──staged, one encrypt per flush──► one owned chunk ──► driver
//! ```
//!
//! * Server: [`TlsAcceptor`] — a certificate chain and key from PEM files, more for
//!   SNI (chosen by the name the client asks for; the first one when it names none or
//!   an unknown one), ALPN `http/1.1`, TLS 1.3 and 1.2, stateless session tickets
//!   (a returning client skips the full handshake on any worker). The server's
//!   handshake timeout covers the TLS handshake.
//! * Client: [`TlsConnector`] — the system's roots by default, a CA file, or no
//!   verification at all for test certificates; SNI from the URL's host; sessions kept
//!   for resumption.
//! * Failures: a record that does not decrypt, a bad handshake, plain HTTP sent to the
//!   TLS port (answered `400` in plain text, the way a browser can show it) end the
//!   connection after the alert goes out; a `close_notify` ends it as a TCP FIN would.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::UnbufferedServerConnection;
use rustls::server::{ClientHello, ResolvesServerCert, ResolvesServerCertUsingSni};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};

use crate::layer::{Layer, LayerError, LayerFactory};

mod layer;
mod sni;

use layer::Conn;
pub use layer::TlsLayer;

pub use rustls;

/// A TLS set-up error (a certificate or key file, a configuration), with what it was
/// about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError(pub String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

impl From<TlsError> for io::Error {
    fn from(e: TlsError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, e.0)
    }
}

/// aws-lc-rs for key exchange, signatures and tickets, with ring's cipher suites (the
/// AEAD and the key schedule of each record), AES-128-GCM first (then AES-256-GCM, then
/// ChaCha20-Poly1305), for TLS 1.3 and 1.2 alike.
///
/// * ring's AES-GCM runs VAES/VPCLMULQDQ code on AVX2 where aws-lc 0.47 (aws-lc-sys)
///   takes its AES-NI/AVX path: sealing 16 KiB with AES-128-GCM takes 2.30 µs with ring
///   and 4.01 µs with aws-lc here; an X25519 exchange (two key pairs and an agreement)
///   takes 46 µs with aws-lc and 70 µs with ring, so key exchange stays with aws-lc
///   (`cargo bench -p soliton-bench --bench tls_crypto`, medians).
/// * AES-128 first: the SHA-256 suites' key schedule runs on the SHA extensions, where
///   aws-lc has no hardware path for SHA-384's blocks on this CPU (16% of the server's
///   CPU in a storm of full handshakes with rustls's default order, AES-256/SHA-384
///   first), and AES-128 is ten rounds to AES-256's fourteen.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static P: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| {
        let mut p = rustls::crypto::aws_lc_rs::default_provider();
        p.cipher_suites = rustls::crypto::ring::default_provider().cipher_suites;
        let rank = |s: &rustls::SupportedCipherSuite| {
            let name = s.suite().as_str().unwrap_or("");
            (
                s.version() != &rustls::version::TLS13,
                if name.contains("AES_128_GCM") {
                    0
                } else if name.contains("AES_256_GCM") {
                    1
                } else {
                    2
                },
            )
        };
        p.cipher_suites.sort_by_key(rank);
        Arc::new(p)
    })
    .clone()
}

/// A certificate chain and its private key.
#[derive(Debug)]
pub struct CertKey {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for CertKey {
    fn clone(&self) -> Self {
        CertKey {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl CertKey {
    /// From PEM files: the chain (leaf first) and the key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<CertKey, TlsError> {
        let read =
            |p: &Path| std::fs::read(p).map_err(|e| TlsError(format!("{}: {e}", p.display())));
        let (c, k) = (read(cert)?, read(key)?);
        CertKey::parse(
            &c,
            &k,
            &cert.display().to_string(),
            &key.display().to_string(),
        )
    }

    /// From PEM text.
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<CertKey, TlsError> {
        CertKey::parse(cert, key, "certificate", "private key")
    }

    /// The chain and key in PEM text; errors name where each came from.
    fn parse(
        cert: &[u8],
        key: &[u8],
        cert_from: &str,
        key_from: &str,
    ) -> Result<CertKey, TlsError> {
        let chain = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError(format!("{cert_from}: {e}")))?;
        if chain.is_empty() {
            return Err(TlsError(format!("{cert_from}: no certificate in it")));
        }
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| TlsError(format!("{key_from}: no private key: {e}")))?;
        Ok(CertKey { chain, key })
    }

    /// From DER: the chain (leaf first) and the key.
    pub fn from_der(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Self {
        CertKey { chain, key }
    }

    fn certified(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        let key = provider()
            .key_provider
            .load_private_key(self.key.clone_key())
            .map_err(|e| TlsError(format!("private key: {e}")))?;
        let ck = CertifiedKey::new(self.chain.clone(), key);
        ck.keys_match()
            .map_err(|e| TlsError(format!("certificate and key: {e}")))?;
        Ok(Arc::new(ck))
    }
}

/// The first certificate when the client names no host, or one no SNI entry has.
#[derive(Debug)]
struct SniOrDefault {
    by_name: ResolvesServerCertUsingSni,
    default: Arc<CertifiedKey>,
    named: bool,
}

impl ResolvesServerCert for SniOrDefault {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if self.named && hello.server_name().is_some() {
            if let Some(ck) = self.by_name.resolve(hello) {
                return Some(ck);
            }
        }
        Some(self.default.clone())
    }
}

/// The server's TLS settings: shared by every worker, one [`Layer`] per connection.
#[derive(Clone)]
pub struct TlsAcceptor {
    config: Arc<ServerConfig>,
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("alpn", &self.config.alpn_protocols)
            .finish()
    }
}

impl TlsAcceptor {
    /// One certificate for every connection, from PEM files.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
        TlsAcceptor::new(CertKey::from_pem_files(cert, key)?, Vec::new())
    }

    /// `default` for connections that name no host (or an unknown one), and
    /// `(name, certificate)` pairs chosen by SNI (each certificate must be valid for
    /// its name). ALPN `http/1.1`, TLS 1.3 and 1.2, stateless session tickets.
    pub fn new(default: CertKey, sni: Vec<(String, CertKey)>) -> Result<TlsAcceptor, TlsError> {
        let mut by_name = ResolvesServerCertUsingSni::new();
        for (name, ck) in &sni {
            by_name
                .add(name, (*ck.certified()?).clone())
                .map_err(|e| TlsError(format!("SNI {name}: {e}")))?;
        }
        let resolver = SniOrDefault {
            by_name,
            default: default.certified()?,
            named: !sni.is_empty(),
        };
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // the server's order decides (AES-128-GCM first, see `provider`)
        config.ignore_client_order = true;
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
            .map_err(|e| TlsError(format!("session tickets: {e}")))?;
        // one ticket per handshake (rustls sends two by default): each costs a key
        // derivation and an encryption, and a resumed connection gets a fresh one
        config.send_tls13_tickets = 1;
        Ok(TlsAcceptor {
            config: Arc::new(config),
        })
    }

    /// From a rustls configuration made by the application.
    pub fn from_config(config: Arc<ServerConfig>) -> TlsAcceptor {
        TlsAcceptor { config }
    }

    /// The rustls configuration.
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.config
    }

    /// A server-side TLS layer for a new connection.
    pub fn layer(&self) -> Result<TlsLayer, TlsError> {
        let c = UnbufferedServerConnection::new(self.config.clone())
            .map_err(|e| TlsError(e.to_string()))?;
        Ok(TlsLayer::new(Conn::Server(c)))
    }

    /// The [`LayerFactory`] that gives every accepted connection its TLS layer (a
    /// connection whose TLS state cannot be made is refused, never served in plain).
    pub fn factory(&self) -> LayerFactory {
        let me = self.clone();
        LayerFactory::new(move || {
            Some(match me.layer() {
                Ok(l) => Box::new(l) as Box<dyn Layer + 'static>,
                Err(e) => Box::new(Refused(e.0)),
            })
        })
    }
}

/// The client's TLS settings: which certificates it trusts, and its session cache.
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<ClientConfig>,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector").finish()
    }
}

impl TlsConnector {
    fn with_roots(roots: rustls::RootCertStore) -> Result<TlsConnector, TlsError> {
        let config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsConnector::finish(config))
    }

    fn finish(mut config: ClientConfig) -> TlsConnector {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsConnector {
            config: Arc::new(config),
        }
    }

    /// Trusts the system's roots (loaded once per process); what `wss://` uses unless
    /// told otherwise.
    pub fn system() -> Result<TlsConnector, TlsError> {
        static SYSTEM: OnceLock<Result<TlsConnector, TlsError>> = OnceLock::new();
        SYSTEM
            .get_or_init(|| {
                let found = rustls_native_certs::load_native_certs();
                let mut roots = rustls::RootCertStore::empty();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    let why = found
                        .errors
                        .first()
                        .map_or_else(|| "none found".to_owned(), |e| e.to_string());
                    return Err(TlsError(format!("no system root certificates: {why}")));
                }
                TlsConnector::with_roots(roots)
            })
            .clone()
    }

    /// Trusts the certificates of a PEM file (a test CA, or a self-signed server
    /// certificate).
    pub fn with_ca_file(path: &Path) -> Result<TlsConnector, TlsError> {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| TlsError(format!("{}: {e}", path.display())))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError(format!("{}: {e}", path.display())))?;
        TlsConnector::with_ca_certs(certs).map_err(|e| TlsError(format!("{}: {e}", path.display())))
    }

    /// Trusts these certificates (DER).
    pub fn with_ca_certs(certs: Vec<CertificateDer<'static>>) -> Result<TlsConnector, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for c in certs {
            roots
                .add(c)
                .map_err(|e| TlsError(format!("CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(TlsError("no CA certificate".into()));
        }
        TlsConnector::with_roots(roots)
    }

    /// Accepts any certificate the server shows (signatures are still checked):
    /// for test certificates only; offers no protection against an active attacker.
    pub fn insecure() -> TlsConnector {
        let config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("the provider supports TLS 1.3 and 1.2")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider())))
            .with_no_client_auth();
        TlsConnector::finish(config)
    }

    /// From a rustls configuration made by the application.
    pub fn from_config(config: Arc<ClientConfig>) -> TlsConnector {
        TlsConnector { config }
    }

    /// The same trust, without session resumption (every handshake is a full one).
    pub fn without_resumption(&self) -> TlsConnector {
        let mut c = (*self.config).clone();
        c.resumption = rustls::client::Resumption::disabled();
        TlsConnector {
            config: Arc::new(c),
        }
    }

    /// The same trust, with a session store that keeps up to `tickets` TLS 1.3
    /// tickets per server (rustls's default keeps 8): for a load generator whose
    /// connections, many at once, each resume a session of their own.
    pub fn with_ticket_pool(&self, tickets: usize) -> TlsConnector {
        let mut c = (*self.config).clone();
        c.resumption = rustls::client::Resumption::store(Arc::new(TicketPool {
            cap: tickets.max(1),
            servers: Mutex::new(HashMap::new()),
        }));
        TlsConnector {
            config: Arc::new(c),
        }
    }

    /// The rustls configuration.
    pub fn config(&self) -> &Arc<ClientConfig> {
        &self.config
    }

    /// A client-side TLS layer for a connection to `host` (a DNS name, sent as SNI, or
    /// an IP address).
    pub fn layer(&self, host: &str) -> Result<TlsLayer, TlsError> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| TlsError(format!("{host:?}: not a server name: {e}")))?;
        let c = UnbufferedClientConnection::new(self.config.clone(), name)
            .map_err(|e| TlsError(format!("{host}: {e}")))?;
        Ok(TlsLayer::new(Conn::Client(c)))
    }
}

/// A client session store with many tickets per server (see
/// [`TlsConnector::with_ticket_pool`]); at most 64 servers, the oldest forgotten.
#[derive(Debug)]
struct TicketPool {
    cap: usize,
    servers: Mutex<HashMap<ServerName<'static>, Sessions>>,
}

#[derive(Debug, Default)]
struct Sessions {
    kx: Option<rustls::NamedGroup>,
    tls12: Option<rustls::client::Tls12ClientSessionValue>,
    tls13: VecDeque<rustls::client::Tls13ClientSessionValue>,
}

impl TicketPool {
    fn with<R>(&self, name: &ServerName<'_>, f: impl FnOnce(&mut Sessions) -> R) -> R {
        let mut m = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        if !m.contains_key(name) && m.len() >= 64 {
            m.clear();
        }
        f(m.entry(name.to_owned()).or_default())
    }
}

impl rustls::client::ClientSessionStore for TicketPool {
    fn set_kx_hint(&self, name: ServerName<'static>, group: rustls::NamedGroup) {
        self.with(&name, |s| s.kx = Some(group));
    }

    fn kx_hint(&self, name: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.with(name, |s| s.kx)
    }

    fn set_tls12_session(
        &self,
        name: ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        self.with(&name, |s| s.tls12 = Some(value));
    }

    fn tls12_session(
        &self,
        name: &ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.with(name, |s| s.tls12.clone())
    }

    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        self.with(name, |s| s.tls12 = None);
    }

    fn insert_tls13_ticket(
        &self,
        name: ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        let cap = self.cap;
        self.with(&name, |s| {
            if s.tls13.len() >= cap {
                s.tls13.pop_front();
            }
            s.tls13.push_back(value);
        });
    }

    fn take_tls13_ticket(
        &self,
        name: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.with(name, |s| s.tls13.pop_back())
    }
}

/// Accepts any certificate; checks the handshake's signatures.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The layer of a connection whose TLS state could not be made: it fails at once.
struct Refused(String);

impl Layer for Refused {
    fn decode(&mut self, _: &mut [u8], _: &mut Vec<u8>) -> Result<(), LayerError> {
        Err(LayerError(format!("TLS: {}", self.0)))
    }

    fn encode(&mut self, _: &[u8], _: &mut Vec<u8>) -> Result<(), LayerError> {
        Err(LayerError(format!("TLS: {}", self.0)))
    }
}

/// A self-signed certificate for `names` (tests, benchmarks, the README's job), made
/// with `rcgen`; PEM text of the certificate and of its key.
#[cfg(any(test, feature = "testcert"))]
pub fn self_signed(names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    let c = rcgen::generate_simple_self_signed(names).expect("rcgen makes a certificate");
    (c.cert.pem(), c.key_pair.serialize_pem())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (TlsAcceptor, TlsConnector) {
        let (cert, key) = self_signed(&["localhost"]);
        let acc = TlsAcceptor::new(
            CertKey::from_pem(cert.as_bytes(), key.as_bytes()).unwrap(),
            vec![],
        )
        .unwrap();
        let ca = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        (acc, TlsConnector::with_ca_certs(ca).unwrap())
    }

    /// Moves what each side wants to send to the other until neither does.
    fn pump(a: &mut TlsLayer, b: &mut TlsLayer, pa: &mut Vec<u8>, pb: &mut Vec<u8>) {
        for _ in 0..20 {
            let mut wa = Vec::new();
            a.flush(&mut wa).unwrap();
            let mut wb = Vec::new();
            b.flush(&mut wb).unwrap();
            if wa.is_empty() && wb.is_empty() {
                return;
            }
            b.decode(&mut wa, pb).unwrap();
            a.decode(&mut wb, pa).unwrap();
        }
        panic!("the handshake did not settle");
    }

    #[test]
    fn handshake_and_data_both_ways_through_layers() {
        let (acc, con) = pair();
        let mut s = acc.layer().unwrap();
        let mut c = con.layer("localhost").unwrap();
        let (mut pc, mut ps) = (Vec::new(), Vec::new());
        let mut w = Vec::new();
        c.encode(b"GET / HTTP/1.1\r\n\r\n", &mut w).unwrap();
        s.decode(&mut w, &mut ps).unwrap();
        pump(&mut c, &mut s, &mut pc, &mut ps);
        assert_eq!(ps, b"GET / HTTP/1.1\r\n\r\n");
        let big = vec![7u8; 100_000];
        let mut w = Vec::new();
        s.encode(&big, &mut w).unwrap();
        // a piece of a record or more goes to the wire at once, nothing is kept
        assert!(!s.wants_write());
        // 16 KiB records: 7 of them, each with its 22 bytes of framing
        assert_eq!(w.len(), big.len() + 7 * 22);
        c.decode(&mut w, &mut pc).unwrap();
        assert_eq!(pc, big);
        // small pieces are gathered into one record at the flush
        let mut w = Vec::new();
        for piece in [&b"ab"[..], b"cd", b"ef"] {
            s.encode(piece, &mut w).unwrap();
        }
        assert!(w.is_empty() && s.wants_write());
        s.flush(&mut w).unwrap();
        assert_eq!(w.len(), 6 + 22, "one record");
        pc.clear();
        c.decode(&mut w, &mut pc).unwrap();
        assert_eq!(pc, b"abcdef");
        let info = s.tls().unwrap();
        assert_eq!(info.server_name.as_deref(), Some("localhost"));
        assert_eq!(info.alpn.as_deref(), Some("http/1.1"));
        assert_eq!(info.version, "TLSv1_3");
        assert_eq!(info.cipher, "TLS13_AES_128_GCM_SHA256");
        assert!(!info.resumed);
    }

    #[test]
    fn plain_http_gets_a_plain_400() {
        let (acc, _) = pair();
        let mut s = acc.layer().unwrap();
        let mut p = Vec::new();
        let mut req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        assert!(s.decode(&mut req, &mut p).is_err());
        assert!(s.wants_write());
        let mut w = Vec::new();
        s.flush(&mut w).unwrap();
        assert!(w.starts_with(b"HTTP/1.1 400"));
    }

    #[test]
    fn garbage_fails_with_an_alert() {
        let (acc, _) = pair();
        let mut s = acc.layer().unwrap();
        let mut p = Vec::new();
        // a handshake record holding a ClientHello of 4 bytes of garbage
        let mut junk = vec![
            0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0x00, 0x00, 0x04, 1, 2, 3, 4,
        ];
        let e = s.decode(&mut junk, &mut p).unwrap_err();
        assert!(s.wants_write(), "an alert to send after {e}");
        // and nothing more is read after the failure
        let mut more = vec![0u8; 10];
        assert!(s.decode(&mut more, &mut p).is_ok());
        assert!(p.is_empty());
    }

    #[test]
    fn http_detection() {
        use super::layer::looks_like_http;
        assert!(looks_like_http(b"GET / HTTP/1.1"));
        assert!(looks_like_http(b"OPTIONS * HTTP/1.1"));
        assert!(!looks_like_http(&[0x16, 3, 1, 0, 200]));
        assert!(!looks_like_http(b"GE"));
    }
}
