//! Who should hold each resource group, and what this node must do about it: Heartbeat R1
//! semantics as a pure function of the cluster view.
//!
//! Every node runs the same rules on the same advertised facts (who is alive, who holds
//! what, who is in standby or failed a group), so the nodes agree on one holder per group
//! without a vote:
//!
//! 1. Candidates are the live nodes that are not leaving and have not failed to start the
//!    group; nodes in standby are used only when no other candidate is left.
//! 2. The group's preferred node wins if it is a candidate and either nobody holds the
//!    group, it holds it already, or `auto_failback` is on (or `legacy`) and it has been up
//!    for `failback_delay`.
//! 3. Otherwise the current holder keeps it; if several hold it (a healed partition), the
//!    preferred node if it is one of them, else the first in `node` order.
//! 4. Otherwise the preferred node, else the first candidate in `node` order.
//!
//! This node acquires only when it is the chosen holder *and* no other live node still
//! advertises the group: failback and takeover are a handshake (holder releases, then the
//! new holder acquires), never both at once.

use std::time::Duration;

use crate::clock::nanos;
use crate::config::AutoFailback;

/// How long a group that failed to start here stays off this node when no other node can
/// take it, before this node tries again.
pub const FAILED_RETRY_AFTER: Duration = Duration::from_secs(30);

/// This node's progress with one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Released,
    Acquiring,
    Held,
    Releasing,
}

