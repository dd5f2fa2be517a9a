//! The crypto under `wss://`, ring against aws-lc-rs on this machine: AES-128-GCM
//! sealing a 16 KiB record (what a 16 KiB message costs each way) and an X25519
//! exchange (two key pairs and an agreement: what a handshake costs both ends). This is
//! what chose ring's cipher suites for the records and aws-lc-rs for the rest
//! (`engine/src/tls/mod.rs`, `provider`).

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const RECORD: usize = 16 * 1024;

fn bench_tls_crypto(c: &mut Criterion) {
    let mut g = c.benchmark_group("tls_crypto");
    g.throughput(Throughput::Bytes(RECORD as u64));
    let mut buf = vec![7u8; RECORD];
    let mut n: u64 = 0;
    {
        use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
        let k = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &[1; 16]).expect("key"));
        g.bench_function(BenchmarkId::new("aes128gcm_seal_16k", "ring"), |b| {
            b.iter(|| {
                n += 1;
                let mut nonce = [0u8; 12];
                nonce[..8].copy_from_slice(&n.to_le_bytes());
                let nonce = Nonce::assume_unique_for_key(nonce);
                k.seal_in_place_separate_tag(nonce, Aad::empty(), black_box(&mut buf))
                    .expect("seal")
            })
        });
    }
    {
        use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
        let k = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &[1; 16]).expect("key"));
        g.bench_function(BenchmarkId::new("aes128gcm_seal_16k", "aws-lc-rs"), |b| {
            b.iter(|| {
                n += 1;
                let mut nonce = [0u8; 12];
                nonce[..8].copy_from_slice(&n.to_le_bytes());
                let nonce = Nonce::assume_unique_for_key(nonce);
                k.seal_in_place_separate_tag(nonce, Aad::empty(), black_box(&mut buf))
                    .expect("seal")
            })
        });
    }
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("x25519_exchange", "ring"), |b| {
        use ring::agreement::{agree_ephemeral, EphemeralPrivateKey, UnparsedPublicKey, X25519};
        let rng = ring::rand::SystemRandom::new();
        b.iter(|| {
            let a = EphemeralPrivateKey::generate(&X25519, &rng).expect("key");
            let peer = EphemeralPrivateKey::generate(&X25519, &rng).expect("key");
            let pk = peer.compute_public_key().expect("public key");
            agree_ephemeral(a, &UnparsedPublicKey::new(&X25519, pk.as_ref()), |s| {
                s.len()
            })
        })
    });
    g.bench_function(BenchmarkId::new("x25519_exchange", "aws-lc-rs"), |b| {
        use aws_lc_rs::agreement::{
            agree_ephemeral, EphemeralPrivateKey, UnparsedPublicKey, X25519,
        };
        let rng = aws_lc_rs::rand::SystemRandom::new();
        b.iter(|| {
            let a = EphemeralPrivateKey::generate(&X25519, &rng).expect("key");
            let peer = EphemeralPrivateKey::generate(&X25519, &rng).expect("key");
            let pk = peer.compute_public_key().expect("public key");
            agree_ephemeral(
                a,
                UnparsedPublicKey::new(&X25519, pk.as_ref()),
                aws_lc_rs::error::Unspecified,
                |s| Ok(s.len()),
            )
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = bench_tls_crypto
}
criterion_main!(benches);
