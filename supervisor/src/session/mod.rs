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
use tracing::Instrument;

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
    /// `state.json` holds the first session's; the snapshot has each.
    fn record(&self, state: &str, detail: Option<String>) {
        if self.slot == 0 {
            crate::state::record(&self.config_path, state, detail.clone());
        }
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
        .and_then(|p| {
            p.parent()
                .map(|d| d.join(crate::platform::exe("engine-runner")))
        })
        .unwrap_or_else(|| PathBuf::from("engine-runner"))
}

/// Counts stop signals (SIGTERM/SIGINT; Ctrl-C on Windows) into `tx`;
/// the second one kills every runner group and exits at once.
fn spawn_signal_watch(tx: watch::Sender<u32>) -> anyhow::Result<()> {
    let mut signals = crate::platform::StopSignals::new()?;
    tokio::spawn(async move {
        loop {
            signals.recv().await;
            let n = *tx.borrow() + 1;
            if n >= 2 {
                tracing::warn!(target: "worker", "second signal: exiting now");
                crate::runner::kill_all_groups();
                crate::report::flush();
                std::process::exit(130);
            }
            tracing::info!(target: "worker", "signal received: draining (no new offers), send again to exit at once");
            let _ = tx.send(n);
        }
    });
    Ok(())
}

/// Waits until every identity `run` needs has credentials (see
/// [`crate::settings::identities`]): each missing one registers with a
/// stored bootstrap token, or runs the approval flow (request, then poll
/// every `registration_poll_secs`), one identity after another, while the
/// config is re-read every second (`register`, or the endpoint's register
/// routes, may store credentials meanwhile). The endpoint is told which
/// identities wait and why, for its `/registration` route.
async fn wait_for_credentials(
    config_path: &Path,
    gpus: &[crate::gpu::Gpu],
    shutdown: &mut watch::Receiver<u32>,
    endpoint: Option<&crate::control::Endpoint>,
) -> anyhow::Result<Config> {
    let mut next_step = tokio::time::Instant::now();
    let mut trouble: Option<String> = None;
    loop {
        let cfg = Config::load(config_path)?;
        let needed = crate::settings::identities(&cfg, gpus)?;
        let missing: Vec<Option<u32>> = needed
            .into_iter()
            .filter(|t| !cfg.identity(*t).has_credentials())
            .collect();
        if let Some(e) = endpoint {
            e.awaiting(&missing, trouble.clone());
        }
        if missing.is_empty() {
            return Ok(cfg);
        }
        if tokio::time::Instant::now() >= next_step {
            trouble = None;
            for table in missing {
                if let Some(t) = credentials_step(config_path, table).await? {
                    trouble = Some(t);
                }
            }
            let poll = Duration::from_secs(cfg.registration_poll_secs.max(1));
            next_step = tokio::time::Instant::now() + poll;
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => bail!("stopped before registration"),
        }
    }
}

/// One registration or approval step for identity `table`; the trouble
/// it met, if any (the next step tries again).
async fn credentials_step(
    config_path: &Path,
    table: Option<u32>,
) -> anyhow::Result<Option<String>> {
    let _one_at_a_time = crate::register::STEP.lock().await;
    let cfg = Config::load(config_path)?;
    if cfg.identity(table).has_credentials() {
        return Ok(None);
    }
    let catalog = EngineCatalog::discover(&cfg);
    let whose = table.map(|g| format!(" for GPU {g}")).unwrap_or_default();
    if let Some(token) = cfg.bootstrap_token.clone() {
        let base = cfg.api_base_url.clone();
        return Ok(
            match crate::register::register(config_path, cfg, token, base, &catalog, table).await {
                Ok(id) => {
                    tracing::info!(target: "worker", "registered{whose} as {id}");
                    None
                }
                Err(e) => {
                    tracing::warn!(target: "worker", "registration{whose} with the stored bootstrap token failed: {e:#}");
                    Some(format!(
                        "registration{whose} with the stored bootstrap token failed: {e:#}"
                    ))
                }
            },
        );
    }
    Ok(
        match crate::register::approval_step(config_path, cfg, &catalog, table).await? {
            crate::register::Approval::Approved(id) => {
                tracing::info!(target: "worker", "approved{whose} as {id}");
                None
            }
            crate::register::Approval::Pending => None,
            crate::register::Approval::Retry(why) => Some(why),
            crate::register::Approval::Rejected(reason) => {
                bail!(
                    "registration{whose} rejected by the operator: {reason}; run again to ask anew"
                )
            }
        },
    )
}

