//! `hb_xdp`: the XDP program on every heartbeat interface.
//!
//! For each frame it decides, in this order:
//! 1. Not UDP to a heartbeat port (HB_CONFIG) → `XDP_PASS`, untouched, counted as `Passed`.
//!    That includes anything whose headers cannot be read far enough to see the UDP
//!    destination port (truncated or odd L2/L3 headers, IPv6 extension headers, IPv4
//!    fragments other than the first): the port is unknown, so it is not ours to judge, and
//!    the stack drops what is really broken.
//! 2. UDP to a heartbeat port whose headers are inconsistent (UDP length beyond the IP
//!    payload or the frame, or a first IPv4 fragment: an 80-byte heartbeat is never
//!    fragmented) → `XDP_DROP`, `DropMalformed`.
//! 3. Payload not exactly `PACKET_LEN` bytes → `DropBadLength`; then the shared shape check
//!    (`Heartbeat::check_shape`) → its reason; then the sender must be a key of HB_PEERS
//!    → `DropUnknownPeer`.
//! 4. Otherwise: stamp with `bpf_ktime_get_ns`, update HB_PEERS and HB_PEER_LINKS, hand
//!    `{ts, ifindex, source, packet}` to the agent through HB_EVENTS (`RingFull` when there is
//!    no room), count `Accepted`, and consume the frame (`XDP_DROP`): the agent has it.
//!
//! Every frame lands in exactly one of the verdict counters; `RingFull` additionally counts
//! accepted heartbeats the ring had no room for. Log lines (aya-log) are written only
//! for drops that point at a misconfigured peer or a slow agent, and only on the 1st, 2nd,
//! 4th, 8th, ... occurrence per CPU, so a noisy sender cannot flood the log.
#![no_std]
#![no_main]

use aya_ebpf::bindings::{xdp_action, BPF_NOEXIST, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
use aya_ebpf::btf_maps::{Array, HashMap, PerCpuArray, RingBuf};
use aya_ebpf::helpers::bpf_ktime_get_ns;
use aya_ebpf::macros::{btf_map, xdp};
use aya_ebpf::programs::XdpContext;
use aya_log_ebpf::warn;
use hb_common::maps::{
    advert_digest, Counter, LinkStats, PeerLinkKey, PeerStats, RingEvent, XdpConfig, EVENTS_BYTES,
    EVENT_WOKE_AGENT, FAMILY_IPV4, FAMILY_IPV6, MAX_PEERS, MAX_PEER_LINKS, WAKE_SAMPLE_EVERY,
};
use hb_common::wire::{Heartbeat, MessageKind, PACKET_LEN};

#[btf_map]
static HB_CONFIG: Array<XdpConfig, 1> = Array::new();

#[btf_map]
static HB_PEERS: HashMap<u32, PeerStats, { MAX_PEERS as usize }> = HashMap::new();

#[btf_map]
static HB_PEER_LINKS: HashMap<PeerLinkKey, LinkStats, { MAX_PEER_LINKS as usize }> = HashMap::new();

#[btf_map]
static HB_COUNTERS: PerCpuArray<u64, { Counter::COUNT as usize }> = PerCpuArray::new();

#[btf_map]
static HB_EVENTS: RingBuf<RingEvent, { EVENTS_BYTES as usize }> = RingBuf::new();

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const UDP_HLEN: usize = 8;
const IPPROTO_UDP: u8 = 17;
/// IPv4 "more fragments" flag and fragment offset, in the host-order `frag_off` field.
const IP_MF: u16 = 0x2000;
const IP_OFFSET: u16 = 0x1fff;

/// What to do with a frame, and the counter it lands in.
enum Verdict {
    Pass,
    Drop(Counter),
    /// A well-shaped heartbeat whose sender is not ours: worth a (rate-limited) log line.
    DropForeign(Counter, Origin),
    /// A well-shaped heartbeat from a configured peer.
    Heartbeat(Origin, usize),
}

/// Who sent a heartbeat; for an accepted one, also where its payload sits in the frame.
struct Origin {
    family: u8,
    src_addr: [u8; 16],
    src_port: u16,
    node_id: u32,
    cluster_id: u32,
}

#[xdp]
pub fn hb_xdp(ctx: XdpContext) -> u32 {
    match classify(&ctx) {
        Verdict::Pass => {
            count(Counter::Passed);
            xdp_action::XDP_PASS
        }
        Verdict::Drop(reason) => {
            count(reason);
            xdp_action::XDP_DROP
        }
        Verdict::DropForeign(reason, origin) => {
            if count(reason).is_power_of_two() {
                log_foreign(&ctx, reason, &origin);
            }
            xdp_action::XDP_DROP
        }
        Verdict::Heartbeat(origin, payload) => {
            deliver(&ctx, &origin, payload);
            xdp_action::XDP_DROP
        }
    }
}

/// A pointer to `len` bytes at `offset` into the frame, if the frame holds them.
#[inline(always)]
fn bytes_at(ctx: &XdpContext, offset: usize, len: usize) -> Option<*const u8> {
    let start = ctx.data();
    if start + offset + len > ctx.data_end() {
        return None;
    }
    Some((start + offset) as *const u8)
}

/// A big-endian u16 at `offset`.
#[inline(always)]
fn be16_at(ctx: &XdpContext, offset: usize) -> Option<u16> {
    let ptr = bytes_at(ctx, offset, 2)?;
    // SAFETY: bytes_at checked that both bytes lie inside the frame; [u8; 2] has alignment 1.
    Some(u16::from_be_bytes(unsafe { *(ptr as *const [u8; 2]) }))
}

#[inline(always)]
fn heartbeat_config() -> Option<&'static XdpConfig> {
    HB_CONFIG.get(0)
}

