//! Seedbox policy over the torrents of a client: categories and tags, share limits, and the
//! rules behind them, as qBittorrent has them (so a qBittorrent-compatible API maps onto them
//! one to one). Pure types and functions; the registry applies them (`organize.rs`).
//!
//! - A [`Category`] has a name and a save path: a torrent added with a category and no save
//!   folder of its own goes there. Tags are free strings. Both are client-wide lists, kept in
//!   the state folder (`categories.json`, `tags.json`); each torrent's own category and tags
//!   are kept in its settings.
//! - [`ShareLimits`]: ratio, seeding time and inactive seeding time, per torrent and for the
//!   client. Per torrent, [`USE_GLOBAL`] (-2) takes the client's value and [`NO_LIMIT`] (-1)
//!   none; what happens when one is reached is a [`ShareAction`]. The ratio is qBittorrent's
//!   ([`ratio`]); times are in seconds (qBittorrent's API speaks minutes: multiply).

use serde::{Deserialize, Serialize};

use super::ClientError;

/// A limit that takes the client's value (per torrent only).
pub const USE_GLOBAL: i64 = -2;
/// No limit.
pub const NO_LIMIT: i64 = -1;
/// The largest ratio reported, as qBittorrent's `MAX_RATIO`.
pub const MAX_RATIO: f64 = 9999.0;

/// A category: a name and where its torrents' data goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Category {
    /// Its name (`a/b` is allowed, as qBittorrent's subcategories).
    pub name: String,
    /// Where torrents added with it and no save folder of their own go; `None`: the
    /// client's data folder.
    pub save_path: Option<std::path::PathBuf>,
}

/// What happens to a torrent that reached a share limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ShareAction {
    /// The client's action (per torrent only; for the client it means [`ShareAction::Stop`]).
    #[default]
    Default,
    /// Paused, as a user's pause.
    Stop,
    /// Removed from the client, its data kept.
    Remove,
    /// Removed from the client with its data.
    RemoveWithData,
}

impl ShareAction {
    /// The snake_case name, as the JSON API and config file spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ShareAction::Default => "default",
            ShareAction::Stop => "stop",
            ShareAction::Remove => "remove",
            ShareAction::RemoveWithData => "remove_with_data",
        }
    }
}

impl std::str::FromStr for ShareAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "default" => ShareAction::Default,
            "stop" | "pause" => ShareAction::Stop,
            "remove" => ShareAction::Remove,
            "remove_with_data" => ShareAction::RemoveWithData,
            other => {
                return Err(format!(
                    "{other:?}: expected \"stop\", \"remove\" or \"remove_with_data\""
                ))
            }
        })
    }
}

/// Share limits: of one torrent (each field may be [`USE_GLOBAL`]) or of the client.
/// [`NO_LIMIT`] (-1) is none; times are seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShareLimits {
    /// Uploaded over downloaded ([`ratio`]) at which it stops; -2, -1 or at least 0.
    pub ratio: f64,
    /// Seconds of seeding after which it stops; -2, -1 or at least 0.
    pub seeding_time: i64,
    /// Seconds of seeding without sending or receiving payload after which it stops.
    pub inactive_seeding_time: i64,
    /// What happens then.
    pub action: ShareAction,
}

impl ShareLimits {
    /// A torrent's default: everything from the client.
    pub const USE_GLOBAL: ShareLimits = ShareLimits {
        ratio: USE_GLOBAL as f64,
        seeding_time: USE_GLOBAL,
        inactive_seeding_time: USE_GLOBAL,
        action: ShareAction::Default,
    };
    /// The client's default: no limits.
    pub const NONE: ShareLimits = ShareLimits {
        ratio: NO_LIMIT as f64,
        seeding_time: NO_LIMIT,
        inactive_seeding_time: NO_LIMIT,
        action: ShareAction::Stop,
    };

