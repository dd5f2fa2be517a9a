//! What every peer echo server shares, so that each one's `main.rs` holds only what
//! its engine's examples do: the command line (`--host`, `--port`, `--core`,
//! `--nodelay`, `--broadcast`, `--tls-cert`, `--tls-key`), pinning to a core, tokio's `current_thread`
//! runtime (one core, for the per-core comparison), and the TLS acceptor for wss://.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// The parsed command line.
pub struct Opts {
    /// `host:port` to listen on.
    pub addr: String,
    /// Set `TCP_NODELAY` on each accepted connection (off by default, as in the
    /// engines' examples).
    pub nodelay: bool,
    /// `--broadcast`: publish every message to every connection (the sender too)
    /// instead of echoing it; peers without a broadcast mode refuse the flag.
    pub broadcast: bool,
    /// The TLS acceptor when `--tls-cert` and `--tls-key` are given (wss://); `None`
    /// for plain ws://.
    pub tls: Option<TlsAcceptor>,
}

/// Parses the command line, pins this thread to `--core` if given, loads the TLS
/// certificate and key if given, and builds the single-threaded runtime the server
/// runs on.
pub fn start() -> (Opts, tokio::runtime::Runtime) {
    start_with(false)
}

/// [`start`] for a peer that has a broadcast mode when `broadcast_mode` is true (the
/// others exit with a usage error on `--broadcast`).
pub fn start_with(broadcast_mode: bool) -> (Opts, tokio::runtime::Runtime) {
    let (opts, core) = args();
    if opts.broadcast && !broadcast_mode {
        usage("--broadcast (this peer has no broadcast mode)");
    }
    if let Some(c) = core {
        pin(c);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("tokio runtime");
    (opts, rt)
}

/// `--host`, `--port`, `--core`, `--nodelay`, `--broadcast`, `--tls-cert`, `--tls-key`.
fn args() -> (Opts, Option<usize>) {
    let (mut host, mut port, mut core) = ("127.0.0.1".to_string(), 9001u16, None);
    let (mut nodelay, mut broadcast, mut cert, mut key) = (false, false, None, None);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "--nodelay" {
            nodelay = true;
            continue;
        }
        if a == "--broadcast" {
            broadcast = true;
            continue;
        }
        let v = it.next().unwrap_or_else(|| usage(&a));
        match a.as_str() {
            "--host" => host = v,
            "--port" => port = v.parse().unwrap_or_else(|_| usage(&a)),
            "--core" => core = Some(v.parse().unwrap_or_else(|_| usage(&a))),
            "--tls-cert" => cert = Some(v),
            "--tls-key" => key = Some(v),
            _ => usage(&a),
        }
    }
    let tls = match (cert, key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(tls_acceptor(&cert, &key).unwrap_or_else(|e| {
            eprintln!("TLS setup from {cert:?} and {key:?} failed: {e}");
            std::process::exit(2)
        })),
        _ => usage("--tls-cert/--tls-key (give both)"),
    };
    let addr = format!("{host}:{port}");
    let opts = Opts {
        addr,
        nodelay,
        broadcast,
        tls,
    };
    (opts, core)
}

fn usage(at: &str) -> ! {
    eprintln!(
        "bad argument {at:?}; usage: [--host 127.0.0.1] [--port 9001] [--core N] [--nodelay] \
         [--broadcast] [--tls-cert CHAIN.pem --tls-key KEY.pem]"
    );
    std::process::exit(2)
}

/// A TLS acceptor from a PEM certificate chain and a PEM private key: rustls with the
/// aws-lc-rs provider, TLS 1.3 and 1.2, ALPN `http/1.1`, and session resumption by
/// stateless tickets (the aws-lc-rs `Ticketer`) besides rustls' default in-memory
/// session cache.
pub fn tls_acceptor(cert: &str, key: &str) -> Result<TlsAcceptor, Box<dyn std::error::Error>> {
    let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn pin(core: usize) {
    let id = core_affinity::get_core_ids().and_then(|ids| ids.into_iter().find(|c| c.id == core));
    if !id.is_some_and(core_affinity::set_for_current) {
        eprintln!("cannot pin to core {core}");
    }
}
