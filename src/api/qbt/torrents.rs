//! `torrents/*`: the list with its filters, one torrent's properties, trackers, files and
//! pieces, and the actions (add, delete, stop/start, limits, peers, file priorities).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::{
    bad_request, either, limit_field, limit_of, log, need_post, not_found, one, select, text,
    unix_now, Params, Times, WebApi, WebState,
};
use crate::api::Response;
use crate::client::{
    AddTorrent, Client, ClientError, FilePriority, PeerInfo, QueueMove, ShareLimits, TorrentHandle,
    TorrentState, TorrentStatus, TrackerState, TrackerStatus,
};
use crate::core::InfoHash;

/// qBittorrent's "infinite" ETA: 100 days.
pub const MAX_ETA: i64 = 8_640_000;

/// qBittorrent's state name (4.x names) for a status (`paused`: held by the user, which a
/// magnet link's status does not show).
pub fn state_name(st: &TorrentStatus, paused: bool) -> &'static str {
    // A force-started torrent that runs: qBittorrent's `forced*` states, whatever its speed.
    if st.force_start && !paused {
        match st.state {
            TorrentState::Metadata => return "forcedMetaDL",
            TorrentState::Downloading => return "forcedDL",
            TorrentState::Seeding => return "forcedUP",
            _ => {}
        }
    }
    match st.state {
        TorrentState::Metadata if paused => "pausedDL",
        TorrentState::Metadata => "metaDL",
        TorrentState::Downloading if st.download_rate > 0 => "downloading",
        TorrentState::Downloading => "stalledDL",
        TorrentState::Seeding if st.upload_rate > 0 => "uploading",
        TorrentState::Seeding => "stalledUP",
        TorrentState::Queued if st.bytes_left == 0 && st.size > 0 => "queuedUP",
        TorrentState::Queued => "queuedDL",
        TorrentState::Paused if st.bytes_left == 0 && st.size > 0 => "pausedUP",
        TorrentState::Paused => "pausedDL",
        TorrentState::Error
            if st
                .error
                .as_deref()
                .is_some_and(|e| e.contains("missing") || e.contains("not found")) =>
        {
            "missingFiles"
        }
        TorrentState::Error => "error",
        TorrentState::Moving => "moving",
        TorrentState::Checking if st.bytes_left == 0 && st.size > 0 => "checkingUP",
        TorrentState::Checking => "checkingDL",
    }
}

/// Seconds left at the current speed ([`MAX_ETA`] when done or stalled).
pub fn eta(st: &TorrentStatus) -> i64 {
    match st.bytes_left.checked_div(st.download_rate) {
        _ if st.bytes_left == 0 => MAX_ETA,
        Some(secs) => i64::try_from(secs).unwrap_or(MAX_ETA).min(MAX_ETA),
        None => MAX_ETA,
    }
}

/// Whether a state name counts as complete (an `UP` state).
fn is_up(state: &str) -> bool {
    state.ends_with("UP") || state == "uploading"
}

/// What `torrents/info` and `sync/maindata` need beyond a status.
#[derive(Debug, Default, Clone)]
pub struct Extra {
    /// Tracker tiers.
    pub trackers: Vec<Vec<String>>,
    /// qBittorrent's "current tracker": the one whose last announce was answered, or empty.
    pub working_tracker: String,
    /// Connected peers with every piece, and the others.
    pub seeds: usize,
    /// Connected peers that lack pieces.
    pub leechs: usize,
    /// Private torrent (BEP 27).
    pub private: bool,
    /// Paused by the user.
    pub paused: bool,
    /// qBittorrent's `priority`: the place in the download queue from 1, 0 for a torrent
    /// that is complete (libtorrent keeps no queue place for those). See [`priorities`].
    pub priority: i64,
}

/// Each torrent's `priority` field, by hash: incomplete torrents (and magnet links without
/// their metadata) numbered from 1 in queue order, as qBittorrent shows libtorrent's queue
/// positions; complete ones 0.
pub fn priorities(statuses: &[TorrentStatus]) -> std::collections::HashMap<String, i64> {
    let mut waiting: Vec<&TorrentStatus> = statuses.iter().filter(|s| !is_complete(s)).collect();
    waiting.sort_by_key(|s| s.queue_position);
    let mut out: std::collections::HashMap<String, i64> =
        statuses.iter().map(|s| (s.info_hash.clone(), 0)).collect();
    for (i, s) in waiting.iter().enumerate() {
        out.insert(s.info_hash.clone(), i as i64 + 1);
    }
    out
}

/// Every wanted byte verified (a magnet link without metadata is not).
pub fn is_complete(st: &TorrentStatus) -> bool {
    st.bytes_left == 0 && st.size > 0
}

/// A ratio limit as qBittorrent's parameters give it: -2 (the client's), -1 (none) or at
/// least 0; any other negative value is none.
pub fn ratio_limit_of(v: f64) -> f64 {
    if v == -2.0 {
        -2.0
    } else if v < 0.0 || !v.is_finite() {
        -1.0
    } else {
        v
    }
}

