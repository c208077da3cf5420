//! What a simulation run produced, as numbers a person or a script can compare across runs.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::{Role, Simulation};

/// A distribution of values in seconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Distribution {
    /// Smallest.
    pub min: f64,
    /// 10th percentile.
    pub p10: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Distribution {
    fn of(mut values: Vec<f64>) -> Option<Distribution> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
        Some(Distribution {
            min: values[0],
            p10: at(0.1),
            p50: at(0.5),
            p90: at(0.9),
            max: values[values.len() - 1],
            mean: values.iter().sum::<f64>() / values.len() as f64,
        })
    }
}

/// The outcome of one run. The same configuration and seed give an identical report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SimReport {
    /// The seed of the run.
    pub seed: u64,
    /// Leechers in the swarm.
    pub leechers: usize,
    /// Honest seeds.
    pub seeds: usize,
    /// Corrupt seeds.
    pub corrupt: usize,
    /// Silent peers.
    pub silent: usize,
    /// Payload size in bytes.
    pub size: u64,
    /// Piece length in bytes.
    pub piece_len: u64,
    /// Leechers that finished.
    pub completed: usize,
    /// Whether every leecher ended with exactly the payload.
    pub every_byte_right: bool,
    /// Virtual seconds until the last leecher finished (`None` if some did not).
    pub completion_s: Option<f64>,
    /// Virtual seconds from joining to finishing, over finished leechers.
    pub download_s: Option<Distribution>,
    /// Payload bytes received that were needed.
    pub bytes_downloaded: u64,
    /// Payload bytes received twice or unasked (endgame duplicates, late blocks).
    pub bytes_wasted: u64,
    /// Bytes of pieces that failed their hash check.
    pub bytes_corrupt: u64,
    /// Pieces that failed their hash check.
    pub hash_failures: u64,
    /// Bans for corrupt data (a peer banned by several leechers counts several times).
    pub peers_banned: u64,
    /// Corrupt peers that every leecher that met them banned... counted as corrupt peers
    /// banned by at least one leecher.
    pub corrupt_peers_banned: usize,
    /// Peers not configured corrupt that some leecher banned: smart ban keeps this at 0 (an
    /// honest peer that shared a failed piece with a corrupt one is not blamed).
    pub honest_peers_banned: usize,
    /// Jain's fairness index of bytes uploaded by leechers (1 = perfectly even).
    pub upload_fairness: f64,
    /// Connections closed, by reason.
    pub closes: BTreeMap<String, u64>,
    /// Magnet leechers that received verified metadata (a leecher that churns counts again).
    pub metadata_received: u64,
    /// Of those, metadata that differs from the torrent's (must be 0).
    pub metadata_wrong: u64,
    /// Connections between two leechers, counted at each end.
    pub leecher_links: u64,
    /// Connections by how they are protected (`none`, `mse_plaintext`, `rc4`), counted at
    /// each end.
    pub crypto: BTreeMap<String, u64>,
    /// The nodes' transports: one (`tcp`, `utp`, `both`) or the mix handed out in turn.
    pub transport: String,
    /// Connections by transport (`tcp`, `utp`), counted at each end.
    pub transports: BTreeMap<String, u64>,
    /// What the uTP links did, when some node ran uTP.
    pub utp: Option<UtpFigures>,
    /// Simulation events processed.
    pub events: u64,
    /// Virtual seconds simulated.
    pub virtual_s: f64,
}

/// What the uTP links did: the datagram network's counters and the endpoints'.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UtpFigures {
    /// Datagrams sent (data, acks, handshakes, closes; dropped ones included).
    pub packets_sent: u64,
    /// Their bytes, IP and UDP headers included.
    pub bytes_sent: u64,
    /// Datagrams lost to the configured loss.
    pub packets_lost: u64,
    /// Datagrams dropped by a full queue (drop-tail).
    pub queue_drops: u64,
    /// Datagrams to an address with no uTP endpoint (a TCP-only node, or one offline).
    pub unanswered: u64,
    /// Data packets sent again (after a time-out or a fast resend).
    pub retransmits: u64,
    /// Retransmission time-outs.
    pub timeouts: u64,
    /// Fast resends (duplicate or selective acks).
    pub fast_resends: u64,
    /// uTP dials that got no answer and were retried over TCP (`both` nodes).
    pub fallbacks: u64,
    /// Mean congestion window of connections with bytes in flight, in bytes (sampled every
    /// 100 ms of virtual time).
    pub mean_window: f64,
    /// Mean time a delivered datagram waited in queues, in milliseconds.
    pub mean_queue_ms: f64,
}

