//! The onnx engine: object removal with an inpainting model of the LaMa
//! family (an `image` and a `mask` input at a fixed size, an image out),
//! kept loaded in an ONNX Runtime session between jobs.
//!
//! ```text
//! initImageUrl, maskUrl ─▶ decoded (mask at the init image's size)
//!   ─▶ inpaint::crop_for (a square around the mask, with context) ─▶ model size
//!   ─▶ session.run(image 1×3×H×W in 0..1, mask 1×1×H×W in {0, 1}) ─▶ 1×3×H×W (0..1 or 0..255)
//!   ─▶ crop size ─▶ inpaint::composite (feathered) ─▶ png / webp / jpg at the init image's size
//! ```
//!
//! The task's `prompt`, `width` and `height` are not used: the output has
//! the init image's size.

use std::path::{Path, PathBuf};

use engine_ort::ort;
use engine_runner::encode::image::{check_size, encode_rgb, image_ext};
use engine_runner::engine::{single_model_file, Engine, EngineError, Loads, Reporter};
use ort::session::Session;
use ort::value::{Tensor, TensorElementType, ValueType};
use studio_protocol::runner::{JobOutput, JobRequest, Phase};
use studio_protocol::studio::{ImageTask, LogLevel, Task};

use crate::inpaint::{self, Feather};

/// The model side used when the model's input size is dynamic.
const DYNAMIC_SIDE: u32 = 512;

/// The loaded model and what its signature says.
struct Model {
    path: PathBuf,
    session: Session,
    image_input: String,
    mask_input: String,
    /// Width and height of the model's input.
    size: (u32, u32),
}

/// Object removal with the last model kept loaded.
pub struct Onnx {
    ort: engine_ort::Loaded,
    threads: i32,
    default_model: Option<PathBuf>,
    model: Option<Model>,
    loads: Loads,
}

impl Onnx {
    /// An engine on loaded ONNX Runtime with no model yet.
    pub fn new(ort: engine_ort::Loaded, threads: i32, default_model: Option<PathBuf>) -> Self {
        Self {
            ort,
            threads,
            default_model,
            model: None,
            loads: Loads::default(),
        }
    }

    fn ensure_loaded(
        &mut self,
        path: &Path,
        report: &mut dyn Reporter,
    ) -> Result<&mut Model, EngineError> {
        if self.model.as_ref().is_none_or(|m| m.path != path) {
            self.model = None;
            report.progress(Phase::Loading, 0, 1);
            let started = Loads::begin();
            let session = engine_ort::session(&self.ort, path, self.threads, "an ONNX model")
                .map_err(|e| match e {
                    engine_ort::SessionError::Model(m) => EngineError::bad_input(m),
                    other => EngineError::engine(other.to_string()),
                })?;
            let sig = signature(&session).map_err(|why| {
                EngineError::bad_input(format!(
                    "model file {} is not an inpainting model: {why}",
                    path.display()
                ))
            })?;
            let (w, h) = sig.size;
            self.loads
                .record(report, started, &format!("; {w}×{h} input"));
            self.model = Some(Model {
                path: path.to_path_buf(),
                session,
                image_input: sig.image,
                mask_input: sig.mask,
                size: sig.size,
            });
        }
        self.model
            .as_mut()
            .ok_or_else(|| EngineError::engine("model vanished"))
    }

    fn remove(
        &mut self,
        job: &JobRequest,
        t: &ImageTask,
        report: &mut dyn Reporter,
    ) -> Result<JobOutput, EngineError> {
        let ext = image_ext(t.effective_ext())?;
        if t.init_image_url.is_none() || t.mask_url.is_none() {
            return Err(EngineError::bad_input(
                "task: the onnx engine removes objects and needs both initImageUrl (the image) and maskUrl (white = remove)",
            ));
        }
        let mut img = open(job, "initImageUrl")?.to_rgb8();
        let (w, h) = img.dimensions();
        check_size(w, h).map_err(|e| {
            EngineError::bad_input(format!("task.initImageUrl: {w}×{h}: {}", e.message))
        })?;
        let mut mask = inpaint::binary_mask(&open(job, "maskUrl")?);
        if mask.dimensions() != (w, h) {
            report.log(
                LogLevel::Warn,
                format!(
                    "the mask is {}×{}, the image {w}×{h}: mask scaled to the image",
                    mask.width(),
                    mask.height()
                ),
            );
            let scaled =
                image::imageops::resize(&mask, w, h, image::imageops::FilterType::Triangle);
            mask = inpaint::binary_mask(&image::DynamicImage::ImageLuma8(scaled));
        }
        let path = single_model_file(job, self.default_model.as_deref(), "onnx", "an inpainting")?;
        let model = self.ensure_loaded(&path, report)?;
        report.progress(Phase::Running, 0, 3);
        let Some(bbox) = inpaint::bounding_box(&mask) else {
            report.log(
                LogLevel::Warn,
                "the mask has no white pixels: nothing to remove, the image is returned as it is"
                    .into(),
            );
            return encode(&img, ext, t);
        };
        let feather = Feather::for_image(w.min(h));
        let side = model.size.0.max(model.size.1);
        let crop = inpaint::crop_for(bbox, feather.reach(), w, h, side);
        let dist = inpaint::distances(&mask, crop, feather.reach() + 1);
        let canvas = inpaint::square_canvas(&img, crop);
        let input = inpaint::model_input(&canvas, crop, &dist, feather, model.size);
        report.progress(Phase::Running, 1, 3);
        let output = run_model(model, &input)?;
        report.progress(Phase::Running, 2, 3);
        let in_bytes = inpaint::answers_in_bytes(&input, &output);
        let answer = inpaint::answer_image(&output, model.size, in_bytes);
        drop(output);
        let changed = inpaint::composite(&mut img, &answer, crop, &dist, feather);
        report.log(
            LogLevel::Info,
            format!(
                "removed {}×{} at ({}, {}) through a {}×{} crop; {changed} pixels changed",
                bbox.w, bbox.h, bbox.x, bbox.y, crop.w, crop.h
            ),
        );
        report.progress(Phase::Running, 3, 3);
        encode(&img, ext, t)
    }
}

