//! Batched datagrams on the loop's UDP socket, where most uTP CPU went (one system call per
//! 1200-byte packet each way):
//!
//! - **GSO on send** (`UDP_SEGMENT`): a run of datagrams to one peer, all the same size but
//!   the last (which may be shorter), goes in one `sendmsg`; the kernel cuts it into the
//!   datagrams. A connection's packets in one pump are such a run (full data packets, or its
//!   acks). Where the kernel or the device refuses it (`EIO`, `EINVAL`, `ENOPROTOOPT`,
//!   `EOPNOTSUPP`), GSO is switched off for the socket and the run goes datagram by datagram.
//! - **GRO on receive** (`UDP_GRO`): the kernel may hand a run of one flow's equal-size
//!   datagrams in one buffer, with the segment size in a control message; [`segments`] cuts
//!   it back into the datagrams. Without the option (or the message) a buffer is one datagram.
//!
//! - **ICMP errors** (`IP_RECVERR`, `IPV6_RECVERR`): the kernel queues what the network says
//!   about our datagrams (port or host unreachable, too big) on the socket's error queue,
//!   read with [`recv_error`]; [`path_error`] says what one means for uTP. A queued ICMP error
//!   also sets the socket's pending error, which the next receive *or send* returns once: a
//!   send that fails so ([`pending_icmp`]) was not sent, and is retried once.
//!
//! Both drivers use these: epoll reads with [`recv`], io_uring's armed `RECVMSG` carries a
//! control buffer parsed by [`gro_segment`]; sends go through [`send_segments`]. Either reads
//! the error queue when a receive or send reports an error, at most
//! [`MAX_ERRORS_PER_DRAIN`] entries each time.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use super::net::{from_sockaddr, SockAddr};

/// Most datagrams in one GSO send (the kernel's `UDP_MAX_SEGMENTS`).
pub(crate) const MAX_SEGMENTS: usize = 64;

/// Most bytes in one GSO send: the largest UDP payload over IPv4.
pub(crate) const MAX_GSO_BYTES: usize = 65_507;

/// Room for the control messages a receive can carry (`UDP_GRO`'s int, with headers), as
/// `u64`s so the buffer is aligned for `cmsghdr`.
pub(crate) const CONTROL_WORDS: usize = 8;

/// Most error-queue entries read in one go: the queue (bounded by the socket's receive
/// buffer) never holds up the datagrams; what is left is read at the next error.
pub(crate) const MAX_ERRORS_PER_DRAIN: usize = 64;

/// Room for an error-queue read's control message (the extended error and the offender's
/// address, with headers), as `u64`s for `cmsghdr`'s alignment.
const ERR_CONTROL_WORDS: usize = 16;

/// Sets an integer socket option; whether the kernel took it.
pub(crate) fn set_int_option(fd: RawFd, level: libc::c_int, name: libc::c_int, v: i32) -> bool {
    let v: libc::c_int = v;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live local.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    r == 0
}

/// Asks for ICMP errors on the error queue: `IP_RECVERR` (which a dual-stack IPv6 socket's
/// IPv4-mapped traffic reports through too) and, on an IPv6 socket, `IPV6_RECVERR`. False
/// where the kernel refused either.
pub(crate) fn enable_recverr(fd: RawFd, v6: bool) -> bool {
    let v4 = set_int_option(fd, libc::SOL_IP, libc::IP_RECVERR, 1);
    let v6 = !v6 || set_int_option(fd, libc::SOL_IPV6, libc::IPV6_RECVERR, 1);
    v4 && v6
}

/// Sets don't-fragment on every datagram without the kernel applying its own path MTU
/// (`IP_PMTUDISC_PROBE`, and `IPV6_PMTUDISC_PROBE` on an IPv6 socket): uTP finds each
/// path's MTU itself ([`crate::utp::mtu`]), so a datagram too big for a link is dropped or
/// answered with ICMP "fragmentation needed" rather than cut in fragments. False where the
/// kernel refused either.
pub(crate) fn enable_pmtu_probe(fd: RawFd, v6: bool) -> bool {
    let v4 = set_int_option(
        fd,
        libc::SOL_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_PROBE,
    );
    let v6 = !v6
        || set_int_option(
            fd,
            libc::SOL_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_PROBE,
        );
    v4 && v6
}

