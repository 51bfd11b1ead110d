//! Address blocks (`10.0.0.0/8`, `fd00::/8`, or a bare address): the `aws:SourceIp`
//! condition of policies and the registry's trusted proxies use the same one.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// An address block (`10.0.0.0/8`, `fd00::/8`); a bare address is a block of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpBlock {
    net: IpAddr,
    prefix: u8,
}

impl IpBlock {
    /// Whether `ip` is in the block; IPv4 clients of a dual-stack socket (`::ffff:a.b.c.d`)
    /// count as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (net, addr, bits) = match (self.net, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => (u128::from(u32::from(n)), u128::from(u32::from(a)), 32),
            (IpAddr::V6(n), IpAddr::V6(a)) => (u128::from(n), u128::from(a), 128),
            _ => return false,
        };
        let shift = bits - u32::from(self.prefix);
        shift >= bits || net >> shift == addr >> shift
    }
}

impl std::str::FromStr for IpBlock {
    type Err = String;

    fn from_str(s: &str) -> Result<IpBlock, String> {
        let bad = || format!("{s:?} is not an IP address or CIDR block like 10.0.0.0/8");
        let (addr, prefix) = s.trim().split_once('/').map_or((s.trim(), None), |(a, p)| (a, Some(p)));
        let net = addr.parse::<IpAddr>().map_err(|_| bad())?.to_canonical();
        let bits = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().ok().filter(|p| *p <= bits).ok_or_else(bad)?
            }
            Some(_) => return Err(bad()),
        };
        Ok(IpBlock { net, prefix })
    }
}

impl TryFrom<String> for IpBlock {
    type Error = String;

    fn try_from(s: String) -> Result<IpBlock, String> {
        s.parse()
    }
}

impl From<IpBlock> for String {
    fn from(b: IpBlock) -> String {
        b.to_string()
    }
}

impl std::fmt::Display for IpBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ip_blocks_parse_and_contain() {
        let cases = [
            ("10.0.0.0/8", "10.200.1.1", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("10.0.0.5", "10.0.0.5", true),
            ("10.0.0.5", "10.0.0.6", false),
            ("10.0.0.5", "::ffff:10.0.0.5", true),
            ("0.0.0.0/0", "192.0.2.1", true),
            ("0.0.0.0/0", "2001:db8::1", false),
            ("2001:db8::/32", "2001:db8:1::1", true),
            ("::1", "::1", true),
            ("::/0", "2001:db8::1", true),
        ];
        for (block, ip, want) in cases {
            let b: IpBlock = block.parse().unwrap();
            assert_eq!(b.contains(ip.parse().unwrap()), want, "{ip} in {block}");
        }
        for bad in ["", "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/x", "nginx", "::/129", "10.0.0.0/-1"] {
            assert!(bad.parse::<IpBlock>().is_err(), "{bad}");
        }
        let b: IpBlock = "10.1.0.0/16".parse().unwrap();
        assert_eq!(b.to_string(), "10.1.0.0/16");
    }

    #[test]
    fn matches_address_blocks_as_policies_write_them() {
        let cases = [
            ("54.240.143.0/24", "54.240.143.7", true),
            ("54.240.143.0/24", "54.240.144.7", false),
            ("54.240.143.0/24", "::ffff:54.240.143.9", true),
            ("2001:db8::/32", "2001:db9::5", false),
            ("2001:db8::/32", "10.0.0.1", false),
        ];
        for (block, ip, want) in cases {
            assert_eq!(block.parse::<IpBlock>().unwrap().contains(ip.parse().unwrap()), want, "{ip} in {block}");
        }
        for bad in ["10.0.0/8", "10.0.0.0/+8", "host"] {
            assert!(bad.parse::<IpBlock>().is_err(), "{bad}");
        }
    }
}
