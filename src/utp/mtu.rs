//! Path MTU discovery for one connection, sans-IO (BEP 29 leaves it to the implementation;
//! this is packetization-layer discovery in the manner of RFC 8899's DPLPMTUD, as libtorrent
//! does it).
//!
//! Sizes here are payload bytes per DATA packet. The search keeps a *floor*, a size known
//! (or assumed, at first) to pass, which every new packet uses, and a *ceiling*, the largest
//! that might. The driver sends every datagram with DF set and no fragmentation by the
//! kernel (`IP_PMTUDISC_PROBE`), so a packet too big for the path is dropped, or answered
//! with an ICMP "fragmentation needed" / "packet too big" that names the MTU.
//!
//! - **Probes**: while `ceiling - floor` is at least [`PROBE_STEP`], one ordinary DATA packet at
//!   a time is sent *padded* to a probe size (an extension the peer skips, see
//!   [`super::packet::encode_padded`]): the ceiling first (most paths are Ethernet's 1500),
//!   then halfway between floor and ceiling. Its payload is an ordinary one, so a probe that
//!   is lost is simply resent without the padding: no byte waits on the search.
//! - A probe acknowledged (on its first transmission) raises the floor to its size.
//! - A probe lost (declared so by selective acks, duplicate acks or the timer) lowers the
//!   ceiling below its size, and is *not* a congestion signal: the window is not cut.
//! - A too-big report ([`MtuSearch::too_big`]: ICMP, or the kernel refusing a send larger than
//!   the interface) sets the ceiling from the MTU it names, and the floor with it if the path
//!   shrank below it.
//! - **Black hole**: two timeouts in a row with nothing acknowledged while the floor is above
//!   the base drop the floor back to the base (the path may have shrunk without a word) and
//!   the ceiling to just below the size that failed.
//! - The search re-opens [`RAISE_AFTER`] after it settled (a path may grow).
//!
//! A packet already cut keeps its size (its sequence number carries exactly those bytes), so
//! a path that shrinks below packets in flight loses them until the timer gives up, as any
//! datagram protocol without re-segmentation would.

use std::time::Duration;

use crate::core::Time;

/// Below this gap between floor and ceiling the search stops.
pub const PROBE_STEP: usize = 16;

/// How long a settled search waits before probing up again (RFC 8899's `PMTU_RAISE_TIMER`).
pub const RAISE_AFTER: Duration = Duration::from_secs(600);

/// IPv4's header without options.
pub const IPV4_HEADER: usize = 20;
/// IPv6's fixed header.
pub const IPV6_HEADER: usize = 40;
/// UDP's header.
pub const UDP_HEADER: usize = 8;

/// The bytes a DATA packet of payload `p` may take beyond `p`: the uTP header and the
/// largest selective-ack extension one may carry.
pub const UTP_OVERHEAD: usize = super::packet::HEADER_LEN + 2 + super::packet::MAX_SACK_LEN;

/// The payload that fits an IP packet of `mtu` bytes (`v6`: IPv6's header, else IPv4's).
pub fn payload_for_mtu(mtu: usize, v6: bool) -> usize {
    let ip = if v6 { IPV6_HEADER } else { IPV4_HEADER };
    mtu.saturating_sub(ip + UDP_HEADER + UTP_OVERHEAD)
}

/// One connection's search (see the module doc).
#[derive(Clone, Debug)]
pub struct MtuSearch {
    /// The size every new packet uses before and without discovery.
    base: usize,
    /// The configured ceiling.
    max: usize,
    floor: usize,
    ceiling: usize,
    /// A probe in flight: its sequence number and size.
    probe: Option<(u16, usize)>,
    /// When the search settled (for [`RAISE_AFTER`]).
    settled_at: Option<Time>,
    /// Counters.
    pub(super) stats: MtuStats,
}

/// What a search did, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MtuStats {
    /// Probes sent.
    pub probes: u64,
    /// Probes acknowledged.
    pub acked: u64,
    /// Probes lost.
    pub lost: u64,
    /// Too-big reports taken.
    pub too_big: u64,
    /// Black holes assumed.
    pub black_holes: u64,
}

