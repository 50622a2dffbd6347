//! The `claim` of an `offer`, parsed in steps so that a broken claim that
//! still names its `jobId` can be accepted and failed with a reason naming
//! the field (Part A A3), instead of killing the session.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{ModelSource, Task, TaskKind};

/// A parsed job offer (Part B §2.2.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobOfferClaim {
    /// Job id, echoed in every job frame.
    pub job_id: String,
    /// Owning game.
    pub game_id: String,
    /// Asset name.
    pub asset_name: String,
    /// Registry model id.
    pub model: String,
    /// Estimated VRAM need in GB.
    pub vram_gb_estimate: f64,
    /// The work.
    pub task: Task,
    /// Engine and files.
    pub model_source: ModelSource,
}

/// The claim with its two large objects left raw, parsed first.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawClaim {
    job_id: String,
    game_id: String,
    asset_name: String,
    model: String,
    vram_gb_estimate: f64,
    task: serde_json::Value,
    model_source: serde_json::Value,
}

/// Why a claim could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClaimError {
    /// No usable `jobId`: nothing can be replied.
    #[error("offer claim has no jobId: {0}")]
    NoJobId(String),
    /// The claim names a job but is invalid; `field` is a dotted path.
    #[error("invalid offer: {field}: {message}")]
    Invalid {
        /// The job to fail.
        job_id: String,
        /// Dotted path of the offending field, e.g. `task.width`.
        field: String,
        /// What was wrong.
        message: String,
    },
}

impl JobOfferClaim {
    /// Parses and validates a raw claim.
    pub fn from_value(value: &serde_json::Value) -> Result<Self, ClaimError> {
        let job_id = match value.get("jobId") {
            Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
            Some(other) => return Err(ClaimError::NoJobId(format!("jobId is {other}"))),
            None => return Err(ClaimError::NoJobId("jobId is missing".into())),
        };
        let invalid = |(field, message): (String, String)| ClaimError::Invalid {
            job_id: job_id.clone(),
            field,
            message,
        };
        if !value.is_object() {
            return Err(invalid(("claim".into(), "is not an object".into())));
        }
        let raw: RawClaim = parse_at(value, "").map_err(invalid)?;
        let task = Task::from_json(&raw.task).map_err(invalid)?;
        let model_source: ModelSource =
            parse_at(&raw.model_source, "modelSource").map_err(invalid)?;
        if let Err(reason) = task.validate() {
            let (field, message) = reason
                .split_once(": ")
                .map(|(f, m)| (f.to_string(), m.to_string()))
                .unwrap_or_else(|| ("task".into(), reason.clone()));
            return Err(invalid((field, message)));
        }
        if !raw.vram_gb_estimate.is_finite() || raw.vram_gb_estimate < 0.0 {
            return Err(invalid((
                "vramGbEstimate".into(),
                format!("{} is not a size", raw.vram_gb_estimate),
            )));
        }
        Ok(JobOfferClaim {
            job_id: raw.job_id,
            game_id: raw.game_id,
            asset_name: raw.asset_name,
            model: raw.model,
            vram_gb_estimate: raw.vram_gb_estimate,
            task,
            model_source,
        })
    }
}

impl Task {
    /// Parses a task object; an error is `(dotted field, message)`, e.g.
    /// `("task.width", "invalid value: integer `-5`, expected u32")`.
    pub fn from_json(value: &serde_json::Value) -> Result<Task, (String, String)> {
        if !value.is_object() {
            return Err(("task".into(), "is not an object".into()));
        }
        let kind = match value.get("kind") {
            Some(serde_json::Value::String(s)) => s.as_str(),
            Some(other) => return Err(("task.kind".into(), format!("{other} is not a string"))),
            None => return Err(("task.kind".into(), "missing".into())),
        };
        let kind = TaskKind::parse(kind).ok_or_else(|| {
            let known: Vec<&str> = TaskKind::ALL.iter().map(|k| k.as_str()).collect();
            (
                "task.kind".to_string(),
                format!(
                    "unknown kind `{kind}`, expected one of {}",
                    known.join(", ")
                ),
            )
        })?;
        Ok(match kind {
            TaskKind::Image => Task::Image(parse_at(value, "task")?),
            TaskKind::Llm => Task::Llm(parse_at(value, "task")?),
            TaskKind::AudioStt => Task::AudioStt(parse_at(value, "task")?),
            TaskKind::AudioTts => Task::AudioTts(parse_at(value, "task")?),
            TaskKind::Video => Task::Video(parse_at(value, "task")?),
        })
    }
}

/// Deserialises `value`, reporting an error as the dotted path below
/// `prefix` plus serde's message.
fn parse_at<T: DeserializeOwned>(
    value: &serde_json::Value,
    prefix: &str,
) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        let mut parts: Vec<String> = Vec::new();
        if !prefix.is_empty() {
            parts.push(prefix.to_string());
        }
        if path != "." {
            parts.push(path);
        }
        // serde names a missing field only in its message.
        if let Some(name) = missing_field(&message) {
            parts.push(name.to_string());
        }
        let field = if parts.is_empty() {
            "claim".to_string()
        } else {
            parts.join(".")
        };
        (field, message)
    })
}

fn missing_field(msg: &str) -> Option<&str> {
    let rest = msg.strip_prefix("missing field `")?;
    rest.split('`').next()
}
