//! Video: frames to an animated GIF (natively) or to MP4 (H.264, yuv420p,
//! faststart) / WebM (VP9) by piping raw RGB frames into `ffmpeg`, with an
//! optional audio track muxed in (AAC in MP4, Opus in WebM).

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use image::codecs::gif::{GifEncoder, Repeat};
use image::{Delay, Frame, RgbImage, RgbaImage};

use crate::engine::EngineError;

/// Containers the encoder can write.
pub const CONTAINERS: &[&str] = &["mp4", "webm", "gif"];

/// Most frames one job may ask for.
pub const MAX_FRAMES: u64 = 3600;

/// Frames for `seconds` of video at `fps` (at least one); more than
/// [`MAX_FRAMES`] is an error naming the fields.
pub fn frame_count(fps: u32, seconds: f64) -> Result<u64, EngineError> {
    let wanted = (fps as f64 * seconds).round();
    if !wanted.is_finite() || wanted > MAX_FRAMES as f64 {
        return Err(EngineError::bad_input(format!(
            "task.seconds × task.fps: {wanted} frames exceeds the {MAX_FRAMES}-frame limit"
        )));
    }
    Ok((wanted as u64).max(1))
}

/// An audio track to mux under the frames (LTX-2 generates one).
#[derive(Debug, Clone)]
pub struct AudioTrack {
    /// Samples per second.
    pub sample_rate: u32,
    /// Interleaved channels.
    pub channels: u16,
    /// Interleaved samples in -1..1.
    pub samples: Vec<f32>,
}

/// A video to encode.
pub struct VideoSpec<'a> {
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// `mp4`, `webm` or `gif`.
    pub ext: &'a str,
    /// Directory for the intermediate file.
    pub scratch: &'a Path,
    /// Sound to mux in (ignored for gif, which has no audio).
    pub audio: Option<&'a AudioTrack>,
}

/// Checks the container and, for yuv420p codecs, even dimensions.
pub fn check(spec: &VideoSpec<'_>) -> Result<(), EngineError> {
    if !CONTAINERS.contains(&spec.ext) {
        return Err(EngineError::bad_input(format!(
            "task.ext: video container `{}` is not supported (mp4, webm, gif)",
            spec.ext
        )));
    }
    if spec.ext != "gif" && (!spec.width.is_multiple_of(2) || !spec.height.is_multiple_of(2)) {
        return Err(EngineError::bad_input(format!(
            "task.width/task.height: {} (yuv420p) needs even dimensions, got {}x{}",
            spec.ext, spec.width, spec.height
        )));
    }
    Ok(())
}

