//! `app/*`: versions, build information, preferences, the default save path.

use serde_json::{json, Map, Value};

use super::{
    bad_request, either, limit_field, limit_of, log, need_post, text, transfer, Params, WebApi,
    APP_VERSION, WEBAPI_VERSION,
};
use crate::api::Response;
use crate::client::Client;

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

/// `app/preferences`: what clients read, from what the engine has. Queueing and share
/// limits are off (the engine has none yet); limits are bytes per second, 0 for none.
pub fn preferences(api: &WebApi) -> Value {
    let w = api.state();
    let s = &w.settings;
    let a = json!({
        "save_path": s.save_path.display().to_string(),
        "temp_path_enabled": false,
        "temp_path": "",
        "auto_tmm_enabled": false,
        "torrent_content_layout": "Original",
        "create_subfolder_enabled": true,
        "start_paused_enabled": false,
        "add_to_top_of_queue": false,
        "preallocate_all": true,
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
        "queueing_enabled": false,
        "max_active_downloads": -1,
        "max_active_uploads": -1,
        "max_active_torrents": -1,
        "dont_count_slow_torrents": false,
        "slow_torrent_dl_rate_threshold": 2,
        "slow_torrent_ul_rate_threshold": 2,
        "slow_torrent_inactive_timer": 60,
        "max_ratio_enabled": false,
        "max_ratio": -1,
        "max_seeding_time_enabled": false,
        "max_seeding_time": -1,
        "max_inactive_seeding_time_enabled": false,
        "max_inactive_seeding_time": -1,
        "max_ratio_act": 0,
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

/// `app/setPreferences`: applies what maps onto the engine (`save_path`, `dl_limit`,
/// `up_limit`); any other key is ignored with a warning in `log/main`.
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
    for key in v.keys() {
        if !["up_limit", "dl_limit", "save_path"].contains(&key.as_str()) {
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
        "preferences" => Ok(super::json(&preferences(api))),
        "setPreferences" => need_post(post).and_then(|()| set_preferences(api, client, p)),
        "defaultSavePath" => Ok(text(
            200,
            api.state().settings.save_path.display().to_string(),
        )),
        _ => return None,
    };
    Some(either(r))
}
