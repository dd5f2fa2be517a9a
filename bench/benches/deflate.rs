//! permessage-deflate: deflate and inflate of a 1 KiB JSON-like message at 15/8 and
//! 12/5 (window bits / memLevel), with and without context takeover; the server's
//! negotiation of a browser's offer. Before the timings it prints the heap bytes one
//! `Deflater` and one `Inflater` hold (measured by a counting global allocator: zlib-rs
//! allocates through Rust's allocator).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use soliton::proto::deflate::{
    negotiate_server, Compressed, DeflateConfig, DeflateMode, Deflater, Inflater,
};
use soliton::proto::handshake::ExtensionOffer;

/// The system allocator, counting live bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees hold; the counter has no effect on the memory handed out.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded as received; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above (that is, from `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded as received; `ptr` came from `System` with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// A 1 KiB JSON-like message; `seed` varies the numbers.
fn json(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(1100);
    v.extend_from_slice(b"[");
    while v.len() < 1024 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(
            format!(
                "{{\"id\":{},\"user\":\"u{}\",\"price\":{}.{:02},\"side\":\"{}\"}},",
                x % 100_000,
                x % 977,
                x % 5000,
                x % 100,
                if x & 1 == 0 { "buy" } else { "sell" }
            )
            .as_bytes(),
        );
    }
    v.truncate(1024);
    v
}

/// Prints the heap bytes of a deflater (after its first message) and an inflater.
fn print_memory() {
    println!("heap bytes held (counting allocator), after one 1 KiB message:");
    println!("  window/memLevel   Deflater   Inflater");
    let msg = json(1);
    for (wb, mem) in [(15, 8), (15, 1), (12, 5), (12, 8), (10, 4), (9, 1), (9, 8)] {
        let before = live();
        let mut d = Deflater::new(wb, mem, false);
        let mut z = Vec::new();
        d.compress(&msg, &mut z);
        let deflater = live() - before - z.capacity() as isize;
        let before = live();
        let mut inf = Inflater::new(false);
        let mut out = Vec::new();
        inf.inflate_message(&[&z], &mut out, 1 << 20)
            .expect("inflates");
        let inflater = live() - before - out.capacity() as isize;
        println!("  {wb:>2}/{mem}             {deflater:>8}   {inflater:>8}");
        drop((d, inf));
    }
}

fn bench_deflate(c: &mut Criterion) {
    print_memory();
    let messages: Vec<Vec<u8>> = (0..1000).map(json).collect();
    let mut group = c.benchmark_group("deflate");
    group.throughput(Throughput::Bytes(1024));
    for (wb, mem) in [(15u8, 8u8), (12, 5)] {
        for takeover in [true, false] {
            let label = format!(
                "{wb}-{mem}/{}",
                if takeover { "takeover" } else { "no_takeover" }
            );
            // compress: a deflater, messages in turn
            let mut d = Deflater::new(wb, mem, !takeover);
            let mut out = Vec::with_capacity(2048);
            let mut i = 0;
            group.bench_function(BenchmarkId::new("compress", &label), |b| {
                b.iter(|| {
                    out.clear();
                    i = (i + 1) % messages.len();
                    black_box(d.compress(black_box(&messages[i]), &mut out))
                })
            });
            // inflate: the same messages compressed in order by one deflater, inflated
            // in order (with takeover each depends on those before; the inflater
            // starts over with the sequence)
            let mut d = Deflater::new(wb, mem, !takeover);
            let compressed: Vec<Vec<u8>> = messages
                .iter()
                .map(|m| {
                    let mut z = Vec::new();
                    assert_eq!(d.compress(m, &mut z), Compressed::Yes);
                    z
                })
                .collect();
            let total: usize = compressed.iter().map(Vec::len).sum();
            println!(
                "{label}: 1 KiB -> {} bytes on average",
                total / compressed.len()
            );
            let mut inf = Inflater::new(!takeover);
            let mut out = Vec::with_capacity(2048);
            let mut i = 0;
            group.bench_function(BenchmarkId::new("inflate", &label), |b| {
                b.iter(|| {
                    if i == 0 {
                        inf = Inflater::new(!takeover);
                    }
                    out.clear();
                    let r = inf.inflate_message(&[black_box(&compressed[i])], &mut out, 1 << 20);
                    i = (i + 1) % compressed.len();
                    black_box(r)
                })
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("deflate_negotiate");
    let offer = b"permessage-deflate; client_max_window_bits";
    group.throughput(Throughput::Bytes(offer.len() as u64));
    for mode in [DeflateMode::Shared, DeflateMode::Dedicated] {
        let config = DeflateConfig {
            mode,
            ..DeflateConfig::default()
        };
        group.bench_function(
            BenchmarkId::new("browser_offer", format!("{mode:?}")),
            |b| b.iter(|| negotiate_server(ExtensionOffer::parse_list(black_box(offer)), &config)),
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = bench_deflate
}
criterion_main!(benches);
