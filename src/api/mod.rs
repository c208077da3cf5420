//! The pieces of an HTTP control API that no web page can drive and no outsider can exhaust:
//! `ringtorrent serve` is wired from them, and so can be other front ends (a
//! qBittorrent-compatible API, a web UI).
//!
//! - [`server`]: [`Server`], hyper's HTTP/1.1 server on one dedicated thread with a
//!   current-thread tokio runtime (the engine's event loops stay io_uring). Connections,
//!   header size, body size, body memory across connections and every wait are bounded; an
//!   accept that fails (`EMFILE` when descriptors run out) is retried with back-off, logged
//!   once, never fatal. A [`Handler`] sees each request's [`Head`] before its body is read
//!   (refuse early), then the whole [`Request`].
//! - [`guard`]: [`Policy`](guard::Policy): the `Host` allow-list against DNS rebinding, the
//!   same-origin rule for state-changing requests (`Origin`, else `Referer`), and CORS,
//!   closed unless origins are configured.
//! - [`auth`]: [`Auth`](auth::Auth): a user name with an argon2id password hash, login
//!   sessions behind an `HttpOnly`, `SameSite=Strict` cookie, API keys (`Authorization:
//!   Bearer`) stored as hashes, failed logins bounded per address and overall, constant-time
//!   comparisons; and the tools that make the config's hashes and keys.
//! - [`webui`]: the web UI, a page and its scripts embedded in the binary, served with
//!   entity tags and a strict Content-Security-Policy; it drives [`qbt`] from the browser.
//! - [`parse`]: query strings, cookies, `Authorization` headers, content types, login forms
//!   (URL-encoded, JSON or multipart); [`multipart`]: `multipart/form-data` bodies.
//!
//! Everything here takes bytes from the network: nothing panics on them, and every table an
//! outsider can grow (sessions, failed-login counters, connections, parts) is bounded.

pub mod auth;
pub mod guard;
pub mod multipart;
pub mod parse;
pub mod qbt;
pub mod server;
pub mod webui;

pub use server::{Handler, Head, Request, Response, Server, ServerConfig};
