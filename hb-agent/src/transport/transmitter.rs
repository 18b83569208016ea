//! Sending hb messages on every configured link.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hb_common::wire::{MessageKind, NodeState, BROADCAST_NODE};

use super::limiter::LogLimiter;
use super::setup::{self, TxSocket};
use super::TransportError;
use crate::config::{Link, LinkKind};
use crate::wire::{self, Authenticator, Header};

/// How often a link whose socket could not be opened (interface missing) is retried.
const REOPEN_INTERVAL: Duration = Duration::from_secs(1);

/// What this node currently says about itself in every packet. The daemon updates it;
/// the next packet on every link carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advert {
    pub state: NodeState,
    /// Bitmap of the resource groups this node holds or is acquiring.
    pub held: u64,
    /// Bitmap of the resource groups whose start failed here (so peers do not hand them
    /// back); periodic heartbeats carry it in `arg`.
    pub failed: u64,
}

/// The result of one [`Transmitter::send`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendOutcome {
    /// The sequence number the message carried.
    pub seq: u64,
    /// Links that handed the packet to the kernel.
    pub delivered: usize,
    /// Links that could not (counted in their [`LinkTxStats::errors`]).
    pub failed: usize,
}

/// Counters of one link's sending side.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LinkTxStats {
    pub iface: String,
    /// `ucast`, `bcast` or `mcast`.
    pub kind: &'static str,
    pub destination: SocketAddr,
    /// Whether the link's socket is open (its interface existed when last tried).
    pub open: bool,
    pub sent: u64,
    /// Messages this link did not send: socket errors, or no socket while the interface
    /// is missing.
    pub errors: u64,
    pub last_error: Option<String>,
}

/// Counters of the whole sending side.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TransmitterStats {
    /// The sequence number of the last message (0: none yet), which is also the number of
    /// messages sent.
    pub last_seq: u64,
    /// Packets handed to the kernel, over all links.
    pub sent: u64,
    /// Packets not sent, over all links.
    pub errors: u64,
    pub links: Vec<LinkTxStats>,
}

/// Sends sealed hb messages on every link. Shared (`Arc`) between the sender thread and
/// the daemon's handshakes.
///
/// Each [`send`](Self::send) takes the next sequence number and sends one identical packet
/// on every link, all under one lock: concurrent senders can never put two sequence
/// numbers on a link out of order, so every link carries a strictly increasing sequence
/// and receivers can count losses per link from its gaps. The lock is held only for one
/// MAC and one non-blocking `sendto` per link.
#[derive(Debug)]
pub struct Transmitter {
    /// The last sequence number used; written only under `round`.
    seq: AtomicU64,
    round: Mutex<Round>,
}

#[derive(Debug)]
struct Round {
    header: Header,
    auth: Authenticator,
    advert: Advert,
    links: Vec<LinkSender>,
}

