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
//! buffer comes back when the last reference to the input drops, on
//! whatever thread that is, without blocking (a full pool drops it).
//!
//! ```
//! use ecomap_actors::server::body_pool::BodyPool;
//! let pool = BodyPool::new(4, 1 << 20);
//! let mut buf = pool.take(600_000);
//! buf.extend_from_slice(&[1, 2, 3]);
//! let body = pool.seal(buf, 0);
//! assert_eq!(&body[..], &[1, 2, 3]);
//! drop(body); // the buffer goes back to the pool
//! assert_eq!(pool.idle(), 1);
//! ```

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use std::sync::Arc;

/// A bounded free list of body buffers.
#[derive(Debug, Clone)]
pub struct BodyPool {
    free_tx: Sender<Vec<u8>>,
    free_rx: Receiver<Vec<u8>>,
    /// Buffers larger than this are not kept (an odd huge body must not
    /// pin its memory for the server's lifetime).
    max_kept: usize,
}

/// A buffer on loan; its bytes go back to the pool when dropped.
struct Loan {
    buf: Vec<u8>,
    home: Sender<Vec<u8>>,
    max_kept: usize,
}

impl AsRef<[u8]> for Loan {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Loan {
    fn drop(&mut self) {
        if self.buf.capacity() <= self.max_kept {
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            // Never blocks: a full pool (or one already gone) frees it.
            let _ = self.home.try_send(buf);
        }
    }
}

impl BodyPool {
    /// A pool keeping at most `slots` idle buffers of at most `max_kept`
    /// bytes each (so at most `slots × max_kept` bytes held idle).
    pub fn new(slots: usize, max_kept: usize) -> Self {
        let (free_tx, free_rx) = crossbeam_channel::bounded(slots.max(1));
        BodyPool {
            free_tx,
            free_rx,
            max_kept,
        }
    }

    /// An empty buffer with room for `len` bytes: an idle one when there is
    /// one (grown if it is too small), else a new one.
    pub fn take(&self, len: usize) -> Vec<u8> {
        match self.free_rx.try_recv() {
            Ok(mut buf) => {
                debug_assert!(buf.is_empty(), "pooled buffers are returned cleared");
                buf.reserve(len);
                buf
            }
            Err(_) => Vec::with_capacity(len),
        }
    }

    /// `buf[start..]` as shared bytes; `buf` returns to the pool when the
    /// last clone of them drops.
    pub fn seal(&self, buf: Vec<u8>, start: usize) -> Bytes {
        debug_assert!(start <= buf.len(), "the body starts inside the buffer");
        Bytes::from_owner(Loan {
            buf,
            home: self.free_tx.clone(),
            max_kept: self.max_kept,
        })
        .slice(start..)
    }

    /// Idle buffers now.
    pub fn idle(&self) -> usize {
        self.free_rx.len()
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

    #[test]
    fn a_buffer_is_reused_after_its_bytes_drop() {
        let pool = BodyPool::new(2, 1 << 20);
        let mut buf = pool.take(1000);
        buf.extend_from_slice(&[0; 3]);
        buf.extend_from_slice(b"abc");
        let ptr = buf.as_ptr();
        let body = pool.seal(buf, 3);
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
        let a = pool.seal(vec![1; 10], 0);
        let b = pool.seal(vec![2; 10], 0);
        let big = pool.seal(vec![3; 100], 0);
        drop((a, b, big));
        assert_eq!(
            pool.idle(),
            1,
            "one slot; the 100-byte buffer is over max_kept"
        );
        let small = pool.take(1000);
        assert!(
            small.capacity() >= 1000,
            "an idle buffer grows to the request"
        );
    }
}
