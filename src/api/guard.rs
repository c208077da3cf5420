//! Which requests a browser may have sent on someone else's behalf, and refusing them:
//!
//! - **DNS rebinding**: a page of `evil.example` whose name is made to resolve to 127.0.0.1
//!   talks to the API as its own origin, and its requests carry `Host: evil.example`. Only
//!   allowed names are served: `localhost`, the names configured, and IP literals (a
//!   rebinding needs a name; Transmission allows addresses the same way).
//! - **Cross-site requests**: any page may send a "simple" POST (`Content-Type: text/plain`,
//!   no preflight) to any address. A request other than GET and HEAD whose `Origin` (or,
//!   without one, `Referer`) names another origin than the one in its `Host` is refused,
//!   unless that origin is configured for CORS.
//! - **CORS** stays closed unless origins are configured: only then are preflights
//!   (`OPTIONS`) answered, with the CORS headers for exactly those origins.

use hyper::header::{HeaderMap, HeaderValue, HOST, ORIGIN, REFERER};
use hyper::Method;

/// A refused request: its status and a message saying why (and what to configure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status.
    pub status: u16,
    /// Why.
    pub message: String,
}

impl Refusal {
    /// A refusal with `status`.
    pub fn new(status: u16, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
        }
    }
}

/// The allowed `Host` names and CORS origins.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Extra names allowed in `Host` (lower case, no port); `*` allows any.
    hosts: Vec<String>,
    /// Origins allowed cross-origin (lower case, as `scheme://host[:port]`).
    cors_origins: Vec<String>,
}

/// Splits a `Host` value (or an origin's authority) into its name or address and its port:
/// `example.com:80`, `[::1]:7070`, `127.0.0.1`. `None` when it is malformed.
pub fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    if authority.is_empty() || authority.contains(['/', '@', ' ', '?', '#', '\\']) {
        return None;
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        inside.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (&authority[..inside.len() + 2], port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok()?),
    };
    (!host.is_empty()).then_some((host, port))
}

/// Whether `host` (as [`split_authority`] gives it) is an IPv4 address or a bracketed IPv6
/// one.
fn is_ip_literal(host: &str) -> bool {
    host.parse::<std::net::Ipv4Addr>().is_ok()
        || host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .is_some_and(|h| h.parse::<std::net::Ipv6Addr>().is_ok())
}

/// An origin (`scheme://authority`, or a `Referer` URL) as its scheme, host (lower case,
/// without a final dot) and port (the scheme's default if none is written).
fn origin_parts(url: &str) -> Option<(String, String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let (host, port) = split_authority(authority)?;
    Some((
        scheme,
        host.trim_end_matches('.').to_ascii_lowercase(),
        port.unwrap_or(default),
    ))
}

impl Policy {
    /// A policy allowing `hosts` besides the defaults (names, `*` for any; a port given is
    /// ignored) and `cors_origins` (`http://host[:port]` or `https://...`) cross-origin.
    /// `Err` names an entry that is not one.
    pub fn new(hosts: &[String], cors_origins: &[String]) -> Result<Policy, String> {
        let mut policy = Policy::default();
        for h in hosts {
            if h == "*" {
                policy.hosts.push("*".into());
                continue;
            }
            let (name, _) =
                split_authority(h).ok_or_else(|| format!("api_hosts: `{h}` is not a host name"))?;
            policy
                .hosts
                .push(name.trim_end_matches('.').to_ascii_lowercase());
        }
        for o in cors_origins {
            let (scheme, host, port) = origin_parts(o)
                .filter(|_| !o.trim_end_matches('/').contains(['?', '#']))
                .filter(|_| {
                    o.split_once("://")
                        .is_some_and(|(_, r)| !r.trim_end_matches('/').contains('/'))
                })
                .ok_or_else(|| {
                    format!("api_cors_origins: `{o}` is not an origin like https://example.com")
                })?;
            policy
                .cors_origins
                .push(format!("{scheme}://{host}:{port}"));
        }
        Ok(policy)
    }

