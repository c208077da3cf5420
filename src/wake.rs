//! Queues that wake an event loop: a mutex-guarded queue plus an eventfd that becomes
//! readable when the queue goes from empty to non-empty. The disk pool returns its results to
//! a loop this way, and other loops post it mail (connections handed over, commands) this way.
//!
//! A loop's protocol with its queues, whatever its driver:
//!
//! 1. At start-up: `let (tx, rx) = wake_queue()?`; keep `rx`, hand out clones of `tx`. Further
//!    queues can share the same eventfd ([`WakeQueue::sibling`]), so one armed read serves
//!    them all.
//! 2. Arm a read on `rx.eventfd()` in the ring (or register it with epoll).
//! 3. When it fires: consume the counter (the ring's read already did; with epoll call
//!    [`WakeQueue::acknowledge`]) **before** draining, then call [`WakeQueue::drain`] on every
//!    queue sharing the eventfd, with the per-turn bound. If one returns `true`, more items
//!    wait: come back next turn without waiting for the eventfd, which only signals when a
//!    queue goes from empty to non-empty. Re-arm the read.
//!
//! Consuming before draining is what makes a wake-up impossible to lose: an item pushed after
//! the drain took the queue's lock finds it empty and signals again.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::storage::sys;

struct Shared<T> {
    queue: Mutex<VecDeque<T>>,
    eventfd: Arc<OwnedFd>,
}

/// The sending side of a queue: cheap to clone, `Send + Sync` when `T: Send`.
pub struct WakeSender<T>(Arc<Shared<T>>);

/// The receiving side of a queue, with the eventfd that signals it.
pub struct WakeQueue<T>(Arc<Shared<T>>);

impl<T> Clone for WakeSender<T> {
    fn clone(&self) -> Self {
        WakeSender(self.0.clone())
    }
}

impl<T> std::fmt::Debug for WakeSender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WakeSender")
            .field("eventfd", &self.0.eventfd.as_raw_fd())
            .finish()
    }
}

impl<T> std::fmt::Debug for WakeQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WakeQueue")
            .field("eventfd", &self.0.eventfd.as_raw_fd())
            .finish()
    }
}

/// A new queue with its own eventfd (non-blocking, close-on-exec).
pub fn wake_queue<T>() -> io::Result<(WakeSender<T>, WakeQueue<T>)> {
    Ok(with_eventfd(Arc::new(sys::eventfd()?)))
}

fn with_eventfd<T>(eventfd: Arc<OwnedFd>) -> (WakeSender<T>, WakeQueue<T>) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(VecDeque::new()),
        eventfd,
    });
    (WakeSender(shared.clone()), WakeQueue(shared))
}

impl<T> WakeSender<T> {
    /// Queues every item of `items`, in order, under one lock, and signals the eventfd once
    /// if the queue was empty: one wake-up of the loop for a batch of results.
    pub fn send_all(&self, items: impl IntoIterator<Item = T>) {
        let was_empty = {
            let mut queue = self.0.queue.lock().unwrap_or_else(|e| e.into_inner());
            let before = queue.len();
            queue.extend(items);
            before == 0 && !queue.is_empty()
        };
        if was_empty {
            sys::eventfd_signal(self.0.eventfd.as_fd());
        }
    }

    /// Queues an item and signals the eventfd if the queue was empty.
    pub fn send(&self, item: T) {
        let was_empty = {
            let mut queue = self.0.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.push_back(item);
            queue.len() == 1
        };
        if was_empty {
            sys::eventfd_signal(self.0.eventfd.as_fd());
        }
    }
}

impl<T> WakeQueue<T> {
    /// The eventfd to arm a read on (or poll for readability). Its counter says only "a queue
    /// became non-empty".
    pub fn eventfd(&self) -> BorrowedFd<'_> {
        self.0.eventfd.as_fd()
    }

    /// A new queue, for items of another type, that signals this queue's eventfd.
    pub fn sibling<U>(&self) -> (WakeSender<U>, WakeQueue<U>) {
        with_eventfd(self.0.eventfd.clone())
    }

    /// Resets the eventfd's counter (for epoll drivers; a ring's read does it already).
    /// Call it before [`WakeQueue::drain`]. Returns whether it was set.
    pub fn acknowledge(&self) -> bool {
        sys::eventfd_clear(self.0.eventfd.as_fd())
    }

    /// Moves up to `max` items into `out`, oldest first. Returns `true` when more remain,
    /// which the eventfd will not signal again.
    pub fn drain(&self, max: usize, out: &mut Vec<T>) -> bool {
        let mut queue = self.0.queue.lock().unwrap_or_else(|e| e.into_inner());
        let n = max.min(queue.len());
        out.extend(queue.drain(..n));
        !queue.is_empty()
    }

    /// Another sender for this queue.
    pub fn sender(&self) -> WakeSender<T> {
        WakeSender(self.0.clone())
    }

    /// Blocks until the eventfd is readable or `timeout` passes; returns whether it became
    /// readable. For tools and tests: an event loop arms a read instead.
    pub fn wait(&self, timeout: Duration) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.0.eventfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd, count 1.
        unsafe { libc::poll(&mut pfd, 1, ms) > 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siblings_share_one_wake_up() {
        let (tx, rx) = wake_queue::<u32>().unwrap();
        let (tx2, rx2) = rx.sibling::<&'static str>();
        assert!(!rx.wait(Duration::ZERO));
        tx2.send("mail");
        assert!(
            rx.wait(Duration::ZERO),
            "the sibling's item wakes the shared eventfd"
        );
        assert!(rx.acknowledge());
        tx.send(7);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        assert!(!rx.drain(10, &mut a));
        assert!(!rx2.drain(10, &mut b));
        assert_eq!((a, b), (vec![7], vec!["mail"]));
    }

    #[test]
    fn drain_reports_what_is_left() {
        let (tx, rx) = wake_queue::<u32>().unwrap();
        for i in 0..5 {
            tx.send(i);
        }
        let mut out = Vec::new();
        assert!(rx.drain(3, &mut out), "two remain");
        assert!(!rx.drain(3, &mut out));
        assert_eq!(out, vec![0, 1, 2, 3, 4]);
    }
}
