//! Who is alive: every peer node and every link to it, judged from the kernel arrival times
//! of authenticated heartbeats.
//!
//! Pure: the caller authenticates packets and passes them in with their kernel timestamps,
//! and asks [`Membership::check`] what has expired at a given CLOCK_MONOTONIC time. Tests
//! drive it from recorded events.
//!
//! Rules, as in Heartbeat:
//! - a node is dead when no authenticated heartbeat arrived on *any* link for `deadtime`;
//!   a node never heard since start is dead once `initdead` has passed;
//! - a link is dead when that node's heartbeats stopped arriving on it for `deadtime`;
//! - a heartbeat later than `warntime` after the previous one is reported as late.
//!
//! Replays are refused here: a packet from an older generation, or whose sequence number
//! is not above the last one seen on its link, changes nothing. The same packet arriving
//! on a second link is a duplicate: it proves that link is up, but says nothing new about
//! the node, so a replayed copy can never stretch a dead node's life.

use std::time::Duration;

use hb_common::wire::{Heartbeat, MessageKind, NodeState};

use crate::clock::nanos;
use crate::config::Timers;

/// A peer node's state as this node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Not heard from since this agent started, and `initdead` has not passed.
    Unknown,
    Up,
    Dead,
    /// Said it was leaving (clean shutdown): dead without waiting for `deadtime`.
    Left,
}

impl NodeStatus {
    /// Whether the node may hold resources right now.
    pub fn is_alive(self) -> bool {
        self == NodeStatus::Up
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkStatus {
    Unknown,
    Up,
    Dead,
}

/// Counters per link, as `hb-agent status` shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LinkCounters {
    pub received: u64,
    /// Sequence numbers skipped on this link.
    pub lost: u64,
    /// Packets refused as replays (sequence not increasing on this link).
    pub replays: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerLink {
    /// The local interface the heartbeats arrive on.
    pub iface: String,
    pub status: LinkStatus,
    pub last_heard_ns: Option<u64>,
    last_seq: u64,
    pub counters: LinkCounters,
}

/// Counters per node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeCounters {
    /// Authenticated packets that advanced the node's sequence.
    pub received: u64,
    /// Sequence numbers never seen on any link.
    pub lost: u64,
    /// Packets from an older generation, or repeating a sequence number on a link.
    pub replays: u64,
    /// Heartbeats that came later than `warntime`.
    pub late: u64,
    /// Times the node was declared dead.
    pub deaths: u64,
    /// The longest time between two consecutive heartbeats while the node was up, by
    /// kernel arrival stamps: how close it came to being declared dead.
    pub max_gap_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub id: u32,
    pub status: NodeStatus,
    pub generation: Option<u64>,
    max_seq: u64,
    /// Kernel arrival time of the last packet that advanced `max_seq`.
    pub last_heard_ns: Option<u64>,
    /// When the node last became [`NodeStatus::Up`].
    pub up_since_ns: Option<u64>,
    /// When the node last stopped being alive (dead or left).
    pub down_since_ns: Option<u64>,
    /// What the node last said about itself.
    pub state: Option<NodeState>,
    /// Groups the node says it holds (or is acquiring or releasing).
    pub held: u64,
    /// Groups the node says it failed to start (only in [`MessageKind::Heartbeat`] `arg`).
    pub failed: u64,
    /// The node's keepalive as it announced it.
    pub keepalive_us: u32,
    pub links: Vec<PeerLink>,
    pub counters: NodeCounters,
}

impl Peer {
    fn link_mut(&mut self, iface: &str) -> &mut PeerLink {
        if let Some(index) = self.links.iter().position(|l| l.iface == iface) {
            return &mut self.links[index];
        }
        self.links.push(PeerLink {
            iface: iface.to_owned(),
            status: LinkStatus::Unknown,
            last_heard_ns: None,
            last_seq: 0,
            counters: LinkCounters::default(),
        });
        let last = self.links.len() - 1;
        &mut self.links[last]
    }
}

/// What changed, for the log (Heartbeat's wording) and for the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    NodeUp {
        node: String,
    },
    /// A new generation: the peer's agent restarted.
    NodeRestarted {
        node: String,
        generation: u64,
    },
    NodeDead {
        node: String,
        silent: Duration,
    },
    NodeLeft {
        node: String,
    },
    LinkUp {
        node: String,
        iface: String,
    },
    LinkDead {
        node: String,
        iface: String,
    },
    Late {
        node: String,
        gap: Duration,
    },
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::NodeUp { node } => write!(f, "node {node}: status up"),
            Event::NodeRestarted { node, generation } => {
                write!(
                    f,
                    "heartbeat restart on node {node} (generation {generation})"
                )
            }
            Event::NodeDead { node, silent } => {
                write!(
                    f,
                    "node {node}: is dead (silent for {} ms)",
                    silent.as_millis()
                )
            }
            Event::NodeLeft { node } => write!(f, "node {node}: left the cluster (clean shutdown)"),
            Event::LinkUp { node, iface } => write!(f, "Link {node}:{iface} up."),
            Event::LinkDead { node, iface } => write!(f, "Link {node}:{iface} dead."),
            Event::Late { node, gap } => {
                write!(
                    f,
                    "Late heartbeat: node {node}: interval {} ms",
                    gap.as_millis()
                )
            }
        }
    }
}

