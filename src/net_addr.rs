//! Addresses as users write them and as the host has them: the one parser of listen/bind
//! addresses every command uses ([`parse_bind`]), whether this host can listen on IPv6
//! ([`ipv6_available`]), and its global IPv6 address for BEP 7's tracker `ipv6` parameter
//! ([`global_ipv6`]). [`unmap`] (from the core) is re-exported here for the drivers and the
//! client: peer addresses are never IPv4-mapped inside the engine.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

pub use crate::core::types::{unmap, unmap_ip};

/// Why a bind address was refused; its text names the input and the forms accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindError {
    input: String,
    why: &'static str,
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not a listen address: {} (expected IP, IP:PORT or [IPv6]:PORT, e.g. \
             0.0.0.0, ::, 192.0.2.7:6881, [::1]:6881)",
            self.input, self.why
        )
    }
}

impl std::error::Error for BindError {}

/// Parses a listen address: `IP` (IPv4 or IPv6, the port is `default_port`), `IPv4:PORT`,
/// `[IPv6]` or `[IPv6]:PORT`. A bare IPv6 address never carries a port (`::1:6881` is the
/// IPv6 address `::1:6881`); write `[::1]:6881`. Host names are refused: a listen address
/// is one of this host's addresses, and resolving a name could pick either family.
pub fn parse_bind(input: &str, default_port: u16) -> Result<SocketAddr, BindError> {
    let s = input.trim();
    let err = |why| BindError {
        input: input.to_owned(),
        why,
    };
    if s.is_empty() {
        return Err(err("it is empty"));
    }
    let port = |p: &str| -> Result<u16, BindError> {
        if p.is_empty() {
            return Err(err("the port after `:` is missing"));
        }
        p.parse::<u16>()
            .map_err(|_| err("the port must be a number from 0 to 65535"))
    };
    if let Some(rest) = s.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return Err(err("`[` without its `]`"));
        };
        let ip: Ipv6Addr = ip
            .parse()
            .map_err(|_| err("inside brackets must be an IPv6 address"))?;
        let port = match after {
            "" => default_port,
            _ => match after.strip_prefix(':') {
                Some(p) => port(p)?,
                None => return Err(err("after `]` only `:PORT` may follow")),
            },
        };
        return Ok(SocketAddr::new(IpAddr::V6(ip), port));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    match s.rsplit_once(':') {
        Some((ip, p)) if !ip.contains(':') => {
            let ip: std::net::Ipv4Addr = ip
                .parse()
                .map_err(|_| err("the part before `:PORT` is not an IPv4 address"))?;
            Ok(SocketAddr::new(IpAddr::V4(ip), port(p)?))
        }
        Some(_) => Err(err(
            "not an IPv6 address; an IPv6 address with a port is written [IPv6]:PORT",
        )),
        None => Err(err("not an IP address (host names are not accepted)")),
    }
}

/// Whether this host can open IPv6 sockets: false where the kernel has no IPv6
/// (`ipv6.disable=1`: `socket(AF_INET6)` fails) or no interface has an IPv6 address
/// (`/proc/net/if_inet6` absent or empty).
pub fn ipv6_available() -> bool {
    let has_addresses = std::fs::read_to_string("/proc/net/if_inet6")
        .map(|s| !s.trim().is_empty())
        .unwrap_or(false);
    has_addresses && std::net::UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).is_ok()
}

/// Whether `ip` is a global unicast IPv6 address (2000::/3), the kind BEP 7 says to give
/// trackers: not loopback, link-local, unique-local, multicast, documentation
/// (2001:db8::/32) or an IPv4-mapped address.
pub fn is_global_ipv6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    (s[0] & 0xe000) == 0x2000 && !(s[0] == 0x2001 && s[1] == 0x0db8)
}

/// The first usable global unicast IPv6 address of this host's interfaces (from
/// `/proc/net/if_inet6`), `None` when there is none.
pub fn global_ipv6() -> Option<Ipv6Addr> {
    let text = std::fs::read_to_string("/proc/net/if_inet6").ok()?;
    global_ipv6_in(&text)
}

