//! The payloads of two BEP 10 extensions: `ut_metadata` (BEP 9, the info dictionary in
//! 16 KiB pieces) and `ut_pex` (BEP 11, peer exchange). Like the rest of the codec this only
//! checks shape; which messages are allowed when, and what sizes are acceptable, is the core's
//! policy.

use std::collections::BTreeMap;

use ::core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::bencode::{self, DecodeError, Limits, OwnedValue};
use crate::limits::{MAX_BENCODE_DEPTH, MAX_MESSAGE_LEN};

/// The extension names in `m`.
pub const UT_METADATA: &str = "ut_metadata";
/// BEP 11's extension name.
pub const UT_PEX: &str = "ut_pex";

/// The size of a metadata piece (BEP 9); only the last piece may be shorter.
pub const METADATA_PIECE_LEN: u32 = 16 * 1024;

/// Bencode limits for a metadata message's dictionary and a PEX message: small dictionaries
/// with a handful of values (PEX strings are compact, so the count stays small too).
const LIMITS: Limits = Limits {
    max_depth: MAX_BENCODE_DEPTH,
    max_values: 64,
    max_len: MAX_MESSAGE_LEN as usize,
};

/// Why a `ut_metadata` or `ut_pex` payload could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UtError {
    /// Not one well-formed bencode dictionary (plus, for metadata data, the piece bytes).
    #[error("not valid bencode: {0}")]
    Bencode(DecodeError),
    /// A required key is missing or has the wrong type or range.
    #[error("missing or invalid `{0}`")]
    Field(&'static str),
    /// Bytes after the dictionary of a message that carries none.
    #[error("trailing bytes")]
    Trailing,
}

// Not `#[from]`: that would also make the inner error the `source`, and the text it already
// puts in `Display` would print twice in a `{:#}` chain.
impl From<DecodeError> for UtError {
    fn from(e: DecodeError) -> Self {
        UtError::Bencode(e)
    }
}

/// A BEP 9 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataMsg<'a> {
    /// `msg_type` 0: asks for piece `piece`.
    Request {
        /// The metadata piece.
        piece: u32,
    },
    /// `msg_type` 1: piece `piece` of metadata `total_size` bytes long.
    Data {
        /// The metadata piece.
        piece: u32,
        /// The whole info dictionary's length, as the sender says.
        total_size: u64,
        /// The piece's bytes.
        data: &'a [u8],
    },
    /// `msg_type` 2: the sender will not send piece `piece`.
    Reject {
        /// The metadata piece.
        piece: u32,
    },
}

impl<'a> MetadataMsg<'a> {
    /// Parses a `ut_metadata` payload (the bytes after the extended id). Unknown `msg_type`s
    /// are errors only as far as BEP 9 says: the caller ignores them (`Ok(None)`).
    pub fn decode(payload: &'a [u8]) -> Result<Option<MetadataMsg<'a>>, UtError> {
        let (dict, used) = bencode::decode_prefix(payload, &LIMITS)?;
        if dict.as_dict().is_none() {
            return Err(UtError::Field("msg_type"));
        }
        let msg_type = dict
            .get(b"msg_type")
            .and_then(|v| v.as_int())
            .ok_or(UtError::Field("msg_type"))?;
        let piece = dict
            .get(b"piece")
            .and_then(|v| v.as_int())
            .and_then(|p| u32::try_from(p).ok())
            .ok_or(UtError::Field("piece"))?;
        let rest = &payload[used..];
        match msg_type {
            0 | 2 if !rest.is_empty() => Err(UtError::Trailing),
            0 => Ok(Some(MetadataMsg::Request { piece })),
            2 => Ok(Some(MetadataMsg::Reject { piece })),
            1 => {
                let total_size = dict
                    .get(b"total_size")
                    .and_then(|v| v.as_int())
                    .and_then(|t| u64::try_from(t).ok())
                    .ok_or(UtError::Field("total_size"))?;
                Ok(Some(MetadataMsg::Data {
                    piece,
                    total_size,
                    data: rest,
                }))
            }
            _ => Ok(None),
        }
    }

    /// Appends the payload (dictionary, then the piece's bytes for `Data`) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut dict = BTreeMap::new();
        let (kind, piece) = match self {
            MetadataMsg::Request { piece } => (0, piece),
            MetadataMsg::Data {
                piece, total_size, ..
            } => {
                dict.insert(
                    b"total_size".to_vec(),
                    OwnedValue::Int(i64::try_from(*total_size).unwrap_or(i64::MAX)),
                );
                (1, piece)
            }
            MetadataMsg::Reject { piece } => (2, piece),
        };
        dict.insert(b"msg_type".to_vec(), OwnedValue::Int(kind));
        dict.insert(b"piece".to_vec(), OwnedValue::Int((*piece).into()));
        OwnedValue::Dict(dict).encode(out);
        if let MetadataMsg::Data { data, .. } = self {
            out.extend_from_slice(data);
        }
    }
}

