//! `tracker-load`: a UDP (BEP 15) and HTTP tracker load generator that measures latency and
//! checks replies against its own model of the swarm.
//!
//! Worker threads each own a share of the torrents and peers ([`model::Model`]), their own
//! sockets, and their own counters and histograms; nothing is shared while a phase runs. The
//! controller ([`Runner`]) tells every worker to run a phase (a rate for a time), collects
//! their [`Stats`] and adds them into a [`LoadReport`]. A plain run is one phase;
//! `--find-knee` runs phases at rising rates on the same workers, so the model and the
//! tracker's state carry over from step to step.
//!
//! Rates: open loop sends at scheduled times (fixed spacing or Poisson) whatever the tracker
//! does, and times every request from its *scheduled* time, so a stalled tracker (or a
//! generator behind schedule) shows as latency rather than being hidden (coordinated
//! omission). Closed loop keeps `Q` requests in flight and times from the actual send.
//!
//! Outcomes per action (`connect`, `announce`, `scrape`): `ok`, `error` (a BEP 15 error
//! packet), `failure` (HTTP `failure reason`), `malformed`, `http_status`, `timeout` (all
//! retransmissions spent), `late` (a reply after its request timed out); a UDP reply whose
//! transaction id matches nothing sent is `reply.wrong_txid`. Checks against the model:
//! `check.counts_wrong`, `check.over_numwant`, `check.duplicate_peer`,
//! `check.stopped_peer_returned`, `check.unknown_peer`, `check.self_returned`,
//! `check.inconsistent_convention`, `check.scrape_counts_wrong` (and `check.*_ok` for the
//! checks that passed). Where trackers legitimately differ the checks follow the target's
//! [`conventions::Conventions`], detected from its first decisive replies (or given); each
//! worker reports what it settled on as `convention.KEY.yes|no|undetected`, and the first
//! few wrong replies are described in the report's `wrong_examples`.

pub mod conventions;
pub mod http;
pub mod model;
pub mod udp;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use self::model::{Lifecycle, Model, PopulationConfig};
use super::report::{Hist, LoadReport};
use crate::core::Rng;
use crate::tracker::TrackerUrl;

/// The tool name in reports.
pub const TOOL: &str = "tracker-load";

/// Highest latency a histogram tracks (longer ones are clamped), microseconds.
pub const MAX_LATENCY_US: u64 = 120_000_000;

/// Which protocol a run speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// BEP 15.
    Udp,
    /// HTTP/1.1 GET.
    Http,
}

/// How requests are paced, for the whole process (split over workers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Open loop, evenly spaced, requests per second.
    Fixed(f64),
    /// Open loop, exponential gaps (a Poisson process), requests per second.
    Poisson(f64),
    /// Closed loop: this many requests in flight.
    Closed(u32),
}

impl Pace {
    fn per_worker(self, workers: u32, w: u32) -> Pace {
        let n = f64::from(workers.max(1));
        match self {
            Pace::Fixed(r) => Pace::Fixed(r / n),
            Pace::Poisson(r) => Pace::Poisson(r / n),
            Pace::Closed(q) => Pace::Closed(q / workers + u32::from(w < q % workers)),
        }
    }
}

/// The three actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// BEP 15 connect.
    Connect = 0,
    /// Announce.
    Announce = 1,
    /// Scrape.
    Scrape = 2,
}

impl Action {
    /// Lower-case name, the prefix of its counters.
    pub fn name(self) -> &'static str {
        ["connect", "announce", "scrape"][self as usize]
    }
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// UDP or HTTP.
    pub protocol: Protocol,
    /// Where the tracker is.
    pub target: SocketAddr,
    /// The tracker URL (HTTP paths and the Host header).
    pub url: TrackerUrl,
    /// Torrents and peers.
    pub population: PopulationConfig,
    /// Lifecycle.
    pub life: Lifecycle,
    /// Worker threads.
    pub workers: u32,
    /// UDP sockets (source ports) per worker; HTTP connections per worker at most.
    pub sockets: u16,
    /// Weights of connect, announce, scrape.
    pub weights: [u32; 3],
    /// Scrape sizes, inclusive range.
    pub scrape_sizes: (u32, u32),
    /// numwant values, one drawn per announce.
    pub numwant: Vec<u32>,
    /// Time allowed for one attempt.
    pub timeout: Duration,
    /// UDP retransmissions after the first attempt.
    pub retransmits: u32,
    /// How long a connection id is used (BEP 15: 60 s).
    pub conn_id_lifetime: Duration,
    /// Fraction of UDP announces sent with a deliberately wrong connection id.
    pub bad_conn_id: f64,
    /// HTTP: ask for compact peers.
    pub compact: bool,
    /// HTTP: ask to keep connections open.
    pub keep_alive: bool,
    /// `--shard i/n`.
    pub shard: Option<(u32, u32)>,
    /// The target's conventions as far as given (`--conventions`); the rest are detected.
    pub conventions: conventions::Conventions,
}

