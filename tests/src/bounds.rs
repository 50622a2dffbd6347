//! Every time bound the tests wait under, in one place.
//!
//! None of these is a speed assertion. A test waits for the event that
//! proves its fact (a frame, an upload, a process gone, a file written)
//! and returns the moment it comes; a bound only decides when a test that
//! will never see its event gives up and prints what it saw instead. So
//! they are ceilings with a wide margin, sized for a slow day: machines
//! here differ by up to 10x in native-engine speed from one day to the
//! next, and `scripts/test-under-load` runs the suite with every core
//! already busy.
//!
//! `STUDIO_WORKER_TEST_BOUND_SCALE` (a number, default 1) multiplies them
//! all, for a machine slower still.

use std::future::Future;
use std::time::Duration;

fn scaled(secs: u64) -> Duration {
    let scale = std::env::var("STUDIO_WORKER_TEST_BOUND_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(1.0);
    Duration::from_secs_f64(secs as f64 * scale)
}

/// The worker or a runner reacting without real engine work: answering an
/// offer, a synthetic job, a heartbeat, a reconnect, a signal, an exit, a
/// process going away. Milliseconds on an idle machine.
pub fn event() -> Duration {
    scaled(120)
}

/// Real engine work: a model download and load, inference on a real model
/// (llama.cpp, whisper.cpp, stable-diffusion.cpp), an encode. Seconds on an
/// idle machine; ten times that on a slow day, and more under load.
pub fn engine_work() -> Duration {
    scaled(1200)
}

/// The heavy opt-in tests (a 2.8 GB model written, hashed and run).
pub fn heavy_work() -> Duration {
    scaled(3600)
}

/// How often [`until`] looks again.
const POLL: Duration = Duration::from_millis(20);

/// Waits until `check` returns `Some` (a fact read from outside the
/// process: `/proc`, a file), looking every 20 ms; panics naming `what`
/// after `bound`.
pub async fn until<T>(what: &str, bound: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        if let Some(found) = check() {
            return found;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("gave up after {bound:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`until`] for code without a runtime.
pub fn until_blocking<T>(what: &str, bound: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + bound;
    loop {
        if let Some(found) = check() {
            return found;
        }
        if std::time::Instant::now() > deadline {
            panic!("gave up after {bound:?} waiting for {what}");
        }
        std::thread::sleep(POLL);
    }
}

/// Runs `fut`, panicking naming `what` if it has not finished after
/// `bound`.
pub async fn within<T>(what: &str, bound: Duration, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(bound, fut).await {
        Ok(v) => v,
        Err(_) => panic!("gave up after {bound:?} waiting for {what}"),
    }
}