#[inline(always)]
fn classify(ctx: &XdpContext) -> Verdict {
    let Some(mut ethertype) = be16_at(ctx, 12) else {
        return Verdict::Pass;
    };
    let mut l3 = ETH_HLEN;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        let Some(inner) = be16_at(ctx, ETH_HLEN + 2) else {
            return Verdict::Pass;
        };
        ethertype = inner;
        l3 += VLAN_HLEN;
    }
    let Some(config) = heartbeat_config() else {
        return Verdict::Pass;
    };

    let mut src_addr = [0u8; 16];
    let (family, udp, ip_payload_len) = match ethertype {
        ETH_P_IP => {
            let Some(ptr) = bytes_at(ctx, l3, IPV4_MIN_HLEN) else {
                return Verdict::Pass;
            };
            // SAFETY: bytes_at checked the 20 bytes of the fixed IPv4 header; alignment 1.
            let header = unsafe { &*(ptr as *const [u8; IPV4_MIN_HLEN]) };
            let ihl = ((header[0] & 0x0f) as usize) * 4;
            if header[0] >> 4 != 4 || ihl < IPV4_MIN_HLEN || header[9] != IPPROTO_UDP {
                return Verdict::Pass;
            }
            let frag_off = u16::from_be_bytes([header[6], header[7]]);
            if frag_off & IP_OFFSET != 0 {
                // A later fragment carries no UDP header: its port is unknown.
                return Verdict::Pass;
            }
            src_addr[..4].copy_from_slice(&header[12..16]);
            let total_len = u16::from_be_bytes([header[2], header[3]]) as usize;
            let udp = l3 + ihl;
            if frag_off & IP_MF != 0 {
                // A first fragment: ours only if it is to a heartbeat port, and then never
                // legitimate (a heartbeat is 88 bytes of UDP).
                return match be16_at(ctx, udp + 2) {
                    Some(port) if config.is_heartbeat_port(port) => {
                        Verdict::Drop(Counter::DropMalformed)
                    }
                    _ => Verdict::Pass,
                };
            }
            (FAMILY_IPV4, udp, total_len.saturating_sub(ihl))
        }
        ETH_P_IPV6 => {
            let Some(ptr) = bytes_at(ctx, l3, IPV6_HLEN) else {
                return Verdict::Pass;
            };
            // SAFETY: bytes_at checked the 40 bytes of the fixed IPv6 header; alignment 1.
            let header = unsafe { &*(ptr as *const [u8; IPV6_HLEN]) };
            // Extension headers (fragments included) are not followed: not ours.
            if header[0] >> 4 != 6 || header[6] != IPPROTO_UDP {
                return Verdict::Pass;
            }
            src_addr.copy_from_slice(&header[8..24]);
            let payload_len = u16::from_be_bytes([header[4], header[5]]) as usize;
            (FAMILY_IPV6, l3 + IPV6_HLEN, payload_len)
        }
        _ => return Verdict::Pass,
    };

    let Some(ptr) = bytes_at(ctx, udp, UDP_HLEN) else {
        return Verdict::Pass;
    };
    // SAFETY: bytes_at checked the 8 bytes of the UDP header; alignment 1.
    let header = unsafe { &*(ptr as *const [u8; UDP_HLEN]) };
    let src_port = u16::from_be_bytes([header[0], header[1]]);
    let dst_port = u16::from_be_bytes([header[2], header[3]]);
    let udp_len = u16::from_be_bytes([header[4], header[5]]) as usize;
    if !config.is_heartbeat_port(dst_port) {
        return Verdict::Pass;
    }

    // From here on the frame is addressed to us.
    if udp_len < UDP_HLEN || udp_len > ip_payload_len {
        return Verdict::Drop(Counter::DropMalformed);
    }
    if udp_len - UDP_HLEN != PACKET_LEN {
        return Verdict::Drop(Counter::DropBadLength);
    }
    let payload = udp + UDP_HLEN;
    let Some(ptr) = bytes_at(ctx, payload, PACKET_LEN) else {
        // The UDP header claims more bytes than the frame holds.
        return Verdict::Drop(Counter::DropMalformed);
    };
    // SAFETY: bytes_at checked PACKET_LEN bytes; Heartbeat is repr(C) of byte arrays
    // (alignment 1), so any bytes are a valid value.
    let heartbeat = unsafe { &*(ptr as *const Heartbeat) };
    let origin = Origin {
        family,
        src_addr,
        src_port,
        node_id: heartbeat.node_id(),
        cluster_id: heartbeat.cluster_id(),
    };
    match heartbeat.check_shape(config.cluster_id) {
        Ok(()) => {}
        Err(shape) => {
            let reason = Counter::from(shape);
            return if reason == Counter::DropWrongCluster {
                Verdict::DropForeign(reason, origin)
            } else {
                Verdict::Drop(reason)
            };
        }
    }
    if HB_PEERS.get_ptr(origin.node_id).is_none() {
        return Verdict::DropForeign(Counter::DropUnknownPeer, origin);
    }
    Verdict::Heartbeat(origin, payload)
}

