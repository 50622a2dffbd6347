//! Residency: one runner process per loaded model. A runner is keyed by
//! its GPU, engine and the model's files; a job for a resident model goes
//! to its runner, and unloading a model is stopping its runner, so the
//! memory really returns. Idle runners stop after `model_keep_alive_secs`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use studio_protocol::runner::ErrorClass;
use studio_protocol::studio::JobOfferClaim;
use tokio::time::Instant;

use crate::runner::{Backoff, ChildFailure, EngineCatalog, RunnerChild};

/// What makes two jobs share a runner: the GPU, the engine and the model's
/// files (name and SHA-256, or URL when unpinned); the model id for a
/// model without files (the synthetic engine, a runner's default model).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunnerKey {
    /// GPU index (`None`: no GPU).
    pub gpu: Option<u32>,
    /// Engine wire name.
    pub engine: String,
    /// The model's identity.
    pub files: String,
}

impl RunnerKey {
    /// The key of `claim`'s model on `gpu`.
    pub fn for_claim(gpu: Option<u32>, claim: &JobOfferClaim) -> Self {
        let files = if claim.model_source.engine == studio_protocol::studio::Engine::Gradio {
            // One app serves every model id the studio sends it.
            "app".to_string()
        } else if claim.model_source.files.is_empty() {
            claim.model.clone()
        } else {
            let mut parts: Vec<String> = claim
                .model_source
                .files
                .iter()
                .map(|f| {
                    let id = f.sha256.as_deref().unwrap_or(f.url.as_str());
                    format!("{:?}={}:{id}", f.role, f.filename)
                })
                .collect();
            parts.sort();
            parts.join(",")
        };
        Self {
            gpu,
            engine: claim.model_source.engine.as_str().to_string(),
            files,
        }
    }
}

/// How long an idle runner lives (`model_keep_alive_secs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// Stopped after every job.
    None,
    /// Stopped after this long idle.
    For(Duration),
    /// Never stopped for idleness.
    Forever,
}

/// A live runner and the model it holds.
pub struct Resident {
    /// Its key.
    pub key: RunnerKey,
    /// Registry model id of the job that loaded it.
    pub model: String,
    /// Process id.
    pub pid: u32,
    /// Epoch it was started with.
    pub epoch: u64,
    /// The child while idle; `None` while a job has it.
    child: Option<Box<RunnerChild>>,
    /// The job that has it.
    pub job: Option<String>,
    /// Loads reported (a runner loads its model once).
    pub loads: u64,
    /// Host memory its load took (reported).
    pub host_bytes: u64,
    /// Accelerator memory its load took, when reported.
    pub device_bytes: Option<u64>,
    /// The `vramGbEstimate` of the job that loaded it.
    pub estimate_gb: f64,
    /// When it last finished a job.
    pub last_used: Instant,
    /// Never stopped for idleness or room.
    pub pinned: bool,
}

/// A runner for a job: one that is resident, or how to start one.
pub enum Lease {
    /// The resident runner for the job's model.
    Ready(Box<RunnerChild>),
    /// Start a runner (after `delay`, the restart backoff).
    Spawn(SpawnPlan),
}

impl Resident {
    /// Device bytes it holds: as reported, else its job's estimate.
    pub fn held(&self) -> u64 {
        self.device_bytes
            .unwrap_or_else(|| super::ledger::bytes_of(self.estimate_gb))
    }
}

/// How to start a runner.
pub struct SpawnPlan {
    program: PathBuf,
    args: Vec<String>,
    engine: String,
    epoch: u64,
    delay: Duration,
    max_frame: usize,
    memory_limit: Option<u64>,
    env: Vec<(String, String)>,
}

impl SpawnPlan {
    /// Waits out the restart backoff, then spawns and handshakes.
    pub async fn spawn(self, job_id: &str) -> Result<Box<RunnerChild>, ChildFailure> {
        if !self.delay.is_zero() {
            tracing::info!(target: "engine", job_id = %job_id, "restarting runner {} in {} ms", self.engine, self.delay.as_millis());
            tokio::time::sleep(self.delay).await;
        }
        RunnerChild::spawn(
            &self.program,
            &self.args,
            &self.engine,
            self.epoch,
            self.max_frame,
            self.memory_limit,
            &self.env,
        )
        .await
        .map(Box::new)
    }
}

