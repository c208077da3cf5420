//! Local Service Discovery's sockets: the sans-IO [`crate::lsd::Lsd`] run on one UDP socket
//! per group (IPv4 `239.192.152.143:6771`, IPv6 `[ff15::efc0:988f]:6771`), pumped by the
//! client's housekeeping thread beside the trackers, without blocking.
//!
//! Why there and not on the event loops: LSD is a few datagrams a minute for the whole
//! client, its peers go to every loop (torrents are sharded by info hash), and it must know
//! which torrents are public and active, which the registry (`State`) knows and the loops do
//! not. Tracker peers take the same path: the housekeeping thread posts them to the owning
//! loop's session (`add_peers`).
//!
//! Each socket sets `SO_REUSEADDR` and `SO_REUSEPORT` (other clients on the host bind 6771
//! too) and is bound to the group's address rather than the wildcard, so the kernel hands it
//! only datagrams sent to the group: a unicast datagram to port 6771 from beyond the local
//! network never reaches the parser. Multicast loopback is on (two clients on one host hear
//! each other; our own echo is recognised by the cookie) and the TTL / hop limit is 1 (the
//! link only).

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::state::{Entry, State};
use crate::core::{InfoHash, Time};
use crate::driver::net::{bind_to, set_opt};
use crate::lsd::{Family, Lsd, LsdConfig, LsdStats, GROUP_V4, GROUP_V6, MAX_DATAGRAM_LEN};

/// Datagrams read from one socket per pump (every 50 ms): 1,280 a second, far above what a
/// LAN's clients send, and a bound on the CPU a flood takes from the housekeeping thread
/// (the kernel drops the rest).
const MAX_DATAGRAMS_PER_PUMP: usize = 64;

/// How often the set of torrents to announce is taken from the registry.
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// Where LSD announces and listens: the IPv4 group on an interface (by its address; the
/// unspecified address: the kernel's choice), the IPv6 group on an interface (by index; 0:
/// the kernel's choice), either, both or neither.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scope {
    pub(crate) v4: Option<Ipv4Addr>,
    pub(crate) v6: Option<u32>,
    /// Why neither, for the log.
    pub(crate) why: &'static str,
}

impl Scope {
    /// The scope for a client listening on `listen`, LSD told `interface`. The announce
    /// carries only our port; a peer dials the address the datagram came from, so LSD goes
    /// only where peers can reach the listener:
    /// - `interface` given: IPv4 on that interface only (the user's word);
    /// - a listener on every address (`[::]`, `0.0.0.0`, or none yet): the IPv4 group on the
    ///   kernel's choice of interface, and the IPv6 group too unless IPv4-only;
    /// - a listener on one IPv4 address (`--bind 10.0.0.2`, `127.0.0.1`): IPv4 on the
    ///   interface holding it, sending from it, so a seedbox bound to its LAN address does
    ///   not announce on another network, and one bound to loopback stays on this host;
    /// - on one IPv6 address: IPv6 on the interface holding it (`interface_of`), nothing when
    ///   no interface does.
    pub(crate) fn for_listener(
        listen: Option<SocketAddr>,
        interface: Option<Ipv4Addr>,
        interface_of: impl FnOnce(std::net::Ipv6Addr) -> Option<u32>,
    ) -> Scope {
        let scope = |v4, v6| Scope { v4, v6, why: "" };
        if let Some(ip) = interface {
            return scope(Some(ip), None);
        }
        match listen.map(|a| a.ip()) {
            None => scope(Some(Ipv4Addr::UNSPECIFIED), Some(0)),
            Some(std::net::IpAddr::V4(ip)) if ip.is_unspecified() => {
                scope(Some(Ipv4Addr::UNSPECIFIED), None)
            }
            Some(std::net::IpAddr::V4(ip)) => scope(Some(ip), None),
            Some(std::net::IpAddr::V6(ip)) if ip.is_unspecified() => {
                scope(Some(Ipv4Addr::UNSPECIFIED), Some(0))
            }
            Some(std::net::IpAddr::V6(ip)) => match interface_of(ip) {
                Some(index) => scope(None, Some(index)),
                None => Scope {
                    v4: None,
                    v6: None,
                    why: "no interface holds the listen address",
                },
            },
        }
    }
}

/// LSD on its sockets.
pub(crate) struct LsdIo {
    lsd: Lsd,
    sockets: Vec<(Family, UdpSocket)>,
    /// The port we accept peers on, announced; `None` (no listener): we only listen.
    port: Option<u16>,
    epoch: Instant,
    next_sync: Instant,
    buf: Vec<u8>,
    out: Vec<u8>,
    send_failed: bool,
}

