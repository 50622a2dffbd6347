//! Benchmarks of the spine, printed as a table (docs/benchmarks.md).
//!
//! 1. Runner-channel round trip: a job frame to the real `engine-runner`
//!    and its result frame back (64×64 PNG, 4096×4096 PNG).
//! 2. End to end: N synthetic jobs (half llm, half 64×64 PNG) offered by
//!    the fake studio one after another to the real `studio-worker`:
//!    jobs/s, offer-to-result latency, supervisor and runner RSS.
//!
//! Run: `cargo build --release --workspace --bins && target/release/e2e-bench [N]`

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use studio_protocol::runner::frame::encode;
use studio_protocol::runner::{
    FrameReader, FromRunner, JobOutput, JobRequest, ToRunner, CHANNEL_VERSION,
    DEFAULT_MAX_FRAME_BYTES,
};
use studio_protocol::studio::{ImageTask, ModelSource, Task};
use studio_worker_tests::claims::{claim, image, llm};
use studio_worker_tests::proc::{bin, children_of, percentile, rss_kib};
use studio_worker_tests::start_worker;
use studio_worker_tests::studio::FakeStudio;

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// Round trips of one image job size against a live runner.
fn channel_round_trip(size: u32, iterations: usize) -> (Vec<Duration>, usize) {
    let mut child = Command::new(bin("engine-runner"))
        .args(["--stdio", "--engine", "synthetic"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("engine-runner");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut out = FrameReader::new(
        child.stdout.take().expect("stdout"),
        DEFAULT_MAX_FRAME_BYTES,
    );
    let mut send = |m: &ToRunner| {
        use std::io::Write;
        stdin
            .write_all(&encode(m, DEFAULT_MAX_FRAME_BYTES).expect("encode"))
            .expect("write");
    };
    send(&ToRunner::Hello {
        version: CHANNEL_VERSION,
        epoch: 1,
    });
    let _ = out.read::<FromRunner>();
    let mut times = Vec::with_capacity(iterations);
    let mut bytes = 0;
    for i in 0..iterations {
        let job = JobRequest {
            job_id: format!("rt-{i}"),
            epoch: 1,
            task: Task::Image(ImageTask {
                prompt: format!("p{i}"),
                width: Some(size),
                height: Some(size),
                ext: Some("png".into()),
                ..Default::default()
            }),
            model: "synthetic".into(),
            model_source: ModelSource::synthetic(),
            model_files: Default::default(),
            inputs: Default::default(),
            scratch_dir: None,
        };
        let t0 = Instant::now();
        send(&ToRunner::Job(Box::new(job)));
        loop {
            match out.read::<FromRunner>() {
                Ok(Some(FromRunner::Result { output, .. })) => {
                    if let JobOutput::Bytes { data, .. } = output {
                        bytes = data.len();
                    }
                    break;
                }
                Ok(Some(FromRunner::Error { message, .. })) => panic!("{message}"),
                Ok(Some(_)) => {}
                other => panic!("runner ended: {other:?}"),
            }
        }
        times.push(t0.elapsed());
    }
    send(&ToRunner::Shutdown);
    let _ = child.wait();
    times.sort();
    (times, bytes)
}

/// Waits until `n` fed jobs have finished; their latencies.
async fn wait_fed(studio: &FakeStudio, n: usize) -> Vec<Duration> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (lat, _) = studio.feed_stats();
        if lat.len() >= n {
            return lat;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} jobs finished",
            lat.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);

    println!("## Runner channel round trip (job frame → result frame, synthetic PNG)\n");
    println!("| job | iterations | result size | p50 | p99 |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (size, iters) in [(64u32, 1000usize), (4096, 5)] {
        let (t, bytes) = tokio::task::spawn_blocking(move || channel_round_trip(size, iters))
            .await
            .expect("bench thread");
        println!(
            "| {size}×{size} png | {iters} | {} KiB | {} | {} |",
            bytes / 1024,
            ms(percentile(&t, 0.5)),
            ms(percentile(&t, 0.99))
        );
    }

    println!("\n## End to end through the fake studio ({n} jobs: half llm, half 64×64 png)\n");
    let studio = FakeStudio::start().await;
    studio.record_frames(false);
    let (_home, worker) = start_worker(&studio, "", &[("STUDIO_WORKER_LOG", "warn")]).await;
    // Warm-up: spawn the runner and touch both paths.
    studio.feed(vec![
        claim("warm-1", llm("warm up")),
        claim("warm-2", image(64, 64, "png")),
    ]);
    wait_fed(&studio, 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (rss_before, _) = rss_kib(worker.pid());
    let claims = (0..n)
        .map(|i| {
            if i % 2 == 0 {
                claim(&format!("b-{i}"), llm("Tell me about golems."))
            } else {
                claim(&format!("b-{i}"), image(64, 64, "png"))
            }
        })
        .collect();
    let t0 = Instant::now();
    studio.feed(claims);
    let lat = wait_fed(&studio, n).await;
    let elapsed = t0.elapsed();
    let mut sorted = lat.clone();
    sorted.sort();
    let (rss, hwm) = rss_kib(worker.pid());
    let runner = children_of(worker.pid())
        .into_iter()
        .next()
        .map(rss_kib)
        .unwrap_or_default();
    let fails = studio.frames("fail").len();
    println!("| metric | value |");
    println!("| --- | ---: |");
    println!("| jobs | {} ({} failed) |", lat.len(), fails);
    println!(
        "| throughput | {:.0} jobs/s |",
        lat.len() as f64 / elapsed.as_secs_f64()
    );
    println!("| offer → result p50 | {} |", ms(percentile(&sorted, 0.5)));
    println!("| offer → result p99 | {} |", ms(percentile(&sorted, 0.99)));
    println!(
        "| offer → result max | {} |",
        ms(*sorted.last().unwrap_or(&Duration::ZERO))
    );
    println!(
        "| supervisor RSS before / after / peak | {:.1} / {:.1} / {:.1} MiB |",
        rss_before as f64 / 1024.0,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!(
        "| runner RSS now / peak | {:.1} / {:.1} MiB |",
        runner.0 as f64 / 1024.0,
        runner.1 as f64 / 1024.0
    );
}
