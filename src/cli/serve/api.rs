//! The control API: HTTP/1.1 with JSON bodies, on loopback by default, plus `GET /metrics` in
//! Prometheus text format. A thread accepts requests (tiny_http); each is read on a thread of
//! its own (at most `MAX_IN_FLIGHT` at once) and handed to the control thread, which asks
//! the [`Client`], and its answer sent back.
//!
//! ```text
//!   GET    /torrents                     every torrent's status
//!   POST   /torrents                     add: the body is a .torrent file, or
//!                                        {"magnet": "magnet:?xt=..."}
//!   GET    /torrents/<hash>              one torrent
//!   DELETE /torrents/<hash>[?delete_data=true]
//!   POST   /torrents/<hash>/pause        out of the session, data and state kept
//!   POST   /torrents/<hash>/resume
//!   PUT    /torrents/<hash>/limits       {"upload": bytes/s or null, "download": ...}
//!   GET    /torrents/<hash>/peers        connected peers
//!   GET    /metrics                      Prometheus text
//! ```
//!
//! Errors are JSON `{"error": "..."}` with 400 (malformed request, or a body shorter than its
//! `Content-Length`), 404 (unknown route or torrent), 409 (already added), 413 (body too
//! large), 503 (too many requests at once) or 500.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::Result;
use serde_json::{json, Value};

use ringtorrent::client::{AddTorrent, Client, ClientError, TorrentHandle};
use ringtorrent::core::InfoHash;

/// The largest request body read: a torrent file for the largest torrent we accept is a few
/// MiB of piece hashes (`limits::MAX_PIECES` x 20 bytes is 40 MB); 64 MiB bounds a hostile
/// upload.
const MAX_BODY: usize = 64 << 20;

/// A request for the control thread.
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Vec<u8>,
}

/// Its answer.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    fn json(status: u16, v: Value) -> Response {
        let mut body = serde_json::to_vec_pretty(&v).unwrap_or_default();
        body.push(b'\n');
        Response {
            status,
            content_type: "application/json",
            body,
        }
    }

    fn error(status: u16, msg: impl std::fmt::Display) -> Response {
        Response::json(status, json!({ "error": msg.to_string() }))
    }
}

/// What the API thread sends the control thread.
pub type Call = (Request, mpsc::Sender<Response>);

/// Requests read and answered at once, each on its own thread, so that a client that stalls
/// half-way through its body holds up only itself (tiny_http reads a body of more than 1 KiB
/// as it is consumed, with no time-out of its own). Past this a request is answered 503 at
/// once: stalled clients hold at most this many threads.
const MAX_IN_FLIGHT: usize = 32;

/// Starts the API server on `addr`; requests arrive on the returned channel. The server stops
/// when the channel's receiver is dropped and a last request comes, or with the process.
pub fn start(addr: &str) -> Result<(mpsc::Receiver<Call>, std::net::SocketAddr)> {
    let server = tiny_http::Server::http(addr)
        .map_err(|e| anyhow::anyhow!("cannot start the control API on {addr}: {e}"))?;
    let local = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| anyhow::anyhow!("the control API has no IP address"))?;
    let (tx, rx) = mpsc::channel::<Call>();
    std::thread::Builder::new()
        .name("rt-api".into())
        .spawn(move || {
            let in_flight = Arc::new(AtomicUsize::new(0));
            let stopped = Arc::new(AtomicBool::new(false));
            for req in server.incoming_requests() {
                if stopped.load(Ordering::Relaxed) {
                    return; // the engine stopped
                }
                if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
                    respond(
                        req,
                        Response::error(503, "too many requests at once; try again"),
                    );
                    continue;
                }
                in_flight.fetch_add(1, Ordering::Relaxed);
                let (tx, in_flight, stopped) = (tx.clone(), in_flight.clone(), stopped.clone());
                let spawned =
                    std::thread::Builder::new()
                        .name("rt-api-req".into())
                        .spawn(move || {
                            if !answer(req, &tx) {
                                stopped.store(true, Ordering::Relaxed);
                            }
                            in_flight.fetch_sub(1, Ordering::Relaxed);
                        });
                if let Err(e) = spawned {
                    // The request went with the closure: its connection closes unanswered.
                    tracing::warn!("the control API cannot start a thread: {e}");
                }
            }
        })?;
    Ok((rx, local))
}

