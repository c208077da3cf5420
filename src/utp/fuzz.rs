//! A driver for fuzzing: runs two [`Endpoint`]s joined by a link the script controls, and
//! lets the script inject arbitrary datagrams, datagrams with a real connection's ids and
//! sequence numbers (so the stream paths are reached), writes, reads, closes, time passing and ICMP errors (path errors).
//! `fuzz/fuzz_targets/utp.rs` feeds it libFuzzer's inputs; a unit test feeds it random bytes.
//! Nothing a peer sends may panic the endpoint, and what it holds stays bounded.

use std::net::SocketAddr;
use std::time::Duration;

use crate::core::Time;

use super::packet::{self, Header, Type};
use super::{conn, Endpoint, EndpointConfig, PathError, UtpEvent, UtpHandle};

/// Plays `data` as a script (`[op, len, bytes...]` steps); panics only if an invariant
/// breaks or the endpoint itself panics.
pub fn run_script(data: &[u8]) {
    let a_addr = SocketAddr::from(([10, 0, 0, 1], 6881));
    let b_addr = SocketAddr::from(([10, 0, 0, 2], 6881));
    let config = EndpointConfig {
        max_connections: 8,
        ..EndpointConfig::default()
    };
    let mut a = Endpoint::new(config.clone(), 1);
    let mut b = Endpoint::new(config, 2);
    let mut now = Time::from_secs(1);
    let mut handles: Vec<(bool, UtpHandle)> = Vec::new();
    if let Ok(h) = a.connect(b_addr, now) {
        handles.push((true, h));
    }
    let mut last: Option<Vec<u8>> = None;
    let mut rest = data;
    let mut steps = 0;
    while let [op, len, tail @ ..] = rest {
        steps += 1;
        if steps > 512 {
            break;
        }
        let n = usize::from(*len).min(tail.len());
        let (body, next) = tail.split_at(n);
        rest = next;
        match op % 8 {
            // A stranger's datagram to either side.
            0 => b.handle_datagram(SocketAddr::from(([10, 0, 0, 9], 1)), body, now),
            1 => a.handle_datagram(b_addr, body, now),
            // A real packet with its header fields replaced by the fuzzer's bytes.
            2 | 3 => {
                if let Some(mut p) = last.clone() {
                    for (d, s) in p.iter_mut().skip(2).zip(body) {
                        *d ^= s;
                    }
                    if op % 2 == 0 {
                        b.handle_datagram(a_addr, &p, now);
                    } else {
                        a.handle_datagram(b_addr, &p, now);
                    }
                }
            }
            // Move the queued datagrams across, dropping those the body's bits say.
            4 => {
                let mut i = 0usize;
                while let Some(t) = a.poll_transmit() {
                    let drop = body.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0);
                    i += 1;
                    if !drop {
                        b.handle_datagram(a_addr, &t.payload, now);
                    }
                    last = Some(t.payload);
                }
                while let Some(t) = b.poll_transmit() {
                    let drop = body.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0);
                    i += 1;
                    if !drop {
                        a.handle_datagram(b_addr, &t.payload, now);
                    }
                    last = Some(t.payload);
                }
            }
            // Write, read or close on a connection.
            5 => {
                for &(on_a, h) in &handles {
                    let e = if on_a { &mut a } else { &mut b };
                    match body.first().map(|b| b % 4) {
                        Some(0) => {
                            e.close(h, now);
                        }
                        Some(1) => {
                            let mut buf = [0u8; 4096];
                            e.read(h, &mut buf, now);
                        }
                        _ => {
                            e.write(h, body, now);
                        }
                    }
                }
            }
            // A hand-made header with the fuzzer's numbers and a real connection id.
            6 => {
                let word = |i: usize| {
                    u32::from_le_bytes([
                        body.get(i).copied().unwrap_or(0),
                        body.get(i + 1).copied().unwrap_or(0),
                        body.get(i + 2).copied().unwrap_or(0),
                        body.get(i + 3).copied().unwrap_or(0),
                    ])
                };
                let conn_id = last
                    .as_deref()
                    .and_then(|p| packet::decode(p).ok())
                    .map(|p| p.header.conn_id)
                    .unwrap_or(0);
                let header = Header {
                    kind: [Type::Data, Type::Fin, Type::State, Type::Reset, Type::Syn]
                        [usize::from(body.first().copied().unwrap_or(0) % 5)],
                    conn_id,
                    timestamp: word(1),
                    timestamp_diff: word(5),
                    wnd_size: word(9),
                    seq_nr: word(13) as u16,
                    ack_nr: (word(13) >> 16) as u16,
                };
                let sack = body.get(17..21).unwrap_or_default();
                let mut p = Vec::new();
                packet::encode(&header, sack, body.get(21..).unwrap_or_default(), &mut p);
                b.handle_datagram(a_addr, &p, now);
                a.handle_datagram(b_addr, &p, now);
            }
            // Time passes, and the network may say something about the path to b (an ICMP
            // error as the driver reads it: too big with any MTU, unreachable).
            _ => {
                now += Duration::from_millis(u64::from(body.first().copied().unwrap_or(1)) * 40);
                let mtu = u32::from_le_bytes([
                    body.get(2).copied().unwrap_or(0),
                    body.get(3).copied().unwrap_or(0),
                    0,
                    0,
                ]);
                let error = match body.get(1).map(|b| b % 16) {
                    Some(1..=4) => Some(PathError::TooBig { mtu: Some(mtu) }),
                    Some(5) => Some(PathError::TooBig { mtu: None }),
                    Some(6) => Some(PathError::HostUnreachable),
                    Some(7) => Some(PathError::PortUnreachable),
                    _ => None,
                };
                if let Some(error) = error {
                    a.handle_path_error(b_addr, error, now);
                }
                a.handle_timeout(now);
                b.handle_timeout(now);
            }
        }
        for (on_a, e) in [(true, &mut a), (false, &mut b)] {
            while let Some(ev) = e.poll_event() {
                match ev {
                    UtpEvent::Incoming(h, _) | UtpEvent::Connected(h)
                        if !handles.contains(&(on_a, h)) =>
                    {
                        handles.push((on_a, h));
                    }
                    UtpEvent::Closed(h, _) => handles.retain(|x| *x != (on_a, h)),
                    _ => {}
                }
            }
            check(e);
        }
    }
}

fn check(e: &Endpoint) {
    assert!(e.len() <= 8, "connections over the bound");
    for c in e.conns.values() {
        let cfg = conn::UtpConfig::default();
        assert!(
            c.readable_len() <= cfg.recv_buffer,
            "receive buffer over the bound"
        );
        assert!(c.bytes_in_flight() <= cfg.send_buffer + c.payload_size() * 2);
    }
    assert!(e.transmits.len() <= 100_000, "unbounded output");
    assert_eq!(e.poll_timeout(), e.poll_timeout_by_scan(), "deadline heap");
    assert!(
        e.deadlines.len() <= 2 * e.len() + 65,
        "deadline heap unbounded"
    );
}