/// One entry of the socket's error queue (`struct sock_extended_err`, and whom it concerns).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct QueuedError {
    /// Where the datagram that caused it was going (address and port).
    pub(crate) to: Option<SocketAddr>,
    /// The error (`ECONNREFUSED` for port unreachable, `EMSGSIZE` for too big, ...).
    pub(crate) errno: i32,
    /// Who reported it: `SO_EE_ORIGIN_LOCAL`, `_ICMP` or `_ICMP6`.
    pub(crate) origin: u8,
    /// The ICMP type and code.
    pub(crate) icmp: (u8, u8),
    /// For a too-big report, the MTU.
    pub(crate) info: u32,
    /// The node that sent the ICMP message (a router, or the peer's host).
    pub(crate) offender: Option<SocketAddr>,
}

/// Parses a `sock_extended_err` (16 bytes, native order) and the offender's address after
/// it; `None` if the bytes are too few.
pub(crate) fn parse_extended_err(data: &[u8]) -> Option<QueuedError> {
    let u32_at = |i: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(data.get(i..i + 4)?.try_into().ok()?))
    };
    let errno = u32_at(0)?;
    let origin = *data.get(4)?;
    let icmp = (*data.get(5)?, *data.get(6)?);
    let info = u32_at(8)?;
    let offender = data.get(16..).and_then(|rest| {
        // SAFETY: sockaddr_storage is a plain C struct for which all-zero bytes is valid.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let n = rest
            .len()
            .min(std::mem::size_of::<libc::sockaddr_storage>());
        // SAFETY: `n` bytes fit in `storage`, and `rest` has them; the regions are distinct.
        unsafe {
            std::ptr::copy_nonoverlapping(
                rest.as_ptr(),
                (&mut storage as *mut libc::sockaddr_storage).cast::<u8>(),
                n,
            );
        }
        from_sockaddr(&storage)
    });
    Some(QueuedError {
        to: None,
        errno: i32::try_from(errno).ok()?,
        origin,
        icmp,
        info,
        offender,
    })
}

/// Reads one entry of the error queue without blocking (`WouldBlock` when it is empty).
/// An entry without the extended error (it cannot happen) reads as `InvalidData`.
pub(crate) fn recv_error(fd: RawFd) -> io::Result<QueuedError> {
    // SAFETY: sockaddr_storage is a plain C struct for which all-zero bytes is valid.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut control = [0u64; ERR_CONTROL_WORDS];
    // The datagram that caused it comes back too; its start is enough (the rest is cut).
    let mut buf = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is a plain C struct for which all-zero bytes is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: every pointer in `msg` names a live local of the length given, none kept past
    // the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `msg` is as recvmsg left it; its control pointer names `control`.
    let mut e = unsafe { extended_err(&msg) }.ok_or(io::ErrorKind::InvalidData)?;
    e.to = from_sockaddr(&addr);
    Ok(e)
}

/// The extended error among the control messages `msg` names.
///
/// # Safety
///
/// As [`gro_segment`].
unsafe fn extended_err(msg: &libc::msghdr) -> Option<QueuedError> {
    if msg.msg_control.is_null() {
        return None;
    }
    // SAFETY: the caller vouches for the control buffer; CMSG_FIRSTHDR/CMSG_NXTHDR stay
    // within `msg_controllen` and return null past it.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !c.is_null() {
        // SAFETY: a non-null header from CMSG_FIRSTHDR/NXTHDR lies within the buffer.
        let h = unsafe { &*c };
        let ours = (h.cmsg_level == libc::SOL_IP && h.cmsg_type == libc::IP_RECVERR)
            || (h.cmsg_level == libc::SOL_IPV6 && h.cmsg_type == libc::IPV6_RECVERR);
        // SAFETY: CMSG_LEN is arithmetic.
        let header = unsafe { libc::CMSG_LEN(0) } as usize;
        if ours && h.cmsg_len as usize > header {
            let end = msg.msg_control as usize + msg.msg_controllen;
            // SAFETY: as above, CMSG_DATA of a header within the buffer.
            let data = unsafe { libc::CMSG_DATA(c) };
            // The data's length as the header says, but never past the buffer.
            let len = (h.cmsg_len as usize - header).min(end.saturating_sub(data as usize));
            // SAFETY: `len` bytes from `data` lie within the control buffer (checked above).
            let bytes = unsafe { std::slice::from_raw_parts(data.cast_const(), len) };
            return parse_extended_err(bytes);
        }
        // SAFETY: as above.
        c = unsafe { libc::CMSG_NXTHDR(msg, c) };
    }
    None
}

