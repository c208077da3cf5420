use super::*;
use crate::tracker::http;

const HASH: InfoHash = InfoHash::from_bytes([7; 20]);

fn config() -> TrackerConfig {
    TrackerConfig::default()
}

fn announcer(tiers: &[&[&str]], mode: Mode, left: u64) -> Announcer {
    let tiers: Vec<Vec<String>> = tiers
        .iter()
        .map(|t| t.iter().map(|s| s.to_string()).collect())
        .collect();
    Announcer::new(
        config(),
        mode,
        HASH,
        PeerId::from_bytes(*b"-RT0100-abcdefghijkl"),
        6881,
        &tiers,
        Progress {
            uploaded: 0,
            downloaded: 0,
            left,
        },
        1,
        Time::ZERO,
    )
}

fn requests(a: &mut Announcer) -> Vec<Request> {
    std::iter::from_fn(|| a.poll_request()).collect()
}

fn events(a: &mut Announcer) -> Vec<TrackerEvent> {
    std::iter::from_fn(|| a.poll_event()).collect()
}

fn udp(r: &Request) -> (LinkId, u32, &[u8]) {
    match r {
        Request::Udp {
            link,
            transaction,
            packet,
            ..
        } => (*link, *transaction, packet),
        other => panic!("expected UDP, got {other:?}"),
    }
}

fn connect_reply(transaction: u32, id: u64) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&0u32.to_be_bytes());
    p.extend_from_slice(&transaction.to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p
}

fn announce_reply(transaction: u32, interval: u32) -> Vec<u8> {
    let mut p = Vec::new();
    for v in [1, transaction, interval, 4, 5] {
        p.extend_from_slice(&v.to_be_bytes());
    }
    p.extend_from_slice(&[10, 0, 0, 1, 0x1a, 0xe1]);
    p
}

fn event_of(packet: &[u8]) -> u32 {
    u32::from_be_bytes(packet[80..84].try_into().unwrap())
}

fn secs(s: u64) -> Time {
    Time::from_secs(s)
}

#[test]
fn udp_announce_connects_then_reuses_the_connection_id_for_a_minute() {
    let mut a = announcer(&[&["udp://t.example:6969"]], Mode::Regular, 100);
    a.handle_timeout(Time::ZERO);
    let r = requests(&mut a);
    assert_eq!(r.len(), 1);
    let (link, tid, packet) = udp(&r[0]);
    assert_eq!(packet.len(), 16);
    a.handle_udp(link, false, &connect_reply(tid, 99), secs(1));
    let r = requests(&mut a);
    let (_, tid2, packet) = udp(&r[0]);
    assert_ne!(tid, tid2, "each request gets its own transaction id");
    assert_eq!(&packet[..8], &99u64.to_be_bytes());
    assert_eq!(event_of(packet), 2, "started");
    a.handle_udp(link, false, &announce_reply(tid2, 120), secs(1));
    let ev = events(&mut a);
    assert_eq!(ev.len(), 1);
    assert_eq!(peers_of(&ev[0]), &["10.0.0.1:6881".parse().unwrap()]);
    assert_eq!(a.poll_timeout(), Some(secs(121)));

    // Completed at 30 s goes out at once (events do not wait for min interval), over the
    // connection id from 1 s, still fresh.
    a.set_progress(Progress {
        uploaded: 1,
        downloaded: 100,
        left: 0,
    });
    a.completed(secs(30));
    let r = requests(&mut a);
    let (_, tid3, packet) = udp(&r[0]);
    assert_eq!(packet.len(), 98, "no new connect within the minute");
    assert_eq!(event_of(packet), 1, "completed");
    assert_eq!(&packet[64..72], &0u64.to_be_bytes(), "left");
    a.completed(secs(30));
    a.handle_udp(link, false, &announce_reply(tid3, 120), secs(31));
    assert!(requests(&mut a).is_empty(), "completed is sent once");
    // The regular announce at 151 s must connect again: the id from 1 s has expired.
    assert_eq!(a.poll_timeout(), Some(secs(151)));
    a.handle_timeout(secs(151));
    let r = requests(&mut a);
    let (_, tid4, packet) = udp(&r[0]);
    assert_eq!(packet.len(), 16);
    a.handle_udp(link, false, &connect_reply(tid4, 100), secs(151));
    let r = requests(&mut a);
    let (_, tid4, packet) = udp(&r[0]);
    assert_eq!(event_of(packet), 0, "regular");
    assert_eq!(&packet[..8], &100u64.to_be_bytes());
    a.handle_udp(link, false, &announce_reply(tid4, 120), secs(152));
    events(&mut a);
    // Stop at 170 s reuses the id from 151 s.
    a.stop(secs(170));
    let r = requests(&mut a);
    let (_, tid5, packet) = udp(&r[0]);
    assert_eq!(packet.len(), 98);
    assert_eq!(event_of(packet), 3, "stopped");
    assert!(!a.is_done());
    a.handle_udp(link, false, &announce_reply(tid5, 120), secs(170));
    assert!(a.is_done());
}

