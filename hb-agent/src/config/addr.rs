//! Addresses, prefixes and interface names as they appear in `haresources` and `ha.cf`.
//!
//! `IPaddr::ADDR[/PREFIX][/IFACE][/BROADCAST]` takes the prefix as a length (`24`) or a
//! dotted netmask (`255.255.255.0`), as Heartbeat's IPaddr did; each part may be left empty
//! (`10.0.0.1//eth0`). `IPv6addr::ADDR/PREFIX[/IFACE]` needs the prefix.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Linux `IFNAMSIZ` minus the terminating NUL.
pub const MAX_IFACE_LEN: usize = 15;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("`{0}` is not an IPv4 address")]
    BadIpv4(String),
    #[error("`{0}` is not an IPv6 address")]
    BadIpv6(String),
    #[error("`{0}` is neither a prefix length (1-32) nor a netmask (255.255.255.0)")]
    BadPrefixV4(String),
    #[error("`{0}` is not a netmask: its one-bits are not contiguous")]
    NonContiguousMask(String),
    #[error("`{0}` is not an IPv6 prefix length (1-128)")]
    BadPrefixV6(String),
    #[error("IPv6addr needs a prefix length: write ADDR/PREFIX[/IFACE], e.g. 2001:db8::10/64")]
    MissingPrefixV6,
    #[error("`{0}` is not a broadcast address")]
    BadBroadcast(String),
    #[error("`{name}` is not a valid interface name: {reason}")]
    BadIface { name: String, reason: &'static str },
    #[error(
        "`{iface}` stands where the prefix goes: write {addr}/PREFIX/{iface}, or {addr}//{iface} \
         to take the prefix from the interface's connected route"
    )]
    IfaceInPrefixSlot { addr: String, iface: String },
    #[error("too many `/` parts in `{0}`: expected ADDR[/PREFIX][/IFACE][/BROADCAST]")]
    TooManyPartsV4(String),
    #[error("too many `/` parts in `{0}`: expected ADDR/PREFIX[/IFACE]")]
    TooManyPartsV6(String),
    #[error("`{0}` cannot be a service address ({1})")]
    Unusable(String, &'static str),
}

/// The parts of an `IPaddr`/`IPaddr2` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv4Spec {
    pub addr: Ipv4Addr,
    pub prefix: Option<u8>,
    pub iface: Option<String>,
    pub broadcast: Option<Ipv4Addr>,
}

/// The parts of an `IPv6addr` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv6Spec {
    pub addr: Ipv6Addr,
    pub prefix: u8,
    pub iface: Option<String>,
}

/// Parses `ADDR[/PREFIX][/IFACE][/BROADCAST]`, or `ADDR/PREFIX/BROADCAST`.
pub fn parse_ipv4_spec(text: &str) -> Result<Ipv4Spec, AddrError> {
    let mut parts = text.split('/');
    let addr_text = parts.next().unwrap_or("");
    let addr = parse_ipv4(addr_text)?;
    check_service_v4(addr)?;
    fn non_empty(part: Option<&str>) -> Option<&str> {
        part.filter(|p| !p.is_empty())
    }
    let prefix = non_empty(parts.next())
        .map(|p| {
            parse_prefix_v4(p).map_err(|err| {
                let looks_like_iface =
                    p.bytes().any(|b| b.is_ascii_alphabetic()) && check_iface_label(p).is_ok();
                if looks_like_iface {
                    AddrError::IfaceInPrefixSlot {
                        addr: addr_text.to_string(),
                        iface: p.to_string(),
                    }
                } else {
                    err
                }
            })
        })
        .transpose()?;
    // The third part is the interface, unless it is an address: Heartbeat's haresources
    // documents `IPaddr::135.9.8.7/24/135.9.8.210` (prefix, then broadcast).
    let (iface, broadcast) = match non_empty(parts.next()) {
        Some(third) if third.parse::<Ipv4Addr>().is_ok() => (None, Some(parse_broadcast(third)?)),
        Some(name) => {
            check_iface_label(name)?;
            let broadcast = non_empty(parts.next()).map(parse_broadcast).transpose()?;
            (Some(name.to_string()), broadcast)
        }
        None => (
            None,
            non_empty(parts.next()).map(parse_broadcast).transpose()?,
        ),
    };
    if parts.next().is_some() {
        return Err(AddrError::TooManyPartsV4(text.to_string()));
    }
    Ok(Ipv4Spec {
        addr,
        prefix,
        iface,
        broadcast,
    })
}

fn parse_broadcast(text: &str) -> Result<Ipv4Addr, AddrError> {
    text.parse()
        .map_err(|_| AddrError::BadBroadcast(text.to_string()))
}

