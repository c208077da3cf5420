//! The qBittorrent WebAPI v2 (`/api/v2/...`) over a [`Client`], so that the tools of a
//! seedbox stack (Sonarr, Radarr, autobrr, cross-seed, qbit_manage, the `qbittorrent-api`
//! Python client) drive ringtorrent as they drive qBittorrent.
//!
//! It speaks as **qBittorrent v4.6.7, WebAPI 2.9.3** ([`APP_VERSION`], [`WEBAPI_VERSION`]):
//! the 4.x names (`pause`/`resume`, states `pausedDL`/`pausedUP`), with the 5.x names
//! (`stop`/`start`, `stopped` on add) accepted as aliases. Every method qBittorrent has and
//! this module does not answers exactly as qBittorrent answers an unknown method: `404 Not
//! Found`, never a silent success.
//!
//! Wiring (see `ringtorrent serve`): the front end calls [`WebApi::admit`] with each request
//! head under [`PREFIX`] (loopback rule, `Host` and `Origin`/`Referer` checks, credentials:
//! qBittorrent's 401 for a foreign host or origin, 403 when not logged in),
//! [`WebApi::login`]/[`WebApi::logout`] on the HTTP thread, and [`WebApi::handle`] on a
//! thread that may wait for the client. Areas: [`app`] (and `auth`), [`torrents`],
//! [`sync`], [`transfer`], [`log`].
//!
//! Categories, tags, share limits (qBittorrent's minutes are the engine's seconds times 60),
//! queueing, force start, rechecks and seed mode (`skip_checking`) map onto the engine's
//! (`client::policy`), as do file priorities (`filePrio`), sequential download and
//! first/last-piece priority (`toggleSequentialDownload`, `toggleFirstLastPiecePrio`, and the
//! `sequentialDownload`/`firstLastPiecePrio` parameters of `torrents/add`). What ringtorrent
//! has no engine feature for yet (alternative speed limits, super seeding...) is not
//! served; parameters of `torrents/add` that name such features (`rename`, `autoTMM`...)
//! are accepted and ignored so that an add from Sonarr still succeeds, and each ignored one
//! is written to `log/main` as a warning.

pub mod app;
pub mod log;
pub mod sync;
pub mod torrents;
pub mod transfer;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hyper::header::HeaderValue;
use hyper::Method;
use serde_json::Value;

use super::auth::Auth;
use super::guard::Policy;
use super::{multipart, parse, Head, Request, Response};
use crate::client::{Client, TorrentHandle};
use crate::core::InfoHash;

/// Where the WebAPI lives on the API port.
pub const PREFIX: &str = "/api/v2/";

/// The qBittorrent version reported by `app/version`.
pub const APP_VERSION: &str = "v4.6.7";

/// The WebAPI version reported by `app/webapiVersion`: qBittorrent 4.6's, whose methods,
/// parameters and field names this module follows.
pub const WEBAPI_VERSION: &str = "2.9.3";

/// The largest login request body.
const MAX_LOGIN_BODY: u64 = 16 * 1024;

/// What the WebAPI starts with (from `serve`'s config).
#[derive(Debug, Clone, Default)]
pub struct WebSettings {
    /// Where torrents go without a `savepath`.
    pub save_path: PathBuf,
    /// The peer port.
    pub listen_port: u16,
    /// The API port.
    pub web_ui_port: u16,
    /// The login user name ("" for none).
    pub username: String,
    /// The session-wide upload limit, bytes per second.
    pub upload_limit: Option<u64>,
    /// The session-wide download limit, bytes per second.
    pub download_limit: Option<u64>,
    /// Connections in all.
    pub max_connections: usize,
    /// Peers per torrent.
    pub max_peers_per_torrent: usize,
    /// Upload slots.
    pub upload_slots: usize,
    /// New files get their space up front (`allocation = "full"`): `preallocate_all`.
    pub preallocate_all: bool,
}

/// What the WebAPI remembers between requests (only what the engine does not keep).
pub(crate) struct WebState {
    pub settings: WebSettings,
    /// Each torrent's times (`added_on`, `completion_on` from the engine; first seen here).
    pub seen: HashMap<InfoHash, Times>,
    pub sync: sync::SyncState,
    pub log: log::Log,
    /// Each torrent's byte counters when last looked at, and the totals they add up to.
    pub counters: HashMap<String, (u64, u64)>,
    pub downloaded: u64,
    pub uploaded: u64,
}