/// What an error-queue entry means for uTP: port unreachable (hard), host or network
/// unreachable or prohibited (soft), too big (from the network, or the kernel refusing a
/// datagram larger than the interface; with the MTU it names); `None` for anything else.
pub(crate) fn path_error(e: &QueuedError) -> Option<crate::utp::PathError> {
    use crate::utp::PathError;
    let icmp = e.origin == libc::SO_EE_ORIGIN_ICMP || e.origin == libc::SO_EE_ORIGIN_ICMP6;
    if e.errno == libc::EMSGSIZE && (icmp || e.origin == libc::SO_EE_ORIGIN_LOCAL) {
        let mtu = (e.info > 0).then_some(e.info);
        return Some(PathError::TooBig { mtu });
    }
    if !icmp {
        return None;
    }
    match e.errno {
        libc::ECONNREFUSED => Some(PathError::PortUnreachable),
        libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN | libc::ENONET | libc::EACCES => {
            Some(PathError::HostUnreachable)
        }
        _ => None,
    }
}

/// Whether a send's error is a queued ICMP error the send merely reported (the socket's
/// pending error, for an earlier datagram to anyone): this datagram was not sent, and may
/// be sent again at once.
pub(crate) fn pending_icmp(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNREFUSED
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EACCES
        )
    )
}

/// Asks the kernel to coalesce received datagrams (`UDP_GRO`); false where it cannot.
pub(crate) fn enable_gro(fd: RawFd) -> bool {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live local.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_UDP,
            libc::UDP_GRO,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    r == 0
}

/// The segment size of a coalesced receive, from the control messages `msg` names (filled by
/// `recvmsg`): `None` when there is no `UDP_GRO` message (the buffer is one datagram).
///
/// # Safety
///
/// `msg.msg_control` must point to at least `msg.msg_controllen` readable bytes, aligned for
/// `cmsghdr`, as `recvmsg` left them.
pub(crate) unsafe fn gro_segment(msg: &libc::msghdr) -> Option<usize> {
    if msg.msg_control.is_null() {
        return None;
    }
    // SAFETY: the caller vouches for the control buffer; CMSG_FIRSTHDR/CMSG_NXTHDR stay
    // within `msg_controllen` and return null past it.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !c.is_null() {
        // SAFETY: a non-null header from CMSG_FIRSTHDR/NXTHDR lies within the buffer.
        let h = unsafe { &*c };
        let want = std::mem::size_of::<libc::c_int>() as u32;
        // SAFETY: CMSG_LEN is arithmetic.
        if h.cmsg_level == libc::SOL_UDP
            && h.cmsg_type == libc::UDP_GRO
            && h.cmsg_len as usize >= unsafe { libc::CMSG_LEN(want) } as usize
        {
            // SAFETY: the header says its data holds an int, within the buffer (checked
            // length); it may be unaligned, so it is read as such.
            let v: libc::c_int =
                unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>()) };
            return usize::try_from(v).ok().filter(|&s| s > 0);
        }
        // SAFETY: as above.
        c = unsafe { libc::CMSG_NXTHDR(msg, c) };
    }
    None
}

/// The datagrams in a received buffer: cut every `segment` bytes (the last may be shorter),
/// or the whole buffer as one when there is no segment size (or it covers the buffer).
pub(crate) fn segments(data: &[u8], segment: Option<usize>) -> impl Iterator<Item = &[u8]> {
    let size = match segment {
        Some(s) if s > 0 && s < data.len() => s,
        // One datagram, even an empty one.
        _ => data.len().max(1),
    };
    let empty = data.is_empty();
    data.chunks(size).chain(empty.then_some(data))
}

