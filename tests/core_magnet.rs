//! Magnet torrents, metadata exchange (BEP 9) and peer exchange (BEP 11) driven byte by byte
//! through the core's public API: the test plays the remote peers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ringtorrent::bencode::OwnedValue;
use ringtorrent::core::api::{Action, CloseReason, ConnId, Event, TorrentId, Violation};
use ringtorrent::core::config::Config;
use ringtorrent::core::mse::SimulatedKeys;
use ringtorrent::core::wire::{
    Decoded, Decoder, ExtendedHandshake, Handshake, HashRequest, Message, MetadataMsg, PexMsg,
    Reserved, ReservedFlag, SplitBytes,
};
use ringtorrent::core::{Bitfield, PeerId, Session, Time};
use ringtorrent::limits::MAX_METADATA_SIZE;
use ringtorrent::metainfo::{merkle, Info, Torrent};

/// A torrent whose info dictionary takes two metadata pieces (1,200 pieces: 24,000 bytes of
/// hashes), so that pieces can come from different peers.
fn info() -> Arc<Info> {
    info_with(false)
}

fn info_with(private: bool) -> Arc<Info> {
    let mut info = BTreeMap::new();
    if private {
        info.insert(b"private".to_vec(), OwnedValue::Int(1));
    }
    info.insert(b"name".to_vec(), OwnedValue::str("m.bin"));
    info.insert(b"piece length".to_vec(), OwnedValue::Int(16384));
    let pieces: Vec<u8> = (0..1200 * 20).map(|i| (i * 7 % 251) as u8).collect();
    info.insert(b"pieces".to_vec(), OwnedValue::Bytes(pieces));
    info.insert(b"length".to_vec(), OwnedValue::Int(1200 * 16384));
    let mut root = BTreeMap::new();
    root.insert(b"info".to_vec(), OwnedValue::Dict(info));
    Arc::new(
        Torrent::from_bytes(&OwnedValue::Dict(root).to_bytes())
            .unwrap()
            .info,
    )
}

fn reserved() -> Reserved {
    Reserved::NONE
        .with(ReservedFlag::Fast, true)
        .with(ReservedFlag::ExtensionProtocol, true)
}

struct Net {
    session: Session,
    torrent: TorrentId,
    info: Arc<Info>,
    now: Time,
    actions: Vec<Action>,
    events: Vec<Event>,
}

/// One extended message the session sent: (extended id, payload).
type Ext = (u8, Vec<u8>);

impl Net {
    fn magnet() -> Net {
        let info = info();
        let now = Time::from_secs(1);
        let mut session = Session::new(
            Config::default(),
            PeerId::generate([1; 12]),
            7,
            Box::new(SimulatedKeys::new(7)),
            now,
        );
        session.set_listen_port(6881);
        let torrent = session.add_magnet(info.info_hash(), now).unwrap();
        Net {
            session,
            torrent,
            info,
            now,
            actions: Vec::new(),
            events: Vec::new(),
        }
    }

    fn with_metadata(have: Bitfield) -> Net {
        Net::with_info(info(), have)
    }

    fn with_info(info: Arc<Info>, have: Bitfield) -> Net {
        let mut net = Net::magnet();
        net.info = info;
        let now = net.now;
        let mut session = Session::new(
            Config::default(),
            PeerId::generate([2; 12]),
            7,
            Box::new(SimulatedKeys::new(7)),
            now,
        );
        session.set_listen_port(6881);
        net.torrent = session.add_torrent(net.info.clone(), &have, now).unwrap();
        net.session = session;
        net
    }

    fn pump(&mut self) {
        while let Some(a) = self.session.poll_action() {
            self.actions.push(a);
        }
        while let Some(e) = self.session.poll_event() {
            self.events.push(e);
        }
    }

