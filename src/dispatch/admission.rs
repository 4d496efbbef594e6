//! Admission: whether a tenant's new request may queue.
//!
//! A tenant may have at most `capacity` requests admitted and not yet
//! started (queued in its channel or in the deadline heap). A request
//! beyond that is `rejected` at once: a bounded queue keeps memory flat and
//! tells an overloaded client immediately instead of letting it wait for a
//! deadline it cannot make. The runtime's `TenantQueue::submit` and the
//! simulator both ask [`admits`].

/// Whether a request may join a tenant queue that already holds `waiting`
/// admitted, not yet started requests.
///
/// ```
/// use ecomap::dispatch::admission::admits;
/// assert!(admits(3, 4));
/// assert!(!admits(4, 4));
/// ```
pub fn admits(waiting: usize, capacity: usize) -> bool {
    waiting < capacity
}
