//! `swarm-load`: synthetic peers against a BitTorrent client on an address, to measure how it
//! seeds and leeches under many peers (libtorrent's `connection_tester` is the reference).
//!
//! ```text
//!   pattern.rs   the payload as a function of offset; `gen` writes it and its torrent
//!   peers.rs     LoadPeers: the synthetic peers as one sans-IO Protocol
//!   mod.rs       run(): peers on the engine's io_uring or epoll loop, then the LoadReport
//! ```
//!
//! The generator never reads the payload from disk: seeds compute each block, leechers check
//! each block by computing it. The report is a [`LoadReport`] (tool `swarm-load`), so
//! `report merge` adds the JSON of several `--shard i/n` runs exactly.
//!
//! Counters: `bytes.down`/`bytes.up`; `blocks.ok`, `blocks.bad` (failed verification),
//! `blocks.rejected`, `blocks.served`, `blocks.corrupt_sent`, `blocks.unrequested`;
//! `conn.dials`, `conn.connected`, `conn.handshakes`, `conn.refused`,
//! `conn.closed_in_handshake`, `conn.closed_by_target`, `conn.closed_protocol`,
//! `conn.bad_handshake`, `conn.connect_timeout`, `conn.handshake_timeout`, `conn.redials`;
//! `peers.passes`, `peers.gave_up`, `peers.stalled` (slow readers that sent their requests
//! and stopped reading), `churn.reconnects`, `corrupt_peers.dropped`,
//! `conn.closed_when_complete`; `fair.n`, `fair.sum`, `fair.sum_sq`
//! (per-connection rates in kB/s, for Jain's index); `cpu.user_us`, `cpu.sys_us`.
//! Histograms (µs): `latency_us.request_to_block`, `latency_us.dial_to_first_byte`,
//! `latency_us.dial_to_handshake`.

pub mod pattern;
pub mod peers;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::core::Time;
use crate::driver::{Backend, Driver};
use crate::metainfo::Info;
use crate::storage::{DiskPool, DiskPoolConfig};

use super::cpu_time_us;
use super::report::{histogram_table, LoadReport};
use peers::{LoadPeers, Role, Settings};

/// The tool name in reports.
pub const TOOL: &str = "swarm-load";

/// What the synthetic peers do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// They seed; the target leeches.
    Upload,
    /// They leech; the target seeds.
    Download,
    /// Half of each (even peer numbers seed).
    Dual,
}

impl Mode {
    fn role(self, n: usize) -> Role {
        match self {
            Mode::Upload => Role::Seed,
            Mode::Download => Role::Leech,
            Mode::Dual if n % 2 == 0 => Role::Seed,
            Mode::Dual => Role::Leech,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Upload => "upload",
            Mode::Download => "download",
            Mode::Dual => "dual",
        }
    }
}

/// A run's settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// The client under test.
    pub target: SocketAddr,
    /// Its torrent (made by [`pattern::gen`]).
    pub info: Arc<Info>,
    /// What the peers do.
    pub mode: Mode,
    /// Peers in the whole run (all shards).
    pub peers: usize,
    /// Stop after this long; without it, when every leecher has downloaded everything once
    /// and (with seeds) the target has every piece.
    pub duration: Option<Duration>,
    /// Give up after this long in any case.
    pub timeout: Duration,
    /// Requests each leecher keeps in flight.
    pub pipeline: usize,
    /// Reconnect after this many blocks on a connection.
    pub churn_blocks: Option<u64>,
    /// Share of seeds that corrupt every block they serve (see [`peers`]).
    pub corrupt_rate: f64,
    /// Share of leechers that send their first requests and never read again (see
    /// [`peers`]).
    pub slow_readers: f64,
    /// Local addresses to connect from, in turn.
    pub source_ips: Vec<IpAddr>,
    /// `--shard i/n`: this process runs peers `[N*i/n, N*(i+1)/n)`.
    pub shard: Option<(u32, u32)>,
    /// Dials in progress at once.
    pub max_half_open: usize,
    /// The event loop.
    pub backend: Backend,
    /// Seeds the peers' choices.
    pub seed: u64,
}

