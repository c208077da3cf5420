//! The disk side every driver shares: it turns the core's disk operations into jobs for the
//! disk pool, remembers what each job was for, and turns the pool's completions back into the
//! core's results. The completions arrive on a queue whose eventfd the driver watches (epoll
//! registers it; io_uring keeps a read armed on it).

use std::collections::HashMap;
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::Arc;

use slab::Slab;

use crate::core::api::{DiskDone, DiskOp, TorrentId};
use crate::core::{BlockRef, PeerKey, PieceIndex};
use crate::storage::{
    completion_queue, BatchJob, Completion, CompletionSender, Completions, DiskJob, DiskPool,
    Outcome, Storage,
};

/// What a disk job in flight was for.
enum Pending {
    Write {
        torrent: TorrentId,
        block: BlockRef,
    },
    Read {
        torrent: TorrentId,
        peer: PeerKey,
        block: BlockRef,
    },
    Verify {
        torrent: TorrentId,
        piece: PieceIndex,
    },
}

/// Disk jobs in flight for one driver, and the queue their results come back on.
pub(crate) struct DiskBridge {
    pool: Arc<DiskPool>,
    storage: HashMap<TorrentId, Arc<Storage>>,
    completions: Completions,
    reply: CompletionSender,
    pending: Slab<Pending>,
    /// Jobs submitted this turn and not yet handed to the pool ([`DiskBridge::flush`]).
    batch: Vec<BatchJob>,
    done_buf: Vec<Completion>,
    /// Reads answered on the loop because their pages were already cached
    /// ([`Storage::read_block_resident`]), delivered with the next completions.
    ready: Vec<DiskDone>,
    /// Completions left in the queue after a capped drain: the next turn must not sleep,
    /// since the eventfd has already been consumed.
    pub(crate) backlog: bool,
}

impl DiskBridge {
    pub(crate) fn new(pool: Arc<DiskPool>) -> io::Result<DiskBridge> {
        let (reply, completions) = completion_queue().map_err(io::Error::other)?;
        Ok(DiskBridge {
            pool,
            storage: HashMap::new(),
            completions,
            reply,
            pending: Slab::new(),
            batch: Vec::new(),
            done_buf: Vec::new(),
            ready: Vec::new(),
            backlog: false,
        })
    }

    /// The eventfd that becomes readable when results are waiting.
    pub(crate) fn eventfd(&self) -> BorrowedFd<'_> {
        self.completions.eventfd()
    }

    /// Disk operations submitted and not yet completed.
    pub(crate) fn in_flight(&self) -> u64 {
        self.pending.len() as u64
    }

    /// The completion queue, for queues that share its eventfd.
    pub(crate) fn queue(&self) -> &Completions {
        &self.completions
    }

    /// Registers the storage that serves a torrent's disk operations.
    pub(crate) fn attach(&mut self, torrent: TorrentId, storage: Arc<Storage>) {
        self.storage.insert(torrent, storage);
    }

    /// Forgets a torrent's storage (the torrent left this loop), so that its files and
    /// mappings close once the jobs in flight, which hold their own reference, are done.
    pub(crate) fn detach(&mut self, torrent: TorrentId) {
        self.storage.remove(&torrent);
    }

    /// Queues a disk operation for the pool; [`DiskBridge::flush`] hands over what a turn
    /// queued. Operations for a torrent without storage are dropped (the torrent is gone).
    pub(crate) fn submit(&mut self, op: DiskOp) {
        let (torrent, pending, job) = match op {
            DiskOp::Write {
                torrent,
                block,
                data,
            } => (
                torrent,
                Pending::Write { torrent, block },
                DiskJob::Write { block, data },
            ),
            DiskOp::Read {
                torrent,
                peer,
                block,
            } => {
                // A block whose pages are cached needs no pool job: the send maps them
                // without waiting on the disk.
                if let Some(data) = self
                    .storage
                    .get(&torrent)
                    .and_then(|s| s.read_block_resident(block))
                {
                    self.ready.push(DiskDone::Read {
                        torrent,
                        peer,
                        block,
                        result: Ok(data),
                    });
                    return;
                }
                (
                    torrent,
                    Pending::Read {
                        torrent,
                        peer,
                        block,
                    },
                    DiskJob::Read { block },
                )
            }
            DiskOp::Verify {
                torrent,
                piece,
                block_hashes,
            } => {
                let Some(storage) = self.storage.get(&torrent) else {
                    return;
                };
                let info = storage.info();
                let expected = info.version().has_v1().then(|| *info.piece_hash(piece));
                (
                    torrent,
                    Pending::Verify { torrent, piece },
                    DiskJob::Verify {
                        piece,
                        expected,
                        blocks: block_hashes,
                    },
                )
            }
        };
        let Some(storage) = self.storage.get(&torrent) else {
            return;
        };
        let token = self.pending.insert(pending) as u64;
        self.batch.push((storage.clone(), token, job));
    }

    /// Hands the operations queued since the last flush to the pool as one batch (one
    /// wake-up of a pool thread for the blocks of a receive). The loop calls it once it has
    /// carried out the core's actions, before it waits.
    pub(crate) fn flush(&mut self) {
        if !self.batch.is_empty() {
            self.pool
                .submit_batch(std::mem::take(&mut self.batch), &self.reply);
        }
        // Reads answered on the loop: the loop must not sleep before it delivers them.
        self.backlog |= !self.ready.is_empty();
    }

    /// Hands up to `max` finished operations to `deliver`, as the core's results. `clear_event`
    /// consumes the eventfd first (epoll); io_uring's armed read has already consumed it.
    pub(crate) fn complete(
        &mut self,
        max: usize,
        clear_event: bool,
        mut deliver: impl FnMut(DiskDone),
    ) {
        if clear_event {
            self.completions.acknowledge();
        }
        for done in std::mem::take(&mut self.ready) {
            deliver(done);
        }
        self.backlog = self.completions.drain(max, &mut self.done_buf);
        for done in std::mem::take(&mut self.done_buf) {
            let Some(pending) = self.pending.try_remove(done.token as usize) else {
                continue;
            };
            let result = match (pending, done.outcome) {
                (Pending::Write { torrent, block }, Outcome::Written { result, .. }) => {
                    DiskDone::Written {
                        torrent,
                        block,
                        result: result.map_err(|e| e.to_string()),
                    }
                }
                (
                    Pending::Read {
                        torrent,
                        peer,
                        block,
                    },
                    Outcome::Read { result, .. },
                ) => DiskDone::Read {
                    torrent,
                    peer,
                    block,
                    result: result.map_err(|e| e.to_string()),
                },
                // A read error while hashing means the data is not what it should be.
                (
                    Pending::Verify { torrent, piece },
                    Outcome::Verified {
                        result,
                        block_hashes,
                        ..
                    },
                ) => DiskDone::Verified {
                    torrent,
                    piece,
                    ok: result.unwrap_or(false),
                    block_hashes,
                },
                _ => continue,
            };
            deliver(result);
        }
    }
}
