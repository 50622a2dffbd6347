//! What residency saves on a real engine, printed as a table
//! (docs/benchmarks.md): llama.cpp on SmolLM2-135M through the real worker
//! and the fake studio, on a fake 4 GB GPU where only one of two 2 GB
//! models fits, so the second model evicts the first.
//!
//! Per round: model A after an eviction (runner start + load; files
//! cached), A again (resident), then model B (same weights under another
//! file name, so another model), which evicts A. Offer → result times.
//!
//! Run: `cargo build --release --workspace --bins && target/release/resident-bench [ROUNDS]`

use std::time::Duration;

use serde_json::{json, Value};
use studio_worker_tests::proc::percentile;
use studio_worker_tests::studio::FakeStudio;
use studio_worker_tests::{models, start_worker};

fn job(id: &str, model: &str, src: &Value) -> Value {
    json!({"jobId": id, "gameId": "g", "assetName": format!("g/{id}"), "model": model, "vramGbEstimate": 2.0,
        "task": {"kind": "llm", "messages": [{"role": "user", "content": "Say hi."}], "maxTokens": 8, "temperature": 0},
        "modelSource": src})
}

/// Offers one job and returns its offer → result time (each feed starts
/// its own latency list).
async fn timed(studio: &FakeStudio, claim: Value) -> Duration {
    studio.feed(vec![claim]);
    loop {
        if let Some(first) = studio.feed_stats().0.first() {
            return *first;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let gguf = models::path(models::GGUF);
    let copy_dir = tempfile::tempdir().expect("tempdir");
    let copy = copy_dir.path().join("SmolLM2-135M-Instruct-copy.Q4_1.gguf");
    std::fs::copy(&gguf, &copy).expect("copy the GGUF");
    let studio = FakeStudio::start().await;
    studio.record_frames(false);
    let src = |file: Value| json!({"engine": "llama-cpp", "files": [file], "cliDefaults": {"cfgScale": 1.0, "steps": 1, "width": 1, "height": 1, "contextSize": 512}});
    let src_a = src(studio.serve_model_file("model", &gguf));
    let src_b = src(studio.serve_model_file("model", &copy));
    let (_home, _worker) = start_worker(
        &studio,
        "engine_threads = 2\nvram_threshold_gb = 4.0\nmodel_keep_alive_secs = -1\n",
        &[
            ("STUDIO_WORKER_FAKE_GPUS", "4"),
            ("STUDIO_WORKER_LOG", "warn"),
        ],
    )
    .await;
    let first = timed(&studio, job("a-first", "a", &src_a)).await;
    let b_first = timed(&studio, job("b-first", "b", &src_b)).await;
    let (mut cold, mut warm, mut other) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds {
        cold.push(timed(&studio, job(&format!("a-cold-{r}"), "a", &src_a)).await);
        warm.push(timed(&studio, job(&format!("a-warm-{r}"), "a", &src_a)).await);
        other.push(timed(&studio, job(&format!("b-{r}"), "b", &src_b)).await);
    }
    for v in [&mut cold, &mut warm, &mut other] {
        v.sort();
    }
    assert!(studio.frames("fail").is_empty() && studio.frames("reject").is_empty());
    println!("## Residency on llama.cpp (SmolLM2-135M Q4_1, 8 tokens, 2 threads; fake 4 GB GPU, two 2 GB models)\n");
    println!("| job | runs | offer → result p50 | max |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| first job on A (download 98 MB over loopback, start, load) | 1 | {} | |",
        ms(first)
    );
    println!(
        "| first job on B (download, evicts A, start, load) | 1 | {} | |",
        ms(b_first)
    );
    println!(
        "| A after an eviction (start + load; files cached) | {rounds} | {} | {} |",
        ms(percentile(&cold, 0.5)),
        ms(*cold.last().unwrap_or(&Duration::ZERO))
    );
    println!(
        "| A again (resident) | {rounds} | {} | {} |",
        ms(percentile(&warm, 0.5)),
        ms(*warm.last().unwrap_or(&Duration::ZERO))
    );
    println!(
        "| B (evicts A, start + load) | {rounds} | {} | {} |",
        ms(percentile(&other, 0.5)),
        ms(*other.last().unwrap_or(&Duration::ZERO))
    );
}
