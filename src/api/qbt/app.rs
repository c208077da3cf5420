//! `app/*`: versions, build information, preferences, the default save path.

use serde_json::{json, Map, Value};

use super::{
    bad_request, either, limit_field, limit_of, log, need_post, text, transfer, Params, WebApi,
    APP_VERSION, WEBAPI_VERSION,
};
use crate::api::Response;
use crate::client::{Client, QueueConfig, ShareAction, ShareLimits};

/// `app/buildInfo`: qBittorrent's keys; the engine is ringtorrent, not libtorrent.
pub fn build_info() -> Value {
    json!({
        "qt": "none",
        "libtorrent": format!("ringtorrent {}", env!("CARGO_PKG_VERSION")),
        "boost": "none",
        "openssl": "none",
        "zlib": "none",
        "bitness": usize::BITS,
    })
}

/// qBittorrent's `max_ratio_act`: 0 stop, 1 remove, 3 remove with the files (2, super
/// seeding, has no engine action).
pub fn share_action_code(a: ShareAction) -> i64 {
    match a {
        ShareAction::Default | ShareAction::Stop => 0,
        ShareAction::Remove => 1,
        ShareAction::RemoveWithData => 3,
    }
}

/// The engine's action for a `max_ratio_act`; `None` for one it has not (2: super seeding).
pub fn share_action_of(code: i64) -> Option<ShareAction> {
    match code {
        0 => Some(ShareAction::Stop),
        1 => Some(ShareAction::Remove),
        3 => Some(ShareAction::RemoveWithData),
        _ => None,
    }
}

/// `app/preferences`: what clients read, from what the engine has (queueing and share limits
/// from the client; limits are bytes per second, 0 for none; times in minutes).
pub fn preferences(api: &WebApi, client: &Client) -> Value {
    preferences_with(api, &client.queue_config(), &client.share_limits())
}

/// `app/preferences` with the client's queueing and share limits given.
pub fn preferences_with(api: &WebApi, q: &QueueConfig, sl: &ShareLimits) -> Value {
    let kib = |b: u64| i64::try_from(b / 1024).unwrap_or(i64::MAX);
    let minutes = super::torrents::secs_to_minutes;
    let w = api.state();
    let s = &w.settings;
    let a = json!({
        "save_path": s.save_path.display().to_string(),
        "temp_path_enabled": false,
        "temp_path": "",
        "auto_tmm_enabled": false,
        "torrent_content_layout": "Original",
        "start_paused_enabled": false,
        "add_to_top_of_queue": false,
        "preallocate_all": s.preallocate_all,
        "incomplete_files_ext": false,
        "scan_dirs": {},
        "export_dir": "",
        "export_dir_fin": "",
    });
    let b = json!({
        "dl_limit": limit_field(s.download_limit),
        "up_limit": limit_field(s.upload_limit),
        "alt_dl_limit": 0,
        "alt_up_limit": 0,
        "scheduler_enabled": false,
        "limit_utp_rate": true,
        "limit_tcp_overhead": false,
        "limit_lan_peers": true,
        "listen_port": s.listen_port,
        "random_port": false,
        "upnp": false,
        "max_connec": s.max_connections,
        "max_connec_per_torrent": s.max_peers_per_torrent,
        "max_uploads": s.upload_slots,
        "max_uploads_per_torrent": s.upload_slots,
        "dht": false,
        "pex": true,
        "lsd": false,
        "encryption": 0,
        "anonymous_mode": false,
    });
    let c = json!({
        "queueing_enabled": q.enabled,
        "max_active_downloads": q.max_active_downloads,
        "max_active_uploads": q.max_active_uploads,
        "max_active_torrents": q.max_active_torrents,
        "dont_count_slow_torrents": q.dont_count_slow,
        "slow_torrent_dl_rate_threshold": kib(q.slow_download_rate),
        "slow_torrent_ul_rate_threshold": kib(q.slow_upload_rate),
        "slow_torrent_inactive_timer": q.slow_inactive_secs,
        "max_ratio_enabled": sl.ratio >= 0.0,
        "max_ratio": super::qt_number(sl.ratio),
        "max_seeding_time_enabled": sl.seeding_time >= 0,
        "max_seeding_time": minutes(sl.seeding_time),
        "max_inactive_seeding_time_enabled": sl.inactive_seeding_time >= 0,
        "max_inactive_seeding_time": minutes(sl.inactive_seeding_time),
        "max_ratio_act": share_action_code(sl.action),
        "web_ui_port": s.web_ui_port,
        "web_ui_username": s.username,
        "web_ui_address": "*",
        "bypass_local_auth": false,
        "bypass_auth_subnet_whitelist_enabled": false,
        "web_ui_csrf_protection_enabled": true,
        "web_ui_host_header_validation_enabled": true,
        "locale": "en",
        "category_changed_tmm_enabled": false,
        "save_path_changed_tmm_enabled": false,
        "torrent_changed_tmm_enabled": false,
    });
    super::merge([a, b, c])
}

