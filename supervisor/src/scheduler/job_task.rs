//! The slow work of one job, in its own task: model files, inputs, the
//! runner (started when the model is not resident), the run, the output
//! check. It reports back to the scheduler as events and hands the runner
//! back at the end; it never decides anything the scheduler owns.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use studio_protocol::runner::Phase;
use studio_protocol::studio::JobOfferClaim;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::runners::Lease;
use super::Event;
use crate::failure::JobError;
use crate::jobs::{self, sanitise, JobData};
use crate::models::{DownloadProgress, ModelCache};
use crate::runner::{load_allowance, Limits, RunEvent, RunnerChild};

/// What every job task shares.
pub struct JobEnv {
    /// For inputs.
    pub http: reqwest::Client,
    /// Where model files are fetched to (studio jobs: URLs only).
    pub cache: ModelCache,
    /// The same cache, also taking local `file://` model files in place
    /// (trusted jobs: `studio-worker job`, the config's named models).
    pub local_cache: ModelCache,
    /// Each job gets `scratch_root/<job id>`, removed at its end.
    pub scratch_root: PathBuf,
}

/// Where a job came from, as far as its task needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trust {
    /// Inputs and model files may be local files (never for studio jobs).
    pub local_files: bool,
    /// Only load the model (a pinned model at start).
    pub preload: bool,
    /// Stream generated text (`RunEvent::Delta`; the local API).
    pub stream: bool,
}

/// Runners were stopped to make room for a job on a real GPU: before its
/// runner starts, the job waits (bounded) for the probe to show the room.
pub struct MemoryWait {
    /// The GPU.
    pub gpu: u32,
    /// Bytes the job needs free.
    pub need: u64,
}

/// How long a job waits for evicted memory to show as free.
const MEMORY_WAIT: Duration = Duration::from_secs(30);

