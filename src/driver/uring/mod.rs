//! The io_uring driver: one ring per loop, a hand-written completion loop over the `io-uring`
//! crate that runs a [`Session`] (or any [`Protocol`]) against real sockets, the disk pool and
//! the monotonic clock. The turn, the clock, the disk bridge and the mail are the loop core's
//! (`driver/loop_core.rs`), shared with the epoll driver, so both follow the session contract
//! the same way: after every input, drain actions, then events, then wait no longer than the
//! session's next deadline. This module has what io_uring does differently: submissions,
//! completions and the memory they name. Run it through [`super::Driver`] (made by
//! [`super::Driver::new`], or from [`UringDriver::with_options`] to size its buffers).
//!
//! # Operations
//!
//! - The listener has one multishot `ACCEPT` armed; it is re-armed when the kernel ends it.
//! - Each open connection has one multishot `RECV` armed, selecting from a provided buffer
//!   ring shared by all connections (`bufring::BufRing`), so an idle connection holds no
//!   receive buffer. Each completion's buffer is handed to the session, which keeps it
//!   (`handle_recv_owned`), and a fresh allocation takes its place in the ring.
//! - Each connection has at most one `SENDMSG` in flight, over chunks the driver has taken
//!   from the session with [`Session::take_send`] (see "Buffer ownership" below).
//! - Outgoing connections start with `CONNECT` on a fresh socket.
//! - The disk pool's eventfd always has one 8-byte `READ` armed; mail from other loops
//!   ([`super::shard`]) shares that eventfd.
//! - The UDP socket, on the loop that has one ([`super::Driver::set_udp`]), has one `RECVMSG`
//!   armed into a buffer the driver owns; its completion delivers that datagram, then up to
//!   a turn's worth more are read without blocking, then it is armed again. Datagrams are
//!   sent with a non-blocking `sendto` at once (a full buffer drops one).
//! - A connection the session hands to another loop ([`Action::HandOff`]) has its receive
//!   cancelled (bytes that still arrive go to the session, which keeps them for the new owner)
//!   and its send in flight finished; when nothing is in flight, its socket and state are
//!   posted to the owning loop.
//! - Timers need no operation: each turn waits in `io_uring_enter` with a timeout
//!   (`IORING_FEAT_EXT_ARG`) no longer than the session's `poll_timeout`.
//! - `Action::Close` and a failed socket `ASYNC_CANCEL` the connection's operations by
//!   `user_data`; the socket is closed, and its slot freed, when the last one completes.
//!
//! Every `user_data` packs the operation, the driver's slot and the slot's generation
//! (`token::Token`), so a completion for a slot's previous occupant is ignored.
//!
//! # Buffer ownership
//!
//! Memory named in a submission must stay valid, and unmoved, until that operation's final
//! completion. The driver keeps that true by owning all such memory itself and freeing a
//! connection's slot only when its count of operations in flight is zero:
//!
//! - send data: `take_send` moves the `Bytes` out of the session into the slot's
//!   `Outgoing`; the session cannot drop or move them, whatever it does to the connection
//!   (close it, remove its torrent). The `iovec` array and `msghdr` live in heap allocations
//!   owned by the same `Outgoing`, which is not touched while a send is in flight. (Sending
//!   straight from `send_chunks` would not be sound: the session drops a connection's send
//!   buffer as soon as it forgets the connection, with the kernel possibly still reading it.)
//! - the connect address: a `Box` in the slot.
//! - receive buffers: the buffer ring's mappings, which live as long as the driver.
//! - the eventfd read's 8 bytes: a heap allocation owned by the driver.
//! - the UDP receive's header, address and buffer: one heap allocation owned by the driver,
//!   touched only while no `RECVMSG` is in flight.
//!
//! Dropping the driver cancels everything and waits (boundedly) for the last completion
//! before freeing any of it; if that cannot be confirmed, it leaks the memory instead.
//!
//! # Threads
//!
//! Where the kernel supports it (6.1+), the ring is created with `SINGLE_ISSUER |
//! DEFER_TASKRUN` and disabled, and enabled by the first [`super::Driver::turn`]: the driver may
//! be built on one thread and run on another (as `demo` does), but from then on only that
//! thread may turn it, and should drop it: dropped on another thread, the driver cannot
//! cancel its operations (the kernel refuses a second issuer), so it leaks its buffers (16
//! MiB) rather than free memory the kernel may still write.

mod bufring;
mod probe;
mod token;

pub use probe::probe;

use std::collections::HashMap;
use std::io;
use std::mem::ManuallyDrop;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use slab::Slab;

