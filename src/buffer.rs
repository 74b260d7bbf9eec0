//! Collects a request body within the limit, without ever holding more than the limit.

use bytes::{Buf, Bytes};

use crate::rejection::Reason;

/// Collects the body. A body that arrives in one chunk (the usual case with hyper and a small
/// event) is kept as is: no copy. Otherwise the chunks are copied into one `Vec` whose
/// capacity never exceeds the limit (a `BytesMut` would double past it).
pub(crate) struct Buffer {
    first: Option<Bytes>,
    rest: Vec<u8>,
    len: usize,
    limit: usize,
    expected: usize,
}

impl Buffer {
    /// `expected` is the declared length (0 when unknown), already checked against `limit`.
    pub(crate) fn new(limit: usize, expected: u64) -> Self {
        Buffer {
            first: None,
            rest: Vec::new(),
            len: 0,
            limit,
            expected: usize::try_from(expected).unwrap_or(usize::MAX).min(limit),
        }
    }

    /// Appends a chunk, or refuses it when the total would pass the limit.
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

    #[test]
    fn single_chunk_is_not_copied() {
        let chunk = Bytes::from_static(b"hello");
        let mut buffer = Buffer::new(10, 5);
        buffer.push(chunk.clone()).unwrap();
        let out = buffer.finish();
        assert_eq!(out.as_ptr(), chunk.as_ptr());
    }

    #[test]
    fn capacity_never_exceeds_the_limit() {
        let limit = 1_000_000;
        let mut buffer = Buffer::new(limit, 0);
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
        let mut buffer = Buffer::new(10, 0);
        buffer.push(&b"12345"[..]).unwrap();
        buffer.push(&b"67890"[..]).unwrap();
        assert_eq!(buffer.push(&b"x"[..]), Err(Reason::BodyTooLarge));
        assert_eq!(&buffer.finish()[..], b"1234567890");
    }
}
