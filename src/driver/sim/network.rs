//! Simulated TCP links between nodes: connection set-up, fair sharing of each node's uplink,
//! latency, downlink serialisation, loss as delay, and closes. The uplinks and downlinks are
//! shared with the datagrams of uTP links ([`super::utp`]): both queue on the same FIFO.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use ::core::net::SocketAddr;

use bytes::Bytes;

use super::{Role, SimConfig, SimEvent, Simulation};
use crate::core::api::ConnId;
use crate::core::{Rng, Time};

/// How much one connection may put on the wire before the uplink moves to the next one:
/// a typical TCP send window on a LAN.
const WINDOW: usize = 64 * 1024;

/// Linux's minimum retransmission time-out: what a lost window costs.
const MIN_RTO: Duration = Duration::from_millis(200);

/// Network events.
#[derive(Debug)]
pub(crate) enum NetEvent {
    /// An outgoing connection of `node` came up.
    Connected { node: usize, conn: ConnId },
    /// The other end closed (or refused) `node`'s connection.
    Closed { node: usize, conn: ConnId },
    /// Bytes arrive at `node` on `conn`.
    Deliver {
        node: usize,
        conn: ConnId,
        link: u64,
        data: Vec<Bytes>,
    },
    /// `node`'s uplink finished sending a window.
    UplinkFree { node: usize },
    /// A uTP datagram reaches `node`'s downlink, having queued `waited` on the way.
    Arrive {
        node: usize,
        from: SocketAddr,
        payload: Vec<u8>,
        waited: Duration,
    },
    /// A uTP datagram is delivered to `node`.
    Datagram {
        node: usize,
        from: SocketAddr,
        payload: Vec<u8>,
        waited: Duration,
    },
}

#[derive(Debug)]
struct Link {
    id: u64,
    ends: [(usize, Option<ConnId>); 2],
    /// Per direction, when the last window is delivered (TCP keeps order).
    last_delivery: [Time; 2],
}

#[derive(Debug, Default)]
struct Uplink {
    /// When everything queued on the uplink (TCP windows and datagrams) has left.
    busy_until: Time,
    /// When the last TCP window has left: the next one goes only then, behind whatever
    /// datagrams queued meanwhile.
    tcp_until: Time,
    free_scheduled: bool,
    queue: VecDeque<ConnId>,
    queued: BTreeSet<ConnId>,
}

/// All links and per-node link state.
pub(crate) struct Network {
    links: BTreeMap<u64, Link>,
    next_link: u64,
    by_conn: BTreeMap<(usize, ConnId), (u64, usize)>,
    by_addr: BTreeMap<SocketAddr, usize>,
    online: Vec<bool>,
    uplinks: Vec<Uplink>,
    downlink_busy: Vec<Time>,
    rng: Rng,
    latency: Duration,
    up_rate: u64,
    down_rate: u64,
    loss: f64,
    /// uTP datagram counters.
    pub(crate) datagrams: super::utp::Datagrams,
}

impl Network {
    pub(crate) fn new(config: &SimConfig, nodes: usize) -> Network {
        Network {
            links: BTreeMap::new(),
            next_link: 0,
            by_conn: BTreeMap::new(),
            by_addr: BTreeMap::new(),
            online: vec![false; nodes],
            uplinks: (0..nodes).map(|_| Uplink::default()).collect(),
            downlink_busy: vec![Time::ZERO; nodes],
            rng: Rng::new(config.seed ^ 0x4E45_5457_4F52_4B00),
            latency: config.latency,
            up_rate: config.up_rate.max(1),
            down_rate: config.down_rate.max(1),
            loss: config.loss,
            datagrams: Default::default(),
        }
    }

    /// Learns every node's address.
    pub(crate) fn set_addrs(&mut self, addrs: impl Iterator<Item = SocketAddr>) {
        self.by_addr = addrs.enumerate().map(|(i, a)| (a, i)).collect();
    }

    /// The node at `addr`.
    pub(crate) fn node_at(&self, addr: SocketAddr) -> Option<usize> {
        self.by_addr.get(&addr).copied()
    }

    pub(crate) fn uplink_tail(&self, node: usize) -> Time {
        self.uplinks[node].busy_until
    }

    pub(crate) fn set_uplink_tail(&mut self, node: usize, at: Time) {
        self.uplinks[node].busy_until = at;
    }

    pub(crate) fn downlink_tail(&self, node: usize) -> Time {
        self.downlink_busy[node]
    }