/// The `run` command: one session per identity (see [`crate::settings`]),
/// all on one scheduler.
pub async fn run(config_path: PathBuf) -> anyhow::Result<()> {
    // A version an update switched to counts its starts (and rolls back
    // after too many that never got healthy).
    let proving = crate::update::on_start();
    let (sig_tx, mut shutdown) = watch::channel(0u32);
    spawn_signal_watch(sig_tx)?;
    // The endpoint answers from the start (a health check sees "pending
    // approval" rather than nothing); its run file goes when `run` ends.
    let endpoint = crate::control::start(&Config::load(&config_path)?, &config_path).await?;
    if let Some(e) = &endpoint {
        e.starting("waiting for credentials (registration or operator approval)");
    }
    let gpus = crate::gpu::probe();
    let cfg = wait_for_credentials(&config_path, &gpus, &mut shutdown, endpoint.as_ref()).await?;
    let plans = crate::settings::sessions(&cfg, &gpus)?;
    // One scheduler per GPU: another `run` or `serve` on these GPUs
    // refuses this one before anything is loaded.
    let used: Vec<u32> = plans.iter().filter_map(|p| p.gpu).collect();
    let _claims = crate::gpu::claim::claim(&gpus, &used, "run", &config_path)?;
    let host = HostFacts::with_gpus(&gpus);
    let catalog = EngineCatalog::discover(&cfg);
    let slots = plans
        .iter()
        .map(|p| SlotSetup {
            gpu: p.gpu,
            table: p.table,
            target: Some(UploadTarget {
                api_base_url: cfg.api_base_url.clone(),
                worker_id: p.worker_id.clone(),
                auth_token: p.auth_token.clone(),
            }),
        })
        .collect();
    let (handle, life, task) = scheduler::start(Setup {
        status_path: Some(crate::state::status_path_for(&config_path)),
        host,
        catalog,
        slots,
        gpus,
        cfg: cfg.clone(),
    });
    if let Some(e) = &endpoint {
        e.attach(handle.clone());
    }
    let local_api = crate::local_api::start(&cfg, &config_path, handle.clone()).await?;
    if let (Some(e), Some(api)) = (&endpoint, &local_api) {
        e.note_local_api(api.addr);
    }
    spawn_config_watch(config_path.clone(), cfg.clone(), handle.clone());
    crate::update::spawn_loop(&cfg, config_path.clone(), handle.clone());
    {
        let handle = handle.clone();
        tokio::spawn(async move {
            if shutdown.changed().await.is_ok() {
                handle.send(Event::Shutdown);
            }
        });
    }
    let mut loops = tokio::task::JoinSet::new();
    for (slot, plan) in plans.into_iter().enumerate() {
        let mut session = Session {
            slot,
            config_path: config_path.clone(),
            api_base_url: cfg.api_base_url.clone(),
            worker_id: plan.worker_id,
            auth_token: plan.auth_token,
            reconnect_attempts: cfg.ws_reconnect_attempts,
            handle: handle.clone(),
            life: life.clone(),
            gen: 0,
        };
        let span = match plan.table {
            Some(g) => tracing::info_span!("gpu", n = g),
            None => tracing::Span::none(),
        };
        loops.spawn(async move { (slot, reconnect_loop(&mut session).await) }.instrument(span));
    }
    if proving {
        // Healthy: a runner completes its handshake and the sessions loop.
        tokio::spawn(prove_healthy(catalog_for_health(&cfg)));
    }
    // Every session runs until shutdown or its own fatal end; the first
    // error is the process's.
    let mut outcome = Ok(());
    while let Some(done) = loops.join_next().await {
        let (slot, result) = done.unwrap_or_else(|e| (0, Err(anyhow!("session task failed: {e}"))));
        if let Err(e) = result {
            tracing::error!(target: "worker", "session {slot} ended: {e:#}");
            if outcome.is_ok() {
                outcome = Err(e);
            }
        }
    }
    crate::state::record(
        &config_path,
        if outcome.is_ok() { "stopped" } else { "ended" },
        outcome.as_ref().err().map(|e| format!("{e:#}")),
    );
    // Idle runners stop gracefully; one still busy (the drain timed out)
    // is killed with its process group.
    handle.stop().await;
    let _ = task.await;
    drop(local_api);
    drop(endpoint);
    outcome
}

fn catalog_for_health(cfg: &Config) -> EngineCatalog {
    EngineCatalog::discover(cfg)
}

/// A pending version is healthy once the synthetic runner completes its
/// handshake while the session loops run (reaching the studio is not
/// required: an outage must not condemn a good release).
async fn prove_healthy(catalog: EngineCatalog) {
    let Some(cmd) = catalog.command("synthetic") else {
        tracing::error!(target: "worker", "update: no synthetic runner to prove this version healthy");
        return;
    };
    match crate::runner::RunnerChild::spawn(
        cmd.program,
        cmd.args,
        "synthetic",
        1,
        studio_protocol::runner::DEFAULT_MAX_FRAME_BYTES,
        None,
        cmd.env,
    )
    .await
    {
        Ok(child) => {
            child.shutdown(Duration::from_secs(2)).await;
            crate::update::mark_healthy();
        }
        Err(e) => tracing::error!(target: "worker", "update: the runner did not start: {e}"),
    }
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