use self::bufring::BufRing;
use self::probe::{build_ring, Setup};
use self::token::{Op, Token};
use super::loop_core::{LoopCore, LoopIo, Udp, DATAGRAM_BUF, MAX_DATAGRAMS_PER_TURN};
use super::net::{bind_local, from_sockaddr, new_socket, SockAddr};
use super::udp_batch;
use super::Protocol;
use crate::core::api::{Action, ConnId};
use crate::core::{SendBuf, Session, Time};
use crate::storage::DiskPool;

/// Submission queue entries. Each turn submits at most a few per connection with work; a
/// full queue is flushed to the kernel and refilled, so this bounds only batching.
const SQ_ENTRIES: u32 = 256;

/// Receive buffers in the provided ring, and their size: 64 x 256 KiB = 16 MiB per loop,
/// whatever the number of connections. The session keeps each buffer it is handed (blocks
/// are split off it without a copy), so larger buffers mean fewer completions, and fewer
/// messages straddling two buffers (the rest of such a message is copied): 256 KiB took
/// 0.90x the leecher's CPU of 64 KiB in one run (`perf/2026-12-03-leech-recv.md`). 64 of
/// them outlast a turn's worth of completions before the ring runs dry (when it does, the
/// kernel ends the multishot receive with ENOBUFS and the driver re-arms it).
const RECV_BUFS: u16 = 64;
const RECV_BUF_LEN: u32 = 256 * 1024;
const BUF_GROUP: u16 = 0;

/// Completions handled per loop turn, so one busy turn cannot starve the session's timers.
/// The rest stay in the completion queue (or the kernel's overflow list, which
/// `IORING_FEAT_NODROP` guarantees) for the next turn, which then does not sleep.
const MAX_CQES_PER_TURN: usize = 4096;

/// Bytes taken from a connection's send buffer per `SENDMSG`: large enough to keep the
/// socket's buffer full between completions. Taken bytes stay counted by the session until
/// reported with `handle_sent`, so its back-pressure (no block reads for a peer above its
/// watermark) covers what the driver holds too.
const SEND_BATCH: usize = 1 << 20;

/// How long to wait before re-arming an accept that failed: errors such as EMFILE last until
/// some connection closes, and retrying at once would spin the loop.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// The kernel's limit on iovecs per call (`IOV_MAX`).
const MAX_IOVECS: usize = 1024;

const _: () = assert!(RECV_BUFS.is_power_of_two());
const _: () = assert!(SQ_ENTRIES.is_power_of_two());

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `CONNECT` in flight.
    Connecting,
    /// Receiving and sending.
    Open,
    /// Moving to another loop: the receive is cancelled, a send in flight finishes, and the
    /// socket goes when nothing is in flight.
    HandingOff,
    /// Cancelling; the slot is freed when nothing is in flight.
    Closing,
}

/// A connection's outgoing bytes that the kernel may be reading.
struct Outgoing {
    /// Taken from the session; the front chunks are what the `iov` below points into.
    buf: SendBuf,
    iov: Vec<libc::iovec>,
    msg: Box<libc::msghdr>,
}

// SAFETY: the raw pointers in `iov` and `msg` point only into `buf` and `iov`, which this
// value owns; nothing else refers to them, so the value can move to another thread whole.
unsafe impl Send for Outgoing {}

impl Outgoing {
    fn new() -> Outgoing {
        // SAFETY: msghdr is a plain C struct for which all-zero bytes is a valid value.
        let msg: libc::msghdr = unsafe { std::mem::zeroed() };
        Outgoing {
            buf: SendBuf::default(),
            iov: Vec::new(),
            msg: Box::new(msg),
        }
    }

    /// Points `iov` and `msg` at the front chunks. Only called with no send in flight.
    fn prepare(&mut self) -> *const libc::msghdr {
        self.iov.clear();
        self.iov
            .extend(self.buf.chunks().take(MAX_IOVECS).map(|c| libc::iovec {
                iov_base: c.as_ptr() as *mut libc::c_void,
                iov_len: c.len(),
            }));
        self.msg.msg_iov = self.iov.as_mut_ptr();
        self.msg.msg_iovlen = self.iov.len() as _;
        &*self.msg
    }
}

/// One socket and what is in flight on it.
struct Conn {
    id: ConnId,
    generation: u32,
    stream: TcpStream,
    state: State,
    /// Whether the session still knows the connection (it has neither asked us to close it
    /// nor been told it closed).
    known: bool,
    /// Operations in flight whose final completion has not been seen.
    inflight: u32,
    recv_armed: bool,
    /// The protocol no longer wants the socket read (`Protocol::wants_recv`): the receive is
    /// cancelled and never armed again.
    recv_stopped: bool,
    sending: bool,
    /// An `Action::Send` came while connecting.
    send_wanted: bool,
    /// The address a `CONNECT` in flight reads.
    connect_addr: Option<Box<SockAddr>>,
    out: Outgoing,
}

/// The 8 bytes the eventfd read fills, in a heap allocation whose address never changes.
struct EventBuf(NonNull<u64>);