#[test]
fn udp_retransmits_at_15_times_2_to_the_n_then_falls_through_tiers() {
    let mut a = announcer(
        &[&["udp://dead.example:1"], &["http://live.example/announce"]],
        Mode::Regular,
        100,
    );
    a.handle_timeout(Time::ZERO);
    let (link, tid, _) = udp(&requests(&mut a)[0]);
    let mut t = 0;
    for n in 0..3 {
        t += 15 << n;
        assert_eq!(a.poll_timeout(), Some(secs(t)));
        a.handle_timeout(secs(t));
        let r = requests(&mut a);
        let (l, tid_again, packet) = udp(&r[0]);
        assert_eq!(
            (l, tid_again, packet.len()),
            (link, tid, 16),
            "same packet again"
        );
    }
    // Garbage meanwhile changes nothing.
    a.handle_udp(link, false, &[1, 2, 3], secs(t));
    a.handle_udp(link, false, &connect_reply(tid ^ 1, 5), secs(t));
    assert_eq!(a.ignored_packets(), 2);
    t += 15 << 3;
    a.handle_timeout(secs(t));
    let ev = events(&mut a);
    assert!(
        matches!(
            &ev[..],
            [TrackerEvent::Error {
                error: TrackerError::Timeout(_),
                ..
            }]
        ),
        "{ev:?}"
    );
    let r = requests(&mut a);
    let Request::Http {
        link: l2,
        id,
        request,
        ..
    } = &r[0]
    else {
        panic!("expected the second tier, got {r:?}");
    };
    let text = String::from_utf8_lossy(request);
    assert!(text.contains("event=started"), "{text}");
    a.handle_http(
        *l2,
        *id,
        Ok((200, b"d8:intervali900e5:peers0:e".to_vec())),
        secs(t),
    );
    assert!(matches!(
        &events(&mut a)[..],
        [TrackerEvent::Announced { .. }]
    ));
    // The next regular announce tries tier 0 again once its back-off has passed.
    a.handle_timeout(secs(t + 900));
    let r = requests(&mut a);
    assert!(matches!(r[0], Request::Udp { .. }), "{r:?}");
}

#[test]
fn a_reply_with_the_right_transaction_but_bad_body_fails_and_backs_off() {
    let mut a = announcer(&[&["udp://t.example:1"]], Mode::Regular, 100);
    a.handle_timeout(Time::ZERO);
    let (link, tid, _) = udp(&requests(&mut a)[0]);
    let mut bad = connect_reply(tid, 1);
    bad.push(0);
    a.handle_udp(link, false, &bad, secs(1));
    let ev = events(&mut a);
    assert!(matches!(&ev[..], [TrackerError_ev!()]), "{ev:?}");
    // Back-off: 30 s plus at most a quarter of jitter; the second failure is not reported.
    let next = a.poll_timeout().unwrap();
    assert!(
        next >= secs(31) && next <= Time::from_millis(38_500),
        "{next:?}"
    );
    a.handle_timeout(next);
    let (link, tid, _) = udp(&requests(&mut a)[0]);
    let mut err = vec![0, 0, 0, 3];
    err.extend_from_slice(&tid.to_be_bytes());
    err.extend_from_slice(b"go away");
    a.handle_udp(link, false, &err, next);
    assert!(
        events(&mut a).is_empty(),
        "errors are reported once per tracker"
    );
    let again = a.poll_timeout().unwrap();
    assert!(again >= next + Duration::from_secs(60), "back-off doubles");
}

