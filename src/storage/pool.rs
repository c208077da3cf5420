//! The disk pool: block writes, block reads and piece verification run on pools of threads
//! that sleep when idle (`workers.rs`: rayon's workers spin in `sched_yield` between jobs,
//! which cost a leecher 6-8% of its CPU), and each result goes back to the event loop that
//! asked, through that loop's own [`Completions`] queue and eventfd. A rayon pool of the
//! hashing pool's size stays for full checks, which want its parallel iterators.
//!
//! Hashing and block I/O get separate pools: a thread waiting on a slow disk must not hold up
//! the verification of pieces that are already in memory, nor hashing delay a peer's block.
//!
//! A driver hands the jobs one loop turn produced to [`DiskPool::submit_batch`]: one task runs
//! them in order, so the blocks of one receive cost one wake-up of a pool thread, not one each.
//!
//! The queue is a [`crate::wake`] queue: its module documentation gives a loop's protocol
//! with it (arm a read on the eventfd, acknowledge before draining, a bounded drain).

use std::sync::Arc;

use bytes::Bytes;

use super::workers::Workers;
use super::{Storage, StorageError};
use crate::core::{BlockRef, PieceIndex};
use crate::wake::{wake_queue, WakeQueue, WakeSender};

/// Sizes of the two pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskPoolConfig {
    /// Threads that verify pieces (CPU-bound: one per core is the most that helps).
    pub hash_threads: usize,
    /// Threads that copy blocks to and from files (they mostly wait on the disk, so more
    /// than cores helps a deep device queue; 4 keeps an SSD's queue busy at small cost).
    pub io_threads: usize,
}

impl Default for DiskPoolConfig {
    fn default() -> Self {
        DiskPoolConfig {
            hash_threads: std::thread::available_parallelism().map_or(1, usize::from),
            io_threads: 4,
        }
    }
}

/// One disk operation, as the core asks for it.
#[derive(Debug)]
pub enum DiskJob {
    /// Hash a piece and compare with its expected SHA1.
    Verify {
        /// The piece.
        piece: PieceIndex,
        /// Its SHA1 from the torrent; `None` for a v2-only torrent, whose pieces are checked
        /// by their SHA-256 merkle hash ([`Storage::verify_piece_v2`]).
        expected: Option<[u8; 20]>,
        /// Also hash each block when the piece matches (for a piece that failed before). A
        /// piece that does not match always has its blocks hashed, for smart ban.
        blocks: bool,
    },
    /// Write a block; `data.len()` must equal `block.len`. `Bytes`, so that the block the
    /// core split off its receive buffer reaches the file without another copy.
    Write {
        /// Where the data goes.
        block: BlockRef,
        /// The block's bytes.
        data: Bytes,
    },
    /// Read a block as [`Bytes`] that point into the file's mapping where they can
    /// ([`Storage::read_block_shared`]), for sending; comes back in [`Outcome::Read`].
    Read {
        /// The block to read.
        block: BlockRef,
    },
}

/// What a job produced.
#[derive(Debug)]
pub enum Outcome {
    /// A verification: `Ok(true)` when the piece matched its hash, `Ok(false)` when not.
    Verified {
        /// The piece.
        piece: PieceIndex,
        /// Whether it matched, or why it could not be read.
        result: Result<bool, StorageError>,
        /// The SHA1 of each block when the piece failed or they were asked for; else empty.
        block_hashes: Vec<[u8; 20]>,
    },
    /// A write finished.
    Written {
        /// The block.
        block: BlockRef,
        /// Whether the write succeeded.
        result: Result<(), StorageError>,
    },
    /// A [`DiskJob::Read`] finished.
    Read {
        /// The block.
        block: BlockRef,
        /// The block's bytes, or why they could not be read.
        result: Result<Bytes, StorageError>,
    },
}

/// A finished job and the caller's token for it.
#[derive(Debug)]
pub struct Completion {
    /// The opaque value the caller submitted the job with (a slab key, a generation...).
    pub token: u64,
    /// What the job produced.
    pub outcome: Outcome,
}

/// The sending side of a loop's completion queue: cheap to clone, `Send + Sync`.
pub type CompletionSender = WakeSender<Completion>;

/// The receiving side of one event loop's completion queue, with the eventfd that signals
/// it. Each loop makes its own with [`completion_queue`].
pub type Completions = WakeQueue<Completion>;

/// A new completion queue and its eventfd.
pub fn completion_queue() -> Result<(CompletionSender, Completions), StorageError> {
    wake_queue().map_err(|e| StorageError::Io {
        path: "eventfd".into(),
        action: "create",
        source: e,
    })
}

/// One job of a batch: the storage it is for, the caller's token and the job.
pub type BatchJob = (Arc<Storage>, u64, DiskJob);

/// The pools that run [`DiskJob`]s.
#[derive(Debug)]
pub struct DiskPool {
    /// For full checks' parallel iterators ([`DiskPool::hash_pool`]).
    hash: rayon::ThreadPool,
    /// Verifications.
    verify: Workers,
    /// Block writes and reads.
    io: Workers,
}

