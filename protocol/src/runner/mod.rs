//! The private channel between the supervisor and an `engine-runner`
//! child.
//!
//! ```text
//! supervisor                                  engine-runner
//!   ToRunner::Hello{version, epoch}   ──▶
//!                                     ◀──    FromRunner::Hello{version, engine, pid}
//!   ToRunner::Job(JobRequest)         ──▶
//!                                     ◀──    Progress* Log*  then  Result | Error
//!   ToRunner::Ping{seq}               ──▶    (answered by the I/O thread even
//!                                     ◀──     while the engine thread works)
//!   ToRunner::Shutdown                ──▶    exits 0
//! ```
//!
//! Each frame is a 4-byte big-endian body length followed by a MessagePack
//! body ([`frame`]); frames larger than the configured cap are refused
//! before any allocation. Every message that concerns a job names the job
//! id and the child's epoch (its restart count) so the supervisor can drop
//! messages from an older child.

mod family;
pub mod frame;
mod message;

pub use family::{family, Family, FAMILIES};
pub use frame::{FrameError, FrameReader, FrameWriter, DEFAULT_MAX_FRAME_BYTES};
pub use message::{
    ErrorClass, FromRunner, JobOutput, JobRequest, Phase, ToRunner, CHANNEL_VERSION,
};
