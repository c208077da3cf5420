//! Smart ban, as libtorrent does it: when a piece fails its hash check, remember for each block
//! which peer sent it and the SHA1 of its bytes; once the piece is fetched again and passes,
//! the peers whose copy of a block differs from the verified one sent bad data, and only they
//! are banned. Honest peers that shared a piece with a corrupt one are spared.
//!
//! The block hashes come from the disk pool, which hashes the blocks of a piece that failed
//! (and of a piece that failed before, when it passes) as part of its verify job: the core only
//! compares 20-byte digests. Memory is bounded by `MAX_SMART_BAN_RECORDS` (oldest failed piece
//! forgotten first) and `MAX_SMART_BAN_COPIES` per block.

use std::collections::BTreeMap;

use ::core::net::SocketAddr;

use crate::limits::{MAX_SMART_BAN_COPIES, MAX_SMART_BAN_RECORDS};

/// The SHA1 of one block's bytes.
pub(crate) type BlockHash = [u8; 20];

/// One copy of a block: who sent it and what it hashed to. The whole address is kept for the
/// ban's report; the ban itself is on the IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Copy {
    addr: SocketAddr,
    hash: BlockHash,
}

/// A piece that failed at least once and has not passed since.
#[derive(Debug)]
struct Suspect {
    /// Per block, the copies seen in failed downloads.
    blocks: Vec<Vec<Copy>>,
    /// When it first failed, in failures counted by `SmartBan::failures`: eviction order.
    first_failed: u64,
}

/// The evidence one torrent keeps about pieces that failed. Iteration is over `BTreeMap`s, so
/// the outcome does not depend on hashing order.
#[derive(Debug, Default)]
pub(crate) struct SmartBan {
    pieces: BTreeMap<u32, Suspect>,
    /// Copies held in all pieces together (bounded by `MAX_SMART_BAN_RECORDS`).
    records: usize,
    failures: u64,
}

impl SmartBan {
    /// Whether `piece` failed before and waits for a good copy: its verify should return
    /// block hashes even when it passes.
    pub(crate) fn is_suspect(&self, piece: u32) -> bool {
        self.pieces.contains_key(&piece)
    }

    /// Records a failed download of `piece`: `senders[i]` sent block `i` (`None` when the
    /// sender is gone and its address unknown), whose bytes hashed to `hashes[i]`. The two
    /// slices have one entry per block; a mismatch (the blocks could not be read) records
    /// nothing.
    pub(crate) fn failed(
        &mut self,
        piece: u32,
        senders: &[Option<SocketAddr>],
        hashes: &[BlockHash],
    ) {
        if senders.len() != hashes.len() || hashes.is_empty() {
            return;
        }
        let failures = self.failures;
        self.failures += 1;
        let entry = self.pieces.entry(piece).or_insert_with(|| Suspect {
            blocks: vec![Vec::new(); hashes.len()],
            first_failed: failures,
        });
        if entry.blocks.len() != hashes.len() {
            return;
        }
        let mut added = 0;
        for ((copies, sender), &hash) in entry.blocks.iter_mut().zip(senders).zip(hashes) {
            let Some(addr) = *sender else {
                continue;
            };
            let copy = Copy { addr, hash };
            if copies.contains(&copy) || copies.len() >= MAX_SMART_BAN_COPIES {
                continue;
            }
            copies.push(copy);
            added += 1;
        }
        self.records += added;
        self.evict(piece);
    }

    /// `piece` passed, its blocks hashing to `hashes`: returns the addresses that sent a copy
    /// of some block that differs from the verified one (sorted, without repeats), and forgets
    /// the piece. Nothing when the piece was not suspect or the hashes are missing.
    pub(crate) fn passed(&mut self, piece: u32, hashes: &[BlockHash]) -> Vec<SocketAddr> {
        let Some(suspect) = self.pieces.remove(&piece) else {
            return Vec::new();
        };
        self.records -= suspect.blocks.iter().map(Vec::len).sum::<usize>();
        if suspect.blocks.len() != hashes.len() {
            return Vec::new();
        }
        let mut bad: Vec<SocketAddr> = suspect
            .blocks
            .iter()
            .zip(hashes)
            .flat_map(|(copies, good)| copies.iter().filter(move |c| c.hash != *good))
            .map(|c| c.addr)
            .collect();
        bad.sort_unstable();
        bad.dedup();
        bad
    }

    /// Forgets the oldest failed pieces (other than `keep`, just recorded) until the records
    /// fit their bound.
    fn evict(&mut self, keep: u32) {
        while self.records > MAX_SMART_BAN_RECORDS {
            let oldest = self
                .pieces
                .iter()
                .filter(|(p, _)| **p != keep)
                .min_by_key(|(_, s)| s.first_failed)
                .map(|(p, _)| *p);
            let Some(p) = oldest else {
                return;
            };
            if let Some(s) = self.pieces.remove(&p) {
                self.records -= s.blocks.iter().map(Vec::len).sum::<usize>();
            }
        }
    }

    /// Copies held, for tests of the bound.
    #[cfg(test)]
    fn records(&self) -> usize {
        self.records
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, n], 6881))
    }

    #[test]
    fn bans_only_the_sender_of_the_bad_block() {
        let mut sb = SmartBan::default();
        let good = [[1; 20], [2; 20], [3; 20]];
        // Honest 1 and 2 sent blocks 0 and 2; corrupt 3 sent block 1 wrong.
        sb.failed(
            7,
            &[Some(ip(1)), Some(ip(3)), Some(ip(2))],
            &[good[0], [9; 20], good[2]],
        );
        assert!(sb.is_suspect(7));
        assert_eq!(sb.passed(7, &good), vec![ip(3)]);
        assert!(!sb.is_suspect(7));
        assert_eq!(sb.records(), 0);
    }

    #[test]
    fn keeps_collecting_across_failures() {
        let mut sb = SmartBan::default();
        let good = [[1; 20], [2; 20]];
        sb.failed(0, &[Some(ip(4)), Some(ip(1))], &[[8; 20], good[1]]);
        sb.failed(0, &[Some(ip(2)), Some(ip(5))], &[good[0], [7; 20]]);
        assert_eq!(sb.passed(0, &good), vec![ip(4), ip(5)]);
        // A piece that never failed bans nobody.
        assert!(sb.passed(1, &good).is_empty());
    }

    #[test]
    fn memory_stays_bounded() {
        let mut sb = SmartBan::default();
        let blocks = 4096;
        let senders = vec![Some(ip(1)); blocks];
        for piece in 0..40u32 {
            let hashes = vec![[piece as u8; 20]; blocks];
            sb.failed(piece, &senders, &hashes);
            assert!(sb.records() <= MAX_SMART_BAN_RECORDS);
        }
        // The oldest pieces went first.
        assert!(!sb.is_suspect(0));
        assert!(sb.is_suspect(39));
    }
}
