//! The opening handshake on arbitrary bytes. `HeadScanner` fed growing prefixes agrees
//! with one fed everything at once; a complete head goes through `Request::parse` and
//! `negotiate` (an Origin allow-list, two subprotocols), and the response written for
//! the outcome parses back as the client would read it (`check_response` accepts a 101,
//! with the same subprotocol). The same head is also parsed as a response and checked.
//! Last, the bytes go through `StreamingUtf8` in chunks: same verdict as std.
#![no_main]

use libfuzzer_sys::fuzz_target;
use soliton::proto::frame::Status;
use soliton::proto::handshake::{
    accept_key, check_response, negotiate, write_accept_response, write_error_response,
    HandshakePolicy, HeadLimits, HeadScanner, Negotiation, OriginPolicy, Request, Response,
};
use soliton::proto::utf8::StreamingUtf8;

const PROTOCOLS: [&str; 2] = ["chat", "superchat"];

fuzz_target!(|data: &[u8]| {
    let Some((&step, data)) = data.split_first() else {
        return;
    };
    let step = step as usize % 64 + 1;
    let policy = HandshakePolicy {
        origins: OriginPolicy::AllowList(vec![
            "https://example.com".into(),
            "http://localhost".into(),
        ]),
        protocols: PROTOCOLS.map(String::from).to_vec(),
        limits: HeadLimits {
            max_request_line: 512,
            max_head: 2048,
            max_headers: 16,
        },
    };
    let limits = &policy.limits;

    // the scanner over growing prefixes, against one pass over everything
    let mut scanner = HeadScanner::new();
    let mut end = 0;
    let incremental = loop {
        end = (end + step).min(data.len());
        match scanner.feed(&data[..end], limits) {
            Ok(Status::Partial) if end < data.len() => {}
            other => break other,
        }
    };
    assert_eq!(incremental, HeadScanner::new().feed(data, limits));
    let Ok(Status::Complete(n)) = incremental else {
        return;
    };
    assert!(n <= data.len() && data[..n].ends_with(b"\r\n\r\n"));
    let head = &data[..n];

    if let Ok(req) = Request::parse(head, limits) {
        let _ = (
            req.path(),
            req.query(),
            req.header_str("host"),
            req.protocols().count(),
        );
        for ext in req.extensions() {
            let _ = (ext.name, ext.params().count());
        }
        let mut out = Vec::new();
        match negotiate(&req, &policy) {
            Ok(Negotiation::Upgrade(acc)) => {
                write_accept_response(&mut out, &acc, None, &[]);
                let resp = Response::parse(&out, limits).expect("our 101 parses");
                let got = check_response(&resp, &acc.accept, &PROTOCOLS).expect("our 101 checks");
                assert_eq!(got.protocol, acc.protocol);
            }
            Ok(Negotiation::Http) => {}
            Err(e) => {
                write_error_response(&mut out, e.status(), e.as_str(), &[]);
                let head_len = out.len() - e.as_str().len();
                let resp = Response::parse(&out[..head_len], limits).expect("our error parses");
                assert_eq!(resp.status(), e.status());
            }
        }
    }
    if let Ok(resp) = Response::parse(head, limits) {
        let _ = check_response(&resp, &accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), &PROTOCOLS);
    }

    let mut v = StreamingUtf8::new();
    let streamed = data
        .chunks(step)
        .try_for_each(|c| v.feed(c))
        .and_then(|()| v.finish());
    assert_eq!(streamed.is_ok(), std::str::from_utf8(data).is_ok());
});
