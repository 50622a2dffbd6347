//! Piper's real-time factor through the worker against a bare loop, and
//! espeak's, printed as a table (docs/benchmarks.md).
//!
//! * ours: `studio-worker job audio_tts --engine piper --repeat R` (the
//!   supervisor, a runner, the voice kept loaded), each run's time from
//!   `--timings`, the first (runner start and load) left out;
//! * bare: one process, no worker: `espeak-ng --ipa` for the phonemes, the
//!   voice's `phoneme_id_map`, then ONNX Runtime directly with default
//!   session options, sentence by sentence, the samples kept in memory;
//! * espeak: `studio-worker job audio_tts --engine espeak --repeat R`.
//!
//! Alternating rounds, one thread for ONNX Runtime in both. RTF = time to
//! make the audio / the audio's duration (lower is faster).
//!
//! Run: `cargo build --release --workspace --bins && target/release/tts-bench VOICE.onnx LIBONNXRUNTIME [ROUNDS]`

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use engine_ort::ort;
use ort::session::Session;
use ort::value::Tensor;

const TEXT: &str = "The quick brown fox jumps over the lazy dog. Please send the report to the office before noon on Friday, and call me when it arrives. The weather today is sunny and warm, with a light breeze from the west.";
const RUNS: u32 = 4;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Seconds of audio in a 16-bit mono WAV.
fn wav_seconds(path: &Path) -> f64 {
    let r = hound::WavReader::open(path).expect("a WAV");
    r.duration() as f64 / r.spec().sample_rate as f64
}

/// `studio-worker job` RTFs (runs 2..): (median RTF, audio seconds).
fn ours(worker: &Path, config: &Path, args: &[&str], out: &Path) -> (f64, f64) {
    let timings = out.with_extension("json");
    let status = Command::new(worker)
        .arg("--config")
        .arg(config)
        .args([
            "job",
            "audio_tts",
            "--text",
            TEXT,
            "--repeat",
            &RUNS.to_string(),
        ])
        .args(args)
        .arg("--timings")
        .arg(&timings)
        .arg("--out")
        .arg(out)
        .env("STUDIO_WORKER_LOG", "warn")
        .output()
        .expect("studio-worker job runs");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let seconds = wav_seconds(out);
    let runs: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&timings).expect("timings")).expect("JSON");
    let mut rtf: Vec<f64> = runs
        .iter()
        .skip(1)
        .filter_map(|r| r["ms"].as_f64())
        .map(|ms| ms / 1000.0 / seconds)
        .collect();
    (median(&mut rtf), seconds)
}

struct Bare {
    session: Session,
    ids: HashMap<String, Vec<i64>>,
    espeak_voice: String,
    scales: [f32; 3],
    rate: u32,
}

