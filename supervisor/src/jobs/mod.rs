//! Running one claimed job: fetch its inputs, run it on the runner for its
//! engine, check the output is what was asked for. Delivery to the studio
//! is the caller's business (`session`), so `studio-worker job` shares
//! this path exactly.

pub mod table;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;

use studio_protocol::runner::{ErrorClass, JobOutput, JobRequest};
use studio_protocol::studio::{JobOfferClaim, Task};

use crate::fetch::fetch_input;
use crate::models::{DownloadProgress, ModelCache};
use crate::runner::{RunEvent, RunnerPool};

/// What a job produced, ready to deliver.
#[derive(Debug, Clone, PartialEq)]
pub enum JobData {
    /// Bytes for the multipart upload.
    Bytes {
        /// The encoded output.
        data: Vec<u8>,
        /// Its extension (always the requested one).
        ext: String,
    },
    /// A JSON document for `completeJson`.
    Json(serde_json::Value),
}

/// A failed job.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct JobError {
    /// Classification.
    pub class: ErrorClass,
    /// What went wrong.
    pub message: String,
    /// The job has killed a runner twice: never retry it.
    pub poison: bool,
}

impl JobError {
    fn new(class: ErrorClass, message: String) -> Self {
        Self {
            class,
            message,
            poison: false,
        }
    }

    /// Whether the studio may retry the job.
    pub fn retryable(&self) -> bool {
        !self.poison && self.class.retryable()
    }

    /// True when the worker, not the input, failed (a dead or stuck
    /// runner): these count towards the failure breaker.
    pub fn worker_caused(&self) -> bool {
        kills_runner(self.class)
    }
}

/// Failure classes that mean the runner died or was killed.
fn kills_runner(class: ErrorClass) -> bool {
    matches!(
        class,
        ErrorClass::Crashed | ErrorClass::Oom | ErrorClass::Stalled | ErrorClass::Timeout
    )
}

/// Jobs remembered for poison detection.
const CRASH_MEMORY: usize = 256;

/// Runs jobs on a pool; owned by exactly one task.
pub struct Executor {
    pool: RunnerPool,
    http: reqwest::Client,
    scratch_root: PathBuf,
    allow_local_inputs: bool,
    /// Recent jobs that killed a runner, with how often.
    crashes: VecDeque<(String, u32)>,
    /// Where `modelSource.files` are fetched to.
    cache: ModelCache,
}

impl Executor {
    /// An executor over `pool`. `allow_local_inputs` lets inputs name local
    /// files (only for `studio-worker job`, never for studio offers).
    pub fn new(
        pool: RunnerPool,
        cache: ModelCache,
        http: reqwest::Client,
        allow_local_inputs: bool,
    ) -> Self {
        let scratch_root =
            std::env::temp_dir().join(format!("studio-worker-{}", std::process::id()));
        Self {
            pool,
            http,
            scratch_root,
            allow_local_inputs,
            crashes: VecDeque::new(),
            cache,
        }
    }

    /// The pool (for capabilities and shutdown).
    pub fn pool(&mut self) -> &mut RunnerPool {
        &mut self.pool
    }

    /// Runs `claim` to an output; `on_event` sees the runner it lands on
    /// and its progress.
    pub async fn execute(
        &mut self,
        claim: &JobOfferClaim,
        on_event: &mut (dyn FnMut(RunEvent) + Send),
    ) -> Result<JobData, JobError> {
        let scratch = self.scratch_root.join(sanitise(&claim.job_id));
        let mut result = self.execute_in(claim, &scratch, on_event).await;
        let _ = tokio::fs::remove_dir_all(&scratch).await;
        if let Err(e) = &mut result {
            if kills_runner(e.class) && self.count_crash(&claim.job_id) >= 2 {
                e.poison = true;
                e.message = format!(
                    "poison job: it took down the runner twice; last time: {}",
                    e.message
                );
            }
        }
        result
    }

    /// Counts a runner death for `job_id`; returns the count so far.
    fn count_crash(&mut self, job_id: &str) -> u32 {
        if let Some(entry) = self.crashes.iter_mut().find(|(id, _)| id == job_id) {
            entry.1 += 1;
            return entry.1;
        }
        if self.crashes.len() == CRASH_MEMORY {
            self.crashes.pop_front();
        }
        self.crashes.push_back((job_id.to_string(), 1));
        1
    }

