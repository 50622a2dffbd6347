//! Engine-runner children: spawning, the async side of the channel, and
//! the pool that keeps one child per engine family alive between jobs.
//!
//! ```text
//!   RunnerPool ── engine name ──▶ RunnerChild (epoch n)
//!                                   ├─ stdin:  ToRunner frames
//!                                   ├─ stdout: FromRunner frames ─▶ reader task ─▶ events
//!                                   └─ stderr: lines ─▶ drain task ─▶ log + tail ring
//! ```

mod channel;
mod child;
mod pool;

pub use pool::{EngineCatalog, RunnerPool};
