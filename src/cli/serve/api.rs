//! The control API: HTTP/1.1 with JSON bodies, on loopback by default, plus `GET /metrics` in
//! Prometheus text format, served by the library's [`Server`] (hyper on one thread, every
//! resource bounded: see `ringtorrent::api`). Each request passes, in order, before its body
//! is read: loopback only when no credentials are set, the `Host` allow-list (DNS rebinding),
//! CORS preflights (closed unless `api_cors_origins`), the same-origin rule for anything
//! but GET and HEAD, then credentials (a session cookie or an API key). Admitted requests are
//! handed to the control thread, which asks the [`Client`].
//!
//! ```text
//!   POST   /auth/login                   username, password (or api_key), form or JSON:
//!                                        sets the session cookie
//!   POST   /auth/logout
//!   GET    /auth/status                  which ways in are configured, and whether this
//!                                        request is in (no credentials needed)
//!   GET    /torrents                     every torrent's status
//!   POST   /torrents                     add: the body is a .torrent file (query:
//!                                        paused, category, tags=a,b), or {"magnet":
//!                                        "magnet:?xt=...", "category": .., "tags": [..]}
//!   GET    /torrents/<hash>              one torrent
//!   DELETE /torrents/<hash>[?delete_data=true]
//!   POST   /torrents/<hash>/pause        out of the session, data and state kept
//!   POST   /torrents/<hash>/resume
//!   POST   /torrents/<hash>/move         {"location": "/new/folder"}: its data moves there
//!                                        in the background (state `moving`, with
//!                                        `moving` the share done); 409 when the folder
//!                                        cannot be created or written
//!   POST   /torrents/<hash>/reannounce   ask its trackers for peers now
//!   PUT    /torrents/<hash>/limits       {"upload": bytes/s or null, "download": ...}
//!   GET    /torrents/<hash>/peers        connected peers
//!   PUT    /torrents/<hash>/category     {"category": "tv" or null} (it must exist)
//!   POST   /torrents/<hash>/tags         {"add": [..], "remove": [..]}
//!   PUT    /torrents/<hash>/share_limits any of {"ratio", "seeding_time" (seconds),
//!                                        "inactive_seeding_time", "action"}; -2: the
//!                                        client's, -1: none; action "default", "stop",
//!                                        "remove" or "remove_with_data"
//!   PUT    /torrents/<hash>/force_start  {"force_start": true}
//!   GET    /torrents/<hash>/files        each file: path, length, done, wanted, priority
//!   PUT    /torrents/<hash>/files        {"priorities": ["normal", "skip", "high",
//!                                        "maximal", ...]}, one per file of the info
//!                                        dictionary (padding files included)
//!   PUT    /torrents/<hash>/order        any of {"sequential": true,
//!                                        "first_last_piece_priority": true}
//!   POST   /torrents/<hash>/queue/<top|bottom|up|down>
//!   GET    /categories                   [{"name", "save_path"}]
//!   POST   /categories                   {"name": "tv", "save_path": "/data/tv" or null}
//!   PUT    /categories/<name>            {"save_path": ... or null}
//!   DELETE /categories/<name>            its torrents are left without one
//!   GET    /tags                         ["hd", ...]
//!   POST   /tags                         {"tags": [..]}: created
//!   DELETE /tags/<tag>                   and taken off every torrent
//!   GET    /share_limits                 the client's; PUT any of its fields (no -2)
//!   GET    /queue                        queueing; PUT any of its fields
//!   GET    /metrics                      Prometheus text
//!   GET    /dht                          the DHT node: {"enabled", "address", "nodes",
//!                                        "nodes_ipv4", "nodes_ipv6", lookups, announces,
//!                                        queries answered and dropped, stored peers}
//!   *      /api/v2/...                   the qBittorrent WebAPI (`ringtorrent::api::qbt`)
//!   GET    /, /ui/...                    the web UI (`ringtorrent::api::webui`): no login
//!                                        needed for the page itself, which logs in
//!                                        through the WebAPI
//! ```
//!
//! What a PUT of share limits or queueing sets is kept in the state folder and overrides
//! the config file's `[share_limits]` and `[queue]` at the next start.
//!
//! Errors are JSON `{"error": "..."}` with 400 (malformed request, or a body shorter than its
//! `Content-Length`), 401 (credentials needed or wrong), 403 (a foreign `Host` or origin),
//! 404 (unknown route or torrent), 408 (a body too slow), 409 (already added), 413 (body too
//! large), 429 (too many failed logins), 503 (too many uploads or logins at once) or 500.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, RwLock};
use std::time::Duration;

