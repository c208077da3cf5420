//! A connection's outgoing bytes: small control messages coalesced into one growing buffer,
//! block payloads kept as the `Bytes` the disk layer handed over, so a 16 KiB block is never
//! copied on its way from storage to the socket.
//!
//! A driver either sends from [`SendBuf::chunks`] and reports what the kernel took with
//! [`SendBuf::consume`] (epoll), or moves chunks out with [`SendBuf::take_upto`] and reports
//! them the same way once the kernel took them (io_uring, the simulator). Taken bytes still
//! count in [`SendBuf::len`] until reported: they are memory this connection holds, in the
//! driver instead of here, and the upload watermark and budget must see them.

use std::collections::VecDeque;

use bytes::{Buf, Bytes};

use super::mse::Rc4;

/// One chunk waiting to be sent, and whether it is block payload (what the upload budget
/// counts) rather than control bytes.
#[derive(Debug)]
struct Chunk {
    bytes: Bytes,
    payload: bool,
}

/// Outgoing bytes of one connection, in order.
#[derive(Debug, Default)]
pub struct SendBuf {
    chunks: VecDeque<Chunk>,
    tail: Vec<u8>,
    /// Lengths of the chunks a driver took (front first) and has not reported sent, with
    /// whether each is payload.
    taken: VecDeque<(usize, bool)>,
    /// Bytes not yet reported sent: waiting here or taken.
    len: usize,
    /// Of `len`, the bytes taken by the driver.
    taken_len: usize,
    /// Of `len`, block payload bytes.
    payload: usize,
    /// An RC4-encrypted connection's send stream: every byte queued after
    /// [`SendBuf::encrypt_from_now`] is encrypted as it joins `chunks`, in stream order.
    cipher: Option<Box<Rc4>>,
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

    /// Appends a block payload without copying it (on an encrypted connection, its
    /// ciphertext: one copy, fused with the encryption).
    pub(crate) fn push_shared(&mut self, bytes: Bytes) {
        self.seal();
        let bytes = match &mut self.cipher {
            Some(rc4) => {
                let mut out = Vec::new();
                rc4.apply_into(&bytes, &mut out);
                Bytes::from(out)
            }
            None => bytes,
        };
        self.len += bytes.len();
        self.payload += bytes.len();
        self.chunks.push_back(Chunk {
            bytes,
            payload: true,
        });
    }

    /// From now on every byte queued is RC4-encrypted with `rc4`; what is queued already
    /// goes out as it is (the handshake that agreed on the keys).
    pub(crate) fn encrypt_from_now(&mut self, rc4: Box<Rc4>) {
        self.seal();
        self.cipher = Some(rc4);
    }

