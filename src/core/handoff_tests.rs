//! Moving an incoming connection between sessions (thread-per-core sharding): the accepting
//! session hands it off once the torrent is named, keeps what arrives meanwhile, and the owning
//! session continues the handshake exactly where it stopped, plain or after MSE.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::api::{Action, CloseReason, ConnId, Event};
use super::config::Config;
use super::mse::{Initiator, SimulatedKeys, Step, CRYPTO_PLAINTEXT, CRYPTO_RC4, KEY_LEN};
use super::session::HandOff;
use super::wire::{Decoded, Handshake, Message, Reserved, SplitBytes, HANDSHAKE_LEN};
use super::{Bitfield, PeerId, Session, Time};
use crate::bencode::OwnedValue;
use crate::limits::{MAX_HANDOFF_BUFFER, MAX_TORRENT_FILE_LEN, MIN_PIECE_LEN};
use crate::metainfo::{Info, Torrent};

const PIECES: u32 = 4;

fn info() -> Arc<Info> {
    super::fixtures::zero_hash_info("t.bin", 32 * 1024, PIECES)
}

const NOW: Time = Time::from_secs(1);

fn session(seed: u64) -> Session {
    Session::new(
        Config::default(),
        PeerId::generate([1; 12]),
        seed,
        Box::new(SimulatedKeys::new(seed)),
        NOW,
    )
}

fn actions(s: &mut Session) -> Vec<Action> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

