//! Buffers recycled within one worker ([`Pool`]), the chunks that writes are made of
//! ([`Chunk`]: owned bytes or a shared broadcast frame) and the ordered queue of them
//! (`OutQueue`) that both a connection (what the application sent, before the
//! layer) and the driver (wire bytes, some of them in flight) keep.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;

pub use crate::batch::BatchSlice;
use crate::proto::conn::HeaderBytes;
use crate::proto::frame::MAX_HEADER_LEN;

/// Owned buffers recycled within one worker.
#[derive(Debug, Default)]
pub struct Pool {
    free: Vec<Vec<u8>>,
    /// The capacity of the buffers in `free`, in bytes.
    free_bytes: usize,
    // boxed: a queue body moves between a connection (8-byte handle) and this list
    #[allow(clippy::vec_box)]
    queues: Vec<Box<Inner>>,
    /// Queue bodies that hold one empty owned chunk each, ready for the next write: a
    /// connection with one write at a time (an echo in flight) takes one and gives it
    /// back whole, rather than a body and a buffer separately.
    #[allow(clippy::vec_box)]
    spares: Vec<Box<Inner>>,
    /// The capacity of the spares' chunks (within `POOL_BYTES_MAX` with `free_bytes`).
    spare_bytes: usize,
}

/// Most spare queue bodies a pool keeps (one per connection written in a loop
/// iteration, up to this and the pool's byte bound: 100 connections with an echo in
/// flight each are written in one iteration).
const SPARES_MAX: usize = 256;

/// Buffers above this capacity are freed rather than kept.
const POOL_KEEP_MAX: usize = 256 * 1024;
/// Most buffers a pool keeps.
const POOL_MAX: usize = 1024;
/// Most bytes a pool keeps: a loop iteration's worth of write chunks (64 of 16 KiB),
/// while a flood's queues, once written, go back to the allocator instead of staying
/// resident here (1,024 buffers of up to 256 KiB could hold 256 MiB; 4 MiB kept was
/// a third of the 100-connection flood's RSS bound).
const POOL_BYTES_MAX: usize = 1 << 20;

impl Pool {
    /// An empty buffer, with the capacity it had when it was put back.
    pub fn get(&mut self) -> Vec<u8> {
        match self.free.pop() {
            Some(v) => {
                self.free_bytes -= v.capacity();
                v
            }
            None => Vec::new(),
        }
    }

    /// Frees everything kept here (for a release after connection churn: a storm's
    /// writes leave the pool at its bounds, up to 1 MiB of buffers and 1,024 queue
    /// bodies, which steady traffic refills in a loop iteration or two).
    pub fn clear(&mut self) {
        *self = Pool::default();
    }

    /// Moves the buffers and spare queues kept here into `other` (up to its bounds).
    pub fn give_buffers(&mut self, other: &mut Pool) {
        while let Some(v) = self.free.pop() {
            other.put(v);
        }
        self.free_bytes = 0;
        while let Some(q) = self.spares.pop() {
            other.recycle_queue(q);
        }
        self.spare_bytes = 0;
    }

    fn get_queue(&mut self) -> Box<Inner> {
        self.queues.pop().unwrap_or_default()
    }

    /// A queue body for bytes about to be appended: a spare (with its empty chunk)
    /// when there is one.
    #[inline(always)]
    fn get_queue_for_bytes(&mut self) -> Box<Inner> {
        match self.spares.pop() {
            Some(q) => {
                if let Some(Chunk::Owned(v)) = q.chunks.front() {
                    self.spare_bytes -= v.capacity();
                }
                q
            }
            None => self.get_queue(),
        }
    }

    /// Takes back a queue body and what it holds: one owned chunk, emptied, stays in it
    /// as a spare (within the bounds the pool keeps buffers in); otherwise the chunks
    /// and the body go back separately.
    fn recycle_queue(&mut self, mut q: Box<Inner>) {
        if q.chunks.len() == 1 && self.spares.len() < SPARES_MAX {
            if let Some(Chunk::Owned(v)) = q.chunks.front_mut() {
                let cap = v.capacity();
                if (CHUNK_START..=POOL_KEEP_MAX).contains(&cap)
                    && self.free_bytes + self.spare_bytes + cap <= POOL_BYTES_MAX
                {
                    v.clear();
                    q.head_off = 0;
                    q.sealed = 0;
                    q.len = 0;
                    self.spare_bytes += cap;
                    self.spares.push(q);
                    return;
                }
            }
        }
        while let Some(c) = q.chunks.pop_front() {
            if let Chunk::Owned(v) = c {
                self.put(v);
            }
        }
        // put_queue resets the counts
        self.put_queue(q);
    }

    fn put_queue(&mut self, mut q: Box<Inner>) {
        q.head_off = 0;
        q.sealed = 0;
        q.len = 0;
        if self.queues.len() < POOL_MAX && q.chunks.capacity() <= 64 {
            self.queues.push(q);
        }
    }

    /// Keeps `v` for reuse (up to a bound on count and size; the rest is freed).
    pub fn put(&mut self, mut v: Vec<u8>) {
        let cap = v.capacity();
        if cap != 0
            && cap <= POOL_KEEP_MAX
            && self.free.len() < POOL_MAX
            && self.free_bytes + self.spare_bytes + cap <= POOL_BYTES_MAX
        {
            v.clear();
            self.free_bytes += cap;
            self.free.push(v);
        }
    }
}

/// Appends `head` then `payload` to `v`, which has room for both: one store for the
/// header and one copy for the payload, without `extend_from_slice`'s capacity checks
/// and its out-of-line growth path (which cost a pipelined 20 B echo about 50
/// instructions in two calls and two `memcpy`s).
#[inline(always)]
#[allow(unsafe_code)]
fn append_small(v: &mut Vec<u8>, head: [u8; 2], payload: &[u8]) {
    let len = v.len();
    let n = head.len() + payload.len();
    assert!(v.capacity() - len >= n, "append_small without room");
    // SAFETY: the assertion above: the `n` bytes from `len` are inside `v`'s
    // allocation; `payload` cannot overlap them (it is borrowed while `v` is borrowed
    // mutably); the header is a plain byte store (unaligned allowed); and every byte
    // up to `len + n` is written before the length covers it.
    unsafe {
        let p = v.as_mut_ptr().add(len);
        p.cast::<[u8; 2]>().write_unaligned(head);
        std::ptr::copy_nonoverlapping(payload.as_ptr(), p.add(2), payload.len());
        v.set_len(len + n);
    }
}

