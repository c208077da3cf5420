//! `ringtorrent serve`: one long-lived process seeding (and leeching) many torrents, driven by
//! a config file, a watch folder and a control API; and `ringtorrent config print`.
//!
//! The engine is the library's [`Client`], started on the state folder with
//! `remember_torrents`, so it announces, saves resume data, fetches magnet links' metadata
//! and shares the rate limits by itself. The control thread (this module's [`run`]) answers
//! API requests as they come, checks the watch folder every `watch_interval` (`watch.rs`), and on a signal
//! shuts the client down (resume data saved, `stopped` announced; a second signal exits at
//! once).

mod api;
mod config;
mod notify;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

pub use config::ServeConfig;
use ringtorrent::client::{Client, ClientConfig, ClientError, Limits};
use ringtorrent::core::Encryption;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The config file (TOML; `ringtorrent config print` writes the defaults). Default:
    /// $XDG_CONFIG_HOME/ringtorrent/serve.toml or ~/.config/ringtorrent/serve.toml, if present.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Peer listen address (overrides `listen`).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<String>,
    /// Protocol encryption: prefer, require or plaintext (overrides `encryption`).
    #[arg(long, value_name = "POLICY")]
    encryption: Option<Encryption>,
    /// Peer transports: both, tcp or utp (overrides `transport`).
    #[arg(long, value_name = "TRANSPORT")]
    transport: Option<ringtorrent::client::Transport>,
    /// How new files get their space: sparse or full (overrides `allocation`).
    #[arg(long, value_name = "MODE")]
    allocation: Option<ringtorrent::client::Allocation>,
    /// Control API address (overrides `api`). Without credentials it must be a loopback
    /// address.
    #[arg(long, value_name = "ADDR:PORT")]
    api: Option<String>,
    /// A host name the API answers to besides localhost and IP addresses (added to
    /// `api_hosts`; repeat for more).
    #[arg(long = "api-host", value_name = "NAME")]
    api_hosts: Vec<String>,
    /// The user name that logs in to the API (overrides `api_username`).
    #[arg(long, value_name = "NAME")]
    api_username: Option<String>,
    /// Its password (overrides `api_password_hash`): hashed at start and kept only as the
    /// hash. Other users can read a command line: prefer the config's hash.
    #[arg(long, value_name = "PASS")]
    api_password: Option<String>,
    /// Data folder (overrides `data_dir`).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<String>,
    /// State folder (overrides `state_dir`).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<String>,
    /// Watch folder (overrides `watch_dir`).
    #[arg(long, value_name = "DIR")]
    watch_dir: Option<String>,
    /// Event loops (overrides `threads`; 0: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// I/O backend: auto, uring or epoll (overrides `io`).
    #[arg(long)]
    io: Option<String>,
    /// Log level (overrides `log`; RINGTORRENT_LOG overrides both).
    #[arg(long)]
    log: Option<String>,
    /// Session-wide connection limit (overrides `limits.max_connections`).
    #[arg(long)]
    max_connections: Option<usize>,
    /// Connections per torrent (overrides `limits.max_peers_per_torrent`).
    #[arg(long)]
    max_peers: Option<usize>,
    /// Connections one IP address may hold to one torrent (overrides
    /// `limits.max_peers_per_ip`).
    #[arg(long, value_name = "N")]
    max_peers_per_ip: Option<usize>,
    /// Upload slots per torrent (overrides `limits.upload_slots`).
    #[arg(long)]
    upload_slots: Option<usize>,
    /// Seeding choker: round-robin, fastest, anti-leech, unlimited (overrides
    /// `limits.seed_choke`).
    #[arg(long)]
    seed_choke: Option<String>,
    /// Session upload limit, e.g. 8M (overrides `limits.upload_rate`).
    #[arg(long, value_name = "RATE")]
    upload_limit: Option<String>,
    /// Session download limit, e.g. 8M (overrides `limits.download_rate`).
    #[arg(long, value_name = "RATE")]
    download_limit: Option<String>,
    /// No local service discovery (overrides `lsd`).
    #[arg(long)]
    no_lsd: bool,
    /// The IPv4 address of the interface local service discovery uses (overrides
    /// `lsd_interface`).
    #[arg(long, value_name = "IP")]
    lsd_interface: Option<String>,
    /// The DHT (override `[dht]`).
    #[command(flatten)]
    dht: super::dht::DhtArgs,
}

