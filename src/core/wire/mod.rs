//! The sans-IO peer wire codec: the BitTorrent handshake and every peer message of BEP 3,
//! BEP 5 (`port`), BEP 6 (Fast extension), BEP 10 (extension protocol) and BEP 52 (`hash
//! request`, `hashes`, `hash reject`), decoded from and
//! encoded to bytes that the caller owns.
//!
//! # Design
//!
//! - **Sans-IO.** The codec never reads or writes a socket; a driver hands it the bytes it
//!   has buffered and sends the bytes it gets back. The same code serves the io_uring driver,
//!   the epoll driver and the simulator.
//! - **Check, then parse, over borrowed bytes** (the mini-redis pattern). [`Decoder::check`]
//!   looks only at the 4-byte length prefix and the id byte and answers
//!   [`Decoded::Incomplete`], with how many more bytes are needed, until the whole frame is
//!   buffered. [`Decoder::decode`] runs the same check and then parses the frame in place. It
//!   never allocates: payloads are views into the input. It returns the message together with
//!   the number of bytes it took, and the caller drops those from its buffer.
//! - **Two-slice input.** Unread bytes in a ring buffer are up to two slices (the tail and the
//!   wrapped-around head). Every decoder takes a [`SplitBytes`], built from one slice or from a
//!   pair, and payloads ([`Message::Bitfield`], [`Message::Piece`], [`Message::Extended`]) come
//!   back as `SplitBytes` that may themselves be split, with helpers to copy them out.
//! - **Encoding appends to a caller-owned `Vec<u8>`** and allocates nothing itself.
//!   [`piece_header`] gives just the 13 bytes in front of a block, so a driver can send the
//!   block from the page cache or an mmap without copying it into a message.
//! - **Early, typed errors.** An oversized length prefix is rejected as soon as its 4 bytes
//!   arrive, an unknown id or a length that does not fit the id as soon as the id byte arrives,
//!   and a wrong handshake as soon as its first wrong byte arrives. Errors ([`HandshakeError`],
//!   [`MessageError`], [`BitfieldError`], [`ExtendedHandshakeError`]) name the misbehaviour.
//! - **Bytes from the network never panic.** All reads are checked, arithmetic on wire values
//!   is checked or saturating, and property tests and a fuzz target decode arbitrary bytes.
//!
//! # Who owns policy
//!
//! The codec enforces framing and the shape of each message type, nothing more. Whether a
//! message is allowed at this point (a `bitfield` after the first message, a Fast-extension
//! message from a peer that did not set the reserved bit, a request while choked), how long a
//! requested block may be, and what to do about an error are decisions of the protocol core.
//! [`MessageId::announced_by`] and [`validate_bitfield`] are there to help it decide.

mod error;
mod extended;
mod handshake;
mod input;
mod message;
mod ut;

#[cfg(test)]
mod proptests;

pub use error::{BitfieldError, HandshakeError, MessageError};
pub use extended::{ExtendedHandshake, ExtendedHandshakeError, EXTENDED_HANDSHAKE_ID};
pub use handshake::{
    Handshake, HandshakePrefix, Reserved, ReservedBit, ReservedFlag, HANDSHAKE_LEN,
    HANDSHAKE_PREFIX_LEN, PROTOCOL_NAME,
};
pub use input::{Decoded, SplitBytes};
pub use message::{
    bitfield_len, encode_piece_header, piece_header, validate_bitfield, BlockRequest, Decoder,
    HashRequest, Message, MessageId, HASH_REQUEST_LEN, LENGTH_PREFIX_LEN, PIECE_HEADER_LEN,
};
pub use ut::{MetadataMsg, PexMsg, UtError, METADATA_PIECE_LEN, UT_METADATA, UT_PEX};