impl Phase {
    /// Whether the group's resources may be (partly) present here. Advertised as "held"
    /// so no peer acquires until the release is complete.
    pub fn occupies(self) -> bool {
        self != Phase::Released
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRule {
    pub name: String,
    /// Node id of the group's preferred node.
    pub preferred: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    pub local: u32,
    /// Every node id in `node` order (tie-breaks follow it).
    pub nodes: Vec<u32>,
    pub groups: Vec<GroupRule>,
    pub auto_failback: AutoFailback,
    pub failback_delay: Duration,
}

/// What this node knows about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalView {
    pub standby: bool,
    pub leaving: bool,
    /// Peers not yet heard from within `initdead`: acquiring now could double a holder.
    pub in_initdead: bool,
    /// Per group, in `Rules::groups` order.
    pub phases: Vec<Phase>,
    /// Per group: when a start of it last failed here.
    pub failed_at_ns: Vec<Option<u64>>,
}

impl LocalView {
    pub fn held_mask(&self) -> u64 {
        mask(self.phases.iter().map(|p| p.occupies()))
    }
    pub fn failed_mask(&self) -> u64 {
        mask(self.failed_at_ns.iter().map(Option::is_some))
    }
}

fn mask(bits: impl Iterator<Item = bool>) -> u64 {
    bits.enumerate()
        .filter(|(i, b)| *b && *i < 64)
        .fold(0, |m, (i, _)| m | 1 << i)
}

/// What a live peer advertises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerView {
    pub id: u32,
    /// Still in its own start-up (`initdead`): not ready to take a group over yet.
    pub starting: bool,
    pub standby: bool,
    pub leaving: bool,
    pub held: u64,
    pub failed: u64,
    pub up_since_ns: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Acquire(usize),
    Release(usize),
    /// A split brain on this group ended with this node keeping it: announce the
    /// addresses again, the peer's ARP may have won the switch meanwhile.
    Reannounce {
        group: usize,
        split_for: Duration,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub actions: Vec<Action>,
    /// Chosen holder of each group (None: nobody can hold it now).
    pub holders: Vec<Option<u32>>,
    /// Groups held here and by a peer at once, just seen (for the log).
    pub split_brains: Vec<usize>,
    /// When to decide again even if nothing arrives (a failback delay or retry expiring).
    pub wake_at_ns: Option<u64>,
}

/// The policy with the little memory it needs: when each split brain began.
#[derive(Clone, Debug)]
pub struct Policy {
    rules: Rules,
    contested_since_ns: Vec<Option<u64>>,
}

struct Candidate {
    id: u32,
    starting: bool,
    standby: bool,
    holds: bool,
    up_since_ns: u64,
}

impl Policy {
    pub fn new(rules: Rules) -> Self {
        let groups = rules.groups.len();
        Self {
            rules,
            contested_since_ns: vec![None; groups],
        }
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// A reload. Groups keep their split-brain memory by position.
    pub fn set_rules(&mut self, rules: Rules) {
        self.contested_since_ns.resize(rules.groups.len(), None);
        self.rules = rules;
    }

    /// Decides for every group. `peers` lists the live peers only.
    pub fn decide(&mut self, local: &LocalView, peers: &[PeerView], now_ns: u64) -> Decision {
        let mut decision = Decision::default();
        for (group, rule) in self.rules.groups.iter().enumerate() {
            let bit = 1u64 << group;
            let phase = local.phases.get(group).copied().unwrap_or(Phase::Released);
            let (holder, wake) = self.choose(group, rule, local, peers, now_ns);
            decision.holders.push(holder);
            if let Some(wake) = wake {
                decision.wake_at_ns = Some(decision.wake_at_ns.map_or(wake, |w: u64| w.min(wake)));
            }

            let peer_holds = peers.iter().any(|p| p.held & bit != 0);
            match (holder == Some(self.rules.local), phase) {
                (true, Phase::Released) if !peer_holds && !local.in_initdead => {
                    decision.actions.push(Action::Acquire(group));
                }
                (false, Phase::Held) => decision.actions.push(Action::Release(group)),
                _ => {}
            }

            // Split brain: held here and advertised by a peer.
            let contested = phase == Phase::Held && peer_holds;
            match (contested, self.contested_since_ns[group]) {
                (true, None) => {
                    self.contested_since_ns[group] = Some(now_ns);
                    decision.split_brains.push(group);
                }
                (false, Some(since)) => {
                    self.contested_since_ns[group] = None;
                    if phase == Phase::Held {
                        decision.actions.push(Action::Reannounce {
                            group,
                            split_for: Duration::from_nanos(now_ns.saturating_sub(since)),
                        });
                    }
                }
                _ => {}
            }
        }
        decision
    }

    fn choose(
        &self,
        group: usize,
        rule: &GroupRule,
        local: &LocalView,
        peers: &[PeerView],
        now_ns: u64,
    ) -> (Option<u32>, Option<u64>) {
        let bit = 1u64 << group;
        let local_failed_at = local.failed_at_ns.get(group).copied().flatten();
        let local_phase = local.phases.get(group).copied().unwrap_or(Phase::Released);
        let me = Candidate {
            id: self.rules.local,
            starting: local.in_initdead,
            standby: local.standby,
            holds: local_phase.occupies(),
            up_since_ns: 0,
        };
        let mut all: Vec<Candidate> = peers
            .iter()
            .filter(|p| !p.leaving)
            .map(|p| Candidate {
                id: p.id,
                starting: p.starting,
                standby: p.standby,
                holds: p.held & bit != 0,
                up_since_ns: p.up_since_ns,
            })
            .collect();
        let someone_holds = me.holds || all.iter().any(|c| c.holds);
        all.retain(|c| peers.iter().any(|p| p.id == c.id && p.failed & bit == 0));

        let mut wake = None;
        if !local.leaving {
            match local_failed_at {
                None => all.push(me),
                Some(failed_at) => {
                    let retry_at = failed_at.saturating_add(nanos(FAILED_RETRY_AFTER));
                    if all.is_empty() && now_ns >= retry_at {
                        all.push(me);
                    } else if all.is_empty() {
                        wake = Some(retry_at);
                    }
                }
            }
        }
        if all.iter().any(|c| !c.standby) {
            all.retain(|c| !c.standby);
        }
        let order = |id: u32| {
            self.rules
                .nodes
                .iter()
                .position(|n| *n == id)
                .unwrap_or(usize::MAX)
        };
        all.sort_by_key(|c| order(c.id));

        let preferred = all.iter().find(|c| c.id == rule.preferred);
        let holders: Vec<&Candidate> = all.iter().filter(|c| c.holds).collect();
        if let Some(preferred) = preferred {
            if !someone_holds || preferred.holds {
                return (Some(preferred.id), wake);
            }
            // Failback waits until the returning node is up and running, not merely heard:
            // releasing to a node still starting would leave the group nowhere meanwhile.
            if self.rules.auto_failback != AutoFailback::Off && !preferred.starting {
                let due = preferred
                    .up_since_ns
                    .saturating_add(nanos(self.rules.failback_delay));
                if now_ns >= due || holders.is_empty() {
                    return (Some(preferred.id), wake);
                }
                wake = Some(due);
            }
        }
        if let Some(keeper) = holders
            .iter()
            .find(|c| c.id == rule.preferred)
            .or(holders.first())
        {
            return (Some(keeper.id), wake);
        }
        (preferred.or(all.first()).map(|c| c.id), wake)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u32 = 1; // preferred node of group 0
    const S: u32 = 2; // the other node
    const MS: u64 = 1_000_000;

    fn rules(local: u32, auto_failback: AutoFailback) -> Rules {
        Rules {
            local,
            nodes: vec![P, S],
            groups: vec![GroupRule {
                name: "198.18.1.100".into(),
                preferred: P,
            }],
            auto_failback,
            failback_delay: Duration::ZERO,
        }
    }

    fn local(phase: Phase) -> LocalView {
        LocalView {
            standby: false,
            leaving: false,
            in_initdead: false,
            phases: vec![phase],
            failed_at_ns: vec![None],
        }
    }

    fn peer(id: u32, held: u64) -> PeerView {
        PeerView {
            id,
            starting: false,
            standby: false,
            leaving: false,
            held,
            failed: 0,
            up_since_ns: 0,
        }
    }

    fn decide(rules: Rules, local: &LocalView, peers: &[PeerView]) -> Decision {
        Policy::new(rules).decide(local, peers, 1_000 * MS)
    }

    #[test]
    fn preferred_node_acquires_when_both_start() {
        let d = decide(
            rules(P, AutoFailback::On),
            &local(Phase::Released),
            &[peer(S, 0)],
        );
        assert_eq!(d.actions, vec![Action::Acquire(0)]);
        let d = decide(
            rules(S, AutoFailback::On),
            &local(Phase::Released),
            &[peer(P, 0)],
        );
        assert_eq!(d.actions, vec![]);
        assert_eq!(d.holders, vec![Some(P)]);
    }

    #[test]
    fn survivor_takes_over_a_dead_nodes_group() {
        let d = decide(rules(S, AutoFailback::On), &local(Phase::Released), &[]);
        assert_eq!(d.actions, vec![Action::Acquire(0)]);
    }

    #[test]
    fn nothing_is_acquired_during_initdead() {
        let mut view = local(Phase::Released);
        view.in_initdead = true;
        let d = decide(rules(P, AutoFailback::On), &view, &[]);
        assert_eq!(d.actions, vec![]);
    }

    #[test]
    fn failback_on_is_a_handshake() {
        // The survivor holds; the preferred node returns.
        let d = decide(
            rules(S, AutoFailback::On),
            &local(Phase::Held),
            &[peer(P, 0)],
        );
        assert_eq!(d.actions, vec![Action::Release(0)]);
        // The preferred node waits while the survivor still advertises the group...
        let d = decide(
            rules(P, AutoFailback::On),
            &local(Phase::Released),
            &[peer(S, 1)],
        );
        assert_eq!(d.actions, vec![]);
        assert_eq!(d.holders, vec![Some(P)]);
        // ...and acquires once the release is done.
        let d = decide(
            rules(P, AutoFailback::On),
            &local(Phase::Released),
            &[peer(S, 0)],
        );
        assert_eq!(d.actions, vec![Action::Acquire(0)]);
    }

    #[test]
    fn failback_waits_until_the_returning_node_has_started() {
        let starting = PeerView {
            starting: true,
            ..peer(P, 0)
        };
        let d = decide(rules(S, AutoFailback::On), &local(Phase::Held), &[starting]);
        assert_eq!(d.actions, vec![]);
        assert_eq!(d.holders, vec![Some(S)]);
        // At a cold start of both nodes, a starting preferred node still wins a free group.
        let d = decide(
            rules(S, AutoFailback::On),
            &local(Phase::Released),
            &[starting],
        );
        assert_eq!(d.holders, vec![Some(P)]);
    }

    #[test]
    fn legacy_fails_back_like_on() {
        let d = decide(
            rules(S, AutoFailback::Legacy),
            &local(Phase::Held),
            &[peer(P, 0)],
        );
        assert_eq!(d.actions, vec![Action::Release(0)]);
    }

    #[test]
    fn failback_off_keeps_resources_where_they_are() {
        let d = decide(
            rules(S, AutoFailback::Off),
            &local(Phase::Held),
            &[peer(P, 0)],
        );
        assert_eq!(d.actions, vec![]);
        assert_eq!(d.holders, vec![Some(S)]);
        let d = decide(
            rules(P, AutoFailback::Off),
            &local(Phase::Released),
            &[peer(S, 1)],
        );
        assert_eq!(d.actions, vec![]);
    }

    #[test]
    fn failback_delay_holds_down_a_flapping_node() {
        let mut r = rules(S, AutoFailback::On);
        r.failback_delay = Duration::from_millis(500);
        let mut policy = Policy::new(r);
        let returned = PeerView {
            up_since_ns: 900 * MS,
            ..peer(P, 0)
        };
        let d = policy.decide(&local(Phase::Held), &[returned], 1_000 * MS);
        assert_eq!(d.actions, vec![]);
        assert_eq!(d.wake_at_ns, Some(1_400 * MS));
        let d = policy.decide(&local(Phase::Held), &[returned], 1_400 * MS);
        assert_eq!(d.actions, vec![Action::Release(0)]);
    }

    #[test]
    fn healed_partition_leaves_exactly_one_holder() {
        for auto_failback in [AutoFailback::On, AutoFailback::Off, AutoFailback::Legacy] {
            let on_p = decide(rules(P, auto_failback), &local(Phase::Held), &[peer(S, 1)]);
            let on_s = decide(rules(S, auto_failback), &local(Phase::Held), &[peer(P, 1)]);
            assert_eq!(on_p.holders, vec![Some(P)], "{auto_failback:?}");
            assert_eq!(on_s.holders, vec![Some(P)], "{auto_failback:?}");
            assert_eq!(on_p.actions, vec![], "{auto_failback:?}");
            assert_eq!(on_s.actions, vec![Action::Release(0)], "{auto_failback:?}");
            assert_eq!(on_p.split_brains, vec![0]);
        }
    }

    #[test]
    fn partition_tie_break_without_preferred_follows_node_order() {
        let mut r = rules(S, AutoFailback::Off);
        r.nodes = vec![P, S, 3];
        r.groups[0].preferred = P;
        // P is gone; S and node 3 both hold after a partition.
        let d = Policy::new(r.clone()).decide(&local(Phase::Held), &[peer(3, 1)], 0);
        assert_eq!(d.holders, vec![Some(S)]);
        let mut r3 = r;
        r3.local = 3;
        let d = Policy::new(r3).decide(&local(Phase::Held), &[peer(S, 1)], 0);
        assert_eq!(d.actions, vec![Action::Release(0)]);
    }

    #[test]
    fn keeper_reannounces_when_split_brain_ends() {
        let mut policy = Policy::new(rules(P, AutoFailback::On));
        let d = policy.decide(&local(Phase::Held), &[peer(S, 1)], 1_000 * MS);
        assert_eq!(d.split_brains, vec![0]);
        let d = policy.decide(&local(Phase::Held), &[peer(S, 1)], 1_010 * MS);
        assert!(d.split_brains.is_empty(), "reported once");
        let d = policy.decide(&local(Phase::Held), &[peer(S, 0)], 1_030 * MS);
        assert_eq!(
            d.actions,
            vec![Action::Reannounce {
                group: 0,
                split_for: Duration::from_millis(30)
            }]
        );
    }

    #[test]
    fn standby_hands_over_and_takes_back_only_when_alone() {
        let mut view = local(Phase::Held);
        view.standby = true;
        let d = decide(rules(P, AutoFailback::On), &view, &[peer(S, 0)]);
        assert_eq!(d.actions, vec![Action::Release(0)]);
        let standby_peer = PeerView {
            standby: true,
            ..peer(P, 0)
        };
        let d = decide(
            rules(S, AutoFailback::On),
            &local(Phase::Released),
            &[standby_peer],
        );
        assert_eq!(d.actions, vec![Action::Acquire(0)]);
        // A standby node alone in the cluster still serves.
        let mut alone = local(Phase::Released);
        alone.standby = true;
        let d = decide(rules(P, AutoFailback::On), &alone, &[]);
        assert_eq!(d.actions, vec![Action::Acquire(0)]);
    }

    #[test]
    fn leaving_releases_everything_and_peer_takes_over() {
        let mut view = local(Phase::Held);
        view.leaving = true;
        let d = decide(rules(P, AutoFailback::On), &view, &[peer(S, 0)]);
        assert_eq!(d.actions, vec![Action::Release(0)]);
        let leaving_peer = PeerView {
            leaving: true,
            ..peer(P, 0)
        };
        let d = decide(
            rules(S, AutoFailback::On),
            &local(Phase::Released),
            &[leaving_peer],
        );
        assert_eq!(d.actions, vec![Action::Acquire(0)]);
    }

    #[test]
    fn a_group_that_failed_here_goes_to_the_peer() {
        let mut view = local(Phase::Released);
        view.failed_at_ns = vec![Some(990 * MS)];
        let d = decide(rules(P, AutoFailback::On), &view, &[peer(S, 0)]);
        assert_eq!(d.holders, vec![Some(S)]);
        let failed_peer = PeerView {
            failed: 1,
            ..peer(P, 0)
        };
        let d = decide(
            rules(S, AutoFailback::On),
            &local(Phase::Released),
            &[failed_peer],
        );
        assert_eq!(d.actions, vec![Action::Acquire(0)]);
    }

    #[test]
    fn a_failed_group_is_retried_later_when_nobody_else_can_run_it() {
        let mut view = local(Phase::Released);
        view.failed_at_ns = vec![Some(1_000 * MS)];
        let mut policy = Policy::new(rules(P, AutoFailback::On));
        let d = policy.decide(&view, &[], 1_000 * MS);
        assert_eq!(d.actions, vec![]);
        let retry = 1_000 * MS + nanos(FAILED_RETRY_AFTER);
        assert_eq!(d.wake_at_ns, Some(retry));
        let d = policy.decide(&view, &[], retry);
        assert_eq!(d.actions, vec![Action::Acquire(0)]);
    }

    #[test]
    fn acquiring_finishes_before_a_release() {
        let d = decide(
            rules(S, AutoFailback::On),
            &local(Phase::Acquiring),
            &[peer(P, 0)],
        );
        assert_eq!(d.actions, vec![]);
    }

    #[test]
    fn masks() {
        let view = LocalView {
            standby: false,
            leaving: false,
            in_initdead: false,
            phases: vec![Phase::Held, Phase::Released, Phase::Releasing],
            failed_at_ns: vec![None, Some(1), None],
        };
        assert_eq!(view.held_mask(), 0b101);
        assert_eq!(view.failed_mask(), 0b010);
    }
}
