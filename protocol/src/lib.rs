//! Wire types shared by the `studio-worker` supervisor and its
//! `engine-runner` children.
//!
//! Two wires live here and nothing else:
//!
//! * [`studio`]: the JSON frames and HTTP bodies of the studio contract
//!   (WebSocket `studio-worker-v1`). Only the supervisor speaks them.
//! * [`runner`]: the private channel between the supervisor and an
//!   engine-runner child: each frame is a 4-byte big-endian length and a
//!   MessagePack body, capped in size, opened by a version handshake.
//!
//! This crate performs no I/O policy: it turns bytes into typed values and
//! back, and reports malformed input as error values (never a panic, never
//! an unbounded allocation).
#![deny(missing_docs)]

pub mod runner;
mod secret;
pub mod studio;

pub use secret::{exposed as exposed_secrets, Secret};