    /// Whether queued bytes are encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.cipher.is_some()
    }

    /// Gives up the send stream's cipher (a connection moving to another loop), after
    /// sealing what is queued with it.
    pub(crate) fn take_cipher(&mut self) -> Option<Box<Rc4>> {
        self.seal();
        self.cipher.take()
    }

    fn seal(&mut self) {
        if !self.tail.is_empty() {
            if let Some(rc4) = &mut self.cipher {
                rc4.apply(&mut self.tail);
            }
            // A Vec becomes Bytes without copying.
            self.chunks.push_back(Chunk {
                bytes: Bytes::from(std::mem::take(&mut self.tail)),
                payload: false,
            });
        }
    }

    /// Bytes this connection holds for sending: waiting here, or taken by the driver and not
    /// yet reported sent.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Of [`SendBuf::len`], the block payload bytes.
    pub fn payload(&self) -> usize {
        self.payload
    }

    /// Bytes waiting here, not yet taken by a driver.
    pub fn pending(&self) -> usize {
        self.len - self.taken_len
    }

    /// Whether nothing waits here to be sent or taken (taken bytes may still be in flight).
    pub fn is_empty(&self) -> bool {
        self.pending() == 0
    }

    /// The waiting bytes as slices in order, for a vectored send. Seals the control buffer
    /// first so that everything queued so far is included. Taken bytes are not among them.
    pub fn chunks(&mut self) -> impl Iterator<Item = &[u8]> {
        self.seal();
        self.chunks.iter().map(|c| c.bytes.as_ref())
    }

    /// The first `n` bytes (taken ones first, as they came first) went to the kernel; drops
    /// them and returns how many of them were block payload.
    pub fn consume(&mut self, mut n: usize) -> usize {
        self.seal();
        n = n.min(self.len);
        self.len -= n;
        let mut payload = 0;
        while n > 0 {
            let Some(front) = self.taken.front_mut() else {
                break;
            };
            let part = front.0.min(n);
            front.0 -= part;
            n -= part;
            self.taken_len -= part;
            if front.1 {
                payload += part;
            }
            if front.0 == 0 {
                self.taken.pop_front();
            }
        }
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let part = front.bytes.len().min(n);
            n -= part;
            if front.payload {
                payload += part;
            }
            if part == front.bytes.len() {
                self.chunks.pop_front();
            } else {
                front.bytes.advance(part);
            }
        }
        self.payload -= payload;
        payload
    }

    /// Takes whole chunks from the front until at least one is taken and the next would pass
    /// `max` bytes, for drivers that move owned buffers (the io_uring driver, the simulator's
    /// link that accepts a window at a time). They stay counted in [`SendBuf::len`] until the
    /// driver reports them with [`SendBuf::consume`].
    pub fn take_upto(&mut self, max: usize) -> Vec<Bytes> {
        self.seal();
        let mut taken = Vec::new();
        let mut size = 0;
        while let Some(front) = self.chunks.front() {
            if !taken.is_empty() && size + front.bytes.len() > max {
                break;
            }
            let chunk = self.chunks.pop_front().expect("front exists");
            size += chunk.bytes.len();
            self.taken.push_back((chunk.bytes.len(), chunk.payload));
            taken.push(chunk.bytes);
        }
        self.taken_len += size;
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
        assert_eq!(b.payload(), 4);
        let all: Vec<u8> = b.chunks().flatten().copied().collect();
        assert_eq!(all, b"abCDEFgh");
        assert_eq!(b.consume(3), 1);
        let rest: Vec<u8> = b.chunks().flatten().copied().collect();
        assert_eq!(rest, b"DEFgh");
        assert_eq!(b.consume(100), 3);
        assert!(b.is_empty());
        assert_eq!((b.len(), b.payload()), (0, 0));
    }

    #[test]
    fn taken_bytes_count_until_reported_sent() {
        let mut b = SendBuf::default();
        b.push_bytes(b"12");
        b.push_shared(Bytes::from_static(b"3456"));
        b.push_bytes(b"78");
        let first = b.take_upto(3);
        assert_eq!(first, vec![Bytes::from_static(b"12")]);
        // Taken but not sent: still held, no longer offered.
        assert_eq!((b.len(), b.pending(), b.payload()), (8, 6, 4));
        let second = b.take_upto(100);
        assert_eq!(second.concat(), b"345678");
        assert!(b.is_empty());
        assert_eq!(b.chunks().count(), 0);
        assert_eq!(b.len(), 8);
        // Reported in pieces, across chunk boundaries, payload counted as it goes.
        assert_eq!(b.consume(3), 1);
        assert_eq!((b.len(), b.payload()), (5, 3));
        assert_eq!(b.consume(5), 3);
        assert_eq!((b.len(), b.payload(), b.pending()), (0, 0, 0));
    }

    #[test]
    fn taken_bytes_come_before_waiting_ones() {
        let mut b = SendBuf::default();
        b.push_shared(Bytes::from_static(b"AAAA"));
        let _ = b.take_upto(1);
        b.push_bytes(b"xy");
        assert_eq!((b.len(), b.pending()), (6, 2));
        // A driver reports what it took first; the waiting bytes stay.
        assert_eq!(b.consume(4), 4);
        assert_eq!(b.chunks().flatten().copied().collect::<Vec<u8>>(), b"xy");
        assert_eq!((b.len(), b.payload(), b.pending()), (2, 0, 2));
    }
}
