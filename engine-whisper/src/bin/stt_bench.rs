//! `stt-bench MODEL.bin AUDIO.wav [RUNS] [THREADS]`: whisper.cpp through
//! our path against the bare library on the same machine, model, audio and
//! thread count (docs/benchmarks.md).
//!
//! * bare: `whisper-rs` called directly in this process (context and state
//!   made once; per run: read the 16 kHz mono WAV, `full` with greedy
//!   decoding, collect the text).
//! * ours: `engine-runner-whisper` (beside this binary) over the framed
//!   runner channel with the model already loaded, exactly as the
//!   supervisor drives it.
//!   Runs with `language: "en"` and without `language` take turns on the
//!   one runner (tiny.en is English-only, so both transcribe as English
//!   and neither runs language detection).
//! * bare with `auto`: what whisper.cpp costs when asked to detect the
//!   language (an extra encoder pass), for scale.
//! * ours through `studio-worker job --repeat` (beside this binary): the
//!   whole supervisor path (input copied in, runner, result), one runner,
//!   the first run loads the model and is left out.
//!
//! Real-time factor = processing time / audio duration (lower is faster);
//! the ratio is bare time / our time (1.0 = no overhead). Also the
//! runner's cold start (spawn → handshake → model loaded).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use engine_runner::client::{worker_job, RunnerConn};
use studio_protocol::runner::{JobOutput, JobRequest, ToRunner};
use studio_protocol::studio::{AudioSttTask, Engine, ModelSource, Task};
use whisper_rs::{FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn job(i: usize, audio: &Path, language: Option<&str>) -> ToRunner {
    let mut source = ModelSource::synthetic();
    source.engine = Engine::WhisperCpp;
    ToRunner::Job(Box::new(JobRequest {
        job_id: format!("stt-{i}"),
        epoch: 1,
        task: Task::AudioStt(AudioSttTask {
            input_url: "bench".into(),
            language: language.map(str::to_string),
            ..Default::default()
        }),
        model: "bench".into(),
        model_source: source,
        model_files: BTreeMap::new(),
        inputs: BTreeMap::from([("inputUrl".to_string(), audio.to_string_lossy().to_string())]),
        scratch_dir: None,
        preload: false,
        stream: false,
    }))
}

/// Our runner: `runs` jobs with `language: "en"` and `runs` without,
/// taking turns; the times of each, the last texts, the cold start and
/// the language reported without one.
struct Ours {
    en: Vec<Duration>,
    none: Vec<Duration>,
    text_en: String,
    text_none: String,
    language_none: String,
    cold: [Duration; 2],
}

fn ours(runner: &Path, model: &Path, audio: &Path, runs: usize, threads: &str) -> Ours {
    let model_arg = model.to_string_lossy().to_string();
    let (mut r, cold) = RunnerConn::start_warm(
        runner,
        &["--stdio", "--threads", threads, "--model", &model_arg],
        &job(0, audio, Some("en")),
    )
    .expect("engine-runner-whisper starts and runs the warm-up job");
    let mut o = Ours {
        en: Vec::new(),
        none: Vec::new(),
        text_en: String::new(),
        text_none: String::new(),
        language_none: String::new(),
        cold,
    };
    for i in 1..=runs {
        for language in [Some("en"), None] {
            let t0 = Instant::now();
            r.send(&job(i, audio, language)).expect("send");
            let out = r.until_result(|_| {}).expect("job runs");
            let took = t0.elapsed();
            let JobOutput::Json { value } = out else {
                panic!("a transcript is JSON")
            };
            let text = value["text"].as_str().unwrap_or_default().to_string();
            if language.is_some() {
                o.en.push(took);
                o.text_en = text;
            } else {
                o.none.push(took);
                o.text_none = text;
                o.language_none = value["language"].as_str().unwrap_or_default().to_string();
            }
        }
    }
    r.stop();
    o
}

fn bare(
    model: &Path,
    audio: &Path,
    runs: usize,
    threads: i32,
    language: &str,
) -> (Vec<Duration>, String, f64) {
    whisper_rs::install_logging_hooks();
    let ctx = WhisperContext::new_with_params(
        &model.to_string_lossy(),
        WhisperContextParameters::default(),
    )
    .expect("model loads");
    let mut state = ctx.create_state().expect("state");
    let mut times = Vec::new();
    let mut text = String::new();
    let mut seconds = 0.0;
    for run in 0..=runs {
        let t0 = Instant::now();
        let mut reader = hound::WavReader::open(audio).expect("wav");
        let spec = reader.spec();
        assert_eq!(
            (spec.sample_rate, spec.channels, spec.bits_per_sample),
            (16_000, 1, 16),
            "stt-bench wants 16 kHz mono 16-bit WAV"
        );
        let samples: Vec<f32> = reader
            .samples::<i16>()
            .map(|s| s.map(|v| v as f32 / 32768.0))
            .collect::<Result<_, _>>()
            .expect("samples");
        seconds = samples.len() as f64 / 16_000.0;
        let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
        params.set_n_threads(threads);
        params.set_language(Some(language));
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_timestamps(false);
        state.full(params, &samples).expect("full");
        text = state
            .as_iter()
            .map(|s| s.to_str_lossy().map(|t| t.into_owned()).unwrap_or_default())
            .collect::<String>()
            .trim()
            .to_string();
        if run > 0 {
            times.push(t0.elapsed());
        }
    }
    (times, text, seconds)
}

/// Through `studio-worker job --repeat`: each run's time after the first
/// (which loads the model), and the last run's text.
fn via_job(model: &Path, audio: &Path, runs: usize, threads: u32) -> (Vec<Duration>, String) {
    let model_file = format!("model={}", model.display());
    let (times, stdout) = worker_job(
        &[
            "stt",
            "--engine",
            "whisper-cpp",
            "--model",
            "bench",
            "--file",
            &model_file,
            "--input",
            &audio.to_string_lossy(),
            "--language",
            "en",
        ],
        runs + 1,
        threads,
    )
    .expect("studio-worker job runs");
    let v: serde_json::Value = serde_json::from_slice(&stdout).expect("a transcript");
    let text = v["text"].as_str().unwrap_or_default().to_string();
    (times.into_iter().skip(1).collect(), text)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(model), Some(audio)) = (
        args.next().map(PathBuf::from),
        args.next().map(PathBuf::from),
    ) else {
        eprintln!("usage: stt-bench MODEL.bin AUDIO.wav [RUNS] [THREADS]");
        std::process::exit(2);
    };
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let threads: i32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let runner = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("engine-runner-whisper")))
        .expect("engine-runner-whisper beside stt-bench");
    let o = ours(&runner, &model, &audio, runs, &threads.to_string());
    let [hello, loaded] = o.cold;
    let (bare_t, bare_text, seconds) = bare(&model, &audio, runs, threads, "en");
    assert_eq!(o.text_en, bare_text, "both paths must transcribe the same");
    assert_eq!(
        o.text_none, bare_text,
        "a job without language must transcribe the same"
    );
    assert_eq!(o.language_none, "en", "tiny.en without language reports en");
    let (auto_t, _, _) = bare(&model, &audio, runs, threads, "auto");
    let (job_t, job_text) = via_job(&model, &audio, runs, threads as u32);
    assert_eq!(
        job_text, bare_text,
        "studio-worker job must transcribe the same"
    );
    let (b, a, j) = (median(bare_t), median(auto_t), median(job_t));
    let (o_en, o_none) = (median(o.en), median(o.none));
    println!(
        "## whisper.cpp, {}, {seconds:.2} s of audio, {threads} thread(s), {runs} runs (medians)\n",
        model
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default()
    );
    println!("| path | time | real-time factor |");
    println!("| --- | ---: | ---: |");
    let row = |name: &str, d: Duration| {
        println!(
            "| {name} | {:.1} ms | {:.3} |",
            d.as_secs_f64() * 1000.0,
            d.as_secs_f64() / seconds
        )
    };
    row("bare `whisper-rs`, `en`", b);
    row("bare `whisper-rs`, `auto` (detects: extra encoder pass)", a);
    row("ours (runner channel, model loaded), `en`", o_en);
    row("ours (runner channel, model loaded), no `language`", o_none);
    row("ours (`studio-worker job --repeat`, model loaded), `en`", j);
    println!(
        "| ratio bare / runner channel (speed) | {:.3} | |",
        b.as_secs_f64() / o_en.as_secs_f64()
    );
    println!(
        "| ratio no `language` / `en` on our runner (time) | {:.3} | |",
        o_none.as_secs_f64() / o_en.as_secs_f64()
    );
    println!(
        "| ratio bare / `studio-worker job` (speed) | {:.3} | |",
        b.as_secs_f64() / j.as_secs_f64()
    );
    println!("\n| runner cold start | time |");
    println!("| --- | ---: |");
    println!(
        "| spawn → handshake | {:.1} ms |",
        hello.as_secs_f64() * 1000.0
    );
    println!(
        "| spawn → model loaded | {:.1} ms |",
        loaded.as_secs_f64() * 1000.0
    );
    println!("\ntext: {:?}", o.text_en);
}
