//! The BEP 10 extended handshake: the bencoded dictionary carried by an `extended` message
//! with extended id 0.
//!
//! Parsing is tolerant the way BEP 10 asks: every key is optional, unknown keys are ignored,
//! and a known key with the wrong type or an out-of-range value is ignored as if absent. Only
//! a payload that is not a bencoded dictionary at all, or that breaks the resource limits, is
//! an error. Which extensions to use, and what to do with the numbers (a huge
//! `metadata_size`, a `reqq` of a million), is the core's policy.

use std::collections::BTreeMap;
use std::num::NonZeroU8;

use ::core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::input::SplitBytes;
use super::message::Message;
use crate::bencode::{self, DecodeError, Limits, Node, OwnedValue};
use crate::limits::{MAX_BENCODE_DEPTH, MAX_EXTENDED_HANDSHAKE_VALUES, MAX_MESSAGE_LEN};

/// The extended message id of the extended handshake itself (BEP 10).
pub const EXTENDED_HANDSHAKE_ID: u8 = 0;

/// Bencode limits for an extended handshake: at most one message's worth of bytes, the usual
/// nesting bound, and [`MAX_EXTENDED_HANDSHAKE_VALUES`] values.
const HANDSHAKE_LIMITS: Limits = Limits {
    max_depth: MAX_BENCODE_DEPTH,
    max_values: MAX_EXTENDED_HANDSHAKE_VALUES,
    max_len: MAX_MESSAGE_LEN as usize,
};

/// Why an extended handshake payload could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExtendedHandshakeError {
    /// The payload is not one well-formed bencode value within the limits.
    #[error("extended handshake is not valid bencode: {0}")]
    Bencode(DecodeError),
    /// The payload is valid bencode but not a dictionary.
    #[error("extended handshake is a {found}, not a dictionary")]
    NotADictionary {
        /// The type that was found instead.
        found: &'static str,
    },
}

// Not `#[from]`: that would also make the inner error the `source`, and the text it already
// puts in `Display` would print twice in a `{:#}` chain.
impl From<DecodeError> for ExtendedHandshakeError {
    fn from(e: DecodeError) -> Self {
        ExtendedHandshakeError::Bencode(e)
    }
}

/// The fields of a BEP 10 extended handshake that ringtorrent understands.
///
/// Every field is optional on the wire. `None` means the key was absent or unusable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtendedHandshake {
    /// `m`: extension name to the extended message id the sender wants to receive it under.
    /// An id of 0 means the sender disables that extension; it is kept because `m` is
    /// additive across repeated handshakes, so a 0 withdraws an earlier id. Names that are not
    /// UTF-8 and ids outside 0..=255 are dropped.
    pub extensions: BTreeMap<String, u8>,
    /// `p`: the sender's TCP listen port.
    pub listen_port: Option<u16>,
    /// `v`: the sender's client name and version (non-UTF-8 bytes replaced).
    pub client: Option<String>,
    /// `yourip`: the address the sender sees us at, IPv4 (4 bytes) or IPv6 (16 bytes).
    pub your_ip: Option<IpAddr>,
    /// `ipv4`: an IPv4 address the sender can be reached at.
    pub ipv4: Option<Ipv4Addr>,
    /// `ipv6`: an IPv6 address the sender can be reached at.
    pub ipv6: Option<Ipv6Addr>,
    /// `reqq`: how many outstanding requests the sender queues without dropping any.
    pub request_queue: Option<u32>,
    /// `metadata_size` (BEP 9): the length in bytes of the torrent's info dictionary.
    pub metadata_size: Option<u64>,
    /// `upload_only` (BEP 21): the sender is a seed or partial seed and will not download.
    pub upload_only: Option<bool>,
}