/// One receive: how many bytes, from whom, the GRO segment size, whether it was cut short.
pub(crate) struct Received {
    pub(crate) len: usize,
    pub(crate) from: Option<SocketAddr>,
    pub(crate) segment: Option<usize>,
    pub(crate) truncated: bool,
}

/// Reads one datagram (or one coalesced run of them) from `fd` without blocking.
pub(crate) fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<Received> {
    // SAFETY: sockaddr_storage is a plain C struct for which all-zero bytes is valid.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut control = [0u64; CONTROL_WORDS];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is a plain C struct for which all-zero bytes is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: every pointer in `msg` names a live local (or `buf`) of the length given, and
    // none is kept past the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let len = (n as usize).min(buf.len());
    Ok(Received {
        len,
        from: from_sockaddr(&addr),
        // SAFETY: `msg` is as recvmsg left it; its control pointer names `control`.
        segment: unsafe { gro_segment(&msg) },
        truncated: msg.msg_flags & libc::MSG_TRUNC != 0 || len == buf.len(),
    })
}

/// Sends `parts` to `to` in one `sendmsg`: with `segment` (GSO), as one datagram per part
/// (every part but the last exactly `segment` bytes, the last at most that); without, as one
/// datagram of all the parts. At most [`MAX_SEGMENTS`] parts.
pub(crate) fn send_segments(
    fd: RawFd,
    to: SocketAddr,
    parts: &[&[u8]],
    segment: Option<u16>,
) -> io::Result<usize> {
    if parts.len() > MAX_SEGMENTS {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let addr = SockAddr::from(to);
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_SEGMENTS];
    for (v, p) in iov.iter_mut().zip(parts) {
        *v = libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        };
    }
    let mut control = [0u64; CONTROL_WORDS];
    // SAFETY: msghdr is a plain C struct for which all-zero bytes is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name =
        (&addr.storage as *const libc::sockaddr_storage as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = addr.len;
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = parts.len() as _;
    if let Some(seg) = segment {
        // SAFETY: CMSG_SPACE and CMSG_LEN are arithmetic.
        let (space, len) = unsafe { (libc::CMSG_SPACE(2), libc::CMSG_LEN(2)) };
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: `control` (64 bytes, aligned for cmsghdr) holds CMSG_SPACE(2) (24) bytes,
        // so the first header and its two data bytes lie within it.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_UDP;
            (*c).cmsg_type = libc::UDP_SEGMENT;
            (*c).cmsg_len = len as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg);
        }
    }
    // SAFETY: every pointer in `msg` names a live local or a caller's slice, read only
    // during the call.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Whether a GSO send's error means the kernel or the device cannot do GSO (so it is
/// switched off), rather than a passing one (a full buffer, an unreachable peer).
pub(crate) fn gso_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
    )
}