impl Transmitter {
    /// Opens a socket for every link. A link whose interface does not exist yet is
    /// retried on later sends; any other failure (no permission, bad option) is an error.
    pub fn new(
        header: Header,
        auth: Authenticator,
        links: &[Link],
        advert: Advert,
    ) -> Result<Self, TransportError> {
        if links.is_empty() {
            return Err(TransportError::NoLinks);
        }
        let now = Instant::now();
        let links = links
            .iter()
            .map(|link| LinkSender::open(link, now))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            seq: AtomicU64::new(0),
            round: Mutex::new(Round {
                header,
                auth,
                advert,
                links,
            }),
        })
    }

    /// A reload: the keepalive the header announces, the keys and the links. A link that
    /// stays keeps its socket and counters; new links are opened before anything changes,
    /// so an error leaves the transmitter as it was. The sequence goes on.
    pub fn reconfigure(
        &self,
        keepalive_us: u32,
        auth: Authenticator,
        links: &[Link],
    ) -> Result<(), TransportError> {
        if links.is_empty() {
            return Err(TransportError::NoLinks);
        }
        let now = Instant::now();
        let opened = {
            let round = self.lock();
            links
                .iter()
                .filter(|link| !round.links.iter().any(|kept| same_path(&kept.link, link)))
                .map(|link| LinkSender::open(link, now))
                .collect::<Result<Vec<_>, _>>()?
        };
        let mut round = self.lock();
        let mut old = std::mem::take(&mut round.links);
        let mut opened = opened.into_iter();
        for link in links {
            let sender = match old.iter().position(|kept| same_path(&kept.link, link)) {
                Some(index) => old.swap_remove(index),
                None => match opened.next() {
                    Some(sender) => sender,
                    // Opened above for exactly the links not kept; cannot run short.
                    None => continue,
                },
            };
            round.links.push(sender);
        }
        round.header.keepalive_us = keepalive_us;
        round.auth = auth;
        Ok(())
    }

    /// Sends one message on every link; never blocks on the network and never fails as a
    /// whole: per-link failures are counted, logged (rate-limited) and reported in the
    /// outcome.
    ///
    /// A [`MessageKind::Heartbeat`] always carries the advert's `failed` bitmap as its
    /// `arg` (the `arg` given is ignored), so every heartbeat states the same thing.
    pub fn send(&self, kind: MessageKind, arg: u64, dest_node: u32) -> SendOutcome {
        let mut round = self.lock();
        let round = &mut *round;
        let seq = self.seq.load(Ordering::Relaxed).wrapping_add(1);
        self.seq.store(seq, Ordering::Relaxed);
        let Advert {
            state,
            held,
            failed,
        } = round.advert;
        let arg = if kind == MessageKind::Heartbeat {
            failed
        } else {
            arg
        };
        let mut packet = wire::build(&round.header, kind, state, seq, held, arg, dest_node);
        round.auth.seal(&mut packet);
        let bytes = bytemuck::bytes_of(&packet);
        let now = Instant::now();
        let mut outcome = SendOutcome {
            seq,
            delivered: 0,
            failed: 0,
        };
        for link in &mut round.links {
            if link.transmit(bytes, now) {
                outcome.delivered += 1;
            } else {
                outcome.failed += 1;
            }
        }
        outcome
    }

    /// The periodic "I am alive" to every node.
    pub fn heartbeat(&self) -> SendOutcome {
        self.send(MessageKind::Heartbeat, 0, BROADCAST_NODE)
    }

    /// Changes what the following packets say about this node.
    pub fn set_advert(&self, advert: Advert) {
        self.lock().advert = advert;
    }

    pub fn advert(&self) -> Advert {
        self.lock().advert
    }

    /// The fixed fields every packet carries.
    pub fn header(&self) -> Header {
        self.lock().header
    }

    /// The sequence number of the last message sent (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> TransmitterStats {
        let round = self.lock();
        let links: Vec<LinkTxStats> = round.links.iter().map(LinkSender::stats).collect();
        TransmitterStats {
            last_seq: self.last_seq(),
            sent: links.iter().map(|link| link.sent).sum(),
            errors: links.iter().map(|link| link.errors).sum(),
            links,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Round> {
        // Nothing under this lock can leave the state half-updated; a panic elsewhere
        // while holding it must not stop the heartbeats.
        self.round.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether two links send the same way to the same place (where they were written
/// does not matter).
fn same_path(a: &Link, b: &Link) -> bool {
    a.iface == b.iface && a.port == b.port && a.kind == b.kind
}

/// One link's socket and counters.
#[derive(Debug)]
struct LinkSender {
    link: Link,
    /// `iface kind destination`, for log lines.
    label: String,
    socket: Option<TxSocket>,
    /// When to try opening the socket again while it is closed.
    retry_at: Instant,
    sent: u64,
    errors: u64,
    last_error: Option<String>,
    /// Failures since the last successful send, to log the recovery.
    failing: u64,
    log: LogLimiter,
}

impl LinkSender {
    fn open(link: &Link, now: Instant) -> Result<Self, TransportError> {
        let label = format!(
            "{} {} {}",
            link.iface,
            kind_name(&link.kind),
            setup::destination(link, 0)
        );
        let mut last_error = None;
        let socket = match setup::open_tx(link) {
            Ok(socket) => Some(socket),
            Err(error) if error.is_missing_interface() => {
                tracing::warn!(
                    link = %label,
                    %error,
                    "heartbeat interface missing; the link is retried while the others send"
                );
                last_error = Some(error.to_string());
                None
            }
            Err(error) => {
                return Err(TransportError::Setup {
                    link: label,
                    step: error.step,
                    source: error.source,
                })
            }
        };
        Ok(Self {
            link: link.clone(),
            label,
            socket,
            retry_at: now + REOPEN_INTERVAL,
            sent: 0,
            errors: 0,
            last_error,
            failing: 0,
            log: LogLimiter::default(),
        })
    }

    /// Sends `bytes` on this link; `false` (and counted) when it could not.
    fn transmit(&mut self, bytes: &[u8], now: Instant) -> bool {
        if self.socket.is_none() {
            if now < self.retry_at {
                self.record_failure(now, None);
                return false;
            }
            self.retry_at = now + REOPEN_INTERVAL;
            match setup::open_tx(&self.link) {
                Ok(socket) => {
                    tracing::info!(
                        link = %self.label,
                        ifindex = socket.ifindex,
                        "heartbeat link open"
                    );
                    self.socket = Some(socket);
                }
                Err(error) => {
                    self.record_failure(now, Some(error.to_string()));
                    return false;
                }
            }
        }
        let Some(tx) = &self.socket else {
            return false;
        };
        match tx.socket.send_to(bytes, tx.destination) {
            Ok(written) if written == bytes.len() => {
                self.sent += 1;
                if self.failing > 0 {
                    tracing::info!(
                        link = %self.label,
                        failures = self.failing,
                        "heartbeat link sending again"
                    );
                    self.failing = 0;
                    self.log.reset();
                }
                true
            }
            Ok(written) => {
                let message = format!("short send: {written} of {} bytes", bytes.len());
                self.record_failure(now, Some(message));
                false
            }
            Err(error) => {
                if matches!(error.raw_os_error(), Some(libc::ENODEV | libc::ENXIO)) {
                    // The interface went away; a new one of the same name gets a new
                    // index, which this socket's binding would never follow.
                    self.socket = None;
                    self.retry_at = now;
                }
                self.record_failure(now, Some(error.to_string()));
                false
            }
        }
    }

    /// Counts a message this link did not send. `reason` is `None` while waiting to
    /// retry a missing interface (the last error still applies).
    fn record_failure(&mut self, now: Instant, reason: Option<String>) {
        self.errors += 1;
        self.failing += 1;
        if let Some(reason) = reason {
            self.last_error = Some(reason);
        }
        if let Some(held_back) = self.log.allow(now) {
            tracing::warn!(
                link = %self.label,
                error = self.last_error.as_deref().unwrap_or("unknown"),
                held_back,
                "cannot send heartbeat"
            );
        }
    }

    fn stats(&self) -> LinkTxStats {
        LinkTxStats {
            iface: self.link.iface.clone(),
            kind: kind_name(&self.link.kind),
            destination: self
                .socket
                .as_ref()
                .map_or_else(|| setup::destination(&self.link, 0), |tx| tx.destination),
            open: self.socket.is_some(),
            sent: self.sent,
            errors: self.errors,
            last_error: self.last_error.clone(),
        }
    }
}

fn kind_name(kind: &LinkKind) -> &'static str {
    match kind {
        LinkKind::Ucast { .. } => "ucast",
        LinkKind::Bcast => "bcast",
        LinkKind::Mcast { .. } => "mcast",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthKey, AuthKeys, AuthMethod, Origin, Secret};
    use hb_common::wire::Heartbeat;
    use std::net::UdpSocket;

    const CLUSTER: u32 = 0x0bad_cafe;

    fn auth() -> Authenticator {
        let keys = AuthKeys {
            active: 1,
            keys: vec![(
                1,
                AuthKey {
                    method: AuthMethod::Sha1,
                    secret: Secret(b"k".to_vec()),
                },
            )],
        };
        Authenticator::new(&keys).unwrap()
    }

    fn header() -> Header {
        Header {
            cluster_id: CLUSTER,
            node_id: 11,
            generation: 5,
            keepalive_us: 200_000,
        }
    }

    fn link(iface: &str, port: u16) -> Link {
        Link {
            iface: iface.into(),
            port,
            kind: LinkKind::Ucast {
                peer: "127.0.0.1".parse().unwrap(),
            },
            origin: Origin {
                file: "ha.cf".into(),
                line: 3,
            },
        }
    }

    fn advert() -> Advert {
        Advert {
            state: NodeState::Active,
            held: 0b10,
            failed: 0b100,
        }
    }

    #[test]
    fn needs_a_link() {
        assert!(matches!(
            Transmitter::new(header(), auth(), &[], advert()),
            Err(TransportError::NoLinks)
        ));
    }

    #[test]
    fn missing_interface_is_counted_not_fatal() {
        let tx = Transmitter::new(header(), auth(), &[link("hb-nosuch0", 694)], advert()).unwrap();
        let first = tx.send(MessageKind::Heartbeat, 0, BROADCAST_NODE);
        let second = tx.heartbeat();
        assert_eq!((first.seq, first.delivered, first.failed), (1, 0, 1));
        assert_eq!((second.seq, second.delivered, second.failed), (2, 0, 1));
        let stats = tx.stats();
        assert_eq!((stats.last_seq, stats.sent, stats.errors), (2, 0, 2));
        assert_eq!(stats.links.len(), 1);
        let link = &stats.links[0];
        assert!(!link.open);
        assert_eq!((link.sent, link.errors), (0, 2));
        assert!(
            link.last_error
                .as_deref()
                .is_some_and(|e| e.contains("interface lookup")),
            "{link:?}"
        );
        assert_eq!(link.kind, "ucast");
        assert_eq!(link.destination, "127.0.0.1:694".parse().unwrap());
    }

    /// Binding to a device needs CAP_NET_RAW; the loopback device exists everywhere.
    #[test]
    fn sends_sealed_packets_with_increasing_seq_on_loopback() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: not root");
            return;
        }
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let port = receiver.local_addr().unwrap().port();
        let tx = Transmitter::new(header(), auth(), &[link("lo", port)], advert()).unwrap();
        let outcome = tx.heartbeat();
        assert_eq!(
            outcome,
            SendOutcome {
                seq: 1,
                delivered: 1,
                failed: 0
            }
        );
        tx.set_advert(Advert {
            state: NodeState::Standby,
            held: 0,
            failed: 0,
        });
        let outcome = tx.send(MessageKind::StandbyRequest, 0b10, 77);
        assert_eq!(outcome.seq, 2);

        let mut buf = [0u8; 256];
        let mut packets = Vec::new();
        for _ in 0..2 {
            let n = receiver.recv(&mut buf).unwrap();
            packets.push(wire::decode(&buf[..n], CLUSTER).unwrap());
        }
        let [first, second]: [Heartbeat; 2] = packets.try_into().unwrap();
        for packet in [&first, &second] {
            auth().verify(packet).unwrap();
            assert_eq!(packet.node_id(), 11);
            assert_eq!(packet.generation(), 5);
            assert_eq!(packet.keepalive_us(), 200_000);
        }
        assert_eq!(
            (first.seq(), first.kind, first.state),
            (1, MessageKind::Heartbeat as u8, NodeState::Active as u8)
        );
        assert_eq!((first.held(), first.dest_node()), (0b10, BROADCAST_NODE));
        assert_eq!(first.arg(), 0b100, "a heartbeat carries the failed groups");
        assert_eq!(
            (second.seq(), second.kind),
            (2, MessageKind::StandbyRequest as u8)
        );
        assert_eq!((second.state, second.held()), (NodeState::Standby as u8, 0));
        assert_eq!((second.arg(), second.dest_node()), (0b10, 77));
        let stats = tx.stats();
        assert_eq!((stats.links[0].sent, stats.links[0].errors), (2, 0));
        assert_eq!((stats.sent, stats.errors), (2, 0));
        assert!(stats.links[0].open);
    }

    #[test]
    fn transmitter_is_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Transmitter>();
    }
}