macro_rules! TrackerError_ev {
    () => {
        TrackerEvent::Error {
            error: TrackerError::UdpMalformed(_),
            ..
        }
    };
}
use TrackerError_ev;

#[test]
fn tiers_are_shuffled_and_the_tracker_that_answers_is_promoted() {
    let tier: Vec<String> = (0..8)
        .map(|i| format!("http://t{i}.example/announce"))
        .collect();
    let orders: std::collections::HashSet<Vec<String>> = (0..20)
        .map(|seed| {
            let a = Announcer::new(
                config(),
                Mode::Regular,
                HASH,
                PeerId::from_bytes([1; 20]),
                1,
                &[tier.clone(), vec!["udp://last.example:1".into()]],
                Progress::default(),
                seed,
                Time::ZERO,
            );
            let order: Vec<String> = a.order().iter().map(|s| s.to_string()).collect();
            assert_eq!(
                order.last().unwrap(),
                "udp://last.example:1",
                "tiers keep their order"
            );
            order
        })
        .collect();
    assert!(orders.len() > 10, "shuffled within the tier");

    let mut a = announcer(
        &[&["http://a.example/announce", "http://b.example/announce"]],
        Mode::Regular,
        1,
    );
    let first = a.order()[0].to_string();
    let second = a.order()[1].to_string();
    a.handle_timeout(Time::ZERO);
    let Request::Http { link, id, .. } = requests(&mut a).remove(0) else {
        panic!()
    };
    a.handle_http(link, id, Ok((500, b"oops".to_vec())), secs(1));
    assert!(matches!(
        &events(&mut a)[..],
        [TrackerEvent::Error { error: TrackerError::HttpStatus(500), url }] if *url == first
    ));
    let Request::Http { link, id, url, .. } = requests(&mut a).remove(0) else {
        panic!()
    };
    assert_eq!(url.raw, second);
    a.handle_http(link, id, Ok((200, b"d8:intervali60ee".to_vec())), secs(2));
    assert_eq!(a.order(), vec![second.as_str(), first.as_str()]);
}

#[test]
fn http_announces_carry_events_intervals_and_tracker_id() {
    let mut a = announcer(&[&["http://t.example/announce"]], Mode::Regular, 10);
    a.handle_timeout(Time::ZERO);
    let take = |a: &mut Announcer| {
        let Request::Http {
            link,
            id,
            request,
            timeout,
            ..
        } = requests(a).remove(0)
        else {
            panic!()
        };
        assert_eq!(timeout, Duration::from_secs(30));
        (link, id, String::from_utf8(request).unwrap())
    };
    let (link, id, text) = take(&mut a);
    assert!(text.contains("event=started") && text.contains("left=10"));
    a.handle_http(
        link,
        id,
        Ok((
            200,
            b"d8:intervali10e12:min intervali300e10:tracker id2:xy15:warning message3:hi!e"
                .to_vec(),
        )),
        secs(5),
    );
    let ev = events(&mut a);
    assert!(matches!(&ev[0], TrackerEvent::Warning { message, .. } if message == "hi!"));
    // interval 10 is raised to min interval 300.
    assert_eq!(a.poll_timeout(), Some(secs(305)));
    a.handle_timeout(secs(305));
    let (link, id, text) = take(&mut a);
    assert!(!text.contains("event="), "a regular announce: {text}");
    assert!(text.contains("trackerid=xy"));
    // A stale reply id is ignored.
    a.handle_http(link, id + 5, Ok((200, b"de".to_vec())), secs(306));
    assert!(events(&mut a).is_empty());
    a.handle_http(
        link,
        id,
        Ok((200, b"d5:peers6:\x7f\0\0\x01\0\x50e".to_vec())),
        secs(306),
    );
    assert_eq!(
        peers_of(&events(&mut a)[0]),
        &["127.0.0.1:80".parse().unwrap()]
    );
    // No interval given: the default, 30 minutes.
    assert_eq!(a.poll_timeout(), Some(secs(306 + 1800)));
    // HTTP time-out.
    a.handle_timeout(secs(306 + 1800));
    let _ = take(&mut a);
    a.handle_timeout(secs(306 + 1830));
    assert!(matches!(
        &events(&mut a)[..],
        [TrackerEvent::Error {
            error: TrackerError::Timeout(_),
            ..
        }]
    ));
}

