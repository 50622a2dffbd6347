//! `studio-worker status` for a running worker: its snapshot as a few
//! aligned lines. Pure.

use std::fmt::Write as _;

use crate::scheduler::snapshot::Snapshot;

fn gb(bytes: u64) -> String {
    format!("{:.1} GB", bytes as f64 / 1e9)
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / 1048576.0)
}

fn secs(ms: u64) -> String {
    if ms >= 120_000 {
        format!("{} min", ms / 60_000)
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// How many recent failures the summary lists.
const FAILURES: usize = 3;

/// The summary.
pub fn summary(s: &Snapshot) -> String {
    let mut o = String::new();
    let mut line = |label: &str, text: String| {
        let label = format!("{label}:");
        let _ = writeln!(o, "{label:<14} {text}");
    };
    let mut flags = Vec::new();
    if s.control_paused {
        flags.push("paused (resume to take offers)");
    }
    if s.operator_paused {
        flags.push("disabled (auto_enabled = false)");
    }
    if s.draining {
        flags.push("draining");
    }
    let flags = if flags.is_empty() {
        String::new()
    } else {
        format!(", {}", flags.join(", "))
    };
    line(
        "worker",
        format!("running (pid {}, version {}){flags}", s.pid, s.version),
    );
    for x in &s.sessions {
        let gpu = x.gpu.map(|g| format!(" (gpu {g})")).unwrap_or_default();
        let detail = x
            .detail
            .as_deref()
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        let mut text = format!("{} since {}{detail}", x.state, x.since);
        if let Some(w) = &x.worker_id {
            let _ = write!(text, " as {w}");
        }
        if let Some(p) = &x.failure_pause {
            let _ = write!(text, "; cooling down until {}", p.until);
        }
        for q in &x.quarantines {
            let _ = write!(
                text,
                "; {} ({}) quarantined until {}",
                q.model, q.engine, q.until
            );
        }
        line(&format!("session {}{gpu}", x.slot), text);
    }
    if !s.engines.is_empty() {
        line("engines", s.engines.join(", "));
    }
    for (engine, why) in &s.unusable {
        line("not usable", format!("{engine}: {why}"));
    }
    if let Some(g) = &s.gradio {
        let mut text = if g.answers {
            format!("{} answers", g.url)
        } else {
            format!("{} does not answer", g.url)
        };
        if let Some(e) = &g.endpoint {
            let mapping: Vec<String> = g
                .mapping
                .iter()
                .map(|(field, param)| format!("{field}→{param}"))
                .collect();
            text.push_str(&format!("; image jobs call {e} ({})", mapping.join(", ")));
        }
        if !g.detail.is_empty() {
            text.push_str(&format!("; {}", g.detail));
        }
        line("gradio", text);
    }
    if s.jobs.is_empty() {
        line("job", "none".into());
    }
    for j in &s.jobs {
        let progress = if j.total > 0 {
            format!(" {}/{}", j.done, j.total)
        } else if j.done > 0 {
            format!(" {}", j.done)
        } else {
            String::new()
        };
        line(
            "job",
            format!(
                "{} {} on {} ({}): {}{progress}, {} since accepted",
                j.job_id,
                j.kind,
                j.engine,
                j.model,
                j.phase,
                secs(j.age_ms)
            ),
        );
    }
    if s.runners.is_empty() {
        line("models", "none loaded".into());
    }
    for r in &s.runners {
        let state = match &r.job_id {
            Some(j) => format!("busy with {j}"),
            None => format!("idle {}", secs(r.idle_ms)),
        };
        let pinned = if r.pinned { ", pinned" } else { "" };
        line(
            "model",
            format!(
                "{} on {} (pid {}, RSS {}, {state}{pinned})",
                r.model,
                r.engine,
                r.pid,
                mib(r.rss_bytes)
            ),
        );
    }
    for g in &s.gpus {
        line(
            &format!("gpu {}", g.index),
            format!(
                "{}: {} total, {} free, {} resident, {} reserved",
                g.name,
                gb(g.total_bytes),
                gb(g.free_bytes),
                gb(g.held_bytes),
                gb(g.reserved_bytes)
            ),
        );
    }
    let c = &s.counters;
    line(
        "jobs",
        format!(
            "{} completed, {} failed, {} rejected since start",
            c.completed, c.failed, c.rejected
        ),
    );
    for f in s
        .recent
        .iter()
        .rev()
        .filter(|f| f.outcome != "completed")
        .take(FAILURES)
    {
        line(
            "failed",
            format!(
                "{} ({}, {}) at {}: {}",
                f.job_id,
                f.kind,
                f.model,
                f.at,
                f.error.as_deref().unwrap_or(&f.outcome)
            ),
        );
    }
    if let Some(u) = &s.update {
        line("update", u.clone());
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::snapshot::{Finished, JobStatus, SessionStatus};

    #[test]
    fn the_summary_names_session_job_progress_and_failures() {
        let s = Snapshot {
            pid: 7,
            version: "0.3.0".into(),
            control_paused: true,
            sessions: vec![SessionStatus {
                slot: 0,
                state: "connected".into(),
                since: "2026-12-03T10:00:00.000Z".into(),
                ..Default::default()
            }],
            jobs: vec![JobStatus {
                job_id: "j1".into(),
                kind: "image".into(),
                engine: "sd-cpp".into(),
                model: "tiny".into(),
                phase: "running".into(),
                done: 3,
                total: 8,
                age_ms: 4200,
                ..Default::default()
            }],
            recent: vec![Finished {
                job_id: "j0".into(),
                kind: "llm".into(),
                model: "m".into(),
                outcome: "failed".into(),
                error: Some("runner crashed".into()),
                at: "2026-12-03T09:59:00.000Z".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = summary(&s);
        assert!(
            text.contains(
                "worker:        running (pid 7, version 0.3.0), paused (resume to take offers)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("session 0:     connected since 2026-12-03T10:00:00.000Z\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "job:           j1 image on sd-cpp (tiny): running 3/8, 4.2 s since accepted\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "failed:        j0 (llm, m) at 2026-12-03T09:59:00.000Z: runner crashed\n"
            ),
            "{text}"
        );
        assert!(text.contains("models:        none loaded\n"), "{text}");
    }
}
