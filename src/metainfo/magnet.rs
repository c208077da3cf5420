//! Magnet links for BitTorrent v1 and v2 (BEP 9 and BEP 52's `btmh`, with `x.pe` peers, BEP 19 `ws` web seeds and BEP 53
//! `so` file selection): parsing into a [`Magnet`] and formatting back into a URI.
//!
//! The parser is strict where a mistake would silently send the engine somewhere wrong (the
//! info hash, tracker and web seed URLs, peer addresses, numbers) and lenient where nothing can
//! go wrong: unknown parameters are ignored, and a display name that is not UTF-8 is decoded
//! lossily, because it is only a placeholder until the real name arrives with the metadata and
//! refusing a working magnet over a mis-encoded title would help nobody.
//!
//! Nothing here does I/O: peer addresses are kept as written (IP literal or host name) and
//! never resolved.
//!
//! Rules, in short:
//!
//! - The URI starts with `magnet:?` (scheme in any case; surrounding whitespace is trimmed).
//!   Parameters are separated by `&`; a parameter without `=` has an empty value. Numbered
//!   keys (`tr.1`, `xt.2`, `x.pe.3`) count as their base key. Keys are case-sensitive.
//! - Values are percent-decoded. `+` means a space in `dn` only (form encoding); in URLs and
//!   the other parameters it stays a literal `+`, since a URL cannot contain a space.
//! - `xt=urn:btih:` takes 40 hexadecimal digits (either case) or 32 RFC 4648 base32
//!   characters (either case, no padding). `xt=urn:btmh:` takes a SHA-256 multihash: `1220`
//!   and 64 hexadecimal digits (BEP 52). Several `xt` may appear: every btih must name the
//!   same hash, and so must every btmh; a link may have either or both (a hybrid torrent), and
//!   other URNs are ignored. A v2-only link (btmh alone) is known by its v2 hash truncated to
//!   20 bytes, as v2 peers, trackers and the DHT know it.
//! - `tr` and `ws` keep their order and drop exact duplicates; so do `x.pe` peers. At most
//!   [`MAX_TRACKERS`] distinct trackers are accepted.
//! - Only the first `dn` and the first `xl` are kept (every `xl` is still checked); the
//!   ranges of several `so` parameters are concatenated.

use ::core::fmt;
use ::core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use ::core::str::FromStr;
use std::collections::HashSet;

use crate::core::{InfoHash, InfoHashV2};
use crate::limits::{MAX_TORRENT_LEN, MAX_TRACKERS};

/// Longest excerpt of an offending value quoted in an error message, in characters.
const EXCERPT_CHARS: usize = 64;

/// Longest host name (RFC 1035: 253 characters in text form).
const MAX_HOST_NAME_LEN: usize = 253;

/// Longest label of a host name (RFC 1035).
const MAX_HOST_LABEL_LEN: usize = 63;

/// A parsed magnet link: what is needed to find peers and fetch a torrent's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Magnet {
    /// The 20-byte info hash the swarm is found by: the v1 hash from `xt=urn:btih:`, or for a
    /// v2-only link the v2 hash truncated to 20 bytes.
    pub info_hash: InfoHash,
    /// The v2 info hash from `xt=urn:btmh:` (BEP 52), if the link has one.
    pub info_hash_v2: Option<InfoHashV2>,
    /// The suggested name from `dn`, shown until the metadata arrives.
    pub display_name: Option<String>,
    /// Tracker URLs from `tr`, in order, without duplicates.
    pub trackers: Vec<String>,
    /// Peers to contact directly, from `x.pe`, in order, without duplicates.
    pub peers: Vec<PeerAddr>,
    /// Web seed URLs from `ws` (BEP 19), in order, without duplicates.
    pub web_seeds: Vec<String>,
    /// The total payload length in bytes from `xl`.
    pub exact_length: Option<u64>,
    /// The file indices to download from `so` (BEP 53); `None` means every file.
    pub select_only: Option<Vec<FileRange>>,
}

/// An inclusive range of file indices from a BEP 53 `so` parameter: `4-6`, or `2` alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileRange {
    /// The first index in the range.
    pub first: u32,
    /// The last index in the range (equal to `first` for a single index).
    pub last: u32,
}

impl FileRange {
    /// Whether `index` lies in the range.
    pub fn contains(&self, index: u32) -> bool {
        self.first <= index && index <= self.last
    }
}

impl fmt::Display for FileRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// The host part of a peer address: an IP literal, or a host name kept as written (checked
/// for syntax only; never resolved here).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PeerHost {
    /// An IPv4 or IPv6 literal.
    Ip(IpAddr),
    /// A host name (letters, digits, `-`, `_`, dot-separated labels).
    Name(String),
}

/// A peer address from `x.pe`: `1.2.3.4:6881`, `[::1]:6881` or `host.example:6881`.
///
/// The host is syntactically valid and the port is not 0: the only ways to build one are
/// [`PeerAddr::parse`] and `TryFrom<SocketAddr>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerAddr {
    host: PeerHost,
    port: u16,
}