/// [`global_ipv6`] over the text of `/proc/net/if_inet6`: each line is the address as 32
/// hex digits, then the interface index, prefix length, scope, flags and name. Addresses
/// flagged tentative (0x40), deprecated (0x20) or failed DAD (0x08) are skipped.
pub fn global_ipv6_in(text: &str) -> Option<Ipv6Addr> {
    text.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let hex = fields.next()?;
        let flags = fields.nth(3)?;
        let flags = u32::from_str_radix(flags, 16).ok()?;
        if hex.len() != 32 || flags & (0x40 | 0x20 | 0x08) != 0 {
            return None;
        }
        let bits = u128::from_str_radix(hex, 16).ok()?;
        let ip = Ipv6Addr::from(bits);
        is_global_ipv6(ip).then_some(ip)
    })
}

/// The index of the interface that holds `ip` (from `/proc/net/if_inet6`), `None` when no
/// interface does.
pub fn ipv6_interface(ip: Ipv6Addr) -> Option<u32> {
    let text = std::fs::read_to_string("/proc/net/if_inet6").ok()?;
    ipv6_interface_in(&text, ip)
}

/// [`ipv6_interface`] over the text of `/proc/net/if_inet6`.
pub fn ipv6_interface_in(text: &str, ip: Ipv6Addr) -> Option<u32> {
    text.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let bits = u128::from_str_radix(fields.next()?, 16).ok()?;
        let index = u32::from_str_radix(fields.next()?, 16).ok()?;
        (Ipv6Addr::from(bits) == ip).then_some(index)
    })
}

/// BEP 7's `ipv6` announce parameter for a client whose listener is bound to `listen`: the
/// address a tracker should hand IPv6 peers, or `None` to send none. The rule: only when we
/// listen on IPv6, and only a global unicast address ([`is_global_ipv6`]): the listen
/// address itself when it is one, else for `[::]` the first global address of this host's
/// interfaces ([`global_ipv6`], read when the client starts). An IPv4 listener (including
/// `[::]` fallen back to `0.0.0.0`), `::1`, link-local and unique-local addresses send none:
/// a tracker could hand them to no one.
pub fn announce_ipv6(listen: Option<SocketAddr>) -> Option<Ipv6Addr> {
    announce_ipv6_with(listen, global_ipv6)
}

