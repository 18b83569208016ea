//! Route-netlink operations for address takeover: interface facts, VIP add/remove,
//! neighbour-table clean-up, connected-route lookup, and address-change notifications.
//!
//! A [`Netlink`] handle owns one `NETLINK_ROUTE` socket whose connection task runs on the
//! tokio runtime that created it; the socket belongs to the network namespace of the thread
//! that called [`Netlink::new`]. Clones share the socket; the task stops when the last clone
//! is dropped. Notifications use a separate multicast socket ([`AddressWatch`]) so that a
//! burst of events can never delay or reorder the replies to requests.
//!
//! Every failure is a [`NetlinkError`] that names the interface and address involved and
//! keeps the kernel's errno and, where the kernel gave one, its extended-ack message.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use futures_util::stream::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::{AsyncSocket, SocketAddr};
use rtnetlink::{AddressMessageBuilder, MulticastGroup};
use tokio::task::JoinHandle;

/// Longest interface name or IPv4 address label the kernel stores (IFNAMSIZ minus the NUL).
pub const MAX_LABEL_LEN: usize = 15;

/// Extended-ack attribute carrying the kernel's human-readable error text.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// Size of the request header the kernel echoes in an error when `NETLINK_CAP_ACK` is on.
const NLMSG_HEADER_LEN: usize = 16;

/// What a netlink request was doing when it failed; part of every [`NetlinkError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    LookUpInterface,
    AddAddress,
    RemoveAddress,
    ListAddresses,
    ListNeighbours,
    RemoveNeighbour,
    WatchAddresses,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::LookUpInterface => "looking up interface",
            Self::AddAddress => "adding address",
            Self::RemoveAddress => "removing address",
            Self::ListAddresses => "listing addresses",
            Self::ListNeighbours => "listing neighbours",
            Self::RemoveNeighbour => "removing neighbour",
            Self::WatchAddresses => "subscribing to address changes",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("opening a route netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("netlink needs a running tokio runtime")]
    NoRuntime,
    #[error("no interface named {iface:?}")]
    NoSuchInterface { iface: String },
    #[error("interface {iface} has a {len}-byte hardware address, not an Ethernet one")]
    NotEthernet { iface: String, len: usize },
    /// The request was refused before reaching the kernel.
    #[error("{op} {addr} on {iface}: {reason}")]
    InvalidRequest {
        op: Operation,
        iface: String,
        addr: IpAddr,
        reason: String,
    },
    /// The kernel answered with an error code.
    #[error("{op}{} on {iface}: {}", addr_part(.addr), kernel_reason(*.errno, .kernel_message))]
    Kernel {
        op: Operation,
        iface: String,
        addr: Option<IpAddr>,
        /// Positive, as in `libc::E*`.
        errno: i32,
        /// The extended-ack text (e.g. "ipv6: IPv6 is disabled on this device"), if any.
        kernel_message: Option<String>,
    },
    /// The connection failed or the kernel sent something unexpected.
    #[error("{op}{} on {iface}: {detail}", addr_part(.addr))]
    Protocol {
        op: Operation,
        iface: String,
        addr: Option<IpAddr>,
        detail: String,
    },
}

impl NetlinkError {
    /// The kernel's errno, when the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { errno, .. } => Some(*errno),
            Self::Socket(e) => e.raw_os_error(),
            _ => None,
        }
    }
}

fn addr_part(addr: &Option<IpAddr>) -> String {
    addr.map(|a| format!(" {a}")).unwrap_or_default()
}

/// "ipv6: IPv6 is disabled on this device (Permission denied, errno 13)", or the errno's
/// text alone when the kernel gave no message.
fn kernel_reason(errno: i32, message: &Option<String>) -> String {
    let text = nix::errno::Errno::from_raw(errno).desc();
    match message {
        Some(message) => format!("{message} ({text}, errno {errno})"),
        None => format!("{text} (errno {errno})"),
    }
}

