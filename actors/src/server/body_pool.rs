//! Request-body buffers, reused.
//!
//! A 224×224 FP32 image is a 602 kB body. Allocated fresh for every
//! request, glibc serves a buffer that size with fresh pages — about 150
//! page faults, each zeroing a page, on the HTTP thread — and when the
//! worker drops the finished request's input it hands the pages back to
//! the kernel (`madvise`). Profiled on this host (`perf record`, one
//! client, `serve_http`), page faults were the largest part of the HTTP
//! threads' time. A pool keeps a few bodies' worth of touched memory: a
//! body is read into a buffer from the pool, the model reads its tensor
//! where it lies (the input is a [`Bytes`] owned by the buffer), and the
//! buffer comes back when the last reference to the input drops — or when
//! a body that failed to arrive is abandoned — on whatever thread that is.
//!
//! Nobody ever waits on the pool. The thread giving a buffer back is often
//! a SCHED_FIFO worker pinned to a core, and the one taking a buffer an
//! HTTP thread of higher priority that may preempt it on that core: had
//! the worker been preempted halfway through a hand-over that the taker
//! must wait out (a crossbeam channel's receiver spins on a slot a sender
//! has claimed but not yet written), the taker would spin on that core for
//! good. So the free list is a mutex only ever `try_lock`ed: a taker that
//! finds it held allocates a fresh buffer, a giver drops its buffer.
//!
//! ```
//! use ecomap_actors::server::body_pool::BodyPool;
//! let pool = BodyPool::new(4, 1 << 20);
//! let mut buf = pool.take(600_000);
//! buf.extend_from_slice(&[1, 2, 3]);
//! let body = buf.seal(0);
//! assert_eq!(&body[..], &[1, 2, 3]);
//! drop(body); // the buffer goes back to the pool
//! assert_eq!(pool.idle(), 1);
//! ```

use bytes::Bytes;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

/// A bounded free list of body buffers.
#[derive(Debug, Clone)]
pub struct BodyPool {
    shelf: Arc<Shelf>,
}

#[derive(Debug)]
struct Shelf {
    free: Mutex<Vec<Vec<u8>>>,
    /// At most this many idle buffers.
    slots: usize,
    /// Buffers larger than this are not kept (an odd huge body must not
    /// pin its memory for the server's lifetime), and a body's declared
    /// length reserves at most this much before its bytes arrive.
    max_kept: usize,
}

impl Shelf {
    /// Keep `buf` if it is small enough and a slot is free; never waits.
    fn put(&self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > self.max_kept {
            return;
        }
        buf.clear();
        // `try_lock` (see the module docs): held by someone else, the
        // buffer is freed instead. Nothing panics while holding the lock,
        // so a poisoned one is only ever skipped the same way.
        if let Ok(mut free) = self.free.try_lock() {
            if free.len() < self.slots {
                free.push(buf);
            }
            debug_assert!(free.len() <= self.slots);
        }
    }
}

/// A buffer taken from the pool: it goes back when dropped (a body that
/// failed to arrive) or when the last reference to its sealed bytes drops.
#[derive(Debug)]
pub struct BodyBuf {
    buf: Vec<u8>,
    shelf: Arc<Shelf>,
}

impl Deref for BodyBuf {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.buf
    }
}

impl DerefMut for BodyBuf {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
}

impl Drop for BodyBuf {
    fn drop(&mut self) {
        self.shelf.put(std::mem::take(&mut self.buf));
    }
}

impl BodyBuf {
    /// `self[start..]` as shared bytes; the buffer returns to the pool
    /// when the last clone of them drops.
    pub fn seal(mut self, start: usize) -> Bytes {
        debug_assert!(start <= self.buf.len(), "the body starts inside the buffer");
        let loan = Loan {
            buf: std::mem::take(&mut self.buf),
            shelf: self.shelf.clone(),
        };
        Bytes::from_owner(loan).slice(start..)
    }
}

/// A sealed buffer; its memory goes back to the pool when dropped.
struct Loan {
    buf: Vec<u8>,
    shelf: Arc<Shelf>,
}

