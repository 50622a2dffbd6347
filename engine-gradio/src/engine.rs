//! The `gradio` engine: an image job becomes one call of an endpoint of a
//! Gradio app, through the app's queue (progress, heartbeats and the
//! app's own error messages come back), and the image it returns becomes
//! the job's output at the requested size and format.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use engine_runner::encode::image::{check_size, encode_rgb, image_ext};
use engine_runner::engine::{Engine, EngineError, Reporter};
use serde_json::{Map, Value};
use studio_protocol::runner::{ErrorClass, JobOutput, JobRequest, Phase};
use studio_protocol::studio::{ImageTask, LogLevel, Task};

use crate::api::{ApiError, App, Endpoint, Event, Param};

/// The task fields that can feed an endpoint's parameters, each with the
/// parameter names it goes to when the config does not say.
pub const FIELDS: &[(&str, &[&str])] = &[
    (
        "prompt",
        &["prompt", "text", "positive_prompt", "prompt_text"],
    ),
    (
        "negativePrompt",
        &["negative_prompt", "negative", "neg_prompt"],
    ),
    ("width", &["width", "w"]),
    ("height", &["height", "h"]),
    (
        "steps",
        &[
            "steps",
            "num_inference_steps",
            "sampling_steps",
            "num_steps",
        ],
    ),
    ("seed", &["seed"]),
    (
        "cfgScale",
        &["cfg_scale", "guidance_scale", "cfg", "guidance"],
    ),
    (
        "samplingMethod",
        &["sampler", "sampler_name", "sampling_method", "scheduler"],
    ),
    (
        "initImageUrl",
        &["image", "init_image", "input_image", "img"],
    ),
    ("maskUrl", &["mask", "mask_image"]),
    ("denoise", &["denoise", "strength", "denoising_strength"]),
];

/// How the runner was told to talk to the app.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The app's URL.
    pub url: String,
    /// The endpoint (`/generate`); `None`: the first that takes a text
    /// prompt and returns an image.
    pub api_name: Option<String>,
    /// Task field → parameter name; an empty name leaves the field out.
    pub params: BTreeMap<String, String>,
    /// Parameter name → a fixed value.
    pub fixed: Map<String, Value>,
    /// The longest a job may take, queue and retries included.
    pub timeout: Duration,
    /// Bearer token for an app behind auth.
    pub token: Option<String>,
}

/// Where one parameter's value comes from.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    /// A task field (camelCase name).
    Field(&'static str),
    /// A configured value.
    Fixed(Value),
    /// The endpoint's own default.
    Default(Value),
}

/// The chosen endpoint and where each of its parameters comes from.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The endpoint.
    pub endpoint: Endpoint,
    sources: Vec<Source>,
    /// Index of the image (or gallery) among its returns.
    output: usize,
}

impl Plan {
    /// `{"prompt": "text", ...}`: which parameter each task field feeds.
    pub fn mapping(&self) -> BTreeMap<String, String> {
        self.endpoint
            .params
            .iter()
            .zip(&self.sources)
            .filter_map(|(p, s)| match s {
                Source::Field(f) => Some((f.to_string(), p.name.clone())),
                _ => None,
            })
            .collect()
    }
}

/// A mapping that cannot work with the app's endpoints.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct MappingError(pub String);

