//! The studio contract: JSON frames over the `studio-worker-v1` WebSocket
//! and the few HTTP bodies (registration, multipart completion).
//!
//! Field names are camelCase on the wire, optional fields are omitted when
//! absent and `null` is accepted for them when parsing. Unknown extra
//! fields are ignored.

mod capabilities;
mod frames;
pub mod http;
mod model_source;
mod offer;
mod task;

pub use capabilities::{LogEntry, LogLevel, UserPresence, WorkerCapabilities};
pub use frames::{ErrorCode, RejectCode, StudioFrame, WorkerFrame, SUBPROTOCOL};
pub use model_source::{Engine, FileRole, ModelCliDefaults, ModelFile, ModelSource};
pub use offer::{ClaimError, JobOfferClaim};
pub use task::{
    AudioSttTask, AudioTtsTask, ChatMessage, ImageTask, LlmTask, Task, TaskKind, VideoTask,
};
