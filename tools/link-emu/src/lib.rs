//! The link model of `link-emu`, without I/O: a link's rules ([`Rules`], parsed from a spec
//! such as `50ms,1%,100mbit`) and one direction of the link ([`Lane`]), which decides for each
//! packet offered at a time whether it is lost, dropped at a full queue, or when it comes out
//! at the far end. Times are nanoseconds on the caller's clock; randomness comes from a seeded
//! generator, so a run is repeatable for a given seed and packet timing.

use std::fmt;
use std::time::Duration;

/// What a link does to every packet, the same in both directions.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    /// One-way delay added to every packet (the round trip is twice this).
    pub delay: Duration,
    /// Each packet's delay varies uniformly within `delay ± jitter` (never below zero); jitter
    /// alone never reorders packets: one that would overtake its predecessor leaves with it.
    pub jitter: Duration,
    /// Probability that a packet is lost, 0 to 1, drawn independently per packet.
    pub loss: f64,
    /// Probability that a packet is held back by `reorder_gap` while the ones after it go on.
    pub reorder: f64,
    /// How long a reordered packet is held back.
    pub reorder_gap: Duration,
    /// The link's rate in bits per second; `None` is unlimited.
    pub rate: Option<u64>,
    /// Bytes that may wait for the link when it is busy; a packet that does not fit is dropped
    /// (drop-tail). `None` with a rate: 100 ms worth of the rate, at least 64 KiB.
    pub queue: Option<u64>,
    /// Seed of the loss, jitter and reordering draws.
    pub seed: u64,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            reorder: 0.0,
            reorder_gap: Duration::from_millis(5),
            rate: None,
            queue: None,
            seed: 1,
        }
    }
}

/// A spec that could not be read, with the reason.
#[derive(Debug, PartialEq)]
pub struct SpecError(pub String);

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SpecError {}

fn bad(item: &str, why: &str) -> SpecError {
    SpecError(format!("link spec item {item:?}: {why}"))
}

/// A duration such as `50ms`, `250us`, `1.5s`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        return None;
    };
    let v: f64 = num.parse().ok()?;
    if !(0.0..=3600.0).contains(&(v * scale)) {
        return None;
    }
    Some(Duration::from_secs_f64(v * scale))
}

/// A percentage such as `1%` or `0.5%`, as a probability.
fn parse_percent(s: &str) -> Option<f64> {
    let v: f64 = s.strip_suffix('%')?.parse().ok()?;
    (0.0..=100.0).contains(&v).then_some(v / 100.0)
}

/// A rate such as `100mbit`, `512kbit`, `1gbit`, `9600bit`, in bits per second.
fn parse_rate(s: &str) -> Option<u64> {
    let lower = s.to_ascii_lowercase();
    let (num, scale) = [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("bit", 1.0)]
        .iter()
        .find_map(|(suffix, scale)| lower.strip_suffix(suffix).map(|n| (n.to_string(), *scale)))?;
    let v: f64 = num.parse().ok()?;
    let bits = v * scale;
    (1000.0..=1e12).contains(&bits).then_some(bits as u64)
}

/// A size such as `64k`, `1m`, `1500` (bytes; k and m are powers of 1024).
fn parse_size(s: &str) -> Option<u64> {
    let lower = s.to_ascii_lowercase();
    let lower = lower.trim_end_matches('b');
    let (num, scale) = if let Some(n) = lower.strip_suffix('k') {
        (n, 1024)
    } else if let Some(n) = lower.strip_suffix('m') {
        (n, 1 << 20)
    } else {
        (lower, 1)
    };
    let v: u64 = num.parse().ok()?;
    let bytes = v.checked_mul(scale)?;
    (1500..=(1 << 30)).contains(&bytes).then_some(bytes)
}

