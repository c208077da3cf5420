//! A seeded simulation of a DHT of more than a thousand `Dht` nodes on an in-memory network
//! with a virtual clock, datagram loss and churn: lookups converge in a logarithmic number of
//! hops and find the nodes a brute-force oracle says are closest, announced peers are found by
//! other nodes, and hostile senders (wrong tokens, garbage, floods) are bounded.
//!
//! Everything follows from the seed: the network's choices (latency, loss, churn, targets)
//! come from one `Rng`, and each node's from its own seed.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ringtorrent::core::{InfoHash, Rng, Time};
use ringtorrent::dht::krpc::{self, Body, Query};
use ringtorrent::dht::{server, Dht, DhtConfig, DhtEvent, LookupId, NodeId};

/// One simulated node.
struct SimNode {
    dht: Dht,
    addr: SocketAddr,
    alive: bool,
    events: Vec<DhtEvent>,
}

/// Something that happens at a virtual time.
enum Action {
    Deliver {
        to: SocketAddr,
        from: SocketAddr,
        payload: Vec<u8>,
    },
    Timer(usize),
}

struct Net {
    nodes: Vec<SimNode>,
    by_addr: BTreeMap<SocketAddr, usize>,
    queue: BinaryHeap<Reverse<(Time, u64)>>,
    actions: BTreeMap<u64, Action>,
    seq: u64,
    now: Time,
    rng: Rng,
    loss: f64,
    bootstrap: Vec<SocketAddr>,
    /// Datagrams sent to addresses outside the network (the test's hostile senders).
    outside: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    delivered: u64,
    /// An IPv6 network (BEP 32) instead of an IPv4 one.
    v6: bool,
}

fn node_addr(i: usize, v6: bool) -> SocketAddr {
    if v6 {
        let ip = std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, (i >> 16) as u16, i as u16);
        SocketAddr::new(IpAddr::V6(ip), 6881)
    } else {
        SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 6881))
    }
}

fn config(bootstrap: Vec<SocketAddr>, v6: bool) -> DhtConfig {
    DhtConfig {
        bootstrap,
        ipv4: !v6,
        ipv6: v6,
        allow_private: true,
        trace_lookups: true,
        ..DhtConfig::default()
    }
}

impl Net {
    fn new(seed: u64, loss: f64) -> Net {
        Net {
            nodes: Vec::new(),
            by_addr: BTreeMap::new(),
            queue: BinaryHeap::new(),
            actions: BTreeMap::new(),
            seq: 0,
            now: Time::from_secs(1),
            rng: Rng::new(seed),
            loss,
            bootstrap: Vec::new(),
            outside: Vec::new(),
            delivered: 0,
            v6: false,
        }
    }

