//! The 64-bit `user_data` every submission carries: which operation it is, which connection
//! slot it belongs to and that slot's generation, so a completion can be routed without a
//! lookup table and a completion for a slot that has since been reused is recognised.

/// Bits of the generation kept in `user_data`. 24 bits wrap after 16 million reuses of one
/// slot; a completion would have to stay in flight that long to be mistaken for a new one,
/// and the driver never frees a slot with operations in flight in the first place.
pub(crate) const GENERATION_BITS: u32 = 24;
const GENERATION_MASK: u32 = (1 << GENERATION_BITS) - 1;

/// What a submission was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Op {
    /// The listener's multishot accept.
    Accept = 1,
    /// An outgoing connection's connect.
    Connect = 2,
    /// A connection's multishot receive.
    Recv = 3,
    /// A connection's vectored send.
    Send = 4,
    /// The 8-byte read armed on the disk pool's eventfd.
    DiskEvent = 5,
    /// A cancellation request; its own completion carries no information we need.
    Cancel = 6,
    /// The UDP socket's `RECVMSG`.
    UdpRecv = 7,
}

impl Op {
    fn from_u8(v: u8) -> Option<Op> {
        Some(match v {
            1 => Op::Accept,
            2 => Op::Connect,
            3 => Op::Recv,
            4 => Op::Send,
            5 => Op::DiskEvent,
            6 => Op::Cancel,
            7 => Op::UdpRecv,
            _ => return None,
        })
    }
}

/// A decoded `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    /// The operation.
    pub op: Op,
    /// The driver's connection slot (0 where the operation has none).
    pub slot: u32,
    /// The slot's generation, truncated to [`GENERATION_BITS`].
    pub generation: u32,
}

impl Token {
    /// A token for an operation with no connection.
    pub const fn global(op: Op) -> Token {
        Token {
            op,
            slot: 0,
            generation: 0,
        }
    }

    /// Packs the token: op in the top 8 bits, generation in the next 24, slot in the low 32.
    pub const fn pack(self) -> u64 {
        ((self.op as u64) << 56)
            | (((self.generation & GENERATION_MASK) as u64) << 32)
            | self.slot as u64
    }

    /// Unpacks a `user_data` made by [`Token::pack`]; `None` for anything else.
    pub fn unpack(v: u64) -> Option<Token> {
        Some(Token {
            op: Op::from_u8((v >> 56) as u8)?,
            generation: ((v >> 32) as u32) & GENERATION_MASK,
            slot: v as u32,
        })
    }

    /// Whether this token belongs to the slot's current occupant.
    pub fn matches(self, generation: u32) -> bool {
        self.generation == generation & GENERATION_MASK
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slab::Slab;

    #[test]
    fn packs_and_unpacks() {
        for op in [
            Op::Accept,
            Op::Connect,
            Op::Recv,
            Op::Send,
            Op::DiskEvent,
            Op::Cancel,
            Op::UdpRecv,
        ] {
            for (slot, generation) in [(0, 0), (1, 1), (u32::MAX, GENERATION_MASK), (7, 12345)] {
                let t = Token {
                    op,
                    slot,
                    generation,
                };
                assert_eq!(Token::unpack(t.pack()), Some(t));
            }
        }
        // Generations wider than the field are truncated, and still match their slot.
        let t = Token {
            op: Op::Recv,
            slot: 3,
            generation: GENERATION_MASK + 5,
        };
        let back = Token::unpack(t.pack()).unwrap();
        assert_eq!(back.generation, 4);
        assert!(back.matches(GENERATION_MASK + 5));
        assert_eq!(Token::unpack(0), None);
        assert_eq!(Token::unpack(0xFF << 56), None);
    }

    /// A completion for a slot's previous occupant is told apart from the current one's.
    #[test]
    fn stale_completion_is_rejected_after_slot_reuse() {
        struct Entry {
            generation: u32,
        }
        let mut slab: Slab<Entry> = Slab::new();
        let mut next_generation = 0u32;
        let mut insert = |slab: &mut Slab<Entry>| {
            next_generation += 1;
            let slot = slab.insert(Entry {
                generation: next_generation,
            });
            Token {
                op: Op::Recv,
                slot: slot as u32,
                generation: next_generation,
            }
            .pack()
        };
        let lookup = |slab: &Slab<Entry>, user_data: u64| {
            let t = Token::unpack(user_data)?;
            slab.get(t.slot as usize)
                .filter(|e| t.matches(e.generation))
                .map(|_| t.slot)
        };
        let old = insert(&mut slab);
        assert!(lookup(&slab, old).is_some());
        slab.remove(Token::unpack(old).unwrap().slot as usize);
        assert!(lookup(&slab, old).is_none(), "freed slot");
        let new = insert(&mut slab);
        assert_eq!(
            Token::unpack(new).unwrap().slot,
            Token::unpack(old).unwrap().slot,
            "the slab reuses the slot"
        );
        assert!(lookup(&slab, new).is_some());
        assert!(lookup(&slab, old).is_none(), "stale generation");
    }
}
