//! hb-agent: a Heartbeat-compatible high-availability agent.
//!
//! Pure modules hold no sockets and are tested from recorded inputs:
//! [`config`], [`wire`], [`arrival`].
//! I/O modules sit around them: [`xdp`] (the kernel receive path), [`transport`]
//! (heartbeat sockets and the sender thread), and the daemon that owns the cluster state.

pub mod arrival;
pub mod clock;
pub mod config;
pub mod wire;
pub mod xdp;
pub mod transport;
