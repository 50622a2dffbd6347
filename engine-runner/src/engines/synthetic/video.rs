//! Synthetic video: moving frames of the requested size, `fps × seconds`
//! of them, through the shared video encoder.

use studio_protocol::runner::{JobOutput, JobRequest, Phase};
use studio_protocol::studio::VideoTask;

use crate::encode::image::check_size;
use crate::encode::video::{self, VideoSpec};
use crate::engine::{EngineError, Reporter};

/// Frame rate when the task gives none.
pub const DEFAULT_FPS: u32 = 8;

pub(super) fn run(
    t: &VideoTask,
    key: &[u8; 32],
    job: &JobRequest,
    report: &mut dyn Reporter,
) -> Result<JobOutput, EngineError> {
    let (w, h) = (t.effective_width(), t.effective_height());
    check_size(w, h)?;
    let fps = t.fps.unwrap_or(DEFAULT_FPS);
    // An animation needs two frames at least.
    let count = video::frame_count(fps, t.effective_seconds())?.max(2);
    let ext = t.effective_ext().to_ascii_lowercase();
    let scratch = crate::engine::scratch_dir(job);
    let spec = VideoSpec {
        width: w,
        height: h,
        fps,
        ext: &ext,
        scratch: &scratch,
        audio: None,
    };
    video::check(&spec)?;
    let frames = (0..count).map(|i| {
        report.progress(Phase::Running, i + 1, count);
        super::image::pattern(w, h, key, i as u32)
    });
    let data = video::encode(&spec, frames)?;
    Ok(JobOutput::Bytes { data, ext })
}