/// How a packet was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Receipt {
    /// New information about the node.
    Fresh,
    /// A copy of a packet already seen on another link: that link is up, nothing more.
    Duplicate,
}

/// Why an authenticated packet was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("node id {0:#010x} is not a configured peer")]
    UnknownNode(u32),
    #[error("generation {got} is older than {current}")]
    OldGeneration { got: u64, current: u64 },
    #[error("sequence {got} is not above {last} on this link")]
    Replay { got: u64, last: u64 },
}

/// The liveness of every peer.
#[derive(Clone, Debug)]
pub struct Membership {
    timers: Timers,
    started_ns: u64,
    peers: Vec<Peer>,
}

impl Membership {
    /// `peers`: (name, node id) of every node but this one. `ifaces`: the local heartbeat
    /// interfaces, one expected link per peer on each.
    pub fn new(timers: Timers, peers: &[(String, u32)], ifaces: &[String], now_ns: u64) -> Self {
        let peers = peers
            .iter()
            .map(|(name, id)| {
                let mut peer = Peer {
                    name: name.clone(),
                    id: *id,
                    status: NodeStatus::Unknown,
                    generation: None,
                    max_seq: 0,
                    last_heard_ns: None,
                    up_since_ns: None,
                    down_since_ns: None,
                    state: None,
                    held: 0,
                    failed: 0,
                    keepalive_us: 0,
                    links: Vec::new(),
                    counters: NodeCounters::default(),
                };
                for iface in ifaces {
                    peer.link_mut(iface);
                }
                peer
            })
            .collect();
        Self {
            timers,
            started_ns: now_ns,
            peers,
        }
    }

    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    pub fn peer(&self, id: u32) -> Option<&Peer> {
        self.peers.iter().find(|p| p.id == id)
    }

    pub fn timers(&self) -> Timers {
        self.timers
    }

    /// Replaces the timers (configuration reload); deadlines are recomputed from the
    /// recorded arrival times at the next [`Membership::check`].
    pub fn set_timers(&mut self, timers: Timers) {
        self.timers = timers;
    }

    /// Whether `initdead` is still running for some node never heard from.
    pub fn in_initdead(&self) -> bool {
        self.peers.iter().any(|p| p.status == NodeStatus::Unknown)
    }

