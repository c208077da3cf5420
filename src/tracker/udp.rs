//! BEP 15 packets: encoders that append to a caller-owned buffer, and a check-then-parse
//! decoder for replies. Every integer is big-endian. A reply must be exactly as long as its
//! action says (for announce, a whole number of peer entries); anything else is refused.

use std::net::SocketAddr;
use std::time::Duration;

use super::{compact_peers, tracker_text, AnnounceRequest, ScrapeStats, TrackerError};
use crate::core::InfoHash;
use crate::limits;

/// The constant a connect request starts with.
pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;

/// `connect`.
pub const ACTION_CONNECT: u32 = 0;
/// `announce`.
pub const ACTION_ANNOUNCE: u32 = 1;
/// `scrape`.
pub const ACTION_SCRAPE: u32 = 2;
/// `error`.
pub const ACTION_ERROR: u32 = 3;

/// A decoded reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UdpReply {
    /// The connection id to use for the next minute.
    Connect {
        /// Transaction id echoed.
        transaction: u32,
        /// The id to put in announce and scrape requests.
        connection_id: u64,
    },
    /// An announce reply.
    Announce {
        /// Transaction id echoed.
        transaction: u32,
        /// Seconds until the next regular announce.
        interval: u32,
        /// Peers still downloading.
        leechers: u32,
        /// Peers with everything.
        seeders: u32,
        /// Peers (IPv4 entries if the tracker was reached over IPv4, IPv6 otherwise).
        peers: Vec<SocketAddr>,
    },
    /// A scrape reply, one entry per requested hash in request order.
    Scrape {
        /// Transaction id echoed.
        transaction: u32,
        /// Counts per torrent.
        stats: Vec<ScrapeStats>,
    },
    /// The tracker refused.
    Error {
        /// Transaction id echoed.
        transaction: u32,
        /// Its message.
        message: String,
    },
}

impl UdpReply {
    /// The transaction id the reply answers.
    pub fn transaction(&self) -> u32 {
        match self {
            UdpReply::Connect { transaction, .. }
            | UdpReply::Announce { transaction, .. }
            | UdpReply::Scrape { transaction, .. }
            | UdpReply::Error { transaction, .. } => *transaction,
        }
    }
}

/// Appends a connect request (16 bytes).
pub fn encode_connect(out: &mut Vec<u8>, transaction: u32) {
    out.extend_from_slice(&PROTOCOL_ID.to_be_bytes());
    out.extend_from_slice(&ACTION_CONNECT.to_be_bytes());
    out.extend_from_slice(&transaction.to_be_bytes());
}

/// Appends an announce request (98 bytes). Counters past `i64::MAX` are clamped.
pub fn encode_announce(
    out: &mut Vec<u8>,
    connection_id: u64,
    transaction: u32,
    req: &AnnounceRequest,
) {
    let clamp = |v: u64| v.min(i64::MAX as u64);
    out.extend_from_slice(&connection_id.to_be_bytes());
    out.extend_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
    out.extend_from_slice(&transaction.to_be_bytes());
    out.extend_from_slice(req.info_hash.as_bytes());
    out.extend_from_slice(req.peer_id.as_bytes());
    out.extend_from_slice(&clamp(req.downloaded).to_be_bytes());
    out.extend_from_slice(&clamp(req.left).to_be_bytes());
    out.extend_from_slice(&clamp(req.uploaded).to_be_bytes());
    out.extend_from_slice(&req.event.as_udp().to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes()); // IP address: the sender's.
    out.extend_from_slice(&req.key.to_be_bytes());
    let numwant = i32::try_from(req.numwant).unwrap_or(i32::MAX);
    out.extend_from_slice(&numwant.to_be_bytes());
    out.extend_from_slice(&req.port.to_be_bytes());
}

