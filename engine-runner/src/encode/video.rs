//! Video: frames to an animated GIF (natively) or to MP4 (H.264, yuv420p,
//! faststart) / WebM (VP9) by piping raw RGB frames into `ffmpeg`.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use image::codecs::gif::{GifEncoder, Repeat};
use image::{Delay, Frame, RgbImage, RgbaImage};

use crate::engine::EngineError;

/// Containers the encoder can write.
pub const CONTAINERS: &[&str] = &["mp4", "webm", "gif"];

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
    // ffmpeg dies with the runner, whatever kills the runner.
    // SAFETY: only prctl, async-signal-safe, between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            #[cfg(target_os = "linux")]
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            );
            Ok(())
        });
    }
    cmd.arg(&tmp)
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
    let result = if status.success() && write_err.is_none() {
        std::fs::read(&tmp).map_err(|e| EngineError::engine(format!("reading ffmpeg output: {e}")))
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
    };
    let _ = std::fs::remove_file(&tmp);
    result
}

fn tempfile_in(dir: &Path, ext: &str) -> Result<std::path::PathBuf, EngineError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    Ok(dir.join(format!("video-{}-{n}.{ext}", std::process::id())))
}
