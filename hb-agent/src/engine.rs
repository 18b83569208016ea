//! The decision loop: the one task that owns the cluster state.
//!
//! It reads heartbeats straight from the receive path (XDP ring buffer or sockets),
//! authenticates them, feeds [`Membership`], asks [`Policy`] what this node must do, and
//! hands the resulting jobs to the executor. Everything else talks to it through messages:
//! the executor reports finished jobs, the control socket asks for status or a
//! standby/takeover, the signal handler asks it to leave.
//!
//! It runs on its own thread (SCHED_FIFO with `realtime on`) so that acting on a death
//! cannot be starved by the rest of the agent, and before it declares any node dead it
//! drains the receive path and looks again: heartbeats that reached the kernel while the
//! agent was stalled count.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hb_common::maps::Counter;
use hb_common::wire::{MessageKind, NodeState, BROADCAST_NODE};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

use crate::arrival::Arrival;
use crate::clock::{monotonic_ns, nanos};
use crate::config::{reload, Config, HostView, SystemHost};
use crate::control::{
    CountersStatus, GroupStatus, LinkStatusReport, NodeReport, Request, Response, Status,
};
use crate::executor::{Job, JobDone, JobKind, Report};
use crate::inbound::Inbound;
use crate::membership::{Event, Membership, NodeStatus, Receipt};
use crate::metrics::{FailoverStats, MetricsFeed};
use crate::notify::{Notifier, NotifyError, WatchdogPacer};
use crate::policy::{Action, LocalView, PeerView, Phase, Policy};
use crate::stats::{LatencySamples, StallMeter};
use crate::transport::{Advert, SenderThread, Transmitter};
use crate::wire::Authenticator;

/// How many times the final "leaving" message is sent: it is the one packet whose loss
/// would make a clean stop look like a death (the peer would wait for deadtime).
const LEAVING_REPEATS: usize = 3;

/// Pause after an unexpected receive-path error.
const RX_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// After leaving, the longest wait for a peer to advertise the groups this node released
/// before the receive path is torn down (see [`Engine::watch_handover`]).
const HANDOVER_WATCH_LIMIT: Duration = Duration::from_secs(2);

/// Messages to the decision loop.
#[derive(Debug)]
pub enum Command {
    Control(Request, oneshot::Sender<Response>),
    /// Clean shutdown: release everything, tell the peers, stop.
    Leave,
    /// SIGHUP.
    Reload,
}

/// Counters the loop keeps beyond membership's.
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    auth_failures: u64,
    replays: u64,
}

/// What ended one wait of the decision loop.
enum Wake {
    Readable(std::io::Result<()>),
    Report(Report),
    Command(Command),
    Deadline,
}

pub struct Engine {
    config: Arc<Config>,
    local_id: u32,
    generation: u64,
    auth: Authenticator,
    membership: Membership,
    policy: Policy,
    local: LocalView,
    inbound: Inbound,
    ifnames: HashMap<u32, String>,
    transmitter: Arc<Transmitter>,
    sender: Option<SenderThread>,
    jobs: mpsc::UnboundedSender<Job>,
    done: mpsc::UnboundedReceiver<Report>,
    commands: mpsc::Receiver<Command>,
    peers_down: watch::Sender<bool>,
    counters: Counters,
    delays: LatencySamples,
    stalls: StallMeter,
    wake_at_ns: Option<u64>,
    started_ns: u64,
    arrivals: Vec<Arrival>,
    notifier: Option<Notifier>,
    watchdog: Option<WatchdogPacer>,
    metrics: Option<MetricsFeed>,
    failovers: FailoverStats,
    /// Per group: the dead holder's silence and when it was declared dead, until the
    /// group is acquired here (a failover) or seen held by another live peer.
    pending_failovers: Vec<Option<(Duration, u64)>>,
    /// The groups this node held when it began leaving: the peers' to take over.
    held_when_leaving: u64,
}