    fn schedule(&mut self, at: Time, action: Action) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.actions.insert(self.seq, action);
    }

    /// A node joins now; the first few are the bootstrap nodes of everyone after them.
    fn join(&mut self) -> usize {
        let i = self.nodes.len();
        let addr = node_addr(i, self.v6);
        let boot: Vec<SocketAddr> = self
            .bootstrap
            .iter()
            .copied()
            .filter(|a| *a != addr)
            .collect();
        let seed = self.rng.next_u64();
        let dht = Dht::new(config(boot, self.v6), seed, self.now);
        self.nodes.push(SimNode {
            dht,
            addr,
            alive: true,
            events: Vec::new(),
        });
        self.by_addr.insert(addr, i);
        self.after_input(i);
        i
    }

    /// Drains a node's outputs into the network and schedules its timer.
    fn after_input(&mut self, i: usize) {
        let mut out = Vec::new();
        let node = &mut self.nodes[i];
        while let Some(t) = node.dht.poll_transmit() {
            out.push(t);
        }
        while let Some(e) = node.dht.poll_event() {
            node.events.push(e);
        }
        let from = node.addr;
        let timer = node.dht.poll_timeout();
        for t in out {
            self.send(from, t.to, t.payload);
        }
        if let Some(at) = timer {
            assert!(at >= self.now || at + Duration::from_secs(1) >= self.now);
            self.schedule(at.max(self.now), Action::Timer(i));
        }
    }

    fn send(&mut self, from: SocketAddr, to: SocketAddr, payload: Vec<u8>) {
        if self.rng.chance(self.loss) {
            return;
        }
        if !self.by_addr.contains_key(&to) {
            self.outside.push((from, to, payload));
            return;
        }
        let latency = Duration::from_millis(5 + self.rng.below(45));
        let at = self.now + latency;
        self.schedule(at, Action::Deliver { to, from, payload });
    }

    /// Runs the network until `until`.
    fn run_until(&mut self, until: Time) {
        while let Some(Reverse((at, seq))) = self.queue.peek().copied() {
            if at > until {
                break;
            }
            self.queue.pop();
            self.now = at;
            let Some(action) = self.actions.remove(&seq) else {
                continue;
            };
            match action {
                Action::Deliver { to, from, payload } => {
                    let Some(&i) = self.by_addr.get(&to) else {
                        continue;
                    };
                    if !self.nodes[i].alive {
                        continue;
                    }
                    self.delivered += 1;
                    self.nodes[i].dht.handle_datagram(from, &payload, at);
                    self.after_input(i);
                }
                Action::Timer(i) => {
                    let node = &mut self.nodes[i];
                    if !node.alive || node.dht.poll_timeout().is_none_or(|t| t > at) {
                        continue;
                    }
                    node.dht.handle_timeout(at);
                    self.after_input(i);
                }
            }
        }
        self.now = until;
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    fn alive(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].alive)
            .collect()
    }

    /// The `n` live nodes closest to `target`, by brute force.
    fn oracle(&self, target: &[u8; 20], n: usize) -> Vec<usize> {
        let mut all = self.alive();
        all.sort_by_cached_key(|&i| self.nodes[i].dht.id().distance(target));
        all.truncate(n);
        all
    }

    /// Asks node `i` directly (outside the network, no loss) for `info_hash`'s peers.
    fn stored_at(&mut self, i: usize, info_hash: InfoHash) -> Vec<SocketAddr> {
        let q = Query::GetPeers {
            info_hash,
            want: None,
        };
        let bytes = krpc::encode_query(b"or", &NodeId([1; 20]), &q, true);
        // A fresh asker address each time, so the per-address limit never applies.
        self.seq += 1;
        let asker = if self.v6 {
            let ip = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, (self.seq % 250) as u16);
            SocketAddr::new(IpAddr::V6(ip), 1)
        } else {
            SocketAddr::from(([192, 0, 2, (self.seq % 250) as u8], 1))
        };
        let node = &mut self.nodes[i];
        node.dht.handle_datagram(asker, &bytes, self.now);
        let mut values = Vec::new();
        let mut rest = Vec::new();
        while let Some(t) = node.dht.poll_transmit() {
            if t.to == asker {
                if let Ok(krpc::Message {
                    body: Body::Response { response, .. },
                    ..
                }) = krpc::decode(&t.payload)
                {
                    values = response.values;
                }
            } else {
                rest.push(t);
            }
        }
        let from = self.nodes[i].addr;
        for t in rest {
            self.send(from, t.to, t.payload);
        }
        values
    }

    /// Runs until node `i`'s lookup ends; its events.
    fn wait_lookup(&mut self, i: usize, id: LookupId) -> Vec<DhtEvent> {
        for _ in 0..600 {
            let done = self.nodes[i]
                .events
                .iter()
                .any(|e| matches!(e, DhtEvent::LookupDone { lookup, .. } if *lookup == id));
            if done {
                let (mine, others): (Vec<DhtEvent>, Vec<DhtEvent>) =
                    std::mem::take(&mut self.nodes[i].events)
                        .into_iter()
                        .partition(|e| event_lookup(e) == id);
                self.nodes[i].events = others;
                return mine;
            }
            self.run_for(Duration::from_millis(100));
        }
        panic!("lookup {id:?} of node {i} did not end in 60 s");
    }
}

