//! The housekeeping thread: what runs beside the event loops on a timer or on their word.
//!
//! - On a loop's word (sent from its event callback, so a loop never waits on it): a magnet
//!   link's metadata arrived (open its storage, start it), a torrent completed (tell its
//!   trackers now, save its resume data).
//! - Every [`TICK`]: pump the trackers (their replies, timers, retransmissions) and hand the
//!   peers they give to the torrents' loops; start the DHT lookups that are due (`dht.rs`),
//!   and save its table every `dht::SAVE_EVERY`. Peers DHT lookups find arrive as
//!   [`Work::DhtPeers`] and go to the torrents' loops.
//! - Every [`TICK`] too: local service discovery's announces and what it heard
//!   (`lsd.rs`), its peers handed to the loops the same way.
//! - Every [`PROGRESS_EVERY`]: refresh what the trackers are told (bytes left, totals).
//! - Every [`REBALANCE_EVERY`]: share the session-wide rate limits between loops by demand.
//! - Every [`POLICY_EVERY`]: count seeding time and activity, apply share limits and the
//!   queue (`organize.rs`).
//! - Every `ClientConfig::resume_interval` (a minute by default): save resume data of
//!   torrents that verified pieces since.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::events::ClientEvent;
use super::Shared;
use crate::core::InfoHash;
use crate::metainfo::Info;

/// What a loop tells the housekeeping thread.
pub(crate) enum Work {
    /// A magnet link's metadata arrived.
    Metadata(InfoHash, Arc<Info>),
    /// A torrent completed.
    Completed(InfoHash),
    /// A torrent's data must be checked again (a seed-mode piece failed).
    Recheck(InfoHash),
    /// A torrent's loop reported a disk error: if it was a file found changed since its
    /// resume data was validated (`Storage::changed_on_disk`), its data is checked again.
    DiskError(InfoHash),
    /// The DHT node is in loop 0's session: its lookups may start.
    DhtReady,
    /// Peers a DHT lookup found for a torrent.
    DhtPeers(InfoHash, Vec<std::net::SocketAddr>),
    /// A DHT lookup ended, with so many nodes answering.
    DhtLookupDone(InfoHash, usize),
    /// A peer's DHT node (its `port` message), for loop 0's node.
    DhtNode(std::net::SocketAddr),
    /// A peer's word on our external address (`yourip`, address then voter).
    ExternalAddrVote(std::net::IpAddr, std::net::IpAddr),
    /// Stop.
    Stop,
}

/// How often trackers are pumped: the delay a tracker's reply may wait before its peers are
/// dialled, and the resolution of announce timers.
const TICK: Duration = Duration::from_millis(50);
/// How often the trackers' view of each torrent's progress is refreshed from the loops.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How often session-wide rate limits are shared out again.
const REBALANCE_EVERY: Duration = Duration::from_secs(1);
/// How often share limits and the queue are applied: the resolution of seeding-time limits.
const POLICY_EVERY: Duration = Duration::from_secs(1);
/// Runs until [`Work::Stop`] or the client is gone, saving resume data every
/// `resume_every` (`ClientConfig::resume_interval`: a crash loses at most this much
/// verification work; the data itself is re-checked against file stamps, never trusted
/// blindly).
pub(crate) fn run(shared: Arc<Shared>, work: Receiver<Work>, resume_every: Duration) {
    let mut next_progress = Instant::now();
    let mut next_rebalance = Instant::now() + REBALANCE_EVERY;
    let mut next_save = Instant::now() + resume_every;
    let mut next_policy = Instant::now() + POLICY_EVERY;
    loop {
        match work.recv_timeout(TICK) {
            Ok(Work::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Ok(Work::Recheck(hash)) => recheck(&shared, hash),
            Ok(Work::DiskError(hash)) => {
                if shared
                    .with(|s| Ok(s.changed_on_disk(hash)))
                    .unwrap_or(false)
                {
                    tracing::warn!("{hash}: a file changed since its resume data was saved");
                    recheck(&shared, hash);
                }
            }
            Ok(Work::Metadata(hash, info)) => {
                let result = shared.with(|s| s.start_magnet(hash, info));
                if let Err(e) = result {
                    tracing::warn!("magnet {hash}: cannot start: {e}");
                    shared.events.publish(ClientEvent::Error {
                        info_hash: hash,
                        message: format!("cannot start: {e}"),
                    });
                }
            }
            Ok(Work::DhtReady) => {
                let _ = shared.with(|s| {
                    if let Some(l) = s.dht.as_mut() {
                        l.ready = true;
                    }
                    Ok(())
                });
            }
            Ok(Work::DhtPeers(hash, peers)) => {
                let _ = shared.with(|s| {
                    s.dht_peers(hash, peers);
                    Ok(())
                });
            }
            Ok(Work::ExternalAddrVote(ip, voter)) => {
                let _ = shared.with(|s| {
                    s.external_addr_vote(ip, voter);
                    Ok(())
                });
            }
            Ok(Work::DhtLookupDone(hash, responded)) => {
                let _ = shared.with(|s| {
                    s.dht_lookup_done(hash, responded);
                    Ok(())
                });
            }
            Ok(Work::DhtNode(addr)) => {
                let _ = shared.with(|s| {
                    s.dht_node(addr);
                    Ok(())
                });
            }
            Ok(Work::Completed(hash)) => {
                let _ = shared.with(|s| {
                    s.on_completed(hash);
                    Ok(())
                });
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        let stop = shared.with(|s| {
            if now >= next_progress {
                next_progress = now + PROGRESS_EVERY;
                s.refresh_progress();
            }
            s.pump_trackers();
            s.pump_lsd();
            s.pump_dht(now);
            if now >= next_rebalance {
                next_rebalance = now + REBALANCE_EVERY;
                s.rebalance_limits();
            }
            if now >= next_policy {
                next_policy = now + POLICY_EVERY;
                s.apply_policy();
            }
            if now >= next_save {
                next_save = now + resume_every;
                s.save_resume(false);
                s.save_counters(false);
            }
            Ok(())
        });
        if stop.is_err() {
            return;
        }
    }
}

/// Checks a torrent's data again on a thread of its own: a check of a large torrent takes
/// minutes, and the housekeeping thread runs the trackers and the resume saves.
fn recheck(shared: &Arc<Shared>, hash: InfoHash) {
    let shared = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("rt-check".into())
        .spawn(move || {
            let job = match shared.with(|s| s.begin_recheck(hash)) {
                Ok(job) => job,
                Err(e) => return tracing::warn!("{hash}: cannot check the data again: {e}"),
            };
            let have = job.run();
            if let Err(e) = shared.with(|s| s.finish_recheck(hash, have)) {
                tracing::warn!("{hash}: cannot start after its check: {e}");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("{hash}: cannot start a thread to check the data: {e}");
    }
}
