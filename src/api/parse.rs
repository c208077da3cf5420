//! Parsing what a request says: query strings and URL-encoded forms, cookies, `Authorization`
//! headers, content types and login forms. Every function takes untrusted input, never
//! panics on it, and bounds what it returns.

use hyper::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, COOKIE};

/// The most pairs a query string or form yields (and cookies a request carries); the rest are
/// ignored.
pub const MAX_PAIRS: usize = 256;

/// Decodes `%XX` escapes (and `+` as a space when `plus_as_space`, as forms write it). A `%`
/// not followed by two hex digits stays as it is. `None` when the result is not UTF-8.
pub fn percent_decode(s: &str, plus_as_space: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' if plus_as_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The `key=value` pairs of a query string or an `application/x-www-form-urlencoded` body,
/// decoded, at most [`MAX_PAIRS`]; a pair that does not decode to UTF-8 is skipped, a key
/// without `=` has an empty value.
pub fn query_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|kv| !kv.is_empty())
        .take(MAX_PAIRS)
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            Some((percent_decode(k, true)?, percent_decode(v, true)?))
        })
        .collect()
}

/// The first value of `key` in a query string, decoded.
pub fn query_value(query: &str, key: &str) -> Option<String> {
    query_pairs(query)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// Whether `key` is set to `true` or `1` in a query string.
pub fn query_flag(query: &str, key: &str) -> bool {
    query_value(query, key).is_some_and(|v| v == "true" || v == "1")
}

/// The `name=value` pairs of one `Cookie` header (RFC 6265: separated by `;`, a value may be
/// in double quotes), at most [`MAX_PAIRS`]. Pairs without `=` are skipped.
pub fn cookies(header: &str) -> impl Iterator<Item = (&str, &str)> {
    header.split(';').take(MAX_PAIRS).filter_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        let name = name.trim();
        (!name.is_empty()).then_some((name, value))
    })
}

/// The value of cookie `name` across the request's `Cookie` headers (the first one sent).
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookies)
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// The token of an `Authorization: Bearer TOKEN` header (the scheme in any case), if the
/// request has exactly one `Authorization` header and it is one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let mut all = headers.get_all(AUTHORIZATION).iter();
    let value = all.next()?;
    if all.next().is_some() {
        return None;
    }
    bearer_token(value.to_str().ok()?)
}

/// The token of one `Authorization` header value of the Bearer scheme.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
        .then_some(token)
}

/// A content type's essence (`type/subtype`, lower case) and its parameters (names lower
/// case, values unquoted), e.g. `multipart/form-data; boundary="x y"`.
pub fn media_type(value: &str) -> (String, Vec<(String, String)>) {
    let mut parts = split_params(value).into_iter();
    let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let params = parts
        .take(MAX_PAIRS)
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k.trim().to_ascii_lowercase(), unquote(v.trim())))
        })
        .collect();
    (essence, params)
}

/// Splits a header value on the `;` that are not inside a quoted string.
pub(crate) fn split_params(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&value[start..]);
    out
}

/// A quoted string's content with its escapes undone, or the value as it is.
pub(crate) fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                } else {
                    out.push(c);
                }
            }
            out
        }
        None => v.to_string(),
    }
}

/// The request's content type, as [`media_type`] reads it.
pub fn content_type(headers: &HeaderMap) -> Option<(String, Vec<(String, String)>)> {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(media_type)
}

/// The boundary of a `multipart/form-data` content type: 1 to 70 characters (RFC 2046).
pub fn multipart_boundary(content_type: &str) -> Option<String> {
    let (essence, params) = media_type(content_type);
    if essence != "multipart/form-data" {
        return None;
    }
    let (_, b) = params.into_iter().find(|(k, _)| k == "boundary")?;
    (!b.is_empty() && b.len() <= 70).then_some(b)
}

/// A user name and a password, as a login form sends them.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"(hidden)")
            .finish()
    }
}

/// What a login request proves: a user name with its password, or an API key (for a
/// browser on a setup that has only keys: the key buys a session cookie, as a password
/// does).
#[derive(Clone, PartialEq, Eq)]
pub enum Login {
    /// `username` and `password`.
    Password(Credentials),
    /// `api_key`.
    ApiKey(String),
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Login::Password(c) => c.fmt(f),
            Login::ApiKey(_) => f.write_str("ApiKey(hidden)"),
        }
    }
}

