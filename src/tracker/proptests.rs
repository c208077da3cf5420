//! No input makes a tracker parser panic, and what the encoders write the decoders read back.

use proptest::prelude::*;

use super::{http, udp, url::TrackerUrl, AnnounceEvent, AnnounceRequest};
use crate::core::{InfoHash, PeerId};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn udp_replies_never_panic(packet in proptest::collection::vec(any::<u8>(), 0..600),
                               ipv6: bool, count in 0usize..80) {
        let _ = udp::decode_reply(&packet, ipv6, count);
        let _ = udp::peek_transaction(&packet);
    }

    #[test]
    fn udp_replies_with_a_valid_header_never_panic(action in 0u32..5, tid: u32,
                               body in proptest::collection::vec(any::<u8>(), 0..200),
                               ipv6: bool, count in 0usize..20) {
        let mut p = action.to_be_bytes().to_vec();
        p.extend_from_slice(&tid.to_be_bytes());
        p.extend_from_slice(&body);
        if let Ok(reply) = udp::decode_reply(&p, ipv6, count) {
            prop_assert_eq!(reply.transaction(), tid);
        }
    }

    #[test]
    fn http_replies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), eof: bool) {
        let _ = http::parse_reply(&bytes, eof);
    }

    #[test]
    fn http_replies_with_plausible_headers_never_panic(
        status in 100u16..600,
        header in "(Content-Length: [0-9]{1,3}|Transfer-Encoding: chunked|X: y)",
        body in "[0-9a-fA-F;\r\nxyz]{0,80}",
        eof: bool,
    ) {
        let text = format!("HTTP/1.1 {status} Whatever\r\n{header}\r\n\r\n{body}");
        let _ = http::parse_reply(text.as_bytes(), eof);
    }

    #[test]
    fn announce_and_scrape_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = http::parse_announce(&bytes);
        let _ = http::parse_scrape(&bytes, &[InfoHash::from_bytes([0; 20])]);
    }

    #[test]
    fn bencoded_bodies_never_panic(
        peers in proptest::collection::vec(any::<u8>(), 0..64),
        interval in any::<i64>(),
        key in "(peers|peers6|interval|min interval|failure reason|tracker id|files)",
        list: bool,
    ) {
        let mut body = Vec::new();
        body.extend_from_slice(b"d");
        body.extend_from_slice(format!("{}:{}", key.len(), key).as_bytes());
        if list {
            body.extend_from_slice(format!("ld2:ip{}:", peers.len()).as_bytes());
            body.extend_from_slice(&peers);
            body.extend_from_slice(format!("4:porti{interval}eee").as_bytes());
        } else {
            body.extend_from_slice(format!("{}:", peers.len()).as_bytes());
            body.extend_from_slice(&peers);
        }
        body.extend_from_slice(format!("8:intervali{interval}ee").as_bytes());
        let _ = http::parse_announce(&body);
        let _ = http::parse_scrape(&body, &[]);
    }

    #[test]
    fn urls_never_panic(text in "\\PC{0,60}") {
        if let Ok(url) = TrackerUrl::parse(&text) {
            let _ = url.scrape_path();
            let _ = url.authority();
        }
    }

    #[test]
    fn urls_of_the_usual_shape_parse(scheme in "(udp|http|https)", host in "[a-z0-9.-]{1,20}",
                                     port in 1u16.., path in "(/[a-z]{0,8}){0,3}") {
        let raw = format!("{scheme}://{host}:{port}{path}");
        let url = TrackerUrl::parse(&raw).unwrap();
        prop_assert_eq!(url.host, host);
        prop_assert_eq!(url.port, port);
    }

    #[test]
    fn udp_announce_round_trips(downloaded: u64, left: u64, uploaded: u64, key: u32,
                                numwant in 0u32..1000, port: u16, tid: u32, conn: u64) {
        let req = AnnounceRequest {
            info_hash: InfoHash::from_bytes([3; 20]),
            peer_id: PeerId::from_bytes([4; 20]),
            port, uploaded, downloaded, left,
            event: AnnounceEvent::Completed,
            numwant, key, tracker_id: None, ipv6: None,
        };
        let mut out = Vec::new();
        udp::encode_announce(&mut out, conn, tid, &req);
        prop_assert_eq!(out.len(), 98);
        let read64 = |at: usize| u64::from_be_bytes(out[at..at + 8].try_into().unwrap());
        prop_assert_eq!(read64(56), downloaded.min(i64::MAX as u64));
        prop_assert_eq!(read64(64), left.min(i64::MAX as u64));
        prop_assert_eq!(read64(72), uploaded.min(i64::MAX as u64));
        prop_assert_eq!(udp::peek_transaction(&out[8..]), Some(tid));
    }

    #[test]
    fn percent_encoding_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
        let mut s = String::new();
        http::percent_encode(&mut s, &bytes);
        let mut back = Vec::new();
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                back.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                back.push(b[i]);
                i += 1;
            }
        }
        prop_assert_eq!(back, bytes);
    }
}