use anyhow::Result;
use hyper::header::HeaderValue;
use hyper::Method;
use serde_json::{json, Value};

use super::watch::WatchStats;
use ringtorrent::api::auth::Auth;
use ringtorrent::api::guard::{Policy, Refusal};
use ringtorrent::api::parse;
use ringtorrent::api::qbt::{self, WebApi, WebSettings};
use ringtorrent::api::webui;
use ringtorrent::api::{Handler, Head, Request, Response, Server, ServerConfig};
use ringtorrent::client::{
    AddTorrent, Client, ClientError, FilePriority, QueueMove, TorrentHandle,
};
use ringtorrent::core::InfoHash;

use super::ServeConfig;

/// The largest login request body.
const MAX_LOGIN_BODY: u64 = 16 * 1024;

/// How long a request waits for the control thread.
const ENGINE_WAIT: Duration = Duration::from_secs(60);

/// A request for the control thread: for this API, or for the qBittorrent WebAPI.
pub enum Routed {
    Own(Request),
    Qbt(Request, Arc<WebApi>),
}

/// What the API thread sends the control thread: a request and where its answer goes.
pub type Call = (Routed, tokio::sync::oneshot::Sender<Response>);

/// Starts the API server on `c.api` with `c`'s policy and credentials; requests arrive on
/// the returned channel; [`Live`] changes what a reload may change. Dropping the server
/// stops it.
pub fn start(c: &ServeConfig) -> Result<(mpsc::Receiver<Call>, Server, Live)> {
    let addr: std::net::SocketAddr = c.api.parse()?;
    let policy = Policy::new(&c.api_hosts, &c.api_cors_origins).map_err(anyhow::Error::msg)?;
    let auth = Auth::new(c.auth_config()).map_err(anyhow::Error::msg)?;
    let (tx, rx) = mpsc::channel::<Call>();
    let auth = Arc::new(auth);
    let (up, down) = c.rates()?;
    let settings = WebSettings {
        save_path: super::ServeConfig::path(&c.data_dir),
        listen_port: c
            .listen
            .parse::<std::net::SocketAddr>()
            .map_or(0, |a| a.port()),
        web_ui_port: addr.port(),
        username: c.api_username.clone(),
        upload_limit: up,
        download_limit: down,
        max_connections: c.limits.max_connections,
        max_peers_per_torrent: c.limits.max_peers_per_torrent,
        upload_slots: c.limits.upload_slots,
        preallocate_all: c.allocation()? == ringtorrent::client::Allocation::Full,
    };
    let api = Arc::new(ServeApi {
        calls: tx,
        policy: RwLock::new(Arc::new(policy)),
        qbt: Arc::new(WebApi::new(auth.clone(), settings)),
        auth,
        metrics_public: AtomicBool::new(c.api_metrics_public),
    });
    let config = ServerConfig {
        max_connections: c.api_max_connections,
        ..ServerConfig::default()
    };
    let server = Server::start(addr, config, api.clone())
        .map_err(|e| anyhow::anyhow!("cannot start the control API on {addr}: {e}"))?;
    Ok((rx, server, Live(api)))
}

/// What a reload changes in the running API: credentials, the Host and CORS policy, whether
/// `/metrics` is public.
pub struct Live(Arc<ServeApi>);

