use std::ops::Range;

use crate::limits;

/// Bounds applied while decoding input that came from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of lists and dictionaries; also bounds the decoder's recursion.
    pub max_depth: usize,
    /// Most values (of any kind) in the document.
    pub max_values: usize,
    /// Longest input accepted, in bytes.
    pub max_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: limits::MAX_BENCODE_DEPTH,
            max_values: limits::MAX_BENCODE_VALUES,
            max_len: limits::MAX_TORRENT_FILE_LEN,
        }
    }
}

/// A decoded value and the byte range it occupies in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node<'a> {
    /// The value itself.
    pub value: Value<'a>,
    /// Where the value's encoding starts and ends in the input, prefix and terminator included.
    pub span: Range<usize>,
}

/// A bencode value borrowing its strings from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    /// `i<digits>e`, checked to fit an `i64`.
    Int(i64),
    /// `<len>:<bytes>`; not necessarily UTF-8.
    Bytes(&'a [u8]),
    /// `l...e`.
    List(Vec<Node<'a>>),
    /// `d...e`, entries in input order. Keys are unique; they may be unsorted, as in many real
    /// torrents, which is why the order of the input is kept.
    Dict(Vec<(&'a [u8], Node<'a>)>),
}

/// Why decoding failed, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid bencode at byte {offset}: {kind}")]
pub struct DecodeError {
    /// What was wrong.
    pub kind: DecodeErrorKind,
    /// The offset in the input where it was found.
    pub offset: usize,
}

/// The kinds of malformed bencode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    /// The input ended inside a value.
    #[error("input ends inside a value")]
    UnexpectedEnd,
    /// A byte that cannot start a value (`i`, `l`, `d` or a digit).
    #[error("byte 0x{0:02x} cannot start a value")]
    UnexpectedByte(u8),
    /// An integer that is empty, has leading zeros, is `-0`, or holds a non-digit.
    #[error("malformed integer")]
    InvalidInteger,
    /// An integer outside the range of `i64`.
    #[error("integer does not fit in 64 bits")]
    IntegerOverflow,
    /// A string length prefix with leading zeros, a non-digit, or no `:`.
    #[error("malformed string length")]
    InvalidLength,
    /// A string whose declared length runs past the end of the input.
    #[error("string of {declared} bytes runs past the end of the input ({available} bytes left)")]
    StringTooLong {
        /// The length the prefix declared.
        declared: u64,
        /// The bytes that were left.
        available: usize,
    },
    /// A dictionary key that is not a string.
    #[error("dictionary key is not a string")]
    NonStringKey,
    /// The same key twice in one dictionary.
    #[error("duplicate dictionary key {0:?}")]
    DuplicateKey(String),
    /// Lists and dictionaries nested deeper than the limit.
    #[error("nested deeper than {0} levels")]
    TooDeep(usize),
    /// More values than the limit.
    #[error("more than {0} values")]
    TooManyValues(usize),
    /// Input longer than the limit.
    #[error("input of {len} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// The input's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Bytes after the end of the top-level value.
    #[error("trailing bytes after the value")]
    TrailingData,
}

/// Decodes `input`, which must hold exactly one value, under the default [`Limits`].
pub fn decode(input: &[u8]) -> Result<Node<'_>, DecodeError> {
    decode_with(input, &Limits::default())
}

/// Decodes `input`, which must hold exactly one value, under `limits`.
pub fn decode_with<'a>(input: &'a [u8], limits: &Limits) -> Result<Node<'a>, DecodeError> {
    let (node, used) = decode_prefix(input, limits)?;
    if used != input.len() {
        return Err(DecodeError {
            kind: DecodeErrorKind::TrailingData,
            offset: used,
        });
    }
    Ok(node)
}

/// Decodes one value at the start of `input` and returns it with the number of bytes it took.
/// BEP 9 metadata messages put raw bytes after a dictionary; this is how they are split.
pub fn decode_prefix<'a>(
    input: &'a [u8],
    limits: &Limits,
) -> Result<(Node<'a>, usize), DecodeError> {
    if input.len() > limits.max_len {
        return Err(DecodeError {
            kind: DecodeErrorKind::TooLarge {
                len: input.len(),
                max: limits.max_len,
            },
            offset: 0,
        });
    }
    let mut parser = Parser {
        input,
        pos: 0,
        values: 0,
        limits,
    };
    let node = parser.value(0)?;
    Ok((node, parser.pos))
}

struct Parser<'a, 'l> {
    input: &'a [u8],
    pos: usize,
    values: usize,
    limits: &'l Limits,
}

