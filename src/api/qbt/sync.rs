//! `sync/maindata` (with `rid` deltas) and `sync/torrentPeers`.
//!
//! Each `maindata` answer gets a new `rid` and its state is kept in a small ring
//! ([`KEPT_SNAPSHOTS`], shared by all clients, so a few tools polling at once each still get
//! deltas), each torrent as a fingerprint of its fields (a hash of each name and value), not
//! its whole object: 10,000 torrents would otherwise keep 70 MB per state. A request with `rid` 0 or one no longer kept gets a full update, as qBittorrent
//! answers an unknown `rid`. A delta carries the torrents that are new (whole), the fields that
//! changed of the others, `torrents_removed`, the categories new or changed (`categories`) and
//! gone (`categories_removed`), the tags new (`tags`) and gone (`tags_removed`), and the
//! `server_state` fields that changed.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, VecDeque};
use std::hash::{Hash, Hasher};

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
    kept: VecDeque<(i64, Kept)>,
}

/// A torrent's fields as kept for later deltas: the 64-bit hash of each field's name and of
/// its value, in the object's order. A whole object is about 55 fields and 5 KiB of
/// `Value`s; this is 880 bytes, so the ring of [`KEPT_SNAPSHOTS`] states of 10,000 torrents
/// is 70 MB smaller per state (measured in perf/2026-12-03-webui.md). A changed field is
/// left out of a delta only if its two 64-bit hashes collide.
type Fingerprint = Box<[(u64, u64)]>;

/// What a `maindata` answer showed, as kept for the deltas after it: the torrents as
/// [`Fingerprint`]s, the rest (a few dozen values) whole.
#[derive(Debug, Default)]
struct Kept {
    torrents: BTreeMap<String, Fingerprint>,
    server_state: Map<String, Value>,
    categories: Map<String, Value>,
    tags: Vec<String>,
}

impl Kept {
    fn of(s: &Snapshot) -> Kept {
        Kept {
            torrents: fingerprints(s),
            server_state: s.server_state.clone(),
            categories: s.categories.clone(),
            tags: s.tags.clone(),
        }
    }
}

fn fingerprints(s: &Snapshot) -> BTreeMap<String, Fingerprint> {
    s.torrents
        .iter()
        .map(|(h, t)| (h.clone(), fingerprint(t)))
        .collect()
}

fn fingerprint(m: &Map<String, Value>) -> Fingerprint {
    m.iter()
        .map(|(k, v)| {
            let mut h = DefaultHasher::new();
            k.hash(&mut h);
            let key = h.finish();
            let mut h = DefaultHasher::new();
            hash_value(v, &mut h);
            (key, h.finish())
        })
        .collect()
}

/// Hashes a JSON value so that values equal by `==` hash alike.
fn hash_value(v: &Value, h: &mut DefaultHasher) {
    match v {
        Value::Null => 0u8.hash(h),
        Value::Bool(b) => (1u8, b).hash(h),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                (2u8, i).hash(h)
            } else if let Some(u) = n.as_u64() {
                (3u8, u).hash(h)
            } else {
                (4u8, n.as_f64().map_or(0, f64::to_bits)).hash(h)
            }
        }
        Value::String(s) => (5u8, s).hash(h),
        Value::Array(a) => {
            (6u8, a.len()).hash(h);
            for x in a {
                hash_value(x, h);
            }
        }
        Value::Object(m) => {
            (7u8, m.len()).hash(h);
            for (k, x) in m {
                k.hash(h);
                hash_value(x, h);
            }
        }
    }
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
        let prints = fingerprints(&now);
        let v = match before {
            None => full(new_rid, &now),
            Some(old) => delta_from(new_rid, old, &now, &prints),
        };
        if self.kept.len() == KEPT_SNAPSHOTS {
            self.kept.pop_front();
        }
        let Snapshot {
            server_state,
            categories,
            tags,
            ..
        } = now;
        self.kept.push_back((
            new_rid,
            Kept {
                torrents: prints,
                server_state,
                categories,
                tags,
            },
        ));
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

/// The fields of `new` (whose fingerprint is `now`) that differ from the fingerprint `old`.
fn changed_since(
    old: &[(u64, u64)],
    now: &[(u64, u64)],
    new: &Map<String, Value>,
) -> Map<String, Value> {
    new.iter()
        .zip(now)
        .enumerate()
        .filter(|&(i, (_, &(key, value)))| {
            // The same fields in the same order, as a rule: found at the same place.
            let before = match old.get(i) {
                Some(&(k, v)) if k == key => Some(v),
                _ => old.iter().find(|&&(k, _)| k == key).map(|&(_, v)| v),
            };
            before != Some(value)
        })
        .map(|(_, ((k, v), _))| (k.clone(), v.clone()))
        .collect()
}

/// A delta from `old` to `now`.
pub fn delta(rid: i64, old: &Snapshot, now: &Snapshot) -> Value {
    delta_from(rid, &Kept::of(old), now, &fingerprints(now))
}

/// A delta from what was kept of an answer to `now` (whose fingerprints are `prints`).
fn delta_from(
    rid: i64,
    old: &Kept,
    now: &Snapshot,
    prints: &BTreeMap<String, Fingerprint>,
) -> Value {
    let mut out = Map::new();
    out.insert("rid".into(), json!(rid));
    let mut torrents = Map::new();
    for (hash, t) in &now.torrents {
        let c = match (old.torrents.get(hash), prints.get(hash)) {
            (Some(o), Some(p)) => changed_since(o, p, t),
            _ => t.clone(),
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

#[cfg(test)]
mod fingerprint_tests {
    use super::*;

    #[test]
    fn a_delta_from_fingerprints_names_exactly_the_fields_that_changed() {
        let a = json!({"x": 1, "y": "s", "z": [1, {"k": 2}], "f": 1.5, "b": true});
        let a = a.as_object().unwrap();
        for change in [
            json!({"y": "t"}),
            json!({"z": [1, {"k": 3}]}),
            json!({"x": 1.0}),
            json!({"f": 1.25, "b": false}),
            json!({"new": null}),
            json!({}),
        ] {
            let mut b = a.clone();
            b.extend(change.as_object().unwrap().clone());
            let got = changed_since(&fingerprint(a), &fingerprint(&b), &b);
            assert_eq!(got, changed(a, &b), "{change}");
            assert_eq!(Value::Object(got), change);
        }
    }
}