    /// A peer at `addr` connects and completes its handshake.
    fn peer(&mut self, addr: &str, id: u8) -> ConnId {
        let conn = self
            .session
            .accept(addr.parse().unwrap(), self.now)
            .unwrap();
        let hs = Handshake::new(
            reserved(),
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

    fn ext(&mut self, conn: ConnId, id: u8, payload: &[u8]) {
        self.msg(
            conn,
            Message::Extended {
                id,
                payload: SplitBytes::single(payload),
            },
        );
    }

    fn ext_handshake(&mut self, conn: ConnId, hs: ExtendedHandshake) {
        self.ext(conn, 0, &hs.to_bytes());
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.session.handle_timeout(self.now);
        self.pump();
    }

    /// Everything queued for `conn`: extended messages, and the names of the others.
    fn sent(&mut self, conn: ConnId) -> (Vec<Ext>, Vec<String>) {
        let bytes: Vec<u8> = self.session.take_send(conn, usize::MAX).concat();
        let mut at = 0;
        if let Ok(Decoded::Complete { consumed, .. }) =
            Handshake::decode(SplitBytes::single(&bytes))
        {
            at = consumed;
        }
        let (mut ext, mut names) = (Vec::new(), Vec::new());
        while at < bytes.len() {
            match Decoder::new()
                .decode(SplitBytes::single(&bytes[at..]))
                .unwrap()
            {
                Decoded::Complete { value, consumed } => {
                    match value {
                        Message::Extended { id, payload } => ext.push((id, payload.to_vec())),
                        other => names.push(
                            other
                                .id()
                                .map_or("KeepAlive".to_owned(), |i| format!("{i:?}")),
                        ),
                    }
                    at += consumed;
                }
                Decoded::Incomplete { .. } => panic!("partial message queued"),
            }
        }
        (ext, names)
    }

    fn closed(&self, conn: ConnId) -> Option<&CloseReason> {
        self.events.iter().find_map(|e| match e {
            Event::PeerClosed {
                conn: c, reason, ..
            } if *c == conn => Some(reason),
            _ => None,
        })
    }
}

fn their_hs(ut_metadata: u8, size: Option<u64>) -> ExtendedHandshake {
    ExtendedHandshake {
        extensions: [
            ("ut_metadata".to_owned(), ut_metadata),
            ("ut_pex".to_owned(), 9),
        ]
        .into(),
        metadata_size: size,
        ..Default::default()
    }
}

fn data(info: &Info, piece: u32, flip: bool) -> Vec<u8> {
    let raw = info.raw();
    let start = piece as usize * 16384;
    let mut bytes = raw[start..(start + 16384).min(raw.len())].to_vec();
    if flip {
        bytes[0] ^= 1;
    }
    let mut out = Vec::new();
    MetadataMsg::Data {
        piece,
        total_size: raw.len() as u64,
        data: &bytes,
    }
    .encode(&mut out);
    out
}

#[test]
fn a_magnet_fetches_verifies_serves_and_starts_with_its_peers() {
    let mut net = Net::magnet();
    let conn = net.peer("10.0.0.2:7000", 0xaa);
    // Our extension handshake: ut_metadata and ut_pex, no metadata_size yet; nothing else.
    let (ext, others) = net.sent(conn);
    assert!(others.is_empty(), "{others:?}");
    let ours = ExtendedHandshake::decode(&ext[0].1[..]).unwrap();
    assert_eq!(ext[0].0, 0);
    assert_eq!(ours.extensions.get("ut_metadata"), Some(&1));
    assert_eq!(ours.extensions.get("ut_pex"), Some(&2));
    assert_eq!(ours.metadata_size, None);
    assert_eq!(ours.listen_port, Some(6881));

    // The peer has everything; that waits for the metadata. Its handshake starts requests.
    net.msg(conn, Message::HaveAll);
    let size = net.info.raw().len() as u64;
    net.ext_handshake(conn, their_hs(3, Some(size)));
    let (ext, _) = net.sent(conn);
    assert_eq!(
        ext,
        vec![
            (3, b"d8:msg_typei0e5:piecei0ee".to_vec()),
            (3, b"d8:msg_typei0e5:piecei1ee".to_vec())
        ]
    );
    // Asked for metadata we lack, we reject.
    net.ext(conn, 1, b"d8:msg_typei0e5:piecei0ee");
    assert_eq!(
        net.sent(conn).0,
        vec![(3, b"d8:msg_typei2e5:piecei0ee".to_vec())]
    );

    let info = net.info.clone();
    net.ext(conn, 1, &data(&info, 1, false));
    net.ext(conn, 1, &data(&info, 0, false));
    let got = net.events.iter().find_map(|e| match e {
        Event::MetadataReceived { torrent, info } => Some((*torrent, info.clone())),
        _ => None,
    });
    let (torrent, got) = got.expect("metadata received");
    assert_eq!(torrent, net.torrent);
    assert_eq!(got.raw(), info.raw());
    assert_eq!(net.session.metadata(net.torrent).unwrap().raw(), info.raw());
    assert!(net.session.is_magnet(net.torrent));
    // Now we serve it, and told the peer its size.
    net.sent(conn);
    net.ext(conn, 1, b"d8:msg_typei0e5:piecei1ee");
    assert_eq!(net.sent(conn).0, vec![(3, data(&info, 1, false))]);

    // Storage is ready: the same peer, on the same connection, becomes a full peer. Its
    // `have all` is handled now, so we are interested at once.
    let pieces = info.lengths().piece_count();
    assert!(!net
        .session
        .start_torrent(net.torrent, &Bitfield::new(3), net.now));
    assert!(net
        .session
        .start_torrent(net.torrent, &Bitfield::new(pieces), net.now));
    net.pump();
    assert!(!net.session.is_magnet(net.torrent));
    assert_eq!(net.session.peer_count(net.torrent), 1);
    let (ext, names) = net.sent(conn);
    let again = ExtendedHandshake::decode(&ext[0].1[..]).unwrap();
    assert_eq!(again.metadata_size, Some(size));
    assert_eq!(names, ["HaveNone", "Interested"]);
    assert!(net.closed(conn).is_none());
}

#[test]
fn a_peer_alone_sending_corrupt_metadata_is_closed_and_banned() {
    let mut net = Net::magnet();
    let conn = net.peer("10.0.0.2:7000", 0xaa);
    let size = net.info.raw().len() as u64;
    net.ext_handshake(conn, their_hs(3, Some(size)));
    let info = net.info.clone();
    net.ext(conn, 1, &data(&info, 0, true));
    net.ext(conn, 1, &data(&info, 1, false));
    assert_eq!(
        net.closed(conn),
        Some(&CloseReason::Violation(Violation::CorruptMetadata))
    );
    assert!(!net
        .events
        .iter()
        .any(|e| matches!(e, Event::MetadataReceived { .. })));
    // Its IP is refused from now on.
    let again = net.peer("10.0.0.2:7001", 0xab);
    assert_eq!(net.closed(again), Some(&CloseReason::Banned));
}

#[test]
fn corrupt_metadata_from_one_of_two_peers_is_traced_to_it() {
    let mut net = Net::magnet();
    let size = net.info.raw().len() as u64;
    let info = net.info.clone();
    // The bad peer is asked for both pieces and rejects piece 1, which goes to the good one.
    let bad = net.peer("10.0.0.3:7000", 0xbb);
    let good = net.peer("10.0.0.2:7000", 0xaa);
    net.sent(good);
    net.sent(bad);
    net.ext_handshake(bad, their_hs(4, Some(size)));
    net.ext_handshake(good, their_hs(3, Some(size)));
    assert_eq!(net.sent(bad).0.len(), 2);
    assert!(net.sent(good).0.is_empty());
    net.ext(bad, 1, b"d8:msg_typei2e5:piecei1ee");
    assert_eq!(
        net.sent(good).0,
        vec![(3, b"d8:msg_typei0e5:piecei1ee".to_vec())]
    );
    net.ext(good, 1, &data(&info, 1, false));
    net.ext(bad, 1, &data(&info, 0, true));
    // Two contributors: nobody is blamed yet. The next attempt takes every piece from one
    // suspect (the bad peer, once its back-off from the reject is over).
    assert!(net.closed(bad).is_none() && net.closed(good).is_none());
    assert!(net.sent(good).0.is_empty());
    net.advance(Duration::from_secs(6));
    assert_eq!(net.sent(bad).0.len(), 2);
    assert!(net.sent(good).0.is_empty());
    net.ext(bad, 1, &data(&info, 0, true));
    net.ext(bad, 1, &data(&info, 1, true));
    assert_eq!(
        net.closed(bad),
        Some(&CloseReason::Violation(Violation::CorruptMetadata))
    );
    // The good peer completes it.
    assert_eq!(net.sent(good).0.len(), 2);
    net.ext(good, 1, &data(&info, 0, false));
    net.ext(good, 1, &data(&info, 1, false));
    assert!(net
        .events
        .iter()
        .any(|e| matches!(e, Event::MetadataReceived { .. })));
    assert!(net.closed(good).is_none());
}

#[test]
fn a_suspect_that_refuses_its_turn_cannot_stall_the_download() {
    let mut net = Net::magnet();
    let size = net.info.raw().len() as u64;
    let info = net.info.clone();
    let bad = net.peer("10.0.0.3:7000", 0xbb);
    let good = net.peer("10.0.0.2:7000", 0xaa);
    net.sent(good);
    net.sent(bad);
    net.ext_handshake(bad, their_hs(4, Some(size)));
    net.ext_handshake(good, their_hs(3, Some(size)));
    net.sent(bad);
    net.ext(bad, 1, b"d8:msg_typei2e5:piecei1ee");
    net.sent(good);
    net.ext(good, 1, &data(&info, 1, false));
    net.ext(bad, 1, &data(&info, 0, true));
    // The bad peer's turn as the sole source: it sends one piece and refuses the other.
    net.advance(Duration::from_secs(6));
    assert_eq!(net.sent(bad).0.len(), 2);
    net.ext(bad, 1, &data(&info, 0, true));
    net.ext(bad, 1, b"d8:msg_typei2e5:piecei1ee");
    // Its attempt is dropped and the good peer's turn comes; it completes the download.
    assert_eq!(net.sent(good).0.len(), 2);
    net.ext(good, 1, &data(&info, 0, false));
    net.ext(good, 1, &data(&info, 1, false));
    assert!(net
        .events
        .iter()
        .any(|e| matches!(e, Event::MetadataReceived { .. })));
}

#[test]
fn oversized_or_malformed_metadata_closes_the_peer() {
    let mut net = Net::magnet();
    let conn = net.peer("10.0.0.2:7000", 0xaa);
    net.ext_handshake(conn, their_hs(3, Some(MAX_METADATA_SIZE + 1)));
    assert_eq!(
        net.closed(conn),
        Some(&CloseReason::Violation(Violation::BadMetadataSize))
    );
    let conn = net.peer("10.0.0.3:7000", 0xab);
    let size = net.info.raw().len() as u64;
    net.ext_handshake(conn, their_hs(3, Some(size)));
    // A piece of the wrong length.
    let mut bad = Vec::new();
    MetadataMsg::Data {
        piece: 0,
        total_size: size,
        data: b"short",
    }
    .encode(&mut bad);
    net.ext(conn, 1, &bad);
    assert_eq!(
        net.closed(conn),
        Some(&CloseReason::Violation(Violation::BadMetadata))
    );
    let conn = net.peer("10.0.0.4:7000", 0xac);
    net.ext(conn, 1, b"not bencode");
    assert_eq!(
        net.closed(conn),
        Some(&CloseReason::Violation(Violation::BadMetadata))
    );
}

#[test]
fn pex_tells_peers_about_each_other_and_learns_new_ones() {
    let info = info();
    let mut net = Net::with_metadata(Bitfield::full(info.lengths().piece_count()));
    let a = net.peer("10.0.0.2:7000", 0xaa);
    let b = net.peer("10.0.0.3:7000", 0xbb);
    // `a` listens on 7100 (incoming peers are passed on at their listen port).
    net.ext_handshake(
        a,
        ExtendedHandshake {
            listen_port: Some(7100),
            ..their_hs(3, None)
        },
    );
    net.ext_handshake(b, their_hs(3, None));
    net.sent(a);
    net.sent(b);
    net.advance(Duration::from_secs(1));
    let to_b: Vec<Ext> = net.sent(b).0;
    assert_eq!(to_b.len(), 1, "{to_b:?}");
    assert_eq!(to_b[0].0, 9);
    let pex = PexMsg::decode(&to_b[0].1, 50).unwrap();
    let a_listen: SocketAddr = "10.0.0.2:7100".parse().unwrap();
    assert_eq!(pex.added, vec![(a_listen, 0)]);
    // `b` never said its port: nobody is told about it.
    assert!(net.sent(a).0.is_empty());
    // Not again within the minute, even with news.
    let c = net.peer("10.0.0.4:7000", 0xcc);
    net.ext_handshake(c, their_hs(3, None));
    net.advance(Duration::from_secs(10));
    assert!(net.sent(b).0.is_empty());

    // Peers learned by PEX are dialled.
    let mut msg = Vec::new();
    let learned: SocketAddr = "10.9.9.9:6881".parse().unwrap();
    PexMsg {
        added: vec![(learned, 0)],
        dropped: vec![],
    }
    .encode(&mut msg);
    net.ext(a, 2, &msg);
    net.advance(Duration::from_secs(1));
    assert!(net
        .actions
        .iter()
        .any(|x| matches!(x, Action::Connect { addr, .. } if *addr == learned)));
    // A malformed PEX message closes the peer.
    net.ext(c, 2, b"i5e");
    assert_eq!(
        net.closed(c),
        Some(&CloseReason::Violation(Violation::BadPex))
    );
}

#[test]
fn private_torrents_do_not_exchange_peers() {
    let info = info_with(true);
    let pieces = info.lengths().piece_count();
    let mut net = Net::with_info(info, Bitfield::full(pieces));
    let a = net.peer("10.0.0.2:7000", 0xaa);
    let b = net.peer("10.0.0.3:7000", 0xbb);
    let (ext, _) = net.sent(a);
    let ours = ExtendedHandshake::decode(&ext[0].1[..]).unwrap();
    assert_eq!(ours.extensions.get("ut_pex"), Some(&0));
    assert_eq!(ours.extensions.get("ut_metadata"), Some(&1));
    for conn in [a, b] {
        net.ext_handshake(
            conn,
            ExtendedHandshake {
                listen_port: Some(7100),
                ..their_hs(3, None)
            },
        );
    }
    net.sent(b);
    net.advance(Duration::from_secs(1));
    assert!(net.sent(a).0.is_empty());
    assert!(net.sent(b).0.is_empty());
    // And what a peer tells us by PEX is not dialled.
    let mut msg = Vec::new();
    let learned: SocketAddr = "10.9.9.9:6881".parse().unwrap();
    PexMsg {
        added: vec![(learned, 0)],
        dropped: vec![],
    }
    .encode(&mut msg);
    net.ext(a, 2, &msg);
    net.advance(Duration::from_secs(1));
    assert!(!net
        .actions
        .iter()
        .any(|x| matches!(x, Action::Connect { addr, .. } if *addr == learned)));
}

/// The hash requests queued for `conn`.
fn hash_requests(net: &mut Net, conn: ConnId) -> Vec<HashRequest> {
    let bytes: Vec<u8> = net.session.take_send(conn, usize::MAX).concat();
    let mut at = 0;
    if let Ok(Decoded::Complete { consumed, .. }) = Handshake::decode(SplitBytes::single(&bytes)) {
        at = consumed;
    }
    let mut out = Vec::new();
    while at < bytes.len() {
        let Decoded::Complete { value, consumed } = Decoder::new()
            .decode(SplitBytes::single(&bytes[at..]))
            .unwrap()
        else {
            panic!("partial message queued");
        };
        if let Message::HashRequest(r) = value {
            out.push(r);
        }
        at += consumed;
    }
    out
}

/// A v2-only magnet (`btmh`): the info dictionary is checked by SHA-256 against the truncated
/// v2 hash, then the piece layers come by `hash request`, two at a time per peer, each
/// answer checked by its proof; the peer that sends a bad hash is closed and banned, its
/// chunk asked of the other, and the metadata is complete (layers included) only then.
#[test]
fn a_v2_magnet_fetches_piece_layers_and_bans_a_peer_that_lies_about_them() {
    let bytes = include_bytes!("../src/metainfo/testdata/lt-v2.torrent");
    let full = Torrent::from_bytes(bytes).unwrap().info;
    let bare = Arc::new(Info::from_bytes(full.raw()).unwrap());
    assert!(!bare.v2().unwrap().has_piece_layers());
    let mut net = Net::magnet();
    let now = net.now;
    let mut session = Session::new(
        Config::default(),
        PeerId::generate([3; 12]),
        7,
        Box::new(SimulatedKeys::new(7)),
        now,
    );
    net.torrent = session.add_magnet_v2(bare.info_hash(), now).unwrap();
    net.session = session;
    net.info = bare.clone();
    let (liar, honest) = (
        net.peer("10.0.0.2:7000", 0xaa),
        net.peer("10.0.0.3:7000", 0xbb),
    );
    let size = bare.raw().len() as u64;
    for conn in [liar, honest] {
        net.ext_handshake(conn, their_hs(3, Some(size)));
    }
    for conn in [liar, honest] {
        let (ext, _) = net.sent(conn);
        for (_, payload) in ext.iter().filter(|(id, _)| *id == 3) {
            let Some(MetadataMsg::Request { piece }) = MetadataMsg::decode(payload).unwrap() else {
                continue;
            };
            let d = data(&bare, piece, false);
            net.ext(conn, 1, &d);
        }
    }
    assert!(
        !net.events
            .iter()
            .any(|e| matches!(e, Event::MetadataReceived { .. })),
        "not before the piece layers"
    );
    // Two files need layers (4 and 2 pieces of 32 KiB): one chunk each.
    let asked_liar = hash_requests(&mut net, liar);
    let asked_honest = hash_requests(&mut net, honest);
    assert_eq!(
        asked_liar.len() + asked_honest.len(),
        2,
        "{asked_liar:?} {asked_honest:?}"
    );
    let answer = |r: &HashRequest| {
        let f = full
            .v2()
            .unwrap()
            .files
            .iter()
            .find(|f| f.pieces_root == Some(r.root))
            .unwrap();
        // These trees are small enough that the nodes reach the root: no uncles.
        let mut layer = f.layer.clone().unwrap();
        layer.resize(r.length as usize, merkle::pad_hash(r.base));
        layer.concat()
    };
    let liar_asked = asked_liar.first().copied().expect("both peers are asked");
    let mut bad = answer(&liar_asked);
    bad[40] ^= 1;
    net.msg(
        liar,
        Message::Hashes {
            request: liar_asked,
            hashes: SplitBytes::single(&bad),
        },
    );
    assert_eq!(
        net.closed(liar),
        Some(&CloseReason::Violation(Violation::BadHashes))
    );
    assert!(net
        .events
        .iter()
        .any(|e| matches!(e, Event::PeerBanned { .. })));
    // The honest peer gets the liar's chunk too, and answers both.
    let mut asked = asked_honest;
    asked.extend(hash_requests(&mut net, honest));
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert!(asked.contains(&liar_asked));
    for r in asked {
        let good = answer(&r);
        net.msg(
            honest,
            Message::Hashes {
                request: r,
                hashes: SplitBytes::single(&good),
            },
        );
    }
    let info = net
        .events
        .iter()
        .find_map(|e| match e {
            Event::MetadataReceived { info, .. } => Some(info.clone()),
            _ => None,
        })
        .expect("metadata with layers");
    assert_eq!(info.v2(), full.v2());
    assert_eq!(net.closed(honest), None);
}
