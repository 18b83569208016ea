//! Creating heartbeat sockets: every socket option the transport uses, in one place.
//!
//! Every socket is bound to its interface with `SO_BINDTODEVICE`, so a heartbeat leaves by
//! the link it was meant for whatever the routing table says, and a receive socket only
//! sees packets that arrived on its own interface.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};

use super::Family;
use crate::config::{Link, LinkKind};

/// Receive buffer asked for on each receive socket: room for a few thousand heartbeats
/// while the decision loop is busy. The kernel caps it at `net.core.rmem_max`.
const RECV_BUFFER_BYTES: usize = 1 << 20;

/// A socket option or call that failed while setting up a heartbeat socket.
#[derive(Debug)]
pub(crate) struct SetupError {
    pub(crate) step: &'static str,
    pub(crate) source: io::Error,
}

impl SetupError {
    fn at(step: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| Self { step, source }
    }

    /// The interface does not exist (yet): worth retrying later, not a configuration error.
    pub(crate) fn is_missing_interface(&self) -> bool {
        matches!(self.source.raw_os_error(), Some(libc::ENODEV | libc::ENXIO))
    }
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.step, self.source)
    }
}

/// The IP version a link's packets use (`bcast` is IPv4 only).
pub(crate) fn family_of(kind: &LinkKind) -> Family {
    let address = match kind {
        LinkKind::Ucast { peer } => *peer,
        LinkKind::Bcast => return Family::V4,
        LinkKind::Mcast { group, .. } => *group,
    };
    match address {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    }
}

/// The interface's current index.
pub(crate) fn interface_index(iface: &str) -> Result<u32, SetupError> {
    nix::net::if_::if_nametoindex(iface)
        .map_err(io::Error::from)
        .map_err(SetupError::at("interface lookup"))
}

/// Where a link's packets go. Link-scoped IPv6 destinations carry the interface as their
/// scope.
///
/// `bcast` uses the limited broadcast address 255.255.255.255. Heartbeat sent to the
/// interface's directed broadcast address, read once at start (`SIOCGIFBRDADDR`); with the
/// socket bound to the device the limited broadcast leaves by that device just the same,
/// needs no IPv4 address on the interface, and survives readdressing. Receivers bound to
/// the wildcard address, ours and Heartbeat's, take either.
pub(crate) fn destination(link: &Link, ifindex: u32) -> SocketAddr {
    let ip = match &link.kind {
        LinkKind::Ucast { peer } => *peer,
        LinkKind::Bcast => IpAddr::V4(Ipv4Addr::BROADCAST),
        LinkKind::Mcast { group, .. } => *group,
    };
    match ip {
        IpAddr::V6(v6) if needs_scope(&v6) => {
            SocketAddr::V6(SocketAddrV6::new(v6, link.port, 0, ifindex))
        }
        ip => SocketAddr::new(ip, link.port),
    }
}

/// Link-local unicast (fe80::/10) and interface- or link-local multicast (ff01::/16,
/// ff02::/16) mean nothing without an interface.
fn needs_scope(ip: &Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    (first & 0xffc0) == 0xfe80 || (ip.is_multicast() && matches!(first & 0x000f, 1 | 2))
}

/// A link's sending socket, ready to use.
#[derive(Debug)]
pub(crate) struct TxSocket {
    pub(crate) socket: UdpSocket,
    pub(crate) ifindex: u32,
    pub(crate) destination: SocketAddr,
}

