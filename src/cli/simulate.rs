//! `ringtorrent simulate`: runs a seeded swarm of the real protocol core in memory.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use super::format;
use ringtorrent::core::Encryption;
use ringtorrent::driver::sim::{simulate, SimConfig, Transport};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Leechers in the swarm.
    #[arg(long, default_value_t = 50)]
    peers: usize,
    /// Honest seeds present from the start.
    #[arg(long, default_value_t = 1)]
    seeds: usize,
    /// Seeds that serve corrupt blocks (they should end up banned).
    #[arg(long, default_value_t = 0)]
    corrupt: usize,
    /// Peers that accept connections and never answer (they should be timed out).
    #[arg(long, default_value_t = 0)]
    silent: usize,
    /// Leechers start from a magnet link and fetch the metadata from their peers first.
    #[arg(long)]
    magnet: bool,
    /// Seeds whose data is right but whose metadata is corrupt (for `--magnet`).
    #[arg(long, default_value_t = 0)]
    bad_metadata: usize,
    /// Payload size, e.g. 64M.
    #[arg(long, default_value = "16M", value_parser = format::parse_size)]
    size: u64,
    /// Piece length, e.g. 256K.
    #[arg(long, default_value = "256K", value_parser = format::parse_size)]
    piece_length: u64,
    /// Seed of every random choice; the same seed gives the same output, byte for byte.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// One-way link latency in milliseconds.
    #[arg(long, default_value_t = 20)]
    latency_ms: u64,
    /// Each node's upload rate, bytes per second (e.g. 10M).
    #[arg(long, default_value = "10M", value_parser = format::parse_size)]
    up: u64,
    /// Each node's download rate, bytes per second.
    #[arg(long, default_value = "50M", value_parser = format::parse_size)]
    down: u64,
    /// Loss probability: a TCP window is lost and arrives a retransmission time-out late; a
    /// uTP packet is dropped and uTP must resend it.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Transports (tcp, utp, both), comma-separated, handed out to the nodes in turn, with
    /// the engine's policy: both dials uTP first and falls back to TCP, accepting both. uTP
    /// runs the real uTP endpoint over simulated packets. Default: every node tcp.
    #[arg(long, value_delimiter = ',', value_name = "TRANSPORT,...")]
    transport: Vec<Transport>,
    /// The longest a uTP packet waits in a node's uplink or downlink queue before the queue
    /// drops it (drop-tail), in milliseconds.
    #[arg(long, default_value_t = 200)]
    queue_limit_ms: u64,
    /// Mean seconds a leecher stays online before leaving for a while (churn). 0: no churn.
    #[arg(long, default_value_t = 0.0)]
    churn: f64,
    /// Seconds a churning leecher stays away before it returns with what it had.
    #[arg(long, default_value_t = 10.0)]
    churn_offline: f64,
    /// Leechers join spread over this many seconds.
    #[arg(long, default_value_t = 5.0)]
    join_spread: f64,
    /// Peers each node is told about at the start, as a tracker would answer.
    #[arg(long, default_value_t = 40)]
    peers_per_node: usize,
    /// Stop at this many virtual seconds even if the swarm has not finished.
    #[arg(long, default_value_t = 3600.0)]
    time_limit: f64,
    /// Encryption policies (plaintext, prefer, require), comma-separated, handed out to the
    /// nodes in turn: a swarm of mixed policies. Default: every node `prefer`.
    #[arg(long, value_delimiter = ',', value_name = "POLICY,...")]
    encryption: Vec<Encryption>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    if !(0.0..=1.0).contains(&args.loss) {
        return Err(anyhow!("--loss must be between 0 and 1"));
    }
    let secs = |s: f64| Duration::from_secs_f64(s.max(0.0));
    let config = SimConfig {
        leechers: args.peers,
        seeds: args.seeds,
        corrupt: args.corrupt,
        silent: args.silent,
        magnet: args.magnet,
        bad_metadata: args.bad_metadata,
        size: args.size,
        piece_len: args.piece_length,
        seed: args.seed,
        latency: Duration::from_millis(args.latency_ms),
        up_rate: args.up,
        down_rate: args.down,
        loss: args.loss,
        join_spread: secs(args.join_spread),
        churn_mean_online: (args.churn > 0.0).then(|| secs(args.churn)),
        churn_offline: secs(args.churn_offline),
        peers_per_node: args.peers_per_node,
        time_limit: secs(args.time_limit),
        encryption_mix: args.encryption,
        transport_mix: args.transport,
        queue_limit: Duration::from_millis(args.queue_limit_ms),
        ..SimConfig::default()
    };
    let started = Instant::now();
    let report = simulate(config).map_err(|e| anyhow!("cannot simulate: {e}"))?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        outln!("{report}");
    }
    // Real time goes to stderr so that stdout stays identical for the same seed.
    eprintln!(
        "(simulated in {:.2} s of real time)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
