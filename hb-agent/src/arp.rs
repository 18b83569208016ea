//! Address announcements after a takeover: gratuitous ARP for IPv4 and unsolicited
//! neighbour advertisements for IPv6, sent as whole Ethernet frames from an `AF_PACKET`
//! socket bound to the interface.
//!
//! The frame builders are pure and tested byte for byte. [`Announcer`] paces the rounds on
//! the tokio timer and sends on a non-blocking socket, so it never blocks the runtime.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use crate::config::GarpSettings;
use crate::netlink::{Netlink, NetlinkError};

pub const ETHERNET_BROADCAST: [u8; 6] = [0xff; 6];
/// `33:33` + the low 32 bits of ff02::1 (RFC 2464 §7).
pub const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0x00, 0x00, 0x00, 0x01];
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERNET_HEADER_LEN: usize = 14;
pub const ARP_FRAME_LEN: usize = ETHERNET_HEADER_LEN + 28;

const IPV6_HEADER_LEN: usize = 40;
const NEXT_HEADER_ICMPV6: u8 = 58;
const ICMPV6_NEIGHBOUR_ADVERTISEMENT: u8 = 136;
/// Type, code, checksum, flags (4), target (16), then one 8-byte target link-layer option.
const NA_LEN: usize = 24 + 8;
pub const NA_FRAME_LEN: usize = ETHERNET_HEADER_LEN + IPV6_HEADER_LEN + NA_LEN;
const NA_FLAG_OVERRIDE: u8 = 0x20;
const ND_OPTION_TARGET_LINK_LAYER: u8 = 2;

/// Which ARP operation announces the address; switches and hosts differ in which one
/// they learn from, so the configuration may ask for either or both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArpForm {
    /// RFC 5227 ARP announcement: a request for our own address, target MAC all zeroes
    /// (what Linux itself sends on an address change; iputils `arping -U` and keepalived
    /// put ff:ff:ff:ff:ff:ff there, which receivers ignore for requests).
    Request,
    /// Gratuitous reply as iputils `arping -A` sends it: target MAC = our own. Linux only
    /// treats a reply as gratuitous, and lets it override an entry updated within the
    /// last `locktime`, when target and sender MAC are equal.
    Reply,
}

/// A gratuitous ARP frame announcing that `ip` is at `mac`, to the Ethernet broadcast
/// address, with sender and target protocol address both `ip`.
pub fn gratuitous_arp(mac: [u8; 6], ip: Ipv4Addr, form: ArpForm) -> [u8; ARP_FRAME_LEN] {
    let (operation, target_mac) = match form {
        ArpForm::Request => (1u16, [0u8; 6]),
        ArpForm::Reply => (2u16, mac),
    };
    let mut frame = [0u8; ARP_FRAME_LEN];
    frame[0..6].copy_from_slice(&ETHERNET_BROADCAST);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    let arp = &mut frame[ETHERNET_HEADER_LEN..];
    arp[0..2].copy_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    arp[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    arp[4] = 6;
    arp[5] = 4;
    arp[6..8].copy_from_slice(&operation.to_be_bytes());
    arp[8..14].copy_from_slice(&mac);
    arp[14..18].copy_from_slice(&ip.octets());
    arp[18..24].copy_from_slice(&target_mac);
    arp[24..28].copy_from_slice(&ip.octets());
    frame
}

/// An unsolicited neighbour advertisement (RFC 4861 §7.2.6) for `ip` at `mac`: from `ip`
/// to all nodes (ff02::1), hop limit 255, Override set, Solicited and Router clear, with a
/// target link-layer address option.
pub fn unsolicited_neighbour_advertisement(mac: [u8; 6], ip: Ipv6Addr) -> Vec<u8> {
    let mut frame = vec![0u8; NA_FRAME_LEN];
    frame[0..6].copy_from_slice(&ALL_NODES_MAC);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());

    let ipv6 = &mut frame[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + IPV6_HEADER_LEN];
    ipv6[0] = 0x60; // version 6, traffic class and flow label 0
    ipv6[4..6].copy_from_slice(&(NA_LEN as u16).to_be_bytes());
    ipv6[6] = NEXT_HEADER_ICMPV6;
    ipv6[7] = 255; // receivers drop ND messages that may have crossed a router
    ipv6[8..24].copy_from_slice(&ip.octets());
    ipv6[24..40].copy_from_slice(&ALL_NODES.octets());

    let icmp = &mut frame[ETHERNET_HEADER_LEN + IPV6_HEADER_LEN..];
    icmp[0] = ICMPV6_NEIGHBOUR_ADVERTISEMENT;
    icmp[4] = NA_FLAG_OVERRIDE;
    icmp[8..24].copy_from_slice(&ip.octets());
    icmp[24] = ND_OPTION_TARGET_LINK_LAYER;
    icmp[25] = 1; // option length in units of 8 bytes
    icmp[26..32].copy_from_slice(&mac);
    let checksum = icmpv6_checksum(ip, ALL_NODES, icmp);
    icmp[2..4].copy_from_slice(&checksum.to_be_bytes());
    frame
}

