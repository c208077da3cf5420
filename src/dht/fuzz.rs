//! A driver for fuzzing: runs a [`Dht`] through a script of arbitrary bytes (datagrams from
//! strangers, answers that carry the transaction ids of our real queries so the response
//! paths are reached, lookups and time passing) and checks what must hold whatever arrives.
//! `fuzz/fuzz_targets/dht.rs` feeds it libFuzzer's inputs; a unit test feeds it mutated
//! valid messages.

use std::net::SocketAddr;
use std::time::Duration;

use crate::core::{InfoHash, Time};

use super::{Dht, DhtConfig, Transmit, MAX_TRANSACTIONS};

/// Splits `data` into steps (`[op, len, bytes...]`) and plays them; panics only if an
/// invariant breaks (or the `Dht` itself panics, which is the bug a fuzzer looks for).
pub fn run_script(data: &[u8]) {
    let boot: SocketAddr = SocketAddr::from(([10, 0, 0, 1], 6881));
    let boot6: SocketAddr = "[fd00::1]:6881".parse().unwrap_or(boot);
    let config = DhtConfig {
        bootstrap: vec![boot, boot6],
        allow_private: data.first().is_some_and(|b| b & 1 == 0),
        trace_lookups: true,
        ..DhtConfig::default()
    };
    let mut now = Time::from_secs(1);
    let mut dht = Dht::new(config, 1, now);
    dht.handle_timeout(now);
    let mut sent: Vec<Transmit> = Vec::new();
    drain(&mut dht, &mut sent);
    let mut rest = data.get(1..).unwrap_or_default();
    let mut steps = 0;
    while let [op, len, tail @ ..] = rest {
        steps += 1;
        if steps > 256 {
            break;
        }
        let n = usize::from(*len).min(tail.len());
        let (body, next) = tail.split_at(n);
        rest = next;
        let from = sent
            .last()
            .map(|t| t.to)
            .unwrap_or(SocketAddr::from(([10, 0, 0, 2], 1000 + u16::from(*op))));
        match op % 8 {
            // A stranger's datagram, as is.
            0 | 1 => dht.handle_datagram(from, body, now),
            // An answer to our latest query: its tid, an id, then the fuzzer's fields.
            2 | 3 => {
                if let Some(tid) = sent.last().and_then(|t| tid_of(&t.payload)) {
                    let msg = answer(&tid, body);
                    dht.handle_datagram(from, &msg, now);
                }
            }
            // A query with a well-formed head and the fuzzer's arguments.
            4 => {
                let mut msg = b"d1:ad2:id20:abcdefghij0123456789".to_vec();
                msg.extend_from_slice(body);
                dht.handle_datagram(from, &msg, now);
            }
            // Time passes.
            5 => {
                let ms = body
                    .iter()
                    .fold(0u64, |a, &b| a.wrapping_mul(256).wrapping_add(u64::from(b)))
                    % 3_600_000;
                now += Duration::from_millis(ms);
                dht.handle_timeout(now);
                // The driver would not spin: what was due is done.
                assert!(
                    dht.poll_timeout().is_some_and(|t| t > now),
                    "timer would spin"
                );
            }
            // A lookup, announcing or not.
            6 => {
                let mut ih = [0u8; 20];
                for (slot, b) in ih.iter_mut().zip(body) {
                    *slot = *b;
                }
                let announce = body.first().map(|&b| u16::from(b));
                dht.get_peers(InfoHash::from_bytes(ih), announce, now);
            }
            // A node to try, and the external address.
            _ => {
                if let Some(addr) = body.get(..6).and_then(super::krpc::compact_addr) {
                    dht.add_node(addr, now);
                    dht.set_external_addr(addr.ip(), now);
                }
            }
        }
        drain(&mut dht, &mut sent);
    }
    let saved = dht.save();
    assert!(Dht::restore(DhtConfig::default(), &saved, 2, now).is_ok());
}

/// Drains outputs and checks the invariants.
fn drain(dht: &mut Dht, sent: &mut Vec<Transmit>) {
    while let Some(t) = dht.poll_transmit() {
        assert!(t.payload.len() <= 2048, "oversized datagram");
        assert!(
            super::krpc::decode(&t.payload).is_ok(),
            "we sent invalid KRPC"
        );
        if sent.len() >= 64 {
            sent.remove(0);
        }
        sent.push(t);
    }
    while dht.poll_event().is_some() {}
    let stats = dht.stats();
    assert!(stats.outstanding_queries <= MAX_TRANSACTIONS);
    assert!(stats.lookups_active <= super::MAX_ACTIVE_LOOKUPS);
    assert!(dht.poll_timeout().is_some());
}

fn tid_of(payload: &[u8]) -> Option<Vec<u8>> {
    let m = super::krpc::decode(payload).ok()?;
    Some(m.tid)
}

/// `d1:rd2:id20:<id><fields>e1:t<tid>1:y1:re`, the fuzzer's bytes as the response's fields.
fn answer(tid: &[u8], fields: &[u8]) -> Vec<u8> {
    let mut msg = b"d1:rd2:id20:ABCDEFGHIJ0123456789".to_vec();
    msg.extend_from_slice(fields);
    msg.extend_from_slice(b"e1:t");
    msg.extend_from_slice(tid.len().to_string().as_bytes());
    msg.push(b':');
    msg.extend_from_slice(tid);
    msg.extend_from_slice(b"1:y1:re");
    msg
}
