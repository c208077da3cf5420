use std::collections::BTreeMap;

/// Appends `i<value>e`.
pub fn write_int(out: &mut Vec<u8>, value: i64) {
    out.push(b'i');
    out.extend_from_slice(value.to_string().as_bytes());
    out.push(b'e');
}

/// Appends `<len>:<bytes>`.
pub fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(bytes);
}

/// An owned bencode value for building documents. Dictionaries are `BTreeMap`s, so keys are
/// always written sorted by their raw bytes, as BEP 3 requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedValue {
    /// An integer.
    Int(i64),
    /// A byte string.
    Bytes(Vec<u8>),
    /// A list.
    List(Vec<OwnedValue>),
    /// A dictionary with sorted, unique keys.
    Dict(BTreeMap<Vec<u8>, OwnedValue>),
}

impl OwnedValue {
    /// A string value from text.
    pub fn str(text: &str) -> Self {
        OwnedValue::Bytes(text.as_bytes().to_vec())
    }

    /// Appends the encoding of this value to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            OwnedValue::Int(i) => write_int(out, *i),
            OwnedValue::Bytes(b) => write_bytes(out, b),
            OwnedValue::List(items) => {
                out.push(b'l');
                items.iter().for_each(|item| item.encode(out));
                out.push(b'e');
            }
            OwnedValue::Dict(entries) => {
                out.push(b'd');
                for (key, value) in entries {
                    write_bytes(out, key);
                    value.encode(out);
                }
                out.push(b'e');
            }
        }
    }

    /// The encoding of this value.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bencode::decode;
    use proptest::prelude::*;

    #[test]
    fn encodes_sorted() {
        let mut d = BTreeMap::new();
        d.insert(b"zeta".to_vec(), OwnedValue::Int(-1));
        d.insert(
            b"alpha".to_vec(),
            OwnedValue::List(vec![OwnedValue::str("x"), OwnedValue::Int(0)]),
        );
        assert_eq!(
            OwnedValue::Dict(d).to_bytes(),
            b"d5:alphal1:xi0ee4:zetai-1ee"
        );
    }

    fn value() -> impl Strategy<Value = OwnedValue> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(OwnedValue::Int),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(OwnedValue::Bytes),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(OwnedValue::List),
                proptest::collection::btree_map(
                    proptest::collection::vec(any::<u8>(), 0..6),
                    inner,
                    0..6
                )
                .prop_map(OwnedValue::Dict),
            ]
        })
    }

    proptest! {
        #[test]
        fn round_trip(v in value()) {
            let bytes = v.to_bytes();
            let node = decode(&bytes).unwrap();
            prop_assert_eq!(node.span.clone(), 0..bytes.len());
            prop_assert_eq!(node.to_owned_value(), v);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(node) = decode(&bytes) {
                // Whatever decodes re-encodes to itself when its dictionaries were sorted.
                let again = node.to_owned_value().to_bytes();
                prop_assert!(decode(&again).is_ok());
            }
        }

        #[test]
        fn mutated_documents_never_panic(v in value(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut bytes = v.to_bytes();
            let i = at.index(bytes.len());
            bytes[i] = byte;
            let _ = decode(&bytes);
        }
    }
}