/// When a torrent was added and completed (the engine's, kept over restarts), when this
/// WebAPI saw it complete, and how long it has run while this WebAPI watched.
#[derive(Debug, Clone, Copy)]
pub struct Times {
    /// Added, seconds since the epoch (`added_on`).
    pub added: i64,
    /// Completed, seconds since the epoch (`completion_on`).
    pub completed: Option<i64>,
    /// Seen complete.
    pub completed_at: Option<Instant>,
    /// Time spent running (not paused, queued or stopped on an error) while this WebAPI
    /// watched, up to `running_since` (`time_active`, which qBittorrent does not count for
    /// a paused or queued torrent).
    pub active: Duration,
    /// Running when last seen, since then.
    pub running_since: Option<Instant>,
}

impl Times {
    /// `time_active` now.
    pub fn active_secs(&self) -> u64 {
        (self.active + self.running_since.map_or(Duration::ZERO, |t| t.elapsed())).as_secs()
    }
}

/// The qBittorrent WebAPI v2. See the module doc.
pub struct WebApi {
    auth: Arc<Auth>,
    state: Mutex<WebState>,
}

/// Seconds since the epoch.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A `text/plain` answer, as qBittorrent writes its short answers (`Ok.`, errors).
pub fn text(status: u16, body: impl Into<String>) -> Response {
    Response::new(
        status,
        "text/plain; charset=UTF-8",
        body.into().into_bytes(),
    )
}

/// A compact JSON answer, as qBittorrent writes them.
pub fn json(value: &Value) -> Response {
    Response::new(
        200,
        "application/json",
        serde_json::to_vec(value).unwrap_or_default(),
    )
}

/// qBittorrent's answer to an unknown method (and to one this module does not serve).
pub fn not_found() -> Response {
    text(404, "Not Found")
}

/// qBittorrent's answer to a missing or malformed parameter.
pub fn bad_request(message: impl Into<String>) -> Response {
    text(400, message)
}

/// qBittorrent's answer to a request that is not logged in.
pub fn forbidden() -> Response {
    text(403, "Forbidden")
}

/// A method that changes something, asked with GET.
fn method_not_allowed() -> Response {
    text(405, "Method Not Allowed")
}

/// A request's parameters: the query string, then a URL-encoded or multipart body; files of
/// a multipart body apart.
#[derive(Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
    /// Files (`filename=` parts): name of the part, bytes.
    pub files: Vec<(String, Vec<u8>)>,
}

impl Params {
    /// Reads them from a request; `Err` is a 400 for a malformed multipart body.
    pub fn from_request(head: &Head, body: &[u8]) -> Result<Params, Response> {
        let mut p = Params {
            pairs: parse::query_pairs(&head.query),
            files: Vec::new(),
        };
        if body.is_empty() {
            return Ok(p);
        }
        let (essence, _) = parse::content_type(&head.headers).unwrap_or_default();
        if essence == "multipart/form-data" {
            let ct = head
                .headers
                .get(hyper::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let boundary = parse::multipart_boundary(ct)
                .ok_or_else(|| bad_request("multipart body without a boundary"))?;
            let parts = multipart::parse(body, &boundary)
                .map_err(|e| bad_request(format!("malformed multipart body: {e}")))?;
            for part in parts {
                if part.filename.is_some() {
                    p.files.push((part.name, part.data.to_vec()));
                } else {
                    p.pairs
                        .push((part.name, String::from_utf8_lossy(part.data).into_owned()));
                }
            }
        } else {
            // qBittorrent reads a form whatever its declared type (curl -d sends
            // application/x-www-form-urlencoded, some tools send nothing).
            p.pairs
                .extend(parse::query_pairs(&String::from_utf8_lossy(body)));
        }
        Ok(p)
    }

    /// Builds them from pairs (tests).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Params {
        Params {
            pairs: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            files: Vec::new(),
        }
    }

    /// The last value of `key` (a body's value overrides the query string's).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `key` as a boolean (`true`, `1`, any case), `None` when absent.
    pub fn flag(&self, key: &str) -> Option<bool> {
        self.get(key)
            .map(|v| v.eq_ignore_ascii_case("true") || v == "1")
    }

