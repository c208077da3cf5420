//! Fuzzes the protocol core's handling of a hostile peer's messages, above all the
//! extension protocol (BEP 10) and what rides on it: metadata exchange (BEP 9) for a magnet
//! link and for a torrent we have, and peer exchange (BEP 11). The harness plays up to three
//! peers against a real `Session`, the way the drivers do: it accepts them, completes their
//! handshakes, then follows a script taken from the input, whose steps are framed messages,
//! extended messages with bencoded payloads, well-formed or corrupted metadata pieces,
//! raw bytes, time passing, disk operations finishing (or failing), sends completing, and
//! peers leaving.
//!
//! Nothing may panic; the session never holds more connections than its limit, and a magnet
//! whose metadata arrives only starts with metadata that hashes to its info hash.
//!
//! Input: byte 0 chooses the torrent (bit 0: magnet, bit 1: we are a seed) and the number of
//! peers (bits 2-3); the rest is the script. Run with `cargo fuzz run extension`.

#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ringtorrent::bencode::OwnedValue;
use ringtorrent::core::api::{Action, ConnId, DiskDone, DiskOp, Event, TorrentId};
use ringtorrent::core::config::Config;
use ringtorrent::core::mse::SimulatedKeys;
use ringtorrent::core::wire::{
    ExtendedHandshake, Handshake, Message, MetadataMsg, Reserved, ReservedFlag, SplitBytes,
};
use ringtorrent::core::{Bitfield, PeerId, Session, Time};
use ringtorrent::metainfo::{Info, Torrent};

/// A torrent whose info dictionary takes two metadata pieces (1,200 piece hashes).
fn info() -> &'static Arc<Info> {
    static INFO: OnceLock<Arc<Info>> = OnceLock::new();
    INFO.get_or_init(|| {
        let mut info = BTreeMap::new();
        info.insert(b"name".to_vec(), OwnedValue::str("m.bin"));
        info.insert(b"piece length".to_vec(), OwnedValue::Int(16384));
        let pieces: Vec<u8> = (0..1200 * 20).map(|i| (i * 7 % 251) as u8).collect();
        info.insert(b"pieces".to_vec(), OwnedValue::Bytes(pieces));
        info.insert(b"length".to_vec(), OwnedValue::Int(1200 * 16384));
        let mut root = BTreeMap::new();
        root.insert(b"info".to_vec(), OwnedValue::Dict(info));
        let bytes = OwnedValue::Dict(root).to_bytes();
        Arc::new(Torrent::from_bytes(&bytes).expect("valid").info)
    })
}

struct Harness {
    session: Session,
    torrent: TorrentId,
    now: Time,
    conns: Vec<ConnId>,
    disk: Vec<DiskOp>,
}

impl Harness {
    fn pump(&mut self) {
        while let Some(a) = self.session.poll_action() {
            match a {
                Action::Disk(op) => self.disk.push(op),
                Action::Close { conn } => self.conns.retain(|c| *c != conn),
                Action::Connect { .. } | Action::Send { .. } | Action::HandOff { .. } => {}
            }
        }
        while let Some(e) = self.session.poll_event() {
            if let Event::MetadataReceived { torrent, info } = e {
                assert_eq!(info.info_hash(), self::info().info_hash(), "bad metadata");
                let have = Bitfield::new(info.lengths().piece_count());
                assert!(self.session.start_torrent(torrent, &have, self.now));
            }
        }
        assert!(self.session.connection_count() <= self.session.config().max_connections);
    }

    fn recv(&mut self, peer: usize, bytes: &[u8]) {
        if let Some(&conn) = self.conns.get(peer % self.conns.len().max(1)) {
            self.session.handle_recv(conn, bytes, self.now);
            self.pump();
        }
    }