impl PeerAddr {
    /// Parses `host:port`, where the host is an IPv4 address, an IPv6 address in brackets or
    /// a host name, and the port is 1 to 65535.
    pub fn parse(text: &str) -> Result<PeerAddr, MagnetError> {
        let bad_address = |problem| MagnetError::BadPeerAddress {
            value: excerpt(text),
            problem,
        };
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| bad_address("`[` without a closing `]`"))?;
            let port = after
                .strip_prefix(':')
                .ok_or_else(|| bad_address("no `:port` after the bracketed address"))?;
            let ip = Ipv6Addr::from_str(inside)
                .map_err(|_| bad_address("not a valid IPv6 address inside the brackets"))?;
            (PeerHost::Ip(IpAddr::V6(ip)), port)
        } else {
            let (host, port) = text
                .rsplit_once(':')
                .ok_or_else(|| bad_address("no `:port`"))?;
            if host.contains(':') {
                return Err(bad_address("an IPv6 address must be written in brackets"));
            }
            (parse_host(host).map_err(bad_address)?, port)
        };
        let port = parse_decimal::<u16>(port)
            .filter(|&p| p != 0)
            .ok_or_else(|| MagnetError::BadPeerPort {
                value: excerpt(text),
                problem: "the port must be a decimal number from 1 to 65535",
            })?;
        Ok(PeerAddr { host, port })
    }

    /// The host, as written.
    pub fn host(&self) -> &PeerHost {
        &self.host
    }

    /// The port (never 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The socket address when the host is an IP literal; `None` for a host name, which the
    /// caller must resolve itself.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self.host {
            PeerHost::Ip(ip) => Some(SocketAddr::new(ip, self.port)),
            PeerHost::Name(_) => None,
        }
    }
}

impl TryFrom<SocketAddr> for PeerAddr {
    type Error = MagnetError;

    /// Fails only for port 0, which no peer can listen on.
    fn try_from(addr: SocketAddr) -> Result<Self, Self::Error> {
        if addr.port() == 0 {
            return Err(MagnetError::BadPeerPort {
                value: addr.to_string(),
                problem: "the port must be a decimal number from 1 to 65535",
            });
        }
        Ok(PeerAddr {
            host: PeerHost::Ip(addr.ip()),
            port: addr.port(),
        })
    }
}

