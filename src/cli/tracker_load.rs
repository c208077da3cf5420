//! `ringtorrent tracker-load` and `ringtorrent report merge`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;

use ringtorrent::load::is_loopback_target;
use ringtorrent::load::report::{histogram_table, LoadReport};
use ringtorrent::load::tracker::conventions::{self, Conventions};
use ringtorrent::load::tracker::model::{self, Lifecycle, Popularity, PopulationConfig};
use ringtorrent::load::tracker::{
    answered, find_knee, sent, timeouts, LoadConfig, Pace, Protocol, Runner, TOOL,
};
use ringtorrent::tracker::{Scheme, TrackerUrl};

/// `--popularity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PopularityArg {
    /// Zipf with exponent `--zipf`.
    Zipf,
    /// aquatic_udp_load_test's shape (a steep exponential head over a floor).
    Aquatic,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The tracker: udp://HOST:PORT or http://HOST:PORT/announce. Only loopback unless
    /// --allow-remote.
    tracker: String,
    /// Allow a tracker outside loopback (you must own it or have permission to load it).
    #[arg(long)]
    allow_remote: bool,
    /// Torrents in the whole run (all shards).
    #[arg(long, default_value_t = 1000)]
    torrents: u32,
    /// Simulated peers in the whole run (all shards).
    #[arg(long, default_value_t = 10_000)]
    peers: u32,
    /// How popularity falls off with torrent rank.
    #[arg(long, value_enum, default_value_t = PopularityArg::Zipf)]
    popularity: PopularityArg,
    /// Zipf exponent.
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// Fraction of peers that start as seeders.
    #[arg(long, default_value_t = 0.5)]
    seeders: f64,
    /// Seedbox profile: one address (peer id, key, port 6881) announcing this many torrents.
    #[arg(long, default_value_t = 0)]
    seedbox: u32,
    /// Ignore interval and min interval: a peer's next step is taken whenever it is picked.
    /// Without it, peers announce when due (interval with jitter) and slots with nobody due
    /// are idle.
    #[arg(long)]
    hammer: bool,
    /// Chance that a leecher's next announce is `completed`.
    #[arg(long, default_value_t = 0.05)]
    complete_chance: f64,
    /// Fraction of completions announced as a plain announce with left=0 instead of the
    /// `completed` event (the peer becomes a seeder either way; only the event is a download).
    #[arg(long, default_value_t = 0.0)]
    silent_completion: f64,
    /// Chance that a peer's next announce is `stopped` (it starts again later).
    #[arg(long, default_value_t = 0.02)]
    stop_chance: f64,
    /// Interval jitter (0.1: +-10%).
    #[arg(long, default_value_t = 0.1)]
    jitter: f64,
    /// Weight of announces in the request mix.
    #[arg(long, default_value_t = 100)]
    announce_weight: u32,
    /// Weight of scrapes.
    #[arg(long, default_value_t = 10)]
    scrape_weight: u32,
    /// Weight of standalone connects (UDP; announces connect when their id is missing or
    /// older than --conn-id-lifetime anyway).
    #[arg(long, default_value_t = 0)]
    connect_weight: u32,
    /// Torrents per scrape: N or MIN-MAX (UDP up to 74, HTTP up to 64).
    #[arg(long, default_value = "1-10")]
    scrape_size: String,
    /// numwant values, comma-separated; one is drawn per announce.
    #[arg(long, default_value = "50")]
    numwant: String,
    /// Open loop: requests per second (the whole process).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Open loop with exponential gaps (a Poisson process) instead of even spacing.
    #[arg(long)]
    poisson: bool,
    /// Closed loop: keep this many requests in flight instead of a rate.
    #[arg(long, value_name = "Q", conflicts_with_all = ["poisson", "find_knee"])]
    in_flight: Option<u32>,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Find the highest rate whose p99 stays under --p99-max-ms and loss under --loss-max:
    /// steps of --knee-step-secs from --rate up by 1.5x, then three bisections.
    #[arg(long)]
    find_knee: bool,
    /// --find-knee: p99 bound.
    #[arg(long, default_value_t = 10.0)]
    p99_max_ms: f64,
    /// --find-knee: timed-out fraction bound.
    #[arg(long, default_value_t = 0.001)]
    loss_max: f64,
    /// --find-knee: seconds per step.
    #[arg(long, default_value_t = 3.0)]
    knee_step_secs: f64,
    /// --find-knee: most rising steps.
    #[arg(long, default_value_t = 12)]
    knee_max_steps: u32,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    workers: u32,
    /// UDP sockets (source ports) per worker; HTTP connections per worker.
    #[arg(long, default_value_t = 4)]
    sockets: u16,
    /// Time allowed for one attempt.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// UDP retransmissions after the first attempt.
    #[arg(long, default_value_t = 1)]
    retransmits: u32,
    /// UDP: seconds a connection id is used before connecting again (BEP 15: 60).
    #[arg(long, default_value_t = 60)]
    conn_id_lifetime: u64,
    /// UDP: fraction of announces sent with a deliberately wrong connection id (the
    /// tracker should answer each with an error).
    #[arg(long, default_value_t = 0.0)]
    bad_connection_id: f64,
    /// HTTP: ask for the dictionary peer model (compact=0) instead of compact peers.
    #[arg(long)]
    no_compact: bool,
    /// HTTP: ask the tracker to close after each reply.
    #[arg(long)]
    no_keep_alive: bool,
    /// Seed of torrents, peers and every choice: same seed, same torrents.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run part I of N (0-based): torrents g with g % N == I; rates and --in-flight are
    /// this process's share. Merge the JSON reports with `report merge`.
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
    /// Print the JSON report instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report here.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// The tracker's conventions where trackers differ: `auto` (detected from its first
    /// decisive replies), `opentracker`, `aquatic`, or KEY=yes|no pairs after an optional
    /// preset (keys: counts-self, returns-self, counts-downloads, zero-numwant-default; the
    /// rest detected). See the README's "tracker-load's checks".
    #[arg(long, default_value = "auto")]
    conventions: String,
    /// Print the run's info hashes (hex, one a line: a tracker whitelist) and exit.
    #[arg(long)]
    print_hashes: bool,
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    #[command(subcommand)]
    command: ReportCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ReportCommand {
    /// Add up shard reports (same tool and format version): counters summed, histograms
    /// merged exactly.
    ///
    /// Example: ringtorrent report merge a.json b.json -o all.json
    Merge {
        /// The reports.
        #[arg(required = true)]
        reports: Vec<PathBuf>,
        /// Write the merged JSON here.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Print the merged JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn parse_shard(text: &str) -> Result<(u32, u32)> {
    let (i, n) = text
        .split_once('/')
        .ok_or_else(|| anyhow!("--shard `{text}`: expected I/N, e.g. 0/4"))?;
    let (i, n): (u32, u32) = (
        i.trim().parse().context("--shard: I is not a number")?,
        n.trim().parse().context("--shard: N is not a number")?,
    );
    if n == 0 || i >= n {
        bail!("--shard {i}/{n}: need 0 <= I < N");
    }
    Ok((i, n))
}

fn parse_range(text: &str) -> Result<(u32, u32)> {
    let (lo, hi) = match text.split_once('-') {
        Some((a, b)) => (a.trim().parse()?, b.trim().parse()?),
        None => {
            let n = text.trim().parse()?;
            (n, n)
        }
    };
    if lo == 0 || hi < lo || hi > 74 {
        bail!("--scrape-size `{text}`: need 1 <= MIN <= MAX <= 74");
    }
    Ok((lo, hi))
}

fn resolve(url: &TrackerUrl) -> Result<SocketAddr> {
    (url.host.as_str(), url.port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {}", url.host))?
        .next()
        .ok_or_else(|| anyhow!("{} resolves to no address", url.host))
}

fn config(args: &Args) -> Result<LoadConfig> {
    let url = TrackerUrl::parse(&args.tracker)
        .with_context(|| format!("`{}` is not a tracker URL", args.tracker))?;
    let protocol = match url.scheme {
        Scheme::Udp => Protocol::Udp,
        Scheme::Http => Protocol::Http,
        Scheme::Https => bail!("tracker-load speaks udp:// and http://, not https://"),
    };
    let target = resolve(&url)?;
    if !is_loopback_target(&target) && !args.allow_remote {
        bail!(
            "{} ({target}) is not a loopback address: tracker-load only loads trackers on this \
             machine unless you pass --allow-remote (use it only on a tracker you run or may load)",
            args.tracker
        );
    }
    let numwant = args
        .numwant
        .split(',')
        .map(|s| s.trim().parse::<u32>())
        .collect::<Result<Vec<_>, _>>()
        .context("--numwant: comma-separated numbers")?;
    if numwant.is_empty() {
        bail!("--numwant: give at least one value");
    }
    if args.torrents == 0 {
        bail!("--torrents must be at least 1");
    }
    let shard = args.shard.as_deref().map(parse_shard).transpose()?;
    let conventions =
        Conventions::parse(&args.conventions).map_err(|e| anyhow!("--conventions: {e}"))?;
    Ok(LoadConfig {
        conventions,
        protocol,
        target,
        url,
        population: PopulationConfig {
            seed: args.seed,
            torrents: args.torrents,
            peers: args.peers,
            popularity: match args.popularity {
                PopularityArg::Zipf => Popularity::Zipf(args.zipf),
                PopularityArg::Aquatic => Popularity::Aquatic,
            },
            seeder_ratio: args.seeders,
            seedbox_torrents: args.seedbox,
        },
        life: Lifecycle {
            hammer: args.hammer,
            complete_chance: args.complete_chance,
            silent_completion: args.silent_completion,
            stop_chance: args.stop_chance,
            jitter: args.jitter,
            default_interval_us: 1_800_000_000,
        },
        workers: args.workers.max(1),
        sockets: args.sockets.max(1),
        weights: [
            args.connect_weight,
            args.announce_weight,
            args.scrape_weight,
        ],
        scrape_sizes: parse_range(&args.scrape_size)?,
        numwant,
        timeout: Duration::from_millis(args.timeout_ms.max(1)),
        retransmits: args.retransmits,
        conn_id_lifetime: Duration::from_secs(args.conn_id_lifetime),
        bad_conn_id: args.bad_connection_id,
        compact: !args.no_compact,
        keep_alive: !args.no_keep_alive,
        shard,
    })
}

fn params(args: &Args, cfg: &LoadConfig, pace: &str) -> serde_json::Value {
    json!({
        "tracker": args.tracker,
        "target": cfg.target.to_string(),
        "protocol": match cfg.protocol { Protocol::Udp => "udp", Protocol::Http => "http" },
        "pace": pace,
        "torrents": args.torrents,
        "peers": args.peers,
        "popularity": match args.popularity {
            PopularityArg::Zipf => format!("zipf {}", args.zipf),
            PopularityArg::Aquatic => "aquatic".to_string(),
        },
        "seeders": args.seeders,
        "seedbox": args.seedbox,
        "hammer": args.hammer,
        "silent_completion": args.silent_completion,
        "weights": {"connect": args.connect_weight, "announce": args.announce_weight, "scrape": args.scrape_weight},
        "scrape_size": args.scrape_size,
        "numwant": args.numwant,
        "workers": cfg.workers,
        "sockets": cfg.sockets,
        "timeout_ms": args.timeout_ms,
        "retransmits": args.retransmits,
        "bad_connection_id": args.bad_connection_id,
        "compact": cfg.compact,
        "keep_alive": cfg.keep_alive,
        "seed": args.seed,
        "conventions": args.conventions,
    })
}

pub fn run(args: Args) -> Result<()> {
    if args.print_hashes {
        let (i, n) = args
            .shard
            .as_deref()
            .map(parse_shard)
            .transpose()?
            .unwrap_or((0, 1));
        let mut out = String::new();
        for g in (i..args.torrents).step_by(n as usize) {
            out.push_str(&model::info_hash(args.seed, g).to_hex());
            out.push('\n');
        }
        out!("{out}");
        return Ok(());
    }
    let cfg = config(&args)?;
    let pace = match (args.in_flight, args.poisson) {
        (Some(q), _) => Pace::Closed(q.max(1)),
        (None, true) => Pace::Poisson(args.rate),
        (None, false) => Pace::Fixed(args.rate),
    };
    let pace_text = match pace {
        _ if args.find_knee => format!(
            "find-knee from {}/s in {} s steps",
            args.rate, args.knee_step_secs
        ),
        Pace::Closed(q) => format!("closed loop, {q} in flight"),
        Pace::Poisson(r) => format!("open loop, Poisson {r}/s"),
        Pace::Fixed(r) => format!("open loop, fixed {r}/s"),
    };
    let mut runner = Runner::start(cfg.clone()).context("cannot open sockets")?;
    let mut p = params(&args, &cfg, &pace_text);
    let report = if args.find_knee {
        if !args.json {
            outln!(
                "finding the knee: p99 <= {} ms, loss <= {}, {} s steps",
                args.p99_max_ms,
                args.loss_max,
                args.knee_step_secs
            );
            outln!(
                "{:>12} {:>12} {:>10} {:>9}",
                "rate/s",
                "replies/s",
                "p99 ms",
                "loss"
            );
        }
        let quiet = args.json;
        let (knee, steps, report) = find_knee(
            &mut runner,
            args.rate,
            args.knee_step_secs,
            Duration::from_micros((args.p99_max_ms * 1000.0) as u64),
            args.loss_max,
            args.knee_max_steps,
            |s| {
                if !quiet {
                    outln!(
                        "{:>12.0} {:>12.0} {:>10.3} {:>9.5} {}",
                        s.rate,
                        s.replies_per_s,
                        s.p99_us as f64 / 1000.0,
                        s.loss,
                        if s.pass { "pass" } else { "FAIL" }
                    );
                }
            },
        );
        p["knee_rate"] = knee.map_or(serde_json::Value::Null, |k| k.into());
        p["knee_steps"] = serde_json::to_value(&steps)?;
        if !args.json {
            match knee {
                Some(k) => outln!("knee: {k:.0} requests/s\n"),
                None => outln!("knee: not found (the first step already failed)\n"),
            }
        }
        report
    } else {
        runner.phase(pace, args.duration)
    };
    drop(runner);
    let mut report = report;
    if let Some(ex) = report.params.get("wrong_examples") {
        p["wrong_examples"] = ex.clone();
    }
    report.params = p;
    emit(&report, args.json, args.output.as_ref())
}

pub(crate) fn emit(report: &LoadReport, as_json: bool, output: Option<&PathBuf>) -> Result<()> {
    let value = report.to_json();
    if let Some(path) = output {
        std::fs::write(path, serde_json::to_string_pretty(&value)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if as_json {
        outln!("{}", serde_json::to_string_pretty(&value)?);
    } else if report.tool == TOOL {
        out!("{}", table(report));
    } else if report.tool == ringtorrent::load::swarm::TOOL {
        out!("{}", ringtorrent::load::swarm::table(report));
    } else {
        out!("{}", report.text());
    }
    Ok(())
}

/// The tracker-load text table.
pub fn table(r: &LoadReport) -> String {
    let secs = r.duration_secs.max(1e-9);
    let mut s = String::new();
    let p = &r.params;
    s.push_str(&format!(
        "tracker-load {} - {:.1} s, {}, {} worker(s) x {} socket(s){}\n",
        p["tracker"].as_str().unwrap_or("?"),
        r.duration_secs,
        p["pace"].as_str().unwrap_or("?"),
        p["workers"],
        p["sockets"],
        match r.shard {
            Some((i, n)) => format!(", shard {i}/{n}"),
            None => String::new(),
        }
    ));
    let outcomes = [
        "sent",
        "ok",
        "error",
        "failure",
        "malformed",
        "http_status",
        "io_error",
        "timeout",
        "late",
        "retransmit",
    ];
    s.push_str(&format!("{:<9}", "action"));
    for o in outcomes {
        s.push_str(&format!(" {:>10}", o));
    }
    s.push_str(&format!(" {:>10}\n", "ok/s"));
    for a in ["connect", "announce", "scrape"] {
        if r.counter(&format!("{a}.sent")) == 0 && r.counter(&format!("{a}.ok")) == 0 {
            continue;
        }
        s.push_str(&format!("{a:<9}"));
        for o in outcomes {
            s.push_str(&format!(" {:>10}", r.counter(&format!("{a}.{o}"))));
        }
        s.push_str(&format!(
            " {:>10.0}\n",
            r.counter(&format!("{a}.ok")) as f64 / secs
        ));
    }
    s.push_str(&format!(
        "requests {:.0}/s, replies {:.0}/s, timed out {} ({:.3}%), wrong transaction id {}\n\n",
        sent(r) as f64 / secs,
        answered(r) as f64 / secs,
        timeouts(r),
        100.0 * timeouts(r) as f64 / sent(r).max(1) as f64,
        r.counter("reply.wrong_txid"),
    ));
    s.push_str(&histogram_table(&r.histograms));
    s.push_str(&format!(
        "\nchecks against the model: announce counts ok {} / wrong {}; peers over numwant {}, \
         duplicate {}, stopped but returned {}, unknown {}; scrape counts ok {} / wrong {}\n",
        r.counter("check.counts_ok"),
        r.counter("check.counts_wrong"),
        r.counter("check.over_numwant"),
        r.counter("check.duplicate_peer"),
        r.counter("check.stopped_peer_returned"),
        r.counter("check.unknown_peer"),
        r.counter("check.scrape_counts_ok"),
        r.counter("check.scrape_counts_wrong"),
    ));
    let extra = r.counter("check.self_returned") + r.counter("check.inconsistent_convention");
    if extra > 0 {
        s.push_str(&format!(
            "against the conventions: announcing peer listed {}, other contradictions {}\n",
            r.counter("check.self_returned"),
            r.counter("check.inconsistent_convention"),
        ));
    }
    s.push_str(&conventions_lines(r));
    if let Some(ex) = r.params["wrong_examples"].as_array() {
        for e in ex.iter().take(3) {
            s.push_str(&format!("  wrong: {}\n", e.as_str().unwrap_or("?")));
        }
    }
    if r.counter("fault.bad_connection_id_sent") > 0 {
        s.push_str(&format!(
            "wrong connection ids sent {}: refused with an error {}, accepted {}, unanswered {}\n",
            r.counter("fault.bad_connection_id_sent"),
            r.counter("fault.bad_connection_id_refused"),
            r.counter("fault.bad_connection_id_accepted"),
            r.counter("fault.bad_connection_id_unanswered"),
        ));
    }
    let cpu = (r.counter("cpu.user_us") + r.counter("cpu.sys_us")) as f64 / 1e6;
    let wall = r.counter("wall_us") as f64 / 1e6;
    s.push_str(&format!(
        "generator: CPU {:.2} s ({:.2} user + {:.2} sys) = {:.0}% of one core over {:.1} s; \
         worst schedule lag {} ms; idle slots {}\n",
        cpu,
        r.counter("cpu.user_us") as f64 / 1e6,
        r.counter("cpu.sys_us") as f64 / 1e6,
        100.0 * cpu / wall.max(1e-9),
        wall,
        ringtorrent::load::report::format_ms(r.counter("max.schedule_lag_us")),
        r.counter("slots.idle"),
    ));
    if r.counter("http.connects") > 0 {
        s.push_str(&format!(
            "http: connections opened {}, retried on a closed connection {}\n",
            r.counter("http.connects"),
            r.counter("http.retried_on_closed"),
        ));
    }
    s
}

/// What the workers settled on for each convention: `detected` (or `given` by
/// --conventions), with how many workers said what when they differ, and contradictions.
fn conventions_lines(r: &LoadReport) -> String {
    let given = r.params["conventions"].as_str().unwrap_or("auto");
    let mut s = format!(
        "tracker conventions (--conventions {given}; what it does not fix is detected from the \
         replies):\n"
    );
    for k in conventions::ALL {
        let yes = r.counter(k.counter(Some(true)));
        let no = r.counter(k.counter(Some(false)));
        let none = r.counter(k.counter(None));
        let conflicts = r.counter(k.conflict_counter());
        let mut parts = Vec::new();
        if yes > 0 {
            parts.push(format!("yes: {}", k.describe(true)));
        }
        if no > 0 {
            parts.push(format!("no: {}", k.describe(false)));
        }
        if none > 0 {
            parts.push("undetected (no decisive reply; either passes)".to_string());
        }
        let mixed = usize::from(yes > 0) + usize::from(no > 0) + usize::from(none > 0) > 1;
        let mut line = parts.join(" / ");
        if mixed {
            line.push_str(&format!(
                " (worker-phases: yes {yes}, no {no}, undetected {none})"
            ));
        }
        if conflicts > 0 {
            line.push_str(&format!(
                "; {conflicts} decisive replies contradicted the others (counted wrong)"
            ));
        }
        s.push_str(&format!("  {:<21} {line}\n", k.key()));
    }
    s
}

pub fn report(args: ReportArgs) -> Result<()> {
    match args.command {
        ReportCommand::Merge {
            reports,
            output,
            json,
        } => {
            let mut parsed = Vec::new();
            for path in &reports {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let value: serde_json::Value = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not JSON", path.display()))?;
                parsed.push(
                    LoadReport::from_json(&value)
                        .map_err(|e| anyhow!("{} is not a load report: {e}", path.display()))?,
                );
            }
            let merged = LoadReport::merge(&parsed).map_err(|e| anyhow!("{e}"))?;
            emit(&merged, json, output.as_ref())
        }
    }
}
