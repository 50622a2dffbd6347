//! `llm-bench MODEL.gguf [RUNS] [THREADS] [TOKENS]`: the cost of our path
//! against the bare library, same machine, model, prompt, threads and
//! token count (docs/benchmarks.md).
//!
//! * bare: a loop calling `llama-cpp-2` directly in this process (load
//!   once; per run: clear the KV cache, decode the prompt, greedy-sample
//!   the tokens).
//! * ours: `engine-runner-llama` (beside this binary) over the framed
//!   runner channel with the model already loaded, exactly as the
//!   supervisor drives it: job frame in, progress frames (the first token,
//!   then every 100 ms, then the last), the `chat.completion` result out.
//!   Bare and ours take turns, one job each, so drift on a shared machine
//!   hits both alike.
//! * ours through `studio-worker job --repeat` (beside this binary): the
//!   whole supervisor path, one runner, the first run loads the model and
//!   is left out.
//!
//! Time to first token is measured from sending the job (ours) or starting
//! the prompt decode (bare) to the first generated token; decode speed is
//! the tokens after the first over the time they took; the whole job is
//! prompt to result (for `studio-worker job`, as the supervisor times it).
//! Also: the runner's cold start (spawn → handshake → model loaded).

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use engine_runner::client::{worker_job, RunnerConn};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use studio_protocol::runner::{FromRunner, JobOutput, JobRequest, Phase, ToRunner};
use studio_protocol::studio::{ChatMessage, Engine, LlmTask, ModelSource, Task};

const SYSTEM: &str = "You are a storyteller.";
const USER: &str = "Tell me a long story about a dragon who learns to bake bread.";
const CTX: u32 = 2048;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

struct Run {
    ttft: Duration,
    /// Tokens after the first, and the time they took.
    rest: (usize, Duration),
    /// Prompt to result.
    whole: Duration,
}

fn tok_s(runs: &[Run]) -> f64 {
    let mut rates: Vec<f64> = runs
        .iter()
        .map(|r| r.rest.0 as f64 / r.rest.1.as_secs_f64().max(1e-9))
        .collect();
    rates.sort_by(|a, b| a.total_cmp(b));
    rates.get(rates.len() / 2).copied().unwrap_or_default()
}

fn job(i: usize, tokens: u32) -> ToRunner {
    let mut source = ModelSource::synthetic();
    source.engine = Engine::LlamaCpp;
    source.cli_defaults.context_size = Some(CTX);
    ToRunner::Job(Box::new(JobRequest {
        job_id: format!("llm-{i}"),
        epoch: 1,
        task: Task::Llm(LlmTask {
            messages: vec![ChatMessage {
                role: "user".into(),
                content: USER.into(),
            }],
            system: Some(SYSTEM.into()),
            max_tokens: Some(tokens),
            temperature: Some(0.0),
            ..Default::default()
        }),
        model: "bench".into(),
        model_source: source,
        model_files: BTreeMap::new(),
        inputs: BTreeMap::new(),
        scratch_dir: None,
        preload: false,
        stream: false,
    }))
}

/// Our path: `engine-runner-llama` with the model loaded.
struct Ours {
    conn: RunnerConn,
    tokens: u32,
    jobs: usize,
}

impl Ours {
    /// Starts the runner and runs a warm-up job; also the cold start.
    fn start(runner: &Path, model: &Path, threads: &str, tokens: u32) -> (Self, [Duration; 2]) {
        let model_arg = model.to_string_lossy().to_string();
        let (conn, cold) = RunnerConn::start_warm(
            runner,
            &["--stdio", "--threads", threads, "--model", &model_arg],
            &job(0, tokens),
        )
        .expect("engine-runner-llama starts and runs the warm-up job");
        (
            Self {
                conn,
                tokens,
                jobs: 0,
            },
            cold,
        )
    }

    /// One job; also (prompt tokens, generated tokens).
    fn once(&mut self) -> (Run, (u64, u64)) {
        self.jobs += 1;
        let tokens = self.tokens;
        let t0 = Instant::now();
        self.conn.send(&job(self.jobs, tokens)).expect("send");
        let mut first: Option<Instant> = None;
        let mut last = t0;
        let result = self
            .conn
            .until_result(|m| {
                // Generation progress counts against the token budget.
                if let FromRunner::Progress {
                    phase: Phase::Running,
                    done,
                    total,
                    ..
                } = m
                {
                    if *total == u64::from(tokens) {
                        if *done == 1 {
                            first = Some(Instant::now());
                        }
                        last = Instant::now();
                    }
                }
            })
            .expect("job runs");
        let whole = t0.elapsed();
        let JobOutput::Json { value } = result else {
            panic!("llm job returned bytes");
        };
        let generated = value["usage"]["completion_tokens"].as_u64().unwrap_or(0);
        let counts = (
            value["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
            generated,
        );
        let first = first.expect("a first-token progress frame");
        let run = Run {
            ttft: first - t0,
            rest: (generated.saturating_sub(1) as usize, last - first),
            whole,
        };
        (run, counts)
    }
}

/// The bare library: the same prompt text our engine renders for SmolLM2
/// (its ChatML template with this system prompt), greedy, `tokens` tokens.
/// `before_each` runs before every measured run, so the two paths take
/// turns and drift on a shared machine hits both alike.
fn bare(
    model_path: &Path,
    runs: usize,
    threads: i32,
    tokens: usize,
    mut before_each: impl FnMut(),
) -> (Vec<Run>, usize) {
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default().with_logs_enabled(false));
    let backend = LlamaBackend::init().expect("backend");
    let model = LlamaModel::load_from_file(&backend, model_path, &LlamaModelParams::default())
        .expect("model loads");
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(CTX))
        .with_n_batch(512)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx = model.new_context(&backend, params).expect("context");
    let prompt = format!(
        "<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{USER}<|im_end|>\n<|im_start|>assistant\n"
    );
    let vocab = model.vocab();
    let mut out = Vec::new();
    let mut prompt_len = 0;
    for run in 0..=runs {
        if run > 0 {
            before_each();
        }
        ctx.clear_kv_cache();
        let t0 = Instant::now();
        let toks = vocab.tokenize(prompt.as_bytes(), false, true);
        prompt_len = toks.len();
        let mut batch = LlamaBatch::new(512, 1);
        for (i, t) in toks.iter().enumerate() {
            batch
                .add(*t, i as i32, &[0], i + 1 == toks.len())
                .expect("batch");
        }
        ctx.decode(&mut batch).expect("prompt");
        let mut sampler = LlamaSampler::greedy();
        let mut idx = batch.n_tokens() - 1;
        let mut first = t0;
        for n in 0..tokens {
            let tok = sampler.sample(&ctx, idx);
            if n == 0 {
                first = Instant::now();
            }
            if n + 1 == tokens {
                break;
            }
            batch.clear();
            batch
                .add(tok, (toks.len() + n) as i32, &[0], true)
                .expect("batch");
            ctx.decode(&mut batch).expect("decode");
            idx = 0;
        }
        let end = Instant::now();
        if run > 0 {
            // Run 0 warms up, as ours does.
            out.push(Run {
                ttft: first - t0,
                rest: (tokens - 1, end - first),
                whole: end - t0,
            });
        }
    }
    (out, prompt_len)
}