impl Live {
    /// Checks all of `c`'s API settings first and changes nothing on `Err`; returns the
    /// names of the keys whose change took effect.
    pub fn apply(&self, old: &ServeConfig, c: &ServeConfig) -> Result<Vec<&'static str>> {
        let policy = Policy::new(&c.api_hosts, &c.api_cors_origins).map_err(anyhow::Error::msg)?;
        // Checked before anything is swapped, so that a bad file changes nothing.
        Auth::new(c.auth_config()).map_err(anyhow::Error::msg)?;
        let mut changed = Vec::new();
        if old.api_hosts != c.api_hosts || old.api_cors_origins != c.api_cors_origins {
            *self.0.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
        }
        if old.api_hosts != c.api_hosts {
            changed.push("api_hosts");
        }
        if old.api_cors_origins != c.api_cors_origins {
            changed.push("api_cors_origins");
        }
        if self
            .0
            .auth
            .reconfigure(c.auth_config())
            .map_err(anyhow::Error::msg)?
        {
            for (key, differs) in [
                ("api_username", old.api_username != c.api_username),
                (
                    "api_password_hash",
                    old.api_password_hash != c.api_password_hash,
                ),
                ("api_keys", old.api_keys != c.api_keys),
                (
                    "api_session_timeout",
                    old.api_session_timeout != c.api_session_timeout,
                ),
            ] {
                if differs {
                    changed.push(key);
                }
            }
        }
        if old.api_metrics_public != c.api_metrics_public {
            self.0
                .metrics_public
                .store(c.api_metrics_public, Ordering::Relaxed);
            changed.push("api_metrics_public");
        }
        Ok(changed)
    }

    /// Session rate limits changed by a reload (already set on the client): the
    /// qBittorrent WebAPI reports them.
    pub fn set_rate_limits(&self, upload: Option<u64>, download: Option<u64>) {
        self.0.qbt.set_rate_limits(upload, download);
    }
}

struct ServeApi {
    calls: mpsc::Sender<Call>,
    policy: RwLock<Arc<Policy>>,
    auth: Arc<Auth>,
    qbt: Arc<WebApi>,
    metrics_public: AtomicBool,
}

impl ServeApi {
    fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn refused(r: Refusal) -> Response {
    let status = r.status;
    let response = Response::error(status, r.message);
    if status == 401 {
        response.header(
            "www-authenticate",
            HeaderValue::from_static("Bearer realm=\"ringtorrent\""),
        )
    } else {
        response
    }
}

impl Handler for ServeApi {
    fn admit(&self, head: &Head) -> Result<(), Response> {
        if head.path.starts_with(qbt::PREFIX) {
            return self.qbt.admit(head, &self.policy());
        }
        if webui::is_ui_path(&head.path) {
            // The page and its scripts need no login (the login page is one of them), but
            // the same loopback rule and `Host` allow-list as everything else.
            if !self.auth.required() && !head.peer.ip().is_loopback() {
                return Err(Response::error(
                    403,
                    "without credentials the API answers only on loopback",
                ));
            }
            self.policy().check_host(&head.headers).map_err(refused)?;
            return match head.content_length {
                None | Some(0) => Ok(()),
                // A body is never read here: answered (405) before it is.
                Some(_) => Err(webui::respond(head)),
            };
        }
        if !self.auth.required() && !head.peer.ip().is_loopback() {
            return Err(Response::error(
                403,
                "without credentials the API answers only on loopback",
            ));
        }
        let policy = self.policy();
        policy.check_host(&head.headers).map_err(refused)?;
        if head.method == Method::OPTIONS {
            return Err(match policy.preflight(&head.headers) {
                Ok(headers) => headers
                    .into_iter()
                    .fold(Response::new(204, "text/plain", Vec::new()), |r, (k, v)| {
                        r.header(k, v)
                    }),
                Err(r) => refused(r),
            });
        }
        policy
            .check_origin(&head.method, &head.headers)
            .map_err(refused)?;
        if head.path == "/auth/status" {
            return Ok(());
        }
        if head.path == "/auth/login" || head.path == "/auth/logout" {
            if head.content_length.is_none_or(|n| n > MAX_LOGIN_BODY) && head.method == Method::POST
            {
                return Err(Response::error(
                    413,
                    format!(
                        "a login body is at most {MAX_LOGIN_BODY} bytes, with a Content-Length"
                    ),
                ));
            }
            return Ok(());
        }
        if self.metrics_public.load(Ordering::Relaxed)
            && head.method == Method::GET
            && head.path == "/metrics"
        {
            return Ok(());
        }
        self.auth
            .authenticate(&head.headers)
            .map(|_| ())
            .map_err(refused)
    }

