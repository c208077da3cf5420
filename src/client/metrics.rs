//! [`Metrics`]: counters and histograms summed over the event loops, for a Prometheus page or
//! a report. Each loop fills its part on its own thread ([`gather`]); the client adds them.
//!
//! A torrent's own counters (payload, pieces, bans, closes, latencies) live in its session
//! torrent, which is dropped when it leaves its loop (paused, queued, moved, checked again,
//! removed) and starts from zero when it comes back. So that the exported `*_total`
//! counters never go down, as Prometheus requires, what a torrent counted is added to the
//! client's `departed` part ([`torrent_part`]) as it leaves, and that part to every snapshot.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::core::{Bitfield, TorrentStats};
use crate::driver::{Driver, LoopStats};

const GIB: f64 = (1u64 << 30) as f64;

/// A snapshot of the client's counters.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    /// Payload bytes sent.
    pub uploaded: u64,
    /// Payload bytes received that we needed.
    pub downloaded: u64,
    /// Payload bytes received twice or unasked.
    pub wasted: u64,
    /// Pieces that passed their hash check.
    pub pieces_verified: u64,
    /// Pieces that failed their hash check.
    pub pieces_failed: u64,
    /// Peers banned for corrupt data.
    pub banned: u64,
    /// Peers connected (handshake done).
    pub peers_connected: u64,
    /// Of those, interested in us.
    pub peers_interested: u64,
    /// Of those, unchoked by us.
    pub peers_unchoked: u64,
    /// Of those, with every piece.
    pub peers_seeds: u64,
    /// Connections open, handshaking ones included.
    pub connections_open: u64,
    /// Connections closed (or refused at the handshake), by reason.
    pub closes: BTreeMap<String, u64>,
    /// Incoming connections sent to the loop that owns their torrent.
    pub handoffs_sent: u64,
    /// Incoming connections taken over from another loop.
    pub handoffs_adopted: u64,
    /// Incoming connections accepted.
    pub accepted: u64,
    /// Incoming connections held while their torrent's data was checked, then served.
    pub held_during_check: u64,
    /// Block payload held for uploads now (read from disk, queued to send, or with the
    /// kernel not yet accepted), against `Limits::upload_buffer`.
    pub upload_buffered: u64,
    /// Each loop's counters, in loop order.
    pub loops: Vec<LoopStats>,
    /// Request-to-block latency, microseconds.
    pub latency_us: Option<Histogram<u64>>,
    /// From a piece's last write to its hash check's result, microseconds.
    pub hash_wait_us: Option<Histogram<u64>>,
    /// Tracker announce round trips, microseconds.
    pub announce_us: Option<Histogram<u64>>,
    /// Local service discovery's counters (zero when it is off).
    pub lsd: crate::lsd::LsdStats,
    /// Torrents in the session.
    pub torrents_active: u64,
    /// Torrents paused or held.
    pub torrents_paused: u64,
    /// The soft `RLIMIT_NOFILE`, as raised when the client started.
    pub descriptor_limit: u64,
    /// Descriptors open in the process now.
    pub descriptors_open: u64,
    /// Connections the descriptor limit leaves room for (see `DescriptorBudget`).
    pub connection_budget: u64,
    /// The session-wide connection limit in force: the configured one, or the budget when
    /// that is lower.
    pub max_connections: u64,
    /// CPU time the whole process has used in user mode, seconds (`getrusage`).
    pub cpu_user_seconds: f64,
    /// CPU time the whole process has used in the kernel on its behalf, seconds.
    pub cpu_system_seconds: f64,
    /// The DHT node's counters, when it runs (read on loop 0).
    pub dht: Option<crate::dht::DhtStats>,
}

/// The process's CPU time so far, user and system, in seconds (`getrusage(RUSAGE_SELF)`:
/// every thread, the loops, the disk pool and housekeeping alike).
pub(crate) fn process_cpu_seconds() -> (f64, f64) {
    // SAFETY: an all-zero `rusage` is a valid value of that plain C struct, and the call
    // only writes into the one we lend it for its duration.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF cannot fail with a valid pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return (0.0, 0.0);
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(ru.ru_utime), secs(ru.ru_stime))
}