impl LoadConfig {
    fn parts(&self) -> (u32, u32) {
        let (i, n) = self.shard.unwrap_or((0, 1));
        (i, n)
    }
}

/// One worker's counters and histograms for one phase.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Counters by name.
    pub counters: HashMap<&'static str, u64>,
    /// Latency per action, microseconds.
    pub latency: [Hist; 3],
    /// The first few wrong replies, described ([`MAX_EXAMPLES`] at most).
    pub examples: Vec<String>,
}

/// Wrong replies described per worker and phase.
pub const MAX_EXAMPLES: usize = 3;

impl Default for Stats {
    fn default() -> Self {
        Stats {
            counters: HashMap::new(),
            latency: std::array::from_fn(|_| Hist::new(MAX_LATENCY_US)),
            examples: Vec::new(),
        }
    }
}

impl Stats {
    /// Adds one to a counter.
    pub fn bump(&mut self, name: &'static str) {
        *self.counters.entry(name).or_insert(0) += 1;
    }

    /// Adds `n` to a counter (`max.*`: keeps the larger).
    pub fn add(&mut self, name: &'static str, n: u64) {
        let slot = self.counters.entry(name).or_insert(0);
        if name.starts_with("max.") {
            *slot = (*slot).max(n);
        } else {
            *slot += n;
        }
    }

    /// Whether another wrong reply should be described.
    pub fn want_example(&self) -> bool {
        self.examples.len() < MAX_EXAMPLES
    }

    /// Keeps a wrong reply's description, if there is room.
    pub fn example(&mut self, text: Option<String>) {
        if let Some(t) = text {
            if self.want_example() {
                self.examples.push(t);
            }
        }
    }

    /// Adds a worker's conventions at the end of a phase: what it settled on (or did not)
    /// and how many decisive replies contradicted the others.
    pub fn conventions(&mut self, c: &conventions::Conventions) {
        for k in conventions::ALL {
            self.bump(k.counter(c.get(k)));
            self.add(k.conflict_counter(), u64::from(c.conflicts(k)));
        }
    }

    /// Records an outcome of `action`: `outcome` is one of the names in the module doc.
    pub fn outcome(&mut self, action: Action, outcome: &'static str) {
        self.bump(counter_name(action, outcome));
    }

    fn into_report(self, report: &mut LoadReport) {
        if !self.examples.is_empty() {
            if !report.params.is_object() {
                report.params = serde_json::json!({});
            }
            let ex = &mut report.params["wrong_examples"];
            if !ex.is_array() {
                *ex = serde_json::json!([]);
            }
            if let Some(a) = ex.as_array_mut() {
                a.extend(self.examples.into_iter().map(serde_json::Value::from));
            }
        }
        for (k, v) in self.counters {
            report.add_counter(k, v);
        }
        for a in [Action::Connect, Action::Announce, Action::Scrape] {
            let h = &self.latency[a as usize];
            if !h.is_empty() {
                report.add_histogram(&format!("latency_us.{}", a.name()), h);
            }
        }
    }
}

/// `"{action}.{outcome}"` as a static string (the names are a small fixed set).
pub fn counter_name(action: Action, outcome: &'static str) -> &'static str {
    macro_rules! names {
        ($($o:literal),*) => {
            match (action, outcome) {
                $((Action::Connect, $o) => concat!("connect.", $o),
                  (Action::Announce, $o) => concat!("announce.", $o),
                  (Action::Scrape, $o) => concat!("scrape.", $o),)*
                _ => "other.unknown_outcome",
            }
        };
    }
    names!(
        "sent",
        "ok",
        "error",
        "failure",
        "malformed",
        "http_status",
        "io_error",
        "timeout",
        "late",
        "retransmit"
    )
}

/// Microseconds since `epoch`.
pub fn micros(epoch: Instant) -> u64 {
    epoch.elapsed().as_micros() as u64
}

/// What a worker runs.
pub trait Worker: Send {
    /// Runs one phase: paces requests from `start` (µs since the shared epoch) for `secs`,
    /// then waits for what is in flight (up to the time-out), and returns the phase's stats.
    fn run_phase(&mut self, pace: Pace, start: u64, secs: f64) -> Stats;
}

/// Schedules open-loop slots.
#[derive(Debug)]
pub struct Schedule {
    pace: Pace,
    next: f64,
}

impl Schedule {
    /// Slots from `start` (µs).
    pub fn new(pace: Pace, start: u64) -> Schedule {
        Schedule {
            pace,
            next: start as f64,
        }
    }

    /// The next slot time if it is due by `now` (and advances), for open loop.
    pub fn due(&mut self, now: u64, rng: &mut Rng) -> Option<u64> {
        let gap = match self.pace {
            Pace::Fixed(r) if r > 0.0 => 1e6 / r,
            Pace::Poisson(r) if r > 0.0 => -(1.0 - rng.unit()).ln() * 1e6 / r,
            _ => return None,
        };
        if self.next <= now as f64 {
            let t = self.next as u64;
            self.next += gap;
            Some(t)
        } else {
            None
        }
    }

    /// When the next slot is due (open loop), µs.
    pub fn next_at(&self) -> Option<u64> {
        match self.pace {
            Pace::Closed(_) => None,
            _ => Some(self.next as u64),
        }
    }
}

/// What a slot does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// A standalone connect (refresh) for this peer.
    Connect(u32),
    /// An announce by this peer.
    Announce(u32),
    /// A scrape of these worker torrents, sent as this peer.
    Scrape(u32, Vec<u32>),
    /// Nothing due (honouring intervals).
    Idle,
}

