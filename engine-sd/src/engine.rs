//! The sd-cpp engine: maps a job's model files to an sd.cpp context, keeps
//! it loaded while the next job wants the same files, and turns image
//! tasks into `generate_image` calls.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::PathBuf;

use diffusion_rs_sys as sys;
use engine_runner::encode::image::{check_size, encode_rgb, image_ext};
use engine_runner::encode::video::{self, VideoSpec};
use engine_runner::engine::{Engine, EngineError, Loads, Reporter};
use studio_protocol::runner::{JobOutput, JobRequest, Phase};
use studio_protocol::studio::{FileRole, ImageTask, LogLevel, Task, VideoTask};

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
    /// A CLIP vision encoder (Wan 2.1 image-to-video).
    pub clip_vision: Option<PathBuf>,
    /// The vision half of an LLM text encoder (Qwen-Image-Edit).
    pub llm_vision: Option<PathBuf>,
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
                FileRole::TextEncoderVision if lower.contains("clip") => p.clip_vision = path,
                FileRole::TextEncoderVision => p.llm_vision = path,
                FileRole::Lora | FileRole::Config => {}
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
    loads: Loads,
}

impl SdCpp {
    /// An engine with no model loaded yet.
    pub fn new(threads: i32, default_paths: ModelPaths) -> Self {
        ffi::install_callbacks();
        Self {
            threads,
            default_paths,
            loaded: None,
            loads: Loads::default(),
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
        let started = Loads::begin();
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
        let (clip_vision, llm_vision) = (c(&paths.clip_vision)?, c(&paths.llm_vision)?);
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
            p.clip_vision_path = ptr(&clip_vision);
            p.llm_vision_path = ptr(&llm_vision);
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
        self.loads.record(
            report,
            started,
            "; sd.cpp reads the weights during the first job",
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
        sd_size(width, height)?;
        let ext = image_ext(t.effective_ext())?;
        let steps = t.steps.unwrap_or(d.steps).max(1);
        let cfg = t.cfg_scale.unwrap_or(d.cfg_scale) as f32;
        let method = t
            .sampling_method
            .clone()
            .or_else(|| d.sampling_method.clone());
        let method_field = if t.sampling_method.is_some() {
            "task.samplingMethod"
        } else {
            CLI_SAMPLER
        };
        let inputs = load_inputs(job, width, height)?;
        let ctx = self.ctx_for(job, false, report)?;
        let (prompt, negative) = prompts(&t.prompt, t.negative_prompt.as_deref())?;
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
            g.seed = sd_seed(t.seed);
            g.batch_count = 1;
            sampling(
                &mut g.sample_params,
                steps,
                cfg,
                d.flow_shift,
                method_c.as_ref().map(|m| (m, method_field)),
            )?;
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

impl SdCpp {
    /// The loaded context for a job's model files (or the command line's),
    /// checked to make what the job wants (`video` or images).
    fn ctx_for(
        &mut self,
        job: &JobRequest,
        video: bool,
        report: &mut dyn Reporter,
    ) -> Result<*mut sys::sd_ctx_t, EngineError> {
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
        // SAFETY: a live context; the calls only read its version.
        let makes_video = unsafe { sys::sd_ctx_supports_video_generation(ctx) };
        if makes_video != video {
            let (model, job_kind) = if makes_video {
                ("video", "an image")
            } else {
                ("images", "a video")
            };
            return Err(EngineError::bad_input(format!(
                "modelSource.files: this model generates {model}, it cannot serve {job_kind} job"
            )));
        }
        Ok(ctx)
    }

    fn video(
        &mut self,
        job: &JobRequest,
        t: &VideoTask,
        report: &mut dyn Reporter,
    ) -> Result<JobOutput, EngineError> {
        let d = &job.model_source.cli_defaults;
        let width = t.width.unwrap_or(d.width);
        let height = t.height.unwrap_or(d.height);
        sd_size(width, height)?;
        let fps = t.fps.unwrap_or(DEFAULT_VIDEO_FPS);
        let wanted = video::frame_count(fps, t.effective_seconds())?;
        let ext = t.effective_ext().to_ascii_lowercase();
        let scratch = engine_runner::engine::scratch_dir(job);
        let spec = VideoSpec {
            width,
            height,
            fps,
            ext: &ext,
            scratch: &scratch,
            audio: None,
        };
        // Fail on the container before minutes of sampling, not after.
        video::check(&spec)?;
        let mut init = load_inputs(job, width, height)?.init;
        let steps = d.steps.max(1);
        let cfg = d.cfg_scale as f32;
        let method_c = d
            .sampling_method
            .as_deref()
            .map(CString::new)
            .transpose()
            .map_err(|_| EngineError::bad_input(format!("{CLI_SAMPLER}: contains a NUL byte")))?;
        let method_field = CLI_SAMPLER;
        let ctx = self.ctx_for(job, true, report)?;
        let (prompt, negative) = prompts(&t.prompt, t.negative_prompt.as_deref())?;
        let asked = frames_to_ask(wanted);
        let mut n_frames: std::ffi::c_int = 0;
        let mut frames_ptr: *mut sys::sd_image_t = std::ptr::null_mut();
        let mut audio_ptr: *mut sys::sd_audio_t = std::ptr::null_mut();
        // SAFETY: params are initialised by sd_vid_gen_params_init; every
        // pointer (strings, the init image) outlives generate_video; the
        // outputs are taken (copied and freed) right after.
        let (ok, frames, audio) = unsafe {
            let mut g: sys::sd_vid_gen_params_t = std::mem::zeroed();
            sys::sd_vid_gen_params_init(&mut g);
            g.prompt = prompt.as_ptr();
            g.negative_prompt = negative.as_ptr();
            g.width = width as i32;
            g.height = height as i32;
            g.seed = sd_seed(t.seed);
            g.video_frames = asked as i32;
            g.fps = fps as i32;
            sampling(
                &mut g.sample_params,
                steps,
                cfg,
                d.flow_shift,
                method_c.as_ref().map(|m| (m, method_field)),
            )?;
            if let Some(i) = init.as_mut() {
                g.init_image = i.view();
            }
            let mut on_step = |done: u64, total: u64| report.progress(Phase::Running, done, total);
            let ok = ffi::with_progress(&mut on_step, || {
                sys::generate_video(ctx, &g, &mut frames_ptr, &mut n_frames, &mut audio_ptr)
            });
            (
                ok,
                ffi::take_frames(frames_ptr, n_frames.max(0) as usize),
                ffi::take_audio(audio_ptr),
            )
        };
        if !ok || frames.is_empty() {
            let why = ffi::take_errors().join(" | ");
            return Err(EngineError::engine(format!(
                "stable-diffusion.cpp produced no video: {why}"
            )));
        }
        let mut out = Vec::with_capacity(frames.len());
        for (i, f) in frames.into_iter().enumerate() {
            match f {
                Some(f) if f.dimensions() == (width, height) => out.push(f),
                Some(f) => {
                    return Err(EngineError::engine(format!(
                        "sd-cpp returned frame {i} at {}x{}, asked for {width}x{height}",
                        f.width(),
                        f.height()
                    )))
                }
                None => {
                    return Err(EngineError::engine(format!(
                        "sd-cpp returned an empty frame {i}"
                    )))
                }
            }
        }
        let got = out.len() as u64;
        if got != wanted {
            report.log(
                LogLevel::Info,
                format!(
                    "the model made {got} frames for {wanted} wanted (asked {asked} on its frame grid); {}",
                    if got > wanted { "trimming" } else { "repeating the last frame" }
                ),
            );
        }
        let frames = fit_frames(out, wanted);
        if audio.is_some() && ext == "gif" {
            report.log(
                LogLevel::Warn,
                "gif has no audio track: the model's audio is dropped".into(),
            );
        }
        let spec = VideoSpec {
            audio: audio.as_ref(),
            ..spec
        };
        let data = video::encode(&spec, frames)?;
        Ok(JobOutput::Bytes { data, ext })
    }
}

const CLI_SAMPLER: &str = "modelSource.cliDefaults.samplingMethod";

/// Frame rate when neither the task nor the model gives one (Wan's).
pub const DEFAULT_VIDEO_FPS: u32 = 16;

/// Video models sample frames on a grid (Wan: 4k+1, LTX: 8k+1) and round
/// the count down to it; ask for the next 4k+1 at or above `wanted` so the
/// common case needs no padding.
pub fn frames_to_ask(wanted: u64) -> u64 {
    wanted.saturating_sub(1).div_ceil(4) * 4 + 1
}

/// Exactly `wanted` frames: extra ones trimmed, missing ones repeat the last.
pub fn fit_frames(mut frames: Vec<image::RgbImage>, wanted: u64) -> Vec<image::RgbImage> {
    let wanted = wanted as usize;
    frames.truncate(wanted);
    while frames.len() < wanted {
        match frames.last() {
            Some(last) => frames.push(last.clone()),
            None => break,
        }
    }
    frames
}

/// sd.cpp's seed for a job's: none is -1 (sd.cpp picks a random one).
fn sd_seed(seed: Option<u64>) -> i64 {
    seed.map(|s| (s & i64::MAX as u64) as i64).unwrap_or(-1)
}

/// Steps, CFG scale, flow shift and sampler (named by its source field).
fn sampling(
    p: &mut sys::sd_sample_params_t,
    steps: u32,
    cfg: f32,
    flow_shift: Option<f64>,
    method: Option<(&CString, &str)>,
) -> Result<(), EngineError> {
    p.sample_steps = steps as i32;
    p.guidance.txt_cfg = cfg;
    if let Some(shift) = flow_shift {
        p.flow_shift = shift as f32;
    }
    if let Some((m, field)) = method {
        p.sample_method = sample_method(m, field)?;
    }
    Ok(())
}

/// The general size limits plus sd.cpp's: multiples of 16.
fn sd_size(width: u32, height: u32) -> Result<(), EngineError> {
    check_size(width, height)?;
    if !width.is_multiple_of(16) || !height.is_multiple_of(16) {
        return Err(EngineError::bad_input(format!(
            "task.width/task.height: sd-cpp needs multiples of 16, got {width}x{height}"
        )));
    }
    Ok(())
}

/// The prompt pair as C strings; a NUL byte is an error naming the field.
fn prompts(prompt: &str, negative: Option<&str>) -> Result<(CString, CString), EngineError> {
    Ok((
        CString::new(prompt)
            .map_err(|_| EngineError::bad_input("task.prompt: contains a NUL byte"))?,
        CString::new(negative.unwrap_or(""))
            .map_err(|_| EngineError::bad_input("task.negativePrompt: contains a NUL byte"))?,
    ))
}

/// sd.cpp's sampler for a name; an unknown name is an error naming it.
fn sample_method(name: &CString, field: &str) -> Result<sys::sample_method_t, EngineError> {
    // SAFETY: a NUL-terminated string; the call only reads it.
    let sm = unsafe { sys::str_to_sample_method(name.as_ptr()) };
    if sm as u32 >= sys::sample_method_t::SAMPLE_METHOD_COUNT as u32 {
        return Err(EngineError::bad_input(format!(
            "{field}: `{}` is not a sampler sd-cpp knows",
            name.to_string_lossy()
        )));
    }
    Ok(sm)
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
            Task::Video(t) => self.video(job, t, report),
            other => Err(EngineError::cannot_serve("sd-cpp", other)),
        }
    }

    fn preload(&mut self, job: &JobRequest, report: &mut dyn Reporter) -> Result<(), EngineError> {
        let video = matches!(job.task, Task::Video(_));
        self.ctx_for(job, video, report).map(|_| ())
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
        clip_vision: get("clip-vision"),
        llm_vision: get("llm-vision"),
        vae: get("vae"),
        taesd: get("taesd"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_asked_on_the_4k_plus_1_grid_at_or_above_the_wish() {
        for (wanted, asked) in [(1, 1), (2, 5), (5, 5), (6, 9), (32, 33), (33, 33), (48, 49)] {
            assert_eq!(frames_to_ask(wanted), asked, "{wanted}");
        }
    }

    #[test]
    fn file_roles_map_to_sd_cpp_inputs() {
        let files: Vec<_> = [
            ("diffusion-model", "wan2.1_i2v_14B.safetensors"),
            ("text-encoder", "umt5-xxl.gguf"),
            ("text-encoder", "clip_l.safetensors"),
            ("text-encoder", "qwen_2.5_vl_7b.gguf"),
            ("text-encoder-vision", "clip_vision_h.safetensors"),
            ("text-encoder-vision", "qwen_2.5_vl_7b_mmproj.gguf"),
            ("vae", "wan_2.1_vae.safetensors"),
            ("taesd", "taew2_1.safetensors"),
            ("lora", "style.safetensors"),
        ]
        .iter()
        .map(|(role, name)| serde_json::json!({"role": role, "url": format!("https://x/{name}"), "filename": name}))
        .collect();
        let local: serde_json::Map<_, _> = files
            .iter()
            .map(|f| {
                let name = f["filename"].as_str().unwrap_or_default().to_string();
                (name.clone(), serde_json::json!(format!("/m/{name}")))
            })
            .collect();
        let job: JobRequest = serde_json::from_value(serde_json::json!({
            "jobId": "j", "epoch": 1, "model": "m",
            "task": {"kind": "video", "prompt": "p"},
            "modelSource": {"engine": "sd-cpp", "files": files, "cliDefaults": {"cfgScale": 1.0, "steps": 4, "width": 64, "height": 64}},
            "modelFiles": local,
        }))
        .unwrap();
        let p = ModelPaths::from_job(&job).unwrap();
        let at = |s: &str| Some(PathBuf::from(format!("/m/{s}")));
        assert_eq!(p.diffusion_model, at("wan2.1_i2v_14B.safetensors"));
        assert_eq!(p.t5xxl, at("umt5-xxl.gguf"));
        assert_eq!(p.clip_l, at("clip_l.safetensors"));
        assert_eq!(p.llm, at("qwen_2.5_vl_7b.gguf"));
        assert_eq!(p.clip_vision, at("clip_vision_h.safetensors"));
        assert_eq!(p.llm_vision, at("qwen_2.5_vl_7b_mmproj.gguf"));
        assert_eq!(p.vae, at("wan_2.1_vae.safetensors"));
        assert_eq!(p.taesd, at("taew2_1.safetensors"));
        assert_eq!(p.model, None);
    }

    #[test]
    fn a_model_file_that_was_not_fetched_is_an_error() {
        let job: JobRequest = serde_json::from_value(serde_json::json!({
            "jobId": "j", "epoch": 1, "model": "m",
            "task": {"kind": "image", "prompt": "p"},
            "modelSource": {"engine": "sd-cpp", "files": [{"role": "vae", "url": "https://x/v", "filename": "v.safetensors"}], "cliDefaults": {"cfgScale": 1.0, "steps": 4, "width": 64, "height": 64}},
        }))
        .unwrap();
        let e = ModelPaths::from_job(&job).unwrap_err();
        assert!(e.message.contains("v.safetensors"), "{}", e.message);
    }

    #[test]
    fn fit_frames_trims_or_repeats_the_last() {
        let f = |v: u8| image::RgbImage::from_pixel(2, 2, image::Rgb([v, v, v]));
        let out = fit_frames(vec![f(1), f(2), f(3)], 2);
        assert_eq!(
            out.iter().map(|i| i.get_pixel(0, 0)[0]).collect::<Vec<_>>(),
            [1, 2]
        );
        let out = fit_frames(vec![f(1), f(2)], 4);
        assert_eq!(
            out.iter().map(|i| i.get_pixel(0, 0)[0]).collect::<Vec<_>>(),
            [1, 2, 2, 2]
        );
        assert!(fit_frames(Vec::new(), 3).is_empty());
    }
}