// SAFETY: the allocation is owned by this value alone (the kernel writes it, which is not
// tied to a thread), so moving the value between threads is sound.
unsafe impl Send for EventBuf {}

/// What the UDP socket's `RECVMSG` names: the header, its one iovec, the sender's address
/// and the datagram's buffer, in one heap allocation whose address never changes.
struct UdpRecv {
    msg: libc::msghdr,
    iov: libc::iovec,
    addr: libc::sockaddr_storage,
    /// Control messages: the `UDP_GRO` segment size of a coalesced receive.
    control: [u64; udp_batch::CONTROL_WORDS],
    buf: [u8; DATAGRAM_BUF],
}

/// The owner of the [`UdpRecv`] allocation (raw, so it can be leaked if the kernel might
/// still write it when the driver goes).
struct UdpRecvBuf(NonNull<UdpRecv>);

// SAFETY: the allocation is owned by this value alone (the kernel writes it, which is not
// tied to a thread), so moving the value between threads is sound.
unsafe impl Send for UdpRecvBuf {}

/// Sizes of the driver's receive memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UringOptions {
    /// Buffers in the provided buffer ring (a power of two, at most 32768).
    pub recv_buffers: u16,
    /// Bytes per receive buffer.
    pub recv_buffer_len: u32,
}

impl Default for UringOptions {
    fn default() -> Self {
        UringOptions {
            recv_buffers: RECV_BUFS,
            recv_buffer_len: RECV_BUF_LEN,
        }
    }
}

/// A session (or any [`Protocol`]), its sockets, its torrents' storage and the disk pool,
/// driven by io_uring.
pub struct UringDriver<P: Protocol = Session> {
    ring: IoUring,
    /// Whether the ring has been enabled (rings made with `DeferTaskrun` start disabled).
    enabled: bool,
    listener: Option<TcpListener>,
    accept_armed: bool,
    /// When to re-arm an accept that failed (out of descriptors, say): not at once, or the
    /// loop would spin on the same error.
    accept_retry: Option<Instant>,
    conns: Slab<Conn>,
    by_id: HashMap<ConnId, usize>,
    next_generation: u32,
    /// Operations in flight that own memory or a slot (everything but cancellations).
    inflight: u64,
    bufs: ManuallyDrop<BufRing>,
    event_buf: EventBuf,
    /// The UDP socket's receive memory, once it has one.
    udp_recv: Option<UdpRecvBuf>,
    /// A `RECVMSG` is in flight on the UDP socket.
    udp_armed: bool,
    /// The completions of the current turn: `user_data`, result, flags (kept, so a turn does
    /// not allocate).
    cqes: Vec<(u64, i32, u32)>,
    /// The shared half of the loop: the protocol, the clock, the disk bridge, the mail.
    /// Declared last, so it is dropped after the ring: the eventfd that the armed read names
    /// (owned by the disk bridge) is closed only once the ring has gone.
    pub(crate) core: LoopCore<P>,
}

impl<P: Protocol> UringDriver<P> {
    /// A driver for `session`, accepting on `listener` if given (see
    /// [`super::net::bind_listeners`]). Fails where io_uring is unavailable; choose the
    /// backend with [`super::resolve`] (which calls [`probe`]) first.
    pub fn new(
        session: P,
        listener: Option<TcpListener>,
        disk: Arc<DiskPool>,
        epoch: Instant,
    ) -> io::Result<UringDriver<P>> {
        Self::with_options(session, listener, disk, epoch, UringOptions::default())
    }