/// What the engine is built from; the daemon assembles it.
pub struct EngineParts {
    pub config: Arc<Config>,
    pub generation: u64,
    pub auth: Authenticator,
    /// Interface index → name, for the heartbeat interfaces.
    pub ifnames: HashMap<u32, String>,
    pub transmitter: Arc<Transmitter>,
    /// Stopped before the final "leaving" so no heartbeat can follow it.
    pub sender: Option<SenderThread>,
    pub jobs: mpsc::UnboundedSender<Job>,
    pub done: mpsc::UnboundedReceiver<Report>,
    pub commands: mpsc::Receiver<Command>,
    /// Whether some peer is not up: the daemon then keeps the heartbeat paths' neighbour
    /// entries fresh so the peer is heard the moment it is reachable again.
    pub peers_down: watch::Sender<bool>,
    /// systemd's notification socket, when started as a notify service.
    pub notifier: Option<Notifier>,
    /// Where metrics snapshots go, when `metrics` is configured.
    pub metrics: Option<MetricsFeed>,
}

impl Engine {
    /// `inbound` is opened on the decision thread: its readiness registers with that
    /// thread's runtime.
    pub fn new(parts: EngineParts, inbound: Inbound) -> Self {
        let config = parts.config;
        let now = monotonic_ns();
        let local_id = hb_common::wire::node_id(config.local_node.as_bytes());
        let peers: Vec<(String, u32)> = config
            .nodes
            .iter()
            .filter(|n| n.name != config.local_node)
            .map(|n| (n.name.clone(), n.id))
            .collect();
        let mut ifaces: Vec<String> = parts.ifnames.values().cloned().collect();
        ifaces.sort();
        let membership = Membership::new(config.timers, &peers, &ifaces, now);
        let policy = Policy::new(crate::daemon::policy_rules(&config));
        let groups = config.groups.len();
        Self {
            local_id,
            generation: parts.generation,
            auth: parts.auth,
            membership,
            policy,
            local: LocalView {
                standby: false,
                leaving: false,
                in_initdead: !peers.is_empty(),
                phases: vec![Phase::Released; groups],
                failed_at_ns: vec![None; groups],
            },
            inbound,
            ifnames: parts.ifnames,
            transmitter: parts.transmitter,
            sender: parts.sender,
            jobs: parts.jobs,
            done: parts.done,
            commands: parts.commands,
            peers_down: parts.peers_down,
            counters: Counters::default(),
            delays: LatencySamples::new(4096),
            stalls: StallMeter::default(),
            wake_at_ns: None,
            started_ns: now,
            arrivals: Vec::with_capacity(256),
            watchdog: parts.notifier.as_ref().and_then(|n| n.watchdog_pacer(now)),
            notifier: parts.notifier,
            metrics: parts.metrics,
            failovers: FailoverStats::default(),
            pending_failovers: vec![None; groups],
            held_when_leaving: 0,
            config,
        }
    }

    /// Runs until the node has left the cluster, and gives back the receive path for its
    /// clean shutdown. `ready` is called once the loop is receiving (systemd's READY=1).
    pub async fn run(mut self, ready: impl FnOnce()) -> Inbound {
        info!(
            node = %self.config.local_node,
            generation = self.generation,
            rx = ?self.inbound.path(),
            "decision loop started; waiting up to {} ms (initdead) for peers",
            self.config.timers.initdead.as_millis()
        );
        ready();
        self.notify("READY=1", Notifier::ready);
        self.decide(monotonic_ns());
        loop {
            let deadline_ns = self.next_wakeup();
            let slept_at_ns = monotonic_ns();
            let sleep_for = Duration::from_nanos(deadline_ns.saturating_sub(slept_at_ns));
            let woken_by = tokio::select! {
                biased;
                readable = self.inbound.readable() => Wake::Readable(readable),
                Some(report) = self.done.recv() => Wake::Report(report),
                Some(command) = self.commands.recv() => Wake::Command(command),
                _ = tokio::time::sleep(sleep_for) => Wake::Deadline,
            };
            // Late is late whatever woke the loop: after a pause of the whole machine the
            // receive path and the timer are ready together, and the receive path wins.
            self.stalls
                .record_wake(slept_at_ns, deadline_ns, monotonic_ns());
            match woken_by {
                Wake::Readable(Err(e)) => {
                    // Not expected from a ring buffer or sockets; back off so a broken path
                    // cannot spin the loop or flood the log.
                    error!("heartbeat receive path failed (retrying in 100 ms): {e}");
                    tokio::time::sleep(RX_ERROR_BACKOFF).await;
                }
                Wake::Readable(Ok(())) | Wake::Deadline => {}
                Wake::Report(Report::Done(done)) => self.job_done(done),
                Wake::Report(Report::ServiceFailed { group, reason }) => {
                    self.service_failed(group, &reason)
                }
                Wake::Command(command) => self.command(command),
            }
            self.drain();
            let now = self.settle();
            self.decide(now);
            self.feed_watchdog_and_metrics(now);
            if self.local.leaving && self.local.phases.iter().all(|p| *p == Phase::Released) {
                break;
            }
        }
        self.leave();
        self.watch_handover().await;
        self.inbound
    }

