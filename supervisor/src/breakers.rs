//! Breakers scoped to what fails.
//!
//! A model that keeps killing its runner (crash, OOM, hang, timeout) is
//! quarantined: its offers are declined for the cool-down while every
//! other model and engine keeps serving. Claiming pauses as a whole only
//! when worker-caused failures come in a row across several models or
//! engines, which points at the machine (a sick GPU, a broken driver)
//! rather than at one model.
//!
//! ```text
//! failure(engine, model) ─┬─ that model's run reaches the limit ─▶ quarantine it until now + cool-down
//!                         └─ the run across all models reaches the limit
//!                            and spans ≥ 2 models ─────────────────▶ pause all claiming until now + cool-down
//! success(engine, model) ──▶ both runs reset (that model's, and the one across models)
//! ```
//!
//! The scheduler keeps one set per GPU session, so "the machine" here is
//! that GPU. Time is passed in, so the rules are tested without waiting.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

/// What a job ran: its engine and registry model id.
pub type ModelKey = (String, String);

/// What a failure tripped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trip {
    /// Nothing.
    None,
    /// This model is quarantined until the instant.
    Model(ModelKey, Instant),
    /// All claiming pauses until the instant; the models that failed.
    All(Vec<ModelKey>, Instant),
}

/// The breakers of one worker.
#[derive(Debug)]
pub struct Breakers {
    limit: u32,
    cooldown: Duration,
    /// Worker-caused failures in a row, per model.
    per_model: BTreeMap<ModelKey, u32>,
    /// The current run of worker-caused failures across models.
    run: Vec<ModelKey>,
    quarantined: BTreeMap<ModelKey, Instant>,
    paused_until: Option<Instant>,
    /// The models whose failures caused the pause.
    paused_by: Vec<ModelKey>,
}

impl Breakers {
    /// Breakers that trip after `limit` failures in a row (0: never) and
    /// hold for `cooldown`.
    pub fn new(limit: u32, cooldown: Duration) -> Self {
        Self {
            limit,
            cooldown,
            per_model: BTreeMap::new(),
            run: Vec::new(),
            quarantined: BTreeMap::new(),
            paused_until: None,
            paused_by: Vec::new(),
        }
    }

    /// Takes new settings (the config is re-read live); running
    /// quarantines and pauses keep their end.
    pub fn configure(&mut self, limit: u32, cooldown: Duration) {
        self.limit = limit;
        self.cooldown = cooldown;
    }

    /// A job on `key` ended without a worker-caused failure.
    pub fn success(&mut self, key: &ModelKey) {
        self.per_model.remove(key);
        self.run.clear();
    }

    /// A job on `key` failed because its runner died or got stuck.
    pub fn failure(&mut self, key: &ModelKey, now: Instant) -> Trip {
        if self.limit == 0 {
            return Trip::None;
        }
        let count = self.per_model.entry(key.clone()).or_insert(0);
        *count += 1;
        let model_tripped = *count >= self.limit;
        self.run.push(key.clone());
        // The models of the run, in the order they failed.
        let mut models: Vec<ModelKey> = Vec::new();
        for k in &self.run {
            if !models.contains(k) {
                models.push(k.clone());
            }
        }
        if self.run.len() as u32 >= self.limit && models.len() >= 2 {
            let until = now + self.cooldown;
            self.paused_until = Some(until);
            self.paused_by = models.clone();
            self.run.clear();
            self.per_model.clear();
            return Trip::All(models, until);
        }
        if model_tripped {
            let until = now + self.cooldown;
            self.per_model.remove(key);
            // This model's failures say nothing more about the machine.
            self.run.retain(|k| k != key);
            self.quarantined.insert(key.clone(), until);
            return Trip::Model(key.clone(), until);
        }
        Trip::None
    }

    /// Until when `key` is quarantined, if it is at `now`.
    pub fn quarantined(&self, key: &ModelKey, now: Instant) -> Option<Instant> {
        self.quarantined.get(key).copied().filter(|t| now < *t)
    }

    /// Every model quarantined at `now`, with its end.
    pub fn quarantines(&self, now: Instant) -> Vec<(ModelKey, Instant)> {
        self.quarantined
            .iter()
            .filter(|(_, t)| now < **t)
            .map(|(k, t)| (k.clone(), *t))
            .collect()
    }