impl LsdIo {
    /// Opens the sockets where `scope` says ([`Scope::for_listener`]). `None`, with a
    /// warning, when none opens.
    pub(crate) fn new(port: Option<u16>, scope: Scope) -> Option<LsdIo> {
        let mut sockets = Vec::new();
        if let Some(interface) = scope.v4 {
            match open_v4(interface) {
                Ok(s) => sockets.push((Family::V4, s)),
                Err(e) => tracing::warn!("local service discovery on IPv4 is off: {e}"),
            }
        }
        if let Some(index) = scope.v6 {
            match open_v6(index) {
                Ok(s) => sockets.push((Family::V6, s)),
                Err(e) => tracing::debug!("local service discovery on IPv6 is off: {e}"),
            }
        }
        if sockets.is_empty() {
            if scope.v4.is_none() && scope.v6.is_none() {
                tracing::debug!("local service discovery is off: {}", scope.why);
            }
            return None;
        }
        let cookie = format!("{:016x}", super::random_u64());
        let now = Instant::now();
        Some(LsdIo {
            lsd: Lsd::new(LsdConfig::default(), &cookie, Time::ZERO),
            sockets,
            port: port.filter(|&p| p != 0),
            epoch: now,
            next_sync: now,
            buf: vec![0; MAX_DATAGRAM_LEN + 1],
            out: Vec::with_capacity(crate::lsd::MAX_SEND_LEN),
            send_failed: false,
        })
    }

    /// A torrent started or learnt its metadata: take the set to announce at the next pump,
    /// not up to [`SYNC_EVERY`] later, so a new torrent's first announce goes out at once
    /// (a quick download may be over within that second).
    pub(crate) fn torrents_changed(&mut self) {
        self.next_sync = self.epoch;
    }

    /// What LSD counted so far.
    pub(crate) fn stats(&self) -> LsdStats {
        self.lsd.stats()
    }

    /// Announces what is due (taking the torrents to announce from `public` at most once a
    /// [`SYNC_EVERY`]) and reads what arrived; returns the peers found for torrents `wanted`
    /// says are ours and public.
    pub(crate) fn pump(
        &mut self,
        public: impl FnOnce() -> Vec<InfoHash>,
        wanted: impl FnMut(&InfoHash) -> bool,
    ) -> Vec<(InfoHash, SocketAddr)> {
        let instant = Instant::now();
        let now = Time::from_micros(instant.duration_since(self.epoch).as_micros() as u64);
        if let Some(port) = self.port {
            if instant >= self.next_sync {
                self.next_sync = instant + SYNC_EVERY;
                self.lsd.set_torrents(public(), now);
            }
            while let Some(hashes) = self.lsd.poll_announce(now) {
                for (family, socket) in &self.sockets {
                    self.out.clear();
                    self.lsd.encode(*family, port, &hashes, &mut self.out);
                    if let Err(e) = socket.send_to(&self.out, family.group()) {
                        if !self.send_failed {
                            self.send_failed = true;
                            tracing::debug!("local service discovery: cannot send: {e}");
                        }
                    }
                }
            }
        }
        self.receive(now, wanted)
    }

    fn receive(
        &mut self,
        now: Time,
        mut wanted: impl FnMut(&InfoHash) -> bool,
    ) -> Vec<(InfoHash, SocketAddr)> {
        let mut found = Vec::new();
        for (_, socket) in &self.sockets {
            for _ in 0..MAX_DATAGRAMS_PER_PUMP {
                let (len, from) = match socket.recv_from(&mut self.buf) {
                    Ok(got) => got,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break, // WouldBlock, or an error the next pump sees again
                };
                let datagram = self.buf.get(..len).unwrap_or(&[]);
                found.extend(self.lsd.handle_datagram(from, datagram, now, &mut wanted));
            }
        }
        found
    }
}

/// A non-blocking UDP socket of `domain` with `SO_REUSEADDR` and `SO_REUSEPORT` set, not
/// yet bound.
fn reusable_socket(domain: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; a negative result is an error, checked below.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2), is open, and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    set_opt(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, &1)?;
    set_opt(&fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, &1)?;
    Ok(fd)
}

