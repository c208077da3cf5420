//! The peer set one torrent owns, with its metadata or still fetching it: the connected
//! [`Peer`]s under torrent-unique keys, the addresses it knows of ([`KnownPeers`]) and the IPs
//! it banned, and the bookkeeping every torrent does the same way when a peer joins, goes
//! quiet, sends bytes, takes bytes or leaves. A `MagnetTorrent` hands its set to the `Torrent`
//! it becomes, so peers keep their keys and connections.
//!
//! What a peer's messages mean stays with the torrent (`torrent.rs`, `metadata.rs`); so does
//! what a leaving peer gives back (requests, availability, metadata pieces), which the torrent
//! does with the [`Peer`] that [`PeerSet::close`] returns.

use std::collections::BTreeMap;

use ::core::net::{IpAddr, SocketAddr};

use bytes::{Buf, Bytes, BytesMut};

use super::api::{Action, CloseReason, Event, Violation};
use super::config::{Config, Encryption};
use super::context::Context;
use super::known::KnownPeers;
use super::peer::Peer;
use super::torrent::TorrentStats;
use super::wire::{Decoded, Decoder, Message, SplitBytes};
use super::{PeerId, PeerKey, Time};
use crate::limits::MAX_KNOWN_PEERS;

/// A torrent's connected peers and known addresses.
#[derive(Debug, Default)]
pub(crate) struct PeerSet {
    peers: BTreeMap<PeerKey, Peer>,
    next_key: u32,
    known: KnownPeers,
}

/// Whether a peer is still worth keeping, as [`PeerSet::keep_alive`] finds it.
pub(crate) enum Liveness {
    /// Connected and heard from recently enough.
    Alive,
    /// Silent past `Config::inactivity_timeout`: the torrent closes it.
    Inactive,
    /// Not (any longer) in the set.
    Gone,
}

impl PeerSet {
    /// A torrent-unique key: never reused, so stale disk results and picker entries for a
    /// departed peer can never be mistaken for a new one.
    pub(crate) fn next_key(&mut self) -> PeerKey {
        self.next_key += 1;
        PeerKey(self.next_key)
    }

    /// Takes every connected peer out, leaving the known addresses and the key counter (for
    /// the torrent a magnet link becomes, which attaches them again).
    pub(crate) fn take_all(&mut self) -> BTreeMap<PeerKey, Peer> {
        std::mem::take(&mut self.peers)
    }

    pub(crate) fn len(&self) -> usize {
        self.peers.len()
    }

    pub(crate) fn get(&self, key: &PeerKey) -> Option<&Peer> {
        self.peers.get(key)
    }

    pub(crate) fn get_mut(&mut self, key: &PeerKey) -> Option<&mut Peer> {
        self.peers.get_mut(key)
    }

    pub(crate) fn contains(&self, key: &PeerKey) -> bool {
        self.peers.contains_key(key)
    }