impl MtuSearch {
    /// A search between `base` (the floor to start from, and to fall back to) and `max`
    /// (the ceiling); no search at all where `max <= base`.
    pub fn new(base: usize, max: usize) -> MtuSearch {
        let base = base.max(1);
        MtuSearch {
            base,
            max: max.max(base),
            floor: base,
            ceiling: max.max(base),
            probe: None,
            settled_at: None,
            stats: MtuStats::default(),
        }
    }

    /// The payload new packets use.
    pub fn size(&self) -> usize {
        self.floor
    }

    /// The ceiling now.
    pub fn ceiling(&self) -> usize {
        self.ceiling
    }

    /// The counters.
    pub fn stats(&self) -> MtuStats {
        self.stats
    }

    /// The probe in flight, if any (sequence number, size).
    pub fn probe(&self) -> Option<(u16, usize)> {
        self.probe
    }

    /// The size to probe with next, if a probe is due now.
    pub fn next_probe(&mut self, now: Time) -> Option<usize> {
        if self.probe.is_some() {
            return None;
        }
        if self.ceiling < self.floor + PROBE_STEP {
            match self.settled_at {
                None => {
                    self.settled_at = Some(now);
                    return None;
                }
                Some(at) if now.saturating_since(at) >= RAISE_AFTER && self.ceiling < self.max => {
                    self.settled_at = None;
                    self.ceiling = self.max;
                }
                Some(_) => return None,
            }
        }
        self.settled_at = None;
        // The ceiling first: on most paths it is the answer.
        if self.stats.probes == 0 || self.ceiling == self.max {
            return Some(self.ceiling);
        }
        Some(self.floor + (self.ceiling - self.floor).div_ceil(2))
    }

    /// A probe of `size` went out as packet `seq`.
    pub fn sent(&mut self, seq: u16, size: usize) {
        self.probe = Some((seq, size));
        self.stats.probes += 1;
    }

    /// Packet `seq` was acknowledged on its first transmission.
    pub fn acked(&mut self, seq: u16) {
        if let Some((s, size)) = self.probe {
            if s == seq {
                self.probe = None;
                self.stats.acked += 1;
                self.floor = self.floor.max(size.min(self.ceiling));
            }
        }
    }

    /// Packet `seq` was lost (or acknowledged only after a resend). Returns whether it was
    /// the probe (whose loss is not congestion).
    pub fn lost(&mut self, seq: u16) -> bool {
        match self.probe {
            Some((s, size)) if s == seq => {
                self.probe = None;
                self.stats.lost += 1;
                self.ceiling = self.ceiling.min(size.saturating_sub(1)).max(self.floor);
                true
            }
            _ => false,
        }
    }

    /// The network (or the kernel) said a packet was too big; `payload` is what the MTU it
    /// named leaves for a packet's payload ([`payload_for_mtu`]), if it named one. Returns
    /// the probe's sequence number if the probe in flight is now known lost.
    pub fn too_big(&mut self, payload: Option<usize>) -> Option<u16> {
        self.stats.too_big += 1;
        let limit = match payload {
            Some(p) => p,
            // No MTU given: only the probe (the one packet above the floor) can be at fault.
            None => self
                .probe
                .map_or(self.floor, |(_, size)| size.saturating_sub(1)),
        };
        // Never below the base: a path that cannot carry it could not carry uTP before either.
        let limit = limit.max(self.base);
        self.ceiling = self.ceiling.min(limit);
        self.floor = self.floor.min(self.ceiling);
        match self.probe {
            Some((seq, size)) if size > self.ceiling => {
                self.probe = None;
                self.stats.lost += 1;
                Some(seq)
            }
            _ => None,
        }
    }

    /// The retransmission timer fired `timeouts` times in a row without an ack: from the
    /// second, a floor above the base is assumed to be a black hole.
    pub fn timed_out(&mut self, timeouts: u32) {
        if timeouts >= 2 && self.floor > self.base {
            self.stats.black_holes += 1;
            self.ceiling = self.floor.saturating_sub(1).max(self.base);
            self.floor = self.base;
            self.probe = None;
        }
    }
}