    /// After leaving: waits until the live peers have advertised every group this node held
    /// when it began leaving for two more keepalives (a peer advertises a group from the
    /// moment it starts acquiring it), at most [`HANDOVER_WATCH_LIMIT`] or twice the
    /// deadtime. Only then is the receive path torn down: detaching XDP holds the kernel's
    /// RTNL lock for milliseconds, and the peer's address add needs that same lock, so a
    /// teardown at once would lengthen the very takeover this node asked for.
    async fn watch_handover(&mut self) {
        let groups = self.held_when_leaving;
        let limit = HANDOVER_WATCH_LIMIT.min(self.config.timers.deadtime * 2);
        let mut deadline = tokio::time::Instant::now() + limit;
        let mut advertised = false;
        loop {
            let live: Vec<u64> = self
                .membership
                .peers()
                .iter()
                .filter(|p| p.status == NodeStatus::Up)
                .map(|p| p.held)
                .collect();
            if live.is_empty() {
                return;
            }
            if !advertised && live.iter().fold(0, |acc, held| acc | held) & groups == groups {
                advertised = true;
                deadline =
                    deadline.min(tokio::time::Instant::now() + self.config.timers.keepalive * 2);
            }
            tokio::select! {
                readable = self.inbound.readable() => {
                    if readable.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if !advertised {
                        debug!("peers did not advertise every group within {} ms of leaving", limit.as_millis());
                    }
                    return;
                }
            }
            self.drain();
        }
    }

    /// The next time the loop must look at the clock even if nothing wakes it: a node or
    /// link deadline, a policy timer, the watchdog, a metrics snapshot, and at least every
    /// deadtime (to measure stalls, and to read routine heartbeats of peers that are not up,
    /// which the XDP program leaves in the ring).
    ///
    /// Not every keepalive: the receive path wakes the loop for every heartbeat that carries
    /// news, and routine ones only need reading before a deadline is judged (see
    /// [`Self::settle`]), so an idle cluster costs a wake-up per deadline, not per packet.
    fn next_wakeup(&self) -> u64 {
        let now = monotonic_ns();
        let deadtime = nanos(self.config.timers.deadtime);
        [
            self.membership.next_deadline(),
            self.wake_at_ns,
            Some(now.saturating_add(deadtime)),
            self.watchdog.map(|w| w.next_due_ns()),
            self.metrics.as_ref().map(MetricsFeed::next_due_ns),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now)
    }

