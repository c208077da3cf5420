//! `transfer/*`: global speeds, totals and limits.

use serde_json::{json, Value};

use super::{either, limit_field, limit_of, need_post, text, Params, WebApi};
use crate::api::Response;
use crate::client::Client;

/// The session totals and speeds: (download speed, downloaded, upload speed, uploaded).
pub fn totals(client: &Client) -> (u64, u64, u64, u64) {
    let m = client.metrics();
    let (down, up) = client
        .list()
        .iter()
        .fold((0, 0), |(d, u), s| (d + s.download_rate, u + s.upload_rate));
    (down, m.downloaded, up, m.uploaded)
}

/// `transfer/info`.
pub fn info(api: &WebApi, client: &Client) -> Value {
    let (dl_speed, dl, up_speed, ul) = totals(client);
    let w = api.state();
    json!({
        "connection_status": "connected",
        "dht_nodes": 0,
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
