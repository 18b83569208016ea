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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::arp::Announcer;
use crate::config::{AddressPlacement, Config, Resource, SystemHost};
use crate::netlink::{vip_label, AddOutcome, DelOutcome, Netlink};
use crate::services::{self, Operation, ScriptResolver};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    Acquire,
    Release,
    Reannounce,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Job {
    pub group: usize,
    pub kind: JobKind,
}

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
        }
    }

    /// Runs jobs until the decision loop drops its sender.
    pub async fn run(
        mut self,
        mut jobs: mpsc::UnboundedReceiver<Job>,
        done: mpsc::UnboundedSender<JobDone>,
    ) {
        while let Some(job) = jobs.recv().await {
            let started = Instant::now();
            let result = match job.kind {
                JobKind::Acquire => self.acquire(job.group).await,
                JobKind::Release => self.release(job.group).await,
                JobKind::Reannounce => self.reannounce(job.group).await,
            };
            let report = JobDone {
                group: job.group,
                kind: job.kind,
                result,
                took: started.elapsed(),
            };
            if done.send(report).is_err() {
                break;
            }
        }
        for handles in self.announcing.values() {
            handles.iter().for_each(JoinHandle::abort);
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
                let outcome = self
                    .netlink
                    .add_address(
                        &place.device,
                        place.addr,
                        place.prefix,
                        place.label.as_deref(),
                        place.broadcast,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                match outcome {
                    AddOutcome::Added => {
                        info!(iface = %place.device, "added {}/{}", place.addr, place.prefix)
                    }
                    AddOutcome::AlreadyPresent => {
                        info!(iface = %place.device, "{}/{} was already present", place.addr, place.prefix)
                    }
                }
                match self.netlink.flush_stale_neighbours(&place.device).await {
                    Ok(0) => {}
                    Ok(n) => {
                        debug!(iface = %place.device, "flushed {n} failed/incomplete neighbour entries")
                    }
                    Err(e) => warn!(iface = %place.device, "could not flush stale neighbours: {e}"),
                }
                self.announce(group, &place);
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
        services::run(&target, args, op, op.default_timeout())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Settles an address resource's interface and prefix: as configured, else from the
    /// connected route that covers the address (Heartbeat's `findif`), and gives it a label.
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