impl FromStr for PeerAddr {
    type Err = MagnetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PeerAddr::parse(s)
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            PeerHost::Ip(ip) => write!(f, "{}", SocketAddr::new(*ip, self.port)),
            PeerHost::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

/// Why a magnet link was refused. Every variant names the parameter at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MagnetError {
    /// The text does not start with `magnet:?`.
    #[error("not a magnet URI: it must start with `magnet:?`")]
    NotMagnet,
    /// There is no `xt` parameter at all.
    #[error("no `xt` parameter: a magnet link needs `xt=urn:btih:<info hash>` or `xt=urn:btmh:1220<v2 info hash>`")]
    MissingTopic,
    /// `xt` is present, but names neither a btih nor a btmh.
    #[error(
        "`xt`: unsupported exact topic `{value}`; only `urn:btih:` (BitTorrent v1) and `urn:btmh:` (v2) are understood"
    )]
    UnsupportedTopic {
        /// The first such topic (shortened).
        value: String,
    },
    /// A `urn:btmh:` value is not a SHA-256 multihash (`1220` and 64 hex digits).
    #[error("`xt`: malformed btmh `{value}`: {problem}")]
    BadInfoHashV2 {
        /// The btmh value (shortened).
        value: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// Two `urn:btmh:` topics name different hashes.
    #[error("`xt`: conflicting btmh values {first} and {second}")]
    ConflictingInfoHashV2 {
        /// The hash from the first btmh.
        first: InfoHashV2,
        /// A later, different hash.
        second: InfoHashV2,
    },
    /// A `urn:btih:` value is not 40 hex digits or 32 base32 characters.
    #[error("`xt`: malformed btih `{value}`: {problem}")]
    BadInfoHash {
        /// The btih value (shortened).
        value: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// Two `urn:btih:` topics name different hashes.
    #[error("`xt`: conflicting btih values {first} and {second}")]
    ConflictingInfoHash {
        /// The hash from the first btih.
        first: InfoHash,
        /// A later, different hash.
        second: InfoHash,
    },
    /// A `%` not followed by two hexadecimal digits.
    #[error("`{param}`: bad percent-encoding at byte {offset} of the value (`%` must be followed by two hexadecimal digits)")]
    BadPercentEncoding {
        /// The parameter.
        param: &'static str,
        /// Byte offset of the `%` in the raw value.
        offset: usize,
    },
    /// A value that must be text decodes to bytes that are not UTF-8.
    #[error("`{param}`: the percent-decoded value is not valid UTF-8")]
    NotUtf8 {
        /// The parameter.
        param: &'static str,
    },
    /// A `tr` or `ws` value that is not an absolute URL.
    #[error("`{param}`: bad URL `{value}`: {problem}")]
    BadUrl {
        /// The parameter.
        param: &'static str,
        /// The URL (shortened).
        value: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// An `x.pe` host that is not an IP literal or a host name, or has no port.
    #[error("`x.pe`: bad peer address `{value}`: {problem}")]
    BadPeerAddress {
        /// The peer address (shortened).
        value: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// An `x.pe` port that is not 1 to 65535.
    #[error("`x.pe`: bad peer port in `{value}`: {problem}")]
    BadPeerPort {
        /// The peer address (shortened).
        value: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A number (`xl`, or an index in `so`) that is malformed or out of range.
    #[error("`{param}`: bad number `{value}`: {problem}")]
    BadNumber {
        /// The parameter.
        param: &'static str,
        /// The number as written (shortened).
        value: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// An `so` list with an empty item or a backwards range.
    #[error("`so`: bad file selection `{value}`: {problem}")]
    BadSelection {
        /// The offending item (shortened).
        value: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// More distinct `tr` URLs than [`MAX_TRACKERS`].
    #[error("`tr`: more than {max} distinct trackers")]
    TooManyTrackers {
        /// The limit, [`MAX_TRACKERS`].
        max: usize,
    },
}

impl Magnet {
    /// A magnet with just an info hash.
    pub fn new(info_hash: InfoHash) -> Self {
        Magnet {
            info_hash,
            info_hash_v2: None,
            display_name: None,
            trackers: Vec::new(),
            peers: Vec::new(),
            web_seeds: Vec::new(),
            exact_length: None,
            select_only: None,
        }
    }

    /// Parses a magnet URI; see the module documentation for the rules.
    pub fn parse(uri: &str) -> Result<Magnet, MagnetError> {
        let uri = uri.trim();
        let query = uri
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case("magnet:"))
            .and_then(|_| uri.get(7..))
            .and_then(|rest| rest.strip_prefix('?'))
            .ok_or(MagnetError::NotMagnet)?;

        let mut info_hash: Option<InfoHash> = None;
        let mut info_hash_v2: Option<InfoHashV2> = None;
        let mut other_topic: Option<String> = None;
        let mut magnet = Magnet::new(InfoHash::from_bytes([0; 20]));
        let mut seen_trackers = HashSet::new();
        let mut seen_web_seeds = HashSet::new();
        let mut seen_peers = HashSet::new();

        for segment in query.split('&').filter(|s| !s.is_empty()) {
            let (key, raw) = segment.split_once('=').unwrap_or((segment, ""));
            match base_key(key) {
                "xt" => {
                    let topic = decode_text("xt", raw)?;
                    if let Some(btih) = strip_prefix_ignore_case(&topic, "urn:btih:") {
                        let hash = parse_btih(btih)?;
                        match info_hash {
                            Some(first) if first != hash => {
                                return Err(MagnetError::ConflictingInfoHash {
                                    first,
                                    second: hash,
                                });
                            }
                            _ => info_hash = Some(hash),
                        }
                    } else if let Some(btmh) = strip_prefix_ignore_case(&topic, "urn:btmh:") {
                        let hash = parse_btmh(btmh)?;
                        match info_hash_v2 {
                            Some(first) if first != hash => {
                                return Err(MagnetError::ConflictingInfoHashV2 {
                                    first,
                                    second: hash,
                                });
                            }
                            _ => info_hash_v2 = Some(hash),
                        }
                    } else if other_topic.is_none() {
                        other_topic = Some(excerpt(&topic));
                    }
                }
                "dn" => {
                    let name =
                        String::from_utf8_lossy(&percent_decode("dn", raw, true)?).into_owned();
                    magnet.display_name.get_or_insert(name);
                }
                "tr" => {
                    let url = decode_text("tr", raw)?;
                    check_url("tr", &url)?;
                    if seen_trackers.insert(url.clone()) {
                        if magnet.trackers.len() >= MAX_TRACKERS {
                            return Err(MagnetError::TooManyTrackers { max: MAX_TRACKERS });
                        }
                        magnet.trackers.push(url);
                    }
                }
                "ws" => {
                    let url = decode_text("ws", raw)?;
                    check_url("ws", &url)?;
                    if seen_web_seeds.insert(url.clone()) {
                        magnet.web_seeds.push(url);
                    }
                }
                "x.pe" => {
                    let peer = PeerAddr::parse(&decode_text("x.pe", raw)?)?;
                    if seen_peers.insert(peer.clone()) {
                        magnet.peers.push(peer);
                    }
                }
                "xl" => {
                    let text = decode_text("xl", raw)?;
                    let bad = |problem| MagnetError::BadNumber {
                        param: "xl",
                        value: excerpt(&text),
                        problem,
                    };
                    let length = parse_decimal::<u64>(&text)
                        .ok_or_else(|| bad("not a decimal number that fits in 64 bits"))?;
                    if length > MAX_TORRENT_LEN {
                        return Err(bad("larger than the largest torrent accepted (1 PiB)"));
                    }
                    magnet.exact_length.get_or_insert(length);
                }
                "so" => {
                    let ranges = parse_selection(&decode_text("so", raw)?)?;
                    magnet
                        .select_only
                        .get_or_insert_with(Vec::new)
                        .extend(ranges);
                }
                _ => {}
            }
        }

        magnet.info_hash_v2 = info_hash_v2;
        magnet.info_hash = match (info_hash, info_hash_v2) {
            (Some(hash), _) => hash,
            (None, Some(v2)) => v2.truncated(),
            (None, None) => {
                return Err(match other_topic {
                    Some(value) => MagnetError::UnsupportedTopic { value },
                    None => MagnetError::MissingTopic,
                })
            }
        };
        Ok(magnet)
    }

    /// Formats the magnet as a URI that [`Magnet::parse`] reads back into an equal value
    /// (for any magnet that came from `parse`, and any other whose fields are valid and free
    /// of duplicates). The info hash is written in lower-case hex.
    pub fn to_uri(&self) -> String {
        let mut uri = String::from("magnet:?");
        if !self.is_v2_only() {
            uri.push_str("xt=urn:btih:");
            uri.push_str(&self.info_hash.to_hex());
        }
        if let Some(v2) = self.info_hash_v2 {
            if !self.is_v2_only() {
                uri.push('&');
            }
            uri.push_str("xt=urn:btmh:1220");
            uri.push_str(&v2.to_hex());
        }
        if let Some(name) = &self.display_name {
            uri.push_str("&dn=");
            percent_encode_into(&mut uri, name);
        }
        if let Some(length) = self.exact_length {
            uri.push_str(&format!("&xl={length}"));
        }
        for tracker in &self.trackers {
            uri.push_str("&tr=");
            percent_encode_into(&mut uri, tracker);
        }
        for seed in &self.web_seeds {
            uri.push_str("&ws=");
            percent_encode_into(&mut uri, seed);
        }
        for peer in &self.peers {
            uri.push_str("&x.pe=");
            percent_encode_into(&mut uri, &peer.to_string());
        }
        if let Some(ranges) = &self.select_only {
            uri.push_str("&so=");
            let items: Vec<String> = ranges.iter().map(FileRange::to_string).collect();
            uri.push_str(&items.join(","));
        }
        uri
    }

    /// Whether the link names a v2-only torrent (a btmh and no btih): its
    /// [`Magnet::info_hash`] is the truncated v2 hash.
    pub fn is_v2_only(&self) -> bool {
        self.info_hash_v2
            .is_some_and(|v2| v2.truncated() == self.info_hash)
    }

    /// Whether file `index` is to be downloaded: true for every file when there is no `so`.
    pub fn selects_file(&self, index: u32) -> bool {
        match &self.select_only {
            None => true,
            Some(ranges) => ranges.iter().any(|r| r.contains(index)),
        }
    }
}

impl FromStr for Magnet {
    type Err = MagnetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Magnet::parse(s)
    }
}

impl fmt::Display for Magnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_uri())
    }
}

/// `tr.1` -> `tr`: a numeric suffix after the last dot is dropped (`x.pe` stays `x.pe`).
fn base_key(key: &str) -> &str {
    match key.rsplit_once('.') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => key,
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        text.get(prefix.len()..)
    } else {
        None
    }
}

