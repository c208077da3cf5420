//! Sockets in the form the drivers need: C socket addresses for io_uring's `CONNECT` (and
//! back, from its `RECVMSG`), fresh non-blocking sockets, and listeners, one per event loop
//! on a shared port.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Connections a listener queues before the kernel drops new ones: 1024, as mio's and
/// std's defaults (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: libc::c_int = 1024;

/// A socket address in C form.
pub(crate) struct SockAddr {
    pub(crate) storage: libc::sockaddr_storage,
    pub(crate) len: libc::socklen_t,
}

/// Listeners for `n` event loops on one address: with `n > 1` each is its own socket bound
/// with `SO_REUSEPORT`, so the kernel spreads incoming connections across the loops (by a hash
/// of the connection's addresses) and no loop is woken for another's connection. Port 0 picks
/// a free port for the first; the rest bind the same one. All are non-blocking and
/// close-on-exec, with `SO_REUSEADDR` so a restart can bind at once.
///
/// A port some process already listens on is an error (`AddrInUse`), even one bound with
/// `SO_REUSEPORT` by another of our processes; with one loop `SO_REUSEPORT` is not set.
///
/// IPv6: the unspecified address `[::]` listens on both families (`IPV6_V6ONLY` off; IPv4
/// peers then arrive as `::ffff:a.b.c.d`, which the drivers [`unmap`] before the session
/// sees them), and falls back to `0.0.0.0` on a host without IPv6 (no address in
/// `/proc/net/if_inet6` or no IPv6 socket: [`crate::net_addr::ipv6_available`]; or the bind
/// refused with `EAFNOSUPPORT`, `EADDRNOTAVAIL`). Any other IPv6 address (`::1`) listens on
/// IPv6 only, and an IPv4 address (`0.0.0.0`) on IPv4 only.
///
/// [`unmap`]: crate::net_addr::unmap
pub fn bind_listeners(addr: SocketAddr, n: usize) -> io::Result<Vec<TcpListener>> {
    let ipv4 = SocketAddr::from(([0, 0, 0, 0], addr.port()));
    if is_dual_stack(&addr) && !crate::net_addr::ipv6_available() {
        return bind_listeners_as(ipv4, n);
    }
    match bind_listeners_as(addr, n) {
        Err(e) if is_dual_stack(&addr) && no_ipv6(&e) => bind_listeners_as(ipv4, n),
        other => other,
    }
}

/// Whether `addr` is `[::]`, which listens on both families.
fn is_dual_stack(addr: &SocketAddr) -> bool {
    matches!(addr, SocketAddr::V6(a) if a.ip().is_unspecified())
}

/// Whether binding failed because the host has no IPv6.
fn no_ipv6(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL | libc::EPROTONOSUPPORT)
    )
}

fn bind_listeners_as(addr: SocketAddr, n: usize) -> io::Result<Vec<TcpListener>> {
    if n > 1 && addr.port() != 0 {
        // `SO_REUSEPORT` would let these sockets share the port with another process of the
        // same user that set it too (a second seedbox started by mistake), splitting the
        // connections between the two without a word. A plain bind first fails with
        // EADDRINUSE on a port anyone listens on.
        drop(bind_one(addr, false)?);
    }
    let first = bind_one(addr, n > 1)?;
    let mut shared = addr;
    shared.set_port(first.local_addr()?.port());
    let mut listeners = vec![first];
    for _ in 1..n {
        listeners.push(bind_one(shared, true)?);
    }
    Ok(listeners)
}

fn bind_one(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = new_socket(&addr)?;
    set_opt(&socket, libc::SOL_SOCKET, libc::SO_REUSEADDR, &1)?;
    if reuse_port {
        set_opt(&socket, libc::SOL_SOCKET, libc::SO_REUSEPORT, &1)?;
    }
    set_family_rule(&socket, &addr)?;
    bind_to(&socket, addr)?;
    // SAFETY: listen(2) on an open, bound socket; plain integers.
    if unsafe { libc::listen(socket.as_raw_fd(), BACKLOG) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TcpListener::from(OwnedFd::from(socket)))
}

/// For an IPv6 address, `IPV6_V6ONLY` set either way, not left to `net.ipv6.bindv6only`:
/// `[::]` takes both families, any other IPv6 address only its own.
fn set_family_rule(socket: &impl AsRawFd, addr: &SocketAddr) -> io::Result<()> {
    if addr.is_ipv6() {
        let v6only = libc::c_int::from(!is_dual_stack(addr));
        set_opt(socket, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, &v6only)?;
    }
    Ok(())
}

