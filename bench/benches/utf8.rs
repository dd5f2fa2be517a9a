//! UTF-8 validation: the whole-slice validator, the streaming one fed 4 KiB chunks,
//! and `std::str::from_utf8`, on ASCII and on mixed multibyte text.

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use soliton::proto::utf8::{validate, StreamingUtf8};

const CHUNK: usize = 4 * 1024;

const ASCII: &str = "The quick brown fox jumps over the lazy dog; {\"id\": 42, \"ok\": true}\n";
/// Latin with accents (2 bytes), Greek (2), CJK (3), emoji (4), and ASCII between.
const MIXED: &str = "Grüße, café! κόσμε καλημέρα 你好，世界。日本語のテキスト 🦀🚀🎉 naïve résumé ";

/// `size` bytes of valid UTF-8: whole copies of `pattern` cut at a character boundary,
/// padded with ASCII spaces.
fn text(pattern: &str, size: usize) -> Vec<u8> {
    let mut s = String::with_capacity(size);
    for ch in pattern.chars().cycle() {
        if s.len() + ch.len_utf8() > size {
            break;
        }
        s.push(ch);
    }
    while s.len() < size {
        s.push(' ');
    }
    s.into_bytes()
}

fn streaming(bytes: &[u8]) -> bool {
    let mut v = StreamingUtf8::new();
    for chunk in bytes.chunks(CHUNK) {
        if v.feed(chunk).is_err() {
            return false;
        }
    }
    v.finish().is_ok()
}

fn bench_utf8(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8");
    for (kind, pattern) in [("ascii", ASCII), ("mixed", MIXED)] {
        for (size, label) in [(1024, "1KiB"), (64 * 1024, "64KiB")] {
            let data = text(pattern, size);
            assert_eq!(data.len(), size);
            assert!(std::str::from_utf8(&data).is_ok());
            let param = format!("{kind}/{label}");
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_function(BenchmarkId::new("validate", &param), |b| {
                b.iter(|| validate(black_box(&data)).is_ok())
            });
            group.bench_function(BenchmarkId::new("streaming_4KiB", &param), |b| {
                b.iter(|| streaming(black_box(&data)))
            });
            group.bench_function(BenchmarkId::new("std_from_utf8", &param), |b| {
                b.iter(|| std::str::from_utf8(black_box(&data)).is_ok())
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = bench_utf8
}
criterion_main!(benches);
