use super::*;

fn config(mode: DeflateMode) -> DeflateConfig {
    DeflateConfig {
        mode,
        ..DeflateConfig::default()
    }
}

const SHARED: DeflateMode = DeflateMode::Shared;
const DEDICATED: DeflateMode = DeflateMode::Dedicated;

/// The server's answer to one `Sec-WebSocket-Extensions` value.
fn answer(value: &str, cfg: &DeflateConfig) -> Option<(DeflateParams, String)> {
    negotiate_server(ExtensionOffer::parse_list(value.as_bytes()), cfg)
        .map(|a| (a.params, a.response.as_str().to_owned()))
}

fn dedicated(value: &str) -> Option<(DeflateParams, String)> {
    answer(value, &config(DEDICATED))
}

fn response(value: &str) -> Option<String> {
    dedicated(value).map(|(_, r)| r)
}

fn params(snct: bool, cnct: bool, sw: u8, cw: u8) -> DeflateParams {
    DeflateParams {
        server_no_context_takeover: snct,
        client_no_context_takeover: cnct,
        server_max_window_bits: sw,
        client_max_window_bits: cw,
    }
}

// ---- server: what an offer yields ----

#[test]
fn mode_off_never_negotiates() {
    assert_eq!(
        answer("permessage-deflate", &config(DeflateMode::Off)),
        None
    );
}

#[test]
fn bare_offer_is_accepted_with_context_takeover_in_dedicated_mode() {
    assert_eq!(
        dedicated("permessage-deflate"),
        Some((params(false, false, 15, 15), "permessage-deflate".into()))
    );
}

#[test]
fn shared_mode_answers_both_no_context_takeover_unasked() {
    assert_eq!(
        answer("permessage-deflate", &config(SHARED)),
        Some((
            params(true, true, 15, 15),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover".into()
        ))
    );
}

#[test]
fn shared_mode_still_honours_server_max_window_bits() {
    let (p, r) = answer(
        "permessage-deflate; server_max_window_bits=9",
        &config(SHARED),
    )
    .unwrap();
    assert_eq!(p, params(true, true, 9, 15));
    assert_eq!(
        r,
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9"
    );
}

#[test]
fn shared_mode_answers_client_max_window_bits_from_policy() {
    let cfg = DeflateConfig {
        client_max_window_bits: 10,
        ..config(SHARED)
    };
    let (p, r) = answer("permessage-deflate; client_max_window_bits", &cfg).unwrap();
    assert_eq!(p.client_max_window_bits, 10);
    assert!(r.ends_with("; client_max_window_bits=10"), "{r}");
}

#[test]
fn server_no_context_takeover_offered_is_accepted_and_echoed() {
    assert_eq!(
        dedicated("permessage-deflate; server_no_context_takeover"),
        Some((
            params(true, false, 15, 15),
            "permessage-deflate; server_no_context_takeover".into()
        ))
    );
}

#[test]
fn client_no_context_takeover_offered_is_echoed() {
    assert_eq!(
        dedicated("permessage-deflate; client_no_context_takeover"),
        Some((
            params(false, true, 15, 15),
            "permessage-deflate; client_no_context_takeover".into()
        ))
    );
}

#[test]
fn server_max_window_bits_is_answered_with_the_smaller_of_offer_and_policy() {
    assert_eq!(
        response("permessage-deflate; server_max_window_bits=10").as_deref(),
        Some("permessage-deflate; server_max_window_bits=10")
    );
    let cfg = DeflateConfig {
        server_max_window_bits: 12,
        ..config(DEDICATED)
    };
    let (p, r) = answer("permessage-deflate; server_max_window_bits=14", &cfg).unwrap();
    assert_eq!(p.server_max_window_bits, 12);
    assert_eq!(r, "permessage-deflate; server_max_window_bits=12");
}

#[test]
fn server_window_from_policy_is_used_silently_when_not_offered() {
    let cfg = DeflateConfig {
        server_max_window_bits: 11,
        ..config(DEDICATED)
    };
    let (p, r) = answer("permessage-deflate", &cfg).unwrap();
    assert_eq!(p.server_max_window_bits, 11);
    assert_eq!(r, "permessage-deflate");
}

