//! The core's limits and the protocol violations that had no test, driven byte by byte
//! through `Session` (the test plays the remote peers), and the request pipeline's depth on
//! a long link in the seeded simulator.
//!
//! - `TooManyRequests`, `RequestForMissingPiece`, `ExtendedNotNegotiated` (on a torrent and
//!   on a magnet link), `BadExtendedHandshake` (both again) and `PreMetadataFlood`, each
//!   closing the connection with its reason, and what a Fast peer gets instead (a reject).
//! - `max_half_open`, `max_peers_per_torrent` and `max_connections`: never more dials, peers
//!   or connections than allowed, and the freed room used again.
//! - Pipelining: on a 400 ms round trip the leecher keeps enough requests in flight to fill
//!   the link, not the handful a new peer starts with.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ringtorrent::core::api::{Action, CloseReason, ConnId, Event, TorrentId, Violation};
use ringtorrent::core::config::{Config, Encryption};
use ringtorrent::core::mse::SimulatedKeys;
use ringtorrent::core::wire::{
    BlockRequest, Decoded, Decoder, Handshake, Message, Reserved, ReservedFlag, SplitBytes,
};
use ringtorrent::core::{Bitfield, PeerId, Session, Time};
use ringtorrent::driver::sim::{simulate, SimConfig};
use ringtorrent::limits::MAX_PRE_METADATA_BUFFER;
use ringtorrent::metainfo::Info;

const PIECE: u64 = 32 * 1024;
const PIECES: u32 = 4;
const BLOCK: u32 = 16 * 1024;

fn info() -> Arc<Info> {
    common::test_info(PIECE, PIECES)
}

fn plain() -> Reserved {
    Reserved::NONE
}

fn extended() -> Reserved {
    Reserved::NONE.with(ReservedFlag::ExtensionProtocol, true)
}

fn fast_ext() -> Reserved {
    extended().with(ReservedFlag::Fast, true)
}

/// What a torrent in the session starts as.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Seed,
    Empty,
    Magnet,
}

/// A session with one torrent, and the remote peers the test plays.
struct Net {
    session: Session,
    torrent: TorrentId,
    info: Arc<Info>,
    now: Time,
    actions: Vec<Action>,
    events: Vec<Event>,
}

impl Net {
    fn new(kind: Kind, config: Config) -> Net {
        let info = info();
        let now = Time::from_secs(1);
        let mut session = Session::new(
            config,
            PeerId::generate([1; 12]),
            7,
            Box::new(SimulatedKeys::new(7)),
            now,
        );
        session.set_listen_port(6881);
        let torrent = match kind {
            Kind::Seed => session.add_torrent(info.clone(), &Bitfield::full(PIECES), now),
            Kind::Empty => session.add_torrent(info.clone(), &Bitfield::new(PIECES), now),
            Kind::Magnet => session.add_magnet(info.info_hash(), now),
        }
        .unwrap();
        Net {
            session,
            torrent,
            info,
            now,
            actions: Vec::new(),
            events: Vec::new(),
        }
    }

    fn pump(&mut self) {
        while let Some(a) = self.session.poll_action() {
            self.actions.push(a);
        }
        while let Some(e) = self.session.poll_event() {
            self.events.push(e);
        }
    }

    /// A peer at `127.0.0.<n>:5000` connects and completes its handshake with `reserved`.
    fn peer(&mut self, n: u8, reserved: Reserved) -> ConnId {
        let conn = self
            .session
            .accept(addr(n), self.now)
            .expect("room for a connection");
        let hs = Handshake::new(reserved, self.info.info_hash(), PeerId::from_bytes([n; 20]));
        self.recv(conn, &hs.to_bytes());
        conn
    }

    /// A peer at `addr` with peer id `[id; 20]` connects and completes its handshake.
    fn peer_at(&mut self, addr: SocketAddr, id: u8) -> ConnId {
        let conn = self
            .session
            .accept(addr, self.now)
            .expect("room for a connection");
        let hs = Handshake::new(
            fast_ext(),
            self.info.info_hash(),
            PeerId::from_bytes([id; 20]),
        );
        self.recv(conn, &hs.to_bytes());
        conn
    }

    fn recv(&mut self, conn: ConnId, bytes: &[u8]) {
        self.session.handle_recv(conn, bytes, self.now);
        self.pump();
    }

    fn msg(&mut self, conn: ConnId, msg: Message<'_>) {
        let mut out = Vec::new();
        msg.encode(&mut out);
        self.recv(conn, &out);
    }

