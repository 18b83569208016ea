//! Runs resource-group jobs for the decision loop: acquire (left to right), release (right
//! to left), re-announce.
//!
//! One task runs every job in order, so one group's actions never interleave with
//! another's and each resource's hooks run strictly one after the other. A failed start
//! stops what the group had already started, right to left, and reports the failure.
//! Address announcements (gratuitous ARP / unsolicited NA) run beside the queue — the first
//! round goes out at once, the repeats must not delay the group's services — and are
//! cancelled when the group is released, so this node never announces an address it no
//! longer holds.
//!
//! While a group is held, its script resources are checked with `status` every
//! [`SERVICE_CHECK_INTERVAL`] (beside the queue, so a slow check never delays a failover).
//! A service found stopped is restarted once; if it is found stopped again, the group is
//! reported failed to the decision loop, which hands it to a peer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::arp::Announcer;
use crate::config::{AddressPlacement, Config, Resource, SystemHost};
use crate::netlink::{vip_label, AddOutcome, AddressNotice, AddressWatch, DelOutcome, Netlink};
use crate::services::{self, Operation, ScriptResolver};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    Acquire,
    Release,
    Reannounce,
}

/// What the decision loop asks of the executor; done strictly in the order sent.
#[derive(Clone, Debug, PartialEq)]
pub enum Job {
    Group {
        group: usize,
        kind: JobKind,
    },
    /// A reload: from here on `Config` is the configuration. Held groups whose resources
    /// changed are brought to the new list without touching the resources that stay.
    Reconfigure(Arc<Config>),
}

/// How often the script resources of held groups are checked with `status`.
pub const SERVICE_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// How many times a dead service is restarted in place before its group is handed over.
const RESTARTS_BEFORE_HANDOVER: u32 = 1;

/// What the executor tells the decision loop.
#[derive(Debug)]
pub enum Report {
    Done(JobDone),
    /// A service of a held group died and could not be kept running here.
    ServiceFailed {
        group: usize,
        reason: String,
    },
}

/// The outcome of one `status` check: group, resource index, what was found.
type CheckResult = (usize, usize, Result<services::ServiceState, String>);

#[derive(Debug)]
pub struct JobDone {
    pub group: usize,
    pub kind: JobKind,
    pub result: Result<(), String>,
    pub took: Duration,
}

/// An address resource with its interface, prefix and label settled.
type Placed = AddressPlacement;

pub struct Executor {
    config: Arc<Config>,
    netlink: Netlink,
    announcer: Announcer,
    resolver: ScriptResolver,
    /// Announcements still repeating, per group.
    announcing: HashMap<usize, Vec<JoinHandle<()>>>,
    /// Where each address resource was placed when acquired, so release removes exactly
    /// that (the connected route may have changed since).
    placed: HashMap<(usize, usize), Placed>,
    /// Groups whose every resource is started.
    held: std::collections::BTreeSet<usize>,
    /// Restarts of each (group, resource) since its group was acquired.
    restarts: HashMap<(usize, usize), u32>,
    /// The status check in flight, if any.
    checking: Option<JoinHandle<Vec<CheckResult>>>,
}

impl Executor {
    pub fn new(config: Arc<Config>, netlink: Netlink) -> Self {
        Self {
            resolver: ScriptResolver::new(&config.dir),
            announcer: Announcer::new(netlink.clone()),
            netlink,
            config,
            announcing: HashMap::new(),
            placed: HashMap::new(),
            held: Default::default(),
            restarts: HashMap::new(),
            checking: None,
        }
    }

