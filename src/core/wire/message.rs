//! Peer wire messages (BEP 3, BEP 5's `port`, BEP 6, BEP 10, BEP 52's hash messages): their
//! ids, the borrowed
//! [`Message`] type, the [`Decoder`] and the encoders.
//!
//! Every message after the handshake is a 4-byte big-endian length prefix followed by that
//! many bytes; a length of 0 is a keep-alive, otherwise the first byte is the message id.

use std::fmt;

use super::error::{BitfieldError, MessageError};
use super::handshake::ReservedFlag;
use super::input::{Decoded, SplitBytes};
use crate::limits::{MAX_MESSAGE_LEN, MAX_TORRENT_MESSAGE_LEN};

/// The length of the big-endian length prefix in front of every message.
pub const LENGTH_PREFIX_LEN: usize = 4;

/// The length of a `piece` message up to its block data: prefix, id, index and offset.
pub const PIECE_HEADER_LEN: usize = 13;

/// The id byte of each message type this codec understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum MessageId {
    /// BEP 3: the sender will not serve requests.
    Choke = 0,
    /// BEP 3: the sender will serve requests.
    Unchoke = 1,
    /// BEP 3: the sender wants pieces the receiver has.
    Interested = 2,
    /// BEP 3: the sender wants nothing from the receiver.
    NotInterested = 3,
    /// BEP 3: the sender has completed a piece.
    Have = 4,
    /// BEP 3: the sender's pieces, one bit each.
    Bitfield = 5,
    /// BEP 3: a request for a block.
    Request = 6,
    /// BEP 3: a block of data.
    Piece = 7,
    /// BEP 3: withdraws a request.
    Cancel = 8,
    /// BEP 5: the sender's DHT port.
    Port = 9,
    /// BEP 6: a piece the receiver might like to download.
    Suggest = 0x0D,
    /// BEP 6: the sender has every piece.
    HaveAll = 0x0E,
    /// BEP 6: the sender has no piece.
    HaveNone = 0x0F,
    /// BEP 6: a request that will not be served.
    Reject = 0x10,
    /// BEP 6: a piece the receiver may request even while choked.
    AllowedFast = 0x11,
    /// BEP 10: an extension protocol message.
    Extended = 20,
    /// BEP 52: a request for hashes of a file's merkle tree.
    HashRequest = 21,
    /// BEP 52: hashes of a file's merkle tree, answering a `hash request`.
    Hashes = 22,
    /// BEP 52: a `hash request` that will not be answered.
    HashReject = 23,
}

/// The allowed values of a message type's length prefix (id byte included).
#[derive(Clone, Copy)]
enum Shape {
    Exact(u32),
    AtLeast(u32),
}

impl MessageId {
    /// Every id, in numeric order; tests and fuzzers iterate over it.
    pub const ALL: [MessageId; 19] = [
        MessageId::Choke,
        MessageId::Unchoke,
        MessageId::Interested,
        MessageId::NotInterested,
        MessageId::Have,
        MessageId::Bitfield,
        MessageId::Request,
        MessageId::Piece,
        MessageId::Cancel,
        MessageId::Port,
        MessageId::Suggest,
        MessageId::HaveAll,
        MessageId::HaveNone,
        MessageId::Reject,
        MessageId::AllowedFast,
        MessageId::Extended,
        MessageId::HashRequest,
        MessageId::Hashes,
        MessageId::HashReject,
    ];

    /// The id for a byte from the wire, or `None` when this codec does not know it.
    pub const fn from_u8(id: u8) -> Option<MessageId> {
        Some(match id {
            0 => MessageId::Choke,
            1 => MessageId::Unchoke,
            2 => MessageId::Interested,
            3 => MessageId::NotInterested,
            4 => MessageId::Have,
            5 => MessageId::Bitfield,
            6 => MessageId::Request,
            7 => MessageId::Piece,
            8 => MessageId::Cancel,
            9 => MessageId::Port,
            0x0D => MessageId::Suggest,
            0x0E => MessageId::HaveAll,
            0x0F => MessageId::HaveNone,
            0x10 => MessageId::Reject,
            0x11 => MessageId::AllowedFast,
            20 => MessageId::Extended,
            21 => MessageId::HashRequest,
            22 => MessageId::Hashes,
            23 => MessageId::HashReject,
            _ => return None,
        })
    }

    /// The byte that goes on the wire.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// The message's name as the BEPs spell it, for logs and error messages.
    pub const fn name(self) -> &'static str {
        match self {
            MessageId::Choke => "choke",
            MessageId::Unchoke => "unchoke",
            MessageId::Interested => "interested",
            MessageId::NotInterested => "not interested",
            MessageId::Have => "have",
            MessageId::Bitfield => "bitfield",
            MessageId::Request => "request",
            MessageId::Piece => "piece",
            MessageId::Cancel => "cancel",
            MessageId::Port => "port",
            MessageId::Suggest => "suggest piece",
            MessageId::HaveAll => "have all",
            MessageId::HaveNone => "have none",
            MessageId::Reject => "reject request",
            MessageId::AllowedFast => "allowed fast",
            MessageId::Extended => "extended",
            MessageId::HashRequest => "hash request",
            MessageId::Hashes => "hashes",
            MessageId::HashReject => "hash reject",
        }
    }

    /// The handshake bit that announces support for this message, or `None` for the BEP 3
    /// messages every peer must understand (and for BEP 52's hash messages, which a peer may
    /// send on any connection that runs a torrent under its v2 info hash, bit or not). The codec decodes every message regardless; the
    /// core uses this to apply its policy on messages the peer did not announce.
    pub const fn announced_by(self) -> Option<ReservedFlag> {
        match self {
            MessageId::Port => Some(ReservedFlag::Dht),
            MessageId::Suggest
            | MessageId::HaveAll
            | MessageId::HaveNone
            | MessageId::Reject
            | MessageId::AllowedFast => Some(ReservedFlag::Fast),
            MessageId::Extended => Some(ReservedFlag::ExtensionProtocol),
            _ => None,
        }
    }

    const fn shape(self) -> Shape {
        match self {
            MessageId::Choke
            | MessageId::Unchoke
            | MessageId::Interested
            | MessageId::NotInterested
            | MessageId::HaveAll
            | MessageId::HaveNone => Shape::Exact(1),
            MessageId::Have | MessageId::Suggest | MessageId::AllowedFast => Shape::Exact(5),
            MessageId::Request | MessageId::Cancel | MessageId::Reject => Shape::Exact(13),
            MessageId::Port => Shape::Exact(3),
            MessageId::HashRequest | MessageId::HashReject => Shape::Exact(HASH_REQUEST_LEN),
            MessageId::Hashes => Shape::AtLeast(HASH_REQUEST_LEN),
            MessageId::Bitfield => Shape::AtLeast(1),
            MessageId::Piece => Shape::AtLeast(9),
            MessageId::Extended => Shape::AtLeast(2),
        }
    }
}

