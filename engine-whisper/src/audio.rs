//! Audio in: WAV decoded natively (8/16/24/32-bit int, 32-bit float, any
//! channel count and rate), everything else through `ffmpeg`; always out as
//! 16 kHz mono f32, resampled with a windowed-sinc filter.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use engine_runner::engine::EngineError;

/// whisper.cpp's sample rate.
pub const RATE: u32 = 16_000;

/// Decoded audio: 16 kHz mono samples and the source's duration.
pub struct Pcm {
    /// Samples in -1..1 at [`RATE`].
    pub samples: Vec<f32>,
    /// What was decoded, for the log (`wav 44100 Hz 2 ch f32`).
    pub source: String,
}

impl Pcm {
    /// Seconds of audio.
    pub fn duration(&self) -> f64 {
        self.samples.len() as f64 / RATE as f64
    }
}

/// Reads `path` (its format sniffed from the bytes, not the name).
pub fn load(path: &Path) -> Result<Pcm, EngineError> {
    let mut head = [0u8; 12];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| {
            EngineError::bad_input(format!("task.inputUrl: cannot read the audio: {e}"))
        })?;
    if n == 12 && &head[0..4] == b"RIFF" && &head[8..12] == b"WAVE" {
        load_wav(path)
    } else {
        load_ffmpeg(path)
    }
}

fn load_wav(path: &Path) -> Result<Pcm, EngineError> {
    let bad = |e: hound::Error| {
        EngineError::bad_input(format!("task.inputUrl: not a readable WAV file: {e}"))
    };
    let mut r = hound::WavReader::open(path).map_err(bad)?;
    let spec = r.spec();
    if spec.channels == 0 || spec.sample_rate == 0 {
        return Err(EngineError::bad_input(format!(
            "task.inputUrl: WAV with {} channels at {} Hz",
            spec.channels, spec.sample_rate
        )));
    }
    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => r.samples::<f32>().collect::<Result<_, _>>().map_err(bad)?,
        (hound::SampleFormat::Int, bits @ (8 | 16 | 24 | 32)) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f32;
            r.samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<_, _>>()
                .map_err(bad)?
        }
        (fmt, bits) => {
            return Err(EngineError::bad_input(format!(
                "task.inputUrl: WAV sample format {fmt:?} {bits}-bit is not supported (8/16/24/32-bit int, 32-bit float)"
            )))
        }
    };
    let mono = downmix(&interleaved, spec.channels as usize);
    Ok(Pcm {
        samples: resample(&mono, spec.sample_rate, RATE),
        source: format!(
            "wav {} Hz {} ch {}-bit {}",
            spec.sample_rate,
            spec.channels,
            spec.bits_per_sample,
            if spec.sample_format == hound::SampleFormat::Float {
                "float"
            } else {
                "int"
            }
        ),
    })
}

fn load_ffmpeg(path: &Path) -> Result<Pcm, EngineError> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-i"])
        .arg(path)
        .args([
            "-f",
            "f32le",
            "-ac",
            "1",
            "-ar",
            &RATE.to_string(),
            "pipe:1",
        ])
        .stdin(Stdio::null())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(EngineError::unavailable(
                "ffmpeg not found on PATH: it is needed to decode audio other than WAV (mp3, ogg, flac, m4a); install ffmpeg or send WAV",
            ))
        }
        Err(e) => return Err(EngineError::unavailable(format!("cannot start ffmpeg: {e}"))),
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(EngineError::bad_input(format!(
            "task.inputUrl: ffmpeg cannot decode the audio: {}",
            err.lines().last().unwrap_or("no message")
        )));
    }
    let samples = out
        .stdout
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(Pcm {
        samples,
        source: "decoded by ffmpeg".into(),
    })
}

/// Averages interleaved channels into one.
pub fn downmix(interleaved: &[f32], channels: usize) -> Vec<f32> {
    if channels <= 1 {
        return interleaved.to_vec();
    }
    interleaved
        .chunks_exact(channels)
        .map(|f| f.iter().sum::<f32>() / channels as f32)
        .collect()
}

/// Zero crossings of the sinc on each side (filter quality).
const HALF_TAPS: f64 = 16.0;

/// Band-limited resampling: a Blackman-windowed sinc whose cutoff is the
/// lower Nyquist frequency, so downsampling does not alias.
pub fn resample(input: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || input.is_empty() {
        return input.to_vec();
    }
    let ratio = to as f64 / from as f64;
    let cutoff = ratio.min(1.0);
    // Half-width of the filter in input samples.
    let half = HALF_TAPS / cutoff;
    let out_len = (input.len() as f64 * ratio).round() as usize;
    let mut out = Vec::with_capacity(out_len);
    for n in 0..out_len {
        let t = n as f64 / ratio;
        let lo = (t - half).ceil().max(0.0) as usize;
        let hi = ((t + half).floor() as usize).min(input.len() - 1);
        let mut acc = 0.0f64;
        let mut norm = 0.0f64;
        for (k, &x) in input.iter().enumerate().take(hi + 1).skip(lo) {
            let d = t - k as f64;
            let w = window(d / half) * sinc(d * cutoff);
            acc += x as f64 * w;
            norm += w;
        }
        out.push(if norm.abs() > 1e-9 {
            (acc / norm) as f32
        } else {
            0.0
        });
    }
    out
}

