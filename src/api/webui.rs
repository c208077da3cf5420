//! The web UI: a page and its static assets (`webui/`), embedded in the binary with
//! `include_bytes!`, served at `/` and under `/ui/`. It is plain HTML, CSS and JavaScript
//! modules, no framework and no build step; in the browser it talks only to this same
//! origin, through the qBittorrent WebAPI ([`super::qbt`]): `auth/status` to learn which ways
//! in exist, `auth/login` (password or API key) when credentials are configured, `sync/maindata` with `rid` deltas for live updates, `torrents/*` for actions.
//!
//! Every asset is answered with its content type, an `ETag` computed at compile time (a
//! matching `If-None-Match` gets `304`) under `Cache-Control: no-cache` (revalidated, so an
//! upgraded binary is picked up at once), and security headers: a Content-Security-Policy
//! that allows scripts, styles, images and connections from this origin only (no inline
//! script or style, no framing), `X-Frame-Options: DENY`, `X-Content-Type-Options: nosniff`,
//! `Referrer-Policy: same-origin`, `Cross-Origin-Opener-Policy` and
//! `Cross-Origin-Resource-Policy: same-origin`. Not compressed: the whole UI is a few tens
//! of KiB (measured by `scripts/bench-webui.sh`).
//!
//! A front end routes a request here when [`is_ui_path`] holds and answers it with
//! [`respond`], after its own `Host` checks; the assets need no login (the login page is one
//! of them), the data behind them does.

use hyper::header::HeaderValue;
use hyper::Method;

use super::{Head, Response};

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Its path on the API port.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
    /// Its entity tag, quotes included.
    pub etag: &'static str,
}

/// FNV-1a, 64 bits: enough to tell versions of a file apart, and computable in a `const`.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