impl TryFrom<u8> for MessageId {
    type Error = u8;

    /// Converts a wire byte, giving the byte back when it is not a known id.
    fn try_from(id: u8) -> Result<Self, u8> {
        MessageId::from_u8(id).ok_or(id)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The three numbers shared by `request`, `cancel` and `reject request`.
///
/// `len` is whatever the peer sent: bounding it (BEP 3 suggests 16 KiB, see
/// [`limits::MAX_BLOCK_LEN`](crate::limits::MAX_BLOCK_LEN)) is the core's policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockRequest {
    /// The zero-based piece index.
    pub piece: u32,
    /// The byte offset of the block within the piece.
    pub offset: u32,
    /// The block's length in bytes.
    pub len: u32,
}

impl BlockRequest {
    fn append_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.piece.to_be_bytes());
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&self.len.to_be_bytes());
    }
}

/// The length prefix of `hash request` and `hash reject` (and the least of `hashes`): the id
/// byte, the 32-byte pieces root and four 32-bit numbers.
pub const HASH_REQUEST_LEN: u32 = 1 + 32 + 16;

/// The fields shared by BEP 52's `hash request`, `hashes` and `hash reject`.
///
/// The codec checks only the shape; whether `root` names a file of the torrent and whether
/// `base`, `index`, `length` and `proof_layers` fit its tree is the core's to judge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HashRequest {
    /// The file's `pieces root`.
    pub root: [u8; 32],
    /// The layer the hashes start at, counted up from the leaves (0: the 16 KiB blocks).
    pub base: u32,
    /// The position of the first hash in the base layer (a multiple of `length`).
    pub index: u32,
    /// How many hashes of the base layer.
    pub length: u32,
    /// How many layers above the base the proof reaches.
    pub proof_layers: u32,
}

impl HashRequest {
    fn append_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.root);
        for n in [self.base, self.index, self.length, self.proof_layers] {
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

/// One peer wire message, borrowing any variable-length payload from the decoder's input.
///
/// Payloads are [`SplitBytes`] because a frame in a ring buffer may wrap around its end; use
/// [`SplitBytes::copy_to`] or [`SplitBytes::to_vec`] to take them out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A length prefix of 0: keeps an idle connection open.
    KeepAlive,
    /// BEP 3 `choke`.
    Choke,
    /// BEP 3 `unchoke`.
    Unchoke,
    /// BEP 3 `interested`.
    Interested,
    /// BEP 3 `not interested`.
    NotInterested,
    /// BEP 3 `have`: the sender completed `piece`.
    Have {
        /// The piece index.
        piece: u32,
    },
    /// BEP 3 `bitfield`: bit `i` (most significant bit of byte 0 first) says whether the
    /// sender has piece `i`. Checked against the piece count only when the decoder knows it;
    /// otherwise the core calls [`validate_bitfield`] once the count is known.
    Bitfield {
        /// The raw bitfield bytes.
        bits: SplitBytes<'a>,
    },
    /// BEP 3 `request`.
    Request(BlockRequest),
    /// BEP 3 `piece`: a block of data.
    Piece {
        /// The piece index.
        piece: u32,
        /// The byte offset of the block within the piece.
        offset: u32,
        /// The block, borrowed from the input.
        data: SplitBytes<'a>,
    },
    /// BEP 3 `cancel`.
    Cancel(BlockRequest),
    /// BEP 5 `port`: the sender's DHT port.
    Port {
        /// The UDP port of the sender's DHT node.
        port: u16,
    },
    /// BEP 6 `suggest piece`.
    Suggest {
        /// The piece index.
        piece: u32,
    },
    /// BEP 6 `have all`.
    HaveAll,
    /// BEP 6 `have none`.
    HaveNone,
    /// BEP 6 `reject request`.
    Reject(BlockRequest),
    /// BEP 6 `allowed fast`.
    AllowedFast {
        /// The piece index.
        piece: u32,
    },
    /// BEP 10 `extended`: `id` 0 is the extended handshake, any other id is the one the
    /// receiver assigned to an extension in its own handshake.
    Extended {
        /// The extended message id.
        id: u8,
        /// The bytes after the extended id, usually a bencoded dictionary.
        payload: SplitBytes<'a>,
    },
    /// BEP 52 `hash request`.
    HashRequest(HashRequest),
    /// BEP 52 `hashes`: the request it answers and the hashes, 32 bytes each (the decoder
    /// checks the length is a whole number of hashes): the base layer's, then the proof's
    /// uncles from the bottom up.
    Hashes {
        /// The request answered.
        request: HashRequest,
        /// The hashes, borrowed from the input.
        hashes: SplitBytes<'a>,
    },
    /// BEP 52 `hash reject`.
    HashReject(HashRequest),
}

