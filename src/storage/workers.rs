//! A plain pool of threads that sleep on a condition variable when they have no work.
//!
//! The disk pool's block writes, block reads and verifications run here rather than on rayon:
//! a rayon worker that runs out of work yields the CPU (`sched_yield`) for a few dozen rounds
//! before it sleeps, and jobs that arrive every few tens of microseconds (a 16 KiB block at
//! hundreds of MB/s) keep every worker in that loop, which cost a leecher 6-8% of its CPU
//! (`perf/2026-12-03-cpu-leech.md`). Here a worker with nothing queued sleeps at once, and a
//! queued job wakes a sleeping worker unless one already woken is on its way to take it; a
//! job never waits behind a busy worker (a slow disk read) while another sleeps. Wake-ups are
//! made rarer upstream instead: a loop hands over a turn's jobs as one task
//! ([`super::DiskPool::submit_batch`]).
//!
//! Dropping the pool lets the workers finish what is queued, then joins them.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

type Task = Box<dyn FnOnce() + Send>;

struct State {
    tasks: VecDeque<Task>,
    /// Workers running a task or looking at the queue (for the invariant
    /// `running + sleeping` = threads; a running worker takes no queued task off the count).
    running: usize,
    /// Workers waiting on the condition variable.
    sleeping: usize,
    /// Wake-ups granted and not yet taken by a sleeping worker.
    wakes: usize,
    stop: bool,
}

impl State {
    /// Grants a wake-up when more tasks are queued than workers have been woken for, and a
    /// worker sleeps. Returns whether to notify.
    fn grant_wake(&mut self) -> bool {
        let wake = self.tasks.len() > self.wakes && self.sleeping > self.wakes;
        if wake {
            self.wakes += 1;
        }
        wake
    }
}

struct Shared {
    state: Mutex<State>,
    ready: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Tasks run outside the lock, so a poisoned lock can only come from a bug in this
        // module; the queue itself is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A fixed set of threads running boxed tasks in submission order (each task on one thread;
/// tasks on different threads overlap).
pub(crate) struct Workers {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("threads", &self.threads.len())
            .finish()
    }
}

impl Workers {
    /// Starts `n` threads (at least one) named `rt-{name}-{i}`.
    pub(crate) fn new(n: usize, name: &str) -> std::io::Result<Workers> {
        let n = n.max(1);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                tasks: VecDeque::new(),
                running: n,
                sleeping: 0,
                wakes: 0,
                stop: false,
            }),
            ready: Condvar::new(),
        });
        let mut workers = Workers {
            shared,
            threads: Vec::new(),
        };
        for i in 0..n {
            let shared = workers.shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("rt-{name}-{i}"))
                .spawn(move || work(&shared));
            match spawned {
                Ok(thread) => workers.threads.push(thread),
                Err(e) => {
                    // The threads already started stop when `workers` drops.
                    workers.shared.lock().running -= n - i;
                    return Err(e);
                }
            }
        }
        Ok(workers)
    }

    /// Queues `task`; returns at once.
    pub(crate) fn spawn(&self, task: impl FnOnce() + Send + 'static) {
        let wake = {
            let mut state = self.shared.lock();
            state.tasks.push_back(Box::new(task));
            state.grant_wake()
        };
        if wake {
            self.shared.ready.notify_one();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.ready.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn work(shared: &Shared) {
    let mut state = shared.lock();
    loop {
        if let Some(task) = state.tasks.pop_front() {
            // Tasks queued behind this one that no woken worker is on its way to: wake one
            // more, so a backlog spreads over the sleeping workers.
            let wake = state.grant_wake();
            drop(state);
            if wake {
                shared.ready.notify_one();
            }
            // A panicking task must not take the worker with it (nor leave the counters
            // wrong): the job's reply is lost, as it would be if the job never ran.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(task));
            state = shared.lock();
            continue;
        }
        if state.stop {
            state.running -= 1;
            return;
        }
        state.running -= 1;
        state.sleeping += 1;
        // Sleep until a wake-up is granted (spurious wake-ups go back to sleep) or the pool
        // stops.
        while state.wakes == 0 && !state.stop {
            state = shared.ready.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if state.wakes > 0 {
            state.wakes -= 1;
        }
        state.sleeping -= 1;
        state.running += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn every_task_runs_and_drop_finishes_the_queue() {
        let done = Arc::new(AtomicUsize::new(0));
        let workers = Workers::new(3, "test").unwrap();
        for _ in 0..1000 {
            let done = done.clone();
            workers.spawn(move || {
                done.fetch_add(1, Ordering::Relaxed);
            });
        }
        drop(workers);
        assert_eq!(done.load(Ordering::Relaxed), 1000);
    }

    #[test]
    fn a_task_never_waits_behind_a_busy_worker_while_another_sleeps() {
        // Four tasks that each wait until all four run at once: they finish only if every
        // worker was woken. The first is running (a slow disk read, say) before the others
        // are queued, so a pool that left queued work to its busy workers would hang here.
        let workers = Workers::new(4, "test").unwrap();
        let barrier = Arc::new(std::sync::Barrier::new(4));
        let (tx, rx) = mpsc::channel();
        let (started_tx, started) = mpsc::channel();
        for i in 0..4 {
            let (barrier, tx, started_tx) = (barrier.clone(), tx.clone(), started_tx.clone());
            workers.spawn(move || {
                let _ = started_tx.send(());
                barrier.wait();
                let _ = tx.send(());
            });
            if i == 0 {
                started
                    .recv_timeout(Duration::from_secs(10))
                    .expect("the first task started");
            }
        }
        for _ in 0..4 {
            rx.recv_timeout(Duration::from_secs(20))
                .expect("all four tasks ran at the same time");
        }
    }

    #[test]
    fn idle_workers_sleep_instead_of_spinning() {
        // After a burst of tasks, the workers' CPU time stops growing: they sleep on the
        // condition variable (a rayon pool would yield in a loop for a while first).
        let workers = Workers::new(2, "idle").unwrap();
        for _ in 0..100 {
            workers.spawn(|| {});
        }
        std::thread::sleep(Duration::from_millis(50));
        let before = thread_cpu("rt-idle-");
        std::thread::sleep(Duration::from_millis(300));
        let after = thread_cpu("rt-idle-");
        assert!(
            after - before < 5,
            "idle workers used {} ticks in 300 ms",
            after - before
        );
    }

    #[test]
    fn a_panicking_task_leaves_the_worker_running() {
        let workers = Workers::new(1, "test").unwrap();
        workers.spawn(|| panic!("a bug in one job"));
        let (tx, rx) = mpsc::channel();
        workers.spawn(move || tx.send(7).unwrap());
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(7));
    }

    /// CPU ticks (user + system) of this process's threads named `prefix*`, from
    /// /proc/self/task/TID/stat.
    fn thread_cpu(prefix: &str) -> u64 {
        let mut total = 0;
        for entry in std::fs::read_dir("/proc/self/task").unwrap() {
            let path = entry.unwrap().path();
            let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            if !comm.starts_with(prefix) {
                continue;
            }
            let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
            let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
                continue;
            };
            let fields: Vec<&str> = rest.split(' ').collect();
            total += fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        }
        total
    }
}
