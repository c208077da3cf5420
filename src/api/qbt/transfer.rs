//! `transfer/*`: global speeds, totals and limits.

use serde_json::{json, Value};

use super::{either, limit_field, limit_of, need_post, text, Params, WebApi};
use crate::api::Response;
use crate::client::Client;

/// The session totals and speeds: (download speed, downloaded, upload speed, uploaded).
///
/// The engine counts each torrent's bytes since it was last started, so the totals here
/// add up what each torrent's counters grew by between two looks (a counter that went
/// back started again from 0): bytes of a torrent stopped between two looks are missed.
pub fn totals(api: &WebApi, client: &Client) -> (u64, u64, u64, u64) {
    let list = client.list();
    let mut w = api.state();
    let (mut down, mut up) = (0, 0);
    let mut seen = std::collections::HashMap::new();
    for s in &list {
        down += s.download_rate;
        up += s.upload_rate;
        let (d0, u0) = w.counters.get(&s.info_hash).copied().unwrap_or((0, 0));
        let grew = |new: u64, old: u64| if new >= old { new - old } else { new };
        w.downloaded += grew(s.downloaded, d0);
        w.uploaded += grew(s.uploaded, u0);
        seen.insert(s.info_hash.clone(), (s.downloaded, s.uploaded));
    }
    w.counters = seen;
    (down, w.downloaded, up, w.uploaded)
}

/// Nodes in the DHT routing tables (both families), 0 without a DHT.
pub fn dht_nodes(client: &Client) -> usize {
    client.dht_stats().map_or(0, |d| d.nodes_v4 + d.nodes_v6)
}

/// `transfer/info`.
pub fn info(api: &WebApi, client: &Client) -> Value {
    let (dl_speed, dl, up_speed, ul) = totals(api, client);
    let w = api.state();
    json!({
        "connection_status": "connected",
        "dht_nodes": dht_nodes(client),
        "dl_info_data": dl,
        "dl_info_speed": dl_speed,
        "dl_rate_limit": limit_field(w.settings.download_limit),
        "up_info_data": ul,
        "up_info_speed": up_speed,
        "up_rate_limit": limit_field(w.settings.upload_limit),
    })
}

/// Sets the session-wide limits (`None`: unchanged) and remembers them.
pub fn set_limits(
    api: &WebApi,
    client: &Client,
    up: Option<Option<u64>>,
    down: Option<Option<u64>>,
) -> Result<(), Response> {
    let mut w = api.state();
    let up = up.unwrap_or(w.settings.upload_limit);
    let down = down.unwrap_or(w.settings.download_limit);
    client
        .set_limits(up, down)
        .map_err(|e| text(500, e.to_string()))?;
    w.settings.upload_limit = up;
    w.settings.download_limit = down;
    Ok(())
}

/// Answers `transfer/<name>`.
pub fn handle(
    api: &WebApi,
    client: &Client,
    name: &str,
    p: &Params,
    post: bool,
) -> Option<Response> {
    let r = match name {
        "info" => Ok(super::json(&info(api, client))),
        // No alternative speed limits: always the normal ones.
        "speedLimitsMode" => Ok(text(200, "0")),
        "uploadLimit" => Ok(text(
            200,
            limit_field(api.state().settings.upload_limit).to_string(),
        )),
        "downloadLimit" => Ok(text(
            200,
            limit_field(api.state().settings.download_limit).to_string(),
        )),
        "setUploadLimit" | "setDownloadLimit" => need_post(post).and_then(|()| {
            let limit = p
                .int("limit")?
                .ok_or_else(|| super::bad_request("Missing required parameter: limit"))?;
            let limit = Some(limit_of(limit));
            if name == "setUploadLimit" {
                set_limits(api, client, limit, None)?;
            } else {
                set_limits(api, client, None, limit)?;
            }
            Ok(text(200, ""))
        }),
        _ => return None,
    };
    Some(either(r))
}
