//! The registry's seedbox policy (types and rules in `policy.rs`): categories and tags, share
//! limits and queueing. Client-wide lists and settings are kept in the state folder
//! (`categories.json`, `tags.json`, `preferences.json`, `queue.json`); each torrent's own in
//! its settings.
//!
//! Every second the housekeeping thread calls [`State::apply_policy`]: one round trip per
//! loop for what each running torrent did, then its seeding time and last activity are
//! counted, share limits are checked (a torrent past one is stopped or removed through
//! [`State::pause`] and [`State::remove`], as a user would), and with queueing on the queue
//! is applied: torrents the limits leave no room for are taken out of their loop
//! ([`State::deactivate`]) and marked queued, and queued ones with room put back in. Queued
//! torrents are not paused: a restart queues them again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Instant;

use super::events::ClientEvent;
use super::policy::{
    self, Category, Preferences, QueueConfig, QueueMove, ShareAction, ShareLimits,
};
use super::state::{Live, State};
use super::ClientError;
use crate::core::api::TorrentId;
use crate::core::InfoHash;

const CATEGORIES: &str = "categories.json";
const TAGS: &str = "tags.json";
const PREFERENCES: &str = "preferences.json";
const QUEUE: &str = "queue.json";

/// What a running torrent did, as the policy needs it.
struct Seen {
    hash: InfoHash,
    complete: bool,
    /// Bytes in verified pieces.
    done: u64,
    rates: (u64, u64),
}

/// How much seeding time a torrent gathers before its settings are kept again for it alone
/// (a crash loses at most this much, plus [`seeding_save_step`]'s spread). Totals that
/// change, a stop and a shutdown keep it at once.
pub(crate) const SEEDING_SAVE_STEP: std::time::Duration = std::time::Duration::from_secs(600);

/// [`SEEDING_SAVE_STEP`] plus up to 255 s chosen by the info hash, so torrents started
/// together do not all write their settings in the same second ever after.
fn seeding_save_step(hash: &InfoHash) -> u64 {
    SEEDING_SAVE_STEP.as_millis() as u64 + u64::from(hash.as_bytes()[0]) * 1000
}

impl State {
    // ------------------------------------------------------------------------- start

    /// The policy kept in the state folder, over `share_limits` and `queue` from the config:
    /// called once at start, before the torrents are loaded.
    pub fn load_policy(&mut self, share_limits: ShareLimits, queue: QueueConfig) {
        self.share_limits = share_limits;
        self.queue_config = queue;
        let Some(store) = &self.store else { return };
        if let Some(c) = store.load_json::<Vec<Category>>(CATEGORIES) {
            self.categories = c.into_iter().map(|c| (c.name.clone(), c)).collect();
        }
        if let Some(t) = store.load_json::<BTreeSet<String>>(TAGS) {
            self.tags = t;
        }
        let prefs = store
            .load_json::<Preferences>(PREFERENCES)
            .unwrap_or_default();
        if let Some(l) = prefs.share_limits.filter(|l| l.check(true).is_ok()) {
            self.share_limits = l;
        }
        if let Some(q) = prefs.queue {
            self.queue_config = q;
        }
        // Torrents loaded later take their places from here; unknown ones go last.
        self.queue = store
            .load_json::<Vec<String>>(QUEUE)
            .unwrap_or_default()
            .iter()
            .filter_map(|h| InfoHash::from_hex(h))
            .collect();
        self.queue_loading = true;
    }

    /// After the torrents of the state folder were loaded: the queue forgets those that did
    /// not come back, and is applied.
    pub fn loaded(&mut self) {
        self.queue_loading = false;
        let torrents = &self.torrents;
        let mut seen = std::collections::HashSet::with_capacity(self.queue.len());
        self.queue
            .retain(|h| torrents.contains_key(h) && seen.insert(*h));
        let _ = self.save_queue();
        self.apply_queue_now();
    }

    fn save(&self, name: &str, value: &impl serde::Serialize) -> Result<(), ClientError> {
        match &self.store {
            Some(store) => store.save_json(name, value),
            None => Ok(()),
        }
    }

    fn save_categories(&self) -> Result<(), ClientError> {
        let list: Vec<&Category> = self.categories.values().collect();
        self.save(CATEGORIES, &list)
    }

