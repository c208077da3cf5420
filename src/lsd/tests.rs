use super::*;

const A: &str = "0123456789abcdef0123456789abcdef01234567";
const B: &str = "89abcdef0123456789abcdef0123456789abcdef";

fn hash(hex: &str) -> InfoHash {
    InfoHash::from_hex(hex).unwrap()
}

fn h(i: u32) -> InfoHash {
    let mut b = [0u8; 20];
    b[..4].copy_from_slice(&i.to_be_bytes());
    b[19] = 1;
    InfoHash::from_bytes(b)
}

fn msg(host: &str, port: &str, hashes: &[&str], cookie: Option<&str>) -> Vec<u8> {
    let mut s = format!("BT-SEARCH * HTTP/1.1\r\nHost: {host}\r\nPort: {port}\r\n");
    for h in hashes {
        s.push_str(&format!("Infohash: {h}\r\n"));
    }
    if let Some(c) = cookie {
        s.push_str(&format!("cookie: {c}\r\n"));
    }
    s.push_str("\r\n\r\n");
    s.into_bytes()
}

fn peer(last: u8) -> SocketAddr {
    SocketAddr::from(([192, 168, 1, last], 6771))
}

#[test]
fn libtorrents_exact_message_is_accepted() {
    // libtorrent 2.0's render_lsd_packet: one info hash, the cookie in hex, two CRLFs.
    let lt = format!(
        "BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 6881\r\nInfohash: {A}\r\ncookie: 3e8a1f\r\n\r\n\r\n"
    );
    let a = parse(lt.as_bytes()).unwrap();
    assert_eq!(a.port, 6881);
    assert_eq!(a.hashes, vec![hash(A)]);
    assert_eq!(a.cookie, Some("3e8a1f"));
    // Its IPv6 form, and Transmission's (no cookie), and upper-case hex.
    let v6 = msg(HOST_V6, "51413", &[&A.to_uppercase()], None);
    let a = parse(&v6).unwrap();
    assert_eq!(
        (a.port, a.hashes.clone(), a.cookie),
        (51413, vec![hash(A)], None)
    );
}

#[test]
fn several_info_hashes_and_lenient_http_details() {
    // Header names in any case, bare LF, unknown headers ignored, duplicates kept once,
    // values of the wrong length skipped (libtorrent does the same).
    let m = format!(
        "bt-search * HTTP/1.0\nHOST: 239.192.152.143:6771\nport:  7000 \nX-Other: y\ninfohash: {A}\nInfohash: {B}\nInfohash: {A}\nInfohash: abc\n\n"
    );
    let a = parse(m.as_bytes()).unwrap();
    assert_eq!(a.port, 7000);
    assert_eq!(a.hashes, vec![hash(A), hash(B)]);
}