/// Records a well-shaped heartbeat and hands it to the agent.
#[inline(always)]
fn deliver(ctx: &XdpContext, origin: &Origin, payload: usize) {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let ifindex = ctx.ingress_ifindex() as u32;
    let Some(ptr) = bytes_at(ctx, payload, PACKET_LEN) else {
        // classify checked these bytes; the verifier needs the check on this path too.
        count(Counter::DropMalformed);
        return;
    };
    // SAFETY: as in classify: PACKET_LEN bytes inside the frame, alignment 1, any bytes valid.
    let heartbeat = unsafe { &*(ptr as *const Heartbeat) };

    // Informational state, written with plain stores: BPF has no atomic read-modify-write
    // in `core`, so two CPUs receiving the same peer on two links at the same instant may
    // interleave fields or lose one count. Liveness never depends on these values; the
    // wake-up choice does, and a race there costs at most one extra or one later wake-up.
    let digest = advert_digest(heartbeat);
    let mut wake = true;
    if let Some(peer) = HB_PEERS.get_ptr_mut(origin.node_id) {
        // SAFETY: the pointer is to this key's value in a preallocated hash map, whose
        // element memory the kernel never frees while the program runs. If the agent
        // removes the peer meanwhile (a reload), the write may land in a recycled element:
        // wrong informational statistics, never invalid memory.
        unsafe {
            wake = carries_news(&*peer, heartbeat, digest, now);
            (*peer).last_seen_ns = now;
            (*peer).generation = heartbeat.generation();
            (*peer).seq = heartbeat.seq();
            (*peer).last_ifindex = ifindex;
            (*peer).packets += 1;
            (*peer).advert_digest = digest;
        }
    }
    let link = PeerLinkKey {
        node_id: origin.node_id,
        ifindex,
    };
    match HB_PEER_LINKS.get_ptr_mut(link) {
        // SAFETY: as for HB_PEERS (HB_PEER_LINKS entries are removed only by the agent).
        Some(stats) => unsafe {
            (*stats).last_seen_ns = now;
            (*stats).packets += 1;
        },
        None => {
            // A concurrent first insert of the same key on another CPU wins; this
            // packet's count is lost, which the informational map can afford. A full
            // map (more peer links than MAX_PEER_LINKS) stops new entries the same way.
            let first = LinkStats {
                last_seen_ns: now,
                packets: 1,
            };
            let _ = HB_PEER_LINKS.insert(link, first, BPF_NOEXIST.into());
        }
    }

    match HB_EVENTS.reserve(0) {
        Some(mut entry) => {
            entry.write(RingEvent {
                ts_ns: now,
                ifindex,
                src_port: origin.src_port,
                family: origin.family,
                flags: if wake { EVENT_WOKE_AGENT } else { 0 },
                src_addr: origin.src_addr,
                packet: *heartbeat,
            });
            // A routine repeat waits in the ring: the agent reads it, kernel timestamp and
            // all, at its next wake-up, and always before it declares anything dead. Once
            // some event waits unread the kernel's adaptive notification stays silent, so
            // news forces the wake-up.
            entry.submit(if wake {
                BPF_RB_FORCE_WAKEUP.into()
            } else {
                BPF_RB_NO_WAKEUP.into()
            });
        }
        None => {
            if count(Counter::RingFull).is_power_of_two() {
                warn!(ctx, "event ring full: the agent is not keeping up; heartbeats are counted but not delivered");
            }
        }
    }
    count(Counter::Accepted);
}

