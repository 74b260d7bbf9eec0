//! Collects a request body within the limit, without ever holding more than the limit, and
//! within the layer's bound on bytes buffered at once across all its requests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Buf, Bytes};

use crate::rejection::Reason;

/// The bytes all requests of one layer may buffer at once.
#[derive(Debug)]
pub(crate) struct Budget {
    capacity: usize,
    used: AtomicUsize,
}

impl Budget {
    pub(crate) fn new(capacity: usize) -> Self {
        Budget {
            capacity,
            used: AtomicUsize::new(0),
        }
    }

    /// Takes `bytes` from the budget, or nothing when that would pass the bound.
    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes)
                    .filter(|total| *total <= self.capacity)
            })
            .is_ok()
    }

    fn give(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// The bytes reserved now (for tests and the metrics of later versions).
    #[allow(dead_code)]
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// Bytes taken from a [`Budget`] by one request, given back when it is dropped (the body is
/// verified or refused, or the request's future is dropped).
pub(crate) struct Reservation {
    budget: Arc<Budget>,
    held: usize,
}

impl Reservation {
    /// A reservation of `bytes` up front (the declared length), or `None` when the budget
    /// cannot cover it.
    pub(crate) fn new(budget: &Arc<Budget>, bytes: usize) -> Option<Self> {
        budget.take(bytes).then(|| Reservation {
            budget: budget.clone(),
            held: bytes,
        })
    }

    /// Makes sure `total` bytes are covered.
    fn cover(&mut self, total: usize) -> Result<(), Reason> {
        if total <= self.held {
            return Ok(());
        }
        if !self.budget.take(total - self.held) {
            return Err(Reason::Overloaded);
        }
        self.held = total;
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give(self.held);
    }
}

/// Collects the body. A body that arrives in one chunk (the usual case with hyper and a small
/// event) is kept as is: no copy. Otherwise the chunks are copied into one `Vec` whose
/// capacity never exceeds the limit (a `BytesMut` would double past it).
pub(crate) struct Buffer {
    first: Option<Bytes>,
    rest: Vec<u8>,
    len: usize,
    limit: usize,
    expected: usize,
    /// Covers `first`'s length and `rest`'s capacity, whichever is in use.
    reservation: Reservation,
}

impl Buffer {
    /// `expected` is the declared length (0 when unknown), already checked against `limit`
    /// and already covered by `reservation`.
    pub(crate) fn new(limit: usize, expected: usize, reservation: Reservation) -> Self {
        Buffer {
            first: None,
            rest: Vec::new(),
            len: 0,
            limit,
            expected: expected.min(limit),
            reservation,
        }
    }

    /// Appends a chunk, or refuses it when the total would pass the limit (`BodyTooLarge`)
    /// or the layer's bound on buffered bytes (`Overloaded`).
    pub(crate) fn push(&mut self, mut chunk: impl Buf) -> Result<(), Reason> {
        let len = chunk.remaining();
        if len == 0 {
            return Ok(());
        }
        let total = self.len.checked_add(len).ok_or(Reason::BodyTooLarge)?;
        if total > self.limit {
            return Err(Reason::BodyTooLarge);
        }
        if self.first.is_none() && self.rest.is_empty() {
            self.reservation.cover(total)?;
            self.len = total;
            self.first = Some(chunk.copy_to_bytes(len));
            return Ok(());
        }
        self.grow_for(total)?;
        if let Some(first) = self.first.take() {
            self.rest.extend_from_slice(&first);
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            self.rest.extend_from_slice(part);
            chunk.advance(n);
        }
        self.len = total;
        Ok(())
    }

    /// Makes room for `total` bytes: doubling, but never past the limit.
    fn grow_for(&mut self, total: usize) -> Result<(), Reason> {
        if self.rest.capacity() >= total {
            return Ok(());
        }
        let target = total
            .max(self.expected)
            .max(self.rest.capacity().saturating_mul(2))
            .min(self.limit);
        // The first chunk, still held while it is copied, counts too.
        let first = self.first.as_ref().map_or(0, Bytes::len);
        self.reservation.cover(target.saturating_add(first))?;
        self.rest
            .try_reserve_exact(target - self.rest.len())
            .map_err(|_| Reason::BodyTooLarge)
    }

    /// The complete body.
    pub(crate) fn finish(&mut self) -> Bytes {
        match self.first.take() {
            Some(bytes) => bytes,
            None => Bytes::from(std::mem::take(&mut self.rest)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unbounded() -> Reservation {
        Reservation::new(&Arc::new(Budget::new(usize::MAX)), 0).unwrap()
    }

    #[test]
    fn single_chunk_is_not_copied() {
        let chunk = Bytes::from_static(b"hello");
        let mut buffer = Buffer::new(10, 5, unbounded());
        buffer.push(chunk.clone()).unwrap();
        let out = buffer.finish();
        assert_eq!(out.as_ptr(), chunk.as_ptr());
    }

    #[test]
    fn capacity_never_exceeds_the_limit() {
        let limit = 1_000_000;
        let mut buffer = Buffer::new(limit, 0, unbounded());
        let chunk = vec![7u8; 9_000];
        for _ in 0..111 {
            buffer.push(&chunk[..]).unwrap();
            assert!(
                buffer.rest.capacity() <= limit,
                "{}",
                buffer.rest.capacity()
            );
        }
        assert_eq!(buffer.push(&chunk[..]), Err(Reason::BodyTooLarge));
        let body = buffer.finish();
        assert_eq!(body.len(), 999_000);
        assert!(body.iter().all(|b| *b == 7));
    }

    #[test]
    fn exactly_the_limit_fits() {
        let mut buffer = Buffer::new(10, 0, unbounded());
        buffer.push(&b"12345"[..]).unwrap();
        buffer.push(&b"67890"[..]).unwrap();
        assert_eq!(buffer.push(&b"x"[..]), Err(Reason::BodyTooLarge));
        assert_eq!(&buffer.finish()[..], b"1234567890");
    }

    #[test]
    fn the_budget_bounds_every_buffer_of_a_layer_and_is_given_back() {
        let budget = Arc::new(Budget::new(100));
        // Declared lengths are reserved up front.
        let declared = Reservation::new(&budget, 60).unwrap();
        assert!(Reservation::new(&budget, 41).is_none());
        assert_eq!(budget.used(), 60);
        // A streamed body takes what it grows into, and is refused past the bound.
        let mut streamed = Buffer::new(1000, 0, Reservation::new(&budget, 0).unwrap());
        streamed.push(&[1u8; 30][..]).unwrap();
        assert_eq!(budget.used(), 90);
        assert_eq!(streamed.push(&[1u8; 30][..]), Err(Reason::Overloaded));
        assert!(budget.used() <= 100);
        drop(streamed);
        drop(declared);
        assert_eq!(budget.used(), 0, "everything is given back on drop");
        // The limit is still checked first.
        let mut small = Buffer::new(10, 0, Reservation::new(&budget, 0).unwrap());
        assert_eq!(small.push(&[0u8; 11][..]), Err(Reason::BodyTooLarge));
    }
}
