//! The steps of one claimed job that are not the runner's: fetch its model
//! files and inputs, build the runner's request, and check the output is
//! what was asked for. The scheduler's job task strings them together with
//! the runner, for studio offers and `studio-worker job` alike.

pub mod table;

use std::collections::BTreeMap;
use std::path::Path;

use studio_protocol::runner::{ErrorClass, JobOutput, JobRequest};
use studio_protocol::studio::{JobOfferClaim, Task};

use crate::fetch::fetch_input;
use crate::models::{DownloadProgress, ModelCache};

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

pub use crate::failure::JobError;

/// Fetches a claim's model files and inputs into place and builds the
/// runner's request; also returns the model files' total size (for the
/// load allowance). `allow_local_inputs` lets inputs name local files
/// (only for `studio-worker job`, never for studio offers).
pub async fn prepare(
    http: &reqwest::Client,
    cache: &ModelCache,
    claim: &JobOfferClaim,
    scratch: &Path,
    allow_local_inputs: bool,
    on_download: &mut (dyn FnMut(DownloadProgress<'_>) + Send),
) -> Result<(JobRequest, u64), JobError> {
    let err = JobError::new;
    let model_files = cache
        .ensure(
            &claim.model_source.engine,
            &claim.model,
            &claim.model_source.files,
            on_download,
        )
        .await
        .map_err(|e| err(e.class(), e.to_string()))?;
    let mut inputs = BTreeMap::new();
    for (field, source) in input_urls(&claim.task) {
        let path = fetch_input(http, field, source, scratch, allow_local_inputs)
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
    let mut model_bytes = 0u64;
    for path in model_files.values() {
        model_bytes += tokio::fs::metadata(path)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
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
        preload: false,
        stream: false,
    };
    Ok((request, model_bytes))
}

/// Turns a runner's output into what is delivered, checking it is what the
/// task asked for (a runner's output file is read and removed).
pub async fn collect(task: &Task, output: JobOutput) -> Result<JobData, JobError> {
    let data = match output {
        JobOutput::Bytes { data, ext } => JobData::Bytes { data, ext },
        JobOutput::File { path, ext } => {
            let data = tokio::fs::read(&path).await.map_err(|e| {
                JobError::new(
                    ErrorClass::Engine,
                    format!("cannot read runner output {path}: {e}"),
                )
            })?;
            let _ = tokio::fs::remove_file(&path).await;
            JobData::Bytes { data, ext }
        }
        JobOutput::Json { value } => JobData::Json(value),
    };
    check_shape(task, &data).map_err(|m| JobError::new(ErrorClass::Engine, m))?;
    Ok(data)
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
