//! BEP 5 on the peer wire, through `Session` as a driver drives it: with `Config::dht_port`
//! our handshake sets the DHT bit (reserved byte 7, 0x01), a peer that sets it too gets our
//! `port` message, and its own `port` message becomes `Event::DhtNode` (once per
//! connection), or goes straight to the session's own `Dht`. Never for a private torrent.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use ringtorrent::bencode::OwnedValue;
use ringtorrent::core::api::{ConnId, Event};
use ringtorrent::core::config::Config;
use ringtorrent::core::mse::SimulatedKeys;
use ringtorrent::core::{Bitfield, PeerId, Session, Time};
use ringtorrent::dht::{Dht, DhtConfig};
use ringtorrent::metainfo::{Info, Torrent};

const PEER: &str = "127.0.0.2:5000";

fn info(private: bool) -> Arc<Info> {
    let mut info = BTreeMap::new();
    info.insert(b"name".to_vec(), OwnedValue::str("t.bin"));
    info.insert(b"piece length".to_vec(), OwnedValue::Int(16384));
    info.insert(b"pieces".to_vec(), OwnedValue::Bytes(vec![0; 40]));
    info.insert(b"length".to_vec(), OwnedValue::Int(32768));
    if private {
        info.insert(b"private".to_vec(), OwnedValue::Int(1));
    }
    let mut root = BTreeMap::new();
    root.insert(b"info".to_vec(), OwnedValue::Dict(info));
    Arc::new(
        Torrent::from_bytes(&OwnedValue::Dict(root).to_bytes())
            .unwrap()
            .info,
    )
}

struct Wire {
    session: Session,
    conn: ConnId,
    now: Time,
}

/// A seeding session (DHT port `dht_port`) that accepted a peer whose handshake has the DHT
/// bit `peer_dht`; returns it with every byte we sent so far.
fn connect(dht_port: Option<u16>, private: bool, peer_dht: bool) -> (Wire, Vec<u8>) {
    let now = Time::from_secs(1);
    let config = Config {
        dht_port,
        ..Config::default()
    };
    let mut session = Session::new(
        config,
        PeerId::generate([1; 12]),
        7,
        Box::new(SimulatedKeys::new(7)),
        now,
    );
    let info = info(private);
    session
        .add_torrent(info.clone(), &Bitfield::full(2), now)
        .unwrap();
    let conn = session.accept(PEER.parse().unwrap(), now).unwrap();
    let mut hs = Vec::new();
    hs.push(19);
    hs.extend_from_slice(b"BitTorrent protocol");
    let mut reserved = [0u8; 8];
    reserved[5] = 0x10;
    reserved[7] = 0x04 | u8::from(peer_dht);
    hs.extend_from_slice(&reserved);
    hs.extend_from_slice(info.info_hash().as_bytes());
    hs.extend_from_slice(&[9; 20]);
    session.handle_recv(conn, &hs, now);
    let mut w = Wire { session, conn, now };
    let sent = w.sent();
    (w, sent)
}

impl Wire {
    fn sent(&mut self) -> Vec<u8> {
        while self.session.poll_action().is_some() {}
        let bytes: Vec<u8> = self.session.send_chunks(self.conn).concat();
        self.session.handle_sent(self.conn, bytes.len(), self.now);
        bytes
    }

    /// The peer sends `port`; returns the events that follow.
    fn port(&mut self, port: u16) -> Vec<Event> {
        let mut msg = vec![0, 0, 0, 3, 9];
        msg.extend_from_slice(&port.to_be_bytes());
        self.session.handle_recv(self.conn, &msg, self.now);
        while self.session.poll_action().is_some() {}
        std::iter::from_fn(|| self.session.poll_event()).collect()
    }
}

fn port_message(port: u16) -> Vec<u8> {
    let mut m = vec![0, 0, 0, 3, 9];
    m.extend_from_slice(&port.to_be_bytes());
    m
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn dht_nodes(events: &[Event]) -> Vec<SocketAddr> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::DhtNode { addr } => Some(*addr),
            _ => None,
        })
        .collect()
}

#[test]
fn with_a_dht_we_set_the_bit_send_our_port_and_take_theirs_once() {
    let (mut w, sent) = connect(Some(6999), false, true);
    assert!(
        sent.len() >= 68 && sent[27] & 0x01 == 0x01,
        "DHT bit in our handshake"
    );
    assert!(
        contains(&sent[68..], &port_message(6999)),
        "our port message"
    );
    let expected: SocketAddr = "127.0.0.2:7777".parse().unwrap();
    assert_eq!(dht_nodes(&w.port(7777)), vec![expected]);
    assert!(dht_nodes(&w.port(8888)).is_empty(), "one per connection");
}

