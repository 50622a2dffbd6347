//! `studio-worker run`: the studio session and everything it owns.
//!
//! ```text
//!  signals ─▶ shutdown watch ─┐
//!                             ▼
//!  reconnect loop ──▶ connection::run (one WebSocket) ── ExecRequest ──▶ executor task
//!        ▲ backoff 1 s → 30 s         ▲                                     │ runner pool
//!        └── SessionEnd ──────────────┘◀──────────── JobReport ─────────────┘ + uploads
//! ```
//!
//! The executor task owns the runner pool and runs one job at a time,
//! independent of the socket: a job survives a reconnect. Its report is
//! delivered by whichever session is live; JSON results and failures of a
//! job whose session is gone are kept on disk (the studio has already
//! released that claim).

mod connection;
mod executor;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail};
use tokio::sync::{mpsc, watch};

use crate::breakers::{Breakers, ModelKey, Trip};
use crate::capabilities::HostFacts;
use crate::config::Config;
use crate::deliver::UploadTarget;
use crate::jobs::table::JobTable;
use crate::jobs::Executor;
use crate::models::ModelCache;
use crate::runner::{Backoff, EngineCatalog, Limits, RunnerPool};

pub use connection::SessionEnd;
use executor::{ExecRequest, JobReport};

/// Base and cap of the reconnect backoff.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// State that outlives one connection; owned by the reconnect loop.
pub struct Worker {
    config_path: PathBuf,
    cfg: Config,
    host: HostFacts,
    catalog: EngineCatalog,
    exec_tx: mpsc::Sender<ExecRequest>,
    reports: mpsc::UnboundedReceiver<JobReport>,
    live_gen: watch::Sender<u64>,
    /// Generation of the current (or last) welcomed session.
    gen: u64,
    /// Held jobs: runner, epoch, phase, deadline. Non-empty = gate shut.
    jobs: JobTable,
    /// An offer that arrived during that upload, answered when it ends.
    deferred_offer: Option<serde_json::Value>,
    /// Quarantined models and the pause of all claiming after runner
    /// failures ([`Breakers`]).
    breakers: Breakers,
    shutdown: watch::Receiver<u32>,
}

impl Worker {
    fn paused(&self) -> bool {
        !self.cfg.auto_enabled || self.draining() || self.cooling_down()
    }

    fn cooling_down(&self) -> bool {
        self.breakers.paused(tokio::time::Instant::now()).is_some()
    }

    /// Why offers are declined `paused` during a failure cool-down: the
    /// models that failed and until when (`None` when not cooling down).
    fn cooldown_reason(&self) -> Option<String> {
        let until = self.breakers.paused(tokio::time::Instant::now())?;
        Some(format!(
            "worker paused after repeated engine failures across {} until {}",
            model_names(self.breakers.paused_by()),
            wall_clock(until)
        ))
    }

    /// Counts a job's end on `key` towards the breakers; true when all
    /// claiming just paused (the studio should hear it at once).
    fn note_job_end(&mut self, key: &ModelKey, worker_caused_failure: bool) -> bool {
        if !worker_caused_failure {
            self.breakers.success(key);
            return false;
        }
        let now = tokio::time::Instant::now();
        match self.breakers.failure(key, now) {
            Trip::None => false,
            Trip::Model((engine, model), until) => {
                tracing::error!(
                    target: "worker",
                    "model {model} ({engine}) took down its runner {} times in a row: declining its offers until {}; other models keep running",
                    self.cfg.max_consecutive_failures,
                    wall_clock(until)
                );
                false
            }
            Trip::All(models, until) => {
                tracing::error!(
                    target: "worker",
                    "{} runner failures in a row across {}: not claiming until {}; heartbeats say autoEnabled=false",
                    self.cfg.max_consecutive_failures,
                    model_names(&models),
                    wall_clock(until)
                );
                true
            }
        }
    }

    /// Until when offers for `key` are declined, if they are.
    fn quarantined(&self, key: &ModelKey) -> Option<tokio::time::Instant> {
        self.breakers.quarantined(key, tokio::time::Instant::now())
    }

    /// Ends finished quarantines and a finished pause (logged once).
    fn check_cooldown(&mut self) {
        let (models, pause) = self.breakers.expire(tokio::time::Instant::now());
        for (engine, model) in models {
            tracing::info!(target: "worker", "model {model} ({engine}) out of quarantine: taking its offers again");
        }
        if pause {
            tracing::info!(target: "worker", "failure cool-down over: claiming again");
        }
    }