    /// Takes one authenticated packet that arrived at `kernel_ns` on `iface`.
    pub fn receive(
        &mut self,
        kernel_ns: u64,
        iface: &str,
        packet: &Heartbeat,
        events: &mut Vec<Event>,
    ) -> Result<Receipt, Refused> {
        let warntime = nanos(self.timers.warntime);
        let peer = self
            .peers
            .iter_mut()
            .find(|p| p.id == packet.node_id())
            .ok_or(Refused::UnknownNode(packet.node_id()))?;

        let generation = packet.generation();
        let seq = packet.seq();
        match peer.generation {
            Some(current) if generation < current => {
                peer.counters.replays += 1;
                return Err(Refused::OldGeneration {
                    got: generation,
                    current,
                });
            }
            Some(current) if generation > current => {
                events.push(Event::NodeRestarted {
                    node: peer.name.clone(),
                    generation,
                });
                peer.max_seq = 0;
                for link in &mut peer.links {
                    link.last_seq = 0;
                }
            }
            _ => {}
        }

        let name = peer.name.clone();
        let link = peer.link_mut(iface);
        if peer_link_seen(link, seq) {
            link.counters.replays += 1;
            let last = link.last_seq;
            peer.counters.replays += 1;
            return Err(Refused::Replay { got: seq, last });
        }
        if link.last_seq != 0 && seq > link.last_seq + 1 {
            link.counters.lost += seq - link.last_seq - 1;
        }
        link.last_seq = seq;
        link.counters.received += 1;
        link.last_heard_ns = Some(link.last_heard_ns.map_or(kernel_ns, |t| t.max(kernel_ns)));
        if link.status != LinkStatus::Up {
            link.status = LinkStatus::Up;
            events.push(Event::LinkUp {
                node: name.clone(),
                iface: iface.to_owned(),
            });
        }

        peer.generation = Some(generation);
        if seq <= peer.max_seq {
            return Ok(Receipt::Duplicate);
        }
        if peer.max_seq != 0 && seq > peer.max_seq + 1 {
            peer.counters.lost += seq - peer.max_seq - 1;
        }
        peer.max_seq = seq;
        peer.counters.received += 1;
        if let Some(previous) = peer.last_heard_ns {
            let gap = kernel_ns.saturating_sub(previous);
            if peer.status == NodeStatus::Up {
                peer.counters.max_gap_ns = peer.counters.max_gap_ns.max(gap);
            }
            if peer.status == NodeStatus::Up && gap > warntime {
                peer.counters.late += 1;
                events.push(Event::Late {
                    node: name.clone(),
                    gap: Duration::from_nanos(gap),
                });
            }
        }
        peer.last_heard_ns = Some(peer.last_heard_ns.map_or(kernel_ns, |t| t.max(kernel_ns)));
        peer.state = NodeState::from_u8(packet.state);
        peer.held = packet.held();
        peer.keepalive_us = packet.keepalive_us();
        if packet.kind == MessageKind::Heartbeat as u8 {
            peer.failed = packet.arg();
        }

        if packet.kind == MessageKind::Leaving as u8 {
            if peer.status != NodeStatus::Left {
                peer.status = NodeStatus::Left;
                peer.down_since_ns = Some(kernel_ns);
                peer.held = 0;
                events.push(Event::NodeLeft { node: name });
            }
        } else if peer.status != NodeStatus::Up {
            peer.status = NodeStatus::Up;
            peer.up_since_ns = Some(kernel_ns);
            events.push(Event::NodeUp { node: name });
        }
        Ok(Receipt::Fresh)
    }

    /// The earliest time at which [`Membership::check`] may declare a node or link dead.
    pub fn next_deadline(&self) -> Option<u64> {
        let deadtime = nanos(self.timers.deadtime);
        let initdead = self.started_ns.saturating_add(nanos(self.timers.initdead));
        self.peers
            .iter()
            .flat_map(|peer| {
                let node = match peer.status {
                    NodeStatus::Unknown => Some(initdead),
                    NodeStatus::Up => peer.last_heard_ns.map(|t| t.saturating_add(deadtime)),
                    NodeStatus::Dead | NodeStatus::Left => None,
                };
                let links = peer.links.iter().filter_map(move |link| match link.status {
                    LinkStatus::Up => link.last_heard_ns.map(|t| t.saturating_add(deadtime)),
                    LinkStatus::Unknown if peer.status == NodeStatus::Up => {
                        Some(initdead.max(peer.up_since_ns.unwrap_or(0).saturating_add(deadtime)))
                    }
                    _ => None,
                });
                node.into_iter().chain(links)
            })
            .min()
    }

    /// Whether [`Membership::check`] at `now_ns` would declare some node dead. The caller
    /// drains pending arrivals first when it would, so a stalled agent never fails over on
    /// heartbeats that had in fact arrived.
    pub fn death_due(&self, now_ns: u64) -> bool {
        let deadtime = nanos(self.timers.deadtime);
        let initdead = self.started_ns.saturating_add(nanos(self.timers.initdead));
        self.peers.iter().any(|peer| match peer.status {
            NodeStatus::Unknown => now_ns >= initdead,
            NodeStatus::Up => peer
                .last_heard_ns
                .is_some_and(|t| now_ns >= t.saturating_add(deadtime)),
            NodeStatus::Dead | NodeStatus::Left => false,
        })
    }