/// Result of [`Netlink::add_address`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddOutcome {
    Added,
    /// The kernel already had this address (for IPv4: with this prefix) on the interface.
    AlreadyPresent,
}

/// Result of [`Netlink::del_address`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DelOutcome {
    Removed,
    /// The interface has no such address (with this prefix).
    NotPresent,
}

/// Administrative and operational state of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkState {
    /// `IFF_UP`: someone set the link up.
    pub admin_up: bool,
    /// `IFF_RUNNING`: the link has carrier and is operational.
    pub running: bool,
}

/// One address configured on an interface, as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceAddress {
    pub addr: IpAddr,
    pub prefix: u8,
    /// IPv4 only: the `iface:label` name (the interface name when none was given).
    pub label: Option<String>,
    /// IPv4 only.
    pub broadcast: Option<Ipv4Addr>,
    /// IPv4: not the first address of its subnet on this interface.
    pub secondary: bool,
    /// IPv6: duplicate address detection has not finished; the address is not usable yet.
    pub tentative: bool,
    /// IPv6: duplicate address detection found another holder.
    pub dad_failed: bool,
}

/// A change reported by [`AddressWatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressNotice {
    Added(AddressEvent),
    Removed(AddressEvent),
    /// The kernel dropped notifications (receive buffer overrun): the caller must re-read
    /// the addresses it cares about.
    Overrun,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressEvent {
    pub ifindex: u32,
    pub addr: IpAddr,
    pub prefix: u8,
    /// IPv4 only.
    pub label: Option<String>,
}

/// Aborts a connection task when its last owner goes away.
#[derive(Debug)]
struct ConnectionTask(JoinHandle<()>);

impl Drop for ConnectionTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Debug)]
struct Shared {
    _task: ConnectionTask,
    /// Whether the socket has `NETLINK_CAP_ACK` + `NETLINK_EXT_ACK`, which fixes where the
    /// kernel's error text sits in an error reply.
    extended_ack: bool,
}

/// A route-netlink socket for address takeover. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Netlink {
    handle: rtnetlink::Handle,
    shared: Arc<Shared>,
}