impl Metrics {
    /// CPU-seconds (user and system) per GiB of payload uploaded since the process started,
    /// or `None` before the first byte: the cost of serving, whole process included.
    pub fn cpu_seconds_per_uploaded_gib(&self) -> Option<f64> {
        (self.uploaded > 0).then(|| {
            (self.cpu_user_seconds + self.cpu_system_seconds) / (self.uploaded as f64 / GIB)
        })
    }

    /// Adds another loop's part.
    pub(crate) fn add(&mut self, part: Metrics) {
        self.uploaded += part.uploaded;
        self.downloaded += part.downloaded;
        self.wasted += part.wasted;
        self.pieces_verified += part.pieces_verified;
        self.pieces_failed += part.pieces_failed;
        self.banned += part.banned;
        self.peers_connected += part.peers_connected;
        self.peers_interested += part.peers_interested;
        self.peers_unchoked += part.peers_unchoked;
        self.peers_seeds += part.peers_seeds;
        self.connections_open += part.connections_open;
        self.handoffs_sent += part.handoffs_sent;
        self.handoffs_adopted += part.handoffs_adopted;
        self.held_during_check += part.held_during_check;
        self.accepted += part.accepted;
        self.upload_buffered += part.upload_buffered;
        for (k, v) in part.closes {
            *self.closes.entry(k).or_default() += v;
        }
        self.loops.extend(part.loops);
        if part.dht.is_some() {
            self.dht = part.dht;
        }
        merge(&mut self.latency_us, part.latency_us.as_ref());
        merge(&mut self.hash_wait_us, part.hash_wait_us.as_ref());
    }
}

/// One loop's part, read on its own thread.
pub(crate) fn gather(d: &mut Driver) -> Metrics {
    let now = d.now();
    let stats = d.loop_stats();
    let s = d.session();
    let mut part = Metrics::default();
    part.loops.push(stats);
    for (reason, n) in s.handshake_closes() {
        *part.closes.entry(reason.to_string()).or_default() += n;
    }
    let h = s.connection_stats();
    part.handoffs_sent = h.sent;
    part.handoffs_adopted = h.adopted;
    part.held_during_check = h.held;
    part.accepted = h.accepted;
    part.connections_open = s.connection_count() as u64;
    part.upload_buffered = s.upload_buffered() as u64;
    part.dht = s.dht().map(crate::dht::Dht::stats);
    for id in s.torrent_ids() {
        if let Some(st) = s.stats(id) {
            part.add(torrent_part(st));
        }
        let pieces = s.have(id).map_or(0, Bitfield::len);
        for p in s.peers(id, now) {
            part.peers_connected += 1;
            part.peers_interested += u64::from(p.peer_interested);
            part.peers_unchoked += u64::from(!p.am_choking);
            part.peers_seeds += u64::from(p.pieces > 0 && p.pieces == pieces);
        }
    }
    part
}

/// One session torrent's own counters, as a part to add.
pub(crate) fn torrent_part(st: &TorrentStats) -> Metrics {
    let mut part = Metrics {
        uploaded: st.uploaded,
        downloaded: st.downloaded,
        wasted: st.wasted,
        pieces_verified: st.pieces_verified,
        pieces_failed: st.hash_failures,
        banned: st.banned,
        ..Metrics::default()
    };
    for (reason, n) in &st.closes {
        *part.closes.entry(reason.to_string()).or_default() += n;
    }
    merge(&mut part.latency_us, st.request_latency_us.as_deref());
    merge(&mut part.hash_wait_us, st.hash_wait_us.as_deref());
    part
}

/// Adds `theirs` into `into` (taking a copy when `into` has none yet).
pub(crate) fn merge(into: &mut Option<Histogram<u64>>, theirs: Option<&Histogram<u64>>) {
    let Some(theirs) = theirs else { return };
    match into {
        Some(h) => {
            let _ = h.add(theirs);
        }
        None => *into = Some(theirs.clone()),
    }
}

