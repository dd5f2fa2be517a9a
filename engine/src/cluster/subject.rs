//! Topics to NATS subjects and back: `{prefix}.{escaped topic}`.
//!
//! A topic is any string; a subject token may not hold `.` (the token separator),
//! `*` or `>` (wildcards) or whitespace, and must not be empty. So a topic becomes
//! exactly one token: every byte outside `!`..=`~`, and `.`, `*`, `>` and the escape
//! character `%` itself, is written `%XX` (upper-case hex); the empty topic is a lone
//! `%` (never the start of an escape otherwise). The mapping is reversible, and a
//! subscription to `{prefix}.>` sees every topic.

use std::fmt;

/// The longest subject the bridge publishes or subscribes to. A server refuses a
/// control line over its `max_control_line` (4 KiB by default) by closing the
/// connection, so longer topics stay local (counted as too large).
pub const MAX_SUBJECT: usize = 1024;

/// Why a subject prefix was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefixError(pub String);

impl fmt::Display for PrefixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PrefixError {}

/// Checks a subject prefix: one or more `.`-separated tokens, each non-empty, of
/// printable ASCII other than the wildcards `*` and `>`; at most 256 bytes.
pub fn validate_prefix(prefix: &str) -> Result<(), PrefixError> {
    let bad = |why: &str| Err(PrefixError(format!("subject prefix {prefix:?}: {why}")));
    if prefix.is_empty() {
        return bad("empty");
    }
    if prefix.len() > 256 {
        return bad("longer than 256 bytes");
    }
    for token in prefix.split('.') {
        if token.is_empty() {
            return bad("an empty token (a leading, trailing or doubled '.')");
        }
        if let Some(c) = token.chars().find(|c| !c.is_ascii_graphic()) {
            return bad(&format!(
                "{c:?} is not allowed (printable ASCII, no whitespace)"
            ));
        }
        if token.contains(['*', '>']) {
            return bad("wildcards ('*', '>') are not allowed");
        }
    }
    Ok(())
}

fn plain(b: u8) -> bool {
    b.is_ascii_graphic() && !matches!(b, b'.' | b'*' | b'>' | b'%')
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Writes `{prefix}.{escaped topic}` into `out` (cleared first).
pub fn write_subject(out: &mut Vec<u8>, prefix: &str, topic: &str) {
    out.clear();
    out.reserve(prefix.len() + 1 + topic.len());
    out.extend_from_slice(prefix.as_bytes());
    out.push(b'.');
    if topic.is_empty() {
        out.push(b'%');
        return;
    }
    for &b in topic.as_bytes() {
        if plain(b) {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

/// The topic of a subject under `prefix`, if it is one [`write_subject`] makes.
pub fn topic_of(prefix: &str, subject: &[u8]) -> Option<String> {
    let token = subject
        .strip_prefix(prefix.as_bytes())?
        .strip_prefix(b".")?;
    if token == b"%" {
        return Some(String::new());
    }
    if token.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(token.len());
    let mut i = 0;
    while i < token.len() {
        let b = token[i];
        if b == b'%' {
            let hi = hex(*token.get(i + 1)?)?;
            let lo = hex(*token.get(i + 2)?)?;
            let v = hi << 4 | lo;
            if plain(v) {
                return None; // not what write_subject makes: one subject per topic
            }
            out.push(v);
            i += 3;
        } else if plain(b) {
            out.push(b);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(prefix: &str, topic: &str) -> String {
        let mut v = Vec::new();
        write_subject(&mut v, prefix, topic);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn topics_become_one_token_and_come_back() {
        for (topic, want) in [
            ("all", "p.all"),
            ("", "p.%"),
            ("%", "p.%25"),
            ("a.b", "p.a%2Eb"),
            ("x*y>z", "p.x%2Ay%3Ez"),
            ("sp ace\ttab\r\n", "p.sp%20ace%09tab%0D%0A"),
            ("é", "p.%C3%A9"),
            ("\0", "p.%00"),
        ] {
            assert_eq!(subject("p", topic), want);
            assert_eq!(topic_of("p", want.as_bytes()).as_deref(), Some(topic));
        }
    }

    #[test]
    fn foreign_subjects_are_not_topics() {
        for s in [
            "q.all", "p", "p.", "pall", "p.a.b", "p.%2", "p.%zz", "p.%41", "p.%2e", "p.%FF",
            "p.a b",
        ] {
            assert_eq!(topic_of("p", s.as_bytes()), None, "{s}");
        }
        assert_eq!(topic_of("a.b", b"a.b.x").as_deref(), Some("x"));
    }

    #[test]
    fn prefixes_are_checked() {
        for ok in ["soliton", "a.b.c", "app-1_x", "$X"] {
            assert_eq!(validate_prefix(ok), Ok(()), "{ok}");
        }
        for bad in [
            "", ".a", "a.", "a..b", "a b", "a.*", "a.>", "x*", "é", "a\n",
        ] {
            assert!(validate_prefix(bad).is_err(), "{bad:?}");
        }
        assert!(validate_prefix(&"a".repeat(257)).is_err());
    }

    #[test]
    fn every_string_round_trips() {
        // every byte value in every position of short strings
        for a in 0..=255u8 {
            for s in [vec![a], vec![b'x', a], vec![a, a, b'y']] {
                let Ok(topic) = String::from_utf8(s) else {
                    continue;
                };
                let sub = subject("n.s", &topic);
                assert!(!sub[4..].contains(['.', '*', '>', ' ']), "{sub}");
                assert_eq!(topic_of("n.s", sub.as_bytes()), Some(topic));
            }
        }
    }
}