impl Netlink {
    /// Opens the socket in the calling thread's network namespace and spawns its connection
    /// task on the current tokio runtime.
    pub fn new() -> Result<Self, NetlinkError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| NetlinkError::NoRuntime)?;
        let (mut connection, handle, _unsolicited) =
            rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
        let socket = connection.socket_mut().socket_mut();
        // Capped acks keep error replies short and put the extended-ack text at a known
        // offset; without both options errors still carry the errno.
        let extended_ack = socket.set_cap_ack(true).is_ok() && socket.set_ext_ack(true).is_ok();
        if !extended_ack {
            let _ = socket.set_ext_ack(false);
            tracing::debug!("netlink extended acks unavailable; errors will carry errno only");
        }
        let task = runtime.spawn(connection);
        Ok(Self {
            handle,
            shared: Arc::new(Shared {
                _task: ConnectionTask(task),
                extended_ack,
            }),
        })
    }

    /// The interface's index.
    pub async fn ifindex(&self, iface: &str) -> Result<u32, NetlinkError> {
        Ok(self.link(iface).await?.header.index)
    }

    /// The name of the interface with this index.
    pub async fn interface_name(&self, ifindex: u32) -> Result<String, NetlinkError> {
        let label = format!("#{ifindex}");
        let mut replies = self.handle.link().get().match_index(ifindex).execute();
        let link = match replies.try_next().await {
            Ok(Some(link)) => link,
            Ok(None) => return Err(NetlinkError::NoSuchInterface { iface: label }),
            Err(e) if rtnetlink_errno(&e) == Some(libc::ENODEV) => {
                return Err(NetlinkError::NoSuchInterface { iface: label })
            }
            Err(e) => return Err(self.error(Operation::LookUpInterface, &label, None, e)),
        };
        link_name(&link).ok_or_else(|| NetlinkError::Protocol {
            op: Operation::LookUpInterface,
            iface: label,
            addr: None,
            detail: "link reply without a name".into(),
        })
    }

    /// The interface's Ethernet address.
    pub async fn mac_address(&self, iface: &str) -> Result<[u8; 6], NetlinkError> {
        let link = self.link(iface).await?;
        let hardware = link
            .attributes
            .iter()
            .find_map(|attr| match attr {
                LinkAttribute::Address(bytes) => Some(bytes.as_slice()),
                _ => None,
            })
            .unwrap_or_default();
        <[u8; 6]>::try_from(hardware).map_err(|_| NetlinkError::NotEthernet {
            iface: iface.to_owned(),
            len: hardware.len(),
        })
    }

    pub async fn link_state(&self, iface: &str) -> Result<LinkState, NetlinkError> {
        let flags = self.link(iface).await?.header.flags;
        Ok(LinkState {
            admin_up: flags.contains(LinkFlags::Up),
            running: flags.contains(LinkFlags::Running),
        })
    }

    /// Whether the interface is set up and operational (has carrier): announcements sent
    /// on it can reach anyone.
    pub async fn is_up(&self, iface: &str) -> Result<bool, NetlinkError> {
        let state = self.link_state(iface).await?;
        Ok(state.admin_up && state.running)
    }

    /// Adds `addr/prefix` to `iface`.
    ///
    /// IPv4: `label` (see [`vip_label`]) names the address as `ip addr` and ifconfig show
    /// it; `broadcast` defaults to the subnet's last address for prefixes below 31.
    /// IPv6: added with `IFA_F_NODAD` so the VIP is usable at once instead of after
    /// duplicate address detection; labels and broadcast addresses do not exist for IPv6
    /// and are refused.
    pub async fn add_address(
        &self,
        iface: &str,
        addr: IpAddr,
        prefix: u8,
        label: Option<&str>,
        broadcast: Option<Ipv4Addr>,
    ) -> Result<AddOutcome, NetlinkError> {
        let invalid = |reason: String| NetlinkError::InvalidRequest {
            op: Operation::AddAddress,
            iface: iface.to_owned(),
            addr,
            reason,
        };
        check_prefix(addr, prefix).map_err(&invalid)?;
        if !is_unicast(addr) {
            return Err(invalid("not a unicast address".into()));
        }
        if let Some(label) = label {
            if addr.is_ipv6() {
                return Err(invalid("IPv6 addresses have no labels".into()));
            }
            check_label(iface, label).map_err(&invalid)?;
        }
        if broadcast.is_some() && addr.is_ipv6() {
            return Err(invalid("IPv6 has no broadcast address".into()));
        }

        let index = self.ifindex(iface).await?;
        let mut request = self.handle.address().add(index, addr, prefix);
        let message = request.message_mut();
        match addr {
            IpAddr::V4(_) => {
                if let Some(label) = label {
                    message
                        .attributes
                        .push(AddressAttribute::Label(label.to_owned()));
                }
                if let Some(broadcast) = broadcast {
                    message
                        .attributes
                        .retain(|attr| !matches!(attr, AddressAttribute::Broadcast(_)));
                    message
                        .attributes
                        .push(AddressAttribute::Broadcast(broadcast));
                }
            }
            IpAddr::V6(_) => {
                // The header byte is what old kernels read; IFA_FLAGS wins where present.
                message.header.flags = AddressHeaderFlags::Nodad;
                message
                    .attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
        }
        match request.execute().await {
            Ok(()) => {
                tracing::debug!(%iface, %addr, prefix, ?label, "address added");
                Ok(AddOutcome::Added)
            }
            Err(e) if rtnetlink_errno(&e) == Some(libc::EEXIST) => Ok(AddOutcome::AlreadyPresent),
            Err(e) => Err(self.error(Operation::AddAddress, iface, Some(addr), e)),
        }
    }

    /// Removes `addr/prefix` from `iface`; removing an absent address is not an error.
    pub async fn del_address(
        &self,
        iface: &str,
        addr: IpAddr,
        prefix: u8,
    ) -> Result<DelOutcome, NetlinkError> {
        check_prefix(addr, prefix).map_err(|reason| NetlinkError::InvalidRequest {
            op: Operation::RemoveAddress,
            iface: iface.to_owned(),
            addr,
            reason,
        })?;
        let index = self.ifindex(iface).await?;
        let message = match addr {
            IpAddr::V4(v4) => AddressMessageBuilder::<Ipv4Addr>::new()
                .index(index)
                .address(v4, prefix)
                .build(),
            IpAddr::V6(v6) => AddressMessageBuilder::<Ipv6Addr>::new()
                .index(index)
                .address(v6, prefix)
                .build(),
        };
        match self.handle.address().del(message).execute().await {
            Ok(()) => {
                tracing::debug!(%iface, %addr, prefix, "address removed");
                Ok(DelOutcome::Removed)
            }
            Err(e) if rtnetlink_errno(&e) == Some(libc::EADDRNOTAVAIL) => {
                Ok(DelOutcome::NotPresent)
            }
            Err(e) => Err(self.error(Operation::RemoveAddress, iface, Some(addr), e)),
        }
    }

    /// Whether `addr` is configured on `iface`, with any prefix.
    pub async fn has_address(&self, iface: &str, addr: IpAddr) -> Result<bool, NetlinkError> {
        Ok(self
            .list_addresses(iface)
            .await?
            .iter()
            .any(|configured| configured.addr == addr))
    }

    /// Every IPv4 and IPv6 address on `iface`.
    pub async fn list_addresses(&self, iface: &str) -> Result<Vec<InterfaceAddress>, NetlinkError> {
        let index = self.ifindex(iface).await?;
        let messages: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.error(Operation::ListAddresses, iface, None, e))?;
        Ok(messages.iter().filter_map(interface_address).collect())
    }

    /// Deletes `iface`'s neighbour entries (ARP and NDP) in FAILED or INCOMPLETE state and
    /// returns how many went. A node coming back from a cut otherwise keeps answering into
    /// entries that failed during the outage until the kernel's own retry fires.
    pub async fn flush_stale_neighbours(&self, iface: &str) -> Result<usize, NetlinkError> {
        let index = self.ifindex(iface).await?;
        let entries: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.error(Operation::ListNeighbours, iface, None, e))?;
        let mut removed = 0;
        for entry in entries {
            if entry.header.ifindex != index
                || !matches!(
                    entry.header.state,
                    NeighbourState::Failed | NeighbourState::Incomplete
                )
            {
                continue;
            }
            let Some(destination) = neighbour_destination(&entry) else {
                continue;
            };
            let state = entry.header.state;
            let mut delete = NeighbourMessage::default();
            delete.header.family = entry.header.family;
            delete.header.ifindex = index;
            delete
                .attributes
                .push(NeighbourAttribute::Destination(match destination {
                    IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
                    IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
                }));
            match self.handle.neighbours().del(delete).execute().await {
                Ok(()) => {
                    tracing::debug!(%iface, neighbour = %destination, ?state, "stale neighbour flushed");
                    removed += 1;
                }
                // Gone in the meantime (resolved or garbage-collected): nothing to flush.
                Err(e) if rtnetlink_errno(&e) == Some(libc::ENOENT) => {}
                Err(e) => {
                    return Err(self.error(Operation::RemoveNeighbour, iface, Some(destination), e))
                }
            }
        }
        Ok(removed)
    }

    async fn link(&self, iface: &str) -> Result<LinkMessage, NetlinkError> {
        let missing = || NetlinkError::NoSuchInterface {
            iface: iface.to_owned(),
        };
        if iface.is_empty() || iface.len() > MAX_LABEL_LEN {
            return Err(missing());
        }
        let mut replies = self
            .handle
            .link()
            .get()
            .match_name(iface.to_owned())
            .execute();
        match replies.try_next().await {
            Ok(Some(link)) => Ok(link),
            Ok(None) => Err(missing()),
            Err(e) if rtnetlink_errno(&e) == Some(libc::ENODEV) => Err(missing()),
            Err(e) => Err(self.error(Operation::LookUpInterface, iface, None, e)),
        }
    }

    fn error(
        &self,
        op: Operation,
        iface: &str,
        addr: Option<IpAddr>,
        error: rtnetlink::Error,
    ) -> NetlinkError {
        netlink_error(op, iface, addr, error, self.shared.extended_ack)
    }
}

