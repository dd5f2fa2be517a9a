//! Append-only byte buffers shared by many queues: the frames a worker publishes are
//! written once into a batch, and each subscriber's queue refers to its range of it,
//! so a small message sent to a thousand receivers is one copy, not a thousand.
//!
//! A [`BatchWriter`] is the only handle that writes; every [`BatchSlice`] covers bytes
//! the writer wrote before it made the slice and never writes again, so slices are
//! read (by the kernel too, while a send is in flight) as the writer appends behind
//! them. The buffer is freed with the last handle.
#![allow(unsafe_code)]

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};

/// The allocation behind a batch.
struct Buf {
    ptr: NonNull<u8>,
    cap: usize,
    /// The length it was closed at (its writer dropped); `u32::MAX` while open.
    closed: AtomicU32,
}

// SAFETY: `Buf` owns its allocation and has no interior state besides it. Its bytes are
// written only through the one `BatchWriter`, at offsets at or past the writer's length,
// and read only through `BatchSlice`s, whose ranges end at or before the length the
// writer had when it made them: a byte is never read and written concurrently. A slice
// that moves to another thread carries the happens-before of that move.
unsafe impl Send for Buf {}
// SAFETY: as above; shared access (`&Buf`) only reads the written prefix.
unsafe impl Sync for Buf {}

impl Drop for Buf {
    fn drop(&mut self) {
        // SAFETY: `ptr` was allocated in `BatchWriter::new` with this layout (`cap` >
        // 0 bytes, alignment 1) and is freed once, here, with the last handle.
        unsafe { dealloc(self.ptr.as_ptr(), Layout::array::<u8>(self.cap).unwrap()) };
    }
}

/// The writing end of a batch: appends bytes and hands out slices of what it wrote.
pub(crate) struct BatchWriter {
    buf: Arc<Buf>,
    len: usize,
}

impl BatchWriter {
    /// A batch with room for `cap` bytes (at least 1, at most `u32::MAX`).
    pub(crate) fn new(cap: usize) -> BatchWriter {
        let cap = cap.clamp(1, u32::MAX as usize);
        let layout = Layout::array::<u8>(cap).expect("batch size");
        // SAFETY: the layout is not zero-sized (`cap` >= 1).
        let ptr = unsafe { alloc(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            handle_alloc_error(layout)
        };
        BatchWriter {
            buf: Arc::new(Buf {
                ptr,
                cap,
                closed: AtomicU32::new(u32::MAX),
            }),
            len: 0,
        }
    }

    /// A handle that tells whether the batch is still in use once this writer is gone
    /// (it does not keep the batch alive).
    pub(crate) fn watch(&self) -> BatchRef {
        BatchRef(Arc::downgrade(&self.buf))
    }

    /// Bytes that still fit.
    pub(crate) fn room(&self) -> usize {
        self.buf.cap - self.len
    }

    /// Appends `bytes` (at most [`Self::room`]) and returns the slice that covers them.
    pub(crate) fn append(&mut self, bytes: &[u8]) -> BatchSlice {
        assert!(bytes.len() <= self.room(), "batch overflow");
        // SAFETY: `len + bytes.len() <= cap`, so the destination lies inside the
        // allocation; no slice covers bytes at or past `len` (slices end at or before
        // the length when they were made), so nothing reads them; `bytes` cannot point
        // into them, as no reference to them exists.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.buf.ptr.as_ptr().add(self.len),
                bytes.len(),
            );
        }
        let start = self.len as u32;
        self.len += bytes.len();
        BatchSlice {
            buf: Arc::clone(&self.buf),
            start,
            end: self.len as u32,
        }
    }
}

impl Drop for BatchWriter {
    fn drop(&mut self) {
        // `len` fits: `cap` is at most `u32::MAX`
        self.buf.closed.store(self.len as u32, Ordering::Relaxed);
    }
}

impl fmt::Debug for BatchWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchWriter")
            .field("len", &self.len)
            .field("cap", &self.buf.cap)
            .finish()
    }
}

/// Tells whether a batch is still alive (a writer or a slice holds it), without
/// holding it: the last slice written frees it at once.
pub(crate) struct BatchRef(Weak<Buf>);

impl BatchRef {
    /// Whether a writer or a slice still holds the batch.
    pub(crate) fn in_use(&self) -> bool {
        self.0.strong_count() > 0
    }
}

impl fmt::Debug for BatchRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchRef")
            .field("in_use", &self.in_use())
            .finish()
    }
}

/// Bytes of a batch, shared: a range its writer has written and never writes again.
#[derive(Clone)]
pub struct BatchSlice {
    buf: Arc<Buf>,
    start: u32,
    end: u32,
}

