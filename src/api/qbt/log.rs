//! `log/main` and `log/peers`: the WebAPI's own journal (what it was asked to do, what it
//! refused or ignored), kept in a bounded ring.

use std::collections::VecDeque;

use serde_json::{json, Value};

use super::{unix_now, Params, WebApi};
use crate::api::Response;

/// Message types, as qBittorrent numbers them.
pub const NORMAL: u8 = 1;
/// An informational message.
pub const INFO: u8 = 2;
/// A warning.
pub const WARNING: u8 = 4;
/// A critical message.
pub const CRITICAL: u8 = 8;

/// Messages kept; the oldest go first.
pub const MAX_MESSAGES: usize = 1000;

/// The journal.
#[derive(Debug)]
pub struct Log {
    next_id: i64,
    messages: VecDeque<(i64, i64, u8, String)>,
}

impl Log {
    /// An empty journal.
    pub fn new() -> Log {
        Log {
            next_id: 0,
            messages: VecDeque::new(),
        }
    }

    /// Adds a message.
    pub fn push(&mut self, kind: u8, message: String) {
        if self.messages.len() == MAX_MESSAGES {
            self.messages.pop_front();
        }
        self.messages
            .push_back((self.next_id, unix_now() * 1000, kind, message));
        self.next_id += 1;
    }

    /// Messages after `last_known_id` whose type is in `kinds` (a mask), as `log/main` shows
    /// them.
    pub fn since(&self, last_known_id: i64, kinds: u8) -> Value {
        Value::Array(
            self.messages
                .iter()
                .filter(|(id, _, kind, _)| *id > last_known_id && kinds & kind != 0)
                .map(|(id, ts, kind, m)| {
                    json!({ "id": id, "message": m, "timestamp": ts, "type": kind })
                })
                .collect(),
        )
    }
}

impl Default for Log {
    fn default() -> Self {
        Log::new()
    }
}

/// Answers `log/<name>`.
pub fn handle(api: &WebApi, name: &str, p: &Params) -> Option<Response> {
    match name {
        "main" => {
            let on = |k: &str| p.flag(k).unwrap_or(true);
            let mut kinds = 0;
            for (key, bit) in [
                ("normal", NORMAL),
                ("info", INFO),
                ("warning", WARNING),
                ("critical", CRITICAL),
            ] {
                if on(key) {
                    kinds |= bit;
                }
            }
            let last = match p.int("last_known_id") {
                Ok(v) => v.unwrap_or(-1),
                Err(r) => return Some(r),
            };
            Some(super::json(&api.state().log.since(last, kinds)))
        }
        // No peer ban journal yet: an empty one.
        "peers" => Some(super::json(&json!([]))),
        _ => None,
    }
}
