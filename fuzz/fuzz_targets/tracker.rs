//! Feeds arbitrary bytes to every tracker reply parser: UDP replies (over IPv4 and IPv6, as
//! announce and as scrape replies), HTTP/1.x replies, announce and scrape bodies, and tracker
//! URLs. A tracker is a stranger on the network: nothing it sends may panic the engine.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringtorrent::core::InfoHash;
use ringtorrent::tracker::{http, udp, url::TrackerUrl};

fuzz_target!(|data: &[u8]| {
    let scrape_count = data.first().map_or(0, |&b| usize::from(b % 8));
    let _ = udp::peek_transaction(data);
    let _ = udp::decode_reply(data, false, scrape_count);
    let _ = udp::decode_reply(data, true, scrape_count);
    let _ = http::parse_reply(data, false);
    let _ = http::parse_reply(data, true);
    let _ = http::parse_announce(data);
    let hashes = [InfoHash::from_bytes([1; 20]), InfoHash::from_bytes([2; 20])];
    let _ = http::parse_scrape(data, &hashes);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = TrackerUrl::parse(text);
    }
});