/// The `setPreferences` keys applied.
const HANDLED: &[&str] = &[
    "up_limit",
    "dl_limit",
    "save_path",
    "queueing_enabled",
    "max_active_downloads",
    "max_active_uploads",
    "max_active_torrents",
    "dont_count_slow_torrents",
    "slow_torrent_dl_rate_threshold",
    "slow_torrent_ul_rate_threshold",
    "slow_torrent_inactive_timer",
    "max_ratio_enabled",
    "max_ratio",
    "max_seeding_time_enabled",
    "max_seeding_time",
    "max_inactive_seeding_time_enabled",
    "max_inactive_seeding_time",
    "max_ratio_act",
];

fn int_of(v: &Map<String, Value>, key: &str) -> Result<Option<i64>, Response> {
    match v.get(key) {
        None => Ok(None),
        Some(x) => x
            .as_i64()
            .or_else(|| x.as_f64().map(|f| f as i64))
            .or_else(|| x.as_str().and_then(|s| s.trim().parse().ok()))
            .map(Some)
            .ok_or_else(|| bad_request(format!("`{key}` must be an integer"))),
    }
}

fn bool_of(v: &Map<String, Value>, key: &str) -> Result<Option<bool>, Response> {
    match v.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(x) => x
            .as_i64()
            .map(|i| Some(i != 0))
            .ok_or_else(|| bad_request(format!("`{key}` must be a boolean"))),
    }
}

/// Queueing keys of `setPreferences` (thresholds in KiB/s, as qBittorrent's).
fn set_queueing(client: &Client, v: &Map<String, Value>) -> Result<(), Response> {
    let mut q = client.queue_config();
    let before = q;
    if let Some(b) = bool_of(v, "queueing_enabled")? {
        q.enabled = b;
    }
    if let Some(b) = bool_of(v, "dont_count_slow_torrents")? {
        q.dont_count_slow = b;
    }
    // qBittorrent: any negative count is none (-1).
    let count = |x: i64| if x < 0 { -1 } else { x };
    if let Some(x) = int_of(v, "max_active_downloads")? {
        q.max_active_downloads = count(x);
    }
    if let Some(x) = int_of(v, "max_active_uploads")? {
        q.max_active_uploads = count(x);
    }
    if let Some(x) = int_of(v, "max_active_torrents")? {
        q.max_active_torrents = count(x);
    }
    let kib = |x: i64| u64::try_from(x).unwrap_or(0).saturating_mul(1024);
    if let Some(x) = int_of(v, "slow_torrent_dl_rate_threshold")? {
        q.slow_download_rate = kib(x);
    }
    if let Some(x) = int_of(v, "slow_torrent_ul_rate_threshold")? {
        q.slow_upload_rate = kib(x);
    }
    if let Some(x) = int_of(v, "slow_torrent_inactive_timer")? {
        q.slow_inactive_secs = u64::try_from(x).unwrap_or(0);
    }
    if q != before {
        client
            .set_queue_config(q)
            .map_err(|e| bad_request(e.to_string()))?;
    }
    Ok(())
}

