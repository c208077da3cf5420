//! Local Service Discovery (BEP 14), sans-IO: the message codec and [`Lsd`], which decides
//! what to announce when and which announces to believe. It reads no clock (every input
//! takes `now`), draws no randomness (the cookie is handed in) and owns no socket; the
//! client's `client/lsd.rs` runs it on the multicast sockets.
//!
//! An announce is an HTTP-like request sent to the group `239.192.152.143:6771` (IPv4) or
//! `[ff15::efc0:988f]:6771` (IPv6):
//!
//! ```text
//! BT-SEARCH * HTTP/1.1\r\n
//! Host: 239.192.152.143:6771\r\n
//! Port: 6881\r\n
//! Infohash: 0123456789abcdef0123456789abcdef01234567\r\n   (one or more)
//! cookie: 5f3a9c01d2e4b687\r\n                              (ours, to skip our own echo)
//! \r\n
//! \r\n
//! ```
//!
//! The peer to dial is the datagram's source address with the `Port` header's port.
//!
//! **Bounds.** What we send: each torrent is announced when it starts (three times, at 0, 2
//! and 6 s, as libtorrent does, since a multicast datagram may be lost), then once per
//! [`LsdConfig::announce_interval`] (5 minutes); messages carry as many info hashes as fit
//! in [`MAX_SEND_LEN`] bytes and leave at most [`LsdConfig::messages_per_sec`] a second
//! (burst [`SEND_BURST`]). What we accept: datagrams of at most [`MAX_DATAGRAM_LEN`] bytes
//! with at most [`MAX_INFOHASHES`] info hashes, parsed check-then-parse without a panic
//! path; peers found are rationed per source address ([`LsdConfig::source_burst`], then one
//! per [`LsdConfig::source_refill`]) and in all ([`LsdConfig::global_burst`], then one per
//! [`LsdConfig::global_refill`]), in a table of at most [`LsdConfig::max_sources`] sources
//! (the least recently heard is forgotten for a new one). So a flood from one host, or from
//! many spoofed ones, makes us hold at most `max_sources` entries and hand at most the
//! global ration of peers to the torrents, whatever it sends.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::core::{InfoHash, Time};

/// The UDP port of both groups.
pub const LSD_PORT: u16 = 6771;
/// The IPv4 group (organisation-local scope).
pub const GROUP_V4: Ipv4Addr = Ipv4Addr::new(239, 192, 152, 143);
/// The IPv6 group (site-local scope).
pub const GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff15, 0, 0, 0, 0, 0, 0xefc0, 0x988f);
/// The `Host` header of an IPv4 announce.
pub const HOST_V4: &str = "239.192.152.143:6771";
/// The `Host` header of an IPv6 announce.
pub const HOST_V6: &str = "[ff15::efc0:988f]:6771";

/// Largest datagram we accept: an Ethernet MTU. BEP 14 asks senders to stay under 1,400
/// bytes, and libtorrent, Transmission and qBittorrent send one info hash (about 150 bytes);
/// anything longer is not an announce we need.
pub const MAX_DATAGRAM_LEN: usize = 1500;
/// Largest message we send (BEP 14: "should not exceed 1400 bytes to avoid MTU/fragmentation
/// problems").
pub const MAX_SEND_LEN: usize = 1400;
/// Most `Infohash` headers one accepted message may carry: 1,500 bytes hold at most 28 of
/// them after the request line, so more cannot come from a message we accept anyway.
pub const MAX_INFOHASHES: usize = 32;
/// Most header lines one accepted message may carry (the info hashes included).
pub const MAX_HEADERS: usize = 48;
/// Longest cookie we accept or send (libtorrent sends 8 hex digits, we send 16).
pub const MAX_COOKIE_LEN: usize = 32;
/// Messages that may leave at once before [`LsdConfig::messages_per_sec`] applies.
pub const SEND_BURST: u32 = 4;
/// When a torrent new to LSD is announced again after its first announce: 2 s, then 4 s
/// later (libtorrent's retries), because a multicast datagram may be lost.
const STARTUP_REPEATS: [Duration; 2] = [Duration::from_secs(2), Duration::from_secs(4)];

/// Which group a message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `239.192.152.143:6771`.
    V4,
    /// `[ff15::efc0:988f]:6771`.
    V6,
}

