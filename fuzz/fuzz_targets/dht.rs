//! Feeds arbitrary bytes to a DHT node: as datagrams from strangers, as answers carrying the
//! transaction ids of its real queries (so the response paths are reached), as queries with a
//! valid head, and as lookups, nodes and time passing between them
//! (`ringtorrent::dht::fuzz::run_script`). Every DHT datagram comes from a stranger: nothing
//! in one may panic the engine, and what the node sends stays valid and bounded.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringtorrent::dht::{fuzz::run_script, krpc};

fuzz_target!(|data: &[u8]| {
    let _ = krpc::decode(data);
    run_script(data);
});