    fn request(&mut self, conn: ConnId, piece: u32, offset: u32) {
        self.msg(
            conn,
            Message::Request(BlockRequest {
                piece,
                offset,
                len: BLOCK,
            }),
        );
    }

    fn tick(&mut self, by: Duration) {
        self.now += by;
        self.session.handle_timeout(self.now);
        self.pump();
    }

    /// The names of the messages queued for `conn` (its handshake skipped).
    fn sent(&mut self, conn: ConnId) -> Vec<String> {
        let bytes: Vec<u8> = self.session.take_send(conn, usize::MAX).concat();
        let mut at = 0;
        if let Ok(Decoded::Complete { consumed, .. }) =
            Handshake::decode(SplitBytes::single(&bytes))
        {
            at = consumed;
        }
        let mut names = Vec::new();
        while at < bytes.len() {
            match Decoder::new()
                .decode(SplitBytes::single(&bytes[at..]))
                .unwrap()
            {
                Decoded::Complete { value, consumed } => {
                    names.push(match value {
                        Message::Reject(r) => format!("reject {} {}", r.piece, r.offset),
                        other => other
                            .id()
                            .map_or("keep_alive".to_string(), |id| id.name().to_string()),
                    });
                    at += consumed;
                }
                Decoded::Incomplete { .. } => panic!("partial message queued"),
            }
        }
        names
    }

    fn closed(&self, conn: ConnId) -> Option<CloseReason> {
        self.events.iter().find_map(|e| match e {
            Event::PeerClosed {
                conn: c, reason, ..
            } if *c == conn => Some(reason.clone()),
            _ => None,
        })
    }

    /// Connections the session asked the driver to dial so far.
    fn dials(&self) -> Vec<(ConnId, SocketAddr)> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::Connect { conn, addr, .. } => Some((*conn, *addr)),
                _ => None,
            })
            .collect()
    }
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, n], 5000))
}

fn violation(v: Violation) -> Option<CloseReason> {
    Some(CloseReason::Violation(v))
}

#[test]
fn more_requests_than_advertised_close_a_plain_peer_and_reject_a_fast_one() {
    let config = || Config {
        max_queued_requests: 2,
        ..Config::default()
    };
    // A plain peer (no BEP 6) that we unchoked queues a third request while two are in
    // flight to disk: it asked for more than our `reqq`.
    let mut net = Net::new(Kind::Seed, config());
    let conn = net.peer(9, plain());
    net.msg(conn, Message::Interested);
    assert_eq!(net.sent(conn), ["bitfield", "unchoke"]);
    net.request(conn, 0, 0);
    net.request(conn, 0, BLOCK);
    assert_eq!(net.closed(conn), None, "two requests are within the bound");
    net.request(conn, 1, 0);
    assert_eq!(net.closed(conn), violation(Violation::TooManyRequests));
    assert!(net.actions.contains(&Action::Close { conn }));

    // A Fast peer is told `reject` for the one too many and stays.
    let mut net = Net::new(Kind::Seed, config());
    let conn = net.peer(9, fast_ext());
    net.msg(conn, Message::Interested);
    net.sent(conn);
    for (piece, offset) in [(0, 0), (0, BLOCK), (1, 0)] {
        net.request(conn, piece, offset);
    }
    assert_eq!(net.closed(conn), None);
    assert_eq!(net.sent(conn), ["reject 1 0"]);
}

#[test]
fn a_request_for_a_piece_we_never_announced_closes_a_plain_peer() {
    let mut net = Net::new(Kind::Empty, Config::default());
    let conn = net.peer(9, plain());
    net.request(conn, 2, 0);
    assert_eq!(
        net.closed(conn),
        violation(Violation::RequestForMissingPiece)
    );

    // A Fast peer gets a reject for it instead.
    let mut net = Net::new(Kind::Empty, Config::default());
    let conn = net.peer(9, fast_ext());
    net.sent(conn);
    net.request(conn, 2, 0);
    assert_eq!(net.closed(conn), None);
    assert_eq!(net.sent(conn), ["reject 2 0"]);
}

