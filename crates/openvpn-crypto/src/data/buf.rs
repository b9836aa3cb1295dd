//! [`PacketBuf`]: a reusable byte buffer with headroom in front of the payload, so that
//! headers, packet ids, tags and IVs can be prepended in place.

/// A packet buffer: `data[start..]` is the current content, `data[..start]` free headroom.
///
/// Typical use: `clear(headroom)`, write the tun packet with `extend_from_slice` (or
/// `resize` + `as_mut_slice` to read straight into it), `DataSealer::seal`, send `as_slice()`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PacketBuf {
    data: Vec<u8>,
    start: usize,
}

impl PacketBuf {
    /// Headroom that fits any data-channel header this crate produces
    /// (DATA_V2 4 + SHA512 HMAC 64 + IV 16 + packet id 4 = 88).
    pub const DEFAULT_HEADROOM: usize = 96;

    /// An empty buffer with `headroom` bytes in front and room for `capacity` payload bytes.
    pub fn new(headroom: usize, capacity: usize) -> Self {
        let mut data = Vec::with_capacity(headroom + capacity);
        data.resize(headroom, 0);
        Self {
            data,
            start: headroom,
        }
    }

    /// A buffer holding a copy of `payload` behind `headroom` free bytes.
    pub fn from_payload(headroom: usize, payload: &[u8]) -> Self {
        let mut b = Self::new(headroom, payload.len() + 32);
        b.extend_from_slice(payload);
        b
    }

    /// Empties the buffer and sets the headroom for the next packet (keeps the allocation).
    pub fn clear(&mut self, headroom: usize) {
        if self.data.len() >= headroom {
            self.data.truncate(headroom);
        } else {
            self.data.resize(headroom, 0);
        }
        self.start = headroom;
    }

    /// Appends bytes to the content.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
    }

    /// Sets the content length, zero-filling when growing.
    pub fn resize(&mut self, len: usize) {
        self.data.resize(self.start + len, 0);
    }

    /// Shortens the content to `len` bytes (no-op if already shorter).
    pub fn truncate(&mut self, len: usize) {
        self.data.truncate(self.start + len);
    }

    /// Drops `n` bytes from the front of the content (they become headroom).
    pub fn trim_front(&mut self, n: usize) {
        self.start = (self.start + n).min(self.data.len());
    }

    /// Content length.
    pub fn len(&self) -> usize {
        self.data.len() - self.start
    }

    /// True when there is no content.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Free bytes in front of the content.
    pub fn headroom(&self) -> usize {
        self.start
    }

    /// The content.
    pub fn as_slice(&self) -> &[u8] {
        &self.data[self.start..]
    }

    /// The content, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.data[self.start..]
    }

    /// Grows the content by `n` bytes at the front and returns the whole content; the first
    /// `n` bytes are the new ones. Moves the content (slow path) only when headroom is short.
    pub fn prepend(&mut self, n: usize) -> &mut [u8] {
        if n > self.start {
            let extra = n - self.start + Self::DEFAULT_HEADROOM;
            self.data.splice(0..0, std::iter::repeat_n(0, extra));
            self.start += extra;
        }
        self.start -= n;
        &mut self.data[self.start..]
    }

    /// Narrows the content to `range` (relative to the current content), e.g. to the plaintext
    /// after opening.
    pub(crate) fn narrow(&mut self, offset: usize, len: usize) {
        let len = len.min(self.len().saturating_sub(offset));
        self.start += offset.min(self.len());
        self.data.truncate(self.start + len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepend_and_clear() {
        let mut b = PacketBuf::from_payload(4, b"abc");
        assert_eq!(b.headroom(), 4);
        b.prepend(2).copy_from_slice(&[1, 2, 9, 9, 9][..5]);
        assert_eq!(b.as_slice(), &[1, 2, 9, 9, 9]);
        let front = b.prepend(5);
        front[..5].copy_from_slice(b"12345");
        assert_eq!(&b.as_slice()[..5], b"12345");
        assert_eq!(b.len(), 10);
        b.clear(8);
        assert!(b.is_empty());
        assert_eq!(b.headroom(), 8);
        b.resize(3);
        assert_eq!(b.as_slice(), &[0, 0, 0]);
        b.narrow(1, 1);
        assert_eq!(b.len(), 1);
        b.trim_front(5);
        assert!(b.is_empty());
    }
}