#[test]
fn server_max_window_bits_8_declines_the_offer() {
    assert_eq!(
        dedicated("permessage-deflate; server_max_window_bits=8"),
        None
    );
    // and the next offer is tried
    assert_eq!(
        response("permessage-deflate; server_max_window_bits=8, permessage-deflate").as_deref(),
        Some("permessage-deflate")
    );
}

#[test]
fn server_max_window_bits_without_value_declines_the_offer() {
    assert_eq!(
        dedicated("permessage-deflate; server_max_window_bits"),
        None
    );
}

#[test]
fn client_max_window_bits_without_value_at_full_policy_is_not_answered() {
    assert_eq!(
        dedicated("permessage-deflate; client_max_window_bits"),
        Some((params(false, false, 15, 15), "permessage-deflate".into()))
    );
}

#[test]
fn client_max_window_bits_without_value_gets_the_policy_limit() {
    let cfg = DeflateConfig {
        client_max_window_bits: 12,
        ..config(DEDICATED)
    };
    let (p, r) = answer("permessage-deflate; client_max_window_bits", &cfg).unwrap();
    assert_eq!(p.client_max_window_bits, 12);
    assert_eq!(r, "permessage-deflate; client_max_window_bits=12");
}

#[test]
fn client_max_window_bits_with_value_is_answered_with_the_smaller() {
    let (p, r) = dedicated("permessage-deflate; client_max_window_bits=10").unwrap();
    assert_eq!(p.client_max_window_bits, 10);
    assert_eq!(r, "permessage-deflate; client_max_window_bits=10");
    let cfg = DeflateConfig {
        client_max_window_bits: 9,
        ..config(DEDICATED)
    };
    let (p, r) = answer("permessage-deflate; client_max_window_bits=10", &cfg).unwrap();
    assert_eq!(p.client_max_window_bits, 9);
    assert_eq!(r, "permessage-deflate; client_max_window_bits=9");
}

#[test]
fn client_max_window_bits_8_is_accepted_and_inflated_with_a_larger_window() {
    let (p, r) = dedicated("permessage-deflate; client_max_window_bits=8").unwrap();
    assert_eq!(p.client_max_window_bits, 8);
    assert_eq!(r, "permessage-deflate; client_max_window_bits=8");
}

#[test]
fn client_max_window_bits_not_offered_is_never_answered() {
    let cfg = DeflateConfig {
        client_max_window_bits: 9,
        ..config(SHARED)
    };
    let (p, r) = answer("permessage-deflate", &cfg).unwrap();
    assert_eq!(p.client_max_window_bits, 15);
    assert!(!r.contains("client_max_window_bits"), "{r}");
}

#[test]
fn every_parameter_together() {
    let (p, r) = dedicated(
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=11",
    )
    .unwrap();
    assert_eq!(p, params(true, true, 10, 11));
    assert_eq!(
        r,
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=11"
    );
    assert!(r.len() <= 128);
}

#[test]
fn duplicate_parameter_declines_the_offer() {
    for dup in [
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
        "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
    ] {
        assert_eq!(dedicated(dup), None, "{dup}");
    }
}

#[test]
fn unknown_parameter_declines_the_offer() {
    assert_eq!(dedicated("permessage-deflate; foo"), None);
    assert_eq!(
        dedicated("permessage-deflate; client_max_window_bits; x=1"),
        None
    );
}

#[test]
fn value_outside_8_to_15_declines_the_offer() {
    for v in ["0", "7", "16", "99", "255", "65536"] {
        assert_eq!(
            dedicated(&format!("permessage-deflate; client_max_window_bits={v}")),
            None,
            "{v}"
        );
        assert_eq!(
            dedicated(&format!("permessage-deflate; server_max_window_bits={v}")),
            None,
            "{v}"
        );
    }
}

#[test]
fn malformed_value_declines_the_offer() {
    for v in [
        "010", "09", "+9", "-9", "9.0", "0x9", "", "\"\"", "\"1 0\"", "\"10", "1 0", "ten",
    ] {
        assert_eq!(
            dedicated(&format!("permessage-deflate; client_max_window_bits={v}")),
            None,
            "{v:?}"
        );
        assert_eq!(
            dedicated(&format!("permessage-deflate; server_max_window_bits={v}")),
            None,
            "{v:?}"
        );
    }
}

