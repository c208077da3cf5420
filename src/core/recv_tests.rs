//! Receiving without a copy: bytes read straight into a connection's buffer
//! (`Session::recv_buffer`, `handle_recv_in_place`, `recv_drained`, as the epoll driver reads)
//! or handed over in a buffer the driver gives away (`handle_recv_owned`, as the io_uring
//! driver's ring hands them). A block cut anywhere between two reads arrives intact, a peer
//! announcing a message above the frame limit is closed before its buffer grows, and a drained
//! connection keeps no reserved room. (Whole transfers, RC4 included, in 61-byte reads:
//! `encryption_tests.rs`.)

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::api::{Action, CloseReason, ConnId, DiskOp, Event, Violation};
use super::config::Config;
use super::mse::SimulatedKeys;
use super::wire::{BlockRequest, Decoded, Decoder, Handshake, Message, Reserved, SplitBytes};
use super::{Bitfield, PeerId, Session, Time};
use crate::limits::{MAX_TORRENT_MESSAGE_LEN, RECV_KEEP_SPARE, RECV_READ_LEN};
use crate::metainfo::Info;

const PIECE_LEN: u32 = 64 * 1024;
const PIECES: u32 = 16;

fn info() -> Arc<Info> {
    super::fixtures::zero_hash_info("r.bin", PIECE_LEN, PIECES)
}

#[derive(Debug, Clone, Copy)]
enum Recv {
    InPlace,
    Owned,
    /// As the epoll driver reads: in place, and a block's payload straight into its place in
    /// storage whenever the session offers it (`direct_offer`), followed by at most a
    /// header's worth into the buffer.
    Direct,
}

/// Bytes read into the buffer after a block received in place (the epoll driver's).
const DIRECT_TAIL: usize = 13;

/// A leeching session with one incoming seed that has unchoked it.
struct Leech {
    session: Session,
    now: Time,
    conn: ConnId,
    /// What the session sent the seed, its handshake included.
    sent: Vec<u8>,
    /// The first seed's connection (`conn` is where reads go).
    main: ConnId,
    /// What it sent other connections (`connect_seed`), by connection.
    sent_other: BTreeMap<ConnId, Vec<u8>>,
    written: BTreeMap<(u32, u32), Bytes>,
    events: Vec<Event>,
    /// Storage as the driver sees it: each block's place, written by reads in place.
    place: BTreeMap<(u32, u32), Vec<u8>>,
    /// Blocks the session said were received in place (`DiskOp::Landed`).
    landed: Vec<(u32, u32)>,
    /// Storage refuses to receive blocks in place (a full disk).
    refuse: bool,
}

impl Leech {
    fn new() -> Leech {
        Leech::with_info(info())
    }

    fn with_info(info: Arc<Info>) -> Leech {
        let now = Time::from_secs(1);
        let mut session = Session::new(
            Config::default(),
            PeerId::generate([1; 12]),
            7,
            Box::new(SimulatedKeys::new(7)),
            now,
        );
        session
            .add_torrent(
                info.clone(),
                &Bitfield::new(info.lengths().piece_count()),
                now,
            )
            .unwrap();
        let conn = session
            .accept("127.0.0.2:5000".parse().unwrap(), now)
            .unwrap();
        let mut l = Leech {
            session,
            now,
            conn,
            sent: Vec::new(),
            main: conn,
            sent_other: BTreeMap::new(),
            written: BTreeMap::new(),
            events: Vec::new(),
            place: BTreeMap::new(),
            landed: Vec::new(),
            refuse: false,
        };
        let hs = Handshake::new(
            Reserved::NONE,
            info.info_hash(),
            PeerId::from_bytes([9; 20]),
        );
        l.copy(&hs.to_bytes());
        // A full bitfield, then an unchoke.
        l.copy(&have_all(info.lengths().piece_count()));
        l
    }

