//! A provided-buffer ring (`IORING_REGISTER_PBUF_RING`): a fixed set of receive buffers the
//! kernel picks from when a multishot receive has data, so receive memory follows the data
//! in flight, not the number of connections.
//!
//! Ownership of each buffer moves between us and the kernel: after [`BufRing::new`] every
//! buffer is the kernel's; a completion with `IORING_CQE_F_BUFFER` hands buffer `bid` back to
//! us; [`BufRing::take`] keeps what it holds (the session's receive buffer becomes it, without
//! a copy) and hands the kernel a fresh allocation under the same id, or
//! [`BufRing::give_back`] returns it unread. Each buffer is its own heap allocation, so one
//! taken lives on as long as its bytes are needed (blocks waiting to be written).

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use bytes::BytesMut;
use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// An anonymous private mapping for the ring of 16-byte entries, and the buffers.
pub(crate) struct BufRing {
    ring: NonNull<BufRingEntry>,
    ring_bytes: usize,
    /// Buffer `bid`: an allocation of `buf_len` bytes (length 0; the kernel writes into its
    /// capacity). Never touched by us while the kernel owns it.
    bufs: Vec<Vec<u8>>,
    entries: u16,
    buf_len: u32,
    /// Our copy of the tail: the next entry we fill.
    tail: u16,
    group: u16,
}

fn map(len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: an anonymous private mapping with no address hint has no preconditions; the
    // result is checked against MAP_FAILED before use.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))
}

impl BufRing {
    /// Allocates `entries` buffers of `buf_len` bytes, registers them as buffer group `group` on
    /// `ring` and hands them all to the kernel. `entries` must be a power of two.
    pub fn new(ring: &IoUring, group: u16, entries: u16, buf_len: u32) -> io::Result<BufRing> {
        assert!(entries.is_power_of_two() && entries <= 32768);
        let ring_bytes = entries as usize * std::mem::size_of::<BufRingEntry>();
        let ring_mem = map(ring_bytes)?;
        let bufs = (0..entries)
            .map(|_| Vec::with_capacity(buf_len as usize))
            .collect();
        let mut this = BufRing {
            ring: ring_mem.cast(),
            ring_bytes,
            bufs,
            entries,
            buf_len,
            tail: 0,
            group,
        };
        // SAFETY: the ring memory is page-aligned (mmap), `entries` entries long, zeroed
        // (anonymous mapping) and lives until `Drop`, which the driver runs only after the
        // io_uring instance is gone or no operation can pick a buffer any more (see the
        // driver's `Drop`). The kernel reads entries and we write them only through `put`.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                this.ring.as_ptr() as u64,
                entries,
                group,
                0,
            )?;
        }
        for bid in 0..entries {
            this.put(bid);
        }
        this.publish();
        Ok(this)
    }

    /// The buffer group id to name in receives.
    pub fn group(&self) -> u16 {
        self.group
    }

    /// Takes the bytes the kernel put in buffer `bid`, which a completion has just handed us,
    /// and gives the kernel a fresh buffer under the same id.
    ///
    /// # Safety
    ///
    /// `bid` must come from a completion of an operation on this ring's group, and must not
    /// have been given back or taken since; `len` is that completion's result.
    pub unsafe fn take(&mut self, bid: u16, len: usize) -> BytesMut {
        assert!(bid < self.entries && len <= self.buf_len as usize);
        let fresh = Vec::with_capacity(self.buf_len as usize);
        let mut full = std::mem::replace(&mut self.bufs[bid as usize], fresh);
        // SAFETY: the kernel wrote `len` bytes (at most the capacity, asserted) at the start
        // of this allocation before it posted the completion, and no longer uses it: the
        // completion handed the buffer to us (caller contract).
        unsafe { full.set_len(len) };
        self.put(bid);
        self.publish();
        BytesMut::from(bytes::Bytes::from(full))
    }

    /// Hands buffer `bid` back to the kernel.
    pub fn give_back(&mut self, bid: u16) {
        self.put(bid);
        self.publish();
    }

    fn put(&mut self, bid: u16) {
        assert!(bid < self.entries);
        let mask = self.entries - 1;
        // SAFETY: `tail & mask` indexes inside the ring mapping. The kernel reads entries only
        // between its head and the published tail; this slot is at or past the published tail
        // (we have at most `entries` buffers, and `bid` is one the kernel gave back), so the
        // kernel does not read it until `publish` moves the tail past it.
        unsafe {
            let entry = &mut *self.ring.as_ptr().add((self.tail & mask) as usize);
            entry.set_addr(self.bufs[bid as usize].as_mut_ptr() as u64);
            entry.set_len(self.buf_len);
            entry.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field sits in the first entry of our page-aligned ring mapping,
        // which lives as long as `self`; the kernel reads it concurrently, so it is written
        // atomically, with release order so the entries written before are visible first.
        unsafe {
            let tail = BufRingEntry::tail(self.ring.as_ptr()) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: the ring mapping was made in `new` with this length; the driver drops the
        // ring (and with it the buffers) only once no operation can select a buffer (see
        // `UringDriver`'s `Drop`).
        unsafe {
            libc::munmap(self.ring.as_ptr().cast(), self.ring_bytes);
        }
    }
}

// SAFETY: the ring mapping and the buffers are owned by this value alone (no other pointer to
// them escapes except to the kernel, which is thread-agnostic), so moving it to another thread
// is sound.
unsafe impl Send for BufRing {}