impl Metrics {
    /// The metrics in Prometheus' text exposition format (version 0.0.4), every name
    /// prefixed `ringtorrent_`, histograms as summaries in seconds: what `serve` shows at
    /// `/metrics`.
    pub fn to_prometheus(&self) -> String {
        let m = self;
        let mut s = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: Vec<(String, f64)>| {
            s.push_str(&format!(
                "# HELP ringtorrent_{name} {help}\n# TYPE ringtorrent_{name} {kind}\n"
            ));
            for (labels, v) in lines {
                s.push_str(&format!("ringtorrent_{name}{labels} {v}\n"));
            }
        };
        let one = |v: u64| vec![(String::new(), v as f64)];
        metric(
            "uploaded_bytes_total",
            "counter",
            "Payload bytes sent to peers.",
            one(m.uploaded),
        );
        metric(
            "downloaded_bytes_total",
            "counter",
            "Payload bytes received that we needed.",
            one(m.downloaded),
        );
        metric(
            "wasted_bytes_total",
            "counter",
            "Payload bytes received twice or unasked.",
            one(m.wasted),
        );
        metric(
            "pieces_verified_total",
            "counter",
            "Pieces that passed their hash check.",
            one(m.pieces_verified),
        );
        metric(
            "pieces_failed_total",
            "counter",
            "Pieces that failed their hash check.",
            one(m.pieces_failed),
        );
        metric(
            "peers_banned_total",
            "counter",
            "Peers banned for corrupt data.",
            one(m.banned),
        );
        metric(
            "peers",
            "gauge",
            "Connected peers by state.",
            vec![
                ("{state=\"connected\"}".into(), m.peers_connected as f64),
                ("{state=\"interested\"}".into(), m.peers_interested as f64),
                ("{state=\"unchoked\"}".into(), m.peers_unchoked as f64),
                ("{state=\"seed\"}".into(), m.peers_seeds as f64),
            ],
        );
        metric(
            "connections_accepted_total",
            "counter",
            "Incoming connections accepted (refusals are in connections_closed_total).",
            one(m.accepted),
        );
        metric(
            "connections_open",
            "gauge",
            "Connections open, handshaking ones included.",
            one(m.connections_open),
        );
        let utp = |f: fn(&LoopStats) -> u64| m.loops.iter().map(f).sum::<u64>();
        let utp_open = utp(|l| l.utp.open);
        metric(
            "connections_open_by_transport",
            "gauge",
            "Connections open (handshaking and dialling ones included) by transport.",
            vec![
                (
                    "{transport=\"tcp\"}".into(),
                    m.connections_open.saturating_sub(utp_open) as f64,
                ),
                ("{transport=\"utp\"}".into(), utp_open as f64),
            ],
        );
        metric(
            "utp_connections_total",
            "counter",
            "uTP connections: our dials that connected, incoming ones accepted, dials that \
             failed over uTP and were retried over TCP.",
            vec![
                ("{kind=\"dialed\"}".into(), utp(|l| l.utp.dialed) as f64),
                ("{kind=\"accepted\"}".into(), utp(|l| l.utp.accepted) as f64),
                (
                    "{kind=\"fallback_tcp\"}".into(),
                    utp(|l| l.utp.fallbacks) as f64,
                ),
            ],
        );
        metric(
            "utp_bytes_total",
            "counter",
            "Peer-wire bytes carried over uTP: received (handed to the sessions) and sent \
             (taken from them).",
            vec![
                (
                    "{direction=\"received\"}".into(),
                    utp(|l| l.utp.bytes_received) as f64,
                ),
                (
                    "{direction=\"sent\"}".into(),
                    utp(|l| l.utp.bytes_sent) as f64,
                ),
            ],
        );
        metric(
            "connections_closed_total",
            "counter",
            "Connections closed (or refused at the handshake), by reason.",
            m.closes
                .iter()
                .map(|(k, v)| (format!("{{reason=\"{k}\"}}"), *v as f64))
                .collect(),
        );
        metric(
            "connections_handed_over_total",
            "counter",
            "Incoming connections moved to the loop that owns their torrent.",
            one(m.handoffs_adopted),
        );
        metric(
            "connections_held_during_check_total",
            "counter",
            "Incoming connections held while their torrent's data was checked, then answered.",
            one(m.held_during_check),
        );
        metric(
            "upload_buffered_bytes",
            "gauge",
            "Block data held for uploads: read from disk, queued to send, not yet sent.",
            one(m.upload_buffered),
        );
        metric(
            "disk_queue_depth",
            "gauge",
            "Disk reads, writes and hash checks submitted and not yet done.",
            one(m.loops.iter().map(|l| l.disk_in_flight).sum()),
        );
        metric(
            "loop_turns_total",
            "counter",
            "Event loop turns.",
            m.loops
                .iter()
                .enumerate()
                .map(|(i, l)| (format!("{{loop=\"{i}\"}}"), l.turns as f64))
                .collect(),
        );
        metric(
            "loop_completions_total",
            "counter",
            "Completions (io_uring) or readiness events (epoll) handled.",
            m.loops
                .iter()
                .enumerate()
                .map(|(i, l)| (format!("{{loop=\"{i}\"}}"), l.completions as f64))
                .collect(),
        );
        metric(
            "lsd_announces_sent_total",
            "counter",
            "Local service discovery announces sent (each to every group in use).",
            one(m.lsd.announces_sent),
        );
        metric(
            "lsd_announces_received_total",
            "counter",
            "Well-formed local service discovery announces heard from other clients.",
            one(m.lsd.announces_received),
        );
        metric(
            "lsd_peers_found_total",
            "counter",
            "Peers of our torrents found by local service discovery and handed to them.",
            one(m.lsd.peers_found),
        );
        metric(
            "lsd_dropped_total",
            "counter",
            "Local service discovery datagrams refused (malformed) and peers over the rations.",
            vec![
                ("{reason=\"rejected\"}".into(), m.lsd.rejected as f64),
                (
                    "{reason=\"rate_limited\"}".into(),
                    m.lsd.rate_limited as f64,
                ),
            ],
        );
        metric(
            "torrents",
            "gauge",
            "Torrents by state.",
            vec![
                ("{state=\"active\"}".into(), m.torrents_active as f64),
                ("{state=\"paused\"}".into(), m.torrents_paused as f64),
            ],
        );
        metric(
            "descriptors",
            "gauge",
            "File descriptors: the soft RLIMIT_NOFILE (raised to the hard limit at start) and those open now.",
            vec![
                ("{state=\"limit\"}".into(), m.descriptor_limit as f64),
                ("{state=\"open\"}".into(), m.descriptors_open as f64),
            ],
        );
        metric(
            "connection_limit",
            "gauge",
            "Session-wide connections: what the descriptor budget allows, and the limit in force.",
            vec![
                ("{kind=\"budget\"}".into(), m.connection_budget as f64),
                (
                    "{kind=\"max_connections\"}".into(),
                    m.max_connections as f64,
                ),
            ],
        );
        metric(
            "cpu_seconds_total",
            "counter",
            "CPU time the process has used since it started, by mode (user, system), seconds.",
            vec![
                ("{mode=\"user\"}".into(), m.cpu_user_seconds),
                ("{mode=\"system\"}".into(), m.cpu_system_seconds),
            ],
        );
        metric(
            "cpu_seconds_per_uploaded_gibibyte",
            "gauge",
            "CPU time (user and system, whole process) since start per GiB of payload \
             uploaded since start; NaN before the first upload. For a recent window use \
             rate(ringtorrent_cpu_seconds_total[5m]) / rate(ringtorrent_uploaded_bytes_total[5m]).",
            vec![(
                String::new(),
                m.cpu_seconds_per_uploaded_gib().unwrap_or(f64::NAN),
            )],
        );
        let udp = |f: fn(&LoopStats) -> u64| m.loops.iter().map(f).sum::<u64>() as f64;
        metric(
            "udp_datagrams_total",
            "counter",
            "Datagrams on the UDP socket: received, dropped unread (neither KRPC nor uTP), sent, refused by the kernel, and ICMP errors read about ours.",
            vec![
                ("{kind=\"received\"}".into(), udp(|l| l.datagrams_received)),
                ("{kind=\"dropped\"}".into(), udp(|l| l.datagrams_dropped)),
                ("{kind=\"sent\"}".into(), udp(|l| l.datagrams_sent)),
                ("{kind=\"unsent\"}".into(), udp(|l| l.datagrams_unsent)),
                ("{kind=\"icmp_error\"}".into(), udp(|l| l.udp_errors)),
            ],
        );
        if let Some(d) = &m.dht {
            metric(
                "dht_nodes",
                "gauge",
                "Nodes in the DHT routing tables, by address family.",
                vec![
                    ("{family=\"ipv4\"}".into(), d.nodes_v4 as f64),
                    ("{family=\"ipv6\"}".into(), d.nodes_v6 as f64),
                ],
            );
            metric(
                "dht_lookups_total",
                "counter",
                "DHT get_peers lookups started.",
                one(d.lookups_total),
            );
            metric(
                "dht_lookups_active",
                "gauge",
                "DHT lookups running.",
                one(d.lookups_active as u64),
            );
            metric(
                "dht_announces_total",
                "counter",
                "DHT announce_peer queries sent.",
                one(d.announces_sent),
            );
            metric(
                "dht_queries_total",
                "counter",
                "DHT queries from other nodes: answered, or dropped by the rate limit.",
                vec![
                    ("{outcome=\"answered\"}".into(), d.queries_answered as f64),
                    ("{outcome=\"dropped\"}".into(), d.queries_dropped as f64),
                ],
            );
            metric(
                "dht_invalid_messages_total",
                "counter",
                "Datagrams to the DHT that were not valid KRPC.",
                one(d.invalid_messages),
            );
            metric(
                "dht_stored",
                "gauge",
                "Peers other nodes announced to us, and the torrents they are for.",
                vec![
                    ("{kind=\"peers\"}".into(), d.stored_peers as f64),
                    ("{kind=\"torrents\"}".into(), d.stored_torrents as f64),
                ],
            );
        }
        summary(
            &mut s,
            "request_latency_seconds",
            "From sending a request to receiving its block.",
            m.latency_us.as_ref(),
        );
        summary(
            &mut s,
            "announce_seconds",
            "Tracker announces, from the first packet to the reply (retransmissions included).",
            m.announce_us.as_ref(),
        );
        summary(
            &mut s,
            "hash_wait_seconds",
            "From a piece's last write to its hash check's result (queue wait and hashing).",
            m.hash_wait_us.as_ref(),
        );
        s
    }
}