    pub(crate) fn set_downlink_tail(&mut self, node: usize, at: Time) {
        self.downlink_busy[node] = at;
    }

    pub(crate) fn up_rate(&self) -> u64 {
        self.up_rate
    }

    pub(crate) fn down_rate(&self) -> u64 {
        self.down_rate
    }

    pub(crate) fn latency(&self) -> Duration {
        self.latency
    }

    /// Draws whether a datagram is lost.
    pub(crate) fn lose(&mut self) -> bool {
        self.loss > 0.0 && self.rng.chance(self.loss)
    }

    pub(crate) fn set_online(&mut self, node: usize, online: bool) {
        self.online[node] = online;
    }

    fn transfer_time(bytes: usize, rate: u64) -> Duration {
        Duration::from_micros((bytes as u64).saturating_mul(1_000_000) / rate)
    }

    /// Removes every link of `node` (it left the swarm); the other ends learn after the latency.
    pub(crate) fn drop_node(
        &mut self,
        node: usize,
        now: Time,
        queue: &mut super::Queue,
    ) -> Vec<usize> {
        let ids: Vec<u64> = self
            .links
            .iter()
            .filter(|(_, l)| l.ends.iter().any(|e| e.0 == node))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Some(link) = self.links.remove(&id) else {
                continue;
            };
            for (side, (n, conn)) in link.ends.iter().enumerate() {
                if let Some(c) = conn {
                    self.by_conn.remove(&(*n, *c));
                }
                let _ = side;
                if *n != node {
                    if let Some(c) = conn {
                        queue.push(
                            now + self.latency,
                            SimEvent::Net(NetEvent::Closed { node: *n, conn: *c }),
                        );
                    }
                }
            }
        }
        let up = &mut self.uplinks[node];
        up.queue.clear();
        up.queued.clear();
        Vec::new()
    }
}

/// Node `i` dials `addr` for `conn`.
pub(crate) fn connect(sim: &mut Simulation, i: usize, conn: ConnId, addr: SocketAddr) {
    let now = sim.now;
    let rtt = sim.net.latency * 2;
    let target = sim
        .net
        .by_addr
        .get(&addr)
        .copied()
        .filter(|&j| sim.net.online[j] && j != i && sim.nodes[j].transport.tcp());
    let Some(j) = target else {
        sim.queue
            .push(now + rtt, SimEvent::Net(NetEvent::Closed { node: i, conn }));
        return;
    };
    let src = sim.nodes[i].addr;
    let far = if sim.nodes[j].role == Role::Silent {
        None
    } else {
        match sim.nodes[j]
            .session
            .as_mut()
            .and_then(|s| s.accept(src, now))
        {
            Some(c) => Some(c),
            None => {
                sim.queue
                    .push(now + rtt, SimEvent::Net(NetEvent::Closed { node: i, conn }));
                return;
            }
        }
    };
    let id = sim.net.next_link;
    sim.net.next_link += 1;
    sim.net.links.insert(
        id,
        Link {
            id,
            ends: [(i, Some(conn)), (j, far)],
            last_delivery: [Time::ZERO; 2],
        },
    );
    sim.net.by_conn.insert((i, conn), (id, 0));
    if let Some(c) = far {
        sim.net.by_conn.insert((j, c), (id, 1));
    }
    sim.queue.push(
        now + rtt,
        SimEvent::Net(NetEvent::Connected { node: i, conn }),
    );
}

/// Node `i` has bytes to send on `conn`.
pub(crate) fn want_send(sim: &mut Simulation, i: usize, conn: ConnId) {
    let up = &mut sim.net.uplinks[i];
    if up.queued.insert(conn) {
        up.queue.push_back(conn);
    }
    pump(sim, i);
}