/// A BEP 11 message: peers the sender connected to and dropped since its last message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PexMsg {
    /// `added` and `added6`, in order, each with its `added.f` flags byte (0 if absent).
    pub added: Vec<(SocketAddr, u8)>,
    /// `dropped` and `dropped6`.
    pub dropped: Vec<SocketAddr>,
}

impl PexMsg {
    /// Parses a `ut_pex` payload, keeping at most `max` added and `max` dropped peers (the
    /// rest are ignored, not an error). Strings whose length is not a multiple of the compact
    /// size are cut to the last whole entry.
    pub fn decode(payload: &[u8], max: usize) -> Result<PexMsg, UtError> {
        let dict = bencode::decode_with(payload, &LIMITS)?;
        if dict.as_dict().is_none() {
            return Err(UtError::Field("added"));
        }
        let get = |key: &[u8]| dict.get(key).and_then(|v| v.as_bytes()).unwrap_or(&[]);
        let mut msg = PexMsg::default();
        let flags = get(b"added.f");
        for (i, addr) in compact(get(b"added"), 6).enumerate() {
            msg.added.push((addr, flags.get(i).copied().unwrap_or(0)));
        }
        let flags6 = get(b"added6.f");
        for (i, addr) in compact(get(b"added6"), 18).enumerate() {
            msg.added.push((addr, flags6.get(i).copied().unwrap_or(0)));
        }
        msg.added.truncate(max);
        msg.dropped = compact(get(b"dropped"), 6)
            .chain(compact(get(b"dropped6"), 18))
            .take(max)
            .collect();
        Ok(msg)
    }

    /// The bencoded payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut dict = BTreeMap::new();
        let mut put = |key: &str, value: Vec<u8>| {
            dict.insert(key.as_bytes().to_vec(), OwnedValue::Bytes(value));
        };
        let (mut a4, mut f4, mut a6, mut f6) = (vec![], vec![], vec![], vec![]);
        for &(addr, flags) in &self.added {
            if addr.is_ipv4() {
                push_compact(&mut a4, addr);
                f4.push(flags);
            } else {
                push_compact(&mut a6, addr);
                f6.push(flags);
            }
        }
        let (mut d4, mut d6) = (vec![], vec![]);
        for &addr in &self.dropped {
            push_compact(if addr.is_ipv4() { &mut d4 } else { &mut d6 }, addr);
        }
        put("added", a4);
        put("added.f", f4);
        put("dropped", d4);
        if !a6.is_empty() {
            put("added6", a6);
            put("added6.f", f6);
        }
        if !d6.is_empty() {
            put("dropped6", d6);
        }
        OwnedValue::Dict(dict).encode(out);
    }
}