    /// Runs jobs until the decision loop drops its sender.
    pub async fn run(
        mut self,
        mut jobs: mpsc::UnboundedReceiver<Job>,
        reports: mpsc::UnboundedSender<Report>,
    ) {
        let mut checks = tokio::time::interval(SERVICE_CHECK_INTERVAL);
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watch = subscribe_addresses();
        self.release_leftovers().await;
        let mut refresh = refresh_timer(&self.config);
        loop {
            tokio::select! {
                job = jobs.recv() => {
                    let reports_out = match job {
                        None => break,
                        Some(Job::Group { group, kind }) => vec![Report::Done(self.run_job(group, kind).await)],
                        Some(Job::Reconfigure(config)) => {
                            let failed = self.reconfigure(config).await;
                            refresh = refresh_timer(&self.config);
                            failed
                        }
                    };
                    if reports_out.into_iter().any(|report| reports.send(report).is_err()) {
                        break;
                    }
                }
                _ = checks.tick(), if self.checking.is_none() => self.start_checks(),
                results = finished(&mut self.checking) => {
                    self.checking = None;
                    for failed in self.act_on_checks(results).await {
                        if reports.send(failed).is_err() {
                            break;
                        }
                    }
                }
                notice = next_notice(&mut watch) => match notice {
                    Some(AddressNotice::Removed(event)) => self.restore(Some(event.addr)).await,
                    Some(AddressNotice::Overrun) => self.restore(None).await,
                    Some(AddressNotice::Added(_)) => {}
                    None => {
                        warn!("address watch ended; subscribing again");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        watch = subscribe_addresses();
                        self.restore(None).await;
                    }
                },
                _ = tick(&mut refresh) => {
                    let placed: Vec<(usize, Placed)> =
                        self.placed.iter().map(|((group, _), p)| (*group, p.clone())).collect();
                    for (group, place) in placed {
                        self.announce(group, &place);
                    }
                }
            }
        }
        for handles in self.announcing.values() {
            handles.iter().for_each(JoinHandle::abort);
        }
        if let Some(check) = self.checking.take() {
            check.abort();
        }
    }

    /// Starts `status` checks of every script resource of the held groups, in a task of
    /// their own.
    fn start_checks(&mut self) {
        let mut targets = Vec::new();
        for &group in &self.held {
            for (index, resource) in self.resources(group).iter().enumerate() {
                if let Resource::Script { name, args } = resource {
                    match self.resolver.resolve(name) {
                        Ok(target) => targets.push((group, index, target, args.clone())),
                        Err(e) => debug!("not checking {name}: {e}"),
                    }
                }
            }
        }
        if targets.is_empty() {
            return;
        }
        let timeout = Operation::Status.timeout(self.config.resource_timeout);
        self.checking = Some(tokio::spawn(async move {
            let mut results = Vec::with_capacity(targets.len());
            for (group, index, target, args) in targets {
                let outcome = service_state(&target, &args, timeout).await;
                results.push((group, index, outcome));
            }
            results
        }));
    }

    /// Restarts dead services once; reports the groups whose services keep dying.
    async fn act_on_checks(&mut self, results: Vec<CheckResult>) -> Vec<Report> {
        use services::ServiceState;
        let mut failed = Vec::new();
        for (group, index, outcome) in results {
            let Some(Resource::Script { name, args }) = self.resources(group).get(index).cloned()
            else {
                continue;
            };
            if !self.held.contains(&group) {
                continue;
            }
            match outcome {
                Ok(ServiceState::Running) => {}
                // A script without a usable `status` cannot be watched; that is its choice.
                Err(e) => debug!(resource = %name, "status check inconclusive: {e}"),
                Ok(state @ (ServiceState::Stopped | ServiceState::Dead)) => {
                    let restarts = self.restarts.entry((group, index)).or_insert(0);
                    if *restarts < RESTARTS_BEFORE_HANDOVER {
                        *restarts += 1;
                        warn!(resource = %name, ?state, "service of a held group is not running; restarting it");
                        if let Err(e) = self.run_script(&name, &args, Operation::Start).await {
                            failed.push(Report::ServiceFailed {
                                group,
                                reason: format!("{name} could not be restarted: {e}"),
                            });
                            self.held.remove(&group);
                        }
                    } else {
                        failed.push(Report::ServiceFailed {
                            group,
                            reason: format!("{name} stopped again after a restart"),
                        });
                        self.held.remove(&group);
                    }
                }
            }
        }
        failed
    }

    async fn run_job(&mut self, group: usize, kind: JobKind) -> JobDone {
        let started = Instant::now();
        let result = match kind {
            JobKind::Acquire => self.acquire(group).await,
            JobKind::Release => self.release(group).await,
            JobKind::Reannounce => self.reannounce(group).await,
        };
        match (kind, &result) {
            (JobKind::Acquire, Ok(())) => {
                self.held.insert(group);
                self.restarts.retain(|(g, _), _| *g != group);
            }
            (JobKind::Release, _) => {
                self.held.remove(&group);
            }
            _ => {}
        }
        JobDone {
            group,
            kind,
            result,
            took: started.elapsed(),
        }
    }

