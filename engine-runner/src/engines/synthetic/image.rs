//! Synthetic images: a deterministic pattern of exactly the requested size.

use image::RgbImage;
use studio_protocol::runner::{JobOutput, Phase};
use studio_protocol::studio::ImageTask;

use crate::encode::image::{check_size, encode_rgb, image_ext};
use crate::engine::{EngineError, Reporter};

pub(super) fn run(
    t: &ImageTask,
    key: &[u8; 32],
    report: &mut dyn Reporter,
) -> Result<JobOutput, EngineError> {
    let (w, h) = (t.effective_width(), t.effective_height());
    check_size(w, h)?;
    let ext = image_ext(t.effective_ext())?;
    report.progress(Phase::Running, 0, 2);
    let img = pattern(w, h, key, 0);
    report.progress(Phase::Running, 1, 2);
    let data = encode_rgb(&img, ext)?;
    report.progress(Phase::Running, 2, 2);
    Ok(JobOutput::Bytes {
        data,
        ext: t.effective_ext().to_ascii_lowercase(),
    })
}

/// A smooth two-colour field with bands, coloured by `key`, shifted by
/// `phase` (used for video frames).
pub(crate) fn pattern(w: u32, h: u32, key: &[u8; 32], phase: u32) -> RgbImage {
    let (a, b) = ([key[0], key[1], key[2]], [key[3], key[4], key[5]]);
    let band = 8 + (key[6] as u32 % 24);
    let mut img = RgbImage::new(w, h);
    let (wd, hd) = (w.max(1) as u64, h.max(1) as u64);
    for (y, row) in img.enumerate_rows_mut() {
        for (x, _, px) in row {
            let t = ((x as u64 * 255 / wd + y as u64 * 255 / hd) / 2) as u32;
            let stripe = ((x + y + phase * 4) / band).is_multiple_of(2);
            for c in 0..3 {
                let v = (a[c] as u32 * (255 - t) + b[c] as u32 * t) / 255;
                px.0[c] = if stripe {
                    v as u8
                } else {
                    (v as u8).wrapping_add(48)
                };
            }
        }
    }
    img
}
