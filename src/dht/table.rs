//! The routing table of one address family: k-buckets over the id space, split where they hold
//! our own id, with node liveness and a replacement cache per bucket.
//!
//! A node's states (BEP 5):
//!
//! ```text
//!   (heard of) --answers a query--> good --15 min without hearing--> questionable
//!                                     ^                                   |
//!                                     +------------answers a ping---------+
//!   good/questionable --query times out (x2 in a row)--> bad --> replaced by the
//!                                                                 replacement cache
//! ```
//!
//! Only nodes that answered one of our queries enter the table (their id is then proven to be
//! theirs for that address). A full bucket that does not hold our id keeps its nodes: a new
//! node waits in the bucket's replacement cache, and the table asks its owner to ping the
//! bucket's questionable nodes; one that fails twice is dropped for the freshest replacement.

use std::net::SocketAddr;
use std::time::Duration;

use crate::core::{Rng, Time};

use super::NodeId;

/// Nodes per bucket (BEP 5's k).
pub const K: usize = 8;
/// Replacement candidates kept per bucket.
pub const REPLACEMENTS: usize = 8;
/// A node not heard from for this long is questionable.
pub const GOOD_FOR: Duration = Duration::from_secs(15 * 60);
/// Failed queries in a row that make a node bad.
pub const BAD_AFTER_FAILURES: u8 = 2;

/// One node in the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its id.
    pub id: NodeId,
    /// Its address.
    pub addr: SocketAddr,
    /// When it last answered us (or, once it has answered, sent us a query); `None` for nodes
    /// restored from disk that have not answered yet.
    pub last_seen: Option<Time>,
    /// Queries that timed out since its last answer.
    pub failures: u8,
}

/// A node's liveness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Answered within 15 minutes.
    Good,
    /// Not heard from for 15 minutes (or never, if restored).
    Questionable,
    /// Failed twice in a row.
    Bad,
}

impl Entry {
    /// Its liveness at `now`.
    pub fn liveness(&self, now: Time) -> Liveness {
        if self.failures >= BAD_AFTER_FAILURES {
            Liveness::Bad
        } else if self
            .last_seen
            .is_some_and(|t| now.saturating_since(t) < GOOD_FOR)
        {
            Liveness::Good
        } else {
            Liveness::Questionable
        }
    }
}

/// A k-bucket.
#[derive(Clone, Debug, Default)]
struct Bucket {
    nodes: Vec<Entry>,
    /// Newest last.
    replacements: Vec<Entry>,
    /// When a node in it last answered or was added (for refresh).
    last_changed: Time,
}

/// What an insertion did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// It is in the table (new or updated).
    Added,
    /// The bucket is full of live nodes; it waits in the replacement cache. The listed
    /// questionable nodes should be pinged (one that fails makes room).
    Cached(Vec<(NodeId, SocketAddr)>),
    /// Rejected (our own id, or an id already there at another address).
    Rejected,
}

/// The routing table of one family.
#[derive(Clone, Debug)]
pub struct Table {
    own: NodeId,
    /// Bucket `i` holds the nodes sharing exactly `i` leading bits with `own`; the last
    /// bucket holds all the nodes sharing at least `buckets.len() - 1`.
    buckets: Vec<Bucket>,
}

impl Table {
    /// An empty table around `own`.
    pub fn new(own: NodeId, now: Time) -> Table {
        Table {
            own,
            buckets: vec![Bucket {
                last_changed: now,
                ..Bucket::default()
            }],
        }
    }

    /// Our id.
    pub fn own(&self) -> NodeId {
        self.own
    }

    fn bucket_index(&self, id: &NodeId) -> usize {
        self.own
            .common_prefix(&id.0)
            .min(self.buckets.len().saturating_sub(1))
    }

