//! The contract between the runner loop and an engine family.

use studio_protocol::runner::{ErrorClass, JobOutput, JobRequest, Phase};
use studio_protocol::studio::LogLevel;

/// A failed job, classified.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct EngineError {
    /// Classification (drives `retryable`).
    pub class: ErrorClass,
    /// What went wrong, naming the field or tool.
    pub message: String,
}

impl EngineError {
    /// A bad task field: not retryable.
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::BadInput,
            message: message.into(),
        }
    }
    /// A missing engine or tool on this host.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::EngineUnavailable,
            message: message.into(),
        }
    }
    /// A task kind this engine does not serve.
    pub fn cannot_serve(engine: &str, task: &studio_protocol::studio::Task) -> Self {
        Self {
            class: ErrorClass::CannotServe,
            message: format!("{engine} engine cannot serve {} tasks", task.kind()),
        }
    }
    /// A failure inside the engine.
    pub fn engine(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Engine,
            message: message.into(),
        }
    }
}

/// What an engine may tell the supervisor while it works.
pub trait Reporter {
    /// Progress (extends the stall deadline).
    fn progress(&mut self, phase: Phase, done: u64, total: u64);
    /// A log line for this job.
    fn log(&mut self, level: LogLevel, message: String);
    /// The job's model finished loading (see [`Loads::record`]).
    fn loaded(&mut self, host_bytes: u64, device_bytes: Option<u64>);
    /// New generated text, for a job that asked to stream (ignored
    /// otherwise).
    fn delta(&mut self, _text: &str) {}
    /// True once the supervisor asked to stop this job: an engine that can
    /// ends it early with what it has.
    fn cancelled(&self) -> bool {
        false
    }
}

/// Streams a growing reply as `delta`s, holding back the last
/// `hold` bytes (a stop string could still end there and cut them).
#[derive(Debug, Default)]
pub struct Deltas {
    sent: usize,
    hold: usize,
}

impl Deltas {
    /// Holds back enough for the longest of `stops` but one byte.
    pub fn new(stops: &[String]) -> Self {
        Self {
            sent: 0,
            hold: stops
                .iter()
                .map(String::len)
                .max()
                .unwrap_or(0)
                .saturating_sub(1),
        }
    }

    /// `text` is the reply so far: sends what is settled.
    pub fn push(&mut self, text: &str, report: &mut dyn Reporter) {
        let mut end = text.len().saturating_sub(self.hold);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        if end > self.sent {
            report.delta(&text[self.sent..end]);
            self.sent = end;
        }
    }

    /// `text` is the final reply (cut at a stop string): sends the rest.
    pub fn finish(&mut self, text: &str, report: &mut dyn Reporter) {
        if text.len() > self.sent && text.is_char_boundary(self.sent) {
            report.delta(&text[self.sent..]);
            self.sent = text.len();
        }
    }
}

/// One engine family inside a runner.
pub trait Engine: Send {
    /// The engine's wire name (`synthetic`, `llama-cpp`, ...).
    fn name(&self) -> &'static str;
    /// Runs one job to completion.
    fn run(
        &mut self,
        job: &JobRequest,
        report: &mut dyn Reporter,
    ) -> Result<JobOutput, EngineError>;
    /// Loads the job's model and keeps it, without running the task (a
    /// pinned model at start). Reports `loaded` like a job's load.
    fn preload(&mut self, job: &JobRequest, report: &mut dyn Reporter) -> Result<(), EngineError>;
}

/// The one model file of a single-file engine (llama.cpp GGUF, whisper.cpp
/// ggml): the job's file with role `model`, or its only file; with no files,
/// `default` (the runner's `--model`, for driving it by hand). `what` names
/// the file in errors (`a GGUF`).
pub fn single_model_file(
    job: &JobRequest,
    default: Option<&std::path::Path>,
    engine: &str,
    what: &str,
) -> Result<std::path::PathBuf, EngineError> {
    use studio_protocol::studio::FileRole;
    let files = &job.model_source.files;
    let pick = files
        .iter()
        .find(|f| f.role == FileRole::Model)
        .or_else(|| (files.len() == 1).then(|| &files[0]));
    match pick {
        Some(f) => job
            .model_files
            .get(&f.filename)
            .map(std::path::PathBuf::from)
            .ok_or_else(|| {
                EngineError::engine(format!("model file {} was not fetched", f.filename))
            }),
        None if files.is_empty() => default.map(std::path::Path::to_path_buf).ok_or_else(|| {
            EngineError::bad_input(format!(
                "modelSource.files: {engine} needs {what} `model` file"
            ))
        }),
        None => Err(EngineError::bad_input(
            "modelSource.files: several files and none has role `model`",
        )),
    }
}

/// Where an engine may write intermediate files for `job`.
pub fn scratch_dir(job: &JobRequest) -> std::path::PathBuf {
    job.scratch_dir
        .as_ref()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// When a load began, and the runner's resident memory then.
#[derive(Debug, Clone, Copy)]
pub struct LoadStart {
    at: std::time::Instant,
    rss: u64,
}

impl LoadStart {
    /// Time since the load began.
    pub fn elapsed(&self) -> std::time::Duration {
        self.at.elapsed()
    }
}

/// Counts model loads and tells the supervisor about each one: a `loaded`
/// report (the host memory the load took; device memory is not measured
/// by the CPU builds) and a "model loaded in N ms (load #K…)" log line for
/// operators, after the loading phase's last progress.
#[derive(Debug, Default)]
pub struct Loads(u64);

impl Loads {
    /// Marks the start of a load.
    pub fn begin() -> LoadStart {
        LoadStart {
            at: std::time::Instant::now(),
            rss: crate::platform::resident_bytes(),
        }
    }

    /// Records a load that began at `started`; `note` is appended inside
    /// the parentheses (`; context 8192`).
    pub fn record(&mut self, report: &mut dyn Reporter, started: LoadStart, note: &str) -> u64 {
        self.0 += 1;
        report.progress(Phase::Loading, 1, 1);
        report.loaded(
            crate::platform::resident_bytes().saturating_sub(started.rss),
            None,
        );
        report.log(
            LogLevel::Info,
            format!(
                "model loaded in {} ms (load #{}{note})",
                started.elapsed().as_millis(),
                self.0
            ),
        );
        self.0
    }

    /// Loads so far.
    pub fn count(&self) -> u64 {
        self.0
    }
}
