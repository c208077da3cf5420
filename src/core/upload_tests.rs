//! Upload memory: a peer's send watermark and the session's upload budget, driven through
//! `Session` as a driver would (requests in, disk reads out, bytes taken and reported sent).
//! A peer that requests and never reads must hold at most its watermark plus one block, a
//! crowd of them at most the budget plus one block each, and every request must still be
//! served once its peer reads.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::api::{Action, ConnId, DiskDone, DiskOp, TorrentId};
use super::config::Config;
use super::mse::SimulatedKeys;
use super::wire::{
    BlockRequest, Decoded, Decoder, ExtendedHandshake, Handshake, Message, Reserved, ReservedFlag,
    SplitBytes,
};
use super::{Bitfield, BlockRef, PeerId, PeerKey, Session, Time};
use crate::limits::BLOCK_LEN;
use crate::metainfo::Info;

const PIECE_LEN: u32 = 256 * 1024;
const PIECES: u32 = 16;
const BLOCK: usize = BLOCK_LEN as usize;

fn info() -> Arc<Info> {
    super::fixtures::zero_hash_info("t.bin", PIECE_LEN, PIECES)
}

/// Block `i` of the torrent as a request.
fn block(i: u32) -> BlockRequest {
    let per_piece = PIECE_LEN / BLOCK_LEN;
    BlockRequest {
        piece: i / per_piece,
        offset: (i % per_piece) * BLOCK_LEN,
        len: BLOCK_LEN,
    }
}

/// A seeding session with incoming peers, each unchoked (loopback peers are) and able to
/// send requests; disk reads complete when the test says.
struct Seed {
    session: Session,
    now: Time,
    conns: Vec<ConnId>,
    /// Disk reads asked for and not completed yet.
    reads: Vec<(TorrentId, PeerKey, BlockRef)>,
    reads_issued: usize,
    /// Bytes each peer has been sent (reported to the session), by index in `conns`.
    received: Vec<Vec<u8>>,
}

impl Seed {
    fn new(config: Config, peers: usize) -> Seed {
        Seed::with(config, peers, Reserved::NONE, true)
    }

    /// `peers` peers announcing `reserved`, `interested` or not (then they stay choked).
    fn with(config: Config, peers: usize, reserved: Reserved, interested: bool) -> Seed {
        let info = info();
        let now = Time::from_secs(1);
        let mut session = Session::new(
            config,
            PeerId::generate([1; 12]),
            7,
            Box::new(SimulatedKeys::new(7)),
            now,
        );
        session
            .add_torrent(info.clone(), &Bitfield::full(PIECES), now)
            .unwrap();
        let mut seed = Seed {
            session,
            now,
            conns: Vec::new(),
            reads: Vec::new(),
            reads_issued: 0,
            received: Vec::new(),
        };
        for p in 0..peers {
            let addr = format!("127.0.{}.{}:5000", p / 250, p % 250 + 2);
            let conn = seed.session.accept(addr.parse().unwrap(), now).unwrap();
            let hs = Handshake::new(
                reserved,
                info.info_hash(),
                PeerId::from_bytes([p as u8; 20]),
            );
            seed.conns.push(conn);
            seed.received.push(Vec::new());
            seed.recv(p, &hs.to_bytes());
            if interested {
                seed.msg(p, Message::Interested);
            }
        }
        seed
    }

    fn drain(&mut self) {
        while let Some(a) = self.session.poll_action() {
            if let Action::Disk(DiskOp::Read {
                torrent,
                peer,
                block,
            }) = a
            {
                self.reads.push((torrent, peer, block));
                self.reads_issued += 1;
            }
        }
        while self.session.poll_event().is_some() {}
    }

    fn recv(&mut self, p: usize, bytes: &[u8]) {
        self.session.handle_recv(self.conns[p], bytes, self.now);
        self.drain();
    }

    fn msg(&mut self, p: usize, msg: Message<'_>) {
        let mut out = Vec::new();
        msg.encode(&mut out);
        self.recv(p, &out);
    }

