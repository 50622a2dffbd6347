//! Labelled totals and duration histograms, kept by the scheduler at the
//! moments things happen and published inside the [`super::Snapshot`]
//! (so `/metrics`, `/status` and `status` read one copy of the state).

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Upper bounds (seconds) of the duration histograms' buckets.
pub const BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
];

/// Everything counted since start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    /// Jobs that ended, and offers rejected, by their labels.
    pub jobs: Vec<JobCount>,
    /// Time spent per kind and phase.
    pub durations: Vec<Histogram>,
    /// Model loads by engine.
    pub loads: Vec<Count>,
    /// Idle runners stopped after `model_keep_alive_secs`, by engine.
    pub unloads: Vec<Count>,
    /// Idle runners stopped to make room for another model, by engine.
    pub evictions: Vec<Count>,
    /// Runners that ended other than by our stop, by reason (error class).
    pub runner_restarts: Vec<Count>,
    /// Sessions opened, per slot (more than one: reconnects).
    pub session_opens: Vec<SlotCount>,
    /// Uploads that needed another attempt.
    pub uploads_retried: u64,
    /// Results kept on disk because no session could take them.
    pub results_kept: u64,
}

/// One label set of the jobs total.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobCount {
    /// Task kind (`unknown` for an offer that did not parse that far).
    pub kind: String,
    /// Engine (`unknown` likewise).
    pub engine: String,
    /// `studio`, `local` or `pinned`.
    pub origin: String,
    /// `completed`, `failed`, `rejected` or `cancelled`.
    pub outcome: String,
    /// The error class of a failure, the code of a rejection, else empty.
    pub reason: String,
    /// GPU slot's GPU, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<u32>,
    /// How many.
    pub count: u64,
}

/// A total under one label value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Count {
    /// The label value.
    pub label: String,
    /// How many.
    pub count: u64,
}

/// A total per session slot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlotCount {
    /// Slot index.
    pub slot: usize,
    /// How many.
    pub count: u64,
}

/// Durations of one kind and phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Histogram {
    /// Task kind.
    pub kind: String,
    /// `queue`, `download`, `load`, `run`, `upload`, or `total` (accept
    /// to end).
    pub phase: String,
    /// GPU slot's GPU, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<u32>,
    /// Observations at or below each of [`BUCKETS`] (cumulative).
    pub buckets: Vec<u64>,
    /// Observations in all.
    pub count: u64,
    /// Their sum in seconds.
    pub sum_secs: f64,
}

/// Labels of a job's end.
pub struct JobEnd<'a> {
    /// Task kind.
    pub kind: &'a str,
    /// Engine.
    pub engine: &'a str,
    /// `studio`, `local` or `pinned`.
    pub origin: &'a str,
    /// `completed`, `failed`, `rejected` or `cancelled`.
    pub outcome: &'a str,
    /// Error class or reject code.
    pub reason: &'a str,
    /// The GPU.
    pub gpu: Option<u32>,
}

fn bump(list: &mut Vec<Count>, label: &str) {
    match list.iter_mut().find(|c| c.label == label) {
        Some(c) => c.count += 1,
        None => list.push(Count {
            label: label.to_string(),
            count: 1,
        }),
    }
}

impl Metrics {
    /// A job ended (or an offer was rejected) with these labels.
    pub fn job(&mut self, e: JobEnd<'_>) {
        let same = |c: &&mut JobCount| {
            c.kind == e.kind
                && c.engine == e.engine
                && c.origin == e.origin
                && c.outcome == e.outcome
                && c.reason == e.reason
                && c.gpu == e.gpu
        };
        match self.jobs.iter_mut().find(same) {
            Some(c) => c.count += 1,
            None => self.jobs.push(JobCount {
                kind: e.kind.into(),
                engine: e.engine.into(),
                origin: e.origin.into(),
                outcome: e.outcome.into(),
                reason: e.reason.into(),
                gpu: e.gpu,
                count: 1,
            }),
        }
    }

    /// A job of `kind` on `gpu` spent `took` in `phase`.
    pub fn observe(&mut self, kind: &str, phase: &str, gpu: Option<u32>, took: Duration) {
        let h = match self
            .durations
            .iter()
            .position(|h| h.kind == kind && h.phase == phase && h.gpu == gpu)
        {
            Some(i) => &mut self.durations[i],
            None => {
                self.durations.push(Histogram {
                    kind: kind.into(),
                    phase: phase.into(),
                    gpu,
                    buckets: vec![0; BUCKETS.len()],
                    count: 0,
                    sum_secs: 0.0,
                });
                let last = self.durations.len() - 1;
                &mut self.durations[last]
            }
        };
        let secs = took.as_secs_f64();
        for (n, le) in h.buckets.iter_mut().zip(BUCKETS) {
            if secs <= le {
                *n += 1;
            }
        }
        h.count += 1;
        h.sum_secs += secs;
    }

    /// A model load on `engine`.
    pub fn loaded(&mut self, engine: &str) {
        bump(&mut self.loads, engine);
    }

    /// An idle runner of `engine` stopped after its keep-alive.
    pub fn unloaded(&mut self, engine: &str) {
        bump(&mut self.unloads, engine);
    }

    /// An idle runner of `engine` stopped to make room.
    pub fn evicted(&mut self, engine: &str) {
        bump(&mut self.evictions, engine);
    }

    /// A runner ended for `reason`.
    pub fn runner_ended(&mut self, reason: &str) {
        bump(&mut self.runner_restarts, reason);
    }

    /// A session of `slot` opened.
    pub fn session_opened(&mut self, slot: usize) {
        match self.session_opens.iter_mut().find(|c| c.slot == slot) {
            Some(c) => c.count += 1,
            None => self.session_opens.push(SlotCount { slot, count: 1 }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_per_label_set_and_buckets_are_cumulative() {
        let mut m = Metrics::default();
        let end = |outcome, reason| JobEnd {
            kind: "image",
            engine: "synthetic",
            origin: "studio",
            outcome,
            reason,
            gpu: None,
        };
        m.job(end("completed", ""));
        m.job(end("completed", ""));
        m.job(end("failed", "crashed"));
        assert_eq!(m.jobs.len(), 2);
        assert_eq!(m.jobs[0].count, 2);
        assert_eq!(m.jobs[1].reason, "crashed");
        m.observe("image", "run", None, Duration::from_millis(30));
        m.observe("image", "run", None, Duration::from_secs(2));
        let h = &m.durations[0];
        assert_eq!(h.count, 2);
        assert!((h.sum_secs - 2.03).abs() < 1e-9);
        // 30 ms lands in 0.05 and every bound above; 2 s from 2.5 up.
        assert_eq!(h.buckets[2], 0, "le 0.025");
        assert_eq!(h.buckets[3], 1, "le 0.05");
        assert_eq!(h.buckets[8], 2, "le 2.5");
        assert_eq!(*h.buckets.last().unwrap(), 2);
        m.loaded("llama-cpp");
        m.loaded("llama-cpp");
        m.runner_ended("crashed");
        m.session_opened(0);
        m.session_opened(0);
        assert_eq!(m.loads[0].count, 2);
        assert_eq!(m.session_opens[0].count, 2);
    }
}
