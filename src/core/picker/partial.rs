//! Per-block state of one partial piece: a piece with at least one block requested or received.
//!
//! Only partial pieces carry per-block state, so the picker's memory follows the blocks in
//! flight, not the torrent's size. A block is in exactly one of three states:
//!
//! ```text
//!            pick                  first copy from a requester
//!   Free ------------> Requested -----------------------------> Received
//!    ^                  |   ^  |                                   |
//!    |  last requester  |   |  | endgame: another peer             |
//!    +---- dropped -----+   +--+ requests it too (up to the cap)   |
//!    ^                                                             |
//!    +------------------- piece failed its hash check -------------+
//! ```
//!
//! A requested block remembers its first requester inline and any further (endgame)
//! requesters in a per-piece list that stays empty outside endgame.

use crate::core::PeerKey;

/// The state of one block of a partial piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BlockState {
    /// Nobody has asked for it and we do not have it.
    Free,
    /// `requesters` peers (at least one) have asked for it; `Block::peer` is one of them.
    Requested,
    /// We have it; `Block::peer` delivered it.
    Received,
}

/// One block: its state, and the peer that matters for that state.
#[derive(Debug, Clone, Copy)]
pub(super) struct Block {
    pub(super) state: BlockState,
    /// How many peers have requested it (only meaningful while requested).
    pub(super) requesters: u8,
    /// The first requester while requested, the deliverer once received.
    pub(super) peer: PeerKey,
}

impl Block {
    pub(super) const FREE: Block = Block {
        state: BlockState::Free,
        requesters: 0,
        peer: PeerKey(0),
    };
}

/// What happened to a block that arrived, as the picker reports it upwards.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Arrival {
    /// The first copy, from a peer that asked for it; the other requesters to cancel.
    New(Vec<PeerKey>),
    /// We already had it.
    Duplicate,
    /// The sender did not ask for it.
    Unrequested,
}

/// A partial piece's blocks and counters.
#[derive(Debug, Clone)]
pub(super) struct Partial {
    /// The piece's index.
    pub(super) piece: u32,
    /// One entry per block of the piece.
    pub(super) blocks: Vec<Block>,
    /// Blocks in the `Free` state.
    pub(super) free: u32,
    /// Blocks in the `Requested` state.
    pub(super) requested: u32,
    /// Blocks in the `Received` state.
    pub(super) received: u32,
    /// Position in the picker's list of partial pieces with free blocks, or `NONE`.
    pub(super) free_pos: u32,
    /// Endgame requesters beyond each block's first: `(block, peer)`. Empty outside endgame.
    pub(super) extra: Vec<(u32, PeerKey)>,
}

impl Partial {
    /// A partial piece with every block free, reusing `blocks`' allocation.
    pub(super) fn new(piece: u32, count: u32, mut blocks: Vec<Block>) -> Partial {
        blocks.clear();
        blocks.resize(count as usize, Block::FREE);
        Partial {
            piece,
            blocks,
            free: count,
            requested: 0,
            received: 0,
            free_pos: super::NONE,
            extra: Vec::new(),
        }
    }

    /// Blocks that are requested or received: how far along the piece is.
    pub(super) fn progress(&self) -> u32 {
        self.requested + self.received
    }

    /// Whether every block has arrived.
    pub(super) fn is_complete(&self) -> bool {
        self.received as usize == self.blocks.len()
    }

    /// Whether `peer` has an outstanding request for block `b`.
    pub(super) fn is_requester(&self, b: u32, peer: PeerKey) -> bool {
        let block = &self.blocks[b as usize];
        block.state == BlockState::Requested
            && (block.peer == peer || self.extra.iter().any(|&(x, p)| x == b && p == peer))
    }

    /// Marks free block `b` requested by `peer`.
    pub(super) fn request(&mut self, b: u32, peer: PeerKey) {
        let block = &mut self.blocks[b as usize];
        debug_assert_eq!(block.state, BlockState::Free);
        *block = Block {
            state: BlockState::Requested,
            requesters: 1,
            peer,
        };
        self.free -= 1;
        self.requested += 1;
    }

