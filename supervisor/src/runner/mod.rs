//! Engine-runner children: spawning, the async side of the channel, and
//! the pool that keeps one child per engine family alive between jobs.
//!
//! ```text
//!   RunnerPool ── engine name ──▶ RunnerChild (epoch n)
//!                                   ├─ stdin:  ToRunner frames (job, ping, shutdown)
//!                                   ├─ stdout: FromRunner frames ─▶ reader task ─▶ events
//!                                   └─ stderr: lines ─▶ drain task ─▶ log + tail ring
//! ```

mod channel;
mod child;
mod limits;
mod pool;

pub use child::{kill_all_groups, RunEvent};
pub use limits::{load_allowance, Backoff, Limits};
pub use pool::{EngineCatalog, RunnerPool};
