//! Connection ids.

/// A connection's id: unique within a process run (a 48-bit sequence per worker, which
/// does not wrap in practice), usable from any thread through a server's or client's
/// handle. The engine also keeps the connection's slot index in it, to find it without
/// a lookup table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    /// worker (16 bits) | sequence (48 bits)
    key: u64,
    idx: u32,
}

impl ConnId {
    pub(crate) fn new(worker: usize, seq: u64, idx: usize) -> Self {
        ConnId {
            key: (worker as u64) << 48 | (seq & SEQ_MASK),
            idx: idx as u32,
        }
    }

    pub(crate) fn worker(self) -> usize {
        (self.key >> 48) as usize
    }

    pub(crate) fn idx(self) -> usize {
        self.idx as usize
    }

    pub(crate) fn seq(self) -> u64 {
        self.key & SEQ_MASK
    }

    /// The worker the connection runs on.
    pub fn worker_index(self) -> usize {
        self.worker()
    }

    /// The connection's slot on its worker: reused by later connections, so not an
    /// identity (the id as a whole is).
    pub fn slot(self) -> usize {
        self.idx()
    }

    /// The id as one number (worker and sequence), unique within the run: for logs and
    /// maps.
    pub fn get(self) -> u64 {
        self.key
    }
}

pub(crate) const SEQ_MASK: u64 = (1 << 48) - 1;

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.worker(), self.seq())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip_and_differ_by_sequence() {
        let a = ConnId::new(3, 70_000, 5);
        assert_eq!((a.worker(), a.seq(), a.idx()), (3, 70_000, 5));
        // the same slot reused 65,536 times later is another id
        let b = ConnId::new(3, 70_000 + 65_536, 5);
        assert_ne!(a, b);
        assert_ne!(a.get(), b.get());
    }
}