fn event_lookup(e: &DhtEvent) -> LookupId {
    match e {
        DhtEvent::Peers { lookup, .. }
        | DhtEvent::Hop { lookup, .. }
        | DhtEvent::LookupDone { lookup, .. } => *lookup,
    }
}

fn is_response(payload: &[u8]) -> bool {
    matches!(
        krpc::decode(payload),
        Ok(krpc::Message {
            body: Body::Response { .. },
            ..
        })
    )
}

fn random_hash(rng: &mut Rng) -> InfoHash {
    let mut b = [0u8; 20];
    rng.fill(&mut b);
    InfoHash::from_bytes(b)
}

/// Hops of a lookup: the largest hop number of a node that answered.
fn hops(events: &[DhtEvent]) -> u32 {
    events
        .iter()
        .filter_map(|e| match e {
            DhtEvent::Hop { hop, .. } => Some(*hop),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// Builds a network of `n` nodes joining over time from 3 bootstrap nodes, lets it settle,
/// then replaces `churn` of them (leavers go silent, newcomers bootstrap).
fn build(seed: u64, n: usize, loss: f64, churn: f64, v6: bool) -> Net {
    let mut net = Net::new(seed, loss);
    net.v6 = v6;
    net.bootstrap = (0..3).map(|i| node_addr(i, v6)).collect();
    for _ in 0..n {
        net.join();
        net.run_for(Duration::from_millis(20));
    }
    net.run_for(Duration::from_secs(30));
    let leaving = (n as f64 * churn) as usize;
    for _ in 0..leaving {
        // Bootstrap nodes stay (newcomers need them).
        let i = 3 + net.rng.index(n - 3);
        net.nodes[i].alive = false;
        net.join();
        net.run_for(Duration::from_millis(20));
    }
    net.run_for(Duration::from_secs(30));
    net
}

#[derive(Debug, PartialEq)]
struct Summary {
    lookups: usize,
    mean_hops: f64,
    max_hops: u32,
    /// Of the oracle's 8 closest live nodes to each announced hash, how many stored it.
    mean_closest_found: f64,
    lookups_with_6_of_8: usize,
    all_8_found: usize,
    peers_found: usize,
    delivered: u64,
}

/// `lookups` nodes announce a random hash each; other nodes then look each hash up.
fn lookups_and_announces(net: &mut Net, lookups: usize) -> Summary {
    let mut hop_counts = Vec::new();
    let mut closest_found = Vec::new();
    let mut peers_found = 0;
    for _ in 0..lookups {
        let alive = net.alive();
        let a = alive[net.rng.index(alive.len())];
        let b = alive[net.rng.index(alive.len())];
        let hash = random_hash(&mut net.rng);
        let now = net.now;
        let id = net.nodes[a].dht.get_peers(hash, Some(0), now);
        net.after_input(a);
        let events = net.wait_lookup(a, id);
        hop_counts.push(hops(&events));
        match events.last() {
            Some(DhtEvent::LookupDone {
                responded,
                announced,
                ..
            }) => {
                assert!(*responded >= 8, "{events:?}");
                assert!(*announced >= 6, "announced to {announced}");
            }
            other => panic!("{other:?}"),
        }
        // Let the announces arrive.
        net.run_for(Duration::from_secs(2));
        let want = net.nodes[a].addr;
        let oracle = net.oracle(hash.as_bytes(), 8);
        let found = oracle
            .iter()
            .filter(|&&i| net.stored_at(i, hash).contains(&want))
            .count();
        closest_found.push(found);
        // Another node finds the announcer.
        let now = net.now;
        let id = net.nodes[b].dht.get_peers(hash, None, now);
        net.after_input(b);
        let events = net.wait_lookup(b, id);
        hop_counts.push(hops(&events));
        let got: Vec<SocketAddr> = events
            .iter()
            .flat_map(|e| match e {
                DhtEvent::Peers {
                    peers, info_hash, ..
                } => {
                    assert_eq!(*info_hash, hash);
                    peers.clone()
                }
                _ => Vec::new(),
            })
            .collect();
        let mut dedup = got.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), got.len(), "peers repeated within a lookup");
        if got.contains(&want) {
            peers_found += 1;
        } else if std::env::var("SIM_DEBUG").is_ok() {
            let asked: Vec<SocketAddr> = events
                .iter()
                .filter_map(|e| match e {
                    DhtEvent::Hop { from, .. } => Some(*from),
                    _ => None,
                })
                .collect();
            let holders: Vec<(usize, bool, bool)> = oracle
                .iter()
                .map(|&i| {
                    (
                        i,
                        net.stored_at(i, hash).contains(&want),
                        asked.contains(&net.nodes[i].addr),
                    )
                })
                .collect();
            eprintln!(
                "missed: b={b} asked {} holders {holders:?} events {:?}",
                asked.len(),
                events
            );
        }
    }
    let total: u32 = hop_counts.iter().sum();
    Summary {
        lookups: hop_counts.len(),
        mean_hops: f64::from(total) / hop_counts.len() as f64,
        max_hops: hop_counts.iter().copied().max().unwrap_or(0),
        mean_closest_found: closest_found.iter().sum::<usize>() as f64 / lookups as f64,
        lookups_with_6_of_8: closest_found.iter().filter(|&&f| f >= 6).count(),
        all_8_found: closest_found.iter().filter(|&&f| f == 8).count(),
        peers_found,
        delivered: net.delivered,
    }
}

#[test]
fn a_thousand_nodes_with_loss_and_churn() {
    let n = 1000;
    let clock = std::time::Instant::now();
    let mut net = build(0x5eed, n, 0.05, 0.05, false);
    eprintln!("built in {:?}", clock.elapsed());
    let alive = net.alive();
    assert!(alive.len() >= n);
    // Tables filled.
    let sizes: Vec<usize> = alive
        .iter()
        .map(|&i| net.nodes[i].dht.stats().nodes_v4)
        .collect();
    let mean_size = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
    eprintln!("mean table size {mean_size}");
    assert!(mean_size >= 15.0, "mean table size {mean_size}");
    assert!(sizes.iter().all(|&s| s >= 8), "a node with under 8 nodes");

    let lookups = 40;
    let s = lookups_and_announces(&mut net, lookups);
    eprintln!("{s:?} after {:?}", clock.elapsed());
    let log2n = (n as f64).log2();
    assert!(s.mean_hops <= log2n / 2.0 + 2.0, "{s:?}");
    assert!(f64::from(s.max_hops) <= log2n, "{s:?}");
    // With 5% loss each way a query fails ~10% of the time and there are no retransmits, so
    // about 8 x 0.9 x 0.95 = 6.8 of the closest 8 get the announce.
    assert!(s.mean_closest_found >= 6.0, "{s:?}");
    assert!(s.lookups_with_6_of_8 * 4 >= lookups * 3, "{s:?}");
    assert!(s.peers_found * 10 >= lookups * 9, "{s:?}");

    // Without loss (churned nodes still time out), the announce reaches exactly the oracle's
    // closest 8 in most lookups.
    net.loss = 0.0;
    let lookups = 20;
    let s = lookups_and_announces(&mut net, lookups);
    eprintln!("lossless: {s:?} after {:?}", clock.elapsed());
    assert!(s.mean_hops <= log2n / 2.0 + 2.0, "{s:?}");
    assert!(s.mean_closest_found >= 7.5, "{s:?}");
    assert!(s.all_8_found * 10 >= lookups * 8, "{s:?}");
    assert_eq!(s.peers_found, lookups, "{s:?}");

    hostile(&mut net);
    eprintln!("hostile done after {:?}", clock.elapsed());

    // Sudden churn: a tenth of the nodes vanish, and lookups start at once, while every
    // table still holds them (their queries time out; lookups go round them).
    net.loss = 0.05;
    for _ in 0..n / 10 {
        let alive = net.alive();
        let i = alive[3 + net.rng.index(alive.len() - 3)];
        net.nodes[i].alive = false;
    }
    let lookups = 10;
    let s = lookups_and_announces(&mut net, lookups);
    eprintln!("after sudden churn: {s:?} after {:?}", clock.elapsed());
    assert!(s.mean_hops <= log2n / 2.0 + 2.0, "{s:?}");
    assert!(s.mean_closest_found >= 5.5, "{s:?}");
    assert!(s.peers_found * 10 >= lookups * 9, "{s:?}");
}

/// Wrong tokens, garbage and floods against the built network.
fn hostile(net: &mut Net) {
    let evil: SocketAddr = "203.0.113.66:6666".parse().unwrap();
    let alive = net.alive();
    let stored_before: usize = alive
        .iter()
        .map(|&i| net.nodes[i].dht.stats().stored_peers)
        .sum();

    // Announces with made-up tokens (and with a token for another address) store nothing.
    let hash = random_hash(&mut net.rng);
    let honest = net.nodes[alive[0]].addr;
    for (k, &i) in alive.iter().take(200).enumerate() {
        let token = if k % 2 == 0 {
            b"forged!!".to_vec()
        } else {
            // A real token of this node, given to another address.
            let q = Query::GetPeers {
                info_hash: hash,
                want: None,
            };
            let bytes = krpc::encode_query(b"tk", &NodeId([9; 20]), &q, false);
            net.nodes[i].dht.handle_datagram(honest, &bytes, net.now);
            let mut token = Vec::new();
            while let Some(t) = net.nodes[i].dht.poll_transmit() {
                if let Ok(krpc::Message {
                    body: Body::Response { response, .. },
                    ..
                }) = krpc::decode(&t.payload)
                {
                    if t.to == honest {
                        token = response.token.unwrap_or_default();
                    }
                }
            }
            token
        };
        let q = Query::AnnouncePeer {
            info_hash: hash,
            port: 1,
            implied_port: false,
            token,
        };
        let bytes = krpc::encode_query(b"an", &NodeId([6; 20]), &q, false);
        net.nodes[i].dht.handle_datagram(evil, &bytes, net.now);
        net.after_input(i);
    }
    let stored_after: usize = alive
        .iter()
        .map(|&i| net.nodes[i].dht.stats().stored_peers)
        .sum();
    assert_eq!(stored_before, stored_after, "a forged announce was stored");

    // Garbage: random bytes and mutated valid messages, to random nodes.
    let invalid_before: u64 = alive
        .iter()
        .map(|&i| net.nodes[i].dht.stats().invalid_messages)
        .sum();
    let valid = krpc::encode_query(
        b"gg",
        &NodeId([3; 20]),
        &Query::GetPeers {
            info_hash: hash,
            want: None,
        },
        false,
    );
    let mut garbage = 0u64;
    for k in 0..5000 {
        let i = alive[net.rng.index(alive.len())];
        let mut msg = if k % 2 == 0 {
            let len = 1 + net.rng.index(300);
            let mut m = vec![0u8; len];
            net.rng.fill(&mut m);
            m[0] = b'd';
            m
        } else {
            let mut m = valid.clone();
            let cut = net.rng.index(m.len());
            m.truncate(cut.max(1));
            m
        };
        if let Some(b) = msg.get_mut(1) {
            if k % 7 == 0 {
                *b = b'x';
            }
        }
        garbage += 1;
        net.nodes[i].dht.handle_datagram(evil, &msg, net.now);
        net.after_input(i);
    }
    let invalid_after: u64 = alive
        .iter()
        .map(|&i| net.nodes[i].dht.stats().invalid_messages)
        .sum();
    assert_eq!(
        invalid_after - invalid_before,
        garbage,
        "every piece of garbage counted"
    );
    net.outside.clear();

    // A flood from one address: answered at most at the per-address rate.
    let victim = alive[1];
    let ping = krpc::encode_query(b"fl", &NodeId([4; 20]), &Query::Ping, false);
    let start = net.now;
    let dropped_before = net.nodes[victim].dht.stats().queries_dropped;
    for k in 0..20_000u64 {
        let at = start + Duration::from_micros(k * 500); // 2000 per second, 10 s
        net.run_until(at);
        net.nodes[victim].dht.handle_datagram(evil, &ping, at);
        net.after_input(victim);
    }
    let answered = net
        .outside
        .iter()
        .filter(|(_, to, payload)| *to == evil && is_response(payload))
        .count();
    let bound = (server::PER_SOURCE_BURST + server::PER_SOURCE_RATE * 10.0) as usize + 2;
    // Loss drops some answers before they are counted here, never adds any.
    assert!(
        answered <= bound,
        "answered {answered} of a flood, bound {bound}"
    );
    let stats = net.nodes[victim].dht.stats();
    assert!(stats.queries_dropped - dropped_before >= 20_000 - bound as u64);
    assert!(stats.outstanding_queries <= ringtorrent::dht::MAX_TRANSACTIONS);

    // A flood from many (spoofed) addresses: the global limit holds.
    net.outside.clear();
    let victim = alive[2];
    let limit = DhtConfig::default().max_queries_per_sec as usize;
    let start = net.now;
    for k in 0..20_000u64 {
        let at = start + Duration::from_micros(k * 500);
        net.run_until(at);
        let from = SocketAddr::new(IpAddr::from([198, 51, (k >> 8) as u8, k as u8]), 7);
        net.nodes[victim].dht.handle_datagram(from, &ping, at);
        net.after_input(victim);
    }
    let answered = net
        .outside
        .iter()
        .filter(|(from, to, payload)| {
            *from == net.nodes[victim].addr
                && to.ip().to_string().starts_with("198.51.")
                && is_response(payload)
        })
        .count();
    assert!(
        answered <= limit * 11,
        "answered {answered} of a spoofed flood"
    );
    assert!(
        answered >= limit * 8,
        "the limit should still let {limit}/s through, got {answered}"
    );
    let stats = net.nodes[victim].dht.stats();
    assert!(stats.outstanding_queries <= ringtorrent::dht::MAX_TRANSACTIONS);

    // The network still works.
    let s = lookups_and_announces(net, 5);
    assert!(s.peers_found >= 4, "{s:?}");
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let run = |seed| {
        let mut net = build(seed, 150, 0.05, 0.05, false);
        lookups_and_announces(&mut net, 5)
    };
    let a = run(42);
    assert_eq!(a, run(42));
    assert_ne!(a.delivered, run(43).delivered);
}

/// BEP 32: the same over IPv6 (nodes6, 18-byte values), smaller.
#[test]
fn an_ipv6_dht() {
    let n = 300;
    let mut net = build(0x6666, n, 0.02, 0.05, true);
    let alive = net.alive();
    assert!(alive.iter().all(|&i| {
        let s = net.nodes[i].dht.stats();
        s.nodes_v6 >= 8 && s.nodes_v4 == 0
    }));
    let lookups = 10;
    let s = lookups_and_announces(&mut net, lookups);
    eprintln!("{s:?}");
    assert!(s.mean_hops <= (n as f64).log2() / 2.0 + 2.0, "{s:?}");
    assert!(s.mean_closest_found >= 6.5, "{s:?}");
    assert!(s.peers_found * 10 >= lookups * 9, "{s:?}");
}
