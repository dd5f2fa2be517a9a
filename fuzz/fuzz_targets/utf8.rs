//! `StreamingUtf8` fed in chunks cut at points taken from the first bytes: its final
//! verdict is std's, and it fails exactly when the bytes fed so far prove an error
//! (std finds an invalid sequence, not just a truncated one, in that prefix).
#![no_main]

use libfuzzer_sys::fuzz_target;
use soliton::proto::utf8::StreamingUtf8;

fuzz_target!(|data: &[u8]| {
    let [a, b, c, bytes @ ..] = data else {
        return;
    };
    let mut cuts = [*a, *b, *c].map(|x| (x as usize).min(bytes.len()));
    cuts.sort_unstable();
    let mut v = StreamingUtf8::new();
    let mut prev = 0;
    for cut in cuts.into_iter().chain([bytes.len()]) {
        let fed = v.feed(&bytes[prev..cut]);
        prev = cut;
        let proven_bad =
            matches!(std::str::from_utf8(&bytes[..cut]), Err(e) if e.error_len().is_some());
        assert_eq!(fed.is_err(), proven_bad, "fed through {cut}");
        if fed.is_err() {
            return;
        }
    }
    assert_eq!(v.finish().is_ok(), std::str::from_utf8(bytes).is_ok());
});