    fn save_tags(&self) -> Result<(), ClientError> {
        self.save(TAGS, &self.tags)
    }

    fn save_preferences(&self) -> Result<(), ClientError> {
        self.save(
            PREFERENCES,
            &Preferences {
                share_limits: Some(self.share_limits),
                queue: Some(self.queue_config),
            },
        )
    }

    pub(crate) fn save_queue(&self) -> Result<(), ClientError> {
        let hex: Vec<String> = self.queue.iter().map(InfoHash::to_hex).collect();
        self.save(QUEUE, &hex)
    }

    // ------------------------------------------------------------- categories and tags

    /// The save path of category `name` for a torrent being added, the category created
    /// when there is none of that name.
    pub(crate) fn use_category(&mut self, name: &str) -> Result<Option<PathBuf>, ClientError> {
        policy::check_category_name(name)?;
        if let Some(c) = self.categories.get(name) {
            return Ok(c.save_path.clone());
        }
        self.categories.insert(
            name.to_string(),
            Category {
                name: name.to_string(),
                save_path: None,
            },
        );
        self.save_categories()?;
        Ok(None)
    }

    /// Tags for a torrent: each checked, and created when the client has none of that name.
    pub(crate) fn take_tags(&mut self, tags: &[String]) -> Result<BTreeSet<String>, ClientError> {
        let tags = tags
            .iter()
            .map(|t| policy::check_tag(t))
            .collect::<Result<BTreeSet<String>, _>>()?;
        if !tags.is_subset(&self.tags) {
            self.tags.extend(tags.iter().cloned());
            self.save_tags()?;
        }
        Ok(tags)
    }

    pub fn create_category(
        &mut self,
        name: &str,
        save_path: Option<PathBuf>,
    ) -> Result<(), ClientError> {
        policy::check_category_name(name)?;
        if self.categories.contains_key(name) {
            return Err(ClientError::InvalidArgument(format!(
                "the category {name:?} exists"
            )));
        }
        self.categories.insert(
            name.to_string(),
            Category {
                name: name.to_string(),
                save_path,
            },
        );
        self.save_categories()
    }

    pub fn edit_category(
        &mut self,
        name: &str,
        save_path: Option<PathBuf>,
    ) -> Result<(), ClientError> {
        let c = self
            .categories
            .get_mut(name)
            .ok_or_else(|| ClientError::InvalidArgument(format!("no category {name:?}")))?;
        c.save_path = save_path;
        self.save_categories()
    }

    pub fn remove_categories(&mut self, names: &[String]) -> Result<(), ClientError> {
        let before = self.categories.len();
        for n in names {
            self.categories.remove(n);
        }
        if self.categories.len() == before {
            return Ok(());
        }
        self.save_categories()?;
        let orphans: Vec<InfoHash> = self
            .torrents
            .iter()
            .filter(|(_, e)| {
                e.settings
                    .category
                    .as_ref()
                    .is_some_and(|c| !self.categories.contains_key(c))
            })
            .map(|(h, _)| *h)
            .collect();
        for h in orphans {
            self.entry_mut(h)?.settings.category = None;
            self.save_settings(&h)?;
        }
        Ok(())
    }

    pub fn create_tags(&mut self, tags: &[String]) -> Result<(), ClientError> {
        self.take_tags(tags).map(drop)
    }

    pub fn delete_tags(&mut self, tags: &[String]) -> Result<(), ClientError> {
        let gone: BTreeSet<String> = tags.iter().map(|t| t.trim().to_string()).collect();
        self.tags.retain(|t| !gone.contains(t));
        self.save_tags()?;
        let tagged: Vec<InfoHash> = self
            .torrents
            .iter()
            .filter(|(_, e)| !e.settings.tags.is_disjoint(&gone))
            .map(|(h, _)| *h)
            .collect();
        for h in tagged {
            self.entry_mut(h)?
                .settings
                .tags
                .retain(|t| !gone.contains(t));
            self.save_settings(&h)?;
        }
        Ok(())
    }

