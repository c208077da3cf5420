//! A connection's outgoing bytes: small control messages coalesced into one growing buffer,
//! block payloads kept as the `Bytes` the disk layer handed over, so a 16 KiB block is never
//! copied on its way from storage to the socket.

use std::collections::VecDeque;

use bytes::{Buf, Bytes};

/// Outgoing bytes of one connection, in order.
#[derive(Debug, Default)]
pub struct SendBuf {
    chunks: VecDeque<Bytes>,
    tail: Vec<u8>,
    len: usize,
}

impl SendBuf {
    /// Appends encoded control bytes.
    pub(crate) fn push_bytes(&mut self, bytes: &[u8]) {
        self.encode(|out| out.extend_from_slice(bytes));
    }

    /// Lets `write` append encoded messages directly to the control buffer.
    pub(crate) fn encode(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let before = self.tail.len();
        write(&mut self.tail);
        self.len += self.tail.len() - before;
    }

    /// Appends a block payload without copying it.
    pub(crate) fn push_shared(&mut self, bytes: Bytes) {
        self.seal();
        self.len += bytes.len();
        self.chunks.push_back(bytes);
    }

    fn seal(&mut self) {
        if !self.tail.is_empty() {
            // A Vec becomes Bytes without copying.
            self.chunks
                .push_back(Bytes::from(std::mem::take(&mut self.tail)));
        }
    }

    /// Bytes waiting to be sent.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits to be sent.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The waiting bytes as slices in order, for a vectored send. Seals the control buffer
    /// first so that everything queued so far is included.
    pub fn chunks(&mut self) -> impl Iterator<Item = &[u8]> {
        self.seal();
        self.chunks.iter().map(|b| b.as_ref())
    }

    /// Drops the first `n` bytes, which the driver has sent.
    pub fn consume(&mut self, mut n: usize) {
        self.seal();
        n = n.min(self.len);
        self.len -= n;
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if front.len() <= n {
                n -= front.len();
                self.chunks.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }

    /// Takes whole chunks from the front until at least one is taken and the next would pass
    /// `max` bytes: how the simulator models a link that accepts a window at a time.
    pub fn take_upto(&mut self, max: usize) -> Vec<Bytes> {
        self.seal();
        let mut taken = Vec::new();
        let mut size = 0;
        while let Some(front) = self.chunks.front() {
            if !taken.is_empty() && size + front.len() > max {
                break;
            }
            size += front.len();
            taken.push(self.chunks.pop_front().expect("front exists"));
        }
        self.len -= size;
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_consumes_across_chunks() {
        let mut b = SendBuf::default();
        b.push_bytes(b"ab");
        b.push_shared(Bytes::from_static(b"CDEF"));
        b.push_bytes(b"gh");
        assert_eq!(b.len(), 8);
        let all: Vec<u8> = b.chunks().flatten().copied().collect();
        assert_eq!(all, b"abCDEFgh");
        b.consume(3);
        let rest: Vec<u8> = b.chunks().flatten().copied().collect();
        assert_eq!(rest, b"DEFgh");
        b.consume(100);
        assert!(b.is_empty());
        b.push_bytes(b"12");
        b.push_shared(Bytes::from_static(b"3456"));
        b.push_bytes(b"78");
        let first = b.take_upto(3);
        assert_eq!(first, vec![Bytes::from_static(b"12")]);
        assert_eq!(b.len(), 6);
        assert_eq!(b.take_upto(100).concat(), b"345678");
        assert_eq!(b.chunks().count(), 0);
    }
}