impl Message<'_> {
    /// The message's id, or `None` for a keep-alive, which has none.
    pub const fn id(&self) -> Option<MessageId> {
        Some(match self {
            Message::KeepAlive => return None,
            Message::Choke => MessageId::Choke,
            Message::Unchoke => MessageId::Unchoke,
            Message::Interested => MessageId::Interested,
            Message::NotInterested => MessageId::NotInterested,
            Message::Have { .. } => MessageId::Have,
            Message::Bitfield { .. } => MessageId::Bitfield,
            Message::Request(_) => MessageId::Request,
            Message::Piece { .. } => MessageId::Piece,
            Message::Cancel(_) => MessageId::Cancel,
            Message::Port { .. } => MessageId::Port,
            Message::Suggest { .. } => MessageId::Suggest,
            Message::HaveAll => MessageId::HaveAll,
            Message::HaveNone => MessageId::HaveNone,
            Message::Reject(_) => MessageId::Reject,
            Message::AllowedFast { .. } => MessageId::AllowedFast,
            Message::Extended { .. } => MessageId::Extended,
            Message::HashRequest(_) => MessageId::HashRequest,
            Message::Hashes { .. } => MessageId::Hashes,
            Message::HashReject(_) => MessageId::HashReject,
        })
    }

    /// The value of the length prefix: the id byte plus the payload, 0 for a keep-alive.
    fn body_len(&self) -> usize {
        match self {
            Message::KeepAlive => 0,
            Message::Bitfield { bits } => bits.len().saturating_add(1),
            Message::Piece { data, .. } => data.len().saturating_add(9),
            Message::Extended { payload, .. } => payload.len().saturating_add(2),
            Message::Hashes { hashes, .. } => {
                hashes.len().saturating_add(HASH_REQUEST_LEN as usize)
            }
            fixed => match fixed.id() {
                Some(id) => match id.shape() {
                    Shape::Exact(n) | Shape::AtLeast(n) => n as usize,
                },
                None => 0,
            },
        }
    }

    /// The number of bytes [`encode`](Self::encode) appends, length prefix included.
    pub fn encoded_len(&self) -> usize {
        self.body_len().saturating_add(LENGTH_PREFIX_LEN)
    }

    /// Appends the message, length prefix included, to `out`. It allocates nothing itself;
    /// `out` grows (once) only when its capacity is short.
    ///
    /// # Panics
    ///
    /// Panics if a payload is so long (about 4 GiB) that its length cannot be framed in the
    /// 32-bit prefix. Payloads are built by our own code, never taken from the network.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let body_len = self.body_len();
        let prefix = u32::try_from(body_len).expect("message payload longer than u32::MAX bytes");
        out.reserve(self.encoded_len());
        out.extend_from_slice(&prefix.to_be_bytes());
        let Some(id) = self.id() else {
            return;
        };
        out.push(id.as_u8());
        match *self {
            Message::Have { piece }
            | Message::Suggest { piece }
            | Message::AllowedFast { piece } => out.extend_from_slice(&piece.to_be_bytes()),
            Message::Bitfield { bits } => bits.append_to(out),
            Message::Request(r) | Message::Cancel(r) | Message::Reject(r) => r.append_to(out),
            Message::Piece {
                piece,
                offset,
                data,
            } => {
                out.extend_from_slice(&piece.to_be_bytes());
                out.extend_from_slice(&offset.to_be_bytes());
                data.append_to(out);
            }
            Message::Port { port } => out.extend_from_slice(&port.to_be_bytes()),
            Message::Extended { id, payload } => {
                out.push(id);
                payload.append_to(out);
            }
            Message::HashRequest(r) | Message::HashReject(r) => r.append_to(out),
            Message::Hashes { request, hashes } => {
                request.append_to(out);
                hashes.append_to(out);
            }
            Message::KeepAlive
            | Message::Choke
            | Message::Unchoke
            | Message::Interested
            | Message::NotInterested
            | Message::HaveAll
            | Message::HaveNone => {}
        }
    }
}

/// The 13 bytes that start a `piece` message carrying a block of `block_len` bytes.
///
/// A driver sends these followed by the block straight from the page cache or an mmap
/// (vectored write or `sendfile`), so a served block is never copied into a message buffer.
///
/// # Panics
///
/// Panics if `block_len` is over `u32::MAX - 9`, which no block can be (blocks are bounded by
/// the core long before that).
pub fn piece_header(piece: u32, offset: u32, block_len: u32) -> [u8; PIECE_HEADER_LEN] {
    let prefix = block_len
        .checked_add(9)
        .expect("block too long for a piece message");
    let mut out = [0u8; PIECE_HEADER_LEN];
    let fields = prefix
        .to_be_bytes()
        .into_iter()
        .chain([MessageId::Piece.as_u8()])
        .chain(piece.to_be_bytes())
        .chain(offset.to_be_bytes());
    for (dst, src) in out.iter_mut().zip(fields) {
        *dst = src;
    }
    out
}

/// Appends the 13-byte header of a `piece` message to `out`; see [`piece_header`].
///
/// # Panics
///
/// As [`piece_header`].
pub fn encode_piece_header(piece: u32, offset: u32, block_len: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(&piece_header(piece, offset, block_len));
}

/// The length in bytes of a bitfield for `piece_count` pieces: one bit each, rounded up.
pub fn bitfield_len(piece_count: u32) -> usize {
    usize::try_from(piece_count.div_ceil(8)).unwrap_or(usize::MAX)
}

