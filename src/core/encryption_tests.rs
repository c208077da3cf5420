//! Encryption policies between sessions, driven through the session's public inputs as a
//! driver would: which pairs of policies connect and how (plain, MSE then plaintext, RC4),
//! that RC4 carries every later message both ways (payload blocks included, copied through
//! the cipher on the way out), the refusals and their reasons, and `prefer`'s redial the other
//! way with the method remembered per peer. The handshake machines themselves, byte by byte
//! and against hostile input, are tested in `mse.rs`; swarms of mixed policies in the
//! simulator tests at the end.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ::core::net::SocketAddr;
use bytes::{Bytes, BytesMut};

use super::api::{Action, CloseReason, ConnId, DiskDone, DiskOp, Event, TorrentId};
use super::config::{Config, Encryption};
use super::mse::{MseError, SimulatedKeys};
use super::wire::{Handshake, Reserved};
use super::{Bitfield, Crypto, PeerId, Session, Time};
use crate::driver::sim::{simulate, SimConfig};
use crate::metainfo::Info;

const PIECES: u32 = 4;
const PIECE_LEN: u32 = 32 * 1024;
const PLAIN: &[u8] = b"\x13BitTorrent protocol";

fn payload() -> Vec<u8> {
    (0..PIECES * PIECE_LEN)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

fn info() -> Arc<Info> {
    let data = payload();
    let mut pieces = Vec::new();
    for chunk in data.chunks(PIECE_LEN as usize) {
        use sha1::Digest;
        pieces.extend_from_slice(&sha1::Sha1::digest(chunk));
    }
    super::fixtures::single_file_info("t.bin", PIECE_LEN, data.len() as i64, pieces)
}

fn session(policy: Encryption, id: u8) -> Session {
    let config = Config {
        encryption: policy,
        ..Config::default()
    };
    let seed = u64::from(id);
    let keys = Box::new(SimulatedKeys::new(seed));
    Session::new(
        config,
        PeerId::generate([id; 12]),
        seed,
        keys,
        Time::from_secs(1),
    )
}

/// A seed and a leecher of one torrent, wired back to back: the leecher dials, the seed
/// accepts, and `pump` moves bytes, closes and disk operations between them until both are
/// quiet. Disk reads are served from the payload; writes are kept, to compare.
struct Wire {
    seed: Session,
    leecher: Session,
    seed_torrent: TorrentId,
    leecher_torrent: TorrentId,
    seed_addr: SocketAddr,
    /// (leecher's connection, seed's connection), for every dial that came up.
    links: Vec<(ConnId, Option<ConnId>)>,
    written: BTreeMap<(u32, u32), Bytes>,
    seed_events: Vec<Event>,
    leecher_events: Vec<Event>,
    now: Time,
    /// Bytes on their way: (to the seed, the receiving connection, the bytes of one read).
    inbox: std::collections::VecDeque<(bool, ConnId, Vec<u8>)>,
    /// Send as the epoll driver does (`send_chunks`, which leaves the bytes in place, then
    /// `handle_sent`) rather than as io_uring and the simulator do (`take_send`).
    chunked: bool,
    /// How both sides take what arrives.
    recv: Recv,
}

/// The three ways a driver hands received bytes to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recv {
    /// `handle_recv` with a slice of the driver's buffer.
    Copy,
    /// Into the connection's own buffer (`recv_buffer`, `handle_recv_in_place`, then
    /// `recv_drained`), as the epoll driver reads.
    InPlace,
    /// A buffer given away (`handle_recv_owned`), as the io_uring driver's ring hands them.
    Owned,
}

/// Bytes arrive on `conn` the way `how` says. In place, each read fills at most the room the
/// session lent, so a large read is cut where the room ends.
fn receive(s: &mut Session, conn: ConnId, mut bytes: &[u8], how: Recv, now: Time) {
    match how {
        Recv::Copy => s.handle_recv(conn, bytes, now),
        Recv::Owned => s.handle_recv_owned(conn, BytesMut::from(bytes), now),
        Recv::InPlace => {
            while !bytes.is_empty() {
                let Some(buf) = s.recv_buffer(conn) else {
                    return;
                };
                let room = buf.capacity() - buf.len();
                assert!(room >= crate::limits::RECV_MIN_SPARE);
                let n = room.min(bytes.len());
                buf.extend_from_slice(&bytes[..n]);
                s.handle_recv_in_place(conn, n, now);
                bytes = &bytes[n..];
            }
            s.recv_drained(conn);
        }
    }
}

