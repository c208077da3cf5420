//! The protocol core driven byte by byte through its public API: the test plays the remote
//! peer, feeds raw wire bytes to a `Session`, and checks what it sends back, which disk
//! operations it asks for, and why it closes the connection.

mod common;

use std::sync::Arc;
use std::time::Duration;

use ringtorrent::core::api::{
    Action, CloseReason, ConnId, DiskDone, DiskOp, Event, TorrentId, Violation,
};
use ringtorrent::core::config::Config;
use ringtorrent::core::mse::SimulatedKeys;
use ringtorrent::core::wire::{
    BlockRequest, Decoded, Decoder, Handshake, Message, Reserved, ReservedFlag, SplitBytes,
};
use ringtorrent::core::{Bitfield, PeerId, Session, Time};
use ringtorrent::metainfo::Info;

const PIECE: u64 = 32 * 1024;
const PIECES: u32 = 4;

fn info() -> Arc<Info> {
    common::test_info(PIECE, PIECES)
}

struct Remote {
    session: Session,
    torrent: TorrentId,
    conn: ConnId,
    info: Arc<Info>,
    now: Time,
    actions: Vec<Action>,
    events: Vec<Event>,
}

impl Remote {
    /// A session that is a seed (or has nothing), with one incoming peer that has completed
    /// its handshake announcing `reserved`.
    fn new(seed: bool, reserved: Reserved) -> Remote {
        let info = info();
        let now = Time::from_secs(1);
        let mut session = Session::new(
            Config::default(),
            PeerId::generate([1; 12]),
            7,
            Box::new(SimulatedKeys::new(7)),
            now,
        );
        let have = if seed {
            Bitfield::full(PIECES)
        } else {
            Bitfield::new(PIECES)
        };
        let torrent = session.add_torrent(info.clone(), &have, now).unwrap();
        let conn = session
            .accept("127.0.0.9:5000".parse().unwrap(), now)
            .unwrap();
        let mut r = Remote {
            session,
            torrent,
            conn,
            info,
            now,
            actions: Vec::new(),
            events: Vec::new(),
        };
        let hs = Handshake::new(
            reserved,
            r.info.info_hash(),
            PeerId::from_bytes(*b"-XX0001-remotepeer01"),
        );
        r.recv(&hs.to_bytes());
        r
    }

    fn pump(&mut self) {
        while let Some(a) = self.session.poll_action() {
            self.actions.push(a);
        }
        while let Some(e) = self.session.poll_event() {
            self.events.push(e);
        }
    }

    fn recv(&mut self, bytes: &[u8]) {
        self.session.handle_recv(self.conn, bytes, self.now);
        self.pump();
    }