impl AsRef<[u8]> for Loan {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Loan {
    fn drop(&mut self) {
        self.shelf.put(std::mem::take(&mut self.buf));
    }
}

impl BodyPool {
    /// A pool keeping at most `slots` idle buffers of at most `max_kept`
    /// bytes each (so at most `slots × max_kept` bytes held idle).
    pub fn new(slots: usize, max_kept: usize) -> Self {
        BodyPool {
            shelf: Arc::new(Shelf {
                free: Mutex::new(Vec::with_capacity(slots.max(1))),
                slots: slots.max(1),
                max_kept,
            }),
        }
    }

    /// An empty buffer with room for `len` bytes, but never more than the
    /// pool keeps per buffer before the bytes arrive (`len` comes from a
    /// client's `Content-Length`; a larger body grows as it is read): an
    /// idle one when there is one, else a new one. If the memory cannot be
    /// had, the buffer starts small and grows as bytes arrive.
    pub fn take(&self, len: usize) -> BodyBuf {
        let idle = match self.shelf.free.try_lock() {
            Ok(mut free) => free.pop(),
            Err(_) => None,
        };
        let mut buf = idle.unwrap_or_default();
        debug_assert!(buf.is_empty(), "pooled buffers are returned cleared");
        let _ = buf.try_reserve_exact(len.min(self.shelf.max_kept));
        BodyBuf {
            buf,
            shelf: self.shelf.clone(),
        }
    }

    /// Idle buffers now.
    pub fn idle(&self) -> usize {
        self.shelf.free.lock().map_or(0, |free| free.len())
    }
}

/// The server's pool: 32 idle buffers of up to 16 MiB (a 1024×1024 RGB
/// FP32 frame is 12 MiB); idle memory is what recent bodies needed.
pub(crate) fn for_server() -> Arc<BodyPool> {
    Arc::new(BodyPool::new(32, 16 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(pool: &BodyPool, len: usize) -> Bytes {
        let mut buf = pool.take(len);
        buf.resize(len, 7);
        buf.seal(0)
    }

    #[test]
    fn a_buffer_is_reused_after_its_bytes_drop() {
        let pool = BodyPool::new(2, 1 << 20);
        let mut buf = pool.take(1000);
        buf.extend_from_slice(&[0; 3]);
        buf.extend_from_slice(b"abc");
        let ptr = buf.as_ptr();
        let body = buf.seal(3);
        assert_eq!(&body[..], b"abc");
        let clone = body.clone();
        drop(body);
        assert_eq!(pool.idle(), 0, "a clone still holds it");
        drop(clone);
        assert_eq!(pool.idle(), 1);
        let again = pool.take(10);
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), ptr, "the same memory comes back");
    }

    #[test]
    fn a_full_pool_and_oversized_buffers_free_instead() {
        let pool = BodyPool::new(1, 64);
        let (a, b, big) = (filled(&pool, 10), filled(&pool, 10), filled(&pool, 100));
        drop((a, b, big));
        assert_eq!(
            pool.idle(),
            1,
            "one slot; the 100-byte buffer is over max_kept"
        );
        // A declared length reserves at most max_kept up front.
        assert!(pool.take(1 << 30).capacity() <= 64);
    }

    #[test]
    fn an_abandoned_body_returns_its_buffer() {
        let pool = BodyPool::new(2, 1 << 20);
        let mut buf = pool.take(1000);
        buf.extend_from_slice(b"half a bo");
        drop(buf); // the upload failed
        assert_eq!(pool.idle(), 1);
    }

    #[test]
    fn a_held_shelf_is_never_waited_for() {
        let pool = BodyPool::new(2, 1 << 20);
        drop(filled(&pool, 10));
        let held = pool.shelf.free.lock().unwrap();
        // Taking allocates afresh; giving back frees.
        let buf = pool.take(100);
        assert!(buf.capacity() >= 100);
        drop(buf);
        assert_eq!(held.len(), 1);
    }
}
