//! `ringtorrent demo`: the whole engine on one machine. It makes a payload, makes a torrent of
//! it, seeds it from one session and leeches it into another over loopback, both through the
//! real event loop, storage and hashing pool, then checks every byte and prints throughput.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::format;
use super::signals::{self, Interrupted};
use super::transfer::{start_client, wait_complete, Io};
use ringtorrent::client::{AddTorrent, ClientConfig, Transport};
use ringtorrent::core::{Encryption, Rng};
use ringtorrent::metainfo::create::{create, CreateOptions};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Payload size (e.g. 256M, 1G).
    #[arg(long, default_value = "256M", value_parser = format::parse_size)]
    size: u64,
    /// Piece length.
    #[arg(long, default_value = "1M", value_parser = format::parse_size)]
    piece_length: u64,
    /// Where to put the payload and the download (default: a fresh folder in /dev/shm, or
    /// the system temporary folder), removed afterwards unless --keep.
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Keep the payload and the download.
    #[arg(long)]
    keep: bool,
    /// I/O backend.
    #[arg(long, value_enum, default_value_t = Io::Auto)]
    io: Io,
    /// Print no progress bar.
    #[arg(long)]
    quiet: bool,
    /// Protocol encryption of both sessions: prefer, require (the transfer is RC4-encrypted)
    /// or plaintext.
    #[arg(long, value_name = "POLICY", default_value_t = Encryption::Prefer)]
    encryption: Encryption,
    /// Transport between the two sessions: both (uTP first, as libtorrent), tcp or utp.
    #[arg(long, value_name = "TRANSPORT", default_value_t = Transport::Both)]
    transport: Transport,
}

struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn work_dir(args: &Args) -> Result<WorkDir> {
    // Check the backend before making anything, so a refused `--io uring` leaves nothing.
    ringtorrent::driver::resolve(args.io.into())
        .map_err(|e| anyhow::anyhow!("--io uring: {e}; use --io epoll or --io auto"))?;
    let base = match &args.work_dir {
        Some(dir) => dir.clone(),
        None if Path::new("/dev/shm").is_dir() => PathBuf::from("/dev/shm"),
        None => std::env::temp_dir(),
    };
    let path = base.join(format!("ringtorrent-demo-{}", std::process::id()));
    std::fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(WorkDir {
        path,
        keep: args.keep,
    })
}

pub fn run(args: Args) -> Result<()> {
    signals::catch();
    if args.size == 0 {
        bail!("--size must be above zero");
    }
    // The work folder goes when this returns, however it returns: a signal stops the demo
    // cleanly (see `signals`), so an interrupted demo leaves nothing in /dev/shm.
    let work = work_dir(&args)?;
    let result = demo(&args, &work);
    match result {
        Err(e) if e.is::<Interrupted>() => {
            drop(work);
            bail!("interrupted; the payload and the download were removed")
        }
        other => other,
    }
}

fn demo(args: &Args, work: &WorkDir) -> Result<()> {
    let seed_dir = work.path.join("seed");
    let leech_dir = work.path.join("leech");
    std::fs::create_dir_all(&seed_dir)?;
    std::fs::create_dir_all(&leech_dir)?;

    // 1. A payload of pseudo-random bytes (incompressible, so nothing flatters the numbers).
    let payload = seed_dir.join("payload.bin");
    eprintln!(
        "making a {} payload in {}",
        format::bytes(args.size),
        work.path.display()
    );
    {
        use std::io::Write;
        let mut file = std::io::BufWriter::new(std::fs::File::create(&payload)?);
        let mut rng = Rng::new(0xDE_30);
        let mut chunk = vec![0u8; 1 << 20];
        let mut left = args.size;
        while left > 0 {
            if signals::interrupted() {
                return Err(Interrupted.into());
            }
            let n = left.min(chunk.len() as u64) as usize;
            rng.fill(&mut chunk[..n]);
            file.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        file.flush()?;
    }

    // 2. Its torrent, hashed on all cores.
    let made = create(
        &CreateOptions {
            path: payload.clone(),
            piece_len: Some(args.piece_length),
            ..Default::default()
        },
        &AtomicU64::new(0),
    )
    .context("cannot make the torrent")?;
    if signals::interrupted() {
        return Err(Interrupted.into());
    }
    let info = made.torrent.info.clone();
    eprintln!(
        "torrent {} ({} pieces of {})",
        info.info_hash(),
        info.lengths().piece_count(),
        format::bytes(args.piece_length)
    );

    // 3. Two clients on 127.0.0.1, each with one event loop: a seeder serving the payload it
    // knows is complete, and a leecher told where the seeder is.
    let config = |dir: &Path| ClientConfig {
        listen: Some("127.0.0.1:0".parse().expect("valid address")),
        loops: 1,
        io: args.io.into(),
        data_dir: dir.to_path_buf(),
        trackers: false,
        encryption: args.encryption,
        transport: args.transport,
        ..ClientConfig::default()
    };
    let seeder = start_client(config(&seed_dir))?;
    let mut seed = AddTorrent::bytes(made.bytes.clone()).seed_only();
    seed.trust_data = true;
    seeder.add(seed)?;
    let seed_addr = seeder.listen_addr().context("the seeder has no address")?;
    let leecher = ringtorrent::client::Client::start(config(&leech_dir))?;
    let backend = leecher.backend();
    let events = leecher.subscribe();
    let torrent = leecher.add(AddTorrent::bytes(made.bytes).peers([seed_addr]))?;
    eprintln!("seeding from {seed_addr}, leeching over loopback with {backend}");
    let deadline = Instant::now() + Duration::from_secs(600);
    let took = wait_complete(&torrent, &events, Some(deadline), args.quiet)?;
    let latency = torrent.request_latency_us()?;
    leecher.shutdown();
    seeder.shutdown();

    // 4. Every byte, compared.
    let got = leech_dir.join("payload.bin");
    if !same_bytes(&payload, &got)? {
        bail!("the downloaded file differs from the payload");
    }
    let mb_s = info.total_len() as f64 / took.as_secs_f64().max(1e-6) / 1e6;
    outln!(
        "ok: {} downloaded and verified byte for byte in {:.2} s: {mb_s:.0} MB/s over loopback ({backend})",
        format::bytes(info.total_len()),
        took.as_secs_f64()
    );
    if let Some(h) = latency.filter(|h| !h.is_empty()) {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        outln!(
            "request-to-block latency over {} blocks: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, \
             p99.9 {:.2} ms, max {:.2} ms",
            h.len(),
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(0.999),
            h.max() as f64 / 1000.0
        );
    }
    Ok(())
}

fn same_bytes(a: &Path, b: &Path) -> Result<bool> {
    use std::io::Read;
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}