/// Every runner this worker holds.
pub struct Runners {
    catalog: EngineCatalog,
    max_frame: usize,
    memory_limit: Option<u64>,
    residents: Vec<Resident>,
    /// Runners started per engine (a runner's epoch).
    epochs: BTreeMap<String, u64>,
    /// Restart backoff per key: a model that keeps killing its runner
    /// slows only its own restarts.
    backoff: BTreeMap<RunnerKey, Backoff>,
    backoff_template: Backoff,
    keep_alive: KeepAlive,
    /// Models kept loaded whatever happens.
    pinned: std::collections::BTreeSet<RunnerKey>,
}

impl Runners {
    /// No runners yet; they start on first use.
    pub fn new(
        catalog: EngineCatalog,
        max_frame: usize,
        memory_limit: Option<u64>,
        restart: Backoff,
        keep_alive: KeepAlive,
    ) -> Self {
        Self {
            catalog,
            max_frame,
            memory_limit,
            residents: Vec::new(),
            epochs: BTreeMap::new(),
            backoff: BTreeMap::new(),
            backoff_template: restart,
            keep_alive,
            pinned: Default::default(),
        }
    }

    /// The catalog.
    pub fn catalog(&self) -> &EngineCatalog {
        &self.catalog
    }

    /// Keeps `key`'s runner whatever keep-alive and eviction would say.
    pub fn pin(&mut self, key: RunnerKey) {
        for r in self.residents.iter_mut().filter(|r| r.key == key) {
            r.pinned = true;
        }
        self.pinned.insert(key);
    }

    /// Applies a changed keep-alive.
    pub fn set_keep_alive(&mut self, keep_alive: KeepAlive) {
        self.keep_alive = keep_alive;
    }

    /// Live runners.
    pub fn residents(&self) -> &[Resident] {
        &self.residents
    }

    /// A runner for `job_id` on `key`: the resident one when idle, else a
    /// plan to start one with `env` added (its GPU pinning).
    pub fn lease(
        &mut self,
        key: &RunnerKey,
        job_id: &str,
        env: Vec<(String, String)>,
    ) -> Result<Lease, ChildFailure> {
        if let Some(r) = self.residents.iter_mut().find(|r| &r.key == key) {
            if let Some(child) = r.child.take() {
                r.job = Some(job_id.to_string());
                return Ok(Lease::Ready(child));
            }
            return Err(ChildFailure::new(
                ErrorClass::Engine,
                format!(
                    "the runner for this model is busy with job {}",
                    r.job.as_deref().unwrap_or("?")
                ),
                false,
            ));
        }
        let Some(cmd) = self.catalog.command(&key.engine) else {
            return Err(ChildFailure::new(
                ErrorClass::EngineUnavailable,
                format!("engine `{}` is not available", key.engine),
                false,
            ));
        };
        let epoch = self.epochs.entry(key.engine.clone()).or_insert(0);
        *epoch += 1;
        let delay = self
            .backoff
            .entry(key.clone())
            .or_insert_with(|| self.backoff_template.clone())
            .delay();
        Ok(Lease::Spawn(SpawnPlan {
            program: cmd.program.clone(),
            args: cmd.args.to_vec(),
            engine: key.engine.clone(),
            epoch: *epoch,
            delay,
            max_frame: self.max_frame,
            memory_limit: self.memory_limit,
            env: cmd.env.iter().cloned().chain(env).collect(),
        }))
    }

    /// Forgets idle runners that exited while nobody watched (killed from
    /// outside): the next job for their model starts a fresh one instead
    /// of failing on a dead pipe. Returns how many.
    pub fn reap_idle(&mut self) -> usize {
        let before = self.residents.len();
        let backoff = &mut self.backoff;
        let template = &self.backoff_template;
        self.residents.retain_mut(|r| {
            let Some(child) = r.child.as_mut() else {
                return true;
            };
            let Some(how) = child.exited() else {
                return true;
            };
            tracing::warn!(target: "engine", "idle runner {} for {} (pid {}, epoch {}) {how}; the next job for it starts a fresh one", r.key.engine, r.model, r.pid, r.epoch);
            backoff
                .entry(r.key.clone())
                .or_insert_with(|| template.clone())
                .on_death();
            false
        });
        before - self.residents.len()
    }

    /// True when `key`'s model has a runner.
    pub fn is_resident(&self, key: &RunnerKey) -> bool {
        self.residents.iter().any(|r| &r.key == key)
    }

    /// Bytes held on `gpu` by resident models.
    pub fn held_on(&self, gpu: u32) -> u64 {
        self.on(gpu).map(Resident::held).sum()
    }

