//! Iterative lookups (`find_node`, `get_peers`): the candidate list of one lookup, which nodes
//! to ask next, and when it has converged.
//!
//! A lookup keeps, per address family, the nodes it has heard of sorted by distance to the
//! target (nodes whose id is not known yet, such as bootstrap routers, sort first). It asks
//! up to `alpha` of the [`K`] closest live candidates at a time; each answer adds the closer
//! nodes it names; a query that times out drops that node from the window so the next one
//! moves in. The search ends when the `K` closest candidates that did not fail have all
//! answered. A candidate's states:
//!
//! ```text
//!   Fresh --asked--> InFlight --answered--> Responded (token kept for announce_peer)
//!                        \--timed out / error--> Failed
//! ```
//!
//! Hops: nodes from our own table are hop 0; a node first named by a hop-`h` node is hop
//! `h + 1`.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use crate::core::{InfoHash, Time};

use super::table::K;
use super::{LookupId, NodeId};

/// Candidates tracked per family per lookup (the closest are kept).
pub const MAX_CANDIDATES: usize = 64;
/// Distinct peers remembered per lookup for de-duplication (more are not reported).
pub const MAX_PEERS_PER_LOOKUP: usize = 2000;

/// What a lookup is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `get_peers`, with an announce of this port at the end when `Some` (0 = implied port).
    GetPeers {
        /// The torrent.
        info_hash: InfoHash,
        /// The port to announce.
        announce: Option<u16>,
    },
    /// `find_node` (bootstrap and bucket refresh; reports nothing).
    FindNode,
}

/// A candidate's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not asked yet.
    Fresh,
    /// Asked, no answer yet.
    InFlight,
    /// Answered.
    Responded,
    /// Timed out or answered with an error.
    Failed,
}

/// A node a lookup knows of.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// Its id, once known.
    pub id: Option<NodeId>,
    /// Its address.
    pub addr: SocketAddr,
    /// Its hop number.
    pub hop: u32,
    /// Where it stands.
    pub state: State,
    /// The write token it gave (get_peers).
    pub token: Option<Vec<u8>>,
    /// Its distance to the target, once its id is known (the sort key).
    pub distance: Option<[u8; 20]>,
}

/// The search in one family.
#[derive(Clone, Debug, Default)]
pub struct Search {
    /// Sorted by distance (unknown ids first).
    pub candidates: Vec<Candidate>,
    /// Converged (and announced, if asked to).
    pub done: bool,
}

impl Search {
    /// Adds a node unless it is already known (by address or id) or farther than everything
    /// kept once the list is full.
    pub fn add(&mut self, target: &[u8; 20], id: Option<NodeId>, addr: SocketAddr, hop: u32) {
        if self
            .candidates
            .iter()
            .any(|c| c.addr == addr || (id.is_some() && c.id == id))
        {
            return;
        }
        let key = id.map(|id| id.distance(target));
        let c = Candidate {
            id,
            addr,
            hop,
            state: State::Fresh,
            token: None,
            distance: key,
        };
        let pos = self.candidates.partition_point(|x| x.distance <= key);
        if pos >= MAX_CANDIDATES {
            return;
        }
        self.candidates.insert(pos, c);
        // Over the bound: drop the farthest candidate that is not waiting for an answer.
        while self.candidates.len() > MAX_CANDIDATES {
            match self
                .candidates
                .iter()
                .rposition(|c| c.state != State::InFlight)
            {
                Some(i) => {
                    self.candidates.remove(i);
                }
                None => break,
            }
        }
    }