#[test]
fn quoted_value_is_accepted_after_unescaping() {
    // RFC 7692 §7.1: a value may be a quoted-string whose content is a token
    assert_eq!(
        dedicated("permessage-deflate; server_max_window_bits=\"10\"")
            .map(|(p, _)| p.server_max_window_bits),
        Some(10)
    );
    assert_eq!(
        dedicated("permessage-deflate; client_max_window_bits=\"1\\2\"")
            .map(|(p, _)| p.client_max_window_bits),
        Some(12)
    );
}

#[test]
fn value_on_a_flag_parameter_declines_the_offer() {
    assert_eq!(
        dedicated("permessage-deflate; server_no_context_takeover=1"),
        None
    );
    assert_eq!(
        dedicated("permessage-deflate; client_no_context_takeover=\"x\""),
        None
    );
}

#[test]
fn empty_parameter_declines_the_offer() {
    assert_eq!(
        dedicated("permessage-deflate; ; server_no_context_takeover"),
        None
    );
    assert_eq!(
        dedicated("permessage-deflate; server_no_context_takeover;"),
        None
    );
    assert_eq!(dedicated("permessage-deflate; =9"), None);
}

#[test]
fn whitespace_around_separators_is_allowed() {
    assert_eq!(
        dedicated("permessage-deflate ;server_max_window_bits = 10 ;\tclient_no_context_takeover")
            .map(|(p, _)| p),
        Some(params(false, true, 10, 15))
    );
}

#[test]
fn first_acceptable_offer_wins() {
    assert_eq!(
        response("permessage-deflate; foo, permessage-deflate; server_max_window_bits=12, permessage-deflate").as_deref(),
        Some("permessage-deflate; server_max_window_bits=12")
    );
}

#[test]
fn offers_across_several_headers_are_tried_in_order() {
    use crate::proto::handshake::{HeadLimits, Request};
    let head = b"GET / HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Extensions: x-webkit-deflate-frame\r\nSec-WebSocket-Extensions: permessage-deflate; bad, permessage-deflate; client_no_context_takeover\r\n\r\n";
    let req = Request::parse(head, &HeadLimits::default()).unwrap();
    let a = negotiate_server(req.extensions(), &config(DEDICATED)).unwrap();
    assert_eq!(
        a.response.as_str(),
        "permessage-deflate; client_no_context_takeover"
    );
}

#[test]
fn other_extensions_are_skipped() {
    assert_eq!(dedicated("x-webkit-deflate-frame, foo; bar=1"), None);
    assert_eq!(
        response("foo, permessage-deflate").as_deref(),
        Some("permessage-deflate")
    );
}

#[test]
fn extension_name_is_case_insensitive() {
    assert!(dedicated("PerMessage-Deflate").is_some());
}

#[test]
fn policy_out_of_range_is_clamped() {
    let cfg = DeflateConfig {
        server_max_window_bits: 3,
        client_max_window_bits: 200,
        mem_level: 0,
        ..config(DEDICATED)
    };
    let (p, _) = answer("permessage-deflate; client_max_window_bits", &cfg).unwrap();
    assert_eq!(
        (p.server_max_window_bits, p.client_max_window_bits),
        (9, 15)
    );
    assert_eq!(cfg.clamped().mem_level, 1);
}

