//! The job table: every job this worker holds, with its runner, epoch,
//! phase and deadline. Owned by the session loop (one owner, no locks);
//! the executor reports changes as events.
//!
//! ```text
//! accepted ──▶ loading ──▶ running ──▶ uploading ──▶ (removed on report)
//!    │            └───────────┴─────────────┴──▶ failed (removed on report)
//! ```
//!
//! The one-job gate is "the table is not empty"; heartbeats name its job.

use std::collections::BTreeMap;

use tokio::time::Instant;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobPhase {
    /// Accepted, no runner yet.
    Accepted,
    /// Model files being downloaded.
    Downloading,
    /// On a runner, model loading.
    Loading,
    /// On a runner, running.
    Running,
    /// Result produced, being uploaded.
    Uploading,
}

impl JobPhase {
    /// Lowercase name for logs and status.
    pub fn as_str(self) -> &'static str {
        match self {
            JobPhase::Accepted => "accepted",
            JobPhase::Downloading => "downloading",
            JobPhase::Loading => "loading",
            JobPhase::Running => "running",
            JobPhase::Uploading => "uploading",
        }
    }
}

/// The runner a job is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunnerRef {
    /// Process id (and process group id).
    pub pid: u32,
    /// Restart count of that engine's runner.
    pub epoch: u64,
}

/// One held job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    /// Engine name.
    pub engine: String,
    /// Registry model id.
    pub model: String,
    /// Its runner, once it has one.
    pub runner: Option<RunnerRef>,
    /// Where it is.
    pub phase: JobPhase,
    /// When it was accepted.
    pub accepted_at: Instant,
    /// The hard deadline its runner enforces, once running.
    pub deadline: Option<Instant>,
    /// Session generation that accepted it.
    pub gen: u64,
}

/// Held jobs by id.
#[derive(Debug, Default)]
pub struct JobTable {
    rows: BTreeMap<String, JobRow>,
}

impl JobTable {
    /// Records an accepted job.
    pub fn accept(&mut self, job_id: &str, engine: &str, model: &str, gen: u64) {
        self.rows.insert(
            job_id.to_string(),
            JobRow {
                engine: engine.to_string(),
                model: model.to_string(),
                runner: None,
                phase: JobPhase::Accepted,
                accepted_at: Instant::now(),
                deadline: None,
                gen,
            },
        );
    }

    /// Moves a job to `phase` (and onto `runner` with `deadline` when
    /// given). Unknown ids are ignored: the job already ended.
    pub fn update(
        &mut self,
        job_id: &str,
        phase: JobPhase,
        runner: Option<RunnerRef>,
        deadline: Option<Instant>,
    ) {
        if let Some(row) = self.rows.get_mut(job_id) {
            if row.phase != phase {
                tracing::debug!(target: "job", job_id = %job_id, "phase {} → {}", row.phase.as_str(), phase.as_str());
            }
            row.phase = phase;
            if runner.is_some() {
                row.runner = runner;
            }
            if deadline.is_some() {
                row.deadline = deadline;
            }
        }
    }

    /// Forgets a job that ended; returns its row.
    pub fn finish(&mut self, job_id: &str) -> Option<JobRow> {
        self.rows.remove(job_id)
    }

    /// True when no job is held (the gate is open).
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The job heartbeats report (the oldest held).
    pub fn current(&self) -> Option<&str> {
        self.rows
            .iter()
            .min_by_key(|(_, r)| r.accepted_at)
            .map(|(id, _)| id.as_str())
    }

    /// Ids of every held job.
    pub fn held(&self) -> Vec<String> {
        self.rows.keys().cloned().collect()
    }

    /// True when every held job is uploading (a new offer may wait for it).
    pub fn only_uploading(&self) -> bool {
        !self.rows.is_empty() && self.rows.values().all(|r| r.phase == JobPhase::Uploading)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_move_through_phases_and_keep_their_runner() {
        let mut t = JobTable::default();
        assert!(t.is_empty() && t.current().is_none());
        t.accept("j1", "synthetic", "m", 1);
        assert_eq!(t.current(), Some("j1"));
        assert_eq!(t.held(), vec!["j1".to_string()]);
        assert!(!t.only_uploading());
        let r = RunnerRef { pid: 42, epoch: 3 };
        t.update("j1", JobPhase::Running, Some(r), None);
        t.update("j1", JobPhase::Uploading, None, None);
        assert!(t.only_uploading());
        t.update("gone", JobPhase::Running, None, None);
        let row = t.finish("j1").unwrap();
        assert_eq!(row.runner, Some(r), "runner kept through later phases");
        assert_eq!((row.phase, row.gen), (JobPhase::Uploading, 1));
        assert!(t.is_empty());
    }
}
