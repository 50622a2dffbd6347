//! What the desktop window costs, printed as tables (docs/benchmarks.md):
//!
//! 1. The window's own CPU (its process, software OpenGL included) over a
//!    window of time, attached to an idle worker and to one whose job in
//!    flight reports progress every 20 ms, under Xvfb.
//! 2. The worker's throughput (synthetic jobs fed back to back through
//!    the fake studio) with the window attached and without, in
//!    alternating rounds.
//!
//! Run: `cargo build --release --workspace --bins && cargo build --release
//! -p studio-worker-ui --features ui && target/release/ui-bench [SECONDS] [JOBS] [ROUNDS]`

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use studio_worker_tests::claims::{claim, claim_with, image, llm};
use studio_worker_tests::proc::{bin, children_of, Gate};
use studio_worker_tests::start_worker;
use studio_worker_tests::studio::FakeStudio;

/// CPU seconds (user + system) the process has used.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis, the state first;
    // utime and stime are the 12th and 13th of them.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    let ticks = field(11) + field(12);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

/// The window, under its own Xvfb; the UI's pid and the X server's once
/// they run. The caller ends it with [`close`] (which waits for it).
#[allow(clippy::zombie_processes)]
fn window(config: &std::path::Path) -> (Child, u32, u32) {
    let child = Command::new("xvfb-run")
        .args(["-a", "-s", "-screen 0 1280x800x24"])
        .arg(bin("studio-worker-ui"))
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("xvfb-run (apt-get install xvfb)");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // xvfb-run → Xvfb and the UI; the UI is the one named so.
        let named = |name: &str| {
            descendants(child.id()).into_iter().find(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim().starts_with(name))
            })
        };
        if let (Some(ui), Some(x)) = (named("studio-worker-u"), named("Xvfb")) {
            return (child, ui, x);
        }
        if Instant::now() > deadline {
            close(child);
            panic!("the window did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for c in children_of(p) {
            out.push(c);
            todo.push(c);
        }
    }
    out
}

fn close(mut child: Child) {
    for p in descendants(child.id()) {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(p as i32, libc::SIGTERM) };
    }
    let _ = child.kill();
    let _ = child.wait();
}

async fn feed(studio: &FakeStudio, round: usize, n: usize) -> f64 {
    let claims = (0..n)
        .map(|i| {
            let id = format!("r{round}-{i}");
            if i % 2 == 0 {
                claim(&id, llm("Tell me about golems."))
            } else {
                claim(&id, image(64, 64, "png"))
            }
        })
        .collect();
    let t0 = Instant::now();
    studio.feed(claims);
    loop {
        if studio.feed_stats().0.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let jobs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let studio = FakeStudio::start().await;
    studio.record_frames(false);
    let (home, _worker) = start_worker(
        &studio,
        "",
        &[
            ("STUDIO_WORKER_LOG", "warn"),
            ("STUDIO_WORKER_FAULT_INJECTION", "1"),
        ],
    )
    .await;
    let config = home.config();
    let window_for = Duration::from_secs(secs);

    // 1. The window's CPU, idle and while a job reports progress.
    let (ui, pid, x) = window(&config);
    tokio::time::sleep(Duration::from_secs(3)).await; // its first frames
    let used = |pid: u32, c0: f64| (cpu_secs(pid) - c0) / secs as f64 * 100.0;
    let (c0, x0) = (cpu_secs(pid), cpu_secs(x));
    tokio::time::sleep(window_for).await;
    let idle = (used(pid, c0), used(x, x0));
    let gate = Gate::new();
    studio.offer(claim_with("progress", &gate.model(), image(16, 16, "png")));
    gate.started().await;
    let (c0, x0) = (cpu_secs(pid), cpu_secs(x));
    tokio::time::sleep(window_for).await;
    let busy = (used(pid, c0), used(x, x0));
    gate.open();
    studio.wait_upload("progress").await;
    close(ui);
    println!(
        "CPU over {secs} s (one core = 100 %), release build, Xvfb with Mesa's software OpenGL:"
    );
    println!();
    println!("| worker | the window | its X server (Xvfb) |");
    println!("| --- | ---: | ---: |");
    println!("| idle | {:.2} % | {:.2} % |", idle.0, idle.1);
    println!(
        "| a job reporting progress every 20 ms | {:.2} % | {:.2} % |",
        busy.0, busy.1
    );

    // 2. Throughput with and without the window.
    feed(&studio, 0, 200).await; // warm-up
    let (mut with, mut without) = (Vec::new(), Vec::new());
    println!();
    println!("| round | without the window (jobs/s) | with the window (jobs/s) |");
    println!("| ---: | ---: | ---: |");
    for round in 1..=rounds {
        let a = feed(&studio, round * 2, jobs).await;
        let (ui, _, _) = window(&config);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let b = feed(&studio, round * 2 + 1, jobs).await;
        close(ui);
        println!("| {round} | {a:.0} | {b:.0} |");
        without.push(a);
        with.push(b);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (w, wo) = (median(&mut with), median(&mut without));
    println!();
    println!(
        "median: without {wo:.0} jobs/s, with {w:.0} jobs/s, ratio {:.3}",
        w / wo
    );
}