/// Chooses the endpoint and maps the task fields onto its parameters.
pub fn plan(settings: &Settings, endpoints: &[Endpoint]) -> Result<Plan, MappingError> {
    let names = || {
        endpoints
            .iter()
            .map(|e| e.api_name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let endpoint = match &settings.api_name {
        Some(want) => {
            let want = format!("/{}", want.trim_start_matches('/'));
            endpoints
                .iter()
                .find(|e| e.api_name == want)
                .ok_or_else(|| {
                    MappingError(format!(
                        "[gradio] api_name = \"{want}\": the app has no such endpoint (its endpoints: {})",
                        names()
                    ))
                })?
        }
        None => endpoints
            .iter()
            .find(|e| {
                e.params.iter().any(|p| p.component == "Textbox")
                    && e.returns.iter().any(|r| is_image_return(r))
            })
            .ok_or_else(|| {
                MappingError(format!(
                    "the app has no endpoint that takes a text prompt and returns an image; set [gradio] api_name (its endpoints: {})",
                    names()
                ))
            })?,
    };
    let output = endpoint
        .returns
        .iter()
        .position(|r| is_image_return(r))
        .ok_or_else(|| {
            MappingError(format!(
                "endpoint {} returns no image ({}); set [gradio] api_name to one that does",
                endpoint.api_name,
                endpoint.returns.join(", ")
            ))
        })?;
    let listing = || {
        format!(
            "endpoint {}'s parameters: {}",
            endpoint.api_name,
            endpoint.listing()
        )
    };
    for (field, name) in &settings.params {
        if !FIELDS.iter().any(|(f, _)| f == field) {
            return Err(MappingError(format!(
                "[gradio.params] `{field}` is not a task field (the fields: {})",
                FIELDS
                    .iter()
                    .map(|(f, _)| *f)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if !name.is_empty() && !endpoint.params.iter().any(|p| &p.name == name) {
            return Err(MappingError(format!(
                "[gradio.params] {field} = \"{name}\": no such parameter; {}",
                listing()
            )));
        }
    }
    for name in settings.fixed.keys() {
        if !endpoint.params.iter().any(|p| &p.name == name) {
            return Err(MappingError(format!(
                "[gradio.fixed] `{name}`: no such parameter; {}",
                listing()
            )));
        }
    }
    // Which field feeds each parameter: the config's word first, then
    // the usual names, then (for the prompt and the init image) the
    // first parameter of the right component.
    let mut feeds: BTreeMap<String, &'static str> = BTreeMap::new();
    for (field, guesses) in FIELDS {
        let target = match settings.params.get(*field) {
            Some(name) if name.is_empty() => None,
            Some(name) => Some(name.clone()),
            None => guesses
                .iter()
                .find(|g| endpoint.params.iter().any(|p| p.name == **g))
                .map(|g| g.to_string())
                .or_else(|| {
                    let fits = |p: &Param| match *field {
                        "prompt" => p.component == "Textbox",
                        "initImageUrl" => p.is_file(),
                        _ => false,
                    };
                    endpoint
                        .params
                        .iter()
                        .find(|p| fits(p) && !feeds.contains_key(&p.name))
                        .map(|p| p.name.clone())
                }),
        };
        if let Some(t) = target {
            if settings.fixed.contains_key(&t) || feeds.contains_key(&t) {
                continue;
            }
            feeds.insert(t, field);
        }
    }
    let mut sources = Vec::new();
    for p in &endpoint.params {
        let s = if let Some(v) = settings.fixed.get(&p.name) {
            Source::Fixed(v.clone())
        } else if let Some(f) = feeds.get(&p.name) {
            Source::Field(f)
        } else if let Some(d) = &p.default {
            Source::Default(d.clone())
        } else {
            return Err(MappingError(format!(
                "parameter `{}` is required and nothing feeds it: map a task field to it in [gradio.params] or give it a value in [gradio.fixed]; {}",
                p.name,
                listing()
            )));
        };
        sources.push(s);
    }
    if !sources.contains(&Source::Field("prompt")) {
        return Err(MappingError(format!(
            "no parameter takes the prompt: set [gradio.params] prompt = \"<parameter>\"; {}",
            listing()
        )));
    }
    Ok(Plan {
        endpoint: endpoint.clone(),
        sources,
        output,
    })
}

fn is_image_return(component: &str) -> bool {
    matches!(
        component,
        "Image" | "Gallery" | "ImageEditor" | "AnnotatedImage"
    )
}

/// The engine: one app, its endpoint resolved at the first job (or
/// `preload`) and again after the app went away.
pub struct Gradio {
    settings: Settings,
    app: App,
    plan: Option<Plan>,
}

impl Gradio {
    /// An engine for the app in `settings`.
    pub fn new(settings: Settings) -> Result<Self, String> {
        let app = App::new(&settings.url, settings.token.clone())?;
        Ok(Self {
            settings,
            app,
            plan: None,
        })
    }

    /// Asks the app for its endpoints and maps the task onto one.
    pub fn resolve(&mut self) -> Result<&Plan, EngineError> {
        if self.plan.is_none() {
            let endpoints = self.app.endpoints().map_err(|e| api_error(&e))?;
            let plan = plan(&self.settings, &endpoints).map_err(|e| EngineError {
                class: ErrorClass::EngineUnavailable,
                message: format!("gradio mapping: {e}"),
            })?;
            self.plan = Some(plan);
        }
        self.plan
            .as_ref()
            .ok_or_else(|| EngineError::engine("the endpoint was not resolved"))
    }

    fn generate(
        &mut self,
        job: &JobRequest,
        t: &ImageTask,
        report: &mut dyn Reporter,
    ) -> Result<JobOutput, EngineError> {
        let ext = image_ext(t.effective_ext())?;
        let (w, h) = (t.effective_width(), t.effective_height());
        check_size(w, h)?;
        let deadline = Instant::now() + self.settings.timeout;
        let plan = match self.resolve() {
            Ok(p) => p.clone(),
            Err(e) => return Err(e),
        };
        let data = self.inputs(&plan, job, t)?;
        let session = session_hash();
        let fn_index = plan.endpoint.fn_index;
        let mut delay = Duration::from_millis(250);
        let event_id = loop {
            // Open the stream only once the job is in: the app closes an
            // idle session's stream.
            match self.app.join(fn_index, &data, &session) {
                Ok(id) => break id,
                Err(e) if e.is_busy() && Instant::now() + delay < deadline => {
                    report.log(
                        LogLevel::Warn,
                        format!("{e}; trying again in {} ms", delay.as_millis()),
                    );
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(self.lost(&e)),
            }
        };
        let mut events = self.app.events(&session).map_err(|e| self.lost(&e))?;
        let mut last = (0u64, 1u64);
        let mut rank = None;
        report.progress(Phase::Running, 0, 1);
        let outputs = loop {
            if report.cancelled() {
                self.app.cancel(&session, fn_index, &event_id);
                return Err(EngineError::engine("cancelled"));
            }
            if Instant::now() > deadline {
                self.app.cancel(&session, fn_index, &event_id);
                // The app's slowness, not a runner that hung: class
                // `engine`, so it never counts toward the breakers.
                return Err(EngineError::engine(format!(
                    "the Gradio app did not finish within [gradio] timeout_secs ({} s)",
                    self.settings.timeout.as_secs()
                )));
            }
            match events.next_event().map_err(|e| self.lost(&e))? {
                Event::Estimation { rank: r, size } => {
                    if rank != Some(r) && size > 1 {
                        report.log(
                            LogLevel::Info,
                            format!("waiting in the app's queue: position {} of {size}", r + 1),
                        );
                    }
                    rank = Some(r);
                    report.progress(Phase::Running, last.0, last.1);
                }
                Event::Progress { index, length, .. } => {
                    last = (index.min(length), length.max(1));
                    report.progress(Phase::Running, last.0, last.1);
                }
                Event::Starts | Event::Heartbeat | Event::Other => {
                    report.progress(Phase::Running, last.0, last.1)
                }
                Event::Log { level, message } => {
                    let level = match level.as_str() {
                        "warning" | "warn" => LogLevel::Warn,
                        "error" => LogLevel::Error,
                        _ => LogLevel::Info,
                    };
                    report.log(level, format!("app: {message}"));
                }
                Event::Completed(Ok(outputs)) => break outputs,
                Event::Completed(Err(message)) => {
                    return Err(EngineError::engine(format!(
                        "the Gradio app failed: {message}"
                    )))
                }
                Event::UnexpectedError(message) => {
                    self.plan = None;
                    return Err(EngineError::engine(format!(
                        "the Gradio app failed: {message}"
                    )));
                }
                Event::Closed => {
                    self.plan = None;
                    return Err(EngineError::engine(
                        "the Gradio app closed the job's event stream before sending a result (did it restart?)",
                    ));
                }
            }
        };
        report.progress(Phase::Running, last.1, last.1);
        let value = outputs.get(plan.output).ok_or_else(|| {
            EngineError::engine(format!(
                "the Gradio app returned {} outputs; the image was expected at position {}",
                outputs.len(),
                plan.output
            ))
        })?;
        let bytes = self.image_bytes(value)?;
        let img = image::load_from_memory(&bytes).map_err(|e| {
            EngineError::engine(format!(
                "the Gradio app returned something that is not an image ({e}): {}",
                describe(&bytes)
            ))
        })?;
        let mut rgb = img.to_rgb8();
        if rgb.dimensions() != (w, h) {
            report.log(
                LogLevel::Info,
                format!(
                    "the app returned {}×{}; resized to the requested {w}×{h}",
                    rgb.width(),
                    rgb.height()
                ),
            );
            rgb = image::imageops::resize(&rgb, w, h, image::imageops::FilterType::Lanczos3);
        }
        Ok(JobOutput::Bytes {
            data: encode_rgb(&rgb, ext)?,
            ext: t.effective_ext().to_ascii_lowercase(),
        })
    }

    /// The call's arguments, in the endpoint's order; images uploaded.
    fn inputs(
        &self,
        plan: &Plan,
        job: &JobRequest,
        t: &ImageTask,
    ) -> Result<Vec<Value>, EngineError> {
        // A field the task leaves out takes the app's own default, not the
        // studio's cliDefaults (those suit the studio's model, not the app's
        // pipeline).
        let mut data = Vec::new();
        for (p, s) in plan.endpoint.params.iter().zip(&plan.sources) {
            let v = match s {
                Source::Fixed(v) | Source::Default(v) => v.clone(),
                Source::Field(f) => {
                    let v = match *f {
                        "prompt" => Some(Value::from(t.prompt.clone())),
                        "negativePrompt" => t.negative_prompt.clone().map(Value::from),
                        "width" => Some(Value::from(t.effective_width())),
                        "height" => Some(Value::from(t.effective_height())),
                        "steps" => t.steps.map(Value::from),
                        "seed" => t.seed.map(Value::from),
                        "cfgScale" => t.cfg_scale.map(Value::from),
                        "samplingMethod" => t.sampling_method.clone().map(Value::from),
                        "denoise" => t.denoise.map(Value::from),
                        "initImageUrl" | "maskUrl" => match job.inputs.get(*f) {
                            Some(path) => Some(self.upload(Path::new(path), f)?),
                            None => None,
                        },
                        _ => None,
                    };
                    match (v, &p.default) {
                        (Some(v), _) => v,
                        (None, Some(d)) => d.clone(),
                        (None, None) => {
                            return Err(EngineError::bad_input(format!(
                                "task.{f}: the app's endpoint {} requires it (parameter `{}`)",
                                plan.endpoint.api_name, p.name
                            )))
                        }
                    }
                }
            };
            data.push(v);
        }
        Ok(data)
    }

    fn upload(&self, path: &Path, field: &str) -> Result<Value, EngineError> {
        self.app.upload(path).map_err(|e| match e {
            ApiError::Unreadable { .. } | ApiError::Status { .. } => {
                EngineError::engine(format!("task.{field}: uploading it to the app: {e}"))
            }
            e => api_error(&e),
        })
    }

    /// The bytes of a returned image: a FileData object, a URL (absolute,
    /// relative, `gradio_api/file=`, data URL) or a gallery's first item.
    fn image_bytes(&self, v: &Value) -> Result<Vec<u8>, EngineError> {
        let reference = image_reference(v).ok_or_else(|| {
            EngineError::engine(format!(
                "the Gradio app returned no image: {}",
                v.to_string().chars().take(200).collect::<String>()
            ))
        })?;
        if let Some(rest) = reference.strip_prefix("data:") {
            let (_, b64) = rest.split_once(";base64,").ok_or_else(|| {
                EngineError::engine("the Gradio app returned a data URL that is not base64")
            })?;
            return base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| EngineError::engine(format!("the app's data URL: {e}")));
        }
        self.app.fetch(&reference).map_err(|e| api_error(&e))
    }

    /// An API failure mid-job: the app may have restarted with other
    /// endpoints, so they are asked again at the next job.
    fn lost(&mut self, e: &ApiError) -> EngineError {
        self.plan = None;
        api_error(e)
    }
}

/// Where a returned value's image is.
fn image_reference(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(o) => {
            if let Some(url) = o.get("url").and_then(Value::as_str) {
                return Some(url.to_string());
            }
            if let Some(path) = o.get("path").and_then(Value::as_str) {
                return Some(path.to_string());
            }
            // A gallery item: {"image": FileData, "caption": ...}.
            o.get("image")
                .or_else(|| o.get("video"))
                .and_then(image_reference)
        }
        // A gallery (list of items) or an (image, caption) pair.
        Value::Array(items) => items.first().and_then(image_reference),
        _ => None,
    }
}

fn describe(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(120)]).into_owned();
    if text.chars().all(|c| !c.is_control() || c.is_whitespace()) {
        format!("{:?}", text.trim())
    } else {
        format!("{} bytes", bytes.len())
    }
}

/// An API error as a job error: no answer at all is the app being away
/// (retryable elsewhere, and not the model's fault).
fn api_error(e: &ApiError) -> EngineError {
    match e {
        ApiError::Unreachable { .. } => EngineError {
            class: ErrorClass::EngineUnavailable,
            message: e.to_string(),
        },
        _ => EngineError::engine(e.to_string()),
    }
}

fn session_hash() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..11)
        .map(|_| {
            let n = rng.gen_range(0..36u8);
            char::from(if n < 10 { b'0' + n } else { b'a' + n - 10 })
        })
        .collect()
}

impl Engine for Gradio {
    fn name(&self) -> &'static str {
        "gradio"
    }

    fn run(
        &mut self,
        job: &JobRequest,
        report: &mut dyn Reporter,
    ) -> Result<JobOutput, EngineError> {
        match &job.task {
            Task::Image(t) => self.generate(job, t, report),
            other => Err(EngineError::cannot_serve("gradio", other)),
        }
    }

    fn preload(&mut self, _job: &JobRequest, report: &mut dyn Reporter) -> Result<(), EngineError> {
        report.progress(Phase::Loading, 0, 1);
        self.resolve()?;
        report.progress(Phase::Loading, 1, 1);
        Ok(())
    }
}