impl DiskPool {
    /// Starts the pools' threads (named `rt-hash-N`, `rt-verify-N` and `rt-io-N`).
    pub fn new(config: DiskPoolConfig) -> Result<DiskPool, StorageError> {
        let hash = rayon::ThreadPoolBuilder::new()
            .num_threads(config.hash_threads.max(1))
            .thread_name(move |i| format!("rt-hash-{i}"))
            .build()
            .map_err(|e| StorageError::Pool(e.to_string()))?;
        let workers = |n: usize, name: &str| {
            Workers::new(n, name).map_err(|e| StorageError::Pool(e.to_string()))
        };
        Ok(DiskPool {
            hash,
            verify: workers(config.hash_threads, "verify")?,
            io: workers(config.io_threads, "io")?,
        })
    }

    /// The hashing pool, for work that wants rayon's parallel iterators on it (a full
    /// check runs there with [`rayon::ThreadPool::install`]).
    pub fn hash_pool(&self) -> &rayon::ThreadPool {
        &self.hash
    }

    /// Runs `job` on `storage` on the matching pool and sends the result, tagged with
    /// `token`, to `reply`. Returns at once.
    pub fn submit(
        &self,
        storage: &Arc<Storage>,
        token: u64,
        job: DiskJob,
        reply: &CompletionSender,
    ) {
        let storage = storage.clone();
        let reply = reply.clone();
        let pool = match job {
            DiskJob::Verify { .. } => &self.verify,
            DiskJob::Write { .. } | DiskJob::Read { .. } => &self.io,
        };
        storage.job_started();
        pool.spawn(move || {
            let outcome = run(&storage, job);
            storage.job_done();
            reply.send(Completion { token, outcome });
        });
    }

    /// Runs `jobs` one after another, in order, as one task (verifications on the hashing
    /// pool, the rest as one task on the I/O pool), sending each result to `reply` as it is
    /// done. Returns at once.
    pub fn submit_batch(&self, jobs: Vec<BatchJob>, reply: &CompletionSender) {
        let (verify, io): (Vec<BatchJob>, Vec<BatchJob>) = jobs
            .into_iter()
            .partition(|(_, _, job)| matches!(job, DiskJob::Verify { .. }));
        for (storage, token, job) in verify {
            self.submit(&storage, token, job, reply);
        }
        match io.len() {
            0 => {}
            1 => {
                let (storage, token, job) = io.into_iter().next().expect("one job");
                self.submit(&storage, token, job, reply);
            }
            _ => {
                for (storage, _, _) in &io {
                    storage.job_started();
                }
                let reply = reply.clone();
                self.io.spawn(move || {
                    // The results go back together: one wake-up of the loop for the batch
                    // (a wake-up per block cost the leecher 3-4% in `eventfd_write` alone).
                    let mut done = Vec::with_capacity(io.len());
                    let mut jobs = io.into_iter().peekable();
                    while let Some((storage, token, job)) = jobs.next() {
                        let DiskJob::Read { block } = job else {
                            let outcome = run(&storage, job);
                            storage.job_done();
                            done.push(Completion { token, outcome });
                            continue;
                        };
                        // Reads that follow for the same storage go together, so that
                        // neighbouring blocks are made resident with one `madvise`.
                        let mut reads = vec![(token, block)];
                        while let Some((_, token, job)) = jobs.next_if(|(s, _, j)| {
                            Arc::ptr_eq(s, &storage) && matches!(j, DiskJob::Read { .. })
                        }) {
                            if let DiskJob::Read { block } = job {
                                reads.push((token, block));
                            }
                        }
                        let blocks: Vec<BlockRef> = reads.iter().map(|&(_, b)| b).collect();
                        let results = storage.read_blocks_shared(&blocks);
                        for ((token, block), result) in reads.into_iter().zip(results) {
                            storage.job_done();
                            done.push(Completion {
                                token,
                                outcome: Outcome::Read { block, result },
                            });
                        }
                    }
                    reply.send_all(done);
                });
            }
        }
    }
}

fn run(storage: &Arc<Storage>, job: DiskJob) -> Outcome {
    match job {
        DiskJob::Verify {
            piece,
            expected,
            blocks,
        } => {
            let result = match expected {
                Some(expected) => storage.verify_piece(piece, &expected),
                None => storage.verify_piece_v2(piece),
            };
            // Hashing the blocks again costs a second pass over the piece, paid only for
            // pieces that failed now or before: rare, and what lets smart ban spare the
            // honest peers that shared a piece with a corrupt one.
            let block_hashes = match result {
                Ok(false) => storage.block_hashes(piece).unwrap_or_default(),
                Ok(true) if blocks => storage.block_hashes(piece).unwrap_or_default(),
                _ => Vec::new(),
            };
            Outcome::Verified {
                piece,
                result,
                block_hashes,
            }
        }
        DiskJob::Write { block, data } => {
            let result = if data.len() == block.len as usize {
                storage.write_block_bytes(block, &data)
            } else {
                Err(StorageError::Io {
                    path: storage.download_dir().to_path_buf(),
                    action: "write to",
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "the buffer's length differs from the block's",
                    ),
                })
            };
            Outcome::Written { block, result }
        }
        DiskJob::Read { block } => Outcome::Read {
            block,
            result: storage.read_block_shared(block),
        },
    }
}