    /// Whether a request's `Host` is allowed: it must be there (once) and name `localhost`, an
    /// IP address or an allowed name. Refused with 403 and what to configure.
    pub fn check_host(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let mut all = headers.get_all(HOST).iter();
        let (Some(value), None) = (all.next(), all.next()) else {
            return Err(Refusal::new(400, "a request needs exactly one Host header"));
        };
        let text = value.to_str().unwrap_or("");
        let (host, _) = split_authority(text)
            .ok_or_else(|| Refusal::new(400, "the Host header is malformed"))?;
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        if name == "localhost"
            || is_ip_literal(&name)
            || self.hosts.iter().any(|h| h == "*" || *h == name)
        {
            return Ok(());
        }
        Err(Refusal::new(
            403,
            format!(
                "Host `{text}` is not allowed (this refuses DNS rebinding): use localhost or an \
                 IP address, or add the name to api_hosts (--api-host)"
            ),
        ))
    }

    /// Whether `origin` is one of the configured CORS origins.
    fn cors_allows(&self, origin: &str) -> bool {
        origin_parts(origin).is_some_and(|(s, h, p)| {
            let o = format!("{s}://{h}:{p}");
            self.cors_origins.contains(&o)
        })
    }

    /// Whether a request other than GET and HEAD comes from the API's own origin (or from a
    /// configured CORS origin): its `Origin`, or without one its `Referer`, must name the
    /// host and port of its `Host` (either scheme: a TLS proxy in front keeps the name).
    /// A request with neither header (curl, scripts) passes: browsers send `Origin` with
    /// every cross-origin POST, PUT and DELETE. Refused with 403.
    pub fn check_origin(&self, method: &Method, headers: &HeaderMap) -> Result<(), Refusal> {
        if method == Method::GET || method == Method::HEAD {
            return Ok(());
        }
        let (what, claimed) = match headers.get(ORIGIN) {
            Some(o) => ("Origin", o),
            None => match headers.get(REFERER) {
                Some(r) => ("Referer", r),
                None => return Ok(()),
            },
        };
        let claimed = claimed.to_str().unwrap_or("");
        let refused = || {
            Refusal::new(
                403,
                format!(
                    "cross-origin request refused: its {what} `{claimed}` is not this API's \
                     origin (configure api_cors_origins to allow another origin)"
                ),
            )
        };
        if what == "Origin" && self.cors_allows(claimed) {
            return Ok(());
        }
        let (_, o_host, o_port) = origin_parts(claimed).ok_or_else(refused)?;
        let host = headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(split_authority)
            .ok_or_else(refused)?;
        let same = host.0.trim_end_matches('.').eq_ignore_ascii_case(&o_host)
            && host.1.unwrap_or(o_port) == o_port;
        if same {
            Ok(())
        } else {
            Err(refused())
        }
    }