    fn handle(&self, req: Request) -> ringtorrent::api::server::ResponseFuture {
        let cors = self.policy().cors_origin(&req.head.headers);
        let with_cors = move |r: Response| match &cors {
            Some(origin) => r
                .header("access-control-allow-origin", origin.clone())
                .header("vary", HeaderValue::from_static("Origin")),
            None => r,
        };
        let auth = self.auth.clone();
        if webui::is_ui_path(&req.head.path) {
            return Box::pin(std::future::ready(webui::respond(&req.head)));
        }
        if let Some(method) = req.head.path.strip_prefix(qbt::PREFIX) {
            let web = self.qbt.clone();
            match method {
                "auth/login" => return Box::pin(async move { web.login(req).await }),
                "auth/logout" => return Box::pin(std::future::ready(web.logout(&req))),
                "auth/status" => return Box::pin(std::future::ready(web.auth_status(&req))),
                _ => return self.to_engine(Routed::Qbt(req, web), |r| r),
            }
        }
        match (&req.head.method, req.head.path.as_str()) {
            (&Method::POST, "/auth/login") => Box::pin(async move {
                let ct = req
                    .head
                    .headers
                    .get(hyper::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok());
                let creds = match parse::login_form(ct, &req.body) {
                    Ok(c) => c,
                    Err(e) => return with_cors(Response::error(400, e)),
                };
                // A TLS proxy in front says so; the cookie is then never sent over plain HTTP.
                let secure = req
                    .head
                    .headers
                    .get("x-forwarded-proto")
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
                with_cors(match auth.login(req.head.peer.ip(), creds, secure).await {
                    Ok(cookie) => Response::json(200, &json!({ "logged_in": true }))
                        .header("set-cookie", cookie),
                    Err(r) => refused(r),
                })
            }),
            (&Method::GET, "/auth/status") => {
                let status = auth.status(&req.head.headers).to_json();
                Box::pin(std::future::ready(with_cors(Response::json(200, &status))))
            }
            (&Method::POST, "/auth/logout") => {
                let cookie = auth.logout(&req.head.headers);
                let r = Response::json(200, &json!({ "logged_in": false }))
                    .header("set-cookie", cookie);
                Box::pin(std::future::ready(with_cors(r)))
            }
            (_, "/auth/login" | "/auth/logout" | "/auth/status") => {
                Box::pin(std::future::ready(Response::error(
                    404,
                    format!("no route {} {}", req.head.method, req.head.path),
                )))
            }
            _ => self.to_engine(Routed::Own(req), with_cors),
        }
    }
}

impl ServeApi {
    /// Hands a request to the control thread and waits (bounded) for its answer.
    fn to_engine(
        &self,
        routed: Routed,
        finish: impl FnOnce(Response) -> Response + Send + 'static,
    ) -> ringtorrent::api::server::ResponseFuture {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = self.calls.send((routed, tx)).is_ok();
        Box::pin(async move {
            if !sent {
                return Response::error(503, "the engine is stopping");
            }
            finish(match tokio::time::timeout(ENGINE_WAIT, rx).await {
                Ok(Ok(r)) => r,
                _ => Response::error(500, "the engine did not answer"),
            })
        })
    }
}

fn hash_of(text: &str) -> Result<InfoHash, Response> {
    InfoHash::from_hex(text).ok_or_else(|| {
        Response::error(400, format!("`{text}` is not an info hash (40 hex digits)"))
    })
}

fn failure(e: ClientError) -> Response {
    let status = match e {
        ClientError::UnknownTorrent(_) => 404,
        ClientError::AlreadyAdded(_) => 409,
        ClientError::InvalidTorrent(_)
        | ClientError::InvalidMagnet(_)
        | ClientError::InvalidArgument(_)
        | ClientError::NoMetadata(_) => 400,
        _ => 500,
    };
    Response::error(status, e)
}

fn added(result: Result<TorrentHandle, ClientError>) -> Response {
    match result {
        Ok(t) => Response::json(201, &json!({ "info_hash": t.info_hash().to_hex() })),
        Err(e) => failure(e),
    }
}

/// The JSON object of a request body.
fn object(body: &[u8]) -> Result<serde_json::Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(Response::error(400, "send a JSON object")),
        Err(e) => Err(Response::error(400, format!("malformed JSON: {e}"))),
    }
}