    /// `key` as an integer; `Err` (400) when present but not one.
    pub fn int(&self, key: &str) -> Result<Option<i64>, Response> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| bad_request(format!("`{key}` must be an integer"))),
        }
    }

    /// `key`, required: `Err` is qBittorrent's 400 for a missing parameter.
    pub fn required(&self, key: &str) -> Result<&str, Response> {
        self.get(key)
            .ok_or_else(|| bad_request(format!("Missing required parameter: {key}")))
    }
}

/// A bytes-per-second limit as qBittorrent's parameters give it: 0 or below is none.
pub fn limit_of(value: i64) -> Option<u64> {
    u64::try_from(value).ok().filter(|&v| v > 0)
}

/// A limit as qBittorrent's fields show it: 0 for none.
pub fn limit_field(limit: Option<u64>) -> i64 {
    limit.map_or(0, |l| i64::try_from(l).unwrap_or(i64::MAX))
}

impl WebApi {
    /// A WebAPI answering with `auth`'s credentials.
    pub fn new(auth: Arc<Auth>, settings: WebSettings) -> WebApi {
        WebApi {
            auth,
            state: Mutex::new(WebState {
                settings,
                seen: HashMap::new(),
                sync: sync::SyncState::default(),
                log: log::Log::new(),
                counters: HashMap::new(),
                downloaded: 0,
                uploaded: 0,
            }),
        }
    }

