//! The synthetic engine: deterministic, real outputs for every kind with no
//! model. Every output is keyed by the SHA-256 of the task as JSON, so the
//! same task always gives the same bytes.

mod audio;
mod image;
mod llm;
mod video;

use sha2::{Digest, Sha256};
use studio_protocol::runner::{JobOutput, JobRequest};
use studio_protocol::studio::Task;

use crate::engine::{Engine, EngineError, Reporter};

/// The synthetic engine. It has no weights, but it treats each distinct
/// `model` id as a model of its own: the first job on one reports a load
/// (of nothing), so residency works the same as for real engines.
#[derive(Debug, Default)]
pub struct Synthetic {
    model: Option<String>,
}

impl Engine for Synthetic {
    fn name(&self) -> &'static str {
        "synthetic"
    }

    fn run(
        &mut self,
        job: &JobRequest,
        report: &mut dyn Reporter,
    ) -> Result<JobOutput, EngineError> {
        self.preload(job, report)?;
        let key = task_key(&job.task);
        match &job.task {
            Task::Image(t) => image::run(t, &key, report),
            Task::Llm(t) => llm::run(t, &key, report),
            Task::AudioStt(t) => audio::transcribe(t, job, report),
            Task::AudioTts(t) => audio::speak(t, &key, report),
            Task::Video(t) => video::run(t, &key, job, report),
        }
    }

    fn preload(&mut self, job: &JobRequest, report: &mut dyn Reporter) -> Result<(), EngineError> {
        if self.model.as_deref() != Some(job.model.as_str()) {
            report.loaded(0, None);
            self.model = Some(job.model.clone());
        }
        Ok(())
    }
}

/// SHA-256 of the task's JSON form.
pub(crate) fn task_key(task: &Task) -> [u8; 32] {
    let json = serde_json::to_vec(task).unwrap_or_default();
    Sha256::digest(&json).into()
}

/// The first 8 bytes of a key as 16 hex digits.
pub(crate) fn short_hex(key: &[u8; 32]) -> String {
    hex::encode(&key[..8])
}