/// setsockopt(2) with a plain-data value (a `c_int`, an `in_addr`, an interface index).
pub(crate) fn set_opt<T: Copy>(
    socket: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` points to a live `T` of the length passed, which the kernel only reads
    // during the call; `socket` is an open socket the caller holds.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// bind(2) of an open socket to `addr`.
pub(crate) fn bind_to(socket: &impl AsRawFd, addr: SocketAddr) -> io::Result<()> {
    let sa = SockAddr::from(addr);
    // SAFETY: `socket` is open; `sa.storage` holds a valid address of length `sa.len` for
    // the address's family, which bind(2) only reads.
    let rc = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&sa.storage as *const libc::sockaddr_storage).cast(),
            sa.len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A non-blocking, close-on-exec UDP socket bound to `addr`, with the listeners' family
/// rule set explicitly rather than left to `net.ipv6.bindv6only`: `[::]` takes both families
/// (`IPV6_V6ONLY` off; IPv4 senders arrive as `::ffff:a.b.c.d`, which the loop unmaps), any
/// other IPv6 address only IPv6, an IPv4 address only IPv4. The DHT's socket: bound where
/// the peer listener is, so one node answers on every address peers reach us on.
pub fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::from(new_fd(&addr, libc::SOCK_DGRAM)?);
    set_family_rule(&socket, &addr)?;
    bind_to(&socket, addr)?;
    Ok(socket)
}

/// Binds `socket` to `ip` with a port the kernel picks, before it connects. A loopback
/// address other than 127.0.0.1 needs no set-up on Linux: all of 127.0.0.0/8 is local.
pub(crate) fn bind_local(socket: &TcpStream, ip: IpAddr) -> io::Result<()> {
    bind_to(socket, SocketAddr::new(ip, 0))
}

/// A non-blocking connect to `addr`, from `from` if given: the connection completes later
/// (the socket turns writable), or fails then.
pub(crate) fn connect_nonblocking(addr: SocketAddr, from: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = new_socket(&addr)?;
    if let Some(ip) = from {
        bind_local(&socket, ip)?;
    }
    let sa = SockAddr::from(addr);
    // SAFETY: `socket` is an open non-blocking socket; `sa.storage` holds a valid address of
    // `sa.len` bytes for its family.
    let rc = unsafe {
        libc::connect(
            socket.as_raw_fd(),
            (&sa.storage as *const libc::sockaddr_storage).cast(),
            sa.len,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(socket)
}

/// A fresh non-blocking, close-on-exec TCP socket for `addr`'s family.
pub(crate) fn new_socket(addr: &SocketAddr) -> io::Result<TcpStream> {
    Ok(TcpStream::from(new_fd(addr, libc::SOCK_STREAM)?))
}

/// A fresh non-blocking, close-on-exec socket of `kind` for `addr`'s family.
fn new_fd(addr: &SocketAddr, kind: libc::c_int) -> io::Result<OwnedFd> {
    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: socket(2) takes plain integers; the result is checked before use.
    let fd = unsafe { libc::socket(family, kind | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socket(2) succeeded, so `fd` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The address a C socket address holds (what `recvmsg` filled in), or `None` for a family
/// other than IPv4 and IPv6.
pub(crate) fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in; sockaddr_storage is
            // larger than and aligned for it.
            let sin: libc::sockaddr_in =
                unsafe { std::ptr::read((storage as *const libc::sockaddr_storage).cast()) };
            let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::new(ip.into(), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6: libc::sockaddr_in6 =
                unsafe { std::ptr::read((storage as *const libc::sockaddr_storage).cast()) };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

impl From<SocketAddr> for SockAddr {
    fn from(addr: SocketAddr) -> SockAddr {
        // SAFETY: sockaddr_storage is a plain C struct for which all-zero bytes is valid.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for any sockaddr_*.
                unsafe {
                    std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin)
                };
                std::mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY: as above.
                unsafe {
                    std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6)
                };
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        SockAddr {
            storage,
            len: len as libc::socklen_t,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addresses_round_trip() {
        for addr in ["127.0.0.1:6881", "[::1]:51413", "[::ffff:10.0.0.1]:1"] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(from_sockaddr(&SockAddr::from(addr).storage), Some(addr));
        }
        // SAFETY: all-zero bytes are a valid sockaddr_storage (family AF_UNSPEC).
        let unspec: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        assert_eq!(from_sockaddr(&unspec), None);
    }

    #[test]
    fn a_dual_stack_udp_socket_hears_both_families_and_others_keep_to_theirs() {
        // Needs IPv6 on loopback, as tests/ipv6.rs does.
        let hear = |socket: &std::net::UdpSocket, from: &str| -> bool {
            let port = socket.local_addr().unwrap().port();
            let to: SocketAddr = match from {
                "127.0.0.1" => SocketAddr::from(([127, 0, 0, 1], port)),
                _ => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
            };
            let sender = std::net::UdpSocket::bind(SocketAddr::new(to.ip(), 0)).unwrap();
            sender.send_to(b"d1:ai1ee", to).unwrap();
            let mut buf = [0u8; 16];
            for _ in 0..200 {
                if let Ok((n, _)) = socket.recv_from(&mut buf) {
                    return &buf[..n] == b"d1:ai1ee";
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            false
        };
        let dual = bind_udp("[::]:0".parse().unwrap()).unwrap();
        assert!(hear(&dual, "127.0.0.1"), "[::] takes IPv4");
        assert!(hear(&dual, "::1"), "[::] takes IPv6");
        let v6 = bind_udp("[::]:0".parse().unwrap()).unwrap();
        let port = v6.local_addr().unwrap().port();
        drop(v6);
        // An IPv6 address other than [::] is IPv6-only: 0.0.0.0 on the same port is free.
        let only6 = bind_udp(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port))).unwrap();
        let four = bind_udp(SocketAddr::from(([0, 0, 0, 0], port)));
        assert!(four.is_ok(), "::1 must not hold the IPv4 port: {four:?}");
        assert!(hear(&only6, "::1"));
        assert!(!bind_udp("0.0.0.0:0".parse().unwrap())
            .unwrap()
            .local_addr()
            .unwrap()
            .is_ipv6());
    }
}