/// The offers of Autobahn|Testsuite's cases 13.1-13.7 (its fuzzing client accepts no
/// context takeover and a window limit for itself, and requests the server's
/// `(no_context_takeover, max_window_bits)`, 0 meaning "not requested"; 9 replaced 8
/// there when zlib dropped raw 8-bit windows), and what each case expects agreed.
#[test]
fn autobahn_13_offer_sets_negotiate() {
    fn offer(request: (bool, u8)) -> String {
        let mut s =
            "permessage-deflate; client_no_context_takeover; client_max_window_bits".to_owned();
        if request.0 {
            s.push_str("; server_no_context_takeover");
        }
        if request.1 != 0 {
            s.push_str(&format!("; server_max_window_bits={}", request.1));
        }
        s
    }
    let cases: [(&str, &[(bool, u8)]); 7] = [
        ("13.1", &[(false, 0)]),
        ("13.2", &[(true, 0)]),
        ("13.3", &[(false, 9)]),
        ("13.4", &[(false, 15)]),
        ("13.5", &[(true, 9)]),
        ("13.6", &[(true, 15)]),
        ("13.7", &[(true, 9), (true, 0), (false, 0)]),
    ];
    for mode in [SHARED, DEDICATED] {
        for (case, offers) in cases {
            let value = offers
                .iter()
                .map(|&o| offer(o))
                .collect::<Vec<_>>()
                .join(", ");
            let (p, r) = answer(&value, &config(mode)).unwrap_or_else(|| panic!("{case} declined"));
            let (nct, window) = offers[0];
            assert!(p.client_no_context_takeover, "{case}");
            assert_eq!(
                p.server_no_context_takeover,
                nct || mode == SHARED,
                "{case}"
            );
            assert_eq!(
                p.server_max_window_bits,
                if window == 0 { 15 } else { window },
                "{case}"
            );
            if window != 0 {
                assert!(
                    r.contains(&format!("server_max_window_bits={window}")),
                    "{case}: {r}"
                );
            }
            // what Autobahn's client checks: the answer reads back to the same terms
            let client = ClientOffer {
                server_no_context_takeover: nct,
                client_no_context_takeover: true,
                server_max_window_bits: (window != 0).then_some(window),
                client_max_window_bits: ClientWindowOffer::Any,
            };
            assert_eq!(
                client.check_response(Some(r.as_bytes())),
                Ok(Some(p)),
                "{case}"
            );
        }
    }
}

// ---- client: the offer and the check of the answer ----

#[test]
fn default_client_offer_is_what_browsers_send() {
    assert_eq!(
        ClientOffer::default().header_value().as_str(),
        "permessage-deflate; client_max_window_bits"
    );
}

#[test]
fn client_offer_with_every_parameter() {
    let o = ClientOffer {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        server_max_window_bits: Some(10),
        client_max_window_bits: ClientWindowOffer::Max(12),
    };
    assert_eq!(
        o.header_value().as_str(),
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=12"
    );
    // and a server reads it as offered
    assert_eq!(
        dedicated(o.header_value().as_str()).map(|(p, _)| p),
        Some(params(true, true, 10, 12))
    );
}

#[test]
fn client_offer_windows_are_clamped() {
    let o = ClientOffer {
        server_max_window_bits: Some(3),
        client_max_window_bits: ClientWindowOffer::Max(8),
        ..ClientOffer::default()
    };
    assert_eq!(
        o.header_value().as_str(),
        "permessage-deflate; server_max_window_bits=8; client_max_window_bits=9"
    );
}

fn check(offer: &ClientOffer, resp: &str) -> Result<Option<DeflateParams>, HandshakeError> {
    offer.check_response(Some(resp.as_bytes()))
}

#[test]
fn no_extension_in_response_means_uncompressed() {
    assert_eq!(ClientOffer::default().check_response(None), Ok(None));
}

#[test]
fn plain_acceptance_gives_full_windows_with_takeover() {
    assert_eq!(
        check(&ClientOffer::default(), "permessage-deflate"),
        Ok(Some(params(false, false, 15, 15)))
    );
}

#[test]
fn response_server_no_context_takeover_unasked_is_accepted() {
    assert_eq!(
        check(
            &ClientOffer::default(),
            "permessage-deflate; server_no_context_takeover"
        ),
        Ok(Some(params(true, false, 15, 15)))
    );
}

#[test]
fn response_client_no_context_takeover_binds_the_client() {
    assert_eq!(
        check(
            &ClientOffer::default(),
            "permessage-deflate; client_no_context_takeover"
        ),
        Ok(Some(params(false, true, 15, 15)))
    );
}

#[test]
fn response_client_max_window_bits_sets_the_client_window() {
    assert_eq!(
        check(
            &ClientOffer::default(),
            "permessage-deflate; client_max_window_bits=10"
        ),
        Ok(Some(params(false, false, 15, 10)))
    );
}