    /// Refuses values outside the ranges (`global`: -2 is not allowed).
    pub fn check(&self, global: bool) -> Result<(), ClientError> {
        let low = if global { NO_LIMIT } else { USE_GLOBAL };
        let bad = |what: &str, v: String| {
            Err(ClientError::InvalidArgument(format!(
                "share limit {what} = {v}: expected {}-1 (none) or a value of at least 0",
                if global { "" } else { "-2 (the client's), " }
            )))
        };
        let r = self.ratio;
        if !r.is_finite() || (r < 0.0 && r != -1.0 && (global || r != -2.0)) {
            return bad("ratio", r.to_string());
        }
        for (what, v) in [
            ("seeding_time", self.seeding_time),
            ("inactive_seeding_time", self.inactive_seeding_time),
        ] {
            if v < low {
                return bad(what, v.to_string());
            }
        }
        Ok(())
    }

    /// These limits with every [`USE_GLOBAL`] field taken from `global`.
    pub fn resolve(&self, global: &ShareLimits) -> ShareLimits {
        let time = |own: i64, g: i64| if own == USE_GLOBAL { g } else { own };
        ShareLimits {
            ratio: if self.ratio == USE_GLOBAL as f64 {
                global.ratio
            } else {
                self.ratio
            },
            seeding_time: time(self.seeding_time, global.seeding_time),
            inactive_seeding_time: time(self.inactive_seeding_time, global.inactive_seeding_time),
            action: match (self.action, global.action) {
                (ShareAction::Default, ShareAction::Default) => ShareAction::Stop,
                (ShareAction::Default, g) => g,
                (own, _) => own,
            },
        }
    }

    /// Which limit, if any, a seeding torrent has reached (resolved limits): `ratio`,
    /// `seeding_time` or `inactive_seeding_time`.
    pub fn reached(
        &self,
        ratio: f64,
        seeding_secs: u64,
        inactive_secs: u64,
    ) -> Option<&'static str> {
        if self.ratio >= 0.0 && ratio >= self.ratio {
            return Some("ratio");
        }
        if self.seeding_time >= 0 && seeding_secs >= self.seeding_time as u64 {
            return Some("seeding_time");
        }
        if self.inactive_seeding_time >= 0 && inactive_secs >= self.inactive_seeding_time as u64 {
            return Some("inactive_seeding_time");
        }
        None
    }
}

impl Default for ShareLimits {
    fn default() -> Self {
        ShareLimits::USE_GLOBAL
    }
}

/// Queueing, as qBittorrent's (libtorrent's auto-management): at most so many torrents run,
/// the rest wait in queue order, reported [`super::TorrentState::Queued`]. Limits of -1 are
/// none. Force-started torrents run regardless and are not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueueConfig {
    /// Queueing on; off (the default), every torrent that is not paused runs.
    pub enabled: bool,
    /// Downloading torrents that run at once.
    pub max_active_downloads: i64,
    /// Seeding torrents that run at once.
    pub max_active_uploads: i64,
    /// Torrents that run at once, downloading and seeding.
    pub max_active_torrents: i64,
    /// A running torrent slower than the thresholds below, for `slow_inactive_secs`, is not
    /// counted against the limits (qBittorrent's "do not count slow torrents").
    pub dont_count_slow: bool,
    /// Download rate under which a downloading torrent is slow, bytes per second.
    pub slow_download_rate: u64,
    /// Upload rate under which a torrent is slow, bytes per second.
    pub slow_upload_rate: u64,
    /// How long a torrent must stay under the thresholds to be slow, seconds.
    pub slow_inactive_secs: u64,
}

impl Default for QueueConfig {
    /// qBittorrent's defaults, with queueing off.
    fn default() -> Self {
        QueueConfig {
            enabled: false,
            max_active_downloads: 3,
            max_active_uploads: 3,
            max_active_torrents: 5,
            dont_count_slow: false,
            slow_download_rate: 2048,
            slow_upload_rate: 2048,
            slow_inactive_secs: 60,
        }
    }
}

/// Where to move a torrent in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueMove {
    /// First.
    Top,
    /// Last.
    Bottom,
    /// One place earlier.
    Up,
    /// One place later.
    Down,
}

/// What was set at run time, kept in the state folder's `preferences.json`: it overrides the
/// [`super::ClientConfig`]'s values at the next start.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Preferences {
    /// The client's share limits.
    pub share_limits: Option<ShareLimits>,
    /// Queueing.
    pub queue: Option<QueueConfig>,
}