    /// Adds `peer` as a further requester of requested block `b` (endgame).
    pub(super) fn add_requester(&mut self, b: u32, peer: PeerKey) {
        let block = &mut self.blocks[b as usize];
        debug_assert_eq!(block.state, BlockState::Requested);
        block.requesters = block.requesters.saturating_add(1);
        self.extra.push((b, peer));
    }

    /// Forgets `peer`'s request for block `b`. Returns whether the block became free (its
    /// last requester went away). A peer that had not requested it changes nothing.
    pub(super) fn drop_request(&mut self, b: u32, peer: PeerKey) -> bool {
        let block = self.blocks[b as usize];
        if block.state != BlockState::Requested {
            return false;
        }
        if block.peer == peer {
            // Promote an endgame requester, if any, to first requester.
            if let Some(i) = self.extra.iter().position(|&(x, _)| x == b) {
                let (_, next) = self.extra.swap_remove(i);
                let block = &mut self.blocks[b as usize];
                block.peer = next;
                block.requesters = block.requesters.saturating_sub(1).max(1);
                return false;
            }
            self.blocks[b as usize] = Block::FREE;
            self.requested -= 1;
            self.free += 1;
            return true;
        }
        if let Some(i) = self.extra.iter().position(|&(x, p)| x == b && p == peer) {
            self.extra.swap_remove(i);
            let block = &mut self.blocks[b as usize];
            block.requesters = block.requesters.saturating_sub(1).max(1);
        }
        false
    }

    /// Records block `b` arriving from `peer`.
    pub(super) fn receive(&mut self, b: u32, peer: PeerKey) -> Arrival {
        let block = self.blocks[b as usize];
        match block.state {
            BlockState::Received => Arrival::Duplicate,
            BlockState::Free => Arrival::Unrequested,
            BlockState::Requested if !self.is_requester(b, peer) => Arrival::Unrequested,
            BlockState::Requested => {
                let mut cancel = Vec::new();
                if block.peer != peer {
                    cancel.push(block.peer);
                }
                self.extra.retain(|&(x, p)| {
                    if x != b {
                        return true;
                    }
                    if p != peer {
                        cancel.push(p);
                    }
                    false
                });
                self.blocks[b as usize] = Block {
                    state: BlockState::Received,
                    requesters: 0,
                    peer,
                };
                self.requested -= 1;
                self.received += 1;
                Arrival::New(cancel)
            }
        }
    }

    /// The peers that delivered blocks of this piece, sorted and without repeats.
    pub(super) fn deliverers(&self) -> Vec<PeerKey> {
        let mut peers: Vec<PeerKey> = self
            .blocks
            .iter()
            .filter(|b| b.state == BlockState::Received)
            .map(|b| b.peer)
            .collect();
        peers.sort_unstable();
        peers.dedup();
        peers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_drop_receive() {
        let mut p = Partial::new(3, 4, Vec::new());
        let (a, b, c) = (PeerKey(1), PeerKey(2), PeerKey(3));
        p.request(0, a);
        p.add_requester(0, b);
        assert!(p.is_requester(0, a) && p.is_requester(0, b) && !p.is_requester(0, c));
        assert!(!p.drop_request(0, a), "b still wants it");
        assert!(p.is_requester(0, b) && !p.is_requester(0, a));
        assert!(p.drop_request(0, b));
        assert_eq!((p.free, p.requested), (4, 0));
        p.request(1, a);
        p.add_requester(1, b);
        p.add_requester(1, c);
        assert_eq!(p.receive(1, c), Arrival::New(vec![a, b]));
        assert!(p.extra.is_empty());
        assert_eq!(p.receive(1, a), Arrival::Duplicate);
        assert_eq!(p.receive(2, a), Arrival::Unrequested);
        assert!(!p.drop_request(2, a), "never requested");
        assert_eq!(p.deliverers(), vec![c]);
        assert_eq!((p.free, p.requested, p.received), (3, 0, 1));
    }
}
