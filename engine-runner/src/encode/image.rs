//! Still images: size limits and PNG / WebP / JPEG encoding.

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::codecs::webp::WebPEncoder;
use image::{ExtendedColorType, ImageEncoder, RgbImage};

use crate::engine::EngineError;

/// Largest side in pixels.
pub const MAX_SIDE: u32 = 8192;
/// Largest area in pixels (40 megapixels).
pub const MAX_PIXELS: u64 = 40_000_000;

/// Checks requested dimensions; the error names the field.
pub fn check_size(width: u32, height: u32) -> Result<(), EngineError> {
    for (name, v) in [("width", width), ("height", height)] {
        if v == 0 {
            return Err(EngineError::bad_input(format!(
                "task.{name}: must be greater than 0"
            )));
        }
        if v > MAX_SIDE {
            return Err(EngineError::bad_input(format!(
                "task.{name}: {v} exceeds the {MAX_SIDE}-pixel limit per side"
            )));
        }
    }
    let pixels = width as u64 * height as u64;
    if pixels > MAX_PIXELS {
        return Err(EngineError::bad_input(format!(
            "task.width × task.height: {width}×{height} = {pixels} pixels exceeds the 40-megapixel limit"
        )));
    }
    Ok(())
}

/// Normalises an image extension, or names the supported ones.
pub fn image_ext(ext: &str) -> Result<&'static str, EngineError> {
    match ext.to_ascii_lowercase().as_str() {
        "png" => Ok("png"),
        "webp" => Ok("webp"),
        "jpg" => Ok("jpg"),
        "jpeg" => Ok("jpeg"),
        other => Err(EngineError::bad_input(format!(
            "task.ext: image format `{other}` is not supported (png, webp, jpg)"
        ))),
    }
}

/// Encodes an RGB image in the requested format.
pub fn encode_rgb(img: &RgbImage, ext: &str) -> Result<Vec<u8>, EngineError> {
    let ext = image_ext(ext)?;
    let (w, h) = img.dimensions();
    let mut out = Vec::new();
    let res = match ext {
        "png" => PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Sub)
            .write_image(img.as_raw(), w, h, ExtendedColorType::Rgb8),
        "webp" => WebPEncoder::new_lossless(&mut out).write_image(
            img.as_raw(),
            w,
            h,
            ExtendedColorType::Rgb8,
        ),
        _ => JpegEncoder::new_with_quality(&mut out, 90).write_image(
            img.as_raw(),
            w,
            h,
            ExtendedColorType::Rgb8,
        ),
    };
    res.map_err(|e| EngineError::engine(format!("{ext} encoding failed: {e}")))?;
    Ok(out)
}
