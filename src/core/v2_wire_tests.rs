//! BEP 52 on the wire, driven through `Session` as a driver would: a hybrid torrent is
//! reached by its truncated v2 hash as well as its v1 hash, the answer echoes the hash the
//! peer asked for and sets the v2 bit; `hash request`s are answered from the piece layers
//! with proofs that verify against the file's root, requests that do not fit are rejected
//! (the peer stays), and a peer asking too fast is rejected, then closed once it stops
//! reading.

use std::sync::Arc;
use std::time::Duration;

use super::api::{Action, ConnId};
use super::config::Config;
use super::hashes::{locate, verify};
use super::mse::SimulatedKeys;
use super::wire::{
    Decoded, Decoder, Handshake, HashRequest, Message, Reserved, ReservedFlag, SplitBytes,
    HANDSHAKE_LEN,
};
use super::{Bitfield, InfoHash, PeerId, Session, Time};
use crate::metainfo::{Info, Torrent};

fn hybrid() -> Arc<Info> {
    let bytes = include_bytes!("../metainfo/testdata/lt-hybrid.torrent");
    Arc::new(Torrent::from_bytes(bytes).unwrap().info)
}

struct Seed {
    session: Session,
    info: Arc<Info>,
    now: Time,
    closed: Vec<ConnId>,
}

