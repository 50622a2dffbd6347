//! `studio-worker job`: one job through the same scheduler, job task and
//! runner path as a studio offer, with no studio.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use studio_protocol::studio::{
    AudioSttTask, AudioTtsTask, ChatMessage, Engine, FileRole, ImageTask, JobOfferClaim, LlmTask,
    ModelFile, ModelSource, Task, VideoTask,
};

use crate::capabilities::HostFacts;
use crate::cli::{JobArgs, KindArg};
use crate::config::Config;
use crate::jobs::JobData;
use crate::progress::TermBar;
use crate::runner::{EngineCatalog, RunEvent};
use crate::scheduler::{self, LocalUpdate, Setup, SlotSetup};

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

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// "5 runs on one runner: first 812.4 ms (starts the runner and loads the
/// model), then p50 95.1 ms, max 97.0 ms".
fn repeat_summary(times: &[Duration]) -> String {
    let Some((first, rest)) = times.split_first() else {
        return "no runs".into();
    };
    let mut rest = rest.to_vec();
    rest.sort();
    let p50 = rest.get(rest.len() / 2).copied().unwrap_or_default();
    let max = rest.last().copied().unwrap_or_default();
    format!(
        "{} runs on one runner: first {:.1} ms (starts the runner and loads the model), then p50 {:.1} ms, max {:.1} ms",
        times.len(),
        ms(*first),
        ms(p50),
        ms(max)
    )
}

/// Runs the job (`--repeat` times) and writes its (last) result.
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
    let (handle, _life, task) = scheduler::start(Setup {
        cfg: cfg.clone(),
        status_path: None,
        host: HostFacts::probe(),
        catalog: EngineCatalog::discover(cfg),
        gpus: Vec::new(),
        slots: vec![SlotSetup {
            gpu: None,
            table: None,
            target: None,
        }],
    });
    let mut bar = TermBar::new("model");
    // Every run on the same scheduler, so on the same resident runner: the
    // model stays loaded after the first.
    let runs = args.repeat.max(1);
    let mut times = Vec::with_capacity(runs as usize);
    let mut last = None;
    let mut failed = None;
    for run in 1..=runs {
        let mut claim = claim.clone();
        if runs > 1 {
            claim.job_id = format!("{}-{run}", claim.job_id);
        }
        let started = Instant::now();
        let mut updates = handle.submit_local(claim);
        let mut result = None;
        while let Some(u) = updates.recv().await {
            match u {
                LocalUpdate::Event(RunEvent::Started { pid, epoch, .. }) => {
                    bar.finish();
                    tracing::debug!(target: "job", "on runner pid {pid} (epoch {epoch})");
                }
                LocalUpdate::Event(RunEvent::Downloading { done, total }) => bar.show(done, total),
                LocalUpdate::Event(_) => {}
                LocalUpdate::QueueFull => bail!("the worker's local queue is full"),
                LocalUpdate::Done(r) => {
                    result = Some(r);
                    break;
                }
            }
        }
        let elapsed = started.elapsed();
        match result {
            Some(Ok(data)) => last = Some(data),
            Some(Err(e)) => {
                failed = Some((run, e));
                break;
            }
            None => bail!("the scheduler stopped before the job ended"),
        }
        if runs > 1 {
            eprintln!("run {run}/{runs}: {:.1} ms", ms(elapsed));
        }
        times.push(elapsed);
    }
    handle.stop().await;
    let _ = task.await;
    if let Some((run, e)) = failed {
        let which = if runs > 1 {
            format!(" on run {run}/{runs}")
        } else {
            String::new()
        };
        bail!("job failed{which} ({}): {}", e.class.as_str(), e.message);
    }
    if runs > 1 {
        eprintln!("{}", repeat_summary(&times));
    }
    if let Some(path) = &args.timings {
        let rows: Vec<_> = times
            .iter()
            .enumerate()
            .map(|(i, t)| serde_json::json!({"run": i + 1, "ms": ms(*t)}))
            .collect();
        std::fs::write(path, serde_json::to_string(&rows)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let Some(data) = last else {
        bail!("no run finished");
    };
    let elapsed = times.last().copied().unwrap_or_default();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repeat_summary_sets_the_first_run_apart() {
        let t = |ms: u64| Duration::from_millis(ms);
        let s = repeat_summary(&[t(900), t(40), t(60), t(50)]);
        assert_eq!(
            s,
            "4 runs on one runner: first 900.0 ms (starts the runner and loads the model), then p50 50.0 ms, max 60.0 ms"
        );
        assert_eq!(repeat_summary(&[]), "no runs");
    }
}
