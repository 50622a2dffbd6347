//! Engine-runner children: spawning, the async side of the channel, the
//! engine catalog and the per-job limits. Which runners live, and for
//! which model, is the scheduler's business (`scheduler::runners`).
//!
//! ```text
//!   RunnerChild (pid, epoch n)
//!     ├─ stdin:  ToRunner frames (job, ping, shutdown)
//!     ├─ stdout: FromRunner frames ─▶ reader task ─▶ events
//!     └─ stderr: lines ─▶ drain task ─▶ log + tail ring
//! ```

mod catalog;
mod channel;
mod child;
pub mod gradio;
mod limits;

pub use catalog::EngineCatalog;
pub use child::{kill_all_groups, ChildFailure, RunEvent, RunnerChild};
pub use limits::{load_allowance, Backoff, Limits};
