//! Per-connection outgoing queue: owned bytes and shared (broadcast) frames, in order.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;

/// Owned buffers recycled within one worker.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    free: Vec<Vec<u8>>,
}

/// Buffers above this capacity are freed rather than kept.
const POOL_KEEP_MAX: usize = 256 * 1024;
/// Most buffers a pool keeps.
const POOL_MAX: usize = 1024;

impl Pool {
    pub(crate) fn get(&mut self) -> Vec<u8> {
        self.free.pop().unwrap_or_default()
    }

    pub(crate) fn put(&mut self, mut v: Vec<u8>) {
        if v.capacity() != 0 && v.capacity() <= POOL_KEEP_MAX && self.free.len() < POOL_MAX {
            v.clear();
            self.free.push(v);
        }
    }
}

#[derive(Debug)]
pub(crate) enum Chunk {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(a) => a,
        }
    }
}

/// Bytes waiting to be written. Chunks before `sealed` may be in flight (io_uring):
/// they are never appended to or moved out until written.
#[derive(Debug, Default)]
pub(crate) struct OutQueue {
    chunks: VecDeque<Chunk>,
    head_off: usize,
    len: usize,
    sealed: usize,
}

/// Owned chunks grow up to this before a new one is started.
const CHUNK_MAX: usize = 64 * 1024;

impl OutQueue {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn push_bytes(&mut self, pool: &mut Pool, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.len += bytes.len();
        let n = self.chunks.len();
        if n > self.sealed {
            if let Some(Chunk::Owned(v)) = self.chunks.back_mut() {
                if v.len() + bytes.len() <= CHUNK_MAX.max(v.capacity()) {
                    v.extend_from_slice(bytes);
                    return;
                }
            }
        }
        let mut v = pool.get();
        v.extend_from_slice(bytes);
        self.chunks.push_back(Chunk::Owned(v));
    }

    pub(crate) fn push_shared(&mut self, frame: Arc<[u8]>) {
        if frame.is_empty() {
            return;
        }
        self.len += frame.len();
        self.chunks.push_back(Chunk::Shared(frame));
    }

    /// Fills `iov` with the unwritten bytes in order; returns how many slices.
    pub(crate) fn iovecs<'a>(&'a self, iov: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (i, c) in self.chunks.iter().enumerate() {
            if n == iov.len() {
                break;
            }
            let b = c.bytes();
            iov[n] = IoSlice::new(if i == 0 { &b[self.head_off..] } else { b });
            n += 1;
        }
        n
    }

    /// Marks `n` bytes written; fully written chunks go back to the pool.
    pub(crate) fn advance(&mut self, mut n: usize, pool: &mut Pool) {
        self.len -= n;
        while n > 0 {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let left = front.bytes().len() - self.head_off;
            if n < left {
                self.head_off += n;
                return;
            }
            n -= left;
            self.head_off = 0;
            self.sealed = self.sealed.saturating_sub(1);
            if let Some(Chunk::Owned(v)) = self.chunks.pop_front() {
                pool.put(v);
            }
        }
    }

    /// Seals every current chunk (they are being written by an in-flight operation).
    pub(crate) fn seal(&mut self) {
        self.sealed = self.chunks.len();
    }

    /// Drops everything queued, returning owned buffers to the pool.
    pub(crate) fn clear(&mut self, pool: &mut Pool) {
        for c in self.chunks.drain(..) {
            if let Chunk::Owned(v) = c {
                pool.put(v);
            }
        }
        self.len = 0;
        self.head_off = 0;
        self.sealed = 0;
    }

    /// Takes the chunks out (io_uring keeps in-flight ones alive until completion).
    #[allow(dead_code)] // the io_uring backend's
    pub(crate) fn take_chunks(&mut self) -> VecDeque<Chunk> {
        self.len = 0;
        self.head_off = 0;
        self.sealed = 0;
        std::mem::take(&mut self.chunks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(q: &OutQueue) -> Vec<u8> {
        let mut iov = [IoSlice::new(&[]); 16];
        let n = q.iovecs(&mut iov);
        iov[..n].iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn order_and_partial_advance() {
        let mut pool = Pool::default();
        let mut q = OutQueue::default();
        q.push_bytes(&mut pool, b"ab");
        q.push_bytes(&mut pool, b"cd");
        q.push_shared(Arc::from(&b"EF"[..]));
        q.push_bytes(&mut pool, b"gh");
        assert_eq!(q.len(), 8);
        assert_eq!(drain(&q), b"abcdEFgh");
        q.advance(3, &mut pool);
        assert_eq!(drain(&q), b"dEFgh");
        q.advance(3, &mut pool);
        assert_eq!(drain(&q), b"gh");
        q.advance(2, &mut pool);
        assert!(q.is_empty());
        assert!(!pool.free.is_empty(), "owned buffers went back to the pool");
    }

    #[test]
    fn sealed_chunks_are_not_appended_to() {
        let mut pool = Pool::default();
        let mut q = OutQueue::default();
        q.push_bytes(&mut pool, b"ab");
        q.seal();
        q.push_bytes(&mut pool, b"cd");
        assert_eq!(q.chunks.len(), 2);
        q.advance(2, &mut pool);
        q.push_bytes(&mut pool, b"ef");
        assert_eq!(q.chunks.len(), 1);
        assert_eq!(drain(&q), b"cdef");
    }
}