impl Bare {
    fn new(voice: &Path, env: &ort::environment::Environment) -> Self {
        let mut json = voice.as_os_str().to_owned();
        json.push(".json");
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(PathBuf::from(json)).expect("config"))
                .expect("JSON");
        let ids = serde_json::from_value(cfg["phoneme_id_map"].clone()).expect("phoneme_id_map");
        let session = Session::builder(env)
            .expect("builder")
            .with_intra_threads(1)
            .expect("threads")
            .commit_from_file(voice)
            .expect("the voice loads");
        let inf = &cfg["inference"];
        Self {
            session,
            ids,
            espeak_voice: cfg["espeak"]["voice"]
                .as_str()
                .unwrap_or("en-us")
                .to_string(),
            scales: [
                inf["noise_scale"].as_f64().unwrap_or(0.667) as f32,
                inf["length_scale"].as_f64().unwrap_or(1.0) as f32,
                inf["noise_w"].as_f64().unwrap_or(0.8) as f32,
            ],
            rate: cfg["audio"]["sample_rate"].as_u64().unwrap_or(22050) as u32,
        }
    }

    /// One synthesis of TEXT: (seconds taken, seconds of audio).
    fn run(&mut self) -> (f64, f64) {
        let t0 = Instant::now();
        let out = Command::new("espeak-ng")
            .args(["-q", "--ipa", "-v", &self.espeak_voice, TEXT])
            .output()
            .expect("espeak-ng runs");
        let ipa = String::from_utf8_lossy(&out.stdout).to_string();
        let mut samples: Vec<f32> = Vec::new();
        for line in ipa.lines().filter(|l| !l.trim().is_empty()) {
            let mut ids = self.ids["^"].clone();
            ids.extend(&self.ids["_"]);
            for c in line.trim().chars() {
                if let Some(v) = self.ids.get(c.encode_utf8(&mut [0; 4]) as &str) {
                    ids.extend(v);
                    ids.extend(&self.ids["_"]);
                }
            }
            ids.extend(&self.ids["$"]);
            let n = ids.len();
            let outputs = self
                .session
                .run(ort::inputs![
                    "input" => Tensor::from_array(([1usize, n], ids)).expect("input"),
                    "input_lengths" => Tensor::from_array(([1usize], vec![n as i64])).expect("lengths"),
                    "scales" => Tensor::from_array(([3usize], self.scales.to_vec())).expect("scales"),
                ])
                .expect("inference");
            let (_, s) = outputs[0].try_extract_tensor::<f32>().expect("samples");
            samples.extend_from_slice(s);
        }
        let took = t0.elapsed().as_secs_f64();
        (took, samples.len() as f64 / self.rate as f64)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(voice), Some(lib)) = (args.first(), args.get(1)) else {
        eprintln!("usage: tts-bench VOICE.onnx LIBONNXRUNTIME [ROUNDS]");
        std::process::exit(2);
    };
    let rounds: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(3);
    let voice = std::fs::canonicalize(voice).expect("voice path");
    let lib = std::fs::canonicalize(lib).expect("library path");
    let exe = std::env::current_exe().expect("exe");
    let worker = exe.with_file_name("studio-worker");
    let dir = std::env::temp_dir().join(format!("tts-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "onnxruntime_path = \"{}\"\nengine_threads = 1\nmodels_root = \"{}\"\n",
            lib.display(),
            dir.join("models").display()
        ),
    )
    .expect("config");
    let mut json = voice.as_os_str().to_owned();
    json.push(".json");
    let json = PathBuf::from(json);
    let piper_args = [
        "--engine".to_string(),
        "piper".into(),
        "--model".into(),
        "joe".into(),
        "--file".into(),
        format!("model={}", voice.display()),
        "--file".into(),
        format!("config={}", json.display()),
    ];
    let piper_args: Vec<&str> = piper_args.iter().map(String::as_str).collect();
    let env = ort::init_from(&lib)
        .expect("ONNX Runtime loads")
        .build()
        .expect("environment");
    let mut bare = Bare::new(&voice, &env);
    bare.run(); // warm-up
    println!(
        "## Piper and espeak real-time factor ({} chars, 1 thread; lower is faster)\n",
        TEXT.len()
    );
    println!("| round | ours (worker, piper) | bare loop (espeak-ng + ONNX Runtime) | bare / ours | espeak (worker) |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    let (mut all_ours, mut all_bare, mut all_espeak) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let run_ours = || ours(&worker, &config, &piper_args, &dir.join("ours.wav"));
        let mut run_bare = || {
            let mut r: Vec<f64> = (0..RUNS - 1)
                .map(|_| {
                    let (took, secs) = bare.run();
                    took / secs
                })
                .collect();
            median(&mut r)
        };
        // The order flips every round.
        let (o, b) = if round % 2 == 1 {
            let o = run_ours();
            (o, run_bare())
        } else {
            let b = run_bare();
            (run_ours(), b)
        };
        let e = ours(
            &worker,
            &config,
            &["--engine", "espeak"],
            &dir.join("espeak.wav"),
        );
        println!(
            "| {round} | {:.3} ({:.1} s of audio) | {b:.3} | {:.3} | {:.3} ({:.1} s) |",
            o.0,
            o.1,
            b / o.0,
            e.0,
            e.1
        );
        all_ours.push(o.0);
        all_bare.push(b);
        all_espeak.push(e.0);
    }
    let (o, b, e) = (
        median(&mut all_ours),
        median(&mut all_bare),
        median(&mut all_espeak),
    );
    println!(
        "\nmedian RTF: ours {o:.3}, bare {b:.3}, ratio bare/ours {:.3} (goal ≥ 0.95); espeak {e:.3}",
        b / o
    );
    let _ = std::fs::remove_dir_all(&dir);
}