    /// Peer `p` asks for blocks `from..to`.
    fn request(&mut self, p: usize, blocks: std::ops::Range<u32>) {
        for i in blocks {
            self.msg(p, Message::Request(block(i)));
        }
    }

    /// Completes every disk read asked for, with each block's bytes the pattern of its
    /// offset, until the session asks for no more.
    fn complete_reads(&mut self) {
        while !self.reads.is_empty() {
            for (torrent, peer, block) in std::mem::take(&mut self.reads) {
                let at =
                    u64::from(block.piece.get()) * u64::from(PIECE_LEN) + u64::from(block.offset);
                let data: Vec<u8> = (0..u64::from(block.len))
                    .map(|i| ((at + i) % 251) as u8)
                    .collect();
                let done = DiskDone::Read {
                    torrent,
                    peer,
                    block,
                    result: Ok(Bytes::from(data)),
                };
                self.session.handle_disk(done, self.now);
                self.drain();
            }
        }
    }

    /// The driver takes what is queued for peer `p` (as io_uring does) without the kernel
    /// accepting any of it yet.
    fn take(&mut self, p: usize) -> Vec<u8> {
        let taken = self.session.take_send(self.conns[p], usize::MAX).concat();
        self.drain();
        taken
    }

    /// Peer `p` reads: everything queued for it is taken and reported sent.
    fn read(&mut self, p: usize) {
        let taken = self.take(p);
        if !taken.is_empty() {
            self.session
                .handle_sent(self.conns[p], taken.len(), self.now);
            self.received[p].extend_from_slice(&taken);
            self.drain();
        }
    }

    /// The blocks peer `p` was sent so far, as (request, bytes right), in order.
    fn pieces(&self, p: usize) -> Vec<(u32, u32, bool)> {
        let bytes = &self.received[p];
        let decoder = Decoder::new();
        let mut at = match Handshake::decode(SplitBytes::single(bytes)) {
            Ok(Decoded::Complete { consumed, .. }) => consumed,
            _ => 0,
        };
        let mut out = Vec::new();
        while at < bytes.len() {
            let Decoded::Complete { value, consumed } =
                decoder.decode(SplitBytes::single(&bytes[at..])).unwrap()
            else {
                panic!("partial message sent");
            };
            if let Message::Piece {
                piece,
                offset,
                data,
            } = value
            {
                let start = u64::from(piece) * u64::from(PIECE_LEN) + u64::from(offset);
                let right = data
                    .iter()
                    .enumerate()
                    .all(|(i, b)| b == ((start + i as u64) % 251) as u8);
                out.push((piece, offset, right));
            }
            at += consumed;
        }
        out
    }
}

#[test]
fn a_peer_that_never_reads_holds_its_watermark_and_is_served_once_it_reads() {
    let config = Config::default();
    let (low, high) = (config.send_buffer_low, config.send_buffer_high);
    let mut s = Seed::new(config, 1);
    s.read(0);
    let all = PIECES * (PIECE_LEN / BLOCK_LEN);
    s.request(0, 0..all);
    s.complete_reads();
    // A new peer's rate is nothing yet: the low watermark, two blocks.
    assert_eq!(s.reads_issued, low / BLOCK);
    assert_eq!(s.session.upload_buffered(), low);
    // The driver taking the bytes frees nothing: they are still this peer's memory.
    let taken = s.take(0);
    assert!(taken.len() >= low);
    s.complete_reads();
    assert_eq!(s.reads_issued, low / BLOCK, "taken bytes count until sent");
    assert_eq!(s.session.upload_buffered(), low);
    // A minute later (it keeps its connection: it sends, it just never reads), still
    // nothing more is read for it.
    s.now += Duration::from_secs(60);
    s.msg(0, Message::KeepAlive);
    s.session.handle_timeout(s.now);
    s.drain();
    s.complete_reads();
    assert_eq!(s.reads_issued, low / BLOCK);
    // It reads at last (the kernel accepts what the driver took, then the rest): every
    // request is served, byte-exact and in order, and what it holds never passes the highest
    // watermark plus one block as its rate (and with it its watermark) grows.
    s.session.handle_sent(s.conns[0], taken.len(), s.now);
    s.received[0].extend_from_slice(&taken);
    s.drain();
    let mut most = 0;
    for _ in 0..10_000 {
        s.complete_reads();
        most = most.max(s.session.upload_buffered());
        s.now += Duration::from_micros(100);
        s.read(0);
        if s.reads.is_empty() && s.session.upload_buffered() == 0 {
            break;
        }
    }
    assert!(most <= high + BLOCK, "held {most} past {high} + one block");
    assert!(
        most > low,
        "a fast reader's watermark grew past the low one"
    );
    let pieces = s.pieces(0);
    assert_eq!(pieces.len(), all as usize, "every request served");
    for (i, (piece, offset, right)) in pieces.into_iter().enumerate() {
        let want = block(i as u32);
        assert_eq!((piece, offset, right), (want.piece, want.offset, true));
    }
    assert_eq!(s.session.upload_buffered(), 0);
}

