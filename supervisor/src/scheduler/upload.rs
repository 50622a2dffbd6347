//! A binary result's upload, as its own task: the GPU is free for the next
//! job while it runs, and a result that cannot be delivered is kept on
//! disk.

use std::path::PathBuf;

use tokio::sync::{mpsc, watch};

use super::Event;
use crate::deliver::{keep_result, upload, ResultUpload, UploadError, UploadTarget};

/// What uploads need.
#[derive(Clone)]
pub struct UploadEnv {
    /// The HTTP client.
    pub http: reqwest::Client,
    /// Tries per upload.
    pub attempts: u32,
    /// Where undeliverable results are kept.
    pub results_dir: PathBuf,
    /// Cap on that directory.
    pub results_max_bytes: u64,
}

/// How an upload ended.
pub enum Uploaded {
    /// The studio has the result.
    Done {
        ext: String,
        bytes: usize,
        /// Attempts beyond the first.
        retries: u32,
    },
    /// It does not; `error` says where the result was kept.
    Failed {
        error: String,
        retryable: bool,
        /// Attempts beyond the first.
        retries: u32,
        /// The result is on disk.
        kept: bool,
    },
}

/// One upload; `live` is the slot's live session generation, `gen` the one
/// that owns the claim (a retry stops when the claim is gone).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    env: UploadEnv,
    target: UploadTarget,
    live: watch::Receiver<u64>,
    gen: u64,
    job_id: String,
    prompt: String,
    ext: String,
    data: Vec<u8>,
    tx: mpsc::UnboundedSender<Event>,
) {
    let item = ResultUpload {
        job_id: &job_id,
        prompt: &prompt,
        ext: &ext,
        data: &data,
    };
    let outcome = match upload(&env.http, &target, &item, env.attempts, move || {
        *live.borrow() == gen
    })
    .await
    {
        Ok(attempts) => {
            tracing::info!(target: "upload", job_id = %job_id, "uploaded {} bytes of {ext}", data.len());
            Uploaded::Done {
                ext: ext.clone(),
                bytes: data.len(),
                retries: attempts.saturating_sub(1),
            }
        }
        Err(e) => {
            let kept = keep_result(
                &env.results_dir,
                &job_id,
                &ext,
                &data,
                env.results_max_bytes,
            );
            let note = match &kept {
                Ok(p) => format!("; result kept at {}", p.display()),
                Err(io) => format!("; could not keep the result either: {io}"),
            };
            tracing::error!(target: "upload", job_id = %job_id, "{e}{note}");
            let retries = match &e {
                UploadError::Exhausted { attempts, .. } => attempts.saturating_sub(1),
                UploadError::Refused { .. } => 0,
            };
            Uploaded::Failed {
                error: format!("{e}{note}"),
                retryable: !matches!(e, UploadError::Refused { status: 400, .. }),
                retries,
                kept: kept.is_ok(),
            }
        }
    };
    let _ = tx.send(Event::UploadDone { job_id, outcome });
}