/// Jain's fairness index: (Σx)² / (n·Σx²); 1 when all equal, 1/n when one does everything.
pub fn jain(values: &[f64]) -> f64 {
    let sum: f64 = values.iter().sum();
    let squares: f64 = values.iter().map(|v| v * v).sum();
    if values.is_empty() || squares == 0.0 {
        return 1.0;
    }
    sum * sum / (values.len() as f64 * squares)
}

pub(super) fn build(sim: &Simulation) -> SimReport {
    let leechers: Vec<_> = sim
        .nodes
        .iter()
        .filter(|n| n.role == Role::Leecher)
        .collect();
    let times: Vec<f64> = leechers
        .iter()
        .filter_map(|n| Some(n.finished_at?.saturating_since(n.joined_at?).as_secs_f64()))
        .collect();
    let completed = times.len();
    let completion_s = (completed == leechers.len())
        .then(|| {
            leechers
                .iter()
                .filter_map(|n| n.finished_at)
                .max()
                .map(|t| t.as_secs_f64())
        })
        .flatten();
    let mut downloaded = 0;
    let mut wasted = 0;
    let mut corrupt = 0;
    for n in &sim.nodes {
        let past = &n.past;
        let live = n
            .session
            .as_ref()
            .zip(n.torrent)
            .and_then(|(s, t)| s.stats(t).cloned())
            .unwrap_or_default();
        downloaded += past.downloaded + live.downloaded;
        wasted += past.wasted + live.wasted;
        corrupt += past.corrupt + live.corrupt;
    }
    let uploads: Vec<f64> = leechers.iter().map(|n| n.uploaded as f64).collect();
    let corrupt_addrs: Vec<_> = sim
        .nodes
        .iter()
        .filter(|n| n.role == Role::Corrupt)
        .map(|n| n.addr)
        .collect();
    SimReport {
        seed: sim.config.seed,
        leechers: sim.config.leechers,
        seeds: sim.config.seeds,
        corrupt: sim.config.corrupt,
        silent: sim.config.silent,
        size: sim.config.size,
        piece_len: sim.config.piece_len,
        completed,
        every_byte_right: sim.every_byte_right(),
        completion_s,
        download_s: Distribution::of(times),
        bytes_downloaded: downloaded,
        bytes_wasted: wasted,
        bytes_corrupt: corrupt,
        hash_failures: sim.hash_failures,
        peers_banned: sim.banned,
        corrupt_peers_banned: corrupt_addrs
            .iter()
            .filter(|a| sim.banned_addrs.contains(a))
            .count(),
        honest_peers_banned: sim
            .nodes
            .iter()
            .filter(|n| n.role != Role::Corrupt)
            .filter(|n| sim.banned_addrs.iter().any(|a| a.ip() == n.addr.ip()))
            .count(),
        upload_fairness: jain(&uploads),
        closes: sim
            .closes
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        metadata_received: sim.metadata_received,
        metadata_wrong: sim.metadata_wrong,
        leecher_links: sim.leecher_links,
        crypto: sim
            .crypto
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        transport: match sim.config.transport_mix.as_slice() {
            [] => sim.config.transport.to_string(),
            mix => mix
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
        },
        transports: sim
            .transports
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        utp: utp_figures(sim),
        events: sim.events_handled,
        virtual_s: sim.now.as_secs_f64(),
    }
}

fn utp_figures(sim: &Simulation) -> Option<UtpFigures> {
    if !sim.nodes.iter().any(|n| n.transport.utp()) {
        return None;
    }
    let d = &sim.net.datagrams;
    let mut totals = d.departed;
    for u in sim.nodes.iter().filter_map(|n| n.utp.as_ref()) {
        totals += u.totals();
    }
    let mean = |sum: u64, n: u64| if n == 0 { 0.0 } else { sum as f64 / n as f64 };
    Some(UtpFigures {
        packets_sent: d.sent,
        bytes_sent: d.bytes,
        packets_lost: d.lost,
        queue_drops: d.queue_drops,
        unanswered: d.unanswered,
        retransmits: totals.retransmits,
        timeouts: totals.timeouts,
        fast_resends: totals.fast_resends,
        fallbacks: d.fallbacks,
        mean_window: mean(d.window_sum, d.window_samples),
        mean_queue_ms: mean(d.queued_us, d.delivered) / 1000.0,
    })
}

