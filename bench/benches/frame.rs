//! Frame header decode (server role: masked frames) and encode (unmasked replies).

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use soliton::proto::frame::{DecodeRules, FrameHeader, OpCode, Status, MAX_HEADER_LEN};

const RULES: DecodeRules = DecodeRules {
    expect_masked: true,
    allowed_rsv: 0,
    max_frame: u64::MAX >> 1,
};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// (label, payload length): a 7-bit length (2-byte base header), a 16-bit one and a
/// 64-bit one.
const CASES: [(&str, u64); 3] = [("len7", 100), ("len16", 4096), ("len64", 1 << 20)];

fn header(len: u64, mask: Option<[u8; 4]>) -> FrameHeader {
    FrameHeader {
        fin: true,
        rsv: 0,
        opcode: OpCode::Binary,
        mask,
        payload_len: len,
    }
}

fn bench_frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    for (label, len) in CASES {
        let h = header(len, Some(KEY));
        let mut wire = [0u8; MAX_HEADER_LEN];
        let n = h.encode(&mut wire);
        // what a receive buffer holds: the header, then payload bytes
        let mut buf = wire[..n].to_vec();
        buf.extend_from_slice(&[0u8; 64]);
        assert_eq!(
            FrameHeader::decode(&buf, &RULES),
            Ok(Status::Complete((h, n)))
        );
        group.bench_function(BenchmarkId::new("decode_masked", label), |b| {
            b.iter(|| FrameHeader::decode(black_box(&buf), black_box(&RULES)))
        });
    }
    for (label, len) in CASES {
        let h = header(len, None);
        let mut out = [0u8; MAX_HEADER_LEN];
        group.bench_function(BenchmarkId::new("encode", label), |b| {
            b.iter(|| black_box(&h).encode(black_box(&mut out)))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = bench_frame
}
criterion_main!(benches);