/// Checks that `bits` is a valid bitfield for a torrent of `piece_count` pieces: exactly
/// [`bitfield_len`] bytes long with every spare bit after the last piece clear.
///
/// The decoder runs this itself when it knows the piece count. A bitfield that arrives before
/// the metadata (a magnet link) can only be checked later, by the core, with this function.
pub fn validate_bitfield<'a>(
    bits: impl Into<SplitBytes<'a>>,
    piece_count: u32,
) -> Result<(), BitfieldError> {
    let bits = bits.into();
    let expected = bitfield_len(piece_count);
    if bits.len() != expected {
        return Err(BitfieldError::WrongLength {
            len: bits.len(),
            expected,
            piece_count,
        });
    }
    let used = piece_count % 8;
    if used != 0 {
        let spare_mask = 0xffu8 >> used;
        let last = expected.checked_sub(1).and_then(|i| bits.get(i));
        if last.is_some_and(|last| last & spare_mask != 0) {
            return Err(BitfieldError::SpareBitsSet { piece_count });
        }
    }
    Ok(())
}

/// Decoding settings for one connection: the frame size limit and, once known, the torrent's
/// piece count.
///
/// Decoding is check-then-parse: [`check`](Self::check) looks only at the length prefix and
/// id byte and says whether a whole, well-shaped frame is buffered; [`decode`](Self::decode)
/// runs the same check and then parses the frame in place without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoder {
    max_message_len: u32,
    piece_count: Option<u32>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

/// A frame whose prefix, id and length have been checked and whose bytes are all buffered.
struct Frame<'a> {
    /// `None` for a keep-alive.
    id: Option<MessageId>,
    /// The length prefix.
    len: u32,
    /// The bytes after the id byte.
    body: SplitBytes<'a>,
}

impl Decoder {
    /// A decoder that accepts frames up to [`MAX_MESSAGE_LEN`] and does not know the piece
    /// count yet.
    pub const fn new() -> Self {
        Decoder {
            max_message_len: MAX_MESSAGE_LEN,
            piece_count: None,
        }
    }

    /// The decoder for a connection to a torrent of `piece_count` pieces: it checks bitfields
    /// against that count and accepts frames up to [`MAX_TORRENT_MESSAGE_LEN`], which holds
    /// both a `piece` message with the largest block and the bitfield of the largest torrent.
    pub const fn for_torrent(piece_count: u32) -> Self {
        Decoder::new()
            .with_piece_count(Some(piece_count))
            .with_max_message_len(MAX_TORRENT_MESSAGE_LEN)
    }

    /// Lowers the largest length prefix accepted, for example to bound the memory of
    /// connections that will never receive a large bitfield. Values above
    /// [`MAX_MESSAGE_LEN`] are clamped to it: that limit is a hard bound, not a default.
    pub const fn with_max_message_len(mut self, max: u32) -> Self {
        self.max_message_len = if max < MAX_MESSAGE_LEN {
            max
        } else {
            MAX_MESSAGE_LEN
        };
        self
    }

    /// Sets the torrent's piece count, so that `bitfield` messages are checked while decoding.
    pub const fn with_piece_count(mut self, piece_count: Option<u32>) -> Self {
        self.piece_count = piece_count;
        self
    }

    /// Sets the piece count once the metadata arrives (from a magnet link).
    pub fn set_piece_count(&mut self, piece_count: Option<u32>) {
        self.piece_count = piece_count;
    }

    /// The largest length prefix accepted.
    pub const fn max_message_len(&self) -> u32 {
        self.max_message_len
    }

    /// The piece count bitfields are checked against, if known.
    pub const fn piece_count(&self) -> Option<u32> {
        self.piece_count
    }