    /// Applies deadlines. When a node is about to be declared dead, drains the receive path
    /// once more and re-reads the clock first.
    fn settle(&mut self) -> u64 {
        let mut now = monotonic_ns();
        let mut held_before = Vec::new();
        if self.membership.death_due(now) {
            self.drain();
            now = monotonic_ns();
            held_before = self
                .membership
                .peers()
                .iter()
                .map(|p| (p.name.clone(), p.held))
                .collect();
        }
        let mut events = Vec::new();
        self.membership.check(now, &mut events);
        for event in &events {
            if let Event::NodeDead { node, silent } = event {
                let held = held_before
                    .iter()
                    .find(|(name, _)| name == node)
                    .map_or(0, |(_, held)| *held);
                for (group, pending) in self.pending_failovers.iter_mut().enumerate().take(64) {
                    if held & (1 << group) != 0 {
                        *pending = Some((*silent, now));
                    }
                }
            }
        }
        self.log_events(&events);
        self.local.in_initdead = self.membership.in_initdead();
        let down = self
            .membership
            .peers()
            .iter()
            .any(|p| p.status != NodeStatus::Up);
        self.peers_down
            .send_if_modified(|current| std::mem::replace(current, down) != down);
        now
    }

    fn drain(&mut self) {
        let mut arrivals = std::mem::take(&mut self.arrivals);
        arrivals.clear();
        self.inbound.drain(&mut arrivals);
        let now = monotonic_ns();
        for arrival in &arrivals {
            // Only what woke the loop measures it: not routine repeats (read at the next
            // wake-up by design), nor what queued before the loop existed (start-up).
            if arrival.woke_agent && arrival.kernel_ns >= self.started_ns {
                self.delays.record(now.saturating_sub(arrival.kernel_ns));
            }
            self.receive(arrival);
        }
        self.arrivals = arrivals;
    }

    fn receive(&mut self, arrival: &Arrival) {
        // Both receive paths drop this node's own packets and unknown nodes' before they
        // get here (counted as `drop_unknown_peer` or own packets).
        let packet = &arrival.packet;
        if let Err(e) = self.auth.verify(packet) {
            self.counters.auth_failures += 1;
            debug!(source = %arrival.source, "dropped heartbeat: {e}");
            return;
        }
        let unnamed;
        let iface = match self.ifnames.get(&arrival.ifindex) {
            Some(name) => name.as_str(),
            None => {
                unnamed = format!("if{}", arrival.ifindex);
                unnamed.as_str()
            }
        };
        let mut events = Vec::new();
        match self
            .membership
            .receive(arrival.kernel_ns, iface, packet, &mut events)
        {
            Ok(Receipt::Fresh) => {
                if let Some(feed) = &mut self.metrics {
                    if let Some(node) = self.config.nodes.iter().find(|n| n.id == packet.node_id())
                    {
                        feed.record_arrival(&node.name, arrival.kernel_ns);
                    }
                }
                let held = packet.held();
                for (group, pending) in self.pending_failovers.iter_mut().enumerate().take(64) {
                    if held & (1 << group) != 0 {
                        *pending = None;
                    }
                }
            }
            Ok(Receipt::Duplicate) => {}
            Err(refused @ crate::membership::Refused::UnknownNode(_)) => {
                debug!(source = %arrival.source, "dropped heartbeat: {refused}");
                return;
            }
            Err(refused) => {
                self.counters.replays += 1;
                debug!(source = %arrival.source, "dropped heartbeat: {refused}");
                return;
            }
        }
        self.log_events(&events);
        if let Some(feed) = &mut self.metrics {
            for event in &events {
                if let Event::NodeLeft { node } = event {
                    feed.peer_left(node);
                }
            }
        }

        // A peer that was cut off may have announced our addresses meanwhile; one that just
        // released a group we hold may have, too. Announcing again is cheap and always right.
        let returned = events.iter().any(|e| matches!(e, Event::NodeUp { .. }));
        let released = if packet.kind == MessageKind::ReleaseDone as u8 {
            packet.arg()
        } else {
            0
        };
        for group in 0..self.local.phases.len().min(64) {
            let held_here = self.local.phases[group] == Phase::Held;
            if held_here && (returned || released & (1 << group) != 0) {
                debug!(group = %self.group_name(group), "peer returned or released: announcing again");
                self.send_job(group, JobKind::Reannounce);
            }
        }

        let for_us = matches!(packet.dest_node(), d if d == BROADCAST_NODE || d == self.local_id);
        if for_us && packet.kind == MessageKind::Takeover as u8 && !self.local.standby {
            let from = self.node_name(packet.node_id());
            info!("node {from} requested a takeover: going standby, releasing resources");
            self.local.standby = true;
        }
        // A peer handing its groups over needs a node that takes them: a standby left over
        // from an earlier takeover request must not keep this one from doing so.
        if for_us && packet.kind == MessageKind::StandbyRequest as u8 && self.local.standby {
            let from = self.node_name(packet.node_id());
            info!("node {from} went standby: leaving standby to take its resource groups");
            self.local.standby = false;
        }
    }

