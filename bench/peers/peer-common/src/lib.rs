//! What every peer echo server shares, so that each one's `main.rs` holds only what
//! its engine's examples do: the command line (`--host`, `--port`, `--core`,
//! `--nodelay`), pinning to a core, and tokio's `current_thread` runtime (one core, for
//! the per-core comparison).

/// The parsed command line.
pub struct Opts {
    /// `host:port` to listen on.
    pub addr: String,
    /// Set `TCP_NODELAY` on each accepted connection (off by default, as in the
    /// engines' examples).
    pub nodelay: bool,
}

/// Parses the command line, pins this thread to `--core` if given, and builds the
/// single-threaded runtime the server runs on.
pub fn start() -> (Opts, tokio::runtime::Runtime) {
    let (opts, core) = args();
    if let Some(c) = core {
        pin(c);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("tokio runtime");
    (opts, rt)
}

/// `--host`, `--port`, `--core`, `--nodelay`.
fn args() -> (Opts, Option<usize>) {
    let (mut host, mut port, mut core) = ("127.0.0.1".to_string(), 9001u16, None);
    let mut nodelay = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "--nodelay" {
            nodelay = true;
            continue;
        }
        let v = it.next().unwrap_or_else(|| usage(&a));
        match a.as_str() {
            "--host" => host = v,
            "--port" => port = v.parse().unwrap_or_else(|_| usage(&a)),
            "--core" => core = Some(v.parse().unwrap_or_else(|_| usage(&a))),
            _ => usage(&a),
        }
    }
    let addr = format!("{host}:{port}");
    (Opts { addr, nodelay }, core)
}

fn usage(at: &str) -> ! {
    eprintln!(
        "bad argument {at:?}; usage: [--host 127.0.0.1] [--port 9001] [--core N] [--nodelay]"
    );
    std::process::exit(2)
}

fn pin(core: usize) {
    let id = core_affinity::get_core_ids().and_then(|ids| ids.into_iter().find(|c| c.id == core));
    if !id.is_some_and(core_affinity::set_for_current) {
        eprintln!("cannot pin to core {core}");
    }
}
