//! `Dht` as a whole: answering queries, tokens, limits, transactions, save/restore.

use std::net::SocketAddr;
use std::time::Duration;

use super::krpc::{self, Body, Query, Response};
use super::*;
use crate::core::Rng;

fn cfg() -> DhtConfig {
    DhtConfig {
        allow_private: true,
        ..DhtConfig::default()
    }
}

fn drain(d: &mut Dht) -> Vec<Transmit> {
    std::iter::from_fn(|| d.poll_transmit()).collect()
}

fn reply_to(d: &mut Dht, from: SocketAddr, q: &Query, now: Time) -> Option<krpc::Message> {
    let bytes = krpc::encode_query(b"qq", &NodeId([0x77; 20]), q, false);
    d.handle_datagram(from, &bytes, now);
    let out = drain(d);
    let t = out.iter().find(|t| t.to == from)?;
    Some(krpc::decode(&t.payload).expect("we send valid KRPC"))
}

fn asker() -> SocketAddr {
    "10.0.0.9:4000".parse().unwrap()
}

#[test]
fn answers_ping_find_node_and_reports_the_askers_address() {
    let now = Time::from_secs(1);
    let mut d = Dht::new(cfg(), 1, now);
    let m = reply_to(&mut d, asker(), &Query::Ping, now).unwrap();
    assert_eq!(m.tid, b"qq");
    match m.body {
        Body::Response { id, ip, .. } => {
            assert_eq!(id, d.id());
            assert_eq!(ip, Some(asker()));
        }
        other => panic!("{other:?}"),
    }
    let q = Query::FindNode {
        target: NodeId([1; 20]),
        want: None,
    };
    assert!(matches!(
        reply_to(&mut d, asker(), &q, now).unwrap().body,
        Body::Response { .. }
    ));
    assert_eq!(d.stats().queries_answered, 2);
}

#[test]
fn announce_needs_our_token_and_get_peers_returns_the_peer() {
    let now = Time::from_secs(1);
    let mut d = Dht::new(cfg(), 2, now);
    let ih = InfoHash::from_bytes([5; 20]);
    let gp = Query::GetPeers {
        info_hash: ih,
        want: None,
    };
    let token = match reply_to(&mut d, asker(), &gp, now).unwrap().body {
        Body::Response { response, .. } => response.token.unwrap(),
        other => panic!("{other:?}"),
    };
    // A wrong token, or our token from another address: refused with 203, nothing stored.
    let other: SocketAddr = "10.0.0.10:4000".parse().unwrap();
    for (from, tok) in [(asker(), b"wrong".to_vec()), (other, token.clone())] {
        let q = Query::AnnouncePeer {
            info_hash: ih,
            port: 6881,
            implied_port: false,
            token: tok,
        };
        let m = reply_to(&mut d, from, &q, now).unwrap();
        assert_eq!(m.body, Body::Error { code: 203 });
    }
    assert_eq!(d.stats().stored_peers, 0);
    let q = Query::AnnouncePeer {
        info_hash: ih,
        port: 0,
        implied_port: true,
        token,
    };
    assert!(matches!(
        reply_to(&mut d, asker(), &q, now).unwrap().body,
        Body::Response { .. }
    ));
    assert_eq!(d.stats().stored_peers, 1);
    match reply_to(&mut d, other, &gp, now).unwrap().body {
        Body::Response { response, .. } => assert_eq!(response.values, vec![asker()]),
        other => panic!("{other:?}"),
    }
    // The token is still good after one rotation, not after two.
    let later = now + Duration::from_secs(301);
    d.handle_timeout(later);
    let token = match reply_to(&mut d, asker(), &gp, now).unwrap().body {
        Body::Response { response, .. } => response.token.unwrap(),
        other => panic!("{other:?}"),
    };
    d.handle_timeout(later + Duration::from_secs(301));
    let q = Query::AnnouncePeer {
        info_hash: ih,
        port: 7000,
        implied_port: false,
        token: token.clone(),
    };
    assert!(matches!(
        reply_to(&mut d, asker(), &q, later).unwrap().body,
        Body::Response { .. }
    ));
    d.handle_timeout(later + Duration::from_secs(602));
    assert_eq!(
        reply_to(&mut d, asker(), &q, later).unwrap().body,
        Body::Error { code: 203 }
    );
}

