//! Fixtures the core's test modules share.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::bencode::OwnedValue;
use crate::metainfo::{Info, Torrent};

/// The info of a one-file torrent named `name`: `length` bytes in pieces of `piece_len`,
/// with `hashes` (20 bytes a piece) as its piece hashes.
pub(crate) fn single_file_info(
    name: &str,
    piece_len: u32,
    length: i64,
    hashes: Vec<u8>,
) -> Arc<Info> {
    let mut info = BTreeMap::new();
    info.insert(b"name".to_vec(), OwnedValue::str(name));
    info.insert(b"piece length".to_vec(), OwnedValue::Int(piece_len.into()));
    info.insert(b"pieces".to_vec(), OwnedValue::Bytes(hashes));
    info.insert(b"length".to_vec(), OwnedValue::Int(length));
    let mut root = BTreeMap::new();
    root.insert(b"info".to_vec(), OwnedValue::Dict(info));
    Arc::new(
        Torrent::from_bytes(&OwnedValue::Dict(root).to_bytes())
            .unwrap()
            .info,
    )
}

/// [`single_file_info`] of `pieces` whole pieces whose hashes are all zero: for tests of the
/// wire and the session, where no piece is ever verified.
pub(crate) fn zero_hash_info(name: &str, piece_len: u32, pieces: u32) -> Arc<Info> {
    let length = i64::from(pieces) * i64::from(piece_len);
    single_file_info(name, piece_len, length, vec![0; 20 * pieces as usize])
}