    /// Indexes of the up to `K` closest candidates that have not failed.
    fn window(&self) -> impl Iterator<Item = usize> + '_ {
        self.candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| c.state != State::Failed)
            .take(K)
            .map(|(i, _)| i)
    }

    /// Candidates to ask now (marked in flight), keeping at most `alpha` in flight.
    pub fn next(&mut self, alpha: usize) -> Vec<usize> {
        let in_flight = self
            .candidates
            .iter()
            .filter(|c| c.state == State::InFlight)
            .count();
        let fresh: Vec<usize> = self
            .window()
            .filter(|&i| self.candidates.get(i).map(|c| c.state) == Some(State::Fresh))
            .take(alpha.saturating_sub(in_flight))
            .collect();
        for &i in &fresh {
            if let Some(c) = self.candidates.get_mut(i) {
                c.state = State::InFlight;
            }
        }
        fresh
    }

    /// Whether the `K` closest non-failed candidates have all answered.
    pub fn converged(&self) -> bool {
        !self.candidates.iter().any(|c| c.state == State::InFlight)
            && self
                .window()
                .all(|i| self.candidates.get(i).map(|c| c.state) == Some(State::Responded))
    }

    /// The candidate at `addr`.
    pub fn find(&mut self, addr: &SocketAddr) -> Option<&mut Candidate> {
        self.candidates.iter_mut().find(|c| c.addr == *addr)
    }

    /// Records an answer from `addr` (its id now known): returns its hop, or `None` when it
    /// is not a candidate waiting for an answer.
    pub fn responded(
        &mut self,
        target: &[u8; 20],
        addr: &SocketAddr,
        id: NodeId,
        token: Option<Vec<u8>>,
    ) -> Option<u32> {
        let pos = self
            .candidates
            .iter()
            .position(|c| c.addr == *addr && c.state == State::InFlight)?;
        let mut c = self.candidates.remove(pos);
        c.state = State::Responded;
        c.id = Some(id);
        c.token = token;
        c.distance = Some(id.distance(target));
        let hop = c.hop;
        // Its id may differ from what we were told: put it where it belongs.
        if self.candidates.iter().any(|x| x.id == Some(id)) {
            return Some(hop);
        }
        let key = c.distance;
        let at = self.candidates.partition_point(|x| x.distance <= key);
        self.candidates.insert(at, c);
        Some(hop)
    }

    /// A query to `addr` timed out or was refused.
    pub fn failed(&mut self, addr: &SocketAddr) {
        if let Some(c) = self.find(addr) {
            if c.state == State::InFlight {
                c.state = State::Failed;
            }
        }
    }

    /// The `K` closest nodes that answered with a token, for `announce_peer`.
    pub fn announce_targets(&self) -> Vec<(SocketAddr, Vec<u8>)> {
        self.candidates
            .iter()
            .filter(|c| c.state == State::Responded)
            .filter_map(|c| Some((c.addr, c.token.clone()?)))
            .take(K)
            .collect()
    }

    /// The `n` closest nodes that answered.
    pub fn closest_responded(&self, n: usize) -> Vec<(NodeId, SocketAddr)> {
        self.candidates
            .iter()
            .filter(|c| c.state == State::Responded)
            .filter_map(|c| Some((c.id?, c.addr)))
            .take(n)
            .collect()
    }
}

/// One lookup: a search per family, the peers seen so far, and its counters.
#[derive(Clone, Debug)]
pub struct Lookup {
    /// Its id.
    pub id: LookupId,
    /// The id sought (the info hash for `get_peers`).
    pub target: [u8; 20],
    /// What for.
    pub kind: Kind,
    /// Reports events (user lookups) or not (maintenance).
    pub report: bool,
    /// `[IPv4, IPv6]`; `None` where that family is not searched.
    pub searches: [Option<Search>; 2],
    /// Peers reported so far.
    pub peers_seen: BTreeSet<SocketAddr>,
    /// Nodes that answered.
    pub responded: usize,
    /// `announce_peer` queries sent.
    pub announced: usize,
    /// When it started.
    pub started: Time,
    /// Largest hop of a node that answered.
    pub max_hop: u32,
    /// A bootstrap lookup of this family (its end starts the refresh of every bucket).
    pub bootstrap_of: Option<usize>,
}

