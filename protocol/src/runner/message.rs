//! Runner channel messages. Plain data: behaviour lives with whoever
//! handles them. Enums are externally tagged (`{"job": {...}}`), which
//! MessagePack decodes without buffering and a person can type in the
//! runner's JSON-lines mode.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::studio::{LogLevel, ModelSource, Task};

/// Version of the runner channel; both hellos must carry the same.
pub const CHANNEL_VERSION: u32 = 2;

/// Supervisor → runner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ToRunner {
    /// First frame: the channel version and the child's epoch.
    #[serde(rename_all = "camelCase")]
    Hello {
        /// Must equal [`CHANNEL_VERSION`].
        version: u32,
        /// Restart count of this child.
        epoch: u64,
    },
    /// Run one job.
    Job(Box<JobRequest>),
    /// Liveness probe, answered with `pong` by the I/O thread.
    Ping {
        /// Echoed back.
        seq: u64,
    },
    /// Finish and exit 0.
    Shutdown,
    /// Stop generating for this job as soon as possible (its client went
    /// away); the engine ends it with what it has.
    #[serde(rename_all = "camelCase")]
    Cancel {
        /// The job.
        job_id: String,
    },
}

/// One job for the runner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRequest {
    /// Studio job id.
    pub job_id: String,
    /// The child's epoch.
    #[serde(default)]
    pub epoch: u64,
    /// The task (its `kind` is inside).
    pub task: Task,
    /// Registry model id.
    #[serde(default)]
    pub model: String,
    /// Engine and files.
    #[serde(default = "ModelSource::synthetic")]
    pub model_source: ModelSource,
    /// Local paths of the model files, by file name.
    #[serde(default)]
    pub model_files: BTreeMap<String, String>,
    /// Local paths of fetched inputs, by task field (`inputUrl`, ...).
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
    /// Where the runner may write large outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch_dir: Option<String>,
    /// Only load the model (a pinned model at start): the runner answers
    /// `loaded` and a `result` of `{"loaded": model}`; the task is not run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preload: bool,
    /// Send the text as it is generated (`delta` messages) before the
    /// result (the local API's streamed chat; studio jobs never ask).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
}

/// Runner → supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FromRunner {
    /// First frame: what this child is.
    #[serde(rename_all = "camelCase")]
    Hello {
        /// [`CHANNEL_VERSION`] of the runner.
        version: u32,
        /// Echo of the supervisor's epoch.
        epoch: u64,
        /// Engine family served.
        engine: String,
        /// Process id.
        pid: u32,
        /// Runner build version.
        runner_version: String,
    },
    /// The engine moved forward (extends the stall deadline).
    #[serde(rename_all = "camelCase")]
    Progress {
        /// The job.
        job_id: String,
        /// The child's epoch.
        epoch: u64,
        /// Loading or running.
        phase: Phase,
        /// Units done.
        done: u64,
        /// Units in all (0 when unknown).
        total: u64,
    },
    /// The job's model finished loading: what it holds. Sent once per
    /// load (not for a job on a model already loaded).
    #[serde(rename_all = "camelCase")]
    Loaded {
        /// The job whose load it was.
        job_id: String,
        /// The child's epoch.
        epoch: u64,
        /// Registry model id of the job.
        model: String,
        /// Growth of the runner's resident memory over the load.
        host_bytes: u64,
        /// Accelerator memory the model took, when the engine can tell
        /// (absent on CPU builds: the supervisor keeps the job's estimate).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device_bytes: Option<u64>,
    },
    /// A log line from the runner.
    #[serde(rename_all = "camelCase")]
    Log {
        /// The job, when the line concerns one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        job_id: Option<String>,
        /// The child's epoch.
        epoch: u64,
        /// Severity.
        level: LogLevel,
        /// The line.
        message: String,
    },
    /// The job's output.
    #[serde(rename_all = "camelCase")]
    Result {
        /// The job.
        job_id: String,
        /// The child's epoch.
        epoch: u64,
        /// What the engine produced.
        output: JobOutput,
    },
    /// The job failed inside the engine.
    #[serde(rename_all = "camelCase")]
    Error {
        /// The job.
        job_id: String,
        /// The child's epoch.
        epoch: u64,
        /// Classification.
        class: ErrorClass,
        /// What went wrong.
        message: String,
    },
    /// Answer to a ping.
    Pong {
        /// Echo of the ping's sequence number.
        seq: u64,
        /// The child's epoch.
        epoch: u64,
    },
    /// Generated text so far not yet sent (a `stream` job only); the
    /// result still carries the whole answer.
    #[serde(rename_all = "camelCase")]
    Delta {
        /// The job.
        job_id: String,
        /// The child's epoch.
        epoch: u64,
        /// The new text.
        text: String,
    },
    /// The runner cannot go on and is about to exit.
    Fatal {
        /// Why.
        message: String,
    },
}

/// What a job produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum JobOutput {
    /// Bytes carried in the frame.
    Bytes {
        /// The encoded result.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// Its extension.
        ext: String,
    },
    /// Bytes left in a file (above the frame cap, or in JSON-lines mode).
    File {
        /// Absolute path.
        path: String,
        /// Its extension.
        ext: String,
    },
    /// A JSON document (llm, audio_stt).
    Json {
        /// The result.
        value: serde_json::Value,
    },
}

/// Job phases the runner reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Loading a model.
    Loading,
    /// Running the job.
    Running,
}

/// Why a job failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The input cannot succeed anywhere (bad field, unsupported format).
    BadInput,
    /// This engine cannot serve the task's kind.
    CannotServe,
    /// The engine or a tool it needs is not available on this host.
    EngineUnavailable,
    /// The engine failed on this job.
    Engine,
    /// The runner died (signal or exit code).
    Crashed,
    /// Out of memory.
    Oom,
    /// No progress for too long.
    Stalled,
    /// Past the hard time cap.
    Timeout,
}

impl ErrorClass {
    /// Whether the studio may retry the job elsewhere.
    pub fn retryable(self) -> bool {
        !matches!(self, ErrorClass::BadInput | ErrorClass::CannotServe)
    }

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::BadInput => "bad_input",
            ErrorClass::CannotServe => "cannot_serve",
            ErrorClass::EngineUnavailable => "engine_unavailable",
            ErrorClass::Engine => "engine",
            ErrorClass::Crashed => "crashed",
            ErrorClass::Oom => "oom",
            ErrorClass::Stalled => "stalled",
            ErrorClass::Timeout => "timeout",
        }
    }
}
