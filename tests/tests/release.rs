//! After connection churn a worker hands the C allocator's free memory back to the
//! kernel (`Config::release_memory_after`): memory freed on the worker stays resident
//! under a high trim threshold (as `soliton-server` sets it) until enough connections
//! have opened and closed, and goes back within about a second after that.
//!
//! The memory is freed by the handler (on a message that asks for it), so that the
//! amount is known: what a storm of handshakes frees is smaller and varies from run to
//! run. This test file is a process of its own, because it reads the process's RSS.

use std::time::{Duration, Instant};

use soliton::driver::Backend;
use soliton::proto::Message;
use soliton::server::{CloseInfo, ConnId, Handler, Reject, UpgradeRequest, WebSocket};
use soliton_tests::{builder, for_each_backend, open_many, rss, RawWs, TestServer};

/// The tests here one at a time: a release (`malloc_trim`) is process-wide, so one
/// test's churn would release what the other measures.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

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
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
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

/// Resident KiB of this process's mapping of exactly `size_kib` KiB (the io_uring
/// worker's receive buffers, given a size no other mapping has), if there is one.
fn mapping_rss_kib(size_kib: usize) -> Option<usize> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("/proc/self/smaps");
    let mut lines = smaps.lines();
    while let Some(l) = lines.next() {
        let Some(v) = l.strip_prefix("Size:") else {
            continue;
        };
        if v.split_whitespace().next()?.parse::<usize>().ok()? != size_kib {
            continue;
        }
        return lines
            .find_map(|l| l.strip_prefix("Rss:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok());
    }
    None
}

/// Polls [`mapping_rss_kib`] every 50 ms until it is at most `kib` or `within` has
/// passed; the last value.
fn rss_of_until(size_kib: usize, within: Duration, kib: usize) -> usize {
    let end = Instant::now() + within;
    loop {
        let r = mapping_rss_kib(size_kib).expect("the receive buffers' mapping");
        if r <= kib || Instant::now() >= end {
            return r;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// io_uring: a storm of handshakes lands each request in a fresh receive buffer, so
/// every buffer's first page becomes resident; after the churn the worker gives the
/// pages of the buffers that hold nothing back, and receives after it are whole. A
/// burst of receives without churn touches them again, and they go back after it too.
#[test]
fn io_uring_receive_buffers_give_their_pages_back_after_churn() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // 64 buffers of 36 KiB: a 2,304 KiB mapping, a size nothing else here has
    const COUNT: u16 = 64;
    const SIZE: usize = 36 << 10;
    let area = (COUNT as usize * SIZE) >> 10;
    let b = builder(Backend::IoUring)
        .release_memory_after(CHURN)
        .receive_buffers(COUNT, SIZE, 16 << 10);
    if Backend::IoUring.resolve().is_err() {
        eprintln!("soliton-tests: SKIPPED: io_uring unavailable here");
        return;
    }
    let server = TestServer::start(b, |_| Filler::default());
    let mut ws = RawWs::connect(server.addr());
    let conns = open_many(server.addr(), CHURN);
    let stormed = mapping_rss_kib(area).expect("the receive buffers' mapping");
    eprintln!("soliton-tests: receive buffers: {stormed} KiB resident after {CHURN} handshakes");
    assert!(
        stormed >= COUNT as usize * 4 * 3 / 4,
        "a handshake storm touches the buffers' first pages ({stormed} KiB)"
    );
    for mut c in conns {
        c.send_close(1000, "");
        let (code, _, _) = c.read_close();
        assert_eq!(code, Some(1000));
    }
    let t = Instant::now();
    let now = rss_of_until(area, Duration::from_secs(5), 16);
    eprintln!(
        "soliton-tests: receive buffers: {now} KiB resident {:.1} s after the churn",
        t.elapsed().as_secs_f64()
    );
    assert!(
        now <= 16,
        "the buffers kept their pages ({stormed} -> {now} KiB)"
    );
    // receives land whole in the released buffers: messages larger than a buffer
    for i in 0..8u8 {
        let msg: Vec<u8> = (0..100_000u32).map(|j| (j as u8) ^ i).collect();
        ws.send_binary(&msg);
        let (op, got) = ws.read_message();
        assert_eq!((op, got.len()), (2, msg.len()));
        assert!(got == msg, "echo {i} intact");
    }
    // a burst of receives without churn (one connection, each echo a receive of its
    // own, more receives than the ring has buffers) touches the buffers' first pages
    // again; they go back a second or two after the burst. First, the churn's last
    // release: one a second while the previous second saw churn, so 2.5 s of none
    std::thread::sleep(Duration::from_millis(2500));
    for i in 0..3 * COUNT as usize {
        let text = format!("burst {i}");
        ws.send_text(&text);
        assert_eq!(ws.read_text(), text);
    }
    let burst = mapping_rss_kib(area).expect("the receive buffers' mapping");
    assert!(
        burst >= COUNT as usize * 4 * 3 / 4,
        "a burst of receives touches the buffers' first pages ({burst} KiB)"
    );
    let t = Instant::now();
    let quiet = rss_of_until(area, Duration::from_secs(5), 16);
    eprintln!(
        "soliton-tests: receive buffers: {burst} KiB after a burst of {} echoes, {quiet} KiB {:.1} s later",
        3 * COUNT,
        t.elapsed().as_secs_f64()
    );
    assert!(
        quiet <= 16,
        "the buffers kept their pages after the burst ({burst} -> {quiet} KiB)"
    );
    ws.send_text("still here");
    assert_eq!(ws.read_text(), "still here");
    drop(ws);
    server.shutdown(Duration::from_millis(200));
}
