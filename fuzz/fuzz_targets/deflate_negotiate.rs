//! An arbitrary `Sec-WebSocket-Extensions` value through the server's negotiation (both
//! modes, windows from the first byte) and the client's check of a response. Never a
//! panic; an agreement's windows are in range and its response value reads back, as
//! a client that offered everything reads it, to the same takeover rules and client
//! window.
#![no_main]

use libfuzzer_sys::fuzz_target;
use soliton::proto::deflate::{
    negotiate_server, ClientOffer, ClientWindowOffer, DeflateConfig, DeflateMode,
};
use soliton::proto::handshake::ExtensionOffer;

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, value)) = data.split_first() else {
        return;
    };
    let config = DeflateConfig {
        mode: if knobs & 1 == 0 {
            DeflateMode::Shared
        } else {
            DeflateMode::Dedicated
        },
        server_max_window_bits: 9 + (knobs >> 1) % 7,
        client_max_window_bits: 9 + (knobs >> 4) % 7,
        ..DeflateConfig::default()
    };
    if let Some(a) = negotiate_server(ExtensionOffer::parse_list(value), &config) {
        let p = a.params;
        assert!((9..=15).contains(&p.server_max_window_bits), "{p:?}");
        assert!((8..=15).contains(&p.client_max_window_bits), "{p:?}");
        assert!(p.server_max_window_bits <= config.server_max_window_bits);
        if config.mode == DeflateMode::Shared {
            assert!(p.server_no_context_takeover && p.client_no_context_takeover);
        }
        let everything = ClientOffer {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: None,
            client_max_window_bits: ClientWindowOffer::Any,
        };
        let back = everything
            .check_response(Some(a.response.as_str().as_bytes()))
            .unwrap_or_else(|e| panic!("{:?} -> {e:?}", a.response))
            .expect("an agreement");
        assert_eq!(
            back.server_no_context_takeover,
            p.server_no_context_takeover
        );
        assert_eq!(
            back.client_no_context_takeover,
            p.client_no_context_takeover
        );
        assert_eq!(back.client_max_window_bits, p.client_max_window_bits);
    }
    // the same bytes as a server's answer to a few offers
    for offer in [
        ClientOffer::default(),
        ClientOffer {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: Some(10),
            client_max_window_bits: ClientWindowOffer::Max(12),
        },
        ClientOffer {
            client_max_window_bits: ClientWindowOffer::NotOffered,
            ..ClientOffer::default()
        },
    ] {
        if let Ok(Some(p)) = offer.check_response(Some(value)) {
            assert!((8..=15).contains(&p.server_max_window_bits), "{p:?}");
            assert!((8..=15).contains(&p.client_max_window_bits), "{p:?}");
            if let Some(asked) = offer.server_max_window_bits {
                assert!(p.server_max_window_bits <= asked);
            }
            if let ClientWindowOffer::Max(w) = offer.client_max_window_bits {
                assert!(p.client_max_window_bits <= w);
            }
        }
    }
});