/// The ICMPv6 checksum (RFC 4443 §2.3) of `message`, whose checksum field must be zero,
/// over the IPv6 pseudo-header (RFC 8200 §8.1).
pub fn icmpv6_checksum(source: Ipv6Addr, destination: Ipv6Addr, message: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut add = |bytes: &[u8]| {
        for chunk in bytes.chunks(2) {
            let hi = u64::from(chunk[0]) << 8;
            let lo = chunk.get(1).copied().map(u64::from).unwrap_or(0);
            sum += hi | lo;
        }
    };
    add(&source.octets());
    add(&destination.octets());
    add(&(message.len() as u32).to_be_bytes());
    add(&[0, 0, 0, NEXT_HEADER_ICMPV6]);
    add(message);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("opening a packet socket on {iface}: {source}")]
    Socket {
        iface: String,
        #[source]
        source: io::Error,
    },
    #[error("announcing {ip} on {iface}: all {attempted} frames failed, the last with: {source}")]
    AllSendsFailed {
        iface: String,
        ip: IpAddr,
        attempted: u32,
        #[source]
        source: io::Error,
    },
}

/// What one [`Announcer::announce`] call did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceReport {
    pub iface: String,
    pub ip: IpAddr,
    pub rounds: u32,
    pub frames_sent: u32,
    /// Frames the kernel refused (e.g. a transient `ENOBUFS`); later rounds still went out.
    pub frames_failed: u32,
    pub elapsed: Duration,
}

/// Sends announcements for addresses this node has just taken over.
#[derive(Clone, Debug)]
pub struct Announcer {
    netlink: Netlink,
}

impl Announcer {
    /// `netlink` supplies interface indexes and MAC addresses; the packet sockets open in
    /// the calling thread's network namespace.
    pub fn new(netlink: Netlink) -> Self {
        Self { netlink }
    }

    /// Sends `settings.count` rounds, `settings.interval` apart: for IPv4 each round is
    /// the request and/or reply form of gratuitous ARP as configured, for IPv6 one
    /// unsolicited neighbour advertisement. A frame the kernel refuses is counted and the
    /// rest still go out; it is an error only when every frame failed.
    pub async fn announce(
        &self,
        iface: &str,
        ip: IpAddr,
        settings: &GarpSettings,
    ) -> Result<AnnounceReport, AnnounceError> {
        let frames = announcement_frames(self.netlink.mac_address(iface).await?, ip, settings);
        let ifindex = self.netlink.ifindex(iface).await?;
        let socket = PacketSocket::bind(ifindex).map_err(|source| AnnounceError::Socket {
            iface: iface.to_owned(),
            source,
        })?;

        let started = Instant::now();
        let mut report = AnnounceReport {
            iface: iface.to_owned(),
            ip,
            rounds: 0,
            frames_sent: 0,
            frames_failed: 0,
            elapsed: Duration::ZERO,
        };
        let mut last_error = None;
        for round in 0..settings.count {
            if round > 0 {
                // Absolute deadlines: a slow send does not stretch the whole sequence.
                tokio::time::sleep_until(started + settings.interval.saturating_mul(round)).await;
            }
            for frame in &frames {
                match socket
                    .send(frame.ethertype, frame.destination, &frame.bytes)
                    .await
                {
                    Ok(()) => report.frames_sent += 1,
                    Err(e) => {
                        tracing::warn!(%iface, %ip, error = %e, "announcement frame not sent");
                        report.frames_failed += 1;
                        last_error = Some(e);
                    }
                }
            }
            report.rounds += 1;
        }
        report.elapsed = started.elapsed();
        match last_error {
            Some(source) if report.frames_sent == 0 => Err(AnnounceError::AllSendsFailed {
                iface: iface.to_owned(),
                ip,
                attempted: report.frames_failed,
                source,
            }),
            _ => {
                tracing::debug!(?report, "address announced");
                Ok(report)
            }
        }
    }
}

struct Frame {
    ethertype: u16,
    destination: [u8; 6],
    bytes: Vec<u8>,
}