/// A subscription to IPv4 and IPv6 address additions and removals in the calling thread's
/// network namespace, on its own multicast socket.
pub struct AddressWatch {
    notifications:
        futures_util::stream::BoxStream<'static, (NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
    _task: ConnectionTask,
}

impl fmt::Debug for AddressWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddressWatch").finish_non_exhaustive()
    }
}

impl AddressWatch {
    pub fn subscribe() -> Result<Self, NetlinkError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| NetlinkError::NoRuntime)?;
        let (connection, _handle, notifications) = rtnetlink::new_multicast_connection(&[
            MulticastGroup::Ipv4Ifaddr,
            MulticastGroup::Ipv6Ifaddr,
        ])
        .map_err(NetlinkError::Socket)?;
        let task = ConnectionTask(runtime.spawn(connection));
        Ok(Self {
            notifications: notifications.boxed(),
            _task: task,
        })
    }

    /// The next address change. `None` means the subscription ended (its socket failed):
    /// subscribe again and re-read the addresses that matter.
    pub async fn next(&mut self) -> Option<AddressNotice> {
        while let Some((message, _)) = self.notifications.next().await {
            match message.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(address)) => {
                    if let Some(event) = address_event(&address) {
                        return Some(AddressNotice::Added(event));
                    }
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(address)) => {
                    if let Some(event) = address_event(&address) {
                        return Some(AddressNotice::Removed(event));
                    }
                }
                NetlinkPayload::Overrun(_) => return Some(AddressNotice::Overrun),
                _ => {}
            }
        }
        None
    }
}