    /// Checks, without parsing the payload, whether `input` starts with a whole frame.
    ///
    /// Framing errors are reported as early as the bytes allow: an oversized length prefix as
    /// soon as its 4 bytes arrive, an unknown id or a wrong length for the id (including a
    /// bitfield that does not fit the known piece count) as soon as the id byte arrives. The
    /// result's `consumed` is the whole frame's length. A `Complete` answer here does not
    /// promise that [`decode`](Self::decode) succeeds: spare bits in a bitfield are only seen
    /// when parsing.
    pub fn check<'a>(&self, input: impl Into<SplitBytes<'a>>) -> Result<Decoded<()>, MessageError> {
        Ok(self.frame(input.into())?.map(|_| ()))
    }

    /// Decodes the message at the start of `input`, returning it with the number of bytes it
    /// took (length prefix included), or how many more bytes are needed.
    ///
    /// The message borrows its payload from `input`; nothing is allocated or copied.
    pub fn decode<'a>(
        &self,
        input: impl Into<SplitBytes<'a>>,
    ) -> Result<Decoded<Message<'a>>, MessageError> {
        let (frame, consumed) = match self.frame(input.into())? {
            Decoded::Complete { value, consumed } => (value, consumed),
            Decoded::Incomplete { needed } => return Ok(Decoded::Incomplete { needed }),
        };
        let value = self.parse(frame)?;
        Ok(Decoded::Complete { value, consumed })
    }

    /// The check half: finds and shape-checks the frame at the start of `input`.
    fn frame<'a>(&self, input: SplitBytes<'a>) -> Result<Decoded<Frame<'a>>, MessageError> {
        let have = input.len();
        let Some(prefix) = input.read_array::<LENGTH_PREFIX_LEN>(0) else {
            return Ok(Decoded::need(LENGTH_PREFIX_LEN.saturating_sub(have)));
        };
        let len = u32::from_be_bytes(prefix);
        let too_long = MessageError::TooLong {
            len,
            max: self.max_message_len,
        };
        if len > self.max_message_len {
            return Err(too_long);
        }
        if len == 0 {
            return Ok(Decoded::Complete {
                value: Frame {
                    id: None,
                    len,
                    body: SplitBytes::default(),
                },
                consumed: LENGTH_PREFIX_LEN,
            });
        }
        let frame_len = usize::try_from(len)
            .ok()
            .and_then(|len| len.checked_add(LENGTH_PREFIX_LEN))
            .ok_or(too_long)?;
        let Some(id_byte) = input.get(LENGTH_PREFIX_LEN) else {
            return Ok(Decoded::need(frame_len.saturating_sub(have)));
        };
        let id = MessageId::from_u8(id_byte).ok_or(MessageError::UnknownId { id: id_byte, len })?;
        self.check_shape(id, len)?;
        Ok(match input.subrange(LENGTH_PREFIX_LEN + 1, frame_len) {
            Some(body) => Decoded::Complete {
                value: Frame {
                    id: Some(id),
                    len,
                    body,
                },
                consumed: frame_len,
            },
            None => Decoded::need(frame_len.saturating_sub(have)),
        })
    }

    /// Checks the length prefix against what a message of type `id` can be.
    fn check_shape(&self, id: MessageId, len: u32) -> Result<(), MessageError> {
        match id.shape() {
            Shape::Exact(expected) if len != expected => {
                return Err(MessageError::WrongLength { id, len, expected });
            }
            Shape::AtLeast(_) if id == MessageId::Extended && len < 2 => {
                return Err(MessageError::EmptyExtended);
            }
            Shape::AtLeast(min) if len < min => {
                return Err(MessageError::TooShort { id, len, min });
            }
            _ => {}
        }
        if id == MessageId::Hashes && len.saturating_sub(HASH_REQUEST_LEN) % 32 != 0 {
            return Err(MessageError::PartialHash { len });
        }
        if let (MessageId::Bitfield, Some(piece_count)) = (id, self.piece_count) {
            let expected = bitfield_len(piece_count);
            let bits_len = usize::try_from(len.saturating_sub(1)).unwrap_or(usize::MAX);
            if bits_len != expected {
                return Err(BitfieldError::WrongLength {
                    len: bits_len,
                    expected,
                    piece_count,
                }
                .into());
            }
        }
        Ok(())
    }

    /// The parse half: reads the fields of a frame that [`frame`](Self::frame) accepted.
    fn parse<'a>(&self, frame: Frame<'a>) -> Result<Message<'a>, MessageError> {
        let Frame { id, len, body } = frame;
        let Some(id) = id else {
            return Ok(Message::KeepAlive);
        };
        // The shape check guarantees every read below is in range; should one still fail, the
        // frame is reported as having the wrong length rather than trusted.
        let wrong = || match id.shape() {
            Shape::Exact(expected) => MessageError::WrongLength { id, len, expected },
            Shape::AtLeast(min) => MessageError::TooShort { id, len, min },
        };
        let u32_at = |at: usize| {
            body.read_array::<4>(at)
                .map(u32::from_be_bytes)
                .ok_or_else(wrong)
        };
        let request = || -> Result<BlockRequest, MessageError> {
            Ok(BlockRequest {
                piece: u32_at(0)?,
                offset: u32_at(4)?,
                len: u32_at(8)?,
            })
        };
        let hash_request = || -> Result<HashRequest, MessageError> {
            Ok(HashRequest {
                root: body.read_array::<32>(0).ok_or_else(wrong)?,
                base: u32_at(32)?,
                index: u32_at(36)?,
                length: u32_at(40)?,
                proof_layers: u32_at(44)?,
            })
        };
        Ok(match id {
            MessageId::HashRequest => Message::HashRequest(hash_request()?),
            MessageId::HashReject => Message::HashReject(hash_request()?),
            MessageId::Hashes => Message::Hashes {
                request: hash_request()?,
                hashes: body.split_at(48).ok_or_else(wrong)?.1,
            },
            MessageId::Choke => Message::Choke,
            MessageId::Unchoke => Message::Unchoke,
            MessageId::Interested => Message::Interested,
            MessageId::NotInterested => Message::NotInterested,
            MessageId::HaveAll => Message::HaveAll,
            MessageId::HaveNone => Message::HaveNone,
            MessageId::Have => Message::Have { piece: u32_at(0)? },
            MessageId::Suggest => Message::Suggest { piece: u32_at(0)? },
            MessageId::AllowedFast => Message::AllowedFast { piece: u32_at(0)? },
            MessageId::Request => Message::Request(request()?),
            MessageId::Cancel => Message::Cancel(request()?),
            MessageId::Reject => Message::Reject(request()?),
            MessageId::Bitfield => {
                if let Some(piece_count) = self.piece_count {
                    validate_bitfield(body, piece_count)?;
                }
                Message::Bitfield { bits: body }
            }
            MessageId::Piece => Message::Piece {
                piece: u32_at(0)?,
                offset: u32_at(4)?,
                data: body.split_at(8).ok_or_else(wrong)?.1,
            },
            MessageId::Port => Message::Port {
                port: body
                    .read_array::<2>(0)
                    .map(u16::from_be_bytes)
                    .ok_or_else(wrong)?,
            },
            MessageId::Extended => {
                let (ext_id, payload) = body.split_at(1).ok_or(MessageError::EmptyExtended)?;
                Message::Extended {
                    id: ext_id.get(0).ok_or(MessageError::EmptyExtended)?,
                    payload,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{MAX_BITFIELD_MESSAGE_LEN, MAX_BLOCK_LEN, MAX_PIECES};
    use std::num::NonZeroUsize;

    fn encode(m: &Message<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        m.encode(&mut out);
        assert_eq!(out.len(), m.encoded_len());
        out
    }

    /// Decodes `bytes` at every split and checks it yields `expected` using all the bytes.
    fn assert_decodes(decoder: &Decoder, bytes: &[u8], expected: &Message<'_>) {
        for i in 0..=bytes.len() {
            let (a, b) = bytes.split_at(i);
            let got = decoder.decode((a, b)).unwrap();
            assert_eq!(got.complete(), Some((*expected, bytes.len())), "split {i}");
            assert!(decoder.check((a, b)).unwrap().is_complete());
        }
    }

    fn assert_error(decoder: &Decoder, bytes: &[u8], expected: MessageError) {
        for i in 0..=bytes.len() {
            let (a, b) = bytes.split_at(i);
            assert_eq!(decoder.decode((a, b)), Err(expected), "split {i}");
        }
    }

    const REQ: BlockRequest = BlockRequest {
        piece: 0x0102_0304,
        offset: 0x4000,
        len: 0x4000,
    };

    const HREQ: HashRequest = HashRequest {
        root: [0xab; 32],
        base: 2,
        index: 512,
        length: 512,
        proof_layers: 0x0102_0304,
    };

    /// A BEP 52 hash message spelled out byte by byte: prefix, id, root, the four numbers.
    fn hash_frame(id: u8, hashes: &[u8]) -> Vec<u8> {
        let mut out = u32::try_from(49 + hashes.len())
            .unwrap()
            .to_be_bytes()
            .to_vec();
        out.push(id);
        out.extend_from_slice(&[0xab; 32]);
        out.extend_from_slice(&[0, 0, 0, 2, 0, 0, 2, 0, 0, 0, 2, 0, 1, 2, 3, 4]);
        out.extend_from_slice(hashes);
        out
    }

    #[test]
    fn hash_messages_check_their_shape() {
        // A request or reject is exactly 49 bytes; hashes a whole number of hashes past that.
        for id in [MessageId::HashRequest, MessageId::HashReject] {
            let mut bytes = hash_frame(id.as_u8(), &[0]);
            assert_error(
                &Decoder::new(),
                &bytes,
                MessageError::WrongLength {
                    id,
                    len: 50,
                    expected: 49,
                },
            );
            bytes.truncate(4 + 48);
            bytes[..4].copy_from_slice(&48u32.to_be_bytes());
            assert!(matches!(
                Decoder::new().decode(&bytes[..]),
                Err(MessageError::WrongLength { len: 48, .. })
            ));
        }
        for extra in [1usize, 31, 33, 63] {
            let bytes = hash_frame(22, &vec![7; extra]);
            let len = u32::try_from(49 + extra).unwrap();
            assert_error(&Decoder::new(), &bytes, MessageError::PartialHash { len });
            // Known from the prefix and id alone, before the body arrives.
            assert_eq!(
                Decoder::new().check(&bytes[..5]),
                Err(MessageError::PartialHash { len })
            );
        }
        let short = [0, 0, 0, 20, 22];
        assert!(matches!(
            Decoder::new().decode(&short[..]),
            Err(MessageError::TooShort {
                len: 20,
                min: 49,
                ..
            })
        ));
        // No hashes at all is a well-formed (if useless) answer: the core judges it.
        assert!(Decoder::new()
            .decode(&hash_frame(22, &[])[..])
            .unwrap()
            .is_complete());
    }

    #[test]
    fn every_message_has_its_documented_bytes() {
        let two_hashes = [[0x11u8; 32], [0x22; 32]].concat();
        let block = [0xee; 5];
        let cases: Vec<(Message<'_>, Vec<u8>)> = vec![
            (Message::KeepAlive, vec![0, 0, 0, 0]),
            (Message::Choke, vec![0, 0, 0, 1, 0]),
            (Message::Unchoke, vec![0, 0, 0, 1, 1]),
            (Message::Interested, vec![0, 0, 0, 1, 2]),
            (Message::NotInterested, vec![0, 0, 0, 1, 3]),
            (Message::Have { piece: 7 }, vec![0, 0, 0, 5, 4, 0, 0, 0, 7]),
            (
                Message::Bitfield {
                    bits: SplitBytes::single(&[0xff, 0x80]),
                },
                vec![0, 0, 0, 3, 5, 0xff, 0x80],
            ),
            (
                Message::Request(REQ),
                vec![0, 0, 0, 13, 6, 1, 2, 3, 4, 0, 0, 0x40, 0, 0, 0, 0x40, 0],
            ),
            (
                Message::Piece {
                    piece: 1,
                    offset: 2,
                    data: SplitBytes::single(&block),
                },
                vec![
                    0, 0, 0, 14, 7, 0, 0, 0, 1, 0, 0, 0, 2, 0xee, 0xee, 0xee, 0xee, 0xee,
                ],
            ),
            (
                Message::Cancel(REQ),
                vec![0, 0, 0, 13, 8, 1, 2, 3, 4, 0, 0, 0x40, 0, 0, 0, 0x40, 0],
            ),
            (
                Message::Port { port: 6881 },
                vec![0, 0, 0, 3, 9, 0x1a, 0xe1],
            ),
            (
                Message::Suggest { piece: 9 },
                vec![0, 0, 0, 5, 0x0d, 0, 0, 0, 9],
            ),
            (Message::HaveAll, vec![0, 0, 0, 1, 0x0e]),
            (Message::HaveNone, vec![0, 0, 0, 1, 0x0f]),
            (
                Message::Reject(REQ),
                vec![0, 0, 0, 13, 0x10, 1, 2, 3, 4, 0, 0, 0x40, 0, 0, 0, 0x40, 0],
            ),
            (
                Message::AllowedFast { piece: 0xffff_ffff },
                vec![0, 0, 0, 5, 0x11, 0xff, 0xff, 0xff, 0xff],
            ),
            (
                Message::Extended {
                    id: 0,
                    payload: SplitBytes::single(b"de"),
                },
                vec![0, 0, 0, 4, 20, 0, b'd', b'e'],
            ),
            (
                Message::Extended {
                    id: 3,
                    payload: SplitBytes::default(),
                },
                vec![0, 0, 0, 2, 20, 3],
            ),
            (
                Message::Bitfield {
                    bits: SplitBytes::default(),
                },
                vec![0, 0, 0, 1, 5],
            ),
            (Message::HashRequest(HREQ), hash_frame(21, &[])),
            (Message::HashReject(HREQ), hash_frame(23, &[])),
            (
                Message::Hashes {
                    request: HREQ,
                    hashes: SplitBytes::single(&two_hashes),
                },
                hash_frame(22, &two_hashes),
            ),
            (
                Message::Piece {
                    piece: 0,
                    offset: 0,
                    data: SplitBytes::default(),
                },
                vec![0, 0, 0, 9, 7, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
        ];
        let decoder = Decoder::new();
        for (message, bytes) in &cases {
            assert_eq!(&encode(message), bytes, "{message:?}");
            assert_decodes(&decoder, bytes, message);
        }
        // Every id is covered.
        for id in MessageId::ALL {
            assert!(cases.iter().any(|(m, _)| m.id() == Some(id)), "{id}");
        }
    }

    #[test]
    fn decodes_one_frame_and_leaves_the_next() {
        let mut bytes = encode(&Message::Have { piece: 1 });
        bytes.extend_from_slice(&encode(&Message::Unchoke));
        let (m, used) = Decoder::new().decode(&bytes).unwrap().complete().unwrap();
        assert_eq!((m, used), (Message::Have { piece: 1 }, 9));
        let (m, used) = Decoder::new()
            .decode(&bytes[used..])
            .unwrap()
            .complete()
            .unwrap();
        assert_eq!((m, used), (Message::Unchoke, 5));
    }

    #[test]
    fn payloads_borrow_across_the_split() {
        let bytes = encode(&Message::Piece {
            piece: 3,
            offset: 16384,
            data: SplitBytes::single(b"hello world"),
        });
        let (a, b) = bytes.split_at(16);
        let (m, _) = Decoder::new().decode((a, b)).unwrap().complete().unwrap();
        let Message::Piece { data, .. } = m else {
            panic!("{m:?}")
        };
        assert_eq!(data.as_slices(), (&b"hel"[..], &b"lo world"[..]));
        assert_eq!(data.to_vec(), b"hello world");
    }

    #[test]
    fn incomplete_reports_the_missing_bytes() {
        let bytes = encode(&Message::Request(REQ));
        let decoder = Decoder::new();
        for have in 0..bytes.len() {
            let needed = if have < 4 { 4 - have } else { 17 - have };
            let needed = NonZeroUsize::new(needed).unwrap();
            let expected = Decoded::Incomplete { needed };
            assert_eq!(decoder.decode(&bytes[..have]), Ok(expected), "have {have}");
            assert_eq!(
                decoder.check(&bytes[..have]),
                Ok(Decoded::Incomplete { needed })
            );
        }
    }

    #[test]
    fn oversized_prefix_is_rejected_before_the_body() {
        let max = MAX_MESSAGE_LEN;
        let bytes = (max + 1).to_be_bytes();
        let err = MessageError::TooLong { len: max + 1, max };
        assert_error(&Decoder::new(), &bytes, err);
        assert_eq!(Decoder::new().check(&bytes), Err(err));
        assert_error(
            &Decoder::new(),
            &u32::MAX.to_be_bytes(),
            MessageError::TooLong { len: u32::MAX, max },
        );
        // Exactly the limit is fine: it waits for the body.
        let prefix = max.to_be_bytes();
        let ok = Decoder::new().decode(&prefix).unwrap();
        assert!(!ok.is_complete());
        // A lowered limit applies; a raised one is clamped.
        let small = Decoder::new().with_max_message_len(100);
        assert_eq!(small.max_message_len(), 100);
        assert_error(
            &small,
            &101u32.to_be_bytes(),
            MessageError::TooLong { len: 101, max: 100 },
        );
        assert_eq!(
            Decoder::new()
                .with_max_message_len(u32::MAX)
                .max_message_len(),
            MAX_MESSAGE_LEN
        );
    }

    #[test]
    fn unknown_ids_are_rejected_at_the_id_byte() {
        for id in (0..=255u8).filter(|&id| MessageId::from_u8(id).is_none()) {
            let err = MessageError::UnknownId { id, len: 1000 };
            assert_error(&Decoder::new(), &[0, 0, 0x03, 0xe8, id], err);
            assert_eq!(MessageId::try_from(id), Err(id));
        }
        for id in MessageId::ALL {
            assert_eq!(MessageId::try_from(id.as_u8()), Ok(id));
        }
    }

    #[test]
    fn fixed_messages_with_the_wrong_length_are_rejected() {
        let cases = [
            (MessageId::Choke, 1),
            (MessageId::Unchoke, 1),
            (MessageId::Interested, 1),
            (MessageId::NotInterested, 1),
            (MessageId::HaveAll, 1),
            (MessageId::HaveNone, 1),
            (MessageId::Have, 5),
            (MessageId::Suggest, 5),
            (MessageId::AllowedFast, 5),
            (MessageId::Request, 13),
            (MessageId::Cancel, 13),
            (MessageId::Reject, 13),
            (MessageId::Port, 3),
        ];
        for (id, expected) in cases {
            for len in [1, 2, 3, 4, 5, 6, 12, 13, 14, 17] {
                if len == expected {
                    continue;
                }
                let mut bytes = u32::to_be_bytes(len).to_vec();
                bytes.push(id.as_u8());
                bytes.resize(4 + len as usize, 0);
                let err = MessageError::WrongLength { id, len, expected };
                assert_error(&Decoder::new(), &bytes, err);
                assert!(err.to_string().contains(id.name()));
            }
        }
    }

    #[test]
    fn short_piece_and_empty_extended_are_rejected() {
        for len in 1..9u32 {
            let mut bytes = len.to_be_bytes().to_vec();
            bytes.push(7);
            bytes.resize(4 + len as usize, 0);
            let err = MessageError::TooShort {
                id: MessageId::Piece,
                len,
                min: 9,
            };
            assert_error(&Decoder::new(), &bytes, err);
        }
        assert_error(
            &Decoder::new(),
            &[0, 0, 0, 1, 20],
            MessageError::EmptyExtended,
        );
        assert_eq!(
            MessageError::EmptyExtended.to_string(),
            "extended message without an extended message id"
        );
    }

    #[test]
    fn bitfield_is_checked_when_the_piece_count_is_known() {
        let decoder = Decoder::new().with_piece_count(Some(10));
        assert_eq!(decoder.piece_count(), Some(10));
        let good = [0, 0, 0, 3, 5, 0xff, 0xc0];
        assert_decodes(
            &decoder,
            &good,
            &Message::Bitfield {
                bits: SplitBytes::single(&[0xff, 0xc0]),
            },
        );
        // A wrong length is known from the prefix alone.
        let long = [0, 0, 0, 4, 5];
        let err = MessageError::Bitfield(BitfieldError::WrongLength {
            len: 3,
            expected: 2,
            piece_count: 10,
        });
        assert_error(&decoder, &long, err);
        let spare = [0, 0, 0, 3, 5, 0xff, 0xe0];
        let err = MessageError::Bitfield(BitfieldError::SpareBitsSet { piece_count: 10 });
        assert_error(&decoder, &spare, err);
        // Spare bits are a parse error, not a check error.
        assert!(decoder.check(&spare).unwrap().is_complete());
        // Without a piece count both decode, and the core validates later.
        let mut unknown = decoder;
        unknown.set_piece_count(None);
        for bytes in [&good[..], &spare[..]] {
            assert!(unknown.decode(bytes).unwrap().is_complete());
        }
    }

    #[test]
    fn a_bitfield_for_the_largest_torrent_decodes_on_a_torrent_connection() {
        let pieces = u32::try_from(MAX_PIECES).unwrap();
        let decoder = Decoder::for_torrent(pieces);
        let bits = vec![0xff; bitfield_len(pieces)];
        let mut bytes = Vec::new();
        Message::Bitfield {
            bits: SplitBytes::single(&bits),
        }
        .encode(&mut bytes);
        assert_eq!(bytes.len(), 4 + MAX_BITFIELD_MESSAGE_LEN as usize);
        // MAX_PIECES is not a multiple of 8: the spare bits must be clear.
        let last = bytes.len() - 1;
        bytes[last] = 0xff << (8 - pieces % 8);
        let decoded = decoder.decode(&bytes[..]).unwrap();
        assert!(decoded.is_complete());
        // So does a piece message with the largest block.
        let mut piece = Vec::new();
        encode_piece_header(0, 0, MAX_BLOCK_LEN, &mut piece);
        piece.resize(piece.len() + MAX_BLOCK_LEN as usize, 0);
        assert!(decoder.decode(&piece[..]).unwrap().is_complete());
        // One byte more than the largest message is still refused.
        let max = decoder.max_message_len();
        assert_error(
            &decoder,
            &(max + 1).to_be_bytes(),
            MessageError::TooLong { len: max + 1, max },
        );
    }

    #[test]
    fn validate_bitfield_checks_length_and_spare_bits() {
        assert_eq!(validate_bitfield(&[], 0), Ok(()));
        assert_eq!(validate_bitfield(&[0xff], 8), Ok(()));
        assert_eq!(validate_bitfield(&[0xff, 0x80], 9), Ok(()));
        assert_eq!(
            validate_bitfield(&[0xff, 0x40], 9),
            Err(BitfieldError::SpareBitsSet { piece_count: 9 })
        );
        assert_eq!(
            validate_bitfield(&[0xff], 9),
            Err(BitfieldError::WrongLength {
                len: 1,
                expected: 2,
                piece_count: 9
            })
        );
        assert_eq!(
            validate_bitfield((&[0xff][..], &[0x01][..]), 15),
            Err(BitfieldError::SpareBitsSet { piece_count: 15 })
        );
        assert_eq!(validate_bitfield((&[0xff][..], &[0xfe][..]), 15), Ok(()));
        assert_eq!(bitfield_len(0), 0);
        assert_eq!(bitfield_len(1), 1);
        assert_eq!(bitfield_len(u32::MAX), 1 << 29);
        let err = BitfieldError::WrongLength {
            len: 1,
            expected: 2,
            piece_count: 9,
        };
        assert_eq!(
            err.to_string(),
            "bitfield of 1 bytes does not match 9 pieces, which take 2 bytes"
        );
    }

    #[test]
    fn piece_header_matches_the_full_message() {
        let block = vec![0x5a; 16384];
        let full = encode(&Message::Piece {
            piece: 42,
            offset: 32768,
            data: SplitBytes::single(&block),
        });
        let header = piece_header(42, 32768, 16384);
        assert_eq!(&full[..PIECE_HEADER_LEN], &header);
        let mut out = vec![9];
        encode_piece_header(42, 32768, 16384, &mut out);
        assert_eq!(&out[1..], &header);
    }

    #[test]
    fn ids_name_the_bit_that_announces_them() {
        assert_eq!(MessageId::Have.announced_by(), None);
        assert_eq!(MessageId::Port.announced_by(), Some(ReservedFlag::Dht));
        assert_eq!(MessageId::Reject.announced_by(), Some(ReservedFlag::Fast));
        assert_eq!(
            MessageId::Extended.announced_by(),
            Some(ReservedFlag::ExtensionProtocol)
        );
        assert_eq!(MessageId::Reject.to_string(), "reject request");
        assert_eq!(Message::KeepAlive.id(), None);
    }
}