    fn draining(&self) -> bool {
        *self.shutdown.borrow() > 0
    }

    /// Re-reads the config file (the operator may have run `disable` or
    /// `set-threshold`); a broken file keeps the last good config.
    fn reload_config(&mut self) {
        match Config::load(&self.config_path) {
            Ok(mut c) => {
                if c.auto_enabled != self.cfg.auto_enabled {
                    if c.auto_enabled {
                        tracing::info!(target: "worker", "claiming resumed by operator");
                    } else {
                        tracing::info!(target: "worker", "claiming paused by operator");
                    }
                }
                // Credentials in use stay as they are until reconnect.
                c.auth_token = self.cfg.auth_token.clone().or(c.auth_token);
                self.breakers.configure(
                    c.max_consecutive_failures,
                    Duration::from_secs(c.failure_cooldown_secs),
                );
                self.cfg = c;
            }
            Err(e) => tracing::warn!(target: "worker", "keeping the previous config: {e}"),
        }
    }
}

/// Where the runner binary is: config, else beside this executable.
pub fn runner_path(cfg: &Config) -> PathBuf {
    if let Some(p) = &cfg.engine_runner_path {
        return crate::config::expand_home(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("engine-runner")))
        .unwrap_or_else(|| PathBuf::from("engine-runner"))
}

/// Counts SIGTERM/SIGINT into `tx`; the second one exits at once (the
/// runners die with us through `PR_SET_PDEATHSIG`).
fn spawn_signal_watch(tx: watch::Sender<u32>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            let n = *tx.borrow() + 1;
            if n >= 2 {
                tracing::warn!(target: "worker", "second signal: exiting now");
                crate::runner::kill_all_groups();
                std::process::exit(130);
            }
            tracing::info!(target: "worker", "signal received: draining (no new offers), send again to exit at once");
            let _ = tx.send(n);
        }
    });
    Ok(())
}

/// Waits for credentials: registers with a stored bootstrap token, or runs
/// the approval flow (request, then poll every `registration_poll_secs`),
/// while re-reading the config every second (`register` may run beside us).
async fn wait_for_credentials(
    config_path: &Path,
    shutdown: &mut watch::Receiver<u32>,
) -> anyhow::Result<Config> {
    let mut next_step = tokio::time::Instant::now();
    loop {
        let cfg = Config::load(config_path)?;
        if cfg.has_credentials() {
            return Ok(cfg);
        }
        if tokio::time::Instant::now() >= next_step {
            let catalog = EngineCatalog::discover(&cfg);
            let poll = Duration::from_secs(cfg.registration_poll_secs.max(1));
            if let Some(token) = cfg.bootstrap_token.clone() {
                let base = cfg.api_base_url.clone();
                match crate::register::register(config_path, cfg, token, base, &catalog).await {
                    Ok(id) => tracing::info!(target: "worker", "registered as {id}"),
                    Err(e) => {
                        tracing::warn!(target: "worker", "registration with the stored bootstrap token failed: {e:#}")
                    }
                }
            } else {
                match crate::register::approval_step(config_path, cfg, &catalog).await? {
                    crate::register::Approval::Approved(id) => {
                        tracing::info!(target: "worker", "approved as {id}")
                    }
                    crate::register::Approval::Pending => {}
                    crate::register::Approval::Rejected(reason) => {
                        bail!("registration rejected by the operator: {reason}; run again to ask anew")
                    }
                }
            }
            next_step = tokio::time::Instant::now() + poll;
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => bail!("stopped before registration"),
        }
    }
}

