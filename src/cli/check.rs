//! `ringtorrent check`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use super::format;
use ringtorrent::client::check_data;
use ringtorrent::metainfo::Torrent;
use ringtorrent::storage::{CheckReport, FileVerdict, PieceVerdict, Storage};

/// Exit status when the check ran and some piece is not complete (0: complete; 1: error;
/// 2: bad arguments, from clap).
pub const EXIT_INCOMPLETE: u8 = 3;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The .torrent file.
    torrent: PathBuf,
    /// The download folder: the one holding the torrent's file (single-file torrent) or its
    /// top folder (multi-file torrent). Nothing in it is changed.
    dir: PathBuf,
    /// Print one JSON object instead of text, for scripts.
    #[arg(long)]
    json: bool,
    /// Hashing threads. Default: one per core.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
}

/// Runs the check; the exit status says whether the data is complete.
pub fn run(args: Args) -> ExitCode {
    match check(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_INCOMPLETE),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(args: &Args) -> Result<bool> {
    let bytes = std::fs::read(&args.torrent)
        .with_context(|| format!("cannot read {}", args.torrent.display()))?;
    let torrent = Torrent::from_bytes(&bytes)
        .with_context(|| format!("{} is not a valid torrent", args.torrent.display()))?;
    let info = Arc::new(torrent.info);
    let total = info.total_len();
    let threads = args.threads.map_or(0, usize::from);
    let progress = AtomicU64::new(0);
    // Drawn only when stderr is a terminal.
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "checking [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let report = std::thread::scope(|scope| {
        // The worker says when it is done, so the check ends when the hashing does, not at
        // the next tick of the progress bar (which cost 50 ms on average, a sixth of a 1 GiB
        // check on two cores: perf/2026-12-02-recv-hash-on-arrival.md).
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let work = scope.spawn(|| {
            let report = check_data(info, &args.dir, threads, &progress);
            drop(done_tx);
            report
        });
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            done_rx.recv_timeout(Duration::from_millis(100))
        {
            bar.set_position(progress.load(Ordering::Relaxed));
        }
        bar.finish_and_clear();
        work.join().expect("check thread panicked")
    });
    let (storage, report) =
        report.with_context(|| format!("cannot check in {}", args.dir.display()))?;

    if args.json {
        outln!("{}", report_json(&storage, &report));
    } else {
        print_report(&storage, &report);
    }
    Ok(report.is_complete())
}

fn verdict_name(v: FileVerdict) -> &'static str {
    match v {
        FileVerdict::Complete => "complete",
        FileVerdict::Incomplete => "incomplete",
        FileVerdict::Missing => "missing",
        FileVerdict::WrongSize { .. } => "wrong_size",
    }
}

fn report_json(storage: &Storage, report: &CheckReport) -> serde_json::Value {
    let info = storage.info();
    let files: Vec<_> = report
        .files
        .iter()
        .map(|f| {
            let mut v = json!({
                "path": f.path.to_string_lossy(),
                "length": f.length,
                "status": verdict_name(f.verdict),
                "pieces_complete": f.pieces_complete,
                "pieces_total": f.pieces_total,
            });
            if let FileVerdict::WrongSize { actual } = f.verdict {
                v["size_on_disk"] = json!(actual);
            }
            v
        })
        .collect();
    let errors: Vec<_> = report
        .errors
        .iter()
        .map(|(piece, msg)| json!({"piece": piece, "error": msg}))
        .collect();
    json!({
        "name": info.name(),
        "info_hash": info.info_hash().to_hex(),
        "dir": storage.download_dir().to_string_lossy(),
        "complete": report.is_complete(),
        "piece_count": info.lengths().piece_count(),
        "pieces_complete": report.pieces_with(PieceVerdict::Complete).len(),
        "failed_pieces": report.pieces_with(PieceVerdict::Failed),
        "missing_pieces": report.pieces_with(PieceVerdict::Missing),
        "unreadable_pieces": report.pieces_with(PieceVerdict::Unreadable),
        "errors": errors,
        "files": files,
    })
}

/// `1, 4-7, 9`: piece lists stay short when many pieces are in runs.
fn ranges(indices: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < indices.len() {
        let start = indices[i];
        let mut end = start;
        while i + 1 < indices.len() && indices[i + 1] == end + 1 {
            i += 1;
            end += 1;
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(", ")
}

fn print_report(storage: &Storage, report: &CheckReport) {
    let info = storage.info();
    let l = info.lengths();
    let complete = report.pieces_with(PieceVerdict::Complete);
    let done_bytes: u64 = complete
        .iter()
        .map(|&i| u64::from(l.len_of(l.piece(i).expect("checked index"))))
        .sum();
    outln!(
        "{}: {} of {} pieces complete ({} of {}) in {}",
        info.name(),
        complete.len(),
        l.piece_count(),
        format::bytes(done_bytes),
        format::bytes(info.total_len()),
        storage.download_dir().display()
    );
    for (verdict, what) in [
        (PieceVerdict::Failed, "failed pieces (hash mismatch)"),
        (
            PieceVerdict::Missing,
            "missing pieces (file absent or short)",
        ),
        (PieceVerdict::Unreadable, "unreadable pieces"),
    ] {
        let list = report.pieces_with(verdict);
        if !list.is_empty() {
            outln!("{what}: {}", ranges(&list));
        }
    }
    for (piece, msg) in report.errors.iter().take(10) {
        outln!("  piece {piece}: {msg}");
    }
    outln!("files:");
    for f in &report.files {
        let detail = match f.verdict {
            FileVerdict::Complete => String::new(),
            FileVerdict::WrongSize { actual } => format!(
                "  ({} on disk, {} of {} pieces complete)",
                actual, f.pieces_complete, f.pieces_total
            ),
            _ => format!(
                "  ({} of {} pieces complete)",
                f.pieces_complete, f.pieces_total
            ),
        };
        outln!(
            "  {:<10}  {:>12}  {}{detail}",
            verdict_name(f.verdict).replace('_', " "),
            format::bytes(f.length),
            f.path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ranges_compress_runs() {
        assert_eq!(super::ranges(&[]), "");
        assert_eq!(super::ranges(&[3]), "3");
        assert_eq!(super::ranges(&[1, 4, 5, 6, 7, 9]), "1, 4-7, 9");
    }
}
