//! WebSocket frames, one JSON object per text frame, tagged by `type`
//! (Part B §2.3–2.4).

use serde::{Deserialize, Serialize};

use super::{JobOfferClaim, LogEntry, WorkerCapabilities};
use crate::Secret;

/// The WebSocket subprotocol both sides must name.
pub const SUBPROTOCOL: &str = "studio-worker-v1";

/// Worker → studio frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum WorkerFrame {
    /// First frame after the upgrade.
    #[serde(rename_all = "camelCase")]
    Hello {
        /// Same token as the upgrade bearer.
        auth_token: Secret,
        /// Full snapshot.
        capabilities: WorkerCapabilities,
    },
    /// Every 5 s after `welcome`.
    #[serde(rename_all = "camelCase")]
    Heartbeat {
        /// Current snapshot.
        capabilities: WorkerCapabilities,
        /// The job running now.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        current_job_id: Option<String>,
    },
    /// The worker takes the offer.
    #[serde(rename_all = "camelCase")]
    Accept {
        /// The offered job.
        job_id: String,
    },
    /// The worker will not take the offer.
    #[serde(rename_all = "camelCase")]
    Reject {
        /// The offered job.
        job_id: String,
        /// Human text.
        reason: String,
        /// Machine classification.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<RejectCode>,
    },
    /// JSON result (llm, audio_stt).
    #[serde(rename_all = "camelCase")]
    CompleteJson {
        /// The job.
        job_id: String,
        /// The result document.
        result: serde_json::Value,
        /// The full prompt.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prompt: Option<String>,
    },
    /// The job failed.
    #[serde(rename_all = "camelCase")]
    Fail {
        /// The job.
        job_id: String,
        /// What went wrong.
        error: String,
        /// Whether another attempt may succeed.
        retryable: bool,
    },
    /// Buffered log lines.
    LogBatch {
        /// The lines.
        entries: Vec<LogEntry>,
    },
    /// Defined but never sent (it raced the studio's own next offer).
    ReadyForMore,
}

/// Why an offer was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RejectCode {
    /// A job already runs.
    Busy,
    /// Claiming is paused.
    Paused,
}

/// Studio → worker frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum StudioFrame {
    /// The session is authenticated.
    #[serde(rename_all = "camelCase")]
    Welcome {
        /// Authenticated worker id.
        worker_id: String,
        /// Studio clock.
        server_time: String,
    },
    /// A job for this worker. The claim stays raw here: it is parsed with
    /// [`JobOfferClaim::from_value`] so a broken claim can be failed by id.
    Offer {
        /// The claim object.
        claim: serde_json::Value,
    },
    /// One per heartbeat.
    HeartbeatAck,
    /// A `completeJson` was persisted.
    #[serde(rename_all = "camelCase")]
    CompleteAck {
        /// The job.
        job_id: String,
    },
    /// A `fail` was persisted.
    #[serde(rename_all = "camelCase")]
    FailAck {
        /// The job.
        job_id: String,
    },
    /// A terminal or transient studio error.
    Error {
        /// Machine code.
        code: ErrorCode,
        /// Human text.
        message: String,
    },
}

impl StudioFrame {
    /// An offer frame for a typed claim.
    pub fn offer(claim: &JobOfferClaim) -> Self {
        StudioFrame::Offer {
            claim: serde_json::to_value(claim).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// Studio `error.code` values (snake_case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Token invalid or revoked (close 4001).
    AuthFailed,
    /// Out-of-order frame, unknown job id (close 4002).
    ProtocolViolation,
    /// Another socket holds this worker id (close 4003).
    DuplicateWorker,
    /// The operator deleted the worker (close 4004).
    WorkerDeleted,
    /// Studio-side fault.
    InternalError,
    /// A code this worker does not know.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// True when the worker must stop instead of reconnecting.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ErrorCode::AuthFailed | ErrorCode::WorkerDeleted | ErrorCode::DuplicateWorker
        )
    }
}