impl<'a> Parser<'a, '_> {
    fn err<T>(&self, kind: DecodeErrorKind, offset: usize) -> Result<T, DecodeError> {
        Err(DecodeError { kind, offset })
    }

    fn peek(&self) -> Result<u8, DecodeError> {
        match self.input.get(self.pos) {
            Some(&b) => Ok(b),
            None => self.err(DecodeErrorKind::UnexpectedEnd, self.pos),
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node<'a>, DecodeError> {
        let start = self.pos;
        self.values += 1;
        if self.values > self.limits.max_values {
            return self.err(
                DecodeErrorKind::TooManyValues(self.limits.max_values),
                start,
            );
        }
        let value = match self.peek()? {
            b'i' => Value::Int(self.int()?),
            b'0'..=b'9' => Value::Bytes(self.bytes()?),
            b'l' => {
                self.enter(depth)?;
                let mut items = Vec::new();
                while self.peek()? != b'e' {
                    items.push(self.value(depth + 1)?);
                }
                self.pos += 1;
                Value::List(items)
            }
            b'd' => {
                self.enter(depth)?;
                Value::Dict(self.dict_entries(depth)?)
            }
            other => return self.err(DecodeErrorKind::UnexpectedByte(other), start),
        };
        Ok(Node {
            value,
            span: start..self.pos,
        })
    }

    /// Steps over a container's opening byte after checking the depth limit.
    fn enter(&mut self, depth: usize) -> Result<(), DecodeError> {
        if depth >= self.limits.max_depth {
            return self.err(DecodeErrorKind::TooDeep(self.limits.max_depth), self.pos);
        }
        self.pos += 1;
        Ok(())
    }

    fn dict_entries(&mut self, depth: usize) -> Result<Vec<(&'a [u8], Node<'a>)>, DecodeError> {
        let mut entries: Vec<(&'a [u8], Node<'a>)> = Vec::new();
        let mut sorted = true;
        while self.peek()? != b'e' {
            let key_at = self.pos;
            if !self.peek()?.is_ascii_digit() {
                return self.err(DecodeErrorKind::NonStringKey, key_at);
            }
            self.values += 1;
            let key = self.bytes()?;
            if let Some((prev, _)) = entries.last() {
                if key == *prev {
                    return self.err(duplicate(key), key_at);
                }
                sorted &= key > *prev;
            }
            let value = self.value(depth + 1)?;
            entries.push((key, value));
        }
        let end = self.pos;
        self.pos += 1;
        if !sorted {
            // Unsorted dictionaries are common in the wild and accepted, but a repeated key
            // would let two clients read two different values: find one in O(n log n).
            let mut keys: Vec<&[u8]> = entries.iter().map(|(k, _)| *k).collect();
            keys.sort_unstable();
            if let Some(pair) = keys.windows(2).find(|w| w[0] == w[1]) {
                return self.err(duplicate(pair[0]), end);
            }
        }
        Ok(entries)
    }

    fn int(&mut self) -> Result<i64, DecodeError> {
        let start = self.pos;
        self.pos += 1; // 'i'
        let rest = &self.input[self.pos..];
        let Some(len) = rest.iter().position(|&b| b == b'e') else {
            return self.err(DecodeErrorKind::UnexpectedEnd, self.input.len());
        };
        let text = &rest[..len];
        let (negative, digits) = match text.split_first() {
            Some((b'-', digits)) => (true, digits),
            _ => (false, text),
        };
        let well_formed = !digits.is_empty()
            && digits.iter().all(u8::is_ascii_digit)
            && !(digits[0] == b'0' && (digits.len() > 1 || negative));
        if !well_formed {
            return self.err(DecodeErrorKind::InvalidInteger, start);
        }
        // Accumulate negatively so that i64::MIN, whose magnitude has no positive i64, parses.
        let mut value: i64 = 0;
        for &d in digits {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_sub(i64::from(d - b'0')))
                .ok_or(DecodeError {
                    kind: DecodeErrorKind::IntegerOverflow,
                    offset: start,
                })?;
        }
        if !negative {
            value = value.checked_neg().ok_or(DecodeError {
                kind: DecodeErrorKind::IntegerOverflow,
                offset: start,
            })?;
        }
        self.pos += len + 1;
        Ok(value)
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let start = self.pos;
        let rest = &self.input[start..];
        let Some(colon) = rest.iter().position(|&b| b == b':') else {
            return if rest.iter().all(u8::is_ascii_digit) {
                self.err(DecodeErrorKind::UnexpectedEnd, self.input.len())
            } else {
                self.err(DecodeErrorKind::InvalidLength, start)
            };
        };
        let digits = &rest[..colon];
        // 20 digits cannot fit in a usize anyway; stop before overflow is possible.
        if digits.is_empty()
            || digits.len() > 19
            || !digits.iter().all(u8::is_ascii_digit)
            || (digits[0] == b'0' && digits.len() > 1)
        {
            return self.err(DecodeErrorKind::InvalidLength, start);
        }
        let declared = digits
            .iter()
            .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
        let body = start + colon + 1;
        let available = self.input.len() - body;
        if declared > available as u64 {
            return self.err(
                DecodeErrorKind::StringTooLong {
                    declared,
                    available,
                },
                start,
            );
        }
        // `declared <= available`, which is a usize, so the cast is lossless.
        let end = body + declared as usize;
        self.pos = end;
        Ok(&self.input[body..end])
    }
}