/// The frames of one announcement round.
fn announcement_frames(mac: [u8; 6], ip: IpAddr, settings: &GarpSettings) -> Vec<Frame> {
    match ip {
        IpAddr::V4(v4) => [
            (settings.request, ArpForm::Request),
            (settings.reply, ArpForm::Reply),
        ]
        .into_iter()
        .filter(|&(wanted, _)| wanted)
        .map(|(_, form)| Frame {
            ethertype: ETHERTYPE_ARP,
            destination: ETHERNET_BROADCAST,
            bytes: gratuitous_arp(mac, v4, form).to_vec(),
        })
        .collect(),
        IpAddr::V6(v6) => vec![Frame {
            ethertype: ETHERTYPE_IPV6,
            destination: ALL_NODES_MAC,
            bytes: unsolicited_neighbour_advertisement(mac, v6),
        }],
    }
}

/// A send-only `AF_PACKET`/`SOCK_RAW` socket bound to one interface. Bound with protocol
/// 0, it receives nothing, so it needs no draining.
struct PacketSocket {
    fd: AsyncFd<OwnedFd>,
    ifindex: i32,
}

impl PacketSocket {
    fn bind(ifindex: u32) -> io::Result<Self> {
        let ifindex = i32::try_from(ifindex).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "interface index out of range")
        })?;
        let fd = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        let address = link_address(ifindex, 0, [0; 6]);
        // SAFETY: `fd` is an open AF_PACKET socket; `address` is a fully initialised
        // sockaddr_ll that lives across the call, and the length passed is its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::from_ref(&address).cast::<libc::sockaddr>(),
                sockaddr_ll_len(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the `OwnedFd` moves into the `AsyncFd` and is neither closed nor
        // replaced while registered; it is closed only when the `AsyncFd` drops it.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::WRITABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Self { fd, ifindex })
    }

    async fn send(&self, ethertype: u16, destination: [u8; 6], frame: &[u8]) -> io::Result<()> {
        let address = link_address(self.ifindex, ethertype, destination);
        loop {
            let mut ready = self.fd.writable().await?;
            let sent = ready.try_io(|fd| {
                // SAFETY: `frame` is a live slice whose pointer and length describe readable
                // memory; `address` is a fully initialised sockaddr_ll outliving the call;
                // the fd is an open AF_PACKET socket owned by `self`.
                let rc = unsafe {
                    libc::sendto(
                        fd.as_raw_fd(),
                        frame.as_ptr().cast::<libc::c_void>(),
                        frame.len(),
                        0,
                        std::ptr::from_ref(&address).cast::<libc::sockaddr>(),
                        sockaddr_ll_len(),
                    )
                };
                usize::try_from(rc).map_err(|_| io::Error::last_os_error())
            });
            match sent {
                Ok(Ok(n)) if n == frame.len() => return Ok(()),
                Ok(Ok(n)) => {
                    return Err(io::Error::other(format!(
                        "short send: {n} of {} bytes",
                        frame.len()
                    )))
                }
                Ok(Err(e)) => return Err(e),
                // Socket buffer full: readiness was cleared, wait for room.
                Err(_would_block) => continue,
            }
        }
    }
}

fn link_address(ifindex: i32, ethertype: u16, destination: [u8; 6]) -> libc::sockaddr_ll {
    let mut sll_addr = [0u8; 8];
    sll_addr[..6].copy_from_slice(&destination);
    libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: ethertype.to_be(),
        sll_ifindex: ifindex,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr,
    }
}