impl ExtendedHandshake {
    /// Parses the payload of an `extended` message with id 0 (the bytes after the extended
    /// id). A payload split across a ring buffer's end is copied once to parse it.
    pub fn decode<'a>(
        payload: impl Into<SplitBytes<'a>>,
    ) -> Result<ExtendedHandshake, ExtendedHandshakeError> {
        let payload = payload.into();
        let bytes = payload.to_contiguous();
        let root = bencode::decode_with(&bytes, &HANDSHAKE_LIMITS)?;
        let entries = root
            .as_dict()
            .ok_or(ExtendedHandshakeError::NotADictionary {
                found: root.type_name(),
            })?;
        let mut hs = ExtendedHandshake::default();
        for (key, value) in entries {
            match *key {
                b"m" => hs.extensions = extension_map(value),
                b"p" => hs.listen_port = int_as(value),
                b"v" => {
                    hs.client = value
                        .as_bytes()
                        .map(|v| String::from_utf8_lossy(v).into_owned());
                }
                b"yourip" => hs.your_ip = value.as_bytes().and_then(ip_addr),
                b"ipv4" => {
                    hs.ipv4 = value
                        .as_bytes()
                        .and_then(|b| <[u8; 4]>::try_from(b).ok())
                        .map(Ipv4Addr::from);
                }
                b"ipv6" => {
                    hs.ipv6 = value
                        .as_bytes()
                        .and_then(|b| <[u8; 16]>::try_from(b).ok())
                        .map(Ipv6Addr::from);
                }
                b"reqq" => hs.request_queue = int_as(value),
                b"metadata_size" => hs.metadata_size = int_as(value),
                b"upload_only" => hs.upload_only = value.as_int().map(|i| i != 0),
                _ => {}
            }
        }
        Ok(hs)
    }

    /// The id the sender assigned to extension `name`, or `None` when it does not support it
    /// or has disabled it (id 0).
    pub fn extension_id(&self, name: &str) -> Option<NonZeroU8> {
        self.extensions.get(name).copied().and_then(NonZeroU8::new)
    }

    /// The handshake as a bencode dictionary; absent fields are left out.
    pub fn to_bencode(&self) -> OwnedValue {
        let mut dict = BTreeMap::new();
        let mut put = |key: &str, value: OwnedValue| {
            dict.insert(key.as_bytes().to_vec(), value);
        };
        let m = self
            .extensions
            .iter()
            .map(|(name, &id)| (name.as_bytes().to_vec(), OwnedValue::Int(id.into())))
            .collect();
        put("m", OwnedValue::Dict(m));
        if let Some(port) = self.listen_port {
            put("p", OwnedValue::Int(port.into()));
        }
        if let Some(client) = &self.client {
            put("v", OwnedValue::str(client));
        }
        if let Some(ip) = self.your_ip {
            let bytes = match ip {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                IpAddr::V6(v6) => v6.octets().to_vec(),
            };
            put("yourip", OwnedValue::Bytes(bytes));
        }
        if let Some(v4) = self.ipv4 {
            put("ipv4", OwnedValue::Bytes(v4.octets().to_vec()));
        }
        if let Some(v6) = self.ipv6 {
            put("ipv6", OwnedValue::Bytes(v6.octets().to_vec()));
        }
        if let Some(reqq) = self.request_queue {
            put("reqq", OwnedValue::Int(reqq.into()));
        }
        if let Some(size) = self.metadata_size {
            // Sizes past i64::MAX cannot be written in bencode; no real torrent comes close.
            put(
                "metadata_size",
                OwnedValue::Int(i64::try_from(size).unwrap_or(i64::MAX)),
            );
        }
        if let Some(upload_only) = self.upload_only {
            put("upload_only", OwnedValue::Int(upload_only.into()));
        }
        OwnedValue::Dict(dict)
    }

    /// Appends the bencoded dictionary (the message payload, keys sorted) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.to_bencode().encode(out);
    }

    /// The bencoded dictionary as a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_bencode().to_bytes()
    }

    /// Appends the whole `extended` message (length prefix, id 20, extended id 0 and the
    /// dictionary) to `out`, ready to send right after the BitTorrent handshake.
    pub fn encode_message(&self, out: &mut Vec<u8>) {
        let payload = self.to_bytes();
        Message::Extended {
            id: EXTENDED_HANDSHAKE_ID,
            payload: SplitBytes::single(&payload),
        }
        .encode(out);
    }
}

/// Reads `m`, dropping entries that are not a UTF-8 name with an id in 0..=255.
fn extension_map(node: &Node<'_>) -> BTreeMap<String, u8> {
    let Some(entries) = node.as_dict() else {
        return BTreeMap::new();
    };
    entries
        .iter()
        .filter_map(|(name, id)| {
            let name = std::str::from_utf8(name).ok()?;
            let id = u8::try_from(id.as_int()?).ok()?;
            Some((name.to_owned(), id))
        })
        .collect()
}

/// An integer converted to the field's type, or `None` when it is not an integer or does not
/// fit (a negative port, a `reqq` past `u32::MAX`).
fn int_as<T: TryFrom<i64>>(node: &Node<'_>) -> Option<T> {
    T::try_from(node.as_int()?).ok()
}

