//! Many concurrent connections in one process: every handshake answered 101, all
//! connections open at once, echo on a sample, then every close handshake completes.
//!
//! Client and server share this process's descriptor limit (20,000 here): each
//! connection costs two descriptors (client and server side), plus the listeners,
//! pollers and the harness's own. The target is 10,000 connections; where the limit
//! cannot hold that, the count is cut to what fits with 256 descriptors to spare
//! ((20,000 - 256) / 2 = 9,872 with the 20,000 limit), and the test says so.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::time::Instant;

use soliton::proto::Message;
use soliton::server::{CloseInfo, ConnId, Handler, Reject, UpgradeRequest, WebSocket};
use soliton_tests::{
    builder, for_each_backend, open_files_limit, open_many, TestServer, IO_TIMEOUT,
};

const TARGET: usize = 10_000;
const SPARE_FDS: usize = 256;

/// Echo that counts open connections (and the peak) and reports each close.
struct Counting {
    open: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    closed: Sender<(u16, bool)>,
}

impl Handler for Counting {
    type Data = ();
    fn on_upgrade(&mut self, _req: &UpgradeRequest<'_, '_>) -> Result<(), Reject> {
        Ok(())
    }
    fn on_open(&mut self, _ws: &mut WebSocket<'_, ()>) {
        let now = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
    }
    fn on_message(&mut self, ws: &mut WebSocket<'_, ()>, msg: Message<'_>) {
        ws.send(msg);
    }
    fn on_close(&mut self, _id: ConnId, _data: (), info: CloseInfo<'_>) {
        self.open.fetch_sub(1, Ordering::SeqCst);
        let _ = self.closed.send((info.code.get(), info.was_clean));
    }
}

fn connection_count() -> usize {
    match open_files_limit() {
        Some(limit) if limit < 2 * TARGET + SPARE_FDS => {
            let n = (limit - SPARE_FDS.min(limit)) / 2;
            eprintln!(
                "soliton-tests: open-file limit {limit}: {n} connections instead of {TARGET} \
                 (client and server share the limit: 2 descriptors per connection)"
            );
            n
        }
        _ => TARGET,
    }
}

#[test]
fn ten_thousand_concurrent_connections_handshake_echo_and_close_cleanly() {
    let n = connection_count();
    assert!(
        n >= 9_000,
        "too few descriptors for this test: {n} connections"
    );
    for_each_backend(|backend| {
        let open = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = channel();
        let (o, p) = (open.clone(), peak.clone());
        let server = TestServer::start(builder(backend).workers(2), move |_| Counting {
            open: o.clone(),
            peak: p.clone(),
            closed: tx.clone(),
        });

        let t0 = Instant::now();
        let mut clients = open_many(server.addr(), n);
        eprintln!("  {n} handshakes (all 101) in {:?}", t0.elapsed());
        assert_eq!(open.load(Ordering::SeqCst), n, "all open at once");
        assert_eq!(peak.load(Ordering::SeqCst), n);

        let t1 = Instant::now();
        for (i, c) in clients.iter_mut().enumerate().step_by(97) {
            let text = format!("echo from {i}");
            c.send_text(&text);
            assert_eq!(c.read_text(), text, "client {i}");
        }
        eprintln!("  sample echoed in {:?}", t1.elapsed());

        let t2 = Instant::now();
        for c in &mut clients {
            c.send_close(1000, "");
        }
        for (i, c) in clients.iter_mut().enumerate() {
            let (code, _, skipped) = c.read_close();
            assert_eq!((code, skipped), (Some(1000), 0), "client {i}");
            c.expect_eof();
        }
        drop(clients);
        for i in 0..n {
            let (code, clean) = rx
                .recv_timeout(IO_TIMEOUT)
                .unwrap_or_else(|_| panic!("only {i} of {n} on_close calls"));
            assert_eq!((code, clean), (1000, true));
        }
        assert_eq!(open.load(Ordering::SeqCst), 0);
        eprintln!("  {n} close handshakes in {:?}", t2.elapsed());
    });
}
