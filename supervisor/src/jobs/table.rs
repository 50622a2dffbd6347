//! The job table: every job this worker holds, with its GPU slot, runner,
//! phase, progress and deadline. Owned by the scheduler (one owner, no
//! locks); job tasks report changes to it as events.
//!
//! ```text
//! accepted ──▶ downloading ──▶ loading ──▶ running ──▶ uploading ──▶ (removed on its end)
//!    └──────────────┴──────────────┴───────────┴────────────┴──▶ failed (removed)
//! ```
//!
//! A slot is busy while it holds a job that is not yet uploading: an upload
//! needs no GPU, so the next job may start beside it.

use std::collections::BTreeMap;

use studio_protocol::studio::TaskKind;
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

    /// The phase's name in duration metrics.
    pub fn metric_name(self) -> &'static str {
        match self {
            JobPhase::Accepted => "queue",
            JobPhase::Downloading => "download",
            JobPhase::Loading => "load",
            JobPhase::Running => "run",
            JobPhase::Uploading => "upload",
        }
    }
}

/// The runner a job is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunnerRef {
    /// Process id (and process group id).
    pub pid: u32,
    /// Restart count of that engine's runners.
    pub epoch: u64,
}

/// One held job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    /// Engine name.
    pub engine: String,
    /// Registry model id.
    pub model: String,
    /// Task kind.
    pub kind: TaskKind,
    /// GPU slot (index into the scheduler's slots).
    pub slot: usize,
    /// Its runner, once it has one.
    pub runner: Option<RunnerRef>,
    /// Where it is.
    pub phase: JobPhase,
    /// Units done and in all in the current phase (0 total: unknown).
    pub progress: (u64, u64),
    /// When it was accepted.
    pub accepted_at: Instant,
    /// The hard deadline its runner enforces, once running.
    pub deadline: Option<Instant>,
    /// Session generation that accepted it (0: a local job).
    pub gen: u64,
    /// `studio`, `local` or `pinned`.
    pub origin: &'static str,
    /// When the current phase began.
    pub phase_at: Instant,
    /// Time spent in each phase left so far.
    pub spent: Vec<(JobPhase, std::time::Duration)>,
}

impl JobRow {
    /// A row for a job just accepted.
    pub fn new(engine: &str, model: &str, kind: TaskKind, slot: usize, gen: u64) -> Self {
        Self {
            engine: engine.to_string(),
            model: model.to_string(),
            kind,
            slot,
            runner: None,
            phase: JobPhase::Accepted,
            progress: (0, 0),
            accepted_at: Instant::now(),
            deadline: None,
            gen,
            origin: if gen == 0 { "pinned" } else { "studio" },
            phase_at: Instant::now(),
            spent: Vec::new(),
        }
    }

    /// The same row for a job from `studio-worker job`.
    pub fn local(mut self) -> Self {
        self.origin = "local";
        self
    }

    /// Time per phase, the current one up to now.
    pub fn phase_times(&self) -> Vec<(JobPhase, std::time::Duration)> {
        let mut v = self.spent.clone();
        v.push((self.phase, self.phase_at.elapsed()));
        v
    }
}

/// Held jobs by id.
#[derive(Debug, Default)]
pub struct JobTable {
    rows: BTreeMap<String, JobRow>,
}

impl JobTable {
    /// Records an accepted job.
    pub fn accept(&mut self, job_id: &str, row: JobRow) {
        self.rows.insert(job_id.to_string(), row);
    }

    /// The row of a held job.
    pub fn get(&self, job_id: &str) -> Option<&JobRow> {
        self.rows.get(job_id)
    }

    /// Moves a job to `phase`. Unknown ids are ignored: the job ended.
    pub fn set_phase(&mut self, job_id: &str, phase: JobPhase) {
        if let Some(row) = self.rows.get_mut(job_id) {
            if row.phase != phase {
                tracing::debug!(target: "job", job_id = %job_id, "phase {} → {}", row.phase.as_str(), phase.as_str());
                row.progress = (0, 0);
                row.spent.push((row.phase, row.phase_at.elapsed()));
                row.phase_at = Instant::now();
            }
            row.phase = phase;
        }
    }

    /// Records progress within the current phase.
    pub fn set_progress(&mut self, job_id: &str, done: u64, total: u64) {
        if let Some(row) = self.rows.get_mut(job_id) {
            row.progress = (done, total);
        }
    }

    /// Puts a job on `runner`, due by `deadline`.
    pub fn set_runner(&mut self, job_id: &str, runner: RunnerRef, deadline: Instant) {
        if let Some(row) = self.rows.get_mut(job_id) {
            row.runner = Some(runner);
            row.deadline = Some(deadline);
        }
    }

    /// Forgets a job that ended; returns its row.
    pub fn finish(&mut self, job_id: &str) -> Option<JobRow> {
        self.rows.remove(job_id)
    }

    /// True when no job is held.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// True when `slot` holds a job that still needs its GPU.
    pub fn busy(&self, slot: usize) -> bool {
        self.rows
            .values()
            .any(|r| r.slot == slot && r.phase != JobPhase::Uploading)
    }

    /// The studio job heartbeats of `slot` report (its oldest held; local
    /// jobs are not the studio's business).
    pub fn current(&self, slot: usize) -> Option<&str> {
        self.rows
            .iter()
            .filter(|(_, r)| r.slot == slot && r.origin != "local")
            .min_by_key(|(_, r)| r.accepted_at)
            .map(|(id, _)| id.as_str())
    }

    /// Every held job, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &JobRow)> {
        let mut v: Vec<_> = self.rows.iter().collect();
        v.sort_by_key(|(_, r)| r.accepted_at);
        v.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_move_through_phases_and_an_upload_frees_the_slot() {
        let mut t = JobTable::default();
        assert!(t.is_empty() && t.current(0).is_none() && !t.busy(0));
        t.accept("j1", JobRow::new("synthetic", "m", TaskKind::Image, 0, 1));
        assert_eq!(t.current(0), Some("j1"));
        assert!(t.busy(0) && !t.busy(1));
        let r = RunnerRef { pid: 42, epoch: 3 };
        t.set_runner("j1", r, Instant::now());
        t.set_phase("j1", JobPhase::Running);
        t.set_progress("j1", 3, 8);
        assert_eq!(t.get("j1").map(|r| r.progress), Some((3, 8)));
        t.set_phase("j1", JobPhase::Uploading);
        assert!(!t.busy(0), "an upload needs no GPU");
        assert_eq!(t.current(0), Some("j1"), "but the job is still held");
        t.set_phase("gone", JobPhase::Running);
        let row = t.finish("j1").unwrap();
        assert_eq!(row.runner, Some(r), "runner kept through later phases");
        assert_eq!(
            (row.phase, row.gen, row.progress),
            (JobPhase::Uploading, 1, (0, 0))
        );
        assert!(t.is_empty());
    }
}
