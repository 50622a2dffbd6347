//! The scheduler through the library, on the real `engine-runner`: the
//! snapshot of a running job, residency (a model loads once per runner),
//! and keep-alive stopping idle runners.

use std::time::Duration;

use studio_protocol::studio::{ImageTask, JobOfferClaim, ModelSource, Task};
use studio_worker::capabilities::HostFacts;
use studio_worker::config::Config;
use studio_worker::runner::{EngineCatalog, RunEvent};
use studio_worker::scheduler::snapshot::Snapshot;
use studio_worker::scheduler::{self, Handle, LocalUpdate, Setup, SlotSetup};
use studio_worker_tests::bounds;
use studio_worker_tests::proc::{alive, bin, Gate};

fn claim(job_id: &str, model: &str) -> JobOfferClaim {
    JobOfferClaim {
        job_id: job_id.into(),
        game_id: "g".into(),
        asset_name: "g/a".into(),
        model: model.into(),
        vram_gb_estimate: 1.0,
        task: Task::Image(ImageTask {
            prompt: "p".into(),
            width: Some(16),
            height: Some(16),
            ext: Some("png".into()),
            ..Default::default()
        }),
        model_source: ModelSource::synthetic(),
    }
}

/// A scheduler over the real runner binaries, with `keep_alive` seconds.
fn start(home: &std::path::Path, keep_alive: i64) -> (Handle, tokio::task::JoinHandle<()>) {
    let cfg = Config {
        engine_runner_path: Some(bin("engine-runner")),
        models_root: home.join("models"),
        model_keep_alive_secs: keep_alive,
        ..Default::default()
    };
    let (handle, _life, task) = scheduler::start(Setup {
        catalog: EngineCatalog::discover(&cfg),
        cfg,
        status_path: None,
        host: HostFacts::with_gpus(&[]),
        slots: vec![SlotSetup {
            gpu: None,
            table: None,
            target: None,
        }],
        gpus: Vec::new(),
    });
    (handle, task)
}

/// Runs a local job to its end; panics on failure. Returns the pid of the
/// runner it ran on.
async fn run(handle: &Handle, claim: JobOfferClaim) -> u32 {
    let id = claim.job_id.clone();
    let mut updates = handle.submit_local(claim);
    let (done, pid) = bounds::within(&format!("job {id} to end"), bounds::event(), async {
        let mut pid = 0;
        loop {
            match updates.recv().await {
                Some(LocalUpdate::Done(r)) => return (r, pid),
                Some(LocalUpdate::Event(RunEvent::Started { pid: p, .. })) => pid = p,
                Some(LocalUpdate::Event(_)) => {}
                Some(LocalUpdate::QueueFull) => panic!("job {id} was not queued"),
                None => panic!("the scheduler dropped job {id}"),
            }
        }
    })
    .await;
    if let Err(e) = done {
        panic!("job {id} failed: {e}");
    }
    pid
}

