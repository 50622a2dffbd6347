//! Per-job deadlines and per-runner resource limits (built from the
//! config by [`crate::settings::Tuning`]).

use std::time::Duration;

/// How long a job may take, and how a runner is watched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// No progress for this long: the runner is killed, the job `stalled`.
    pub stall: Duration,
    /// Hard cap on one job: the runner is killed, the job `timeout`.
    pub job: Duration,
    /// Pings go out this often while a job runs.
    pub ping_interval: Duration,
    /// No pong for this long: the runner is killed as unresponsive.
    pub ping_timeout: Duration,
    /// Host memory cap per runner in bytes (`None`: no cap).
    pub memory_bytes: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            stall: Duration::from_secs(300),
            job: Duration::from_secs(1800),
            ping_interval: Duration::from_secs(5),
            ping_timeout: Duration::from_secs(30),
            memory_bytes: None,
        }
    }
}

impl Limits {
    /// The stall deadline after a sign of life at `now`. While the job is
    /// still loading its model (`loading`: no `Running` progress yet) the
    /// load allowance stays on top of the stall timeout, for the whole
    /// load: a runner that reports "loading started" and then reads a big
    /// model for minutes is not stalled. Once the job runs, the plain
    /// stall timeout.
    pub fn stall_deadline(
        &self,
        now: tokio::time::Instant,
        load_extra: Duration,
        loading: bool,
    ) -> tokio::time::Instant {
        now + self.stall + if loading { load_extra } else { Duration::ZERO }
    }
}

/// Extra time for the load phase: one second per 100 MB of model files,
/// so a 20 GB model gets 200 s more before it counts as stalled.
pub fn load_allowance(model_bytes: u64) -> Duration {
    Duration::from_secs(model_bytes / 100_000_000)
}

/// Restart backoff for one engine: starts at `initial`, doubles per
/// restart, capped at `max`, reset after a healthy job.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    armed: bool,
}

impl Backoff {
    /// A backoff that waits nothing until the first death.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
            armed: false,
        }
    }

    /// A runner died: the next start waits.
    pub fn on_death(&mut self) {
        if self.armed {
            self.next = (self.next * 2).min(self.max);
        } else {
            self.armed = true;
            self.next = self.initial.min(self.max);
        }
    }

    /// A job succeeded: restarts are immediate again.
    pub fn on_success(&mut self) {
        self.armed = false;
        self.next = self.initial;
    }

    /// How long to wait before the next start.
    pub fn delay(&self) -> Duration {
        if self.armed {
            self.next
        } else {
            Duration::ZERO
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        assert_eq!(b.delay(), Duration::ZERO);
        b.on_death();
        assert_eq!(b.delay(), Duration::from_millis(100));
        b.on_death();
        assert_eq!(b.delay(), Duration::from_millis(200));
        b.on_death();
        assert_eq!(b.delay(), Duration::from_millis(350));
        b.on_success();
        assert_eq!(b.delay(), Duration::ZERO);
        b.on_death();
        assert_eq!(b.delay(), Duration::from_millis(100));
    }

    /// Regression: a `Progress(Loading)` frame at the start of a load
    /// used to reset the deadline to the plain stall timeout, dropping the
    /// allowance just before the long part.
    #[test]
    fn the_load_allowance_lasts_the_whole_load() {
        let limits = Limits {
            stall: Duration::from_secs(10),
            ..Limits::default()
        };
        let now = tokio::time::Instant::now();
        let extra = Duration::from_secs(200);
        assert_eq!(
            limits.stall_deadline(now, extra, true),
            now + Duration::from_secs(210)
        );
        assert_eq!(
            limits.stall_deadline(now, extra, false),
            now + Duration::from_secs(10)
        );
    }

    #[test]
    fn load_allowance_grows_with_model_size() {
        assert_eq!(load_allowance(0), Duration::ZERO);
        assert_eq!(load_allowance(20_000_000_000), Duration::from_secs(200));
    }
}
