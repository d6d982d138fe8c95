//! Who may use the server and who a client is, as pure functions: the `Origin` an upgrade
//! must come from (`--allow-origin`, `--require-origin`), the client's address behind trusted
//! proxies (`--trusted-proxies`, from `X-Forwarded-For` or `X-Real-IP`), and the key under
//! which the per-address limit counts an address (`--ipv6-prefix`).

use std::net::{IpAddr, Ipv6Addr};

use crate::allow::IpNet;

/// One allowed origin: exact (`https://app.example.org`, port included when not the
/// scheme's default) or with one leading wildcard label (`https://*.example.org`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    scheme: String,
    /// The host after the wildcard's dot (`example.org`), or the whole host.
    host: String,
    wildcard: bool,
    /// Empty for the scheme's default port, else `:port`.
    port: String,
}

impl OriginPattern {
    /// Parses `scheme://host[:port]` or `scheme://*.host[:port]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad =
            |why: &str| format!("'{s}' is not an origin ({why}), e.g. https://app.example.org");
        let (scheme, rest) = s.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme.is_empty()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            return Err(bad("bad scheme"));
        }
        if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
            return Err(bad("an origin has no path, query or user"));
        }
        let (host, port) = split_port(rest).ok_or_else(|| bad("bad port"))?;
        let (wildcard, host) = match host.strip_prefix("*.") {
            Some(h) => (true, h),
            None => (false, host),
        };
        if host.is_empty() || host.contains('*') {
            return Err(bad(
                "a wildcard is one leading label: https://*.example.org",
            ));
        }
        Ok(Self {
            port: normalized_port(&scheme, port),
            scheme,
            host: host.to_ascii_lowercase(),
            wildcard,
        })
    }

    fn matches(&self, origin: &str) -> bool {
        let Some((scheme, rest)) = origin.split_once("://") else {
            return false;
        };
        let Some((host, port)) = split_port(rest) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(&self.scheme)
            || normalized_port(&self.scheme, port) != self.port
        {
            return false;
        }
        let host = host.to_ascii_lowercase();
        if self.wildcard {
            // Exactly one label before the pattern's host.
            host.strip_suffix(&self.host)
                .and_then(|label| label.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty() && !label.contains('.'))
        } else {
            host == self.host
        }
    }
}

/// Splits `host[:port]` (an IPv6 host in brackets); `None` for a port that is not a number.
fn split_port(s: &str) -> Option<(&str, Option<&str>)> {
    let colon = match s.rfind(':') {
        Some(i) if !s[i..].contains(']') => i,
        _ => return Some((s, None)),
    };
    let port = &s[colon + 1..];
    port.parse::<u16>().ok()?;
    Some((&s[..colon], Some(port)))
}

fn normalized_port(scheme: &str, port: Option<&str>) -> String {
    match (scheme, port) {
        (_, None) | ("https" | "wss", Some("443")) | ("http" | "ws", Some("80")) => String::new(),
        (_, Some(p)) => format!(":{p}"),
    }
}

/// Which `Origin`s may open a WebSocket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginPolicy {
    /// Allowed origins; empty: any origin (the original's behaviour).
    pub allowed: Vec<OriginPattern>,
    /// Refuse upgrades without an `Origin` header (Node.js bots and native apps send none).
    pub require: bool,
}

impl OriginPolicy {
    /// Parses a comma-separated list of origins.
    pub fn parse_list(s: &str) -> Result<Vec<OriginPattern>, String> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(OriginPattern::parse)
            .collect()
    }

    /// Whether an upgrade with this `Origin` (none: `None`) may open.
    pub fn allows(&self, origin: Option<&[u8]>) -> bool {
        let Some(origin) = origin else {
            return !self.require;
        };
        if self.allowed.is_empty() {
            return true;
        }
        let Ok(origin) = std::str::from_utf8(origin.trim_ascii()) else {
            return false;
        };
        self.allowed.iter().any(|p| p.matches(origin))
    }
}

