//! Synthetic speech: a WAV whose length follows the text, and transcripts
//! whose duration is read from the real input WAV.

use std::io::Cursor;
use std::path::PathBuf;

use serde_json::json;
use sha2::{Digest, Sha256};
use studio_protocol::runner::{JobOutput, JobRequest, Phase};
use studio_protocol::studio::{AudioSttTask, AudioTtsTask};

use crate::engine::{EngineError, Reporter};

/// Sample rate of synthetic speech.
pub const TTS_RATE: u32 = 22_050;

pub(super) fn speak(
    t: &AudioTtsTask,
    key: &[u8; 32],
    report: &mut dyn Reporter,
) -> Result<JobOutput, EngineError> {
    let ext = t.effective_ext().to_ascii_lowercase();
    if ext != "wav" {
        return Err(EngineError::bad_input(format!(
            "task.ext: the synthetic voice writes wav only, not `{ext}`"
        )));
    }
    if t.text.trim().is_empty() {
        return Err(EngineError::bad_input("task.text: nothing to speak"));
    }
    let speed = t.speed.unwrap_or(1.0);
    // About 65 ms per character at natural speed, at least half a second.
    let seconds = (t.text.chars().count() as f64 * 0.065 / speed).max(0.5);
    let samples = (seconds * TTS_RATE as f64) as usize;
    let freq = 180.0 + (key[0] as f64) * 1.5;
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: TTS_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut buf = Cursor::new(Vec::with_capacity(samples * 2 + 44));
    {
        let mut w = hound::WavWriter::new(&mut buf, spec)
            .map_err(|e| EngineError::engine(format!("wav: {e}")))?;
        for i in 0..samples {
            let ts = i as f64 / TTS_RATE as f64;
            // A syllable-like envelope, 5 per second.
            let env = (ts * 5.0 * std::f64::consts::PI).sin().abs();
            let v = (ts * freq * 2.0 * std::f64::consts::PI).sin() * env * 0.4;
            w.write_sample((v * i16::MAX as f64) as i16)
                .map_err(|e| EngineError::engine(format!("wav: {e}")))?;
        }
        w.finalize()
            .map_err(|e| EngineError::engine(format!("wav: {e}")))?;
    }
    report.progress(Phase::Running, 1, 1);
    Ok(JobOutput::Bytes {
        data: buf.into_inner(),
        ext,
    })
}

pub(super) fn transcribe(
    t: &AudioSttTask,
    job: &JobRequest,
    report: &mut dyn Reporter,
) -> Result<JobOutput, EngineError> {
    // The supervisor fetches the input; a person driving the runner by hand
    // may name a local file directly.
    let path = job
        .inputs
        .get("inputUrl")
        .map(PathBuf::from)
        .or_else(|| {
            let p = PathBuf::from(t.input_url.strip_prefix("file://").unwrap_or(&t.input_url));
            p.exists().then_some(p)
        })
        .ok_or_else(|| {
            EngineError::bad_input(format!(
                "task.inputUrl: `{}` was not fetched and is not a local file",
                t.input_url
            ))
        })?;
    let bytes = std::fs::read(&path).map_err(|e| {
        EngineError::bad_input(format!(
            "task.inputUrl: cannot read {}: {e}",
            path.display()
        ))
    })?;
    let reader = hound::WavReader::new(Cursor::new(&bytes)).map_err(|e| {
        EngineError::bad_input(format!(
            "task.inputUrl: the synthetic engine reads WAV only ({e})"
        ))
    })?;
    let spec = reader.spec();
    let frames = reader.duration() as f64;
    let duration = if spec.sample_rate > 0 {
        frames / spec.sample_rate as f64
    } else {
        0.0
    };
    let key: [u8; 32] = Sha256::digest(&bytes).into();
    report.progress(Phase::Running, 1, 1);
    Ok(JobOutput::Json {
        value: json!({
            "text": format!("[synthetic] transcript of {}", hex::encode(&key[..8])),
            "language": t.language.clone().unwrap_or_else(|| "en".into()),
            "duration": (duration * 1000.0).round() / 1000.0,
        }),
    })
}