#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ConfigCommand {
    /// Print the default config file, every key documented.
    ///
    /// Example: ringtorrent config print > ~/.config/ringtorrent/serve.toml
    Print,
    /// Check a config file and print the settings it gives.
    Check {
        /// The file.
        file: PathBuf,
    },
    /// Read a password on standard input (its first line) and print the config line that
    /// holds its argon2id hash (`api_password_hash = "..."`).
    ///
    /// Example: ringtorrent config hash-password >> ~/.config/ringtorrent/serve.toml
    HashPassword,
    /// Make a new API key for scripts: print the key (sent as `Authorization: Bearer KEY`,
    /// stored nowhere) and the `api_keys` entry, its hash, for the config.
    ApiKey,
}

pub fn config(args: ConfigArgs) -> Result<()> {
    match args.command {
        ConfigCommand::Print => {
            out!("{}", config::TEMPLATE);
            Ok(())
        }
        ConfigCommand::Check { file } => {
            let c = ServeConfig::load(&file)?;
            outln!("{c:#?}");
            Ok(())
        }
        ConfigCommand::HashPassword => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the password on standard input")?;
            let password = line.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                return Err(anyhow!(
                    "no password on standard input (e.g. `read -rs P; echo \"$P\" | ringtorrent \
                     config hash-password`)"
                ));
            }
            let hash =
                ringtorrent::api::auth::hash_password(password).map_err(anyhow::Error::msg)?;
            outln!("api_password_hash = \"{hash}\"");
            Ok(())
        }
        ConfigCommand::ApiKey => {
            let key = ringtorrent::api::auth::new_api_key().context("cannot make a key")?;
            outln!("key: {}", key.key);
            outln!("# the config's api_keys list takes its hash:");
            outln!("api_keys = [\"{}\"]", key.hash);
            Ok(())
        }
    }
}

fn default_config_path() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|d| d.join("ringtorrent/serve.toml"))
}

/// The file's settings with the flags applied, checked.
fn settings(args: &ServeArgs) -> Result<ServeConfig> {
    // Checked as a whole once the flags are applied (they may complete the file).
    let mut c = match &args.config {
        Some(path) => ServeConfig::load_unchecked(path)?,
        None => match default_config_path().filter(|p| p.exists()) {
            Some(path) => ServeConfig::load_unchecked(&path)?,
            None => ServeConfig::default(),
        },
    };
    let set = |slot: &mut String, v: &Option<String>| {
        if let Some(v) = v {
            *slot = v.clone();
        }
    };
    set(&mut c.listen, &args.listen);
    set(&mut c.api, &args.api);
    set(&mut c.data_dir, &args.data_dir);
    set(&mut c.state_dir, &args.state_dir);
    set(&mut c.watch_dir, &args.watch_dir);
    set(&mut c.io, &args.io);
    set(&mut c.log, &args.log);
    set(&mut c.limits.seed_choke, &args.seed_choke);
    set(&mut c.limits.upload_rate, &args.upload_limit);
    set(&mut c.limits.download_rate, &args.download_limit);
    if let Some(v) = args.encryption {
        c.encryption = v.name().into();
    }
    if let Some(v) = args.transport {
        c.transport = v.to_string();
    }
    if let Some(v) = args.allocation {
        c.allocation = v.as_str().into();
    }
    if let Some(v) = args.threads {
        c.threads = v;
    }
    if let Some(v) = args.max_connections {
        c.limits.max_connections = v;
    }
    if let Some(v) = args.max_peers {
        c.limits.max_peers_per_torrent = v;
    }
    if let Some(v) = args.max_peers_per_ip {
        c.limits.max_peers_per_ip = v;
    }
    if let Some(v) = args.upload_slots {
        c.limits.upload_slots = v;
    }
    if args.no_lsd || !super::transfer::lsd_allowed_by_env()? {
        c.lsd = false;
    }
    set(&mut c.lsd_interface, &args.lsd_interface);
    if args.dht.no_dht {
        c.dht.enabled = false;
    }
    if !args.dht.bootstrap.is_empty() {
        c.dht.bootstrap = Some(args.dht.bootstrap.clone());
    }
    if args.dht.port.is_some() {
        c.dht.port = args.dht.port;
    }
    c.api_hosts.extend(args.api_hosts.iter().cloned());
    set(&mut c.api_username, &args.api_username);
    if let Some(password) = &args.api_password {
        if password.is_empty() {
            return Err(anyhow!("--api-password is empty"));
        }
        // Only the hash is kept, in memory.
        c.api_password_hash =
            ringtorrent::api::auth::hash_password(password).map_err(anyhow::Error::msg)?;
    }
    c.check().context(match &args.config {
        Some(path) => format!("invalid setting (config file {} and flags)", path.display()),
        None => "invalid setting".to_string(),
    })?;
    Ok(c)
}

