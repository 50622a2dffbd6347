//! The contract between the runner loop and an engine family.

use studio_protocol::runner::{ErrorClass, JobOutput, JobRequest, Phase};
use studio_protocol::studio::LogLevel;

/// A failed job, classified.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct EngineError {
    /// Classification (drives `retryable`).
    pub class: ErrorClass,
    /// What went wrong, naming the field or tool.
    pub message: String,
}

impl EngineError {
    /// A bad task field: not retryable.
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::BadInput,
            message: message.into(),
        }
    }
    /// A missing engine or tool on this host.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::EngineUnavailable,
            message: message.into(),
        }
    }
    /// A failure inside the engine.
    pub fn engine(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Engine,
            message: message.into(),
        }
    }
}

/// What an engine may tell the supervisor while it works.
pub trait Reporter {
    /// Progress (extends the stall deadline).
    fn progress(&mut self, phase: Phase, done: u64, total: u64);
    /// A log line for this job.
    fn log(&mut self, level: LogLevel, message: String);
}

/// One engine family inside a runner.
pub trait Engine: Send {
    /// The engine's wire name (`synthetic`, `llama-cpp`, ...).
    fn name(&self) -> &'static str;
    /// Runs one job to completion.
    fn run(
        &mut self,
        job: &JobRequest,
        report: &mut dyn Reporter,
    ) -> Result<JobOutput, EngineError>;
}