#[test]
fn malformed_messages_are_refused() {
    use ParseError::*;
    let ok = msg(HOST_V4, "6881", &[A], Some("c"));
    assert!(parse(&ok).is_ok());
    let cases: Vec<(Vec<u8>, ParseError)> = vec![
        (msg("239.192.152.143", "6881", &[A], None), WrongHost),
        (msg("10.0.0.1:6771", "6881", &[A], None), WrongHost),
        (
            format!("BT-SEARCH * HTTP/1.1\r\nPort: 1\r\nInfohash: {A}\r\n\r\n").into_bytes(),
            NoHost,
        ),
        (msg(HOST_V4, "0", &[A], None), BadPort),
        (msg(HOST_V4, "65536", &[A], None), BadPort),
        (msg(HOST_V4, "+80", &[A], None), BadPort),
        (msg(HOST_V4, "", &[A], None), BadPort),
        (msg(HOST_V4, "000080", &[A], None), BadPort),
        (msg(HOST_V4, "80", &[], None), NoInfohash),
        (msg(HOST_V4, "80", &["zz".repeat(20).as_str()], None), NoInfohash),
        (
            msg(HOST_V4, "80", &["0000000000000000000000000000000000000000"], None),
            NoInfohash,
        ),
        (msg(HOST_V4, "80", &[A], Some(&"c".repeat(33))), BadCookie),
        (
            format!("NOTIFY * HTTP/1.1\r\nHost: {HOST_V4}\r\nPort: 1\r\nInfohash: {A}\r\n\r\n")
                .into_bytes(),
            NotBtSearch,
        ),
        (
            format!("BT-SEARCH / HTTP/1.1\r\nHost: {HOST_V4}\r\nPort: 1\r\nInfohash: {A}\r\n\r\n")
                .into_bytes(),
            NotBtSearch,
        ),
        (
            format!("BT-SEARCH * HTTP/2\r\nHost: {HOST_V4}\r\nPort: 1\r\nInfohash: {A}\r\n\r\n")
                .into_bytes(),
            NotBtSearch,
        ),
        (
            format!("BT-SEARCH * HTTP/1.1\r\nHost: {HOST_V4}\r\nPort: 1\r\nInfohash: {A}\r\n")
                .into_bytes(),
            Unterminated,
        ),
        (
            format!("BT-SEARCH * HTTP/1.1\r\nHost: {HOST_V4}\r\nPort 1\r\nInfohash: {A}\r\n\r\n")
                .into_bytes(),
            BadHeader,
        ),
        (
            format!("BT-SEARCH * HTTP/1.1\r\nHost: {HOST_V4}\r\n: 1\r\nInfohash: {A}\r\n\r\n")
                .into_bytes(),
            BadHeader,
        ),
        (
            format!(
                "BT-SEARCH * HTTP/1.1\r\nHost: {HOST_V4}\r\nPort: 1\r\nPort: 2\r\nInfohash: {A}\r\n\r\n"
            )
            .into_bytes(),
            Duplicate,
        ),
        (
            format!("BT-SEARCH * HTTP/1.1\r\nHost: {HOST_V4}\r\nPort: 1\r\nInfohash: {A}\r\n\r\n\u{e9}")
                .into_bytes(),
            NotText,
        ),
        (vec![b'A'; MAX_DATAGRAM_LEN + 1], TooLong),
        (Vec::new(), NotBtSearch),
    ];
    for (m, want) in cases {
        assert_eq!(parse(&m), Err(want), "{:?}", String::from_utf8_lossy(&m));
    }
    // Too many info hashes (still under the size limit) and too many headers.
    let many: Vec<String> = (0..MAX_INFOHASHES as u32 + 1)
        .map(|i| h(i).to_hex())
        .collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let m = msg(HOST_V4, "1", &refs[..25], None);
    assert!(m.len() <= MAX_DATAGRAM_LEN);
    assert!(parse(&m).is_ok());
    let mut m = format!("BT-SEARCH * HTTP/1.1\r\nHost: {HOST_V4}\r\nPort: 1\r\n");
    for _ in 0..MAX_INFOHASHES + 1 {
        m.push_str("Infohash: x\r\n");
    }
    m.push_str("\r\n");
    assert_eq!(parse(m.as_bytes()), Err(TooManyHeaders));
    let mut m = format!("BT-SEARCH * HTTP/1.1\r\nHost: {HOST_V4}\r\nPort: 1\r\nInfohash: {A}\r\n");
    for _ in 0..MAX_HEADERS {
        m.push_str("X: y\r\n");
    }
    m.push_str("\r\n");
    assert_eq!(parse(m.as_bytes()), Err(TooManyHeaders));
}

#[test]
fn no_prefix_of_a_message_panics_or_passes_unterminated() {
    let m = msg(HOST_V4, "6881", &[A, B], Some("abc"));
    let end = m.len() - 4; // through the last header's CRLF and one more CRLF
    for i in 0..m.len() {
        let r = parse(&m[..i]);
        if i < end {
            assert!(r.is_err(), "prefix {i} accepted");
        }
    }
    // Every byte value at every position: no panic.
    for i in 0..m.len() {
        for b in [0u8, b'\r', b'\n', b':', b' ', 0x7f, 0xff] {
            let mut x = m.clone();
            x[i] = b;
            let _ = parse(&x);
        }
    }
}