/// [`announce_ipv6`] with the host's global address from `host`.
pub fn announce_ipv6_with(
    listen: Option<SocketAddr>,
    host: impl FnOnce() -> Option<Ipv6Addr>,
) -> Option<Ipv6Addr> {
    match listen? {
        SocketAddr::V6(a) if a.ip().is_unspecified() => host().filter(|ip| is_global_ipv6(*ip)),
        SocketAddr::V6(a) => is_global_ipv6(*a.ip()).then_some(*a.ip()),
        SocketAddr::V4(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_bind_addresses() {
        for (input, want) in [
            ("0.0.0.0", "0.0.0.0:6881"),
            ("127.0.0.1", "127.0.0.1:6881"),
            ("10.1.2.3:7000", "10.1.2.3:7000"),
            ("::", "[::]:6881"),
            ("::1", "[::1]:6881"),
            ("[::]", "[::]:6881"),
            ("[::1]:0", "[::1]:0"),
            ("[::1]:6882", "[::1]:6882"),
            ("fe80::1", "[fe80::1]:6881"),
            ("::1:6881", "[::1:6881]:6881"),
            (" [2001:db8::7]:65535 ", "[2001:db8::7]:65535"),
            ("::ffff:127.0.0.1", "[::ffff:127.0.0.1]:6881"),
        ] {
            assert_eq!(
                parse_bind(input, 6881),
                Ok(want.parse().unwrap()),
                "{input}"
            );
        }
    }

    #[test]
    fn bad_bind_addresses_say_why() {
        for (input, why) in [
            ("", "it is empty"),
            ("  ", "it is empty"),
            ("localhost", "host names are not accepted"),
            ("localhost:6881", "not an IPv4 address"),
            ("1.2.3:80", "not an IPv4 address"),
            ("1.2.3.4:", "the port after `:` is missing"),
            ("1.2.3.4:65536", "from 0 to 65535"),
            ("1.2.3.4:-1", "from 0 to 65535"),
            ("[::1", "`[` without its `]`"),
            ("[::1]6881", "only `:PORT` may follow"),
            ("[::1]:", "the port after `:` is missing"),
            ("[::1]:http", "from 0 to 65535"),
            ("[127.0.0.1]:80", "inside brackets must be an IPv6 address"),
            ("[]:80", "inside brackets must be an IPv6 address"),
            ("::g", "written [IPv6]:PORT"),
            ("1:2:3:4:5:6:7:8:9", "written [IPv6]:PORT"),
        ] {
            let e = parse_bind(input, 6881).expect_err(input);
            let text = e.to_string();
            assert!(text.contains(why), "{input}: {text}");
            assert!(text.contains(&format!("`{input}`")), "{text}");
            assert!(text.contains("[IPv6]:PORT"), "{text}");
        }
    }

    #[test]
    fn global_addresses_from_proc() {
        let text = "\
00000000000000000000000000000001 01 80 10 80       lo
fe800000000000000000000000000001 02 40 20 80     eth0
fd000000000000000000000000000002 02 40 00 80     eth0
20010db8000000000000000000000001 02 40 00 80     eth0
2a0100000000000000000000000000aa 02 40 00 20     eth0
2a0100000000000000000000000000bb 02 40 00 00     eth0
";
        assert_eq!(global_ipv6_in(text), Some("2a01::bb".parse().unwrap()));
        assert_eq!(global_ipv6_in("garbage\n\n1 2 3 4 5"), None);
        assert!(!is_global_ipv6(Ipv6Addr::LOCALHOST));
        assert!(!is_global_ipv6("::ffff:1.2.3.4".parse().unwrap()));
        assert!(is_global_ipv6("2600::1".parse().unwrap()));
    }

    #[test]
    fn the_ipv6_announce_parameter_rule() {
        let global: Ipv6Addr = "2a01::bb".parse().unwrap();
        let at = |s: &str| Some(s.parse::<SocketAddr>().unwrap());
        let has = || Some(global);
        assert_eq!(announce_ipv6_with(at("[::]:6881"), has), Some(global));
        assert_eq!(announce_ipv6_with(at("[::]:6881"), || None), None);
        assert_eq!(
            announce_ipv6_with(at("[::]:6881"), || Some(Ipv6Addr::LOCALHOST)),
            None
        );
        assert_eq!(
            announce_ipv6_with(at("[2600::5]:1"), has),
            Some("2600::5".parse().unwrap())
        );
        for quiet in [
            "[::1]:1",
            "[fe80::1]:1",
            "[fd00::2]:1",
            "0.0.0.0:1",
            "192.0.2.1:1",
        ] {
            assert_eq!(announce_ipv6_with(at(quiet), has), None, "{quiet}");
        }
        assert_eq!(announce_ipv6_with(None, has), None);
    }

    #[test]
    fn the_interface_holding_an_ipv6_address() {
        let text = "00000000000000000000000000000001 01 80 10 80       lo\n\
                    fe800000000000000000000000000001 1a 40 20 80     eth0\n\
                    20010db8000000000000000000000005 1a 40 00 00     eth0\n";
        assert_eq!(ipv6_interface_in(text, Ipv6Addr::LOCALHOST), Some(1));
        assert_eq!(
            ipv6_interface_in(text, "2001:db8::5".parse().unwrap()),
            Some(0x1a)
        );
        assert_eq!(
            ipv6_interface_in(text, "2001:db8::6".parse().unwrap()),
            None
        );
        assert_eq!(ipv6_interface_in("", Ipv6Addr::LOCALHOST), None);
    }
}
