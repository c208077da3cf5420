//! Command-line front end: argument parsing (clap), config files and display, one module per
//! subcommand. The engine is the library's [`ringtorrent::client::Client`]: no event loop,
//! disk pool, storage, session or announcer is built here. This is the only place that uses
//! `anyhow`; the library reports typed errors.

/// `println!` for command output: a closed pipe ends the process quietly, as SIGPIPE ends any
/// Unix tool (see `signals::out`).
macro_rules! outln {
    () => { $crate::cli::signals::out(format_args!("\n")) };
    ($($arg:tt)*) => {
        $crate::cli::signals::out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for command output, as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::signals::out(format_args!($($arg)*)) };
}

mod check;
mod create;
mod demo;
mod dht;
mod driver;
mod format;
mod handshake;
mod info;
mod serve;
mod signals;
mod simulate;
mod swarm_load;
mod tracker;
mod tracker_load;
mod transfer;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// ringtorrent: a BitTorrent engine for Linux built for throughput.
///
/// It downloads and seeds torrents and magnet links (one io_uring or epoll event loop per
/// core), runs a seedbox of many torrents with a control API (`serve`), checks and makes
/// torrents, and loads trackers and other clients (`tracker-load`, `swarm-load`). Every
/// command that runs torrents uses the same engine, the `ringtorrent::client` library.
#[derive(Debug, Parser)]
#[command(
    name = "ringtorrent",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make a payload, seed it and leech it over loopback through the real engine, verify
    /// every byte and print the throughput. The quickest way to see ringtorrent work.
    ///
    /// Example: ringtorrent demo --size 1G
    Demo(demo::Args),
    /// Download a torrent into a folder from the given peers.
    ///
    /// Example: ringtorrent download file.torrent -o ./downloads --peer 127.0.0.1:6881
    Download(transfer::DownloadArgs),
    /// Serve a torrent's data from a folder (checked first) to every peer that asks.
    ///
    /// Example: ringtorrent seed file.torrent ./data --port 6881
    Seed(transfer::SeedArgs),
    /// Show what a .torrent file or magnet link describes: name, info hash, size, pieces, files,
    /// trackers.
    ///
    /// Example: ringtorrent info ubuntu.iso.torrent
    ///          ringtorrent info 'magnet:?xt=urn:btih:...' --json
    Info(info::Args),
    /// Make a .torrent from a file or folder, hashing pieces on all cores.
    ///
    /// The piece hashes match mktorrent's for the same input and piece length.
    ///
    /// Example: ringtorrent create ./album -a udp://tracker.example:6969/announce --piece-length 1M
    Create(create::Args),
    /// Connect to a peer, exchange handshakes, and print what it says about itself: peer id,
    /// client, reserved bits, extension handshake (BEP 10) and which pieces it has.
    ///
    /// Example: ringtorrent handshake file.torrent 127.0.0.1:6881
    Handshake(handshake::Args),
    /// Run a seeded, deterministic swarm of the real protocol core in memory: latency,
    /// bandwidth, loss, churn, corrupt and silent peers. Same seed, same output.
    ///
    /// Example: ringtorrent simulate --peers 200 --size 64M --corrupt 5 --seed 7
    Simulate(simulate::Args),
    /// Announce a torrent to its trackers once (BEP 12 order: tier by tier, the first that
    /// answers wins) and print the reply: interval, seeders, leechers, peers.
    ///
    /// Example: ringtorrent announce file.torrent --event started --port 6881 --json
    Announce(tracker::AnnounceArgs),
    /// Ask a torrent's trackers for its seeders, completed downloads and leechers.
    ///
    /// Example: ringtorrent scrape file.torrent
    Scrape(tracker::ScrapeArgs),
    /// Hash every piece of a download on all cores and say which pieces and files are
    /// complete, incomplete or missing. Changes nothing on disk.
    ///
    /// Exit status: 0 when every piece is complete, 3 when some are not, 1 on error.
    ///
    /// Example: ringtorrent check ubuntu.iso.torrent ~/Downloads
    ///          ringtorrent check album.torrent /srv/seed --json --threads 4
    Check(check::Args),
    /// Run a seedbox: many torrents from a state folder, a watch folder and a control API
    /// (HTTP + JSON, with Prometheus metrics at /metrics), until SIGINT or SIGTERM.
    ///
    /// Example: ringtorrent serve --data-dir /srv/data --watch-dir /srv/watch
    ///          curl http://127.0.0.1:7070/torrents
    Serve(serve::ServeArgs),
    /// The config file of `serve`: `config print` writes the defaults, documented.
    ///
    /// Example: ringtorrent config print > ~/.config/ringtorrent/serve.toml
    Config(serve::ConfigArgs),
    /// Load a UDP or HTTP tracker with simulated peers and measure it: replies per second by
    /// action and outcome, latency histograms (coordinated omission corrected), time-outs,
    /// and every reply checked against the generator's model of the swarm.
    ///
    /// Example: ringtorrent tracker-load udp://127.0.0.1:6969 --rate 20000 --duration 10
    ///          ringtorrent tracker-load http://127.0.0.1:6969/announce --in-flight 32
    ///          ringtorrent tracker-load udp://127.0.0.1:6969 --hammer --find-knee --p99-max-ms 5
    TrackerLoad(tracker_load::Args),
    /// Load a BitTorrent client with synthetic peers that seed to it or leech from it, and
    /// measure it: MB/s, per-connection fairness, request-to-block latency, handshakes,
    /// refusals, and corrupt blocks it must reject.
    ///
    /// Example: ringtorrent swarm-load gen --size 256 --piece-length 1M -o /dev/shm/load
    ///          ringtorrent swarm-load run --target 127.0.0.1:6881 \
    ///              --torrent /dev/shm/load/swarm-load.torrent --mode download --peers 1000
    SwarmLoad(swarm_load::Args),
    /// Ask the DHT: `dht get-peers HASH` runs a node for one lookup and prints each hop and
    /// the peers found.
    ///
    /// Example: ringtorrent dht get-peers 0123456789abcdef0123456789abcdef01234567
    ///          ringtorrent dht get-peers HASH --dht-bootstrap 127.0.0.1:6881 --timeout 10
    Dht(dht::Args),
    /// Work with load reports (`tracker-load --output`): `report merge` adds shards exactly.
    ///
    /// Example: ringtorrent report merge shard0.json shard1.json -o all.json
    Report(tracker_load::ReportArgs),
}

/// Runs the command line and turns errors into one clear line on stderr and exit status 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(args) => return check::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Download(args) => transfer::download(args),
        Command::Seed(args) => transfer::seed(args),
        Command::Info(args) => info::run(args),
        Command::Create(args) => create::run(args),
        Command::Handshake(args) => handshake::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Announce(args) => tracker::announce(args),
        Command::Scrape(args) => tracker::scrape(args),
        Command::Serve(args) => serve::run(args),
        Command::Config(args) => serve::config(args),
        Command::TrackerLoad(args) => tracker_load::run(args),
        Command::SwarmLoad(args) => swarm_load::run(args),
        Command::Report(args) => tracker_load::report(args),
        Command::Dht(args) => dht::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
