//! `sync/maindata` (with `rid` deltas) and `sync/torrentPeers`.
//!
//! Each `maindata` answer gets a new `rid` and its state is kept in a small ring
//! ([`KEPT_SNAPSHOTS`], shared by all clients, so a few tools polling at once each still get
//! deltas). A request with `rid` 0 or one no longer kept gets a full update, as qBittorrent
//! answers an unknown `rid`. A delta carries the torrents that are new (whole), the fields that
//! changed of the others, `torrents_removed`, the categories new or changed (`categories`) and
//! gone (`categories_removed`), the tags new (`tags`) and gone (`tags_removed`), and the
//! `server_state` fields that changed.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{json, Map, Value};

use super::{limit_field, torrents, transfer, Params, WebApi};
use crate::api::Response;
use crate::client::{Client, PeerInfo};

/// `maindata` states kept for deltas.
pub const KEPT_SNAPSHOTS: usize = 8;

/// What one `maindata` answer showed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Each torrent's fields, by hash.
    pub torrents: BTreeMap<String, Map<String, Value>>,
    /// The server state.
    pub server_state: Map<String, Value>,
    /// The categories, as `torrents/categories` shows them.
    pub categories: Map<String, Value>,
    /// The tags.
    pub tags: Vec<String>,
}

/// The `rid` counter and the states kept.
#[derive(Debug, Default)]
pub struct SyncState {
    last_rid: i64,
    kept: VecDeque<(i64, Snapshot)>,
}

impl SyncState {
    /// The answer to a `maindata` request with `rid` for the state `now`, remembering it.
    pub fn answer(&mut self, rid: i64, now: Snapshot) -> Value {
        self.last_rid += 1;
        let new_rid = self.last_rid;
        let before = self
            .kept
            .iter()
            .find(|(r, _)| rid != 0 && *r == rid)
            .map(|(_, s)| s);
        let v = match before {
            None => full(new_rid, &now),
            Some(old) => delta(new_rid, old, &now),
        };
        if self.kept.len() == KEPT_SNAPSHOTS {
            self.kept.pop_front();
        }
        self.kept.push_back((new_rid, now));
        v
    }

    /// A fresh `rid` (for `torrentPeers`).
    pub fn next_rid(&mut self) -> i64 {
        self.last_rid += 1;
        self.last_rid
    }
}

/// The trackers map (`url` -> hashes) of a full update.
fn trackers_map(now: &Snapshot) -> Map<String, Value> {
    let mut m: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (hash, t) in &now.torrents {
        if let Some(tr) = t.get("tracker").and_then(Value::as_str) {
            if !tr.is_empty() {
                m.entry(tr.to_string()).or_default().push(json!(hash));
            }
        }
    }
    m.into_iter().map(|(k, v)| (k, Value::Array(v))).collect()
}

/// A full update.
pub fn full(rid: i64, now: &Snapshot) -> Value {
    let torrents: Map<String, Value> = now
        .torrents
        .iter()
        .map(|(h, t)| (h.clone(), Value::Object(t.clone())))
        .collect();
    json!({
        "rid": rid,
        "full_update": true,
        "torrents": torrents,
        "categories": now.categories,
        "tags": now.tags,
        "trackers": trackers_map(now),
        "server_state": now.server_state,
    })
}