    /// As [`UringDriver::new`], with receive buffers sized by `options` (tests use tiny ones
    /// to run the ring dry). Fails with `InvalidInput` if `recv_buffers` is not a power of two.
    pub fn with_options(
        session: P,
        listener: Option<TcpListener>,
        disk: Arc<DiskPool>,
        epoch: Instant,
        options: UringOptions,
    ) -> io::Result<UringDriver<P>> {
        if !options.recv_buffers.is_power_of_two()
            || options.recv_buffers > 32768
            || options.recv_buffer_len == 0
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "recv_buffers must be a power of two up to 32768, recv_buffer_len above zero",
            ));
        }
        let (ring, setup) = build_ring(SQ_ENTRIES)?;
        let bufs = BufRing::new(
            &ring,
            BUF_GROUP,
            options.recv_buffers,
            options.recv_buffer_len,
        )?;
        let local_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        let core = LoopCore::new(session, local_addr, disk, epoch)?;
        let event_buf = EventBuf(NonNull::from(Box::leak(Box::new(0u64))));
        let mut driver = UringDriver {
            core,
            ring,
            enabled: setup != Setup::DeferTaskrun,
            listener,
            accept_armed: false,
            accept_retry: None,
            conns: Slab::new(),
            by_id: HashMap::new(),
            next_generation: 0,
            inflight: 0,
            bufs: ManuallyDrop::new(bufs),
            event_buf,
            udp_recv: None,
            udp_armed: false,
            cqes: Vec::with_capacity(MAX_CQES_PER_TURN),
        };
        driver.arm_accept();
        driver.arm_disk_event();
        Ok(driver)
    }

    /// Submits what is queued and waits at most `wait` for a completion. Returning early is
    /// not an error: ETIME (the wait timed out), EINTR (a signal), EBUSY (the completion
    /// queue is full and the kernel holds overflowed entries, which reading the queue makes
    /// room for); the caller reads what is there either way.
    fn submit_and_wait(&mut self, wait: Duration) -> io::Result<()> {
        let ts = types::Timespec::from(wait);
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Queues a submission, flushing the queue to the kernel first if it is full.
    ///
    /// # Safety
    ///
    /// Every buffer `entry` names must stay valid and unmoved until the operation's final
    /// completion has been reaped (see "Buffer ownership" in the module documentation).
    unsafe fn push(&mut self, entry: squeue::Entry) {
        loop {
            // SAFETY: the caller's contract is this function's.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
            // Full: hand what is queued to the kernel, which takes submissions even while
            // completions overflow (since 5.19; the probe requires 6.0 for multishot
            // receive), so this makes room without reaping. A ring not yet enabled cannot
            // submit, but nothing fills the queue before the first turn enables it (`new`
            // queues two entries).
            if self.ring.submit().is_err() {
                std::thread::yield_now();
            }
        }
    }

    fn arm_accept(&mut self) {
        let Some(fd) = self.listener.as_ref().map(|l| l.as_raw_fd()) else {
            return;
        };
        if self.accept_armed {
            return;
        }
        let entry = opcode::AcceptMulti::new(types::Fd(fd))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(Token::global(Op::Accept).pack());
        // SAFETY: a multishot accept names no memory (no address out-parameter); the listener
        // it names lives as long as the driver, which cancels it before closing it (Drop).
        unsafe { self.push(entry) };
        self.accept_armed = true;
        self.inflight += 1;
    }

    fn arm_disk_event(&mut self) {
        let fd = self.core.disk.eventfd().as_raw_fd();
        let entry = opcode::Read::new(types::Fd(fd), self.event_buf.0.as_ptr().cast(), 8)
            .build()
            .user_data(Token::global(Op::DiskEvent).pack());
        // SAFETY: `event_buf` is an 8-byte heap allocation owned by the driver and freed only
        // in Drop after the read's final completion; nothing else reads or writes it. The
        // eventfd is owned by the disk bridge, which lives as long as the driver.
        unsafe { self.push(entry) };
        self.inflight += 1;
    }

    /// Takes the UDP socket (see [`super::Driver::set_udp`]) and arms its first receive.
    pub(crate) fn set_udp(&mut self, socket: UdpSocket) -> io::Result<()> {
        if self.udp_armed {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "this loop has a UDP socket already",
            ));
        }
        self.core.udp = Some(Udp::new(socket)?);
        if self.udp_recv.is_none() {
            // SAFETY: UdpRecv is plain C structs and bytes, for which all-zero is valid.
            let recv: Box<UdpRecv> = Box::new(unsafe { std::mem::zeroed() });
            self.udp_recv = Some(UdpRecvBuf(NonNull::from(Box::leak(recv))));
        }
        self.arm_udp();
        Ok(())
    }

    fn arm_udp(&mut self) {
        let (Some(udp), Some(recv)) = (self.core.udp.as_ref(), self.udp_recv.as_ref()) else {
            return;
        };
        if self.udp_armed {
            return;
        }
        let fd = udp.socket.as_raw_fd();
        let r = recv.0.as_ptr();
        // SAFETY: no receive is in flight (`udp_armed` is false), so nothing but this driver
        // touches the allocation; the pointers set here point into the same allocation.
        let msg = unsafe {
            (*r).iov = libc::iovec {
                iov_base: (*r).buf.as_mut_ptr().cast(),
                iov_len: DATAGRAM_BUF,
            };
            (*r).msg = std::mem::zeroed();
            (*r).msg.msg_name = std::ptr::addr_of_mut!((*r).addr).cast();
            (*r).msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as _;
            (*r).msg.msg_iov = std::ptr::addr_of_mut!((*r).iov);
            (*r).msg.msg_iovlen = 1;
            (*r).control = [0; udp_batch::CONTROL_WORDS];
            (*r).msg.msg_control = std::ptr::addr_of_mut!((*r).control).cast();
            (*r).msg.msg_controllen = std::mem::size_of_val(&(*r).control) as _;
            std::ptr::addr_of_mut!((*r).msg)
        };
        let entry = opcode::RecvMsg::new(types::Fd(fd), msg)
            .build()
            .user_data(Token::global(Op::UdpRecv).pack());
        // SAFETY: the header, iovec, address and buffer live in the `UdpRecv` allocation,
        // freed only in Drop after every operation's final completion, and not touched until
        // this one completes. The socket lives in the loop core, dropped after the ring.
        unsafe { self.push(entry) };
        self.udp_armed = true;
        self.inflight += 1;
    }

    /// The UDP receive completed: delivers its datagram, reads a turn's worth more without
    /// blocking, and arms the next receive.
    fn udp_received(&mut self, result: i32, now: Time) {
        self.udp_armed = false;
        let Some(recv) = self.udp_recv.as_ref() else {
            return;
        };
        if result == -libc::ECANCELED || result == -libc::EBADF || result == -libc::ENOTSOCK {
            return;
        }
        if result >= 0 {
            // SAFETY: the receive's final completion has been seen, so the kernel no longer
            // writes the allocation; it is read here before the next receive is armed.
            let r = unsafe { &*recv.0.as_ptr() };
            let n = (result as usize).min(DATAGRAM_BUF);
            let truncated = r.msg.msg_flags & libc::MSG_TRUNC != 0 || n == DATAGRAM_BUF;
            // SAFETY: the control pointer names `r.control`, as the kernel left it.
            let segment = unsafe { udp_batch::gro_segment(&r.msg) };
            if let Some(from) = from_sockaddr(&r.addr) {
                self.core
                    .deliver_datagrams(from, &r.buf[..n], segment, truncated, now);
            }
            self.core.drain_datagrams(MAX_DATAGRAMS_PER_TURN - 1, now);
        } else if result != -libc::EAGAIN && result != -libc::EINTR {
            // An ICMP error about something we sent (ECONNREFUSED: port unreachable) is
            // reported once here and queued on the error queue: read it. The socket is still
            // good.
            self.core.drain_udp_errors(now);
        }
        self.arm_udp();
    }

    fn token(&self, op: Op, slot: usize) -> u64 {
        Token {
            op,
            slot: slot as u32,
            generation: self.conns[slot].generation,
        }
        .pack()
    }

    fn insert_conn(&mut self, id: ConnId, stream: TcpStream, state: State) -> usize {
        self.next_generation = self.next_generation.wrapping_add(1);
        let slot = self.conns.insert(Conn {
            id,
            generation: self.next_generation,
            stream,
            state,
            known: true,
            inflight: 0,
            recv_armed: false,
            recv_stopped: false,
            sending: false,
            send_wanted: false,
            connect_addr: None,
            out: Outgoing::new(),
        });
        self.by_id.insert(id, slot);
        slot
    }

    fn arm_recv(&mut self, slot: usize) {
        let c = &self.conns[slot];
        if c.state != State::Open || c.recv_armed || c.recv_stopped {
            return;
        }
        let entry = opcode::RecvMulti::new(types::Fd(c.stream.as_raw_fd()), self.bufs.group())
            .build()
            .user_data(self.token(Op::Recv, slot));
        // SAFETY: the receive writes only into provided buffers, which live as long as the
        // driver (Drop waits for every operation to end before unmapping them). The socket
        // stays open until the slot is freed, which waits for this operation's end.
        unsafe { self.push(entry) };
        let c = &mut self.conns[slot];
        c.recv_armed = true;
        c.inflight += 1;
        self.inflight += 1;
    }

    /// Starts a send if none is in flight and there is something to send.
    fn send(&mut self, slot: usize) {
        let c = &mut self.conns[slot];
        match c.state {
            State::Connecting => {
                c.send_wanted = true;
                return;
            }
            State::Closing => return,
            State::Open | State::HandingOff if c.sending => return,
            State::Open | State::HandingOff => {}
        }
        if c.out.buf.is_empty() {
            if c.state == State::HandingOff {
                // What the session still holds for the peer goes with the hand-off.
                return;
            }
            for chunk in self.core.proto.take_send(c.id, SEND_BATCH) {
                c.out.buf.push_shared(chunk);
            }
            if c.out.buf.is_empty() {
                return;
            }
        }
        let msg = c.out.prepare();
        let fd = c.stream.as_raw_fd();
        let entry = opcode::SendMsg::new(types::Fd(fd), msg)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
            .user_data(self.token(Op::Send, slot));
        // SAFETY: `msg`, the iovec array it points to and the chunks those point into are all
        // owned by the slot's `Outgoing` (the `Bytes` were moved out of the session by
        // `take_send`, so the session cannot free them). None of them is changed while
        // `sending` is set, and the slot is freed only after this operation's completion.
        unsafe { self.push(entry) };
        let c = &mut self.conns[slot];
        c.sending = true;
        c.inflight += 1;
        self.inflight += 1;
    }

    fn connect(&mut self, id: ConnId, addr: SocketAddr, from: Option<IpAddr>, now: Time) {
        let socket = new_socket(&addr).and_then(|s| match from {
            Some(ip) => bind_local(&s, ip).map(|()| s),
            None => Ok(s),
        });
        let Ok(stream) = socket else {
            return self.core.proto.handle_closed(id, now);
        };
        let slot = self.insert_conn(id, stream, State::Connecting);
        let sa = Box::new(SockAddr::from(addr));
        let (ptr, len) = (&sa.storage as *const libc::sockaddr_storage, sa.len);
        let c = &mut self.conns[slot];
        c.connect_addr = Some(sa);
        let fd = c.stream.as_raw_fd();
        let entry = opcode::Connect::new(types::Fd(fd), ptr.cast(), len)
            .build()
            .user_data(self.token(Op::Connect, slot));
        // SAFETY: the address lives in a Box held by the slot until the slot is freed, which
        // waits for this operation's completion; the Box's contents never move.
        unsafe { self.push(entry) };
        self.conns[slot].inflight += 1;
        self.inflight += 1;
    }

    /// Starts closing a slot: cancels what is in flight and frees the slot once all of it
    /// has completed.
    fn close(&mut self, slot: usize) {
        let c = &mut self.conns[slot];
        if c.state == State::Closing {
            return;
        }
        let was_connecting = c.state == State::Connecting;
        c.state = State::Closing;
        if self.by_id.get(&c.id) == Some(&slot) {
            self.by_id.remove(&c.id);
        }
        let (recv, send) = (c.recv_armed, c.sending);
        for (op, armed) in [
            (Op::Recv, recv),
            (Op::Send, send),
            (Op::Connect, was_connecting),
        ] {
            if armed {
                let entry = opcode::AsyncCancel::new(self.token(op, slot))
                    .build()
                    .user_data(Token::global(Op::Cancel).pack());
                // SAFETY: a cancellation names only a user_data value, no memory.
                unsafe { self.push(entry) };
            }
        }
        self.maybe_free(slot);
    }

    fn maybe_free(&mut self, slot: usize) {
        let c = &self.conns[slot];
        if c.inflight > 0 {
            return;
        }
        match c.state {
            // Closes the socket and frees the send chunks: nothing in flight refers to them.
            State::Closing => drop(self.conns.remove(slot)),
            State::HandingOff if c.out.buf.is_empty() => {
                let c = self.conns.remove(slot);
                if self.by_id.get(&c.id) == Some(&slot) {
                    self.by_id.remove(&c.id);
                }
                // `None`: the session closed it meanwhile; dropping the stream closes it.
                if let Some(handoff) = self.core.proto.take_handoff(c.id) {
                    self.core.post.forward(c.stream, handoff);
                }
            }
            _ => {}
        }
    }

    /// Stops reading a connection for good: the armed multishot receive is cancelled (what
    /// it still delivers is passed on) and `arm_recv` never arms another.
    fn stop_recv(&mut self, slot: usize) {
        let c = &mut self.conns[slot];
        c.recv_stopped = true;
        if c.recv_armed {
            let entry = opcode::AsyncCancel::new(self.token(Op::Recv, slot))
                .build()
                .user_data(Token::global(Op::Cancel).pack());
            // SAFETY: a cancellation names only a user_data value, no memory.
            unsafe { self.push(entry) };
        }
    }

    /// Starts moving a connection to the loop that owns its torrent: no more receives; the
    /// socket goes once what is in flight has completed (see [`Self::maybe_free`]).
    fn hand_off(&mut self, slot: usize) {
        let c = &mut self.conns[slot];
        if c.state != State::Open {
            return;
        }
        c.state = State::HandingOff;
        if c.recv_armed {
            let entry = opcode::AsyncCancel::new(self.token(Op::Recv, slot))
                .build()
                .user_data(Token::global(Op::Cancel).pack());
            // SAFETY: a cancellation names only a user_data value, no memory.
            unsafe { self.push(entry) };
        }
        self.maybe_free(slot);
    }

    /// The connection failed on our side: tell the session, if it still knows it, and close.
    fn lost(&mut self, slot: usize, now: Time) {
        let c = &mut self.conns[slot];
        if c.state == State::Closing {
            return;
        }
        if std::mem::take(&mut c.known) {
            let id = c.id;
            self.core.proto.handle_closed(id, now);
        }
        self.close(slot);
    }

    /// Routes one completion.
    fn complete_one(&mut self, user_data: u64, result: i32, flags: u32, now: Time) {
        let Some(token) = Token::unpack(user_data) else {
            debug_assert!(false, "unknown user_data {user_data:#x}");
            return;
        };
        let more = cqueue::more(flags);
        if token.op != Op::Cancel && !more {
            self.inflight -= 1;
        }
        match token.op {
            Op::Cancel => {}
            Op::Accept => {
                if !more {
                    self.accept_armed = false;
                }
                if result >= 0 {
                    // SAFETY: a successful accept returns a new descriptor that nothing else
                    // owns.
                    let fd = unsafe { OwnedFd::from_raw_fd(result) };
                    self.accepted(TcpStream::from(fd), now);
                    if !more {
                        self.arm_accept();
                    }
                } else if !more {
                    self.accept_retry = Some(Instant::now() + ACCEPT_RETRY);
                }
            }
            Op::DiskEvent => {
                self.arm_disk_event();
                self.wake(now);
            }
            Op::UdpRecv => self.udp_received(result, now),
            Op::Connect | Op::Recv | Op::Send => {
                let slot = token.slot as usize;
                let live = self
                    .conns
                    .get(slot)
                    .is_some_and(|c| token.matches(c.generation));
                if !live {
                    // Impossible while slots are freed only with nothing in flight; a
                    // provided buffer must still go back.
                    debug_assert!(false, "completion for a freed slot");
                    if let Some(bid) = cqueue::buffer_select(flags) {
                        self.bufs.give_back(bid);
                    }
                    return;
                }
                if !more {
                    self.conns[slot].inflight -= 1;
                }
                match token.op {
                    Op::Connect => self.connected(slot, result, now),
                    Op::Recv => self.received(slot, result, flags, now),
                    _ => self.sent(slot, result, now),
                }
                if self.conns.contains(slot) {
                    self.maybe_free(slot);
                }
            }
        }
    }

    fn accepted(&mut self, stream: TcpStream, now: Time) {
        if !self.core.utp.accepts_tcp() {
            return; // `--transport utp`: dropped, which closes it.
        }
        let Ok(addr) = stream.peer_addr() else {
            return;
        };
        // A dual-stack listener reports IPv4 peers as `::ffff:a.b.c.d`.
        let addr = crate::net_addr::unmap(addr);
        let Some(id) = self.core.proto.accept(addr, now) else {
            return;
        };
        let _ = stream.set_nodelay(true);
        let slot = self.insert_conn(id, stream, State::Open);
        self.arm_recv(slot);
    }

    fn connected(&mut self, slot: usize, result: i32, now: Time) {
        let c = &mut self.conns[slot];
        c.connect_addr = None;
        if c.state == State::Closing {
            return;
        }
        if result < 0 {
            return self.lost(slot, now);
        }
        c.state = State::Open;
        let _ = c.stream.set_nodelay(true);
        let (id, wanted) = (c.id, std::mem::take(&mut c.send_wanted));
        self.arm_recv(slot);
        self.core.proto.handle_connected(id, now);
        if wanted {
            self.send(slot);
        }
    }

    fn received(&mut self, slot: usize, result: i32, flags: u32, now: Time) {
        let more = cqueue::more(flags);
        let c = &mut self.conns[slot];
        if !more {
            c.recv_armed = false;
        }
        let (id, open) = (c.id, c.state == State::Open);
        // A connection being handed off still delivers what arrives: the session keeps it
        // for the new owner.
        let deliver = open || c.state == State::HandingOff;
        if let Some(bid) = cqueue::buffer_select(flags) {
            if deliver && result > 0 {
                // SAFETY: this completion handed us `bid`, holding `result` bytes.
                let chunk = unsafe { self.bufs.take(bid, result as usize) };
                // The session keeps the buffer itself: no copy on the loop.
                self.core.proto.handle_recv_owned(id, chunk, now);
            } else {
                self.bufs.give_back(bid);
            }
        }
        if !deliver || !self.conns.contains(slot) {
            return;
        }
        if open && !self.conns[slot].recv_stopped && !self.core.proto.wants_recv(id) {
            self.stop_recv(slot);
        }
        let stopped = self.conns[slot].recv_stopped;
        match result {
            0 => self.lost(slot, now),
            n if n > 0 || n == -libc::ENOBUFS => {
                if !more && self.conns[slot].state == State::Open {
                    self.arm_recv(slot);
                }
            }
            // The cancellation that a hand-off or a stop asked for.
            n if n == -libc::ECANCELED && (!open || stopped) => {}
            _ => self.lost(slot, now),
        }
    }

    fn sent(&mut self, slot: usize, result: i32, now: Time) {
        let c = &mut self.conns[slot];
        c.sending = false;
        if !matches!(c.state, State::Open | State::HandingOff) {
            return;
        }
        match result {
            n if n > 0 => {
                c.out.buf.consume(n as usize);
                // The protocol counts taken bytes as held until told they left.
                let id = c.id;
                self.core.proto.handle_sent(id, n as usize, now);
                if self.conns.contains(slot) {
                    self.send(slot);
                }
            }
            n if n == -libc::EAGAIN || n == -libc::EINTR => self.send(slot),
            _ => self.lost(slot, now),
        }
    }

    /// Cancels everything in flight and waits up to about a second for the last final
    /// completion. Returns whether nothing is in flight any more.
    fn quiesce(&mut self) -> bool {
        if !self.enabled {
            // Nothing was ever submitted: the queued entries die with the ring.
            return true;
        }
        let entry = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(Token::global(Op::Cancel).pack());
        // SAFETY: a cancellation names no memory.
        if unsafe { self.ring.submission().push(&entry) }.is_err() {
            let _ = self.ring.submit();
        }
        for _ in 0..200 {
            if self.inflight == 0 {
                return true;
            }
            if self.submit_and_wait(Duration::from_millis(5)).is_err() {
                // Another thread than the ring's issuer, or the ring is unusable.
                return false;
            }
            for c in self.ring.completion() {
                let op = Token::unpack(c.user_data()).map(|t| t.op);
                if op != Some(Op::Cancel) && !cqueue::more(c.flags()) {
                    self.inflight -= 1;
                }
                // A multishot accept or receive that is not final yet is cancelled by the
                // request above (CANCEL_ANY) along with the rest; a re-armed one cannot
                // appear because nothing is re-armed here.
            }
        }
        self.inflight == 0
    }
}