/// Everything queued on `conn`, the way a driver of either kind takes it, reported sent.
fn drain(s: &mut Session, conn: ConnId, chunked: bool, now: Time) -> Vec<u8> {
    let bytes = if chunked {
        s.send_chunks(conn).concat()
    } else {
        s.take_send(conn, usize::MAX).concat()
    };
    if !bytes.is_empty() {
        s.handle_sent(conn, bytes.len(), now);
    }
    bytes
}

impl Wire {
    fn receiving(
        seed_policy: Encryption,
        leecher_policy: Encryption,
        chunked: bool,
        recv: Recv,
    ) -> Wire {
        let info = info();
        let now = Time::from_secs(1);
        let mut seed = session(seed_policy, 1);
        let mut leecher = session(leecher_policy, 2);
        let seed_torrent = seed
            .add_torrent(info.clone(), &Bitfield::full(PIECES), now)
            .unwrap();
        let leecher_torrent = leecher
            .add_torrent(info, &Bitfield::new(PIECES), now)
            .unwrap();
        Wire {
            seed,
            leecher,
            seed_torrent,
            leecher_torrent,
            seed_addr: "10.0.0.1:6881".parse().unwrap(),
            links: Vec::new(),
            written: BTreeMap::new(),
            seed_events: Vec::new(),
            leecher_events: Vec::new(),
            now,
            chunked,
            recv,
            inbox: Default::default(),
        }
    }

    fn dial(&mut self) {
        let conn = self
            .leecher
            .connect(self.leecher_torrent, self.seed_addr, self.now)
            .expect("room to dial");
        self.links.push((conn, None));
    }

    fn seed_side(&self, leecher_conn: ConnId) -> Option<ConnId> {
        self.links
            .iter()
            .find(|(l, _)| *l == leecher_conn)
            .and_then(|(_, s)| *s)
    }

    fn leecher_side(&self, seed_conn: ConnId) -> Option<ConnId> {
        self.links
            .iter()
            .find(|(_, s)| *s == Some(seed_conn))
            .map(|(l, _)| *l)
    }

    /// Runs both sessions until neither has anything to do.
    fn pump(&mut self) {
        let leecher_addr: SocketAddr = "10.0.0.2:50000".parse().unwrap();
        for _ in 0..1_000_000 {
            let mut busy = false;
            while let Some(action) = self.leecher.poll_action() {
                busy = true;
                match action {
                    Action::Connect { conn, .. } => {
                        if !self.links.iter().any(|(l, _)| *l == conn) {
                            self.links.push((conn, None));
                        }
                        let accepted = self.seed.accept(leecher_addr, self.now);
                        if let Some(link) = self.links.iter_mut().find(|(l, _)| *l == conn) {
                            link.1 = accepted;
                        }
                        self.leecher.handle_connected(conn, self.now);
                    }
                    Action::Send { conn } => {
                        let bytes = drain(&mut self.leecher, conn, self.chunked, self.now);
                        if let Some(to) = self.seed_side(conn) {
                            self.deliver(true, to, bytes);
                        }
                    }
                    Action::Close { conn } => {
                        if let Some(to) = self.seed_side(conn) {
                            self.seed.handle_closed(to, self.now);
                        }
                    }
                    Action::Disk(DiskOp::Write { block, data, .. }) => {
                        self.written
                            .insert((block.piece.get(), block.offset), data.clone());
                        let done = DiskDone::Written {
                            torrent: self.leecher_torrent,
                            block,
                            result: Ok(()),
                        };
                        self.leecher.handle_disk(done, self.now);
                    }
                    Action::Disk(DiskOp::Verify { piece, .. }) => {
                        let done = DiskDone::Verified {
                            torrent: self.leecher_torrent,
                            piece,
                            ok: self.piece_written_right(piece.get()),
                            block_hashes: Vec::new(),
                        };
                        self.leecher.handle_disk(done, self.now);
                    }
                    other => panic!("unexpected leecher action {other:?}"),
                }
            }
            while let Some(action) = self.seed.poll_action() {
                busy = true;
                match action {
                    Action::Send { conn } => {
                        let bytes = drain(&mut self.seed, conn, self.chunked, self.now);
                        if let Some(to) = self.leecher_side(conn) {
                            self.deliver(false, to, bytes);
                        }
                    }
                    Action::Close { conn } => {
                        if let Some(to) = self.leecher_side(conn) {
                            self.leecher.handle_closed(to, self.now);
                        }
                    }
                    Action::Disk(DiskOp::Read { peer, block, .. }) => {
                        let at = (block.piece.get() * PIECE_LEN + block.offset) as usize;
                        let data = Bytes::from(payload()[at..at + block.len as usize].to_vec());
                        let done = DiskDone::Read {
                            torrent: self.seed_torrent,
                            peer,
                            block,
                            result: Ok(data),
                        };
                        self.seed.handle_disk(done, self.now);
                    }
                    other => panic!("unexpected seed action {other:?}"),
                }
            }
            // One read at a time, the senders' actions handled between reads, as a driver
            // does.
            if let Some((to_seed, conn, bytes)) = self.inbox.pop_front() {
                busy = true;
                let to = if to_seed {
                    &mut self.seed
                } else {
                    &mut self.leecher
                };
                receive(to, conn, &bytes, self.recv, self.now);
            }
            self.seed_events
                .extend(std::iter::from_fn(|| self.seed.poll_event()));
            self.leecher_events
                .extend(std::iter::from_fn(|| self.leecher.poll_event()));
            if !busy {
                return;
            }
        }
        panic!("the sessions never went quiet");
    }

