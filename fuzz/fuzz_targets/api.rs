//! Feeds arbitrary bytes to the control API's request parsing (`ringtorrent::api`): cookie
//! headers, query strings, `Authorization` headers, content types and multipart bodies with
//! a boundary, login forms of every type, the `Host` allow-list and the same-origin check,
//! and session and API key lookups. Anyone who can reach the API sends these bytes: nothing
//! may panic, and the results must be consistent.
//!
//! The input is split on the first two 0xff bytes: header text, a boundary, then a body.

#![no_main]

use hyper::header::{HeaderMap, HeaderValue};
use hyper::Method;
use libfuzzer_sys::fuzz_target;
use ringtorrent::api::{auth, guard, multipart, parse};

fuzz_target!(|data: &[u8]| {
    let mut fields = data.splitn(3, |&b| b == 0xff);
    let header = fields.next().unwrap_or_default();
    let boundary = fields.next().unwrap_or_default();
    let body = fields.next().unwrap_or_default();
    let text = String::from_utf8_lossy(header);

    for (name, value) in parse::cookies(&text) {
        assert!(!name.is_empty() && !name.contains(';') && !value.contains(';'));
    }
    let pairs = parse::query_pairs(&text);
    assert!(pairs.len() <= parse::MAX_PAIRS);
    let _ = parse::query_flag(&text, "delete_data");
    let _ = parse::percent_decode(&text, true);
    if let Some(token) = parse::bearer_token(&text) {
        assert!(!token.is_empty() && !token.contains(' '));
    }
    let _ = parse::media_type(&text);
    if let Some(b) = parse::multipart_boundary(&text) {
        assert!(!b.is_empty() && b.len() <= 70);
    }
    let _ = guard::split_authority(&text);

    // Multipart with the given boundary: every part's data lies inside the body.
    let boundary = String::from_utf8_lossy(boundary);
    if let Ok(parts) = multipart::parse(body, &boundary) {
        assert!(parts.len() <= multipart::MAX_PARTS);
        let range = body.as_ptr_range();
        for p in parts {
            let r = p.data.as_ptr_range();
            assert!(range.start <= r.start && r.end <= range.end);
        }
    }
    for ct in [
        None,
        Some("application/json"),
        Some("application/x-www-form-urlencoded"),
        Some(&*format!("multipart/form-data; boundary={boundary}")),
        Some(&*text),
    ] {
        let _ = parse::login_form(ct, body);
    }

    // The header text as Host, Origin, Referer, Cookie and Authorization values.
    if let Ok(value) = HeaderValue::from_bytes(header) {
        let policy = guard::Policy::new(&["seedbox.test".into()], &["https://ui.test".into()])
            .expect("a valid policy");
        for name in ["host", "origin", "referer", "cookie", "authorization"] {
            let mut headers = HeaderMap::new();
            headers.insert("host", HeaderValue::from_static("127.0.0.1:7070"));
            headers.insert(name, value.clone());
            if let Err(r) = policy.check_host(&headers) {
                assert!(r.status == 400 || r.status == 403);
            }
            for method in [Method::GET, Method::POST, Method::DELETE] {
                if let Err(r) = policy.check_origin(&method, &headers) {
                    assert_eq!(r.status, 403);
                    assert_ne!(method, Method::GET);
                }
            }
            let _ = policy.preflight(&headers);
            let _ = policy.cors_origin(&headers);
            let _ = parse::cookie(&headers, auth::SESSION_COOKIE);
            let _ = parse::bearer(&headers);
            // One API key is configured: nothing the input says gets in, unless it is
            // that key.
            if let Ok(p) = AUTH.authenticate(&headers) {
                assert_eq!(p, auth::Principal::ApiKey);
                assert_eq!(parse::bearer(&headers), Some(KEY));
            }
        }
    }
    let _ = auth::parse_api_key_hash(&text);
    let _ = auth::check_password_hash(&text);
});

const KEY: &str = "rtk_fuzz";

static AUTH: std::sync::LazyLock<auth::Auth> = std::sync::LazyLock::new(|| {
    auth::Auth::new(auth::AuthConfig {
        api_keys: vec![auth::api_key_hash(KEY)],
        session_ttl: std::time::Duration::from_secs(60),
        ..Default::default()
    })
    .expect("a valid config")
});
