//! `studio-worker job`: one job through the same executor and runner path
//! as a studio offer, with no studio.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use studio_protocol::studio::{
    AudioSttTask, AudioTtsTask, ChatMessage, Engine, FileRole, ImageTask, JobOfferClaim, LlmTask,
    ModelFile, ModelSource, Task, VideoTask,
};

use crate::cli::{JobArgs, KindArg};
use crate::config::Config;
use crate::jobs::{Executor, JobData};
use crate::models::ModelCache;
use crate::progress::TermBar;
use crate::runner::{Backoff, EngineCatalog, Limits, RunnerPool};

fn need(v: &Option<String>, flag: &str, kind: &str) -> anyhow::Result<String> {
    v.clone()
        .with_context(|| format!("{kind} jobs need {flag}"))
}

/// Builds the task the flags describe.
pub fn task_from_args(a: &JobArgs) -> anyhow::Result<Task> {
    Ok(match a.kind {
        KindArg::Image => Task::Image(ImageTask {
            prompt: need(&a.prompt, "--prompt", "image")?,
            width: a.width,
            height: a.height,
            seed: a.seed,
            ext: a.ext.clone(),
            ..Default::default()
        }),
        KindArg::Llm => {
            let messages = match (&a.messages, &a.prompt) {
                (Some(json), _) => serde_json::from_str::<Vec<ChatMessage>>(json).context(
                    "--messages must be a JSON array of {\"role\", \"content\"} objects",
                )?,
                (None, Some(p)) => vec![ChatMessage {
                    role: "user".into(),
                    content: p.clone(),
                }],
                (None, None) => bail!("llm jobs need --prompt or --messages"),
            };
            Task::Llm(LlmTask {
                messages,
                system: a.system.clone(),
                max_tokens: a.max_tokens,
                temperature: a.temperature,
                seed: a.seed,
                ..Default::default()
            })
        }
        KindArg::AudioStt => Task::AudioStt(AudioSttTask {
            input_url: need(&a.input, "--input", "audio_stt")?,
            language: a.language.clone(),
            timestamps: a.timestamps.clone(),
            ..Default::default()
        }),
        KindArg::AudioTts => Task::AudioTts(AudioTtsTask {
            text: need(&a.text, "--text", "audio_tts")?,
            language: a.language.clone(),
            ext: a.ext.clone(),
            ..Default::default()
        }),
        KindArg::Video => Task::Video(VideoTask {
            prompt: need(&a.prompt, "--prompt", "video")?,
            seconds: a.seconds,
            fps: a.fps,
            width: a.width,
            height: a.height,
            seed: a.seed,
            ext: a.ext.clone(),
            ..Default::default()
        }),
    })
}

/// `ROLE=PATH` → a model file used in place.
fn local_model_file(spec: &str) -> anyhow::Result<ModelFile> {
    let (role, path) = spec
        .split_once('=')
        .with_context(|| format!("--file `{spec}`: expected ROLE=PATH"))?;
    let role: FileRole = serde_json::from_value(serde_json::Value::String(role.to_string()))
        .with_context(|| format!("--file `{spec}`: unknown role `{role}` (diffusion-model, text-encoder, vae, taesd, model, lora, config)"))?;
    let path = std::fs::canonicalize(path)
        .with_context(|| format!("--file `{spec}`: cannot open {path}"))?;
    let filename = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let url = reqwest::Url::from_file_path(&path)
        .map_err(|_| anyhow::anyhow!("--file `{spec}`: not an absolute path"))?;
    Ok(ModelFile {
        role,
        url: url.to_string(),
        filename,
        approx_bytes: None,
        sha256: None,
    })
}

/// Runs the job and writes its result.
pub async fn run(cfg: &Config, args: JobArgs) -> anyhow::Result<()> {
    let task = task_from_args(&args)?;
    task.validate().map_err(anyhow::Error::msg)?;
    let mut source = ModelSource::synthetic();
    source.engine = Engine::parse(&args.engine);
    source.cli_defaults.context_size = args.context_size;
    for spec in &args.files {
        source.files.push(local_model_file(spec)?);
    }
    let claim = JobOfferClaim {
        job_id: format!("local-{}", std::process::id()),
        game_id: "local".into(),
        asset_name: "local/job".into(),
        model: args.model.clone(),
        vram_gb_estimate: 0.0,
        task,
        model_source: source,
    };
    let catalog = EngineCatalog::discover(cfg);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let pool = RunnerPool::new(
        catalog,
        cfg.max_frame_bytes,
        Limits::from_config(cfg),
        Backoff::from_config(cfg),
    );
    let cache = ModelCache::new(
        cfg.models_root(),
        Duration::from_secs(cfg.stall_timeout_secs.max(1)),
    )
    .allow_local_files();
    let mut exec = Executor::new(pool, cache, http, true);
    let started = Instant::now();
    let mut bar = TermBar::new("model");
    let mut on_event = |ev: crate::runner::RunEvent| match ev {
        crate::runner::RunEvent::Started { pid, epoch, .. } => {
            bar.finish();
            tracing::debug!(target: "job", "on runner pid {pid} (epoch {epoch})");
        }
        crate::runner::RunEvent::Downloading { done, total } => bar.show(done, total),
        crate::runner::RunEvent::Progress { .. } => {}
    };
    let result = exec.execute(&claim, &mut on_event).await;
    exec.pool().shutdown(Duration::from_secs(2)).await;
    let data =
        result.map_err(|e| anyhow::anyhow!("job failed ({}): {}", e.class.as_str(), e.message))?;
    let elapsed = started.elapsed();
    match data {
        JobData::Json(v) => {
            let text = serde_json::to_string_pretty(&v)?;
            match &args.out {
                Some(path) => {
                    std::fs::write(path, format!("{text}\n"))
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!(
                        "{} job done in {} ms: {}",
                        claim.task.kind(),
                        elapsed.as_millis(),
                        path.display()
                    );
                }
                None => println!("{text}"),
            }
        }
        JobData::Bytes { data, ext } => {
            let path = args
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("result.{ext}")));
            std::fs::write(&path, &data)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!(
                "{} job done in {} ms: {} ({} bytes of {ext})",
                claim.task.kind(),
                elapsed.as_millis(),
                path.display(),
                data.len()
            );
        }
    }
    Ok(())
}
