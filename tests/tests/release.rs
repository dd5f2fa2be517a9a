//! After connection churn a worker hands the C allocator's free memory back to the
//! kernel (`Config::release_memory_after`): memory freed on the worker stays resident
//! under a high trim threshold (as `soliton-server` sets it) until enough connections
//! have opened and closed, and goes back within about a second after that.
//!
//! The memory is freed by the handler (on a message that asks for it), so that the
//! amount is known: what a storm of handshakes frees is smaller and varies from run to
//! run. This test file is a process of its own, because it reads the process's RSS.

use std::time::{Duration, Instant};

use soliton::proto::Message;
use soliton::server::{CloseInfo, ConnId, Handler, Reject, UpgradeRequest, WebSocket};
use soliton_tests::{builder, for_each_backend, open_many, rss, RawWs, TestServer};

/// Connections that open and close before the worker releases memory.
const CHURN: usize = 200;
/// Blocks the handler allocates and frees: 4 KiB each, below the mmap threshold, so
/// they come from the worker's arena (40 MB in all).
const BLOCKS: usize = 10_000;
const BLOCK: usize = 4096;

/// Echo; on "fill" it allocates [`BLOCKS`] blocks, keeps every 64th (so that the
/// arena's top cannot be trimmed by `free` alone) and frees the rest.
#[derive(Default)]
struct Filler {
    kept: Vec<Vec<u8>>,
}

impl Handler for Filler {
    type Data = ();
    fn on_upgrade(&mut self, _req: &UpgradeRequest<'_, '_>) -> Result<(), Reject> {
        Ok(())
    }
    fn on_message(&mut self, ws: &mut WebSocket<'_, ()>, msg: Message<'_>) {
        if msg == Message::Text("fill") {
            let all: Vec<Vec<u8>> = (0..BLOCKS).map(|i| vec![i as u8 | 1; BLOCK]).collect();
            self.kept.extend(all.into_iter().step_by(64));
            ws.send(Message::Text("filled"));
        } else {
            ws.send(msg);
        }
    }
    fn on_close(&mut self, _id: ConnId, _data: (), _info: CloseInfo<'_>) {}
}

/// This process's resident set, in KiB.
fn rss_kib() -> usize {
    rss() >> 10
}

/// Polls the RSS every 50 ms until `ok` holds or `within` has passed; the last value.
fn rss_until(within: Duration, ok: impl Fn(usize) -> bool) -> usize {
    let end = Instant::now() + within;
    loop {
        let r = rss_kib();
        if ok(r) || Instant::now() >= end {
            return r;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn free_memory_goes_back_after_connection_churn_and_not_before() {
    if !soliton::alloc::set_trim_threshold(64 << 20) {
        eprintln!("soliton-tests: no glibc trim threshold here: nothing to release");
        return;
    }
    for_each_backend(|backend| {
        let server = TestServer::start(builder(backend).release_memory_after(CHURN), |_| {
            Filler::default()
        });
        let mut ws = RawWs::connect(server.addr());
        let before = rss_kib();
        ws.send_text("fill");
        assert_eq!(ws.read_text(), "filled");
        let freed = (BLOCKS - BLOCKS / 64) * BLOCK / 1024;
        // no churn yet (one connection): the freed blocks stay resident
        std::thread::sleep(Duration::from_millis(1500));
        let kept = rss_kib();
        eprintln!(
            "soliton-tests: RSS {before} KiB before, {kept} KiB 1.5 s after freeing {freed} KiB"
        );
        assert!(
            kept >= before + freed * 3 / 4,
            "the freed memory went back without churn ({before} -> {kept} KiB)"
        );
        // churn: open and close CHURN connections (2 x CHURN slots taken and given back)
        let conns = open_many(server.addr(), CHURN);
        for mut c in conns {
            c.send_close(1000, "");
            let (code, _, _) = c.read_close();
            assert_eq!(code, Some(1000));
        }
        let t = Instant::now();
        let after = rss_until(Duration::from_secs(5), |r| r + freed / 2 < kept);
        eprintln!(
            "soliton-tests: RSS {after} KiB {:.1} s after {CHURN} connections opened and closed",
            t.elapsed().as_secs_f64()
        );
        assert!(
            after + freed / 2 < kept,
            "the freed memory stayed after the churn ({kept} -> {after} KiB)"
        );
        // the worker goes on serving
        ws.send_text("still here");
        assert_eq!(ws.read_text(), "still here");
        drop(ws);
        server.shutdown(Duration::from_millis(200));
    });
}
