//! Admission: what the scheduler answers an offer, in the order the rules
//! apply. Pure reading of the scheduler's state; the caller acts on it.
//!
//! ```text
//! no jobId ─────────────────────────────▶ ignore (nobody to answer)
//! paused / draining / cooling down ─────▶ reject `paused`
//! model quarantined ────────────────────▶ reject, no code, naming it and until when
//! estimate above vram_threshold_gb ─────▶ reject, no code, naming both
//! switching to a new version ─────────────▶ reject `busy`
//! the slot's GPU is busy ───────────────▶ reject `busy` (an upload does not hold it)
//! broken claim that names its jobId ────▶ accept, then fail (not retryable, naming the field)
//! GPU memory (ledger::Fit) ─────────────┬─ fits, or fits after stopping idle runners: accept
//!                                       ├─ not now: reject `busy`, needed vs free
//!                                       └─ never beside the pinned models: reject, no code
//! otherwise ────────────────────────────▶ accept
//! ```

use studio_protocol::studio::{ClaimError, Engine, JobOfferClaim, RejectCode};

use super::ledger::{bytes_of, gb, Fit};
use super::runners::RunnerKey;
use super::{wall_clock, Scheduler};

/// The answer to one offer.
pub enum Decision {
    /// Say nothing.
    Ignore,
    /// Decline.
    Reject {
        job_id: String,
        reason: String,
        code: Option<RejectCode>,
    },
    /// Accept a claim that cannot run, and fail it.
    Broken { job_id: String, error: String },
    /// Accept and run, after stopping the idle runners `evict` (pids).
    Accept {
        claim: Box<JobOfferClaim>,
        evict: Vec<u32>,
    },
}

/// Decides the offer `raw` on `slot`.
pub fn decide(s: &Scheduler, slot: usize, raw: &serde_json::Value) -> Decision {
    let parsed = JobOfferClaim::from_value(raw);
    let job_id = match &parsed {
        Ok(c) => c.job_id.clone(),
        Err(ClaimError::Invalid { job_id, .. }) => job_id.clone(),
        Err(e @ ClaimError::NoJobId(_)) => {
            tracing::warn!(target: "ws", "ignoring an offer nobody can answer: {e}");
            return Decision::Ignore;
        }
    };
    if let Ok(c) = &parsed {
        tracing::info!(target: "ws", job_id = %job_id, "offer {job_id}: game {}, asset {}, model {}, {} GB", c.game_id, c.asset_name, c.model, c.vram_gb_estimate);
    }
    // The threshold answers what the studio asked, before any rerouting.
    let asked_gb = parsed.as_ref().map_or(0.0, |c| c.vram_gb_estimate);
    let parsed = parsed.map(|c| to_gradio(&s.cfg, c));
    let reject = |reason: String, code| Decision::Reject {
        job_id: job_id.clone(),
        reason,
        code,
    };
    if s.paused(slot) {
        let reason = if s.draining() {
            "worker is shutting down".to_string()
        } else if let Some(why) = s.cooldown_reason(slot) {
            why
        } else {
            "worker paused by operator".to_string()
        };
        return reject(reason, Some(RejectCode::Paused));
    }
    if let Ok(c) = &parsed {
        let key = (c.model_source.engine.as_str().to_string(), c.model.clone());
        let now = tokio::time::Instant::now();
        if let Some(until) = s.breakers.get(slot).and_then(|b| b.quarantined(&key, now)) {
            let reason = format!(
                "model {} ({}) is quarantined until {}: it took down its runner {} times in a row",
                c.model,
                key.0,
                wall_clock(until),
                s.cfg.max_consecutive_failures
            );
            return reject(reason, None);
        }
    }
    if parsed.is_ok() {
        let threshold = s.threshold(slot);
        if asked_gb > threshold {
            let reason = format!(
                "job needs {asked_gb} GB of GPU memory (vramGbEstimate) but this worker takes jobs up to {threshold} GB (vram_threshold_gb)"
            );
            return reject(reason, None);
        }
    }
    if s.updating() {
        return reject(
            "worker is switching to a new version".into(),
            Some(RejectCode::Busy),
        );
    }
    if s.jobs.busy(slot) {
        return reject(
            "worker already has an in-flight job".into(),
            Some(RejectCode::Busy),
        );
    }
    let claim = match parsed {
        Ok(c) => c,
        Err(e) => {
            return Decision::Broken {
                job_id,
                error: e.to_string(),
            }
        }
    };
    let key = RunnerKey::for_claim(s.slot_gpu(slot), &claim);
    let need = bytes_of(claim.vram_gb_estimate);
    match s.ledger.fit(&key, need, &s.runners) {
        Fit::Fits => Decision::Accept {
            claim: Box::new(claim),
            evict: Vec::new(),
        },
        Fit::AfterEvicting(evict) => Decision::Accept {
            claim: Box::new(claim),
            evict,
        },
        Fit::Busy { need, free } => reject(
            format!(
                "not enough GPU memory on GPU {} now: the job needs {}, {} is free",
                key.gpu.unwrap_or(0),
                gb(need),
                gb(free)
            ),
            Some(RejectCode::Busy),
        ),
        Fit::Never { need, room } => reject(
            format!(
                "the job needs {} of GPU memory but GPU {} can never give more than {} beside its pinned models and the {} GB margin",
                gb(need),
                key.gpu.unwrap_or(0),
                gb(room),
                s.cfg.vram_margin_gb
            ),
            None,
        ),
    }
}

/// With `engine = "gradio"` in the config, an image offer goes to the
/// Gradio app whatever its `modelSource` says: no model files to fetch,
/// and nothing reserved in the GPU ledger (the app's memory is the app's,
/// and the probe already counts it as taken).
pub fn to_gradio(cfg: &crate::config::Config, mut claim: JobOfferClaim) -> JobOfferClaim {
    if cfg.routes_images_to_gradio()
        && claim.task.kind() == studio_protocol::studio::TaskKind::Image
        && claim.model_source.engine != Engine::Gradio
    {
        tracing::info!(target: "job", job_id = %claim.job_id, "job {}: engine = \"gradio\" sends this image job to the Gradio app instead of {}", claim.job_id, claim.model_source.engine);
        claim.model_source.engine = Engine::Gradio;
        claim.model_source.files.clear();
    }
    if claim.model_source.engine == Engine::Gradio {
        claim.vram_gb_estimate = 0.0;
    }
    claim
}