/// Polls the snapshot until `check` accepts it.
async fn snapshot_until(
    handle: &Handle,
    what: &str,
    check: impl Fn(&Snapshot) -> bool,
) -> Snapshot {
    bounds::within(what, bounds::event(), async {
        loop {
            let s = handle.snapshot().await.expect("scheduler alive");
            if check(&s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[test]
fn the_snapshot_shows_a_slow_jobs_phase_progress_and_runner() {
    // Before any thread of ours exists: the runner inherits it.
    std::env::set_var("STUDIO_WORKER_FAULT_INJECTION", "1");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let home = tempfile::tempdir().expect("tempdir");
        let (handle, task) = start(home.path(), 300);
        let gate = Gate::new();
        let mut updates = handle.submit_local(claim("slow", &gate.model()));
        let pid = gate.started().await;
        let s = snapshot_until(&handle, "the job to show progress while running", |s| {
            s.jobs
                .first()
                .is_some_and(|j| j.phase == "running" && j.done > 0)
        })
        .await;
        let job = &s.jobs[0];
        assert_eq!(
            (job.job_id.as_str(), job.kind.as_str(), job.engine.as_str()),
            ("slow", "image", "synthetic")
        );
        assert_eq!(job.runner_pid, Some(pid), "{s:?}");
        assert_eq!(s.runners.len(), 1, "{s:?}");
        let r = &s.runners[0];
        assert_eq!((r.pid, r.job_id.as_deref()), (pid, Some("slow")));
        assert!(r.rss_bytes > 0, "the runner's memory is read: {r:?}");
        assert!(s.recent.is_empty() && s.counters.accepted == 1);
        assert_eq!(s.sessions.len(), 1);

        gate.open();
        let done = bounds::within("the gated job to end", bounds::event(), async {
            loop {
                if let Some(LocalUpdate::Done(r)) = updates.recv().await {
                    return r;
                }
            }
        })
        .await;
        assert!(done.is_ok());
        let s = handle.snapshot().await.expect("snapshot");
        assert!(s.jobs.is_empty(), "{s:?}");
        assert_eq!(s.recent.len(), 1);
        assert_eq!(
            (s.recent[0].job_id.as_str(), s.recent[0].outcome.as_str()),
            ("slow", "completed")
        );
        assert_eq!(s.runners[0].job_id, None, "idle after the job");
        assert_eq!(s.counters.completed, 1);
        handle.stop().await;
        task.await.expect("scheduler ends");
        bounds::until(
            "the runner to stop with the scheduler",
            bounds::event(),
            || (!alive(pid)).then_some(()),
        )
        .await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resident_model_is_not_reloaded_and_each_model_has_its_runner() {
    let home = tempfile::tempdir().expect("tempdir");
    let (handle, task) = start(home.path(), 300);
    run(&handle, claim("a1", "synthetic")).await;
    run(&handle, claim("a2", "synthetic")).await;
    let s = handle.snapshot().await.expect("snapshot");
    assert_eq!(s.runners.len(), 1, "{s:?}");
    assert_eq!(s.runners[0].loads, 1, "one load for two jobs: {s:?}");
    run(&handle, claim("b1", "synthetic-image")).await;
    let s = handle.snapshot().await.expect("snapshot");
    assert_eq!(s.runners.len(), 2, "another model, another runner: {s:?}");
    assert_eq!(s.counters.loads, 2);
    assert_eq!(s.counters.runner_starts, 2);
    let pids: Vec<u32> = s.runners.iter().map(|r| r.pid).collect();
    assert_ne!(pids[0], pids[1]);
    handle.stop().await;
    task.await.expect("scheduler ends");
    for pid in pids {
        bounds::until(
            "runners to stop with the scheduler",
            bounds::event(),
            || (!alive(pid)).then_some(()),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_stops_idle_runners() {
    let home = tempfile::tempdir().expect("tempdir");
    // 0: stopped after every job.
    let (handle, task) = start(home.path(), 0);
    let pid = run(&handle, claim("k0", "synthetic")).await;
    let s = handle.snapshot().await.expect("snapshot");
    assert!(s.runners.is_empty(), "{s:?}");
    bounds::until("the runner to exit after its job", bounds::event(), || {
        (!alive(pid)).then_some(())
    })
    .await;
    assert_eq!(s.counters.runner_starts, 1);
    handle.stop().await;
    task.await.expect("scheduler ends");

    // 1 s: stopped by a tick once idle that long, and the process is gone.
    let (handle, task) = start(home.path(), 1);
    let pid = run(&handle, claim("k1", "synthetic")).await;
    snapshot_until(&handle, "the idle runner to be stopped", |s| {
        s.runners.is_empty()
    })
    .await;
    bounds::until("the idle runner's process to exit", bounds::event(), || {
        (!alive(pid)).then_some(())
    })
    .await;
    // The next job starts a fresh runner.
    run(&handle, claim("k2", "synthetic")).await;
    let s = handle.snapshot().await.expect("snapshot");
    assert_eq!(s.counters.runner_starts, 2, "{s:?}");
    handle.stop().await;
    task.await.expect("scheduler ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_runner_killed_from_outside_is_replaced_not_used() {
    let home = tempfile::tempdir().expect("tempdir");
    let (handle, task) = start(home.path(), 300);
    let first = run(&handle, claim("i1", "synthetic")).await;
    // SAFETY: killing our own grandchild.
    unsafe {
        libc::kill(first as i32, libc::SIGKILL);
    }
    bounds::until("the killed runner to exit", bounds::event(), || {
        (!alive(first)).then_some(())
    })
    .await;
    // The next job for that model starts a fresh runner instead of failing
    // on the dead one's pipe.
    let second = run(&handle, claim("i2", "synthetic")).await;
    assert_ne!(first, second);
    let s = handle.snapshot().await.expect("snapshot");
    assert_eq!(s.counters.runner_deaths, 1, "{s:?}");
    assert_eq!(s.counters.runner_starts, 2, "{s:?}");
    assert_eq!(s.runners.len(), 1, "{s:?}");
    handle.stop().await;
    task.await.expect("scheduler ends");
}