    /// The keys of the connected peers, in order, for loops that may close some of them.
    pub(crate) fn keys(&self) -> Vec<PeerKey> {
        self.peers.keys().copied().collect()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&PeerKey, &Peer)> {
        self.peers.iter()
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (&PeerKey, &mut Peer)> {
        self.peers.iter_mut()
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut Peer> {
        self.peers.values_mut()
    }

    /// Whether another peer may join under `Config::max_peers_per_torrent`.
    pub(crate) fn has_room(&self, config: &Config) -> bool {
        self.peers.len() < config.max_peers_per_torrent
    }

    /// The connected peer with this peer id, and whether we dialled it.
    pub(crate) fn peer_by_id(&self, id: &PeerId) -> Option<(PeerKey, bool)> {
        self.peers
            .iter()
            .find(|(_, p)| p.peer_id == *id)
            .map(|(k, p)| (*k, p.outgoing))
    }

    // ------------------------------------------------------------------------- known peers

    pub(crate) fn is_banned(&self, ip: IpAddr) -> bool {
        self.known.is_banned(ip)
    }

    /// Remembers addresses to dial (from trackers, the user, or other peers' PEX).
    pub(crate) fn add_known(&mut self, addrs: &[SocketAddr], now: Time) {
        self.known.add(addrs, now, MAX_KNOWN_PEERS);
    }

    /// Remembers addresses from peer exchange, with their BEP 11 flags.
    pub(crate) fn add_known_pex(&mut self, addrs: &[(SocketAddr, u8)], now: Time) {
        self.known.add_flagged(addrs, now, MAX_KNOWN_PEERS);
    }

    /// Whether to dial `addr` with the encrypted handshake under `policy`.
    pub(crate) fn dial_encrypted(&self, addr: SocketAddr, policy: Encryption) -> bool {
        self.known.dial_encrypted(addr, policy)
    }

    /// The peer at `addr` refused our handshake, `encrypted` or not (see
    /// `KnownPeers::handshake_refused`).
    pub(crate) fn handshake_refused(
        &mut self,
        addr: SocketAddr,
        encrypted: bool,
        config: &Config,
        now: Time,
    ) {
        self.known.handshake_refused(addr, encrypted, config, now);
    }

    /// Whether a dial is in progress.
    pub(crate) fn any_connecting(&self) -> bool {
        self.known.any_connecting()
    }

    /// Picks up to `max` known peers to dial now and marks them as being dialled.
    pub(crate) fn dial_candidates(
        &mut self,
        now: Time,
        config: &Config,
        max: usize,
    ) -> Vec<SocketAddr> {
        let per_ip = self.per_ip();
        self.known
            .candidates(now, config, max, self.peers.len(), per_ip)
    }

    /// Connected peers by IP address.
    fn per_ip(&self) -> BTreeMap<IpAddr, usize> {
        let mut per_ip = BTreeMap::new();
        for p in self.peers.values() {
            *per_ip.entry(p.addr.ip()).or_default() += 1;
        }
        per_ip
    }

    /// The connected peers idle and useless enough to be evicted now (see
    /// [`PeerSet::eviction_candidate`]), with their keys.
    pub(crate) fn idle<'a>(
        &'a self,
        now: Time,
        config: &'a Config,
    ) -> impl Iterator<Item = (PeerKey, &'a Peer)> + 'a {
        self.peers
            .iter()
            .filter(move |(_, p)| is_idle(p, now, config))
            .map(|(k, p)| (*k, p))
    }

    /// Connected peers at `ip`.
    pub(crate) fn count_ip(&self, ip: IpAddr) -> usize {
        self.peers.values().filter(|p| p.addr.ip() == ip).count()
    }

    /// The peer a newcomer from `ip` may replace when the torrent is full, if any (see
    /// `Config::evict_idle_after`). Only an idle, useless peer goes: we are not interested in
    /// it, it is not interested in us, no request is outstanding either way, no payload
    /// moved over the rate window, and it has been connected at least `evict_idle_after`.
    /// A newcomer never replaces a peer for being no worse than it: its IP must hold fewer of
    /// the torrent's peers than the victim's does (so connections from one address never
    /// make room for each other, and the address holding the most goes first). Among those,
    /// the peer whose IP holds the most, then the one connected longest, then the lowest key:
    /// deterministic.
    pub(crate) fn eviction_candidate(
        &self,
        ip: IpAddr,
        now: Time,
        config: &Config,
    ) -> Option<PeerKey> {
        let idle = |p: &Peer| is_idle(p, now, config);
        // A full torrent of busy peers answers a flood of newcomers in one pass, without
        // counting addresses.
        if !self.peers.values().any(idle) {
            return None;
        }
        let per_ip = self.per_ip();
        let newcomer = per_ip.get(&ip).copied().unwrap_or(0);
        self.peers
            .iter()
            .filter(|(_, p)| idle(p) && per_ip[&p.addr.ip()] > newcomer)
            .max_by_key(|(k, p)| {
                (
                    per_ip[&p.addr.ip()],
                    std::cmp::Reverse(p.connected_at),
                    std::cmp::Reverse(**k),
                )
            })
            .map(|(k, _)| *k)
    }

    /// A dial failed or a connection closed before its handshake.
    pub(crate) fn dial_failed(&mut self, addr: SocketAddr, config: &Config, now: Time) {
        self.known.failed(addr, config, now);
    }

    // ---------------------------------------------------------------- joining and leaving

    /// Adds a peer that completed its handshake, with what the torrent queued for it
    /// (`notify`: the driver must be told); `announce`: emit `PeerConnected` (not for a peer
    /// carried over from the metadata-fetching phase, which was announced then).
    pub(crate) fn attach(
        &mut self,
        key: PeerKey,
        peer: Peer,
        notify: bool,
        announce: bool,
        ctx: &mut Context,
    ) {
        let conn = peer.conn;
        self.known.connected(peer.addr, peer.crypto.is_mse());
        if announce {
            ctx.out.events.push_back(Event::PeerConnected {
                torrent: ctx.id,
                conn,
                addr: peer.addr,
                peer_id: peer.peer_id,
                outgoing: peer.outgoing,
                crypto: peer.crypto,
            });
        }
        self.peers.insert(key, peer);
        ctx.out.send(conn, notify);
    }

    /// Removes a peer and tells the driver: counts the close, schedules the address's next
    /// dial, asks for the socket closed (unless the remote end closed it) and emits
    /// `PeerClosed`. Returns the peer, for the torrent to take back what it held.
    pub(crate) fn close(
        &mut self,
        key: PeerKey,
        reason: CloseReason,
        now: Time,
        ctx: &mut Context,
        stats: &mut TorrentStats,
    ) -> Option<Peer> {
        let peer = self.peers.remove(&key)?;
        *stats.closes.entry(reason.name()).or_default() += 1;
        // A peer that was sending us data moments ago is worth trying again soon: a
        // restarted seed or a network blip should not cost the full delay.
        let config = &ctx.config;
        let useful = peer
            .last_block
            .is_some_and(|t| now.saturating_since(t) <= config.reconnect_delay_useful * 2);
        self.known.closed(peer.addr, &reason, useful, config, now);
        // A remote close was reported by the driver, whose socket is already gone.
        if reason != CloseReason::RemoteClosed {
            ctx.out.actions.push_back(Action::Close { conn: peer.conn });
        }
        ctx.out.closed.push(peer.conn);
        ctx.out.events.push_back(Event::PeerClosed {
            torrent: Some(ctx.id),
            conn: peer.conn,
            addr: peer.addr,
            reason,
        });
        Some(peer)
    }

    /// Bans a peer's IP from the torrent for bad data (the caller then closes it). Returns
    /// whether the peer was connected.
    pub(crate) fn ban(
        &mut self,
        key: PeerKey,
        ctx: &mut Context,
        stats: &mut TorrentStats,
    ) -> bool {
        let Some(addr) = self.peers.get(&key).map(|p| p.addr) else {
            return false;
        };
        self.ban_addr(addr, ctx, stats);
        true
    }

    /// Bans `addr`'s IP from the torrent for bad data, connected or not (smart ban may find a
    /// culprit after it left); the caller closes its connections.
    pub(crate) fn ban_addr(
        &mut self,
        addr: SocketAddr,
        ctx: &mut Context,
        stats: &mut TorrentStats,
    ) {
        self.known.ban(addr.ip());
        stats.banned += 1;
        ctx.out.events.push_back(Event::PeerBanned {
            torrent: ctx.id,
            addr,
        });
    }

    /// Housekeeping for one peer: a keep-alive when we have been quiet for
    /// `Config::keepalive_interval`, unless it has been silent past the inactivity timeout.
    pub(crate) fn keep_alive(&mut self, key: PeerKey, now: Time, ctx: &mut Context) -> Liveness {
        let Some(peer) = self.peers.get_mut(&key) else {
            return Liveness::Gone;
        };
        if now.saturating_since(peer.last_recv) >= ctx.config.inactivity_timeout {
            return Liveness::Inactive;
        }
        if now.saturating_since(peer.last_send) >= ctx.config.keepalive_interval {
            let notify = peer.queue(&Message::KeepAlive, now);
            ctx.out.send(peer.conn, notify);
        }
        Liveness::Alive
    }

    // ------------------------------------------------------------------------------ bytes

    /// Appends bytes that arrived from a peer to its receive buffer (the torrent then
    /// handles the whole messages in it).
    /// `decrypted`: the bytes were decrypted already (what followed the handshake in the
    /// same read), so the connection's RC4 stream must not see them again.
    pub(crate) fn receive(&mut self, key: PeerKey, data: &[u8], decrypted: bool, now: Time) {
        if let Some(peer) = self.peers.get_mut(&key) {
            match &mut peer.recv_cipher {
                Some(rc4) if !decrypted => {
                    let start = peer.recv.len();
                    peer.recv.extend_from_slice(data);
                    rc4.apply(&mut peer.recv[start..]);
                }
                _ => peer.recv.extend_from_slice(data),
            }
            if !data.is_empty() {
                peer.last_recv = now;
            }
        }
    }

    /// `n` bytes were read straight into the end of a peer's receive buffer: decrypts them
    /// in place on an RC4 connection.
    pub(crate) fn filled(&mut self, key: PeerKey, n: usize, now: Time) {
        if let Some(peer) = self.peers.get_mut(&key) {
            if let Some(rc4) = &mut peer.recv_cipher {
                let start = peer.recv.len().saturating_sub(n);
                rc4.apply(&mut peer.recv[start..]);
            }
            if n > 0 {
                peer.last_recv = now;
            }
        }
    }

    /// Moves bytes from `chunk` (which arrived from the peer in a buffer we own) into its
    /// receive buffer: the whole chunk, without copying, when the buffer is empty; otherwise
    /// only what completes the message waiting there (its length prefix first), so the
    /// torrent can handle it and the next call hands over the rest. `decrypt`: the chunk has
    /// not been through the connection's RC4 stream yet (the first call for it).
    pub(crate) fn receive_owned(
        &mut self,
        key: PeerKey,
        chunk: &mut BytesMut,
        decrypt: bool,
        now: Time,
    ) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        if decrypt {
            if let Some(rc4) = &mut peer.recv_cipher {
                rc4.apply(chunk);
            }
        }
        if !chunk.is_empty() {
            peer.last_recv = now;
        }
        if peer.recv.is_empty() {
            peer.recv = std::mem::take(chunk);
            return;
        }
        let take = frame_rest(&peer.recv).min(chunk.len());
        peer.recv.extend_from_slice(&chunk[..take]);
        chunk.advance(take);
    }

    /// Decodes the next whole message in a peer's receive buffer and makes it owned with
    /// `convert`; returns it with the frame's length, which the caller removes from
    /// `Peer::recv`, and the peer. `None` when no whole message is buffered (or the peer is
    /// gone); an error is the reason to close the peer for.
    pub(crate) fn decode<T>(
        &mut self,
        key: PeerKey,
        decoder: &Decoder,
        convert: impl FnOnce(Message<'_>) -> T,
    ) -> Option<Result<(T, usize, &mut Peer), CloseReason>> {
        let peer = self.peers.get_mut(&key)?;
        match decoder.decode(SplitBytes::single(&peer.recv)) {
            Err(e) => Some(Err(CloseReason::Violation(Violation::Malformed(e)))),
            Ok(Decoded::Incomplete { .. }) => None,
            Ok(Decoded::Complete { value, consumed }) => Some(Ok((convert(value), consumed, peer))),
        }
    }

    /// The driver sent `n` bytes of a peer's buffer (taken ones first). Returns how many of
    /// them were block payload, `None` when the peer is gone.
    pub(crate) fn sent(&mut self, key: PeerKey, n: usize) -> Option<usize> {
        let peer = self.peers.get_mut(&key)?;
        let payload = peer.send.consume(n);
        if peer.send.is_empty() {
            peer.send_notified = false;
        }
        Some(payload)
    }

    /// Takes whole chunks of a peer's send buffer, up to about `max` bytes (at least one).
    /// They stay counted as the peer's until the driver reports them sent.
    pub(crate) fn take_send(&mut self, key: PeerKey, max: usize) -> Option<Vec<Bytes>> {
        let peer = self.peers.get_mut(&key)?;
        let chunks = peer.send.take_upto(max);
        if peer.send.is_empty() {
            peer.send_notified = false;
        }
        Some(chunks)
    }
}

/// Whether a peer may make room for a newcomer: we are not interested in it, it is not
/// interested in us, no request is outstanding either way, no payload moved over the rate
/// window, and it has been connected at least `Config::evict_idle_after`.
fn is_idle(p: &Peer, now: Time, config: &Config) -> bool {
    !p.am_interested
        && !p.peer_interested
        && p.requests_out.is_empty()
        && p.requests_in.is_empty()
        && p.reading.is_empty()
        && p.down.rate(now) == 0
        && p.up.rate(now) == 0
        && now.saturating_since(p.connected_at) >= config.evict_idle_after
}

/// How many more bytes complete the length-prefixed message that `buf` starts with: the rest
/// of its 4-byte prefix while that is incomplete, else the rest of the message; everything
/// (`usize::MAX`) when `buf` already holds a whole message the torrent left there.
fn frame_rest(buf: &[u8]) -> usize {
    match buf.first_chunk::<4>() {
        None => 4 - buf.len(),
        Some(prefix) => {
            let total = 4 + u32::from_be_bytes(*prefix) as usize;
            match total.checked_sub(buf.len()) {
                Some(rest) if rest > 0 => rest,
                _ => usize::MAX,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use std::time::Duration;

    use super::*;
    use crate::core::api::{Action, ConnId, TorrentId};
    use crate::core::config::Config;
    use crate::core::rate::RateMeter;
    use crate::core::sendbuf::SendBuf;
    use crate::core::wire::Reserved;
    use crate::core::Rng;

    fn ctx() -> Context {
        let id = TorrentId {
            slot: 0,
            generation: 1,
        };
        Context::new(id, Arc::new(Config::default()), Rng::new(1))
    }

    fn peer(slot: u32, port: u16, now: Time) -> Peer {
        peer_at(slot, 1, port, now)
    }

    /// A peer at `10.0.0.<host>:<port>`.
    fn peer_at(slot: u32, host: u8, port: u16, now: Time) -> Peer {
        let conn = ConnId {
            slot,
            generation: 1,
        };
        let addr = SocketAddr::from(([10, 0, 0, host], port));
        let id = PeerId::from_bytes([slot as u8; 20]);
        let none = Reserved::NONE;
        Peer::new(
            conn,
            addr,
            id,
            true,
            none,
            none,
            4,
            now,
            SendBuf::default(),
            false,
        )
    }

    #[test]
    fn attach_and_close_do_the_bookkeeping_both_torrents_share() {
        let (mut set, mut ctx, mut stats) = (PeerSet::default(), ctx(), TorrentStats::default());
        let now = Time::from_secs(1);
        let key = set.next_key();
        set.attach(key, peer(7, 6881, now), false, true, &mut ctx);
        assert!(matches!(
            ctx.out.events.pop_front(),
            Some(Event::PeerConnected { .. })
        ));
        assert_eq!(
            set.peer_by_id(&PeerId::from_bytes([7; 20])),
            Some((key, true))
        );
        let gone = set.close(key, CloseReason::Inactive, now, &mut ctx, &mut stats);
        assert!(gone.is_some());
        assert_eq!(set.len(), 0);
        assert_eq!(stats.closes.get(CloseReason::Inactive.name()), Some(&1));
        assert!(matches!(
            ctx.out.actions.pop_front(),
            Some(Action::Close { .. })
        ));
        assert_eq!(ctx.out.closed.len(), 1);
        assert!(matches!(
            ctx.out.events.pop_front(),
            Some(Event::PeerClosed { .. })
        ));
        // A peer that closed its end is not closed again; a second close finds nothing.
        let key = set.next_key();
        set.attach(key, peer(8, 6882, now), false, false, &mut ctx);
        assert!(ctx.out.events.is_empty(), "not announced");
        set.close(key, CloseReason::RemoteClosed, now, &mut ctx, &mut stats);
        assert!(ctx.out.actions.is_empty());
        assert!(set
            .close(key, CloseReason::RemoteClosed, now, &mut ctx, &mut stats)
            .is_none());
    }

    #[test]
    fn keys_are_never_reused() {
        let mut set = PeerSet::default();
        let a = set.next_key();
        let b = set.next_key();
        assert_ne!(a, b);
    }

    #[test]
    fn a_quiet_peer_gets_a_keep_alive_and_a_silent_one_is_inactive() {
        let (mut set, mut ctx) = (PeerSet::default(), ctx());
        let start = Time::from_secs(1);
        let key = set.next_key();
        set.attach(key, peer(3, 6881, start), false, false, &mut ctx);
        let quiet = start + ctx.config.keepalive_interval;
        set.receive(key, &[], false, quiet);
        assert!(matches!(
            set.keep_alive(key, quiet, &mut ctx),
            Liveness::Alive
        ));
        assert!(matches!(
            ctx.out.actions.pop_front(),
            Some(Action::Send { .. })
        ));
        let silent = start + ctx.config.inactivity_timeout;
        assert!(matches!(
            set.keep_alive(key, silent, &mut ctx),
            Liveness::Inactive
        ));
        assert!(matches!(
            set.keep_alive(PeerKey(99), silent, &mut ctx),
            Liveness::Gone
        ));
    }

    /// A torrent full of `n` peers from 10.0.0.1 and one from 10.0.0.2, all connected at `at`.
    fn crowded(n: u32, at: Time) -> (PeerSet, Context, Vec<PeerKey>) {
        let (mut set, mut ctx) = (PeerSet::default(), ctx());
        let mut keys = Vec::new();
        for i in 0..n {
            let key = set.next_key();
            set.attach(
                key,
                peer_at(i, 1, 7000 + i as u16, at),
                false,
                false,
                &mut ctx,
            );
            keys.push(key);
        }
        let key = set.next_key();
        set.attach(key, peer_at(n, 2, 6881, at), false, false, &mut ctx);
        keys.push(key);
        (set, ctx, keys)
    }

    fn ip(host: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, host])
    }

    #[test]
    fn only_idle_useless_peers_old_enough_are_evicted() {
        let start = Time::from_secs(1);
        let (mut set, ctx, keys) = crowded(3, start);
        let config = &ctx.config;
        let young = start + (config.evict_idle_after - Duration::from_secs(1));
        assert_eq!(
            set.eviction_candidate(ip(3), young, config),
            None,
            "too young"
        );
        let old = start + config.evict_idle_after;
        // The address holding the most goes first; among its peers, the lowest key.
        assert_eq!(set.eviction_candidate(ip(3), old, config), Some(keys[0]));
        // A peer we want something from, or that wants something from us, or with a request
        // either way, or that moved payload within the rate window, stays.
        set.get_mut(&keys[0]).unwrap().am_interested = true;
        set.get_mut(&keys[1]).unwrap().peer_interested = true;
        let lengths = crate::core::Lengths::new(1 << 20, 1 << 16).unwrap();
        let block = lengths.block_at(0, 0, 16384).unwrap();
        set.get_mut(&keys[2]).unwrap().requests_in.push_back(block);
        set.get_mut(&keys[3]).unwrap().up.add(old, 16384);
        assert_eq!(set.eviction_candidate(ip(3), old, config), None);
        set.get_mut(&keys[3]).unwrap().up = RateMeter::new(old);
        assert_eq!(set.eviction_candidate(ip(3), old, config), Some(keys[3]));
    }

    #[test]
    fn a_newcomer_never_replaces_a_peer_no_worse_than_itself() {
        let start = Time::from_secs(1);
        let (set, ctx, keys) = crowded(3, start);
        let config = &ctx.config;
        let old = start + config.evict_idle_after;
        // From the crowded address: its own peers are no worse than it (3 against 3), and the
        // lone peer at 10.0.0.2 holds fewer.
        assert_eq!(set.eviction_candidate(ip(1), old, config), None);
        // From 10.0.0.2 (one peer there): it may replace one of the crowded address's three.
        assert_eq!(set.eviction_candidate(ip(2), old, config), Some(keys[0]));
        // Two lone addresses: a newcomer from a third may replace either; the one connected
        // longest goes.
        let (mut set, mut ctx) = (PeerSet::default(), ctx);
        let a = set.next_key();
        set.attach(
            a,
            peer_at(0, 5, 1, start + Duration::from_secs(1)),
            false,
            false,
            &mut ctx,
        );
        let b = set.next_key();
        set.attach(b, peer_at(1, 6, 1, start), false, false, &mut ctx);
        let later = start + Duration::from_secs(1) + ctx.config.evict_idle_after;
        assert_eq!(set.eviction_candidate(ip(7), later, &ctx.config), Some(b));
        assert_eq!(set.eviction_candidate(ip(5), later, &ctx.config), None);
    }
}