#[test]
fn a_peer_without_the_bit_gets_no_port_and_is_not_taken() {
    let (mut w, sent) = connect(Some(6999), false, false);
    assert_eq!(sent[27] & 0x01, 0x01);
    assert!(!contains(&sent[68..], &port_message(6999)));
    assert!(dht_nodes(&w.port(7777)).is_empty());
}

#[test]
fn without_a_dht_nothing_of_it_is_said() {
    let (mut w, sent) = connect(None, false, true);
    assert_eq!(sent[27] & 0x01, 0, "no DHT bit");
    assert!(!contains(&sent[68..], &[0, 0, 0, 3, 9]));
    assert!(dht_nodes(&w.port(7777)).is_empty());
}

#[test]
fn a_private_torrent_sends_no_port_and_takes_none() {
    let (mut w, sent) = connect(Some(6999), true, true);
    assert!(!contains(&sent[68..], &port_message(6999)));
    assert!(dht_nodes(&w.port(7777)).is_empty());
}

#[test]
fn the_session_that_runs_the_dht_gives_the_node_to_it() {
    let (mut w, _) = connect(Some(6999), false, true);
    w.session.set_dht(Dht::new(
        DhtConfig {
            allow_private: true,
            ..DhtConfig::default()
        },
        1,
        w.now,
    ));
    assert!(dht_nodes(&w.port(7777)).is_empty(), "taken, not passed on");
    let out: Vec<SocketAddr> = std::iter::from_fn(|| w.session.poll_datagram())
        .map(|t| t.to)
        .collect();
    assert!(
        out.contains(&"127.0.0.2:7777".parse().unwrap()),
        "the node is asked: {out:?}"
    );
}

/// A peer's BEP 10 `yourip` is a vote for our external address, once per connection, only
/// while the DHT runs and never for a private torrent.
#[test]
fn yourip_is_a_vote_for_our_external_address() {
    use ringtorrent::core::wire::ExtendedHandshake;
    let ext = |w: &mut Wire| {
        let hs = ExtendedHandshake {
            your_ip: Some("8.8.4.4".parse().unwrap()),
            ..Default::default()
        };
        let payload = hs.to_bytes();
        let mut msg = ((payload.len() + 2) as u32).to_be_bytes().to_vec();
        msg.extend_from_slice(&[20, 0]);
        msg.extend_from_slice(&payload);
        w.session.handle_recv(w.conn, &msg, w.now);
        while w.session.poll_action().is_some() {}
        std::iter::from_fn(|| w.session.poll_event())
            .filter(|e| matches!(e, Event::ExternalAddrVote { .. }))
            .collect::<Vec<_>>()
    };
    let (mut w, _) = connect(Some(6999), false, true);
    assert_eq!(
        ext(&mut w),
        vec![Event::ExternalAddrVote {
            ip: "8.8.4.4".parse().unwrap(),
            voter: "127.0.0.2".parse().unwrap()
        }]
    );
    assert!(ext(&mut w).is_empty(), "one vote per connection");
    let (mut w, _) = connect(Some(6999), true, true);
    assert!(ext(&mut w).is_empty(), "private");
    let (mut w, _) = connect(None, false, true);
    assert!(ext(&mut w).is_empty(), "no DHT");
}

/// Nodes to try that come before the DHT node (its bootstrap names still resolving) wait in
/// the session, boundedly, and are handed to the node when it arrives.
#[test]
fn nodes_that_come_before_the_node_wait_for_it() {
    let (mut w, _) = connect(Some(6999), false, true);
    for port in 1..=100u16 {
        w.session
            .dht_add_node(SocketAddr::from(([10, 0, 0, 1], port)), w.now);
    }
    w.session.set_dht(Dht::new(
        DhtConfig {
            allow_private: true,
            ..DhtConfig::default()
        },
        1,
        w.now,
    ));
    let out: Vec<SocketAddr> = std::iter::from_fn(|| w.session.poll_datagram())
        .map(|t| t.to)
        .collect();
    assert!(
        out.contains(&SocketAddr::from(([10, 0, 0, 1], 1))),
        "{out:?}"
    );
    assert!(out.len() <= 64, "bounded: {} pinged", out.len());
    // Without a DHT port (no DHT at all) nothing is kept.
    let (mut w, _) = connect(None, false, true);
    w.session
        .dht_add_node(SocketAddr::from(([10, 0, 0, 1], 1)), w.now);
    w.session.set_dht(Dht::new(DhtConfig::default(), 1, w.now));
    assert!(w.session.poll_datagram().is_none());
}