/// `current` with the body's fields set: an unknown key or a value of the wrong type is
/// refused, naming it.
fn patch<T: serde::Serialize + serde::de::DeserializeOwned>(
    current: &T,
    body: &[u8],
) -> Result<T, Response> {
    let mut value = serde_json::to_value(current).expect("settings serialise");
    let fields = value.as_object_mut().expect("an object");
    for (k, v) in object(body)? {
        if !fields.contains_key(&k) {
            let known: Vec<&String> = fields.keys().collect();
            return Err(Response::error(
                400,
                format!("unknown key `{k}`: expected any of {known:?}"),
            ));
        }
        fields.insert(k, v);
    }
    serde_json::from_value(value).map_err(|e| Response::error(400, e.to_string()))
}

/// A list of strings under `key` (absent: empty).
fn strings(o: &serde_json::Map<String, Value>, key: &str) -> Result<Vec<String>, Response> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|_| Response::error(400, format!("`{key}` must be a list of strings"))),
    }
}

/// A string or null under `key`.
fn optional_string(
    o: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<String>, Response> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Response::error(
            400,
            format!("`{key}` must be a string or null"),
        )),
    }
}

fn answer(result: Result<Value, ClientError>) -> Response {
    match result {
        Ok(v) => Response::json(200, &v),
        Err(e) => failure(e),
    }
}

/// The categories, tags, share limits and queue routes.
fn policy_route(client: &Client, method: &str, parts: &[&str], body: &[u8]) -> Option<Response> {
    let decoded = |rest: &[&str]| parse::percent_decode(&rest.join("/"), false);
    Some(match (method, parts) {
        ("GET" | "HEAD", ["categories"]) => Response::json(200, &json!(client.categories())),
        ("POST", ["categories"]) => {
            let o = match object(body) {
                Ok(o) => o,
                Err(r) => return Some(r),
            };
            let (name, path) = match (
                optional_string(&o, "name"),
                optional_string(&o, "save_path"),
            ) {
                (Ok(Some(n)), Ok(p)) => (n, p),
                (Err(r), _) | (_, Err(r)) => return Some(r),
                (Ok(None), _) => return Some(Response::error(400, "`name` is needed")),
            };
            answer(
                client
                    .create_category(&name, path.map(Into::into))
                    .map(|()| json!({ "created": name })),
            )
        }
        ("PUT" | "DELETE", ["categories", rest @ ..]) if !rest.is_empty() => {
            let Some(name) = decoded(rest) else {
                return Some(Response::error(400, "malformed percent-encoding"));
            };
            if method == "DELETE" {
                return Some(answer(
                    client
                        .remove_categories(std::slice::from_ref(&name))
                        .map(|()| json!({ "removed": name })),
                ));
            }
            let path = match object(body).and_then(|o| optional_string(&o, "save_path")) {
                Ok(p) => p,
                Err(r) => return Some(r),
            };
            answer(
                client
                    .edit_category(&name, path.map(Into::into))
                    .map(|()| json!({ "edited": name })),
            )
        }
        ("GET" | "HEAD", ["tags"]) => Response::json(200, &json!(client.tags())),
        ("POST", ["tags"]) => match object(body).and_then(|o| strings(&o, "tags")) {
            Ok(tags) => answer(client.create_tags(&tags).map(|()| json!(client.tags()))),
            Err(r) => r,
        },
        ("DELETE", ["tags", rest @ ..]) if !rest.is_empty() => match decoded(rest) {
            Some(tag) => answer(
                client
                    .delete_tags(std::slice::from_ref(&tag))
                    .map(|()| json!(client.tags())),
            ),
            None => Response::error(400, "malformed percent-encoding"),
        },
        ("GET" | "HEAD", ["share_limits"]) => Response::json(200, &json!(client.share_limits())),
        ("PUT", ["share_limits"]) => match patch(&client.share_limits(), body) {
            Ok(l) => answer(client.set_share_limits(l).map(|()| json!(l))),
            Err(r) => r,
        },
        ("GET" | "HEAD", ["queue"]) => Response::json(200, &json!(client.queue_config())),
        ("PUT", ["queue"]) => match patch(&client.queue_config(), body) {
            Ok(q) => answer(client.set_queue_config(q).map(|()| json!(q))),
            Err(r) => r,
        },
        _ => return None,
    })
}