    fn send_msg(&mut self, msg: Message<'_>) {
        let mut out = Vec::new();
        msg.encode(&mut out);
        self.recv(&out);
    }

    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        while self.now < end {
            let next = self.session.poll_timeout().unwrap().min(end).max(self.now);
            self.now = next;
            self.session.handle_timeout(self.now);
            self.pump();
            if next == end {
                break;
            }
        }
    }

    /// Everything the session queued for the peer, decoded into message names; the
    /// handshake is skipped if present.
    fn sent(&mut self) -> Vec<String> {
        let bytes: Vec<u8> = self.session.take_send(self.conn, usize::MAX).concat();
        let mut at = 0;
        if let Ok(Decoded::Complete { consumed, .. }) =
            Handshake::decode(SplitBytes::single(&bytes))
        {
            at = consumed;
        }
        let decoder = Decoder::new();
        let mut names = Vec::new();
        while at < bytes.len() {
            match decoder.decode(SplitBytes::single(&bytes[at..])).unwrap() {
                Decoded::Complete { value, consumed } => {
                    names.push(match value {
                        Message::Have { piece } => format!("have {piece}"),
                        Message::Request(r) => {
                            format!("request {} {} {}", r.piece, r.offset, r.len)
                        }
                        Message::Reject(r) => format!("reject {} {} {}", r.piece, r.offset, r.len),
                        Message::Piece {
                            piece,
                            offset,
                            data,
                        } => format!("piece {piece} {offset} {}", data.len()),
                        Message::AllowedFast { piece } => format!("allowed_fast {piece}"),
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

    fn closed(&self) -> Option<CloseReason> {
        self.events.iter().find_map(|e| match e {
            Event::PeerClosed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
    }
}

fn fast_ext() -> Reserved {
    Reserved::NONE
        .with(ReservedFlag::Fast, true)
        .with(ReservedFlag::ExtensionProtocol, true)
}

#[test]
fn seed_greets_a_fast_peer_with_extension_handshake_have_all_and_nothing_else() {
    let mut r = Remote::new(true, fast_ext());
    let sent = r.sent();
    assert_eq!(sent[0], "extended");
    assert_eq!(sent[1], "have all");
    assert!(matches!(r.events[0], Event::PeerConnected { .. }));
    // A torrent of 4 pieces is too small for an allowed-fast set of 10.
    assert_eq!(sent.len(), 2, "{sent:?}");
}

#[test]
fn plain_peer_gets_a_bitfield_and_fast_messages_close_it() {
    let mut r = Remote::new(true, Reserved::NONE);
    assert_eq!(r.sent(), vec!["bitfield"]);
    r.send_msg(Message::HaveAll);
    assert_eq!(
        r.closed(),
        Some(CloseReason::Violation(Violation::FastNotNegotiated))
    );
    assert!(r.actions.contains(&Action::Close { conn: r.conn }));
}

#[test]
fn unknown_torrent_and_non_bittorrent_bytes_are_refused() {
    let mut r = Remote::new(true, fast_ext());
    let other = r
        .session
        .accept("127.0.0.10:1".parse().unwrap(), r.now)
        .unwrap();
    let hs = Handshake::new(
        Reserved::NONE,
        ringtorrent::core::InfoHash::from_bytes([9; 20]),
        PeerId::from_bytes([2; 20]),
    );
    r.session.handle_recv(other, &hs.to_bytes(), r.now);
    let third = r
        .session
        .accept("127.0.0.11:1".parse().unwrap(), r.now)
        .unwrap();
    // A first byte other than 19 starts the encrypted (MSE) handshake; bytes that never
    // carry its synchronisation hash within the padding bound are refused.
    let mut http = b"GET / HTTP/1.1\r\n".to_vec();
    http.resize(700, b'x');
    r.session.handle_recv(third, &http, r.now);
    let fourth = r
        .session
        .accept("127.0.0.12:1".parse().unwrap(), r.now)
        .unwrap();
    r.session
        .handle_recv(fourth, b"\x13BitTorrent protocoX\0\0\0\0\0\0\0\0", r.now);
    r.pump();
    let reasons: Vec<&'static str> = r
        .events
        .iter()
        .filter_map(|e| match e {
            Event::PeerClosed { reason, .. } => Some(reason.name()),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        vec!["unknown_torrent", "mse_no_sync", "not_bittorrent"]
    );
}

#[test]
fn protocol_violations_close_with_their_reason() {
    let cases: Vec<(Vec<Message<'static>>, Violation)> = vec![
        (
            vec![Message::Have { piece: PIECES }],
            Violation::BadPieceIndex,
        ),
        (
            vec![Message::Have { piece: 0 }, Message::HaveNone],
            Violation::LateBitfield,
        ),
        (
            vec![Message::Request(BlockRequest {
                piece: 0,
                offset: 0,
                len: 32 * 1024,
            })],
            Violation::RequestTooLong,
        ),
        (
            vec![Message::Request(BlockRequest {
                piece: 0,
                offset: 30 * 1024,
                len: 16 * 1024,
            })],
            Violation::BadBlock,
        ),
        (
            vec![Message::Piece {
                piece: 0,
                offset: PIECE as u32,
                data: SplitBytes::single(&[1, 2, 3]),
            }],
            Violation::BadBlock,
        ),
    ];
    for (msgs, expected) in cases {
        let mut r = Remote::new(false, fast_ext());
        for m in msgs {
            r.send_msg(m);
        }
        assert_eq!(
            r.closed(),
            Some(CloseReason::Violation(expected.clone())),
            "{expected:?}"
        );
    }
    // A length prefix past the maximum is refused as soon as its four bytes arrive.
    let mut r = Remote::new(false, fast_ext());
    r.recv(&u32::MAX.to_be_bytes());
    assert!(matches!(
        r.closed(),
        Some(CloseReason::Violation(Violation::Malformed(_)))
    ));
}

/// aria2 announces pieces with a whole `bitfield` whenever that is no longer than the `have`s
/// would be (after every piece, on a small torrent), and with `have all` when it completes.
/// Both come after its first message; they count as `have`s and never close the connection.
#[test]
fn late_bitfield_and_have_all_count_as_haves() {
    // A leecher learns the pieces and becomes interested.
    let mut r = Remote::new(false, fast_ext());
    r.sent();
    r.send_msg(Message::HaveNone);
    assert!(r.sent().is_empty());
    let mut bits = Bitfield::new(PIECES);
    bits.set(2);
    r.send_msg(Message::Bitfield {
        bits: SplitBytes::single(&bits.to_wire()),
    });
    assert_eq!(r.closed(), None);
    assert_eq!(r.sent(), vec!["interested"]);
    r.send_msg(Message::Unchoke);
    let requests = r.sent();
    assert!(!requests.is_empty(), "requests after unchoke");
    assert!(
        requests.iter().all(|m| m.starts_with("request 2 ")),
        "only piece 2 is known: {requests:?}"
    );
    // `have all` later: every piece can be asked for now.
    r.send_msg(Message::HaveAll);
    assert_eq!(r.closed(), None);
    // A bitfield that leaves out pieces announced before takes nothing back.
    r.send_msg(Message::Bitfield {
        bits: SplitBytes::single(&Bitfield::new(PIECES).to_wire()),
    });
    assert_eq!(r.closed(), None);

    // A seed keeps serving a leecher that reports its pieces this way.
    let mut r = Remote::new(true, fast_ext());
    r.sent();
    r.send_msg(Message::HaveNone);
    r.send_msg(Message::Interested);
    assert_eq!(r.sent(), vec!["unchoke"]);
    r.send_msg(Message::Bitfield {
        bits: SplitBytes::single(&bits.to_wire()),
    });
    assert_eq!(r.closed(), None);
    // Once it has everything (a late `have all`), two seeds have nothing to trade.
    r.send_msg(Message::HaveAll);
    assert_eq!(r.closed(), Some(CloseReason::BothSeeds));
}

#[test]
fn choked_requests_are_rejected_then_served_after_unchoke() {
    let mut r = Remote::new(true, fast_ext());
    r.sent();
    let req = BlockRequest {
        piece: 1,
        offset: 16384,
        len: 16384,
    };
    r.send_msg(Message::Request(req));
    assert_eq!(
        r.sent(),
        vec!["reject 1 16384 16384"],
        "BEP 6: a choked request is rejected"
    );

    // Interest gets a free upload slot at once.
    r.send_msg(Message::Interested);
    assert_eq!(r.sent(), vec!["unchoke"]);
    r.actions.clear();
    r.send_msg(Message::Request(req));
    let read = r.actions.iter().find_map(|a| match a {
        Action::Disk(DiskOp::Read {
            torrent,
            peer,
            block,
        }) => Some((*torrent, *peer, *block)),
        _ => None,
    });
    let (torrent, peer, block) = read.expect("a disk read for the request");
    assert_eq!(
        (block.piece.get(), block.offset, block.len),
        (1, 16384, 16384)
    );
    r.session.handle_disk(
        DiskDone::Read {
            torrent,
            peer,
            block,
            result: Ok(vec![7u8; 16384].into()),
        },
        r.now,
    );
    r.pump();
    assert_eq!(r.sent(), vec!["piece 1 16384 16384"]);
    assert_eq!(r.session.stats(r.torrent).unwrap().uploaded, 16384);
}

#[test]
fn leecher_requests_writes_verifies_and_announces() {
    let mut r = Remote::new(false, fast_ext());
    r.sent();
    r.send_msg(Message::HaveAll);
    assert_eq!(r.sent(), vec!["interested"]);
    r.send_msg(Message::Unchoke);
    let requests = r.sent();
    assert!(
        requests.iter().all(|m| m.starts_with("request")),
        "{requests:?}"
    );
    assert!(!requests.is_empty() && requests.len() <= 8);
    // Deliver both blocks of the piece of the first request.
    let piece: u32 = requests[0].split(' ').nth(1).unwrap().parse().unwrap();
    r.actions.clear();
    for offset in [0u32, 16384] {
        let data = vec![piece as u8; 16384];
        r.send_msg(Message::Piece {
            piece,
            offset,
            data: SplitBytes::single(&data),
        });
    }
    let writes: Vec<_> = r
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Disk(DiskOp::Write { torrent, block, .. }) => Some((*torrent, *block)),
            _ => None,
        })
        .collect();
    assert_eq!(writes.len(), 2);
    r.actions.clear();
    for (torrent, block) in writes {
        r.session.handle_disk(
            DiskDone::Written {
                torrent,
                block,
                result: Ok(()),
            },
            r.now,
        );
    }
    r.pump();
    let verify = r.actions.iter().find_map(|a| match a {
        Action::Disk(DiskOp::Verify { torrent, piece, .. }) => Some((*torrent, *piece)),
        _ => None,
    });
    let (torrent, p) = verify.expect("verification once every block is written");
    assert_eq!(p.get(), piece);
    r.session.handle_disk(
        DiskDone::Verified {
            torrent,
            piece: p,
            ok: true,
            block_hashes: Vec::new(),
        },
        r.now,
    );
    r.pump();
    assert!(r
        .events
        .iter()
        .any(|e| matches!(e, Event::PieceVerified { piece: q, .. } if q.get() == piece)));
    // The peer has everything, so it gets no `have`; we asked for more instead.
    assert!(!r.sent().iter().any(|m| m.starts_with("have")));
    assert_eq!(r.session.have(r.torrent).unwrap().count(), 1);
}

#[test]
fn idle_peers_get_keep_alives_and_silent_ones_are_dropped() {
    let mut r = Remote::new(true, fast_ext());
    r.sent();
    r.advance(Duration::from_secs(121));
    assert!(
        r.sent().contains(&"keep_alive".to_string()),
        "a keep-alive after 2 minutes idle"
    );
    assert_eq!(r.closed(), None);
    r.advance(Duration::from_secs(120));
    assert_eq!(r.closed(), Some(CloseReason::Inactive));
}

#[test]
fn half_open_connections_time_out() {
    let info = info();
    let now = Time::ZERO;
    let mut s = Session::new(
        Config::default(),
        PeerId::generate([3; 12]),
        1,
        Box::new(SimulatedKeys::new(1)),
        now,
    );
    let t = s.add_torrent(info, &Bitfield::new(PIECES), now).unwrap();
    let conn = s.connect(t, "127.0.0.20:1".parse().unwrap(), now).unwrap();
    assert_eq!(
        s.poll_action(),
        Some(Action::Connect {
            conn,
            addr: "127.0.0.20:1".parse().unwrap(),
            from: None,
        })
    );
    s.handle_timeout(Time::from_secs(16));
    let mut reasons = Vec::new();
    while let Some(e) = s.poll_event() {
        if let Event::PeerClosed { reason, .. } = e {
            reasons.push(reason);
        }
    }
    assert_eq!(reasons, vec![CloseReason::ConnectTimeout]);
    assert_eq!(s.connection_count(), 0);
}