/// At most [`EXCERPT_CHARS`] characters of `text`, for error messages.
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}...", text.get(..cut).unwrap_or_default()),
        None => text.to_owned(),
    }
}

/// Percent-decodes `raw`; with `plus_as_space`, `+` becomes a space (form encoding).
fn percent_decode(
    param: &'static str,
    raw: &str,
    plus_as_space: bool,
) -> Result<Vec<u8>, MagnetError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(crate::core::hex::digit);
                let lo = bytes.get(i + 2).copied().and_then(crate::core::hex::digit);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(MagnetError::BadPercentEncoding { param, offset: i });
                };
                out.push((hi << 4) | lo);
                i += 3;
            }
            b'+' if plus_as_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Percent-decodes `raw` (`+` stays `+`) and requires UTF-8.
fn decode_text(param: &'static str, raw: &str) -> Result<String, MagnetError> {
    String::from_utf8(percent_decode(param, raw, false)?)
        .map_err(|_| MagnetError::NotUtf8 { param })
}

/// Appends `text` percent-encoded: RFC 3986 unreserved characters and `:` `/` `@` `,` are
/// kept (they are safe in a query value and keep URLs readable); every other byte of the
/// UTF-8 form, `&` `=` `+` `%` `#` `[` `]` and space included, becomes `%XX`.
fn percent_encode_into(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:/@,".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

/// 40 hex digits or 32 base32 characters into an info hash.
/// A `urn:btmh:` value: the multihash code of SHA-256 (`0x12`), its length (`0x20`), and the
/// 32-byte hash, all in hexadecimal.
fn parse_btmh(text: &str) -> Result<InfoHashV2, MagnetError> {
    let bad = |problem| MagnetError::BadInfoHashV2 {
        value: excerpt(text),
        problem,
    };
    let digest = text
        .get(..4)
        .filter(|prefix| *prefix == "1220")
        .and_then(|_| text.get(4..))
        .ok_or_else(|| bad("not a SHA-256 multihash (it must start with 1220)"))?;
    if digest.len() != 64 {
        return Err(bad(
            "wrong length (1220 and 64 hexadecimal digits expected)",
        ));
    }
    InfoHashV2::from_hex(digest).ok_or_else(|| bad("not hexadecimal"))
}

fn parse_btih(text: &str) -> Result<InfoHash, MagnetError> {
    let bad = |problem| MagnetError::BadInfoHash {
        value: excerpt(text),
        problem,
    };
    match text.len() {
        40 => InfoHash::from_hex(text)
            .ok_or_else(|| bad("40 characters but not all hexadecimal digits")),
        32 => base32_decode_20(text)
            .map(InfoHash::from_bytes)
            .ok_or_else(|| bad("32 characters but not all RFC 4648 base32 (A-Z, 2-7)")),
        _ => Err(bad(
            "wrong length: expected 40 hexadecimal digits or 32 base32 characters",
        )),
    }
}

/// Decodes exactly 32 RFC 4648 base32 characters (either case, no padding) into 20 bytes.
fn base32_decode_20(text: &str) -> Option<[u8; 20]> {
    let chars = text.as_bytes();
    if chars.len() != 32 {
        return None;
    }
    let mut out = [0u8; 20];
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    let mut n = 0;
    for &c in chars {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        buffer = ((buffer << 5) | u32::from(value)) & 0xffff;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            *out.get_mut(n)? = (buffer >> bits) as u8;
            n += 1;
        }
    }
    // 32 * 5 = 160 bits = 20 bytes exactly; nothing is left over.
    (n == 20).then_some(out)
}