    fn drain(&mut self) {
        while let Some(a) = self.session.poll_action() {
            match a {
                Action::Send { conn } => {
                    let bytes = self.session.take_send(conn, usize::MAX).concat();
                    self.session.handle_sent(conn, bytes.len(), self.now);
                    if conn == self.main {
                        self.sent.extend_from_slice(&bytes);
                    } else {
                        self.sent_other
                            .entry(conn)
                            .or_default()
                            .extend_from_slice(&bytes);
                    }
                }
                Action::Disk(DiskOp::Write { block, data, .. }) => {
                    self.written.insert((block.piece.get(), block.offset), data);
                }
                Action::Disk(DiskOp::Landed { block, .. }) => {
                    let key = (block.piece.get(), block.offset);
                    self.landed.push(key);
                    let bytes = self.place.get(&key).cloned().unwrap_or_default();
                    self.written.insert(key, Bytes::from(bytes));
                }
                _ => {}
            }
        }
        self.events
            .extend(std::iter::from_fn(|| self.session.poll_event()));
    }

    fn copy(&mut self, bytes: &[u8]) {
        self.session.handle_recv(self.conn, bytes, self.now);
        self.drain();
    }

    /// One read of `bytes` (which fit the room lent), then the socket is dry.
    fn read(&mut self, bytes: &[u8], how: Recv) {
        match how {
            Recv::InPlace => {
                let buf = self
                    .session
                    .recv_buffer(self.conn)
                    .expect("known connection");
                assert!(buf.capacity() - buf.len() >= bytes.len());
                buf.extend_from_slice(bytes);
                self.session
                    .handle_recv_in_place(self.conn, bytes.len(), self.now);
                self.session.recv_drained(self.conn);
            }
            Recv::Direct => {
                let mut rest = bytes;
                loop {
                    if let Some(n) = self.read_direct(self.conn, rest) {
                        rest = &rest[n..];
                        self.drain();
                        continue;
                    }
                    if rest.is_empty() {
                        break;
                    }
                    let buf = self.session.recv_buffer(self.conn).expect("known");
                    buf.extend_from_slice(rest);
                    self.session
                        .handle_recv_in_place(self.conn, rest.len(), self.now);
                    self.drain();
                    rest = &[];
                }
                self.session.recv_drained(self.conn);
            }
            Recv::Owned => {
                // As the ring's buffers: larger than what arrived in them.
                let mut chunk = BytesMut::with_capacity(64 * 1024);
                chunk.extend_from_slice(bytes);
                self.session.handle_recv_owned(self.conn, chunk, self.now);
            }
        }
        self.drain();
    }

    /// What the epoll driver's `read_direct` does with the bytes `socket` holds: `None` when
    /// nothing is to be received in place (read the buffered way), else how many of them it
    /// consumed (the offer taken: none).
    fn read_direct(&mut self, conn: ConnId, socket: &[u8]) -> Option<usize> {
        let (block, got) = match self.session.direct_target(conn) {
            Some((_, block, got)) => (block, got),
            None => {
                let (_, block, have) = self.session.direct_offer(conn)?;
                let have = have.to_vec();
                if self.refuse {
                    self.session.direct_refuse(conn);
                    return None;
                }
                let place = self
                    .place
                    .entry((block.piece.get(), block.offset))
                    .or_insert_with(|| vec![0xEE; block.len as usize]);
                place[..have.len()].copy_from_slice(&have);
                assert!(self.session.direct_begin(conn));
                return Some(0);
            }
        };
        if socket.is_empty() {
            return None;
        }
        let left = (block.len - got) as usize;
        let n = left.min(socket.len());
        let place = self
            .place
            .get_mut(&(block.piece.get(), block.offset))
            .expect("a block in place has its place");
        place[got as usize..got as usize + n].copy_from_slice(&socket[..n]);
        let tail = if n == left {
            (socket.len() - n).min(DIRECT_TAIL)
        } else {
            0
        };
        let buf = self.session.recv_buffer(conn).expect("known");
        buf.extend_from_slice(&socket[n..n + tail]);
        self.session.handle_recv_direct(conn, n, tail, self.now);
        Some(n + tail)
    }

    /// Another seed connects (from `ip`), says it has everything and unchokes us; it becomes
    /// the connection reads go to until `self.conn` is set back.
    fn connect_seed(&mut self, ip: &str) -> ConnId {
        let main = self.conn;
        let conn = self
            .session
            .accept(format!("{ip}:5000").parse().unwrap(), self.now)
            .unwrap();
        let hash_id = self.session.torrent_ids()[0];
        let hash = self.session.metadata(hash_id).unwrap().info_hash();
        let hs = Handshake::new(Reserved::NONE, hash, PeerId::from_bytes([8; 20]));
        self.conn = conn;
        self.copy(&hs.to_bytes());
        self.copy(&have_all(
            self.session
                .metadata(hash_id)
                .unwrap()
                .lengths()
                .piece_count(),
        ));
        self.conn = main;
        conn
    }