    pub fn set_category(
        &mut self,
        hash: InfoHash,
        category: Option<&str>,
    ) -> Result<(), ClientError> {
        self.entry(hash)?;
        if let Some(c) = category {
            if !self.categories.contains_key(c) {
                return Err(ClientError::InvalidArgument(format!("no category {c:?}")));
            }
        }
        self.entry_mut(hash)?.settings.category = category.map(str::to_string);
        self.save_settings(&hash)
    }

    pub fn add_tags(&mut self, hash: InfoHash, tags: &[String]) -> Result<(), ClientError> {
        self.entry(hash)?;
        let tags = self.take_tags(tags)?;
        self.entry_mut(hash)?.settings.tags.extend(tags);
        self.save_settings(&hash)
    }

    pub fn remove_tags(&mut self, hash: InfoHash, tags: &[String]) -> Result<(), ClientError> {
        let e = self.entry_mut(hash)?;
        for t in tags {
            e.settings.tags.remove(t.trim());
        }
        self.save_settings(&hash)
    }

    // ----------------------------------------------------------------- share limits

    pub fn set_share_limits(
        &mut self,
        hash: InfoHash,
        limits: ShareLimits,
    ) -> Result<(), ClientError> {
        limits.check(false)?;
        self.entry_mut(hash)?.settings.share_limits = limits;
        self.save_settings(&hash)
    }

    pub fn set_global_share_limits(&mut self, limits: ShareLimits) -> Result<(), ClientError> {
        limits.check(true)?;
        self.share_limits = limits;
        self.save_preferences()
    }

    // ---------------------------------------------------------------------- queue

    /// Puts a new torrent last in the queue (or where the state folder had it).
    pub(crate) fn enqueue(&mut self, hash: InfoHash) {
        self.enqueue_unsaved(hash);
        if !self.queue_loading {
            let _ = self.save_queue();
        }
    }

    /// [`State::enqueue`] without writing `queue.json`: a batch writes it once, as each write
    /// holds the whole queue. While the state folder loads, a torrent it kept is already in
    /// place and goes in again; [`State::loaded`] drops that second copy, in one pass rather
    /// than a search of the queue per torrent.
    pub(crate) fn enqueue_unsaved(&mut self, hash: InfoHash) {
        self.queue.push(hash);
    }

    pub(crate) fn dequeue(&mut self, hash: InfoHash) {
        let before = self.queue.len();
        self.queue.retain(|h| *h != hash);
        if self.queue.len() != before && !self.queue_loading {
            let _ = self.save_queue();
        }
    }

    /// Its place in the queue, from 1.
    pub(crate) fn queue_position(&self, hash: InfoHash) -> usize {
        self.queue
            .iter()
            .position(|h| *h == hash)
            .map_or(0, |i| i + 1)
    }

    /// Whether a torrent being added waits for the queue instead of starting at once.
    pub(crate) fn queues_new(&self, force_start: bool) -> bool {
        self.queue_config.enabled && !force_start
    }

    pub fn queue_move(&mut self, hash: InfoHash, to: QueueMove) -> Result<(), ClientError> {
        self.entry(hash)?;
        let Some(i) = self.queue.iter().position(|h| *h == hash) else {
            return Ok(());
        };
        let last = self.queue.len() - 1;
        let j = match to {
            QueueMove::Top => 0,
            QueueMove::Bottom => last,
            QueueMove::Up => i.saturating_sub(1),
            QueueMove::Down => (i + 1).min(last),
        };
        let h = self.queue.remove(i);
        self.queue.insert(j, h);
        self.save_queue()?;
        self.apply_queue_now();
        Ok(())
    }

    pub fn set_force_start(&mut self, hash: InfoHash, on: bool) -> Result<(), ClientError> {
        let e = self.entry_mut(hash)?;
        e.settings.force_start = on;
        let start = on && e.queued && !e.settings.paused;
        self.save_settings(&hash)?;
        if start {
            self.start_queued(hash)?;
        }
        self.apply_queue_now();
        Ok(())
    }

    pub fn set_queue_config(&mut self, queue: QueueConfig) -> Result<(), ClientError> {
        self.queue_config = queue;
        self.save_preferences()?;
        if !queue.enabled {
            // Everything the queue held runs.
            let held: Vec<InfoHash> = self
                .torrents
                .iter()
                .filter(|(_, e)| e.queued)
                .map(|(h, _)| *h)
                .collect();
            for h in held {
                self.start_queued(h)?;
            }
        }
        self.apply_queue_now();
        Ok(())
    }