    /// Declares dead what has been silent too long at `now_ns`.
    pub fn check(&mut self, now_ns: u64, events: &mut Vec<Event>) {
        let deadtime = nanos(self.timers.deadtime);
        let initdead_over = now_ns >= self.started_ns.saturating_add(nanos(self.timers.initdead));
        for peer in &mut self.peers {
            let silent_since = match peer.status {
                NodeStatus::Unknown if initdead_over => Some(self.started_ns),
                NodeStatus::Up => peer
                    .last_heard_ns
                    .filter(|t| now_ns >= t.saturating_add(deadtime)),
                _ => None,
            };
            let up_for_deadtime = peer
                .up_since_ns
                .is_some_and(|t| now_ns >= t.saturating_add(deadtime));
            for link in &mut peer.links {
                let dead = match link.status {
                    LinkStatus::Up => link
                        .last_heard_ns
                        .is_some_and(|t| now_ns >= t.saturating_add(deadtime)),
                    // A link that never came up while the node talks on another one.
                    LinkStatus::Unknown => {
                        peer.status == NodeStatus::Up && initdead_over && up_for_deadtime
                    }
                    LinkStatus::Dead => false,
                };
                if dead || (silent_since.is_some() && link.status == LinkStatus::Up) {
                    link.status = LinkStatus::Dead;
                    events.push(Event::LinkDead {
                        node: peer.name.clone(),
                        iface: link.iface.clone(),
                    });
                }
            }
            if let Some(since) = silent_since {
                peer.status = NodeStatus::Dead;
                peer.down_since_ns = Some(now_ns);
                peer.held = 0;
                peer.counters.deaths += 1;
                events.push(Event::NodeDead {
                    node: peer.name.clone(),
                    silent: Duration::from_nanos(now_ns.saturating_sub(since)),
                });
            }
        }
    }
}