/// Bytes to write: owned, or a frame shared by every receiver of a broadcast.
#[derive(Debug)]
pub enum Chunk {
    /// Bytes owned by this write (returned to the pool once written).
    Owned(Vec<u8>),
    /// A serialized frame shared with other connections.
    Shared(Arc<[u8]>),
    /// Frames published to many connections, written once into a shared batch.
    Slice(BatchSlice),
}

impl Chunk {
    /// The bytes.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(a) => a,
            Chunk::Slice(s) => s.bytes(),
        }
    }
}

/// Bytes waiting to be written. Chunks before `sealed` may be in flight (io_uring):
/// they are never appended to or moved out until written. An empty queue holds no
/// allocation (its body goes back to the pool), so an idle connection costs 8 bytes.
#[derive(Debug, Default)]
pub(crate) struct OutQueue {
    inner: Option<Box<Inner>>,
}

#[derive(Debug, Default)]
pub(crate) struct Inner {
    chunks: VecDeque<Chunk>,
    head_off: usize,
    len: usize,
    sealed: usize,
}

/// Owned chunks grow up to this before a new one is started (a written chunk goes
/// back to the pool whole: smaller chunks keep less of a long queue resident).
const CHUNK_MAX: usize = 16 * 1024;
/// The least room a new chunk gets: a control frame or a handshake response fits, so
/// that a storm of them (every connection closing at once, a ping round, a burst of
/// handshakes) holds a few hundred bytes per connection until written, not a page; a
/// chunk that more is appended to grows to `CHUNK_GROW`, then by doubling, and goes
/// back to the pool with what it grew to, so a steady load reuses chunks of its own
/// size.
const CHUNK_START: usize = 256;
/// What a chunk grows to first when more is written into it than it has room for.
const CHUNK_GROW: usize = 4 * 1024;
/// Owned chunks under this size are copied behind the last chunk when it has room,
/// rather than queued as a chunk of their own.
const COALESCE_MAX: usize = 1024;