fn events(s: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn closed(events: &[Event]) -> Vec<CloseReason> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::PeerClosed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

/// Two sessions of one process: `a` accepted the connection, `b` (shard 1) owns the torrent.
struct Pair {
    a: Session,
    b: Session,
    info: Arc<Info>,
    conn: ConnId,
}

fn pair() -> Pair {
    let info = info();
    let mut a = session(1);
    let mut b = session(2);
    b.add_torrent(info.clone(), &Bitfield::full(PIECES), NOW)
        .unwrap();
    a.set_route(info.info_hash(), Some(1));
    let conn = a.accept("127.0.0.9:5000".parse().unwrap(), NOW).unwrap();
    Pair { a, b, info, conn }
}

fn their_handshake(info: &Info) -> Vec<u8> {
    Handshake::new(
        Reserved::NONE,
        info.info_hash(),
        PeerId::from_bytes(*b"-XX0001-remotepeer01"),
    )
    .to_bytes()
    .to_vec()
}

fn encode(msg: Message<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    msg.encode(&mut out);
    out
}

/// Moves the connection from `a` to `b` as a driver would; returns its id in `b`.
fn move_over(p: &mut Pair) -> ConnId {
    let handoff: HandOff = p.a.take_handoff(p.conn).expect("handing off");
    assert_eq!(handoff.shard(), 1);
    assert_eq!(handoff.info_hash(), p.info.info_hash());
    assert_eq!(
        p.a.connection_count(),
        0,
        "the accepting session forgets it"
    );
    assert!(p.a.take_handoff(p.conn).is_none());
    p.b.adopt(handoff, NOW).expect("room to adopt")
}

#[test]
fn plain_handshake_moves_with_every_byte_received() {
    let mut p = pair();
    let mut bytes = their_handshake(&p.info);
    bytes.extend(encode(Message::Interested));
    // 47 bytes do not name the torrent yet; the 48th does.
    p.a.handle_recv(p.conn, &bytes[..47], NOW);
    assert!(actions(&mut p.a).is_empty());
    p.a.handle_recv(p.conn, &bytes[47..60], NOW);
    assert_eq!(
        actions(&mut p.a),
        vec![Action::HandOff {
            conn: p.conn,
            shard: 1
        }]
    );
    // What arrives while the socket moves is kept for the new owner, nothing is sent here.
    p.a.handle_recv(p.conn, &bytes[60..], NOW);
    assert!(actions(&mut p.a).is_empty());
    assert!(p.a.take_send(p.conn, usize::MAX).is_empty());
    assert_eq!(p.a.connection_stats().sent, 1);

    let conn = move_over(&mut p);
    let t = p.b.torrent_by_hash(&p.info.info_hash()).unwrap();
    assert_eq!(p.b.peer_count(t), 1, "the handshake completed in the owner");
    assert!(actions(&mut p.b).contains(&Action::Send { conn }));
    let sent: Vec<u8> = p.b.take_send(conn, usize::MAX).concat();
    let Ok(Decoded::Complete { value, .. }) = Handshake::decode(SplitBytes::single(&sent)) else {
        panic!("the owner answers with its handshake first");
    };
    assert_eq!(value.info_hash, p.info.info_hash());
    assert!(closed(&events(&mut p.b)).is_empty());
    assert_eq!(p.b.connection_stats().adopted, 1);
}

#[test]
fn mse_connection_moves_after_the_key_exchange() {
    let mut p = pair();
    let hash = p.info.info_hash();
    // Only the first part of the plain handshake rides in the initial payload.
    let hs = their_handshake(&p.info);
    let (mut initiator, first) = Initiator::new(
        [5; 20],
        hash,
        CRYPTO_PLAINTEXT,
        vec![0xAB; 31],
        vec![0x5A; 7],
        hs[..20].to_vec(),
    );
    p.a.handle_recv(p.conn, &first, NOW);
    assert_eq!(actions(&mut p.a), vec![Action::Send { conn: p.conn }]);
    let yb: Vec<u8> = p.a.take_send(p.conn, usize::MAX).concat();
    assert!(yb.len() >= KEY_LEN);
    let Ok(Step::Send(second)) = initiator.feed(&yb) else {
        panic!("the initiator answers Yb");
    };
    p.a.handle_recv(p.conn, &second, NOW);
    assert_eq!(
        actions(&mut p.a),
        vec![Action::HandOff {
            conn: p.conn,
            shard: 1
        }]
    );
    p.a.handle_recv(p.conn, &hs[20..], NOW);

    let conn = move_over(&mut p);
    let t = p.b.torrent_by_hash(&hash).unwrap();
    assert_eq!(p.b.peer_count(t), 1);
    // The owner sends the end of the MSE reply (encrypted: VC, plaintext selected), then
    // its plain handshake, which the initiator sees once the reply is through.
    let sent: Vec<u8> = p.b.take_send(conn, usize::MAX).concat();
    let Ok(Step::Established {
        plaintext_after,
        cipher: None,
        ..
    }) = initiator.feed(&sent)
    else {
        panic!("the reply selects plaintext");
    };
    let Ok(Decoded::Complete { value, .. }) =
        Handshake::decode(SplitBytes::single(&plaintext_after))
    else {
        panic!("a plain handshake follows the MSE reply");
    };
    assert_eq!(value.info_hash, hash);
}

#[test]
fn an_rc4_connection_moves_with_its_streams() {
    let mut p = pair();
    let hash = p.info.info_hash();
    let hs = their_handshake(&p.info);
    // RC4 only, the handshake split: 20 bytes in the initial payload, the rest (and an
    // `interested` after it) encrypted on the stream while the socket moves.
    let (mut initiator, first) = Initiator::new(
        [6; 20],
        hash,
        CRYPTO_RC4,
        vec![1; 3],
        vec![],
        hs[..20].to_vec(),
    );
    p.a.handle_recv(p.conn, &first, NOW);
    assert_eq!(actions(&mut p.a), vec![Action::Send { conn: p.conn }]);
    let yb: Vec<u8> = p.a.take_send(p.conn, usize::MAX).concat();
    let Ok(Step::Send(second)) = initiator.feed(&yb) else {
        panic!("the initiator answers Yb");
    };
    p.a.handle_recv(p.conn, &second, NOW);
    assert_eq!(
        actions(&mut p.a),
        vec![Action::HandOff {
            conn: p.conn,
            shard: 1
        }]
    );
    // The reply has not gone out yet: the owner sends it, then the initiator, established,
    // encrypts the rest of its handshake and a message.
    let conn = {
        let handoff = p.a.take_handoff(p.conn).unwrap();
        p.b.adopt(handoff, NOW).unwrap()
    };
    let sent: Vec<u8> = p.b.take_send(conn, usize::MAX).concat();
    let Ok(Step::Established {
        plaintext_after,
        cipher: Some(mut cipher),
        ..
    }) = initiator.feed(&sent)
    else {
        panic!("the reply selects RC4");
    };
    let mut rest = hs[20..].to_vec();
    rest.extend_from_slice(&encode(Message::Interested));
    cipher.send.apply(&mut rest);
    p.b.handle_recv(conn, &rest, NOW);
    let t = p.b.torrent_by_hash(&hash).unwrap();
    assert_eq!(p.b.peer_count(t), 1, "the handshake completed in the owner");
    assert!(closed(&events(&mut p.b)).is_empty());
    // The owner's handshake and what follows decrypt with the initiator's stream.
    let mut theirs = plaintext_after;
    let mut more: Vec<u8> = p.b.take_send(conn, usize::MAX).concat();
    cipher.recv.apply(&mut more);
    theirs.extend_from_slice(&more);
    let Ok(Decoded::Complete { value, .. }) = Handshake::decode(SplitBytes::single(&theirs)) else {
        panic!("an encrypted handshake follows the reply");
    };
    assert_eq!(value.info_hash, hash);
    let peers = p.b.peers(t, NOW);
    assert_eq!(peers[0].crypto, super::Crypto::Rc4);
    assert!(
        peers[0].peer_interested,
        "the message after the handshake decrypted"
    );
}

#[test]
fn a_torrent_gone_before_adoption_closes_as_unknown() {
    let mut p = pair();
    p.a.handle_recv(p.conn, &their_handshake(&p.info), NOW);
    let handoff = p.a.take_handoff(p.conn).unwrap();
    let t = p.b.torrent_by_hash(&p.info.info_hash()).unwrap();
    p.b.remove_torrent(t, NOW);
    let conn = p.b.adopt(handoff, NOW).unwrap();
    assert_eq!(actions(&mut p.b), vec![Action::Close { conn }]);
    assert_eq!(closed(&events(&mut p.b)), vec![CloseReason::UnknownTorrent]);
}

#[test]
fn unrouted_torrents_are_refused_and_routes_can_be_withdrawn() {
    let mut p = pair();
    p.a.set_route(p.info.info_hash(), None);
    p.a.handle_recv(p.conn, &their_handshake(&p.info), NOW);
    assert_eq!(actions(&mut p.a), vec![Action::Close { conn: p.conn }]);
    assert_eq!(closed(&events(&mut p.a)), vec![CloseReason::UnknownTorrent]);
}

#[test]
fn a_peer_flooding_during_the_move_is_closed() {
    let mut p = pair();
    p.a.handle_recv(p.conn, &their_handshake(&p.info), NOW);
    actions(&mut p.a);
    // The handshake is held too; the rest of the bound may follow.
    let room = vec![0u8; MAX_HANDOFF_BUFFER - HANDSHAKE_LEN];
    p.a.handle_recv(p.conn, &room, NOW);
    assert!(
        closed(&events(&mut p.a)).is_empty(),
        "up to the bound is kept"
    );
    p.a.handle_recv(p.conn, &[0], NOW);
    assert_eq!(actions(&mut p.a), vec![Action::Close { conn: p.conn }]);
    assert_eq!(closed(&events(&mut p.a)), vec![CloseReason::HandOffFlood]);
    assert!(p.a.take_handoff(p.conn).is_none());
}

#[test]
fn a_move_that_never_completes_times_out() {
    let mut p = pair();
    p.a.handle_recv(p.conn, &their_handshake(&p.info), NOW);
    actions(&mut p.a);
    let later = NOW + Duration::from_secs(11);
    p.a.handle_timeout(later);
    assert_eq!(actions(&mut p.a), vec![Action::Close { conn: p.conn }]);
    assert_eq!(
        closed(&events(&mut p.a)),
        vec![CloseReason::HandshakeTimeout]
    );
    // A socket closing during the move is forgotten without a close action.
    let mut p = pair();
    p.a.handle_recv(p.conn, &their_handshake(&p.info), NOW);
    actions(&mut p.a);
    p.a.handle_closed(p.conn, NOW);
    assert!(actions(&mut p.a).is_empty());
    assert_eq!(closed(&events(&mut p.a)), vec![CloseReason::RemoteClosed]);
    assert_eq!(p.a.connection_count(), 0);
}

#[test]
fn a_full_owner_refuses_adoption() {
    let mut p = pair();
    p.a.handle_recv(p.conn, &their_handshake(&p.info), NOW);
    let handoff = p.a.take_handoff(p.conn).unwrap();
    let mut full = Session::new(
        Config {
            max_connections: 1,
            ..Config::default()
        },
        PeerId::generate([1; 12]),
        3,
        Box::new(SimulatedKeys::new(3)),
        NOW,
    );
    full.add_torrent(p.info.clone(), &Bitfield::full(PIECES), NOW);
    full.accept("127.0.0.8:1".parse().unwrap(), NOW).unwrap();
    assert!(full.adopt(handoff, NOW).is_none());
    assert_eq!(
        full.handshake_closes().get("too_many_connections"),
        Some(&1)
    );
}

/// A bitfield for the largest torrent a `.torrent` file can describe (its `pieces` string
/// fills [`MAX_TORRENT_FILE_LEN`], far past the 1,048,672 pieces a `piece`-sized frame limit
/// once allowed) is taken from a peer, not refused as malformed.
#[test]
fn the_bitfield_of_the_largest_torrent_is_accepted() {
    // Room for the rest of the file around the `pieces` string.
    let pieces = u32::try_from((MAX_TORRENT_FILE_LEN - 256) / 20).unwrap();
    assert!(pieces > 1_048_672);
    let mut dict = BTreeMap::new();
    dict.insert(b"name".to_vec(), OwnedValue::str("big.bin"));
    dict.insert(
        b"piece length".to_vec(),
        OwnedValue::Int(MIN_PIECE_LEN as i64),
    );
    dict.insert(
        b"pieces".to_vec(),
        OwnedValue::Bytes(vec![0; 20 * pieces as usize]),
    );
    dict.insert(
        b"length".to_vec(),
        OwnedValue::Int(i64::from(pieces) * MIN_PIECE_LEN as i64),
    );
    let mut root = BTreeMap::new();
    root.insert(b"info".to_vec(), OwnedValue::Dict(dict));
    let info = Arc::new(
        Torrent::from_bytes(&OwnedValue::Dict(root).to_bytes())
            .unwrap()
            .info,
    );
    let mut s = session(3);
    s.add_torrent(info.clone(), &Bitfield::new(pieces), NOW)
        .unwrap();
    let conn = s.accept("127.0.0.9:5000".parse().unwrap(), NOW).unwrap();
    let mut bytes = their_handshake(&info);
    let bits = Bitfield::full(pieces).to_wire();
    bytes.extend(encode(Message::Bitfield {
        bits: SplitBytes::single(&bits),
    }));
    s.handle_recv(conn, &bytes, NOW);
    assert_eq!(closed(&events(&mut s)), vec![]);
    let t = s.torrent_by_hash(&info.info_hash()).unwrap();
    assert_eq!(s.peer_count(t), 1);
}

// ------------------------------------------------- connections for a torrent being checked

/// One session that expects the torrent (its data being checked) and has accepted a
/// connection.
fn expecting() -> (Session, Arc<Info>, ConnId) {
    let info = info();
    let mut s = session(3);
    s.expect_torrent(info.info_hash());
    let conn = s.accept("127.0.0.9:5000".parse().unwrap(), NOW).unwrap();
    (s, info, conn)
}

/// Our handshake, decoded from what the session sent on `conn`.
fn our_handshake(s: &mut Session, conn: ConnId) -> Handshake {
    let sent: Vec<u8> = s.take_send(conn, usize::MAX).concat();
    let Ok(Decoded::Complete { value, .. }) = Handshake::decode(SplitBytes::single(&sent)) else {
        panic!("our handshake goes first");
    };
    value
}

#[test]
fn a_peer_that_dials_during_the_check_is_held_then_served() {
    let (mut s, info, conn) = expecting();
    let mut bytes = their_handshake(&info);
    bytes.extend(encode(Message::Interested));
    s.handle_recv(conn, &bytes, NOW);
    assert!(actions(&mut s).is_empty(), "no answer, no close");
    assert!(s.take_send(conn, usize::MAX).is_empty());
    assert!(closed(&events(&mut s)).is_empty());
    assert_eq!(s.connection_count(), 1);

    let t = s
        .add_torrent(info.clone(), &Bitfield::full(PIECES), NOW)
        .unwrap();
    assert!(actions(&mut s).contains(&Action::Send { conn }));
    assert_eq!(our_handshake(&mut s, conn).info_hash, info.info_hash());
    assert_eq!(s.peer_count(t), 1, "the handshake completed");
    assert!(
        s.peers(t, NOW)[0].peer_interested,
        "what it sent while held was kept"
    );
    assert_eq!(s.connection_stats().held, 1);
    assert!(closed(&events(&mut s)).is_empty());
}

#[test]
fn an_encrypted_peer_is_held_after_the_key_exchange() {
    let (mut s, info, conn) = expecting();
    let hash = info.info_hash();
    let hs = their_handshake(&info);
    let (mut initiator, first) =
        Initiator::new([7; 20], hash, CRYPTO_RC4, vec![2; 5], vec![], hs.clone());
    s.handle_recv(conn, &first, NOW);
    let yb: Vec<u8> = s.take_send(conn, usize::MAX).concat();
    let Ok(Step::Send(second)) = initiator.feed(&yb) else {
        panic!("the initiator answers Yb");
    };
    // The SKEY names a torrent on its way in: the key exchange completes, the handshake waits.
    s.handle_recv(conn, &second, NOW);
    assert!(closed(&events(&mut s)).is_empty());
    let reply: Vec<u8> = s.take_send(conn, usize::MAX).concat();
    let Ok(Step::Established {
        plaintext_after,
        cipher: Some(mut cipher),
        ..
    }) = initiator.feed(&reply)
    else {
        panic!("the reply selects RC4");
    };
    assert!(
        plaintext_after.is_empty(),
        "no handshake before the torrent is in"
    );

    let t = s.add_torrent(info, &Bitfield::full(PIECES), NOW).unwrap();
    assert_eq!(s.peer_count(t), 1);
    let mut theirs: Vec<u8> = s.take_send(conn, usize::MAX).concat();
    cipher.recv.apply(&mut theirs);
    let Ok(Decoded::Complete { value, .. }) = Handshake::decode(SplitBytes::single(&theirs)) else {
        panic!("an encrypted handshake once the torrent is in");
    };
    assert_eq!(value.info_hash, hash);
}

#[test]
fn held_peers_are_closed_when_their_torrent_does_not_come() {
    let (mut s, info, conn) = expecting();
    s.handle_recv(conn, &their_handshake(&info), NOW);
    s.forget_expected(&info.info_hash(), NOW);
    assert_eq!(actions(&mut s), vec![Action::Close { conn }]);
    assert_eq!(closed(&events(&mut s)), vec![CloseReason::UnknownTorrent]);
    // Forgotten: the next one is refused at once, and adding it later holds nothing.
    let conn = s.accept("127.0.0.9:5001".parse().unwrap(), NOW).unwrap();
    s.handle_recv(conn, &their_handshake(&info), NOW);
    assert_eq!(closed(&events(&mut s)), vec![CloseReason::UnknownTorrent]);
    s.add_torrent(info, &Bitfield::full(PIECES), NOW).unwrap();
    assert_eq!(s.connection_stats().held, 0);
}

#[test]
fn a_held_peer_is_bounded_in_bytes_and_time() {
    let (mut s, info, conn) = expecting();
    s.handle_recv(conn, &their_handshake(&info), NOW);
    s.handle_recv(conn, &vec![0u8; MAX_HANDOFF_BUFFER - HANDSHAKE_LEN], NOW);
    assert!(
        closed(&events(&mut s)).is_empty(),
        "up to the bound is kept"
    );
    s.handle_recv(conn, &[0], NOW);
    assert_eq!(actions(&mut s), vec![Action::Close { conn }]);
    assert_eq!(closed(&events(&mut s)), vec![CloseReason::HandOffFlood]);

    // A check that outlasts the handshake time-out closes what it held.
    let conn = s.accept("127.0.0.9:5001".parse().unwrap(), NOW).unwrap();
    s.handle_recv(conn, &their_handshake(&info), NOW);
    s.handle_timeout(NOW + Duration::from_secs(11));
    assert_eq!(actions(&mut s), vec![Action::Close { conn }]);
    assert_eq!(closed(&events(&mut s)), vec![CloseReason::HandshakeTimeout]);
    // The torrent still comes; nothing is left to release.
    let t = s.add_torrent(info, &Bitfield::full(PIECES), NOW).unwrap();
    assert_eq!(s.peer_count(t), 0);
    assert_eq!(s.connection_stats().held, 0);
}

#[test]
fn another_loop_routes_to_the_one_that_checks() {
    let info = info();
    let hash = info.info_hash();
    let mut a = session(1);
    let mut b = session(2);
    // What the client tells the loops before a check: b will own it, a routes to b.
    b.expect_torrent(hash);
    a.set_route(hash, Some(1));
    let conn = a.accept("127.0.0.9:5000".parse().unwrap(), NOW).unwrap();
    a.handle_recv(conn, &their_handshake(&info), NOW);
    assert_eq!(actions(&mut a), vec![Action::HandOff { conn, shard: 1 }]);
    let conn = b.adopt(a.take_handoff(conn).unwrap(), NOW).unwrap();
    assert!(b.take_send(conn, usize::MAX).is_empty(), "held in b");
    assert!(closed(&events(&mut b)).is_empty());
    let t = b.add_torrent(info, &Bitfield::full(PIECES), NOW).unwrap();
    assert_eq!(b.peer_count(t), 1);
    assert_eq!(our_handshake(&mut b, conn).info_hash, hash);
}

#[test]
fn without_an_expected_torrent_an_unknown_hash_is_refused_at_once() {
    let info = info();
    let mut s = session(4);
    let conn = s.accept("127.0.0.9:5000".parse().unwrap(), NOW).unwrap();
    s.handle_recv(conn, &their_handshake(&info), NOW);
    assert_eq!(actions(&mut s), vec![Action::Close { conn }]);
    assert_eq!(closed(&events(&mut s)), vec![CloseReason::UnknownTorrent]);
}