    /// Takes a running torrent out of its loop for the queue (not paused).
    fn queue_out(&mut self, hash: InfoHash) -> Result<(), ClientError> {
        self.deactivate(hash)?;
        self.entry_mut(hash)?.queued = true;
        self.save_settings(&hash)
    }

    /// Puts a queued torrent back into its loop.
    fn start_queued(&mut self, hash: InfoHash) -> Result<(), ClientError> {
        self.entry_mut(hash)?.queued = false;
        self.start(hash)
    }

    /// Applies the queue, asking the loops what the running torrents do.
    pub(crate) fn apply_queue_now(&mut self) {
        self.apply_queue(&[]);
    }

    /// Applies the queue: which torrents run and which wait (see the module doc). `seen`:
    /// what the running torrents did, from [`State::apply_policy`]; without it the loops are
    /// asked.
    fn apply_queue(&mut self, seen: &[Seen]) {
        let q = self.queue_config;
        if !q.enabled {
            return;
        }
        let asked;
        let seen = if seen.is_empty() {
            asked = self.seen();
            &asked[..]
        } else {
            seen
        };
        let by_hash: BTreeMap<InfoHash, &Seen> = seen.iter().map(|s| (s.hash, s)).collect();
        let now = Instant::now();
        // Slow torrents first noted, or no longer slow.
        for s in seen {
            let Some(e) = self.torrents.get_mut(&s.hash) else {
                continue;
            };
            let slow =
                s.rates.1 < q.slow_upload_rate && (s.complete || s.rates.0 < q.slow_download_rate);
            e.slow_since = match (slow, e.slow_since) {
                (true, None) => Some(now),
                (true, t) => t,
                (false, _) => None,
            };
        }
        let mut wanted: Vec<(InfoHash, bool)> = Vec::new();
        let (mut down, mut up, mut total) = (0i64, 0i64, 0i64);
        let room = |limit: i64, n: i64| limit < 0 || n < limit;
        for pass_complete in [false, true] {
            for hash in &self.queue {
                let Some(e) = self.torrents.get(hash) else {
                    continue;
                };
                let managed = e.info.is_some()
                    && e.magnet.is_none()
                    && !e.settings.paused
                    && e.problem.is_none()
                    && !e.settings.force_start
                    && (e.id.is_some() || e.queued);
                if !managed {
                    continue;
                }
                let complete = by_hash.get(hash).map_or(e.complete, |s| s.complete);
                if complete != pass_complete {
                    continue;
                }
                let run = room(q.max_active_torrents, total)
                    && if complete {
                        room(q.max_active_uploads, up)
                    } else {
                        room(q.max_active_downloads, down)
                    };
                let slow = q.dont_count_slow
                    && e.id.is_some()
                    && e.slow_since
                        .is_some_and(|t| now.duration_since(t).as_secs() >= q.slow_inactive_secs);
                if run && !slow {
                    total += 1;
                    if complete {
                        up += 1;
                    } else {
                        down += 1;
                    }
                }
                wanted.push((*hash, run));
            }
        }
        // Out first, so what goes in never runs over the limits.
        for &(hash, run) in &wanted {
            if !run && self.torrents.get(&hash).is_some_and(|e| e.id.is_some()) {
                if let Err(err) = self.queue_out(hash) {
                    tracing::warn!("{hash}: cannot queue: {err}");
                }
            }
        }
        for &(hash, run) in &wanted {
            if run && self.torrents.get(&hash).is_some_and(|e| e.queued) {
                if let Err(err) = self.start_queued(hash) {
                    tracing::warn!("{hash}: cannot start from the queue: {err}");
                }
            }
        }
    }

    // ------------------------------------------------------------------- the tick