/// A compact address: 4 bytes for IPv4, 16 for IPv6.
fn ip_addr(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::from(v4));
    }
    <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::wire::Decoder;

    #[test]
    fn parses_the_bep_10_example() {
        let payload = b"d1:md11:LT_metadatai1e6:ut_pexi2ee1:pi6881e1:v13:\xc2\xb5Torrent 1.2e";
        let hs = ExtendedHandshake::decode(payload).unwrap();
        assert_eq!(hs.extension_id("LT_metadata"), NonZeroU8::new(1));
        assert_eq!(hs.extension_id("ut_pex"), NonZeroU8::new(2));
        assert_eq!(hs.extension_id("ut_metadata"), None);
        assert_eq!(hs.listen_port, Some(6881));
        assert_eq!(hs.client.as_deref(), Some("µTorrent 1.2"));
        assert_eq!(hs.your_ip, None);
    }

    #[test]
    fn parses_every_field_across_a_split() {
        let payload: &[u8] = b"d12:complete_agoi-1e1:md11:ut_metadatai3e6:ut_pexi0ee\
            13:metadata_sizei31235e1:pi51413e4:reqqi512e11:upload_onlyi1e\
            1:v18:Transmission 4.0.06:yourip4:\x01\x02\x03\x04\
            4:ipv44:\x0a\x00\x00\x014:ipv616:\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01e";
        let expected = ExtendedHandshake {
            extensions: [("ut_metadata".to_owned(), 3), ("ut_pex".to_owned(), 0)].into(),
            listen_port: Some(51413),
            client: Some("Transmission 4.0.0".to_owned()),
            your_ip: Some(IpAddr::from([1, 2, 3, 4])),
            ipv4: Some(Ipv4Addr::new(10, 0, 0, 1)),
            ipv6: Some(Ipv6Addr::LOCALHOST),
            request_queue: Some(512),
            metadata_size: Some(31235),
            upload_only: Some(true),
        };
        for i in 0..=payload.len() {
            let (a, b) = payload.split_at(i);
            assert_eq!(ExtendedHandshake::decode((a, b)).unwrap(), expected);
        }
        assert_eq!(expected.extension_id("ut_pex"), None);
    }

    #[test]
    fn wrong_types_and_ranges_are_ignored() {
        let payload = b"d1:md1:ai300e1:bi-1e1:c3:abc1:di7e2:\xff\xfei1ee\
            1:pi70000e4:reqq3:abc6:yourip3:abc4:ipv416:aaaaaaaaaaaaaaaa4:ipv64:aaaa\
            13:metadata_sizei-5e11:upload_only1:x1:vi5ee";
        let hs = ExtendedHandshake::decode(payload).unwrap();
        assert_eq!(
            hs,
            ExtendedHandshake {
                extensions: [("d".to_owned(), 7)].into(),
                ..ExtendedHandshake::default()
            }
        );
        let hs =
            ExtendedHandshake::decode(b"d1:mi5e6:yourip16:\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x01e")
                .unwrap();
        assert!(hs.extensions.is_empty());
        assert_eq!(hs.your_ip, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(
            ExtendedHandshake::decode(b"de").unwrap(),
            ExtendedHandshake::default()
        );
    }

    #[test]
    fn non_dictionaries_and_bad_bencode_are_errors() {
        assert_eq!(
            ExtendedHandshake::decode(b"li1ee"),
            Err(ExtendedHandshakeError::NotADictionary { found: "list" })
        );
        assert!(matches!(
            ExtendedHandshake::decode(b""),
            Err(ExtendedHandshakeError::Bencode(_))
        ));
        assert!(matches!(
            ExtendedHandshake::decode(b"d1:pi1e"),
            Err(ExtendedHandshakeError::Bencode(_))
        ));
        assert!(matches!(
            ExtendedHandshake::decode(b"dee"),
            Err(ExtendedHandshakeError::Bencode(_))
        ));
        let err = ExtendedHandshake::decode(b"i1e").unwrap_err();
        assert_eq!(
            err.to_string(),
            "extended handshake is a integer, not a dictionary"
        );
    }

    #[test]
    fn too_many_values_is_an_error() {
        let mut payload = b"d1:xl".to_vec();
        payload.extend(std::iter::repeat_n(&b"i0e"[..], MAX_EXTENDED_HANDSHAKE_VALUES).flatten());
        payload.extend_from_slice(b"ee");
        assert!(matches!(
            ExtendedHandshake::decode(&payload),
            Err(ExtendedHandshakeError::Bencode(_))
        ));
    }

    #[test]
    fn encodes_with_sorted_keys_and_round_trips() {
        let hs = ExtendedHandshake {
            extensions: [("ut_pex".to_owned(), 2), ("ut_metadata".to_owned(), 1)].into(),
            listen_port: Some(6881),
            client: Some("ringtorrent 0.1.0".to_owned()),
            your_ip: Some(IpAddr::from([192, 168, 1, 2])),
            ipv4: None,
            ipv6: None,
            request_queue: Some(250),
            metadata_size: Some(1234),
            upload_only: Some(false),
        };
        let bytes = hs.to_bytes();
        assert_eq!(
            bytes,
            b"d1:md11:ut_metadatai1e6:ut_pexi2ee13:metadata_sizei1234e1:pi6881e\
              4:reqqi250e11:upload_onlyi0e1:v17:ringtorrent 0.1.06:yourip4:\xc0\xa8\x01\x02e"
        );
        assert_eq!(ExtendedHandshake::decode(&bytes).unwrap(), hs);
        let mut appended = vec![7];
        hs.encode(&mut appended);
        assert_eq!(&appended[1..], &bytes[..]);

        let mut frame = Vec::new();
        hs.encode_message(&mut frame);
        let (message, used) = Decoder::new().decode(&frame).unwrap().complete().unwrap();
        assert_eq!(used, frame.len());
        let Message::Extended { id: 0, payload } = message else {
            panic!("{message:?}")
        };
        assert_eq!(ExtendedHandshake::decode(payload).unwrap(), hs);
        // An empty handshake still has its `m`.
        assert_eq!(ExtendedHandshake::default().to_bytes(), b"d1:mdee");
    }
}