/// Encodes `frames` (each `width`×`height`) into the requested container.
pub fn encode<I>(spec: &VideoSpec<'_>, frames: I) -> Result<Vec<u8>, EngineError>
where
    I: IntoIterator<Item = RgbImage>,
{
    check(spec)?;
    match spec.ext {
        "gif" => encode_gif(spec, frames),
        _ => encode_ffmpeg(spec, frames),
    }
}

fn encode_gif<I: IntoIterator<Item = RgbImage>>(
    spec: &VideoSpec<'_>,
    frames: I,
) -> Result<Vec<u8>, EngineError> {
    let mut out = Vec::new();
    {
        let mut enc = GifEncoder::new_with_speed(&mut out, 30);
        enc.set_repeat(Repeat::Infinite)
            .map_err(|e| EngineError::engine(format!("gif: {e}")))?;
        let delay = Delay::from_numer_denom_ms(1000, spec.fps.max(1));
        for rgb in frames {
            let rgba: RgbaImage = image::DynamicImage::ImageRgb8(rgb).to_rgba8();
            enc.encode_frame(Frame::from_parts(rgba, 0, 0, delay))
                .map_err(|e| EngineError::engine(format!("gif frame: {e}")))?;
        }
    }
    Ok(out)
}

fn encode_ffmpeg<I: IntoIterator<Item = RgbImage>>(
    spec: &VideoSpec<'_>,
    frames: I,
) -> Result<Vec<u8>, EngineError> {
    std::fs::create_dir_all(spec.scratch)
        .map_err(|e| EngineError::engine(format!("scratch dir {}: {e}", spec.scratch.display())))?;
    let tmp = tempfile_in(spec.scratch, spec.ext)?;
    let wav = match spec.audio {
        Some(a) => {
            let path = tempfile_in(spec.scratch, "wav")?;
            write_wav(&path, a)?;
            Some(path)
        }
        None => None,
    };
    let result = run_ffmpeg(spec, frames, &tmp, wav.as_deref());
    let _ = std::fs::remove_file(&tmp);
    if let Some(w) = wav {
        let _ = std::fs::remove_file(w);
    }
    result
}

fn write_wav(path: &Path, a: &AudioTrack) -> Result<(), EngineError> {
    let bad = |e: hound::Error| EngineError::engine(format!("audio track {}: {e}", path.display()));
    if a.channels == 0 || a.sample_rate == 0 {
        return Err(EngineError::engine(format!(
            "audio track: {} channels at {} Hz",
            a.channels, a.sample_rate
        )));
    }
    let mut w = hound::WavWriter::create(
        path,
        hound::WavSpec {
            channels: a.channels,
            sample_rate: a.sample_rate,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        },
    )
    .map_err(bad)?;
    for s in &a.samples {
        w.write_sample(*s).map_err(bad)?;
    }
    w.finalize().map_err(bad)
}

fn run_ffmpeg<I: IntoIterator<Item = RgbImage>>(
    spec: &VideoSpec<'_>,
    frames: I,
    tmp: &Path,
    wav: Option<&Path>,
) -> Result<Vec<u8>, EngineError> {
    let size = format!("{}x{}", spec.width, spec.height);
    let fps = spec.fps.to_string();
    let mut cmd = Command::new("ffmpeg");
    cmd.args([
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
    ])
    .arg(&size)
    .args(["-r", &fps, "-i", "pipe:0"]);
    if let Some(wav) = wav {
        cmd.arg("-i")
            .arg(wav)
            .args(["-map", "0:v:0", "-map", "1:a:0"]);
        match spec.ext {
            "mp4" => cmd.args(["-c:a", "aac", "-b:a", "128k"]),
            _ => cmd.args(["-c:a", "libopus", "-b:a", "96k"]),
        };
    }
    match spec.ext {
        "mp4" => cmd.args([
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p",
            "-movflags",
            "+faststart",
            "-f",
            "mp4",
        ]),
        _ => cmd.args([
            "-c:v",
            "libvpx-vp9",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-b:v",
            "0",
            "-crf",
            "40",
            "-pix_fmt",
            "yuv420p",
            "-f",
            "webm",
        ]),
    };
    super::die_with_runner(&mut cmd);
    cmd.arg(tmp)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(EngineError::unavailable(format!(
                "ffmpeg not found on PATH: it is needed to write {} video (install ffmpeg, or request ext gif)",
                spec.ext
            )))
        }
        Err(e) => return Err(EngineError::unavailable(format!("cannot start ffmpeg: {e}"))),
    };
    // Drain stderr on a thread so a chatty ffmpeg can never block us.
    let mut stderr = child.stderr.take();
    let drain = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let mut write_err = None;
    if let Some(mut stdin) = child.stdin.take() {
        for frame in frames {
            if let Err(e) = stdin.write_all(frame.as_raw()) {
                write_err = Some(e);
                break;
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| EngineError::engine(format!("ffmpeg: {e}")))?;
    let log = drain.join().unwrap_or_default();
    if status.success() && write_err.is_none() {
        std::fs::read(tmp).map_err(|e| EngineError::engine(format!("reading ffmpeg output: {e}")))
    } else {
        let tail: Vec<&str> = log
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        Err(EngineError::engine(format!(
            "ffmpeg failed ({status}){}: {}",
            write_err
                .map(|e| format!(", pipe: {e}"))
                .unwrap_or_default(),
            tail.join(" | ")
        )))
    }
}

fn tempfile_in(dir: &Path, ext: &str) -> Result<std::path::PathBuf, EngineError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    Ok(dir.join(format!("video-{}-{n}.{ext}", std::process::id())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(bytes: &[u8], ext: &str) -> serde_json::Value {
        // Tests run in parallel in one process: one file per probe.
        let path = tempfile_in(&std::env::temp_dir(), ext).unwrap();
        std::fs::write(&path, bytes).unwrap();
        let out = Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-count_frames",
                "-show_streams",
                "-of",
                "json",
            ])
            .arg(&path)
            .output()
            .expect("ffprobe (scripts/test installs ffmpeg)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_file(&path);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn tone(seconds: f32) -> AudioTrack {
        let rate = 16_000;
        let n = (rate as f32 * seconds) as usize;
        let samples = (0..n)
            .flat_map(|i| {
                let v = (i as f32 * 440.0 * std::f32::consts::TAU / rate as f32).sin() * 0.5;
                [v, -v]
            })
            .collect();
        AudioTrack {
            sample_rate: rate,
            channels: 2,
            samples,
        }
    }

    fn frames(n: u8) -> impl Iterator<Item = RgbImage> {
        (0..n).map(|i| RgbImage::from_pixel(32, 24, image::Rgb([i * 20, 100, 200])))
    }

    #[test]
    fn an_audio_track_is_muxed_under_the_frames() {
        let scratch = std::env::temp_dir();
        let track = tone(1.0);
        for (ext, codec) in [("mp4", "aac"), ("webm", "opus")] {
            let spec = VideoSpec {
                width: 32,
                height: 24,
                fps: 8,
                ext,
                scratch: &scratch,
                audio: Some(&track),
            };
            let bytes = encode(&spec, frames(8)).unwrap();
            let p = probe(&bytes, ext);
            let streams = p["streams"].as_array().unwrap();
            let video = streams.iter().find(|s| s["codec_type"] == "video").unwrap();
            assert_eq!(video["width"], 32);
            assert_eq!(video["height"], 24);
            assert_eq!(video["nb_read_frames"], "8", "{ext}");
            let audio = streams
                .iter()
                .find(|s| s["codec_type"] == "audio")
                .unwrap_or_else(|| panic!("{ext}: no audio stream in {p}"));
            assert_eq!(audio["codec_name"], codec);
            assert_eq!(audio["channels"], 2);
        }
    }

    #[test]
    fn without_audio_there_is_no_audio_stream_and_gif_ignores_it() {
        let scratch = std::env::temp_dir();
        let spec = VideoSpec {
            width: 32,
            height: 24,
            fps: 8,
            ext: "mp4",
            scratch: &scratch,
            audio: None,
        };
        let p = probe(&encode(&spec, frames(3)).unwrap(), "mp4");
        let kinds: Vec<_> = p["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["codec_type"].clone())
            .collect();
        assert_eq!(kinds, vec![serde_json::json!("video")]);
        let track = tone(0.5);
        let gif = encode(
            &VideoSpec {
                ext: "gif",
                audio: Some(&track),
                ..spec
            },
            frames(3),
        )
        .unwrap();
        assert_eq!(&gif[..6], b"GIF89a");
    }

    #[test]
    fn frame_count_rounds_and_caps() {
        assert_eq!(frame_count(16, 2.0).unwrap(), 32);
        assert_eq!(frame_count(24, 0.01).unwrap(), 1);
        assert_eq!(frame_count(10, 0.25).unwrap(), 3);
        let e = frame_count(60, 3600.0).unwrap_err();
        assert!(e.message.contains("task.seconds"), "{}", e.message);
        assert!(frame_count(8, f64::NAN).is_err());
    }
}