/// The fields of a login request: a URL-encoded form (`username=...&password=...`, as
/// qBittorrent's login takes them, or `api_key=...`), JSON (`{"username": ..., "password":
/// ...}` or `{"api_key": ...}`) or a multipart form with those fields. `Err` says what is
/// missing or malformed.
pub fn login_form(content_type: Option<&str>, body: &[u8]) -> Result<Login, String> {
    let (essence, _) = media_type(content_type.unwrap_or(""));
    let pairs: Vec<(String, String)> = match essence.as_str() {
        "application/json" => {
            let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
                .map_err(|e| {
                    format!("send {{\"username\": \"...\", \"password\": \"...\"}} or {{\"api_key\": \"...\"}}: {e}")
                })?;
            map.into_iter()
                .filter(|(k, _)| matches!(k.as_str(), "username" | "password" | "api_key"))
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => Ok((k, s)),
                    _ => Err(format!("the login's `{k}` is not a string")),
                })
                .collect::<Result<_, _>>()?
        }
        "multipart/form-data" => {
            let boundary = multipart_boundary(content_type.unwrap_or(""))
                .ok_or("a multipart form without a valid boundary")?;
            let parts = super::multipart::parse(body, &boundary).map_err(|e| e.to_string())?;
            parts
                .into_iter()
                .filter(|p| matches!(p.name.as_str(), "username" | "password" | "api_key"))
                .filter_map(|p| Some((p.name, String::from_utf8(p.data.to_vec()).ok()?)))
                .collect()
        }
        _ => {
            // URL-encoded, whatever it is labelled (curl -d sends that type).
            let text = std::str::from_utf8(body).map_err(|_| "the login form is not UTF-8")?;
            query_pairs(text)
        }
    };
    let find = |key: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| format!("the login form has no `{key}`"))
    };
    if let Ok(key) = find("api_key") {
        return Ok(Login::ApiKey(key));
    }
    Ok(Login::Password(Credentials {
        username: find("username")?,
        password: find("password")?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn percent_decoding_keeps_bad_escapes_and_refuses_bad_utf8() {
        assert_eq!(percent_decode("a%20b+c", true).unwrap(), "a b c");
        assert_eq!(percent_decode("a%20b+c", false).unwrap(), "a b+c");
        assert_eq!(percent_decode("100%", true).unwrap(), "100%");
        assert_eq!(percent_decode("%4", true).unwrap(), "%4");
        assert_eq!(percent_decode("%zz%41", true).unwrap(), "%zzA");
        assert_eq!(percent_decode("%C3%BC", true).unwrap(), "ü");
        assert_eq!(percent_decode("%FF", true), None);
    }

    #[test]
    fn query_strings() {
        let q = "delete_data=true&x&name=a%26b&&paused=1";
        assert_eq!(
            query_pairs(q),
            [
                ("delete_data".into(), "true".into()),
                ("x".into(), "".into()),
                ("name".into(), "a&b".into()),
                ("paused".into(), "1".into())
            ]
        );
        assert!(query_flag(q, "delete_data"));
        assert!(query_flag(q, "paused"));
        assert!(!query_flag(q, "x"));
        assert!(!query_flag("delete_data=false", "delete_data"));
        assert_eq!(query_pairs(&"a=1&".repeat(10_000)).len(), MAX_PAIRS);
    }

    #[test]
    fn cookie_headers() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; SID=\"abc\" ;b"));
        h.append(COOKIE, HeaderValue::from_static("SID=second; c=3"));
        assert_eq!(cookie(&h, "SID"), Some("abc"));
        assert_eq!(cookie(&h, "c"), Some("3"));
        assert_eq!(cookie(&h, "b"), None);
        assert_eq!(cookie(&h, "sid"), None, "names are case-sensitive");
        let pairs: Vec<_> = cookies(" x = y ;=z; ; w=").collect();
        assert_eq!(pairs, [("x", "y"), ("w", "")]);
        h.insert(COOKIE, HeaderValue::from_bytes(b"SID=\xff").unwrap());
        assert_eq!(cookie(&h, "SID"), None, "not text: no cookie");
    }

    #[test]
    fn bearer_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer  rtk_abc "));
        assert_eq!(bearer(&h), Some("rtk_abc"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("bearer x"));
        assert_eq!(bearer(&h), Some("x"));
        for bad in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Bearer a b"] {
            h.insert(AUTHORIZATION, HeaderValue::from_static(bad));
            assert_eq!(bearer(&h), None, "{bad}");
        }
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer a"));
        h.append(AUTHORIZATION, HeaderValue::from_static("Bearer b"));
        assert_eq!(bearer(&h), None, "two Authorization headers");
    }

    #[test]
    fn content_types_and_boundaries() {
        let (e, p) = media_type("Multipart/Form-Data; Boundary=\"a;b\\\"c\"; x=1");
        assert_eq!(e, "multipart/form-data");
        assert_eq!(
            p,
            [
                ("boundary".into(), "a;b\"c".into()),
                ("x".into(), "1".into())
            ]
        );
        assert_eq!(
            multipart_boundary("multipart/form-data; boundary=----x").as_deref(),
            Some("----x")
        );
        assert_eq!(multipart_boundary("multipart/form-data"), None);
        assert_eq!(multipart_boundary("text/plain; boundary=x"), None);
        assert_eq!(
            multipart_boundary(&format!("multipart/form-data; boundary={}", "b".repeat(71))),
            None
        );
    }

    #[test]
    fn login_forms() {
        let want = Login::Password(Credentials {
            username: "admin".into(),
            password: "p&ss word".into(),
        });
        let form = login_form(
            Some("application/x-www-form-urlencoded"),
            b"username=admin&password=p%26ss+word",
        );
        assert_eq!(form.unwrap(), want);
        let json = login_form(
            Some("application/json"),
            br#"{"username": "admin", "password": "p&ss word"}"#,
        );
        assert_eq!(json.unwrap(), want);
        let body = b"--XX\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\nadmin\r\n--XX\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\np&ss word\r\n--XX--\r\n";
        let multi = login_form(Some("multipart/form-data; boundary=XX"), body);
        assert_eq!(multi.unwrap(), want);
        assert!(login_form(None, b"username=admin").is_err());
        assert!(login_form(Some("application/json"), b"{\"username\": 1}").is_err());
        assert!(login_form(None, b"\xff").is_err());
        assert!(!format!("{want:?}").contains("ss word"), "Debug hides it");
        let key = Login::ApiKey("rtk_abc".into());
        assert_eq!(login_form(None, b"api_key=rtk_abc").unwrap(), key);
        assert_eq!(
            login_form(Some("application/json"), br#"{"api_key": "rtk_abc"}"#).unwrap(),
            key
        );
        let body = b"--XX\r\nContent-Disposition: form-data; name=\"api_key\"\r\n\r\nrtk_abc\r\n--XX--\r\n";
        assert_eq!(
            login_form(Some("multipart/form-data; boundary=XX"), body).unwrap(),
            key
        );
        assert!(!format!("{key:?}").contains("abc"), "Debug hides it");
    }
}
