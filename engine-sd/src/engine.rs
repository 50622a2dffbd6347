//! The sd-cpp engine: maps a job's model files to an sd.cpp context, keeps
//! it loaded while the next job wants the same files, and turns image
//! tasks into `generate_image` calls.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::PathBuf;
use std::time::Instant;

use diffusion_rs_sys as sys;
use engine_runner::encode::image::{check_size, encode_rgb, image_ext};
use engine_runner::engine::{Engine, EngineError, Reporter};
use studio_protocol::runner::{JobOutput, JobRequest, Phase};
use studio_protocol::studio::{FileRole, ImageTask, LogLevel, Task};

use crate::ffi::{self, Ctx, InImage};

/// Local paths of a model's files, by the sd.cpp parameter they feed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelPaths {
    /// A single-file checkpoint (`model` role).
    pub model: Option<PathBuf>,
    /// `diffusion-model`.
    pub diffusion_model: Option<PathBuf>,
    /// A text encoder that is an LLM (Qwen, Mistral, Gemma, ...).
    pub llm: Option<PathBuf>,
    /// A T5 text encoder.
    pub t5xxl: Option<PathBuf>,
    /// CLIP-L.
    pub clip_l: Option<PathBuf>,
    /// CLIP-G.
    pub clip_g: Option<PathBuf>,
    /// The autoencoder.
    pub vae: Option<PathBuf>,
    /// A tiny autoencoder (TAESD/TAE).
    pub taesd: Option<PathBuf>,
}

impl ModelPaths {
    /// True when there is something to load.
    pub fn is_empty(&self) -> bool {
        self.model.is_none() && self.diffusion_model.is_none()
    }

    /// From a job's `modelSource.files` and the supervisor's local paths.
    pub fn from_job(job: &JobRequest) -> Result<Self, EngineError> {
        let mut p = ModelPaths::default();
        for f in &job.model_source.files {
            let Some(local) = job.model_files.get(&f.filename) else {
                return Err(EngineError::engine(format!(
                    "model file {} was not fetched",
                    f.filename
                )));
            };
            let path = Some(PathBuf::from(local));
            let lower = f.filename.to_ascii_lowercase();
            match f.role {
                FileRole::Model => p.model = path,
                FileRole::DiffusionModel => p.diffusion_model = path,
                FileRole::Vae => p.vae = path,
                FileRole::Taesd => p.taesd = path,
                FileRole::TextEncoder if lower.contains("t5") || lower.contains("umt5") => {
                    p.t5xxl = path
                }
                FileRole::TextEncoder if lower.contains("clip_l") || lower.contains("clip-l") => {
                    p.clip_l = path
                }
                FileRole::TextEncoder if lower.contains("clip_g") || lower.contains("clip-g") => {
                    p.clip_g = path
                }
                FileRole::TextEncoder => p.llm = path,
                FileRole::Lora | FileRole::TextEncoderVision | FileRole::Config => {}
            }
        }
        Ok(p)
    }
}

struct Loaded {
    paths: ModelPaths,
    ctx: Ctx,
}

/// stable-diffusion.cpp with the last model kept loaded.
pub struct SdCpp {
    threads: i32,
    /// Paths given on the command line (for driving the runner by hand).
    default_paths: ModelPaths,
    loaded: Option<Loaded>,
    loads: u64,
}

impl SdCpp {
    /// An engine with no model loaded yet.
    pub fn new(threads: i32, default_paths: ModelPaths) -> Self {
        ffi::install_callbacks();
        Self {
            threads,
            default_paths,
            loaded: None,
            loads: 0,
        }
    }

