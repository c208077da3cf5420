//! What a torrent owns so that its inputs are small, as quinn-proto's `Connection` owns its
//! config, RNG and output queue: the [`Context`] (its id, the shared [`Config`], its own seeded
//! [`Rng`] and its [`Outbox`]).
//!
//! The session makes one per torrent, with an `Rng` seeded from the session's own when the
//! torrent is added, so a run stays reproducible from the session's seed. After every call into
//! a torrent the session moves what the torrent queued into its own outbox
//! ([`Outbox::absorb`]), so the driver sees actions and events in the order they were made.

use std::collections::VecDeque;
use std::sync::Arc;

use super::api::{Action, ConnId, Event, TorrentId};
use super::config::Config;
use super::Rng;

/// What the core wants done, collected while it handles one input.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    pub(crate) actions: VecDeque<Action>,
    pub(crate) events: VecDeque<Event>,
    /// Connections the torrent closed; the session frees their slots.
    pub(crate) closed: Vec<ConnId>,
}

impl Outbox {
    /// Tells the driver that `conn` has data to send, when `notify` says it must be told.
    pub(crate) fn send(&mut self, conn: ConnId, notify: bool) {
        if notify {
            self.actions.push_back(Action::Send { conn });
        }
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.actions.is_empty() && self.events.is_empty() && self.closed.is_empty()
    }

    /// Moves everything `other` holds to the back of this outbox, in order.
    pub(crate) fn absorb(&mut self, other: &mut Outbox) {
        self.actions.append(&mut other.actions);
        self.events.append(&mut other.events);
        self.closed.append(&mut other.closed);
    }
}

/// One torrent's own context: who it is, its settings, its randomness and its output queue.
/// A torrent fetching its metadata hands it on to the torrent it becomes.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) id: TorrentId,
    /// The session's settings; the session replaces it when they change.
    pub(crate) config: Arc<Config>,
    /// The torrent's own generator, seeded from the session's when the torrent was added.
    pub(crate) rng: Rng,
    pub(crate) out: Outbox,
}

impl Context {
    pub(crate) fn new(id: TorrentId, config: Arc<Config>, rng: Rng) -> Context {
        Context {
            id,
            config,
            rng,
            out: Outbox::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absorb_keeps_the_order_things_were_queued_in() {
        let conn = |slot| ConnId {
            slot,
            generation: 1,
        };
        let mut session = Outbox::default();
        session.send(conn(1), true);
        let mut torrent = Outbox::default();
        torrent.send(conn(2), true);
        torrent.send(conn(9), false);
        torrent.closed.push(conn(3));
        session.absorb(&mut torrent);
        session.send(conn(4), true);
        let sends: Vec<u32> = session
            .actions
            .iter()
            .map(|a| match a {
                Action::Send { conn } => conn.slot,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(sends, [1, 2, 4]);
        assert_eq!(session.closed, [conn(3)]);
        assert!(torrent.actions.is_empty() && torrent.closed.is_empty());
    }
}
