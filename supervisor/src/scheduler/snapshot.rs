//! The worker's live state as one value: what the scheduler publishes for
//! `status`, and later for `/status`, metrics and a desktop window.

use serde::{Deserialize, Serialize};

/// Everything a person or a program may want to know about a running
/// worker, as of `at`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// When it was taken (RFC 3339).
    pub at: String,
    /// The supervisor's process id.
    pub pid: u32,
    /// The supervisor's version.
    pub version: String,
    /// What self-update last did (`up to date`, `failed: …`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<String>,
    /// One studio session per GPU slot.
    pub sessions: Vec<SessionStatus>,
    /// Claiming paused by the operator (`disable`).
    pub operator_paused: bool,
    /// Claiming paused through the running worker (`pause`, until
    /// `resume`).
    #[serde(default)]
    pub control_paused: bool,
    /// Shutting down: no new offers, held jobs finishing.
    pub draining: bool,
    /// Held jobs, oldest first.
    pub jobs: Vec<JobStatus>,
    /// Local API requests waiting for the GPU.
    #[serde(default)]
    pub local_queue: usize,
    /// Live runners, one per loaded model.
    pub runners: Vec<RunnerStatus>,
    /// Engines this worker runs.
    #[serde(default)]
    pub engines: Vec<String>,
    /// Engines it cannot run here, with the reason.
    #[serde(default)]
    pub unusable: std::collections::BTreeMap<String, String>,
    /// The Gradio app (with `gradio_endpoint_url`): whether it answers,
    /// the endpoint image jobs call and the field mapping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradio: Option<crate::runner::gradio::AppState>,
    /// The GPU memory ledger, per GPU.
    pub gpus: Vec<GpuStatus>,
    /// The last finished jobs, newest last (at most [`RECENT`]).
    pub recent: Vec<Finished>,
    /// Totals since start.
    pub counters: Counters,
    /// Labelled totals and duration histograms since start (what
    /// `/metrics` exports).
    #[serde(default)]
    pub metrics: super::metrics::Metrics,
}

/// How many finished jobs a snapshot keeps.
pub const RECENT: usize = 50;

/// One studio session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionStatus {
    /// Slot index.
    pub slot: usize,
    /// GPU index, when the slot has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<u32>,
    /// The worker id it runs as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// `connecting`, `connected`, `disconnected`, …
    pub state: String,
    /// Since when (RFC 3339).
    pub since: String,
    /// Why (a disconnect's reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Its claiming paused after runner failures across several models
    /// (each GPU's breakers are its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_pause: Option<Pause>,
    /// Models whose offers it declines after they kept killing runners.
    #[serde(default)]
    pub quarantines: Vec<Quarantine>,
    /// The largest VRAM estimate (GB) it takes.
    #[serde(default)]
    pub threshold_gb: f64,
    /// Milliseconds since its last heartbeat (none sent yet: absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_age_ms: Option<u64>,
    /// Offers are rejected `paused` (operator, `pause`, a drain or a
    /// failure cool-down).
    #[serde(default)]
    pub paused: bool,
}

/// A pause with its reason and end.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pause {
    /// Why.
    pub reason: String,
    /// Until when (RFC 3339).
    pub until: String,
}

/// A quarantined model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quarantine {
    /// Engine.
    pub engine: String,
    /// Registry model id.
    pub model: String,
    /// Until when (RFC 3339).
    pub until: String,
}

/// A held job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    /// Studio job id.
    pub job_id: String,
    /// GPU slot.
    pub slot: usize,
    /// Task kind.
    pub kind: String,
    /// Engine.
    pub engine: String,
    /// Registry model id.
    pub model: String,
    /// `accepted`, `downloading`, `loading`, `running`, `uploading`.
    pub phase: String,
    /// Units done in this phase.
    pub done: u64,
    /// Units in all (0: unknown).
    pub total: u64,
    /// Its runner's process id, once on one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_pid: Option<u32>,
    /// Milliseconds since it was accepted.
    pub age_ms: u64,
    /// What it was asked (the prompt, the last chat message, the text to
    /// speak), as the studio's upload would report it.
    #[serde(default)]
    pub prompt: String,
}

/// A live runner.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerStatus {
    /// Process id.
    pub pid: u32,
    /// Epoch.
    pub epoch: u64,
    /// Engine.
    pub engine: String,
    /// Registry model id it loaded.
    pub model: String,
    /// GPU index, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<u32>,
    /// The job it runs, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// Model loads it reported.
    pub loads: u64,
    /// Host memory its load took.
    pub host_bytes: u64,
    /// Accelerator memory its load took, when reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_bytes: Option<u64>,
    /// Its resident memory now.
    pub rss_bytes: u64,
    /// Milliseconds since it last finished a job (0 while busy).
    pub idle_ms: u64,
    /// Kept loaded whatever happens.
    pub pinned: bool,
}

/// One GPU's ledger.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuStatus {
    /// Index in the probe's order.
    pub index: u32,
    /// Name.
    pub name: String,
    /// Memory in all.
    pub total_bytes: u64,
    /// Free as probed (a fake GPU: as its ledger says).
    pub free_bytes: u64,
    /// Held by resident models.
    pub held_bytes: u64,
    /// Reserved by accepted jobs whose model is not resident yet.
    pub reserved_bytes: u64,
    /// What a new model may take now (free less reserved less margin).
    pub available_bytes: u64,
}

/// A finished job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finished {
    /// Studio job id.
    pub job_id: String,
    /// Task kind.
    pub kind: String,
    /// Registry model id.
    pub model: String,
    /// `completed`, `failed`, `cancelled` (a local job whose client went
    /// away) or `handed back`.
    pub outcome: String,
    /// The error, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Milliseconds from accept to end.
    pub duration_ms: u64,
    /// Tokens generated (a local chat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// When it ended (RFC 3339).
    pub at: String,
}

/// Totals since start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// Offers accepted.
    pub accepted: u64,
    /// Offers rejected.
    pub rejected: u64,
    /// Jobs completed.
    pub completed: u64,
    /// Jobs failed.
    pub failed: u64,
    /// Runners started.
    pub runner_starts: u64,
    /// Runners that died or were killed.
    pub runner_deaths: u64,
    /// Model loads reported.
    pub loads: u64,
}