#[test]
fn cancelled_reads_count_until_they_complete() {
    let mut s = Seed::new(Config::default(), 1);
    s.read(0);
    // Asking and cancelling in a loop must not start a read per request: the reads already
    // in flight still hold their buffers.
    for i in 0..100 {
        s.msg(0, Message::Request(block(i)));
        s.msg(0, Message::Cancel(block(i)));
    }
    assert_eq!(s.reads_issued, Config::default().send_buffer_low / BLOCK);
    assert_eq!(s.session.upload_buffered(), s.reads_issued * BLOCK);
    // Completed, they are dropped (cancelled) and their room serves the next request.
    s.complete_reads();
    assert_eq!(s.session.upload_buffered(), 0);
    s.msg(0, Message::Request(block(200)));
    s.complete_reads();
    s.read(0);
    assert_eq!(
        s.pieces(0),
        vec![(block(200).piece, block(200).offset, true)]
    );
}

#[test]
fn the_budget_caps_a_crowd_of_slow_readers_yet_every_peer_is_served() {
    let budget = 4 * BLOCK;
    let peers = 20;
    let config = Config {
        upload_buffer_budget: budget,
        ..Config::default()
    };
    let mut s = Seed::new(config, peers);
    for p in 0..peers {
        s.read(p);
        s.request(p, 0..32);
        s.complete_reads();
    }
    // The budget went to the first peers; every later one still got one block, so none
    // starves behind the crowd, and the total is the budget plus one block a peer.
    let held = s.session.upload_buffered();
    assert!(held <= budget + peers * BLOCK, "held {held}");
    assert_eq!(held, budget + (peers - 2) * BLOCK);
    assert_eq!(s.reads_issued, budget / BLOCK + peers - 2);
    // Peer 7 reads while the others hold on: the budget is still spent, so it is served
    // one block at a time, each read starting as the previous block leaves. All 32 arrive.
    for _ in 0..100 {
        s.read(7);
        s.complete_reads();
    }
    let pieces = s.pieces(7);
    assert_eq!(pieces.len(), 32);
    assert!(pieces.iter().all(|p| p.2));
    assert!(s.session.upload_buffered() <= budget + peers * BLOCK);
    // A slow reader leaving gives its share back at once; its room goes to whoever asks.
    let before = s.session.upload_buffered();
    s.session.handle_closed(s.conns[0], s.now);
    s.drain();
    assert_eq!(s.session.upload_buffered(), before - 2 * BLOCK);
    // Once everyone reads, every request of every peer is served.
    for _ in 0..200 {
        for p in 1..peers {
            s.read(p);
        }
        s.complete_reads();
    }
    for p in 1..peers {
        assert_eq!(s.pieces(p).len(), 32, "peer {p}");
    }
    assert_eq!(s.session.upload_buffered(), 0);
}

