//! `studio-worker run`: the studio session, the scheduler behind it, and
//! the process around them.
//!
//! ```text
//!  signals ─▶ Shutdown ─────────────────────────────┐
//!  config watcher (1 s) ─▶ ConfigChanged ──────────▶ scheduler task (jobs, runners, breakers, status)
//!  reconnect loop ──▶ connection::run (one WebSocket) ─ Offer ─┘   │
//!        ▲ backoff 1 s → 30 s         ▲◀────── outbox (accept, reject, results, heartbeats, close)
//!        └── SessionEnd ──────────────┘
//! ```
//!
//! Jobs live in the scheduler, independent of the socket: a job survives a
//! reconnect. Its result is delivered by the session that accepted it;
//! JSON results and failures of a job whose session is gone are kept on
//! disk (the studio has already released that claim).

mod connection;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail};
use studio_protocol::Secret;
use tokio::sync::watch;

use crate::capabilities::HostFacts;
use crate::config::Config;
use crate::deliver::UploadTarget;
use crate::runner::EngineCatalog;
use crate::scheduler::{self, Event, Handle, Life, Setup, SlotSetup};

pub use connection::SessionEnd;

/// Base and cap of the reconnect backoff.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often the config file is re-read (`disable`, `set-threshold`).
const CONFIG_POLL: Duration = Duration::from_secs(1);

/// One studio identity's session, owned by its reconnect loop.
pub struct Session {
    slot: usize,
    config_path: PathBuf,
    api_base_url: String,
    worker_id: String,
    auth_token: Secret,
    reconnect_attempts: u32,
    handle: Handle,
    life: watch::Receiver<Life>,
    /// Generation of the current (or last) welcomed session.
    gen: u64,
}

impl Session {
    /// Records a state change for `status` (state.json and the snapshot).
    fn record(&self, state: &str, detail: Option<String>) {
        crate::state::record(&self.config_path, state, detail.clone());
        self.handle.send(Event::SessionState {
            slot: self.slot,
            state: state.into(),
            detail,
        });
    }

    fn finished(&self) -> bool {
        self.life.borrow().finished
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
    let gpus = crate::gpu::probe();
    let host = HostFacts::with_gpus(&gpus);
    let catalog = EngineCatalog::discover(&cfg);
    let worker_id = cfg.worker_id.clone().unwrap_or_default();
    let auth_token = cfg.auth_token.clone().unwrap_or_default();
    // One session: the largest GPU (the one `vramTotalGb` advertises).
    let slot = SlotSetup {
        gpu: largest_gpu(&gpus),
        target: Some(UploadTarget {
            api_base_url: cfg.api_base_url.clone(),
            worker_id: worker_id.clone(),
            auth_token: auth_token.clone(),
        }),
    };
    let (handle, life, task) = scheduler::start(Setup {
        status_path: Some(crate::state::status_path_for(&config_path)),
        host,
        catalog,
        slots: vec![slot],
        gpus,
        cfg: cfg.clone(),
    });
    spawn_config_watch(config_path.clone(), cfg.clone(), handle.clone());
    {
        let handle = handle.clone();
        tokio::spawn(async move {
            if shutdown.changed().await.is_ok() {
                handle.send(Event::Shutdown);
            }
        });
    }
    let mut session = Session {
        slot: 0,
        config_path: config_path.clone(),
        api_base_url: cfg.api_base_url.clone(),
        worker_id,
        auth_token,
        reconnect_attempts: cfg.ws_reconnect_attempts,
        handle: handle.clone(),
        life,
        gen: 0,
    };
    let outcome = reconnect_loop(&mut session).await;
    crate::state::record(
        &config_path,
        if outcome.is_ok() { "stopped" } else { "ended" },
        outcome.as_ref().err().map(|e| format!("{e:#}")),
    );
    // Idle runners stop gracefully; one still busy (the drain timed out)
    // is killed with its process group.
    handle.stop().await;
    let _ = task.await;
    outcome
}

/// The index of the GPU with the most memory (the first of equals).
fn largest_gpu(gpus: &[crate::gpu::Gpu]) -> Option<u32> {
    gpus.iter()
        .fold(None::<&crate::gpu::Gpu>, |best, g| match best {
            Some(b) if b.total_bytes >= g.total_bytes => Some(b),
            _ => Some(g),
        })
        .map(|g| g.index)
}

/// Re-reads the config file every second and hands a changed one to the
/// scheduler; a broken file keeps the last good config (said once).
fn spawn_config_watch(path: PathBuf, mut last: Config, handle: Handle) {
    tokio::spawn(async move {
        let mut last_error = String::new();
        loop {
            tokio::time::sleep(CONFIG_POLL).await;
            match Config::load(&path) {
                Ok(c) => {
                    last_error.clear();
                    if c != last {
                        last = c.clone();
                        handle.send(Event::ConfigChanged(Box::new(c)));
                    }
                }
                Err(e) => {
                    let e = e.to_string();
                    if e != last_error {
                        tracing::warn!(target: "worker", "keeping the previous config: {e}");
                        last_error = e;
                    }
                }
            }
        }
    });
}

async fn reconnect_loop(w: &mut Session) -> anyhow::Result<()> {
    let mut attempt: u32 = 0;
    loop {
        w.record("connecting", None);
        match connection::run(w).await {
            SessionEnd::Shutdown => {
                tracing::info!(target: "ws", "session closed for shutdown");
                return Ok(());
            }
            SessionEnd::AuthFailed(reason) => {
                w.record("auth_failed", Some(reason.clone()));
                return Err(anyhow!(
                    "ws auth failed: {reason}; re-register with `studio-worker register`"
                ));
            }
            SessionEnd::Fatal(reason) => {
                w.record("ended", Some(reason.clone()));
                return Err(anyhow!("session ended by the studio: {reason}"));
            }
            SessionEnd::Disconnected { welcomed, reason } => {
                w.record("disconnected", Some(reason.clone()));
                if welcomed {
                    attempt = 0;
                }
                attempt += 1;
                let cap = w.reconnect_attempts;
                if cap > 0 && attempt > cap {
                    return Err(anyhow!(
                        "ws reconnect cap reached ({cap} attempts): {reason}"
                    ));
                }
                let delay = BACKOFF_BASE
                    .saturating_mul(1 << (attempt - 1).min(5))
                    .min(BACKOFF_MAX);
                tracing::warn!(target: "ws", "disconnected: {reason}; reconnecting in {} ms (attempt {attempt})", delay.as_millis());
                if w.finished() {
                    return Ok(());
                }
                let sleep = tokio::time::sleep(delay);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        changed = w.life.changed() => {
                            if changed.is_err() || w.finished() {
                                return Ok(());
                            }
                        }
                    }
                }
            }
        }
    }
}
