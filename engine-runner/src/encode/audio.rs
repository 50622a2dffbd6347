//! Speech out: a WAV an engine wrote to a file becomes the job's file
//! output, converted by `ffmpeg` when the task asks for mp3, ogg (Opus) or
//! flac. Also the one way engines run a helper program ([`run_program`]).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use studio_protocol::runner::{JobOutput, JobRequest};
use studio_protocol::studio::AudioTtsTask;

use crate::engine::EngineError;

/// The output formats a speech engine writes.
pub const FORMATS: &str = "wav, mp3, ogg or flac";

/// The ffmpeg codec arguments for `ext` (`None`: the WAV as it is), or a
/// bad-input error naming the field for any other format.
pub fn codec(engine: &str, ext: &str) -> Result<Option<&'static [&'static str]>, EngineError> {
    Ok(match ext {
        "wav" => None,
        "mp3" => Some(&["-c:a", "libmp3lame", "-b:a", "64k"]),
        "ogg" => Some(&["-c:a", "libopus", "-b:a", "48k"]),
        "flac" => Some(&["-c:a", "flac"]),
        other => {
            return Err(EngineError::bad_input(format!(
                "task.ext: {engine} writes {FORMATS}, not `{other}`"
            )))
        }
    })
}

/// A speech task's checked inputs: its output format (and the ffmpeg
/// codec for it) and its speed.
pub struct Checked {
    /// `wav`, `mp3`, `ogg` or `flac`.
    pub ext: String,
    /// The ffmpeg codec arguments, `None` for WAV.
    pub codec: Option<&'static [&'static str]>,
    /// Above 0; 1.0 is natural.
    pub speed: f64,
}

/// Checks `t` for `engine`: a format it writes, some text, a speed above
/// 0; each mistake is bad input naming the field.
pub fn check(engine: &str, t: &AudioTtsTask) -> Result<Checked, EngineError> {
    let ext = t.effective_ext().to_ascii_lowercase();
    let codec = codec(engine, &ext)?;
    if t.text.trim().is_empty() {
        return Err(EngineError::bad_input("task.text: nothing to speak"));
    }
    let speed = t.speed.unwrap_or(1.0);
    if !speed.is_finite() || speed <= 0.0 {
        return Err(EngineError::bad_input(format!(
            "task.speed: must be a number above 0, got {speed}"
        )));
    }
    Ok(Checked { ext, codec, speed })
}

/// Where a speech job writes: its scratch directory (else the temp dir)
/// and a file stem unique to the job.
pub fn target(job: &JobRequest) -> Result<(PathBuf, String), EngineError> {
    let dir = job
        .scratch_dir
        .as_ref()
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| EngineError::engine(format!("cannot make {}: {e}", dir.display())))?;
    let stem = format!(
        "tts-{}-{}",
        std::process::id(),
        crate::serve::safe_file_name(&job.job_id)
    );
    Ok((dir, stem))
}

/// The job's output from the finished `wav`: as it is, or through ffmpeg
/// converted to `ext` with `codec` and/or sped up by `tempo` (its `atempo`
/// filter: pitch kept; 1.0 leaves the timing alone). The WAV is replaced.
pub fn finish(
    wav: PathBuf,
    ext: &str,
    codec: Option<&[&str]>,
    tempo: f64,
) -> Result<JobOutput, EngineError> {
    let retimed = (tempo - 1.0).abs() > 1e-3;
    let path = if codec.is_none() && !retimed {
        wav
    } else {
        let out = if codec.is_some() {
            wav.with_extension(ext)
        } else {
            wav.with_extension("tempo.wav")
        };
        let mut ff = Command::new("ffmpeg");
        ff.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i"])
            .arg(&wav);
        if retimed {
            ff.arg("-filter:a")
                .arg(format!("atempo={:.4}", tempo.clamp(0.5, 100.0)));
        }
        ff.args(codec.unwrap_or(&["-c:a", "pcm_s16le"])).arg(&out);
        let result = run_program(ff, "ffmpeg", &[]);
        let _ = std::fs::remove_file(&wav);
        result?;
        if codec.is_none() {
            std::fs::rename(&out, &wav).map_err(|e| {
                EngineError::engine(format!("cannot rename {}: {e}", out.display()))
            })?;
            wav
        } else {
            out
        }
    };
    Ok(JobOutput::File {
        path: path.to_string_lossy().into_owned(),
        ext: ext.to_string(),
    })
}

/// Runs `cmd` (dying with this runner) with `input` on its stdin and
/// returns its stdout; a failure names `what` and the end of its stderr.
/// A missing program is engine-unavailable.
pub fn run_program(mut cmd: Command, what: &str, input: &[u8]) -> Result<Vec<u8>, EngineError> {
    super::die_with_runner(&mut cmd);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            EngineError::unavailable(format!(
                "{what} not found on PATH: install it (apt-get install {})",
                if what == "espeak-ng" {
                    "espeak-ng"
                } else {
                    "ffmpeg"
                }
            ))
        } else {
            EngineError::unavailable(format!("cannot start {what}: {e}"))
        }
    })?;
    let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
    let drain_err = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let drain_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(o) = stdout.as_mut() {
            let _ = o.read_to_end(&mut v);
        }
        v
    });
    if let Some(mut stdin) = child.stdin.take() {
        // A program that exits early closes its end; its status says why.
        let _ = stdin.write_all(input);
    }
    let status = child
        .wait()
        .map_err(|e| EngineError::engine(format!("{what}: {e}")))?;
    let err = drain_err.join().unwrap_or_default();
    let out = drain_out.join().unwrap_or_default();
    if !status.success() {
        let tail: String = err
            .trim()
            .lines()
            .last()
            .unwrap_or("")
            .chars()
            .take(300)
            .collect();
        return Err(EngineError::engine(format!(
            "{what} failed ({status}): {tail}"
        )));
    }
    Ok(out)
}