/// Picks what the next slot does: an action by weight, then a peer.
pub fn plan(cfg: &LoadConfig, model: &mut Model, now: u64, rng: &mut Rng) -> Plan {
    let mut w = cfg.weights;
    if cfg.protocol == Protocol::Http {
        w[0] = 0;
    }
    let total: u64 = w.iter().map(|&x| u64::from(x)).sum();
    if total == 0 || model.peers.is_empty() {
        return Plan::Idle;
    }
    let mut x = rng.below(total);
    let mut action = 2;
    for (i, &wi) in w.iter().enumerate() {
        if x < u64::from(wi) {
            action = i;
            break;
        }
        x -= u64::from(wi);
    }
    match action {
        0 => Plan::Connect(rng.index(model.peers.len()) as u32),
        1 => match model.next_peer(now, rng) {
            Some(i) => Plan::Announce(i),
            None => Plan::Idle,
        },
        _ => {
            let (lo, hi) = cfg.scrape_sizes;
            let n = lo + rng.below(u64::from(hi.saturating_sub(lo)) + 1) as u32;
            // Distinct torrents: a scrape naming one twice gets a reply with a key twice.
            let mut torrents: Vec<u32> = Vec::with_capacity(n as usize);
            for _ in 0..n.max(1) * 2 {
                let t = model.sampler.sample(rng) as u32;
                if !torrents.contains(&t) {
                    torrents.push(t);
                }
                if torrents.len() == n as usize {
                    break;
                }
            }
            Plan::Scrape(rng.index(model.peers.len()) as u32, torrents)
        }
    }
}

enum Cmd {
    Phase { pace: Pace, start: u64, secs: f64 },
}

/// The worker threads of one run.
pub struct Runner {
    cmds: Vec<Sender<Cmd>>,
    results: Receiver<Stats>,
    threads: Vec<JoinHandle<()>>,
    cfg: Arc<LoadConfig>,
    epoch: Instant,
}