/// Opens the sending socket of one link: non-blocking (a full send buffer is a counted
/// failure, never a stall of the sender thread), bound to the link's device, with the
/// broadcast or multicast options the link kind needs. The source port is ephemeral, so
/// the socket never competes with a receive socket for the heartbeat port.
pub(crate) fn open_tx(link: &Link) -> Result<TxSocket, SetupError> {
    let ifindex = interface_index(&link.iface)?;
    let family = family_of(&link.kind);
    let socket = udp_socket(family)?;
    socket
        .bind_device(Some(link.iface.as_bytes()))
        .map_err(SetupError::at("SO_BINDTODEVICE"))?;
    match (&link.kind, family) {
        (LinkKind::Ucast { .. }, _) => {}
        (LinkKind::Bcast, _) => socket
            .set_broadcast(true)
            .map_err(SetupError::at("SO_BROADCAST"))?,
        (LinkKind::Mcast { ttl, loopback, .. }, Family::V4) => {
            set_multicast_if_v4(&socket, ifindex).map_err(SetupError::at("IP_MULTICAST_IF"))?;
            socket
                .set_multicast_ttl_v4(u32::from(*ttl))
                .map_err(SetupError::at("IP_MULTICAST_TTL"))?;
            socket
                .set_multicast_loop_v4(*loopback)
                .map_err(SetupError::at("IP_MULTICAST_LOOP"))?;
        }
        (LinkKind::Mcast { ttl, loopback, .. }, Family::V6) => {
            socket
                .set_multicast_if_v6(ifindex)
                .map_err(SetupError::at("IPV6_MULTICAST_IF"))?;
            socket
                .set_multicast_hops_v6(u32::from(*ttl))
                .map_err(SetupError::at("IPV6_MULTICAST_HOPS"))?;
            socket
                .set_multicast_loop_v6(*loopback)
                .map_err(SetupError::at("IPV6_MULTICAST_LOOP"))?;
        }
    }
    Ok(TxSocket {
        socket: socket.into(),
        ifindex,
        destination: destination(link, ifindex),
    })
}

/// Opens a receive socket for heartbeats on `port` arriving on `iface`: bound to the
/// device and the wildcard address (so unicast, broadcast and multicast all reach it),
/// non-blocking, with `SO_TIMESTAMPNS`, and joined to `groups` on that interface.
///
/// No `SO_REUSEADDR`: UDP leaves nothing lingering for a restarted agent to wait out, and
/// with it a second listener on the same port and device (another agent, or Heartbeat
/// itself, which sets it) would bind too and silently take a share of the unicast
/// heartbeats. Without it that second bind fails, loudly. Sockets of different devices
/// never conflict.
pub(crate) fn open_rx(
    iface: &str,
    port: u16,
    family: Family,
    groups: &[IpAddr],
) -> Result<(Socket, u32), SetupError> {
    let ifindex = interface_index(iface)?;
    let socket = udp_socket(family)?;
    if family == Family::V6 {
        // IPv4 heartbeats have their own socket; keep them apart.
        socket
            .set_only_v6(true)
            .map_err(SetupError::at("IPV6_V6ONLY"))?;
    }
    socket
        .bind_device(Some(iface.as_bytes()))
        .map_err(SetupError::at("SO_BINDTODEVICE"))?;
    nix::sys::socket::setsockopt(
        &socket,
        nix::sys::socket::sockopt::ReceiveTimestampns,
        &true,
    )
    .map_err(io::Error::from)
    .map_err(SetupError::at("SO_TIMESTAMPNS"))?;
    if let Err(error) = socket.set_recv_buffer_size(RECV_BUFFER_BYTES) {
        tracing::debug!(iface, %error, "cannot enlarge the heartbeat receive buffer");
    }
    let any: IpAddr = match family {
        Family::V4 => Ipv4Addr::UNSPECIFIED.into(),
        Family::V6 => Ipv6Addr::UNSPECIFIED.into(),
    };
    socket
        .bind(&SocketAddr::new(any, port).into())
        .map_err(SetupError::at("bind"))?;
    for group in groups {
        match group {
            IpAddr::V4(group) => socket
                .join_multicast_v4_n(group, &InterfaceIndexOrAddress::Index(ifindex))
                .map_err(SetupError::at("IP_ADD_MEMBERSHIP"))?,
            IpAddr::V6(group) => socket
                .join_multicast_v6(group, ifindex)
                .map_err(SetupError::at("IPV6_ADD_MEMBERSHIP"))?,
        }
    }
    Ok((socket, ifindex))
}