/// `"` + 16 hex digits of the hash + `"`, at compile time.
const fn etag_of(bytes: &[u8]) -> [u8; 18] {
    let h = fnv1a(bytes);
    let digits = b"0123456789abcdef";
    let mut out = [b'"'; 18];
    let mut i = 0;
    while i < 16 {
        out[1 + i] = digits[((h >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

macro_rules! assets {
    ($(($path:literal, $file:literal, $type:literal)),* $(,)?) => {
        /// Every file of the UI.
        pub const ASSETS: &[Asset] = &[$({
            const BODY: &[u8] = include_bytes!(concat!("webui/", $file));
            const TAG: [u8; 18] = etag_of(BODY);
            Asset {
                path: $path,
                content_type: $type,
                body: BODY,
                etag: match std::str::from_utf8(&TAG) {
                    Ok(s) => s,
                    Err(_) => panic!("hex digits are UTF-8"),
                },
            }
        }),*];
    };
}

assets![
    ("/", "index.html", "text/html; charset=utf-8"),
    ("/ui/app.css", "app.css", "text/css; charset=utf-8"),
    ("/ui/app.js", "app.js", "text/javascript; charset=utf-8"),
    ("/ui/api.js", "api.js", "text/javascript; charset=utf-8"),
    (
        "/ui/format.js",
        "format.js",
        "text/javascript; charset=utf-8"
    ),
    ("/ui/list.js", "list.js", "text/javascript; charset=utf-8"),
    (
        "/ui/detail.js",
        "detail.js",
        "text/javascript; charset=utf-8"
    ),
    (
        "/ui/dialogs.js",
        "dialogs.js",
        "text/javascript; charset=utf-8"
    ),
    ("/ui/graph.js", "graph.js", "text/javascript; charset=utf-8"),
    ("/ui/icon.svg", "icon.svg", "image/svg+xml"),
];

/// The Content-Security-Policy of every UI answer: this origin only, nothing inline, no
/// framing, forms posting nowhere else.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

/// Whether a path is the UI's: `/`, `/index.html` or under `/ui/`.
pub fn is_ui_path(path: &str) -> bool {
    path == "/" || path == "/index.html" || path.starts_with("/ui/")
}

/// The asset at `path` (`/index.html` is `/`).
pub fn asset(path: &str) -> Option<&'static Asset> {
    let path = if path == "/index.html" { "/" } else { path };
    ASSETS.iter().find(|a| a.path == path)
}

fn secured(mut r: Response) -> Response {
    for (name, value) in [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
    ] {
        r = r.header(name, HeaderValue::from_static(value));
    }
    r
}

/// Answers a request for a UI path: the asset (200, or 304 when `If-None-Match` names its
/// tag), 404 for a path with none, 405 for a method other than GET and HEAD.
pub fn respond(head: &Head) -> Response {
    if head.method != Method::GET && head.method != Method::HEAD {
        return secured(Response::new(
            405,
            "text/plain; charset=utf-8",
            b"GET only\n".to_vec(),
        ))
        .header("allow", HeaderValue::from_static("GET, HEAD"));
    }
    let Some(a) = asset(&head.path) else {
        return secured(Response::new(
            404,
            "text/plain; charset=utf-8",
            b"no such file\n".to_vec(),
        ));
    };
    let matches = head
        .headers
        .get_all(hyper::header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.strip_prefix("W/").unwrap_or(t) == a.etag
        });
    let r = if matches {
        let mut r = Response::new(304, a.content_type, Vec::new());
        r.headers.clear();
        r
    } else {
        Response::new(200, a.content_type, a.body.to_vec())
    };
    secured(r)
        .header("etag", HeaderValue::from_static(a.etag))
        .header("cache-control", HeaderValue::from_static("no-cache"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: Method, path: &str, headers: &[(&'static str, &'static str)]) -> Head {
        let mut h = hyper::HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, HeaderValue::from_static(v));
        }
        Head {
            method,
            path: path.into(),
            query: String::new(),
            headers: h,
            peer: "127.0.0.1:1".parse().unwrap(),
            content_length: None,
        }
    }

    fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(k, _)| k.as_str() == name)
            .and_then(|(_, v)| v.to_str().ok())
    }

    #[test]
    fn every_asset_is_served_with_its_type_tag_and_security_headers() {
        for a in ASSETS {
            let r = respond(&head(Method::GET, a.path, &[]));
            assert_eq!(r.status, 200, "{}", a.path);
            assert_eq!(r.body, a.body);
            assert_eq!(header(&r, "content-type"), Some(a.content_type));
            assert_eq!(header(&r, "etag"), Some(a.etag));
            assert_eq!(header(&r, "x-content-type-options"), Some("nosniff"));
            assert_eq!(header(&r, "x-frame-options"), Some("DENY"));
            let csp = header(&r, "content-security-policy").unwrap();
            assert!(csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe"));
            assert!(a.etag.len() == 18 && a.etag.starts_with('"') && a.etag.ends_with('"'));
        }
        // Tags tell the files apart.
        let mut tags: Vec<&str> = ASSETS.iter().map(|a| a.etag).collect();
        tags.sort();
        tags.dedup();
        assert_eq!(tags.len(), ASSETS.len());
    }

    #[test]
    fn a_known_tag_is_not_modified_and_other_methods_and_paths_are_refused() {
        let a = asset("/ui/app.js").unwrap();
        let mut h = head(Method::GET, "/ui/app.js", &[]);
        h.headers.insert(
            hyper::header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"x\", W/{}", a.etag)).unwrap(),
        );
        let r = respond(&h);
        assert_eq!((r.status, r.body.len()), (304, 0));
        assert_eq!(header(&r, "etag"), Some(a.etag));
        let stale = respond(&head(
            Method::GET,
            "/ui/app.js",
            &[("if-none-match", "\"0000000000000000\"")],
        ));
        assert_eq!(stale.status, 200);
        assert_eq!(respond(&head(Method::POST, "/", &[])).status, 405);
        assert_eq!(
            respond(&head(Method::GET, "/ui/nothing.js", &[])).status,
            404
        );
        assert_eq!(
            respond(&head(Method::GET, "/ui/../Cargo.toml", &[])).status,
            404
        );
        assert_eq!(asset("/index.html").unwrap().path, "/");
        assert!(is_ui_path("/") && is_ui_path("/ui/x") && !is_ui_path("/torrents"));
    }

    #[test]
    fn the_page_loads_no_script_or_style_inline_and_nothing_from_elsewhere() {
        for a in ASSETS {
            let text = String::from_utf8_lossy(a.body);
            for far in ["http://", "https://", "//cdn", "@import url("] {
                // The SVG's XML namespace is a name, not a fetch.
                if a.path.ends_with(".svg") && far == "http://" {
                    continue;
                }
                assert!(!text.contains(far), "{} mentions {far}", a.path);
            }
        }
        let page = String::from_utf8_lossy(asset("/").unwrap().body).into_owned();
        assert!(!page.contains("<style"), "inline style");
        assert!(!page.contains(" style="), "inline style attribute");
        let inline_handler = page.match_indices(" on").any(|(i, _)| {
            let rest = &page[i + 3..];
            let word = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            word > 0 && rest[word..].starts_with('=')
        });
        assert!(!inline_handler, "inline event handler");
        for script in page.split("<script").skip(1) {
            assert!(script.contains("src=\"/ui/"), "inline script: {script}");
        }
    }
}