#[test]
fn extended_messages_need_bep_10_and_a_well_formed_handshake() {
    for kind in [Kind::Empty, Kind::Magnet] {
        let name = if kind == Kind::Magnet {
            "magnet"
        } else {
            "torrent"
        };
        // The peer did not set the extension bit in its handshake.
        let mut net = Net::new(kind, Config::default());
        let conn = net.peer(9, plain());
        let payload = b"d1:md11:ut_metadatai3eee";
        net.msg(
            conn,
            Message::Extended {
                id: 0,
                payload: SplitBytes::single(payload),
            },
        );
        assert_eq!(
            net.closed(conn),
            violation(Violation::ExtendedNotNegotiated),
            "{name}"
        );

        // The same handshake from a peer that did set it is fine...
        let mut net = Net::new(kind, Config::default());
        let conn = net.peer(9, extended());
        net.msg(
            conn,
            Message::Extended {
                id: 0,
                payload: SplitBytes::single(payload),
            },
        );
        assert_eq!(net.closed(conn), None, "{name}");
        // ... and one that is not a bencoded dictionary is not.
        let conn = net.peer(10, extended());
        net.msg(
            conn,
            Message::Extended {
                id: 0,
                payload: SplitBytes::single(b"li1ee"),
            },
        );
        assert_eq!(
            net.closed(conn),
            violation(Violation::BadExtendedHandshake),
            "{name}"
        );
        let conn = net.peer(11, extended());
        net.msg(
            conn,
            Message::Extended {
                id: 0,
                payload: SplitBytes::single(b"d1:m"),
            },
        );
        assert_eq!(
            net.closed(conn),
            violation(Violation::BadExtendedHandshake),
            "{name}: truncated"
        );
    }
}

#[test]
fn what_a_peer_says_before_the_metadata_is_bounded() {
    // Before the metadata arrives, a magnet torrent keeps peers' messages to replay later;
    // `MAX_PRE_METADATA_BUFFER` bounds them. Each `piece` message here is 16,397 bytes.
    let mut one = Vec::new();
    let data = vec![7u8; BLOCK as usize];
    Message::Piece {
        piece: 0,
        offset: 0,
        data: SplitBytes::single(&data),
    }
    .encode(&mut one);
    let fit = MAX_PRE_METADATA_BUFFER / one.len();
    assert!(fit > 1);
    let mut net = Net::new(Kind::Magnet, Config::default());
    let conn = net.peer(9, extended());
    for _ in 0..fit {
        net.recv(conn, &one);
    }
    assert_eq!(net.closed(conn), None, "{fit} messages fit the bound");
    // Keep-alives and extended messages are not kept, so they do not count.
    net.recv(conn, &[0, 0, 0, 0]);
    assert_eq!(net.closed(conn), None);
    net.recv(conn, &one);
    assert_eq!(net.closed(conn), violation(Violation::PreMetadataFlood));
    assert!(net.actions.contains(&Action::Close { conn }));
    // Another peer of the same torrent is untouched.
    let other = net.peer(10, extended());
    net.recv(other, &one);
    assert_eq!(net.closed(other), None);
}

#[test]
fn dials_in_progress_stay_within_max_half_open() {
    let mut net = Net::new(
        Kind::Empty,
        Config {
            max_half_open: 3,
            // The peers below answer with plain handshakes.
            encryption: Encryption::Plaintext,
            ..Config::default()
        },
    );
    let addrs: Vec<SocketAddr> = (20..30).map(addr).collect();
    let (torrent, now) = (net.torrent, net.now);
    net.session.add_peers(torrent, &addrs, now);
    net.tick(Duration::ZERO);
    let dials = net.dials();
    assert_eq!(dials.len(), 3, "{dials:?}");
    // Nothing more while they are in progress, however often the session ticks.
    for _ in 0..4 {
        net.tick(Duration::from_millis(500));
    }
    assert_eq!(net.dials().len(), 3);
    // One fails: its place goes to the next address, and only it.
    net.session.handle_closed(dials[0].0, net.now);
    net.pump();
    net.tick(Duration::from_millis(500));
    assert_eq!(net.dials().len(), 4);
    // One connects and completes its handshake: it is a peer now, no longer half-open.
    let (conn, at) = dials[1];
    net.session.handle_connected(conn, net.now);
    let n = at
        .ip()
        .to_string()
        .rsplit('.')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let hs = Handshake::new(
        fast_ext(),
        net.info.info_hash(),
        PeerId::from_bytes([n; 20]),
    );
    net.recv(conn, &hs.to_bytes());
    assert!(net
        .events
        .iter()
        .any(|e| matches!(e, Event::PeerConnected { .. })));
    net.tick(Duration::from_millis(500));
    let dials = net.dials();
    assert_eq!(dials.len(), 5, "{dials:?}");
    let distinct: std::collections::BTreeSet<SocketAddr> = dials.iter().map(|d| d.1).collect();
    assert_eq!(distinct.len(), 5, "each address dialled once");
}