/// The log level in force: `RINGTORRENT_LOG` if set, else the config's.
fn log_level(level: &str) -> Result<tracing::level_filters::LevelFilter> {
    let level = std::env::var("RINGTORRENT_LOG").unwrap_or_else(|_| level.to_string());
    level
        .parse()
        .map_err(|_| anyhow!("log level `{level}`: expected error, warn, info, debug or trace"))
}

/// Changes the log level of a running `serve` (a reload).
type LogLevel = tracing_subscriber::reload::Handle<
    tracing::level_filters::LevelFilter,
    tracing_subscriber::Registry,
>;

fn init_logging(level: &str) -> Result<LogLevel> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (filter, handle) = tracing_subscriber::reload::Layer::new(log_level(level)?);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_target(false),
        )
        .try_init();
    Ok(handle)
}

pub fn run(args: ServeArgs) -> Result<()> {
    let mut c = settings(&args)?;
    let log = init_logging(&c.log)?;
    // Read (and taken out of the environment) before any thread starts.
    let notifier = notify::Notifier::from_env();
    super::signals::catch_with_reload();
    let listen: SocketAddr = c.listen_addr()?;
    let (up, down) = c.rates()?;
    let data_dir = ServeConfig::path(&c.data_dir);
    let state_dir = ServeConfig::path(&c.state_dir);
    let watch_dir = (!c.watch_dir.is_empty()).then(|| ServeConfig::path(&c.watch_dir));
    let started = Instant::now();
    // Binding it before the engine starts: a port in use is reported before anything runs.
    let (calls, api_server, live) = api::start(&c)?;
    let api_addr = api_server.local_addr();
    let client = super::transfer::start_client(ClientConfig {
        listen: Some(listen),
        loops: c.threads,
        io: c.io_backend()?.into(),
        data_dir: data_dir.clone(),
        state_dir: Some(state_dir),
        remember_torrents: true,
        limits: Limits {
            upload_rate: up,
            download_rate: down,
            max_connections: c.limits.max_connections,
            max_peers_per_torrent: c.limits.max_peers_per_torrent,
            max_peers_per_ip: c.limits.max_peers_per_ip,
            upload_slots: c.limits.upload_slots,
            seed_choke: c.seed_choke()?,
            upload_buffer: c.upload_buffer()?,
        },
        encryption: c.encryption()?,
        transport: c.transport()?,
        allocation: c.allocation()?,
        lsd: c.lsd,
        lsd_interface: c.lsd_interface()?,
        share_limits: c.share_limits()?,
        queue: c.queue()?,
        dht: ringtorrent::client::DhtSettings {
            enabled: c.dht.enabled,
            bootstrap: super::dht::bootstrap_list(&[], c.dht.bootstrap.as_deref()),
            port: c.dht.port,
            ..Default::default()
        },
        ..ClientConfig::default()
    })?;
    // The first lines on stdout say where things are, for scripts; a reader that went away
    // must not stop the seedbox.
    {
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = writeln!(
            out,
            "peers: {}",
            client
                .listen_addr()
                .map_or("nothing".into(), |a| a.to_string())
        );
        let _ = writeln!(out, "api: http://{api_addr}");
        if let Some(dht) = client.dht_addr() {
            let _ = writeln!(out, "dht: {dht}");
        }
        let _ = out.flush();
    }
    tracing::info!(
        "serving {} torrents from {} with {} {} loop(s), encryption {}, started in {:.2} s",
        client.sources().len(),
        data_dir.display(),
        client.loop_count(),
        client.backend(),
        c.encryption()?,
        started.elapsed().as_secs_f64()
    );
    // The API answers, the peer listener (and DHT socket) are bound, the remembered torrents
    // are back in the session: ready for systemd's `Type=notify`.
    notifier.ready(&status_line(&client, api_addr));
    let mut watcher = watch_dir.map(watch::Watcher::new);
    let mut interval = Duration::from_secs(c.watch_interval);
    let mut next_scan = Instant::now();
    loop {
        if super::signals::interrupted() {
            break;
        }
        if super::signals::take_reload() {
            notifier.reloading();
            match reload(&args, &c, &client, &live, &log) {
                Ok(running) => {
                    if running.watch_dir != c.watch_dir {
                        watcher = (!running.watch_dir.is_empty())
                            .then(|| watch::Watcher::new(ServeConfig::path(&running.watch_dir)));
                        next_scan = Instant::now();
                    }
                    c = running;
                    interval = Duration::from_secs(c.watch_interval);
                }
                Err(e) => {
                    tracing::error!("reload refused, the running config is kept: {e:#}");
                }
            }
            notifier.ready(&status_line(&client, api_addr));
        }
        if let Some(w) = &mut watcher {
            if Instant::now() >= next_scan {
                next_scan = Instant::now() + interval;
                w.tick(&client);
            }
        }
        match calls.recv_timeout(Duration::from_millis(100)) {
            Ok((req, reply)) => {
                let answer = api::handle(&client, req, watcher.as_ref().map(|w| w.stats()));
                let _ = reply.send(answer);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err(anyhow!("the control API stopped"));
            }
        }
    }
    notifier.stopping();
    drop(api_server);
    tracing::info!("stopping: saving resume data");
    let stopping = Instant::now();
    client.shutdown();
    tracing::info!("stopped in {:.2} s", stopping.elapsed().as_secs_f64());
    Ok(())
}

