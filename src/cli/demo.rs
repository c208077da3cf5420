//! `ringtorrent demo`: the whole engine on one machine. It makes a payload, makes a torrent of
//! it, seeds it from one session and leeches it into another over loopback, both through the
//! real event loop, storage and hashing pool, then checks every byte and prints throughput.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::format;
use super::transfer::{backend, run_download, run_seed, start, Io};
use ringtorrent::core::Rng;
use ringtorrent::metainfo::create::{create, CreateOptions};
use ringtorrent::storage::{DiskPool, DiskPoolConfig, OpenMode};

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
    let backend = backend(args.io)?;
    if args.size == 0 {
        bail!("--size must be above zero");
    }
    let work = work_dir(&args)?;
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
    let info = Arc::new(made.torrent.info);
    eprintln!(
        "torrent {} ({} pieces of {})",
        info.info_hash(),
        info.lengths().piece_count(),
        format::bytes(args.piece_length)
    );

    // 3. A seeder on 127.0.0.1 in its own thread, a leecher here, sharing one disk pool.
    let pool =
        Arc::new(DiskPool::new(DiskPoolConfig::default()).map_err(|e| anyhow::anyhow!("{e}"))?);
    let mut seeder = start(
        backend,
        1,
        info.clone(),
        &seed_dir,
        OpenMode::ReadOnly,
        Some("127.0.0.1:0".parse()?),
        pool.clone(),
        true,
        true,
        ringtorrent::core::config::Config::default(),
        None,
    )?;
    let seed_addr = seeder
        .driver
        .local_addr()
        .context("the seeder has no address")?;
    let stop = Arc::new(AtomicBool::new(false));
    let seeder_thread = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("rt-demo-seed".into())
            .spawn(move || -> Result<()> {
                while !stop.load(Ordering::Relaxed) {
                    run_seed(
                        &mut seeder,
                        Some(Instant::now() + std::time::Duration::from_millis(50)),
                    )?;
                }
                Ok(())
            })?
    };
    let mut leecher = start(
        backend,
        1,
        info.clone(),
        &leech_dir,
        OpenMode::Create,
        Some("127.0.0.1:0".parse()?),
        pool,
        false,
        true,
        ringtorrent::core::config::Config::default(),
        None,
    )?;
    let now = leecher.driver.now();
    leecher
        .driver
        .session()
        .add_peers(leecher.torrent, &[seed_addr], now);
    eprintln!("seeding from {seed_addr}, leeching over loopback with {backend}");
    let deadline = Instant::now() + std::time::Duration::from_secs(600);
    let took = run_download(&mut leecher, Some(deadline), args.quiet);
    stop.store(true, Ordering::Relaxed);
    let seeded = seeder_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the seeder thread panicked"))?;
    let took = took?;
    seeded?;
    let id = leecher.torrent;
    let latency = leecher
        .driver
        .session()
        .stats(id)
        .and_then(|st| st.request_latency_us.as_deref().cloned());
    drop(leecher);

    // 4. Every byte, compared.
    let got = leech_dir.join("payload.bin");
    if !same_bytes(&payload, &got)? {
        bail!("the downloaded file differs from the payload");
    }
    let mb_s = info.total_len() as f64 / took.as_secs_f64().max(1e-6) / 1e6;
    println!(
        "ok: {} downloaded and verified byte for byte in {:.2} s: {mb_s:.0} MB/s over loopback ({backend})",
        format::bytes(info.total_len()),
        took.as_secs_f64()
    );
    if let Some(h) = latency.filter(|h| !h.is_empty()) {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
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