    async fn execute_in(
        &mut self,
        claim: &JobOfferClaim,
        scratch: &std::path::Path,
        on_event: &mut (dyn FnMut(RunEvent) + Send),
    ) -> Result<JobData, JobError> {
        let err = JobError::new;
        self.pool
            .catalog()
            .check(&claim.model_source.engine, claim.task.kind())
            .map_err(|f| err(f.class, f.message))?;
        let model_files = {
            let mut on_download = |p: DownloadProgress<'_>| {
                on_event(RunEvent::Downloading {
                    done: p.done,
                    total: p.total,
                })
            };
            self.cache
                .ensure(
                    &claim.model_source.engine,
                    &claim.model,
                    &claim.model_source.files,
                    &mut on_download,
                )
                .await
                .map_err(|e| err(e.class(), e.to_string()))?
        };
        let mut inputs = BTreeMap::new();
        for (field, source) in input_urls(&claim.task) {
            let path = fetch_input(&self.http, field, source, scratch, self.allow_local_inputs)
                .await
                .map_err(|e| {
                    let class = if e.retryable() {
                        ErrorClass::Engine
                    } else {
                        ErrorClass::BadInput
                    };
                    err(class, e.to_string())
                })?;
            inputs.insert(field.to_string(), path.to_string_lossy().into_owned());
        }
        let request = JobRequest {
            job_id: claim.job_id.clone(),
            epoch: 0,
            task: claim.task.clone(),
            model: claim.model.clone(),
            model_source: claim.model_source.clone(),
            model_files,
            inputs,
            scratch_dir: Some(scratch.to_string_lossy().into_owned()),
        };
        // Big models get more time before the load counts as a stall.
        let mut model_bytes = 0u64;
        for path in request.model_files.values() {
            model_bytes += tokio::fs::metadata(path)
                .await
                .map(|m| m.len())
                .unwrap_or(0);
        }
        let output = self
            .pool
            .run(
                &claim.model_source.engine,
                request,
                crate::runner::load_allowance(model_bytes),
                on_event,
            )
            .await
            .map_err(|f| err(f.class, f.message))?;
        let data = match output {
            JobOutput::Bytes { data, ext } => JobData::Bytes { data, ext },
            JobOutput::File { path, ext } => {
                let data = tokio::fs::read(&path).await.map_err(|e| {
                    err(
                        ErrorClass::Engine,
                        format!("cannot read runner output {path}: {e}"),
                    )
                })?;
                let _ = tokio::fs::remove_file(&path).await;
                JobData::Bytes { data, ext }
            }
            JobOutput::Json { value } => JobData::Json(value),
        };
        check_shape(&claim.task, &data).map_err(|m| err(ErrorClass::Engine, m))?;
        Ok(data)
    }
}

/// The task's URL fields that must be fetched, by wire name.
fn input_urls(task: &Task) -> Vec<(&'static str, &str)> {
    let mut v = Vec::new();
    match task {
        Task::AudioStt(t) => v.push(("inputUrl", t.input_url.as_str())),
        Task::Image(t) => {
            for (name, u) in [
                ("initImageUrl", &t.init_image_url),
                ("maskUrl", &t.mask_url),
                ("refImageUrl", &t.ref_image_url),
            ] {
                if let Some(u) = u {
                    v.push((name, u.as_str()));
                }
            }
        }
        Task::Video(t) => {
            if let Some(u) = &t.init_image_url {
                v.push(("initImageUrl", u.as_str()));
            }
        }
        Task::Llm(_) | Task::AudioTts(_) => {}
    }
    v
}

/// Binary kinds must yield bytes in the requested format; JSON kinds JSON.
fn check_shape(task: &Task, data: &JobData) -> Result<(), String> {
    match (task.requested_ext(), data) {
        (Some(want), JobData::Bytes { ext, .. }) if want.eq_ignore_ascii_case(ext) => Ok(()),
        (Some(want), JobData::Bytes { ext, .. }) => Err(format!(
            "engine produced `{ext}` but the task asked for `{want}`"
        )),
        (None, JobData::Json(_)) => Ok(()),
        (Some(_), JobData::Json(_)) => {
            Err(format!("engine returned JSON for a {} task", task.kind()))
        }
        (None, JobData::Bytes { .. }) => {
            Err(format!("engine returned bytes for a {} task", task.kind()))
        }
    }
}

/// A job id safe to use as a file name.
pub fn sanitise(id: &str) -> String {
    safe_name(id, "job")
}

/// `s` with everything but ASCII letters, digits, `-`, `_` and `.` turned
/// into `_`, prefixed with `prefix` when empty or hidden (leading dot): one
/// path component that cannot escape its directory.
pub fn safe_name(s: &str, prefix: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() || clean.starts_with('.') {
        format!("{prefix}{clean}")
    } else {
        clean
    }
}
