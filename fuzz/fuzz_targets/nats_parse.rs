//! The NATS server-protocol parser over any input, fed whole and cut in two at a point
//! taken from the first byte: never more consumed than given, needing more is never an
//! error, and the cut changes nothing (the same operations, the same error). Subjects
//! that decode to a topic encode back to the same subject.
#![no_main]

use libfuzzer_sys::fuzz_target;
use soliton::cluster::nats::{parse, ParseError, ServerOp};
use soliton::cluster::subject::{topic_of, write_subject};
use soliton::proto::Status;

/// Every operation in `input` (owned), and the error that stopped the parse, if any;
/// `cut` bytes are given first, then the rest, as a reader would.
fn run(input: &[u8], cut: usize) -> (Vec<String>, Option<ParseError>) {
    let mut ops = Vec::new();
    let mut buf = Vec::new();
    for chunk in [&input[..cut], &input[cut..]] {
        buf.extend_from_slice(chunk);
        loop {
            match parse(&buf, 4096) {
                Ok(Status::Complete((op, n))) => {
                    assert!(n > 0 && n <= buf.len(), "consumed {n} of {}", buf.len());
                    if let ServerOp::Msg { subject, .. } = op {
                        if let Some(topic) = topic_of("p", subject) {
                            let mut again = Vec::new();
                            write_subject(&mut again, "p", &topic);
                            assert_eq!(again, subject);
                        }
                    }
                    ops.push(format!("{op:?}"));
                    buf.drain(..n);
                }
                Ok(Status::Partial) => break,
                Err(e) => return (ops, Some(e)),
            }
        }
    }
    (ops, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&c, input)) = data.split_first() else {
        return;
    };
    let cut = (c as usize * 7).min(input.len());
    assert_eq!(run(input, cut), run(input, 0));
});
