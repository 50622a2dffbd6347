//! The runner loop.
//!
//! ```text
//!  channel in ──▶ I/O thread ──(jobs)──▶ engine thread
//!                    │  pings answered here,      │ progress, logs,
//!                    ▼  even mid-job              ▼ result / error
//!               shared Outbox (mutex) ──▶ channel out
//! ```
//!
//! The I/O thread owns the handshake and job intake; the engine thread runs
//! one job at a time. Liveness (pongs) is therefore independent of
//! progress. The runner exits when the channel closes (in JSON-lines mode,
//! once the jobs given before the end of input are done).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use studio_protocol::runner::frame::HEADER_LEN;
use studio_protocol::runner::{
    ErrorClass, FrameError, FrameReader, FrameWriter, FromRunner, JobOutput, JobRequest, Phase,
    ToRunner, CHANNEL_VERSION,
};
use studio_protocol::studio::LogLevel;

use crate::engine::{Engine, Reporter};
use crate::faults;
use crate::hygiene::Channel;

/// How the channel is spoken.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Length-prefixed MessagePack frames (the supervisor's mode).
    Framed {
        /// Frame cap in bytes.
        max_frame_bytes: usize,
    },
    /// One JSON object per line, for a person at a terminal. Binary
    /// results are written to files in `out_dir`.
    JsonLines {
        /// Where binary results go.
        out_dir: PathBuf,
    },
}

/// The writing end, shared by the I/O and engine threads.
pub(crate) enum Outbox {
    Framed(FrameWriter<File>),
    Json(File),
}

impl Outbox {
    pub(crate) fn send(&mut self, msg: &FromRunner) -> Result<(), FrameError> {
        match self {
            Outbox::Framed(w) => w.write(msg),
            Outbox::Json(f) => {
                let mut line =
                    serde_json::to_vec(msg).map_err(|e| FrameError::Encode(e.to_string()))?;
                line.push(b'\n');
                f.write_all(&line)?;
                f.flush()?;
                Ok(())
            }
        }
    }

    /// Raw bytes straight onto the channel (fault injection only).
    pub(crate) fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        let f = match self {
            Outbox::Framed(w) => w.get_mut(),
            Outbox::Json(f) => f,
        };
        f.write_all(bytes)?;
        f.flush()
    }
}

pub(crate) type SharedOutbox = Arc<Mutex<Outbox>>;

fn send(out: &SharedOutbox, msg: &FromRunner) -> Result<(), FrameError> {
    match out.lock() {
        Ok(mut o) => o.send(msg),
        Err(poisoned) => poisoned.into_inner().send(msg),
    }
}

enum Inbox {
    Framed(FrameReader<File>),
    Json(BufReader<File>),
}

impl Inbox {
    /// Next message; `Ok(None)` at end of stream. In JSON mode a line that
    /// does not parse is reported and skipped (a person typed it).
    fn recv(&mut self, out: &SharedOutbox) -> Result<Option<ToRunner>, FrameError> {
        match self {
            Inbox::Framed(r) => r.read(),
            Inbox::Json(r) => loop {
                let mut line = String::new();
                if r.read_line(&mut line)? == 0 {
                    return Ok(None);
                }
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                match serde_json::from_str(line) {
                    Ok(m) => return Ok(Some(m)),
                    Err(e) => {
                        let _ = send(
                            out,
                            &FromRunner::Log {
                                job_id: None,
                                epoch: 0,
                                level: LogLevel::Error,
                                message: format!("ignored line: {e}"),
                            },
                        );
                    }
                }
            },
        }
    }
}