impl Rules {
    /// Reads a spec: comma-separated items, either bare (`50ms` is the delay, `1%` the loss,
    /// `100mbit` the rate) or named (`delay=`, `jitter=`, `loss=`, `reorder=`, `gap=` for the
    /// reorder gap, `rate=`, `queue=` in bytes, `seed=`). An empty spec is a perfect link.
    pub fn parse(spec: &str) -> Result<Rules, SpecError> {
        let mut rules = Rules::default();
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k, v),
                None if item.ends_with('%') => ("loss", item),
                None if item.to_ascii_lowercase().ends_with("bit") => ("rate", item),
                None => ("delay", item),
            };
            match key {
                "delay" | "jitter" | "gap" => {
                    let d = parse_duration(value).ok_or_else(|| bad(item, "not a duration"))?;
                    match key {
                        "delay" => rules.delay = d,
                        "jitter" => rules.jitter = d,
                        _ => rules.reorder_gap = d,
                    }
                }
                "loss" | "reorder" => {
                    let p = parse_percent(value).ok_or_else(|| bad(item, "not a percentage"))?;
                    if key == "loss" {
                        rules.loss = p;
                    } else {
                        rules.reorder = p;
                    }
                }
                "rate" => {
                    rules.rate = Some(
                        parse_rate(value)
                            .ok_or_else(|| bad(item, "not a rate (kbit/mbit/gbit)"))?,
                    )
                }
                "queue" => {
                    rules.queue = Some(
                        parse_size(value)
                            .ok_or_else(|| bad(item, "not a size of 1500 bytes to 1 GiB"))?,
                    )
                }
                "seed" => rules.seed = value.parse().map_err(|_| bad(item, "not a number"))?,
                _ => return Err(bad(item, "unknown item")),
            }
        }
        Ok(rules)
    }

    /// The queue's size in bytes when the link has a rate.
    pub fn queue_bytes(&self) -> Option<u64> {
        let rate = self.rate?;
        Some(self.queue.unwrap_or_else(|| (rate / 8 / 10).max(64 * 1024)))
    }
}

impl fmt::Display for Rules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "delay {:?} jitter {:?} loss {}% reorder {}% (gap {:?})",
            self.delay,
            self.jitter,
            self.loss * 100.0,
            self.reorder * 100.0,
            self.reorder_gap
        )?;
        match (self.rate, self.queue_bytes()) {
            (Some(rate), Some(queue)) => write!(f, " rate {rate} bit/s queue {queue} B"),
            _ => write!(f, " rate unlimited"),
        }?;
        write!(f, " seed {}", self.seed)
    }
}

/// SplitMix64: small, fast, good enough for loss draws, and the same everywhere.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What happens to one packet offered to a [`Lane`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Lost at random.
    Lost,
    /// The queue in front of the link was full.
    QueueFull,
    /// Comes out at the far end at this time (ns).
    Deliver(u64),
}

/// Counters of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub offered: u64,
    pub lost: u64,
    pub queue_full: u64,
    pub reordered: u64,
    pub bytes: u64,
}

/// One direction of the link.
#[derive(Debug)]
pub struct Lane {
    rules: Rules,
    rng: Rng,
    /// When the link finishes sending what it has accepted (ns); the queue holds what is
    /// accepted but not yet sent.
    link_free: u64,
    /// When the last packet in order comes out (ns): jitter never lets one overtake it.
    last_out: u64,
    pub stats: Stats,
}

impl Lane {
    /// A lane with `rules`; `salt` makes the two directions draw differently from one seed.
    pub fn new(rules: Rules, salt: u64) -> Lane {
        let rng = Rng::new(rules.seed ^ salt.wrapping_mul(0xA076_1D64_78BD_642F));
        Lane {
            rules,
            rng,
            link_free: 0,
            last_out: 0,
            stats: Stats::default(),
        }
    }

