//! The server side of the opening handshake, per request: find the head, parse it,
//! negotiate, write the 101 response into a reused buffer. Also each step alone, and
//! the `Sec-WebSocket-Accept` computation (SHA-1 + base64) alone.

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use soliton::proto::frame::Status;
use soliton::proto::handshake::{
    accept_key, negotiate, write_accept_response, HandshakePolicy, HeadScanner, Negotiation,
    OriginPolicy, Request,
};

/// What a current desktop browser sends: 12 header fields.
const REQUEST: &[u8] = b"GET /chat?room=lobby HTTP/1.1\r\n\
Host: app.example.com\r\n\
Connection: Upgrade\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: https://app.example.com\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Language: en-US,en;q=0.9,de;q=0.8\r\n\
Cookie: session=6f1c2a9e0b7d4e3f8a5c1d2e3f4a5b6c; theme=dark; _ga=GA1.1.1234567890.1700000000\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
Sec-WebSocket-Protocol: chat.v1, chat.v2\r\n\
\r\n";

fn policy() -> HandshakePolicy {
    HandshakePolicy {
        origins: OriginPolicy::AllowList(vec!["https://app.example.com".into()]),
        // the server prefers a protocol the client does not offer, then one it does
        protocols: vec!["chat.v3".into(), "chat.v1".into()],
        ..HandshakePolicy::default()
    }
}

/// One whole handshake; returns the response length.
#[inline(always)]
fn handshake(req: &[u8], policy: &HandshakePolicy, out: &mut Vec<u8>) -> usize {
    let mut scanner = HeadScanner::new();
    let Ok(Status::Complete(n)) = scanner.feed(req, &policy.limits) else {
        panic!("incomplete head");
    };
    let request = Request::parse(&req[..n], &policy.limits).expect("parse");
    let Ok(Negotiation::Upgrade(accepted)) = negotiate(&request, policy) else {
        panic!("not accepted");
    };
    out.clear();
    write_accept_response(out, &accepted, None, &[]);
    out.len()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn bench_handshake(c: &mut Criterion) {
    let policy = policy();
    let mut out = Vec::with_capacity(512);
    handshake(REQUEST, &policy, &mut out);
    assert!(out.starts_with(b"HTTP/1.1 101 "));
    assert!(contains(
        &out,
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    ));
    assert!(contains(&out, b"Sec-WebSocket-Protocol: chat.v1\r\n"));

    let mut group = c.benchmark_group("handshake");
    group.throughput(Throughput::Elements(1));
    group.bench_function("full", |b| {
        b.iter(|| handshake(black_box(REQUEST), black_box(&policy), &mut out))
    });
    group.bench_function("scan", |b| {
        b.iter(|| HeadScanner::new().feed(black_box(REQUEST), &policy.limits))
    });
    group.bench_function("parse", |b| {
        b.iter(|| Request::parse(black_box(REQUEST), &policy.limits).is_ok())
    });
    let request = Request::parse(REQUEST, &policy.limits).expect("parse");
    group.bench_function("negotiate", |b| {
        b.iter(|| negotiate(black_box(&request), black_box(&policy)).is_ok())
    });
    let Ok(Negotiation::Upgrade(accepted)) = negotiate(&request, &policy) else {
        panic!("not accepted");
    };
    group.bench_function("write_response", |b| {
        b.iter(|| {
            out.clear();
            write_accept_response(&mut out, black_box(&accepted), None, &[]);
            out.len()
        })
    });
    group.bench_function("accept_key", |b| {
        b.iter(|| accept_key(black_box(b"dGhlIHNhbXBsZSBub25jZQ==")))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = bench_handshake
}
criterion_main!(benches);