    /// The block requests the session has sent `conn` (another than `self.conn`).
    fn requests_of(&self, conn: ConnId) -> Vec<BlockRequest> {
        requests_in(self.sent_other.get(&conn).map_or(&[][..], |s| &s[..]))
    }

    /// The block requests the session has sent.
    fn requests(&self) -> Vec<BlockRequest> {
        requests_in(&self.sent)
    }

    fn closed(&self) -> Vec<CloseReason> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::PeerClosed { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .collect()
    }
}

/// A bitfield of `pieces` pieces, all had, then an unchoke.
fn have_all(pieces: u32) -> Vec<u8> {
    let bytes = pieces.div_ceil(8) as usize;
    let mut bits = vec![0xff; bytes];
    if pieces % 8 != 0 {
        bits[bytes - 1] = 0xff << (8 - pieces % 8);
    }
    let mut m = (1 + bytes as u32).to_be_bytes().to_vec();
    m.push(5);
    m.extend_from_slice(&bits);
    m.extend_from_slice(&[0, 0, 0, 1, 1]);
    m
}

/// The block requests in what the session sent one connection, its handshake first.
fn requests_in(sent: &[u8]) -> Vec<BlockRequest> {
    let Ok(Decoded::Complete { consumed, .. }) = Handshake::decode(SplitBytes::single(sent)) else {
        panic!("no handshake sent");
    };
    let decoder = Decoder::new();
    let mut at = consumed;
    let mut out = Vec::new();
    while let Ok(Decoded::Complete { value, consumed }) =
        decoder.decode(SplitBytes::single(&sent[at..]))
    {
        if let Message::Request(r) = value {
            out.push(r);
        }
        at += consumed;
    }
    out
}

/// A `piece` message answering `r`, its bytes a pattern of their position.
fn piece_message(r: BlockRequest) -> (Vec<u8>, Vec<u8>) {
    let data: Vec<u8> = (0..r.len)
        .map(|i| ((r.piece * PIECE_LEN + r.offset + i) % 251) as u8)
        .collect();
    let mut msg = Vec::new();
    msg.extend_from_slice(&(9 + r.len).to_be_bytes());
    msg.push(7);
    msg.extend_from_slice(&r.piece.to_be_bytes());
    msg.extend_from_slice(&r.offset.to_be_bytes());
    msg.extend_from_slice(&data);
    (msg, data)
}

#[test]
fn a_block_cut_anywhere_between_two_reads_arrives_intact() {
    for how in [Recv::InPlace, Recv::Owned] {
        let probe = Leech::new();
        let total = 13 + probe.requests()[0].len as usize;
        // Inside the length prefix, at its end, inside the header, at the payload's start,
        // in the middle, one byte short; then the next message's prefix cut too.
        for cut in [1, 2, 3, 4, 5, 12, 13, 14, total / 2, total - 1] {
            let mut l = Leech::new();
            let reqs = l.requests();
            assert!(reqs.len() >= 2, "the leecher asks for several blocks");
            let (first, data0) = piece_message(reqs[0]);
            let (second, data1) = piece_message(reqs[1]);
            // Read 1: the first part of block 0. Read 2: its rest and the first two bytes of
            // block 1 (a read ending inside a length prefix). Read 3: the rest of block 1.
            l.read(&first[..cut], how);
            assert!(l.written.is_empty(), "{how:?} cut {cut}: nothing whole yet");
            let mut rest = first[cut..].to_vec();
            rest.extend_from_slice(&second[..2]);
            l.read(&rest, how);
            l.read(&second[2..], how);
            let key = |r: BlockRequest| (r.piece, r.offset);
            assert_eq!(l.written.len(), 2, "{how:?} cut {cut}");
            assert_eq!(
                &l.written[&key(reqs[0])][..],
                &data0[..],
                "{how:?} cut {cut}"
            );
            assert_eq!(
                &l.written[&key(reqs[1])][..],
                &data1[..],
                "{how:?} cut {cut}"
            );
            assert!(l.closed().is_empty(), "{how:?} cut {cut}");
            // Everything was handled: the buffer is empty and holds no room.
            assert_eq!(
                l.session.recv_held(l.conn),
                Some((0, 0)),
                "{how:?} cut {cut}"
            );
        }
    }
}