fn udp_socket(family: Family) -> Result<Socket, SetupError> {
    let domain = match family {
        Family::V4 => Domain::IPV4,
        Family::V6 => Domain::IPV6,
    };
    let socket =
        Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).map_err(SetupError::at("socket"))?;
    socket
        .set_nonblocking(true)
        .map_err(SetupError::at("O_NONBLOCK"))?;
    Ok(socket)
}

/// `IP_MULTICAST_IF` by interface index (`ip_mreqn`), which works on an interface without
/// an IPv4 address; the standard library and socket2 only take an address.
fn set_multicast_if_v4(socket: &Socket, ifindex: u32) -> io::Result<()> {
    let request = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr { s_addr: 0 },
        imr_address: libc::in_addr { s_addr: 0 },
        imr_ifindex: i32::try_from(ifindex)
            .map_err(|_| io::Error::from_raw_os_error(libc::ENODEV))?,
    };
    let length = libc::socklen_t::try_from(std::mem::size_of::<libc::ip_mreqn>())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `request` is a fully initialised ip_mreqn that lives across the call, `length`
    // is its exact size, the kernel only reads it, and the fd is owned by `socket`.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_IF,
            std::ptr::from_ref(&request).cast(),
            length,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Origin;

    fn link(kind: LinkKind) -> Link {
        Link {
            iface: "hb0".into(),
            port: 694,
            kind,
            origin: Origin {
                file: "ha.cf".into(),
                line: 1,
            },
        }
    }

    #[test]
    fn family_follows_the_address() {
        assert_eq!(family_of(&LinkKind::Bcast), Family::V4);
        assert_eq!(
            family_of(&LinkKind::Ucast {
                peer: "198.18.0.2".parse().unwrap()
            }),
            Family::V4
        );
        assert_eq!(
            family_of(&LinkKind::Ucast {
                peer: "2001:2::2".parse().unwrap()
            }),
            Family::V6
        );
        let group = "ff02::1".parse().unwrap();
        assert_eq!(
            family_of(&LinkKind::Mcast {
                group,
                ttl: 1,
                loopback: false
            }),
            Family::V6
        );
    }

    #[test]
    fn destinations() {
        let ucast = link(LinkKind::Ucast {
            peer: "198.18.0.2".parse().unwrap(),
        });
        assert_eq!(destination(&ucast, 7), "198.18.0.2:694".parse().unwrap());
        assert_eq!(
            destination(&link(LinkKind::Bcast), 7),
            "255.255.255.255:694".parse().unwrap()
        );
        let group = "239.0.0.1".parse().unwrap();
        let mcast = link(LinkKind::Mcast {
            group,
            ttl: 1,
            loopback: false,
        });
        assert_eq!(destination(&mcast, 7), "239.0.0.1:694".parse().unwrap());
    }

    #[test]
    fn link_scoped_ipv6_destinations_carry_the_interface() {
        let scoped = |ip: &str| {
            let link = link(LinkKind::Ucast {
                peer: ip.parse().unwrap(),
            });
            match destination(&link, 9) {
                SocketAddr::V6(v6) => v6.scope_id(),
                SocketAddr::V4(_) => unreachable!("an IPv6 peer"),
            }
        };
        assert_eq!(scoped("fe80::1"), 9);
        assert_eq!(scoped("febf::1"), 9);
        assert_eq!(scoped("ff02::1"), 9);
        assert_eq!(scoped("ff01::1"), 9);
        assert_eq!(scoped("ff05::1"), 0);
        assert_eq!(scoped("2001:2::1"), 0);
        assert_eq!(scoped("fec0::1"), 0);
    }

    #[test]
    fn missing_interface_is_recognised() {
        let error = interface_index("hb-no-such-if0").unwrap_err();
        assert!(error.is_missing_interface(), "{error}");
        let other = SetupError {
            step: "bind",
            source: io::Error::from_raw_os_error(libc::EACCES),
        };
        assert!(!other.is_missing_interface());
    }
}