    fn ensure_loaded(
        &mut self,
        paths: &ModelPaths,
        report: &mut dyn Reporter,
    ) -> Result<&Ctx, EngineError> {
        if self.loaded.as_ref().is_some_and(|l| l.paths == *paths) {
            return self
                .loaded
                .as_ref()
                .map(|l| &l.ctx)
                .ok_or_else(|| EngineError::engine("model vanished"));
        }
        // A different model: free the old one first (memory).
        self.loaded = None;
        report.progress(Phase::Loading, 0, 1);
        let started = Instant::now();
        let c = |p: &Option<PathBuf>| -> Result<Option<CString>, EngineError> {
            p.as_ref()
                .map(|p| {
                    CString::new(p.to_string_lossy().as_bytes()).map_err(|_| {
                        EngineError::bad_input(format!("model path {} has a NUL byte", p.display()))
                    })
                })
                .transpose()
        };
        let (model, diffusion, llm, t5, clip_l, clip_g, vae, taesd) = (
            c(&paths.model)?,
            c(&paths.diffusion_model)?,
            c(&paths.llm)?,
            c(&paths.t5xxl)?,
            c(&paths.clip_l)?,
            c(&paths.clip_g)?,
            c(&paths.vae)?,
            c(&paths.taesd)?,
        );
        let ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
        // SAFETY: sd_ctx_params_init fills every field; the CStrings outlive
        // new_sd_ctx, which copies what it keeps.
        let ctx = unsafe {
            let mut p: sys::sd_ctx_params_t = std::mem::zeroed();
            sys::sd_ctx_params_init(&mut p);
            p.model_path = ptr(&model);
            p.diffusion_model_path = ptr(&diffusion);
            p.llm_path = ptr(&llm);
            p.t5xxl_path = ptr(&t5);
            p.clip_l_path = ptr(&clip_l);
            p.clip_g_path = ptr(&clip_g);
            p.vae_path = ptr(&vae);
            p.taesd_path = ptr(&taesd);
            p.n_threads = self.threads;
            sys::new_sd_ctx(&p)
        };
        let ctx = Ctx::new(ctx).ok_or_else(|| {
            let why = ffi::take_errors().join(" | ");
            EngineError::engine(format!(
                "stable-diffusion.cpp could not load the model: {why}"
            ))
        })?;
        self.loads += 1;
        report.progress(Phase::Loading, 1, 1);
        report.log(
            LogLevel::Info,
            format!(
                "model loaded in {} ms (load #{})",
                started.elapsed().as_millis(),
                self.loads
            ),
        );
        self.loaded = Some(Loaded {
            paths: paths.clone(),
            ctx,
        });
        self.loaded
            .as_ref()
            .map(|l| &l.ctx)
            .ok_or_else(|| EngineError::engine("model vanished"))
    }

    fn image(
        &mut self,
        job: &JobRequest,
        t: &ImageTask,
        report: &mut dyn Reporter,
    ) -> Result<JobOutput, EngineError> {
        let d = &job.model_source.cli_defaults;
        // Precedence: job value → cliDefaults → engine default.
        let width = t.width.unwrap_or(d.width);
        let height = t.height.unwrap_or(d.height);
        check_size(width, height)?;
        if !width.is_multiple_of(16) || !height.is_multiple_of(16) {
            return Err(EngineError::bad_input(format!(
                "task.width/task.height: sd-cpp needs multiples of 16, got {width}x{height}"
            )));
        }
        let ext = image_ext(t.effective_ext())?;
        let steps = t.steps.unwrap_or(d.steps).max(1);
        let cfg = t.cfg_scale.unwrap_or(d.cfg_scale) as f32;
        let method = t
            .sampling_method
            .clone()
            .or_else(|| d.sampling_method.clone());
        let inputs = load_inputs(job, width, height)?;
        let mut paths = ModelPaths::from_job(job)?;
        if paths.is_empty() {
            paths = self.default_paths.clone();
        }
        if paths.is_empty() {
            return Err(EngineError::bad_input(
                "modelSource.files: sd-cpp needs a `diffusion-model` or `model` file",
            ));
        }
        let ctx = self.ensure_loaded(&paths, report)?.raw();
        let prompt = CString::new(t.prompt.as_str())
            .map_err(|_| EngineError::bad_input("task.prompt: contains a NUL byte"))?;
        let negative = CString::new(t.negative_prompt.as_deref().unwrap_or(""))
            .map_err(|_| EngineError::bad_input("task.negativePrompt: contains a NUL byte"))?;
        let method_c = method
            .as_deref()
            .map(CString::new)
            .transpose()
            .map_err(|_| EngineError::bad_input("task.samplingMethod: contains a NUL byte"))?;
        let Inputs {
            mut init,
            mut mask,
            mut reference,
        } = inputs;
        let mut ref_view = reference.as_mut().map(|r| r.view());
        // SAFETY: params are initialised by sd_img_gen_params_init; every
        // pointer (strings, images) outlives generate_image.
        let out = unsafe {
            let mut g: sys::sd_img_gen_params_t = std::mem::zeroed();
            sys::sd_img_gen_params_init(&mut g);
            g.prompt = prompt.as_ptr();
            g.negative_prompt = negative.as_ptr();
            g.width = width as i32;
            g.height = height as i32;
            // No seed: sd.cpp picks a random one (-1).
            g.seed = t.seed.map(|s| (s & i64::MAX as u64) as i64).unwrap_or(-1);
            g.batch_count = 1;
            g.sample_params.sample_steps = steps as i32;
            g.sample_params.guidance.txt_cfg = cfg;
            if let Some(shift) = d.flow_shift {
                g.sample_params.flow_shift = shift as f32;
            }
            if let Some(m) = &method_c {
                let sm = sys::str_to_sample_method(m.as_ptr());
                if sm as u32 >= sys::sample_method_t::SAMPLE_METHOD_COUNT as u32 {
                    return Err(EngineError::bad_input(format!(
                        "task.samplingMethod: `{}` is not a sampler sd-cpp knows",
                        method.unwrap_or_default()
                    )));
                }
                g.sample_params.sample_method = sm;
            }
            if let Some(i) = init.as_mut() {
                g.init_image = i.view();
                g.strength = t.denoise.unwrap_or(0.75) as f32;
            }
            if let Some(m) = mask.as_mut() {
                g.mask_image = m.view();
            }
            if let Some(r) = ref_view.as_mut() {
                g.ref_images = r;
                g.ref_images_count = 1;
            }
            let mut on_step = |done: u64, total: u64| report.progress(Phase::Running, done, total);
            let raw = ffi::with_progress(&mut on_step, || sys::generate_image(ctx, &g));
            ffi::take_image(raw)
        };
        let img = out.ok_or_else(|| {
            let why = ffi::take_errors().join(" | ");
            EngineError::engine(format!("stable-diffusion.cpp produced no image: {why}"))
        })?;
        if img.dimensions() != (width, height) {
            return Err(EngineError::engine(format!(
                "sd-cpp returned {}x{}, asked for {width}x{height}",
                img.width(),
                img.height()
            )));
        }
        let data = encode_rgb(&img, ext)?;
        Ok(JobOutput::Bytes {
            data,
            ext: t.effective_ext().to_ascii_lowercase(),
        })
    }
}