/// Parses `ADDR/PREFIX[/IFACE]`.
pub fn parse_ipv6_spec(text: &str) -> Result<Ipv6Spec, AddrError> {
    let mut parts = text.split('/');
    let addr_text = parts.next().unwrap_or("");
    let addr: Ipv6Addr = addr_text
        .parse()
        .map_err(|_| AddrError::BadIpv6(addr_text.to_string()))?;
    check_service_v6(addr)?;
    let prefix = match parts.next() {
        None | Some("") => return Err(AddrError::MissingPrefixV6),
        Some(p) => parse_prefix_v6(p)?,
    };
    let iface = match parts.next() {
        None | Some("") => None,
        Some(name) => {
            check_iface_label(name)?;
            Some(name.to_string())
        }
    };
    if parts.next().is_some() {
        return Err(AddrError::TooManyPartsV6(text.to_string()));
    }
    Ok(Ipv6Spec {
        addr,
        prefix,
        iface,
    })
}

/// Strict dotted-quad IPv4 (no shorthand like `10.1`).
pub fn parse_ipv4(text: &str) -> Result<Ipv4Addr, AddrError> {
    text.parse()
        .map_err(|_| AddrError::BadIpv4(text.to_string()))
}

/// A prefix length `1..=32` or a contiguous dotted netmask.
pub fn parse_prefix_v4(text: &str) -> Result<u8, AddrError> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<u8>() {
            Ok(len @ 1..=32) => Ok(len),
            _ => Err(AddrError::BadPrefixV4(text.to_string())),
        };
    }
    let mask: Ipv4Addr = text
        .parse()
        .map_err(|_| AddrError::BadPrefixV4(text.to_string()))?;
    match mask_to_prefix(mask) {
        Some(0) => Err(AddrError::BadPrefixV4(text.to_string())),
        Some(len) => Ok(len),
        None => Err(AddrError::NonContiguousMask(text.to_string())),
    }
}

/// A prefix length `1..=128`.
pub fn parse_prefix_v6(text: &str) -> Result<u8, AddrError> {
    match text.parse::<u8>() {
        Ok(len @ 1..=128) if text.bytes().all(|b| b.is_ascii_digit()) => Ok(len),
        _ => Err(AddrError::BadPrefixV6(text.to_string())),
    }
}

/// The prefix length of a contiguous netmask, `None` if the ones are not contiguous.
pub fn mask_to_prefix(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let ones = bits.leading_ones();
    if bits.checked_shl(ones).unwrap_or(0) == 0 {
        Some(ones as u8)
    } else {
        None
    }
}

/// The netmask of a prefix length (`24` → `255.255.255.0`).
pub fn prefix_to_mask(prefix: u8) -> Ipv4Addr {
    let prefix = u32::from(prefix.min(32));
    Ipv4Addr::from(u32::MAX.checked_shl(32 - prefix).unwrap_or(0))
}

/// The network broadcast address of `addr/prefix` (Heartbeat's default for IPaddr), or
/// `None` for /31 and /32, which have none.
pub fn default_broadcast(addr: Ipv4Addr, prefix: u8) -> Option<Ipv4Addr> {
    if prefix >= 31 {
        return None;
    }
    Some(Ipv4Addr::from(
        u32::from(addr) | !u32::from(prefix_to_mask(prefix)),
    ))
}

/// Whether `addr` lies in `network/prefix`.
pub fn prefix_covers(network: IpAddr, prefix: u8, addr: IpAddr) -> bool {
    match (network, addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let shift = 32u32.saturating_sub(u32::from(prefix.min(32)));
            u32::from(n).checked_shr(shift).unwrap_or(0)
                == u32::from(a).checked_shr(shift).unwrap_or(0)
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let shift = 128u32.saturating_sub(u32::from(prefix.min(128)));
            u128::from(n).checked_shr(shift).unwrap_or(0)
                == u128::from(a).checked_shr(shift).unwrap_or(0)
        }
        _ => false,
    }
}