#[test]
fn malformed_and_unknown_queries_get_errors_and_garbage_is_counted() {
    let now = Time::from_secs(1);
    let mut d = Dht::new(cfg(), 3, now);
    let m = reply_to(&mut d, asker(), &Query::Unknown, now).unwrap();
    assert_eq!(m.body, Body::Error { code: 204 });
    d.handle_datagram(asker(), b"d1:ad2:id3:abce1:q4:ping1:t2:xy1:y1:qe", now);
    let out = drain(&mut d);
    assert_eq!(out.len(), 1);
    let m = krpc::decode(&out[0].payload).unwrap();
    assert_eq!(
        (m.tid.as_slice(), m.body),
        (&b"xy"[..], Body::Error { code: 203 })
    );
    for junk in [
        &b"d"[..],
        b"de",
        b"d1:t2:aa1:y1:re",
        b"dxxxxxxxx",
        &[b'd'; 5000],
    ] {
        d.handle_datagram(asker(), junk, now);
    }
    assert!(drain(&mut d).is_empty());
    assert_eq!(d.stats().invalid_messages, 6);
}

#[test]
fn a_flood_from_one_address_is_answered_at_the_rate_limit() {
    let now = Time::from_secs(1);
    let mut d = Dht::new(cfg(), 4, now);
    let bytes = krpc::encode_query(b"qq", &NodeId([0x77; 20]), &Query::Ping, false);
    let mut answered = 0;
    for ms in 0..10_000u64 {
        let t = now + Duration::from_millis(ms / 10);
        d.handle_datagram(asker(), &bytes, t);
        answered += drain(&mut d).iter().filter(|t| t.to == asker()).count();
    }
    // 1 s of flood: the per-source burst plus one second's rate.
    let bound = (server::PER_SOURCE_BURST + server::PER_SOURCE_RATE) as usize + 1;
    assert!(answered <= bound, "{answered}");
    assert!(d.stats().queries_dropped >= 10_000 - bound as u64);
    // Someone else is still answered.
    assert!(reply_to(&mut d, "10.9.9.9:1".parse().unwrap(), &Query::Ping, now).is_some());
}

#[test]
fn responses_match_by_transaction_and_address() {
    let now = Time::from_secs(1);
    let node: SocketAddr = "10.0.0.2:5000".parse().unwrap();
    let mut d = Dht::new(cfg(), 5, now);
    d.add_node(node, now);
    let out = drain(&mut d);
    assert_eq!(out.len(), 1);
    let q = krpc::decode(&out[0].payload).unwrap();
    assert!(matches!(
        q.body,
        Body::Query {
            query: Query::Ping,
            ..
        }
    ));
    let their_id = NodeId([0x33; 20]);
    let pong = krpc::encode_response(&q.tid, &their_id, &Response::default(), None);
    // The right id from the wrong address does nothing.
    d.handle_datagram("10.0.0.3:5000".parse().unwrap(), &pong, now);
    assert_eq!(d.stats().nodes_v4, 0);
    // A wrong id from the right address neither.
    let wrong = krpc::encode_response(b"nope", &their_id, &Response::default(), None);
    d.handle_datagram(node, &wrong, now);
    assert_eq!(d.stats().nodes_v4, 0);
    d.handle_datagram(node, &pong, now);
    assert_eq!(d.stats().nodes_v4, 1);
    assert_eq!(d.stats().outstanding_queries, 0);
    // Replayed: no transaction any more.
    d.handle_datagram(node, &pong, now);
    assert_eq!(d.stats().nodes_v4, 1);
}

#[test]
fn private_addresses_need_allow_private_or_to_be_named() {
    let now = Time::from_secs(1);
    let mut d = Dht::new(DhtConfig::default(), 6, now);
    // A private node that queries us is answered but not pinged back.
    let m = reply_to(&mut d, asker(), &Query::Ping, now);
    assert!(m.is_some());
    assert_eq!(d.stats().outstanding_queries, 0);
    let mut d = Dht::new(cfg(), 6, now);
    reply_to(&mut d, asker(), &Query::Ping, now);
    assert_eq!(d.stats().outstanding_queries, 1);
}

