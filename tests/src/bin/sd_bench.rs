//! stable-diffusion.cpp benchmark, printed as a table
//! (docs/benchmarks.md): image jobs per minute with the model kept loaded in one
//! runner vs a fresh runner that reloads the model for every job (how the
//! reference worker ran `sd-cli`), and the runner's cold start.
//!
//! Tiny random-weight Z-Image model, 128×128, 4 steps.
//! Run: `cargo build --release --workspace --bins && target/release/sd-bench [JOBS] [THREADS]`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use engine_runner::client::RunnerConn;
use studio_protocol::runner::{FromRunner, JobRequest, Phase, ToRunner};
use studio_protocol::studio::{
    Engine, FileRole, ImageTask, ModelCliDefaults, ModelFile, ModelSource, Task,
};
use studio_worker_tests::proc::{bin, percentile};
use studio_worker_tests::tiny_sd;

fn job(i: usize, m: &tiny_sd::TinyZImage) -> ToRunner {
    let mut files = Vec::new();
    let mut local = BTreeMap::new();
    for (role, path) in [
        (FileRole::DiffusionModel, &m.diffusion),
        (FileRole::TextEncoder, &m.text_encoder),
        (FileRole::Taesd, &m.taesd),
    ] {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        files.push(ModelFile {
            role,
            url: String::new(),
            filename: name.clone(),
            approx_bytes: None,
            sha256: None,
        });
        local.insert(name, path.to_string_lossy().to_string());
    }
    ToRunner::Job(Box::new(JobRequest {
        job_id: format!("sd-{i}"),
        epoch: 1,
        task: Task::Image(ImageTask {
            prompt: format!("a stone golem #{i}"),
            width: Some(128),
            height: Some(128),
            steps: Some(4),
            seed: Some(i as u64),
            ext: Some("png".into()),
            ..Default::default()
        }),
        model: "tiny".into(),
        model_source: ModelSource {
            engine: Engine::SdCpp,
            files,
            cli_defaults: ModelCliDefaults {
                cfg_scale: 1.0,
                steps: 4,
                width: 128,
                height: 128,
                sampling_method: Some("euler".into()),
                flow_shift: None,
                zero_cond_t: None,
                offload_to_cpu: None,
                context_size: None,
                chat_template_kwargs: None,
            },
        },
        model_files: local,
        inputs: BTreeMap::new(),
        scratch_dir: None,
        preload: false,
        stream: false,
    }))
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let jobs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let threads: String = std::env::args().nth(2).unwrap_or_else(|| "2".into());
    let dir = tempfile::tempdir().expect("tempdir");
    let model = tiny_sd::write(dir.path(), 1).expect("tiny model");
    let args = ["--stdio", "--threads", threads.as_str()];

    // Kept loaded: one runner, a warm-up job, then `jobs` jobs.
    let mut r = RunnerConn::start(&bin("engine-runner-sd"), &args).expect("runner starts");
    r.send(&job(0, &model)).expect("send");
    r.until_result(|_| {}).expect("job runs");
    let t0 = Instant::now();
    for i in 1..=jobs {
        r.send(&job(i, &model)).expect("send");
        r.until_result(|_| {}).expect("job runs");
    }
    let kept = t0.elapsed();
    r.stop();

    // Reload per job: a fresh runner (process + model load) for each job.
    let mut cold_hello = Vec::new();
    let mut cold_loaded = Vec::new();
    let mut cold_result = Vec::new();
    let t0 = Instant::now();
    for i in 1..=jobs {
        let spawn = Instant::now();
        let mut r = RunnerConn::start(&bin("engine-runner-sd"), &args).expect("runner starts");
        cold_hello.push(spawn.elapsed());
        r.send(&job(i, &model)).expect("send");
        let mut loaded = None;
        r.until_result(|m| {
            if let FromRunner::Progress {
                phase: Phase::Loading,
                done: 1,
                ..
            } = m
            {
                loaded.get_or_insert(spawn.elapsed());
            }
        })
        .expect("job runs");
        cold_loaded.push(loaded.unwrap_or_default());
        cold_result.push(spawn.elapsed());
        r.stop();
    }
    let reload = t0.elapsed();
    cold_hello.sort();
    cold_loaded.sort();
    cold_result.sort();
    let per_min = |d: Duration| jobs as f64 * 60.0 / d.as_secs_f64();
    println!("## stable-diffusion.cpp, tiny Z-Image model, 128×128, 4 steps, {threads} thread(s), {jobs} jobs\n");
    println!("| mode | jobs/min | per job |");
    println!("| --- | ---: | ---: |");
    println!(
        "| model kept loaded (one runner) | {:.0} | {} |",
        per_min(kept),
        ms(kept / jobs as u32)
    );
    println!(
        "| reload per job (fresh runner each time) | {:.0} | {} |",
        per_min(reload),
        ms(reload / jobs as u32)
    );
    println!("\n| runner cold start | p50 | max |");
    println!("| --- | ---: | ---: |");
    println!(
        "| spawn → handshake | {} | {} |",
        ms(percentile(&cold_hello, 0.5)),
        ms(*cold_hello.last().unwrap_or(&Duration::ZERO))
    );
    println!(
        "| spawn → model loaded (context created; weights are read lazily) | {} | {} |",
        ms(percentile(&cold_loaded, 0.5)),
        ms(*cold_loaded.last().unwrap_or(&Duration::ZERO))
    );
    println!(
        "| spawn → first image | {} | {} |",
        ms(percentile(&cold_result, 0.5)),
        ms(*cold_result.last().unwrap_or(&Duration::ZERO))
    );
}
