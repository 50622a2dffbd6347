//! Gradio engine benchmark, printed as a table (docs/benchmarks.md): the
//! time per image job through the worker (fake studio offer → upload,
//! `engine = "gradio"`) against the same call made directly with the
//! official `gradio_client` Python package (predict, result file
//! downloaded), on the same app, input and machine, in alternating
//! rounds, and against the bare HTTP calls the runner makes (queue join,
//! event stream, result file) issued from here: the difference to those is
//! what our path adds per job.
//!
//! Run: `cargo build --release --workspace --bins && target/release/gradio-bench [ROUNDS] [SIDE]`

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use studio_worker_tests::claims::claim_with;
use studio_worker_tests::gradio::GradioApp;
use studio_worker_tests::models;
use studio_worker_tests::proc::percentile;
use studio_worker_tests::start_worker;
use studio_worker_tests::studio::FakeStudio;

/// Calls the app once per stdin line (`prompt side seed`) with
/// gradio_client, printing the milliseconds each call took (predict and
/// the result file's download).
const CLIENT: &str = r#"
import sys, time
from gradio_client import Client
c = Client(sys.argv[1], verbose=False)
print("ready", flush=True)
for line in sys.stdin:
    prompt, side, seed = line.split()
    t = time.perf_counter()
    path = c.predict(prompt, int(side), int(side), int(seed), api_name="/generate")
    data = open(path, "rb").read()
    print(f"{(time.perf_counter() - t) * 1000:.3f} {len(data)}", flush=True)
"#;

/// The same job as bare HTTP from here (queue join, the event stream to
/// `process_completed`, the result file fetched): the floor any client of
/// the app pays, without the worker's offer, runner, conversion and upload.
async fn bare(http: &reqwest::Client, url: &str, side: u32, seed: u64, n: usize) -> Duration {
    let session = format!("bench{n}");
    let t = Instant::now();
    let joined = http
        .post(format!("{url}/gradio_api/queue/join"))
        .json(&json!({"data": ["a fox", side, side, seed], "fn_index": 0, "session_hash": session}))
        .send()
        .await
        .expect("join");
    assert!(joined.status().is_success(), "join: {}", joined.status());
    let body = http
        .get(format!(
            "{url}/gradio_api/queue/data?session_hash={session}"
        ))
        .send()
        .await
        .expect("queue/data")
        .text()
        .await
        .expect("the event stream");
    let done = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .find(|v| v["msg"] == "process_completed")
        .expect("process_completed");
    let file = done["output"]["data"][0]["url"]
        .as_str()
        .expect("a file url");
    let bytes = http
        .get(file)
        .send()
        .await
        .expect("file")
        .bytes()
        .await
        .expect("bytes");
    assert!(!bytes.is_empty());
    t.elapsed()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let side: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(256);
    let app = GradioApp::start("interface").await;
    let studio = FakeStudio::start().await;
    let (_home, _worker) = start_worker(
        &studio,
        &format!(
            "engine = \"gradio\"\ngradio_endpoint_url = \"{}\"\n",
            app.url()
        ),
        &[],
    )
    .await;
    let mut client = Command::new("python3")
        .args(["-c", CLIENT, &app.url()])
        .env("PYTHONPATH", models::path(models::GRADIO))
        .env("GRADIO_ANALYTICS_ENABLED", "False")
        .env("HF_HUB_OFFLINE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with gradio_client");
    let mut to_client = client.stdin.take().expect("stdin");
    let mut from_client = BufReader::new(client.stdout.take().expect("stdout")).lines();
    let ready = from_client.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(ready, "ready", "gradio_client did not start");

    let http = reqwest::Client::new();
    let (mut ours, mut theirs, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    // Round 0 of each warms up (the runner starts, the client connects).
    for round in 0..=rounds {
        let seed = round as u64;
        let id = format!("bench-{round}");
        let mut c = claim_with(
            &id,
            "sdxl",
            json!({"kind": "image", "prompt": "a fox", "width": side, "height": side, "seed": seed, "ext": "png"}),
        );
        c["modelSource"]["engine"] = json!("gradio");
        let t = Instant::now();
        studio.offer(c);
        studio.wait_upload(&id).await;
        let worker = t.elapsed();
        writeln!(to_client, "a-fox {side} {seed}").expect("write to the client");
        let line = from_client
            .next()
            .and_then(Result::ok)
            .expect("the client answers");
        let direct: f64 = line
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .expect("milliseconds");
        let raw = bare(&http, &app.url(), side, seed, round).await;
        if round > 0 {
            ours.push(worker);
            theirs.push(Duration::from_secs_f64(direct / 1000.0));
            floor.push(raw);
        }
    }
    drop(to_client);
    let _ = client.wait();
    ours.sort();
    theirs.sort();
    floor.sort();
    let added = |over: &[Duration], p: f64| {
        let d = percentile(&ours, p).as_secs_f64() - percentile(over, p).as_secs_f64();
        format!("{:+.1} ms", d * 1000.0)
    };
    println!("gradio engine: {rounds} alternating rounds, {side}×{side} PNG, app = tests/gradio/apps.py interface");
    println!();
    println!("| path | p50 | p90 | max |");
    println!("| --- | --- | --- | --- |");
    for (name, v) in [
        ("worker: offer → runner → app queue → upload", &ours),
        ("gradio_client: predict + download", &theirs),
        ("bare HTTP: queue join + events + file", &floor),
    ] {
        println!(
            "| {name} | {} | {} | {} |",
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.9)),
            ms(*v.last().unwrap_or(&Duration::ZERO))
        );
    }
    println!(
        "| worker − gradio_client | {} | {} | |",
        added(&theirs, 0.5),
        added(&theirs, 0.9)
    );
    println!(
        "| worker − bare HTTP | {} | {} | |",
        added(&floor, 0.5),
        added(&floor, 0.9)
    );
}