#[test]
fn save_and_restore() {
    let now = Time::from_secs(1);
    let mut d = Dht::new(cfg(), 7, now);
    for i in 0..20u8 {
        let node = SocketAddr::from(([10, 0, 1, i], 6000));
        d.add_node(node, now);
        for t in drain(&mut d) {
            let q = krpc::decode(&t.payload).unwrap();
            let pong = krpc::encode_response(&q.tid, &NodeId([i; 20]), &Response::default(), None);
            d.handle_datagram(t.to, &pong, now);
        }
    }
    let v6: SocketAddr = "[fd00::1]:7000".parse().unwrap();
    d.add_node(v6, now);
    for t in drain(&mut d) {
        let q = krpc::decode(&t.payload).unwrap();
        let pong = krpc::encode_response(&q.tid, &NodeId([0xee; 20]), &Response::default(), None);
        d.handle_datagram(t.to, &pong, now);
    }
    let s = d.stats();
    assert!(s.nodes_v4 >= 8, "{s:?}");
    assert_eq!(s.nodes_v6, 1);
    let saved = d.save();
    let r = Dht::restore(cfg(), &saved, 8, now).unwrap();
    assert_eq!(r.id(), d.id());
    assert_eq!(r.stats().nodes_v4, s.nodes_v4);
    assert_eq!(r.stats().nodes_v6, 1);
    assert_eq!(r.save(), saved);
    for bad in [
        &b""[..],
        b"garbage",
        b"de",
        b"d2:id3:abce",
        b"d2:id20:abcdefghij01234567895:nodes5:abcdee",
        b"d2:id20:abcdefghij01234567896:nodes626:abcdefghij0123456789\x01\x02\x03\x04\x00\x01e",
    ] {
        assert!(Dht::restore(cfg(), bad, 1, now).is_err(), "{bad:?}");
    }
}

#[test]
fn external_address_gives_a_bep42_id_and_votes_are_counted() {
    let now = Time::from_secs(1);
    let mut d = Dht::new(cfg(), 9, now);
    let ip: IpAddr = "124.31.75.21".parse().unwrap();
    d.set_external_addr(ip, now);
    assert!(d.id().valid_for(ip));
    let id = d.id();
    d.set_external_addr(ip, now);
    assert_eq!(d.id(), id, "already valid: kept");
    // Responses carrying `ip` are votes, one per responding address.
    for i in 0..3u8 {
        let node = SocketAddr::from(([10, 0, 2, i], 6000));
        d.add_node(node, now);
        for t in drain(&mut d) {
            let q = krpc::decode(&t.payload).unwrap();
            let seen: SocketAddr = "124.31.75.21:6881".parse().unwrap();
            let pong =
                krpc::encode_response(&q.tid, &NodeId([i; 20]), &Response::default(), Some(&seen));
            d.handle_datagram(t.to, &pong, now);
        }
    }
    assert_eq!(d.external_addr_vote(), Some((ip, 3)));
}

#[test]
fn poll_timeout_moves_forward() {
    let now = Time::from_secs(1);
    let mut d = Dht::new(
        DhtConfig {
            bootstrap: vec!["10.0.0.1:6881".parse().unwrap()],
            ..cfg()
        },
        10,
        now,
    );
    let mut t = now;
    for _ in 0..50 {
        let next = d.poll_timeout().unwrap();
        assert!(next >= t);
        t = next.max(t);
        d.handle_timeout(t);
        drain(&mut d);
        assert!(d.poll_timeout().unwrap() > t, "would spin at {t:?}");
    }
    // It kept trying the bootstrap node, and gave up on each try.
    assert_eq!(d.stats().nodes_v4, 0);
}

/// Valid messages of every kind, to mutate.
fn corpus() -> Vec<Vec<u8>> {
    let ih = InfoHash::from_bytes([5; 20]);
    let id = NodeId([0x41; 20]);
    let r = Response {
        nodes: vec![(NodeId([1; 20]), "10.1.1.1:1".parse().unwrap())],
        nodes6: vec![(NodeId([2; 20]), "[fd00::2]:2".parse().unwrap())],
        values: vec![
            "10.3.3.3:3".parse().unwrap(),
            "[fd00::4]:4".parse().unwrap(),
        ],
        token: Some(b"tok".to_vec()),
    };
    let queries = [
        Query::Ping,
        Query::FindNode {
            target: id,
            want: Some(krpc::Want { n4: true, n6: true }),
        },
        Query::GetPeers {
            info_hash: ih,
            want: None,
        },
        Query::AnnouncePeer {
            info_hash: ih,
            port: 1,
            implied_port: true,
            token: b"tok".to_vec(),
        },
        Query::Unknown,
    ];
    let mut out: Vec<Vec<u8>> = queries
        .iter()
        .map(|q| krpc::encode_query(b"ab", &id, q, false))
        .collect();
    out.push(krpc::encode_response(b"ab", &id, &r, Some(&asker())));
    out.push(krpc::encode_error(b"ab", 201, "x"));
    out
}

fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut m = base.to_vec();
    for _ in 0..1 + rng.index(4) {
        let len = m.len().max(1);
        match rng.index(5) {
            0 => {
                let i = rng.index(len);
                if let Some(b) = m.get_mut(i) {
                    *b ^= 1 << rng.index(8);
                }
            }
            1 => m.truncate(rng.index(len)),
            2 => {
                let i = rng.index(len).min(m.len());
                let b = b"deil:0123456789"[rng.index(15)];
                m.insert(i, b);
            }
            3 => {
                let i = rng.index(len).min(m.len());
                m.drain(i..(i + rng.index(8)).min(m.len()));
            }
            _ => {
                let i = rng.index(len).min(m.len());
                let j = rng.index(len).min(m.len());
                let piece: Vec<u8> = m[i.min(j)..i.max(j)].to_vec();
                m.splice(i..i, piece);
            }
        }
    }
    m
}

#[test]
fn mutated_messages_never_panic_and_are_counted() {
    let corpus = corpus();
    let mut rng = Rng::new(0xf022);
    let now = Time::from_secs(1);
    let mut d = Dht::new(cfg(), 11, now);
    let mut invalid = 0u64;
    for k in 0..20_000 {
        let base = &corpus[k % corpus.len()];
        let m = mutate(&mut rng, base);
        if krpc::decode(&m).is_err() {
            invalid += 1;
        }
        let from = SocketAddr::from(([10, 0, 9, (k % 200) as u8], 1000));
        d.handle_datagram(from, &m, now + Duration::from_millis(k as u64));
        for t in drain(&mut d) {
            assert!(krpc::decode(&t.payload).is_ok());
        }
        while d.poll_event().is_some() {}
    }
    assert_eq!(d.stats().invalid_messages, invalid);
    assert!(
        invalid > 5_000,
        "the mutations should break most messages: {invalid}"
    );
    assert!(
        d.stats().stored_peers <= d.config.max_peers_per_torrent * d.config.max_stored_torrents
    );
}

#[test]
fn the_fuzz_script_runs_over_mutated_scripts() {
    let mut rng = Rng::new(0x5c21);
    let corpus = corpus();
    for _ in 0..300 {
        // A script: steps of random ops, with corpus messages (mutated) as datagrams.
        let mut script = vec![rng.index(2) as u8];
        for _ in 0..rng.index(40) {
            let op = rng.index(8) as u8;
            let body = match op {
                0 | 1 => {
                    let i = rng.index(corpus.len());
                    mutate(&mut rng, &corpus[i])
                }
                2 | 3 => {
                    let fields: [&[u8]; 4] = [
                        b"5:nodes26:abcdefghij0123456789\x0a\x00\x00\x07\x1a\xe1",
                        b"5:token3:tok6:valuesl6:\x0a\x00\x00\x08\x00\x50e",
                        b"6:nodes638:abcdefghij0123456789\xfd\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x09\x00\x50",
                        b"",
                    ];
                    let i = rng.index(4);
                    mutate(&mut rng, fields[i])
                }
                5 => vec![rng.index(256) as u8, rng.index(256) as u8],
                _ => {
                    let mut b = vec![0u8; rng.index(24)];
                    rng.fill(&mut b);
                    b
                }
            };
            let body: Vec<u8> = body.into_iter().take(255).collect();
            script.push(op);
            script.push(body.len() as u8);
            script.extend_from_slice(&body);
        }
        fuzz::run_script(&script);
    }
}

#[test]
fn a_lookup_with_nowhere_to_go_ends_at_once() {
    let now = Time::from_secs(1);
    let mut d = Dht::new(cfg(), 12, now);
    let ih = InfoHash::from_bytes([1; 20]);
    let id = d.get_peers(ih, Some(6881), now);
    assert_eq!(
        d.poll_event(),
        Some(DhtEvent::LookupDone {
            lookup: id,
            info_hash: ih,
            responded: 0,
            announced: 0
        })
    );
    assert_eq!(d.stats().lookups_active, 0);
    assert_eq!(d.stats().lookups_total, 1);
}

