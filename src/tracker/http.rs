//! HTTP trackers (BEP 3, BEP 7, BEP 23, BEP 48): the request line and headers we send, and
//! check-then-parse of the HTTP/1.x reply and its bencoded body. Pure functions; the bytes
//! travel through [`super::io`].

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::url::TrackerUrl;
use super::{
    compact_peers, tracker_text, AnnounceRequest, AnnounceResponse, ScrapeStats, TrackerError,
};
use crate::bencode::{self, Limits, Node};
use crate::core::InfoHash;
use crate::limits;

/// The `User-Agent` we send.
pub const USER_AGENT: &str = concat!("ringtorrent/", env!("CARGO_PKG_VERSION"));

/// Longest header section accepted; real trackers send a few hundred bytes.
const MAX_HEADER_LEN: usize = 16 * 1024;

/// Bencode bounds for a reply: a compact reply is a dozen values; a dictionary-model reply
/// costs four values per peer.
fn reply_limits() -> Limits {
    Limits {
        max_depth: 8,
        max_values: 8 * limits::MAX_TRACKER_PEERS + 64,
        max_len: limits::MAX_TRACKER_RESPONSE_LEN,
    }
}

/// Appends `bytes` percent-encoded, every byte outside RFC 3986's unreserved set escaped.
pub fn percent_encode(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

fn join(path: &str) -> String {
    let mut s = path.to_string();
    s.push(if path.contains('?') { '&' } else { '?' });
    s
}

/// The announce path and query for `url` (its own query, e.g. a passkey, is kept).
pub fn announce_target(url: &TrackerUrl, req: &AnnounceRequest) -> String {
    announce_target_with(url, req, true)
}

/// [`announce_target`], asking for compact peers (BEP 23, `compact=1&no_peer_id=1`) or for
/// the original dictionary model (`compact=0`, which some trackers refuse).
pub fn announce_target_with(url: &TrackerUrl, req: &AnnounceRequest, compact: bool) -> String {
    let mut q = join(&url.path);
    q.push_str("info_hash=");
    percent_encode(&mut q, req.info_hash.as_bytes());
    q.push_str("&peer_id=");
    percent_encode(&mut q, req.peer_id.as_bytes());
    q.push_str(&format!(
        "&port={}&uploaded={}&downloaded={}&left={}&{}&numwant={}&key={:08x}",
        req.port,
        req.uploaded,
        req.downloaded,
        req.left,
        if compact {
            "compact=1&no_peer_id=1"
        } else {
            "compact=0"
        },
        req.numwant,
        req.key
    ));
    if let Some(event) = req.event.as_query() {
        q.push_str("&event=");
        q.push_str(event);
    }
    if let Some(id) = &req.tracker_id {
        q.push_str("&trackerid=");
        percent_encode(&mut q, id);
    }
    if let Some(ip) = req.ipv6 {
        q.push_str("&ipv6=");
        percent_encode(&mut q, ip.to_string().as_bytes());
    }
    q
}

/// The scrape path and query for up to [`limits::MAX_SCRAPE_HASHES_HTTP`] hashes, or
/// [`TrackerError::NoScrape`] when the URL has no scrape form.
pub fn scrape_target(url: &TrackerUrl, hashes: &[InfoHash]) -> Result<String, TrackerError> {
    let base = url.scrape_path().ok_or(TrackerError::NoScrape)?;
    let mut q = join(&base);
    for (i, h) in hashes
        .iter()
        .take(limits::MAX_SCRAPE_HASHES_HTTP)
        .enumerate()
    {
        if i > 0 {
            q.push('&');
        }
        q.push_str("info_hash=");
        percent_encode(&mut q, h.as_bytes());
    }
    Ok(q)
}

/// A complete `GET` request for `target` on `url`'s host. `Connection: close` lets the reply
/// end at end-of-stream when the server sends no length.
pub fn request(url: &TrackerUrl, target: &str) -> Vec<u8> {
    request_with(url, target, false)
}

/// [`request`], asking to keep the connection open for the next request when `keep_alive`.
pub fn request_with(url: &TrackerUrl, target: &str, keep_alive: bool) -> Vec<u8> {
    let host = match (url.scheme, url.port) {
        (super::Scheme::Http, 80) | (super::Scheme::Https, 443) => {
            if url.host.contains(':') {
                format!("[{}]", url.host)
            } else {
                url.host.clone()
            }
        }
        _ => url.authority(),
    };
    format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\n\
         Accept-Encoding: identity\r\nConnection: {}\r\n\r\n",
        if keep_alive { "keep-alive" } else { "close" }
    )
    .into_bytes()
}