    /// At start no group is held here, so whatever is found running belongs to an agent
    /// that was killed (SIGKILL, OOM) without releasing: its addresses would otherwise stay
    /// on this node while the peer holds them too. Every group with an address present or a
    /// service running is released (stopped right to left) before any job runs.
    async fn release_leftovers(&mut self) {
        for group in 0..self.config.groups.len() {
            let mut active = Vec::new();
            for (index, resource) in self.resources(group).to_vec().iter().enumerate() {
                let found = match resource {
                    Resource::Script { name, args } => {
                        let Ok(target) = self.resolver.resolve(name) else {
                            continue;
                        };
                        let timeout = Operation::Status.timeout(self.config.resource_timeout);
                        service_state(&target, args, timeout).await
                            == Ok(services::ServiceState::Running)
                    }
                    address => match self.place(group, index, address) {
                        Ok(place) => self
                            .netlink
                            .has_address(&place.device, place.addr)
                            .await
                            .unwrap_or(false),
                        Err(_) => false,
                    },
                };
                if found {
                    active.push(resource.to_string());
                }
            }
            if active.is_empty() {
                continue;
            }
            warn!(
                group = %self.config.groups[group].name,
                "found {} active at start, left by an agent that did not release them; releasing the group before joining",
                active.join(", ")
            );
            if let Err(e) = self.release(group).await {
                error!(group = %self.config.groups[group].name, "could not release what was left active: {e}");
            }
        }
    }

    /// Switches to `config`. For each held group whose resources changed: the resources
    /// no longer listed are stopped (last first), those that stay are left running (an
    /// address that stays configured never leaves its interface), and the new ones are
    /// started in order. A group whose new resource does not start is reported as failed,
    /// so the decision loop hands it over, as for a service that died.
    async fn reconfigure(&mut self, config: Arc<Config>) -> Vec<Report> {
        let old = std::mem::replace(&mut self.config, config);
        let mut to_start = Vec::new();
        for group in self.held.clone() {
            let before = old.groups.get(group).map_or(&[][..], |g| &g.resources[..]);
            let after = self.resources(group).to_vec();
            if before == after.as_slice() {
                continue;
            }
            let kept = match_resources(before, &after);
            for (index, resource) in before.iter().enumerate().rev() {
                if kept[index].is_none() {
                    info!(resource = %resource, "reload: stopping a resource no longer in its group");
                    if let Err(e) = self.stop(group, index, resource).await {
                        warn!(resource = %resource, "reload: {e}");
                    }
                }
            }
            let moves: Vec<(usize, usize)> = kept
                .iter()
                .enumerate()
                .filter_map(|(from, to)| to.map(|to| (from, to)))
                .collect();
            let placed: Vec<(usize, Placed)> = moves
                .iter()
                .filter_map(|&(from, to)| self.placed.remove(&(group, from)).map(|p| (to, p)))
                .collect();
            self.placed
                .extend(placed.into_iter().map(|(to, p)| ((group, to), p)));
            let restarts: Vec<(usize, u32)> = moves
                .iter()
                .filter_map(|&(from, to)| self.restarts.remove(&(group, from)).map(|n| (to, n)))
                .collect();
            self.restarts
                .extend(restarts.into_iter().map(|(to, n)| ((group, to), n)));
            for (index, resource) in after.into_iter().enumerate() {
                if !kept.contains(&Some(index)) {
                    to_start.push((group, index, resource));
                }
            }
        }
        let mut failed = Vec::new();
        for (group, index, resource) in to_start {
            if !self.held.contains(&group) {
                continue;
            }
            info!(resource = %resource, "reload: starting a resource added to a held group");
            if let Err(e) = self.start(group, index, &resource).await {
                failed.push(Report::ServiceFailed {
                    group,
                    reason: format!("{resource}, added by a reload, did not start: {e}"),
                });
                self.held.remove(&group);
            }
        }
        failed
    }