    /// Until when all claiming is paused, if it is at `now`.
    pub fn paused(&self, now: Instant) -> Option<Instant> {
        self.paused_until.filter(|t| now < *t)
    }

    /// The models whose failures in a row caused the pause.
    pub fn paused_by(&self) -> &[ModelKey] {
        &self.paused_by
    }

    /// Forgets quarantines and the pause that ended by `now`; returns what
    /// ended, for the log.
    pub fn expire(&mut self, now: Instant) -> (Vec<ModelKey>, bool) {
        let mut ended = Vec::new();
        self.quarantined.retain(|k, t| {
            let live = now < *t;
            if !live {
                ended.push(k.clone());
            }
            live
        });
        let pause_ended = self.paused_until.is_some_and(|t| now >= t);
        if pause_ended {
            self.paused_until = None;
            self.paused_by.clear();
        }
        (ended, pause_ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(model: &str) -> ModelKey {
        ("synthetic".into(), model.into())
    }

    const COOL: Duration = Duration::from_secs(300);

    #[test]
    fn one_poison_model_is_quarantined_and_nothing_else_pauses() {
        let mut b = Breakers::new(5, COOL);
        let t0 = Instant::now();
        for i in 0..4 {
            assert_eq!(b.failure(&key("poison"), t0), Trip::None, "failure {i}");
        }
        assert_eq!(
            b.failure(&key("poison"), t0),
            Trip::Model(key("poison"), t0 + COOL)
        );
        assert_eq!(b.quarantined(&key("poison"), t0), Some(t0 + COOL));
        assert_eq!(b.quarantined(&key("healthy"), t0), None);
        assert_eq!(b.paused(t0), None, "one model never pauses the worker");
        // Thirty more (offers the studio still makes elsewhere) change nothing.
        for _ in 0..30 {
            assert!(!matches!(b.failure(&key("poison"), t0), Trip::All(..)));
        }
        assert_eq!(b.paused(t0), None);
        // After the cool-down it may run again.
        let later = t0 + COOL;
        assert_eq!(b.quarantined(&key("poison"), later), None);
        assert_eq!(b.expire(later).0, vec![key("poison")]);
    }

    #[test]
    fn failures_across_models_in_a_row_pause_everything() {
        let mut b = Breakers::new(3, COOL);
        let t0 = Instant::now();
        assert_eq!(b.failure(&key("c"), t0), Trip::None);
        assert_eq!(b.failure(&key("a"), t0), Trip::None);
        match b.failure(&key("b"), t0) {
            Trip::All(models, until) => {
                assert_eq!(
                    models,
                    [key("c"), key("a"), key("b")],
                    "in the order they failed"
                );
                assert_eq!(until, t0 + COOL);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(b.paused(t0), Some(t0 + COOL));
        assert_eq!(b.paused_by(), [key("c"), key("a"), key("b")]);
        assert_eq!(b.expire(t0 + COOL), (vec![], true));
        assert!(b.paused_by().is_empty());
        assert_eq!(b.paused(t0 + COOL), None);
    }

    #[test]
    fn a_success_breaks_the_runs() {
        let mut b = Breakers::new(3, COOL);
        let t0 = Instant::now();
        b.failure(&key("a"), t0);
        b.failure(&key("b"), t0);
        b.success(&key("c"));
        assert_eq!(
            b.failure(&key("a"), t0),
            Trip::None,
            "the run across models restarted"
        );
        b.success(&key("a"));
        b.failure(&key("a"), t0);
        assert_eq!(
            b.failure(&key("a"), t0),
            Trip::None,
            "a's own run restarted"
        );
    }

    #[test]
    fn a_limit_of_zero_never_trips() {
        let mut b = Breakers::new(0, COOL);
        let t0 = Instant::now();
        for m in ["a", "b", "a", "c", "a", "a", "a"] {
            assert_eq!(b.failure(&key(m), t0), Trip::None);
        }
        assert_eq!((b.paused(t0), b.quarantined(&key("a"), t0)), (None, None));
    }
}