impl Family {
    /// The group's `Host` header value.
    pub fn host(self) -> &'static str {
        match self {
            Family::V4 => HOST_V4,
            Family::V6 => HOST_V6,
        }
    }

    /// The group's address and port.
    pub fn group(self) -> SocketAddr {
        match self {
            Family::V4 => SocketAddr::from((GROUP_V4, LSD_PORT)),
            Family::V6 => SocketAddr::from((GROUP_V6, LSD_PORT)),
        }
    }
}

/// A well-formed announce, borrowing the datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce<'a> {
    /// Where the announcer accepts peers.
    pub port: u16,
    /// The torrents it announces (at most [`MAX_INFOHASHES`], none all zero, duplicates
    /// kept once).
    pub hashes: Vec<InfoHash>,
    /// Its cookie, if it sent one.
    pub cookie: Option<&'a str>,
}

/// Why a datagram is not an announce we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Longer than [`MAX_DATAGRAM_LEN`].
    #[error("longer than {MAX_DATAGRAM_LEN} bytes")]
    TooLong,
    /// Not ASCII text.
    #[error("not ASCII text")]
    NotText,
    /// The request line is not `BT-SEARCH * HTTP/1.x`.
    #[error("not a BT-SEARCH request")]
    NotBtSearch,
    /// No blank line ends the headers.
    #[error("the headers do not end")]
    Unterminated,
    /// A header line without a name and a colon.
    #[error("a malformed header line")]
    BadHeader,
    /// More than [`MAX_HEADERS`] headers or [`MAX_INFOHASHES`] info hashes.
    #[error("too many headers")]
    TooManyHeaders,
    /// `Host`, `Port` or `cookie` given twice.
    #[error("a header given twice")]
    Duplicate,
    /// No `Host` header.
    #[error("no Host header")]
    NoHost,
    /// A `Host` that is neither group.
    #[error("Host is not an LSD group")]
    WrongHost,
    /// No `Port` header, or not a port number from 1 to 65535.
    #[error("no valid Port header")]
    BadPort,
    /// No `Infohash` header that is 40 hex digits and not all zero.
    #[error("no valid Infohash header")]
    NoInfohash,
    /// A cookie longer than [`MAX_COOKIE_LEN`].
    #[error("cookie too long")]
    BadCookie,
}

/// Parses one datagram: `BT-SEARCH * HTTP/1.0` or `/1.1`, header names in any case, lines
/// ended by CRLF (or a bare LF, which HTTP parsers accept), headers we do not know ignored,
/// anything after the blank line ignored. An `Infohash` value that is not 40 hex digits is
/// skipped, as libtorrent does (a future client may add other hash forms), but a message
/// with no usable one is refused.
pub fn parse(datagram: &[u8]) -> Result<Announce<'_>, ParseError> {
    if datagram.len() > MAX_DATAGRAM_LEN {
        return Err(ParseError::TooLong);
    }
    if !datagram.is_ascii() {
        return Err(ParseError::NotText);
    }
    let text = std::str::from_utf8(datagram).map_err(|_| ParseError::NotText)?;
    // Only lines that end in a line feed: an unterminated last line is no line.
    let mut lines = text
        .split_inclusive('\n')
        .filter_map(|l| l.strip_suffix('\n'))
        .map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request = lines.next().ok_or(ParseError::NotBtSearch)?;
    let mut words = request.split(' ');
    let (method, target, version) = (words.next(), words.next(), words.next());
    let method_ok = method.is_some_and(|m| m.eq_ignore_ascii_case("BT-SEARCH"));
    let version_ok = matches!(version, Some("HTTP/1.1") | Some("HTTP/1.0"));
    if !method_ok || target != Some("*") || !version_ok || words.next().is_some() {
        return Err(ParseError::NotBtSearch);
    }
    let (mut host, mut port, mut cookie) = (None, None, None);
    let mut hashes: Vec<InfoHash> = Vec::new();
    let (mut headers, mut infohash_headers, mut ended) = (0usize, 0usize, false);
    for line in lines {
        if line.is_empty() {
            ended = true;
            break;
        }
        headers += 1;
        if headers > MAX_HEADERS {
            return Err(ParseError::TooManyHeaders);
        }
        let (name, value) = line.split_once(':').ok_or(ParseError::BadHeader)?;
        let token = |c: u8| c.is_ascii_alphanumeric() || b"-_.".contains(&c);
        if name.is_empty() || !name.bytes().all(token) {
            return Err(ParseError::BadHeader);
        }
        let value = value.trim_matches(|c| c == ' ' || c == '\t');
        if name.eq_ignore_ascii_case("host") {
            once(&mut host, value)?;
        } else if name.eq_ignore_ascii_case("port") {
            once(&mut port, value)?;
        } else if name.eq_ignore_ascii_case("cookie") {
            once(&mut cookie, value)?;
        } else if name.eq_ignore_ascii_case("infohash") {
            infohash_headers += 1;
            if infohash_headers > MAX_INFOHASHES {
                return Err(ParseError::TooManyHeaders);
            }
            if value.len() != 40 {
                continue;
            }
            let Some(hash) = InfoHash::from_hex(value) else {
                continue;
            };
            if hash.as_bytes() != &[0; 20] && !hashes.contains(&hash) {
                hashes.push(hash);
            }
        }
    }
    if !ended {
        return Err(ParseError::Unterminated);
    }
    match host {
        None => return Err(ParseError::NoHost),
        Some(h) if h != HOST_V4 && !h.eq_ignore_ascii_case(HOST_V6) => {
            return Err(ParseError::WrongHost)
        }
        Some(_) => {}
    }
    let port = port
        .filter(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|&p| p != 0)
        .ok_or(ParseError::BadPort)?;
    if cookie.is_some_and(|c| c.len() > MAX_COOKIE_LEN) {
        return Err(ParseError::BadCookie);
    }
    if hashes.is_empty() {
        return Err(ParseError::NoInfohash);
    }
    Ok(Announce {
        port,
        hashes,
        cookie,
    })
}