    fn log_events(&self, events: &[Event]) {
        for event in events {
            match event {
                Event::NodeDead { .. } | Event::LinkDead { .. } => warn!("{event}"),
                Event::Late { .. } => warn!("{event}"),
                _ => info!("{event}"),
            }
        }
    }

    fn node_name(&self, id: u32) -> String {
        self.config
            .nodes
            .iter()
            .find(|n| n.id == id)
            .map_or_else(|| format!("{id:#010x}"), |n| n.name.clone())
    }

    fn peer_views(&self) -> Vec<PeerView> {
        self.membership
            .peers()
            .iter()
            .filter(|p| p.status == NodeStatus::Up)
            .map(|p| PeerView {
                id: p.id,
                starting: p.state == Some(NodeState::Starting),
                standby: p.state == Some(NodeState::Standby),
                leaving: p.state == Some(NodeState::Leaving),
                held: p.held,
                failed: p.failed,
                up_since_ns: p.up_since_ns.unwrap_or(0),
            })
            .collect()
    }

    fn decide(&mut self, now: u64) {
        let peers = self.peer_views();
        let decision = self.policy.decide(&self.local, &peers, now);
        self.wake_at_ns = decision.wake_at_ns;
        for group in &decision.split_brains {
            warn!(group = %self.group_name(*group), "split brain: this node and a peer both hold the group");
        }
        for action in decision.actions {
            match action {
                Action::Acquire(group) => self.start_job(group, JobKind::Acquire, Phase::Acquiring),
                Action::Release(group) => self.start_job(group, JobKind::Release, Phase::Releasing),
                Action::Reannounce { group, split_for } => {
                    warn!(
                        group = %self.group_name(group),
                        "split brain resolved after {} ms: this node keeps the group; announcing it again",
                        split_for.as_millis()
                    );
                    self.send_job(group, JobKind::Reannounce);
                }
            }
        }
        self.advertise();
    }

    fn group_name(&self, group: usize) -> String {
        self.config
            .groups
            .get(group)
            .map_or_else(|| format!("#{group}"), |g| g.name.clone())
    }

    fn start_job(&mut self, group: usize, kind: JobKind, phase: Phase) {
        if let Some(slot) = self.local.phases.get_mut(group) {
            *slot = phase;
        }
        info!(group = %self.group_name(group), "{}", match kind {
            JobKind::Acquire => "acquiring resource group",
            JobKind::Release => "releasing resource group",
            JobKind::Reannounce => "announcing resource group",
        });
        self.send_job(group, kind);
    }

    fn send_job(&mut self, group: usize, kind: JobKind) {
        if self.jobs.send(Job::Group { group, kind }).is_err() {
            error!(group = %self.group_name(group), "resource executor is gone; cannot run {kind:?}");
        }
    }