fn peer_link_seen(link: &PeerLink, seq: u64) -> bool {
    link.last_seq != 0 && seq <= link.last_seq
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{build, Header};

    const MS: u64 = 1_000_000;
    const A: u32 = 0xA;
    const B: u32 = 0xB;

    fn timers() -> Timers {
        Timers {
            keepalive: Duration::from_millis(5),
            deadtime: Duration::from_millis(20),
            warntime: Duration::from_millis(10),
            initdead: Duration::from_millis(100),
        }
    }

    fn membership() -> Membership {
        Membership::new(
            timers(),
            &[("a".into(), A), ("b".into(), B)],
            &["hb0".into(), "hb1".into()],
            1_000 * MS,
        )
    }

    fn packet(node: u32, generation: u64, seq: u64, kind: MessageKind) -> Heartbeat {
        let header = Header {
            cluster_id: 1,
            node_id: node,
            generation,
            keepalive_us: 5000,
        };
        build(&header, kind, NodeState::Active, seq, 0b1, 0, 0)
    }

    fn hb(node: u32, generation: u64, seq: u64) -> Heartbeat {
        packet(node, generation, seq, MessageKind::Heartbeat)
    }

    fn receive(
        m: &mut Membership,
        at_ms: u64,
        iface: &str,
        p: Heartbeat,
    ) -> (Result<Receipt, Refused>, Vec<Event>) {
        let mut events = Vec::new();
        let r = m.receive(at_ms * MS, iface, &p, &mut events);
        (r, events)
    }

    /// Receives a packet expected to be taken (fresh or duplicate).
    fn feed(m: &mut Membership, at_ms: u64, iface: &str, p: Heartbeat) -> Vec<Event> {
        let (r, events) = receive(m, at_ms, iface, p);
        assert!(r.is_ok(), "{r:?}");
        events
    }

    fn check(m: &mut Membership, at_ms: u64) -> Vec<Event> {
        let mut events = Vec::new();
        m.check(at_ms * MS, &mut events);
        events
    }

    #[test]
    fn first_heartbeat_brings_node_and_link_up() {
        let mut m = membership();
        let (r, events) = receive(&mut m, 1_001, "hb0", hb(A, 1, 1));
        assert_eq!(r, Ok(Receipt::Fresh));
        assert_eq!(
            events,
            vec![
                Event::LinkUp {
                    node: "a".into(),
                    iface: "hb0".into()
                },
                Event::NodeUp { node: "a".into() }
            ]
        );
        let a = m.peer(A).unwrap();
        assert_eq!(a.status, NodeStatus::Up);
        assert_eq!(a.held, 0b1);
        assert_eq!(a.last_heard_ns, Some(1_001 * MS));
    }

    #[test]
    fn node_dies_after_deadtime_of_silence_measured_from_kernel_time() {
        let mut m = membership();
        feed(&mut m, 1_001, "hb0", hb(A, 1, 1));
        feed(&mut m, 1_006, "hb0", hb(A, 1, 2));
        assert!(!m.death_due(1_025 * MS));
        assert!(check(&mut m, 1_025)
            .iter()
            .all(|e| !matches!(e, Event::NodeDead { .. })));
        assert!(m.death_due(1_026 * MS));
        let events = check(&mut m, 1_026);
        assert!(events.contains(&Event::LinkDead {
            node: "a".into(),
            iface: "hb0".into()
        }));
        assert!(events.contains(&Event::NodeDead {
            node: "a".into(),
            silent: Duration::from_millis(20)
        }));
        let a = m.peer(A).unwrap();
        assert_eq!(a.status, NodeStatus::Dead);
        assert_eq!(a.held, 0, "a dead node holds nothing");
        assert_eq!(a.counters.deaths, 1);
    }

    #[test]
    fn a_stalled_agent_sees_queued_heartbeats_before_judging() {
        // The agent slept 50 ms; heartbeats kept arriving in the kernel meanwhile.
        let mut m = membership();
        feed(&mut m, 1_001, "hb0", hb(A, 1, 1));
        let now = 1_051;
        assert!(m.death_due(now * MS));
        for (i, at) in (1_006..=1_046).step_by(5).enumerate() {
            feed(&mut m, at, "hb0", hb(A, 1, 2 + i as u64));
        }
        assert!(
            !m.death_due(now * MS),
            "drained arrivals keep the node alive"
        );
        assert!(check(&mut m, now).is_empty());
    }

    #[test]
    fn one_link_dying_is_not_node_death() {
        let mut m = membership();
        feed(&mut m, 1_001, "hb0", hb(A, 1, 1));
        feed(&mut m, 1_001, "hb1", hb(A, 1, 1));
        for (i, at) in (1_006..=1_041).step_by(5).enumerate() {
            feed(&mut m, at, "hb1", hb(A, 1, 2 + i as u64));
        }
        let events = check(&mut m, 1_042);
        assert_eq!(
            events,
            vec![Event::LinkDead {
                node: "a".into(),
                iface: "hb0".into()
            }]
        );
        assert_eq!(m.peer(A).unwrap().status, NodeStatus::Up);
    }

    #[test]
    fn duplicate_on_second_link_refreshes_only_that_link() {
        let mut m = membership();
        feed(&mut m, 1_001, "hb0", hb(A, 1, 1));
        let (r, _) = receive(&mut m, 1_002, "hb1", hb(A, 1, 1));
        assert_eq!(r, Ok(Receipt::Duplicate));
        let a = m.peer(A).unwrap();
        assert_eq!(
            a.last_heard_ns,
            Some(1_001 * MS),
            "a copy does not extend node life"
        );
        assert_eq!(a.links[1].status, LinkStatus::Up);
    }

    #[test]
    fn replays_and_old_generations_are_refused() {
        let mut m = membership();
        feed(&mut m, 1_001, "hb0", hb(A, 2, 10));
        assert_eq!(
            receive(&mut m, 1_002, "hb0", hb(A, 2, 10)).0,
            Err(Refused::Replay { got: 10, last: 10 })
        );
        assert_eq!(
            receive(&mut m, 1_002, "hb0", hb(A, 2, 9)).0,
            Err(Refused::Replay { got: 9, last: 10 })
        );
        assert_eq!(
            receive(&mut m, 1_002, "hb0", hb(A, 1, 500)).0,
            Err(Refused::OldGeneration { got: 1, current: 2 })
        );
        assert_eq!(m.peer(A).unwrap().counters.replays, 3);
        assert_eq!(m.peer(A).unwrap().last_heard_ns, Some(1_001 * MS));
    }

    #[test]
    fn a_replayed_copy_cannot_keep_a_dead_node_alive() {
        let mut m = membership();
        feed(&mut m, 1_001, "hb0", hb(A, 1, 1));
        feed(&mut m, 1_006, "hb0", hb(A, 1, 2));
        check(&mut m, 1_030);
        assert_eq!(m.peer(A).unwrap().status, NodeStatus::Dead);
        // An attacker withheld seq 2 on hb1 and plays it now.
        let (r, _) = receive(&mut m, 1_031, "hb1", hb(A, 1, 2));
        assert_eq!(r, Ok(Receipt::Duplicate));
        assert_eq!(m.peer(A).unwrap().status, NodeStatus::Dead);
    }

    #[test]
    fn restart_is_recognised_by_generation() {
        let mut m = membership();
        feed(&mut m, 1_001, "hb0", hb(A, 1, 100));
        let (r, events) = receive(&mut m, 1_003, "hb0", hb(A, 2, 1));
        assert_eq!(r, Ok(Receipt::Fresh));
        assert_eq!(
            events,
            vec![Event::NodeRestarted {
                node: "a".into(),
                generation: 2
            }]
        );
    }

    #[test]
    fn sequence_gaps_count_as_lost_per_node_and_link() {
        let mut m = membership();
        feed(&mut m, 1_001, "hb0", hb(A, 1, 1));
        feed(&mut m, 1_002, "hb0", hb(A, 1, 4));
        let a = m.peer(A).unwrap();
        assert_eq!(a.counters.lost, 2);
        assert_eq!(a.links[0].counters.lost, 2);
    }

    #[test]
    fn late_heartbeat_is_reported_after_warntime() {
        let mut m = membership();
        feed(&mut m, 1_001, "hb0", hb(A, 1, 1));
        let (_, events) = receive(&mut m, 1_013, "hb0", hb(A, 1, 2));
        assert_eq!(
            events,
            vec![Event::Late {
                node: "a".into(),
                gap: Duration::from_millis(12)
            }]
        );
        assert_eq!(m.peer(A).unwrap().counters.late, 1);
        feed(&mut m, 1_015, "hb0", hb(A, 1, 3));
        assert_eq!(m.peer(A).unwrap().counters.max_gap_ns, 12_000_000);
    }

    #[test]
    fn initdead_covers_nodes_never_heard() {
        let mut m = membership();
        feed(&mut m, 1_001, "hb0", hb(A, 1, 1));
        assert!(m.in_initdead());
        assert_eq!(m.peer(B).unwrap().status, NodeStatus::Unknown);
        // Keep a alive so only b's initdead matters.
        for (i, at) in (1_005..=1_100).step_by(5).enumerate() {
            feed(&mut m, at, "hb0", hb(A, 1, 2 + i as u64));
            feed(&mut m, at, "hb1", hb(A, 1, 2 + i as u64));
        }
        assert!(check(&mut m, 1_099).is_empty());
        let events = check(&mut m, 1_100);
        assert_eq!(
            events,
            vec![Event::NodeDead {
                node: "b".into(),
                silent: Duration::from_millis(100)
            }]
        );
        assert!(!m.in_initdead());
    }

    #[test]
    fn leaving_marks_node_left_at_once() {
        let mut m = membership();
        feed(&mut m, 1_001, "hb0", hb(A, 1, 1));
        let (_, events) = receive(&mut m, 1_002, "hb0", packet(A, 1, 2, MessageKind::Leaving));
        assert_eq!(events, vec![Event::NodeLeft { node: "a".into() }]);
        assert_eq!(m.peer(A).unwrap().status, NodeStatus::Left);
        assert_eq!(m.peer(A).unwrap().held, 0);
        let later = check(&mut m, 5_000);
        assert!(
            !later
                .iter()
                .any(|e| matches!(e, Event::NodeDead { node, .. } if node == "a")),
            "a node that left is not declared dead again: {later:?}"
        );
        // It comes back with a new generation.
        let (_, events) = receive(&mut m, 1_500, "hb0", hb(A, 2, 1));
        assert!(events.contains(&Event::NodeUp { node: "a".into() }));
    }

    #[test]
    fn unknown_node_is_refused() {
        let mut m = membership();
        assert_eq!(
            receive(&mut m, 1_001, "hb0", hb(0xC, 1, 1)).0,
            Err(Refused::UnknownNode(0xC))
        );
    }

    #[test]
    fn link_never_heard_is_reported_dead_once_node_is_up() {
        let mut m = membership();
        feed(&mut m, 1_001, "hb0", hb(A, 1, 1));
        let mut dead = Vec::new();
        for (seq, at) in (2..).zip((1_005..=1_130).step_by(5)) {
            feed(&mut m, at, "hb0", hb(A, 1, seq));
            dead.extend(
                check(&mut m, at)
                    .into_iter()
                    .filter(|e| matches!(e, Event::LinkDead { node, .. } if node == "a")),
            );
        }
        assert_eq!(
            dead,
            vec![Event::LinkDead {
                node: "a".into(),
                iface: "hb1".into()
            }]
        );
    }

    #[test]
    fn next_deadline_is_the_earliest_expiry() {
        let mut m = membership();
        assert_eq!(m.next_deadline(), Some(1_100 * MS));
        feed(&mut m, 1_001, "hb0", hb(A, 1, 1));
        feed(&mut m, 1_001, "hb0", hb(B, 1, 1));
        assert_eq!(m.next_deadline(), Some(1_021 * MS));
    }
}