/// A progress reading, about once a second.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Seconds since the first dial.
    pub elapsed: f64,
    /// Bytes received by leechers and sent by seeds so far.
    pub down: u64,
    /// Bytes sent by seeds so far.
    pub up: u64,
    /// Connections open.
    pub connected: usize,
    /// Of them, slow readers that sent their requests and read no more.
    pub stalled: usize,
}

/// Runs the peers of this shard against the target and reports what happened.
pub fn run(opts: &Options, mut progress: impl FnMut(&Progress)) -> std::io::Result<LoadReport> {
    let (first, last) = match opts.shard {
        Some((i, n)) => (
            opts.peers * i as usize / n as usize,
            opts.peers * (i as usize + 1) / n as usize,
        ),
        None => (0, opts.peers),
    };
    let roles: Vec<Role> = (first..last).map(|n| opts.mode.role(n)).collect();
    let settings = Settings {
        info_hash: opts.info.info_hash(),
        lengths: *opts.info.lengths(),
        target: opts.target,
        roles,
        first_index: first,
        pipeline: opts.pipeline,
        churn_blocks: opts.churn_blocks,
        corrupt_rate: opts.corrupt_rate,
        slow_readers: opts.slow_readers,
        source_ips: opts.source_ips.clone(),
        max_half_open: opts.max_half_open,
        repeat: opts.duration.is_some(),
        seed: opts.seed ^ first as u64,
        dual: opts.mode == Mode::Dual,
    };
    // The drivers need a disk pool for their completion queue; these peers never use it.
    let disk = Arc::new(
        DiskPool::new(DiskPoolConfig {
            hash_threads: 1,
            io_threads: 1,
        })
        .map_err(std::io::Error::other)?,
    );
    let epoch = Instant::now();
    let peers = LoadPeers::new(settings, Time::ZERO);
    let mut driver = Driver::new(opts.backend, peers, None, disk, epoch)?;
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let cpu_before = cpu_time_us();
    let started = Instant::now();
    let mut last_progress = Instant::now();
    loop {
        let elapsed = started.elapsed();
        if opts.duration.is_some_and(|d| elapsed >= d)
            || elapsed >= opts.timeout
            || (opts.duration.is_none() && driver.session().is_done())
        {
            break;
        }
        driver.turn(Duration::from_millis(20), &mut |_| {})?;
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            let p = driver.session();
            let (down, up) = p.bytes();
            progress(&Progress {
                elapsed: started.elapsed().as_secs_f64(),
                down,
                up,
                connected: p.connected(),
                stalled: p.stalled(),
            });
        }
    }
    let wall = started.elapsed();
    let timed_out = opts.duration.is_none() && !driver.session().is_done();
    let now = driver.now();
    driver.session().stop(now);
    // Let the closes go out.
    for _ in 0..3 {
        driver.turn(Duration::from_millis(5), &mut |_| {})?;
    }
    let now = driver.now();
    let stats = driver.session().take_stats(now);
    let cpu_after = cpu_time_us();

    let mut r = LoadReport::new(TOOL);
    r.shard = opts.shard;
    r.started_unix = started_unix;
    r.duration_secs = wall.as_secs_f64();
    for (name, n) in &stats.counters {
        r.add_counter(name, *n);
    }
    r.add_counter("cpu.user_us", cpu_after.0.saturating_sub(cpu_before.0));
    r.add_counter("cpu.sys_us", cpu_after.1.saturating_sub(cpu_before.1));
    r.add_counter("run.timed_out", u64::from(timed_out));
    // Jain's index needs only n, the sum and the sum of squares: they add across shards.
    for rate in &stats.peer_rates {
        let k = (rate / 1000.0).round() as u64;
        r.add_counter("fair.n", 1);
        r.add_counter("fair.sum", k);
        r.add_counter("fair.sum_sq", k * k);
    }
    r.add_histogram("latency_us.request_to_block", &stats.latency_us);
    r.add_histogram("latency_us.dial_to_first_byte", &stats.ttfb_us);
    r.add_histogram("latency_us.dial_to_handshake", &stats.handshake_us);
    r.params = json!({
        "target": opts.target.to_string(),
        "mode": opts.mode.name(),
        "peers": opts.peers,
        "shard_peers": last - first,
        "pipeline": opts.pipeline,
        "churn_blocks": opts.churn_blocks,
        "corrupt_rate": opts.corrupt_rate,
        "slow_readers": opts.slow_readers,
        "source_ips": opts.source_ips.len(),
        "torrent": opts.info.info_hash().to_hex(),
        "size": opts.info.total_len(),
        "piece_length": opts.info.lengths().piece_len(),
        "io": opts.backend.to_string(),
        "duration": opts.duration.map(|d| d.as_secs_f64()),
    });
    Ok(r)
}