    fn job_done(&mut self, done: JobDone) {
        let name = self.group_name(done.group);
        let Some(phase) = self.local.phases.get_mut(done.group) else {
            return;
        };
        match (done.kind, &done.result) {
            (JobKind::Acquire, Ok(())) => {
                *phase = Phase::Held;
                info!(group = %name, took_ms = done.took.as_millis(), "resource group acquired");
                if let Some((detection, declared_ns)) = self
                    .pending_failovers
                    .get_mut(done.group)
                    .and_then(Option::take)
                {
                    let takeover = Duration::from_nanos(monotonic_ns().saturating_sub(declared_ns));
                    info!(
                        group = %name,
                        detection_ms = detection.as_millis(),
                        takeover_ms = takeover.as_millis(),
                        "failover: group taken over from a dead node"
                    );
                    self.failovers.record(&name, detection, takeover);
                }
            }
            (JobKind::Acquire, Err(e)) => {
                *phase = Phase::Released;
                self.local.failed_at_ns[done.group] = Some(monotonic_ns());
                error!(group = %name, "resource group failed to start and was rolled back: {e}");
            }
            (JobKind::Release, result) => {
                *phase = Phase::Released;
                match result {
                    Ok(()) => {
                        info!(group = %name, took_ms = done.took.as_millis(), "resource group released")
                    }
                    Err(e) => error!(group = %name, "resource group released with errors: {e}"),
                }
                self.advertise();
                self.transmitter
                    .send(MessageKind::ReleaseDone, 1 << done.group, BROADCAST_NODE);
            }
            (JobKind::Reannounce, Err(e)) => warn!(group = %name, "re-announcement failed: {e}"),
            (JobKind::Reannounce, Ok(())) => {}
        }
    }

    /// A service of a held group keeps dying: mark the group failed here, so the policy
    /// releases it and a peer takes it.
    fn service_failed(&mut self, group: usize, reason: &str) {
        if self.local.phases.get(group) != Some(&Phase::Held) {
            return;
        }
        error!(group = %self.group_name(group), "resource group failed while held: {reason}; handing it over");
        if let Some(failed_at) = self.local.failed_at_ns.get_mut(group) {
            *failed_at = Some(monotonic_ns());
        }
    }

    /// SIGHUP: reads the configuration again and says what it found. This version applies
    /// configuration changes at restart only; it never half-applies one.
    /// SIGHUP: reads the configuration again and applies what changed, all of it or,
    /// when something changed that only a restart can apply, none of it.
    fn reload(&mut self) {
        let dir = self.config.dir.clone();
        let new = match crate::daemon::load_config(&dir, Some(&self.config.local_node)) {
            Ok(new) => Arc::new(new),
            Err(e) => {
                error!("reload: {e}; still running the previous configuration");
                return;
            }
        };
        let local_addrs = HostView::local_addrs(&SystemHost);
        let changes = reload::changes(&self.config, &new, &local_addrs);
        if changes.is_empty() {
            info!("reload: configuration unchanged");
            return;
        }
        if !changes.restart.is_empty() {
            error!(
                "reload: {} changed, which applies only at restart (a clean stop hands the \
                 groups to the peer at once); nothing applied, still running the previous \
                 configuration",
                changes.restart.join(", ")
            );
            return;
        }
        if let Err(e) = self.apply(&new, &local_addrs) {
            error!("reload: {e}; nothing applied, still running the previous configuration");
            return;
        }
        info!("reload: applied {}", changes.live.join("; "));
    }