/// A time limit in qBittorrent's minutes (-2, -1 or at least 0) as the engine's seconds.
pub fn minutes_to_secs(v: i64) -> i64 {
    match v {
        -2 => -2,
        v if v < 0 => -1,
        v => v.saturating_mul(60),
    }
}

/// A time limit in the engine's seconds as qBittorrent's minutes (-2 and -1 kept).
pub fn secs_to_minutes(v: i64) -> i64 {
    if v < 0 {
        v
    } else {
        v / 60
    }
}

/// Reads the extras of a torrent (its trackers; its peers when it has some).
pub fn extra(t: &TorrentHandle, st: &TorrentStatus) -> Extra {
    let peers = if st.peers > 0 {
        t.peers().unwrap_or_default()
    } else {
        Vec::new()
    };
    let seeds = peers.iter().filter(|p| p.progress >= 1.0).count();
    let working_tracker = t
        .tracker_status()
        .unwrap_or_default()
        .into_iter()
        .find(|s| s.state == TrackerState::Working)
        .map(|s| s.url)
        .unwrap_or_default();
    Extra {
        working_tracker,
        trackers: t.trackers().unwrap_or_default(),
        seeds,
        leechs: peers.len() - seeds,
        private: t.info().ok().flatten().is_some_and(|i| i.is_private()),
        paused: t.is_paused().unwrap_or(false),
        priority: 0,
    }
}

/// A torrent's times: when it was added and completed come from the engine, which keeps
/// them over restarts; the `Instant`s (for `time_active`) are this WebAPI's. `paused`: held
/// by the user (a magnet link's status does not show it).
pub(crate) fn times(w: &mut WebState, hash: InfoHash, st: &TorrentStatus, paused: bool) -> Times {
    let now = Instant::now();
    let t = w.seen.entry(hash).or_insert_with(|| Times {
        added: unix_now(),
        completed: None,
        completed_at: None,
        active: Duration::ZERO,
        running_since: None,
    });
    // What ran since the last look counts; what runs now is counted from now.
    if let Some(since) = t.running_since.take() {
        t.active += now.saturating_duration_since(since);
    }
    let running = !paused
        && !matches!(
            st.state,
            TorrentState::Paused | TorrentState::Queued | TorrentState::Error
        );
    if running {
        t.running_since = Some(now);
    }
    if st.added_on > 0 {
        t.added = st.added_on as i64;
    }
    if let Some(done) = st.completed_on {
        t.completed = Some(done as i64);
        t.completed_at.get_or_insert(now);
    } else if st.bytes_left == 0 && st.size > 0 && t.completed.is_none() {
        // Complete but not counted by the engine (its event not handled yet): seen now.
        t.completed = Some(unix_now());
        t.completed_at = Some(now);
    }
    *t
}

/// A magnet link for a torrent.
pub fn magnet_uri(hash: &str, name: &str, trackers: &[Vec<String>]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    let mut uri = format!("magnet:?xt=urn:btih:{hash}&dn={}", enc(name));
    for tr in trackers.iter().flatten() {
        uri.push_str("&tr=");
        uri.push_str(&enc(tr));
    }
    uri
}

