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
}

/// A leeching session with one incoming seed that has unchoked it.
struct Leech {
    session: Session,
    now: Time,
    conn: ConnId,
    /// What the session sent the seed, its handshake included.
    sent: Vec<u8>,
    written: BTreeMap<(u32, u32), Bytes>,
    events: Vec<Event>,
}

impl Leech {
    fn new() -> Leech {
        let info = info();
        let now = Time::from_secs(1);
        let mut session = Session::new(
            Config::default(),
            PeerId::generate([1; 12]),
            7,
            Box::new(SimulatedKeys::new(7)),
            now,
        );
        session
            .add_torrent(info.clone(), &Bitfield::new(PIECES), now)
            .unwrap();
        let conn = session
            .accept("127.0.0.2:5000".parse().unwrap(), now)
            .unwrap();
        let mut l = Leech {
            session,
            now,
            conn,
            sent: Vec::new(),
            written: BTreeMap::new(),
            events: Vec::new(),
        };
        let hs = Handshake::new(
            Reserved::NONE,
            info.info_hash(),
            PeerId::from_bytes([9; 20]),
        );
        l.copy(&hs.to_bytes());
        // A full bitfield, then an unchoke.
        l.copy(&[0, 0, 0, 3, 5, 0xff, 0xff, 0, 0, 0, 1, 1]);
        l
    }

    fn drain(&mut self) {
        while let Some(a) = self.session.poll_action() {
            match a {
                Action::Send { conn } => {
                    let bytes = self.session.take_send(conn, usize::MAX).concat();
                    self.session.handle_sent(conn, bytes.len(), self.now);
                    self.sent.extend_from_slice(&bytes);
                }
                Action::Disk(DiskOp::Write { block, data, .. }) => {
                    self.written.insert((block.piece.get(), block.offset), data);
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
            Recv::Owned => {
                // As the ring's buffers: larger than what arrived in them.
                let mut chunk = BytesMut::with_capacity(64 * 1024);
                chunk.extend_from_slice(bytes);
                self.session.handle_recv_owned(self.conn, chunk, self.now);
            }
        }
        self.drain();
    }

    /// The block requests the session has sent.
    fn requests(&self) -> Vec<BlockRequest> {
        let Ok(Decoded::Complete { consumed, .. }) =
            Handshake::decode(SplitBytes::single(&self.sent))
        else {
            panic!("no handshake sent");
        };
        let decoder = Decoder::new();
        let mut at = consumed;
        let mut out = Vec::new();
        while let Ok(Decoded::Complete { value, consumed }) =
            decoder.decode(SplitBytes::single(&self.sent[at..]))
        {
            if let Message::Request(r) = value {
                out.push(r);
            }
            at += consumed;
        }
        out
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
