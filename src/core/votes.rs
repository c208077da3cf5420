//! Votes for our external address: peers tell us where they see us (BEP 10 `yourip`), and the
//! DHT's node id follows that address (BEP 42) once [`QUORUM`] different peers agree, so one
//! peer's word cannot make the node change its id. Bounded: at most [`MAX_CANDIDATES`]
//! addresses and [`MAX_VOTERS`] voters each are remembered.

use std::collections::{BTreeMap, BTreeSet};

use ::core::net::IpAddr;

/// Different voters an address needs before it is taken.
pub(crate) const QUORUM: usize = 3;
/// Addresses voted for that are remembered; votes for others are ignored.
pub(crate) const MAX_CANDIDATES: usize = 32;
/// Voters remembered per address (enough to outvote any earlier choice).
pub(crate) const MAX_VOTERS: usize = 64;

/// The tally.
#[derive(Debug, Default)]
pub(crate) struct ExternalVotes {
    votes: BTreeMap<IpAddr, BTreeSet<IpAddr>>,
    chosen: Option<IpAddr>,
}

/// Whether `ip` can be our address as the Internet sees it (not loopback, private,
/// link-local, multicast or unspecified): only such an address means anything to BEP 42.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || v6.to_ipv4_mapped().is_some())
        }
    }
}

impl ExternalVotes {
    /// `voter` says we are at `ip`. Returns the address to take when this vote makes a new
    /// one win: at least [`QUORUM`] voters, and more than the current choice has.
    pub(crate) fn vote(&mut self, ip: IpAddr, voter: IpAddr) -> Option<IpAddr> {
        if !is_public(ip) || ip == voter {
            return None;
        }
        if !self.votes.contains_key(&ip) && self.votes.len() >= MAX_CANDIDATES {
            return None;
        }
        let voters = self.votes.entry(ip).or_default();
        if voters.len() >= MAX_VOTERS || !voters.insert(voter) {
            return None;
        }
        let count = voters.len();
        let current = self
            .chosen
            .and_then(|c| self.votes.get(&c))
            .map_or(0, BTreeSet::len);
        if count >= QUORUM && self.chosen != Some(ip) && count > current {
            self.chosen = Some(ip);
            return Some(ip);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_quorum_of_different_voters_decides_and_a_larger_one_overrules() {
        let mut v = ExternalVotes::default();
        assert_eq!(v.vote(ip("8.8.8.8"), ip("1.1.1.1")), None);
        assert_eq!(
            v.vote(ip("8.8.8.8"), ip("1.1.1.1")),
            None,
            "one voter, one vote"
        );
        assert_eq!(v.vote(ip("8.8.8.8"), ip("1.1.1.2")), None);
        assert_eq!(v.vote(ip("8.8.8.8"), ip("1.1.1.3")), Some(ip("8.8.8.8")));
        assert_eq!(v.vote(ip("8.8.8.8"), ip("1.1.1.4")), None, "already chosen");
        for i in 1..=4 {
            assert_eq!(v.vote(ip("9.9.9.9"), ip(&format!("2.2.2.{i}"))), None);
        }
        assert_eq!(v.vote(ip("9.9.9.9"), ip("2.2.2.5")), Some(ip("9.9.9.9")));
    }

    #[test]
    fn private_addresses_and_floods_count_for_nothing() {
        let mut v = ExternalVotes::default();
        for i in 0..10 {
            assert_eq!(v.vote(ip("127.0.0.1"), ip(&format!("3.3.3.{i}"))), None);
            assert_eq!(v.vote(ip("192.168.1.2"), ip(&format!("3.3.3.{i}"))), None);
        }
        for i in 0..1000u32 {
            let candidate = IpAddr::from((0x0800_0000 + i).to_be_bytes());
            v.vote(candidate, ip("4.4.4.4"));
        }
        assert!(v.votes.len() <= MAX_CANDIDATES);
    }
}