impl<P: Protocol> LoopIo<P> for UringDriver<P> {
    type Completion = (u64, i32, u32);

    /// The armed 8-byte read consumes the eventfd (and is re-armed) before anything is
    /// drained.
    const CLEAR_EVENTFD: bool = false;

    fn core(&mut self) -> &mut LoopCore<P> {
        &mut self.core
    }

    fn batch(&mut self) -> &mut Vec<(u64, i32, u32)> {
        &mut self.cqes
    }

    /// The first turn enables the ring for the calling thread (see the module
    /// documentation); later turns must come from the same thread.
    fn begin_turn(&mut self) -> io::Result<()> {
        if !self.enabled {
            self.ring.submitter().register_enable_rings()?;
            self.enabled = true;
        }
        Ok(())
    }

    fn act(&mut self, action: Action, now: Time) {
        match action {
            Action::Connect { conn, addr, from } => self.connect(conn, addr, from, now),
            Action::Send { conn } => {
                if let Some(&slot) = self.by_id.get(&conn) {
                    self.send(slot);
                }
            }
            Action::Close { conn } => {
                if let Some(&slot) = self.by_id.get(&conn) {
                    self.conns[slot].known = false;
                    self.close(slot);
                }
            }
            Action::HandOff { conn, .. } => {
                if let Some(&slot) = self.by_id.get(&conn) {
                    self.hand_off(slot);
                }
            }
            Action::Disk(op) => self.core.disk.submit(op),
        }
    }