#[test]
fn encode_round_trips_and_stays_under_the_size_limit() {
    let lsd = Lsd::new(LsdConfig::default(), "0123456789abcdef", Time::ZERO);
    let n = max_hashes_per_message(lsd.cookie().len());
    assert!(n >= 20, "{n}");
    let hashes: Vec<InfoHash> = (0..n as u32).map(h).collect();
    for family in [Family::V4, Family::V6] {
        let mut out = Vec::new();
        lsd.encode(family, 65535, &hashes, &mut out);
        assert!(out.len() <= MAX_SEND_LEN, "{}", out.len());
        assert_eq!(out.len(), message_len(family, 16, n));
        let a = parse(&out).unwrap();
        assert_eq!((a.port, a.cookie), (65535, Some("0123456789abcdef")));
        assert_eq!(a.hashes, hashes);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(&format!(
            "BT-SEARCH * HTTP/1.1\r\nHost: {}\r\n",
            family.host()
        )));
        assert!(text.ends_with("\r\n\r\n\r\n"));
    }
    let mut out = Vec::new();
    lsd.encode(
        Family::V4,
        1,
        &(0..n as u32 + 1).map(h).collect::<Vec<_>>(),
        &mut out,
    );
    assert!(out.len() > MAX_SEND_LEN, "n is the most that fits");
}

#[test]
fn our_own_announce_is_ignored() {
    let mut lsd = Lsd::new(LsdConfig::default(), "feedface", Time::ZERO);
    let mut out = Vec::new();
    lsd.encode(Family::V4, 6881, &[hash(A)], &mut out);
    let found = lsd.handle_datagram(peer(1), &out, Time::ZERO, |_| true);
    assert!(found.is_empty());
    assert_eq!(lsd.stats().own_ignored, 1);
    // Another client's is not.
    let other = msg(HOST_V4, "6881", &[A], Some("deadbeef"));
    let found = lsd.handle_datagram(peer(1), &other, Time::ZERO, |_| true);
    assert_eq!(
        found,
        vec![(hash(A), SocketAddr::from(([192, 168, 1, 1], 6881)))]
    );
    assert_eq!(lsd.stats().announces_received, 1);
    assert_eq!(lsd.stats().peers_found, 1);
}

#[test]
fn only_wanted_torrents_and_dialable_sources_give_peers() {
    let mut lsd = Lsd::new(LsdConfig::default(), "c", Time::ZERO);
    let m = msg(HOST_V4, "6881", &[A, B], None);
    let found = lsd.handle_datagram(peer(2), &m, Time::ZERO, |x| *x == hash(B));
    assert_eq!(
        found,
        vec![(hash(B), SocketAddr::from(([192, 168, 1, 2], 6881)))]
    );
    for bad in [
        "0.0.0.0:1",
        "239.192.152.143:6771",
        "255.255.255.255:1",
        "[::]:1",
        "[ff02::1]:1",
    ] {
        let from: SocketAddr = bad.parse().unwrap();
        assert!(
            lsd.handle_datagram(from, &m, Time::ZERO, |_| true)
                .is_empty(),
            "{bad}"
        );
    }
    assert_eq!(lsd.stats().rejected, 5);
    // Nothing of ours in it: no source is remembered.
    let mut lsd = Lsd::new(LsdConfig::default(), "c", Time::ZERO);
    lsd.handle_datagram(peer(3), &m, Time::ZERO, |_| false);
    assert_eq!(lsd.sources(), 0);
}