/// The IPv4 socket: bound to the group, joined on `interface`, sending from it when it is
/// not the unspecified address.
fn open_v4(interface: Ipv4Addr) -> io::Result<UdpSocket> {
    let fd = reusable_socket(libc::AF_INET)?;
    bind_to(&fd, Family::V4.group())?;
    if !interface.is_unspecified() {
        let addr = libc::in_addr {
            s_addr: u32::from_ne_bytes(interface.octets()),
        };
        set_opt(&fd, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &addr)?;
    }
    let socket = UdpSocket::from(fd);
    socket.join_multicast_v4(&GROUP_V4, &interface)?;
    socket.set_multicast_loop_v4(true)?;
    socket.set_multicast_ttl_v4(1)?;
    Ok(socket)
}

/// The IPv6 socket: bound to the group, joined on interface `index` (0: the default) and
/// sending from it.
fn open_v6(index: u32) -> io::Result<UdpSocket> {
    let fd = reusable_socket(libc::AF_INET6)?;
    set_opt(&fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, &1)?;
    set_opt(&fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, &1)?;
    if index != 0 {
        set_opt(&fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_IF, &index)?;
    }
    bind_to(&fd, Family::V6.group())?;
    let socket = UdpSocket::from(fd);
    socket.join_multicast_v6(&GROUP_V6, index)?;
    socket.set_multicast_loop_v6(true)?;
    Ok(socket)
}

impl State {
    /// Runs LSD's turn: announces the active torrents known to be public, and hands the
    /// peers heard of to the torrents' loops, as tracker peers are. A magnet link still
    /// fetching its metadata is not announced (unlike libtorrent: it may turn out private,
    /// and its hash would have gone out), but takes the peers others announce for it.
    pub(crate) fn pump_lsd(&mut self) {
        let Some(lsd) = self.lsd.as_mut() else {
            return;
        };
        let torrents = &self.torrents;
        let public = |e: &Entry| e.id.is_some() && e.info.as_ref().is_some_and(|i| !i.is_private());
        let not_private =
            |e: &Entry| e.id.is_some() && !e.info.as_ref().is_some_and(|i| i.is_private());
        let found = lsd.pump(
            || {
                torrents
                    .iter()
                    .filter(|(_, e)| public(e))
                    .map(|(h, _)| *h)
                    .collect()
            },
            |h| torrents.get(h).is_some_and(not_private),
        );
        let mut by_torrent: BTreeMap<InfoHash, Vec<SocketAddr>> = BTreeMap::new();
        for (hash, peer) in found {
            by_torrent.entry(hash).or_default().push(peer);
        }
        for (hash, peers) in by_torrent {
            let Some(e) = self.torrents.get(&hash) else {
                continue;
            };
            let Some(id) = e.id else { continue };
            tracing::debug!("{hash}: local service discovery found {peers:?}");
            self.loops[e.shard as usize].post(move |d| {
                let now = d.now();
                d.session().add_peers(id, &peers, now);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(listen: Option<&str>, interface: Option<&str>) -> Scope {
        Scope::for_listener(
            listen.map(|l| l.parse().unwrap()),
            interface.map(|i| i.parse().unwrap()),
            |ip| (ip == std::net::Ipv6Addr::LOCALHOST).then_some(1),
        )
    }

    #[test]
    fn lsd_goes_where_the_listener_is() {
        let any = Some(Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            scope(Some("[::]:6881"), None),
            Scope {
                v4: any,
                v6: Some(0),
                why: ""
            }
        );
        assert_eq!(
            scope(None, None),
            Scope {
                v4: any,
                v6: Some(0),
                why: ""
            }
        );
        assert_eq!(
            scope(Some("0.0.0.0:6881"), None),
            Scope {
                v4: any,
                v6: None,
                why: ""
            }
        );
        let lo = Some(Ipv4Addr::LOCALHOST);
        assert_eq!(
            scope(Some("127.0.0.1:6881"), None),
            Scope {
                v4: lo,
                v6: None,
                why: ""
            }
        );
        assert_eq!(
            scope(Some("[::1]:6881"), None),
            Scope {
                v4: None,
                v6: Some(1),
                why: ""
            }
        );
        let none = scope(Some("[2001:db8::5]:6881"), None);
        assert_eq!((none.v4, none.v6), (None, None));
        assert!(!none.why.is_empty());
        // --lsd-interface is the user's word, whatever the listener.
        let lan = Some(Ipv4Addr::new(192, 168, 1, 10));
        for listen in [Some("[::]:1"), Some("127.0.0.1:1"), Some("[::1]:1"), None] {
            assert_eq!(
                scope(listen, Some("192.168.1.10")),
                Scope {
                    v4: lan,
                    v6: None,
                    why: ""
                }
            );
        }
    }
}