    fn adopt(&mut self, stream: TcpStream, conn: ConnId, _now: Time) {
        let slot = self.insert_conn(conn, stream, State::Open);
        self.arm_recv(slot);
    }

    /// Submits what is queued and waits in `io_uring_enter` for a completion, at most `wait`
    /// (less if a failed accept is due to be re-armed, not at all if completions are left
    /// over from a capped turn); then takes up to a turn's worth of completions.
    fn wait(&mut self, mut wait: Duration, out: &mut Vec<(u64, i32, u32)>) -> io::Result<bool> {
        if let Some(at) = self.accept_retry {
            let left = at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.accept_retry = None;
                self.arm_accept();
            } else {
                wait = wait.min(left);
            }
        }
        if !self.ring.completion().is_empty() {
            // Left over from a capped turn.
            wait = Duration::ZERO;
        }
        self.submit_and_wait(wait)?;
        out.extend(
            self.ring
                .completion()
                .take(MAX_CQES_PER_TURN)
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        Ok(true)
    }

    fn complete(&mut self, (user_data, result, flags): (u64, i32, u32), now: Time) {
        self.complete_one(user_data, result, flags, now);
    }
}

impl<P: Protocol> Drop for UringDriver<P> {
    fn drop(&mut self) {
        if self.quiesce() {
            // SAFETY: nothing is in flight, so the kernel no longer selects receive buffers
            // nor writes the eventfd buffer; both are dropped once, here.
            unsafe {
                ManuallyDrop::drop(&mut self.bufs);
                drop(Box::from_raw(self.event_buf.0.as_ptr()));
                if let Some(recv) = self.udp_recv.take() {
                    drop(Box::from_raw(recv.0.as_ptr()));
                }
            }
        } else {
            // The kernel may still own some of this memory: leaking it is the safe choice.
            // The receive buffers (ManuallyDrop) and the eventfd buffer (raw) are simply not
            // freed; the slots' send chunks and connect addresses are leaked with the slab.
            std::mem::forget(std::mem::take(&mut self.conns));
        }
    }
}