#[test]
fn a_peer_announcing_more_than_the_frame_limit_is_closed_before_its_buffer_grows() {
    for how in [Recv::InPlace, Recv::Owned] {
        let mut l = Leech::new();
        let mut flood = (MAX_TORRENT_MESSAGE_LEN + 1).to_be_bytes().to_vec();
        flood.extend_from_slice(&[7; 1000]);
        let room = l.session.recv_buffer(l.conn).map(|b| b.capacity());
        assert!(
            room.is_some_and(|r| r <= 2 * RECV_READ_LEN),
            "{how:?}: {room:?}"
        );
        // The room lent above is given back: the peer sent nothing yet.
        l.session.recv_drained(l.conn);
        l.read(&flood, how);
        assert!(
            matches!(
                l.closed()[..],
                [CloseReason::Violation(Violation::Malformed(_))]
            ),
            "{how:?}: {:?}",
            l.closed()
        );
        // Gone with its buffer: nothing more is lent for it.
        assert!(l.session.recv_buffer(l.conn).is_none(), "{how:?}");
    }
}

#[test]
fn a_drained_connection_keeps_no_room_beyond_what_it_holds() {
    for how in [Recv::InPlace, Recv::Owned] {
        let mut l = Leech::new();
        // A keep-alive: handled whole, the buffer keeps nothing.
        l.read(&[0, 0, 0, 0], how);
        assert_eq!(l.session.recv_held(l.conn), Some((0, 0)), "{how:?}");
        // Three bytes of a length prefix, then silence: it holds them and little room.
        l.read(&[0, 0, 0], how);
        let (len, cap) = l.session.recv_held(l.conn).unwrap();
        assert_eq!(len, 3, "{how:?}");
        assert!(cap <= len + RECV_KEEP_SPARE, "{how:?}: {cap}");
        // The rest of the message comes later and is handled (an `interested`).
        l.read(&[1, 2], how);
        assert_eq!(l.session.recv_held(l.conn), Some((0, 0)), "{how:?}");
        assert!(l.closed().is_empty(), "{how:?}");
    }
}

// ------------------------------------------------------------ blocks received in place

#[test]
fn a_block_cut_anywhere_crosses_into_storage_and_lands_byte_exact() {
    let probe = Leech::new();
    let total = 13 + probe.requests()[0].len as usize;
    for cut in 1..total {
        let mut l = Leech::new();
        let reqs = l.requests();
        let (first, data0) = piece_message(reqs[0]);
        let (second, data1) = piece_message(reqs[1]);
        let (third, data2) = piece_message(reqs[2]);
        // Read 1: the first part of block 0. Read 2: its rest, all of block 1, and two bytes
        // of block 2. Read 3: the rest of block 2.
        l.read(&first[..cut], Recv::Direct);
        assert!(l.written.is_empty(), "cut {cut}: nothing whole yet");
        let mut rest = first[cut..].to_vec();
        rest.extend_from_slice(&second);
        rest.extend_from_slice(&third[..2]);
        l.read(&rest, Recv::Direct);
        l.read(&third[2..], Recv::Direct);
        let key = |r: BlockRequest| (r.piece, r.offset);
        assert_eq!(l.written.len(), 3, "cut {cut}");
        for (r, data) in [(reqs[0], &data0), (reqs[1], &data1), (reqs[2], &data2)] {
            assert_eq!(&l.written[&key(r)][..], &data[..], "cut {cut}, block {r:?}");
        }
        // Once the header of block 0 is in, its payload goes straight to storage, and block
        // 1 follows it there (its header read after block 0's last byte); block 2's header,
        // cut, comes with a buffered read, and so does its payload.
        // (A cut inside block 0's header leaves read 2 a buffered one: nothing in place.)
        let expect = if cut >= 13 {
            vec![key(reqs[0]), key(reqs[1])]
        } else {
            vec![]
        };
        assert_eq!(l.landed, expect, "cut {cut}");
        assert!(l.closed().is_empty(), "cut {cut}");
        assert_eq!(l.session.recv_held(l.conn), Some((0, 0)), "cut {cut}");
    }
}