/// Keeps a header's value, refusing a second one.
fn once<'a>(slot: &mut Option<&'a str>, value: &'a str) -> Result<(), ParseError> {
    match slot.replace(value) {
        Some(_) => Err(ParseError::Duplicate),
        None => Ok(()),
    }
}

/// The length of a message announcing `hashes` info hashes with a cookie of `cookie_len`
/// bytes to `family`'s group.
pub fn message_len(family: Family, cookie_len: usize, hashes: usize) -> usize {
    let fixed = "BT-SEARCH * HTTP/1.1\r\n".len()
        + "Host: \r\n".len()
        + family.host().len()
        + "Port: 65535\r\n".len()
        + "cookie: \r\n".len()
        + cookie_len
        + "\r\n\r\n".len();
    fixed + hashes * "Infohash: \r\n".len() + hashes * 40
}

/// Most info hashes one message with a cookie of `cookie_len` bytes may carry within
/// [`MAX_SEND_LEN`] (for either group: the longer host counts).
pub fn max_hashes_per_message(cookie_len: usize) -> usize {
    let fixed = message_len(Family::V6, cookie_len, 0);
    let per = message_len(Family::V6, cookie_len, 1) - fixed;
    MAX_SEND_LEN.saturating_sub(fixed) / per
}

/// Appends the announce of `hashes` to `family`'s group to `out`, in libtorrent's form (with
/// several `Infohash` headers when there are several).
pub fn encode(family: Family, port: u16, cookie: &str, hashes: &[InfoHash], out: &mut Vec<u8>) {
    out.extend_from_slice(b"BT-SEARCH * HTTP/1.1\r\nHost: ");
    out.extend_from_slice(family.host().as_bytes());
    out.extend_from_slice(format!("\r\nPort: {port}\r\n").as_bytes());
    for h in hashes {
        out.extend_from_slice(b"Infohash: ");
        out.extend_from_slice(h.to_hex().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"cookie: ");
    out.extend_from_slice(cookie.as_bytes());
    out.extend_from_slice(b"\r\n\r\n\r\n");
}

/// What [`Lsd`] sends and accepts, with defaults and why.
#[derive(Debug, Clone, PartialEq)]
pub struct LsdConfig {
    /// How often each torrent is announced after its start-up announces: BEP 14's five
    /// minutes.
    pub announce_interval: Duration,
    /// Messages a second, across torrents, after a burst of [`SEND_BURST`]: 1, so a client
    /// with many torrents (20-odd per message) never storms the network; 10,000 torrents
    /// take about 8 minutes to announce, a little past the interval.
    pub messages_per_sec: u32,
    /// Peers one source address may give before its ration applies: 32, enough for a
    /// neighbour that shares many of our torrents to be heard at once.
    pub source_burst: u32,
    /// Then one more peer per this long from that source: 1 s.
    pub source_refill: Duration,
    /// Peers all sources together may give before the global ration applies: 128.
    pub global_burst: u32,
    /// Then one more per this long, all sources together: 100 ms (10 a second).
    pub global_refill: Duration,
    /// Sources remembered for their rations: 256 (a LAN's worth of clients; a flood of
    /// spoofed addresses only cycles the table, the global ration still holds).
    pub max_sources: usize,
}

impl Default for LsdConfig {
    fn default() -> Self {
        LsdConfig {
            announce_interval: Duration::from_secs(5 * 60),
            messages_per_sec: 1,
            source_burst: 32,
            source_refill: Duration::from_secs(1),
            global_burst: 128,
            global_refill: Duration::from_millis(100),
            max_sources: 256,
        }
    }
}

/// A token bucket: `burst` tokens, one more per `refill`.
#[derive(Debug, Clone)]
struct Bucket {
    tokens: u32,
    burst: u32,
    refill: Duration,
    /// When the next token is counted from.
    since: Time,
}

impl Bucket {
    fn new(burst: u32, refill: Duration, now: Time) -> Bucket {
        Bucket {
            tokens: burst,
            burst,
            refill: refill.max(Duration::from_micros(1)),
            since: now,
        }
    }

    fn top_up(&mut self, now: Time) {
        if self.tokens >= self.burst {
            self.since = now;
            return;
        }
        let elapsed = now.saturating_since(self.since).as_micros();
        let step = self.refill.as_micros().max(1);
        let earned = elapsed / step;
        if earned > 0 {
            let room = u128::from(self.burst - self.tokens);
            self.tokens += earned.min(room) as u32;
            self.since = if self.tokens >= self.burst {
                now
            } else {
                self.since + Duration::from_micros((earned * step) as u64)
            };
        }
    }

    fn has(&mut self, now: Time) -> bool {
        self.top_up(now);
        self.tokens > 0
    }

    fn take(&mut self, now: Time) -> bool {
        self.top_up(now);
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

#[derive(Debug, Clone, Copy)]
struct Schedule {
    next: Time,
    /// Start-up repeats still to send.
    repeats: usize,
}

#[derive(Debug)]
struct Source {
    ration: Bucket,
    heard: Time,
}

/// What [`Lsd`] counted so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LsdStats {
    /// Announce messages handed out to send (one per group they go to is the caller's).
    pub announces_sent: u64,
    /// Info hashes those messages carried.
    pub hashes_sent: u64,
    /// Well-formed announces from others.
    pub announces_received: u64,
    /// Our own announces heard back (multicast loopback), ignored.
    pub own_ignored: u64,
    /// Datagrams refused: malformed, oversized, wrong host, or from an address no peer has.
    pub rejected: u64,
    /// Peers handed out for our torrents.
    pub peers_found: u64,
    /// Peers for our torrents dropped by the per-source or global ration.
    pub rate_limited: u64,
}

/// The LSD state of one client: which torrents to announce when, the send ration, the
/// receive rations, counters.
#[derive(Debug)]
pub struct Lsd {
    config: LsdConfig,
    cookie: String,
    torrents: BTreeMap<InfoHash, Schedule>,
    /// The soonest `Schedule::next` of `torrents`, so a turn with nothing due costs nothing.
    next_due: Option<Time>,
    send: Bucket,
    sources: BTreeMap<IpAddr, Source>,
    global: Bucket,
    stats: LsdStats,
}

impl Lsd {
    /// An LSD that signs its announces with `cookie` (random per client: it only has to
    /// differ from other clients'), at most [`MAX_COOKIE_LEN`] bytes of token characters;
    /// a longer one is cut.
    pub fn new(config: LsdConfig, cookie: &str, now: Time) -> Lsd {
        let cookie: String = cookie
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(MAX_COOKIE_LEN)
            .collect();
        let per_message = Duration::from_secs(1) / config.messages_per_sec.max(1);
        Lsd {
            send: Bucket::new(SEND_BURST, per_message, now),
            global: Bucket::new(config.global_burst, config.global_refill, now),
            config,
            cookie,
            torrents: BTreeMap::new(),
            next_due: None,
            sources: BTreeMap::new(),
            stats: LsdStats::default(),
        }
    }

    /// Our cookie.
    pub fn cookie(&self) -> &str {
        &self.cookie
    }

    /// What was counted so far.
    pub fn stats(&self) -> LsdStats {
        self.stats
    }

    /// Sources remembered now (at most [`LsdConfig::max_sources`]).
    pub fn sources(&self) -> usize {
        self.sources.len()
    }

    /// Torrents being announced now.
    pub fn announced(&self) -> usize {
        self.torrents.len()
    }

    /// The torrents to announce are exactly `hashes` (the caller leaves private torrents
    /// out): new ones are announced at once, gone ones no more. A torrent that leaves and
    /// comes back starts over.
    pub fn set_torrents(&mut self, hashes: impl IntoIterator<Item = InfoHash>, now: Time) {
        let mut next = BTreeMap::new();
        for h in hashes {
            let s = self.torrents.get(&h).copied().unwrap_or(Schedule {
                next: now,
                repeats: STARTUP_REPEATS.len(),
            });
            next.insert(h, s);
        }
        self.torrents = next;
        self.next_due = self.torrents.values().map(|s| s.next).min();
    }

    /// The next message's info hashes, when one is due and the send ration allows: every
    /// torrent whose announce is due, soonest first, as many as fit in one message. The
    /// caller encodes it ([`Lsd::encode`]) for each group it sends to.
    pub fn poll_announce(&mut self, now: Time) -> Option<Vec<InfoHash>> {
        if self.next_due.is_none_or(|t| t > now) {
            return None;
        }
        let mut due: Vec<(Time, InfoHash)> = self
            .torrents
            .iter()
            .filter(|(_, s)| s.next <= now)
            .map(|(h, s)| (s.next, *h))
            .collect();
        if due.is_empty() || !self.send.take(now) {
            return None;
        }
        due.sort();
        due.truncate(max_hashes_per_message(self.cookie.len()));
        let hashes: Vec<InfoHash> = due.into_iter().map(|(_, h)| h).collect();
        for h in &hashes {
            if let Some(s) = self.torrents.get_mut(h) {
                let used = STARTUP_REPEATS.len() - s.repeats;
                s.next = match STARTUP_REPEATS.get(used) {
                    Some(delay) if s.repeats > 0 => now + *delay,
                    _ => now + self.config.announce_interval,
                };
                s.repeats = s.repeats.saturating_sub(1);
            }
        }
        self.next_due = self.torrents.values().map(|s| s.next).min();
        self.stats.announces_sent += 1;
        self.stats.hashes_sent += hashes.len() as u64;
        Some(hashes)
    }

    /// Appends the announce of `hashes` (from [`Lsd::poll_announce`]) to `family`'s group
    /// for a client listening on `port` to `out`.
    pub fn encode(&self, family: Family, port: u16, hashes: &[InfoHash], out: &mut Vec<u8>) {
        encode(family, port, &self.cookie, hashes, out);
    }

    /// A datagram arrived from `from`. Returns the peers it gives for torrents `wanted`
    /// says are ours and public (`(torrent, address to dial)`), within the rations; the
    /// rest is counted and dropped.
    pub fn handle_datagram(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now: Time,
        mut wanted: impl FnMut(&InfoHash) -> bool,
    ) -> Vec<(InfoHash, SocketAddr)> {
        let ip = from.ip();
        if !dialable(ip) {
            self.stats.rejected += 1;
            return Vec::new();
        }
        let announce = match parse(datagram) {
            Ok(a) => a,
            Err(_) => {
                self.stats.rejected += 1;
                return Vec::new();
            }
        };
        if announce.cookie == Some(self.cookie.as_str()) {
            self.stats.own_ignored += 1;
            return Vec::new();
        }
        self.stats.announces_received += 1;
        let peer = SocketAddr::new(ip, announce.port);
        let mut found = Vec::new();
        for hash in announce.hashes {
            if !wanted(&hash) {
                continue;
            }
            if !self.ration(ip, now) {
                self.stats.rate_limited += 1;
                continue;
            }
            self.stats.peers_found += 1;
            found.push((hash, peer));
        }
        found
    }

    /// Takes one peer from `ip`'s ration and the global one (neither is spent unless both
    /// allow it).
    fn ration(&mut self, ip: IpAddr, now: Time) -> bool {
        if !self.sources.contains_key(&ip) {
            if self.sources.len() >= self.config.max_sources.max(1) {
                let oldest = self
                    .sources
                    .iter()
                    .min_by_key(|(addr, s)| (s.heard, **addr))
                    .map(|(addr, _)| *addr);
                if let Some(oldest) = oldest {
                    self.sources.remove(&oldest);
                }
            }
            let ration = Bucket::new(self.config.source_burst, self.config.source_refill, now);
            self.sources.insert(ip, Source { ration, heard: now });
        }
        let Some(source) = self.sources.get_mut(&ip) else {
            return false;
        };
        source.heard = now;
        if !source.ration.has(now) || !self.global.take(now) {
            return false;
        }
        source.ration.take(now)
    }
}

/// Whether `ip` can be a peer's address: not unspecified, multicast or broadcast.
fn dialable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

#[cfg(test)]
mod tests;
