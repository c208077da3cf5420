//! Typed decode errors. Each variant names what the peer did wrong, so that the core can log
//! it, count it and decide (as policy) whether to disconnect or ban.

use super::message::MessageId;

/// Why bytes that should open a connection are not a BitTorrent handshake.
///
/// Both variants mean "not a BitTorrent peer": typically an HTTP client, a port scanner, or a
/// peer that speaks the encrypted (MSE) handshake, which a driver may try next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The first byte, the length of the protocol name, is not 19.
    #[error("not a BitTorrent peer: handshake starts with protocol name length {found}, not 19")]
    ProtocolLength {
        /// The byte that was received instead.
        found: u8,
    },
    /// The length byte was right but the 19 bytes after it are not `BitTorrent protocol`.
    #[error("not a BitTorrent peer: protocol name is not \"BitTorrent protocol\"")]
    ProtocolName,
}

/// Why a bitfield does not fit the torrent it is meant for.
///
/// This is separate from [`MessageError`] because the check also runs outside decoding: a
/// bitfield that arrived before the torrent's metadata is validated once the piece count is
/// known, through [`validate_bitfield`](super::validate_bitfield).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BitfieldError {
    /// The bitfield's byte length is not the piece count rounded up to whole bytes.
    #[error(
        "bitfield of {len} bytes does not match {piece_count} pieces, which take {expected} bytes"
    )]
    WrongLength {
        /// The length of the bitfield that was received, in bytes.
        len: usize,
        /// The length that `piece_count` pieces take, in bytes.
        expected: usize,
        /// The number of pieces in the torrent.
        piece_count: u32,
    },
    /// A bit after the last piece is set; BEP 3 requires these spare bits to be zero.
    #[error("bitfield sets spare bits after the last of {piece_count} pieces")]
    SpareBitsSet {
        /// The number of pieces in the torrent.
        piece_count: u32,
    },
}

/// Why a peer wire message is malformed.
///
/// Only framing and per-type shape are checked here. Whether a message is allowed at this
/// point of the conversation, or whether a request is too long, is the core's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The length prefix announces more than the decoder accepts. Reported as soon as the four
    /// prefix bytes arrive, so that a hostile prefix never makes the driver buffer the body.
    #[error("message length prefix of {len} bytes exceeds the limit of {max} bytes")]
    TooLong {
        /// The length from the prefix (not counting the prefix itself).
        len: u32,
        /// The decoder's limit.
        max: u32,
    },
    /// The message id is not one this codec knows (BEP 3, BEP 5's port, BEP 6, BEP 10).
    #[error("unknown message id {id} (length {len})")]
    UnknownId {
        /// The id byte that was received.
        id: u8,
        /// The length from the prefix.
        len: u32,
    },
    /// A fixed-size message (for example `have`, which is always 5 bytes) has another length.
    #[error("{id} message has length {len}, but it must be {expected}")]
    WrongLength {
        /// The type of the message.
        id: MessageId,
        /// The length from the prefix (id byte included).
        len: u32,
        /// The length every message of this type has.
        expected: u32,
    },
    /// A variable-size message is shorter than its fixed header (for example a `piece`
    /// message without its 8 bytes of index and offset).
    #[error("{id} message has length {len}, shorter than its minimum of {min}")]
    TooShort {
        /// The type of the message.
        id: MessageId,
        /// The length from the prefix (id byte included).
        len: u32,
        /// The least length a message of this type can have.
        min: u32,
    },
    /// A `hashes` message whose hashes are not a whole number of 32-byte hashes.
    #[error("hashes message has length {len}, which is not a whole number of 32-byte hashes")]
    PartialHash {
        /// The length from the prefix (id byte included).
        len: u32,
    },
    /// An `extended` message with no extended message id byte at all.
    #[error("extended message without an extended message id")]
    EmptyExtended,
    /// A `bitfield` message that does not fit the piece count the decoder was given.
    #[error(transparent)]
    Bitfield(#[from] BitfieldError),
}