/// Share-limit keys of `setPreferences`, as qBittorrent reads them: a limit is set when its
/// `*_enabled` key is true (with the value beside it, or the one already set), off (-1) when
/// false; a value alone changes an enabled limit.
fn set_share_limits(api: &WebApi, client: &Client, v: &Map<String, Value>) -> Result<(), Response> {
    let mut sl = client.share_limits();
    let before = sl;
    let ratio = match v.get("max_ratio") {
        None => None,
        Some(x) => Some(
            x.as_f64()
                .ok_or_else(|| bad_request("`max_ratio` must be a number"))?,
        ),
    };
    match bool_of(v, "max_ratio_enabled")? {
        Some(true) => sl.ratio = ratio.unwrap_or(sl.ratio).max(0.0),
        Some(false) => sl.ratio = -1.0,
        None => {
            if let Some(r) = ratio.filter(|_| sl.ratio >= 0.0) {
                sl.ratio = super::torrents::ratio_limit_of(r).max(-1.0);
            }
        }
    }
    for (enabled, key, field) in [
        (
            "max_seeding_time_enabled",
            "max_seeding_time",
            &mut sl.seeding_time,
        ),
        (
            "max_inactive_seeding_time_enabled",
            "max_inactive_seeding_time",
            &mut sl.inactive_seeding_time,
        ),
    ] {
        let value = int_of(v, key)?.map(|m| super::torrents::minutes_to_secs(m).max(-1));
        match bool_of(v, enabled)? {
            Some(true) => *field = value.unwrap_or(*field).max(0),
            Some(false) => *field = -1,
            None => {
                if let Some(x) = value.filter(|_| *field >= 0) {
                    *field = x;
                }
            }
        }
    }
    if let Some(code) = int_of(v, "max_ratio_act")? {
        match share_action_of(code) {
            Some(a) => sl.action = a,
            // qBittorrent's 2 (super seeding): no engine action; the one set stays.
            None if code == 2 => api.log(
                log::WARNING,
                "app/setPreferences: `max_ratio_act` 2 (super seeding) is not supported; ignored",
            ),
            // Any other value is qBittorrent's default: stop.
            None => sl.action = ShareAction::Stop,
        }
    }
    if sl != before {
        client
            .set_share_limits(sl)
            .map_err(|e| bad_request(e.to_string()))?;
    }
    Ok(())
}

/// `app/setPreferences`: applies what maps onto the engine (`save_path`, `dl_limit`,
/// `up_limit`, queueing, share limits); any other key is ignored with a warning in
/// `log/main`.
pub fn set_preferences(api: &WebApi, client: &Client, p: &Params) -> Result<Response, Response> {
    let raw = p.required("json")?;
    let v: Map<String, Value> =
        serde_json::from_str(raw).map_err(|e| bad_request(format!("invalid json: {e}")))?;
    let limit = |key: &str| -> Result<Option<Option<u64>>, Response> {
        match v.get(key) {
            None => Ok(None),
            Some(x) => x
                .as_i64()
                .map(|l| Some(limit_of(l)))
                .ok_or_else(|| bad_request(format!("`{key}` must be an integer"))),
        }
    };
    let (up, down) = (limit("up_limit")?, limit("dl_limit")?);
    if up.is_some() || down.is_some() {
        transfer::set_limits(api, client, up, down)?;
    }
    if let Some(path) = v.get("save_path") {
        let path = path
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad_request("`save_path` must be a path"))?;
        api.state().settings.save_path = path.into();
    }
    set_queueing(client, &v)?;
    set_share_limits(api, client, &v)?;
    for key in v.keys() {
        if !HANDLED.contains(&key.as_str()) {
            api.log(
                log::WARNING,
                format!("app/setPreferences: `{key}` is not supported and was ignored"),
            );
        }
    }
    Ok(text(200, ""))
}

/// Answers `app/<name>`.
pub fn handle(
    api: &WebApi,
    client: &Client,
    name: &str,
    p: &Params,
    post: bool,
) -> Option<Response> {
    let r = match name {
        "version" => Ok(text(200, APP_VERSION)),
        "webapiVersion" => Ok(text(200, WEBAPI_VERSION)),
        "buildInfo" => Ok(super::json(&build_info())),
        "preferences" => Ok(super::json(&preferences(api, client))),
        "setPreferences" => need_post(post).and_then(|()| set_preferences(api, client, p)),
        "defaultSavePath" => Ok(text(
            200,
            api.state().settings.save_path.display().to_string(),
        )),
        _ => return None,
    };
    Some(either(r))
}