/// Reads one request's body, has the control thread answer it, and sends the answer back.
/// Returns `false` when the control thread is gone.
fn answer(mut req: tiny_http::Request, tx: &mpsc::Sender<Call>) -> bool {
    let url = req.url().to_string();
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (url, String::new()),
    };
    let mut body = Vec::new();
    let announced = req.body_length();
    let too_big = || Response::error(413, format!("the body is over {MAX_BODY} bytes"));
    let refused = if announced.is_some_and(|n| n > MAX_BODY) {
        Some(too_big())
    } else {
        let read = req
            .as_reader()
            .take(MAX_BODY as u64 + 1)
            .read_to_end(&mut body);
        match (read, announced) {
            (Err(e), _) => Some(Response::error(400, format!("cannot read the body: {e}"))),
            (Ok(_), _) if body.len() > MAX_BODY => Some(too_big()),
            // The client closed before sending all it announced: whatever arrived is not the
            // request it meant.
            (Ok(_), Some(n)) if body.len() < n => Some(Response::error(
                400,
                format!("the body ended after {} of its {n} bytes", body.len()),
            )),
            (Ok(_), _) => None,
        }
    };
    let answer = match refused {
        Some(refused) => refused,
        None => {
            let (reply_tx, reply_rx) = mpsc::channel();
            let call = Request {
                method: req.method().as_str().to_string(),
                path,
                query,
                body,
            };
            if tx.send((call, reply_tx)).is_err() {
                return false;
            }
            reply_rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| Response::error(500, "the engine did not answer"))
        }
    };
    respond(req, answer);
    true
}

fn respond(req: tiny_http::Request, answer: Response) {
    let header =
        tiny_http::Header::from_bytes("Content-Type", answer.content_type).expect("valid header");
    let _ = req.respond(
        tiny_http::Response::from_data(answer.body)
            .with_status_code(answer.status)
            .with_header(header),
    );
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
        Ok(t) => Response::json(201, json!({ "info_hash": t.info_hash().to_hex() })),
        Err(e) => failure(e),
    }
}

/// Answers one request against the client.
pub fn handle(client: &Client, req: Request) -> Response {
    let parts: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    let method = req.method.as_str();
    match (method, parts.as_slice()) {
        ("GET", ["metrics"]) => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4",
            body: client.metrics().to_prometheus().into_bytes(),
        },
        ("GET", ["torrents"]) => Response::json(200, json!(client.list())),
        ("POST", ["torrents"]) => {
            if req.body.first() == Some(&b'{') {
                return match serde_json::from_slice::<Value>(&req.body) {
                    Err(e) => Response::error(400, format!("malformed JSON: {e}")),
                    Ok(v) if v.get("magnet").is_some() => match v["magnet"].as_str() {
                        None => Response::error(400, "`magnet` must be a string"),
                        Some(uri) => added(client.add(AddTorrent::magnet(uri))),
                    },
                    Ok(_) => Response::error(
                        400,
                        "send a .torrent file as the body, or {\"magnet\": \"magnet:?...\"}",
                    ),
                };
            }
            let paused = req.query.split('&').any(|kv| kv == "paused=true");
            added(client.add(AddTorrent::bytes(req.body).paused(paused).label("api")))
        }
        (_, ["torrents", hash, rest @ ..]) => {
            let hash = match hash_of(hash) {
                Ok(h) => h,
                Err(r) => return r,
            };
            let known = matches!(
                (method, rest),
                ("GET" | "DELETE", [])
                    | ("POST", ["pause" | "resume"])
                    | ("GET", ["peers"])
                    | ("PUT" | "POST", ["limits"])
            );
            if !known {
                return Response::error(404, format!("no route {method} {}", req.path));
            }
            let torrent = match client.get(hash) {
                Some(t) => t,
                None => return failure(ClientError::UnknownTorrent(hash)),
            };
            let result = match (method, rest) {
                ("GET", []) => torrent.status().map(|s| json!(s)),
                ("DELETE", []) => {
                    let delete = req.query.split('&').any(|kv| kv == "delete_data=true");
                    torrent
                        .remove(delete)
                        .map(|()| json!({ "removed": hash.to_hex() }))
                }
                ("POST", ["pause"]) => torrent.pause().map(|()| json!({ "paused": true })),
                ("POST", ["resume"]) => torrent.resume().map(|()| json!({ "paused": false })),
                ("GET", ["peers"]) => torrent.peers().map(|p| json!(p)),
                ("PUT" | "POST", ["limits"]) => {
                    let v: Value = match serde_json::from_slice(&req.body) {
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
                _ => return Response::error(404, format!("no route {method} {}", req.path)),
            };
            match result {
                Ok(v) => Response::json(200, v),
                Err(e) => failure(e),
            }
        }
        _ => Response::error(404, format!("no route {method} {}", req.path)),
    }
}