impl Runner {
    /// Builds the population and opens the sockets, one worker per thread.
    pub fn start(cfg: LoadConfig) -> std::io::Result<Runner> {
        let cfg = Arc::new(cfg);
        let epoch = Instant::now();
        let (shard, shards) = cfg.parts();
        let (res_tx, results) = channel();
        let mut cmds = Vec::new();
        let mut threads = Vec::new();
        for w in 0..cfg.workers.max(1) {
            let part = shard + shards * w;
            let parts = shards * cfg.workers.max(1);
            let mut model = Model::build(&cfg.population, part, parts, cfg.sockets, cfg.life);
            model.conventions = cfg.conventions.clone();
            let rng = Rng::new(cfg.population.seed.wrapping_mul(31) ^ u64::from(part) << 20);
            let mut worker: Box<dyn Worker> = match cfg.protocol {
                Protocol::Udp => Box::new(udp::UdpWorker::new(cfg.clone(), model, rng, epoch, w)?),
                Protocol::Http => Box::new(http::HttpWorker::new(cfg.clone(), model, rng, epoch)),
            };
            let (tx, rx) = channel::<Cmd>();
            let res_tx: Sender<Stats> = res_tx.clone();
            let workers = cfg.workers.max(1);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("tracker-load-{w}"))
                    .spawn(move || {
                        while let Ok(Cmd::Phase { pace, start, secs }) = rx.recv() {
                            let stats = worker.run_phase(pace.per_worker(workers, w), start, secs);
                            if res_tx.send(stats).is_err() {
                                return;
                            }
                        }
                    })?,
            );
            cmds.push(tx);
        }
        Ok(Runner {
            cmds,
            results,
            threads,
            cfg,
            epoch,
        })
    }

    /// Runs one phase on every worker and adds up what they saw.
    pub fn phase(&mut self, pace: Pace, secs: f64) -> LoadReport {
        let cpu0 = super::cpu_time_us();
        let start = micros(self.epoch) + 1_000;
        let started_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for tx in &self.cmds {
            let _ = tx.send(Cmd::Phase { pace, start, secs });
        }
        let mut report = LoadReport::new(TOOL);
        report.shard = self.cfg.shard;
        report.started_unix = started_unix;
        report.duration_secs = secs;
        for _ in 0..self.cmds.len() {
            match self.results.recv() {
                Ok(stats) => stats.into_report(&mut report),
                Err(_) => break,
            }
        }
        let cpu1 = super::cpu_time_us();
        report.add_counter("cpu.user_us", cpu1.0 - cpu0.0);
        report.add_counter("cpu.sys_us", cpu1.1 - cpu0.1);
        report.add_counter("wall_us", micros(self.epoch).saturating_sub(start));
        report
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.cmds.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Requests sent in a report (every action, first attempts only).
pub fn sent(r: &LoadReport) -> u64 {
    ["connect.sent", "announce.sent", "scrape.sent"]
        .iter()
        .map(|k| r.counter(k))
        .sum()
}

/// Replies received in time, whatever they said.
pub fn answered(r: &LoadReport) -> u64 {
    let mut n = 0;
    for a in ["connect", "announce", "scrape"] {
        for o in ["ok", "error", "failure", "malformed", "http_status"] {
            n += r.counter(&format!("{a}.{o}"));
        }
    }
    n
}

/// Requests that got no reply in time.
pub fn timeouts(r: &LoadReport) -> u64 {
    ["connect.timeout", "announce.timeout", "scrape.timeout"]
        .iter()
        .map(|k| r.counter(k))
        .sum()
}

/// The worst p99 over the actions that have latencies, µs.
pub fn worst_p99(r: &LoadReport) -> u64 {
    r.histograms
        .values()
        .filter(|h| !h.is_empty())
        .map(|h| h.0.value_at_quantile(0.99))
        .max()
        .unwrap_or(0)
}

/// One step of `--find-knee`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KneeStep {
    /// Target rate, requests per second.
    pub rate: f64,
    /// Replies per second achieved.
    pub replies_per_s: f64,
    /// Worst p99 latency over the actions, µs.
    pub p99_us: u64,
    /// Timed-out fraction of requests sent.
    pub loss: f64,
    /// Whether both bounds held.
    pub pass: bool,
}

/// `--find-knee`: from `start` requests/s, multiply by 1.5 while p99 stays within `p99_max`
/// and loss within `loss_max`, then bisect the last passing and first failing rate
/// `refine` times. Returns the highest passing rate (if any), the steps, and the sum of all
/// steps' reports.
pub fn find_knee(
    runner: &mut Runner,
    start: f64,
    step_secs: f64,
    p99_max: Duration,
    loss_max: f64,
    max_steps: u32,
    mut on_step: impl FnMut(&KneeStep),
) -> (Option<f64>, Vec<KneeStep>, LoadReport) {
    let mut steps = Vec::new();
    let mut all: Vec<LoadReport> = Vec::new();
    let mut measure = |rate: f64, steps: &mut Vec<KneeStep>| {
        let r = runner.phase(Pace::Fixed(rate), step_secs);
        let loss = timeouts(&r) as f64 / sent(&r).max(1) as f64;
        let p99 = worst_p99(&r);
        let step = KneeStep {
            rate,
            replies_per_s: answered(&r) as f64 / step_secs,
            p99_us: p99,
            loss,
            pass: p99 <= p99_max.as_micros() as u64 && loss <= loss_max,
        };
        on_step(&step);
        steps.push(step.clone());
        all.push(r);
        step.pass
    };
    let mut good: Option<f64> = None;
    let mut bad: Option<f64> = None;
    let mut rate = start.max(1.0);
    for _ in 0..max_steps {
        if measure(rate, &mut steps) {
            good = Some(rate);
            rate *= 1.5;
        } else {
            bad = Some(rate);
            break;
        }
    }
    if let (Some(mut g), Some(mut b)) = (good, bad) {
        for _ in 0..3 {
            let mid = (g + b) / 2.0;
            if measure(mid, &mut steps) {
                g = mid;
            } else {
                b = mid;
            }
        }
        good = Some(g);
    }
    let mut total = LoadReport::merge(&all).unwrap_or_else(|_| LoadReport::new(TOOL));
    // Every step's wrong replies, not only the first step's (merge keeps the first params).
    let examples: Vec<serde_json::Value> = all
        .iter()
        .filter_map(|r| r.params.get("wrong_examples").and_then(|e| e.as_array()))
        .flatten()
        .take(MAX_EXAMPLES)
        .cloned()
        .collect();
    total.params = serde_json::json!({ "wrong_examples": examples });
    total.duration_secs = step_secs * all.len() as f64;
    total.shard = runner.cfg.shard;
    (good, steps, total)
}