#[test]
fn a_new_torrent_is_announced_at_once_then_repeated_then_every_interval() {
    let mut lsd = Lsd::new(LsdConfig::default(), "c", Time::ZERO);
    assert_eq!(lsd.poll_announce(Time::ZERO), None);
    lsd.set_torrents([hash(A)], Time::ZERO);
    assert_eq!(lsd.poll_announce(Time::ZERO), Some(vec![hash(A)]));
    assert_eq!(lsd.poll_announce(Time::ZERO), None);
    // Sent at 0, 2 s, 6 s, then every 5 minutes.
    let mut sent = Vec::new();
    let mut t = Time::ZERO;
    while t < Time::from_secs(20 * 60) {
        t += Duration::from_millis(50);
        if lsd.poll_announce(t).is_some() {
            sent.push(t.as_micros() / 1_000);
        }
    }
    assert_eq!(sent, vec![2_000, 6_000, 306_000, 606_000, 906_000]);
    // A torrent that leaves is no longer announced; coming back starts over.
    lsd.set_torrents([], t);
    assert_eq!(lsd.poll_announce(t + Duration::from_secs(600)), None);
    lsd.set_torrents([hash(A)], t);
    assert_eq!(lsd.poll_announce(t), Some(vec![hash(A)]));
}

#[test]
fn many_torrents_share_messages_within_the_send_ration() {
    let mut lsd = Lsd::new(LsdConfig::default(), "0123456789abcdef", Time::ZERO);
    let per = max_hashes_per_message(16);
    let total = per * 10;
    lsd.set_torrents((0..total as u32).map(h), Time::ZERO);
    // A burst of SEND_BURST messages, then one a second.
    let mut t = Time::ZERO;
    let mut times = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < total {
        while let Some(batch) = lsd.poll_announce(t) {
            assert!(batch.len() <= per);
            times.push(t.as_micros() / 1_000);
            seen.extend(batch);
        }
        t += Duration::from_millis(50);
        assert!(
            t < Time::from_secs(60),
            "{} of {total} announced",
            seen.len()
        );
    }
    assert_eq!(times.len(), 10);
    assert_eq!(&times[..5], &[0, 0, 0, 0, 1_000]);
    for w in times.windows(2).skip(4) {
        assert!(w[1] - w[0] >= 1_000, "{times:?}");
    }
    // In any window of 10 s, at most SEND_BURST + 10 messages however many are due.
    assert!(times.iter().filter(|&&ms| ms < 10_000).count() <= SEND_BURST as usize + 10);
}

#[test]
fn one_flooding_source_is_rationed_and_the_table_is_bounded() {
    let config = LsdConfig::default();
    let mut lsd = Lsd::new(config.clone(), "c", Time::ZERO);
    let hashes: Vec<String> = (0..20).map(|i| h(i).to_hex()).collect();
    let refs: Vec<&str> = hashes.iter().map(String::as_str).collect();
    let m = msg(HOST_V4, "6881", &refs, None);
    // 1,000 datagrams of 20 wanted torrents each, within one second, from one host.
    let mut found = 0;
    for i in 0..1_000u64 {
        found += lsd
            .handle_datagram(peer(9), &m, Time::from_micros(i * 1_000), |_| true)
            .len();
    }
    assert_eq!(found, config.source_burst as usize);
    assert_eq!(lsd.sources(), 1);
    // Its ration refills one a second.
    let later = lsd.handle_datagram(peer(9), &m, Time::from_secs(11), |_| true);
    assert_eq!(later.len(), 11);
    // Another host still gets heard.
    assert_eq!(
        lsd.handle_datagram(peer(10), &m, Time::from_secs(11), |_| true)
            .len(),
        20
    );
    // Spoofed sources: the table stays at max_sources, and the global ration holds.
    let mut lsd = Lsd::new(config.clone(), "c", Time::ZERO);
    let mut found = 0;
    for i in 0..10_000u32 {
        let from = SocketAddr::from((Ipv4Addr::from(0x0a00_0000 + i), 6881));
        found += lsd
            .handle_datagram(from, &m, Time::from_micros(u64::from(i)), |_| true)
            .len();
        assert!(lsd.sources() <= config.max_sources);
    }
    assert_eq!(lsd.sources(), config.max_sources);
    // 10 ms of floods: the burst and at most one refill.
    assert!(found <= config.global_burst as usize + 1, "{found}");
    assert!(lsd.stats().rate_limited > 100_000);
}