    /// Bytes held on `gpu` by pinned models.
    pub fn pinned_on(&self, gpu: u32) -> u64 {
        self.on(gpu).filter(|r| r.pinned).map(Resident::held).sum()
    }

    /// Idle, unpinned runners on `gpu` with what they hold, least recently
    /// used first: what may be stopped to make room.
    pub fn evictable_on(&self, gpu: u32) -> Vec<(u32, u64)> {
        let mut v: Vec<&Resident> = self
            .on(gpu)
            .filter(|r| !r.pinned && r.child.is_some())
            .collect();
        v.sort_by_key(|r| r.last_used);
        v.into_iter().map(|r| (r.pid, r.held())).collect()
    }

    fn on(&self, gpu: u32) -> impl Iterator<Item = &Resident> {
        self.residents
            .iter()
            .filter(move |r| r.key.gpu == Some(gpu))
    }

    /// Takes the idle runner `pid` out to be stopped (eviction).
    pub fn evict(&mut self, pid: u32) -> Option<(Resident, Box<RunnerChild>)> {
        let i = self
            .residents
            .iter()
            .position(|r| r.pid == pid && r.child.is_some())?;
        let mut r = self.residents.remove(i);
        let child = r.child.take()?;
        Some((r, child))
    }

    /// A job started on runner `pid`: registers it when it is new.
    pub fn started(
        &mut self,
        key: &RunnerKey,
        job_id: &str,
        pid: u32,
        epoch: u64,
        model: &str,
        estimate_gb: f64,
    ) {
        if self.residents.iter().any(|r| r.pid == pid) {
            return;
        }
        self.residents.push(Resident {
            key: key.clone(),
            model: model.to_string(),
            pid,
            epoch,
            child: None,
            job: Some(job_id.to_string()),
            loads: 0,
            host_bytes: 0,
            device_bytes: None,
            estimate_gb,
            last_used: Instant::now(),
            pinned: self.pinned.contains(key),
        });
    }

    /// Runner `pid` loaded a model.
    pub fn loaded(&mut self, pid: u32, host_bytes: u64, device_bytes: Option<u64>) {
        if let Some(r) = self.residents.iter_mut().find(|r| r.pid == pid) {
            r.loads += 1;
            r.host_bytes = host_bytes;
            r.device_bytes = device_bytes;
        }
    }

    /// A job on `key` ended; `child` is its runner when still alive, and
    /// `healthy` says whether the runner did its work (resets the restart
    /// backoff). Returns a runner to stop (keep-alive 0).
    pub fn returned(
        &mut self,
        key: &RunnerKey,
        child: Option<Box<RunnerChild>>,
        healthy: bool,
    ) -> Option<Box<RunnerChild>> {
        let backoff = self
            .backoff
            .entry(key.clone())
            .or_insert_with(|| self.backoff_template.clone());
        let Some(child) = child else {
            backoff.on_death();
            self.residents.retain(|r| &r.key != key);
            return None;
        };
        if healthy {
            backoff.on_success();
        }
        let pinned = self.residents.iter().any(|r| &r.key == key && r.pinned);
        if self.keep_alive == KeepAlive::None && !pinned {
            self.residents.retain(|r| &r.key != key);
            return Some(child);
        }
        match self.residents.iter_mut().find(|r| &r.key == key) {
            Some(r) => {
                r.child = Some(child);
                r.job = None;
                r.last_used = Instant::now();
                None
            }
            // A runner the table never saw start (it cannot be told apart
            // from a stranger): stop it rather than keep it unaccounted.
            None => Some(child),
        }
    }

    /// Idle runners past their keep-alive, taken out to be stopped.
    pub fn expired(&mut self, now: Instant) -> Vec<(Resident, Box<RunnerChild>)> {
        let KeepAlive::For(ttl) = self.keep_alive else {
            return Vec::new();
        };
        self.take_where(|r| {
            !r.pinned && r.child.is_some() && now.duration_since(r.last_used) >= ttl
        })
    }

    /// Every idle runner, taken out to be stopped (shutdown).
    pub fn take_idle(&mut self) -> Vec<(Resident, Box<RunnerChild>)> {
        self.take_where(|r| r.child.is_some())
    }

    fn take_where(
        &mut self,
        pick: impl Fn(&Resident) -> bool,
    ) -> Vec<(Resident, Box<RunnerChild>)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.residents.len() {
            if pick(&self.residents[i]) {
                let mut r = self.residents.remove(i);
                if let Some(child) = r.child.take() {
                    out.push((r, child));
                }
            } else {
                i += 1;
            }
        }
        out
    }
}