#[test]
fn a_full_disk_refusing_a_block_in_place_receives_it_buffered() {
    let mut l = Leech::new();
    l.refuse = true;
    let r = l.requests()[0];
    let (msg, data) = piece_message(r);
    l.read(&msg[..100], Recv::Direct);
    l.read(&msg[100..], Recv::Direct);
    assert!(l.landed.is_empty() && l.place.is_empty());
    assert_eq!(&l.written[&(r.piece, r.offset)][..], &data[..]);
}

/// A torrent of one piece of two blocks, both asked of seed A; then seed B comes and, in
/// endgame, is asked for one of them too, which is returned.
fn endgame() -> (Leech, ConnId, ConnId, BlockRequest) {
    let info = super::fixtures::zero_hash_info("e.bin", 32 * 1024, 1);
    let mut l = Leech::with_info(info);
    let a = l.conn;
    let b = l.connect_seed("127.0.0.3");
    assert_eq!(l.requests().len(), 2);
    let dup = l.requests_of(b);
    assert_eq!(dup.len(), 1, "endgame asks the second seed too");
    assert!(l.requests().contains(&dup[0]));
    (l, a, b, dup[0])
}

#[test]
fn an_endgame_duplicate_does_not_write_over_a_block_received_in_place() {
    let (mut l, a, b, r) = endgame();
    let key = (r.piece, r.offset);
    let (msg, data) = piece_message(r);
    // Seed A begins the block: its payload goes in place.
    l.read(&msg[..1000], Recv::Direct);
    assert!(l.place.contains_key(&key));
    // Seed B sends the same block whole, other bytes, buffered: it must not be written.
    let mut other = msg.clone();
    for byte in &mut other[13..] {
        *byte ^= 0x5a;
    }
    l.conn = b;
    l.read(&other, Recv::Direct);
    assert!(
        !l.written.contains_key(&key),
        "B's copy was written over A's"
    );
    // A finishes: its bytes are the block's.
    l.conn = a;
    l.read(&msg[1000..], Recv::Direct);
    assert_eq!(l.landed, vec![key]);
    assert_eq!(&l.written[&key][..], &data[..]);
    assert!(l.closed().is_empty());
}

#[test]
fn a_disconnect_mid_block_leaves_it_unreceived() {
    let (mut l, a, b, r) = endgame();
    let key = (r.piece, r.offset);
    let (msg, data) = piece_message(r);
    l.read(&msg[..1000], Recv::Direct);
    assert!(l.session.direct_target(a).is_some());
    l.session.handle_closed(a, l.now);
    l.drain();
    assert!(l.landed.is_empty() && l.written.is_empty());
    // The block is free for the other seed, whose copy is taken now.
    l.conn = b;
    l.read(&msg[..1000], Recv::Direct);
    l.read(&msg[1000..], Recv::Direct);
    assert_eq!(l.landed, vec![key], "B received it in place");
    assert_eq!(&l.written[&key][..], &data[..]);
}

#[test]
fn a_hostile_piece_message_is_never_received_in_place() {
    let l = Leech::new();
    let requested = l.requests();
    let r = requested[0];
    let unrequested = (0..PIECES)
        .flat_map(|piece| {
            (0..4).map(move |b| BlockRequest {
                piece,
                offset: b * 16384,
                len: 16384,
            })
        })
        .find(|c| !requested.contains(c))
        .expect("an unrequested block");
    let header = |piece: u32, offset: u32, len: u32| {
        let mut m = (9 + len).to_be_bytes().to_vec();
        m.push(7);
        m.extend_from_slice(&piece.to_be_bytes());
        m.extend_from_slice(&offset.to_be_bytes());
        m
    };
    for (what, head) in [
        (
            "unrequested",
            header(unrequested.piece, unrequested.offset, 16384),
        ),
        ("wrong length", header(r.piece, r.offset, r.len - 1)),
        ("longer", header(r.piece, r.offset, r.len + 1)),
        ("begin past the piece", header(r.piece, PIECE_LEN, r.len)),
        (
            "begin across the piece's end",
            header(r.piece, PIECE_LEN - 100, r.len),
        ),
        ("index past the torrent", header(PIECES, 0, r.len)),
        ("empty payload", header(r.piece, r.offset, 0)),
    ] {
        let mut l = Leech::new();
        let mut msg = head;
        msg.extend_from_slice(&[1; 200]);
        l.read(&msg, Recv::Direct);
        assert!(l.session.direct_offer(l.conn).is_none(), "{what}");
        assert!(l.place.is_empty() && l.landed.is_empty(), "{what}");
    }
}