impl BatchSlice {
    /// The bytes.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `start..end` lies inside the allocation (the writer checked it
        // against `cap`), was written before this slice (or the one it was extended
        // over) was made, and is never written again; the allocation lives as long as
        // `buf`, which this borrow keeps.
        unsafe {
            std::slice::from_raw_parts(
                self.buf.ptr.as_ptr().add(self.start as usize),
                (self.end - self.start) as usize,
            )
        }
    }

    /// Bytes in the slice.
    #[inline]
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    /// Whether the slice is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Grows this slice over `next` when `next` is of the same batch and starts where
    /// this one ends (both ranges are written, so the joined one is); `false` leaves
    /// both as they are.
    #[inline]
    pub fn join(&mut self, next: &BatchSlice) -> bool {
        if self.end == next.start && Arc::ptr_eq(&self.buf, &next.buf) {
            self.end = next.end;
            true
        } else {
            false
        }
    }

    /// Whether the slice starts its batch.
    #[inline]
    pub fn starts_batch(&self) -> bool {
        self.start == 0
    }

    /// Whether the slice runs to the end of its batch, which takes no more bytes (its
    /// writer is gone: the batch was full, or replaced).
    #[inline]
    pub fn ends_batch(&self) -> bool {
        self.end == self.buf.closed.load(Ordering::Relaxed)
    }

    /// Drops the first `n` bytes (at most all of them).
    pub fn skip(&mut self, n: usize) {
        self.start += n.min(self.len()) as u32;
    }
}

impl fmt::Debug for BatchSlice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchSlice")
            .field("start", &self.start)
            .field("end", &self.end)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_read_what_was_written_while_the_writer_appends_behind_them() {
        let mut w = BatchWriter::new(64);
        let a = w.append(b"hello ");
        let b = w.append(b"world");
        assert_eq!(a.bytes(), b"hello ");
        assert_eq!(b.bytes(), b"world");
        assert_eq!(w.room(), 64 - 11);
        let c = w.append(&[7u8; 53]);
        assert_eq!(w.room(), 0);
        // earlier slices are unchanged by later writes
        assert_eq!(a.bytes(), b"hello ");
        assert_eq!(c.bytes(), &[7u8; 53][..]);
    }

    #[test]
    fn a_slice_joins_only_the_slice_right_behind_it_in_its_own_batch() {
        let mut w = BatchWriter::new(32);
        let mut a = w.append(b"ab");
        let b = w.append(b"cd");
        let c = w.append(b"ef");
        let mut a2 = a.clone();
        assert!(!a2.join(&c), "a gap");
        assert_eq!(a2.bytes(), b"ab");
        assert!(a.join(&b));
        assert_eq!(a.bytes(), b"abcd");
        assert!(a.join(&c));
        assert_eq!(a.bytes(), b"abcdef");
        let mut other = BatchWriter::new(32);
        let _ = other.append(&[0; 6]);
        let d = other.append(b"gh");
        assert!(!a.join(&d), "another batch, at the same offset");
        assert_eq!(a.bytes(), b"abcdef");
    }

    #[test]
    fn a_slice_ends_its_batch_once_the_writer_is_gone() {
        let mut w = BatchWriter::new(16);
        let a = w.append(b"abc");
        let b = w.append(b"de");
        assert!(a.starts_batch() && !b.starts_batch());
        assert!(!b.ends_batch(), "the writer may still append behind it");
        drop(w);
        assert!(b.ends_batch() && !a.ends_batch());
    }

    #[test]
    fn a_watched_batch_is_in_use_while_a_writer_or_slice_holds_it() {
        let mut w = BatchWriter::new(16);
        let r = w.watch();
        assert!(r.in_use(), "the writer");
        let s = w.append(b"abc");
        drop(w);
        assert!(r.in_use(), "a slice");
        let t = s.clone();
        drop(s);
        assert!(r.in_use(), "a clone of it");
        drop(t);
        assert!(!r.in_use());
    }

    #[test]
    #[should_panic(expected = "batch overflow")]
    fn appending_past_the_room_panics_instead_of_writing_out_of_bounds() {
        let mut w = BatchWriter::new(4);
        let _ = w.append(b"abc");
        let _ = w.append(b"de");
    }

    #[test]
    fn skip_and_the_buffer_outliving_its_writer() {
        let mut w = BatchWriter::new(16);
        let mut s = w.append(b"0123456789");
        drop(w);
        s.skip(3);
        assert_eq!(s.bytes(), b"3456789");
        assert_eq!(s.len(), 7);
        let t = s.clone();
        s.skip(100);
        assert!(s.is_empty());
        assert_eq!(t.bytes(), b"3456789");
    }

    #[test]
    fn slices_move_to_another_thread() {
        let mut w = BatchWriter::new(8);
        let s = w.append(b"abc");
        let h = std::thread::spawn(move || s.bytes().to_vec());
        let t = w.append(b"def");
        assert_eq!(h.join().unwrap(), b"abc");
        assert_eq!(t.bytes(), b"def");
    }
}