/// A decimal number of ASCII digits only (no sign, no spaces) that fits in `T`.
fn parse_decimal<T: FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Checks that `url` looks like an absolute URL: `scheme://rest`, no spaces or controls.
fn check_url(param: &'static str, url: &str) -> Result<(), MagnetError> {
    let bad = |problem| MagnetError::BadUrl {
        param,
        value: excerpt(url),
        problem,
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("contains whitespace or control characters"));
    }
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("not an absolute URL (`scheme://...`)"))?;
    let scheme_ok = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    if !scheme_ok {
        return Err(bad("bad scheme"));
    }
    if rest.is_empty() {
        return Err(bad("no host after `://`"));
    }
    Ok(())
}

/// An IPv4 literal or a host name (an all-digits-and-dots host must be a valid IPv4 address).
fn parse_host(host: &str) -> Result<PeerHost, &'static str> {
    if host.is_empty() {
        return Err("empty host");
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Ipv4Addr::from_str(host)
            .map(|ip| PeerHost::Ip(IpAddr::V4(ip)))
            .map_err(|_| "not a valid IPv4 address");
    }
    if host.len() > MAX_HOST_NAME_LEN {
        return Err("host name longer than 253 characters");
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= MAX_HOST_LABEL_LEN
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !host.split('.').all(label_ok) {
        return Err("not an IPv4 address or a valid host name");
    }
    Ok(PeerHost::Name(host.to_owned()))
}