    /// Queues bytes for the other side: whole, or (`chunked`) in reads of a few dozen bytes,
    /// so that a handshake's parts arrive apart.
    fn deliver(&mut self, to_seed: bool, conn: ConnId, bytes: Vec<u8>) {
        let read = if self.chunked { 61 } else { usize::MAX };
        for piece in bytes.chunks(read) {
            self.inbox.push_back((to_seed, conn, piece.to_vec()));
        }
    }

    fn piece_written_right(&self, piece: u32) -> bool {
        let got: Vec<u8> = self
            .written
            .range((piece, 0)..(piece + 1, 0))
            .flat_map(|(_, b)| b.iter().copied())
            .collect();
        let start = (piece * PIECE_LEN) as usize;
        got == payload()[start..start + PIECE_LEN as usize]
    }

    /// Time passes: both sessions' timers run, then `pump`.
    fn wait(&mut self, d: Duration) {
        self.now += d;
        self.seed.handle_timeout(self.now);
        self.leecher.handle_timeout(self.now);
        self.pump();
    }

    fn connected(events: &[Event]) -> Vec<Crypto> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::PeerConnected { crypto, .. } => Some(*crypto),
                _ => None,
            })
            .collect()
    }

    fn closes(events: &[Event]) -> Vec<CloseReason> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::PeerClosed { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .collect()
    }
}

/// What a leecher dialling a seed gets with these policies (libtorrent's semantics): the
/// protection both ends report, or why the seed refused.
fn expected(leecher: Encryption, seed: Encryption) -> Result<Crypto, CloseReason> {
    use Encryption::*;
    match (leecher, seed) {
        (Plaintext, Require) => Err(CloseReason::EncryptionRequired),
        (Plaintext, _) => Ok(Crypto::None),
        // An encrypted dial offering both: plaintext selected unless the seed insists.
        (Prefer, Require) => Ok(Crypto::Rc4),
        (Prefer, _) => Ok(Crypto::Plaintext),
        // RC4 only: every policy answers it, `plaintext` included.
        (Require, _) => Ok(Crypto::Rc4),
    }
}

/// Every pair of policies, sending whole and in 61-byte reads, both sides receiving `how`:
/// each connects as [`expected`] says and carries the whole torrent intact, or is refused.
fn every_pair_of_policies(how: Recv) {
    use Encryption::*;
    for (leecher, seed, chunked) in [Plaintext, Prefer, Require]
        .into_iter()
        .flat_map(|l| [Plaintext, Prefer, Require].map(|s| (l, s)))
        .flat_map(|(l, s)| [(l, s, false), (l, s, true)])
    {
        let case = format!("leecher {leecher}, seed {seed}, chunked sends {chunked}, {how:?}");
        let mut w = Wire::receiving(seed, leecher, chunked, how);
        w.dial();
        w.pump();
        for _ in 0..20 {
            w.wait(Duration::from_millis(500));
        }
        match expected(leecher, seed) {
            Ok(crypto) => {
                assert_eq!(Wire::connected(&w.seed_events), vec![crypto], "{case}");
                assert_eq!(Wire::connected(&w.leecher_events), vec![crypto], "{case}");
                // Every block went through the stream (and its cipher, if any) and
                // arrived right: the whole torrent verified.
                assert!(w.leecher.is_complete(w.leecher_torrent), "{case}");
                assert!(
                    (0..PIECES).all(|p| w.piece_written_right(p)),
                    "{case}: the payload arrived intact"
                );
                let summary = w.seed.peers(w.seed_torrent, w.now);
                assert!(summary.iter().all(|p| p.crypto == crypto), "{case}");
            }
            Err(reason) => {
                assert!(Wire::connected(&w.seed_events).is_empty(), "{case}");
                assert_eq!(Wire::closes(&w.seed_events), vec![reason.clone()], "{case}");
                assert_eq!(w.seed.handshake_closes().get(reason.name()), Some(&1));
                // `plaintext` never starts encryption, so it does not redial encrypted.
                assert!(!w.leecher.is_complete(w.leecher_torrent), "{case}");
            }
        }
    }
}

