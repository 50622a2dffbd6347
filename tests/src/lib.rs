//! Test support for end-to-end tests of the real binaries:
//!
//! * [`studio`]: a fake studio (WebSocket + HTTP on 127.0.0.1:0) that
//!   implements the studio side of `studio-worker-v1` and records every
//!   frame, upload and registration it sees.
//! * [`bounds`]: every time bound a test waits under (ceilings for a slow
//!   day, never speed assertions).
//! * [`proc`]: starting the real `studio-worker` and `engine-runner`
//!   binaries with a private config, and watching their processes.
//!
//! The studio is the only mock in the project, because the real one is not
//! available; everything on the worker side is the real thing.

pub mod bounds;
pub mod claims;
pub mod gradio;
pub mod models;
pub mod proc;
pub mod prom;
pub mod release;
pub mod sentry;
pub mod speech;
pub mod studio;
pub mod tiny_sd;

use std::time::Duration;

/// Starts a registered worker against `studio` and waits for its first
/// session.
pub async fn start_worker(
    studio: &studio::FakeStudio,
    extra: &str,
    env: &[(&str, &str)],
) -> (proc::WorkerHome, proc::WorkerProc) {
    start_worker_of(&proc::bin("studio-worker"), studio, extra, env).await
}

/// [`start_worker`] with another build of `studio-worker` (benches).
pub async fn start_worker_of(
    program: &std::path::Path,
    studio: &studio::FakeStudio,
    extra: &str,
    env: &[(&str, &str)],
) -> (proc::WorkerHome, proc::WorkerProc) {
    let home = proc::WorkerHome::new(
        &studio.url(),
        Some((studio::WORKER_ID, studio::TOKEN)),
        extra,
    );
    let worker = home.spawn_run_of(program, env);
    let before = studio.sessions();
    let deadline = tokio::time::Instant::now() + bounds::event();
    let pid = worker.pid();
    tokio::select! {
        _ = studio.wait_session(before + 1) => {}
        _ = async {
            while proc::alive(pid) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        } => panic!("worker did not connect; log:\n{}", worker.log()),
    }
    (home, worker)
}