/// Through `studio-worker job --repeat`: each run's time after the first
/// (which loads the model), and the tokens the last run generated.
fn via_job(model: &Path, runs: usize, threads: u32, tokens: u32) -> (Vec<Duration>, u64) {
    let model_file = format!("model={}", model.display());
    let (tokens, ctx) = (tokens.to_string(), CTX.to_string());
    let (times, stdout) = worker_job(
        &[
            "llm",
            "--engine",
            "llama-cpp",
            "--model",
            "bench",
            "--file",
            &model_file,
            "--system",
            SYSTEM,
            "--prompt",
            USER,
            "--max-tokens",
            &tokens,
            "--temperature",
            "0",
            "--context-size",
            &ctx,
        ],
        runs + 1,
        threads,
    )
    .expect("studio-worker job runs");
    let v: serde_json::Value = serde_json::from_slice(&stdout).expect("a chat.completion");
    let generated = v["usage"]["completion_tokens"].as_u64().unwrap_or(0);
    (times.into_iter().skip(1).collect(), generated)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(model) = args.next().map(PathBuf::from) else {
        eprintln!("usage: llm-bench MODEL.gguf [RUNS] [THREADS] [TOKENS]");
        std::process::exit(2);
    };
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let threads: i32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let tokens: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let runner = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("engine-runner-llama")))
        .expect("engine-runner-llama beside llm-bench");
    // Ours first: its first job tells how many tokens the model makes
    // before EOG (greedy), which the bare loop then matches exactly. Then
    // the two take turns, one job each.
    let (mut ours, [hello, loaded]) = Ours::start(&runner, &model, &threads.to_string(), tokens);
    let (_, (prompt_tokens, generated)) = ours.once();
    let mut ours_runs = Vec::with_capacity(runs);
    let (bare_runs, bare_prompt) = bare(&model, runs, threads, generated as usize, || {
        ours_runs.push(ours.once().0)
    });
    ours.conn.stop();
    let (job_times, job_generated) = via_job(&model, runs, threads as u32, tokens);
    assert_eq!(
        job_generated, generated,
        "studio-worker job must generate the same tokens"
    );
    assert_eq!(
        prompt_tokens as usize, bare_prompt,
        "both paths must decode the same prompt"
    );
    let (ot, bt) = (
        median(ours_runs.iter().map(|r| r.ttft).collect()),
        median(bare_runs.iter().map(|r| r.ttft).collect()),
    );
    let (os, bs) = (tok_s(&ours_runs), tok_s(&bare_runs));
    let (oj, bj, jj) = (
        median(ours_runs.iter().map(|r| r.whole).collect()),
        median(bare_runs.iter().map(|r| r.whole).collect()),
        median(job_times),
    );
    let speed = |bare: Duration, ours: Duration| bare.as_secs_f64() / ours.as_secs_f64().max(1e-9);
    println!("## llama.cpp, {}, {threads} thread(s), prompt {prompt_tokens} tokens, {generated} generated, {runs} runs (medians)\n", model.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default());
    println!("| path | time to first token | decode tokens/s | whole job |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| bare `llama-cpp-2` loop | {} | {bs:.1} | {} |",
        ms(bt),
        ms(bj)
    );
    println!(
        "| ours (runner channel, model loaded) | {} | {os:.1} | {} |",
        ms(ot),
        ms(oj)
    );
    println!(
        "| ours (`studio-worker job --repeat`, model loaded) | | | {} |",
        ms(jj)
    );
    println!(
        "| ratio runner channel / bare (speed) | {:.3} | {:.3} | {:.3} |",
        speed(bt, ot),
        os / bs.max(1e-9),
        speed(bj, oj)
    );
    println!(
        "| ratio `studio-worker job` / bare (speed) | | | {:.3} |",
        speed(bj, jj)
    );
    println!("\n| runner cold start | time |");
    println!("| --- | ---: |");
    println!("| spawn → handshake | {} |", ms(hello));
    println!("| spawn → model loaded | {} |", ms(loaded));
}
