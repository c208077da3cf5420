//! Feeds arbitrary datagrams to local service discovery (`ringtorrent::lsd`): anyone on the
//! local network (or a spoofed source) sends these bytes to the multicast group. Nothing may
//! panic; an accepted announce must keep the codec's bounds and survive a re-encoding; and
//! `Lsd` must hand out peers only for wanted torrents, within its rations, whatever comes.

#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use ringtorrent::core::Time;
use ringtorrent::lsd::{self, Family, Lsd, LsdConfig};

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = lsd::parse(data) {
        assert!(a.port != 0);
        assert!(!a.hashes.is_empty() && a.hashes.len() <= lsd::MAX_INFOHASHES);
        let cookie = a.cookie.unwrap_or("x");
        if cookie.bytes().all(|b| b.is_ascii_alphanumeric()) {
            let mut out = Vec::new();
            lsd::encode(Family::V4, a.port, cookie, &a.hashes, &mut out);
            let back = lsd::parse(&out).expect("our own encoding parses");
            assert_eq!((back.port, &back.hashes), (a.port, &a.hashes));
        }
    }
    let config = LsdConfig::default();
    let mut l = Lsd::new(config.clone(), "fuzz", Time::ZERO);
    let mut found = 0;
    for i in 0..4u8 {
        let from = SocketAddr::from(([10, 0, 0, i], 6771));
        let peers = l.handle_datagram(from, data, Time::ZERO, |h| h.as_bytes()[0] & 1 == 0);
        for (h, p) in &peers {
            assert!(h.as_bytes()[0] & 1 == 0);
            assert_eq!(p.ip(), from.ip());
        }
        found += peers.len();
    }
    assert!(found <= config.global_burst as usize);
    assert!(l.sources() <= config.max_sources);
});