/// Jain's fairness index of the per-connection rates: 1 when all are equal, 1/n when one
/// connection has everything.
pub fn fairness(r: &LoadReport) -> Option<f64> {
    let (n, sum, sq) = (
        r.counter("fair.n") as f64,
        r.counter("fair.sum") as f64,
        r.counter("fair.sum_sq") as f64,
    );
    (n > 0.0 && sq > 0.0).then(|| sum * sum / (n * sq))
}

/// The swarm-load text table.
pub fn table(r: &LoadReport) -> String {
    let secs = r.duration_secs.max(1e-9);
    let p = &r.params;
    let mb = |n: u64| n as f64 / secs / 1e6;
    let mut s = format!(
        "swarm-load {} - {}, {} peers{}, {:.1} s ({})\n",
        p["target"].as_str().unwrap_or("?"),
        p["mode"].as_str().unwrap_or("?"),
        p["peers"].as_u64().unwrap_or(0),
        match r.shard {
            Some((i, n)) => format!(" (shard {i}/{n})"),
            None => String::new(),
        },
        r.duration_secs,
        p["io"].as_str().unwrap_or("?"),
    );
    s.push_str(&format!(
        "aggregate: down {:.1} MB/s ({} bytes), up {:.1} MB/s ({} bytes)\n",
        mb(r.counter("bytes.down")),
        r.counter("bytes.down"),
        mb(r.counter("bytes.up")),
        r.counter("bytes.up"),
    ));
    let n = r.counter("fair.n");
    if n > 0 {
        s.push_str(&format!(
            "per connection: mean {:.2} MB/s over {n} connections, Jain's fairness {:.3}\n",
            r.counter("fair.sum") as f64 / n as f64 / 1000.0,
            fairness(r).unwrap_or(0.0),
        ));
    }
    s.push_str(&format!(
        "connections: {} dials, {} handshakes ({:.0}/s); refused {}, closed in handshake {}, \
         closed by target {}, bad handshake {}, protocol errors {}, timeouts {}, redials {}, \
         gave up {}, churn reconnects {}\n",
        r.counter("conn.dials"),
        r.counter("conn.handshakes"),
        r.counter("conn.handshakes") as f64 / secs,
        r.counter("conn.refused"),
        r.counter("conn.closed_in_handshake"),
        r.counter("conn.closed_by_target"),
        r.counter("conn.bad_handshake"),
        r.counter("conn.closed_protocol"),
        r.counter("conn.connect_timeout") + r.counter("conn.handshake_timeout"),
        r.counter("conn.redials"),
        r.counter("peers.gave_up"),
        r.counter("churn.reconnects"),
    ));
    s.push_str(&format!(
        "blocks: {} verified, {} failed verification, {} rejected, {} served, {} corrupted on \
         purpose ({} corrupting peers dropped by the target); {} full passes\n",
        r.counter("blocks.ok"),
        r.counter("blocks.bad"),
        r.counter("blocks.rejected"),
        r.counter("blocks.served"),
        r.counter("blocks.corrupt_sent"),
        r.counter("corrupt_peers.dropped"),
        r.counter("peers.passes"),
    ));
    let cpu = (r.counter("cpu.user_us") + r.counter("cpu.sys_us")) as f64 / 1e6;
    let share = cpu / secs;
    s.push_str(&format!(
        "generator CPU: {cpu:.2} s over {secs:.2} s = {:.0}% of one core{}\n",
        share * 100.0,
        if share > 0.9 {
            " -- SATURATED: the figures above may be the generator's limit, not the target's"
        } else {
            ""
        }
    ));
    if r.counter("run.timed_out") > 0 {
        s.push_str("the run hit its time limit before every peer finished\n");
    }
    s.push_str(&histogram_table(&r.histograms));
    s
}
