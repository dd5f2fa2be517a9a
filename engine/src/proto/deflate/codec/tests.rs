use super::*;
use crate::proto::test_rng::Rng;
use proptest::prelude::*;

/// Text that compresses like chat or JSON traffic.
fn json_like(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let mut v = Vec::with_capacity(n + 64);
    while v.len() < n {
        let id = rng.next() % 100_000;
        let price = rng.next() % 10_000;
        v.extend_from_slice(
            format!("{{\"id\":{id},\"symbol\":\"ABC\",\"price\":{price},\"side\":\"buy\"}},")
                .as_bytes(),
        );
    }
    v.truncate(n);
    v
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    (0..n).map(|_| rng.next() as u8).collect()
}

/// Compresses with a deflater that does not skip anything.
fn compress(d: &mut Deflater, payload: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    (d.compress(payload, &mut out) == Compressed::Yes).then_some(out)
}

fn inflate_pieces(
    inf: &mut Inflater,
    pieces: &[&[u8]],
    max: usize,
) -> Result<Vec<u8>, InflateError> {
    let mut out = Vec::new();
    inf.inflate_message(pieces, &mut out, max).map(|()| out)
}

fn split_at<'a>(z: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c % (z.len() + 1)).collect();
    cuts.sort_unstable();
    let mut v = Vec::new();
    let mut prev = 0;
    for c in cuts {
        v.push(&z[prev..c]);
        prev = c;
    }
    v.push(&z[prev..]);
    v
}

#[test]
fn sync_flush_tail_is_stripped() {
    let mut d = Deflater::new(15, 8, true);
    let payload = json_like(2000, 1);
    let mut raw = zlib_rs::Deflate::new(6, false, 15);
    let mut full = Vec::new();
    assert!(sync_flush(&mut raw, &payload, &mut full, 0));
    assert!(full.ends_with(&TAIL));
    let z = compress(&mut d, &payload).unwrap();
    assert_eq!(z, full[..full.len() - 4]);
}

#[test]
fn round_trip_every_window_and_mem_level() {
    let payload = json_like(5000, 7);
    for wb in 9..=15 {
        for mem in 1..=9 {
            for nct in [false, true] {
                let mut d = Deflater::new(wb, mem, nct);
                let mut inf = Inflater::new(nct);
                for round in 0..3 {
                    let z = compress(&mut d, &payload).unwrap();
                    let back = inflate_pieces(&mut inf, &[&z], 1 << 20).unwrap();
                    assert_eq!(back, payload, "wb {wb} mem {mem} nct {nct} round {round}");
                }
            }
        }
    }
}

#[test]
fn round_trip_one_mebibyte_text_and_incompressible() {
    let text = json_like(1 << 20, 3);
    let noise = random_bytes(1 << 20, 5);
    for (wb, mem) in [(15, 8), (12, 5), (9, 1)] {
        let mut d = Deflater::new(wb, mem, false);
        let mut inf = Inflater::new(false);
        let z = compress(&mut d, &text).unwrap();
        assert!(z.len() < text.len() / 2, "{wb}/{mem}: {}", z.len());
        let pieces = split_at(&z, &[z.len() / 3, z.len() / 2 + 17]);
        assert_eq!(inflate_pieces(&mut inf, &pieces, 1 << 20).unwrap(), text);
        // random bytes do not shrink: nothing appended, the stream reset
        let mut out = vec![9u8];
        assert_eq!(d.compress(&noise, &mut out), Compressed::No);
        assert_eq!(out, [9]);
        // and a message after it still decodes with the inflater that never saw it
        let z = compress(&mut d, &text[..4096]).unwrap();
        assert_eq!(
            inflate_pieces(&mut inf, &[&z], 1 << 20).unwrap(),
            text[..4096]
        );
    }
}

#[test]
fn context_takeover_makes_a_repeated_message_smaller() {
    let msg = json_like(600, 11);
    let mut d = Deflater::new(15, 8, false);
    let first = compress(&mut d, &msg).unwrap();
    let second = compress(&mut d, &msg).unwrap();
    assert!(
        second.len() * 4 < first.len(),
        "{} then {}",
        first.len(),
        second.len()
    );
    // the second refers to the first: a fresh inflater cannot read it alone
    let mut fresh = Inflater::new(true);
    assert_ne!(
        inflate_pieces(&mut fresh, &[&second], 1 << 20),
        Ok(msg.clone())
    );
    let mut inf = Inflater::new(false);
    assert_eq!(inflate_pieces(&mut inf, &[&first], 1 << 20).unwrap(), msg);
    assert_eq!(inflate_pieces(&mut inf, &[&second], 1 << 20).unwrap(), msg);
}

#[test]
fn no_context_takeover_messages_decode_alone() {
    let msg = json_like(600, 11);
    let mut d = Deflater::new(15, 8, true);
    let first = compress(&mut d, &msg).unwrap();
    let second = compress(&mut d, &msg).unwrap();
    assert_eq!(first, second);
    for z in [&first, &second] {
        let mut fresh = Inflater::new(true);
        assert_eq!(inflate_pieces(&mut fresh, &[z], 1 << 20).unwrap(), msg);
    }
}