/// Three nodes by hand: a lookup through a bootstrap node reaches the node that stores the
/// peer, reports it, and announces to the nodes that gave tokens.
#[test]
fn a_lookup_through_a_bootstrap_node_finds_and_announces() {
    let now = Time::from_secs(1);
    let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
    let b: SocketAddr = "10.0.0.2:2".parse().unwrap();
    let c: SocketAddr = "10.0.0.3:3".parse().unwrap();
    let mut nodes = [
        (
            a,
            Dht::new(
                DhtConfig {
                    bootstrap: vec![b],
                    ipv6: false,
                    trace_lookups: true,
                    ..cfg()
                },
                1,
                now,
            ),
        ),
        (
            b,
            Dht::new(
                DhtConfig {
                    bootstrap: vec![c],
                    ipv6: false,
                    ..cfg()
                },
                2,
                now,
            ),
        ),
        (
            c,
            Dht::new(
                DhtConfig {
                    ipv6: false,
                    ..cfg()
                },
                3,
                now,
            ),
        ),
    ];
    let ih = InfoHash::from_bytes([0xab; 20]);
    let peer: SocketAddr = "10.0.0.3:6881".parse().unwrap();
    // Deliver everything until quiet, with time moving for the timers.
    let run = |nodes: &mut [(SocketAddr, Dht); 3], mut t: Time| {
        for _ in 0..50 {
            let mut moved = false;
            for i in 0..3 {
                nodes[i].1.handle_timeout(t);
                while let Some(tx) = nodes[i].1.poll_transmit() {
                    let from = nodes[i].0;
                    if let Some(j) = nodes.iter().position(|(addr, _)| *addr == tx.to) {
                        nodes[j].1.handle_datagram(from, &tx.payload, t);
                        moved = true;
                    }
                }
            }
            if !moved {
                t += Duration::from_secs(5);
            }
        }
        t
    };
    let t = run(&mut nodes, now);
    assert!(nodes.iter().all(|(_, d)| d.stats().nodes_v4 >= 1));
    // C announces itself; then A looks the hash up.
    nodes[2].1.get_peers(ih, Some(6881), t);
    let t = run(&mut nodes, t);
    let stored: usize = nodes.iter().map(|(_, d)| d.stats().stored_peers).sum();
    assert!(stored >= 1, "C's announce stored nowhere");
    while nodes[0].1.poll_event().is_some() {}
    let id = nodes[0].1.get_peers(ih, None, t);
    run(&mut nodes, t);
    let events: Vec<DhtEvent> = std::iter::from_fn(|| nodes[0].1.poll_event()).collect();
    assert!(events.iter().any(|e| matches!(e, DhtEvent::Peers { lookup, peers, .. } if *lookup == id && peers.contains(&peer))), "{events:?}");
    assert!(events
        .iter()
        .any(|e| matches!(e, DhtEvent::Hop { lookup, .. } if *lookup == id)));
    assert!(
        matches!(events.last(), Some(DhtEvent::LookupDone { lookup, responded, .. }) if *lookup == id && *responded >= 2)
    );
}

#[test]
fn find_node_gives_the_families_asked_for() {
    let now = Time::from_secs(1);
    let mut d = Dht::new(cfg(), 13, now);
    // One node in each table.
    for (node, nid) in [("10.0.5.1:1", 1u8), ("[fd00::5]:1", 2)] {
        let node: SocketAddr = node.parse().unwrap();
        d.add_node(node, now);
        for t in drain(&mut d) {
            let q = krpc::decode(&t.payload).unwrap();
            let pong =
                krpc::encode_response(&q.tid, &NodeId([nid; 20]), &Response::default(), None);
            d.handle_datagram(t.to, &pong, now);
        }
    }
    let ask = |d: &mut Dht, from: SocketAddr, want: Option<krpc::Want>| {
        let q = Query::FindNode {
            target: NodeId([0; 20]),
            want,
        };
        match reply_to(d, from, &q, now).unwrap().body {
            Body::Response { response, .. } => (response.nodes.len(), response.nodes6.len()),
            other => panic!("{other:?}"),
        }
    };
    let v6: SocketAddr = "[fd00::9]:9".parse().unwrap();
    assert_eq!(ask(&mut d, asker(), None), (1, 0));
    assert_eq!(ask(&mut d, v6, None), (0, 1));
    let both = Some(krpc::Want { n4: true, n6: true });
    assert_eq!(ask(&mut d, asker(), both), (1, 1));
    let only6 = Some(krpc::Want {
        n4: false,
        n6: true,
    });
    assert_eq!(ask(&mut d, asker(), only6), (0, 1));
}

#[test]
fn read_only_nodes_are_answered_but_not_pinged_back() {
    let now = Time::from_secs(1);
    let mut d = Dht::new(cfg(), 14, now);
    let bytes = krpc::encode_query(b"ro", &NodeId([0x55; 20]), &Query::Ping, true);
    d.handle_datagram(asker(), &bytes, now);
    let out = drain(&mut d);
    assert_eq!(out.len(), 1, "the answer only");
    assert!(matches!(
        krpc::decode(&out[0].payload).unwrap().body,
        Body::Response { .. }
    ));
    assert_eq!(d.stats().outstanding_queries, 0);
    // The same node without `ro` is worth a ping.
    let bytes = krpc::encode_query(b"rw", &NodeId([0x55; 20]), &Query::Ping, false);
    d.handle_datagram(asker(), &bytes, now);
    assert_eq!(drain(&mut d).len(), 2);
    assert_eq!(d.stats().outstanding_queries, 1);
}
