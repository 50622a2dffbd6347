//! `WorkerCapabilities` and `LogEntry` (studio-protocol.md Part B §2.2.1–2).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What the worker advertises in `hello`, every `heartbeat` and the
/// registration bodies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerCapabilities {
    /// Host name.
    pub machine_name: String,
    /// OS user running the worker.
    pub username: String,
    /// Crate version of the worker.
    pub agent_version: String,
    /// `"multi"` in production.
    pub engine: String,
    /// Detected GPU memory in GB, 0 when unknown.
    pub vram_total_gb: f64,
    /// Largest `vramGbEstimate` the worker will take.
    pub vram_threshold_gb: f64,
    /// False while claiming is paused.
    pub auto_enabled: bool,
    /// Start-with-machine setting.
    pub auto_start: bool,
    /// Update automatically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_update: Option<bool>,
    /// UI starts minimised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_minimised: Option<bool>,
    /// Take work only while the person is away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_when_idle: Option<bool>,
    /// Presence, omitted while unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_presence: Option<UserPresence>,
    /// Flat, sorted, de-duplicated model ids across kinds.
    pub supported_models: Vec<String>,
    /// Kinds served.
    #[serde(default, deserialize_with = "null_as_default")]
    pub task_kinds: Vec<String>,
    /// Model ids per kind.
    #[serde(default, deserialize_with = "null_as_default")]
    pub supported_models_per_kind: BTreeMap<String, Vec<String>>,
}

/// Whether the person at the machine is using it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserPresence {
    /// No input for a while.
    Idle,
    /// Someone is at the keyboard.
    Active,
}

/// One log line shipped in a `logBatch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    /// RFC 3339 UTC with milliseconds and `Z`.
    pub ts: String,
    /// Severity.
    pub level: LogLevel,
    /// Source tag, e.g. `ws`, `engine`.
    pub category: String,
    /// The line.
    pub message: String,
    /// The job the line concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
}

/// Log severity on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Informational.
    Info,
    /// Something odd, the worker continues.
    Warn,
    /// Something failed.
    Error,
}

pub(crate) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
