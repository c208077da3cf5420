//! Feeds arbitrary bytes to the uTP packet parser and to a pair of uTP endpoints: as
//! datagrams from strangers, as real packets with fuzzed fields, as hand-made headers with a
//! live connection's id, with loss, writes, reads, closes and time between them
//! (`ringtorrent::utp::fuzz::run_script`). Every uTP datagram comes from a stranger: nothing
//! in one may panic the engine, and what an endpoint holds stays bounded.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringtorrent::utp::{fuzz::run_script, packet};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = packet::decode(data) {
        // What decodes re-encodes to the same header, sack and payload.
        let mut out = Vec::new();
        packet::encode(&p.header, p.sack, p.payload, &mut out);
        let q = packet::decode(&out).expect("re-encoded packet decodes");
        assert_eq!(q.header, p.header);
        assert_eq!(q.payload, p.payload);
    }
    run_script(data);
});