    /// Records session rate limits set outside the WebAPI (bytes per second, `None`:
    /// unlimited; `serve`'s config reload), so that `transfer/*` and `sync/maindata` report
    /// them. The caller has set them on the client.
    pub fn set_rate_limits(&self, upload: Option<u64>, download: Option<u64>) {
        let mut w = self.state();
        w.settings.upload_limit = upload;
        w.settings.download_limit = download;
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, WebState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes a line to `log/main` (`kind`: [`log::NORMAL`], [`log::INFO`],
    /// [`log::WARNING`] or [`log::CRITICAL`]).
    pub fn log(&self, kind: u8, message: impl Into<String>) {
        self.state().log.push(kind, message.into());
    }

    /// Checks a request head under [`PREFIX`] before its body is read, as qBittorrent
    /// does: without credentials configured only loopback is served; a `Host` not allowed
    /// or a cross-site `Origin`/`Referer` is 401 `Unauthorized`; anything but
    /// `auth/login` needs a session (or an API key), else 403 `Forbidden`.
    pub fn admit(&self, head: &Head, policy: &Policy) -> Result<(), Response> {
        if !self.auth.required() && !head.peer.ip().is_loopback() {
            return Err(forbidden());
        }
        policy
            .check_host(&head.headers)
            .map_err(|_| text(401, "Unauthorized"))?;
        if head.method != Method::OPTIONS {
            policy
                .check_origin(&head.method, &head.headers)
                .map_err(|_| text(401, "Unauthorized"))?;
        }
        let method = &head.path[PREFIX.len().min(head.path.len())..];
        if method == "auth/status" {
            // Which ways in exist, for a login page: nothing a refusal does not tell.
            return Ok(());
        }
        if method == "auth/login" {
            if head.method == Method::POST && head.content_length.is_none_or(|n| n > MAX_LOGIN_BODY)
            {
                return Err(text(413, "Payload Too Large"));
            }
            return Ok(());
        }
        self.auth
            .authenticate(&head.headers)
            .map(|_| ())
            .map_err(|_| forbidden())
    }

    /// `auth/login`: `Ok.` with the `SID` cookie, `Fails.` (200) for a wrong user name or
    /// password, 403 for an address banned after too many failures. Runs on the HTTP
    /// thread's tokio runtime (the password hash runs on its blocking pool).
    pub async fn login(&self, req: Request) -> Response {
        if req.head.method != Method::POST {
            return method_not_allowed();
        }
        if !self.auth.required() {
            // No credentials configured: the API is open (on loopback), as qBittorrent's
            // "bypass authentication" leaves it; a login succeeds.
            return text(200, "Ok.");
        }
        let ct = req
            .head
            .headers
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let creds = match parse::login_form(ct, &req.body) {
            Ok(c) => c,
            Err(_) => return text(200, "Fails."),
        };
        let peer: IpAddr = req.head.peer.ip();
        let secure = req
            .head
            .headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
        match self.auth.login(peer, creds, secure).await {
            Ok(cookie) => {
                self.log(log::INFO, format!("WebAPI login from {peer}"));
                text(200, "Ok.").header("set-cookie", cookie)
            }
            Err(r) if r.status == 429 => {
                self.log(
                    log::WARNING,
                    format!("WebAPI: {peer} banned for a while after too many failed logins"),
                );
                text(
                    403,
                    "Your IP address has been banned after too many failed authentication attempts.",
                )
            }
            Err(r) if r.status == 401 => {
                self.log(log::WARNING, format!("WebAPI: failed login from {peer}"));
                text(200, "Fails.")
            }
            // A way in that is not configured (a password where only keys are) is a wrong
            // login to a qBittorrent client.
            Err(r) if r.status == 404 => text(200, "Fails."),
            Err(r) => text(r.status, r.message),
        }
    }

    /// `auth/status` (ringtorrent's; qBittorrent has none): which ways in are configured
    /// and whether this request is in, as JSON, for the web UI's login page.
    pub fn auth_status(&self, req: &Request) -> Response {
        if req.head.method != Method::GET {
            return method_not_allowed();
        }
        json(&self.auth.status(&req.head.headers).to_json())
    }

    /// `auth/logout`: ends the session; 200 with an empty body.
    pub fn logout(&self, req: &Request) -> Response {
        if req.head.method != Method::POST {
            return method_not_allowed();
        }
        let cookie: HeaderValue = self.auth.logout(&req.head.headers);
        text(200, "").header("set-cookie", cookie)
    }

    /// Answers one admitted request (not `auth/*`) against `client`. May wait for the
    /// client: call it where blocking is allowed.
    pub fn handle(&self, client: &Client, req: Request) -> Response {
        let Request { head, body } = req;
        let Some(method) = head.path.strip_prefix(PREFIX) else {
            return not_found();
        };
        let p = match Params::from_request(&head, &body) {
            Ok(p) => p,
            Err(r) => return r,
        };
        let post = head.method == Method::POST;
        if head.method != Method::POST && head.method != Method::GET && head.method != Method::HEAD
        {
            return method_not_allowed();
        }
        let (area, name) = method.split_once('/').unwrap_or((method, ""));
        let answer = match area {
            "app" => app::handle(self, client, name, &p, post),
            "torrents" => torrents::handle(self, client, name, &p, post),
            "sync" => sync::handle(self, client, name, &p),
            "transfer" => transfer::handle(self, client, name, &p, post),
            "log" => log::handle(self, name, &p),
            _ => None,
        };
        answer.unwrap_or_else(not_found)
    }
}

/// The torrents a `hashes` parameter names (`|`-separated, or `all`): unknown and
/// malformed ones are left out, as qBittorrent does.
pub fn select(client: &Client, p: &Params) -> Result<Vec<TorrentHandle>, Response> {
    let hashes = p.required("hashes")?;
    if hashes.eq_ignore_ascii_case("all") {
        return Ok(client.torrents());
    }
    Ok(hashes
        .split('|')
        .filter_map(|h| InfoHash::from_hex(h.trim()))
        .filter_map(|h| client.get(h))
        .collect())
}

/// The torrent a `hash` parameter names: 400 without one, 404 when unknown.
pub fn one(client: &Client, p: &Params) -> Result<TorrentHandle, Response> {
    let hash = p.required("hash")?;
    InfoHash::from_hex(hash.trim())
        .and_then(|h| client.get(h))
        .ok_or_else(not_found)
}

/// A state-changing method asked with GET: qBittorrent's 405.
pub fn need_post(post: bool) -> Result<(), Response> {
    if post {
        Ok(())
    } else {
        Err(method_not_allowed())
    }
}

/// Turns a handler's `Result<Response, Response>` into its answer.
pub(crate) fn either(r: Result<Response, Response>) -> Response {
    r.unwrap_or_else(|e| e)
}

/// A number as Qt's JSON writes a `double`: an integral value without a fraction (`-2`, not
/// `-2.0`), as qBittorrent's `ratio_limit`, `max_ratio`... show.
pub fn qt_number(v: f64) -> Value {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        Value::from(v as i64)
    } else {
        serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
    }
}

/// The objects' fields in one object (`json!` has a recursion limit).
pub(crate) fn merge<const N: usize>(parts: [Value; N]) -> Value {
    let mut out = serde_json::Map::new();
    for part in parts {
        if let Value::Object(m) = part {
            // The first object is taken as it is, not copied key by key.
            if out.is_empty() {
                out = m;
            } else {
                out.extend(m);
            }
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests;
