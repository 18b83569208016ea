//! Types shared by the hb XDP program (`hb-ebpf`) and the agent (`hb-agent`).
//!
//! Everything here is `no_std`, fixed-size and `#[repr(C)]` with explicit padding, so the
//! kernel and userspace see the same bytes. The `user` feature adds `aya::Pod` and
//! `bytemuck` impls for userspace.
//!
//! - [`wire`]: the heartbeat packet as it travels on UDP, and the shape check both sides run.
//! - [`maps`]: the layouts of the BPF maps and of the ring-buffer event.
#![no_std]

pub mod maps;
pub mod wire;
