//! Self-update benchmark, printed as a table (docs/benchmarks.md).
//!
//! Each round installs version A with `scripts/install.sh`, starts it
//! against the fake studio, then publishes version B in the feed it reads
//! every second, and times from the fake studio's side:
//!
//! * seen → switch: B's archive requested (the worker saw the release) →
//!   A's session closed (download, digest, unpack, manifest, probe, hold,
//!   flip all done);
//! * downtime: A's session closed → B's session open (re-exec, start,
//!   runner catalog, connect);
//! * open → first job: B's session open → B's result for a job offered
//!   at once;
//! * seen → serving: the whole, from seen to that first result.
//!
//! Both archives are packed once from the binaries beside this bench
//! (`scripts/package --fast`, this build's own binaries).
//!
//! Run: `cargo build --release --workspace --bins && target/release/update-bench [ROUNDS]`

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use studio_worker_tests::claims::{claim, llm};
use studio_worker_tests::proc::{percentile, WorkerHome};
use studio_worker_tests::release::{host_target, install, package, sha256_hex};
use studio_worker_tests::studio::{Event, FakeStudio, TOKEN, WORKER_ID};

const A: &str = "9.8.0";
const B: &str = "9.9.0";
const BOUND: Duration = Duration::from_secs(300);

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// The instant of the first event after `mark` that `pred` accepts.
async fn at(
    studio: &FakeStudio,
    mark: usize,
    what: &str,
    mut pred: impl FnMut(&Event) -> bool,
) -> Instant {
    studio
        .wait_until(BOUND, what, |events| {
            events
                .iter()
                .skip(mark)
                .find(|(_, e)| pred(e))
                .map(|(t, _)| *t)
        })
        .await
}

fn hello_from(e: &Event, version: &str) -> bool {
    matches!(e, Event::Frame(v) if v["type"] == "hello" && v["capabilities"]["agentVersion"] == version)
}

struct Round {
    seen_to_switch: Duration,
    downtime: Duration,
    open_to_job: Duration,
    total: Duration,
}

impl Round {
    fn as_row(&self) -> [Duration; 4] {
        [
            self.seen_to_switch,
            self.downtime,
            self.open_to_job,
            self.total,
        ]
    }
}

async fn round(old: &Path, new: &Path, i: usize) -> Round {
    let studio = FakeStudio::start().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let prefix = install(old, tmp.path());
    // The feed lists only A until the worker is up.
    studio.serve_file(
        "releases.json",
        json!([{"tag_name": format!("v{A}"), "assets": []}]).to_string(),
    );
    let home = WorkerHome::new(
        &studio.url(),
        Some((WORKER_ID, TOKEN)),
        &format!(
            "auto_update_feed = \"{}\"\nauto_update_interval_secs = 1\n",
            studio.file_url("releases.json")
        ),
    );
    let worker = home.spawn_run_of(
        &prefix.join("current/studio-worker"),
        &[("STUDIO_WORKER_LOG", "warn")],
    );
    at(&studio, 0, "A's hello", |e| hello_from(e, A)).await;
    studio.wait_session(1).await;
    // Publish B.
    let name = format!("studio-worker-{B}-{}-cpu.tar.xz", host_target());
    studio.serve_file(&name, std::fs::read(new).expect("read archive"));
    studio.serve_file(
        &format!("{name}.sha256"),
        format!("{}  {name}\n", sha256_hex(new)),
    );
    let mark = studio.mark();
    studio.serve_file(
        "releases.json",
        json!([
            {"tag_name": format!("v{B}"), "assets": [
                {"name": name, "browser_download_url": studio.file_url(&name)},
                {"name": format!("{name}.sha256"), "browser_download_url": studio.file_url(&format!("{name}.sha256"))}
            ]},
            {"tag_name": format!("v{A}"), "assets": []}
        ])
        .to_string(),
    );
    let seen = at(
        &studio,
        mark,
        "B's archive fetched",
        |e| matches!(e, Event::FileGet { name: n, .. } if *n == name),
    )
    .await;
    let closed = at(&studio, mark, "A's session closed", |e| {
        matches!(e, Event::Closed(_))
    })
    .await;
    let opened = at(&studio, mark, "B's session", |e| {
        matches!(e, Event::Connected { .. })
    })
    .await;
    at(&studio, mark, "B's hello", |e| hello_from(e, B)).await;
    studio.wait_session(2).await;
    let id = format!("first-{i}");
    let before = studio.mark();
    studio.offer(claim(&id, llm("hi")));
    let served = at(&studio, before, "B's first result", |e| {
        matches!(e, Event::Frame(v) if v["type"] == "completeJson" && v["jobId"] == id.as_str())
    })
    .await;
    drop(worker);
    Round {
        seen_to_switch: closed.duration_since(seen),
        downtime: opened.duration_since(closed),
        open_to_job: served.duration_since(opened),
        total: served.duration_since(seen),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Instant::now();
    let old = package(A, dir.path());
    let new = package(B, dir.path());
    let size = std::fs::metadata(&new).map_or(0, |m| m.len());
    eprintln!(
        "packed {A} and {B} in {:.1} s ({:.1} MiB each)",
        t.elapsed().as_secs_f64(),
        size as f64 / 1048576.0
    );
    let mut all = Vec::new();
    for i in 0..rounds {
        let r = round(&old, &new, i).await;
        eprintln!(
            "round {i}: seen→switch {}, downtime {}, open→job {}, total {}",
            ms(r.seen_to_switch),
            ms(r.downtime),
            ms(r.open_to_job),
            ms(r.total)
        );
        all.push(r);
    }
    println!(
        "update {A} → {B}, archive {:.1} MiB, {rounds} rounds\n",
        size as f64 / 1048576.0
    );
    println!("| interval | p50 | max |");
    println!("| --- | ---: | ---: |");
    let rows = [
        "seen → switch (download, verify, unpack, probe, flip)",
        "downtime: old session closed → new session open",
        "new session open → first job's result",
        "newer release seen → new version serving",
    ];
    for (k, name) in rows.into_iter().enumerate() {
        let mut v: Vec<Duration> = all.iter().map(|r| r.as_row()[k]).collect();
        v.sort();
        println!(
            "| {name} | {} | {} |",
            ms(percentile(&v, 0.5)),
            ms(*v.last().unwrap_or(&Duration::ZERO))
        );
    }
}