/// A network device name as Linux accepts it (`dev_valid_name`).
pub fn check_iface_name(name: &str) -> Result<(), AddrError> {
    let bad = |reason| {
        Err(AddrError::BadIface {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_IFACE_LEN {
        return bad("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("`.` and `..` are not device names");
    }
    if name.contains(':') {
        return bad("`:` marks an address label (eth0:1); name the device itself here");
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return bad("it contains `/`, a blank or a control character");
    }
    Ok(())
}

/// A device name, optionally with an address label as IPaddr allowed (`eth0:1`): the label
/// names the address on the device `eth0`.
pub fn check_iface_label(name: &str) -> Result<(), AddrError> {
    match name.split_once(':') {
        None => check_iface_name(name),
        Some((device, label)) => {
            check_iface_name(device)?;
            if label.is_empty() || name.len() > MAX_IFACE_LEN || label.contains(':') {
                return Err(AddrError::BadIface {
                    name: name.to_string(),
                    reason: "an address label is DEVICE:LABEL, at most 15 bytes in all",
                });
            }
            Ok(())
        }
    }
}

/// The device part of `eth0:1`.
pub fn device_of(iface: &str) -> &str {
    iface.split_once(':').map_or(iface, |(device, _)| device)
}

fn check_service_v4(addr: Ipv4Addr) -> Result<(), AddrError> {
    let reason = if addr.is_unspecified() {
        "unspecified address"
    } else if addr.is_broadcast() {
        "broadcast address"
    } else if addr.is_multicast() {
        "multicast address"
    } else {
        return Ok(());
    };
    Err(AddrError::Unusable(addr.to_string(), reason))
}

fn check_service_v6(addr: Ipv6Addr) -> Result<(), AddrError> {
    let reason = if addr.is_unspecified() {
        "unspecified address"
    } else if addr.is_multicast() {
        "multicast address"
    } else if addr.is_loopback() {
        "loopback address"
    } else {
        return Ok(());
    };
    Err(AddrError::Unusable(addr.to_string(), reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn heartbeat_documented_ipaddr_forms() {
        let spec = parse_ipv4_spec("135.9.8.7/24/eth0/135.9.8.210").unwrap();
        assert_eq!(
            spec,
            Ipv4Spec {
                addr: Ipv4Addr::new(135, 9, 8, 7),
                prefix: Some(24),
                iface: Some("eth0".into()),
                broadcast: Some(Ipv4Addr::new(135, 9, 8, 210)),
            }
        );
        let spec = parse_ipv4_spec("10.8.0.1/255.255.255.0/eth1/255.255.255.255").unwrap();
        assert_eq!(spec.prefix, Some(24));
        assert_eq!(spec.broadcast, Some(Ipv4Addr::BROADCAST));
        let spec = parse_ipv4_spec("10.0.2.100/24/eth0:1").unwrap();
        assert_eq!(spec.iface.as_deref(), Some("eth0:1"));
        let spec = parse_ipv4_spec("10.0.0.1//eth0").unwrap();
        assert_eq!((spec.prefix, spec.iface.as_deref()), (None, Some("eth0")));
        assert_eq!(parse_ipv4_spec("10.8.0.1").unwrap().prefix, None);
        let spec = parse_ipv4_spec("135.9.8.7/24/135.9.8.210").unwrap();
        assert_eq!(
            (spec.iface, spec.broadcast),
            (None, Some(Ipv4Addr::new(135, 9, 8, 210)))
        );
        assert!(matches!(
            parse_ipv4_spec("135.9.8.7/24/135.9.8.210/x"),
            Err(AddrError::TooManyPartsV4(_))
        ));
        assert_eq!(
            parse_ipv4_spec("10.0.0.1/24/eth0/x"),
            Err(AddrError::BadBroadcast("x".into()))
        );
    }

    #[test]
    fn bad_ipv4_specs() {
        assert_eq!(
            parse_ipv4_spec("10.0.0.300"),
            Err(AddrError::BadIpv4("10.0.0.300".into()))
        );
        assert_eq!(
            parse_ipv4_spec("10.0.0.1/33"),
            Err(AddrError::BadPrefixV4("33".into()))
        );
        assert_eq!(
            parse_ipv4_spec("10.0.0.1/0"),
            Err(AddrError::BadPrefixV4("0".into()))
        );
        assert_eq!(
            parse_ipv4_spec("10.0.0.1/255.0.255.0"),
            Err(AddrError::NonContiguousMask("255.0.255.0".into()))
        );
        assert_eq!(
            parse_ipv4_spec("10.0.0.1/eth0"),
            Err(AddrError::IfaceInPrefixSlot {
                addr: "10.0.0.1".into(),
                iface: "eth0".into()
            })
        );
        assert!(matches!(
            parse_ipv4_spec("10.0.0.1/24/eth0/10.0.0.255/x"),
            Err(AddrError::TooManyPartsV4(_))
        ));
        assert!(matches!(
            parse_ipv4_spec("224.0.0.1"),
            Err(AddrError::Unusable(_, _))
        ));
        assert!(matches!(
            parse_ipv4_spec("10.0.0.1/24/this-name-is-too-long0"),
            Err(AddrError::BadIface { .. })
        ));
    }

    #[test]
    fn ipv6_specs() {
        let spec = parse_ipv6_spec("2001:db8::10/64/eth0").unwrap();
        assert_eq!(spec.addr, "2001:db8::10".parse::<Ipv6Addr>().unwrap());
        assert_eq!((spec.prefix, spec.iface.as_deref()), (64, Some("eth0")));
        assert_eq!(
            parse_ipv6_spec("2001:db8::10"),
            Err(AddrError::MissingPrefixV6)
        );
        assert_eq!(
            parse_ipv6_spec("2001:db8::10/129"),
            Err(AddrError::BadPrefixV6("129".into()))
        );
        assert!(matches!(
            parse_ipv6_spec("ff02::1/64"),
            Err(AddrError::Unusable(_, _))
        ));
    }

    #[test]
    fn iface_names() {
        assert!(check_iface_name("enp0s8").is_ok());
        assert!(check_iface_name("eth0:1").is_err());
        assert!(check_iface_label("eth0:1").is_ok());
        assert!(check_iface_label("eth0:").is_err());
        assert!(check_iface_name("a/b").is_err());
        assert!(check_iface_name("..").is_err());
        assert_eq!(device_of("eth0:1"), "eth0");
    }

    #[test]
    fn broadcast_and_cover() {
        assert_eq!(
            default_broadcast(Ipv4Addr::new(192, 168, 1, 100), 24),
            Some(Ipv4Addr::new(192, 168, 1, 255))
        );
        assert_eq!(default_broadcast(Ipv4Addr::new(10, 0, 0, 1), 32), None);
        let net: IpAddr = "10.0.2.15".parse().unwrap();
        assert!(prefix_covers(net, 24, "10.0.2.100".parse().unwrap()));
        assert!(!prefix_covers(net, 24, "10.0.3.1".parse().unwrap()));
        assert!(prefix_covers(net, 0, "1.2.3.4".parse().unwrap()));
        assert!(!prefix_covers(net, 24, "::1".parse().unwrap()));
    }

    proptest! {
        #[test]
        fn prefix_and_mask_agree(prefix in 1u8..=32) {
            let mask = prefix_to_mask(prefix);
            prop_assert_eq!(mask_to_prefix(mask), Some(prefix));
            prop_assert_eq!(parse_prefix_v4(&mask.to_string()), Ok(prefix));
            prop_assert_eq!(parse_prefix_v4(&prefix.to_string()), Ok(prefix));
        }

        #[test]
        fn non_contiguous_masks_are_rejected(bits in any::<u32>()) {
            let contiguous = bits.leading_ones() + bits.trailing_zeros() == 32;
            prop_assert_eq!(mask_to_prefix(Ipv4Addr::from(bits)).is_some(), contiguous);
        }

        #[test]
        fn ipv4_spec_round_trip(
            addr in any::<u32>().prop_filter("usable", |a| {
                let ip = Ipv4Addr::from(*a);
                !(ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast())
            }),
            prefix in proptest::option::of(1u8..=32),
            iface in proptest::option::of("[a-z][a-z0-9]{0,7}(:[0-9]{1,3})?"),
            broadcast in proptest::option::of(any::<u32>()),
        ) {
            let addr = Ipv4Addr::from(addr);
            let broadcast = broadcast.map(Ipv4Addr::from);
            let text = format!(
                "{addr}/{}/{}/{}",
                prefix.map(|p| p.to_string()).unwrap_or_default(),
                iface.clone().unwrap_or_default(),
                broadcast.map(|b| b.to_string()).unwrap_or_default(),
            );
            prop_assert_eq!(parse_ipv4_spec(&text), Ok(Ipv4Spec { addr, prefix, iface, broadcast }));
        }

        #[test]
        fn ipv6_spec_round_trip(addr in any::<u128>(), prefix in 1u8..=128) {
            let addr = Ipv6Addr::from(addr);
            prop_assume!(!(addr.is_unspecified() || addr.is_multicast() || addr.is_loopback()));
            let parsed = parse_ipv6_spec(&format!("{addr}/{prefix}/eth1"));
            prop_assert_eq!(parsed, Ok(Ipv6Spec { addr, prefix, iface: Some("eth1".into()) }));
        }

        #[test]
        fn spec_parsers_never_panic(text in "\\PC{0,64}") {
            let _ = parse_ipv4_spec(&text);
            let _ = parse_ipv6_spec(&text);
            let _ = parse_prefix_v4(&text);
            let _ = check_iface_label(&text);
        }
    }
}