#[test]
fn completed_is_sent_once_and_never_for_a_torrent_that_started_complete() {
    let mut seed = announcer(&[&["http://t.example/announce"]], Mode::Regular, 0);
    seed.completed(Time::ZERO);
    seed.handle_timeout(Time::ZERO);
    let Request::Http { request, .. } = requests(&mut seed).remove(0) else {
        panic!()
    };
    assert!(String::from_utf8(request)
        .unwrap()
        .contains("event=started"));

    let mut a = announcer(&[&["http://t.example/announce"]], Mode::Regular, 5);
    a.handle_timeout(Time::ZERO);
    let Request::Http { link, id, .. } = requests(&mut a).remove(0) else {
        panic!()
    };
    a.handle_http(link, id, Ok((200, b"d8:intervali100ee".to_vec())), secs(0));
    a.completed(secs(70));
    a.completed(secs(70));
    a.handle_timeout(secs(70));
    let Request::Http {
        link, id, request, ..
    } = requests(&mut a).remove(0)
    else {
        panic!()
    };
    assert!(String::from_utf8(request)
        .unwrap()
        .contains("event=completed"));
    a.handle_http(link, id, Ok((200, b"d8:intervali100ee".to_vec())), secs(70));
    a.handle_timeout(secs(170));
    let Request::Http { request, .. } = requests(&mut a).remove(0) else {
        panic!()
    };
    assert!(!String::from_utf8(request).unwrap().contains("event="));
}

#[test]
fn stop_goes_to_every_tracker_that_saw_started_and_is_bounded() {
    let mut a = announcer(
        &[&["http://a.example/announce"], &["udp://b.example:1"]],
        Mode::Regular,
        5,
    );
    // Nothing started yet: stopping is immediate.
    let mut idle = announcer(&[&["http://a.example/announce"]], Mode::Regular, 5);
    idle.stop(Time::ZERO);
    assert!(idle.is_done());

    a.handle_timeout(Time::ZERO);
    let Request::Http { link, id, .. } = requests(&mut a).remove(0) else {
        panic!()
    };
    a.handle_http(link, id, Ok((200, b"de".to_vec())), secs(1));
    a.stop(secs(2));
    let r = requests(&mut a);
    assert_eq!(r.len(), 1, "only the tracker that saw started: {r:?}");
    let Request::Http { request, .. } = &r[0] else {
        panic!()
    };
    assert!(String::from_utf8_lossy(request).contains("event=stopped"));
    assert_eq!(a.poll_timeout(), Some(secs(7)));
    a.handle_timeout(secs(7));
    assert!(a.is_done());
    assert_eq!(a.poll_timeout(), None);
}