/// The client's address: the peer's, unless the peer is a trusted proxy; then the rightmost
/// address of `X-Forwarded-For` that is not itself trusted (the proxies append in turn), or
/// `X-Real-IP` when there is no `X-Forwarded-For`. A malformed header gives the proxy's own.
pub fn client_address(
    peer: IpAddr,
    trusted: &[IpNet],
    forwarded_for: Option<&[u8]>,
    real_ip: Option<&[u8]>,
) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let parse = |b: &[u8]| {
        std::str::from_utf8(b.trim_ascii())
            .ok()?
            .parse::<IpAddr>()
            .ok()
    };
    if let Some(list) = forwarded_for {
        let mut hops = Vec::new();
        for hop in list.split(|&b| b == b',') {
            match parse(hop) {
                Some(ip) => hops.push(ip.to_canonical()),
                None => return peer,
            }
        }
        return hops
            .into_iter()
            .rev()
            .find(|&ip| !is_trusted(ip))
            .unwrap_or(peer);
    }
    real_ip.and_then(parse).map_or(peer, |ip| ip.to_canonical())
}

/// The key the per-address limit counts `ip` under: IPv6 addresses by their first
/// `ipv6_prefix` bits (one host commonly holds a whole /64), IPv4 as they are.
pub fn address_key(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u32::from(ipv6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(list: &str, require: bool) -> OriginPolicy {
        OriginPolicy {
            allowed: OriginPolicy::parse_list(list).unwrap(),
            require,
        }
    }

    #[test]
    fn origins_match_exactly_or_by_one_leading_label() {
        let p = policy(
            "https://app.example.org, https://*.example.net, http://localhost:8080",
            false,
        );
        let allowed = [
            "https://app.example.org",
            "https://APP.example.org",
            "https://app.example.org:443",
            "https://a.example.net",
            "http://localhost:8080",
        ];
        let refused = [
            "http://app.example.org",
            "https://app.example.org:8443",
            "https://evil.app.example.org",
            "https://example.net",
            "https://a.b.example.net",
            "https://aexample.net",
            "http://localhost",
            "null",
            "",
        ];
        for o in allowed {
            assert!(p.allows(Some(o.as_bytes())), "{o}");
        }
        for o in refused {
            assert!(!p.allows(Some(o.as_bytes())), "{o}");
        }
        assert!(p.allows(None), "no Origin: allowed unless required");
        assert!(!policy("https://a.org", true).allows(None));
        assert!(OriginPolicy::default().allows(Some(b"https://anything")));
    }

    #[test]
    fn bad_origin_patterns_are_refused() {
        for bad in [
            "example.org",
            "https://",
            "https://a.org/path",
            "https://*.*.org",
            "https://a*.org",
            "https://a.org:x",
        ] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn client_address_behind_trusted_proxies() {
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let trusted = IpNet::parse_list("127.0.0.0/8,10.0.0.0/8").unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let cases: &[(Option<&str>, Option<&str>, &str)] = &[
            (Some("203.0.113.7"), None, "203.0.113.7"),
            (Some("198.51.100.1, 203.0.113.7"), None, "203.0.113.7"),
            (Some("203.0.113.7, 10.1.2.3"), None, "203.0.113.7"),
            (Some("10.1.2.3"), None, "127.0.0.1"),
            (Some("not an address"), Some("203.0.113.9"), "127.0.0.1"),
            (None, Some(" 2001:db8::1 "), "2001:db8::1"),
            (None, Some("garbage"), "127.0.0.1"),
            (None, None, "127.0.0.1"),
        ];
        for &(xff, real, want) in cases {
            let got = client_address(
                proxy,
                &trusted,
                xff.map(str::as_bytes),
                real.map(str::as_bytes),
            );
            assert_eq!(got, ip(want), "{xff:?} {real:?}");
        }
        // An untrusted peer's headers are ignored.
        let stranger = ip("192.0.2.1");
        assert_eq!(
            client_address(stranger, &trusted, Some(b"203.0.113.7"), None),
            stranger
        );
    }

    #[test]
    fn ipv6_addresses_are_counted_by_prefix() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            address_key(ip("2001:db8:1:2:aaaa::1"), 64),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            address_key(ip("2001:db8:1:2:aaaa::1"), 128),
            ip("2001:db8:1:2:aaaa::1")
        );
        assert_eq!(address_key(ip("2001:db8::1"), 0), ip("::"));
        assert_eq!(address_key(ip("::ffff:192.0.2.1"), 64), ip("192.0.2.1"));
        assert_eq!(address_key(ip("192.0.2.1"), 64), ip("192.0.2.1"));
    }
}