/// Serves the channel until it closes; returns the process exit code.
pub fn serve(channel: Channel, mode: Mode, engine: Box<dyn Engine>) -> i32 {
    let engine_name = engine.name();
    let (mut inbox, outbox, spill_above, out_dir) = match &mode {
        Mode::Framed { max_frame_bytes } => (
            Inbox::Framed(FrameReader::new(channel.input, *max_frame_bytes)),
            Outbox::Framed(FrameWriter::new(channel.output, *max_frame_bytes)),
            // Leave room for the envelope around the bytes.
            Some(max_frame_bytes.saturating_sub(64 * 1024 + HEADER_LEN)),
            None,
        ),
        Mode::JsonLines { out_dir } => (
            Inbox::Json(BufReader::new(channel.input)),
            Outbox::Json(channel.output),
            None,
            Some(out_dir.clone()),
        ),
    };
    let by_hand = matches!(mode, Mode::JsonLines { .. });
    let out: SharedOutbox = Arc::new(Mutex::new(outbox));
    let hello = |epoch| FromRunner::Hello {
        version: CHANNEL_VERSION,
        epoch,
        engine: engine_name.to_string(),
        pid: std::process::id(),
        runner_version: env!("CARGO_PKG_VERSION").to_string(),
    };

    // Handshake: framed mode waits for the supervisor's hello; a person in
    // JSON mode is greeted first.
    let epoch = match &mode {
        Mode::Framed { .. } => {
            match inbox.recv(&out) {
                Ok(Some(ToRunner::Hello { version, epoch })) if version == CHANNEL_VERSION => epoch,
                Ok(Some(ToRunner::Hello { version, .. })) => {
                    return fatal(&out, format!("channel version {version} not supported (runner speaks {CHANNEL_VERSION})"));
                }
                Ok(Some(other)) => {
                    return fatal(&out, format!("expected hello first, got {other:?}"))
                }
                Ok(None) => return 0,
                Err(e) => return fatal(&out, format!("handshake: {e}")),
            }
        }
        Mode::JsonLines { .. } => 0,
    };
    if send(&out, &hello(epoch)).is_err() {
        return 0;
    }

    let (tx, rx) = mpsc::channel::<JobRequest>();
    let engine_out = out.clone();
    let cancelled = Cancelled::default();
    let engine_cancelled = cancelled.clone();
    let worker = std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || {
            engine_loop(
                engine,
                rx,
                engine_out,
                spill_above,
                out_dir,
                engine_cancelled,
            )
        });
    let worker = match worker {
        Ok(w) => w,
        Err(e) => return fatal(&out, format!("cannot start engine thread: {e}")),
    };

    loop {
        match inbox.recv(&out) {
            Ok(Some(ToRunner::Ping { seq })) => {
                if send(&out, &FromRunner::Pong { seq, epoch }).is_err() {
                    return 0;
                }
            }
            Ok(Some(ToRunner::Job(job))) => {
                if tx.send(*job).is_err() {
                    return fatal(&out, "engine thread is gone".into());
                }
            }
            Ok(Some(ToRunner::Hello { .. })) => {
                let _ = send(&out, &hello(epoch));
            }
            Ok(Some(ToRunner::Cancel { job_id })) => {
                if let Ok(mut c) = cancelled.lock() {
                    *c = Some(job_id);
                }
            }
            Ok(Some(ToRunner::Shutdown)) => {
                // Finish the job in hand, then exit cleanly.
                drop(tx);
                let _ = worker.join();
                return 0;
            }
            // A person's input ended: finish the jobs given, like shutdown.
            Ok(None) if by_hand => {
                drop(tx);
                let _ = worker.join();
                return 0;
            }
            // Channel closed: the supervisor is gone; the job in hand is
            // abandoned (nobody is left to take its result).
            Ok(None) => return 0,
            Err(e) => return fatal(&out, format!("channel: {e}")),
        }
    }
}

fn fatal(out: &SharedOutbox, message: String) -> i32 {
    eprintln!("engine-runner: fatal: {message}");
    let _ = send(out, &FromRunner::Fatal { message });
    2
}

/// The job the supervisor last asked to stop.
type Cancelled = Arc<Mutex<Option<String>>>;

struct JobReporter<'a> {
    out: &'a SharedOutbox,
    job_id: &'a str,
    model: &'a str,
    epoch: u64,
    stream: bool,
    cancelled: &'a Cancelled,
}

