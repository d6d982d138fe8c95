//! The PROXY protocol header (HAProxy's specification, versions 1 and 2) that a load
//! balancer sends first on each connection, before TLS and HTTP, naming the client's
//! address. Pure: the connection peeks at the first bytes and hands them here.
//!
//! Only what a TCP proxy sends is taken: version 1 `TCP4`, `TCP6` and `UNKNOWN`, version 2
//! `PROXY` over TCP/IPv4 or TCP/IPv6 and `LOCAL` (a health check of the proxy's own).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The version 2 signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Longest version 1 header, line end included (the specification's 107 bytes).
const V1_MAX: usize = 107;
/// Longest version 2 header taken: the address block and a few TLVs. Longer is refused.
pub const V2_MAX: usize = 512;
/// Bytes to look at to tell the header: enough for either version's longest.
pub const PEEK: usize = V2_MAX;

/// What the first bytes of a connection are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// Not all there yet.
    Incomplete,
    /// A header of `len` bytes, naming the client (`None`: `LOCAL` or `UNKNOWN`, the
    /// proxy's own connection).
    Complete {
        /// Bytes of the header, to be taken off the stream.
        len: usize,
        /// The client's address.
        client: Option<IpAddr>,
    },
    /// Not a PROXY header.
    Invalid,
}

/// Reads the header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Header {
    let v1 = b"PROXY ";
    let n = buf.len().min(v1.len());
    if buf[..n] == v1[..n] {
        return if n < v1.len() {
            Header::Incomplete
        } else {
            parse_v1(buf)
        };
    }
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        return if n < V2_SIGNATURE.len() {
            Header::Incomplete
        } else {
            parse_v2(buf)
        };
    }
    Header::Invalid
}

fn parse_v1(buf: &[u8]) -> Header {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Header::Invalid
        } else {
            Header::Incomplete
        };
    };
    let len = end + 2;
    if len > V1_MAX {
        return Header::Invalid;
    }
    let Ok(line) = std::str::from_utf8(&buf[6..end]) else {
        return Header::Invalid;
    };
    let fields: Vec<&str> = line.split(' ').collect();
    let client = match fields[..] {
        ["UNKNOWN", ..] => None,
        ["TCP4", src, dst, sport, dport] => {
            match (src.parse::<Ipv4Addr>(), dst.parse::<Ipv4Addr>()) {
                (Ok(src), Ok(_)) if ports(sport, dport) => Some(IpAddr::V4(src)),
                _ => return Header::Invalid,
            }
        }
        ["TCP6", src, dst, sport, dport] => {
            match (src.parse::<Ipv6Addr>(), dst.parse::<Ipv6Addr>()) {
                (Ok(src), Ok(_)) if ports(sport, dport) => Some(IpAddr::V6(src)),
                _ => return Header::Invalid,
            }
        }
        _ => return Header::Invalid,
    };
    Header::Complete { len, client }
}

fn ports(a: &str, b: &str) -> bool {
    a.parse::<u16>().is_ok() && b.parse::<u16>().is_ok()
}

fn parse_v2(buf: &[u8]) -> Header {
    let [ver_cmd, family, hi, lo] = match buf.get(12..16) {
        Some(&[a, b, c, d]) => [a, b, c, d],
        _ => return Header::Incomplete,
    };
    let len = 16 + usize::from(u16::from_be_bytes([hi, lo]));
    if ver_cmd >> 4 != 2 || len > V2_MAX {
        return Header::Invalid;
    }
    let Some(body) = buf.get(16..len) else {
        return Header::Incomplete;
    };
    let client = match (ver_cmd & 0x0F, family) {
        // LOCAL: the proxy's own connection (a health check); the address block is ignored.
        (0, _) => None,
        (1, 0x11) if body.len() >= 12 => Some(IpAddr::V4(Ipv4Addr::new(
            body[0], body[1], body[2], body[3],
        ))),
        (1, 0x21) if body.len() >= 36 => {
            let mut src = [0u8; 16];
            src.copy_from_slice(&body[..16]);
            Some(IpAddr::V6(Ipv6Addr::from(src)))
        }
        _ => return Header::Invalid,
    };
    Header::Complete { len, client }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(cmd: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x20 | cmd, family]);
        h.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        h.extend_from_slice(addresses);
        h
    }

    #[test]
    fn version_1_lines() {
        let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(line),
            Header::Complete {
                len: 43,
                client: Some("203.0.113.7".parse().unwrap())
            }
        );
        let six = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n";
        assert_eq!(
            parse(six),
            Header::Complete {
                len: six.len(),
                client: Some("2001:db8::1".parse().unwrap())
            }
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Header::Complete {
                len: 15,
                client: None
            }
        );
        for n in 0..line.len().min(42) {
            assert_eq!(parse(&line[..n]), Header::Incomplete, "{n} bytes");
        }
        for bad in [
            &b"PROXY TCP4 203.0.113.7 10.0.0.1 51234\r\n"[..],
            b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n",
            b"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 99999\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"\x16\x03\x01\x02\x00",
        ] {
            assert_eq!(parse(bad), Header::Invalid, "{bad:?}");
        }
        assert_eq!(
            parse(&[b'P'; 200]),
            Header::Invalid,
            "no line end in 107 bytes"
        );
    }

    #[test]
    fn version_2_headers() {
        let mut four = vec![203, 0, 113, 7, 10, 0, 0, 1, 0xC8, 0x22, 0x01, 0xBB];
        let h = v2(1, 0x11, &four);
        assert_eq!(
            parse(&h),
            Header::Complete {
                len: 28,
                client: Some("203.0.113.7".parse().unwrap())
            }
        );
        for n in 0..h.len() {
            assert_eq!(parse(&h[..n]), Header::Incomplete, "{n} bytes");
        }
        // TLVs after the addresses are skipped.
        four.extend_from_slice(&[0x04, 0x00, 0x01, 0x00]);
        assert_eq!(
            parse(&v2(1, 0x11, &four)),
            Header::Complete {
                len: 32,
                client: Some("203.0.113.7".parse().unwrap())
            }
        );
        let mut six = vec![0u8; 36];
        six[..16].copy_from_slice(&"2001:db8::9".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(
            parse(&v2(1, 0x21, &six)),
            Header::Complete {
                len: 52,
                client: Some("2001:db8::9".parse().unwrap())
            }
        );
        assert_eq!(
            parse(&v2(0, 0x00, &[])),
            Header::Complete {
                len: 16,
                client: None
            },
            "LOCAL"
        );
        assert_eq!(parse(&v2(1, 0x12, &[0; 12])), Header::Invalid, "UDP");
        assert_eq!(
            parse(&v2(1, 0x11, &[0; 4])),
            Header::Invalid,
            "short addresses"
        );
        let mut wrong_version = v2(1, 0x11, &[0; 12]);
        wrong_version[12] = 0x11;
        assert_eq!(parse(&wrong_version), Header::Invalid);
        assert_eq!(parse(&v2(1, 0x11, &[0; 600])), Header::Invalid, "too long");
    }
}