#[test]
fn rejects_for_a_peer_that_never_reads_stop_at_the_watermark() {
    // A choked BEP 6 peer gets a reject per request; one that asks without end and reads
    // nothing must not make us queue rejects without end.
    let config = Config::default();
    let high = config.send_buffer_high;
    let fast = Reserved::NONE.with(ReservedFlag::Fast, true);
    let mut s = Seed::with(config, 1, fast, false);
    s.read(0);
    let mut burst = Vec::new();
    for i in 0..100_000u32 {
        Message::Request(block(i % 256)).encode(&mut burst);
    }
    for chunk in burst.chunks(64 * 1024) {
        s.recv(0, chunk);
    }
    let queued = s.take(0).len();
    assert!(
        queued >= high,
        "rejects were sent while there was room: {queued}"
    );
    // Rejects stop at the highest watermark; an allowed-fast block read before that may
    // still land on top.
    assert!(
        queued < high + BLOCK + 64,
        "{queued} bytes queued for a peer that never reads"
    );
}

/// The extended message ids (other than the handshake, 0) in what was sent to a peer.
fn extended_ids(bytes: &[u8]) -> Vec<u8> {
    let decoder = Decoder::new();
    let mut at = match Handshake::decode(SplitBytes::single(bytes)) {
        Ok(Decoded::Complete { consumed, .. }) => consumed,
        _ => 0,
    };
    let mut ids = Vec::new();
    while at < bytes.len() {
        let Decoded::Complete { value, consumed } =
            decoder.decode(SplitBytes::single(&bytes[at..])).unwrap()
        else {
            panic!("partial message sent");
        };
        if let Message::Extended { id, .. } = value {
            if id != 0 {
                ids.push(id);
            }
        }
        at += consumed;
    }
    ids
}

#[test]
fn pex_waits_while_a_peer_reads_nothing() {
    let config = Config::default();
    let high = config.send_buffer_high;
    let reserved = Reserved::NONE
        .with(ReservedFlag::Fast, true)
        .with(ReservedFlag::ExtensionProtocol, true);
    let mut s = Seed::with(config, 3, reserved, false);
    // Each speaks ut_pex (as 9) and listens on a port of its own: news for the others.
    for p in 0..3 {
        let hs = ExtendedHandshake {
            extensions: [("ut_pex".to_owned(), 9)].into(),
            listen_port: Some(7000 + p as u16),
            ..Default::default()
        };
        let payload = hs.to_bytes();
        s.msg(
            p,
            Message::Extended {
                id: 0,
                payload: SplitBytes::single(&payload),
            },
        );
        s.read(p);
    }
    // Peer 0 asks while choked until the rejects fill its watermark (requests in its
    // allowed-fast pieces are queued, not rejected); it reads nothing.
    let mut burst = Vec::new();
    for i in 0..100_000u32 {
        Message::Request(block(i % 256)).encode(&mut burst);
    }
    for chunk in burst.chunks(64 * 1024) {
        s.recv(0, chunk);
    }
    let queued = s.take(0).len();
    assert!(queued >= high, "{queued}");
    // Minutes pass: peer 1, which reads, is told about the others; peer 0 is not.
    for _ in 0..4 {
        s.now += Duration::from_secs(61);
        s.msg(0, Message::KeepAlive);
        s.msg(1, Message::KeepAlive);
        s.session.handle_timeout(s.now);
        s.drain();
    }
    let to_reader = extended_ids(&s.take(1));
    assert!(!to_reader.is_empty() && to_reader.iter().all(|&id| id == 9));
    let to_stuck = s.take(0);
    assert!(extended_ids(&to_stuck).is_empty());
    // Two keep-alives in four minutes, nothing else.
    assert!(
        to_stuck.len() <= 8,
        "{} more bytes for a peer that reads nothing",
        to_stuck.len()
    );
    // It reads at last: the news it missed follows on the next round.
    s.session.handle_sent(s.conns[0], usize::MAX, s.now);
    s.drain();
    s.now += Duration::from_secs(1);
    s.session.handle_timeout(s.now);
    s.drain();
    assert_eq!(extended_ids(&s.take(0)), vec![9]);
}