/// What `--check` prints: the app, the endpoint and the mapping.
pub fn check(settings: &Settings) -> Result<Value, (i32, String)> {
    let app = App::new(&settings.url, settings.token.clone()).map_err(|e| (2, e))?;
    let endpoints = app.endpoints().map_err(|e| match e {
        ApiError::Unreachable { .. } => (4, e.to_string()),
        e => (3, e.to_string()),
    })?;
    let plan = plan(settings, &endpoints).map_err(|e| (3, e.to_string()))?;
    Ok(serde_json::json!({
        "url": settings.url,
        "endpoint": plan.endpoint.api_name,
        "fnIndex": plan.endpoint.fn_index,
        "mapping": plan.mapping(),
        "parameters": plan.endpoint.params.iter().map(Param::to_string).collect::<Vec<_>>(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Param;
    use serde_json::json;

    fn param(name: &str, component: &str, default: Option<Value>) -> Param {
        Param {
            name: name.into(),
            label: name.into(),
            component: component.into(),
            ty: "any".into(),
            default,
        }
    }

    fn settings() -> Settings {
        Settings {
            url: "http://127.0.0.1:7860".into(),
            api_name: None,
            params: BTreeMap::new(),
            fixed: Map::new(),
            timeout: Duration::from_secs(60),
            token: None,
        }
    }

    fn endpoints() -> Vec<Endpoint> {
        vec![
            Endpoint {
                api_name: "/describe".into(),
                fn_index: 0,
                params: vec![param("image", "Image", None)],
                returns: vec!["Textbox".into()],
            },
            Endpoint {
                api_name: "/txt2img".into(),
                fn_index: 1,
                params: vec![
                    param("positive", "Textbox", None),
                    param("width", "Slider", Some(json!(512))),
                    param("height", "Slider", Some(json!(512))),
                    param("num_inference_steps", "Slider", Some(json!(30))),
                    param("style", "Dropdown", None),
                ],
                returns: vec!["Gallery".into()],
            },
        ]
    }

    #[test]
    fn the_default_endpoint_takes_a_prompt_and_returns_an_image_and_fields_find_their_parameters() {
        let mut s = settings();
        s.fixed.insert("style".into(), json!("photo"));
        let p = plan(&s, &endpoints()).unwrap();
        assert_eq!(p.endpoint.api_name, "/txt2img");
        assert_eq!(
            p.mapping(),
            BTreeMap::from([
                ("prompt".to_string(), "positive".to_string()),
                ("width".into(), "width".into()),
                ("height".into(), "height".into()),
                ("steps".into(), "num_inference_steps".into()),
            ])
        );
        assert_eq!(p.sources[4], Source::Fixed(json!("photo")));
    }

    #[test]
    fn a_required_parameter_nothing_feeds_is_named_with_the_endpoints_parameters() {
        let e = plan(&settings(), &endpoints()).unwrap_err().to_string();
        assert!(e.contains("parameter `style` is required"), "{e}");
        assert!(
            e.contains("positive (Textbox any, required), width (Slider any, default 512)"),
            "{e}"
        );
        let mut s = settings();
        s.params.insert("seed".into(), "rng".into());
        let e = plan(&s, &endpoints()).unwrap_err().to_string();
        assert!(e.contains("seed = \"rng\": no such parameter"), "{e}");
        let mut s = settings();
        s.api_name = Some("nope".into());
        let e = plan(&s, &endpoints()).unwrap_err().to_string();
        assert!(e.contains("/describe, /txt2img"), "{e}");
    }

    #[test]
    fn a_returned_image_is_found_in_every_shape_gradio_uses() {
        let fd = json!({"path": "/tmp/x.png", "url": "http://h/gradio_api/file=/tmp/x.png"});
        assert_eq!(
            image_reference(&fd).as_deref(),
            Some("http://h/gradio_api/file=/tmp/x.png")
        );
        let gallery = json!([{"image": {"path": "/tmp/g.png", "url": null}, "caption": null}]);
        assert_eq!(image_reference(&gallery).as_deref(), Some("/tmp/g.png"));
        let pair = json!([["data:image/png;base64,AAAA", "cap"]]);
        assert_eq!(
            image_reference(&pair).as_deref(),
            Some("data:image/png;base64,AAAA")
        );
        assert_eq!(image_reference(&json!(null)), None);
    }
}
