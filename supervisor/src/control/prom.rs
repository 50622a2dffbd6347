//! The status snapshot as Prometheus text exposition (format 0.0.4):
//! every family with `# HELP` and `# TYPE`, `studio_worker_` names with
//! units, `_total` counters, histograms as `_bucket`/`_sum`/`_count`.
//! Pure: the same snapshot always renders the same text.

use std::fmt::Write as _;

use crate::scheduler::metrics::BUCKETS;
use crate::scheduler::snapshot::Snapshot;

/// What the snapshot does not hold: process-level facts.
pub struct Extra {
    /// Log lines dropped since start.
    pub log_lines_dropped: u64,
}

/// `name{labels} value` lines of one family.
struct Family {
    out: String,
}

impl Family {
    fn new(name: &str, kind: &str, help: &str) -> Self {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Self { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, String)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// A `gpu` label when there is a GPU.
fn gpu_label(labels: &mut Vec<(&'static str, String)>, gpu: Option<u32>) {
    if let Some(g) = gpu {
        labels.push(("gpu", g.to_string()));
    }
}

/// Renders `s` (and `extra`) as exposition text.
pub fn render(s: &Snapshot, extra: &Extra) -> String {
    let mut text = String::new();
    let m = &s.metrics;

    let mut f = Family::new(
        "studio_worker_build_info",
        "gauge",
        "The running studio-worker's version and target (always 1).",
    );
    f.sample(
        "studio_worker_build_info",
        &[
            ("version", s.version.clone()),
            ("target", env!("STUDIO_WORKER_TARGET").to_string()),
        ],
        1.0,
    );
    text.push_str(&f.out);

    let mut f = Family::new(
        "studio_worker_jobs_total",
        "counter",
        "Jobs that ended and offers rejected, by kind, engine, origin (studio, local, pinned), outcome (completed, failed, rejected) and reason (the error class of a failure, the code of a rejection).",
    );
    for j in &m.jobs {
        let mut l = vec![
            ("kind", j.kind.clone()),
            ("engine", j.engine.clone()),
            ("origin", j.origin.clone()),
            ("outcome", j.outcome.clone()),
            ("reason", j.reason.clone()),
        ];
        gpu_label(&mut l, j.gpu);
        f.sample("studio_worker_jobs_total", &l, j.count as f64);
    }
    text.push_str(&f.out);

    let mut f = Family::new(
        "studio_worker_jobs_in_progress",
        "gauge",
        "Jobs the worker holds now.",
    );
    f.sample("studio_worker_jobs_in_progress", &[], s.jobs.len() as f64);
    text.push_str(&f.out);

    let name = "studio_worker_job_phase_duration_seconds";
    let mut f = Family::new(
        name,
        "histogram",
        "Time jobs spent per phase: queue (accepted to work), download, load, run, upload; total is accept to end.",
    );
    for h in &m.durations {
        let mut base = vec![("kind", h.kind.clone()), ("phase", h.phase.clone())];
        gpu_label(&mut base, h.gpu);
        for (le, n) in BUCKETS.iter().zip(&h.buckets) {
            let mut l = base.clone();
            l.push(("le", number(*le)));
            f.sample(&format!("{name}_bucket"), &l, *n as f64);
        }
        let mut l = base.clone();
        l.push(("le", "+Inf".into()));
        f.sample(&format!("{name}_bucket"), &l, h.count as f64);
        f.sample(&format!("{name}_sum"), &base, h.sum_secs);
        f.sample(&format!("{name}_count"), &base, h.count as f64);
    }
    text.push_str(&f.out);

    for (name, help, list) in [
        (
            "studio_worker_model_loads_total",
            "Model loads reported by runners, by engine.",
            &m.loads,
        ),
        (
            "studio_worker_model_unloads_total",
            "Idle runners stopped after model_keep_alive_secs, by engine.",
            &m.unloads,
        ),
        (
            "studio_worker_model_evictions_total",
            "Idle runners stopped to make room for another model, by engine.",
            &m.evictions,
        ),
    ] {
        let mut f = Family::new(name, "counter", help);
        for c in list {
            f.sample(name, &[("engine", c.label.clone())], c.count as f64);
        }
        text.push_str(&f.out);
    }

    let name = "studio_worker_runner_restarts_total";
    let mut f = Family::new(
        name,
        "counter",
        "Runners that ended other than by the worker's own stop, by reason (crashed, oom, stalled, timeout, exited_idle, ...); each is replaced on the next job.",
    );
    for c in &m.runner_restarts {
        f.sample(name, &[("reason", c.label.clone())], c.count as f64);
    }
    text.push_str(&f.out);

    let name = "studio_worker_runners";
    let mut f = Family::new(name, "gauge", "Live engine runners (one per loaded model).");
    f.sample(name, &[], s.runners.len() as f64);
    text.push_str(&f.out);
    let name = "studio_worker_runner_resident_memory_bytes";
    let mut f = Family::new(name, "gauge", "Resident memory of each live runner.");
    for r in &s.runners {
        let mut l = vec![
            ("engine", r.engine.clone()),
            ("model", r.model.clone()),
            ("pid", r.pid.to_string()),
        ];
        gpu_label(&mut l, r.gpu);
        f.sample(name, &l, r.rss_bytes as f64);
    }
    text.push_str(&f.out);

    let gpu_threshold = |index: u32| {
        s.sessions
            .iter()
            .find(|x| x.gpu == Some(index))
            .or_else(|| s.sessions.first())
            .map(|x| x.threshold_gb * 1e9)
    };
    for (name, help, value) in [
        (
            "studio_worker_gpu_memory_total_bytes",
            "Memory of each GPU.",
            (|g: &crate::scheduler::snapshot::GpuStatus| Some(g.total_bytes as f64))
                as fn(&crate::scheduler::snapshot::GpuStatus) -> Option<f64>,
        ),
        (
            "studio_worker_gpu_memory_free_bytes",
            "Free memory of each GPU as last probed.",
            |g| Some(g.free_bytes as f64),
        ),
        (
            "studio_worker_gpu_memory_reserved_bytes",
            "GPU memory reserved by accepted jobs whose model is not resident yet.",
            |g| Some(g.reserved_bytes as f64),
        ),
        (
            "studio_worker_gpu_memory_resident_bytes",
            "GPU memory held by resident models.",
            |g| Some(g.held_bytes as f64),
        ),
    ] {
        let mut f = Family::new(name, "gauge", help);
        for g in &s.gpus {
            if let Some(v) = value(g) {
                f.sample(name, &[("gpu", g.index.to_string())], v);
            }
        }
        text.push_str(&f.out);
    }
    let name = "studio_worker_gpu_threshold_bytes";
    let mut f = Family::new(
        name,
        "gauge",
        "The largest VRAM estimate the worker takes on each GPU (vram_threshold_gb).",
    );
    for g in &s.gpus {
        if let Some(v) = gpu_threshold(g.index) {
            f.sample(name, &[("gpu", g.index.to_string())], v);
        }
    }
    text.push_str(&f.out);

    let per_session = |l: &crate::scheduler::snapshot::SessionStatus| {
        let mut v = vec![("slot", l.slot.to_string())];
        gpu_label(&mut v, l.gpu);
        v
    };
    let name = "studio_worker_session_up";
    let mut f = Family::new(name, "gauge", "1 while the studio session is connected.");
    for x in &s.sessions {
        let up = if x.state == "connected" { 1.0 } else { 0.0 };
        f.sample(name, &per_session(x), up);
    }
    text.push_str(&f.out);
    let name = "studio_worker_session_paused";
    let mut f = Family::new(
        name,
        "gauge",
        "1 while the session rejects offers as paused (operator, pause, drain or failure cool-down).",
    );
    for x in &s.sessions {
        f.sample(name, &per_session(x), if x.paused { 1.0 } else { 0.0 });
    }
    text.push_str(&f.out);
    let name = "studio_worker_session_connects_total";
    let mut f = Family::new(
        name,
        "counter",
        "Studio sessions opened (more than one: reconnects).",
    );
    for x in &s.sessions {
        let n = m
            .session_opens
            .iter()
            .find(|c| c.slot == x.slot)
            .map_or(0, |c| c.count);
        f.sample(name, &per_session(x), n as f64);
    }
    text.push_str(&f.out);
    let name = "studio_worker_heartbeat_age_seconds";
    let mut f = Family::new(
        name,
        "gauge",
        "Seconds since the last heartbeat to the studio.",
    );
    for x in &s.sessions {
        if let Some(ms) = x.heartbeat_age_ms {
            f.sample(name, &per_session(x), ms as f64 / 1000.0);
        }
    }
    text.push_str(&f.out);

    for (name, help, v) in [
        (
            "studio_worker_uploads_retried_total",
            "Upload attempts beyond the first.",
            m.uploads_retried,
        ),
        (
            "studio_worker_results_kept_total",
            "Results kept on disk because the studio could not take them.",
            m.results_kept,
        ),
        (
            "studio_worker_log_lines_dropped_total",
            "Log lines dropped because the queue to the studio was full.",
            extra.log_lines_dropped,
        ),
    ] {
        let mut f = Family::new(name, "counter", help);
        f.sample(name, &[], v as f64);
        text.push_str(&f.out);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::metrics::{JobEnd, Metrics};
    use crate::scheduler::snapshot::SessionStatus;

    #[test]
    fn families_are_typed_and_labels_escaped() {
        let mut m = Metrics::default();
        m.job(JobEnd {
            kind: "llm",
            engine: "llama-cpp",
            origin: "studio",
            outcome: "failed",
            reason: "crashed",
            gpu: Some(1),
        });
        m.observe("llm", "run", Some(1), std::time::Duration::from_millis(700));
        let s = Snapshot {
            version: "1.2.3".into(),
            sessions: vec![SessionStatus {
                slot: 0,
                gpu: Some(1),
                state: "connected".into(),
                ..Default::default()
            }],
            runners: vec![crate::scheduler::snapshot::RunnerStatus {
                engine: "llama-cpp".into(),
                model: "a \"quoted\"\\model".into(),
                rss_bytes: 42,
                ..Default::default()
            }],
            metrics: m,
            ..Default::default()
        };
        let text = render(
            &s,
            &Extra {
                log_lines_dropped: 3,
            },
        );
        assert!(text.contains("# TYPE studio_worker_jobs_total counter\n"));
        assert!(text.contains(
            "studio_worker_jobs_total{kind=\"llm\",engine=\"llama-cpp\",origin=\"studio\",outcome=\"failed\",reason=\"crashed\",gpu=\"1\"} 1\n"
        ));
        assert!(text.contains(
            "studio_worker_job_phase_duration_seconds_bucket{kind=\"llm\",phase=\"run\",gpu=\"1\",le=\"0.5\"} 0\n"
        ));
        assert!(text.contains(
            "studio_worker_job_phase_duration_seconds_bucket{kind=\"llm\",phase=\"run\",gpu=\"1\",le=\"1\"} 1\n"
        ));
        assert!(text.contains(
            "studio_worker_job_phase_duration_seconds_bucket{kind=\"llm\",phase=\"run\",gpu=\"1\",le=\"+Inf\"} 1\n"
        ));
        assert!(
            text.contains("model=\"a \\\"quoted\\\"\\\\model\""),
            "{text}"
        );
        assert!(text.contains("studio_worker_session_up{slot=\"0\",gpu=\"1\"} 1\n"));
        assert!(text.contains("studio_worker_log_lines_dropped_total 3\n"));
        assert!(text.contains("studio_worker_build_info{version=\"1.2.3\",target=\""));
    }
}