/// Puts the next window on node `i`'s uplink if it is idle.
fn pump(sim: &mut Simulation, i: usize) {
    let now = sim.now;
    if sim.net.uplinks[i].tcp_until > now {
        if !sim.net.uplinks[i].free_scheduled {
            sim.net.uplinks[i].free_scheduled = true;
            let at = sim.net.uplinks[i].tcp_until;
            sim.queue
                .push(at, SimEvent::Net(NetEvent::UplinkFree { node: i }));
        }
        return;
    }
    while let Some(conn) = sim.net.uplinks[i].queue.pop_front() {
        sim.net.uplinks[i].queued.remove(&conn);
        let Some(session) = sim.nodes[i].session.as_mut() else {
            return;
        };
        let data = session.take_send(conn, WINDOW);
        if data.is_empty() {
            continue;
        }
        let bytes: usize = data.iter().map(Bytes::len).sum();
        // The window is on the wire: the session no longer holds it (what a kernel taking
        // a send would report).
        session.handle_sent(conn, bytes, now);
        // More may remain: the connection goes to the back of the line.
        let up = &mut sim.net.uplinks[i];
        if up.queued.insert(conn) {
            up.queue.push_back(conn);
        }
        // Behind any datagrams queued (with TCP alone, the uplink is idle now).
        let end = up.busy_until.max(now) + Network::transfer_time(bytes, sim.net.up_rate);
        up.busy_until = end;
        up.tcp_until = end;
        up.free_scheduled = true;
        sim.queue
            .push(end, SimEvent::Net(NetEvent::UplinkFree { node: i }));
        let Some(&(link_id, side)) = sim.net.by_conn.get(&(i, conn)) else {
            return;
        };
        let lost = sim.net.loss > 0.0 && sim.net.rng.chance(sim.net.loss);
        let net = &mut sim.net;
        let Some(link) = net.links.get_mut(&link_id) else {
            return;
        };
        let (j, far) = link.ends[1 - side];
        let Some(far) = far else { return }; // a silent peer swallows everything
        let mut arrival = end + net.latency;
        if lost {
            arrival += MIN_RTO.max(net.latency * 4);
        }
        arrival = arrival.max(link.last_delivery[side]);
        let deliver_at =
            arrival.max(net.downlink_busy[j]) + Network::transfer_time(bytes, net.down_rate);
        net.downlink_busy[j] = deliver_at;
        link.last_delivery[side] = deliver_at;
        let id = link.id;
        sim.queue.push(
            deliver_at,
            SimEvent::Net(NetEvent::Deliver {
                node: j,
                conn: far,
                link: id,
                data,
            }),
        );
        return;
    }
}

/// Node `i` closed `conn`; the other end learns after the latency.
pub(crate) fn close(sim: &mut Simulation, i: usize, conn: ConnId) {
    let Some((link_id, side)) = sim.net.by_conn.remove(&(i, conn)) else {
        return;
    };
    let up = &mut sim.net.uplinks[i];
    if up.queued.remove(&conn) {
        up.queue.retain(|c| *c != conn);
    }
    let Some(link) = sim.net.links.remove(&link_id) else {
        return;
    };
    let (j, far) = link.ends[1 - side];
    if let Some(far) = far {
        sim.net.by_conn.remove(&(j, far));
        let at = sim.now + sim.net.latency;
        sim.queue
            .push(at, SimEvent::Net(NetEvent::Closed { node: j, conn: far }));
    }
}

/// Handles a network event; returns the nodes whose sessions took input.
pub(crate) fn handle(sim: &mut Simulation, ev: NetEvent) -> Vec<usize> {
    let now = sim.now;
    match ev {
        NetEvent::Connected { node, conn } => {
            if !sim.net.by_conn.contains_key(&(node, conn)) {
                return Vec::new();
            }
            if let Some(s) = sim.nodes[node].session.as_mut() {
                s.handle_connected(conn, now);
            }
            vec![node]
        }
        NetEvent::Closed { node, conn } => {
            sim.net.by_conn.remove(&(node, conn));
            if let Some(s) = sim.nodes[node].session.as_mut() {
                s.handle_closed(conn, now);
            }
            vec![node]
        }
        NetEvent::Deliver {
            node,
            conn,
            link,
            data,
        } => {
            if !sim.net.links.contains_key(&link) {
                return Vec::new();
            }
            if let Some(s) = sim.nodes[node].session.as_mut() {
                for chunk in &data {
                    s.handle_recv(conn, chunk, now);
                }
            }
            vec![node]
        }
        NetEvent::UplinkFree { node } => {
            sim.net.uplinks[node].free_scheduled = false;
            pump(sim, node);
            vec![node]
        }
        NetEvent::Arrive {
            node,
            from,
            payload,
            waited,
        } => {
            super::utp::arrive(sim, node, from, payload, waited);
            Vec::new()
        }
        NetEvent::Datagram {
            node,
            from,
            payload,
            waited,
        } => {
            if super::utp::deliver(sim, node, from, &payload, waited) {
                vec![node]
            } else {
                Vec::new()
            }
        }
    }
}
