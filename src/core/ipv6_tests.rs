//! IPv6 in the core, driven through `Session` as a driver would: an IPv4 peer that arrived
//! through a dual-stack listener (`::ffff:a.b.c.d`) is one IPv4 address inside the engine,
//! PEX tells IPv6 peers in `added6`/`dropped6` and IPv4 ones in `added`, and the peers a PEX
//! message lists in `added6` are dialled (an IPv4-mapped one as the IPv4 address).

use ::core::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::api::{Action, ConnId};
use super::config::Config;
use super::mse::SimulatedKeys;
use super::wire::{
    Decoded, Decoder, ExtendedHandshake, Handshake, Message, PexMsg, Reserved, ReservedFlag,
    SplitBytes,
};
use super::{Bitfield, PeerId, Session, Time};
use crate::metainfo::Info;

const PIECES: u32 = 8;
/// The `ut_pex` id the test peers ask us to use.
const PEX_ID: u8 = 9;

fn info() -> Arc<Info> {
    super::fixtures::zero_hash_info("v6.bin", 16384, PIECES)
}

struct Leech {
    session: Session,
    now: Time,
    conns: Vec<ConnId>,
    /// Which of `conns` are still open.
    open: Vec<bool>,
    /// What each peer was sent while connecting (handshakes).
    sent: Vec<Vec<u8>>,
    dialled: Vec<SocketAddr>,
}

impl Leech {
    /// A session leeching the torrent, with incoming peers from `addrs`, each speaking
    /// `ut_pex` and listening on `7000 + i`.
    fn new(addrs: &[&str]) -> Leech {
        Leech::with(Config::default(), addrs)
    }

    fn with(config: Config, addrs: &[&str]) -> Leech {
        let info = info();
        let now = Time::from_secs(1);
        let session = Session::new(
            config,
            PeerId::generate([1; 12]),
            7,
            Box::new(SimulatedKeys::new(7)),
            now,
        );
        let mut l = Leech {
            session,
            now,
            conns: Vec::new(),
            open: Vec::new(),
            sent: Vec::new(),
            dialled: Vec::new(),
        };
        l.session
            .add_torrent(info.clone(), &Bitfield::new(PIECES), now)
            .unwrap();
        let reserved = Reserved::NONE.with(ReservedFlag::ExtensionProtocol, true);
        for (i, a) in addrs.iter().enumerate() {
            let conn = l.session.accept(a.parse().unwrap(), now).unwrap();
            l.conns.push(conn);
            l.open.push(true);
            let hs = Handshake::new(
                reserved,
                info.info_hash(),
                PeerId::from_bytes([i as u8; 20]),
            );
            l.recv(i, &hs.to_bytes());
            let ext = ExtendedHandshake {
                extensions: [("ut_pex".to_owned(), PEX_ID)].into(),
                listen_port: Some(7000 + i as u16),
                ..Default::default()
            };
            l.msg(
                i,
                Message::Extended {
                    id: 0,
                    payload: SplitBytes::single(&ext.to_bytes()),
                },
            );
            let sent = l.take(i);
            l.sent.push(sent);
        }
        l
    }

