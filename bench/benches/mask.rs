//! Unmasking throughput: the dispatcher, every implementation this CPU can run, a plain
//! byte loop, and a `memcpy` of the same size as the ceiling to compare against.
//!
//! Buffers are page-aligned and the copy's destination sits a whole number of pages
//! after its source, so neither side pays for split cache lines or for 4 KiB aliasing
//! between loads and stores; `+16` runs repeat `apply_mask` and `memcpy` 16 bytes off
//! that alignment (where a `Vec` from the allocator usually starts).

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use soliton::proto::mask::{apply_mask, MaskImpl};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const PAGE: usize = 4096;

const SIZES: [(usize, &str); 5] = [
    (16, "16B"),
    (125, "125B"),
    (1024, "1KiB"),
    (16 * 1024, "16KiB"),
    (1024 * 1024, "1MiB"),
];

/// The loop anyone would write first.
#[inline(never)]
fn byte_loop(buf: &mut [u8], key: [u8; 4], phase: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(i + phase) & 3];
    }
}

/// Room for a source and a destination of `size` bytes (plus `PAGE` of slack each),
/// both page-aligned, the destination a whole number of pages after the source.
struct Arena {
    bytes: Vec<u8>,
    src: usize,
    dst: usize,
}

impl Arena {
    fn new(size: usize) -> Arena {
        let span = (size + PAGE).next_multiple_of(PAGE);
        let bytes: Vec<u8> = (0..2 * span + PAGE).map(|i| i as u8).collect();
        // the first page boundary inside the allocation
        let src = (bytes.as_ptr() as usize).wrapping_neg() % PAGE;
        Arena {
            bytes,
            src,
            dst: src + span,
        }
    }

    /// The source, `offset` bytes past its page boundary.
    fn src(&mut self, offset: usize, size: usize) -> &mut [u8] {
        let at = self.src + offset;
        &mut self.bytes[at..at + size]
    }

    /// The source and the destination, both `offset` bytes past their page boundary.
    fn src_dst(&mut self, offset: usize, size: usize) -> (&[u8], &mut [u8]) {
        let (head, tail) = self.bytes.split_at_mut(self.dst);
        let at = self.src + offset;
        (&head[at..at + size], &mut tail[offset..offset + size])
    }
}

fn bench_mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask");
    for (size, label) in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let mut arena = Arena::new(size);
        for (offset, tag) in [(0, ""), (16, "+16")] {
            group.bench_function(BenchmarkId::new(format!("memcpy{tag}"), label), |b| {
                let (src, dst) = arena.src_dst(offset, size);
                b.iter(|| {
                    dst.copy_from_slice(black_box(src));
                    black_box(&mut *dst);
                })
            });
            group.bench_function(BenchmarkId::new(format!("apply_mask{tag}"), label), |b| {
                let buf = arena.src(offset, size);
                b.iter(|| apply_mask(black_box(&mut *buf), black_box(KEY), black_box(0)))
            });
        }
        for imp in MaskImpl::available() {
            let name = format!("{imp:?}").to_lowercase();
            group.bench_function(BenchmarkId::new(name, label), |b| {
                let buf = arena.src(0, size);
                b.iter(|| imp.apply(black_box(&mut *buf), black_box(KEY), black_box(0)))
            });
        }
        group.bench_function(BenchmarkId::new("byte_loop", label), |b| {
            let buf = arena.src(0, size);
            b.iter(|| byte_loop(black_box(&mut *buf), black_box(KEY), black_box(0)))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = bench_mask
}
criterion_main!(benches);