    /// Finishes the disk operations in flight; `fail` picks which fail.
    fn disk(&mut self, fail: u8) {
        for (n, op) in std::mem::take(&mut self.disk).into_iter().enumerate() {
            let bad = fail & (1 << (n % 8)) != 0;
            let done = match op {
                DiskOp::Write { torrent, block, .. } => DiskDone::Written {
                    torrent,
                    block,
                    result: if bad { Err("disk full".into()) } else { Ok(()) },
                },
                DiskOp::Read {
                    torrent,
                    peer,
                    block,
                } => DiskDone::Read {
                    torrent,
                    peer,
                    block,
                    result: if bad {
                        Err("gone".into())
                    } else {
                        Ok(Bytes::from(vec![0u8; block.len as usize]))
                    },
                },
                DiskOp::Verify { torrent, piece, .. } => DiskDone::Verified {
                    torrent,
                    piece,
                    ok: !bad,
                    block_hashes: Vec::new(),
                },
            };
            self.session.handle_disk(done, self.now);
        }
        self.pump();
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend(payload);
    out
}

fn extended(id: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Message::Extended {
        id,
        payload: SplitBytes::single(payload),
    }
    .encode(&mut out);
    out
}

fuzz_target!(|data: &[u8]| {
    let [setup, script @ ..] = data else {
        return;
    };
    let mut script: &[u8] = script;
    let setup = *setup;
    let info = info();
    let now = Time::from_secs(1);
    let config = Config {
        max_connections: 3,
        ..Config::default()
    };
    let mut session = Session::new(
        config,
        PeerId::generate([1; 12]),
        7,
        Box::new(SimulatedKeys::new(7)),
        now,
    );
    session.set_listen_port(6881);
    let magnet = setup & 1 != 0;
    let pieces = info.lengths().piece_count();
    let torrent = if magnet {
        session.add_magnet(info.info_hash(), now)
    } else {
        let have = if setup & 2 != 0 {
            Bitfield::full(pieces)
        } else {
            Bitfield::new(pieces)
        };
        session.add_torrent(info.clone(), &have, now)
    }
    .expect("room for one torrent");
    let mut h = Harness {
        session,
        torrent,
        now,
        conns: Vec::new(),
        disk: Vec::new(),
    };
    let reserved = Reserved::NONE
        .with(ReservedFlag::Fast, true)
        .with(ReservedFlag::ExtensionProtocol, true);
    for n in 0..=((setup >> 2) & 3) {
        let addr = format!("10.0.0.{}:7000", n + 2).parse().expect("address");
        if let Some(conn) = h.session.accept(addr, h.now) {
            h.conns.push(conn);
            let hs = Handshake::new(reserved, info.info_hash(), PeerId::from_bytes([n; 20]));
            h.recv(usize::from(n), &hs.to_bytes());
        }
    }
    // The script: [op, peer, len, payload...] steps until the input runs out.
    while let [op, peer, len, rest @ ..] = script {
        let len = usize::from(*len).min(rest.len());
        let (payload, next) = rest.split_at(len);
        script = next;
        let peer = usize::from(*peer);
        match op % 10 {
            // A framed message: id and body from the input.
            0 => h.recv(peer, &frame(payload)),
            // An extended message: extended id first, then a bencoded (or not) payload.
            1 => {
                if let [id, body @ ..] = payload {
                    h.recv(peer, &extended(*id, body));
                }
            }
            // Our extension handshake as a real client sends it, metadata size from input.
            2 => {
                let size = match payload.first() {
                    Some(0) | None => Some(info.raw().len() as u64),
                    Some(&b) => Some(u64::from(b) << (b % 40)),
                };
                let hs = ExtendedHandshake {
                    extensions: [("ut_metadata".to_owned(), 3), ("ut_pex".to_owned(), 1)].into(),
                    metadata_size: size,
                    ..Default::default()
                };
                h.recv(peer, &extended(0, &hs.to_bytes()));
            }
            // A metadata piece (ours, to the extended id we announced), intact or corrupted.
            3 => {
                let raw = info.raw();
                let piece = u32::from(payload.first().copied().unwrap_or(0) % 3);
                let start = (piece as usize * 16384).min(raw.len());
                let mut bytes = raw[start..(start + 16384).min(raw.len())].to_vec();
                let span = bytes.len().max(1);
                for (n, b) in payload.iter().skip(1).enumerate() {
                    if let Some(at) = bytes.get_mut(n * 97 % span) {
                        *at ^= b;
                    }
                }
                let mut msg = Vec::new();
                MetadataMsg::Data {
                    piece,
                    total_size: raw.len() as u64,
                    data: &bytes,
                }
                .encode(&mut msg);
                h.recv(peer, &extended(1, &msg));
            }
            // Raw bytes: partial frames, garbage.
            4 => h.recv(peer, payload),
            // Time passes.
            5 => {
                let ms = u64::from(payload.first().copied().unwrap_or(1)) * 250;
                h.now += Duration::from_millis(ms);
                h.session.handle_timeout(h.now);
                h.pump();
            }
            // Disk operations finish.
            6 => h.disk(payload.first().copied().unwrap_or(0)),
            // Sends complete (all, or the amount from the input).
            7 => {
                for conn in h.conns.clone() {
                    let queued: usize = h.session.send_chunks(conn).iter().map(|c| c.len()).sum();
                    let n = match payload.first() {
                        Some(&b) if b > 0 => queued.min(usize::from(b) * 64),
                        _ => queued,
                    };
                    h.session.handle_sent(conn, n, h.now);
                }
                h.pump();
            }
            // A peer leaves.
            8 => {
                if !h.conns.is_empty() {
                    let conn = h.conns.remove(peer % h.conns.len());
                    h.session.handle_closed(conn, h.now);
                    h.pump();
                }
            }
            // A new peer arrives and says hello.
            _ => {
                let n = h.conns.len() as u8 + 10;
                let addr = format!("10.0.1.{n}:7000").parse().expect("address");
                if let Some(conn) = h.session.accept(addr, h.now) {
                    h.conns.push(conn);
                    let hs =
                        Handshake::new(reserved, info.info_hash(), PeerId::from_bytes([n; 20]));
                    let at = h.conns.len() - 1;
                    h.recv(at, &hs.to_bytes());
                }
            }
        }
    }
    let _ = h.torrent;
});