    fn drain(&mut self) {
        while let Some(a) = self.session.poll_action() {
            if let Action::Connect { addr, .. } = a {
                self.dialled.push(addr);
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

    /// Everything queued for peer `p`, taken and reported sent.
    fn take(&mut self, p: usize) -> Vec<u8> {
        let taken = self.session.take_send(self.conns[p], usize::MAX).concat();
        if !taken.is_empty() {
            self.session
                .handle_sent(self.conns[p], taken.len(), self.now);
        }
        self.drain();
        taken
    }

    /// A minute and a bit passes (keep-alives keep the peers).
    fn minute(&mut self) {
        self.now += Duration::from_secs(61);
        for p in 0..self.conns.len() {
            if self.open[p] {
                self.msg(p, Message::KeepAlive);
            }
        }
        self.session.handle_timeout(self.now);
        self.drain();
    }

    /// The PEX payloads sent to peer `p` since the last look.
    fn pex_to(&mut self, p: usize) -> Vec<Vec<u8>> {
        let bytes = self.take(p);
        let decoder = Decoder::new();
        let mut at = match Handshake::decode(SplitBytes::single(&bytes)) {
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
            if let Message::Extended { id, payload } = value {
                if id == PEX_ID {
                    out.push(payload.to_vec());
                }
            }
            at += consumed;
        }
        out
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn pex_tells_ipv6_peers_in_added6_and_ipv4_mapped_ones_as_ipv4() {
    let mut l = Leech::new(&["[::ffff:127.0.0.2]:5000", "[fd00::2]:5001"]);
    l.minute();
    // Peer 1 (IPv6) hears of peer 0 as the IPv4 address it is, in `added`.
    let to_v6 = l.pex_to(1);
    assert_eq!(to_v6.len(), 1);
    let msg = PexMsg::decode(&to_v6[0], 50).unwrap();
    assert_eq!(msg.added, vec![(addr("127.0.0.2:7000"), 0)]);
    assert!(!to_v6[0].windows(8).any(|w| w == b"6:added6"));
    // Peer 0 hears of peer 1 in `added6`.
    let to_v4 = l.pex_to(0);
    assert_eq!(to_v4.len(), 1);
    assert!(to_v4[0].windows(11).any(|w| w == b"6:added618:"));
    let msg = PexMsg::decode(&to_v4[0], 50).unwrap();
    assert_eq!(msg.added, vec![(addr("[fd00::2]:7001"), 0)]);
    // Peer 1 leaves: peer 0 is told in `dropped6`.
    l.session.handle_closed(l.conns[1], l.now);
    l.open[1] = false;
    l.drain();
    l.minute();
    l.minute();
    let to_v4 = l.pex_to(0);
    assert_eq!(to_v4.len(), 1, "one message for the departure");
    assert!(to_v4[0].windows(13).any(|w| w == b"8:dropped618:"));
    let msg = PexMsg::decode(&to_v4[0], 50).unwrap();
    assert_eq!(msg.dropped, vec![addr("[fd00::2]:7001")]);
    assert!(msg.added.is_empty());
}

#[test]
fn peers_from_added6_are_dialled() {
    let mut l = Leech::new(&["[::1]:5000"]);
    let mut payload = Vec::new();
    PexMsg {
        added: vec![
            (addr("[2001:db8::5]:6881"), 0),
            (addr("[::ffff:10.0.0.9]:6882"), 0),
        ],
        dropped: vec![],
    }
    .encode(&mut payload);
    assert!(payload.windows(8).any(|w| w == b"6:added6"));
    // Our ut_pex id, which the session announced in its extension handshake.
    let ours = super::metadata::OUR_UT_PEX;
    l.msg(
        0,
        Message::Extended {
            id: ours,
            payload: SplitBytes::single(&payload),
        },
    );
    l.now += Duration::from_secs(1);
    l.session.handle_timeout(l.now);
    l.drain();
    assert!(
        l.dialled.contains(&addr("[2001:db8::5]:6881")),
        "{:?}",
        l.dialled
    );
    assert!(
        l.dialled.contains(&addr("10.0.0.9:6882")),
        "an IPv4-mapped added6 entry is dialled as IPv4: {:?}",
        l.dialled
    );
}

#[test]
fn a_mapped_address_counts_with_its_ipv4_form_against_the_per_ip_cap() {
    let config = Config::default();
    let cap = config.max_peers_per_ip;
    let mut session = Session::new(
        config,
        PeerId::generate([2; 12]),
        9,
        Box::new(SimulatedKeys::new(9)),
        Time::from_secs(1),
    );
    let now = Time::from_secs(1);
    // Half the cap through each form of the address: the next one of either is refused.
    for i in 0..cap {
        let a = if i % 2 == 0 {
            "[::ffff:192.0.2.1]:5000"
        } else {
            "192.0.2.1:5000"
        };
        assert!(session.accept(addr(a), now).is_some(), "{i}");
    }
    assert!(session.accept(addr("192.0.2.1:6000"), now).is_none());
    assert!(session
        .accept(addr("[::ffff:192.0.2.1]:6000"), now)
        .is_none());
    assert!(session.accept(addr("[::1]:6000"), now).is_some());
}

#[test]
fn local_peers_for_the_choker_include_ipv6_loopback_link_local_and_unique_local() {
    use super::torrent::is_local;
    for (ip, local) in [
        ("::1", true),
        ("fe80::1", true),
        ("febf:ffff::1", true),
        ("fec0::1", false),
        ("fc00::1", true),
        ("fdff:1:2::3", true),
        ("fe00::1", false),
        ("2001:db8::1", false),
        ("2a01::bb", false),
        ("::ffff:192.168.1.1", true),
        ("::ffff:8.8.8.8", false),
        ("127.0.0.1", true),
        ("10.1.2.3", true),
        ("172.16.0.1", true),
        ("192.168.0.1", true),
        ("169.254.1.1", true),
        ("8.8.8.8", false),
    ] {
        assert_eq!(is_local(ip.parse().unwrap()), local, "{ip}");
    }
}

#[test]
fn the_extension_handshake_says_yourip_unmapped_and_our_ipv6() {
    let ours: ::core::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
    let config = Config {
        our_ipv6: Some(ours),
        ..Config::default()
    };
    let l = Leech::with(config, &["[::ffff:127.0.0.2]:5000", "[fd00::2]:5001"]);
    for (p, yours) in [(0, "127.0.0.2"), (1, "fd00::2")] {
        let bytes = &l.sent[p];
        let decoder = Decoder::new();
        let mut at = match Handshake::decode(SplitBytes::single(bytes)) {
            Ok(Decoded::Complete { consumed, .. }) => consumed,
            other => panic!("no handshake: {other:?}"),
        };
        let mut ext = None;
        while at < bytes.len() {
            let Decoded::Complete { value, consumed } =
                decoder.decode(SplitBytes::single(&bytes[at..])).unwrap()
            else {
                panic!("partial message sent");
            };
            if let Message::Extended { id: 0, payload } = value {
                ext = Some(ExtendedHandshake::decode(payload).unwrap());
            }
            at += consumed;
        }
        let ext = ext.expect("an extension handshake");
        assert_eq!(ext.your_ip, Some(yours.parse().unwrap()), "peer {p}");
        assert_eq!(ext.ipv6, Some(ours));
    }
}