fn compact(bytes: &[u8], size: usize) -> impl Iterator<Item = SocketAddr> + '_ {
    bytes.chunks_exact(size).map(move |c| {
        let port = u16::from_be_bytes([c[size - 2], c[size - 1]]);
        let ip = if size == 6 {
            IpAddr::V4(Ipv4Addr::new(c[0], c[1], c[2], c[3]))
        } else {
            let mut a = [0u8; 16];
            a.copy_from_slice(&c[..16]);
            IpAddr::V6(Ipv6Addr::from(a))
        };
        SocketAddr::new(ip, port)
    })
}

fn push_compact(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()),
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_messages_round_trip_byte_exact() {
        let mut out = Vec::new();
        MetadataMsg::Request { piece: 0 }.encode(&mut out);
        assert_eq!(out, b"d8:msg_typei0e5:piecei0ee");
        assert_eq!(
            MetadataMsg::decode(&out).unwrap(),
            Some(MetadataMsg::Request { piece: 0 })
        );
        out.clear();
        MetadataMsg::Data {
            piece: 1,
            total_size: 34256,
            data: b"xyz",
        }
        .encode(&mut out);
        assert_eq!(out, b"d8:msg_typei1e5:piecei1e10:total_sizei34256eexyz");
        assert_eq!(
            MetadataMsg::decode(&out).unwrap(),
            Some(MetadataMsg::Data {
                piece: 1,
                total_size: 34256,
                data: b"xyz"
            })
        );
        out.clear();
        MetadataMsg::Reject { piece: 7 }.encode(&mut out);
        assert_eq!(out, b"d8:msg_typei2e5:piecei7ee");
        assert_eq!(
            MetadataMsg::decode(&out).unwrap(),
            Some(MetadataMsg::Reject { piece: 7 })
        );
    }

    #[test]
    fn bad_metadata_messages_are_errors_and_unknown_types_ignored() {
        assert_eq!(MetadataMsg::decode(b"d8:msg_typei9e5:piecei0ee"), Ok(None));
        assert_eq!(
            MetadataMsg::decode(b"d8:msg_typei0ee"),
            Err(UtError::Field("piece"))
        );
        assert_eq!(
            MetadataMsg::decode(b"d8:msg_typei1e5:piecei0ee"),
            Err(UtError::Field("total_size"))
        );
        assert_eq!(
            MetadataMsg::decode(b"d8:msg_typei0e5:piecei-1ee"),
            Err(UtError::Field("piece"))
        );
        assert_eq!(
            MetadataMsg::decode(b"d8:msg_typei0e5:piecei0eejunk"),
            Err(UtError::Trailing)
        );
        assert!(MetadataMsg::decode(b"le").is_err());
        assert!(MetadataMsg::decode(b"d8:msg_type").is_err());
    }

    #[test]
    fn pex_round_trips_and_is_bounded() {
        let a: SocketAddr = "10.0.0.1:6881".parse().unwrap();
        let b: SocketAddr = "[::1]:51413".parse().unwrap();
        let c: SocketAddr = "192.168.1.9:80".parse().unwrap();
        let msg = PexMsg {
            added: vec![(a, 0x10), (b, 0x02)],
            dropped: vec![c],
        };
        let mut out = Vec::new();
        msg.encode(&mut out);
        assert_eq!(
            &out[..],
            &b"d5:added6:\x0a\x00\x00\x01\x1a\xe17:added.f1:\x106:added618:\
               \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\xc8\xd5\
               8:added6.f1:\x027:dropped6:\xc0\xa8\x01\x09\x00\x50e"[..]
        );
        assert_eq!(PexMsg::decode(&out, 50).unwrap(), msg);
        let cut = PexMsg::decode(&out, 1).unwrap();
        assert_eq!(cut.added, vec![(a, 0x10)]);
        // A ragged string keeps its whole entries; missing keys are empty.
        let ragged = PexMsg::decode(b"d5:added7:\x0a\x00\x00\x01\x1a\xe1\x00e", 50).unwrap();
        assert_eq!(ragged.added, vec![(a, 0)]);
        assert_eq!(PexMsg::decode(b"de", 50).unwrap(), PexMsg::default());
        assert!(PexMsg::decode(b"i1e", 50).is_err());
    }
}
