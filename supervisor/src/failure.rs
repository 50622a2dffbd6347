//! How a failed job is judged, in one place: its error class travels
//! unchanged from the runner (or the download, or the input fetch) to the
//! studio's `fail` frame, and this module decides from it whether the
//! studio may retry the job, whether the worker (not the input) failed, and
//! when a job is poison.

use std::collections::VecDeque;

use studio_protocol::runner::ErrorClass;

/// A failed job.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct JobError {
    /// Classification, as the runner (or the supervisor's own step) gave it.
    pub class: ErrorClass,
    /// What went wrong.
    pub message: String,
    /// The job has taken down a runner twice: never retry it.
    pub poison: bool,
}

impl JobError {
    /// A failure of `class`.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
            poison: false,
        }
    }

    /// Whether the studio may retry the job.
    pub fn retryable(&self) -> bool {
        !self.poison && self.class.retryable()
    }

    /// True when the worker, not the input, failed (a dead or stuck
    /// runner): these count towards the breakers.
    pub fn worker_caused(&self) -> bool {
        kills_runner(self.class)
    }
}

/// Failure classes that mean the runner died or was killed.
pub fn kills_runner(class: ErrorClass) -> bool {
    matches!(
        class,
        ErrorClass::Crashed | ErrorClass::Oom | ErrorClass::Stalled | ErrorClass::Timeout
    )
}

/// Jobs remembered for poison detection.
const CRASH_MEMORY: usize = 256;

/// Recent jobs that took down a runner, with how often: a job that does it
/// twice is poison (the studio would otherwise hand it from worker to
/// worker, killing runners everywhere).
#[derive(Debug, Default)]
pub struct PoisonWatch {
    crashes: VecDeque<(String, u32)>,
}

impl PoisonWatch {
    /// Judges `e`, the failure of `job_id`: marks it poison when it is the
    /// job's second runner death.
    pub fn judge(&mut self, job_id: &str, e: &mut JobError) {
        if kills_runner(e.class) && self.count(job_id) >= 2 {
            e.poison = true;
            e.message = format!(
                "poison job: it took down the runner twice; last time: {}",
                e.message
            );
        }
    }

    fn count(&mut self, job_id: &str) -> u32 {
        if let Some(entry) = self.crashes.iter_mut().find(|(id, _)| id == job_id) {
            entry.1 += 1;
            return entry.1;
        }
        if self.crashes.len() == CRASH_MEMORY {
            self.crashes.pop_front();
        }
        self.crashes.push_back((job_id.to_string(), 1));
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_runner_death_makes_a_job_poison_and_final() {
        let mut w = PoisonWatch::default();
        let mut first = JobError::new(ErrorClass::Crashed, "SIGSEGV");
        w.judge("j", &mut first);
        assert!(!first.poison && first.retryable() && first.worker_caused());
        let mut bad_input = JobError::new(ErrorClass::BadInput, "width");
        w.judge("j", &mut bad_input);
        assert!(!bad_input.poison && !bad_input.retryable() && !bad_input.worker_caused());
        let mut second = JobError::new(ErrorClass::Oom, "killed");
        w.judge("j", &mut second);
        assert!(second.poison && !second.retryable());
        assert!(
            second.message.starts_with("poison job"),
            "{}",
            second.message
        );
        let mut other = JobError::new(ErrorClass::Crashed, "SIGSEGV");
        w.judge("k", &mut other);
        assert!(!other.poison, "counted per job");
    }
}