#[test]
fn a_torrent_takes_no_more_than_max_peers_per_torrent() {
    let mut net = Net::new(
        Kind::Empty,
        Config {
            max_peers_per_torrent: 2,
            ..Config::default()
        },
    );
    let a = net.peer(9, fast_ext());
    let b = net.peer(10, fast_ext());
    let c = net.peer(11, fast_ext());
    assert_eq!((net.closed(a), net.closed(b)), (None, None));
    assert_eq!(net.closed(c), Some(CloseReason::TooManyPeers));
    assert_eq!(net.session.peer_count(net.torrent), 2);
    // A full torrent dials nobody it is told about.
    let (torrent, now) = (net.torrent, net.now);
    net.session.add_peers(torrent, &[addr(30), addr(31)], now);
    net.tick(Duration::from_millis(500));
    assert!(net.dials().is_empty());
    // One leaves: the room is taken by a dial.
    net.session.handle_closed(a, net.now);
    net.pump();
    net.tick(Duration::from_millis(500));
    assert_eq!(net.dials().len(), 1, "{:?}", net.dials());
}

#[test]
fn one_address_holds_no_more_than_max_peers_per_ip_either_way() {
    let mut net = Net::new(
        Kind::Empty,
        Config {
            max_peers_per_ip: 3,
            ..Config::default()
        },
    );
    let flood: Vec<ConnId> = (0..10u8)
        .map(|i| {
            net.peer_at(
                SocketAddr::from(([127, 0, 0, 9], 6000 + u16::from(i))),
                100 + i,
            )
        })
        .collect();
    let refused: Vec<_> = flood.iter().filter_map(|&c| net.closed(c)).collect();
    assert_eq!(refused, vec![CloseReason::TooManyFromIp; 7]);
    assert_eq!(net.session.peer_count(net.torrent), 3);
    // Another address is welcome.
    let other = net.peer(10, fast_ext());
    assert_eq!(net.closed(other), None);
    assert_eq!(net.session.peer_count(net.torrent), 4);
    // Dialling: of many ports at one host, no more than the cap at once.
    let (torrent, now) = (net.torrent, net.now);
    let host: Vec<SocketAddr> = (0..20)
        .map(|p| SocketAddr::from(([127, 0, 0, 20], 7000 + p)))
        .collect();
    net.session.add_peers(torrent, &host, now);
    for _ in 0..3 {
        net.tick(Duration::from_millis(500));
    }
    assert_eq!(net.dials().len(), 3, "{:?}", net.dials());
    assert!(net.session.connect(torrent, host[19], net.now).is_none());
    // Before a handshake names a torrent, the cap holds across the session: an address
    // opening connections it never greets cannot take every connection of the session.
    let silent = |port| SocketAddr::from(([127, 0, 0, 30], port));
    for port in 0..3 {
        assert!(net.session.accept(silent(port), net.now).is_some());
    }
    assert!(net.session.accept(silent(3), net.now).is_none());
    assert!(
        net.session.accept(addr(31), net.now).is_some(),
        "another address"
    );
}

#[test]
fn a_full_torrent_lets_a_newcomer_replace_an_idle_useless_peer() {
    let config = Config {
        max_peers_per_torrent: 3,
        max_peers_per_ip: 100,
        ..Config::default()
    };
    let idle_after = config.evict_idle_after;
    let mut net = Net::new(Kind::Seed, config);
    // One address fills the torrent; the first of its peers wants what we have.
    let flood: Vec<ConnId> = (0..3u8)
        .map(|i| {
            net.peer_at(
                SocketAddr::from(([127, 0, 0, 9], 6000 + u16::from(i))),
                100 + i,
            )
        })
        .collect();
    net.msg(flood[0], Message::Interested);
    // Too soon: nobody has been idle long enough, so a newcomer is refused.
    let early = net.peer(10, fast_ext());
    assert_eq!(net.closed(early), Some(CloseReason::TooManyPeers));
    net.tick(idle_after);
    // The flooding address never makes room for itself.
    let again = net.peer_at(SocketAddr::from(([127, 0, 0, 9], 6100)), 120);
    assert_eq!(net.closed(again), Some(CloseReason::TooManyPeers));
    // Another address replaces an idle peer: not the interested one.
    let newcomer = net.peer(11, fast_ext());
    assert_eq!(net.closed(newcomer), None);
    assert_eq!(net.closed(flood[0]), None, "an interested peer stays");
    assert_eq!(net.closed(flood[1]), Some(CloseReason::Evicted));
    assert_eq!(net.closed(flood[2]), None);
    assert_eq!(net.session.peer_count(net.torrent), 3);
    // The flood's last idle peer goes for the next newcomer; then only a useful peer and
    // newcomers too young to be replaced are left, and the next one is refused.
    let late = net.peer(12, fast_ext());
    assert_eq!(net.closed(late), None, "replaces flood[2]");
    assert_eq!(net.closed(flood[2]), Some(CloseReason::Evicted));
    let last = net.peer(13, fast_ext());
    assert_eq!(net.closed(last), Some(CloseReason::TooManyPeers));
}

