use super::*;

const REQ: &[u8] = b"GET /chat?room=1 HTTP/1.1\r\n\
Host: server.example.com\r\n\
Upgrade: websocket\r\n\
Connection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Origin: http://example.com\r\n\
Sec-WebSocket-Protocol: chat, superchat\r\n\
Sec-WebSocket-Version: 13\r\n\
Cookie: a=1; b=2\r\n\
X-Forwarded-For: 10.0.0.1\r\n\r\n";

fn policy() -> HandshakePolicy {
    HandshakePolicy::default()
}

fn run(req: &[u8], policy: &HandshakePolicy) -> Result<Option<[u8; 28]>, HandshakeError> {
    let mut s = HeadScanner::new();
    let Status::Complete(n) = s.feed(req, &policy.limits)? else {
        panic!("incomplete")
    };
    let r = Request::parse(&req[..n], &policy.limits)?;
    match negotiate(&r, policy)? {
        Negotiation::Upgrade(a) => Ok(Some(a.accept)),
        Negotiation::Http => Ok(None),
    }
}

fn replace(from: &str, to: &str) -> Vec<u8> {
    let s = std::str::from_utf8(REQ).unwrap();
    assert!(s.contains(from), "{from}");
    s.replacen(from, to, 1).into_bytes()
}