/// Waits until the probe shows `w.need` bytes free on `w.gpu`, at most
/// [`MEMORY_WAIT`]; a GPU still short then is logged and the load tried.
async fn wait_for_memory(job_id: &str, w: &MemoryWait) {
    let deadline = Instant::now() + MEMORY_WAIT;
    loop {
        let free = tokio::task::spawn_blocking(crate::gpu::probe)
            .await
            .ok()
            .and_then(|gpus| gpus.into_iter().find(|g| g.index == w.gpu))
            .and_then(|g| g.free_bytes);
        match free {
            Some(f) if f >= w.need => return,
            None => return,
            Some(f) if Instant::now() >= deadline => {
                tracing::warn!(target: "job", job_id = %job_id, "GPU {} still shows only {} free after {} s (the job needs {}); loading anyway", w.gpu, super::ledger::gb(f), MEMORY_WAIT.as_secs(), super::ledger::gb(w.need));
                return;
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Progress reports closer together than this are folded.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// What became of the runner a job had.
pub enum RunnerFate {
    /// Alive and idle again.
    Alive(Box<RunnerChild>),
    /// Died or was killed.
    Dead,
    /// None was started (the job failed before it needed one).
    Unused,
}

/// What a job task tells the scheduler.
pub enum JobReport {
    /// Model files are being fetched.
    Downloading { done: u64, total: u64 },
    /// The job is on runner `pid` and must end by `deadline`.
    Started {
        pid: u32,
        epoch: u64,
        deadline: Instant,
    },
    /// The runner loaded the job's model.
    Loaded {
        host_bytes: u64,
        device_bytes: Option<u64>,
    },
    /// The engine moved forward.
    Progress { phase: Phase, done: u64, total: u64 },
    /// New generated text (a streamed job).
    Delta(String),
    /// The end, with the runner handed back.
    Done {
        runner: RunnerFate,
        result: Result<JobData, JobError>,
    },
}

/// What a job may have to wait for or hear while it runs.
#[derive(Default)]
pub struct Hooks {
    /// Memory to wait for before its runner starts.
    pub wait: Option<MemoryWait>,
    /// Fires when its requester went away (a local job): the runner is
    /// asked to stop generating.
    pub cancel: Option<tokio::sync::oneshot::Receiver<()>>,
}

/// Runs `claim` to its end on `lease` under `limits`, reporting to `tx`.
pub async fn run(
    env: Arc<JobEnv>,
    claim: JobOfferClaim,
    lease: Lease,
    hooks: Hooks,
    trust: Trust,
    limits: Limits,
    tx: mpsc::UnboundedSender<Event>,
) {
    let Hooks { wait, cancel } = hooks;
    let job_id = claim.job_id.clone();
    let report = |r: JobReport| {
        let _ = tx.send(Event::Job {
            job_id: job_id.clone(),
            report: Box::new(r),
        });
    };
    let scratch = env.scratch_root.join(sanitise(&job_id));
    let (mut last_decile, mut last_done) = (u64::MAX, 0u64);
    let mut on_download = |p: DownloadProgress<'_>| {
        // A log line per 10 % (and per new file).
        let decile = (p.done * 10).checked_div(p.total).unwrap_or(0);
        if decile != last_decile || p.done < last_done {
            last_decile = decile;
            tracing::info!(target: "job", job_id = %job_id, "downloading model files: {} of {} MB", p.done >> 20, p.total >> 20);
        }
        last_done = p.done;
        report(JobReport::Downloading {
            done: p.done,
            total: p.total,
        });
    };
    let cache = if trust.local_files {
        &env.local_cache
    } else {
        &env.cache
    };
    let prepared = jobs::prepare(
        &env.http,
        cache,
        &claim,
        &scratch,
        trust.local_files,
        &mut on_download,
    )
    .await
    .map(|(mut request, bytes)| {
        request.preload = trust.preload;
        request.stream = trust.stream;
        (request, bytes)
    });
    let (runner, result) = match prepared {
        Err(e) => (
            match lease {
                Lease::Ready(child) => RunnerFate::Alive(child),
                Lease::Spawn(_) => RunnerFate::Unused,
            },
            Err(e),
        ),
        Ok((request, model_bytes)) => {
            let child = match lease {
                Lease::Ready(child) => Ok(child),
                Lease::Spawn(plan) => {
                    if let Some(w) = &wait {
                        wait_for_memory(&job_id, w).await;
                    }
                    plan.spawn(&job_id).await
                }
            };
            match child {
                Err(f) => (RunnerFate::Dead, Err(JobError::new(f.class, f.message))),
                Ok(mut child) => {
                    let mut last: Option<(Phase, std::time::Instant)> = None;
                    let on_event = |ev: RunEvent| match ev {
                        RunEvent::Started {
                            pid,
                            epoch,
                            deadline,
                        } => report(JobReport::Started {
                            pid,
                            epoch,
                            deadline,
                        }),
                        RunEvent::Loaded {
                            host_bytes,
                            device_bytes,
                        } => report(JobReport::Loaded {
                            host_bytes,
                            device_bytes,
                        }),
                        RunEvent::Progress { phase, done, total } => {
                            let now = std::time::Instant::now();
                            let due = last.is_none_or(|(p, at)| {
                                p != phase
                                    || now.duration_since(at) >= PROGRESS_EVERY
                                    || done == total
                            });
                            if due {
                                last = Some((phase, now));
                                report(JobReport::Progress { phase, done, total });
                            }
                        }
                        RunEvent::Delta(text) => report(JobReport::Delta(text)),
                        RunEvent::Downloading { .. } => {}
                    };
                    let out = child
                        .run_job(
                            request,
                            &limits,
                            load_allowance(model_bytes),
                            cancel,
                            on_event,
                        )
                        .await;
                    match out {
                        Ok(output) => (
                            RunnerFate::Alive(child),
                            jobs::collect(&claim.task, output).await,
                        ),
                        Err(f) => (
                            if f.child_dead {
                                RunnerFate::Dead
                            } else {
                                RunnerFate::Alive(child)
                            },
                            Err(JobError::new(f.class, f.message)),
                        ),
                    }
                }
            }
        }
    };
    // Most jobs never write there: a stat here saves a trip through the
    // blocking pool per job.
    if scratch.exists() {
        let _ = tokio::fs::remove_dir_all(&scratch).await;
    }
    report(JobReport::Done { runner, result });
}