impl fmt::Display for SimReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "swarm:            {} leechers, {} seeds, {} corrupt, {} silent; {} bytes in {}-byte pieces; seed {}",
            self.leechers, self.seeds, self.corrupt, self.silent, self.size, self.piece_len, self.seed
        )?;
        if self.metadata_received > 0 {
            writeln!(
                f,
                "metadata:         {} magnet leechers got it verified ({} wrong)",
                self.metadata_received, self.metadata_wrong
            )?;
        }
        writeln!(
            f,
            "completed:        {}/{} leechers, every byte right: {}",
            self.completed,
            self.leechers,
            if self.every_byte_right { "yes" } else { "NO" }
        )?;
        match self.completion_s {
            Some(t) => writeln!(f, "swarm done at:    {t:.3} s (virtual)")?,
            None => writeln!(
                f,
                "swarm done at:    not finished by {:.3} s (virtual)",
                self.virtual_s
            )?,
        }
        if let Some(d) = &self.download_s {
            writeln!(
                f,
                "download time:    min {:.3} s, p10 {:.3}, p50 {:.3}, p90 {:.3}, max {:.3}, mean {:.3}",
                d.min, d.p10, d.p50, d.p90, d.max, d.mean
            )?;
        }
        let pct = |x: u64| {
            if self.bytes_downloaded == 0 {
                0.0
            } else {
                100.0 * x as f64 / self.bytes_downloaded as f64
            }
        };
        writeln!(f, "downloaded:       {} bytes", self.bytes_downloaded)?;
        writeln!(
            f,
            "wasted:           {} bytes ({:.3}%) duplicate or unrequested",
            self.bytes_wasted,
            pct(self.bytes_wasted)
        )?;
        writeln!(
            f,
            "corrupt:          {} bytes in {} failed pieces ({:.3}%)",
            self.bytes_corrupt,
            self.hash_failures,
            pct(self.bytes_corrupt)
        )?;
        writeln!(
            f,
            "banned:           {} bans; {}/{} corrupt peers banned, {} honest peers banned",
            self.peers_banned, self.corrupt_peers_banned, self.corrupt, self.honest_peers_banned
        )?;
        writeln!(
            f,
            "upload fairness:  {:.4} (Jain's index over leechers)",
            self.upload_fairness
        )?;
        let closes: Vec<String> = self
            .closes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        writeln!(
            f,
            "closes:           {}",
            if closes.is_empty() {
                "none".into()
            } else {
                closes.join(", ")
            }
        )?;
        let crypto: Vec<String> = self
            .crypto
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        writeln!(
            f,
            "connections:      {} (each end; by protection)",
            if crypto.is_empty() {
                "none".into()
            } else {
                crypto.join(", ")
            }
        )?;
        let transports: Vec<String> = self
            .transports
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        writeln!(
            f,
            "transport:        {}; connections {} (each end)",
            self.transport,
            if transports.is_empty() {
                "none".into()
            } else {
                transports.join(", ")
            }
        )?;
        if let Some(u) = &self.utp {
            let pct = |x: u64| {
                if u.packets_sent == 0 {
                    0.0
                } else {
                    100.0 * x as f64 / u.packets_sent as f64
                }
            };
            writeln!(
                f,
                "utp packets:      {} sent ({} bytes), {} lost ({:.2}%), {} queue drops ({:.2}%), {} unanswered",
                u.packets_sent,
                u.bytes_sent,
                u.packets_lost,
                pct(u.packets_lost),
                u.queue_drops,
                pct(u.queue_drops),
                u.unanswered
            )?;
            writeln!(
                f,
                "utp recovery:     {} retransmits, {} time-outs, {} fast resends; {} dials fell back to TCP",
                u.retransmits, u.timeouts, u.fast_resends, u.fallbacks
            )?;
            writeln!(
                f,
                "utp congestion:   mean window {:.0} bytes, mean queueing {:.1} ms",
                u.mean_window, u.mean_queue_ms
            )?;
        }
        write!(
            f,
            "events:           {} in {:.3} virtual s",
            self.events, self.virtual_s
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn jain_bounds() {
        assert!((super::jain(&[5.0, 5.0, 5.0]) - 1.0).abs() < 1e-12);
        assert!((super::jain(&[9.0, 0.0, 0.0]) - 1.0 / 3.0).abs() < 1e-12);
    }
}