    /// Nodes in the table (not counting replacements).
    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.nodes.len()).sum()
    }

    /// Whether the table has no nodes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Buckets (for tests).
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// Every node, bucket by bucket.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.buckets.iter().flat_map(|b| b.nodes.iter())
    }

    /// The entry for `id`, if it is in the table.
    pub fn get(&self, id: &NodeId) -> Option<&Entry> {
        let i = self.bucket_index(id);
        self.buckets.get(i)?.nodes.iter().find(|e| e.id == *id)
    }

    /// Whether inserting `id` now would put it in the table rather than only in a cache
    /// (used to decide whether a node that queried us is worth a ping).
    pub fn would_accept(&self, id: &NodeId, now: Time) -> bool {
        if *id == self.own {
            return false;
        }
        let i = self.bucket_index(id);
        let Some(b) = self.buckets.get(i) else {
            return false;
        };
        if b.nodes.iter().any(|e| e.id == *id) {
            return false;
        }
        b.nodes.len() < K
            || (i + 1 == self.buckets.len() && self.buckets.len() < 160)
            || b.nodes.iter().any(|e| e.liveness(now) != Liveness::Good)
    }

    /// A node answered (or, with `answered` false, a restored node to keep as questionable).
    pub fn insert(&mut self, id: NodeId, addr: SocketAddr, now: Time, answered: bool) -> Inserted {
        if id == self.own {
            return Inserted::Rejected;
        }
        loop {
            let count = self.buckets.len();
            let last = count - 1;
            let i = self.bucket_index(&id);
            let Some(bucket) = self.buckets.get_mut(i) else {
                return Inserted::Rejected;
            };
            if let Some(e) = bucket.nodes.iter_mut().find(|e| e.id == id) {
                if e.addr != addr {
                    // The same id from another address: keep the one we know.
                    return Inserted::Rejected;
                }
                if answered {
                    e.last_seen = Some(now);
                    e.failures = 0;
                    bucket.last_changed = now;
                }
                return Inserted::Added;
            }
            if bucket.nodes.iter().any(|e| e.addr == addr) {
                // One address, one node: a node that changed its id waits until the old
                // entry goes bad.
                return Inserted::Rejected;
            }
            let entry = Entry {
                id,
                addr,
                last_seen: answered.then_some(now),
                failures: 0,
            };
            if bucket.nodes.len() < K {
                bucket.replacements.retain(|e| e.id != id);
                bucket.nodes.push(entry);
                bucket.last_changed = now;
                return Inserted::Added;
            }
            if i == last && count < 160 {
                self.split();
                continue;
            }
            if let Some(pos) = bucket
                .nodes
                .iter()
                .position(|e| e.liveness(now) == Liveness::Bad)
            {
                bucket.nodes[pos] = entry;
                bucket.last_changed = now;
                return Inserted::Added;
            }
            // BEP 42 as a preference: a node whose id fits its address displaces one whose
            // id does not (exempt addresses always fit).
            if id.valid_for(addr.ip()) {
                if let Some(pos) = bucket
                    .nodes
                    .iter()
                    .position(|e| !e.id.valid_for(e.addr.ip()))
                {
                    bucket.nodes[pos] = entry;
                    bucket.last_changed = now;
                    return Inserted::Added;
                }
            }
            let questionable: Vec<(NodeId, SocketAddr)> = bucket
                .nodes
                .iter()
                .filter(|e| e.liveness(now) == Liveness::Questionable)
                .map(|e| (e.id, e.addr))
                .collect();
            if answered {
                bucket.replacements.retain(|e| e.id != id && e.addr != addr);
                if bucket.replacements.len() >= REPLACEMENTS {
                    bucket.replacements.remove(0);
                }
                bucket.replacements.push(entry);
            }
            return Inserted::Cached(questionable);
        }
    }

    /// Splits the last bucket in two: the nodes sharing one more bit with us move to a new
    /// last bucket.
    fn split(&mut self) {
        let depth = self.buckets.len() - 1;
        let own = self.own;
        let Some(last) = self.buckets.last_mut() else {
            return;
        };
        let now = last.last_changed;
        let (deeper, stay): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut last.nodes)
            .into_iter()
            .partition(|e| own.common_prefix(&e.id.0) > depth);
        let (deeper_r, stay_r): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut last.replacements)
            .into_iter()
            .partition(|e| own.common_prefix(&e.id.0) > depth);
        last.nodes = stay;
        last.replacements = stay_r;
        self.buckets.push(Bucket {
            nodes: deeper,
            replacements: deeper_r,
            last_changed: now,
        });
    }

    /// A query to `id` at `addr` timed out. A node that turns bad is replaced by the newest
    /// replacement, if there is one.
    pub fn failed(&mut self, id: &NodeId, addr: &SocketAddr, _now: Time) {
        let i = self.bucket_index(id);
        let Some(bucket) = self.buckets.get_mut(i) else {
            return;
        };
        let Some(pos) = bucket
            .nodes
            .iter()
            .position(|e| e.id == *id && e.addr == *addr)
        else {
            return;
        };
        let e = &mut bucket.nodes[pos];
        e.failures = e.failures.saturating_add(1);
        let gone = e.failures >= BAD_AFTER_FAILURES || e.last_seen.is_none();
        if gone {
            if let Some(replacement) = bucket.replacements.pop() {
                bucket.nodes[pos] = replacement;
            } else if e.last_seen.is_none() {
                // Restored and never answered: nothing to keep.
                bucket.nodes.remove(pos);
            }
        }
    }

    /// A node we know (it answered before) sent us a query: it is alive.
    pub fn heard_from(&mut self, id: &NodeId, addr: &SocketAddr, now: Time) {
        let i = self.bucket_index(id);
        if let Some(e) = self
            .buckets
            .get_mut(i)
            .and_then(|b| b.nodes.iter_mut().find(|e| e.id == *id && e.addr == *addr))
        {
            if e.last_seen.is_some() {
                e.last_seen = Some(now);
            }
        }
    }

    /// The `n` nodes closest to `target` that are not bad, closest first.
    pub fn closest(&self, target: &[u8; 20], n: usize, now: Time) -> Vec<(NodeId, SocketAddr)> {
        let mut all: Vec<&Entry> = self
            .entries()
            .filter(|e| e.liveness(now) != Liveness::Bad)
            .collect();
        all.sort_by_cached_key(|e| e.id.distance(target));
        all.into_iter().take(n).map(|e| (e.id, e.addr)).collect()
    }

    /// Buckets not changed for `stale`: a random id in each one's range, to refresh it by a
    /// `find_node`; marks them changed so each is refreshed once per period.
    pub fn stale_buckets(&mut self, now: Time, stale: Duration, rng: &mut Rng) -> Vec<NodeId> {
        let mut out = Vec::new();
        let count = self.buckets.len();
        for (i, b) in self.buckets.iter_mut().enumerate() {
            if now.saturating_since(b.last_changed) >= stale {
                b.last_changed = now;
                // The last bucket covers every depth from `i` on; its random id at depth `i`
                // still lands in it.
                let depth = if i + 1 == count { i } else { i.min(159) };
                out.push(self.own.random_at_depth(depth, rng));
            }
        }
        out
    }

    /// A random id in the range of each bucket that is not full, but the last (which holds
    /// our own id), to fill them by `find_node` after bootstrapping.
    pub fn refresh_targets(&self, rng: &mut Rng) -> Vec<NodeId> {
        let last = self.buckets.len().saturating_sub(1);
        (0..last)
            .filter(|&i| self.buckets.get(i).is_some_and(|b| b.nodes.len() < K))
            .map(|i| self.own.random_at_depth(i, rng))
            .collect()
    }

    /// Questionable nodes (for pinging before they are needed).
    pub fn questionable(&self, now: Time) -> Vec<(NodeId, SocketAddr)> {
        self.entries()
            .filter(|e| e.liveness(now) == Liveness::Questionable)
            .map(|e| (e.id, e.addr))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u32) -> SocketAddr {
        SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 6881))
    }

    fn id_with_prefix(own: &NodeId, prefix: usize, rng: &mut Rng) -> NodeId {
        own.random_at_depth(prefix, rng)
    }

    #[test]
    fn splits_only_where_our_id_is() {
        let mut rng = Rng::new(3);
        let own = NodeId::random(&mut rng);
        let now = Time::from_secs(1);
        let mut t = Table::new(own, now);
        // 8 far nodes (prefix 0) fill bucket 0 without splitting.
        for i in 0..K as u32 {
            let id = id_with_prefix(&own, 0, &mut rng);
            assert_eq!(t.insert(id, addr(i), now, true), Inserted::Added);
        }
        assert_eq!(t.bucket_count(), 1);
        // A ninth node splits (bucket 0 then holds prefix-0 nodes; the rest move on).
        let near = id_with_prefix(&own, 5, &mut rng);
        assert_eq!(t.insert(near, addr(100), now, true), Inserted::Added);
        assert_eq!(t.bucket_count(), 2);
        // Bucket 0 is full and does not hold our id: new far nodes are cached.
        let far = id_with_prefix(&own, 0, &mut rng);
        assert_eq!(
            t.insert(far, addr(200), now, true),
            Inserted::Cached(vec![])
        );
        assert_eq!(t.len(), K + 1);
        // Many nodes near us: the table deepens and keeps them.
        for i in 0..40u32 {
            let id = id_with_prefix(&own, 1 + (i as usize % 20), &mut rng);
            t.insert(id, addr(300 + i), now, true);
        }
        assert!(t.bucket_count() > 3);
        assert!(t.buckets.iter().all(|b| b.nodes.len() <= K));
        assert!(t
            .buckets
            .iter()
            .all(|b| b.replacements.len() <= REPLACEMENTS));
        // Every node sits in the right bucket.
        let last = t.bucket_count() - 1;
        for (i, b) in t.buckets.iter().enumerate() {
            for e in &b.nodes {
                assert_eq!(own.common_prefix(&e.id.0).min(last), i);
            }
        }
        assert_eq!(t.insert(own, addr(999), now, true), Inserted::Rejected);
    }

    #[test]
    fn questionable_nodes_are_pinged_and_bad_ones_replaced() {
        let mut rng = Rng::new(4);
        let own = NodeId::random(&mut rng);
        let t0 = Time::from_secs(1);
        let mut t = Table::new(own, t0);
        // Force a split so bucket 0 is no longer splittable.
        let mut far = Vec::new();
        for i in 0..K as u32 {
            let id = id_with_prefix(&own, 0, &mut rng);
            t.insert(id, addr(i), t0, true);
            far.push((id, addr(i)));
        }
        t.insert(id_with_prefix(&own, 3, &mut rng), addr(50), t0, true);
        let later = t0 + GOOD_FOR + Duration::from_secs(1);
        let newcomer = id_with_prefix(&own, 0, &mut rng);
        match t.insert(newcomer, addr(60), later, true) {
            Inserted::Cached(ping) => assert_eq!(ping.len(), K),
            other => panic!("{other:?}"),
        }
        // The first far node fails twice: the newcomer takes its place.
        let (fid, faddr) = far[0];
        t.failed(&fid, &faddr, later);
        assert!(t.get(&fid).is_some());
        t.failed(&fid, &faddr, later);
        assert!(t.get(&fid).is_none());
        assert_eq!(t.get(&newcomer).map(|e| e.addr), Some(addr(60)));
        // A node that answers is good again.
        let (sid, saddr) = far[1];
        t.insert(sid, saddr, later, true);
        assert_eq!(t.get(&sid).unwrap().liveness(later), Liveness::Good);
        // The same id from another address is refused.
        assert_eq!(t.insert(sid, addr(77), later, true), Inserted::Rejected);
    }

    #[test]
    fn closest_and_refresh() {
        let mut rng = Rng::new(5);
        let own = NodeId::random(&mut rng);
        let now = Time::from_secs(10);
        let mut t = Table::new(own, now);
        let mut ids = Vec::new();
        for i in 0..200u32 {
            let id = NodeId::random(&mut rng);
            if t.insert(id, addr(i), now, true) == Inserted::Added {
                ids.push(id);
            }
        }
        let target = NodeId::random(&mut rng);
        let got = t.closest(&target.0, K, now);
        let mut want: Vec<NodeId> = t.entries().map(|e| e.id).collect();
        want.sort_by_key(|id| id.distance(&target.0));
        want.truncate(K);
        assert_eq!(got.iter().map(|(id, _)| *id).collect::<Vec<_>>(), want);
        let stale = t.stale_buckets(now + Duration::from_secs(901), GOOD_FOR, &mut rng);
        assert_eq!(stale.len(), t.bucket_count());
        let last = t.bucket_count() - 1;
        for (i, id) in stale.iter().enumerate() {
            assert_eq!(own.common_prefix(&id.0).min(last), i);
        }
        assert!(t
            .stale_buckets(now + Duration::from_secs(902), GOOD_FOR, &mut rng)
            .is_empty());
    }

    #[test]
    fn an_id_that_fits_its_address_displaces_one_that_does_not() {
        let mut rng = Rng::new(6);
        let own = NodeId::random(&mut rng);
        let now = Time::from_secs(1);
        let mut t = Table::new(own, now);
        // Bucket 0 full of public nodes whose ids do not fit their addresses.
        for i in 0..K as u8 {
            let id = id_with_prefix(&own, 0, &mut rng);
            let addr = SocketAddr::from(([8, 8, 1, i], 6881));
            assert!(!id.valid_for(addr.ip()));
            t.insert(id, addr, now, true);
        }
        t.insert(id_with_prefix(&own, 4, &mut rng), addr(1), now, true);
        assert_eq!(t.bucket_count(), 2);
        // Another non-fitting one waits in the cache.
        let ip = std::net::IpAddr::from([124, 31, 75, 21]);
        let plain = id_with_prefix(&own, 0, &mut rng);
        let at = SocketAddr::new(ip, 1);
        assert!(matches!(
            t.insert(plain, at, now, true),
            Inserted::Cached(_)
        ));
        // A fitting one (BEP 42 for its address, in bucket 0's range) takes a place.
        let fitting = loop {
            let id = NodeId::bep42(ip, &mut rng);
            if own.common_prefix(&id.0) == 0 {
                break id;
            }
        };
        assert_eq!(
            t.insert(fitting, SocketAddr::new(ip, 2), now, true),
            Inserted::Added
        );
        assert_eq!(t.len(), K + 1);
    }
}