    /// Puts back addresses of held groups that disappeared from their interface (someone
    /// ran `ip addr del`, networkd reconfigured the link, a link flap dropped an IPv6
    /// address), and announces them again. `None`: check every held address.
    async fn restore(&mut self, removed: Option<IpAddr>) {
        let suspects: Vec<(usize, Placed)> = self
            .placed
            .iter()
            .filter(|(_, place)| removed.is_none_or(|addr| addr == place.addr))
            .map(|((group, _), place)| (*group, place.clone()))
            .collect();
        for (group, place) in suspects {
            match self.netlink.has_address(&place.device, place.addr).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    warn!(iface = %place.device, "cannot check {}: {e}", place.addr);
                    continue;
                }
            }
            warn!(
                iface = %place.device,
                "{}/{} of a held group disappeared from the interface; adding it again",
                place.addr, place.prefix
            );
            match self.add_placed(&place).await {
                Ok(_) => self.announce(group, &place),
                Err(e) => error!(iface = %place.device, "could not add {} again: {e}", place.addr),
            }
        }
    }

    fn resources(&self, group: usize) -> &[Resource] {
        self.config
            .groups
            .get(group)
            .map_or(&[], |g| g.resources.as_slice())
    }

    async fn acquire(&mut self, group: usize) -> Result<(), String> {
        let resources = self.resources(group).to_vec();
        for (index, resource) in resources.iter().enumerate() {
            if let Err(e) = self.start(group, index, resource).await {
                for (undo, started) in resources.iter().enumerate().take(index).rev() {
                    if let Err(e) = self.stop(group, undo, started).await {
                        warn!("rollback: {e}");
                    }
                }
                return Err(e);
            }
        }
        Ok(())
    }

    async fn release(&mut self, group: usize) -> Result<(), String> {
        for handle in self.announcing.remove(&group).unwrap_or_default() {
            handle.abort();
        }
        let resources = self.resources(group).to_vec();
        let mut errors = Vec::new();
        for (index, resource) in resources.iter().enumerate().rev() {
            // Keep going: every resource that can be stopped must be.
            if let Err(e) = self.stop(group, index, resource).await {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    async fn reannounce(&mut self, group: usize) -> Result<(), String> {
        let placed: Vec<Placed> = (0..self.resources(group).len())
            .filter_map(|index| self.placed.get(&(group, index)).cloned())
            .collect();
        for place in placed {
            self.announce(group, &place);
        }
        Ok(())
    }

    async fn start(
        &mut self,
        group: usize,
        index: usize,
        resource: &Resource,
    ) -> Result<(), String> {
        match resource {
            Resource::Script { name, args } => self.run_script(name, args, Operation::Start).await,
            address => {
                let place = self.place(group, index, address)?;
                let outcome = self.add_placed(&place).await.map_err(|e| e.to_string())?;
                match outcome {
                    AddOutcome::Added => {
                        info!(iface = %place.device, "added {}/{}", place.addr, place.prefix)
                    }
                    AddOutcome::AlreadyPresent => {
                        info!(iface = %place.device, "{}/{} was already present", place.addr, place.prefix)
                    }
                }
                // Tell the segment first; the flush runs while the announcement goes out.
                self.announce(group, &place);
                match self.netlink.flush_stale_neighbours(&place.device).await {
                    Ok(0) => {}
                    Ok(n) => {
                        debug!(iface = %place.device, "flushed {n} failed/incomplete neighbour entries")
                    }
                    Err(e) => warn!(iface = %place.device, "could not flush stale neighbours: {e}"),
                }
                self.placed.insert((group, index), place);
                Ok(())
            }
        }
    }

    async fn stop(
        &mut self,
        group: usize,
        index: usize,
        resource: &Resource,
    ) -> Result<(), String> {
        match resource {
            Resource::Script { name, args } => self.run_script(name, args, Operation::Stop).await,
            address => {
                let place = match self.placed.remove(&(group, index)) {
                    Some(place) => place,
                    None => self.place(group, index, address)?,
                };
                let outcome = self
                    .netlink
                    .del_address(&place.device, place.addr, place.prefix)
                    .await
                    .map_err(|e| e.to_string())?;
                match outcome {
                    DelOutcome::Removed => {
                        info!(iface = %place.device, "removed {}/{}", place.addr, place.prefix)
                    }
                    DelOutcome::NotPresent => {
                        debug!(iface = %place.device, "{} was not present", place.addr)
                    }
                }
                Ok(())
            }
        }
    }

    async fn run_script(&self, name: &str, args: &[String], op: Operation) -> Result<(), String> {
        let target = self.resolver.resolve(name).map_err(|e| e.to_string())?;
        services::run(&target, args, op, op.timeout(self.config.resource_timeout))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Settles an address resource's interface and prefix: as configured, else from the
    /// connected route that covers the address (Heartbeat's `findif`), and gives it a label.
    async fn add_placed(&self, place: &Placed) -> Result<AddOutcome, crate::netlink::NetlinkError> {
        self.netlink
            .add_address(
                &place.device,
                place.addr,
                place.prefix,
                place.label.as_deref(),
                place.broadcast,
            )
            .await
    }

    fn place(&self, group: usize, index: usize, resource: &Resource) -> Result<Placed, String> {
        let mut placed = resource
            .placement(&SystemHost)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{resource} is not an address resource"))?;
        if placed.label.is_none() && placed.addr.is_ipv4() {
            placed.label = vip_label(&placed.device, self.address_slot(group, index));
        }
        Ok(placed)
    }

    /// A stable small number for an address resource: its position among all address
    /// resources in haresources, so labels never collide between groups.
    fn address_slot(&self, group: usize, index: usize) -> u32 {
        let before: usize = self.config.groups[..group.min(self.config.groups.len())]
            .iter()
            .map(|g| {
                g.resources
                    .iter()
                    .filter(|r| !matches!(r, Resource::Script { .. }))
                    .count()
            })
            .sum();
        let within = self
            .resources(group)
            .iter()
            .take(index)
            .filter(|r| !matches!(r, Resource::Script { .. }))
            .count();
        u32::try_from(before + within).unwrap_or(u32::MAX)
    }

    fn announce(&mut self, group: usize, place: &Placed) {
        let announcer = self.announcer.clone();
        let settings = self.config.garp;
        let place = place.clone();
        let handle = tokio::spawn(async move {
            match announcer
                .announce(&place.device, place.addr, &settings)
                .await
            {
                Ok(report) => debug!(
                    iface = %report.iface,
                    "announced {}: {} frames in {} rounds ({} failed)",
                    report.ip, report.frames_sent, report.rounds, report.frames_failed
                ),
                Err(e) => warn!(iface = %place.device, "announcing {} failed: {e}", place.addr),
            }
        });
        let handles = self.announcing.entry(group).or_default();
        handles.retain(|h| !h.is_finished());
        handles.push(handle);
    }
}

fn subscribe_addresses() -> Option<AddressWatch> {
    match AddressWatch::subscribe() {
        Ok(watch) => Some(watch),
        Err(e) => {
            warn!("cannot watch address changes; a removed VIP will not be put back: {e}");
            None
        }
    }
}

/// The next address notice, or never when there is no watch.
async fn next_notice(watch: &mut Option<AddressWatch>) -> Option<AddressNotice> {
    match watch {
        Some(watch) => watch.next().await,
        None => std::future::pending().await,
    }
}

/// A script's `status`, as the state it reports.
async fn service_state(
    target: &services::ScriptTarget,
    args: &[String],
    timeout: Duration,
) -> Result<services::ServiceState, String> {
    services::run(target, args, Operation::Status, timeout)
        .await
        .map_err(|e| e.to_string())?
        .service_state
        .ok_or_else(|| "no state reported".to_owned())
}

/// For each of `before`'s resources, the index of the same resource in `after`, if it
/// stays (each of `after`'s matched once, first come first served).
fn match_resources(before: &[Resource], after: &[Resource]) -> Vec<Option<usize>> {
    let mut taken = vec![false; after.len()];
    before
        .iter()
        .map(|resource| {
            let index = after
                .iter()
                .enumerate()
                .position(|(i, other)| !taken[i] && other == resource)?;
            taken[index] = true;
            Some(index)
        })
        .collect()
}

/// The periodic re-announcement timer `garp_refresh` asks for, if any.
fn refresh_timer(config: &Config) -> Option<tokio::time::Interval> {
    config.garp.refresh.map(|every| {
        let mut timer = tokio::time::interval(every);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        timer
    })
}

/// The next refresh tick, or never when `garp_refresh` is off.
async fn tick(refresh: &mut Option<tokio::time::Interval>) {
    match refresh {
        Some(timer) => {
            timer.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The results of the status check in flight, or never when none is.
async fn finished(checking: &mut Option<JoinHandle<Vec<CheckResult>>>) -> Vec<CheckResult> {
    match checking {
        Some(handle) => handle.await.unwrap_or_else(|e| {
            warn!("service status check task failed: {e}");
            Vec::new()
        }),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_resource;

    fn resources(text: &str) -> Vec<Resource> {
        text.split_whitespace()
            .map(|word| parse_resource(word).expect("valid resource"))
            .collect()
    }

    #[test]
    fn resources_that_stay_keep_their_place_in_the_new_list() {
        let before = resources("IPaddr::198.18.1.10/24/eth0 nginx IPaddr::198.18.1.20/24/eth0");
        let after = resources("IPaddr::198.18.1.10/24/eth0 IPaddr::198.18.1.30/24/eth0 nginx");
        assert_eq!(
            match_resources(&before, &after),
            vec![Some(0), Some(2), None]
        );
    }

    #[test]
    fn a_repeated_resource_is_matched_once() {
        let before = resources("nginx nginx");
        let after = resources("nginx");
        assert_eq!(match_resources(&before, &after), vec![Some(0), None]);
    }
}