impl Reporter for JobReporter<'_> {
    fn progress(&mut self, phase: Phase, done: u64, total: u64) {
        let _ = send(
            self.out,
            &FromRunner::Progress {
                job_id: self.job_id.to_string(),
                epoch: self.epoch,
                phase,
                done,
                total,
            },
        );
    }

    fn loaded(&mut self, host_bytes: u64, device_bytes: Option<u64>) {
        let _ = send(
            self.out,
            &FromRunner::Loaded {
                job_id: self.job_id.to_string(),
                epoch: self.epoch,
                model: self.model.to_string(),
                host_bytes,
                device_bytes,
            },
        );
    }

    fn delta(&mut self, text: &str) {
        if self.stream && !text.is_empty() {
            let _ = send(
                self.out,
                &FromRunner::Delta {
                    job_id: self.job_id.to_string(),
                    epoch: self.epoch,
                    text: text.to_string(),
                },
            );
        }
    }

    fn cancelled(&self) -> bool {
        self.cancelled
            .lock()
            .is_ok_and(|c| c.as_deref() == Some(self.job_id))
    }

    fn log(&mut self, level: LogLevel, message: String) {
        let _ = send(
            self.out,
            &FromRunner::Log {
                job_id: Some(self.job_id.to_string()),
                epoch: self.epoch,
                level,
                message,
            },
        );
    }
}

fn engine_loop(
    mut engine: Box<dyn Engine>,
    rx: mpsc::Receiver<JobRequest>,
    out: SharedOutbox,
    spill_above: Option<usize>,
    out_dir: Option<PathBuf>,
    cancelled: Cancelled,
) {
    for job in rx {
        let mut reporter = JobReporter {
            out: &out,
            job_id: &job.job_id,
            model: &job.model,
            epoch: job.epoch,
            stream: job.stream,
            cancelled: &cancelled,
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if job.preload {
                let model = job.model.clone();
                return engine
                    .preload(&job, &mut reporter)
                    .map(|()| JobOutput::Json {
                        value: serde_json::json!({ "loaded": model }),
                    });
            }
            faults::before_job(&job, &out, &mut reporter);
            engine.run(&job, &mut reporter)
        }));
        let msg = match outcome {
            Ok(Ok(output)) => match place_output(output, &job, spill_above, out_dir.as_deref()) {
                Ok(output) => FromRunner::Result {
                    job_id: job.job_id.clone(),
                    epoch: job.epoch,
                    output,
                },
                Err(e) => error_msg(
                    &job,
                    ErrorClass::Engine,
                    format!("cannot write result file: {e}"),
                ),
            },
            Ok(Err(e)) => error_msg(&job, e.class, e.message),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                error_msg(&job, ErrorClass::Engine, format!("engine panicked: {what}"))
            }
        };
        if send(&out, &msg).is_err() {
            return;
        }
    }
}

fn error_msg(job: &JobRequest, class: ErrorClass, message: String) -> FromRunner {
    FromRunner::Error {
        job_id: job.job_id.clone(),
        epoch: job.epoch,
        class,
        message,
    }
}

/// Puts bytes too large for a frame (or any bytes in JSON mode) in a file.
fn place_output(
    output: JobOutput,
    job: &JobRequest,
    spill_above: Option<usize>,
    out_dir: Option<&Path>,
) -> io::Result<JobOutput> {
    let (data, ext) = match output {
        JobOutput::Bytes { data, ext } => (data, ext),
        // JSON mode: a file the engine wrote elsewhere moves to `out_dir`.
        JobOutput::File { path, ext } => {
            let Some(dir) = out_dir else {
                return Ok(JobOutput::File { path, ext });
            };
            std::fs::create_dir_all(dir)?;
            let to = dir.join(format!("{}.{ext}", safe_file_name(&job.job_id)));
            if std::fs::rename(&path, &to).is_err() {
                std::fs::copy(&path, &to)?;
                let _ = std::fs::remove_file(&path);
            }
            let to = std::fs::canonicalize(&to)?;
            return Ok(JobOutput::File {
                path: to.to_string_lossy().into_owned(),
                ext,
            });
        }
        json @ JobOutput::Json { .. } => return Ok(json),
    };
    let dir = match (out_dir, spill_above) {
        (Some(dir), _) => dir.to_path_buf(),
        (None, Some(limit)) if data.len() > limit => job
            .scratch_dir
            .as_ref()
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir),
        _ => return Ok(JobOutput::Bytes { data, ext }),
    };
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{}.{ext}", safe_file_name(&job.job_id)));
    std::fs::write(&path, &data)?;
    let path = std::fs::canonicalize(&path)?;
    Ok(JobOutput::File {
        path: path.to_string_lossy().into_owned(),
        ext,
    })
}

/// A job id as a file name: anything but letters, digits, `-` and `_`
/// becomes `_`.
pub fn safe_file_name(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