fn sinc(x: f64) -> f64 {
    if x.abs() < 1e-12 {
        1.0
    } else {
        let px = std::f64::consts::PI * x;
        px.sin() / px
    }
}

/// Blackman window over -1..1.
fn window(x: f64) -> f64 {
    if x.abs() >= 1.0 {
        return 0.0;
    }
    let a = std::f64::consts::PI * (x + 1.0);
    0.42 - 0.5 * a.cos() + 0.08 * (2.0 * a).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, rate: u32, secs: f64) -> Vec<f32> {
        (0..(rate as f64 * secs) as usize)
            .map(|i| (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin() as f32)
            .collect()
    }

    /// Amplitude of `freq` in `x` (a single DFT bin).
    fn level(x: &[f32], rate: u32, freq: f64) -> f64 {
        let (mut re, mut im) = (0.0, 0.0);
        for (i, &s) in x.iter().enumerate() {
            let a = 2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64;
            re += s as f64 * a.cos();
            im += s as f64 * a.sin();
        }
        2.0 * (re * re + im * im).sqrt() / x.len() as f64
    }

    #[test]
    fn resampling_keeps_the_band_and_removes_what_would_alias() {
        // 1 kHz survives 44.1 kHz → 16 kHz; 12 kHz (above the new 8 kHz
        // Nyquist) must not fold back to 4 kHz.
        let a = tone(1000.0, 44_100, 1.0);
        let b = tone(12_000.0, 44_100, 1.0);
        let mix: Vec<f32> = a.iter().zip(&b).map(|(x, y)| 0.5 * (x + y)).collect();
        let out = resample(&mix, 44_100, 16_000);
        assert_eq!(out.len(), 16_000);
        let keep = level(&out, 16_000, 1000.0);
        let alias = level(&out, 16_000, 4000.0);
        assert!((keep - 0.5).abs() < 0.02, "1 kHz level {keep}");
        assert!(alias < 0.005, "aliased 12 kHz at 4 kHz: {alias}");
    }

    #[test]
    fn upsampling_and_identity() {
        let x = tone(440.0, 8_000, 0.5);
        let up = resample(&x, 8_000, 16_000);
        assert_eq!(up.len(), 8_000);
        assert!((level(&up, 16_000, 440.0) - 1.0).abs() < 0.02);
        assert_eq!(resample(&x, 16_000, 16_000), x);
    }

    #[test]
    fn stereo_is_averaged() {
        assert_eq!(downmix(&[1.0, 0.0, 0.5, 0.5], 2), vec![0.5, 0.5]);
        assert_eq!(downmix(&[0.25], 1), vec![0.25]);
    }

    #[test]
    fn every_wav_sample_format_decodes_to_the_same_tone() {
        let dir = std::env::temp_dir().join(format!("stt-audio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let t = tone(500.0, 22_050, 0.5);
        for (bits, float, ch) in [
            (8, false, 1),
            (16, false, 2),
            (24, false, 1),
            (32, false, 3),
            (32, true, 2),
        ] {
            let path = dir.join(format!("t{bits}{float}{ch}.wav"));
            let spec = hound::WavSpec {
                channels: ch,
                sample_rate: 22_050,
                bits_per_sample: bits,
                sample_format: if float {
                    hound::SampleFormat::Float
                } else {
                    hound::SampleFormat::Int
                },
            };
            let mut w = hound::WavWriter::create(&path, spec).unwrap();
            for s in &t {
                for _ in 0..ch {
                    if float {
                        w.write_sample(*s * 0.5).unwrap();
                    } else {
                        let max = ((1i64 << (bits - 1)) - 1) as f32;
                        w.write_sample((*s * 0.5 * max) as i32).unwrap();
                    }
                }
            }
            w.finalize().unwrap();
            let pcm = load(&path).unwrap();
            assert_eq!(pcm.samples.len(), 8_000, "{bits}-bit");
            let l = level(&pcm.samples, RATE, 500.0);
            assert!(
                (l - 0.5).abs() < 0.03,
                "{bits}-bit float={float} ch={ch}: level {l}"
            );
        }
        let junk = dir.join("junk.bin");
        std::fs::write(&junk, b"definitely not audio at all").unwrap();
        let e = load(&junk).err().unwrap();
        assert!(e.message.contains("task.inputUrl"), "{}", e.message);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