/// Answers one request against the client (`watch`: the watch folder's figures, for
/// `/metrics`).
pub fn handle(client: &Client, routed: Routed, watch: Option<WatchStats>) -> Response {
    match routed {
        Routed::Own(req) => handle_own(client, req, watch),
        Routed::Qbt(req, web) => web.handle(client, req),
    }
}

/// The watch folder's lines for `/metrics`.
fn watch_metrics(w: WatchStats) -> String {
    format!(
        "# HELP ringtorrent_watch_scans_total Full scans of the watch folder.\n\
         # TYPE ringtorrent_watch_scans_total counter\n\
         ringtorrent_watch_scans_total {}\n\
         # HELP ringtorrent_watch_skipped_total Watch folder ticks that scanned nothing: no change was notified.\n\
         # TYPE ringtorrent_watch_skipped_total counter\n\
         ringtorrent_watch_skipped_total {}\n\
         # HELP ringtorrent_watch_files .torrent files in the watch folder at the last scan.\n\
         # TYPE ringtorrent_watch_files gauge\n\
         ringtorrent_watch_files {}\n\
         # HELP ringtorrent_watch_notified Whether inotify watches the folder (1) or it is polled (0).\n\
         # TYPE ringtorrent_watch_notified gauge\n\
         ringtorrent_watch_notified {}\n",
        w.scans,
        w.skipped,
        w.files,
        u8::from(w.notified)
    )
}