/// A Prometheus summary (quantiles, sum, count) of a histogram in microseconds.
fn summary(s: &mut String, name: &str, help: &str, h: Option<&hdrhistogram::Histogram<u64>>) {
    s.push_str(&format!(
        "# HELP ringtorrent_{name} {help}\n# TYPE ringtorrent_{name} summary\n"
    ));
    let (mut count, mut sum) = (0u64, 0f64);
    if let Some(h) = h {
        for q in [0.5, 0.9, 0.99, 0.999] {
            s.push_str(&format!(
                "ringtorrent_{name}{{quantile=\"{q}\"}} {}\n",
                h.value_at_quantile(q) as f64 / 1e6
            ));
        }
        count = h.len();
        sum = h.mean() * h.len() as f64 / 1e6;
    }
    s.push_str(&format!(
        "ringtorrent_{name}_sum {sum}\nringtorrent_{name}_count {count}\n"
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsd_counters_are_exported() {
        let m = Metrics {
            lsd: crate::lsd::LsdStats {
                announces_sent: 3,
                announces_received: 5,
                peers_found: 2,
                rejected: 7,
                rate_limited: 11,
                ..Default::default()
            },
            ..Metrics::default()
        };
        let text = m.to_prometheus();
        for line in [
            "ringtorrent_lsd_announces_sent_total 3\n",
            "ringtorrent_lsd_announces_received_total 5\n",
            "ringtorrent_lsd_peers_found_total 2\n",
            "ringtorrent_lsd_dropped_total{reason=\"rejected\"} 7\n",
            "ringtorrent_lsd_dropped_total{reason=\"rate_limited\"} 11\n",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn connections_are_counted_per_transport() {
        let utp = crate::driver::UtpStats {
            open: 2,
            dialed: 3,
            accepted: 4,
            fallbacks: 5,
            bytes_received: 6,
            bytes_sent: 7,
            packets_received: 8,
        };
        let m = Metrics {
            connections_open: 10,
            loops: vec![
                LoopStats {
                    utp,
                    ..LoopStats::default()
                },
                LoopStats {
                    utp: crate::driver::UtpStats {
                        open: 1,
                        ..Default::default()
                    },
                    ..LoopStats::default()
                },
            ],
            ..Metrics::default()
        };
        let text = m.to_prometheus();
        for line in [
            "ringtorrent_connections_open_by_transport{transport=\"tcp\"} 7\n",
            "ringtorrent_connections_open_by_transport{transport=\"utp\"} 3\n",
            "ringtorrent_utp_connections_total{kind=\"dialed\"} 3\n",
            "ringtorrent_utp_connections_total{kind=\"accepted\"} 4\n",
            "ringtorrent_utp_connections_total{kind=\"fallback_tcp\"} 5\n",
            "ringtorrent_utp_bytes_total{direction=\"received\"} 6\n",
            "ringtorrent_utp_bytes_total{direction=\"sent\"} 7\n",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }
}
