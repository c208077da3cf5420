//! A provided-buffer ring (`IORING_REGISTER_PBUF_RING`): a fixed set of receive buffers the
//! kernel picks from when a multishot receive has data, so receive memory follows the data
//! in flight, not the number of connections.
//!
//! Ownership of each buffer moves between us and the kernel: after [`BufRing::new`] every
//! buffer is the kernel's; a completion with `IORING_CQE_F_BUFFER` hands buffer `bid` back to
//! us; [`BufRing::give_back`] returns it. We read a buffer only between those two moments.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// Two anonymous private mappings: the ring of 16-byte entries and the buffers.
pub(crate) struct BufRing {
    ring: NonNull<BufRingEntry>,
    ring_bytes: usize,
    bufs: NonNull<u8>,
    bufs_bytes: usize,
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
    /// Maps `entries` buffers of `buf_len` bytes, registers them as buffer group `group` on
    /// `ring` and hands them all to the kernel. `entries` must be a power of two.
    pub fn new(ring: &IoUring, group: u16, entries: u16, buf_len: u32) -> io::Result<BufRing> {
        assert!(entries.is_power_of_two() && entries <= 32768);
        let ring_bytes = entries as usize * std::mem::size_of::<BufRingEntry>();
        let bufs_bytes = entries as usize * buf_len as usize;
        let ring_mem = map(ring_bytes)?;
        let bufs = match map(bufs_bytes) {
            Ok(b) => b,
            Err(e) => {
                // SAFETY: ring_mem was mapped above with ring_bytes and is not used after.
                unsafe { libc::munmap(ring_mem.as_ptr().cast(), ring_bytes) };
                return Err(e);
            }
        };
        let mut this = BufRing {
            ring: ring_mem.cast(),
            ring_bytes,
            bufs,
            bufs_bytes,
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

    /// The bytes the kernel put in buffer `bid`, which a completion has just handed us.
    ///
    /// # Safety
    ///
    /// `bid` must come from a completion of an operation on this ring's group, and must not
    /// have been given back since; `len` is that completion's result. The slice must be
    /// dropped before [`BufRing::give_back`] for the same `bid`.
    pub unsafe fn get(&self, bid: u16, len: usize) -> &[u8] {
        assert!(bid < self.entries && len <= self.buf_len as usize);
        // SAFETY: in bounds (asserted). The kernel finished writing before it posted the
        // completion and will not touch this buffer until we give it back (caller contract),
        // so nothing writes it while the shared slice lives.
        unsafe {
            std::slice::from_raw_parts(
                self.bufs.as_ptr().add(bid as usize * self.buf_len as usize),
                len,
            )
        }
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
            entry.set_addr(self.bufs.as_ptr().add(bid as usize * self.buf_len as usize) as u64);
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
        // SAFETY: both mappings were made in `new` with these lengths; the driver drops the
        // ring only once no operation can select a buffer (see `UringDriver`'s `Drop`).
        unsafe {
            libc::munmap(self.bufs.as_ptr().cast(), self.bufs_bytes);
            libc::munmap(self.ring.as_ptr().cast(), self.ring_bytes);
        }
    }
}

// SAFETY: the two mappings are owned by this value alone (no other pointer to them escapes
// except to the kernel, which is thread-agnostic), so moving it to another thread is sound.
unsafe impl Send for BufRing {}