fn duplicate(key: &[u8]) -> DecodeErrorKind {
    DecodeErrorKind::DuplicateKey(String::from_utf8_lossy(key).into_owned())
}

impl<'a> Node<'a> {
    /// The integer, if this is one.
    pub fn as_int(&self) -> Option<i64> {
        match self.value {
            Value::Int(i) => Some(i),
            _ => None,
        }
    }

    /// The raw string, if this is one.
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self.value {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The string, if this is one and it is valid UTF-8.
    pub fn as_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.as_bytes()?).ok()
    }

    /// The items, if this is a list.
    pub fn as_list(&self) -> Option<&[Node<'a>]> {
        match &self.value {
            Value::List(items) => Some(items),
            _ => None,
        }
    }

    /// The entries in input order, if this is a dictionary.
    pub fn as_dict(&self) -> Option<&[(&'a [u8], Node<'a>)]> {
        match &self.value {
            Value::Dict(entries) => Some(entries),
            _ => None,
        }
    }

    /// The value under `key`, if this is a dictionary that has it.
    pub fn get(&self, key: &[u8]) -> Option<&Node<'a>> {
        self.as_dict()?
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    /// The exact bytes of this value in `input`, the buffer it was decoded from.
    ///
    /// # Panics
    /// If `input` is not that buffer (a programming error, not an input error).
    pub fn raw<'i>(&self, input: &'i [u8]) -> &'i [u8] {
        &input[self.span.clone()]
    }

    /// A short name of this value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self.value {
            Value::Int(_) => "integer",
            Value::Bytes(_) => "string",
            Value::List(_) => "list",
            Value::Dict(_) => "dictionary",
        }
    }

    /// An owned copy of the value, with dictionary keys sorted as an encoder writes them.
    pub fn to_owned_value(&self) -> super::OwnedValue {
        use super::OwnedValue;
        match &self.value {
            Value::Int(i) => OwnedValue::Int(*i),
            Value::Bytes(b) => OwnedValue::Bytes(b.to_vec()),
            Value::List(items) => {
                OwnedValue::List(items.iter().map(Node::to_owned_value).collect())
            }
            Value::Dict(entries) => OwnedValue::Dict(
                entries
                    .iter()
                    .map(|(k, v)| (k.to_vec(), v.to_owned_value()))
                    .collect(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(input: &[u8]) -> DecodeErrorKind {
        decode(input).unwrap_err().kind
    }

    #[test]
    fn integers() {
        assert_eq!(decode(b"i0e").unwrap().as_int(), Some(0));
        assert_eq!(decode(b"i-42e").unwrap().as_int(), Some(-42));
        assert_eq!(
            decode(b"i9223372036854775807e").unwrap().as_int(),
            Some(i64::MAX)
        );
        assert_eq!(
            decode(b"i-9223372036854775808e").unwrap().as_int(),
            Some(i64::MIN)
        );
        assert_eq!(
            kind(b"i9223372036854775808e"),
            DecodeErrorKind::IntegerOverflow
        );
        for bad in [
            &b"ie"[..],
            b"i-e",
            b"i-0e",
            b"i03e",
            b"i1.5e",
            b"i 1e",
            b"i+1e",
        ] {
            assert_eq!(kind(bad), DecodeErrorKind::InvalidInteger, "{bad:?}");
        }
        assert_eq!(kind(b"i12"), DecodeErrorKind::UnexpectedEnd);
    }

    #[test]
    fn strings() {
        assert_eq!(decode(b"0:").unwrap().as_bytes(), Some(&b""[..]));
        assert_eq!(decode(b"4:spam").unwrap().as_str(), Some("spam"));
        assert_eq!(kind(b"04:spam"), DecodeErrorKind::InvalidLength);
        assert_eq!(
            kind(b"5:spam"),
            DecodeErrorKind::StringTooLong {
                declared: 5,
                available: 4
            }
        );
        assert_eq!(kind(b"4"), DecodeErrorKind::UnexpectedEnd);
        assert_eq!(kind(b"4x:spam"), DecodeErrorKind::InvalidLength);
        let huge = b"99999999999999999999:x";
        assert_eq!(kind(huge), DecodeErrorKind::InvalidLength);
        let big = b"18446744073709551615:x";
        assert!(matches!(
            kind(big),
            DecodeErrorKind::InvalidLength | DecodeErrorKind::StringTooLong { .. }
        ));
    }

    #[test]
    fn spans_cover_exact_bytes() {
        let input = b"d3:bar4:spam3:fooi42e4:listl1:ai1eee";
        let root = decode(input).unwrap();
        assert_eq!(root.span, 0..input.len());
        assert_eq!(root.get(b"foo").unwrap().raw(input), b"i42e");
        assert_eq!(root.get(b"bar").unwrap().raw(input), b"4:spam");
        let list = root.get(b"list").unwrap();
        assert_eq!(list.raw(input), b"l1:ai1ee");
        assert_eq!(list.as_list().unwrap()[1].raw(input), b"i1e");
    }

    #[test]
    fn unsorted_keys_are_kept_in_order_and_duplicates_rejected() {
        let root = decode(b"d1:bi1e1:ai2ee").unwrap();
        let keys: Vec<&[u8]> = root.as_dict().unwrap().iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, vec![&b"b"[..], b"a"]);
        assert_eq!(
            kind(b"d1:ai1e1:ai2ee"),
            DecodeErrorKind::DuplicateKey("a".into())
        );
        assert_eq!(
            kind(b"d1:bi1e1:ai2e1:bi3ee"),
            DecodeErrorKind::DuplicateKey("b".into())
        );
        assert_eq!(kind(b"di1ei2ee"), DecodeErrorKind::NonStringKey);
        assert_eq!(kind(b"d1:ae"), DecodeErrorKind::UnexpectedByte(b'e'));
    }

    #[test]
    fn errors_carry_offsets() {
        let err = decode(b"l4:spamxe").unwrap_err();
        assert_eq!(
            err,
            DecodeError {
                kind: DecodeErrorKind::UnexpectedByte(b'x'),
                offset: 7
            }
        );
        assert_eq!(
            err.to_string(),
            "invalid bencode at byte 7: byte 0x78 cannot start a value"
        );
        assert_eq!(
            decode(b"i1ei2e").unwrap_err(),
            DecodeError {
                kind: DecodeErrorKind::TrailingData,
                offset: 3
            }
        );
        assert_eq!(
            decode(b"").unwrap_err().kind,
            DecodeErrorKind::UnexpectedEnd
        );
        assert_eq!(
            decode(b"l").unwrap_err().kind,
            DecodeErrorKind::UnexpectedEnd
        );
    }

    #[test]
    fn limits_hold() {
        let limits = Limits {
            max_depth: 3,
            max_values: 5,
            max_len: 16,
        };
        assert!(decode_with(b"lllee", &limits).is_err() || decode_with(b"llleee", &limits).is_ok());
        assert_eq!(decode_with(b"llleee", &limits).unwrap().span, 0..6);
        assert_eq!(
            decode_with(b"lllleeee", &limits).unwrap_err().kind,
            DecodeErrorKind::TooDeep(3)
        );
        assert_eq!(
            decode_with(b"li1ei2ei3ei4ei5ee", &limits).unwrap_err().kind,
            DecodeErrorKind::TooLarge { len: 17, max: 16 }
        );
        assert_eq!(
            decode_with(
                b"li1ei2ei3ei4ee",
                &Limits {
                    max_len: 100,
                    ..limits
                }
            )
            .unwrap()
            .as_list()
            .unwrap()
            .len(),
            4
        );
        assert_eq!(
            decode_with(
                b"li1ei2ei3ei4ei5ee",
                &Limits {
                    max_len: 100,
                    ..limits
                }
            )
            .unwrap_err()
            .kind,
            DecodeErrorKind::TooManyValues(5)
        );
        // Deep nesting far past the default limit is an error, not a stack overflow.
        let deep: Vec<u8> = std::iter::repeat_n(b'l', 100_000)
            .chain(std::iter::repeat_n(b'e', 100_000))
            .collect();
        assert_eq!(
            decode(&deep).unwrap_err().kind,
            DecodeErrorKind::TooDeep(limits::MAX_BENCODE_DEPTH)
        );
    }

    #[test]
    fn prefix_leaves_the_rest() {
        let input = b"d8:msg_typei1e5:piecei0eeRAWDATA";
        let (node, used) = decode_prefix(input, &Limits::default()).unwrap();
        assert_eq!(&input[used..], b"RAWDATA");
        assert_eq!(node.get(b"msg_type").unwrap().as_int(), Some(1));
    }
}
