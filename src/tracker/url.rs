//! Tracker URLs, parsed once: scheme, host, port, and for HTTP the path and query.

use std::fmt;

use super::TrackerError;
use crate::limits;

/// How a tracker is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// BEP 15.
    Udp,
    /// BEP 3 over plain HTTP/1.1.
    Http,
    /// BEP 3 over TLS.
    Https,
}

/// A tracker URL split into the parts a request needs.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TrackerUrl {
    /// The URL as written in the torrent.
    pub raw: String,
    /// The scheme.
    pub scheme: Scheme,
    /// Host name or IP literal, without IPv6 brackets.
    pub host: String,
    /// Port (the scheme's default when the URL gives none; UDP has no default).
    pub port: u16,
    /// For HTTP, the path and query (`/announce?passkey=x`); `/` when absent. Empty for UDP.
    pub path: String,
}

impl TrackerUrl {
    /// Parses `udp://host:port[/...]`, `http://host[:port][/path][?query]` or the same with
    /// `https`. Fragments are dropped; user info is refused.
    pub fn parse(raw: &str) -> Result<TrackerUrl, TrackerError> {
        if raw.len() > limits::MAX_TRACKER_URL_LEN {
            return Err(TrackerError::InvalidUrl("longer than the limit"));
        }
        if raw.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(TrackerError::InvalidUrl(
                "contains spaces or control characters",
            ));
        }
        let (scheme_text, rest) = raw
            .split_once("://")
            .ok_or(TrackerError::InvalidUrl("no scheme"))?;
        let scheme = match scheme_text.to_ascii_lowercase().as_str() {
            "udp" => Scheme::Udp,
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => return Err(TrackerError::UnsupportedScheme(other.to_string())),
        };
        let rest = rest.split('#').next().unwrap_or("");
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.contains('@') {
            return Err(TrackerError::InvalidUrl(
                "user information is not supported",
            ));
        }
        let (host, port_text) = if let Some(inner) = authority.strip_prefix('[') {
            let (host, after) = inner
                .split_once(']')
                .ok_or(TrackerError::InvalidUrl("unclosed IPv6 bracket"))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(TrackerError::InvalidUrl("bad IPv6 address"));
            }
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(
                        after
                            .strip_prefix(':')
                            .ok_or(TrackerError::InvalidUrl("junk after IPv6 address"))?,
                    ),
                ),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() || host.len() > 253 {
            return Err(TrackerError::InvalidUrl("bad host"));
        }
        if !authority.starts_with('[')
            && !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            return Err(TrackerError::InvalidUrl("bad host"));
        }
        let port = match port_text {
            Some(p) => match p.parse::<u16>() {
                Ok(port) if port != 0 && p.bytes().all(|b| b.is_ascii_digit()) => port,
                _ => return Err(TrackerError::InvalidUrl("bad port")),
            },
            None => match scheme {
                Scheme::Http => 80,
                Scheme::Https => 443,
                Scheme::Udp => return Err(TrackerError::InvalidUrl("UDP tracker without port")),
            },
        };
        let path = match scheme {
            Scheme::Udp => String::new(),
            _ if path.starts_with('/') => path.to_string(),
            _ => format!("/{path}"),
        };
        Ok(TrackerUrl {
            raw: raw.to_string(),
            scheme,
            host: host.to_string(),
            port,
            path,
        })
    }

    /// The HTTP scrape path for this announce path (BEP 48 convention): the last path
    /// component must start with `announce`, which becomes `scrape`. UDP trackers scrape on
    /// the same address, so this returns `Some("")` for them.
    pub fn scrape_path(&self) -> Option<String> {
        if self.scheme == Scheme::Udp {
            return Some(String::new());
        }
        let (path, query) = match self.path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (self.path.as_str(), None),
        };
        let slash = path.rfind('/')?;
        let last = &path[slash + 1..];
        let tail = last.strip_prefix("announce")?;
        let mut out = format!("{}scrape{tail}", &path[..=slash]);
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        Some(out)
    }

    /// `host:port` with brackets around an IPv6 literal, for the `Host` header and messages.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for TrackerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl fmt::Debug for TrackerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrackerUrl({})", self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        let u = TrackerUrl::parse("udp://tracker.example.org:6969/announce").unwrap();
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port, u.path.as_str()),
            (Scheme::Udp, "tracker.example.org", 6969, "")
        );
        let u = TrackerUrl::parse("http://t.example/announce.php?passkey=ab%20c").unwrap();
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port, u.path.as_str()),
            (
                Scheme::Http,
                "t.example",
                80,
                "/announce.php?passkey=ab%20c"
            )
        );
        let u = TrackerUrl::parse("https://[::1]:8443/x/announce#frag").unwrap();
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port, u.path.as_str()),
            (Scheme::Https, "::1", 8443, "/x/announce")
        );
        assert_eq!(u.authority(), "[::1]:8443");
        let u = TrackerUrl::parse("HTTP://h:81?x=1").unwrap();
        assert_eq!((u.port, u.path.as_str()), (81, "/?x=1"));
    }

    #[test]
    fn refuses_what_is_not_a_tracker() {
        for bad in [
            "",
            "tracker.example:80",
            "udp://host/announce",
            "udp://host:0",
            "udp://host:65536",
            "udp://host:+80",
            "http://user:pw@host/announce",
            "http://[::1/announce",
            "http://[zz]:80/",
            "http:///announce",
            "http://ho st/announce",
            "wss://host/announce",
        ] {
            assert!(TrackerUrl::parse(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            TrackerUrl::parse("wss://h/a"),
            Err(TrackerError::UnsupportedScheme(s)) if s == "wss"
        ));
    }

    #[test]
    fn scrape_url_follows_bep_48() {
        let path = |u: &str| TrackerUrl::parse(u).unwrap().scrape_path();
        assert_eq!(path("http://h/announce").as_deref(), Some("/scrape"));
        assert_eq!(
            path("http://h/x/announce.php?k=1").as_deref(),
            Some("/x/scrape.php?k=1")
        );
        assert_eq!(
            path("http://h/a/announce?x=announce").as_deref(),
            Some("/a/scrape?x=announce")
        );
        assert_eq!(path("http://h/x/a"), None);
        assert_eq!(path("http://h/announce/x"), None);
        assert_eq!(path("udp://h:1").as_deref(), Some(""));
    }
}