/// How many of `items` (from the first) form one GSO run: the same destination, every one
/// the first's size but the last, which may be shorter (and ends the run), at most
/// [`MAX_SEGMENTS`] and [`MAX_GSO_BYTES`] in all. At least 1 when `items` is not empty.
pub(crate) fn run_len<T>(items: &[T], key: impl Fn(&T) -> (SocketAddr, usize)) -> usize {
    let Some(first) = items.first() else {
        return 0;
    };
    let (to, size) = key(first);
    let mut total = size;
    let mut n = 1;
    for item in items.iter().skip(1).take(MAX_SEGMENTS - 1) {
        let (t, len) = key(item);
        if t != to || len > size || len == 0 || total + len > MAX_GSO_BYTES {
            break;
        }
        total += len;
        n += 1;
        if len < size {
            break;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    fn a(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn segments_cut_a_coalesced_buffer() {
        let data: Vec<u8> = (0..10).collect();
        let parts: Vec<&[u8]> = segments(&data, Some(4)).collect();
        assert_eq!(parts, vec![&[0, 1, 2, 3][..], &[4, 5, 6, 7], &[8, 9]]);
        let parts: Vec<&[u8]> = segments(&data, Some(5)).collect();
        assert_eq!(parts, vec![&[0, 1, 2, 3, 4][..], &[5, 6, 7, 8, 9]]);
        // No segment size, a zero one, or one covering the buffer: one datagram.
        for seg in [None, Some(0), Some(10), Some(4000)] {
            assert_eq!(segments(&data, seg).collect::<Vec<_>>(), vec![&data[..]]);
        }
        // An empty datagram is still one.
        assert_eq!(segments(&[], Some(4)).count(), 1);
        assert_eq!(segments(&[], None).count(), 1);
    }

    #[test]
    fn runs_group_equal_sizes_to_one_peer() {
        let key = |x: &(SocketAddr, usize)| *x;
        assert_eq!(run_len(&[] as &[(SocketAddr, usize)], key), 0);
        let same = vec![(a(1), 1220); 10];
        assert_eq!(run_len(&same, key), 10);
        // A shorter one ends the run, and is in it.
        let mut v = vec![(a(1), 1220); 3];
        v.push((a(1), 500));
        v.push((a(1), 1220));
        assert_eq!(run_len(&v, key), 4);
        // A longer one, or another peer, is not.
        assert_eq!(run_len(&[(a(1), 20), (a(1), 1220)], key), 1);
        assert_eq!(run_len(&[(a(1), 20), (a(2), 20)], key), 1);
        // At most MAX_SEGMENTS, and MAX_GSO_BYTES in all.
        assert_eq!(run_len(&vec![(a(1), 20); 200], key), MAX_SEGMENTS);
        let big = vec![(a(1), 1500); 60];
        assert_eq!(run_len(&big, key), MAX_GSO_BYTES / 1500);
        assert_eq!(run_len(&[(a(1), 1)], key), 1);
    }

    #[test]
    fn gro_segment_is_read_from_the_control_message() {
        let mut control = [0u64; CONTROL_WORDS];
        // SAFETY: msghdr is plain C data; all zeros is valid.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_* are arithmetic and the header lies in `control` (64 bytes).
        unsafe {
            msg.msg_controllen = libc::CMSG_SPACE(4) as _;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_UDP;
            (*c).cmsg_type = libc::UDP_GRO;
            (*c).cmsg_len = libc::CMSG_LEN(4) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>(), 1220);
            assert_eq!(gro_segment(&msg), Some(1220));
            // Another kind of message: no segment size.
            (*c).cmsg_type = libc::UDP_SEGMENT;
            assert_eq!(gro_segment(&msg), None);
            // None at all.
            msg.msg_controllen = 0;
            assert_eq!(gro_segment(&msg), None);
        }
    }

    /// GSO out, GRO in, on loopback: the datagrams arrive whole and in order, whether the
    /// kernel coalesced them or not.
    #[test]
    fn gso_run_arrives_as_its_datagrams() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let gro = enable_gro(rx.as_raw_fd());
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let packets: Vec<Vec<u8>> = (0..10u8)
            .map(|i| vec![i; if i == 9 { 300 } else { 1200 }])
            .collect();
        let parts: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
        match send_segments(tx.as_raw_fd(), to, &parts, Some(1200)) {
            Ok(n) => assert_eq!(n, 9 * 1200 + 300),
            // A kernel without GSO: the drivers fall back; nothing more to see here.
            Err(e) if gso_unsupported(&e) => return,
            Err(e) => panic!("{e}"),
        }
        let mut got = Vec::new();
        let mut buf = vec![0; 65536];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < packets.len() && std::time::Instant::now() < deadline {
            match recv(rx.as_raw_fd(), &mut buf) {
                Ok(r) => {
                    assert!(!r.truncated);
                    assert_eq!(r.from, Some(tx.local_addr().unwrap()));
                    if !gro {
                        assert_eq!(r.segment, None);
                    }
                    got.extend(segments(&buf[..r.len], r.segment).map(<[u8]>::to_vec));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, packets);
    }

    /// Waits (bounded) for one entry on `fd`'s error queue.
    fn queued_error(fd: RawFd) -> QueuedError {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match recv_error(fd) {
                Ok(e) => return e,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "no ICMP error queued");
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// A datagram to a closed port on loopback draws ICMP port unreachable: it is queued
    /// with the destination, reads as a hard path error, and the next send reports it once
    /// (not sent: what the drivers send again).
    #[test]
    fn port_unreachable_is_read_from_the_error_queue() {
        let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dead = closed.local_addr().unwrap();
        drop(closed);
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = tx.as_raw_fd();
        assert!(enable_recverr(fd, false));
        assert_eq!(
            recv_error(fd).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        send_segments(fd, dead, &[b"d1:ad2:id20:"], None).unwrap();
        let e = queued_error(fd);
        assert_eq!(e.to, Some(dead));
        assert_eq!(
            (e.errno, e.origin),
            (libc::ECONNREFUSED, libc::SO_EE_ORIGIN_ICMP)
        );
        assert_eq!(e.icmp, (3, 3), "destination unreachable, port unreachable");
        assert_eq!(e.offender.map(|a| a.ip()), Some(dead.ip()));
        assert_eq!(path_error(&e), Some(crate::utp::PathError::PortUnreachable));
        // Read once; the socket's pending error may still report it to the next send.
        assert_eq!(
            recv_error(fd).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        send_segments(fd, dead, &[b"x"], None).unwrap();
        queued_error(fd);
        match send_segments(fd, rx.local_addr().unwrap(), &[b"y"], None) {
            Ok(_) => {}
            Err(e) => {
                assert!(pending_icmp(&e), "{e}");
                send_segments(fd, rx.local_addr().unwrap(), &[b"y"], None).unwrap();
            }
        }
        let mut buf = [0u8; 8];
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        assert_eq!(rx.recv(&mut buf).unwrap(), 1);
    }

    /// A dual-stack IPv6 socket hears about its IPv4-mapped datagrams too.
    #[test]
    fn a_dual_stack_socket_reads_ipv4_errors() {
        let tx = UdpSocket::bind("[::]:0").unwrap();
        let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dead = closed.local_addr().unwrap();
        drop(closed);
        let fd = tx.as_raw_fd();
        assert!(enable_recverr(fd, true));
        let mapped = match dead {
            SocketAddr::V4(a) => SocketAddr::new(a.ip().to_ipv6_mapped().into(), a.port()),
            v6 => v6,
        };
        send_segments(fd, mapped, &[b"x"], None).unwrap();
        let e = queued_error(fd);
        assert_eq!(e.to, Some(mapped));
        assert_eq!(path_error(&e), Some(crate::utp::PathError::PortUnreachable));
    }

    #[test]
    fn extended_errors_parse_without_trusting_lengths() {
        let mut b = Vec::new();
        b.extend(libc::EMSGSIZE.to_ne_bytes());
        b.extend([libc::SO_EE_ORIGIN_ICMP, 3, 4, 0]);
        b.extend(1400u32.to_ne_bytes());
        b.extend(0u32.to_ne_bytes());
        let e = parse_extended_err(&b).unwrap();
        assert_eq!(
            (e.errno, e.icmp, e.info, e.offender),
            (libc::EMSGSIZE, (3, 4), 1400, None)
        );
        let too_big = crate::utp::PathError::TooBig { mtu: Some(1400) };
        assert_eq!(path_error(&e), Some(too_big));
        // The kernel's own (a send larger than the interface) counts too.
        let mut local = b.clone();
        local[4] = libc::SO_EE_ORIGIN_LOCAL;
        assert_eq!(
            path_error(&parse_extended_err(&local).unwrap()),
            Some(too_big)
        );
        for n in 0..12 {
            assert_eq!(parse_extended_err(&b[..n]), None);
        }
        // A local error is not the network's.
        b[4] = libc::SO_EE_ORIGIN_LOCAL;
        b[..4].copy_from_slice(&libc::ECONNREFUSED.to_ne_bytes());
        assert_eq!(path_error(&parse_extended_err(&b).unwrap()), None);
    }
}