#[test]
fn rfc_sample_accept_key() {
    assert_eq!(
        &accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
        b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
    assert_eq!(
        run(REQ, &policy()),
        Ok(Some(*b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="))
    );
}

#[test]
fn partial_input_needs_more_and_is_not_rescanned() {
    let lim = HeadLimits::default();
    let mut s = HeadScanner::new();
    for i in 0..REQ.len() {
        assert_eq!(s.feed(&REQ[..i], &lim), Ok(Status::Partial), "at {i}");
        assert_eq!(s.scanned, i);
    }
    assert_eq!(s.feed(REQ, &lim), Ok(Status::Complete(REQ.len())));
}

#[test]
fn head_followed_by_frame_bytes() {
    let mut buf = REQ.to_vec();
    buf.extend_from_slice(&[0x81, 0x80, 0, 0, 0, 0]);
    let mut s = HeadScanner::new();
    assert_eq!(
        s.feed(&buf, &HeadLimits::default()),
        Ok(Status::Complete(REQ.len()))
    );
}

#[test]
fn headers_reach_the_application() {
    let r = Request::parse(REQ, &HeadLimits::default()).unwrap();
    assert_eq!(r.method(), "GET");
    assert_eq!(r.target(), "/chat?room=1");
    assert_eq!(r.path(), "/chat");
    assert_eq!(r.query(), Some("room=1"));
    assert_eq!(r.header("cookie"), Some(&b"a=1; b=2"[..]));
    assert_eq!(r.header_str("X-FORWARDED-FOR"), Some("10.0.0.1"));
    assert_eq!(r.headers().len(), 9);
    assert_eq!(r.protocols().collect::<Vec<_>>(), ["chat", "superchat"]);
}

#[test]
fn subprotocol_by_server_preference() {
    let mut p = policy();
    p.protocols = vec!["chat".into(), "superchat".into()];
    let r = Request::parse(REQ, &p.limits).unwrap();
    let Negotiation::Upgrade(a) = negotiate(&r, &p).unwrap() else {
        panic!()
    };
    assert_eq!(a.protocol, Some("chat"));
    p.protocols = vec!["superchat".into(), "chat".into()];
    let Negotiation::Upgrade(a) = negotiate(&r, &p).unwrap() else {
        panic!()
    };
    assert_eq!(a.protocol, Some("superchat"));
    p.protocols = vec!["mqtt".into()];
    let Negotiation::Upgrade(a) = negotiate(&r, &p).unwrap() else {
        panic!()
    };
    assert_eq!(a.protocol, None);
}

#[test]
fn connection_token_list_is_case_insensitive() {
    assert!(run(
        &replace("Connection: Upgrade", "Connection: keep-alive, UPGRADE"),
        &policy()
    )
    .unwrap()
    .is_some());
    assert!(run(
        &replace("Upgrade: websocket", "Upgrade: WebSocket"),
        &policy()
    )
    .unwrap()
    .is_some());
}

#[test]
fn missing_connection_upgrade_is_400() {
    let e = run(
        &replace("Connection: Upgrade", "Connection: keep-alive"),
        &policy(),
    )
    .unwrap_err();
    assert_eq!(
        (e, e.status()),
        (HandshakeError::MissingConnectionUpgrade, 400)
    );
}

#[test]
fn not_an_upgrade_is_plain_http() {
    let req = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(run(req, &policy()), Ok(None));
    let req = b"POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(run(req, &policy()), Ok(None));
}

#[test]
fn upgrade_with_post_is_405() {
    let e = run(&replace("GET /chat", "POST /chat"), &policy()).unwrap_err();
    assert_eq!((e, e.status()), (HandshakeError::MethodNotAllowed, 405));
    let mut out = Vec::new();
    write_error_response(&mut out, 405, "no", &[]);
    assert!(out.windows(12).any(|w| w == b"Allow: GET\r\n"));
}

#[test]
fn a_given_content_type_replaces_the_plain_text_default() {
    let mut out = Vec::new();
    write_error_response(&mut out, 200, "<p>hi</p>", &[("content-type", "text/html")]);
    let s = String::from_utf8(out).unwrap();
    assert!(s.starts_with("HTTP/1.1 200 OK\r\n"), "{s}");
    assert_eq!(s.matches("ontent-").count(), 2, "one type, one length: {s}");
    assert!(s.contains("\r\ncontent-type: text/html\r\n"), "{s}");
    assert!(s.ends_with("\r\n\r\n<p>hi</p>"), "{s}");
    let mut out = Vec::new();
    write_error_response(&mut out, 404, "no", &[]);
    let s = String::from_utf8(out).unwrap();
    assert!(
        s.contains("\r\nContent-Type: text/plain; charset=utf-8\r\n"),
        "{s}"
    );
}

#[test]
fn missing_host_is_400() {
    let e = run(&replace("Host: server.example.com\r\n", ""), &policy()).unwrap_err();
    assert_eq!((e, e.status()), (HandshakeError::MissingHost, 400));
}

#[test]
fn bad_keys_are_400() {
    for key in [
        "",
        "dGhlIHNhbXBsZSBub25jZQ=",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "dGhlIHNhbXBsZSBub25j*Q==",
    ] {
        let e = run(&replace("dGhlIHNhbXBsZSBub25jZQ==", key), &policy()).unwrap_err();
        assert_eq!(
            (e, e.status()),
            (HandshakeError::InvalidKey, 400),
            "{key:?}"
        );
    }
    let e = run(
        &replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
        &policy(),
    )
    .unwrap_err();
    assert_eq!(e, HandshakeError::InvalidKey);
}

#[test]
fn wrong_version_is_426_naming_13() {
    for v in ["Sec-WebSocket-Version: 8\r\n", ""] {
        let e = run(&replace("Sec-WebSocket-Version: 13\r\n", v), &policy()).unwrap_err();
        assert_eq!((e, e.status()), (HandshakeError::UnsupportedVersion, 426));
    }
    let mut out = Vec::new();
    write_error_response(&mut out, 426, "", &[]);
    let s = String::from_utf8(out).unwrap();
    assert!(s.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
    assert!(s.contains("\r\nSec-WebSocket-Version: 13\r\n"));
}

#[test]
fn application_statuses_have_their_reason_phrases() {
    for (status, line) in [
        (401, "HTTP/1.1 401 Unauthorized\r\n"),
        (303, "HTTP/1.1 303 See Other\r\n"),
        (429, "HTTP/1.1 429 Too Many Requests\r\n"),
        (599, "HTTP/1.1 599 Error\r\n"),
    ] {
        let mut out = Vec::new();
        write_error_response(&mut out, status, "", &[]);
        assert!(out.starts_with(line.as_bytes()), "{status}");
    }
}

#[test]
fn origin_allow_list() {
    let mut p = policy();
    p.origins = OriginPolicy::AllowList(vec!["http://EXAMPLE.com".into()]);
    assert!(run(REQ, &p).unwrap().is_some());
    let e = run(
        &replace("Origin: http://example.com", "Origin: http://evil.com"),
        &p,
    )
    .unwrap_err();
    assert_eq!((e, e.status()), (HandshakeError::ForbiddenOrigin, 403));
    let e = run(&replace("Origin: http://example.com\r\n", ""), &p).unwrap_err();
    assert_eq!((e, e.status()), (HandshakeError::ForbiddenOrigin, 403));
    // no policy: any origin or none
    assert!(
        run(&replace("Origin: http://example.com\r\n", ""), &policy())
            .unwrap()
            .is_some()
    );
}

#[test]
fn request_line_too_long_is_414() {
    let lim = HeadLimits {
        max_request_line: 64,
        ..Default::default()
    };
    let mut req = b"GET /".to_vec();
    req.extend(std::iter::repeat_n(b'a', 100));
    let e = HeadScanner::new().feed(&req, &lim).unwrap_err();
    assert_eq!((e, e.status()), (HandshakeError::RequestLineTooLong, 414));
    req.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        HeadScanner::new().feed(&req, &lim),
        Err(HandshakeError::RequestLineTooLong)
    );
}

#[test]
fn head_too_large_is_431() {
    let lim = HeadLimits {
        max_head: 256,
        ..Default::default()
    };
    let mut req = b"GET / HTTP/1.1\r\n".to_vec();
    for _ in 0..20 {
        req.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaa\r\n");
    }
    let e = HeadScanner::new().feed(&req, &lim).unwrap_err();
    assert_eq!((e, e.status()), (HandshakeError::HeadersTooLarge, 431));
}

#[test]
fn too_many_headers_is_431() {
    let lim = HeadLimits {
        max_headers: 8,
        ..Default::default()
    };
    let e = Request::parse(REQ, &lim).unwrap_err();
    assert_eq!((e, e.status()), (HandshakeError::HeadersTooLarge, 431));
}

#[test]
fn malformed_requests_are_400() {
    for req in [
        &b"GET /\r\nHost: x\r\n\r\n"[..],
        b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"GET / HTTP/1.1\nHost: x\r\n\r\n\r\n",
        b"G\xffT / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / FTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let r = HeadScanner::new().feed(req, &HeadLimits::default());
        let e = match r {
            Ok(Status::Complete(n)) => {
                Request::parse(&req[..n], &HeadLimits::default()).unwrap_err()
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(e.status(), 400, "{:?}", String::from_utf8_lossy(req));
    }
    let req = b"GET / HTTP/2.0\r\nHost: x\r\n\r\n";
    assert_eq!(
        Request::parse(req, &HeadLimits::default())
            .unwrap_err()
            .status(),
        505
    );
}

#[test]
fn extension_offers_are_parsed() {
    let req = replace(
        "Cookie",
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits; server_max_window_bits=\"10\", x-foo\r\nSec-WebSocket-Extensions: permessage-deflate\r\nCookie",
    );
    let r = Request::parse(&req, &HeadLimits::default()).unwrap();
    let offers: Vec<_> = r.extensions().collect();
    assert_eq!(offers.len(), 3);
    assert_eq!(offers[0].name, "permessage-deflate");
    assert_eq!(
        offers[0].params().collect::<Vec<_>>(),
        [
            ("client_max_window_bits", None),
            ("server_max_window_bits", Some("10"))
        ]
    );
    assert_eq!(offers[1].name, "x-foo");
    assert_eq!(offers[1].params().count(), 0);
    assert_eq!(offers[2].name, "permessage-deflate");
}

#[test]
fn accept_response_bytes() {
    let a = Accepted {
        accept: accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
        protocol: Some("chat"),
    };
    let mut out = Vec::new();
    write_accept_response(&mut out, &a, None, &[("Set-Cookie", "s=1")]);
    assert_eq!(
        out,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\nSet-Cookie: s=1\r\n\r\n"
    );
}

#[test]
fn client_request_and_response_roundtrip() {
    let mut out = Vec::new();
    let req = ClientRequest {
        host: "h:1",
        path: "/p",
        protocols: &["chat", "superchat"],
        ..Default::default()
    };
    let expect = write_client_request(&mut out, &req, *b"the sample nonce");
    // the server side accepts what the client side wrote
    let mut p = policy();
    p.protocols = vec!["superchat".into()];
    let r = Request::parse(&out, &p.limits).unwrap();
    assert_eq!(
        r.header("sec-websocket-key"),
        Some(&b"dGhlIHNhbXBsZSBub25jZQ=="[..])
    );
    let Negotiation::Upgrade(a) = negotiate(&r, &p).unwrap() else {
        panic!()
    };
    assert_eq!(a.accept, expect);
    let mut resp = Vec::new();
    write_accept_response(&mut resp, &a, None, &[]);
    let resp = Response::parse(&resp, &HeadLimits::default()).unwrap();
    let ok = check_response(&resp, &expect, req.protocols).unwrap();
    assert_eq!(ok.protocol, Some("superchat"));
    // a wrong accept, a wrong status, an unoffered protocol
    assert_eq!(
        check_response(&resp, &[b'A'; 28], req.protocols),
        Err(HandshakeError::AcceptMismatch)
    );
    assert_eq!(
        check_response(&resp, &expect, &["chat"]),
        Err(HandshakeError::UnrequestedNegotiation)
    );
    let bad = Response::parse(b"HTTP/1.1 403 Forbidden\r\n\r\n", &HeadLimits::default()).unwrap();
    assert_eq!(
        check_response(&bad, &expect, &[]),
        Err(HandshakeError::BadStatus(403))
    );
    let noup = Response::parse(
        b"HTTP/1.1 101 OK\r\nConnection: Upgrade\r\n\r\n",
        &HeadLimits::default(),
    )
    .unwrap();
    assert_eq!(
        check_response(&noup, &expect, &[]),
        Err(HandshakeError::MissingUpgrade)
    );
}