/// The fields of `new` that differ from `old`.
fn changed(old: &Map<String, Value>, new: &Map<String, Value>) -> Map<String, Value> {
    new.iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A delta from `old` to `now`.
pub fn delta(rid: i64, old: &Snapshot, now: &Snapshot) -> Value {
    let mut out = Map::new();
    out.insert("rid".into(), json!(rid));
    let mut torrents = Map::new();
    for (hash, t) in &now.torrents {
        let c = match old.torrents.get(hash) {
            None => t.clone(),
            Some(o) => changed(o, t),
        };
        if !c.is_empty() {
            torrents.insert(hash.clone(), Value::Object(c));
        }
    }
    if !torrents.is_empty() {
        out.insert("torrents".into(), Value::Object(torrents));
    }
    let removed: Vec<&String> = old
        .torrents
        .keys()
        .filter(|h| !now.torrents.contains_key(*h))
        .collect();
    if !removed.is_empty() {
        out.insert("torrents_removed".into(), json!(removed));
    }
    let cats = changed(&old.categories, &now.categories);
    if !cats.is_empty() {
        out.insert("categories".into(), Value::Object(cats));
    }
    let cats_removed: Vec<&String> = old
        .categories
        .keys()
        .filter(|c| !now.categories.contains_key(*c))
        .collect();
    if !cats_removed.is_empty() {
        out.insert("categories_removed".into(), json!(cats_removed));
    }
    let tags: Vec<&String> = now.tags.iter().filter(|t| !old.tags.contains(t)).collect();
    if !tags.is_empty() {
        out.insert("tags".into(), json!(tags));
    }
    let tags_removed: Vec<&String> = old.tags.iter().filter(|t| !now.tags.contains(t)).collect();
    if !tags_removed.is_empty() {
        out.insert("tags_removed".into(), json!(tags_removed));
    }
    let s = changed(&old.server_state, &now.server_state);
    if !s.is_empty() {
        out.insert("server_state".into(), Value::Object(s));
    }
    Value::Object(out)
}

/// The `server_state` of `maindata`.
pub fn server_state(api: &WebApi, client: &Client) -> Map<String, Value> {
    let (dl_speed, dl, up_speed, ul) = transfer::totals(api, client);
    let m = client.metrics();
    let queueing = client.queue_config().enabled;
    let w = api.state();
    // Free space where torrents go by default (0 when it cannot be read).
    let free = std::fs::File::open(&w.settings.save_path)
        .and_then(|f| crate::storage::sys::free_bytes(std::os::fd::AsFd::as_fd(&f)))
        .unwrap_or(0);
    let ratio = if dl > 0 { ul as f64 / dl as f64 } else { 0.0 };
    let v = json!({
        "alltime_dl": dl,
        "alltime_ul": ul,
        "average_time_queue": 0,
        "connection_status": "connected",
        "dht_nodes": m.dht.as_ref().map_or(0, |d| d.nodes_v4 + d.nodes_v6),
        "dl_info_data": dl,
        "dl_info_speed": dl_speed,
        "dl_rate_limit": limit_field(w.settings.download_limit),
        "free_space_on_disk": free,
        "global_ratio": format!("{ratio:.2}"),
        "queued_io_jobs": 0,
        "queueing": queueing,
        "read_cache_hits": "0",
        "read_cache_overload": "0",
        "refresh_interval": 1500,
        "total_buffers_size": m.upload_buffered,
        "total_peer_connections": m.peers_connected,
        "total_queued_size": 0,
        "total_wasted_session": m.wasted,
        "up_info_data": ul,
        "up_info_speed": up_speed,
        "up_rate_limit": limit_field(w.settings.upload_limit),
        "use_alt_speed_limits": false,
        "use_subcategories": false,
        "write_cache_overload": "0",
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// qBittorrent's peer flags and their descriptions.
pub fn peer_flags(p: &PeerInfo) -> (String, String) {
    let mut flags = Vec::new();
    if p.am_interested && !p.peer_choking {
        flags.push(("D", "Interested (local) and unchoked (peer)"));
    } else if p.am_interested {
        flags.push(("d", "Interested (local) and choked (peer)"));
    }
    if p.peer_interested && !p.am_choking {
        flags.push(("U", "Interested (peer) and unchoked (local)"));
    } else if p.peer_interested {
        flags.push(("u", "Interested (peer) and choked (local)"));
    }
    if !p.am_interested && !p.peer_choking {
        flags.push(("K", "Not interested (local) and unchoked (peer)"));
    }
    if !p.peer_interested && !p.am_choking {
        flags.push(("?", "Not interested (peer) and unchoked (local)"));
    }
    if p.snubbed {
        flags.push(("S", "Peer snubbed"));
    }
    if !p.outgoing {
        flags.push(("I", "Incoming connection"));
    }
    if p.encryption != "none" {
        flags.push(("E", "Encrypted traffic"));
    }
    let f: Vec<&str> = flags.iter().map(|(f, _)| *f).collect();
    let d: Vec<String> = flags.iter().map(|(f, d)| format!("{f} = {d}")).collect();
    (f.join(" "), d.join("\n"))
}

/// One peer as `torrentPeers` shows it.
pub fn peer_object(p: &PeerInfo) -> Value {
    let (ip, port) = match p.addr.parse::<std::net::SocketAddr>() {
        Ok(a) => (a.ip().to_string(), a.port()),
        Err(_) => (p.addr.clone(), 0),
    };
    let (flags, flags_desc) = peer_flags(p);
    json!({
        "client": p.client.clone().unwrap_or_default(),
        "connection": "BT",
        "country": "",
        "country_code": "",
        "dl_speed": p.download_rate,
        "downloaded": 0,
        "files": "",
        "flags": flags,
        "flags_desc": flags_desc,
        "ip": ip,
        "peer_id_client": p.client.clone().unwrap_or_default(),
        "port": port,
        "progress": p.progress,
        "relevance": if p.am_interested { 1.0 } else { 0.0 },
        "up_speed": p.upload_rate,
        "uploaded": 0,
    })
}

/// Answers `sync/<name>`.
pub fn handle(api: &WebApi, client: &Client, name: &str, p: &Params) -> Option<Response> {
    let rid = match p.int("rid") {
        Ok(r) => r.unwrap_or(0),
        Err(r) => return Some(r),
    };
    match name {
        "maindata" => {
            let now = Snapshot {
                // Keyed by hash, without the `hash` field: qBittorrent leaves it out here.
                torrents: torrents::all_objects(api, client)
                    .into_iter()
                    .map(|(h, mut t)| {
                        t.remove("hash");
                        (h, t)
                    })
                    .collect(),
                server_state: server_state(api, client),
                categories: match torrents::categories_json(&client.categories()) {
                    Value::Object(m) => m,
                    _ => Map::new(),
                },
                tags: client.tags(),
            };
            let v = api.state().sync.answer(rid, now);
            Some(super::json(&v))
        }
        "torrentPeers" => Some(super::either(super::one(client, p).map(|t| {
            let peers: Map<String, Value> = t
                .peers()
                .unwrap_or_default()
                .iter()
                .map(|p| (p.addr.clone(), peer_object(p)))
                .collect();
            let rid = api.state().sync.next_rid();
            super::json(&json!({
                "rid": rid,
                "full_update": true,
                "show_flags": true,
                "peers": peers,
            }))
        }))),
        _ => None,
    }
}