struct Inputs {
    init: Option<InImage>,
    mask: Option<InImage>,
    reference: Option<InImage>,
}

/// Decodes the fetched init / mask / reference images at the output size.
fn load_inputs(job: &JobRequest, width: u32, height: u32) -> Result<Inputs, EngineError> {
    let open = |field: &str| -> Result<Option<image::DynamicImage>, EngineError> {
        let Some(path) = job.inputs.get(field) else {
            return Ok(None);
        };
        // Fetched inputs have no extension: sniff the format from the bytes.
        let bad =
            |e: String| EngineError::bad_input(format!("task.{field}: not a readable image ({e})"));
        image::ImageReader::open(path)
            .and_then(|r| r.with_guessed_format())
            .map_err(|e| bad(e.to_string()))?
            .decode()
            .map(Some)
            .map_err(|e| bad(e.to_string()))
    };
    let fit = |img: image::DynamicImage| {
        img.resize_exact(width, height, image::imageops::FilterType::Triangle)
    };
    Ok(Inputs {
        init: open("initImageUrl")?.map(|i| InImage::rgb(fit(i).to_rgb8())),
        mask: open("maskUrl")?.map(|i| InImage::luma(fit(i).to_luma8())),
        reference: open("refImageUrl")?.map(|i| InImage::rgb(i.to_rgb8())),
    })
}

impl Engine for SdCpp {
    fn name(&self) -> &'static str {
        "sd-cpp"
    }

    fn run(
        &mut self,
        job: &JobRequest,
        report: &mut dyn Reporter,
    ) -> Result<JobOutput, EngineError> {
        match &job.task {
            Task::Image(t) => self.image(job, t, report),
            other => Err(EngineError {
                class: studio_protocol::runner::ErrorClass::CannotServe,
                message: format!("sd-cpp engine cannot serve {} tasks", other.kind()),
            }),
        }
    }
}

/// Parses `role=path` pairs from the command line.
pub fn paths_from_args(pairs: &BTreeMap<&str, Option<PathBuf>>) -> ModelPaths {
    let get = |k: &str| pairs.get(k).cloned().flatten();
    ModelPaths {
        model: get("model"),
        diffusion_model: get("diffusion-model"),
        llm: get("llm"),
        t5xxl: get("t5xxl"),
        clip_l: get("clip-l"),
        clip_g: get("clip-g"),
        vae: get("vae"),
        taesd: get("taesd"),
    }
}