/// What `STATUS=` says.
fn status_line(client: &Client, api: SocketAddr) -> String {
    format!(
        "serving {} torrents, API on http://{api}",
        client.sources().len()
    )
}

/// SIGHUP: reads the config file again (the flags still override it) and applies what a
/// running `serve` can change: the session's rate limits, `[share_limits]` and `[queue]`
/// (applied and kept in the state folder, as a PUT through the API is), the watch folder and
/// its interval, the log level, and the API's credentials, host and CORS lists and
/// `api_metrics_public`. Keys that only a restart can change are logged by name and keep
/// their running value. A file that does not parse or check changes nothing. Returns the
/// config now running.
fn reload(
    args: &ServeArgs,
    old: &ServeConfig,
    client: &Client,
    live: &api::Live,
    log: &LogLevel,
) -> Result<ServeConfig> {
    let path = args
        .config
        .clone()
        .or_else(|| default_config_path().filter(|p| p.exists()));
    let shown = path
        .as_ref()
        .map_or("no config file: the defaults".into(), |p| {
            p.display().to_string()
        });
    tracing::info!("reloading {shown}");
    let mut new = settings(args)?;
    if args.api_password.is_some() {
        // --api-password is hashed afresh (a new salt) each time it is read: the same.
        new.api_password_hash = old.api_password_hash.clone();
    }
    // Everything checked before anything changes.
    let (up, down) = new.rates()?;
    let share = new.share_limits()?;
    let queue = new.queue()?;
    let level = log_level(&new.log)?;
    let restart = keep_running(old, &mut new);
    let mut changed = live.apply(old, &new)?;
    if (&old.limits.upload_rate, &old.limits.download_rate)
        != (&new.limits.upload_rate, &new.limits.download_rate)
    {
        client
            .set_limits(up, down)
            .context("the rate limits were not applied")?;
        live.set_rate_limits(up, down);
        changed.push("limits.upload_rate/download_rate");
    }
    if old.share_limits != new.share_limits {
        client
            .set_share_limits(share)
            .context("[share_limits] was not applied")?;
        changed.push("share_limits");
    }
    if old.queue != new.queue {
        client
            .set_queue_config(queue)
            .context("[queue] was not applied")?;
        changed.push("queue");
    }
    if old.watch_dir != new.watch_dir {
        changed.push("watch_dir");
    }
    if old.watch_interval != new.watch_interval {
        changed.push("watch_interval");
    }
    if old.log != new.log {
        log.modify(|f| *f = level)
            .map_err(|e| anyhow!("the log level was not changed: {e}"))?;
        changed.push("log");
    }
    if changed.is_empty() {
        tracing::info!("reloaded: nothing that can change while running changed");
    } else {
        tracing::info!("reloaded: applied {}", changed.join(", "));
    }
    if !restart.is_empty() {
        tracing::warn!(
            "reloaded: {} changed but take effect only at a restart (the running values are \
             kept until then)",
            restart.join(", ")
        );
    }
    Ok(new)
}