#[test]
fn shared_inflater_resets_between_messages_of_different_peers() {
    let a = json_like(3000, 1);
    let b = json_like(3000, 2);
    let mut da = Deflater::new(15, 8, true);
    let mut db = Deflater::new(10, 4, true);
    let mut shared = Inflater::new(true);
    for _ in 0..3 {
        let za = compress(&mut da, &a).unwrap();
        let zb = compress(&mut db, &b).unwrap();
        assert_eq!(inflate_pieces(&mut shared, &[&za], 1 << 20).unwrap(), a);
        assert_eq!(inflate_pieces(&mut shared, &[&zb], 1 << 20).unwrap(), b);
    }
}

#[test]
fn threshold_leaves_small_messages_uncompressed() {
    let mut d = Deflater::new(15, 8, false).with_threshold(1024);
    let mut out = Vec::new();
    assert_eq!(d.compress(&json_like(1023, 1), &mut out), Compressed::No);
    assert!(out.is_empty());
    assert_eq!(d.compress(&json_like(1024, 1), &mut out), Compressed::Yes);
    assert!(!out.is_empty());
}

#[test]
fn window_8_deflater_never_compresses() {
    let mut d = Deflater::new(8, 8, false);
    assert_eq!(d.window_bits(), 8);
    let mut out = Vec::new();
    assert_eq!(d.compress(&json_like(5000, 1), &mut out), Compressed::No);
    assert!(out.is_empty());
}

#[test]
fn empty_message_is_sent_uncompressed_but_inflates() {
    let mut d = Deflater::new(15, 8, false);
    let mut out = Vec::new();
    assert_eq!(d.compress(b"", &mut out), Compressed::No);
    // RFC 7692 §7.2.3.6: an empty message may arrive as a single 0x00
    let mut inf = Inflater::new(false);
    assert_eq!(inflate_pieces(&mut inf, &[&[0x00]], 10), Ok(Vec::new()));
    assert_eq!(inflate_pieces(&mut inf, &[], 10), Ok(Vec::new()));
}

#[test]
fn rfc7692_examples_inflate() {
    // §7.2.3.1: "Hello" compressed; §7.2.3.2: the same twice, the second with takeover;
    // §7.2.3.3: as a stored block; §7.2.3.4: BFINAL set
    let mut inf = Inflater::new(false);
    let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    assert_eq!(inflate_pieces(&mut inf, &[&hello], 100).unwrap(), b"Hello");
    assert_eq!(
        inflate_pieces(&mut inf, &[&[0xf2, 0x00, 0x11, 0x00, 0x00]], 100).unwrap(),
        b"Hello"
    );
    let stored = [
        0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
    ];
    assert_eq!(inflate_pieces(&mut inf, &[&stored], 100).unwrap(), b"Hello");
    // split as the RFC splits it into fragments
    let mut inf = Inflater::new(true);
    assert_eq!(
        inflate_pieces(&mut inf, &[&hello[..3], &hello[3..]], 100).unwrap(),
        b"Hello"
    );
    let bfinal = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
    let mut inf = Inflater::new(false);
    assert_eq!(inflate_pieces(&mut inf, &[&bfinal], 100).unwrap(), b"Hello");
    // a stream that ended (BFINAL) restarts for the next message even with takeover
    assert_eq!(inflate_pieces(&mut inf, &[&hello], 100).unwrap(), b"Hello");
}

#[test]
fn bomb_of_zeros_is_too_large_with_bounded_allocation() {
    // 10 MB of zeros compress to ~10 KB; the limit is 64 KiB
    let zeros = vec![0u8; 10_000_000];
    let mut d = Deflater::new(15, 8, true);
    let z = compress(&mut d, &zeros).unwrap();
    assert!(z.len() < 20_000, "{}", z.len());
    let max = 64 << 10;
    let mut inf = Inflater::new(true);
    let mut out = Vec::new();
    assert_eq!(
        inf.inflate_message(&[&z], &mut out, max),
        Err(InflateError::TooLarge)
    );
    // one byte over tells it is over
    assert_eq!(out.len(), max + 1);
    assert!(
        out.capacity() <= max + 1 + INFLATE_STEP,
        "capacity {}",
        out.capacity()
    );
    // fed in small pieces, the verdict and the bound are the same
    let mut out = Vec::new();
    let pieces: Vec<&[u8]> = z.chunks(7).collect();
    assert_eq!(
        inf.inflate_message(&pieces, &mut out, max),
        Err(InflateError::TooLarge)
    );
    assert!(
        out.capacity() <= max + 1 + INFLATE_STEP,
        "capacity {}",
        out.capacity()
    );
    // the inflater is usable again after the refusal
    let ok = compress(
        &mut d,
        b"after the bomb, a normal message that is long enough",
    )
    .unwrap();
    assert_eq!(
        inflate_pieces(&mut inf, &[&ok], max).unwrap(),
        b"after the bomb, a normal message that is long enough"
    );
}

