//! `FrameHeader::decode` under rules taken from the first byte. A decoded header
//! re-encodes to the very same bytes and decodes back to itself, and every prefix of the
//! input agrees with the whole: `Partial`, or the same verdict once it is all in.
#![no_main]

use libfuzzer_sys::fuzz_target;
use soliton::proto::frame::{DecodeRules, FrameHeader, Status, MAX_HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let Some((&r, buf)) = data.split_first() else {
        return;
    };
    let rules = DecodeRules {
        expect_masked: r & 1 != 0,
        allowed_rsv: (r << 3) & 0x70, // bits 1-3 of `r` pick RSV3, RSV2, RSV1
        max_frame: if r & 0x10 != 0 {
            u64::MAX >> 1
        } else {
            (r >> 5) as u64 * 100
        },
    };
    let whole = FrameHeader::decode(buf, &rules);
    if let Ok(Status::Complete((h, n))) = whole {
        let mut out = [0u8; MAX_HEADER_LEN];
        let m = h.encode(&mut out);
        assert_eq!((m, h.encoded_len()), (n, n), "{h:?}");
        assert_eq!(&out[..m], &buf[..n]);
        assert_eq!(FrameHeader::decode(&out[..m], &rules), whole);
    }
    for cut in 0..buf.len().min(MAX_HEADER_LEN) {
        let part = FrameHeader::decode(&buf[..cut], &rules);
        assert!(
            part == Ok(Status::Partial) || part == whole,
            "cut {cut}: {part:?} vs {whole:?}"
        );
        if let Ok(Status::Complete((_, n))) = whole {
            assert_eq!(part == whole, n <= cut, "cut {cut}");
        }
    }
});
