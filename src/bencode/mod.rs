//! Bencode (BEP 3): a decoder that keeps the exact byte span of every value, and an encoder.
//!
//! Spans matter because a torrent's info hash is the SHA1 of the `info` value's bytes exactly
//! as they stand in the file; re-encoding a parsed dictionary changes them whenever the file
//! has unsorted or unknown keys. No bencode crate reports spans, so this one is hand-written.
//!
//! The decoder borrows from its input (strings are slices of it), checks every length against
//! the bytes that remain before it allocates, and bounds nesting depth, value count and input
//! size ([`Limits`]). Errors carry the byte offset where decoding stopped.

mod decode;
mod encode;

pub use decode::{
    decode, decode_prefix, decode_with, DecodeError, DecodeErrorKind, Limits, Node, Value,
};
pub use encode::{write_bytes, write_int, OwnedValue};