impl OutQueue {
    pub(crate) fn len(&self) -> usize {
        self.inner.as_ref().map_or(0, |q| q.len)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn push_bytes(&mut self, pool: &mut Pool, bytes: &[u8]) {
        self.push_pair(pool, bytes, &[]);
    }

    /// Appends `a` then `b` (a frame header and its payload) in one step.
    pub(crate) fn push_pair(&mut self, pool: &mut Pool, a: &[u8], b: &[u8]) {
        let n = a.len() + b.len();
        if n == 0 {
            return;
        }
        let v = self.tail(pool, n, 0);
        v.extend_from_slice(a);
        v.extend_from_slice(b);
    }

    /// Appends a two-byte frame header and its payload (at most 125 bytes) behind the
    /// last chunk when it may be appended to and has room (no growth, no new chunk:
    /// those go the general way).
    #[inline(always)]
    pub(crate) fn push_small(&mut self, pool: &mut Pool, head: [u8; 2], payload: &[u8]) {
        let n = 2 + payload.len();
        if let Some(q) = self.inner.as_mut() {
            if q.chunks.len() > q.sealed {
                if let Some(Chunk::Owned(v)) = q.chunks.back_mut() {
                    if v.capacity() - v.len() >= n {
                        append_small(v, head, payload);
                        q.len += n;
                        return;
                    }
                }
            }
        }
        self.push_small_new_chunk(pool, head, payload);
    }

    /// [`Self::push_small`] when there is no queue yet or no room: the general way to
    /// a chunk with room (out of line, so that the fast path stays small).
    #[inline(never)]
    fn push_small_new_chunk(&mut self, pool: &mut Pool, head: [u8; 2], payload: &[u8]) {
        let n = 2 + payload.len();
        if self.inner.is_none() {
            // the first write since the queue was last written whole (an echo one in
            // flight): a spare's empty chunk takes it as it is, without `tail`'s checks
            let mut q = pool.get_queue_for_bytes();
            if let Some(Chunk::Owned(v)) = q.chunks.back_mut() {
                if v.is_empty() && v.capacity() >= n {
                    append_small(v, head, payload);
                    q.len += n;
                    self.inner = Some(q);
                    return;
                }
            }
            self.inner = Some(q);
        }
        // `tail` leaves room for `n`
        let v = self.tail(pool, n, 0);
        append_small(v, head, payload);
    }

    /// Appends a frame whose `len` payload bytes `fill` appends (padded with zeros or
    /// cut to exactly `len`): its header goes in as a fixed-size copy of all its bytes,
    /// cut back to its length (no `memcpy` call for 2-14 bytes), then the payload is
    /// written in place, so a small echo costs one variable-length copy.
    /// With `mask`, the payload is masked with that key once written (client frames).
    #[inline(always)]
    pub(crate) fn push_frame_with(
        &mut self,
        pool: &mut Pool,
        header: &HeaderBytes,
        len: usize,
        mask: Option<[u8; 4]>,
        fill: impl FnOnce(&mut Vec<u8>),
    ) {
        let n = header.as_slice().len() + len;
        let v = self.tail(pool, n, MAX_HEADER_LEN);
        let at = v.len();
        v.extend_from_slice(header.padded());
        v.truncate(at + header.as_slice().len());
        let p = v.len();
        fill(v);
        v.resize(p + len, 0);
        if let Some(key) = mask {
            crate::proto::mask::apply_mask(&mut v[p..], key, 0);
        }
    }

    /// Appends whatever `f` appends to the vector it gets (which has room for `reserve`
    /// more bytes), counted in the queue's length.
    pub(crate) fn push_with<R>(
        &mut self,
        pool: &mut Pool,
        reserve: usize,
        f: impl FnOnce(&mut Vec<u8>) -> R,
    ) -> R {
        // `tail` counts `reserve` bytes; the count is set right once `f` is done
        let v = self.tail(pool, reserve, 0);
        let before = v.len();
        let r = f(v);
        let added = v.len() - before;
        if let Some(q) = self.inner.as_mut() {
            q.len = q.len - reserve + added;
        }
        r
    }

    /// The owned chunk that `n` more bytes go into, counted in the queue's length: the
    /// last chunk when it is not sealed and has room, else a new one from the pool with
    /// room for `n + spare`.
    #[inline(always)]
    fn tail(&mut self, pool: &mut Pool, n: usize, spare: usize) -> &mut Vec<u8> {
        let q = self.inner.get_or_insert_with(|| pool.get_queue_for_bytes());
        q.len += n;
        let open = q.chunks.len() > q.sealed;
        let fits = open
            && matches!(q.chunks.back(),
                Some(Chunk::Owned(v)) if v.len() + n <= CHUNK_MAX.max(v.capacity()));
        if !fits {
            // an empty last chunk (the spare's) grows; otherwise a new one
            let empty = open && matches!(q.chunks.back(), Some(Chunk::Owned(v)) if v.is_empty());
            if !empty {
                q.chunks.push_back(Chunk::Owned(pool.get()));
            }
        }
        let Some(Chunk::Owned(v)) = q.chunks.back_mut() else {
            unreachable!("the last chunk was just checked or pushed as owned")
        };
        let want = n + spare;
        if v.capacity() - v.len() < want {
            // a fresh buffer gets `CHUNK_START` (one control frame or handshake response
            // fits); one that more is written into jumps to `CHUNK_GROW` (a pass of
            // pipelined frames), then doubles; a recycled one keeps what it has
            let floor = if v.capacity() == 0 {
                CHUNK_START
            } else {
                CHUNK_GROW.saturating_sub(v.len())
            };
            v.reserve(want.max(floor));
        }
        v
    }

    /// Appends a chunk as it is (owned bytes are moved, not copied, unless they are
    /// small and the last unsealed chunk has room for them).
    pub(crate) fn push_chunk(&mut self, pool: &mut Pool, chunk: Chunk) {
        match chunk {
            Chunk::Shared(f) => self.push_shared(pool, f),
            Chunk::Slice(b) if b.is_empty() => {}
            Chunk::Slice(b) => {
                if !self.join_slice(&b) {
                    self.push_new_slice(pool, b);
                }
            }
            Chunk::Owned(v) if v.is_empty() => pool.put(v),
            Chunk::Owned(v) => {
                let q = self.inner.get_or_insert_with(|| pool.get_queue());
                let small = v.len() < COALESCE_MAX;
                if small
                    && q.chunks.len() > q.sealed
                    && matches!(q.chunks.back(),
                        Some(Chunk::Owned(t)) if t.capacity() - t.len() >= v.len())
                {
                    if let Some(Chunk::Owned(t)) = q.chunks.back_mut() {
                        t.extend_from_slice(&v);
                    }
                    q.len += v.len();
                    pool.put(v);
                } else {
                    q.len += v.len();
                    q.chunks.push_back(Chunk::Owned(v));
                }
            }
        }
    }

    /// Moves everything `src` holds (no sealed chunk: a connection's queue on its way
    /// to the driver) behind what this queue holds. Into an empty queue the body moves
    /// whole, chunks and all, so that once written it becomes a spare of `pool` (the
    /// driver's), which `Pool::give_buffers` hands back to `src_pool` (the worker's):
    /// an echo in flight then allocates nothing on its way out and back. Otherwise the
    /// chunks are appended one by one.
    pub(crate) fn append_queue(
        &mut self,
        pool: &mut Pool,
        src: &mut OutQueue,
        src_pool: &mut Pool,
    ) {
        let Some(q) = src.inner.as_ref() else { return };
        debug_assert!(q.sealed == 0);
        match &self.inner {
            Some(d) if d.len > 0 => src.take_all(src_pool, |_, c| self.push_chunk(pool, c)),
            _ => {
                if let Some(old) = self.inner.take() {
                    pool.recycle_queue(old);
                }
                self.inner = src.inner.take();
            }
        }
    }

    /// Moves every chunk out, in order, into `f` (the queue must hold no sealed chunk:
    /// a connection's queue before it goes to the driver). A partly written first
    /// chunk goes out as its unwritten rest.
    pub(crate) fn take_all(&mut self, pool: &mut Pool, mut f: impl FnMut(&mut Pool, Chunk)) {
        if let Some(mut q) = self.inner.take() {
            debug_assert!(q.sealed == 0);
            let off = std::mem::take(&mut q.head_off);
            for (i, c) in q.chunks.drain(..).enumerate() {
                let c = match c {
                    Chunk::Owned(mut v) if i == 0 && off > 0 => {
                        v.drain(..off);
                        Chunk::Owned(v)
                    }
                    Chunk::Shared(a) if i == 0 && off > 0 => {
                        let mut v = pool.get();
                        v.extend_from_slice(&a[off..]);
                        Chunk::Owned(v)
                    }
                    Chunk::Slice(mut b) if i == 0 && off > 0 => {
                        b.skip(off);
                        Chunk::Slice(b)
                    }
                    c => c,
                };
                f(pool, c);
            }
            q.len = 0;
            pool.put_queue(q);
        }
    }

    /// The queue's bytes when they are one whole chunk (nothing written of it yet).
    pub(crate) fn only_chunk(&self) -> Option<&[u8]> {
        let q = self.inner.as_ref()?;
        match q.chunks.len() {
            1 if q.head_off == 0 && q.sealed == 0 => q.chunks.front().map(Chunk::bytes),
            _ => None,
        }
    }

    /// Queues a frame serialized once for many receivers (a publish): one under
    /// `COALESCE_MAX` is copied behind the last chunk like any small write (a 20-byte
    /// frame costs less copied than referenced: no reference count to raise and drop,
    /// and a thousand of them go out as one buffer instead of a thousand iovecs), a
    /// larger one is queued as the shared frame itself.
    #[inline]
    pub(crate) fn push_published(&mut self, pool: &mut Pool, frame: &Arc<[u8]>) {
        if frame.len() < COALESCE_MAX {
            self.push_bytes(pool, frame);
        } else {
            self.push_shared(pool, frame.clone());
        }
    }

    /// Queues frames published to many connections, as a range of the batch they were
    /// written into: joined to the last chunk when that is the range right before it
    /// (a run of publishes to one topic is one chunk, whatever their number). A new
    /// range starts a chunk when `fresh` (the connection is within its backpressure
    /// limit) or right after a range that ends a batch the worker has since replaced;
    /// otherwise `frame` (the same bytes) is queued as usual
    /// ([`Self::push_published`]: copied when small, shared when large), so that a
    /// connection that does not drain takes no new range. (What batches pin in all is
    /// bounded by the worker, which keeps at most so many alive.)
    #[inline]
    pub(crate) fn push_slice(
        &mut self,
        pool: &mut Pool,
        slice: &BatchSlice,
        frame: &Arc<[u8]>,
        fresh: bool,
    ) {
        if self.join_slice(slice) {
            return;
        }
        let follows =
            self.open_slice().is_some_and(|last| last.ends_batch()) && slice.starts_batch();
        if (follows || fresh) && !slice.is_empty() {
            self.push_new_slice(pool, slice.clone());
            return;
        }
        self.push_published(pool, frame);
    }

    /// The last chunk when it is a batch range that may still grow (not sealed).
    #[inline]
    fn open_slice(&mut self) -> Option<&mut BatchSlice> {
        let q = self.inner.as_mut()?;
        if q.chunks.len() <= q.sealed {
            return None;
        }
        match q.chunks.back_mut() {
            Some(Chunk::Slice(last)) => Some(last),
            _ => None,
        }
    }

    /// Grows the last chunk over `slice` when that is the range right behind it.
    #[inline]
    fn join_slice(&mut self, slice: &BatchSlice) -> bool {
        if !self.open_slice().is_some_and(|last| last.join(slice)) {
            return false;
        }
        if let Some(q) = self.inner.as_mut() {
            q.len += slice.len();
        }
        true
    }

    /// Queues `slice` as a chunk of its own.
    fn push_new_slice(&mut self, pool: &mut Pool, slice: BatchSlice) {
        let q = self.inner.get_or_insert_with(|| pool.get_queue());
        q.len += slice.len();
        q.chunks.push_back(Chunk::Slice(slice));
    }

    /// Queues a shared frame as a chunk of its own (never copied).
    pub(crate) fn push_shared(&mut self, pool: &mut Pool, frame: Arc<[u8]>) {
        if frame.is_empty() {
            return;
        }
        let q = self.inner.get_or_insert_with(|| pool.get_queue());
        q.len += frame.len();
        q.chunks.push_back(Chunk::Shared(frame));
    }

    /// Fills `iov` with the unwritten bytes in order; returns how many slices.
    pub(crate) fn iovecs<'a>(&'a self, iov: &mut [IoSlice<'a>]) -> usize {
        let max = iov.len();
        self.slices(max, |i, b| iov[i] = IoSlice::new(b))
    }

    /// The unwritten bytes when they are all in one chunk (`None` with more chunks,
    /// or none).
    #[inline]
    pub(crate) fn single(&self) -> Option<&[u8]> {
        let q = self.inner.as_ref()?;
        if q.chunks.len() != 1 {
            return None;
        }
        Some(&q.chunks[0].bytes()[q.head_off..])
    }

    /// Calls `f(i, bytes)` for the first `max` pieces of unwritten bytes in order (the
    /// `i`th piece); returns how many there were.
    #[inline]
    pub(crate) fn slices<'a>(&'a self, max: usize, mut f: impl FnMut(usize, &'a [u8])) -> usize {
        let Some(q) = self.inner.as_ref() else {
            return 0;
        };
        let mut n = 0;
        for (i, c) in q.chunks.iter().enumerate() {
            if n == max {
                break;
            }
            let b = c.bytes();
            f(n, if i == 0 { &b[q.head_off..] } else { b });
            n += 1;
        }
        n
    }

    /// Marks `n` bytes written; fully written chunks go back to the pool, and so does
    /// the queue's body once it is empty (with its chunk in it, as a spare, when that
    /// was its only one).
    pub(crate) fn advance(&mut self, mut n: usize, pool: &mut Pool) {
        let Some(q) = self.inner.as_mut() else { return };
        q.len -= n;
        if q.len == 0 {
            if let Some(q) = self.inner.take() {
                pool.recycle_queue(q);
            }
            return;
        }
        // some bytes are left, so the loop never empties the queue
        while n > 0 {
            let Some(front) = q.chunks.front() else { break };
            let left = front.bytes().len() - q.head_off;
            if n < left {
                q.head_off += n;
                return;
            }
            n -= left;
            q.head_off = 0;
            q.sealed = q.sealed.saturating_sub(1);
            if let Some(Chunk::Owned(v)) = q.chunks.pop_front() {
                pool.put(v);
            }
        }
    }

    /// Seals every current chunk (they are being written by an in-flight operation).
    pub(crate) fn seal(&mut self) {
        if let Some(q) = self.inner.as_mut() {
            q.sealed = q.chunks.len();
        }
    }

    /// No chunk is in flight any more (the operation that had them sealed completed).
    pub(crate) fn unseal(&mut self) {
        if let Some(q) = self.inner.as_mut() {
            q.sealed = 0;
        }
    }

    /// Drops everything queued, returning owned buffers to the pool. Never while a
    /// write that uses the sealed chunks is in flight.
    pub(crate) fn clear(&mut self, pool: &mut Pool) {
        if let Some(q) = self.inner.take() {
            pool.recycle_queue(q);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn drain(q: &OutQueue) -> Vec<u8> {
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
        q.push_shared(&mut pool, Arc::from(&b"EF"[..]));
        q.push_bytes(&mut pool, b"gh");
        assert_eq!(q.len(), 8);
        assert_eq!(drain(&q), b"abcdEFgh");
        q.advance(3, &mut pool);
        assert_eq!(drain(&q), b"dEFgh");
        q.advance(3, &mut pool);
        assert_eq!(drain(&q), b"gh");
        q.advance(2, &mut pool);
        assert!(q.is_empty());
        assert!(q.inner.is_none(), "an empty queue holds no allocation");
        assert!(!pool.free.is_empty(), "owned buffers went back to the pool");
        assert_eq!(
            pool.spares.len(),
            1,
            "the body went back to the pool, with its last chunk as a spare"
        );
    }

    /// `clear` frees what the pool keeps: the next buffer and queue are new ones.
    #[test]
    fn clear_frees_what_the_pool_keeps() {
        let mut pool = Pool::default();
        pool.put(Vec::with_capacity(4096));
        let mut q = OutQueue::default();
        q.push_bytes(&mut pool, b"abc");
        q.advance(3, &mut pool);
        assert!(!pool.free.is_empty() || !pool.spares.is_empty());
        pool.clear();
        assert!(pool.free.is_empty() && pool.spares.is_empty() && pool.queues.is_empty());
        assert_eq!((pool.free_bytes, pool.spare_bytes), (0, 0));
        assert_eq!(pool.get().capacity(), 0, "a new buffer");
    }

    /// `single` names the unwritten bytes of a one-chunk queue, as `slices` does,
    /// and nothing for more chunks or none.
    #[test]
    fn single_is_the_one_chunk_case_of_slices() {
        let mut pool = Pool::default();
        let mut q = OutQueue::default();
        assert_eq!(q.single(), None);
        q.push_bytes(&mut pool, b"abcd");
        q.push_bytes(&mut pool, b"ef");
        assert_eq!(q.slices(8, |_, _| {}), 1, "owned bytes join one chunk");
        assert_eq!(q.single(), Some(&b"abcdef"[..]));
        q.advance(3, &mut pool);
        assert_eq!(q.single(), Some(&b"def"[..]));
        q.push_shared(&mut pool, Arc::from(&b"GH"[..]));
        assert_eq!(q.slices(8, |_, _| {}), 2);
        assert_eq!(q.single(), None);
        q.advance(3, &mut pool);
        assert_eq!(q.single(), Some(&b"GH"[..]));
        q.advance(2, &mut pool);
        assert_eq!(q.single(), None);
    }

    #[test]
    fn frames_are_header_then_payload_in_order_across_chunks() {
        use crate::proto::OpCode;
        let mut pool = Pool::default();
        let mut q = OutQueue::default();
        let mut expect = Vec::new();
        // sizes that take 2-, 4- and 10-byte headers, and enough bytes to start new
        // chunks past CHUNK_MAX
        for (i, len) in [0usize, 1, 20, 125, 126, 300, 65_535, 65_536, 70_000, 3]
            .into_iter()
            .enumerate()
        {
            let payload: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
            let h = HeaderBytes::unmasked(OpCode::Binary, true, len);
            q.push_frame_with(&mut pool, &h, len, None, |v| v.extend_from_slice(&payload));
            expect.extend_from_slice(h.as_slice());
            expect.extend_from_slice(&payload);
            if i == 4 {
                q.seal();
            }
        }
        assert_eq!(q.len(), expect.len());
        let mut got = Vec::new();
        while !q.is_empty() {
            let chunk = drain(&q);
            got.extend_from_slice(&chunk);
            q.advance(chunk.len(), &mut pool);
        }
        assert_eq!(got, expect);
    }

    #[test]
    fn sealed_chunks_are_not_appended_to() {
        let mut pool = Pool::default();
        let mut q = OutQueue::default();
        q.push_bytes(&mut pool, b"ab");
        q.seal();
        q.push_bytes(&mut pool, b"cd");
        assert_eq!(q.inner.as_ref().unwrap().chunks.len(), 2);
        q.advance(2, &mut pool);
        q.push_bytes(&mut pool, b"ef");
        assert_eq!(q.inner.as_ref().unwrap().chunks.len(), 1);
        assert_eq!(drain(&q), b"cdef");
    }

    /// Small frames (the fast path behind the last chunk, and the general one when
    /// there is no room, no queue or a sealed chunk) give exactly the bytes, lengths
    /// and chunk layout that `push_pair` gives.
    #[test]
    fn small_frames_are_the_bytes_push_pair_writes() {
        let mut pool = Pool::default();
        let (mut fast, mut slow) = (OutQueue::default(), OutQueue::default());
        let mut sizes: Vec<usize> = (0..=125).collect();
        sizes.extend([125; 400]); // more than a chunk: the fast path's room runs out
        for (i, &n) in sizes.iter().enumerate() {
            let payload: Vec<u8> = (0..n).map(|j| (i * 31 + j) as u8).collect();
            let head = [0x82, n as u8];
            fast.push_small(&mut pool, head, &payload);
            slow.push_pair(&mut pool, &head, &payload);
            assert_eq!(fast.len(), slow.len(), "after frame {i}");
            if i == 200 {
                // a write in flight: nothing may be appended behind it
                fast.seal();
                slow.seal();
            }
        }
        let chunks = |q: &OutQueue| q.inner.as_ref().map_or(0, |q| q.chunks.len());
        assert_eq!(chunks(&fast), chunks(&slow));
        assert!(chunks(&fast) > 2, "the frames span several chunks");
        assert_eq!(all(&fast), all(&slow));
        let expect: Vec<u8> = sizes
            .iter()
            .enumerate()
            .flat_map(|(i, &n)| {
                let mut f = vec![0x82, n as u8];
                f.extend((0..n).map(|j| (i * 31 + j) as u8));
                f
            })
            .collect();
        assert_eq!(all(&fast), expect);
    }

    /// A queue whose first chunk was partly written (a direct write the socket took
    /// only some of) hands over the rest of it, then the other chunks, in order; a
    /// whole single chunk is offered for a direct write, a partly written one is not.
    #[test]
    fn take_all_hands_over_the_unwritten_rest() {
        for shared in [false, true] {
            let mut pool = Pool::default();
            let mut q = OutQueue::default();
            if shared {
                q.push_shared(&mut pool, Arc::from(&b"abcdef"[..]));
            } else {
                q.push_bytes(&mut pool, b"abcdef");
            }
            assert_eq!(q.only_chunk(), Some(&b"abcdef"[..]));
            q.advance(4, &mut pool);
            assert_eq!(q.only_chunk(), None, "partly written");
            q.push_shared(&mut pool, Arc::from(&b"GH"[..]));
            let mut got = Vec::new();
            q.take_all(&mut pool, |_, c| got.push(c.bytes().to_vec()));
            assert_eq!(got, vec![b"ef".to_vec(), b"GH".to_vec()]);
            assert!(q.is_empty());
        }
    }

    /// A published frame under the coalescing size is copied behind what is queued (one
    /// buffer for many frames, the shared frame not held); a larger one is queued as
    /// the shared frame itself (held, not copied); the bytes stay in order either way.
    #[test]
    fn small_published_frames_are_copied_and_large_ones_shared() {
        let mut pool = Pool::default();
        let mut q = OutQueue::default();
        let small: Arc<[u8]> = Arc::from(&b"\x82\x03abc"[..]);
        for _ in 0..100 {
            q.push_published(&mut pool, &small);
        }
        assert_eq!(Arc::strong_count(&small), 1, "small frames are copied");
        let mut iov = [IoSlice::new(&[]); 4];
        assert_eq!(
            q.iovecs(&mut iov),
            1,
            "a hundred small frames in one buffer"
        );
        let large: Arc<[u8]> = Arc::from(vec![9u8; COALESCE_MAX]);
        q.push_published(&mut pool, &large);
        q.push_published(&mut pool, &small);
        assert_eq!(Arc::strong_count(&large), 2, "a large frame is shared");
        let mut expect = small.repeat(100);
        expect.extend_from_slice(&large);
        expect.extend_from_slice(&small);
        assert_eq!(all(&q), expect);
        assert_eq!(q.len(), expect.len());
        q.advance(q.len(), &mut pool);
        assert_eq!(
            Arc::strong_count(&large),
            1,
            "written: the queue let go of it"
        );
    }

    /// Publishes written into one batch: a queue takes a range of it and grows it
    /// over the ones right behind (a run of publishes is one chunk, nothing copied); a
    /// range that does not follow, or any range into a queue that may not take a new
    /// one (over its limit), is queued as its frame (copied when small); a new batch
    /// continues a range that ended the batch before it.
    #[test]
    fn published_ranges_of_a_batch_join_into_one_chunk_and_the_rest_is_copied() {
        use crate::batch::BatchWriter;
        let frame = |b: &[u8]| -> Arc<[u8]> { Arc::from(b) };
        let chunks = |q: &OutQueue| q.inner.as_ref().map_or(0, |q| q.chunks.len());
        let slices = |q: &OutQueue| {
            q.inner.as_ref().map_or(0, |q| {
                q.chunks
                    .iter()
                    .filter(|c| matches!(c, Chunk::Slice(_)))
                    .count()
            })
        };
        let mut pool = Pool::default();
        let mut w = BatchWriter::new(64);
        let mut q = OutQueue::default();
        let mut expect = Vec::new();
        for i in 0..10u8 {
            let s = w.append(&[0x82, 1, i]);
            // fresh only before the first: the rest join
            q.push_slice(&mut pool, &s, &frame(s.bytes()), i == 0);
            expect.extend_from_slice(&[0x82, 1, i]);
        }
        assert_eq!((chunks(&q), slices(&q)), (1, 1), "ten publishes, one range");
        assert_eq!(all(&q), expect);
        assert_eq!(q.len(), 30);
        // a publish that skips this queue: the next one does not follow its range
        let _gap = w.append(b"gap");
        let s = w.append(b"late");
        q.push_slice(&mut pool, &s, &frame(b"late"), false);
        expect.extend_from_slice(b"late");
        assert_eq!((chunks(&q), slices(&q)), (2, 1), "copied behind the range");
        // a write in flight: the range is sealed, what follows is copied
        q.seal();
        let s = w.append(b"sealed");
        q.push_slice(&mut pool, &s, &frame(b"sealed"), false);
        expect.extend_from_slice(b"sealed");
        assert_eq!(slices(&q), 1);
        assert_eq!(all(&q), expect);
        assert_eq!(q.len(), expect.len());
        q.advance(q.len(), &mut pool);
        assert!(q.is_empty());

        // a range that ends its batch is continued by the start of the next batch
        let mut w = BatchWriter::new(8);
        let mut q = OutQueue::default();
        let a = w.append(b"12345");
        q.push_slice(&mut pool, &a, &frame(b"12345"), true);
        drop(w); // replaced: "678" would not have fitted
        let mut w2 = BatchWriter::new(8);
        let b = w2.append(b"9abc");
        q.push_slice(&mut pool, &b, &frame(b"9abc"), false);
        assert_eq!((chunks(&q), slices(&q)), (2, 2));
        assert_eq!(all(&q), b"123459abc");
        // a partly written range hands over its rest
        q.advance(3, &mut pool);
        let mut got = Vec::new();
        q.take_all(&mut pool, |_, c| got.push(c.bytes().to_vec()));
        assert_eq!(got, vec![b"45".to_vec(), b"9abc".to_vec()]);

        // a queue that may not take a new range copies even the first one
        let mut w = BatchWriter::new(4096);
        let mut q = OutQueue::default();
        q.push_bytes(&mut pool, b"echo");
        let s = w.append(b"pub");
        q.push_slice(&mut pool, &s, &frame(b"pub"), false);
        assert_eq!((chunks(&q), slices(&q)), (1, 0));
        assert_eq!(all(&q), b"echopub");
        // ... and shares a large frame instead of copying it
        let big = frame(&[5u8; COALESCE_MAX]);
        let s = w.append(&big);
        q.push_slice(&mut pool, &s, &big, false);
        assert_eq!((chunks(&q), slices(&q)), (2, 0));
        assert_eq!(Arc::strong_count(&big), 2, "queued shared, not copied");
        assert_eq!(q.len(), 7 + COALESCE_MAX);
    }

    /// The driver's queue takes ranges as chunks and joins those that follow each
    /// other (a connection's queue moved behind one that holds the range before).
    #[test]
    fn push_chunk_joins_ranges_that_follow() {
        use crate::batch::BatchWriter;
        let mut pool = Pool::default();
        let mut w = BatchWriter::new(64);
        let mut q = OutQueue::default();
        q.push_chunk(&mut pool, Chunk::Slice(w.append(b"ab")));
        q.push_chunk(&mut pool, Chunk::Slice(w.append(b"cd")));
        assert_eq!(q.inner.as_ref().unwrap().chunks.len(), 1);
        q.seal();
        q.push_chunk(&mut pool, Chunk::Slice(w.append(b"ef")));
        assert_eq!(
            q.inner.as_ref().unwrap().chunks.len(),
            2,
            "not into a sealed one"
        );
        let empty = w.append(b"");
        q.push_chunk(&mut pool, Chunk::Slice(empty));
        assert_eq!(q.inner.as_ref().unwrap().chunks.len(), 2);
        assert_eq!(all(&q), b"abcdef");
        assert_eq!(q.len(), 6);
    }

    /// Every byte queued, across as many chunks as it takes.
    fn all(q: &OutQueue) -> Vec<u8> {
        let mut iov = [IoSlice::new(&[]); 64];
        let n = q.iovecs(&mut iov);
        assert!(n < iov.len(), "more chunks than this test reads");
        iov[..n].iter().flat_map(|s| s.iter().copied()).collect()
    }
}

#[cfg(test)]
mod bound_tests {
    use super::tests::drain;
    use super::*;

    #[test]
    fn the_pool_keeps_at_most_its_byte_bound() {
        let mut pool = Pool::default();
        for _ in 0..100 {
            pool.put(Vec::with_capacity(64 * 1024));
        }
        let kept: usize = pool.free.iter().map(Vec::capacity).sum();
        assert_eq!(kept, pool.free_bytes);
        assert!(kept <= POOL_BYTES_MAX, "{kept} bytes kept");
        assert!(kept + 64 * 1024 > POOL_BYTES_MAX, "the bound is used");
        // taking a buffer makes room for one more
        let v = pool.get();
        assert_eq!(v.capacity(), 64 * 1024);
        assert_eq!(pool.free_bytes, kept - 64 * 1024);
        pool.put(v);
        assert_eq!(pool.free_bytes, kept);
        // too large to keep at all
        pool.put(Vec::with_capacity(POOL_KEEP_MAX + 1));
        assert_eq!(pool.free_bytes, kept);
        // handing over respects the receiver's bound
        let mut other = Pool::default();
        other.put(Vec::with_capacity(POOL_BYTES_MAX - 64 * 1024));
        pool.give_buffers(&mut other);
        assert_eq!(pool.free_bytes, 0);
        assert!(pool.free.is_empty());
        assert_eq!(other.free_bytes, POOL_BYTES_MAX);
    }

    #[test]
    fn a_queue_handed_to_the_driver_comes_back_to_the_worker_as_a_spare() {
        // the worker's pool and a connection's queue; the driver's pool and its
        // socket's queue (io_uring: written by a send that completes later)
        let (mut wpool, mut dpool) = (Pool::default(), Pool::default());
        let (mut out, mut wire) = (OutQueue::default(), OutQueue::default());
        let mut first = None;
        for round in 0..3u8 {
            out.push_bytes(&mut wpool, &[round; 1028]);
            let at = drain_ptr(&out);
            // a later round writes into the buffer the first one used: nothing allocated
            assert_eq!(*first.get_or_insert(at), at, "round {round}");
            // into an empty socket queue the body moves whole
            wire.append_queue(&mut dpool, &mut out, &mut wpool);
            assert!(out.inner.is_none());
            assert_eq!(drain_ptr(&wire), at);
            wire.seal();
            wire.advance(1028, &mut dpool);
            assert!(wire.inner.is_none());
            assert_eq!(dpool.spares.len(), 1);
            // the driver's reclaim
            dpool.give_buffers(&mut wpool);
            assert!(dpool.spares.is_empty() && dpool.spare_bytes == 0);
            assert_eq!(wpool.spares.len(), 1);
            assert_eq!(wpool.spare_bytes, 1028.max(CHUNK_START));
        }
        // behind bytes still queued for the socket, the chunks are appended in order
        wire.push_bytes(&mut dpool, b"ab");
        wire.seal();
        out.push_bytes(&mut wpool, b"cd");
        out.advance(1, &mut wpool);
        wire.append_queue(&mut dpool, &mut out, &mut wpool);
        assert!(out.inner.is_none());
        assert_eq!(wire.len(), 3);
        let mut iov = [IoSlice::new(&[]); 4];
        let n = wire.iovecs(&mut iov);
        let bytes: Vec<u8> = iov[..n].iter().flat_map(|s| s.iter().copied()).collect();
        assert_eq!(bytes, b"abd");
        // an empty queue moves nothing
        let before = wire.len();
        wire.append_queue(&mut dpool, &mut out, &mut wpool);
        assert_eq!(wire.len(), before);
        // spares handed over respect the receiver's bound: the rest go back in pieces
        let mut full = Pool::default();
        for _ in 0..POOL_BYTES_MAX / POOL_KEEP_MAX {
            full.put(Vec::with_capacity(POOL_KEEP_MAX));
        }
        assert_eq!(full.free_bytes, POOL_BYTES_MAX);
        wire.clear(&mut dpool);
        let mut q = OutQueue::default();
        q.push_bytes(&mut dpool, b"x");
        q.clear(&mut dpool);
        assert!(!dpool.spares.is_empty());
        dpool.give_buffers(&mut full);
        assert!(full.spares.is_empty() && full.spare_bytes == 0);
        assert!(dpool.spares.is_empty() && dpool.spare_bytes == 0);
        assert_eq!(full.free_bytes, POOL_BYTES_MAX);
    }

    /// The capacity of the queue's last chunk.
    fn last_capacity(q: &OutQueue) -> usize {
        match q.inner.as_ref().and_then(|q| q.chunks.back()) {
            Some(Chunk::Owned(v)) => v.capacity(),
            _ => 0,
        }
    }

    /// A control frame or a handshake response on a fresh queue takes a small chunk (a
    /// thousand connections closing at once hold a few hundred bytes each until
    /// written, not a page); more written into it jumps to `CHUNK_GROW`, then doubles;
    /// the grown chunk is what the pool hands out next.
    #[test]
    fn fresh_chunks_start_small_and_grow_by_a_page_then_doubling() {
        let mut pool = Pool::default();
        let mut queues: Vec<OutQueue> = (0..1000).map(|_| OutQueue::default()).collect();
        for q in &mut queues {
            q.push_small(&mut pool, [0x88, 2], &[0x03, 0xe8]);
            q.push_bytes(&mut pool, &[0x8a, 0]);
        }
        let held: usize = queues.iter().map(last_capacity).sum();
        assert_eq!(held, 1000 * CHUNK_START);
        assert!(held <= 1000 * 256, "{held} bytes for 1,000 close replies");
        let mut q = OutQueue::default();
        q.push_bytes(&mut pool, &[7; 200]);
        assert_eq!(last_capacity(&q), CHUNK_START);
        q.push_bytes(&mut pool, &[8; 100]);
        assert_eq!(
            last_capacity(&q),
            CHUNK_GROW,
            "past its room a chunk jumps to a page"
        );
        for _ in 0..40 {
            q.push_small(&mut pool, [0x82, 125], &[9; 125]);
        }
        assert_eq!(last_capacity(&q), 2 * CHUNK_GROW, "then doubles");
        let mut want = vec![7; 200];
        want.extend_from_slice(&[8; 100]);
        for _ in 0..40 {
            want.extend_from_slice(&[0x82, 125]);
            want.extend_from_slice(&[9; 125]);
        }
        assert_eq!(drain(&q), want);
        let n = q.len();
        q.advance(n, &mut pool);
        let mut next = OutQueue::default();
        next.push_small(&mut pool, [0x81, 1], b"x");
        assert_eq!(
            last_capacity(&next),
            2 * CHUNK_GROW,
            "the grown chunk is reused"
        );
        for q in &mut queues {
            q.clear(&mut pool);
        }
    }

    #[test]
    fn a_written_one_chunk_queue_comes_back_whole_as_a_spare_and_is_reused() {
        let mut pool = Pool::default();
        let mut q = OutQueue::default();
        q.push_small(&mut pool, [0x81, 2], b"hi");
        let chunk_at = drain_ptr(&q);
        q.clear(&mut pool);
        assert!(q.inner.is_none(), "an empty queue holds no allocation");
        assert_eq!(
            pool.spares.len(),
            1,
            "the body and its chunk are kept together"
        );
        assert!(pool.free.is_empty() && pool.queues.is_empty());
        assert_eq!(pool.spare_bytes, CHUNK_START);
        // the next write takes the spare: the same buffer, nothing before the bytes
        q.push_small(&mut pool, [0x82, 3], b"abc");
        assert_eq!(drain_ptr(&q), chunk_at);
        assert_eq!(drain(&q), b"\x82\x03abc");
        assert!(pool.spares.is_empty());
        assert_eq!(pool.spare_bytes, 0);
        // written in two steps: the last one gives it back as a spare again
        q.advance(2, &mut pool);
        assert_eq!(drain(&q), b"abc");
        q.advance(3, &mut pool);
        assert!(q.inner.is_none());
        assert_eq!(pool.spares.len(), 1);
        // a write larger than a chunk grows the spare's empty chunk: no empty chunk
        // is left before the bytes
        let big = vec![7u8; CHUNK_MAX + 100];
        q.push_bytes(&mut pool, &big);
        let mut iov = [IoSlice::new(&[]); 4];
        assert_eq!(q.iovecs(&mut iov), 1);
        assert_eq!(q.only_chunk(), Some(&big[..]));
        // a queue of two chunks goes back in pieces
        let mut r = OutQueue::default();
        r.push_bytes(&mut pool, b"x");
        r.push_shared(&mut pool, Arc::from(&b"y"[..]));
        r.clear(&mut pool);
        assert!(pool.spares.is_empty());
        assert_eq!(pool.free.len(), 1);
        // the grown chunk is kept as a spare too (within the byte bound)
        q.clear(&mut pool);
        assert_eq!(pool.spares.len(), 1);
        assert_eq!(pool.queues.len(), 1);
        assert!(pool.spare_bytes > CHUNK_MAX);
        q.push_small(&mut pool, [0x81, 1], b"z");
        assert!(pool.spares.is_empty() && pool.spare_bytes == 0);
        q.clear(&mut pool);
        // one grown too large to keep at all is freed (its body is kept)
        let free = pool.free.len();
        q.push_bytes(&mut pool, &vec![1u8; POOL_KEEP_MAX + 1]);
        q.clear(&mut pool);
        assert!(pool.spares.is_empty() && pool.spare_bytes == 0);
        assert_eq!(pool.free.len(), free);
        assert_eq!(pool.queues.len(), 2);
        // several connections written in one iteration: a spare each, up to the bound
        let mut qs: Vec<OutQueue> = (0..SPARES_MAX + 3).map(|_| OutQueue::default()).collect();
        for q in &mut qs {
            q.push_small(&mut pool, [0x81, 1], b"z");
        }
        for q in &mut qs {
            q.clear(&mut pool);
        }
        assert_eq!(pool.spares.len(), SPARES_MAX);
        assert!(pool.free_bytes + pool.spare_bytes <= POOL_BYTES_MAX);
    }

    fn drain_ptr(q: &OutQueue) -> *const u8 {
        let mut iov = [IoSlice::new(&[]); 16];
        assert!(q.iovecs(&mut iov) >= 1);
        iov[0].as_ptr()
    }
}