#[test]
fn one_shot_modes_try_each_tracker_once() {
    let mut a = announcer(
        &[
            &["http://a.example/announce"],
            &["http://b.example/x", "bogus"],
        ],
        Mode::Scrape(vec![HASH]),
        5,
    );
    assert!(matches!(
        &events(&mut a)[..],
        [TrackerEvent::Error {
            error: TrackerError::InvalidUrl(_),
            ..
        }]
    ));
    a.handle_timeout(Time::ZERO);
    let Request::Http {
        link, id, request, ..
    } = requests(&mut a).remove(0)
    else {
        panic!()
    };
    assert!(String::from_utf8_lossy(&request).starts_with("GET /scrape?info_hash="));
    a.handle_http(link, id, Err(TrackerError::Io("refused".into())), secs(1));
    // The second tier has no scrape URL: fails at once, and the round is over.
    let ev = events(&mut a);
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert!(matches!(
        &ev[1],
        TrackerEvent::Error {
            error: TrackerError::NoScrape,
            ..
        }
    ));
    assert!(a.is_done());

    let mut once = announcer(
        &[&["udp://a.example:1"]],
        Mode::Once(AnnounceEvent::None),
        5,
    );
    once.handle_timeout(Time::ZERO);
    let (link, tid, _) = udp(&requests(&mut once)[0]);
    once.handle_udp(link, false, &connect_reply(tid, 3), secs(0));
    let r = requests(&mut once);
    let (_, tid, packet) = udp(&r[0]);
    assert_eq!(event_of(packet), 0);
    let mut scrape = vec![0, 0, 0, 2];
    scrape.extend_from_slice(&tid.to_be_bytes());
    scrape.extend_from_slice(&[0; 12]);
    once.handle_udp(link, false, &scrape, secs(0));
    assert!(matches!(
        &events(&mut once)[..],
        [TrackerEvent::Error {
            error: TrackerError::UdpMalformed(_),
            ..
        }]
    ));
    assert!(once.is_done());
}

#[test]
fn http_scrape_over_udp_and_http() {
    let mut a = announcer(&[&["udp://a.example:1"]], Mode::Scrape(vec![HASH]), 0);
    a.handle_timeout(Time::ZERO);
    let (link, tid, _) = udp(&requests(&mut a)[0]);
    a.handle_udp(link, false, &connect_reply(tid, 3), secs(0));
    let r = requests(&mut a);
    let (_, tid, packet) = udp(&r[0]);
    assert_eq!(packet.len(), 36);
    let mut reply = vec![0, 0, 0, 2];
    reply.extend_from_slice(&tid.to_be_bytes());
    for v in [3u32, 2, 1] {
        reply.extend_from_slice(&v.to_be_bytes());
    }
    a.handle_udp(link, false, &reply, secs(0));
    let ev = events(&mut a);
    let TrackerEvent::Scraped { stats, .. } = &ev[0] else {
        panic!("{ev:?}")
    };
    assert_eq!(
        stats,
        &vec![(
            HASH,
            ScrapeStats {
                seeders: 3,
                completed: 2,
                leechers: 1
            }
        )]
    );
    assert!(a.is_done());
    // The same body through the HTTP parser.
    let body = b"d5:filesd20:\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07d8:completei3e10:downloadedi2e10:incompletei1eeee";
    assert_eq!(&http::parse_scrape(body, &[HASH]).unwrap(), stats);
}

#[test]
fn completed_during_an_exchange_goes_out_right_after_it() {
    let mut a = announcer(&[&["http://t.example/announce"]], Mode::Regular, 5);
    a.handle_timeout(Time::ZERO);
    let Request::Http { link, id, .. } = requests(&mut a).remove(0) else {
        panic!()
    };
    a.completed(secs(1));
    assert!(requests(&mut a).is_empty(), "one exchange at a time");
    a.handle_http(link, id, Ok((200, b"d8:intervali900ee".to_vec())), secs(2));
    let Request::Http { request, .. } = requests(&mut a).remove(0) else {
        panic!()
    };
    assert!(String::from_utf8(request)
        .unwrap()
        .contains("event=completed"));
    assert!(a.completed_pending());
}

