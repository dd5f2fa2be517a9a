//! UTF-8 validation over `simdutf8`: whole slices, and a streaming validator that
//! carries an incomplete code point across chunk and fragment boundaries and fails as
//! soon as the bytes that prove an error have arrived.

/// The input is not UTF-8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Utf8Error;

/// Validates a whole slice (SIMD where the CPU has it).
#[inline]
pub fn validate(bytes: &[u8]) -> Result<&str, Utf8Error> {
    simdutf8::basic::from_utf8(bytes).map_err(|_| Utf8Error)
}

/// Length of the UTF-8 sequence that starts with `lead` (1-4), or 0 for a byte that
/// cannot start one.
#[inline]
const fn sequence_len(lead: u8) -> usize {
    match lead {
        0x00..=0x7f => 1,
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => 0,
    }
}

/// A streaming UTF-8 validator.
///
/// Feed it the chunks of one text message in order with [`feed`](Self::feed), then call
/// [`finish`](Self::finish) at the end of the message. It holds at most 3 bytes of an
/// incomplete code point between chunks.
#[derive(Clone, Copy, Debug, Default)]
pub struct StreamingUtf8 {
    partial: [u8; 4],
    partial_len: u8,
}

impl StreamingUtf8 {
    /// A validator at the start of a message.
    pub const fn new() -> Self {
        StreamingUtf8 {
            partial: [0; 4],
            partial_len: 0,
        }
    }

    /// Whether an incomplete code point is being carried.
    pub fn is_incomplete(&self) -> bool {
        self.partial_len != 0
    }

    /// Validates the next chunk. Errors as soon as the bytes seen so far cannot begin
    /// valid UTF-8, even if the message is unfinished.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<(), Utf8Error> {
        if self.partial_len != 0 {
            let have = self.partial_len as usize;
            let need = sequence_len(self.partial[0]);
            let take = (need - have).min(chunk.len());
            let mut tmp = self.partial;
            tmp[have..have + take].copy_from_slice(&chunk[..take]);
            let got = have + take;
            match simdutf8::compat::from_utf8(&tmp[..got]) {
                Ok(_) => {}
                Err(e) if e.error_len().is_none() && e.valid_up_to() == 0 => {
                    // still a valid prefix of one code point, and the chunk is used up
                    debug_assert_eq!(take, chunk.len());
                    self.partial = tmp;
                    self.partial_len = got as u8;
                    return Ok(());
                }
                Err(_) => return Err(Utf8Error),
            }
            self.partial_len = 0;
            chunk = &chunk[take..];
        }
        match simdutf8::compat::from_utf8(chunk) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let tail = &chunk[e.valid_up_to()..];
                debug_assert!(!tail.is_empty() && tail.len() < 4);
                self.partial[..tail.len()].copy_from_slice(tail);
                self.partial_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(Utf8Error),
        }
    }

    /// Ends the message: an incomplete code point left over is an error. Resets the
    /// validator for the next message.
    pub fn finish(&mut self) -> Result<(), Utf8Error> {
        let incomplete = self.partial_len != 0;
        self.partial_len = 0;
        if incomplete {
            Err(Utf8Error)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stream(chunks: &[&[u8]]) -> Result<(), Utf8Error> {
        let mut v = StreamingUtf8::new();
        for c in chunks {
            v.feed(c)?;
        }
        v.finish()
    }

    #[test]
    fn code_point_split_across_chunks() {
        let s = "κόσμε€𝄞".as_bytes();
        for i in 0..=s.len() {
            for j in i..=s.len() {
                assert_eq!(stream(&[&s[..i], &s[i..j], &s[j..]]), Ok(()), "{i} {j}");
            }
        }
    }

    #[test]
    fn truncated_message_fails_at_finish() {
        let mut v = StreamingUtf8::new();
        assert_eq!(v.feed(&[0xf0, 0x9d]), Ok(()));
        assert!(v.is_incomplete());
        assert_eq!(v.finish(), Err(Utf8Error));
    }

    #[test]
    fn fails_fast_on_first_bad_byte() {
        // 0xce 0xba is κ; 0xff can never appear: the error is known right there.
        let mut v = StreamingUtf8::new();
        assert_eq!(v.feed(&[0xce, 0xba]), Ok(()));
        assert_eq!(v.feed(&[0xff]), Err(Utf8Error));
        // an out-of-range 4-byte lead is known bad after its second byte
        let mut v = StreamingUtf8::new();
        assert_eq!(v.feed(&[0xf4]), Ok(()));
        assert_eq!(v.feed(&[0x90]), Err(Utf8Error));
        // a surrogate is known bad after its second byte
        let mut v = StreamingUtf8::new();
        assert_eq!(v.feed(&[0xed, 0xa0]), Err(Utf8Error));
    }

    #[test]
    fn bad_continuation_of_carried_partial() {
        let mut v = StreamingUtf8::new();
        assert_eq!(v.feed(&[0xe2, 0x82]), Ok(()));
        assert_eq!(v.feed(&[0x41, 0x41]), Err(Utf8Error));
    }

    proptest! {
        #[test]
        fn agrees_with_std_at_any_split(bytes in proptest::collection::vec(any::<u8>(), 0..64),
                                        cuts in proptest::collection::vec(0usize..64, 0..6)) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut prev = 0;
            for c in cuts { chunks.push(&bytes[prev..c]); prev = c; }
            chunks.push(&bytes[prev..]);
            let expect = std::str::from_utf8(&bytes).is_ok();
            prop_assert_eq!(stream(&chunks).is_ok(), expect);
        }

        #[test]
        fn valid_strings_pass_at_any_split(s in "\\PC{0,40}", cut in 0usize..200) {
            let b = s.as_bytes();
            let cut = cut.min(b.len());
            prop_assert_eq!(stream(&[&b[..cut], &b[cut..]]), Ok(()));
        }
    }

    #[test]
    fn fail_fast_matches_std_prefix_rule() {
        // For every prefix of random bytes: feed errors iff no extension of the prefix is
        // valid UTF-8 (std reports error_len Some for it).
        let samples: &[&[u8]] = &[
            &[0xe0, 0x80],
            &[0xe0, 0xa0],
            &[0xf0, 0x80],
            &[0xf0, 0x90, 0x80],
            &[0xc0],
            &[0xc2],
            &[0xf5],
        ];
        for s in samples {
            let std_bad = matches!(std::str::from_utf8(s), Err(e) if e.error_len().is_some());
            let mut v = StreamingUtf8::new();
            assert_eq!(v.feed(s).is_err(), std_bad, "{s:x?}");
        }
    }
}