/// Whether the agent must see this heartbeat now rather than at its next wake-up: any
/// message but a periodic heartbeat, a new generation, a changed advert, the first word
/// after a silence (the agent may have declared the peer dead), and one heartbeat in
/// [`WAKE_SAMPLE_EVERY`] so the wake-up path stays measured.
#[inline(always)]
fn carries_news(peer: &PeerStats, heartbeat: &Heartbeat, digest: u32, now: u64) -> bool {
    let keepalive_ns = heartbeat.keepalive_us() as u64 * 1_000;
    heartbeat.kind != MessageKind::Heartbeat as u8
        || peer.packets == 0
        || peer.generation != heartbeat.generation()
        || peer.advert_digest != digest
        || now.saturating_sub(peer.last_seen_ns) > keepalive_ns.saturating_mul(2)
        || (peer.packets + 1).is_multiple_of(WAKE_SAMPLE_EVERY)
}

#[inline(always)]
fn log_foreign(ctx: &XdpContext, reason: Counter, origin: &Origin) {
    let unknown = reason == Counter::DropUnknownPeer;
    if origin.family == FAMILY_IPV4 {
        let addr = [
            origin.src_addr[0],
            origin.src_addr[1],
            origin.src_addr[2],
            origin.src_addr[3],
        ];
        if unknown {
            warn!(
                ctx,
                "dropping heartbeats from unknown node id 0x{:x} at {:i}", origin.node_id, addr
            );
        } else {
            warn!(
                ctx,
                "dropping heartbeats of cluster id 0x{:x} (node id 0x{:x}) from {:i}",
                origin.cluster_id,
                origin.node_id,
                addr
            );
        }
    } else if unknown {
        warn!(
            ctx,
            "dropping heartbeats from unknown node id 0x{:x} at {:i}",
            origin.node_id,
            origin.src_addr
        );
    } else {
        warn!(
            ctx,
            "dropping heartbeats of cluster id 0x{:x} (node id 0x{:x}) from {:i}",
            origin.cluster_id,
            origin.node_id,
            origin.src_addr
        );
    }
}

/// Bumps this CPU's counter and returns its new value.
#[inline(always)]
fn count(counter: Counter) -> u64 {
    match HB_COUNTERS.get_ptr_mut(counter as u32) {
        Some(value) => {
            // SAFETY: per-CPU slot of a preallocated array; XDP runs with preemption
            // disabled, so nothing else writes this CPU's slot meanwhile.
            unsafe {
                *value += 1;
                *value
            }
        }
        None => 0,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program (no panicking paths survive the verifier).
    loop {}
}

// GPL-compatible so that the kernel offers every helper; MIT keeps it compatible with the
// rest of the project.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