fn sockaddr_ll_len() -> libc::socklen_t {
    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0xaa, 0x00, 0x00, 0x00, 0x01];

    fn hex(text: &str) -> Vec<u8> {
        let digits: String = text.split_whitespace().collect();
        (0..digits.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Reply form, byte for byte what `arping -A -I va 198.18.7.1` sent from a veth with
    /// MAC 02:aa:00:00:00:01 (captured with `tcpdump -xx` in a namespace):
    /// Ethernet dst ff.., src, type 0806 | htype 1, ptype 0800, hlen 6, plen 4, op 2 |
    /// sender 02aa00000001 c6120701 | target 02aa00000001 c6120701.
    #[test]
    fn reply_form_matches_arping_a() {
        let expected = hex("ffff ffff ffff 02aa 0000 0001 0806 0001
             0800 0604 0002 02aa 0000 0001 c612 0701
             02aa 0000 0001 c612 0701");
        let frame = gratuitous_arp(MAC, Ipv4Addr::new(198, 18, 7, 1), ArpForm::Reply);
        assert_eq!(frame.as_slice(), expected.as_slice());
    }

    /// Request form: the capture of `arping -U` differs only in the target MAC (ffff..),
    /// which RFC 5227 §2.3 and Linux's own announcements set to zeroes: op 1, target
    /// 000000000000.
    #[test]
    fn request_form_is_an_rfc5227_announcement() {
        let expected = hex("ffff ffff ffff 02aa 0000 0001 0806 0001
             0800 0604 0001 02aa 0000 0001 c612 0701
             0000 0000 0000 c612 0701");
        let frame = gratuitous_arp(MAC, Ipv4Addr::new(198, 18, 7, 1), ArpForm::Request);
        assert_eq!(frame.as_slice(), expected.as_slice());
    }

    /// Unsolicited NA for 2001:2::100 from 02:aa:00:00:00:01, laid out per RFC 2464,
    /// RFC 8200 and RFC 4861 §4.4. Checksum by hand, in 16-bit words: source
    /// 2001+0002+0100 = 2103, destination ff02+0001 = ff03, length 0020, next header 003a,
    /// message 8800+2000 + target 2103 + option 0201+02aa+0001 = cdaf; total 1ee0f, folded
    /// ee10, so the field holds !ee10 = 11ef. (tcpdump -vv reports "icmp6 sum ok" for the
    /// frames the privileged test sends.)
    #[test]
    fn neighbour_advertisement_layout() {
        let expected = hex(
            // Ethernet: all-nodes multicast MAC, our MAC, IPv6
            "3333 0000 0001 02aa 0000 0001 86dd
             6000 0000 0020 3aff
             2001 0002 0000 0000 0000 0000 0000 0100
             ff02 0000 0000 0000 0000 0000 0000 0001
             8800 11ef 2000 0000
             2001 0002 0000 0000 0000 0000 0000 0100
             0201 02aa 0000 0001",
        );
        let frame = unsolicited_neighbour_advertisement(MAC, "2001:2::100".parse().unwrap());
        assert_eq!(frame.len(), NA_FRAME_LEN);
        assert_eq!(frame, expected);
    }

    /// Summing a message together with its own checksum must give 0xffff (checksum 0 when
    /// recomputed), for several addresses including odd carries.
    #[test]
    fn neighbour_advertisement_checksum_verifies() {
        for (mac, ip) in [
            (MAC, "2001:2::100"),
            ([0xff; 6], "2001:2:ffff:ffff:ffff:ffff:ffff:ffff"),
            ([0x00, 0x11, 0x22, 0x33, 0x44, 0x55], "2001:2::1"),
        ] {
            let ip: Ipv6Addr = ip.parse().unwrap();
            let frame = unsolicited_neighbour_advertisement(mac, ip);
            let icmp = &frame[ETHERNET_HEADER_LEN + IPV6_HEADER_LEN..];
            assert_eq!(icmpv6_checksum(ip, ALL_NODES, icmp), 0, "{ip}");
        }
    }

    /// RFC 1071's worked example (bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2) checks the
    /// summing, here through a pseudo-header of zeroes and a known length.
    #[test]
    fn checksum_arithmetic_matches_rfc1071() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        // Pseudo-header adds length 8 and next header 58: 0xddf2 + 8 + 58 = 0xde34.
        assert_eq!(
            icmpv6_checksum(Ipv6Addr::UNSPECIFIED, Ipv6Addr::UNSPECIFIED, &data),
            !0xde34
        );
        // Odd length: the last byte is padded with a zero on the right.
        assert_eq!(
            icmpv6_checksum(Ipv6Addr::UNSPECIFIED, Ipv6Addr::UNSPECIFIED, &[0x01]),
            !(0x0100 + 1 + 58)
        );
    }

    #[test]
    fn rounds_follow_the_configured_forms() {
        let settings = |request, reply| GarpSettings {
            count: 3,
            interval: Duration::from_millis(10),
            reply,
            request,
            refresh: None,
        };
        let v4: IpAddr = "198.18.0.100".parse().unwrap();
        let both = announcement_frames(MAC, v4, &settings(true, true));
        assert_eq!(both.len(), 2);
        assert_eq!(both[0].bytes[21], 1, "request first");
        assert_eq!(both[1].bytes[21], 2);
        assert!(both.iter().all(|f| f.ethertype == ETHERTYPE_ARP));
        assert_eq!(
            announcement_frames(MAC, v4, &settings(false, true)).len(),
            1
        );
        assert!(announcement_frames(MAC, v4, &settings(false, false)).is_empty());
        let v6 = announcement_frames(MAC, "2001:2::100".parse().unwrap(), &settings(false, false));
        assert_eq!(v6.len(), 1, "IPv6 always sends its advertisement");
        assert_eq!(v6[0].destination, ALL_NODES_MAC);
    }
}
