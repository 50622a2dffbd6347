//! Crash-isolation benchmark, printed as a table (docs/benchmarks.md).
//!
//! 1. Kill → fail: a runner busy with a job is SIGKILLed from outside; how
//!    long until the fake studio has the job's `fail`, and from that `fail`
//!    to the next job's result on a fresh runner (default restart backoff,
//!    100 ms). Repeated `KILLS` times.
//! 2. Supervisor memory across `CRASHES` jobs that each kill their runner
//!    (`fault:exit`), with the restart backoff capped at 5 ms so the run
//!    measures crash handling, not waiting.
//!
//! Run: `cargo build --release --workspace --bins && target/release/crash-bench [KILLS] [CRASHES]`

use std::time::{Duration, Instant};

use serde_json::json;
use studio_worker_tests::claims::{claim, claim_with, image};
use studio_worker_tests::proc::{children_of, fd_count, percentile, rss_kib, Gate};
use studio_worker_tests::start_worker;
use studio_worker_tests::studio::FakeStudio;

const FAULTS: &[(&str, &str)] = &[
    ("STUDIO_WORKER_FAULT_INJECTION", "1"),
    ("STUDIO_WORKER_LOG", "warn"),
];

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let kills: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(60);
    let crashes: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500);

    // 1. External SIGKILL of a busy runner. Every kill lands on the same
    // model, which the breakers would quarantine after five: off here.
    let studio = FakeStudio::start().await;
    let (_home, worker) = start_worker(&studio, "max_consecutive_failures = 0\n", FAULTS).await;
    studio.offer(claim("warm", image(16, 16, "png")));
    studio.wait_upload("warm").await;
    let mut to_fail = Vec::new();
    let mut to_next = Vec::new();
    // The slow job waits at a gate; the next job is for the same model, so
    // it needs a fresh runner (the gate is open by then).
    let gate = Gate::new();
    for i in 0..kills {
        let slow = format!("k-{i}");
        let next = format!("n-{i}");
        gate.reset();
        // When the slow job fails, the studio offers the next one at once.
        studio.feed(vec![
            claim_with(&slow, &gate.model(), image(16, 16, "png")),
            claim_with(&next, &gate.model(), image(16, 16, "png")),
        ]);
        let runner = gate.started().await;
        let t0 = Instant::now();
        // SAFETY: killing the benchmark's own grandchild.
        unsafe {
            libc::kill(runner as i32, libc::SIGKILL);
        }
        gate.open();
        studio.wait_upload(&next).await;
        let failed = studio.frame_time("fail", &slow).expect("fail recorded");
        let done = studio.upload_time(&next).expect("upload recorded");
        to_fail.push(failed.duration_since(t0));
        to_next.push(done.duration_since(failed));
    }
    to_fail.sort();
    to_next.sort();
    println!("## Runner SIGKILL mid-job ({kills} kills, default 100 ms restart backoff)\n");
    println!("| interval | p50 | p99 | max | target |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    println!(
        "| SIGKILL → studio has `fail` | {} | {} | {} | p50 < 100 ms |",
        ms(percentile(&to_fail, 0.5)),
        ms(percentile(&to_fail, 0.99)),
        ms(*to_fail.last().unwrap())
    );
    println!(
        "| `fail` → next job's result (fresh runner) | {} | {} | {} | < 500 ms |",
        ms(percentile(&to_next, 0.5)),
        ms(percentile(&to_next, 0.99)),
        ms(*to_next.last().unwrap())
    );
    drop(worker);

    // 2. Memory across many crashing jobs.
    let studio = FakeStudio::start().await;
    studio.record_frames(false);
    let cfg = "max_consecutive_failures = 0\nrestart_backoff_initial_ms = 1\nrestart_backoff_max_ms = 5\n";
    let (home, worker) = start_worker(&studio, cfg, FAULTS).await;
    let pid = worker.pid();
    studio.feed(vec![
        claim("warm2", image(16, 16, "png")),
        claim_with("warm3", "fault:exit", image(16, 16, "png")),
    ]);
    wait_fed(&studio, 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (rss_before, _) = rss_kib(pid);
    let fds_before = fd_count(pid);
    let t0 = Instant::now();
    let claims = (0..crashes)
        .map(|i| {
            claim_with(
                &format!("c-{i}"),
                "fault:exit",
                json!({"kind": "llm", "messages": [{"role": "user", "content": "x"}]}),
            )
        })
        .collect();
    studio.feed(claims);
    wait_fed(&studio, crashes).await;
    let elapsed = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (rss_after, hwm) = rss_kib(pid);
    let fds_after = fd_count(pid);
    println!(
        "\n## Supervisor across {crashes} crashing jobs (fault:exit, restart backoff ≤ 5 ms)\n"
    );
    println!("| metric | value |");
    println!("| --- | ---: |");
    println!(
        "| crashes handled | {crashes} in {:.1} s ({:.1} ms each) |",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / crashes as f64
    );
    println!(
        "| supervisor RSS before → after | {:.2} → {:.2} MiB (growth {:+.2} MiB; target < 2 MB) |",
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        (rss_after as f64 - rss_before as f64) / 1024.0
    );
    println!("| supervisor peak RSS | {:.2} MiB |", hwm as f64 / 1024.0);
    println!("| supervisor open fds before → after | {fds_before} → {fds_after} |");
    // The warm-up's model stays resident; every crashed runner is gone.
    let status = home
        .wait_status("the status to count every crash", |s| {
            s["counters"]["failed"].as_u64() >= Some(crashes as u64 + 1)
        })
        .await;
    let resident = status["runners"].as_array().map_or(0, Vec::len);
    println!(
        "| runner children alive at the end / resident in status.json | {} / {resident} |",
        children_of(pid).len()
    );
}

async fn wait_fed(studio: &FakeStudio, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        if studio.feed_stats().0.len() >= n {
            return;
        }
        assert!(Instant::now() < deadline, "stalled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