/// How far a reply has arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpProgress {
    /// More bytes are needed (or end-of-stream, if the server sent no length).
    Incomplete,
    /// The whole reply: its status and decoded body.
    Done {
        /// The status code.
        status: u16,
        /// The body, de-chunked.
        body: Vec<u8>,
    },
}

/// Parses an HTTP/1.x reply from the bytes received so far. `eof` says the server closed the
/// connection, which ends a body that has no `Content-Length` and is not chunked.
pub fn parse_reply(buf: &[u8], eof: bool) -> Result<HttpProgress, TrackerError> {
    if buf.len() > limits::MAX_TRACKER_RESPONSE_LEN {
        return Err(TrackerError::TooLarge);
    }
    let Some(end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_HEADER_LEN {
            return Err(TrackerError::MalformedHttp("header section too long"));
        }
        return if eof {
            Err(TrackerError::MalformedHttp(
                "connection closed inside the headers",
            ))
        } else {
            Ok(HttpProgress::Incomplete)
        };
    };
    let head = std::str::from_utf8(&buf[..end])
        .map_err(|_| TrackerError::MalformedHttp("headers are not text"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(TrackerError::MalformedHttp("not an HTTP/1.x status line"));
    }
    let status = parts
        .next()
        .filter(|s| s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or(TrackerError::MalformedHttp("bad status code"))?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or(TrackerError::MalformedHttp("header line without a colon"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse::<usize>()
                .map_err(|_| TrackerError::MalformedHttp("bad Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(TrackerError::MalformedHttp("conflicting Content-Length"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if value.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if !value.eq_ignore_ascii_case("identity") {
                return Err(TrackerError::MalformedHttp("unsupported Transfer-Encoding"));
            }
        }
    }
    let body = &buf[end + 4..];
    if chunked {
        return match dechunk(body)? {
            Some(body) => Ok(HttpProgress::Done { status, body }),
            None if eof => Err(TrackerError::MalformedHttp(
                "connection closed inside a chunk",
            )),
            None => Ok(HttpProgress::Incomplete),
        };
    }
    match length {
        Some(n) if n > limits::MAX_TRACKER_RESPONSE_LEN => Err(TrackerError::TooLarge),
        Some(n) if body.len() >= n => Ok(HttpProgress::Done {
            status,
            body: body[..n].to_vec(),
        }),
        Some(_) if eof => Err(TrackerError::MalformedHttp(
            "connection closed inside the body",
        )),
        Some(_) => Ok(HttpProgress::Incomplete),
        None if eof => Ok(HttpProgress::Done {
            status,
            body: body.to_vec(),
        }),
        None => Ok(HttpProgress::Incomplete),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Decodes a chunked body; `None` until the last chunk has arrived. Trailers are ignored.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, TrackerError> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = find(rest, b"\r\n") else {
            return if rest.len() > 64 {
                Err(TrackerError::MalformedHttp("chunk size line too long"))
            } else {
                Ok(None)
            };
        };
        let size_text = std::str::from_utf8(&rest[..eol])
            .ok()
            .map(|s| s.split(';').next().unwrap_or("").trim())
            .filter(|s| !s.is_empty() && s.len() <= 8)
            .ok_or(TrackerError::MalformedHttp("bad chunk size"))?;
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| TrackerError::MalformedHttp("bad chunk size"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(Some(out));
        }
        if out.len() + size > limits::MAX_TRACKER_RESPONSE_LEN {
            return Err(TrackerError::TooLarge);
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        if &rest[size..size + 2] != b"\r\n" {
            return Err(TrackerError::MalformedHttp("chunk not followed by CRLF"));
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// Decodes a reply's dictionary. Whitespace after it is allowed: aquatic_http ends its bodies
/// with CRLF (counted in its Content-Length), and clients accept that.
fn decode_dict(body: &[u8]) -> Result<Node<'_>, TrackerError> {
    let (root, used) = bencode::decode_prefix(body, &reply_limits())?;
    let rest = body.get(used..).unwrap_or_default();
    if !rest.iter().all(u8::is_ascii_whitespace) {
        // Anything else after the value is what a strict decode reports.
        bencode::decode_with(body, &reply_limits())?;
    }
    if root.as_dict().is_none() {
        return Err(TrackerError::Field {
            field: "(root)",
            problem: "reply is not a dictionary",
        });
    }
    if let Some(reason) = root.get(b"failure reason") {
        let text = reason.as_bytes().ok_or(TrackerError::Field {
            field: "failure reason",
            problem: "not a string",
        })?;
        return Err(TrackerError::Failure(tracker_text(text)));
    }
    Ok(root)
}

fn int_field(root: &Node<'_>, field: &'static str) -> Result<Option<u64>, TrackerError> {
    match root.get(field.as_bytes()) {
        None => Ok(None),
        Some(n) => match n.as_int() {
            Some(v) if v >= 0 => Ok(Some(v as u64)),
            Some(_) => Err(TrackerError::Field {
                field,
                problem: "negative",
            }),
            None => Err(TrackerError::Field {
                field,
                problem: "not an integer",
            }),
        },
    }
}

fn count(v: Option<u64>) -> Option<u32> {
    v.map(|v| u32::try_from(v).unwrap_or(u32::MAX))
}

/// Parses an announce reply body. A `failure reason` is [`TrackerError::Failure`]. A missing
/// `interval` (some trackers leave it out) is [`Duration::ZERO`]; the announcer applies its
/// default.
pub fn parse_announce(body: &[u8]) -> Result<AnnounceResponse, TrackerError> {
    let root = decode_dict(body)?;
    let secs = |v: Option<u64>| v.map(|s| Duration::from_secs(s.min(u64::from(u32::MAX))));
    let mut resp = AnnounceResponse {
        interval: secs(int_field(&root, "interval")?).unwrap_or_default(),
        min_interval: secs(int_field(&root, "min interval")?),
        seeders: count(int_field(&root, "complete")?),
        leechers: count(int_field(&root, "incomplete")?),
        ..AnnounceResponse::default()
    };
    if let Some(w) = root.get(b"warning message").and_then(Node::as_bytes) {
        resp.warning = Some(tracker_text(w));
    }
    if let Some(id) = root.get(b"tracker id").and_then(Node::as_bytes) {
        if id.len() <= limits::MAX_TRACKER_ID_LEN && !id.is_empty() {
            resp.tracker_id = Some(id.to_vec());
        }
    }
    match root.get(b"peers") {
        None => {}
        Some(n) => {
            if let Some(compact) = n.as_bytes() {
                compact_peers(compact, 6, &mut resp.peers)?;
            } else if let Some(list) = n.as_list() {
                dictionary_peers(list, &mut resp.peers);
            } else {
                return Err(TrackerError::Field {
                    field: "peers",
                    problem: "neither a string nor a list",
                });
            }
        }
    }
    match root.get(b"peers6") {
        None => {}
        Some(n) => {
            if let Some(compact) = n.as_bytes() {
                compact_peers(compact, 18, &mut resp.peers)?;
            } else if let Some(list) = n.as_list() {
                dictionary_peers(list, &mut resp.peers);
            } else {
                return Err(TrackerError::Field {
                    field: "peers6",
                    problem: "neither a string nor a list",
                });
            }
        }
    }
    Ok(resp)
}

/// The original model: a list of `{ip, port, peer id}`. Entries that are not a literal IP
/// address and a non-zero port (host names included: we do not resolve what a tracker
/// hands out) are skipped one by one rather than failing the whole reply.
fn dictionary_peers(list: &[Node<'_>], out: &mut Vec<SocketAddr>) {
    for entry in list {
        if out.len() >= limits::MAX_TRACKER_PEERS {
            return;
        }
        let ip = entry
            .get(b"ip")
            .and_then(Node::as_str)
            .and_then(|s| s.parse::<IpAddr>().ok());
        let port = entry
            .get(b"port")
            .and_then(Node::as_int)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|&p| p != 0);
        if let (Some(ip), Some(port)) = (ip, port) {
            out.push(SocketAddr::new(ip, port));
        }
    }
}

/// Parses a scrape reply body: the counts for each of `hashes` the tracker reported on (a
/// hash it does not know is simply absent).
pub fn parse_scrape(
    body: &[u8],
    hashes: &[InfoHash],
) -> Result<Vec<(InfoHash, ScrapeStats)>, TrackerError> {
    let root = decode_dict(body)?;
    let files = root.get(b"files").ok_or(TrackerError::Field {
        field: "files",
        problem: "missing",
    })?;
    let entries = files.as_dict().ok_or(TrackerError::Field {
        field: "files",
        problem: "not a dictionary",
    })?;
    let mut out = Vec::new();
    for (key, stats) in entries {
        let Some(hash) = InfoHash::from_slice(key) else {
            continue;
        };
        if !hashes.contains(&hash) || stats.as_dict().is_none() {
            continue;
        }
        out.push((
            hash,
            ScrapeStats {
                seeders: count(int_field(stats, "complete")?).unwrap_or(0),
                completed: count(int_field(stats, "downloaded")?).unwrap_or(0),
                leechers: count(int_field(stats, "incomplete")?).unwrap_or(0),
            },
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::PeerId;
    use crate::tracker::AnnounceEvent;

    fn req() -> AnnounceRequest {
        AnnounceRequest {
            info_hash: InfoHash::from_bytes(*b"\x01\x23abcdefghijklmnop~ "),
            peer_id: PeerId::from_bytes(*b"-RT0100-abcdefghijkl"),
            port: 6881,
            uploaded: 1,
            downloaded: 2,
            left: 3,
            event: AnnounceEvent::Started,
            numwant: 50,
            key: 0xab,
            tracker_id: Some(b"id 1".to_vec()),
            ipv6: None,
        }
    }

    #[test]
    fn bep7_ipv6_parameter() {
        let url = TrackerUrl::parse("http://t.example/announce").unwrap();
        let with = AnnounceRequest {
            ipv6: Some("2001:db8::1:2".parse().unwrap()),
            ..req()
        };
        let t = announce_target(&url, &with);
        assert!(
            t.ends_with("&trackerid=id%201&ipv6=2001%3Adb8%3A%3A1%3A2"),
            "{t}"
        );
        assert!(!announce_target(&url, &req()).contains("ipv6"));
    }

    #[test]
    fn announce_query_is_encoded() {
        let url = TrackerUrl::parse("http://t.example:8080/announce?passkey=k").unwrap();
        let t = announce_target(&url, &req());
        assert_eq!(
            t,
            "/announce?passkey=k&info_hash=%01%23abcdefghijklmnop~%20&peer_id=-RT0100-abcdefghijkl\
             &port=6881&uploaded=1&downloaded=2&left=3&compact=1&no_peer_id=1&numwant=50\
             &key=000000ab&event=started&trackerid=id%201"
        );
        let r = String::from_utf8(request(&url, &t)).unwrap();
        assert!(r.starts_with("GET /announce?passkey=k&info_hash="));
        assert!(r.contains("\r\nHost: t.example:8080\r\n"));
        assert!(r.ends_with("\r\n\r\n"));
        assert!(r.contains("Connection: close\r\n"));
        let k = String::from_utf8(request_with(&url, &t, true)).unwrap();
        assert!(k.contains("Connection: keep-alive\r\n"));
        let full = announce_target_with(&url, &req(), false);
        assert!(full.contains("&compact=0&numwant=50") && !full.contains("no_peer_id"));
        let url = TrackerUrl::parse("http://t.example/announce").unwrap();
        assert_eq!(
            scrape_target(&url, &[InfoHash::from_bytes([0xff; 20])]).unwrap(),
            format!("/scrape?info_hash={}", "%FF".repeat(20))
        );
        let url = TrackerUrl::parse("http://t.example/a").unwrap();
        assert_eq!(scrape_target(&url, &[]), Err(TrackerError::NoScrape));
    }

    #[test]
    fn replies_by_length_chunked_and_close() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabcdEXTRA";
        assert_eq!(
            parse_reply(r, false).unwrap(),
            HttpProgress::Done {
                status: 200,
                body: b"abcd".to_vec()
            }
        );
        assert_eq!(
            parse_reply(&r[..40], false).unwrap(),
            HttpProgress::Incomplete
        );
        assert!(parse_reply(&r[..40], true).is_err());
        let c = b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n";
        assert_eq!(
            parse_reply(c, false).unwrap(),
            HttpProgress::Done {
                status: 200,
                body: b"abcde".to_vec()
            }
        );
        assert_eq!(
            parse_reply(&c[..55], false).unwrap(),
            HttpProgress::Incomplete
        );
        let e = b"HTTP/1.1 404 Not Found\r\nServer: x\r\n\r\nnope";
        assert_eq!(parse_reply(e, false).unwrap(), HttpProgress::Incomplete);
        assert_eq!(
            parse_reply(e, true).unwrap(),
            HttpProgress::Done {
                status: 404,
                body: b"nope".to_vec()
            }
        );
        for bad in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
        ] {
            assert!(
                parse_reply(bad, true).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn whitespace_after_the_reply_is_accepted_and_other_bytes_are_not() {
        // aquatic_http's body, CRLF included in its Content-Length.
        let body = b"d8:completei2e10:incompletei1e8:intervali120e5:peers0:6:peers60:e\r\n";
        let r = parse_announce(body).unwrap();
        assert_eq!((r.seeders, r.leechers), (Some(2), Some(1)));
        assert!(parse_announce(b"d8:completei2ee junk").is_err());
        assert!(parse_scrape(b"d5:filesdee\r\n", &[]).is_ok());
    }

    #[test]
    fn announce_bodies() {
        let body = b"d8:completei5e10:incompletei3e8:intervali1800e12:min intervali900e\
            5:peers12:\x7f\x00\x00\x01\x1a\xe1\x0a\x00\x00\x02\x00\x506:peers618:\
            \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x50\
            10:tracker id3:abc15:warning message4:hmm!e";
        let r = parse_announce(body).unwrap();
        assert_eq!(r.interval, Duration::from_secs(1800));
        assert_eq!(r.min_interval, Some(Duration::from_secs(900)));
        assert_eq!((r.seeders, r.leechers), (Some(5), Some(3)));
        assert_eq!(r.tracker_id.as_deref(), Some(&b"abc"[..]));
        assert_eq!(r.warning.as_deref(), Some("hmm!"));
        let want: Vec<SocketAddr> = ["127.0.0.1:6881", "10.0.0.2:80", "[::1]:80"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(r.peers, want);

        let dict = b"d8:intervali60e5:peersld2:ip9:127.0.0.17:peer id20:-LT2080-aaaaaaaaaaaa\
            4:porti6881eed2:ip7:a.b.com4:porti1eed2:ip3:::14:porti2eeee";
        let r = parse_announce(dict).unwrap();
        assert_eq!(
            r.peers,
            vec![
                "127.0.0.1:6881".parse().unwrap(),
                "[::1]:2".parse().unwrap()
            ]
        );

        assert_eq!(
            parse_announce(b"d14:failure reason6:denied8:intervali5ee"),
            Err(TrackerError::Failure("denied".into()))
        );
        assert!(matches!(
            parse_announce(b"<html>"),
            Err(TrackerError::Bencode(_))
        ));
        assert!(parse_announce(b"le").is_err());
        assert!(parse_announce(b"d5:peers5:abcdee").is_err());
        assert!(parse_announce(b"d8:intervali-1ee").is_err());
        assert!(parse_announce(b"d5:peersi1ee").is_err());
        assert_eq!(parse_announce(b"de").unwrap().interval, Duration::ZERO);
    }

    #[test]
    fn scrape_bodies() {
        let h = InfoHash::from_bytes([b'a'; 20]);
        let other = InfoHash::from_bytes([b'b'; 20]);
        let body = b"d5:filesd20:aaaaaaaaaaaaaaaaaaaad8:completei1e10:downloadedi2e\
            10:incompletei3ee20:bbbbbbbbbbbbbbbbbbbbd8:completei9eeee";
        assert_eq!(
            parse_scrape(body, &[h]).unwrap(),
            vec![(
                h,
                ScrapeStats {
                    seeders: 1,
                    completed: 2,
                    leechers: 3
                }
            )]
        );
        assert_eq!(parse_scrape(body, &[h, other]).unwrap().len(), 2);
        assert!(parse_scrape(b"de", &[h]).is_err());
        assert!(parse_scrape(b"d5:filesi1ee", &[h]).is_err());
    }
}