/// A label for the `slot`-th VIP on `iface` that the kernel accepts: it must start with the
/// interface name and fit in 15 bytes. `iface:hbN` when it fits, else `iface:N`, else
/// `None` (the address then carries the bare interface name, as an unlabelled one does).
pub fn vip_label(iface: &str, slot: u32) -> Option<String> {
    [format!("{iface}:hb{slot}"), format!("{iface}:{slot}")]
        .into_iter()
        .find(|label| check_label(iface, label).is_ok())
}

/// The kernel's own rules for IPv4 labels, checked up front for a clearer error.
fn check_label(iface: &str, label: &str) -> Result<(), String> {
    if label.len() > MAX_LABEL_LEN {
        return Err(format!(
            "label {label:?} is longer than {MAX_LABEL_LEN} bytes"
        ));
    }
    if !label.starts_with(iface) {
        return Err(format!(
            "label {label:?} must start with the interface name"
        ));
    }
    if label
        .bytes()
        .any(|b| b == 0 || b == b'/' || b.is_ascii_whitespace())
    {
        return Err(format!(
            "label {label:?} contains a character interface names cannot hold"
        ));
    }
    Ok(())
}

fn is_unicast(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => !(v4.is_multicast() || v4.is_unspecified() || v4.is_broadcast()),
        IpAddr::V6(v6) => !(v6.is_multicast() || v6.is_unspecified()),
    }
}

fn check_prefix(addr: IpAddr, prefix: u8) -> Result<(), String> {
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(format!("prefix /{prefix} is longer than {max} bits"));
    }
    Ok(())
}

fn link_name(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::IfName(name) => Some(name.clone()),
        _ => None,
    })
}