    /// A packet of `len` bytes enters the link at `now` (ns, never going back).
    pub fn offer(&mut self, now: u64, len: usize) -> Fate {
        self.stats.offered += 1;
        if self.rules.loss > 0.0 && self.rng.unit() < self.rules.loss {
            self.stats.lost += 1;
            return Fate::Lost;
        }
        let mut sent = now;
        if let (Some(rate), Some(queue)) = (self.rules.rate, self.rules.queue_bytes()) {
            let start = self.link_free.max(now);
            let backlog = ((start - now) as u128 * rate as u128 / 8_000_000_000) as u64;
            if backlog + len as u64 > queue {
                self.stats.queue_full += 1;
                return Fate::QueueFull;
            }
            let serialize = (len as u128 * 8_000_000_000 / rate as u128) as u64;
            sent = start + serialize;
            self.link_free = sent;
        }
        self.stats.bytes += len as u64;
        let mut delay = self.rules.delay.as_nanos() as i128;
        let jitter = self.rules.jitter.as_nanos() as i128;
        if jitter > 0 {
            let draw = (self.rng.unit() * (2 * jitter + 1) as f64) as i128;
            delay = (delay + draw - jitter).max(0);
        }
        let out = (sent as i128 + delay) as u64;
        if self.rules.reorder > 0.0 && self.rng.unit() < self.rules.reorder {
            self.stats.reordered += 1;
            return Fate::Deliver(
                out.max(self.last_out) + self.rules.reorder_gap.as_nanos() as u64,
            );
        }
        self.last_out = out.max(self.last_out);
        Fate::Deliver(self.last_out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn specs_read_bare_and_named_items() {
        let r = Rules::parse("50ms,1%,100mbit").unwrap();
        assert_eq!(r.delay, Duration::from_millis(50));
        assert!((r.loss - 0.01).abs() < 1e-12);
        assert_eq!(r.rate, Some(100_000_000));
        assert_eq!(r.queue_bytes(), Some(1_250_000));
        let r = Rules::parse(
            "delay=20ms, jitter=2ms, reorder=5%, gap=3ms, rate=10mbit, queue=64k, seed=7",
        )
        .unwrap();
        assert_eq!(r.jitter, Duration::from_millis(2));
        assert_eq!(r.reorder_gap, Duration::from_millis(3));
        assert!((r.reorder - 0.05).abs() < 1e-12);
        assert_eq!(r.queue, Some(65536));
        assert_eq!(r.seed, 7);
        assert_eq!(Rules::parse("").unwrap(), Rules::default());
        for wrong in [
            "50", "101%", "fast", "rate=10", "queue=10", "loss=-1%", "x=1ms", "9999s",
        ] {
            assert!(Rules::parse(wrong).is_err(), "{wrong}");
        }
    }

    #[test]
    fn delay_only_delivers_after_the_delay_in_order() {
        let mut lane = Lane::new(Rules::parse("30ms").unwrap(), 0);
        for i in 0..100 {
            assert_eq!(lane.offer(i * MS, 1000), Fate::Deliver(i * MS + 30 * MS));
        }
    }

    #[test]
    fn the_rate_spaces_packets_and_a_full_queue_drops_the_tail() {
        // 8 Mbit/s: 1000 bytes take 1 ms; a 10,000-byte queue holds 10 of them.
        let mut lane = Lane::new(Rules::parse("8mbit,queue=10000").unwrap(), 0);
        let fates: Vec<Fate> = (0..20).map(|_| lane.offer(0, 1000)).collect();
        for (i, fate) in fates.iter().enumerate().take(10) {
            assert_eq!(*fate, Fate::Deliver((i as u64 + 1) * MS), "packet {i}");
        }
        assert!(fates[10..].iter().all(|f| *f == Fate::QueueFull));
        assert_eq!(lane.stats.queue_full, 10);
        // Once the link has sent some, there is room again.
        assert_eq!(lane.offer(5 * MS, 1000), Fate::Deliver(11 * MS));
        // Offered at the rate, nothing queues up and nothing is dropped over a long run.
        let mut lane = Lane::new(Rules::parse("8mbit,queue=2000").unwrap(), 0);
        for i in 0..10_000u64 {
            assert_eq!(lane.offer(i * MS, 1000), Fate::Deliver((i + 1) * MS));
        }
    }

    #[test]
    fn loss_matches_the_rate_asked_and_the_seed_repeats_it() {
        let run = |seed: u64| {
            let mut lane = Lane::new(Rules::parse(&format!("2%,seed={seed}")).unwrap(), 0);
            (0..100_000u64)
                .map(|i| lane.offer(i, 100))
                .filter(|f| *f == Fate::Lost)
                .count()
        };
        let lost = run(3);
        assert!((1800..2200).contains(&lost), "{lost}");
        assert_eq!(run(3), lost);
        assert_ne!(run(4), lost);
    }

    #[test]
    fn jitter_varies_the_delay_without_reordering() {
        let mut lane = Lane::new(Rules::parse("20ms,jitter=5ms").unwrap(), 0);
        let mut last = 0;
        let mut delays = Vec::new();
        for i in 0..1000u64 {
            let Fate::Deliver(at) = lane.offer(i * 10 * MS, 100) else {
                panic!("no loss asked");
            };
            assert!(at >= last);
            last = at;
            delays.push(at - i * 10 * MS);
        }
        assert!(delays.iter().all(|d| (15 * MS..=25 * MS + MS).contains(d)));
        let spread = delays.iter().max().unwrap() - delays.iter().min().unwrap();
        assert!(spread > 8 * MS, "{spread}");
    }

    #[test]
    fn reordering_holds_some_packets_back_past_later_ones() {
        let mut lane = Lane::new(Rules::parse("10ms,reorder=10%,gap=5ms").unwrap(), 0);
        let outs: Vec<u64> = (0..10_000u64)
            .map(|i| match lane.offer(i * MS, 100) {
                Fate::Deliver(at) => at,
                other => panic!("{other:?}"),
            })
            .collect();
        let overtaken = outs.windows(2).filter(|w| w[1] < w[0]).count();
        // About 10% held back, less the ones whose successor was held back too.
        assert!((700..1100).contains(&overtaken), "{overtaken}");
        assert!(overtaken <= lane.stats.reordered as usize);
        assert!(
            (900..1100).contains(&lane.stats.reordered),
            "{:?}",
            lane.stats
        );
    }
}