    /// Switches every part of the running agent to `new`. The steps that can fail come
    /// first, so a failure leaves everything as it was.
    fn apply(&mut self, new: &Arc<Config>, local_addrs: &[IpAddr]) -> Result<(), String> {
        let auth = Authenticator::new(&new.auth).map_err(|e| e.to_string())?;
        let keepalive_us = u32::try_from(new.timers.keepalive.as_micros()).unwrap_or(u32::MAX);
        self.transmitter
            .reconfigure(
                keepalive_us,
                auth.clone(),
                &new.effective_links(local_addrs),
            )
            .map_err(|e| e.to_string())?;
        if let Some(sender) = &self.sender {
            if let Err(e) = sender.set_interval(new.timers.keepalive) {
                // Cannot happen for a loaded configuration (keepalive is never zero).
                warn!("reload: heartbeat interval unchanged: {e}");
            }
        }
        self.auth = auth;
        self.membership.set_timers(new.timers);
        self.policy.set_rules(crate::daemon::policy_rules(new));

        // Groups that are gone are released with the resources they had; the executor
        // then switches to the new configuration, in that order.
        let groups = new.groups.len();
        for group in groups..self.config.groups.len() {
            if self.local.phases[group] != Phase::Released {
                self.start_job(group, JobKind::Release, Phase::Releasing);
            }
        }
        if self.jobs.send(Job::Reconfigure(Arc::clone(new))).is_err() {
            error!("resource executor is gone; cannot reconfigure it");
        }
        self.local.phases.resize(groups, Phase::Released);
        self.local.failed_at_ns.resize(groups, None);
        self.pending_failovers.resize(groups, None);
        self.config = Arc::clone(new);
        self.advertise();
        Ok(())
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Leave => self.begin_leaving(),
            Command::Reload => {
                self.notify("RELOADING=1", Notifier::reloading);
                self.reload();
                self.notify("READY=1", Notifier::ready);
            }
            Command::Control(request, reply) => {
                let response = match request {
                    Request::Status => {
                        // Routine heartbeats wait in the ring until a wake-up reads them:
                        // the answer is as of now, not of the last wake-up.
                        self.drain();
                        Response::Status(Box::new(self.status()))
                    }
                    Request::Standby => {
                        info!(
                            "standby requested: handing this node's resource groups to the peers"
                        );
                        self.local.standby = true;
                        self.advertise();
                        self.transmitter.send(
                            MessageKind::StandbyRequest,
                            self.all_groups(),
                            BROADCAST_NODE,
                        );
                        Response::Ok("standby: releasing resource groups to the peers".into())
                    }
                    Request::Takeover => {
                        info!(
                            "takeover requested: asking the peers to release every resource group"
                        );
                        self.local.standby = false;
                        self.local.failed_at_ns.iter_mut().for_each(|f| *f = None);
                        self.advertise();
                        self.transmitter.send(
                            MessageKind::Takeover,
                            self.all_groups(),
                            BROADCAST_NODE,
                        );
                        Response::Ok(
                            "takeover: peers asked to release; acquiring when they have".into(),
                        )
                    }
                };
                // The client may have gone away; nothing to do then.
                let _ = reply.send(response);
            }
        }
    }

    /// Sends one sd_notify message, if systemd asked for them; a failure is only worth a
    /// debug line (the watchdog retries on the next turn).
    fn notify(&self, what: &str, send: impl FnOnce(&Notifier) -> Result<(), NotifyError>) {
        if let Some(notifier) = &self.notifier {
            if let Err(e) = send(notifier) {
                debug!("sd_notify {what}: {e}");
            }
        }
    }

    /// Once per loop turn: the watchdog ping when due (so a stuck loop stops the pings),
    /// and a metrics snapshot when due.
    fn feed_watchdog_and_metrics(&mut self, now: u64) {
        if self.watchdog.as_mut().is_some_and(|w| w.poll(now)) {
            self.notify("WATCHDOG=1", Notifier::watchdog);
        }
        if self.metrics.as_ref().is_some_and(|m| m.due(now)) {
            let status = self.status();
            if let Some(feed) = &mut self.metrics {
                feed.publish(status, &self.failovers, now);
            }
        }
    }

    fn all_groups(&self) -> u64 {
        (0..self.config.groups.len().min(64)).fold(0, |m, g| m | 1 << g)
    }

    fn begin_leaving(&mut self) {
        if !self.local.leaving {
            info!("shutting down: releasing every resource group, then telling the peers");
            self.held_when_leaving = self.local.held_mask();
            self.notify("STOPPING=1", Notifier::stopping);
            self.local.leaving = true;
            self.advertise();
        }
    }

    fn advertise(&self) {
        let state = if self.local.leaving {
            NodeState::Leaving
        } else if self.local.standby {
            NodeState::Standby
        } else if self.local.in_initdead {
            NodeState::Starting
        } else {
            NodeState::Active
        };
        self.transmitter.set_advert(Advert {
            state,
            held: self.local.held_mask(),
            failed: self.local.failed_mask(),
        });
    }

    fn leave(&mut self) {
        if let Some(sender) = self.sender.take() {
            sender.stop();
        }
        for _ in 0..LEAVING_REPEATS {
            self.transmitter
                .send(MessageKind::Leaving, 0, BROADCAST_NODE);
        }
        info!("left the cluster; peers told");
    }

    /// What `hb-agent status` shows.
    pub fn status(&self) -> Status {
        let now = monotonic_ns();
        let age_ms = |t: Option<u64>| t.map(|t| now.saturating_sub(t) as f64 / 1e6);
        let peers = self.peer_views();
        // Decided afresh on a copy: the answer is for this moment, and asking must not change
        // the policy's memory of when split brains began.
        let mut policy = self.policy.clone();
        let holders = policy.decide(&self.local, &peers, now).holders;
        let mut nodes = vec![NodeReport {
            name: self.config.local_node.clone(),
            local: true,
            status: "up".into(),
            state: Some(self.transmitter.advert().state.name().into()),
            generation: Some(self.generation),
            last_heard_ms_ago: None,
            held: self.local.held_mask(),
            counters: None,
        }];
        let mut links = Vec::new();
        for peer in self.membership.peers() {
            nodes.push(NodeReport {
                name: peer.name.clone(),
                local: false,
                status: serde_json::to_value(peer.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                state: peer.state.map(|s| s.name().into()),
                generation: peer.generation,
                last_heard_ms_ago: age_ms(peer.last_heard_ns),
                held: peer.held,
                counters: Some(peer.counters),
            });
            for link in &peer.links {
                links.push(LinkStatusReport {
                    node: peer.name.clone(),
                    iface: link.iface.clone(),
                    status: link.status,
                    last_heard_ms_ago: age_ms(link.last_heard_ns),
                    counters: link.counters,
                });
            }
        }
        let groups = self
            .config
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let bit = 1u64 << i;
                let holder = if self.local.phases[i] != Phase::Released {
                    Some(self.config.local_node.clone())
                } else {
                    self.membership
                        .peers()
                        .iter()
                        .find(|p| p.status == NodeStatus::Up && p.held & bit != 0)
                        .map(|p| p.name.clone())
                };
                GroupStatus {
                    name: g.name.clone(),
                    preferred: g.preferred.clone(),
                    holder,
                    phase: self.local.phases[i],
                    intended_holder: holders
                        .get(i)
                        .copied()
                        .flatten()
                        .map(|id| self.node_name(id)),
                    failed_here: self.local.failed_at_ns[i].is_some(),
                    resources: g.resources.iter().map(ToString::to_string).collect(),
                }
            })
            .collect();
        let rx = self.inbound.counters();
        Status {
            node: self.config.local_node.clone(),
            cluster_id: self.config.cluster_id,
            generation: self.generation,
            uptime_s: now.saturating_sub(self.started_ns) as f64 / 1e9,
            rx_path: self.inbound.path(),
            rx_detail: self.inbound.describe(),
            standby: self.local.standby,
            in_initdead: self.local.in_initdead,
            timers_ms: [
                self.config.timers.keepalive,
                self.config.timers.deadtime,
                self.config.timers.warntime,
                self.config.timers.initdead,
            ]
            .map(|d| d.as_secs_f64() * 1e3),
            nodes,
            links,
            groups,
            counters: CountersStatus {
                sent: self.transmitter.stats().sent,
                send_errors: self.transmitter.stats().errors,
                auth_failures: self.counters.auth_failures,
                replays: self.counters.replays,
                unknown_nodes: rx[Counter::DropUnknownPeer as usize],
                own_packets: self.inbound.own_packets(),
                late: self
                    .membership
                    .peers()
                    .iter()
                    .map(|p| p.counters.late)
                    .sum(),
                lost: self
                    .membership
                    .peers()
                    .iter()
                    .map(|p| p.counters.lost)
                    .sum(),
                rx: Counter::ALL
                    .iter()
                    .map(|c| (c.name().to_owned(), rx[*c as usize]))
                    .collect(),
            },
            max_stall_ms: self.stalls.max_ns() as f64 / 1e6,
            kernel_to_agent_us: self.delays.summary_us(),
        }
    }
}