    /// What each running torrent with metadata did: one round trip per loop. Each entry's
    /// totals, last activity, completeness and seeding time are brought up to date.
    fn seen(&mut self) -> Vec<Seen> {
        let mut by_loop: BTreeMap<(u32, TorrentId), Live> = BTreeMap::new();
        for shard in 0..self.loops.len() as u32 {
            for l in self.live(shard).unwrap_or_default() {
                by_loop.insert((shard, l.id), l);
            }
        }
        let now = Instant::now();
        let mut seen = Vec::new();
        for (hash, e) in self.torrents.iter_mut() {
            let Some(id) = e.id else { continue };
            if e.magnet.is_some() {
                continue;
            }
            let Some(l) = by_loop.get(&(e.shard, id)) else {
                continue;
            };
            if (l.uploaded, l.downloaded) != e.run_totals {
                e.run_totals = (l.uploaded, l.downloaded);
                e.last_activity = now;
                e.counters_dirty = true;
            }
            e.complete = l.left == 0;
            let seeding = e.complete && l.error.is_none();
            match (seeding, e.seeding_since) {
                (true, Some(t)) => {
                    e.settings.seeding_ms += now.duration_since(t).as_millis() as u64;
                    e.seeding_since = Some(now);
                    // Kept every few minutes, not every second: ten thousand idle seeds
                    // would otherwise rewrite ten thousand files each resume interval.
                    if e.settings.seeding_ms >= e.seeding_saved_ms + seeding_save_step(hash) {
                        e.counters_dirty = true;
                    }
                }
                (true, None) => e.seeding_since = Some(now),
                (false, Some(t)) => {
                    e.settings.seeding_ms += now.duration_since(t).as_millis() as u64;
                    e.seeding_since = None;
                    e.counters_dirty = true;
                }
                (false, None) => {}
            }
            let done = e.info.as_ref().map_or(0, |i| {
                (u64::from(l.have) * u64::from(i.lengths().piece_len())).min(i.total_len())
            });
            seen.push(Seen {
                hash: *hash,
                complete: e.complete,
                done,
                rates: l.rates,
            });
        }
        seen
    }

    /// Counts what running torrents did, applies share limits, then the queue. Called by the
    /// housekeeping thread about once a second.
    pub fn apply_policy(&mut self) {
        let seen = self.seen();
        let mut reached = Vec::new();
        for s in seen.iter().filter(|s| s.complete) {
            let Some(e) = self.torrents.get(&s.hash) else {
                continue;
            };
            let limits = e.settings.share_limits.resolve(&self.share_limits);
            let (up, down) = (
                e.settings.uploaded_total + e.run_totals.0,
                e.settings.downloaded_total + e.run_totals.1,
            );
            let ratio = policy::ratio(up, down, s.done);
            let seeding = e.settings.seeding_ms / 1000;
            let inactive = e.last_activity.elapsed().as_secs();
            if let Some(which) = limits.reached(ratio, seeding, inactive) {
                reached.push((s.hash, which, limits.action));
            }
        }
        for (hash, limit, action) in reached {
            tracing::info!("{hash}: share limit {limit} reached; {}", action.as_str());
            self.events.publish(ClientEvent::ShareLimitReached {
                info_hash: hash,
                limit,
                action,
            });
            let result = match action {
                ShareAction::Default | ShareAction::Stop => self.pause(hash),
                ShareAction::Remove => self.remove(hash, false),
                ShareAction::RemoveWithData => self.remove(hash, true),
            };
            if let Err(e) = result {
                tracing::warn!("{hash}: share limit action failed: {e}");
            }
        }
        let seen: Vec<Seen> = seen
            .into_iter()
            .filter(|s| self.torrents.get(&s.hash).is_some_and(|e| e.id.is_some()))
            .collect();
        if !seen.is_empty() || self.torrents.values().any(|e| e.queued) {
            self.apply_queue(&seen);
        }
    }

    /// Keeps the settings of torrents whose totals changed, or whose seeding time grew by a
    /// step, since last kept (with the resume saves); with `all` (at shutdown), of every
    /// torrent whose seeding time grew at all.
    pub fn save_counters(&mut self, all: bool) {
        let dirty: Vec<InfoHash> = self
            .torrents
            .iter_mut()
            .filter(|(_, e)| {
                e.counters_dirty || (all && e.settings.seeding_ms != e.seeding_saved_ms)
            })
            .map(|(h, e)| {
                e.counters_dirty = false;
                e.seeding_saved_ms = e.settings.seeding_ms;
                *h
            })
            .collect();
        for h in dirty {
            if let Err(e) = self.save_settings(&h) {
                tracing::warn!("{e}");
            }
        }
    }
}