/// An address message's own address: IFA_LOCAL for IPv4 (IFA_ADDRESS is the peer on
/// point-to-point links), IFA_ADDRESS for IPv6 unless a local one is given.
fn message_address(message: &AddressMessage) -> Option<IpAddr> {
    let local = message.attributes.iter().find_map(|attr| match attr {
        AddressAttribute::Local(addr) => Some(*addr),
        _ => None,
    });
    local.or_else(|| {
        message.attributes.iter().find_map(|attr| match attr {
            AddressAttribute::Address(addr) => Some(*addr),
            _ => None,
        })
    })
}

fn message_flags(message: &AddressMessage) -> AddressFlags {
    message
        .attributes
        .iter()
        .find_map(|attr| match attr {
            AddressAttribute::Flags(flags) => Some(*flags),
            _ => None,
        })
        .unwrap_or_else(|| AddressFlags::from_bits_retain(u32::from(message.header.flags.bits())))
}

fn message_label(message: &AddressMessage) -> Option<String> {
    message.attributes.iter().find_map(|attr| match attr {
        AddressAttribute::Label(label) => Some(label.clone()),
        _ => None,
    })
}

fn interface_address(message: &AddressMessage) -> Option<InterfaceAddress> {
    let addr = message_address(message)?;
    let flags = message_flags(message);
    Some(InterfaceAddress {
        addr,
        prefix: message.header.prefix_len,
        label: message_label(message),
        broadcast: message.attributes.iter().find_map(|attr| match attr {
            AddressAttribute::Broadcast(b) => Some(*b),
            _ => None,
        }),
        secondary: flags.contains(AddressFlags::Secondary),
        tentative: flags.contains(AddressFlags::Tentative),
        dad_failed: flags.contains(AddressFlags::Dadfailed),
    })
}

fn address_event(message: &AddressMessage) -> Option<AddressEvent> {
    Some(AddressEvent {
        ifindex: message.header.index,
        addr: message_address(message)?,
        prefix: message.header.prefix_len,
        label: message_label(message),
    })
}

fn neighbour_destination(message: &NeighbourMessage) -> Option<IpAddr> {
    message.attributes.iter().find_map(|attr| match attr {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        _ => None,
    })
}

/// The kernel's errno in a netlink error reply (positive, as in `libc::E*`).
fn rtnetlink_errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|code| -code.get()),
        _ => None,
    }
}

fn netlink_error(
    op: Operation,
    iface: &str,
    addr: Option<IpAddr>,
    error: rtnetlink::Error,
    extended_ack: bool,
) -> NetlinkError {
    match (&error, rtnetlink_errno(&error)) {
        (rtnetlink::Error::NetlinkError(message), Some(errno)) => NetlinkError::Kernel {
            op,
            iface: iface.to_owned(),
            addr,
            errno,
            kernel_message: if extended_ack {
                extended_ack_message(&message.header)
            } else {
                None
            },
        },
        _ => NetlinkError::Protocol {
            op,
            iface: iface.to_owned(),
            addr,
            detail: error.to_string(),
        },
    }
}

