//! The executor task: runs claimed jobs one at a time on the runner pool
//! and delivers binary results over HTTP itself, so delivery does not
//! depend on the socket that carried the offer.

use std::path::PathBuf;
use std::time::Duration;

use studio_protocol::runner::Phase;
use studio_protocol::studio::JobOfferClaim;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::deliver::{keep_result, upload, ResultUpload, UploadError, UploadTarget};
use crate::jobs::table::{JobPhase, RunnerRef};
use crate::jobs::{Executor, JobData};
use crate::runner::RunEvent;

/// A job for the executor, tagged with the session that accepted it.
pub struct ExecRequest {
    /// The parsed claim.
    pub claim: JobOfferClaim,
    /// Session generation that owns the claim.
    pub gen: u64,
}

/// How a job ended, for the session to report.
pub struct JobReport {
    /// The job.
    pub job_id: String,
    /// Session generation that owned the claim.
    pub gen: u64,
    /// Full prompt (§5.7).
    pub prompt: String,
    /// What happened.
    pub outcome: Outcome,
}

/// A job's progress or end.
pub enum Outcome {
    /// Not final: the job moved to `phase` (on `runner`, due by
    /// `deadline`). `Uploading` is sent before the upload starts: the
    /// studio may offer the next job before the upload's answer reaches us.
    Phase {
        phase: JobPhase,
        runner: Option<RunnerRef>,
        deadline: Option<Instant>,
    },
    /// A binary result reached the studio over HTTP.
    Uploaded { ext: String, bytes: usize },
    /// A JSON result for `completeJson`.
    Json(serde_json::Value),
    /// The job failed; `worker_caused` when a runner died or hung.
    Failed {
        error: String,
        retryable: bool,
        worker_caused: bool,
    },
}

/// What delivery needs.
pub struct Delivery {
    pub http: reqwest::Client,
    pub target: UploadTarget,
    pub live_gen: watch::Receiver<u64>,
    pub attempts: u32,
    pub results_dir: PathBuf,
    pub results_max_bytes: u64,
}

/// Runs until the request channel closes, then stops the runners.
pub async fn run(
    mut exec: Executor,
    mut rx: mpsc::Receiver<ExecRequest>,
    tx: mpsc::UnboundedSender<JobReport>,
    delivery: Delivery,
) {
    while let Some(req) = rx.recv().await {
        let job_id = req.claim.job_id.clone();
        let prompt = req.claim.task.reported_prompt();
        let phase = |phase, runner, deadline| JobReport {
            job_id: job_id.clone(),
            gen: req.gen,
            prompt: String::new(),
            outcome: Outcome::Phase {
                phase,
                runner,
                deadline,
            },
        };
        // Forward phase changes (not every progress tick) to the table.
        let mut last = JobPhase::Accepted;
        let (mut last_decile, mut last_done) = (u64::MAX, 0u64);
        let events_tx = tx.clone();
        let mut on_event = |ev: RunEvent| {
            let (p, runner, deadline) = match ev {
                RunEvent::Started {
                    pid,
                    epoch,
                    deadline,
                } => (
                    JobPhase::Running,
                    Some(RunnerRef { pid, epoch }),
                    Some(deadline),
                ),
                RunEvent::Downloading { done, total } => {
                    // A log line per 10 % (and per new file).
                    let decile = (done * 10).checked_div(total).unwrap_or(0);
                    if decile != last_decile || done < last_done {
                        last_decile = decile;
                        tracing::info!(target: "job", job_id = %job_id, "downloading model files: {} of {} MB", done >> 20, total >> 20);
                    }
                    last_done = done;
                    (JobPhase::Downloading, None, None)
                }
                RunEvent::Progress {
                    phase: Phase::Loading,
                    ..
                } => (JobPhase::Loading, None, None),
                RunEvent::Progress {
                    phase: Phase::Running,
                    ..
                } => (JobPhase::Running, None, None),
            };
            if p != last || runner.is_some() {
                last = p;
                let _ = events_tx.send(phase(p, runner, deadline));
            }
        };
        tracing::info!(target: "job", job_id = %job_id, "running {} on {} (model {})", req.claim.task.kind(), req.claim.model_source.engine, req.claim.model);
        let outcome = match exec.execute(&req.claim, &mut on_event).await {
            Ok(JobData::Json(v)) => Outcome::Json(v),
            Ok(JobData::Bytes { data, ext }) => {
                if tx.send(phase(JobPhase::Uploading, None, None)).is_err() {
                    break;
                }
                deliver_bytes(&delivery, req.gen, &job_id, &prompt, &ext, data).await
            }
            Err(e) => {
                tracing::warn!(target: "job", job_id = %job_id, "job failed ({}): {}", e.class.as_str(), e.message);
                Outcome::Failed {
                    retryable: e.retryable(),
                    worker_caused: e.worker_caused(),
                    error: e.message,
                }
            }
        };
        if tx
            .send(JobReport {
                job_id,
                gen: req.gen,
                prompt,
                outcome,
            })
            .is_err()
        {
            break;
        }
    }
    exec.pool().shutdown(Duration::from_secs(2)).await;
}

async fn deliver_bytes(
    d: &Delivery,
    gen: u64,
    job_id: &str,
    prompt: &str,
    ext: &str,
    data: Vec<u8>,
) -> Outcome {
    let live = d.live_gen.clone();
    let item = ResultUpload {
        job_id,
        prompt,
        ext,
        data: &data,
    };
    match upload(&d.http, &d.target, &item, d.attempts, move || {
        *live.borrow() == gen
    })
    .await
    {
        Ok(()) => {
            tracing::info!(target: "upload", job_id = %job_id, "uploaded {} bytes of {ext}", data.len());
            Outcome::Uploaded {
                ext: ext.to_string(),
                bytes: data.len(),
            }
        }
        Err(e) => {
            let kept = match keep_result(&d.results_dir, job_id, ext, &data, d.results_max_bytes) {
                Ok(p) => format!("; result kept at {}", p.display()),
                Err(io) => format!("; could not keep the result either: {io}"),
            };
            tracing::error!(target: "upload", job_id = %job_id, "{e}{kept}");
            let retryable = !matches!(e, UploadError::Refused { status: 400, .. });
            Outcome::Failed {
                error: format!("{e}{kept}"),
                retryable,
                worker_caused: false,
            }
        }
    }
}
