//! Local API benchmark, printed as tables (docs/benchmarks.md).
//!
//! 1. Decode speed of a real llama.cpp model (the test GGUF) streamed
//!    through `POST /v1/chat/completions` (tokens per second between the
//!    first and the last content chunk, as the client sees them) against
//!    `studio-worker job llm --repeat 2` on the same model, prompt and
//!    settings (the engine's own decode time of the second run), in
//!    alternating rounds; time to first token for both.
//! 2. A synthetic chat through the API, not streamed: round-trip latency
//!    over many requests (what the API adds around a job that costs
//!    nothing).
//!
//! Run: `cargo build --release --workspace --bins && target/release/api-bench [ROUNDS] [SYNTHETIC]`

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use studio_worker_tests::models;
use studio_worker_tests::proc::{bin, percentile};
use studio_worker_tests::start_worker;
use studio_worker_tests::studio::FakeStudio;

const PROMPT: &str = "Write a long story about a dragon who learns to bake bread.";
const TOKENS: u32 = 96;

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// One streamed request: (time to first content, decode tokens/s, tokens).
async fn streamed(http: &reqwest::Client, base: &str, token: &str) -> (Duration, f64, u64) {
    use futures_util::StreamExt;
    let t0 = Instant::now();
    let resp = http
        .post(format!("{base}/chat/completions"))
        .bearer_auth(token)
        .json(
            &json!({"model": "smol", "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": TOKENS, "temperature": 0, "seed": 7, "stream": true,
            "stream_options": {"include_usage": true}}),
        )
        .send()
        .await
        .expect("the API answers");
    assert!(resp.status().is_success(), "{}", resp.status());
    let mut body = resp.bytes_stream();
    let (mut first, mut last, mut tokens) = (None, t0, 0u64);
    let mut buf = String::new();
    while let Some(piece) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&piece.expect("stream")));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let Some(data) = event.trim().strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                continue;
            }
            let v: Value = serde_json::from_str(data).expect("a chunk");
            if v["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
            {
                let now = Instant::now();
                first.get_or_insert(now);
                last = now;
            }
            if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                tokens = n;
            }
        }
    }
    let first = first.expect("some content");
    let rate = (tokens.saturating_sub(1)) as f64 / last.duration_since(first).as_secs_f64();
    (first.duration_since(t0), rate, tokens)
}

/// `studio-worker job llm --repeat 2`: the second run's time to first
/// token and decode rate as the engine measured them.
fn by_job(dir: &std::path::Path) -> (Duration, f64, u64) {
    let out = dir.join("job.json");
    let run = std::process::Command::new(bin("studio-worker"))
        .arg("--config")
        .arg(dir.join("job-config.toml"))
        .args(["job", "llm", "--engine", "llama-cpp", "--file"])
        .arg(format!("model={}", models::path(models::GGUF).display()))
        .args([
            "--prompt",
            PROMPT,
            "--max-tokens",
            &TOKENS.to_string(),
            "--temperature",
            "0",
            "--seed",
            "7",
            "--repeat",
            "2",
            "--out",
        ])
        .arg(&out)
        .env("STUDIO_WORKER_LOG", "warn")
        .output()
        .expect("studio-worker job");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let v: Value = serde_json::from_slice(&std::fs::read(&out).expect("result")).expect("JSON");
    let tokens = v["usage"]["completion_tokens"].as_u64().unwrap_or(0);
    let ttft = v["time_to_first_token_ms"].as_u64().unwrap_or(0);
    let elapsed = v["elapsed_ms"].as_u64().unwrap_or(0);
    let decode = Duration::from_millis(elapsed.saturating_sub(ttft));
    let rate = tokens.saturating_sub(1) as f64 / decode.as_secs_f64();
    (Duration::from_millis(ttft), rate, tokens)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let synthetic: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500);
    let studio = FakeStudio::start().await;
    let config = format!(
        "local_api_listen = \"127.0.0.1:0\"\n[[models]]\nname = \"smol\"\nengine = \"llama-cpp\"\nfiles = [{{ role = \"model\", path = \"{}\" }}]\n",
        models::path(models::GGUF).display()
    );
    let (home, _worker) = start_worker(&studio, &config, &[("STUDIO_WORKER_LOG", "warn")]).await;
    std::fs::write(
        home.dir.path().join("job-config.toml"),
        "api_base_url = \"http://127.0.0.1:9\"\n",
    )
    .expect("job config");
    let run = studio_worker_tests::prom::Endpoint::of(&home).await.run;
    let base = format!("http://{}/v1", run.local_api.expect("the local API runs"));
    let token = std::fs::read_to_string(studio_worker::local_api::token_path(&home.config()))
        .expect("token")
        .trim()
        .to_string();
    let http = reqwest::Client::new();
    // Warm up: the model loads once.
    streamed(&http, &base, &token).await;

    println!("## Streamed through the API vs `studio-worker job --repeat` ({TOKENS} tokens max, greedy)\n");
    println!("| round | API tok/s | job tok/s | API time to first token | job time to first token (engine) |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    let (mut api_rates, mut job_rates) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let (a, j) = if round % 2 == 1 {
            let a = streamed(&http, &base, &token).await;
            let j = tokio::task::block_in_place(|| by_job(home.dir.path()));
            (a, j)
        } else {
            let j = tokio::task::block_in_place(|| by_job(home.dir.path()));
            let a = streamed(&http, &base, &token).await;
            (a, j)
        };
        assert_eq!(a.2, j.2, "both paths generate the same tokens");
        println!(
            "| {round} | {:.1} | {:.1} | {} | {} |",
            a.1,
            j.1,
            ms(a.0),
            ms(j.0)
        );
        api_rates.push(a.1);
        job_rates.push(j.1);
    }
    let (ma, mj) = (median(&mut api_rates), median(&mut job_rates));
    println!(
        "\nmedian decode: API {ma:.1} tok/s, job {mj:.1} tok/s, ratio API/job {:.3}",
        ma / mj
    );

    let mut lat = Vec::with_capacity(synthetic);
    for i in 0..synthetic {
        let t0 = Instant::now();
        let r: Value = http
            .post(format!("{base}/chat/completions"))
            .bearer_auth(&token)
            .json(&json!({"model": "synthetic", "messages": [{"role": "user", "content": format!("hello {i}")}], "max_tokens": 8}))
            .send()
            .await
            .expect("answer")
            .json()
            .await
            .expect("JSON");
        assert_eq!(r["object"], "chat.completion", "{r}");
        lat.push(t0.elapsed());
    }
    lat.sort();
    println!(
        "\n## Synthetic chat through the API, {synthetic} requests one after another\n\n| p50 | p99 | max |\n| ---: | ---: | ---: |\n| {} | {} | {} |",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        ms(*lat.last().unwrap_or(&Duration::ZERO))
    );
}
