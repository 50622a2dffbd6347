//! Gradio engine benchmark, printed as a table (docs/benchmarks.md): the
//! time per image job through the worker (fake studio offer → upload,
//! `engine = "gradio"`) against the same call made directly with the
//! official `gradio_client` Python package (predict, result file
//! downloaded), on the same app, input and machine, in alternating
//! rounds. The difference is what our path adds per job.
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

    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
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
        if round > 0 {
            ours.push(worker);
            theirs.push(Duration::from_secs_f64(direct / 1000.0));
        }
    }
    drop(to_client);
    let _ = client.wait();
    ours.sort();
    theirs.sort();
    let added = |p: f64| {
        let d = percentile(&ours, p).as_secs_f64() - percentile(&theirs, p).as_secs_f64();
        format!("{:+.1} ms", d * 1000.0)
    };
    println!("gradio engine: {rounds} alternating rounds, {side}×{side} PNG, app = tests/gradio/apps.py interface");
    println!();
    println!("| path | p50 | p90 | max |");
    println!("| --- | --- | --- | --- |");
    for (name, v) in [
        ("worker: offer → runner → app queue → upload", &ours),
        ("gradio_client: predict + download", &theirs),
    ] {
        println!(
            "| {name} | {} | {} | {} |",
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.9)),
            ms(*v.last().unwrap_or(&Duration::ZERO))
        );
    }
    println!(
        "| added by the worker | {} | {} | |",
        added(0.5),
        added(0.9)
    );
}