#[test]
fn every_pair_of_policies_connects_as_specified_and_rc4_carries_the_payload() {
    every_pair_of_policies(Recv::Copy);
}

/// The same, read straight into each connection's buffer (handshakes, MSE key exchanges and
/// RC4 decrypted in place; 61-byte reads end inside length prefixes and blocks) and handed
/// over in owned buffers (the rest of a message copied across, the remainder kept).
#[test]
fn every_pair_of_policies_carries_the_payload_read_in_place_or_in_owned_buffers() {
    every_pair_of_policies(Recv::InPlace);
    every_pair_of_policies(Recv::Owned);
}

#[test]
fn a_plaintext_only_offer_is_refused_under_require_with_its_reason() {
    // An MSE initiator that offers only plaintext (libtorrent "forced" with the plaintext
    // level) cannot talk to a seed that requires RC4.
    use super::mse::{Initiator, Step, CRYPTO_PLAINTEXT};
    let info = info();
    let now = Time::from_secs(1);
    let mut seed = session(Encryption::Require, 1);
    seed.add_torrent(info.clone(), &Bitfield::full(PIECES), now)
        .unwrap();
    let conn = seed.accept("10.0.0.3:4000".parse().unwrap(), now).unwrap();
    let ours = Handshake::new(
        Reserved::NONE,
        info.info_hash(),
        PeerId::from_bytes([9; 20]),
    );
    let (mut a, first) = Initiator::new(
        [7; 20],
        info.info_hash(),
        CRYPTO_PLAINTEXT,
        vec![],
        vec![],
        ours.to_bytes().to_vec(),
    );
    seed.handle_recv(conn, &first, now);
    let yb = seed.take_send(conn, usize::MAX).concat();
    let Ok(Step::Send(request)) = a.feed(&yb) else {
        panic!("the initiator answers Yb")
    };
    seed.handle_recv(conn, &request, now);
    let closes: Vec<CloseReason> = std::iter::from_fn(|| seed.poll_event())
        .filter_map(|e| match e {
            Event::PeerClosed { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(
        closes,
        vec![CloseReason::Encryption(MseError::PlaintextOnly)]
    );
    assert_eq!(
        CloseReason::Encryption(MseError::PlaintextOnly).name(),
        "mse_plaintext_only"
    );
}

/// The leecher's side of dials to a peer that never answers an encrypted handshake (or never
/// a plain one): the bytes of each dial.
struct Dials {
    s: Session,
    torrent: TorrentId,
    peer: SocketAddr,
    now: Time,
}

impl Dials {
    fn new(policy: Encryption) -> Dials {
        let mut s = session(policy, 2);
        let now = Time::from_secs(1);
        let torrent = s.add_torrent(info(), &Bitfield::new(PIECES), now).unwrap();
        let peer: SocketAddr = "10.0.0.7:6881".parse().unwrap();
        s.add_peers(torrent, &[peer], now);
        Dials {
            s,
            torrent,
            peer,
            now,
        }
    }

    /// Lets `after` pass; the dial that comes, if any, connected, with the first bytes it
    /// sends: whether it opens encrypted.
    fn next_dial(&mut self, after: Duration) -> Option<(ConnId, bool)> {
        self.now += after;
        self.s.handle_timeout(self.now);
        let conn = std::iter::from_fn(|| self.s.poll_action()).find_map(|a| match a {
            Action::Connect { conn, addr, .. } if addr == self.peer => Some(conn),
            _ => None,
        })?;
        self.s.handle_connected(conn, self.now);
        let bytes = self.s.take_send(conn, usize::MAX).concat();
        assert!(!bytes.is_empty());
        Some((conn, !bytes.starts_with(PLAIN)))
    }

    fn refused(&mut self, conn: ConnId) {
        self.s.handle_closed(conn, self.now);
        std::iter::from_fn(|| self.s.poll_action()).for_each(drop);
    }

    /// The peer answers a plain handshake: it becomes a peer, then leaves.
    fn answer_plain_and_leave(&mut self, conn: ConnId) {
        let theirs = Handshake::new(
            Reserved::NONE,
            info().info_hash(),
            PeerId::from_bytes([5; 20]),
        );
        self.s.handle_recv(conn, &theirs.to_bytes(), self.now);
        assert_eq!(self.s.peer_count(self.torrent), 1);
        self.refused(conn);
        assert_eq!(self.s.peer_count(self.torrent), 0);
    }
}

#[test]
fn prefer_redials_the_other_way_once_and_remembers_what_worked() {
    let tick = Duration::from_millis(500);
    let mut d = Dials::new(Encryption::Prefer);
    // Nothing known of the peer: encrypted first.
    let (first, encrypted) = d.next_dial(Duration::ZERO).unwrap();
    assert!(encrypted);
    // It closes on the encrypted handshake (a client with encryption disabled): redialled
    // in plaintext at the next tick, without the usual back-off.
    d.refused(first);
    let (second, encrypted) = d.next_dial(tick).unwrap();
    assert!(!encrypted, "the retry is plain");
    d.answer_plain_and_leave(second);
    // Next time, plain straight away.
    let (third, encrypted) = d.next_dial(Duration::from_secs(60)).unwrap();
    assert!(!encrypted, "what worked is remembered");
    // Now it refuses plaintext (its user turned "require" on): encrypted again at once.
    d.refused(third);
    let (fourth, encrypted) = d.next_dial(tick).unwrap();
    assert!(encrypted);
    // Refused that way too: no immediate retry any more, the back-off applies, and the
    // methods keep alternating.
    d.refused(fourth);
    assert!(d.next_dial(tick).is_none(), "no third immediate redial");
    let (_, encrypted) = d.next_dial(Duration::from_secs(120)).unwrap();
    assert!(!encrypted);
}

#[test]
fn require_and_plaintext_never_switch_methods() {
    for (policy, encrypted) in [(Encryption::Require, true), (Encryption::Plaintext, false)] {
        let mut d = Dials::new(policy);
        for _ in 0..3 {
            let (conn, e) = d.next_dial(Duration::from_secs(600)).unwrap();
            assert_eq!(e, encrypted, "{policy}");
            d.refused(conn);
            assert!(
                d.next_dial(Duration::from_millis(500)).is_none(),
                "{policy}: no immediate redial"
            );
        }
    }
}

fn sim(mix: Vec<Encryption>, seed: u64) -> crate::driver::sim::SimReport {
    sim_with(mix, seed, false)
}

fn sim_with(mix: Vec<Encryption>, seed: u64, magnet: bool) -> crate::driver::sim::SimReport {
    simulate(SimConfig {
        magnet,
        leechers: 12,
        seeds: 2,
        size: 2 << 20,
        piece_len: 64 << 10,
        seed,
        peers_per_node: 13,
        join_spread: Duration::from_secs(1),
        encryption_mix: mix,
        ..SimConfig::default()
    })
    .unwrap()
}

#[test]
fn swarms_of_every_policy_and_of_mixed_policies_finish_byte_exact() {
    use Encryption::*;
    let rc4 = sim(vec![Require], 3);
    assert_eq!(rc4.completed, 12);
    assert!(rc4.every_byte_right);
    assert_eq!(rc4.crypto.keys().collect::<Vec<_>>(), vec!["rc4"]);

    let mixed = sim(vec![Plaintext, Prefer, Require], 4);
    assert_eq!(mixed.completed, 12, "{mixed}");
    assert!(mixed.every_byte_right, "{mixed}");
    for kind in ["none", "mse_plaintext", "rc4"] {
        assert!(
            mixed.crypto.get(kind).is_some_and(|&n| n > 0),
            "{kind}: {mixed}"
        );
    }
    // Plaintext nodes dialling `require` nodes are refused, and say so.
    assert!(
        mixed
            .closes
            .get("encryption_required")
            .is_some_and(|&n| n > 0),
        "{mixed}"
    );
    // Magnet links: the info hash is the only key, and the metadata itself travels over RC4.
    let magnet = sim_with(vec![Require], 5, true);
    assert_eq!(magnet.completed, 12, "{magnet}");
    assert!(
        magnet.every_byte_right && magnet.metadata_received >= 12,
        "{magnet}"
    );
    assert_eq!(magnet.metadata_wrong, 0);
    assert_eq!(magnet.crypto.keys().collect::<Vec<_>>(), vec!["rc4"]);
    // The same seed replays the same run, keys and all.
    assert_eq!(
        format!("{}", sim(vec![Plaintext, Prefer, Require], 4)),
        format!("{mixed}")
    );
}