/// The `run` command.
pub async fn run(config_path: PathBuf) -> anyhow::Result<()> {
    let (sig_tx, mut shutdown) = watch::channel(0u32);
    spawn_signal_watch(sig_tx)?;
    let cfg = wait_for_credentials(&config_path, &mut shutdown).await?;
    let host = HostFacts::probe();
    let catalog = EngineCatalog::discover(&cfg);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let (exec_tx, exec_rx) = mpsc::channel(4);
    let (report_tx, reports) = mpsc::unbounded_channel();
    let (live_gen, live_rx) = watch::channel(0u64);
    let target = UploadTarget {
        api_base_url: cfg.api_base_url.clone(),
        worker_id: cfg.worker_id.clone().unwrap_or_default(),
        auth_token: cfg.auth_token.clone().unwrap_or_default(),
    };
    let pool = RunnerPool::new(
        catalog.clone(),
        cfg.max_frame_bytes,
        Limits::from_config(&cfg),
        Backoff::from_config(&cfg),
    );
    let cache = ModelCache::new(
        cfg.models_root(),
        Duration::from_secs(cfg.stall_timeout_secs.max(1)),
    );
    let executor = Executor::new(pool, cache, http.clone(), false);
    let exec_task = tokio::spawn(executor::run(
        executor,
        exec_rx,
        report_tx,
        executor::Delivery {
            http,
            target,
            live_gen: live_rx,
            attempts: cfg.upload_attempts,
            results_dir: cfg.results_dir(),
            results_max_bytes: cfg.results_max_mb * 1024 * 1024,
        },
    ));
    let breakers = Breakers::new(
        cfg.max_consecutive_failures,
        Duration::from_secs(cfg.failure_cooldown_secs),
    );
    let mut worker = Worker {
        config_path: config_path.clone(),
        cfg,
        host,
        catalog,
        exec_tx,
        reports,
        live_gen,
        gen: 0,
        jobs: JobTable::default(),
        deferred_offer: None,
        breakers,
        shutdown,
    };
    let outcome = reconnect_loop(&mut worker).await;
    crate::state::record(
        &config_path,
        if outcome.is_ok() { "stopped" } else { "ended" },
        outcome.as_ref().err().map(|e| format!("{e:#}")),
    );
    // Closing the request channel stops an idle executor, which stops its
    // runners gracefully; one still busy (drain timed out) is aborted, and
    // dropping its pool kills the runner groups.
    let busy = !worker.jobs.is_empty();
    drop(worker);
    let abort = exec_task.abort_handle();
    let grace = if busy {
        Duration::ZERO
    } else {
        Duration::from_secs(5)
    };
    if tokio::time::timeout(grace, exec_task).await.is_err() {
        abort.abort();
    }
    outcome
}

async fn reconnect_loop(w: &mut Worker) -> anyhow::Result<()> {
    let mut attempt: u32 = 0;
    loop {
        crate::state::record(&w.config_path, "connecting", None);
        match connection::run(w).await {
            SessionEnd::Shutdown => {
                tracing::info!(target: "ws", "session closed for shutdown");
                return Ok(());
            }
            SessionEnd::AuthFailed(reason) => {
                crate::state::record(&w.config_path, "auth_failed", Some(reason.clone()));
                return Err(anyhow!(
                    "ws auth failed: {reason}; re-register with `studio-worker register`"
                ));
            }
            SessionEnd::Fatal(reason) => {
                crate::state::record(&w.config_path, "ended", Some(reason.clone()));
                return Err(anyhow!("session ended by the studio: {reason}"));
            }
            SessionEnd::Disconnected { welcomed, reason } => {
                crate::state::record(&w.config_path, "disconnected", Some(reason.clone()));
                if welcomed {
                    attempt = 0;
                }
                attempt += 1;
                let cap = w.cfg.ws_reconnect_attempts;
                if cap > 0 && attempt > cap {
                    return Err(anyhow!(
                        "ws reconnect cap reached ({cap} attempts): {reason}"
                    ));
                }
                let delay = BACKOFF_BASE
                    .saturating_mul(1 << (attempt - 1).min(5))
                    .min(BACKOFF_MAX);
                tracing::warn!(target: "ws", "disconnected: {reason}; reconnecting in {} ms (attempt {attempt})", delay.as_millis());
                if w.draining() && w.jobs.is_empty() {
                    return Ok(());
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = w.shutdown.changed() => {
                        if w.jobs.is_empty() {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }
}

/// `model (engine), …` for messages.
fn model_names(models: &[ModelKey]) -> String {
    models
        .iter()
        .map(|(engine, model)| format!("{model} ({engine})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A monotonic deadline as UTC wall-clock time (RFC 3339), for messages.
pub(crate) fn wall_clock(at: tokio::time::Instant) -> String {
    let left = at.saturating_duration_since(tokio::time::Instant::now());
    let t = time::OffsetDateTime::now_utc() + left;
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}
