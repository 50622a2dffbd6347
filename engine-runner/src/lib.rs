//! The engine-runner: a child process that hosts one engine family and
//! serves the runner channel (see `studio_protocol::runner`).
//!
//! Layout:
//! * [`hygiene`]: moves the channel off fds 0/1 before any engine loads.
//! * [`serve`]: the I/O thread (handshake, pings, job intake) and the
//!   engine thread.
//! * [`engine`]: the `Engine` trait every engine family implements.
//! * [`encode`]: output encoders shared by engines (images, video).
//! * [`platform`]: the OS calls beyond `std` (`prctl`, `/proc`).
//! * [`engines`]: the engines built into this binary (synthetic).
//!
//! Other engine families (llama.cpp, whisper.cpp, stable-diffusion.cpp)
//! link native libraries that each bundle ggml; they build as their own
//! runner binaries on this library, never into one process.

pub mod client;
pub mod encode;
pub mod engine;
pub mod engines;
mod faults;
pub mod hygiene;
pub mod platform;
pub mod process;
pub mod serve;