impl Seed {
    fn new(config: Config) -> Seed {
        let info = hybrid();
        let now = Time::from_secs(1);
        let mut session = Session::new(
            config,
            PeerId::generate([1; 12]),
            7,
            Box::new(SimulatedKeys::new(7)),
            now,
        );
        let pieces = info.lengths().piece_count();
        session
            .add_torrent(info.clone(), &Bitfield::full(pieces), now)
            .unwrap();
        Seed {
            session,
            info,
            now,
            closed: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while let Some(a) = self.session.poll_action() {
            if let Action::Close { conn, .. } = a {
                self.closed.push(conn);
            }
        }
        while self.session.poll_event().is_some() {}
    }

    /// An incoming peer that names the torrent `hash`; returns it with our handshake.
    fn peer(&mut self, hash: InfoHash, n: u8) -> (ConnId, Option<Handshake>) {
        let addr = format!("127.0.0.{n}:6000").parse().unwrap();
        let conn = self.session.accept(addr, self.now).unwrap();
        let reserved = Reserved::NONE
            .with(ReservedFlag::ExtensionProtocol, true)
            .with(ReservedFlag::Fast, true);
        let hs = Handshake::new(reserved, hash, PeerId::from_bytes([n; 20]));
        self.session.handle_recv(conn, &hs.to_bytes(), self.now);
        self.drain();
        let sent = self.take(conn);
        let ours = match Handshake::decode(SplitBytes::single(&sent)) {
            Ok(Decoded::Complete { value, .. }) => Some(value),
            _ => None,
        };
        (conn, ours)
    }

    fn take(&mut self, conn: ConnId) -> Vec<u8> {
        let taken = self.session.take_send(conn, usize::MAX).concat();
        if !taken.is_empty() {
            self.session.handle_sent(conn, taken.len(), self.now);
        }
        self.drain();
        taken
    }

    fn send(&mut self, conn: ConnId, msg: Message<'_>) {
        let mut out = Vec::new();
        msg.encode(&mut out);
        self.session.handle_recv(conn, &out, self.now);
        self.drain();
    }

    /// The hash messages sent to `conn` since the last look, skipping a leading handshake.
    fn answers(&mut self, conn: ConnId) -> Vec<(bool, HashRequest, Vec<[u8; 32]>)> {
        let bytes = self.take(conn);
        let mut at = if bytes.len() >= HANDSHAKE_LEN && bytes[0] == 19 {
            HANDSHAKE_LEN
        } else {
            0
        };
        let mut out = Vec::new();
        while at < bytes.len() {
            let Decoded::Complete { value, consumed } = Decoder::new()
                .decode(SplitBytes::single(&bytes[at..]))
                .unwrap()
            else {
                panic!("partial message");
            };
            match value {
                Message::Hashes { request, hashes } => {
                    let flat = hashes.to_vec();
                    let hashes = flat
                        .chunks_exact(32)
                        .map(|c| <[u8; 32]>::try_from(c).unwrap())
                        .collect();
                    out.push((true, request, hashes));
                }
                Message::HashReject(r) => out.push((false, r, Vec::new())),
                _ => {}
            }
            at += consumed;
        }
        out
    }
}

#[test]
fn a_hybrid_is_reached_by_its_truncated_v2_hash_and_the_answer_echoes_it() {
    let mut s = Seed::new(Config::default());
    let v1 = s.info.info_hash();
    let v2 = s.info.v2_alias().expect("a hybrid has a v2 name");
    assert_ne!(v1, v2);
    assert_eq!(
        s.session.torrent_by_hash(&v2),
        s.session.torrent_by_hash(&v1)
    );
    for (n, hash) in [(2, v1), (3, v2)] {
        let (conn, ours) = s.peer(hash, n);
        let ours = ours.expect("answered");
        assert_eq!(
            ours.info_hash, hash,
            "the hash the peer asked for is echoed"
        );
        assert!(
            ours.reserved.contains(ReservedFlag::V2),
            "{}",
            ours.reserved
        );
        assert!(!s.closed.contains(&conn));
    }
    // A name the torrent does not have is refused.
    let (conn, ours) = s.peer(InfoHash::from_bytes([9; 20]), 4);
    assert!(ours.is_none());
    assert!(s.closed.contains(&conn));
    // Removed, neither name routes any more.
    let id = s.session.torrent_by_hash(&v1).unwrap();
    s.session.remove_torrent(id, s.now);
    assert_eq!(s.session.torrent_by_hash(&v2), None);
    assert_eq!(s.session.torrent_by_hash(&v1), None);
}

#[test]
fn hash_requests_are_answered_with_proofs_and_bad_ones_rejected() {
    let mut s = Seed::new(Config::default());
    let v2 = s.info.v2_alias().unwrap();
    let (conn, _) = s.peer(v2, 2);
    s.send(conn, Message::HaveNone);
    // `top/a`: 100000 bytes in 32 KiB pieces, 4 pieces of 2 leaves: a tree of height 3,
    // the piece layer 1.
    let file = s.info.v2().unwrap().files[0].clone();
    let root = file.pieces_root.unwrap();
    let layer = file.layer.clone().unwrap();
    let info = s.info.clone();
    let v2info = info.v2().unwrap();
    let good = [
        HashRequest {
            root,
            base: 1,
            index: 0,
            length: 4,
            proof_layers: 1,
        },
        HashRequest {
            root,
            base: 1,
            index: 2,
            length: 2,
            proof_layers: 1,
        },
    ];
    for r in good {
        s.send(conn, Message::HashRequest(r));
        let answers = s.answers(conn);
        assert_eq!(answers.len(), 1, "{r:?}");
        let (ok, back, hashes) = &answers[0];
        assert!(ok, "{r:?} rejected");
        assert_eq!(*back, r);
        let at = locate(v2info, &r).unwrap();
        let nodes = verify(&r, at, hashes).expect("the proof verifies against the root");
        let from = r.index as usize;
        assert_eq!(nodes[..], layer[from..from + r.length as usize]);
    }
    let bad = [
        // Leaves: fits the tree, but we answer only the piece layer.
        HashRequest {
            root,
            base: 0,
            index: 0,
            length: 8,
            proof_layers: 2,
        },
        // An unknown root.
        HashRequest {
            root: [7; 32],
            base: 1,
            index: 0,
            length: 2,
            proof_layers: 1,
        },
        // Past the layer.
        HashRequest {
            root,
            base: 1,
            index: 4,
            length: 2,
            proof_layers: 1,
        },
        // Not a power of two.
        HashRequest {
            root,
            base: 1,
            index: 0,
            length: 3,
            proof_layers: 1,
        },
        // Huge numbers.
        HashRequest {
            root,
            base: u32::MAX,
            index: u32::MAX,
            length: u32::MAX,
            proof_layers: u32::MAX,
        },
    ];
    for r in bad {
        s.send(conn, Message::HashRequest(r));
        assert_eq!(s.answers(conn), vec![(false, r, Vec::new())], "{r:?}");
    }
    // `hashes` and `hash reject` nobody asked for are ignored, not a reason to close.
    s.send(
        conn,
        Message::Hashes {
            request: good[0],
            hashes: SplitBytes::single(&[0; 64]),
        },
    );
    s.send(conn, Message::HashReject(good[0]));
    assert!(s.closed.is_empty(), "{:?}", s.closed);
}

#[test]
fn a_peer_asking_too_fast_is_rejected_then_closed_when_it_stops_reading() {
    let mut s = Seed::new(Config::default());
    let v2 = s.info.v2_alias().unwrap();
    let (conn, _) = s.peer(v2, 2);
    let root = s.info.v2().unwrap().files[0].pieces_root.unwrap();
    let r = HashRequest {
        root,
        base: 1,
        index: 0,
        length: 2,
        proof_layers: 1,
    };
    for _ in 0..100 {
        s.send(conn, Message::HashRequest(r));
    }
    let answers = s.answers(conn);
    assert_eq!(answers.len(), 100);
    let served = answers.iter().filter(|a| a.0).count();
    assert_eq!(served, super::hashes::HASH_REQUESTS_PER_SEC as usize);
    // A second later it may ask again.
    s.now += Duration::from_secs(1);
    s.send(conn, Message::HashRequest(r));
    assert!(s.answers(conn)[0].0);
    assert!(s.closed.is_empty());
    // A peer that does not read what we send is closed rather than queued for.
    let tiny = Config {
        send_buffer_low: 10,
        send_buffer_high: 200,
        ..Config::default()
    };
    let mut s = Seed::new(tiny);
    let (conn, _) = s.peer(v2, 3);
    for _ in 0..10 {
        s.send(conn, Message::HashRequest(r));
    }
    assert_eq!(s.closed, vec![conn]);
}