#[test]
fn response_client_max_window_bits_not_offered_fails() {
    let o = ClientOffer {
        client_max_window_bits: ClientWindowOffer::NotOffered,
        ..ClientOffer::default()
    };
    assert_eq!(
        check(&o, "permessage-deflate; client_max_window_bits=10"),
        Err(HandshakeError::UnrequestedNegotiation)
    );
}

#[test]
fn response_client_max_window_bits_above_the_offer_fails() {
    let o = ClientOffer {
        client_max_window_bits: ClientWindowOffer::Max(10),
        ..ClientOffer::default()
    };
    assert_eq!(
        check(&o, "permessage-deflate; client_max_window_bits=11"),
        Err(HandshakeError::UnrequestedNegotiation)
    );
    assert_eq!(
        check(&o, "permessage-deflate").map(|p| p.unwrap().client_max_window_bits),
        Ok(10)
    );
}

#[test]
fn response_client_max_window_bits_without_value_fails() {
    assert_eq!(
        check(
            &ClientOffer::default(),
            "permessage-deflate; client_max_window_bits"
        ),
        Err(HandshakeError::InvalidExtensionResponse)
    );
}

#[test]
fn response_server_max_window_bits_above_the_offer_fails() {
    let o = ClientOffer {
        server_max_window_bits: Some(10),
        ..ClientOffer::default()
    };
    assert_eq!(
        check(&o, "permessage-deflate; server_max_window_bits=12"),
        Err(HandshakeError::UnrequestedNegotiation)
    );
    assert_eq!(
        check(&o, "permessage-deflate; server_max_window_bits=9")
            .map(|p| p.unwrap().server_max_window_bits),
        Ok(9)
    );
}

#[test]
fn response_server_max_window_bits_unasked_is_accepted() {
    assert_eq!(
        check(
            &ClientOffer::default(),
            "permessage-deflate; server_max_window_bits=11"
        ),
        Ok(Some(params(false, false, 11, 15)))
    );
}

#[test]
fn response_with_invalid_values_fails() {
    for r in [
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=010",
        "permessage-deflate; client_max_window_bits=7",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; server_max_window_bits",
    ] {
        assert_eq!(
            check(&ClientOffer::default(), r),
            Err(HandshakeError::InvalidExtensionResponse),
            "{r}"
        );
    }
}

#[test]
fn response_with_unknown_or_duplicate_parameter_fails() {
    for r in [
        "permessage-deflate; foo",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    ] {
        assert_eq!(
            check(&ClientOffer::default(), r),
            Err(HandshakeError::InvalidExtensionResponse),
            "{r}"
        );
    }
}

#[test]
fn response_with_an_extension_not_offered_fails() {
    assert_eq!(
        check(&ClientOffer::default(), "x-webkit-deflate-frame"),
        Err(HandshakeError::UnrequestedNegotiation)
    );
}

#[test]
fn response_with_two_deflate_elements_fails() {
    assert_eq!(
        check(
            &ClientOffer::default(),
            "permessage-deflate, permessage-deflate"
        ),
        Err(HandshakeError::UnrequestedNegotiation)
    );
}

#[test]
fn agreed_params_build_matching_codecs() {
    // a server and a client on the same agreement understand each other both ways
    let p = params(false, true, 10, 12);
    let mut sd = p.deflater(Role::Server, 8, 0);
    let mut cd = p.deflater(Role::Client, 8, 0);
    assert_eq!((sd.window_bits(), cd.window_bits()), (10, 12));
    assert!(!sd.no_context_takeover() && cd.no_context_takeover());
    let mut si = p.inflater(Role::Server);
    let mut ci = p.inflater(Role::Client);
    assert!(si.resets_per_message() && !ci.resets_per_message());
    let msg = b"an agreement is only as good as the bytes that follow it, twice: an agreement";
    for _ in 0..2 {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        assert_eq!(sd.compress(msg, &mut a), super::super::Compressed::Yes);
        assert_eq!(cd.compress(msg, &mut b), super::super::Compressed::Yes);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        ci.inflate_message(&[&a], &mut x, 1000).unwrap();
        si.inflate_message(&[&b], &mut y, 1000).unwrap();
        assert_eq!((&x[..], &y[..]), (&msg[..], &msg[..]));
    }
}