/// One torrent as `torrents/info` shows it (qBittorrent 4.6's fields and types).
pub fn info_object(st: &TorrentStatus, x: &Extra, t: &Times) -> Map<String, Value> {
    let state = state_name(st, x.paused);
    let completed = st.size.saturating_sub(st.bytes_left);
    let own = &st.share_limits;
    let eff = &st.effective_share_limits;
    let eta = eta(st);
    let save_path = st.save_dir.display().to_string();
    let content_path = st.save_dir.join(&st.name).display().to_string();
    let active_secs = t.active_secs() as i64;
    let tracker_count: usize = x.trackers.iter().map(Vec::len).sum();
    let a = json!({
        "added_on": t.added,
        "amount_left": st.bytes_left,
        "auto_tmm": false,
        "availability": if st.state == TorrentState::Paused { -1.0 } else { st.progress },
        "category": st.category.clone().unwrap_or_default(),
        "completed": completed,
        "completion_on": t.completed.unwrap_or(-1),
        "content_path": content_path,
        "dl_limit": limit_field(st.download_limit),
        "dlspeed": st.download_rate,
        "download_path": "",
        "downloaded": st.downloaded_total,
        "downloaded_session": st.downloaded,
        "eta": eta,
        "f_l_piece_prio": st.first_last_piece_priority,
        "force_start": st.force_start,
        "hash": st.info_hash,
        "inactive_seeding_time_limit": secs_to_minutes(own.inactive_seeding_time),
        "infohash_v1": st.info_hash,
        "infohash_v2": "",
    });
    let b = json!({
        "last_activity": if st.download_rate + st.upload_rate > 0 { unix_now() } else { t.added },
        "magnet_uri": magnet_uri(&st.info_hash, &st.name, &x.trackers),
        "max_inactive_seeding_time": secs_to_minutes(eff.inactive_seeding_time),
        "max_ratio": super::qt_number(eff.ratio),
        "max_seeding_time": secs_to_minutes(eff.seeding_time),
        "name": st.name,
        "num_complete": x.seeds,
        "num_incomplete": x.leechs,
        "num_leechs": x.leechs,
        "num_seeds": x.seeds,
        "priority": x.priority,
        "progress": st.progress,
        "ratio": st.ratio,
        "ratio_limit": super::qt_number(own.ratio),
        "save_path": save_path,
        "seeding_time": st.seeding_time,
        "seeding_time_limit": secs_to_minutes(own.seeding_time),
        "seen_complete": t.completed.unwrap_or(-1),
        "seq_dl": st.sequential,
        "size": st.size,
        "state": state,
        "super_seeding": false,
        "tags": st.tags.join(", "),
        "time_active": active_secs,
        "total_size": st.size,
        "tracker": x.working_tracker,
        "trackers_count": tracker_count,
        "up_limit": limit_field(st.upload_limit),
        "uploaded": st.uploaded_total,
        "uploaded_session": st.uploaded,
        "upspeed": st.upload_rate,
    });
    match super::merge([a, b]) {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Every torrent's `torrents/info` object, by hash.
pub fn all_objects(api: &WebApi, client: &Client) -> Vec<(String, Map<String, Value>)> {
    let statuses = client.list();
    let prio = priorities(&statuses);
    let mut out = Vec::with_capacity(statuses.len());
    for st in statuses {
        let Some(hash) = InfoHash::from_hex(&st.info_hash) else {
            continue;
        };
        let mut x = client.get(hash).map(|t| extra(&t, &st)).unwrap_or_default();
        x.priority = prio.get(&st.info_hash).copied().unwrap_or(0);
        let times = times(&mut api.state(), hash, &st, x.paused);
        out.push((st.info_hash.clone(), info_object(&st, &x, &times)));
    }
    // Forget the times of torrents that left (a set: a seedbox lists thousands, and every
    // `maindata` poll of the web UI comes here).
    let present: std::collections::HashSet<&str> = out.iter().map(|(h, _)| h.as_str()).collect();
    let mut w = api.state();
    w.seen.retain(|h, _| present.contains(h.to_hex().as_str()));
    out
}

/// Whether a torrent's object passes a `filter`; `None` for an unknown filter.
pub fn passes(filter: &str, o: &Map<String, Value>) -> Option<bool> {
    let state = o.get("state").and_then(Value::as_str).unwrap_or("");
    let speed = |k: &str| o.get(k).and_then(Value::as_u64).unwrap_or(0);
    let active = speed("dlspeed") > 0 || speed("upspeed") > 0;
    let paused = state.starts_with("paused") || state.starts_with("stopped");
    Some(match filter {
        "all" => true,
        "downloading" => matches!(
            state,
            "downloading"
                | "stalledDL"
                | "metaDL"
                | "pausedDL"
                | "queuedDL"
                | "checkingDL"
                | "forcedDL"
                | "forcedMetaDL"
        ),
        "seeding" => matches!(
            state,
            "uploading" | "stalledUP" | "queuedUP" | "checkingUP" | "forcedUP"
        ),
        "completed" => is_up(state),
        "paused" | "stopped" => paused,
        "resumed" | "running" => !paused,
        "active" => active,
        "inactive" => !active,
        "stalled" => state == "stalledUP" || state == "stalledDL",
        "stalled_uploading" => state == "stalledUP",
        "stalled_downloading" => state == "stalledDL",
        "errored" => state == "error" || state == "missingFiles",
        "checking" => state.starts_with("checking"),
        "moving" => state == "moving",
        _ => return None,
    })
}

/// `torrents/info` over the objects: filter, category, tag, hashes, sort, reverse, offset,
/// limit, as qBittorrent applies them.
pub fn list(objects: Vec<(String, Map<String, Value>)>, p: &Params) -> Result<Value, Response> {
    let filter = p.get("filter").unwrap_or("all");
    let hashes: Option<Vec<String>> = p
        .get("hashes")
        .filter(|h| !h.eq_ignore_ascii_case("all"))
        .map(|h| {
            h.split('|')
                .map(|s| s.trim().to_ascii_lowercase())
                .collect()
        });
    // qBittorrent: no `category` keeps all, "" keeps those without one; likewise `tag`.
    let category = p.get("category");
    let tag = p.get("tag").map(str::trim);
    let mut rows: Vec<Map<String, Value>> = Vec::new();
    for (hash, o) in objects {
        if !passes(filter, &o).unwrap_or(true) {
            continue;
        }
        let field = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        if category.is_some_and(|c| field("category") != c) {
            continue;
        }
        if let Some(tag) = tag {
            let tags = field("tags");
            let has = if tag.is_empty() {
                tags.is_empty()
            } else {
                tags.split(", ").any(|t| t == tag)
            };
            if !has {
                continue;
            }
        }
        if hashes.as_ref().is_some_and(|hs| !hs.contains(&hash)) {
            continue;
        }
        rows.push(o);
    }
    if let Some(key) = p.get("sort").filter(|k| !k.is_empty()) {
        rows.sort_by(|a, b| compare(a.get(key), b.get(key)));
    }
    if p.flag("reverse") == Some(true) {
        rows.reverse();
    }
    let len = rows.len() as i64;
    let offset = p.int("offset")?.unwrap_or(0);
    let start = if offset < 0 {
        (len + offset).max(0)
    } else {
        offset.min(len)
    };
    let limit = p.int("limit")?.filter(|&l| l > 0).unwrap_or(len);
    let end = (start + limit).min(len);
    Ok(Value::Array(
        rows.into_iter()
            .skip(start as usize)
            .take((end - start) as usize)
            .map(Value::Object)
            .collect(),
    ))
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.to_lowercase().cmp(&y.to_lowercase()),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        _ => Ordering::Equal,
    }
}

/// The peer connection counts a torrent shows, for `properties`.
fn peer_counts(peers: &[PeerInfo]) -> (usize, usize) {
    let seeds = peers.iter().filter(|p| p.progress >= 1.0).count();
    (seeds, peers.len() - seeds)
}

/// `torrents/properties`.
pub fn properties(api: &WebApi, t: &TorrentHandle) -> Result<Value, ClientError> {
    let st = t.status()?;
    let info = t.info()?;
    let meta = t.meta()?;
    let peers = t.peers()?;
    let (seeds, leechs) = peer_counts(&peers);
    let times = times(&mut api.state(), t.info_hash(), &st, t.is_paused()?);
    let elapsed = times.active_secs();
    let limit = |l: Option<u64>| l.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
    let ratio = st.ratio;
    let eta = eta(&st);
    Ok(json!({
        "addition_date": times.added,
        "comment": meta.comment.unwrap_or_default(),
        "completion_date": times.completed.unwrap_or(-1),
        "created_by": meta.created_by.unwrap_or_default(),
        "creation_date": meta.creation_date.unwrap_or(-1),
        "dl_limit": limit(st.download_limit),
        "dl_speed": st.download_rate,
        "dl_speed_avg": st.downloaded.checked_div(elapsed).unwrap_or(0),
        "download_path": "",
        "eta": eta,
        "hash": st.info_hash,
        "infohash_v1": st.info_hash,
        "infohash_v2": "",
        "is_private": info.as_ref().is_some_and(|i| i.is_private()),
        "last_seen": times.completed.unwrap_or(-1),
        "name": st.name,
        "nb_connections": st.peers,
        "nb_connections_limit": -1,
        "peers": leechs,
        "peers_total": leechs,
        "piece_size": info.as_ref().map_or(-1, |i| i64::from(i.lengths().piece_len())),
        "pieces_have": st.pieces_have,
        "pieces_num": if info.is_some() { i64::from(st.pieces) } else { -1 },
        "reannounce": 0,
        "save_path": st.save_dir.display().to_string(),
        "seeding_time": st.seeding_time,
        "seeds": seeds,
        "seeds_total": seeds,
        "share_ratio": ratio,
        "time_elapsed": elapsed,
        "total_downloaded": st.downloaded_total,
        "total_downloaded_session": st.downloaded,
        "total_size": if info.is_some() { st.size as i64 } else { -1 },
        "total_uploaded": st.uploaded_total,
        "total_uploaded_session": st.uploaded,
        "total_wasted": 0,
        "up_limit": limit(st.upload_limit),
        "up_speed": st.upload_rate,
        "up_speed_avg": st.uploaded.checked_div(elapsed).unwrap_or(0),
    }))
}

/// `torrents/trackers`: the three pseudo-trackers qBittorrent lists first (DHT off, PeX on
/// unless private, LSD off), then each tracker with its tier as its last
/// announce left it: `status` 1 not contacted, 2 working, 3 updating, 4 not working; `msg` the
/// tracker's failure reason or warning (what qbit_manage looks for "unregistered" in); the
/// counts -1 when the tracker did not give them.
pub fn trackers(list: &[TrackerStatus], private: bool) -> Value {
    let pseudo = |url: &str, status: u8| {
        json!({
            "url": url, "status": status, "tier": -1, "num_peers": 0, "num_seeds": 0,
            "num_leeches": 0, "num_downloaded": 0,
            "msg": if status == 0 { "This torrent is private" } else { "" },
        })
    };
    let mut out = vec![
        pseudo("** [DHT] **", 0),
        pseudo("** [PeX] **", if private { 0 } else { 2 }),
        pseudo("** [LSD] **", 0),
    ];
    let count = |n: Option<u32>| n.map_or(-1, i64::from);
    for t in list {
        let status = match t.state {
            TrackerState::NotContacted => 1,
            TrackerState::Working => 2,
            TrackerState::Updating => 3,
            TrackerState::NotWorking => 4,
        };
        out.push(json!({
            "url": t.url, "status": status, "tier": t.tier, "num_peers": count(t.peers),
            "num_seeds": count(t.seeds), "num_leeches": count(t.leeches),
            "num_downloaded": count(t.downloaded), "msg": t.message,
        }));
    }
    Value::Array(out)
}

/// `torrents/files`.
pub fn files(t: &TorrentHandle, indexes: Option<&str>) -> Result<Value, ClientError> {
    let Some(info) = t.info()? else {
        return Ok(json!([]));
    };
    let statuses = t.files()?;
    let piece_len = u64::from(info.lengths().piece_len()).max(1);
    let wanted: Option<Vec<usize>> =
        indexes.map(|s| s.split('|').filter_map(|i| i.trim().parse().ok()).collect());
    let mut out = Vec::new();
    let real = info.files().iter().filter(|f| !f.attr.padding);
    for (index, (f, s)) in real.zip(statuses.iter()).enumerate() {
        if wanted.as_ref().is_some_and(|w| !w.contains(&index)) {
            continue;
        }
        let first = f.offset / piece_len;
        let last = if f.length == 0 {
            first
        } else {
            (f.offset + f.length - 1) / piece_len
        };
        let progress = if f.length == 0 {
            1.0
        } else {
            s.done as f64 / f.length as f64
        };
        out.push(json!({
            "index": index,
            "name": s.path,
            "size": f.length,
            "progress": progress,
            "priority": s.priority.qbt(),
            "is_seed": s.done == f.length,
            "piece_range": [first, last],
            "availability": if s.done == f.length { 1.0 } else { progress },
        }));
    }
    Ok(Value::Array(out))
}

/// Splits a comma-separated list of tags (qBittorrent's `tags` parameters), trimmed, empty
/// ones left out.
pub fn tag_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// What a `torrents/add` brings in. Without `savepath`, a torrent with a category that has a
/// save path goes there, else to the default save path.
fn add_options(api: &WebApi, client: &Client, p: &Params) -> Result<AddTorrent, Response> {
    let mut a = AddTorrent::magnet(String::new());
    let category = p.get("category").map(str::trim).filter(|c| !c.is_empty());
    if let Some(c) = category {
        // qBittorrent creates an unknown category on add; refuses a malformed name.
        if crate::client::policy::check_category_name(c).is_err() {
            return Err(bad_request("Incorrect category name"));
        }
        a.category = Some(c.to_string());
    }
    let known = category.and_then(|c| client.categories().into_iter().find(|k| k.name == c));
    if let (Some(c), None) = (category, &known) {
        // The engine creates a category on add only when it picks the save folder: here
        // the WebAPI picks it, so the category is created first.
        let _ = client.create_category(c, None);
    }
    if let Some(dir) = p.get("savepath").filter(|s| !s.is_empty()) {
        a.save_dir = Some(dir.into());
    } else {
        let cat_path = known.and_then(|k| k.save_path);
        a.save_dir = Some(cat_path.unwrap_or_else(|| api.state().settings.save_path.clone()));
    }
    a.tags = tag_list(p.get("tags").unwrap_or(""))
        .into_iter()
        .filter(|t| crate::client::policy::check_tag(t).is_ok())
        .collect();
    a.paused = p.flag("stopped").or(p.flag("paused")).unwrap_or(false);
    // qBittorrent's skip_checking is libtorrent's seed mode: serve at once, verify each
    // piece the first time it is read.
    a.seed_mode = p.flag("skip_checking").unwrap_or(false);
    a.upload_limit = p.int("upLimit")?.and_then(limit_of);
    a.download_limit = p.int("dlLimit")?.and_then(limit_of);
    a.share_limits = share_limits_of(p)?;
    a.label = Some("qbt".into());
    a.sequential = p.flag("sequentialDownload").unwrap_or(false);
    a.first_last_piece_priority = p.flag("firstLastPiecePrio").unwrap_or(false);
    for key in [
        "rename",
        "autoTMM",
        "addToTopOfQueue",
        "forced",
        "contentLayout",
        "root_folder",
        "downloadPath",
        "useDownloadPath",
        "stopCondition",
    ] {
        if let Some(v) = p.get(key).filter(|v| !v.is_empty() && *v != "false") {
            api.log(
                log::WARNING,
                format!("torrents/add: `{key}={v}` is not supported yet and was ignored"),
            );
        }
    }
    Ok(a)
}

/// Share limits from `ratioLimit`, `seedingTimeLimit` and `inactiveSeedingTimeLimit`
/// (minutes); each absent one is -2 (the client's).
pub fn share_limits_of(p: &Params) -> Result<ShareLimits, Response> {
    let ratio = match p.get("ratioLimit").map(str::trim).filter(|v| !v.is_empty()) {
        None => -2.0,
        Some(v) => ratio_limit_of(
            v.parse::<f64>()
                .map_err(|_| bad_request("`ratioLimit` must be a number"))?,
        ),
    };
    let time = |key: &str| -> Result<i64, Response> { Ok(p.int(key)?.map_or(-2, minutes_to_secs)) };
    Ok(ShareLimits {
        ratio,
        seeding_time: time("seedingTimeLimit")?,
        inactive_seeding_time: time("inactiveSeedingTimeLimit")?,
        ..ShareLimits::USE_GLOBAL
    })
}

/// `torrents/add`: `Ok.` when at least one was added, else `Fails.` (qBittorrent 4.x).
fn add(api: &WebApi, client: &Client, p: &Params) -> Result<Response, Response> {
    let base = add_options(api, client, p)?;
    let mut adds = Vec::new();
    for url in p
        .get("urls")
        .unwrap_or("")
        .split(['\n', '\r'])
        .map(str::trim)
        .filter(|u| !u.is_empty())
    {
        let mut a = base.clone();
        if url.starts_with("magnet:") {
            a.source = crate::client::TorrentSource::Magnet(url.to_string());
        } else if InfoHash::from_hex(url).is_some() {
            a.source = crate::client::TorrentSource::Magnet(format!("magnet:?xt=urn:btih:{url}"));
        } else {
            api.log(
                log::WARNING,
                format!("torrents/add: cannot fetch `{url}`: only magnet links and info hashes"),
            );
            continue;
        }
        adds.push(a);
    }
    for (_, bytes) in &p.files {
        let mut a = base.clone();
        a.source = crate::client::TorrentSource::Bytes(bytes.clone());
        adds.push(a);
    }
    if adds.is_empty() {
        return Ok(text(200, "Fails."));
    }
    let mut any = false;
    for r in client.add_many(adds) {
        match r {
            Ok(t) => {
                any = true;
                api.log(
                    log::NORMAL,
                    format!("Added torrent {}", t.info_hash().to_hex()),
                );
            }
            Err(e) => api.log(log::WARNING, format!("torrents/add: {e}")),
        }
    }
    Ok(text(200, if any { "Ok." } else { "Fails." }))
}

/// Runs an action on each selected torrent, ignoring the ones it does not apply to.
fn each(
    client: &Client,
    p: &Params,
    f: impl Fn(&TorrentHandle) -> Result<(), ClientError>,
) -> Result<Response, Response> {
    for t in select(client, p)? {
        let _ = f(&t);
    }
    Ok(text(200, ""))
}

/// Answers `torrents/<name>`; `None` for a method not served.
pub fn handle(
    api: &WebApi,
    client: &Client,
    name: &str,
    p: &Params,
    post: bool,
) -> Option<Response> {
    let fail = |e: ClientError| match e {
        ClientError::UnknownTorrent(_) => not_found(),
        e => text(500, e.to_string()),
    };
    let r: Result<Response, Response> = match name {
        "info" => list(all_objects(api, client), p).map(|v| super::json(&v)),
        "properties" => one(client, p).and_then(|t| properties(api, &t).map_err(fail)).map(|v| super::json(&v)),
        "trackers" => one(client, p).and_then(|t| {
            let list = t.tracker_status().map_err(fail)?;
            let private = t.info().ok().flatten().is_some_and(|i| i.is_private());
            Ok(super::json(&trackers(&list, private)))
        }),
        "webseeds" => one(client, p).map(|_| super::json(&json!([]))),
        "files" => one(client, p)
            .and_then(|t| files(&t, p.get("indexes")).map_err(fail))
            .map(|v| super::json(&v)),
        "pieceStates" => one(client, p).and_then(|t| {
            let pieces = t.pieces().map_err(fail)?;
            let v: Vec<u8> = pieces.iter().map(|&h| if h { 2 } else { 0 }).collect();
            Ok(super::json(&json!(v)))
        }),
        "pieceHashes" => one(client, p).and_then(|t| {
            let info = t.info().map_err(fail)?;
            let v: Vec<String> = info.map_or_else(Vec::new, |i| {
                i.piece_hashes()
                    .iter()
                    .map(|h| crate::core::hex::encode(h))
                    .collect()
            });
            Ok(super::json(&json!(v)))
        }),
        "add" => need_post(post).and_then(|()| add(api, client, p)),
        "delete" => need_post(post).and_then(|()| {
            let delete = p.flag("deleteFiles").unwrap_or(false);
            for t in select(client, p)? {
                if t.remove(delete).is_ok() {
                    api.log(
                        log::NORMAL,
                        format!(
                            "Removed torrent {}{}",
                            t.info_hash().to_hex(),
                            if delete { " and its files" } else { "" }
                        ),
                    );
                }
            }
            Ok(text(200, ""))
        }),
        "pause" | "stop" => need_post(post).and_then(|()| each(client, p, TorrentHandle::pause)),
        "resume" | "start" => need_post(post).and_then(|()| each(client, p, TorrentHandle::resume)),
        "setUploadLimit" | "setDownloadLimit" => need_post(post).and_then(|()| {
            let limit = limit_of(p.int("limit")?.ok_or_else(|| bad_request("Missing required parameter: limit"))?);
            let up = name == "setUploadLimit";
            each(client, p, |t| {
                let st = t.status()?;
                if up {
                    t.set_limits(limit, st.download_limit)
                } else {
                    t.set_limits(st.upload_limit, limit)
                }
            })
        }),
        "uploadLimit" | "downloadLimit" => select(client, p).map(|ts| {
            let mut m = Map::new();
            for t in ts {
                if let Ok(st) = t.status() {
                    let l = if name == "uploadLimit" { st.upload_limit } else { st.download_limit };
                    m.insert(st.info_hash, json!(limit_field(l)));
                }
            }
            super::json(&Value::Object(m))
        }),
        "addPeers" => need_post(post).and_then(|()| {
            let peers: Vec<SocketAddr> = p
                .required("peers")?
                .split('|')
                .filter_map(|s| s.trim().parse().ok())
                .collect();
            if peers.is_empty() {
                return Err(bad_request("No valid peers were specified"));
            }
            let mut m = Map::new();
            for t in select(client, p)? {
                let ok = t.add_peers(&peers).is_ok();
                m.insert(
                    t.info_hash().to_hex(),
                    json!({ "added": if ok { peers.len() } else { 0 }, "failed": if ok { 0 } else { peers.len() } }),
                );
            }
            Ok(super::json(&Value::Object(m)))
        }),
        "filePrio" => need_post(post).and_then(|()| file_prio(client, p)),
        "toggleSequentialDownload" => need_post(post).and_then(|()| {
            each(client, p, |t| t.set_sequential(!t.status()?.sequential))
        }),
        "toggleFirstLastPiecePrio" => need_post(post).and_then(|()| {
            each(client, p, |t| {
                t.set_first_last_piece_priority(!t.status()?.first_last_piece_priority)
            })
        }),
        "categories" => Ok(super::json(&categories_json(&client.categories()))),
        "createCategory" | "editCategory" => {
            need_post(post).and_then(|()| edit_category(client, p, name == "createCategory"))
        }
        "removeCategories" => need_post(post).and_then(|()| {
            let names: Vec<String> = p
                .required("categories")?
                .split('\n')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            client
                .remove_categories(&names)
                .map_err(|e| text(500, e.to_string()))?;
            Ok(text(200, ""))
        }),
        "setCategory" => need_post(post).and_then(|()| {
            let category = p.required("category")?.trim();
            let ts = select(client, p)?;
            if !ts.is_empty()
                && !category.is_empty()
                && !client.categories().iter().any(|c| c.name == category)
            {
                return Err(text(409, "Incorrect category name"));
            }
            let c = Some(category).filter(|c| !c.is_empty());
            for t in ts {
                let _ = t.set_category(c);
            }
            Ok(text(200, ""))
        }),
        "tags" => Ok(super::json(&json!(client.tags()))),
        "createTags" | "deleteTags" => need_post(post).and_then(|()| {
            let tags = tag_list(p.required("tags")?);
            let r = if name == "createTags" {
                let ok: Vec<String> = tags
                    .into_iter()
                    .filter(|t| crate::client::policy::check_tag(t).is_ok())
                    .collect();
                client.create_tags(&ok)
            } else {
                client.delete_tags(&tags)
            };
            r.map_err(|e| text(500, e.to_string()))?;
            Ok(text(200, ""))
        }),
        "addTags" | "removeTags" => need_post(post).and_then(|()| {
            let tags = if name == "addTags" {
                tag_list(p.required("tags")?)
            } else {
                tag_list(p.get("tags").unwrap_or(""))
            };
            if name == "addTags" {
                let ok: Vec<String> = tags
                    .into_iter()
                    .filter(|t| crate::client::policy::check_tag(t).is_ok())
                    .collect();
                each(client, p, |t| t.add_tags(&ok))
            } else {
                // qBittorrent: no tags named takes all of them off.
                each(client, p, |t| {
                    if tags.is_empty() {
                        t.remove_tags(&t.status()?.tags)
                    } else {
                        t.remove_tags(&tags)
                    }
                })
            }
        }),
        "setShareLimits" => need_post(post).and_then(|()| {
            p.required("ratioLimit")?;
            p.required("seedingTimeLimit")?;
            let limits = share_limits_of(p)?;
            each(client, p, |t| t.set_share_limits(limits))
        }),
        "increasePrio" | "decreasePrio" | "topPrio" | "bottomPrio" => {
            need_post(post).and_then(|()| queue_move(client, p, name))
        }
        "setForceStart" => need_post(post).and_then(|()| {
            p.required("value")?;
            let on = p.flag("value").unwrap_or(false);
            each(client, p, |t| {
                t.set_force_start(on)?;
                // qBittorrent resumes it either way (forced, or back in the queue).
                if t.is_paused()? {
                    t.resume()?;
                }
                Ok(())
            })
        }),
        "recheck" => need_post(post).and_then(|()| {
            // Each torrent shows checking when this answers; the hashing runs beside.
            for t in select(client, p)? {
                let _ = t.start_recheck();
            }
            Ok(text(200, ""))
        }),
        "setLocation" => need_post(post).and_then(|()| set_location(client, p)),
        "reannounce" => need_post(post).and_then(|()| each(client, p, TorrentHandle::reannounce)),
        "count" => Ok(text(200, client.torrents().len().to_string())),
        _ => return None,
    };
    Some(either(r))
}

/// `torrents/categories`: each category by name, with its `name` and `savePath` ("" for the
/// default save path), as qBittorrent 4.6.
pub fn categories_json(cats: &[crate::client::Category]) -> Value {
    let mut m = Map::new();
    for c in cats {
        let path = c
            .save_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        m.insert(c.name.clone(), json!({ "name": c.name, "savePath": path }));
    }
    Value::Object(m)
}

/// `torrents/createCategory` (`create`) and `torrents/editCategory` (`savePath` required):
/// 400 for an empty name, 409 for a malformed one (create), one that exists (create) or one
/// that does not (edit), as qBittorrent.
fn edit_category(client: &Client, p: &Params, create: bool) -> Result<Response, Response> {
    let name = p.required("category")?.trim();
    if name.is_empty() {
        return Err(bad_request("Category cannot be empty"));
    }
    if create && crate::client::policy::check_category_name(name).is_err() {
        return Err(text(409, "Incorrect category name"));
    }
    if !create {
        p.required("savePath")?;
    }
    let path = p
        .get("savePath")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(std::path::PathBuf::from);
    if create {
        client
            .create_category(name, path)
            .map_err(|_| text(409, "Unable to create category"))?;
    } else {
        client
            .edit_category(name, path)
            .map_err(|_| text(409, "Unable to edit category"))?;
    }
    Ok(text(200, ""))
}

/// `torrents/increasePrio`, `decreasePrio`, `topPrio`, `bottomPrio`: 409 while queueing is
/// off, as qBittorrent. The selected torrents keep their order among themselves.
fn queue_move(client: &Client, p: &Params, name: &str) -> Result<Response, Response> {
    let mut ts: Vec<(usize, TorrentHandle)> = select(client, p)?
        .into_iter()
        .filter_map(|t| t.status().ok().map(|s| (s.queue_position, t)))
        .collect();
    if !client.queue_config().enabled {
        return Err(text(409, "Torrent queueing must be enabled"));
    }
    ts.sort_by_key(|(pos, _)| *pos);
    let (to, reverse) = match name {
        "increasePrio" => (QueueMove::Up, false),
        "decreasePrio" => (QueueMove::Down, true),
        "topPrio" => (QueueMove::Top, true),
        _ => (QueueMove::Bottom, false),
    };
    if reverse {
        ts.reverse();
    }
    for (_, t) in ts {
        let _ = t.queue_move(to);
    }
    Ok(text(200, ""))
}

/// `torrents/filePrio`: priority 0 (do not download), 1 (normal), 6 (high) or 7 (maximal)
/// for the files whose indices `id` lists (`|`-separated).
fn file_prio(client: &Client, p: &Params) -> Result<Response, Response> {
    let t = one(client, p)?;
    let prio = p
        .int("priority")?
        .ok_or_else(|| bad_request("Missing required parameter: priority"))?;
    let prio = FilePriority::from_qbt(prio).ok_or_else(|| bad_request("Priority is not valid"))?;
    let info = t.info().map_err(|_| not_found())?;
    let files = t.files().map_err(|_| not_found())?;
    let Some(info) = info.filter(|_| !files.is_empty()) else {
        return Err(text(409, "Torrent's metadata has not yet downloaded"));
    };
    // The engine counts padding files; the WebAPI does not.
    let real: Vec<usize> = (0..info.files().len())
        .filter(|&i| !info.files()[i].attr.padding)
        .collect();
    // Padding files are never downloaded; their priority does not matter.
    let mut prios: Vec<FilePriority> = vec![FilePriority::Normal; info.files().len()];
    for (f, &i) in files.iter().zip(&real) {
        prios[i] = f.priority;
    }
    for id in p.required("id")?.split('|') {
        let i: usize = id
            .trim()
            .parse()
            .map_err(|_| bad_request(format!("File IDs must be integers: {id}")))?;
        let slot = real
            .get(i)
            .and_then(|&r| prios.get_mut(r))
            .ok_or_else(|| text(409, format!("File ID is not valid: {i}")))?;
        *slot = prio;
    }
    t.set_file_priorities(prios)
        .map_err(|e| text(409, e.to_string()))?;
    Ok(text(200, ""))
}

/// `torrents/setLocation`: moves each selected torrent's data (`TorrentHandle::move_storage`;
/// the move runs in the background, the torrent `moving` meanwhile). As qBittorrent: 400 for
/// an empty location, 409 when it cannot be created, 403 when it cannot be written.
fn set_location(client: &Client, p: &Params) -> Result<Response, Response> {
    let location = p.required("location")?.trim().to_string();
    if location.is_empty() {
        return Err(bad_request("Save path cannot be empty"));
    }
    let dir = std::path::Path::new(&location);
    let refused = |e: ClientError| match e {
        ClientError::Io {
            action: "write", ..
        } => text(403, "Cannot write to directory"),
        ClientError::Io { .. } => text(409, "Cannot make save path"),
        e => text(409, e.to_string()),
    };
    if dir.is_absolute() {
        std::fs::create_dir_all(dir).map_err(|_| text(409, "Cannot make save path"))?;
    }
    for t in select(client, p)? {
        match t.move_storage(dir) {
            Ok(()) => {}
            Err(e @ ClientError::Io { .. }) => return Err(refused(e)),
            // Not applicable to this one (no metadata, moving already, inside its folder).
            Err(_) => {}
        }
    }
    Ok(text(200, ""))
}