    /// The `Access-Control-Allow-Origin` value for a request from a configured CORS origin.
    pub fn cors_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(ORIGIN)?;
        self.cors_allows(origin.to_str().ok()?)
            .then(|| origin.clone())
    }

    /// The answer to an `OPTIONS` request: the preflight headers (status 204) for a
    /// configured origin, else 403.
    pub fn preflight(
        &self,
        headers: &HeaderMap,
    ) -> Result<Vec<(&'static str, HeaderValue)>, Refusal> {
        match self.cors_origin(headers) {
            Some(origin) => Ok(vec![
                ("access-control-allow-origin", origin),
                (
                    "access-control-allow-methods",
                    HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE"),
                ),
                (
                    "access-control-allow-headers",
                    HeaderValue::from_static("Authorization, Content-Type"),
                ),
                ("access-control-max-age", HeaderValue::from_static("600")),
                ("vary", HeaderValue::from_static("Origin")),
            ]),
            None => Err(Refusal::new(
                403,
                "OPTIONS: cross-origin requests are not allowed from this origin \
                 (api_cors_origins lists those that are)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn authorities_split() {
        assert_eq!(split_authority("a.b:80"), Some(("a.b", Some(80))));
        assert_eq!(split_authority("[::1]:7070"), Some(("[::1]", Some(7070))));
        assert_eq!(split_authority("[::1]"), Some(("[::1]", None)));
        assert_eq!(split_authority("127.0.0.1"), Some(("127.0.0.1", None)));
        for bad in [
            "", ":80", "a:b", "a:99999", "[::1", "[x]:1", "[::1]x", "a/b", "u@h", "h:1:2",
        ] {
            assert_eq!(split_authority(bad), None, "{bad}");
        }
    }

    #[test]
    fn hosts_allowed_and_refused() {
        let p = Policy::new(&["Box.Example.com:443".into()], &[]).unwrap();
        for ok in [
            "localhost",
            "LOCALHOST:7070",
            "localhost.",
            "127.0.0.1:7070",
            "[::1]:7070",
            "[::1]",
            "192.168.1.5",
            "box.example.com",
            "box.example.com:8080",
        ] {
            assert_eq!(p.check_host(&headers(&[("host", ok)])), Ok(()), "{ok}");
        }
        for (bad, status) in [
            ("rebind.evil.example", 403),
            ("localhost.evil.example", 403),
            ("example.com", 403),
            ("127.0.0.1.nip.io", 403),
            ("", 400),
            ("a b", 400),
        ] {
            let r = p.check_host(&headers(&[("host", bad)]));
            assert_eq!(r.map_err(|r| r.status), Err(status), "{bad}");
        }
        assert_eq!(p.check_host(&HeaderMap::new()).unwrap_err().status, 400);
        let two = headers(&[("host", "localhost"), ("host", "evil.example")]);
        assert_eq!(p.check_host(&two).unwrap_err().status, 400);
        let any = Policy::new(&["*".into()], &[]).unwrap();
        assert_eq!(
            any.check_host(&headers(&[("host", "evil.example")])),
            Ok(())
        );
        assert!(Policy::new(&["a/b".into()], &[]).is_err());
    }

    #[test]
    fn origins_same_cross_and_cors() {
        let p = Policy::new(&[], &["https://ui.example.com".into()]).unwrap();
        let post = Method::POST;
        let check = |pairs: &[(&'static str, &str)]| {
            p.check_origin(&post, &headers(pairs)).map_err(|r| r.status)
        };
        let host = ("host", "127.0.0.1:7070");
        assert_eq!(check(&[host]), Ok(()), "no Origin, no Referer: a script");
        assert_eq!(check(&[host, ("origin", "http://127.0.0.1:7070")]), Ok(()));
        assert_eq!(
            check(&[("host", "box:443"), ("origin", "https://box")]),
            Ok(())
        );
        assert_eq!(check(&[("host", "box"), ("origin", "https://box")]), Ok(()));
        assert_eq!(check(&[host, ("origin", "http://evil.example")]), Err(403));
        assert_eq!(
            check(&[host, ("origin", "http://127.0.0.1:8080")]),
            Err(403)
        );
        assert_eq!(check(&[host, ("origin", "null")]), Err(403));
        assert_eq!(
            check(&[host, ("referer", "http://127.0.0.1:7070/ui/index.html")]),
            Ok(())
        );
        assert_eq!(
            check(&[host, ("referer", "http://evil.example/x")]),
            Err(403)
        );
        assert_eq!(check(&[host, ("origin", "https://ui.example.com")]), Ok(()));
        assert_eq!(
            check(&[host, ("origin", "https://ui.example.com:443")]),
            Ok(())
        );
        assert_eq!(
            check(&[host, ("origin", "http://ui.example.com")]),
            Err(403)
        );
        // GET and HEAD change nothing: not checked.
        let evil = headers(&[host, ("origin", "http://evil.example")]);
        assert_eq!(p.check_origin(&Method::GET, &evil), Ok(()));
        assert_eq!(
            p.check_origin(&Method::DELETE, &evil).unwrap_err().status,
            403
        );
    }

    #[test]
    fn preflights_only_for_configured_origins() {
        let closed = Policy::new(&[], &[]).unwrap();
        let from = headers(&[("origin", "https://ui.example.com")]);
        assert_eq!(closed.preflight(&from).unwrap_err().status, 403);
        assert_eq!(closed.cors_origin(&from), None);
        let open = Policy::new(&[], &["https://ui.example.com/".into()]).unwrap();
        let answer = open.preflight(&from).unwrap();
        assert_eq!(answer[0].1, "https://ui.example.com");
        let other = headers(&[("origin", "https://evil.example")]);
        assert_eq!(open.preflight(&other).unwrap_err().status, 403);
        for bad in ["ui.example.com", "ftp://x", "https://x/path", "https://x?q"] {
            assert!(Policy::new(&[], &[bad.into()]).is_err(), "{bad}");
        }
    }
}