/// A BEP 53 list: `0,2,4-6`. An empty value is an empty selection.
fn parse_selection(text: &str) -> Result<Vec<FileRange>, MagnetError> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let index = |s: &str| {
        parse_decimal::<u32>(s).ok_or_else(|| MagnetError::BadNumber {
            param: "so",
            value: excerpt(s),
            problem: "a file index must be a decimal number that fits in 32 bits",
        })
    };
    text.split(',')
        .map(|item| {
            let bad = |problem| MagnetError::BadSelection {
                value: excerpt(item),
                problem,
            };
            if item.is_empty() {
                return Err(bad("empty item in the list"));
            }
            let (first, last) = match item.split_once('-') {
                Some((a, b)) => (index(a)?, index(b)?),
                None => {
                    let i = index(item)?;
                    (i, i)
                }
            };
            if first > last {
                return Err(bad("the range runs backwards"));
            }
            Ok(FileRange { first, last })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEX: &str = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";
    const BASE32: &str = "YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK";

    fn hash() -> InfoHash {
        InfoHash::from_hex(HEX).unwrap()
    }

    fn with(params: &str) -> Result<Magnet, MagnetError> {
        Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}{params}"))
    }

    #[test]
    fn hex_and_base32_give_the_same_hash() {
        let forms = [
            HEX.to_owned(),
            HEX.to_uppercase(),
            BASE32.to_owned(),
            BASE32.to_lowercase(),
        ];
        for form in forms {
            let m = Magnet::parse(&format!("magnet:?xt=urn:btih:{form}")).unwrap();
            assert_eq!(m.info_hash, hash(), "{form}");
        }
        // The RFC 4648 test vector "foobar" -> "MZXW6YTBOI", padded out to 20 bytes.
        let mut raw = [0u8; 20];
        raw[..6].copy_from_slice(b"foobar");
        let encoded = format!("MZXW6YTBOI{}", "A".repeat(22));
        assert_eq!(base32_decode_20(&encoded), Some(raw));
    }

    #[test]
    fn minimal_magnet_and_case_insensitive_prefixes() {
        let m = Magnet::parse(&format!("  MAGNET:?xt=URN:BTIH:{HEX}\n")).unwrap();
        assert_eq!(m, Magnet::new(hash()));
        let m = Magnet::parse(&format!("magnet:?xt=urn%3Abtih%3A{HEX}")).unwrap();
        assert_eq!(m.info_hash, hash());
    }

    #[test]
    fn percent_decoding_of_display_name() {
        let m = with("&dn=Caf%C3%A9+au%20lait%2B%26more").unwrap();
        assert_eq!(m.display_name.as_deref(), Some("Café au lait+&more"));
        // Raw UTF-8 is accepted as written.
        assert_eq!(
            with("&dn=Café").unwrap().display_name.as_deref(),
            Some("Café")
        );
        // Invalid UTF-8 in dn is decoded lossily, not refused.
        let m = with("&dn=a%FFb").unwrap();
        assert_eq!(m.display_name.as_deref(), Some("a\u{fffd}b"));
        // Only the first dn counts.
        assert_eq!(
            with("&dn=one&dn=two").unwrap().display_name.as_deref(),
            Some("one")
        );
    }

    #[test]
    fn bad_percent_encoding() {
        for (tail, offset) in [("%", 1), ("%4", 1), ("%zz", 1), ("ok%4g", 3)] {
            assert_eq!(
                with(&format!("&dn=a{tail}")),
                Err(MagnetError::BadPercentEncoding {
                    param: "dn",
                    offset
                }),
                "{tail}"
            );
        }
        assert_eq!(
            with("&tr=http%3A%2F%2Fx%2"),
            Err(MagnetError::BadPercentEncoding {
                param: "tr",
                offset: 14
            })
        );
    }

    #[test]
    fn multiple_trackers_keep_order_and_drop_duplicates() {
        let m = with(
            "&tr=udp%3A%2F%2Fb.example%3A80&tr=http://a.example/announce\
             &tr.1=udp://b.example:80&tr=http://a.example/announce?k=a+b",
        )
        .unwrap();
        assert_eq!(
            m.trackers,
            [
                "udp://b.example:80",
                "http://a.example/announce",
                "http://a.example/announce?k=a+b"
            ]
        );
    }

    #[test]
    fn too_many_trackers() {
        let many: String = (0..=MAX_TRACKERS)
            .map(|i| format!("&tr=http://t{i}.example/a"))
            .collect();
        assert_eq!(
            with(&many),
            Err(MagnetError::TooManyTrackers { max: MAX_TRACKERS })
        );
        // Exactly the limit, plus duplicates, is fine.
        let at_limit: String = (0..MAX_TRACKERS)
            .chain(0..10)
            .map(|i| format!("&tr=http://t{i}.example/a"))
            .collect();
        assert_eq!(with(&at_limit).unwrap().trackers.len(), MAX_TRACKERS);
    }

    #[test]
    fn peers_ipv4_ipv6_and_names() {
        let m = with(
            "&x.pe=10.0.0.1:6881&x.pe=%5B::1%5D:51413&x.pe=[fe80::1:2]:1\
             &x.pe=peer.example.org:6881&x.pe.2=10.0.0.1:6881",
        )
        .unwrap();
        let addrs: Vec<Option<SocketAddr>> = m.peers.iter().map(PeerAddr::socket_addr).collect();
        assert_eq!(
            addrs,
            [
                Some("10.0.0.1:6881".parse().unwrap()),
                Some("[::1]:51413".parse().unwrap()),
                Some("[fe80::1:2]:1".parse().unwrap()),
                None,
            ]
        );
        assert_eq!(
            m.peers[3].host(),
            &PeerHost::Name("peer.example.org".into())
        );
        assert_eq!(m.peers[3].port(), 6881);
        assert_eq!(m.peers[1].to_string(), "[::1]:51413");
        assert_eq!(m.peers[3].to_string(), "peer.example.org:6881");
        let v6: SocketAddr = "[::1]:6881".parse().unwrap();
        assert_eq!(
            PeerAddr::try_from(v6).unwrap(),
            "[::1]:6881".parse().unwrap()
        );
        assert!(PeerAddr::try_from(SocketAddr::from(([1, 2, 3, 4], 0))).is_err());
    }

    #[test]
    fn bad_peers() {
        let address = [
            "10.0.0.1",
            "::1:6881",
            "[::1:6881",
            "[::1]6881",
            "[::g]:6881",
            "[1.2.3.4]:6881",
            "1.2.3:6881",
            "256.1.1.1:6881",
            ":6881",
            "bad host:6881",
            "a..b:6881",
            "[fe80::1%25eth0]:6881",
        ];
        for peer in address {
            let err = with(&format!("&x.pe={peer}")).unwrap_err();
            assert!(
                matches!(err, MagnetError::BadPeerAddress { .. }),
                "{peer}: {err}"
            );
        }
        for peer in ["1.2.3.4:0", "1.2.3.4:65536", "1.2.3.4:", "h:+80", "[::1]:x"] {
            let err = with(&format!("&x.pe={peer}")).unwrap_err();
            assert!(
                matches!(err, MagnetError::BadPeerPort { .. }),
                "{peer}: {err}"
            );
        }
    }

    #[test]
    fn web_seeds_length_and_unknown_parameters() {
        let m = with(
            "&ws=https%3A%2F%2Fseed.example%2Ff&xl=12345&kt=a+b&as=x&x.foo&&xl=1\
             &ws=https://seed.example/f",
        )
        .unwrap();
        assert_eq!(m.web_seeds, ["https://seed.example/f"]);
        assert_eq!(m.exact_length, Some(12345));
    }

    #[test]
    fn bad_numbers() {
        for xl in ["", "-1", "+1", "1e3", "0x10", "18446744073709551616", " 1"] {
            let err = with(&format!("&xl={xl}")).unwrap_err();
            assert!(
                matches!(err, MagnetError::BadNumber { param: "xl", .. }),
                "{xl}: {err}"
            );
        }
        let too_big = MAX_TORRENT_LEN + 1;
        assert!(matches!(
            with(&format!("&xl={too_big}")),
            Err(MagnetError::BadNumber { param: "xl", .. })
        ));
        // A later, malformed xl is still an error.
        assert!(with("&xl=1&xl=x").is_err());
    }

    #[test]
    fn select_only() {
        let m = with("&so=0,2,4-6&so=9").unwrap();
        let expected =
            [(0, 0), (2, 2), (4, 6), (9, 9)].map(|(first, last)| FileRange { first, last });
        assert_eq!(m.select_only.as_deref(), Some(&expected[..]));
        let picked: Vec<u32> = (0..11).filter(|&i| m.selects_file(i)).collect();
        assert_eq!(picked, [0, 2, 4, 5, 6, 9]);
        assert!(Magnet::new(hash()).selects_file(7));
        assert_eq!(with("&so=").unwrap().select_only, Some(vec![]));
        for so in ["1,,2", "3-1", ",1"] {
            let err = with(&format!("&so={so}")).unwrap_err();
            assert!(
                matches!(err, MagnetError::BadSelection { .. }),
                "{so}: {err}"
            );
        }
        for so in ["a", "1-", "-1", "1-2-3", "4294967296"] {
            let err = with(&format!("&so={so}")).unwrap_err();
            assert!(
                matches!(err, MagnetError::BadNumber { param: "so", .. }),
                "{so}: {err}"
            );
        }
    }

    #[test]
    fn topic_errors() {
        for uri in [
            "",
            "http://x",
            "magnet:",
            "magnet:xt=1",
            "magne",
            "magnét:?",
        ] {
            assert_eq!(Magnet::parse(uri), Err(MagnetError::NotMagnet), "{uri}");
        }
        assert_eq!(
            Magnet::parse("magnet:?dn=x"),
            Err(MagnetError::MissingTopic)
        );
        assert_eq!(Magnet::parse("magnet:?"), Err(MagnetError::MissingTopic));
        assert!(matches!(
            Magnet::parse("magnet:?xt=urn:sha1:abc"),
            Err(MagnetError::UnsupportedTopic { .. })
        ));
        let v2hex = "caf1e1c30e81cb361b9ee167c4aa64228a7fa4fa9f6105232b28ad099f3a302e";
        let v2 = InfoHashV2::from_hex(v2hex).unwrap();
        let btmh = format!("urn:btmh:1220{v2hex}");
        // v2 only: known by the truncated v2 hash.
        let only = Magnet::parse(&format!("magnet:?xt={btmh}&dn=v2")).unwrap();
        assert_eq!(only.info_hash_v2, Some(v2));
        assert_eq!(only.info_hash.to_hex(), v2hex[..40]);
        assert!(only.is_v2_only());
        assert_eq!(Magnet::parse(&only.to_uri()).unwrap(), only);
        assert!(!only.to_uri().contains("btih"), "{}", only.to_uri());
        // Hybrid: the btih is used whichever order the topics come in, and the btmh is kept.
        let hybrid = Magnet::parse(&format!("magnet:?xt={btmh}&xt=urn:btih:{HEX}")).unwrap();
        assert_eq!(hybrid.info_hash, hash());
        assert_eq!(hybrid.info_hash_v2, Some(v2));
        assert!(!hybrid.is_v2_only());
        assert_eq!(Magnet::parse(&hybrid.to_uri()).unwrap(), hybrid);
        let hybrid = with(&format!(
            "&xt.2={}",
            btmh.to_uppercase().replace("URN:BTMH:", "urn:btmh:")
        ))
        .unwrap();
        assert_eq!(hybrid.info_hash, hash());
        assert_eq!(hybrid.info_hash_v2, Some(v2));
        // Malformed and conflicting btmh.
        for (value, problem) in [
            (format!("1114{v2hex}"), "multihash"),
            (format!("1220{}", &v2hex[..62]), "wrong length"),
            (format!("1220{}zz", &v2hex[..62]), "hexadecimal"),
            ("12".to_owned(), "multihash"),
        ] {
            match Magnet::parse(&format!("magnet:?xt=urn:btmh:{value}")) {
                Err(MagnetError::BadInfoHashV2 { problem: p, .. }) => {
                    assert!(p.contains(problem), "{value}: {p}")
                }
                other => panic!("{value}: {other:?}"),
            }
        }
        let other = format!("urn:btmh:1220{}", "ab".repeat(32));
        assert!(matches!(
            Magnet::parse(&format!("magnet:?xt={btmh}&xt={other}")),
            Err(MagnetError::ConflictingInfoHashV2 { .. })
        ));
    }

    #[test]
    fn btih_errors_and_conflicts() {
        for (btih, problem) in [
            ("abc", "wrong length"),
            (&HEX[..39], "wrong length"),
            ("g12fe1c06bba254a9dc9f519b335aa7c1367a88a", "hexadecimal"),
            ("0EX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK", "base32"),
            ("YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKE=", "base32"),
            ("", "wrong length"),
        ] {
            match Magnet::parse(&format!("magnet:?xt=urn:btih:{btih}")) {
                Err(MagnetError::BadInfoHash { problem: p, .. }) => {
                    assert!(p.contains(problem), "{btih}: {p}")
                }
                other => panic!("{btih}: {other:?}"),
            }
        }
        // The same hash twice, in both forms, is not a conflict.
        assert_eq!(
            with(&format!("&xt=urn:btih:{BASE32}")).unwrap().info_hash,
            hash()
        );
        let other = "0000000000000000000000000000000000000000";
        assert_eq!(
            with(&format!("&xt=urn:btih:{other}")),
            Err(MagnetError::ConflictingInfoHash {
                first: hash(),
                second: InfoHash::from_hex(other).unwrap()
            })
        );
    }

    #[test]
    fn url_and_utf8_errors() {
        for tr in [
            "",
            "announce",
            "://x",
            "1http://x",
            "http://",
            "http://a b",
            "http://a%0Ab",
        ] {
            let err = with(&format!("&tr={tr}")).unwrap_err();
            assert!(
                matches!(err, MagnetError::BadUrl { param: "tr", .. }),
                "{tr}: {err}"
            );
        }
        assert!(matches!(
            with("&ws=ftp:/x"),
            Err(MagnetError::BadUrl { param: "ws", .. })
        ));
        assert_eq!(
            with("&tr=http://x/%FF"),
            Err(MagnetError::NotUtf8 { param: "tr" })
        );
        assert_eq!(
            with("&x.pe=%C0:1"),
            Err(MagnetError::NotUtf8 { param: "x.pe" })
        );
    }

    #[test]
    fn error_messages_name_the_parameter() {
        let cases = [
            ("&xl=z", "`xl`"),
            ("&so=3-1", "`so`"),
            ("&x.pe=1.2.3.4:0", "`x.pe`"),
            ("&x.pe=nope", "`x.pe`"),
            ("&tr=nope", "`tr`"),
            ("&dn=%", "`dn`"),
            ("&xt=urn:btih:00", "`xt`"),
        ];
        for (params, name) in cases {
            let message = with(params).unwrap_err().to_string();
            assert!(message.contains(name), "{params}: {message}");
        }
        let long = "x".repeat(1000);
        let message = with(&format!("&x.pe={long}")).unwrap_err().to_string();
        assert!(message.len() < 200, "{message}");
    }

    #[test]
    fn round_trip() {
        let m = Magnet {
            info_hash: hash(),
            info_hash_v2: InfoHashV2::from_hex(&"5a".repeat(32)),
            display_name: Some("Ünïcode & spaces + 100% = [ok] #1".into()),
            trackers: vec![
                "udp://tracker.example:1337/announce".into(),
                "http://t.example/a?passkey=a+b&x=%41".into(),
            ],
            peers: vec![
                "10.1.2.3:6881".parse().unwrap(),
                "[2001:db8::7]:443".parse().unwrap(),
                "seed.example:51413".parse().unwrap(),
            ],
            web_seeds: vec!["https://ws.example/files/My File.iso".replace(' ', "%20")],
            exact_length: Some(1 << 40),
            select_only: Some(vec![
                FileRange { first: 0, last: 0 },
                FileRange { first: 3, last: 7 },
            ]),
        };
        let uri = m.to_uri();
        assert_eq!(Magnet::parse(&uri), Ok(m.clone()));
        assert_eq!(uri.parse::<Magnet>(), Ok(m.clone()));
        assert_eq!(m.to_string(), uri);
        let btmh = format!("xt=urn:btmh:1220{}", "5a".repeat(32));
        assert!(uri.starts_with(&format!("magnet:?xt=urn:btih:{HEX}&{btmh}&dn=")));
        assert!(
            uri.contains("&tr=udp://tracker.example:1337/announce&"),
            "{uri}"
        );
        assert!(uri.contains("&so=0,3-7"), "{uri}");
        assert_eq!(
            Magnet::parse(&Magnet::new(hash()).to_uri()),
            Ok(Magnet::new(hash()))
        );
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_strings(s in any::<String>()) {
            let _ = Magnet::parse(&s);
            let _ = PeerAddr::parse(&s);
        }

        #[test]
        fn never_panics_on_magnet_like_strings(
            s in "magnet:\\?(xt=urn:btih:[0-9a-zA-Z%]{0,42}|xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a|dn=[^&]{0,8}|tr=[a-z:/%0-9]{0,12}|\
                  x\\.pe=[0-9a-f:.\\[\\]%]{0,14}|xl=[0-9+-]{0,22}|so=[0-9,-]{0,8}|[a-z.=%]{0,5}|&){0,8}"
        ) {
            if let Ok(m) = Magnet::parse(&s) {
                // Whatever parses formats back into an equivalent URI.
                prop_assert_eq!(Magnet::parse(&m.to_uri()), Ok(m));
            }
        }

        #[test]
        fn round_trips_display_names_and_trackers(
            name in any::<String>(),
            path in "[ -~]{0,20}",
        ) {
            let mut m = Magnet::new(InfoHash::from_bytes([7; 20]));
            m.display_name = Some(name);
            let tracker = format!("http://t.example/{}", path.replace(' ', "%20"));
            if check_url("tr", &tracker).is_ok() {
                m.trackers.push(tracker);
            }
            prop_assert_eq!(Magnet::parse(&m.to_uri()), Ok(m));
        }
    }
}