#[test]
fn a_completed_held_back_by_every_trackers_back_off_is_not_due() {
    // A tracker that refuses: `completed` waits out its back-off (30 s at least), so a
    // client shutting down now has nothing to wait for.
    let mut a = announcer(&[&["http://t.example/announce"]], Mode::Regular, 5);
    a.handle_timeout(Time::ZERO);
    let Request::Http { link, id, .. } = requests(&mut a).remove(0) else {
        panic!()
    };
    a.completed(secs(1));
    // While the exchange is in flight, the `completed` behind it is on its way.
    assert!(a.completed_due_by(secs(4)));
    a.handle_http(link, id, Err(TrackerError::Io("refused".into())), secs(2));
    assert!(requests(&mut a).is_empty(), "backing off");
    assert!(a.completed_pending());
    assert!(!a.completed_due_by(secs(5)));
    // It is due again once the back-off has passed.
    assert!(a.completed_due_by(secs(3600)));
}

#[test]
fn a_completed_to_a_working_tracker_is_due_at_once() {
    let mut a = announcer(&[&["http://t.example/announce"]], Mode::Regular, 5);
    a.handle_timeout(Time::ZERO);
    let Request::Http { link, id, .. } = requests(&mut a).remove(0) else {
        panic!()
    };
    a.handle_http(link, id, Ok((200, b"d8:intervali900ee".to_vec())), secs(1));
    assert!(!a.completed_due_by(secs(2)), "nothing pending yet");
    a.completed(secs(2));
    assert!(a.completed_due_by(secs(5)));
    assert_eq!(requests(&mut a).len(), 1, "sent at once");
}

#[test]
fn reannounce_goes_to_every_tracker_now_unless_inside_its_own_min_interval() {
    let mut a = announcer(
        &[
            &["http://a.example/announce"],
            &["http://b.example/announce"],
        ],
        Mode::Regular,
        10,
    );
    a.handle_timeout(Time::ZERO);
    let http = |r: Request| match r {
        Request::Http {
            link, id, request, ..
        } => (link, id, String::from_utf8(request).unwrap()),
        other => panic!("expected HTTP, got {other:?}"),
    };
    // The first tier answers `started` with no min interval: the next announce is due in
    // 30 minutes, and our own 60 s floor applies to regular announces.
    let (link, id, text) = http(requests(&mut a).remove(0));
    assert!(text.contains("a.example") && text.contains("event=started"));
    a.handle_http(
        link,
        id,
        Ok((200, b"d8:intervali1800e5:peers0:e".to_vec())),
        secs(1),
    );
    let _ = events(&mut a);
    assert_eq!(a.poll_timeout(), Some(secs(1801)));
    // A reannounce a second later goes to both trackers at once (the second tier for the
    // first time: `started`), neither the floor nor the interval waited for.
    a.reannounce(secs(2));
    let sent: Vec<String> = requests(&mut a).into_iter().map(|r| http(r).2).collect();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent[0].contains("a.example") && !sent[0].contains("event="));
    assert!(sent[1].contains("b.example") && sent[1].contains("event=started"));
    // Nothing more while both are in flight.
    a.reannounce(secs(2));
    assert!(requests(&mut a).is_empty());
}

#[test]
fn reannounce_waits_for_a_min_interval_the_tracker_gave() {
    let mut a = announcer(&[&["http://a.example/announce"]], Mode::Regular, 10);
    a.handle_timeout(Time::ZERO);
    let Request::Http { link, id, .. } = requests(&mut a).remove(0) else {
        panic!()
    };
    a.handle_http(
        link,
        id,
        Ok((
            200,
            b"d8:intervali1800e12:min intervali120e5:peers0:e".to_vec(),
        )),
        secs(1),
    );
    let _ = events(&mut a);
    // Inside the tracker's own min interval: not now, but as soon as it passes.
    a.reannounce(secs(10));
    assert!(requests(&mut a).is_empty());
    assert_eq!(a.poll_timeout(), Some(secs(121)));
    a.handle_timeout(secs(121));
    assert_eq!(requests(&mut a).len(), 1);
}