impl Lookup {
    /// A lookup with no candidates yet.
    pub fn new(id: LookupId, target: [u8; 20], kind: Kind, report: bool, now: Time) -> Lookup {
        Lookup {
            id,
            target,
            kind,
            report,
            searches: [None, None],
            peers_seen: BTreeSet::new(),
            responded: 0,
            announced: 0,
            started: now,
            max_hop: 0,
            bootstrap_of: None,
        }
    }

    /// Whether every family's search is done.
    pub fn done(&self) -> bool {
        self.searches.iter().flatten().all(|s| s.done)
    }

    /// Keeps the peers not reported before (within the bound).
    pub fn new_peers(&mut self, peers: &[SocketAddr]) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for p in peers {
            if self.peers_seen.len() >= MAX_PEERS_PER_LOOKUP {
                break;
            }
            if self.peers_seen.insert(*p) {
                out.push(*p);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Rng;

    fn addr(i: u32) -> SocketAddr {
        SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 1000))
    }

    #[test]
    fn asks_alpha_at_a_time_and_converges_on_the_closest() {
        let mut rng = Rng::new(9);
        let target = NodeId::random(&mut rng).0;
        let mut s = Search::default();
        // Two unknown (bootstrap) nodes come first.
        s.add(&target, None, addr(1), 0);
        s.add(&target, None, addr(2), 0);
        s.add(&target, None, addr(1), 0);
        assert_eq!(s.candidates.len(), 2);
        assert_eq!(s.next(3), vec![0, 1]);
        assert!(s.next(3).is_empty() || s.candidates.len() > 2);
        assert!(!s.converged());
        // The first answers with 20 nodes.
        let ids: Vec<NodeId> = (0..20).map(|_| NodeId::random(&mut rng)).collect();
        assert_eq!(
            s.responded(&target, &addr(1), ids[0], Some(b"t".to_vec())),
            Some(0)
        );
        for (i, id) in ids.iter().enumerate().skip(1) {
            s.add(&target, Some(*id), addr(100 + i as u32), 1);
        }
        // Duplicates by id are refused.
        s.add(&target, Some(ids[3]), addr(999), 1);
        assert!(s.candidates.iter().all(|c| c.addr != addr(999)));
        // The second times out.
        s.failed(&addr(2));
        // Keep answering whatever is asked until converged.
        let mut rounds = 0;
        while !s.converged() {
            let ask = s.next(3);
            assert!(ask.len() <= 3, "{ask:?}");
            assert!(!ask.is_empty());
            for i in ask {
                let (a, id) = (s.candidates[i].addr, s.candidates[i].id.unwrap());
                s.responded(&target, &a, id, Some(b"t".to_vec()));
            }
            rounds += 1;
            assert!(rounds < 20);
        }
        let mut want: Vec<NodeId> = ids.clone();
        want.sort_by_key(|id| id.distance(&target));
        let got: Vec<NodeId> = s
            .closest_responded(K)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(got, want[..K].to_vec());
        assert_eq!(s.announce_targets().len(), K);
    }

    #[test]
    fn bounded_candidates_and_peers() {
        let mut rng = Rng::new(10);
        let target = NodeId::random(&mut rng).0;
        let mut s = Search::default();
        for i in 0..500 {
            s.add(&target, Some(NodeId::random(&mut rng)), addr(i), 1);
        }
        assert_eq!(s.candidates.len(), MAX_CANDIDATES);
        let mut l = Lookup::new(LookupId(1), target, Kind::FindNode, false, Time::ZERO);
        let peers: Vec<SocketAddr> = (0..3000).map(addr).collect();
        assert_eq!(l.new_peers(&peers[..10]).len(), 10);
        assert_eq!(l.new_peers(&peers[..10]).len(), 0);
        assert_eq!(l.new_peers(&peers).len(), MAX_PEERS_PER_LOOKUP - 10);
        assert!(l.peers_seen.len() <= MAX_PEERS_PER_LOOKUP);
    }
}