impl Engine for Onnx {
    fn name(&self) -> &'static str {
        "onnx"
    }

    fn run(
        &mut self,
        job: &JobRequest,
        report: &mut dyn Reporter,
    ) -> Result<JobOutput, EngineError> {
        match &job.task {
            Task::Image(t) => self.remove(job, t, report),
            other => Err(EngineError::cannot_serve("onnx", other)),
        }
    }

    fn preload(&mut self, job: &JobRequest, report: &mut dyn Reporter) -> Result<(), EngineError> {
        let path = single_model_file(job, self.default_model.as_deref(), "onnx", "an inpainting")?;
        self.ensure_loaded(&path, report).map(|_| ())
    }
}

fn encode(img: &image::RgbImage, ext: &str, t: &ImageTask) -> Result<JobOutput, EngineError> {
    Ok(JobOutput::Bytes {
        data: encode_rgb(img, ext)?,
        ext: t.effective_ext().to_ascii_lowercase(),
    })
}

/// A fetched input image, its format sniffed from the bytes.
fn open(job: &JobRequest, field: &str) -> Result<image::DynamicImage, EngineError> {
    let path = job
        .inputs
        .get(field)
        .ok_or_else(|| EngineError::engine(format!("task.{field} was not fetched")))?;
    let bad =
        |e: String| EngineError::bad_input(format!("task.{field}: not a readable image ({e})"));
    image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| bad(e.to_string()))?
        .decode()
        .map_err(|e| bad(e.to_string()))
}

/// What the model's inputs are.
#[derive(Debug)]
struct Signature {
    image: String,
    mask: String,
    size: (u32, u32),
}

/// Finds the image input (N×3×H×W float) and the mask input (N×1×H×W
/// float), by name (`image`, `mask`) or else by channel count; the error
/// lists the inputs the model has.
fn signature(session: &Session) -> Result<Signature, String> {
    let tensors: Vec<(&str, &[i64], Option<TensorElementType>)> = session
        .inputs()
        .iter()
        .filter_map(|i| match i.dtype() {
            ValueType::Tensor { ty, shape, .. } => Some((i.name(), &shape[..], Some(*ty))),
            _ => None,
        })
        .collect();
    let listing = || {
        session
            .inputs()
            .iter()
            .map(|i| format!("{}: {}", i.name(), i.dtype()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let pick = |name: &str, channels: i64| {
        tensors
            .iter()
            .find(|t| t.0 == name && t.1.len() == 4)
            .or_else(|| {
                tensors
                    .iter()
                    .find(|t| t.1.len() == 4 && t.1[1] == channels)
            })
    };
    let (Some(image), Some(mask)) = (pick("image", 3), pick("mask", 1)) else {
        return Err(format!(
            "it needs an image input (N×3×H×W) and a mask input (N×1×H×W); its inputs are {}",
            listing()
        ));
    };
    if session.inputs().len() != 2 || image.0 == mask.0 {
        return Err(format!(
            "it needs exactly an image and a mask input; its inputs are {}",
            listing()
        ));
    }
    for t in [image, mask] {
        if t.2 != Some(TensorElementType::Float32) {
            return Err(format!(
                "input `{}` is not float32; its inputs are {}",
                t.0,
                listing()
            ));
        }
    }
    let side = |d: i64| if d > 0 { d as u32 } else { DYNAMIC_SIDE };
    Ok(Signature {
        image: image.0.to_string(),
        mask: mask.0.to_string(),
        size: (side(image.1[3]), side(image.1[2])),
    })
}

/// Runs the model; its first output, checked to be 1×3×H×W.
fn run_model(model: &mut Model, input: &inpaint::ModelInput) -> Result<Vec<f32>, EngineError> {
    let (w, h) = (model.size.0 as usize, model.size.1 as usize);
    let err = |e: ort::Error| EngineError::engine(format!("ONNX Runtime: {e}"));
    let outputs = model
        .session
        .run(ort::inputs![
            model.image_input.as_str() => Tensor::from_array(([1usize, 3, h, w], input.image.clone())).map_err(err)?,
            model.mask_input.as_str() => Tensor::from_array(([1usize, 1, h, w], input.mask.clone())).map_err(err)?,
        ])
        .map_err(err)?;
    let (shape, data) = outputs[0].try_extract_tensor::<f32>().map_err(|e| {
        EngineError::engine(format!("the model's output is not a float32 tensor: {e}"))
    })?;
    if data.len() != 3 * w * h {
        return Err(EngineError::engine(format!(
            "the model answered a tensor of shape {shape:?}, not 1×3×{h}×{w}"
        )));
    }
    Ok(data.to_vec())
}