/// The keys only a restart applies: those that differ between `old` and `new` are named and
/// put back to their running value in `new`.
fn keep_running(old: &ServeConfig, new: &mut ServeConfig) -> Vec<&'static str> {
    let mut differ = Vec::new();
    macro_rules! keep {
        ($($field:ident).+, $name:expr) => {
            if old.$($field).+ != new.$($field).+ {
                differ.push($name);
                new.$($field).+ = old.$($field).+.clone();
            }
        };
    }
    // Every key is named below, as live or restart-only: a key added to the config without
    // a decision here does not compile.
    let ServeConfig {
        listen: _,
        encryption: _,
        transport: _,
        lsd: _,
        lsd_interface: _,
        api: _,
        api_hosts: _live_hosts,
        api_cors_origins: _live_origins,
        api_username: _live_username,
        api_password_hash: _live_password,
        api_keys: _live_keys,
        api_session_timeout: _live_session_timeout,
        api_metrics_public: _live_metrics_public,
        api_max_connections: _,
        data_dir: _,
        allocation: _,
        state_dir: _,
        watch_dir: _live_watch_dir,
        watch_interval: _live_watch_interval,
        threads: _,
        io: _,
        log: _live_log,
        limits:
            config::Limits {
                max_connections: _,
                max_peers_per_torrent: _,
                max_peers_per_ip: _,
                upload_slots: _,
                seed_choke: _,
                upload_rate: _live_upload_rate,
                download_rate: _live_download_rate,
                upload_buffer: _,
            },
        share_limits: _live_share_limits,
        queue: _live_queue,
        dht: _,
    } = old;
    keep!(listen, "listen");
    keep!(encryption, "encryption");
    keep!(transport, "transport");
    keep!(lsd, "lsd");
    keep!(lsd_interface, "lsd_interface");
    keep!(api, "api");
    keep!(api_max_connections, "api_max_connections");
    keep!(data_dir, "data_dir");
    keep!(allocation, "allocation");
    keep!(state_dir, "state_dir");
    keep!(threads, "threads");
    keep!(io, "io");
    keep!(limits.max_connections, "limits.max_connections");
    keep!(limits.max_peers_per_torrent, "limits.max_peers_per_torrent");
    keep!(limits.max_peers_per_ip, "limits.max_peers_per_ip");
    keep!(limits.upload_slots, "limits.upload_slots");
    keep!(limits.seed_choke, "limits.seed_choke");
    keep!(limits.upload_buffer, "limits.upload_buffer");
    keep!(dht, "dht");
    differ
}

/// Removes a torrent the watch folder added (its data kept).
fn remove(client: &Client, hash: ringtorrent::core::InfoHash) -> Result<(), ClientError> {
    client
        .get(hash)
        .ok_or(ClientError::UnknownTorrent(hash))?
        .remove(false)
}
