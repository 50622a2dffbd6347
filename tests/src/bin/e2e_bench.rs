//! Benchmarks of the spine, printed as a table (docs/benchmarks.md).
//!
//! 1. Runner-channel round trip: a job frame to the real `engine-runner`
//!    and its result frame back (64×64 PNG, 4096×4096 PNG).
//! 2. End to end: N synthetic jobs (half llm, half 64×64 PNG) offered by
//!    the fake studio one after another to the real `studio-worker`:
//!    jobs/s, offer-to-result latency, supervisor and runner RSS.
//!
//! 3. `--compare DIR [--rounds R]`: part 2 for this build and the
//!    `studio-worker` in `DIR`, alternating rounds; medians and their ratio.
//! 4. `--scrape [--rounds R]`: part 2 with the metrics endpoint off and
//!    with `/metrics` scraped every 100 ms, alternating rounds; the
//!    throughput ratio and the scrape latency under that load.
//!
//! Run: `cargo build --release --workspace --bins && target/release/e2e-bench [N]`

use std::path::Path;
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
use studio_worker_tests::start_worker_of;
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
            preload: false,
            stream: false,
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

/// What one end-to-end run measured.
struct E2e {
    jobs: usize,
    fails: usize,
    elapsed: Duration,
    sorted: Vec<Duration>,
    rss_before: u64,
    rss: u64,
    hwm: u64,
    runner: (u64, u64),
}

impl E2e {
    fn jobs_per_s(&self) -> f64 {
        self.jobs as f64 / self.elapsed.as_secs_f64()
    }
}

/// `n` synthetic jobs through the fake studio to the `studio-worker` at
/// `program` (its runners beside it).
async fn end_to_end(program: &Path, n: usize) -> E2e {
    end_to_end_with(program, n, false).await.0
}

/// [`end_to_end`], with `/metrics` scraped every 100 ms during the jobs
/// (`scrape`; else the endpoint is off); the scrape latencies.
async fn end_to_end_with(program: &Path, n: usize, scrape: bool) -> (E2e, Vec<Duration>) {
    let studio = FakeStudio::start().await;
    studio.record_frames(false);
    let extra = if scrape {
        ""
    } else {
        "metrics_listen = \"off\"\n"
    };
    let (home, worker) =
        start_worker_of(program, &studio, extra, &[("STUDIO_WORKER_LOG", "warn")]).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scraper = if scrape {
        let ep = studio_worker_tests::prom::Endpoint::of(&home).await;
        let stop = stop.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut took = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let t0 = Instant::now();
                let (status, body) = ep.get("/metrics").await;
                took.push(t0.elapsed());
                assert!(status == 200 && body.contains("studio_worker_jobs_total"));
            }
            took
        }))
    } else {
        None
    };
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
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let scrapes = match scraper {
        Some(t) => t.await.expect("scraper"),
        None => Vec::new(),
    };
    let e2e = E2e {
        jobs: lat.len(),
        fails: studio.frames("fail").len(),
        elapsed,
        sorted,
        rss_before,
        rss,
        hwm,
        runner,
    };
    (e2e, scrapes)
}