fn handle_own(client: &Client, req: Request, watch: Option<WatchStats>) -> Response {
    let Request { head, body } = req;
    let path = head.path.as_str();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = head.method.as_str();
    if let Some(r) = policy_route(client, method, &parts, &body) {
        return r;
    }
    match (method, parts.as_slice()) {
        ("GET" | "HEAD", ["dht"]) => {
            let body = match client.dht_stats() {
                Some(d) => json!({
                    "enabled": true,
                    "address": client.dht_addr().map(|a| a.to_string()),
                    "nodes": d.nodes_v4 + d.nodes_v6,
                    "nodes_ipv4": d.nodes_v4,
                    "nodes_ipv6": d.nodes_v6,
                    "lookups_active": d.lookups_active,
                    "lookups_total": d.lookups_total,
                    "announces_sent": d.announces_sent,
                    "queries_answered": d.queries_answered,
                    "queries_dropped": d.queries_dropped,
                    "stored_torrents": d.stored_torrents,
                    "stored_peers": d.stored_peers,
                }),
                None => json!({ "enabled": false }),
            };
            Response::new(200, "application/json", body.to_string().into_bytes())
        }
        ("GET" | "HEAD", ["metrics"]) => {
            let mut text = client.metrics().to_prometheus();
            if let Some(w) = watch {
                text.push_str(&watch_metrics(w));
            }
            Response::new(200, "text/plain; version=0.0.4", text.into_bytes())
        }
        ("GET" | "HEAD", ["torrents"]) => {
            // Serialised from the statuses themselves, not through a `Value` tree of every
            // torrent first (a seedbox lists thousands).
            let mut body = serde_json::to_vec_pretty(&client.list()).unwrap_or_default();
            body.push(b'\n');
            Response::new(200, "application/json", body)
        }
        ("POST", ["torrents"]) => {
            if body.first() == Some(&b'{') {
                return match serde_json::from_slice::<Value>(&body) {
                    Err(e) => Response::error(400, format!("malformed JSON: {e}")),
                    Ok(v) if v.get("magnet").is_some() => match v["magnet"].as_str() {
                        None => Response::error(400, "`magnet` must be a string"),
                        Some(uri) => {
                            let o = v.as_object().expect("an object");
                            let (category, tags) =
                                match (optional_string(o, "category"), strings(o, "tags")) {
                                    (Ok(c), Ok(t)) => (c, t),
                                    (Err(r), _) | (_, Err(r)) => return r,
                                };
                            let mut add = AddTorrent::magnet(uri).tags(tags);
                            add.category = category;
                            added(client.add(add))
                        }
                    },
                    Ok(_) => Response::error(
                        400,
                        "send a .torrent file as the body, or {\"magnet\": \"magnet:?...\"}",
                    ),
                };
            }
            let paused = parse::query_flag(&head.query, "paused");
            let mut add = AddTorrent::bytes(body.to_vec()).paused(paused).label("api");
            add.category = parse::query_value(&head.query, "category").filter(|c| !c.is_empty());
            if let Some(tags) = parse::query_value(&head.query, "tags") {
                add = add.tags(tags.split(',').filter(|t| !t.trim().is_empty()));
            }
            added(client.add(add))
        }
        (_, ["torrents", hash, rest @ ..]) => {
            let hash = match hash_of(hash) {
                Ok(h) => h,
                Err(r) => return r,
            };
            let known = matches!(
                (method, rest),
                ("GET" | "DELETE", [])
                    | ("POST", ["pause" | "resume" | "move" | "reannounce"])
                    | ("GET", ["peers"])
                    | ("PUT" | "POST", ["limits"])
                    | (
                        "PUT",
                        ["category" | "share_limits" | "force_start" | "order"]
                    )
                    | ("GET" | "PUT", ["files"])
                    | ("POST", ["tags"])
                    | ("POST", ["queue", "top" | "bottom" | "up" | "down"])
            );
            if !known {
                return Response::error(404, format!("no route {method} {path}"));
            }
            let torrent = match client.get(hash) {
                Some(t) => t,
                None => return failure(ClientError::UnknownTorrent(hash)),
            };
            let result = match (method, rest) {
                ("GET", []) => torrent.status().map(|s| json!(s)),
                ("DELETE", []) => {
                    let delete = parse::query_flag(&head.query, "delete_data");
                    torrent
                        .remove(delete)
                        .map(|()| json!({ "removed": hash.to_hex() }))
                }
                ("POST", ["pause"]) => torrent.pause().map(|()| json!({ "paused": true })),
                ("POST", ["resume"]) => torrent.resume().map(|()| json!({ "paused": false })),
                ("POST", ["reannounce"]) => torrent.reannounce().map(|()| json!({})),
                ("POST", ["move"]) => {
                    let location =
                        match object(&body).and_then(|o| match (o.len(), o.get("location")) {
                            (1, Some(Value::String(s))) => Ok(s.clone()),
                            _ => Err(Response::error(400, "send {\"location\": \"/folder\"}")),
                        }) {
                            Ok(l) => l,
                            Err(r) => return r,
                        };
                    match torrent.move_storage(&location) {
                        Err(e @ ClientError::Io { .. }) => return Response::error(409, e),
                        r => r.map(|()| json!({ "location": location })),
                    }
                }
                ("GET", ["peers"]) => torrent.peers().map(|p| json!(p)),
                ("PUT", ["category"]) => {
                    let category = match object(&body).and_then(|o| {
                        if o.keys().any(|k| k != "category") {
                            return Err(Response::error(400, "send {\"category\": name or null}"));
                        }
                        optional_string(&o, "category")
                    }) {
                        Ok(c) => c,
                        Err(r) => return r,
                    };
                    torrent
                        .set_category(category.as_deref())
                        .map(|()| json!({ "category": category }))
                }
                ("POST", ["tags"]) => {
                    let (add, remove) = match object(&body)
                        .and_then(|o| Ok((strings(&o, "add")?, strings(&o, "remove")?)))
                    {
                        Ok(t) => t,
                        Err(r) => return r,
                    };
                    torrent
                        .add_tags(&add)
                        .and_then(|()| torrent.remove_tags(&remove))
                        .and_then(|()| torrent.status())
                        .map(|s| json!({ "tags": s.tags }))
                }
                ("PUT", ["share_limits"]) => {
                    let current = match torrent.status() {
                        Ok(s) => s.share_limits,
                        Err(e) => return failure(e),
                    };
                    match patch(&current, &body) {
                        Ok(l) => torrent.set_share_limits(l).map(|()| json!(l)),
                        Err(r) => return r,
                    }
                }
                ("PUT", ["force_start"]) => {
                    let on = match object(&body).map(|o| o.get("force_start").cloned()) {
                        Ok(Some(Value::Bool(b))) => b,
                        Ok(_) => {
                            return Response::error(400, "send {\"force_start\": true or false}")
                        }
                        Err(r) => return r,
                    };
                    torrent
                        .set_force_start(on)
                        .map(|()| json!({ "force_start": on }))
                }
                ("GET", ["files"]) => torrent.files().map(|f| json!(f)),
                ("PUT", ["files"]) => {
                    let prios = match object(&body).and_then(|o| {
                        serde_json::from_value::<Vec<FilePriority>>(
                            o.get("priorities").cloned().unwrap_or(Value::Null),
                        )
                        .map_err(|e| {
                            Response::error(
                                400,
                                format!("send {{\"priorities\": [\"normal\" or \"skip\" or \"high\" or \"maximal\", ...]}}: {e}"),
                            )
                        })
                    }) {
                        Ok(p) => p,
                        Err(r) => return r,
                    };
                    torrent
                        .set_file_priorities(prios)
                        .and_then(|()| torrent.files())
                        .map(|f| json!(f))
                }
                ("PUT", ["order"]) => {
                    let o = match object(&body) {
                        Ok(o) => o,
                        Err(r) => return r,
                    };
                    let flag = |k: &str| match o.get(k) {
                        None => Ok(None),
                        Some(Value::Bool(b)) => Ok(Some(*b)),
                        Some(_) => Err(Response::error(400, format!("`{k}` is true or false"))),
                    };
                    let (seq, fl) = match (flag("sequential"), flag("first_last_piece_priority")) {
                        (Ok(a), Ok(b)) => (a, b),
                        (Err(r), _) | (_, Err(r)) => return r,
                    };
                    seq.map_or(Ok(()), |on| torrent.set_sequential(on))
                        .and_then(|()| {
                            fl.map_or(Ok(()), |on| torrent.set_first_last_piece_priority(on))
                        })
                        .and_then(|()| torrent.status())
                        .map(|s| {
                            json!({"sequential": s.sequential,
                                   "first_last_piece_priority": s.first_last_piece_priority})
                        })
                }
                ("POST", ["queue", to]) => {
                    let to = match *to {
                        "top" => QueueMove::Top,
                        "bottom" => QueueMove::Bottom,
                        "up" => QueueMove::Up,
                        _ => QueueMove::Down,
                    };
                    torrent
                        .queue_move(to)
                        .and_then(|()| torrent.status())
                        .map(|s| json!({ "queue_position": s.queue_position }))
                }
                ("PUT" | "POST", ["limits"]) => {
                    let v: Value = match serde_json::from_slice(&body) {
                        Ok(v) => v,
                        Err(e) => return Response::error(400, format!("malformed JSON: {e}")),
                    };
                    // Anything but an object of these two keys is refused: read as "no
                    // limits", a typo or a bare number would lift both.
                    match v.as_object() {
                        None => {
                            return Response::error(
                                400,
                                "send {\"upload\": bytes/s or null, \"download\": ...}",
                            )
                        }
                        Some(o) => {
                            if let Some(k) = o.keys().find(|k| *k != "upload" && *k != "download") {
                                return Response::error(
                                    400,
                                    format!("unknown key `{k}`: only `upload` and `download`"),
                                );
                            }
                        }
                    }
                    let limit = |key: &str| -> Result<Option<u64>, Response> {
                        match v.get(key) {
                            None | Some(Value::Null) => Ok(None),
                            Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n > 0) => {
                                Ok(n.as_u64())
                            }
                            Some(other) => Err(Response::error(
                                400,
                                format!(
                                    "`{key}` must be bytes per second above 0 or null, not {other}"
                                ),
                            )),
                        }
                    };
                    let (up, down) = match (limit("upload"), limit("download")) {
                        (Ok(u), Ok(d)) => (u, d),
                        (Err(r), _) | (_, Err(r)) => return r,
                    };
                    torrent
                        .set_limits(up, down)
                        .map(|()| json!({ "upload": up, "download": down }))
                }
                _ => return Response::error(404, format!("no route {method} {path}")),
            };
            answer(result)
        }
        _ => Response::error(404, format!("no route {method} {path}")),
    }
}