/// The `NLMSGERR_ATTR_MSG` text of an error reply's payload (the bytes after the error
/// code): with `NETLINK_CAP_ACK` the echoed request is its 16-byte header alone and the
/// extended-ack attributes follow it.
fn extended_ack_message(payload: &[u8]) -> Option<String> {
    let mut rest = payload.get(NLMSG_HEADER_LEN..)?;
    while rest.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let value = &rest[4..len];
            let text = value.split(|&b| b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned()).filter(|t| !t.is_empty());
        }
        let aligned = (len + 3) & !3;
        rest = rest.get(aligned..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_route::address::AddressHeaderFlags;

    #[test]
    fn vip_label_fits_kernel_rules() {
        assert_eq!(vip_label("eth0", 0).as_deref(), Some("eth0:hb0"));
        assert_eq!(
            vip_label("enp0s31f6", 12).as_deref(),
            Some("enp0s31f6:hb12")
        );
        // 12-byte name: ":hb3" would make 16 bytes, ":3" makes 14.
        assert_eq!(
            vip_label("abcdefghijkl", 3).as_deref(),
            Some("abcdefghijkl:3")
        );
        assert_eq!(vip_label("abcdefghijklmn", 3), None);
        for (iface, slot) in [("eth0", 7), ("veth-longname", 99), ("x", 4_000_000_000)] {
            if let Some(label) = vip_label(iface, slot) {
                assert!(
                    label.len() <= MAX_LABEL_LEN && label.starts_with(iface),
                    "{label}"
                );
            }
        }
    }

    #[test]
    fn labels_are_checked_like_the_kernel() {
        assert!(check_label("eth0", "eth0:1").is_ok());
        assert!(check_label("eth0", "eth1:1").is_err());
        assert!(check_label("eth0", "eth0:0123456789ab").is_err());
        assert!(check_label("eth0", "eth0:a b").is_err());
    }

    #[test]
    fn prefixes_are_bounded_by_family() {
        assert!(check_prefix("198.18.0.1".parse().unwrap(), 32).is_ok());
        assert!(check_prefix("198.18.0.1".parse().unwrap(), 33).is_err());
        assert!(check_prefix("2001:2::1".parse().unwrap(), 128).is_ok());
        assert!(check_prefix("2001:2::1".parse().unwrap(), 129).is_err());
    }

    #[test]
    fn extended_ack_text_is_found_after_the_capped_header() {
        let mut payload = vec![0u8; NLMSG_HEADER_LEN];
        // NLMSGERR_ATTR_OFFS (type 2, u32) first, then the message.
        payload.extend_from_slice(&8u16.to_ne_bytes());
        payload.extend_from_slice(&2u16.to_ne_bytes());
        payload.extend_from_slice(&20u32.to_ne_bytes());
        let text = b"Label must begin with interface name\0";
        payload.extend_from_slice(&((4 + text.len()) as u16).to_ne_bytes());
        payload.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        payload.extend_from_slice(text);
        assert_eq!(
            extended_ack_message(&payload).as_deref(),
            Some("Label must begin with interface name")
        );
        assert_eq!(extended_ack_message(&payload[..NLMSG_HEADER_LEN]), None);
        // A truncated attribute is ignored rather than read past the end.
        assert_eq!(extended_ack_message(&payload[..payload.len() - 5]), None);
    }

    #[test]
    fn kernel_errors_keep_errno_and_name_the_target() {
        let message = {
            let mut m = rtnetlink::packet_core::ErrorMessage::default();
            m.code = std::num::NonZeroI32::new(-libc::EPERM);
            m
        };
        let error = netlink_error(
            Operation::AddAddress,
            "veth0",
            Some("198.18.0.100".parse().unwrap()),
            rtnetlink::Error::NetlinkError(message),
            true,
        );
        assert_eq!(error.errno(), Some(libc::EPERM));
        let text = error.to_string();
        assert!(
            text.starts_with("adding address 198.18.0.100 on veth0: "),
            "{text}"
        );
        assert!(text.contains("not permitted"), "{text}");
    }

    #[test]
    fn address_messages_are_read_with_flags_and_label() {
        let mut message = AddressMessage::default();
        message.header.prefix_len = 24;
        message.header.flags = AddressHeaderFlags::Secondary;
        message.attributes = vec![
            AddressAttribute::Address("198.18.0.1".parse().unwrap()),
            AddressAttribute::Local("198.18.0.100".parse().unwrap()),
            AddressAttribute::Label("eth0:hb0".into()),
            AddressAttribute::Broadcast("198.18.0.255".parse().unwrap()),
        ];
        let parsed = interface_address(&message).unwrap();
        assert_eq!(parsed.addr, "198.18.0.100".parse::<IpAddr>().unwrap());
        assert_eq!(parsed.label.as_deref(), Some("eth0:hb0"));
        assert!(parsed.secondary && !parsed.tentative);
        message.attributes.push(AddressAttribute::Flags(
            AddressFlags::Tentative | AddressFlags::Nodad,
        ));
        let parsed = interface_address(&message).unwrap();
        assert!(parsed.tentative && !parsed.secondary);
    }
}