/// `--scrape`: the endpoint off against `/metrics` every 100 ms, in
/// alternating rounds.
async fn scrape_cost(n: usize, rounds: usize) {
    let program = bin("studio-worker");
    println!(
        "## Metrics endpoint off vs scraped every 100 ms, alternating rounds ({n} jobs each)\n"
    );
    println!("| round | off jobs/s | scraped jobs/s | scrapes | scrape p50 | scrape p99 |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    let (mut off, mut on, mut all) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let first_scraped = round % 2 == 0;
        let (x, sx) = end_to_end_with(&program, n, first_scraped).await;
        let (y, sy) = end_to_end_with(&program, n, !first_scraped).await;
        let ((o, _), (s, mut lat)) = if first_scraped {
            ((y, sy), (x, sx))
        } else {
            ((x, sx), (y, sy))
        };
        assert_eq!(o.fails + s.fails, 0, "no job may fail in a bench");
        lat.sort();
        println!(
            "| {round} | {:.0} | {:.0} | {} | {} | {} |",
            o.jobs_per_s(),
            s.jobs_per_s(),
            lat.len(),
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99))
        );
        off.push(o.jobs_per_s());
        on.push(s.jobs_per_s());
        all.extend(lat);
    }
    all.sort();
    let (mo, ms_) = (median(&mut off), median(&mut on));
    println!(
        "\nmedian: off {mo:.0} jobs/s, scraped {ms_:.0} jobs/s, ratio scraped/off {:.3}; all {} scrapes: p50 {}, p99 {}, max {}",
        ms_ / mo,
        all.len(),
        ms(percentile(&all, 0.5)),
        ms(percentile(&all, 0.99)),
        ms(*all.last().unwrap_or(&Duration::ZERO))
    );
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// `--compare DIR`: this build against the `studio-worker` in `DIR`, in
/// alternating rounds on one machine.
async fn compare(dir: &Path, n: usize, rounds: usize) {
    let before = dir.join("studio-worker");
    let after = bin("studio-worker");
    println!("## Before / after, alternating rounds ({n} jobs each: half llm, half 64×64 png)\n");
    println!(
        "before: `{}`; after: `{}`\n",
        before.display(),
        after.display()
    );
    println!("| round | before jobs/s | after jobs/s | before p99 | after p99 | after supervisor RSS (peak) |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    let (mut b, mut a) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        // Alternate which goes first, so drift favours neither.
        let (first, second) = if round % 2 == 1 {
            (&before, &after)
        } else {
            (&after, &before)
        };
        let x = end_to_end(first, n).await;
        let y = end_to_end(second, n).await;
        let (rb, ra) = if round % 2 == 1 { (x, y) } else { (y, x) };
        assert_eq!(rb.fails + ra.fails, 0, "no job may fail in a bench");
        println!(
            "| {round} | {:.0} | {:.0} | {} | {} | {:.1} MiB ({:.1}) |",
            rb.jobs_per_s(),
            ra.jobs_per_s(),
            ms(percentile(&rb.sorted, 0.99)),
            ms(percentile(&ra.sorted, 0.99)),
            ra.rss as f64 / 1024.0,
            ra.hwm as f64 / 1024.0
        );
        b.push(rb.jobs_per_s());
        a.push(ra.jobs_per_s());
    }
    let (mb, ma) = (median(&mut b), median(&mut a));
    println!(
        "\nmedian: before {mb:.0} jobs/s, after {ma:.0} jobs/s, ratio after/before {:.3}",
        ma / mb
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let rounds_arg = || {
        args.iter()
            .position(|a| a == "--rounds")
            .and_then(|j| args.get(j + 1))
            .and_then(|r| r.parse().ok())
            .unwrap_or(6)
    };
    if args.iter().any(|a| a == "--scrape") {
        scrape_cost(n, rounds_arg()).await;
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--compare") {
        let Some(dir) = args.get(i + 1) else {
            eprintln!("usage: e2e-bench [N] [--compare DIR [--rounds R]]");
            std::process::exit(2);
        };
        compare(Path::new(dir), n, rounds_arg()).await;
        return;
    }

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
    let r = end_to_end(&bin("studio-worker"), n).await;
    println!("| metric | value |");
    println!("| --- | ---: |");
    println!("| jobs | {} ({} failed) |", r.jobs, r.fails);
    println!("| throughput | {:.0} jobs/s |", r.jobs_per_s());
    println!(
        "| offer → result p50 | {} |",
        ms(percentile(&r.sorted, 0.5))
    );
    println!(
        "| offer → result p99 | {} |",
        ms(percentile(&r.sorted, 0.99))
    );
    println!(
        "| offer → result max | {} |",
        ms(*r.sorted.last().unwrap_or(&Duration::ZERO))
    );
    println!(
        "| supervisor RSS before / after / peak | {:.1} / {:.1} / {:.1} MiB |",
        r.rss_before as f64 / 1024.0,
        r.rss as f64 / 1024.0,
        r.hwm as f64 / 1024.0
    );
    println!(
        "| runner RSS now / peak | {:.1} / {:.1} MiB |",
        r.runner.0 as f64 / 1024.0,
        r.runner.1 as f64 / 1024.0
    );
}