/// Appends a scrape request for up to [`limits::MAX_SCRAPE_HASHES_UDP`] hashes (the rest are
/// left out; the caller splits larger sets).
pub fn encode_scrape(out: &mut Vec<u8>, connection_id: u64, transaction: u32, hashes: &[InfoHash]) {
    out.extend_from_slice(&connection_id.to_be_bytes());
    out.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
    out.extend_from_slice(&transaction.to_be_bytes());
    for h in hashes.iter().take(limits::MAX_SCRAPE_HASHES_UDP) {
        out.extend_from_slice(h.as_bytes());
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The transaction id of a datagram, if it is long enough to hold one. Used to route
/// replies before decoding them.
pub fn peek_transaction(packet: &[u8]) -> Option<u32> {
    (packet.len() >= 8).then(|| be32(packet, 4))
}

/// Decodes a reply. `ipv6` says whether the tracker was reached over IPv6, which decides
/// the peer entry size (BEP 15: 18 bytes over IPv6, 6 over IPv4). `scrape_count` is the
/// number of hashes the matching scrape asked for.
pub fn decode_reply(
    packet: &[u8],
    ipv6: bool,
    scrape_count: usize,
) -> Result<UdpReply, TrackerError> {
    if packet.len() > limits::MAX_TRACKER_RESPONSE_LEN {
        return Err(TrackerError::TooLarge);
    }
    if packet.len() < 8 {
        return Err(TrackerError::UdpShort(packet.len()));
    }
    let action = be32(packet, 0);
    let transaction = be32(packet, 4);
    let body = &packet[8..];
    match action {
        ACTION_CONNECT => {
            if body.len() != 8 {
                return Err(if body.len() < 8 {
                    TrackerError::UdpShort(packet.len())
                } else {
                    TrackerError::UdpMalformed("connect reply longer than 16 bytes")
                });
            }
            let connection_id = u64::from_be_bytes(body.try_into().expect("8 bytes"));
            Ok(UdpReply::Connect {
                transaction,
                connection_id,
            })
        }
        ACTION_ANNOUNCE => {
            if body.len() < 12 {
                return Err(TrackerError::UdpShort(packet.len()));
            }
            let entry = if ipv6 { 18 } else { 6 };
            if (body.len() - 12) % entry != 0 {
                return Err(TrackerError::UdpMalformed(
                    "announce reply is not a whole number of peer entries",
                ));
            }
            let mut peers = Vec::new();
            compact_peers(&body[12..], entry, &mut peers)?;
            Ok(UdpReply::Announce {
                transaction,
                interval: be32(body, 0),
                leechers: be32(body, 4),
                seeders: be32(body, 8),
                peers,
            })
        }
        ACTION_SCRAPE => {
            if body.len() != 12 * scrape_count {
                return Err(if body.len() < 12 * scrape_count {
                    TrackerError::UdpShort(packet.len())
                } else {
                    TrackerError::UdpMalformed("scrape reply has more entries than asked for")
                });
            }
            let stats = body
                .chunks_exact(12)
                .map(|c| ScrapeStats {
                    seeders: be32(c, 0),
                    completed: be32(c, 4),
                    leechers: be32(c, 8),
                })
                .collect();
            Ok(UdpReply::Scrape { transaction, stats })
        }
        ACTION_ERROR => Ok(UdpReply::Error {
            transaction,
            message: tracker_text(body),
        }),
        _ => Err(TrackerError::UdpMalformed("unknown action")),
    }
}

/// The interval a UDP reply asks for, as a duration.
pub fn interval(secs: u32) -> Duration {
    Duration::from_secs(u64::from(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::PeerId;
    use crate::tracker::AnnounceEvent;

    fn request() -> AnnounceRequest {
        AnnounceRequest {
            info_hash: InfoHash::from_bytes([0xaa; 20]),
            peer_id: PeerId::from_bytes(*b"-RT0100-abcdefghijkl"),
            port: 6881,
            uploaded: 3,
            downloaded: 2,
            left: 1,
            event: AnnounceEvent::Started,
            numwant: 50,
            key: 0xdead_beef,
            tracker_id: None,
            ipv6: None,
        }
    }

    #[test]
    fn requests_have_the_bep_15_layout() {
        let mut out = Vec::new();
        encode_connect(&mut out, 7);
        assert_eq!(
            out,
            [0, 0, 4, 0x17, 0x27, 0x10, 0x19, 0x80, 0, 0, 0, 0, 0, 0, 0, 7]
        );
        out.clear();
        encode_announce(&mut out, 0x1122_3344_5566_7788, 9, &request());
        assert_eq!(out.len(), 98);
        assert_eq!(&out[..8], &0x1122_3344_5566_7788u64.to_be_bytes());
        assert_eq!(&out[8..16], &[0, 0, 0, 1, 0, 0, 0, 9]);
        assert_eq!(&out[16..36], &[0xaa; 20]);
        assert_eq!(&out[36..56], b"-RT0100-abcdefghijkl");
        assert_eq!(&out[56..64], &2u64.to_be_bytes());
        assert_eq!(&out[64..72], &1u64.to_be_bytes());
        assert_eq!(&out[72..80], &3u64.to_be_bytes());
        assert_eq!(&out[80..84], &2u32.to_be_bytes());
        assert_eq!(&out[88..92], &0xdead_beefu32.to_be_bytes());
        assert_eq!(&out[92..96], &50u32.to_be_bytes());
        assert_eq!(&out[96..98], &6881u16.to_be_bytes());
        out.clear();
        let hashes = vec![InfoHash::from_bytes([1; 20]); 100];
        encode_scrape(&mut out, 1, 2, &hashes);
        assert_eq!(out.len(), 16 + 20 * limits::MAX_SCRAPE_HASHES_UDP);
    }

    #[test]
    fn replies_decode_and_bad_ones_are_refused() {
        let mut p = vec![0, 0, 0, 0, 0, 0, 0, 5];
        p.extend_from_slice(&42u64.to_be_bytes());
        assert_eq!(
            decode_reply(&p, false, 0).unwrap(),
            UdpReply::Connect {
                transaction: 5,
                connection_id: 42
            }
        );
        assert_eq!(
            decode_reply(&p[..15], false, 0),
            Err(TrackerError::UdpShort(15))
        );
        assert_eq!(
            decode_reply(&p[..3], false, 0),
            Err(TrackerError::UdpShort(3))
        );

        let mut a = vec![0, 0, 0, 1, 0, 0, 0, 6, 0, 0, 0, 60, 0, 0, 0, 2, 0, 0, 0, 1];
        a.extend_from_slice(&[127, 0, 0, 1, 0x1a, 0xe1]);
        a.extend_from_slice(&[10, 0, 0, 2, 0, 0]); // port 0: skipped
        let UdpReply::Announce {
            interval,
            leechers,
            seeders,
            peers,
            ..
        } = decode_reply(&a, false, 0).unwrap()
        else {
            panic!("not an announce reply");
        };
        assert_eq!((interval, leechers, seeders), (60, 2, 1));
        assert_eq!(peers, vec!["127.0.0.1:6881".parse().unwrap()]);
        // The same 12 bytes of peers are not whole 18-byte IPv6 entries.
        assert!(matches!(
            decode_reply(&a, true, 0),
            Err(TrackerError::UdpMalformed(_))
        ));
        assert!(matches!(
            decode_reply(&a[..25], false, 0),
            Err(TrackerError::UdpMalformed(_))
        ));
        let mut a6 = a[..20].to_vec();
        let mut entry = std::net::Ipv6Addr::LOCALHOST.octets().to_vec();
        entry.extend_from_slice(&80u16.to_be_bytes());
        a6.extend_from_slice(&entry);
        let UdpReply::Announce { peers, .. } = decode_reply(&a6, true, 0).unwrap() else {
            panic!("not an announce reply");
        };
        assert_eq!(peers, vec!["[::1]:80".parse().unwrap()]);

        let mut s = vec![0, 0, 0, 2, 0, 0, 0, 8];
        for v in [1u32, 2, 3, 4, 5, 6] {
            s.extend_from_slice(&v.to_be_bytes());
        }
        let UdpReply::Scrape { stats, .. } = decode_reply(&s, false, 2).unwrap() else {
            panic!("not a scrape reply");
        };
        assert_eq!(
            stats[1],
            ScrapeStats {
                seeders: 4,
                completed: 5,
                leechers: 6
            }
        );
        assert!(decode_reply(&s, false, 3).is_err());
        assert!(decode_reply(&s, false, 1).is_err());

        let mut e = vec![0, 0, 0, 3, 0, 0, 0, 9];
        e.extend_from_slice(b"unregistered torrent\n");
        assert_eq!(
            decode_reply(&e, false, 0).unwrap(),
            UdpReply::Error {
                transaction: 9,
                message: "unregistered torrent".into()
            }
        );
        assert!(matches!(
            decode_reply(&[0, 0, 0, 9, 0, 0, 0, 0], false, 0),
            Err(TrackerError::UdpMalformed(_))
        ));
    }
}