#[test]
fn a_full_session_lets_a_newcomer_replace_an_idle_useless_peer() {
    let config = Config {
        max_connections: 3,
        max_peers_per_ip: 100,
        ..Config::default()
    };
    let idle_after = config.evict_idle_after;
    let mut net = Net::new(Kind::Seed, config);
    let flood: Vec<ConnId> = (0..3u8)
        .map(|i| {
            net.peer_at(
                SocketAddr::from(([127, 0, 0, 9], 6000 + u16::from(i))),
                100 + i,
            )
        })
        .collect();
    net.msg(flood[0], Message::Interested);
    // Too soon: refused, and the search that found nobody is not repeated within the tick.
    assert!(net.session.accept(addr(10), net.now).is_none());
    net.tick(idle_after);
    // The flooding address never makes room for itself.
    let again = SocketAddr::from(([127, 0, 0, 9], 6100));
    assert!(net.session.accept(again, net.now).is_none());
    net.tick(Duration::from_millis(500));
    // Another address takes an idle peer's place (not the interested one).
    let newcomer = net.peer(11, fast_ext());
    net.pump();
    assert_eq!(net.closed(newcomer), None);
    assert_eq!(net.closed(flood[0]), None);
    assert_eq!(net.closed(flood[1]), Some(CloseReason::Evicted));
    assert_eq!(net.session.connection_count(), 3);
}

#[test]
fn the_session_holds_no_more_than_max_connections() {
    let mut net = Net::new(
        Kind::Empty,
        Config {
            max_connections: 2,
            ..Config::default()
        },
    );
    let a = net.peer(9, fast_ext());
    // A handshaking connection counts too.
    let b = net.session.accept(addr(10), net.now).expect("room");
    assert!(net.session.accept(addr(11), net.now).is_none());
    let torrent = net.torrent;
    assert!(net.session.connect(torrent, addr(12), net.now).is_none());
    assert_eq!(net.session.connection_count(), 2);
    assert_eq!(
        net.session.handshake_closes().get("too_many_connections"),
        Some(&1)
    );
    // Nor does it dial past the limit on its own.
    let now = net.now;
    net.session.add_peers(torrent, &[addr(30), addr(31)], now);
    net.tick(Duration::from_millis(500));
    assert!(net.dials().is_empty());
    // A slot freed is a slot used.
    net.session.handle_closed(b, net.now);
    net.pump();
    net.tick(Duration::from_millis(500));
    assert_eq!(net.dials().len(), 1);
    assert_eq!(net.session.connection_count(), 2);
    assert!(net.session.accept(addr(13), net.now).is_none());
    let _ = a;
}

/// One seed and one leecher on a 200 ms one-way link (400 ms round trip) with 4 MB/s of
/// uplink: 16 MiB is about 4 s of transfer. Kept at its first few requests once slow start
/// ends (3 s after the unchoke), the leecher would get 4 blocks per round trip (160 KB/s:
/// a minute more); keeping a few seconds of its rate in flight, it is done in a handful of
/// round trips more than the transfer itself.
#[test]
fn the_request_pipeline_fills_a_long_link() {
    let run = |latency_ms: u64| {
        let r = simulate(SimConfig {
            leechers: 1,
            seeds: 1,
            size: 16 << 20,
            piece_len: 256 << 10,
            latency: Duration::from_millis(latency_ms),
            up_rate: 4_000_000,
            down_rate: 50_000_000,
            join_spread: Duration::ZERO,
            peers_per_node: 1,
            time_limit: Duration::from_secs(300),
            seed: 5,
            ..SimConfig::default()
        })
        .expect("valid simulation");
        assert_eq!(r.completed, 1, "{r}");
        assert!(r.every_byte_right);
        r.completion_s.unwrap()
    };
    let near = run(1);
    let far = run(200);
    println!("completion: {near:.2} s at 1 ms, {far:.2} s at 200 ms");
    // The transfer itself takes about 4 s either way; the long link may add its round trips
    // for connecting, handshaking and ramping up, not one per few blocks.
    assert!(near < 6.0, "{near}");
    assert!(
        far < near + 6.0,
        "{far} s at 200 ms against {near} s at 1 ms"
    );
}