/// qBittorrent's ratio: all-time uploaded over all-time downloaded, where a torrent that
/// downloaded less than 1% of what it has (a seed added with its data) counts what it has;
/// 0 when nothing moved, at most [`MAX_RATIO`].
pub fn ratio(uploaded: u64, downloaded: u64, done: u64) -> f64 {
    let down = if (downloaded as f64) < done as f64 * 0.01 {
        done
    } else {
        downloaded
    };
    if down == 0 {
        return if uploaded == 0 { 0.0 } else { MAX_RATIO };
    }
    (uploaded as f64 / down as f64).min(MAX_RATIO)
}

/// Refuses a category name qBittorrent would refuse: empty, or with an empty path component
/// (`/a`, `a/`, `a//b`), or a backslash.
pub fn check_category_name(name: &str) -> Result<(), ClientError> {
    if name.is_empty() || name.contains('\\') || name.split('/').any(str::is_empty) {
        return Err(ClientError::InvalidArgument(format!(
            "{name:?} is not a category name: it must be non-empty, with no empty `/` \
             component and no backslash"
        )));
    }
    Ok(())
}

/// A tag as kept: trimmed; refused when empty or holding a comma (lists of tags are
/// comma-separated).
pub fn check_tag(tag: &str) -> Result<String, ClientError> {
    let t = tag.trim();
    if t.is_empty() || t.contains(',') {
        return Err(ClientError::InvalidArgument(format!(
            "{tag:?} is not a tag: it must be non-empty and hold no comma"
        )));
    }
    Ok(t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ratio_is_qbittorrents() {
        assert_eq!(ratio(0, 0, 0), 0.0);
        assert_eq!(ratio(10, 0, 0), MAX_RATIO);
        assert_eq!(ratio(50, 100, 100), 0.5);
        // A seed added with its data: what it has counts as downloaded.
        assert_eq!(ratio(200, 0, 100), 2.0);
        assert_eq!(ratio(u64::MAX, 1, 1), MAX_RATIO);
    }

    #[test]
    fn torrent_limits_fall_back_to_the_clients() {
        let global = ShareLimits {
            ratio: 2.0,
            seeding_time: 60,
            inactive_seeding_time: NO_LIMIT,
            action: ShareAction::Remove,
        };
        let own = ShareLimits {
            seeding_time: NO_LIMIT,
            ..ShareLimits::USE_GLOBAL
        };
        let r = own.resolve(&global);
        assert_eq!(
            (r.ratio, r.seeding_time, r.action),
            (2.0, NO_LIMIT, ShareAction::Remove)
        );
        assert_eq!(r.reached(1.9, 10_000, 10_000), None);
        assert_eq!(r.reached(2.0, 0, 0), Some("ratio"));
        let r = ShareLimits::USE_GLOBAL.resolve(&global);
        assert_eq!(r.reached(0.0, 60, 0), Some("seeding_time"));
        let none = ShareLimits::USE_GLOBAL.resolve(&ShareLimits::NONE);
        assert_eq!(none.reached(MAX_RATIO, u64::MAX, u64::MAX), None);
        assert_eq!(none.action, ShareAction::Stop);
    }

    #[test]
    fn limits_out_of_range_are_refused() {
        assert!(ShareLimits::USE_GLOBAL.check(false).is_ok());
        assert!(ShareLimits::USE_GLOBAL.check(true).is_err());
        assert!(ShareLimits::NONE.check(true).is_ok());
        for bad in [
            ShareLimits {
                ratio: -0.5,
                ..ShareLimits::NONE
            },
            ShareLimits {
                ratio: f64::NAN,
                ..ShareLimits::NONE
            },
            ShareLimits {
                seeding_time: -3,
                ..ShareLimits::NONE
            },
        ] {
            assert!(bad.check(false).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_are_checked() {
        for good in ["tv", "tv/shows", "a b"] {
            check_category_name(good).unwrap();
        }
        for bad in ["", "/tv", "tv/", "a//b", "a\\b"] {
            assert!(check_category_name(bad).is_err(), "{bad}");
        }
        assert_eq!(check_tag(" hd ").unwrap(), "hd");
        assert!(check_tag("a,b").is_err() && check_tag("  ").is_err());
    }
}