#[test]
fn tiny_frame_inflating_to_max_plus_one_is_too_large() {
    let max = 100_000;
    let mut d = Deflater::new(15, 8, true);
    let at_max = compress(&mut d, &vec![b'a'; max]).unwrap();
    let over = compress(&mut d, &vec![b'a'; max + 1]).unwrap();
    assert!(over.len() < 200, "{}", over.len());
    let mut inf = Inflater::new(true);
    assert_eq!(
        inflate_pieces(&mut inf, &[&at_max], max).map(|v| v.len()),
        Ok(max)
    );
    assert_eq!(
        inflate_pieces(&mut inf, &[&over], max),
        Err(InflateError::TooLarge)
    );
    // the limit counts one message, not the inflater's lifetime
    assert_eq!(
        inflate_pieces(&mut inf, &[&at_max], max).map(|v| v.len()),
        Ok(max)
    );
}

#[test]
fn output_is_appended_after_what_out_held() {
    let mut d = Deflater::new(15, 8, true);
    let msg = json_like(3000, 4);
    let z = compress(&mut d, &msg).unwrap();
    let mut inf = Inflater::new(true);
    let mut out = b"prefix".to_vec();
    inf.inflate_message(&[&z], &mut out, msg.len()).unwrap();
    assert_eq!(&out[..6], b"prefix");
    assert_eq!(&out[6..], &msg[..]);
}

#[test]
fn corrupt_streams_are_refused() {
    let mut inf = Inflater::new(true);
    // BTYPE 11 is reserved
    assert_eq!(
        inflate_pieces(&mut inf, &[&[0xff, 0xff]], 1000),
        Err(InflateError::Corrupt)
    );
    // a stored block whose NLEN is not the complement of LEN
    assert_eq!(
        inflate_pieces(&mut inf, &[&[0x00, 0x05, 0x00, 0x00, 0x00]], 1000),
        Err(InflateError::Corrupt)
    );
    // a distance before the start of the stream
    let mut d = Deflater::new(15, 8, false);
    let m = json_like(2000, 9);
    let _ = compress(&mut d, &m).unwrap();
    let refers_back = compress(&mut d, &m).unwrap();
    assert_eq!(
        inflate_pieces(&mut inf, &[&refers_back], 1 << 20),
        Err(InflateError::Corrupt)
    );
    // and a good message after each failure still inflates
    let mut d = Deflater::new(15, 8, true);
    let z = compress(&mut d, &m).unwrap();
    assert_eq!(inflate_pieces(&mut inf, &[&z], 1 << 20).unwrap(), m);
}

#[test]
fn utf8_fails_before_the_rest_is_inflated() {
    let mut msg = vec![0xff];
    msg.extend(std::iter::repeat_n(b'a', 1 << 20));
    let mut d = Deflater::new(15, 8, true);
    let z = compress(&mut d, &msg).unwrap();
    let mut inf = Inflater::new(true);
    let mut out = Vec::new();
    let mut v = StreamingUtf8::new();
    inf.begin();
    assert_eq!(
        inf.feed(&z, &mut out, 2 << 20, Some(&mut v)),
        Err(InflateError::InvalidUtf8)
    );
    assert!(out.len() <= INFLATE_STEP, "{}", out.len());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn compress_split_inflate_round_trips(
        wb in 9u8..=15, mem in 1u8..=9, takeover in any::<bool>(),
        threshold in prop::sample::select(vec![0usize, 16, 1024]),
        lens in prop::collection::vec(0usize..20_000, 1..4),
        noise in any::<bool>(), seed in 1u64.., cuts in prop::collection::vec(any::<usize>(), 0..5),
    ) {
        let mut d = Deflater::new(wb, mem, !takeover).with_threshold(threshold);
        let mut inf = Inflater::new(!takeover);
        for (i, len) in lens.into_iter().enumerate() {
            let msg = if noise { random_bytes(len, seed + i as u64) } else { json_like(len, seed + i as u64) };
            let mut z = Vec::new();
            match d.compress(&msg, &mut z) {
                Compressed::Yes => {
                    prop_assert!(len >= threshold && z.len() < len.max(1));
                    let pieces = split_at(&z, &cuts);
                    prop_assert_eq!(inflate_pieces(&mut inf, &pieces, len).unwrap(), msg);
                }
                Compressed::No => prop_assert!(z.is_empty()),
            }
        }
    }

    #[test]
    fn arbitrary_input_never_passes_the_bound(data in prop::collection::vec(any::<u8>(), 0..2000), max in 0usize..5000) {
        let mut inf = Inflater::new(true);
        let mut out = Vec::new();
        let r = inf.inflate_message(&[&data], &mut out, max);
        prop_assert!(out.len() <= max + r.is_err() as usize);
        prop_assert!(out.capacity() <= max + 1 + INFLATE_STEP);
    }
}
