//! The only addresses the lab may use: 198.18.0.0/15, the range RFC 2544 sets aside for
//! benchmarking. Every address, route and probe target passes through here, so a test can
//! never configure or send to anything outside it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use crate::error::{LabError, Result};

/// First address of the test range.
pub const TEST_NET: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
/// Prefix length of the test range.
pub const TEST_NET_PREFIX_LEN: u8 = 15;

const TEST_NET_MASK: u32 = u32::MAX << (32 - TEST_NET_PREFIX_LEN);

/// Whether `ip` lies inside 198.18.0.0/15.
pub fn is_test_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) & TEST_NET_MASK == u32::from(TEST_NET),
        IpAddr::V6(_) => false,
    }
}

/// `ip` as IPv4 when it is inside the test range, the refusal otherwise.
pub fn require_test_address(ip: IpAddr) -> Result<Ipv4Addr> {
    match ip {
        IpAddr::V4(v4) if is_test_address(ip) => Ok(v4),
        other => Err(LabError::AddressOutsideTestRange(other.to_string())),
    }
}

/// An interface address with its prefix length (`198.18.0.1/24`), inside the test range,
/// with a prefix no wider than the range itself (so its connected route stays inside too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TestCidr {
    addr: Ipv4Addr,
    prefix_len: u8,
}

impl TestCidr {
    /// Checks `addr/prefix_len` against the test range.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Result<Self> {
        let text = format!("{addr}/{prefix_len}");
        if prefix_len > 32 {
            return Err(LabError::InvalidAddress {
                text,
                reason: "prefix length above 32",
            });
        }
        if !is_test_address(IpAddr::V4(addr)) || prefix_len < TEST_NET_PREFIX_LEN {
            return Err(LabError::AddressOutsideTestRange(text));
        }
        Ok(TestCidr { addr, prefix_len })
    }

    /// The address part.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> Ipv4Addr {
        let mask = if self.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix_len)
        };
        Ipv4Addr::from(u32::from(self.addr) & mask)
    }
}

impl FromStr for TestCidr {
    type Err = LabError;

    fn from_str(text: &str) -> Result<Self> {
        let (addr_text, len_text) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text, None),
        };
        let addr: Ipv4Addr = addr_text.parse().map_err(|_| LabError::InvalidAddress {
            text: text.to_owned(),
            reason: "not an IPv4 address (the lab only uses 198.18.0.0/15)",
        })?;
        let prefix_len = match len_text {
            None => 32,
            Some(len) => len.parse().map_err(|_| LabError::InvalidAddress {
                text: text.to_owned(),
                reason: "prefix length is not a number",
            })?,
        };
        TestCidr::new(addr, prefix_len)
    }
}

impl fmt::Display for TestCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_bounds() {
        assert!(is_test_address("198.18.0.0".parse().unwrap()));
        assert!(is_test_address("198.19.255.255".parse().unwrap()));
        assert!(!is_test_address("198.17.255.255".parse().unwrap()));
        assert!(!is_test_address("198.20.0.0".parse().unwrap()));
        assert!(!is_test_address("10.0.0.1".parse().unwrap()));
        assert!(!is_test_address("127.0.0.1".parse().unwrap()));
        assert!(!is_test_address("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn cidr_accepts_addresses_inside_the_range() {
        let cidr: TestCidr = "198.19.3.7/24".parse().unwrap();
        assert_eq!(cidr.addr(), Ipv4Addr::new(198, 19, 3, 7));
        assert_eq!(cidr.prefix_len(), 24);
        assert_eq!(cidr.network(), Ipv4Addr::new(198, 19, 3, 0));
        assert_eq!(cidr.to_string(), "198.19.3.7/24");
        let host: TestCidr = "198.18.0.9".parse().unwrap();
        assert_eq!(host.prefix_len(), 32);
        let whole: TestCidr = "198.18.0.1/15".parse().unwrap();
        assert_eq!(whole.network(), TEST_NET);
    }

    #[test]
    fn cidr_refuses_everything_else() {
        for text in [
            "10.0.0.1/24",
            "192.168.1.1/24",
            "198.20.0.1/24",
            "198.17.255.1/24",
            "198.18.0.1/14",
            "198.18.0.1/8",
        ] {
            let err = text.parse::<TestCidr>().unwrap_err();
            assert!(
                matches!(err, LabError::AddressOutsideTestRange(_)),
                "{text}: {err}"
            );
        }
        for text in ["198.18.0.1/33", "198.18.0.1/x", "fe80::1/64", "lb1"] {
            let err = text.parse::<TestCidr>().unwrap_err();
            assert!(
                matches!(err, LabError::InvalidAddress { .. }),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn require_test_address_refuses_ipv6_and_outside() {
        assert!(require_test_address("198.18.1.1".parse().unwrap()).is_ok());
        assert!(require_test_address("8.8.8.8".parse().unwrap()).is_err());
        assert!(require_test_address("::1".parse().unwrap()).is_err());
    }
}
