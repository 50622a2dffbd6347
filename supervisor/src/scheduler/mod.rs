//! The scheduler: one task that owns the job table, admission, the
//! breakers, the runners and the live status. Sessions and
//! `studio-worker job` submit work to it through a [`Handle`] and get
//! answers back; neither touches a runner.
//!
//! ```text
//!  session (per GPU slot) ─ Offer / SessionUp / SessionDown ─┐
//!  studio-worker job ────── Local ───────────────────────────┤
//!  config watcher ───────── ConfigChanged ───────────────────┤
//!  signals ──────────────── Shutdown ────────────────────────┼──▶ Scheduler::handle (one event at a time)
//!  job tasks ────────────── Job { Started, Loaded, Done… } ──┤        │ admission, table, breakers, runners
//!  upload tasks ─────────── UploadDone ──────────────────────┤        ▼
//!  1 s timer ────────────── Tick ────────────────────────────┘   Outbound frames to each session's outbox
//! ```
//!
//! Slow work (downloads, runner start and load, the run, uploads) happens
//! in tasks that report back as events, so the loop answers an offer at
//! once whatever a job is doing. Everything the studio hears leaves through
//! the owning session's outbox in the order the scheduler decided it: a
//! job's slot is free before its result is sent, so the studio's next offer
//! never finds it busy.

pub mod admission;
pub mod job_task;
pub mod ledger;
pub mod metrics;
pub mod runners;
pub mod snapshot;
pub mod upload;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use studio_protocol::runner::Phase;
use studio_protocol::studio::{JobOfferClaim, WorkerCapabilities, WorkerFrame};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::breakers::{Breakers, ModelKey, Trip};
use crate::capabilities::HostFacts;
use crate::config::Config;
use crate::deliver::{keep_result, UploadTarget};
use crate::failure::{JobError, PoisonWatch};
use crate::gpu::{Gpu, Vendor};
use crate::jobs::table::{JobPhase, JobRow, JobTable, RunnerRef};
use crate::jobs::JobData;
use crate::models::ModelCache;
use crate::runner::{EngineCatalog, Limits, RunEvent, RunnerChild};
use crate::settings::Tuning;
use job_task::{JobEnv, JobReport, MemoryWait, RunnerFate, Trust};
use ledger::Ledger;
use runners::{Lease, RunnerKey, Runners};
use snapshot::{Counters, Finished, Snapshot};
use upload::{UploadEnv, Uploaded};

/// How often the scheduler ticks (breakers, keep-alive, drain, status file).
const TICK: Duration = Duration::from_secs(1);
/// How often each session sends a heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long a runner asked to stop has before SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Everything the scheduler reacts to.
pub enum Event {
    /// An offer on the session of `slot` with generation `gen`.
    Offer {
        slot: usize,
        gen: u64,
        raw: serde_json::Value,
    },
    /// A job from `studio-worker job` or the local API; updates go to
    /// `updates`. With `queue`, it waits behind at most that many others
    /// while the GPU is busy.
    Local {
        claim: Box<JobOfferClaim>,
        updates: mpsc::UnboundedSender<LocalUpdate>,
        queue: Option<usize>,
        stream: bool,
    },
    /// A session of `slot` was welcomed; frames for it go to `outbox`.
    SessionUp {
        slot: usize,
        gen: u64,
        outbox: mpsc::UnboundedSender<Outbound>,
    },
    /// That session ended.
    SessionDown { slot: usize, gen: u64 },
    /// A session's state changed (for the status).
    SessionState {
        slot: usize,
        state: String,
        detail: Option<String>,
    },
    /// A job task's report.
    Job {
        job_id: String,
        report: Box<JobReport>,
    },
    /// An upload task ended.
    UploadDone { job_id: String, outcome: Uploaded },
    /// The config file changed.
    ConfigChanged(Box<Config>),
    /// A fresh probe of the (real) GPUs.
    Probed(Vec<Gpu>),
    /// The capabilities to advertise on `slot`.
    Capabilities {
        slot: usize,
        reply: oneshot::Sender<WorkerCapabilities>,
    },
    /// The live status.
    Snapshot(oneshot::Sender<Snapshot>),
    /// The timer.
    Tick,
    /// SIGTERM or SIGINT: drain.
    Shutdown,
    /// An update is ready: reject offers `busy` and answer once no job is
    /// held (the flip waits for idle).
    HoldForUpdate(oneshot::Sender<()>),
    /// The update did not happen: take offers again.
    ReleaseHold,
    /// What the update loop is doing (for the status).
    UpdateState(String),
    /// A fresh check of the Gradio app (for the status).
    GradioChecked(crate::runner::gradio::AppState),
    /// `pause` (true) or `resume` (false) from the control endpoint:
    /// offers rejected `paused`, heartbeats `autoEnabled: false`, the
    /// config untouched.
    Pause(bool),
    /// Stop now: idle runners stop gracefully, busy ones are killed.
    Stop(oneshot::Sender<()>),
}

/// What a session sends the studio on the scheduler's behalf.
#[derive(Debug)]
pub enum Outbound {
    /// A frame.
    Frame(Box<WorkerFrame>),
    /// Drained: close the session.
    Close,
}

/// What `studio-worker job` (or a local API request) hears about its job.
pub enum LocalUpdate {
    /// Progress of the job.
    Event(RunEvent),
    /// Not taken: the local queue is full.
    QueueFull,
    /// The end.
    Done(Result<JobData, JobError>),
}

/// Whether the worker is draining, and whether the drain is over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Life {
    /// SIGTERM received: no new offers.
    pub draining: bool,
    /// Draining and nothing held any more: sessions may end.
    pub finished: bool,
}

/// A clonable way in.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::UnboundedSender<Event>,
}

impl Handle {
    /// Sends an event (ignored once the scheduler has stopped).
    pub fn send(&self, ev: Event) {
        let _ = self.tx.send(ev);
    }

    /// The capabilities to advertise on `slot`.
    pub async fn capabilities(&self, slot: usize) -> Option<WorkerCapabilities> {
        let (reply, rx) = oneshot::channel();
        self.send(Event::Capabilities { slot, reply });
        rx.await.ok()
    }

    /// The live status.
    pub async fn snapshot(&self) -> Option<Snapshot> {
        let (reply, rx) = oneshot::channel();
        self.send(Event::Snapshot(reply));
        rx.await.ok()
    }

    /// Submits a local job.
    pub fn submit_local(&self, claim: JobOfferClaim) -> mpsc::UnboundedReceiver<LocalUpdate> {
        self.submit_local_queued(claim, None, false)
    }

    /// [`Handle::submit_local`] that waits its turn while the GPU is busy,
    /// behind at most `queue` others (`None`: fail at once when busy);
    /// a full queue answers [`LocalUpdate::QueueFull`]. Dropping the
    /// receiver while it waits takes it out of the queue.
    /// With `stream`, generated text comes as `RunEvent::Delta` updates.
    pub fn submit_local_queued(
        &self,
        claim: JobOfferClaim,
        queue: Option<usize>,
        stream: bool,
    ) -> mpsc::UnboundedReceiver<LocalUpdate> {
        let (updates, rx) = mpsc::unbounded_channel();
        self.send(Event::Local {
            claim: Box::new(claim),
            updates,
            queue,
            stream,
        });
        rx
    }

    /// Holds offers for an update and waits until no job is held.
    pub async fn hold_for_update(&self) {
        let (reply, rx) = oneshot::channel();
        self.send(Event::HoldForUpdate(reply));
        let _ = rx.await;
    }

    /// Stops the scheduler and waits for it.
    pub async fn stop(&self) {
        let (reply, rx) = oneshot::channel();
        self.send(Event::Stop(reply));
        let _ = rx.await;
    }
}

/// One GPU slot: a studio identity with its session (or none, for local
/// jobs) and the GPU its runners use.
pub struct SlotSetup {
    /// GPU index (`None`: no GPU or one unnamed).
    pub gpu: Option<u32>,
    /// Where its threshold lives: `None` the top level, `Some(g)` the
    /// `[[worker]]` table of GPU `g` (see [`crate::settings::SessionPlan`]).
    pub table: Option<u32>,
    /// Where its binary results go (`None`: local jobs only).
    pub target: Option<UploadTarget>,
}

/// What the scheduler starts from.
pub struct Setup {
    /// The config as read.
    pub cfg: Config,
    /// Where `status.json` is written (beside the config), if anywhere.
    pub status_path: Option<PathBuf>,
    /// Host facts.
    pub host: HostFacts,
    /// Engines on this host.
    pub catalog: EngineCatalog,
    /// GPUs on this host, as probed at start.
    pub gpus: Vec<Gpu>,
    /// Slots.
    pub slots: Vec<SlotSetup>,
}

/// A pinned model and when to (re)load it next.
struct Pin {
    key: RunnerKey,
    claim: JobOfferClaim,
    slot: usize,
    next_try: Instant,
}

/// How long after a failed load a pinned model is tried again.
const PIN_RETRY: Duration = Duration::from_secs(30);

struct SessionLink {
    gen: u64,
    outbox: mpsc::UnboundedSender<Outbound>,
}

struct Slot {
    gpu: Option<u32>,
    table: Option<u32>,
    target: Option<UploadTarget>,
    session: Option<SessionLink>,
    live_gen: watch::Sender<u64>,
    status: snapshot::SessionStatus,
    next_heartbeat: Instant,
    last_heartbeat: Option<Instant>,
}

/// The scheduler's state. See the module docs.
pub struct Scheduler {
    cfg: Config,
    host: HostFacts,
    slots: Vec<Slot>,
    jobs: JobTable,
    /// The runner key, estimate and prompt of each held job.
    leases: BTreeMap<String, (RunnerKey, f64, String)>,
    locals: BTreeMap<String, mpsc::UnboundedSender<LocalUpdate>>,
    /// Pinned named models: kept loaded, reloaded when their runner dies.
    pins: Vec<Pin>,
    tasks: BTreeMap<String, AbortHandle>,
    runners: Runners,
    ledger: Ledger,
    /// One set per slot: a sick GPU pauses only its own session, and a
    /// model that keeps failing on one GPU may still fit another.
    breakers: Vec<Breakers>,
    poison: PoisonWatch,
    env: Arc<JobEnv>,
    uploads: UploadEnv,
    limits: Limits,
    tx: mpsc::UnboundedSender<Event>,
    life: watch::Sender<Life>,
    drain_deadline: Option<Instant>,
    recent: VecDeque<Finished>,
    counters: Counters,
    metrics: metrics::Metrics,
    /// Paused through the control endpoint (`pause`).
    live_paused: bool,
    /// Local API requests waiting for the GPU, oldest first.
    local_queue: VecDeque<(JobOfferClaim, mpsc::UnboundedSender<LocalUpdate>, bool)>,
    /// How to ask a running local job to stop (its client went away).
    cancels: BTreeMap<String, oneshot::Sender<()>>,
    /// Local jobs asked to stop (their end is counted `cancelled`).
    cancelled: BTreeSet<String>,
    status_path: Option<PathBuf>,
    status_dirty: bool,
    /// Holding offers for an update; answered once idle.
    update_hold: Option<Option<oneshot::Sender<()>>>,
    /// What the update loop last said.
    update_state: Option<String>,
    /// The Gradio app as last seen (start-up check, then each job).
    gradio: Option<crate::runner::gradio::AppState>,
}

/// Starts the scheduler task.
pub fn start(setup: Setup) -> (Handle, watch::Receiver<Life>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (life, life_rx) = watch::channel(Life::default());
    let cfg = setup.cfg;
    let tuning = Tuning::from_config(&cfg);
    let cache = ModelCache::new(tuning.models_root.clone(), tuning.download_stall);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap_or_default();
    let now = Instant::now();
    let slots: Vec<Slot> = setup
        .slots
        .into_iter()
        .enumerate()
        .map(|(i, s)| Slot {
            gpu: s.gpu,
            table: s.table,
            target: s.target,
            session: None,
            live_gen: watch::channel(0).0,
            status: snapshot::SessionStatus {
                slot: i,
                gpu: s.gpu,
                state: "starting".into(),
                since: crate::logship::now_ts(),
                detail: None,
                ..Default::default()
            },
            next_heartbeat: now,
            last_heartbeat: None,
        })
        .collect();
    let gradio = setup.catalog.gradio().cloned();
    let s = Scheduler {
        gradio,
        runners: Runners::new(
            setup.catalog,
            cfg.max_frame_bytes,
            tuning.limits.memory_bytes,
            tuning.backoff.clone(),
            tuning.keep_alive,
        ),
        breakers: (0..slots.len())
            .map(|_| Breakers::new(tuning.max_failures, tuning.cooldown))
            .collect(),
        ledger: Ledger::new(setup.gpus.clone(), tuning.vram_margin_gb),
        env: Arc::new(JobEnv {
            http: http.clone(),
            local_cache: cache.clone().allow_local_files(),
            cache,
            scratch_root: std::env::temp_dir()
                .join(format!("studio-worker-{}", std::process::id())),
        }),
        uploads: UploadEnv {
            http,
            attempts: tuning.upload_attempts,
            results_dir: tuning.results_dir.clone(),
            results_max_bytes: tuning.results_max_bytes,
        },
        limits: tuning.limits,
        host: setup.host,
        slots,
        jobs: JobTable::default(),
        leases: BTreeMap::new(),
        locals: BTreeMap::new(),
        pins: Vec::new(),
        tasks: BTreeMap::new(),
        poison: PoisonWatch::default(),
        tx: tx.clone(),
        life,
        drain_deadline: None,
        update_hold: None,
        update_state: None,
        recent: VecDeque::new(),
        counters: Counters::default(),
        metrics: metrics::Metrics::default(),
        live_paused: false,
        local_queue: VecDeque::new(),
        cancels: BTreeMap::new(),
        cancelled: BTreeSet::new(),
        status_path: setup.status_path,
        status_dirty: true,
        cfg,
    };
    if setup.gpus.iter().any(|g| g.vendor != Vendor::Fake) {
        spawn_probe(tx.clone());
    }
    let mut s = s;
    s.pins = s.pins_from_config();
    for p in &s.pins {
        s.runners.pin(p.key.clone());
    }
    let task = tokio::spawn(s.run(rx));
    (Handle { tx }, life_rx, task)
}

impl Scheduler {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event>) {
        self.load_pins();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let ev = tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => ev,
                    None => break,
                },
                _ = tick.tick() => Event::Tick,
            };
            if let Event::Stop(done) = ev {
                self.stop().await;
                let _ = done.send(());
                return;
            }
            self.handle(ev);
        }
        self.stop().await;
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Offer { slot, gen, raw } => self.on_offer(slot, gen, &raw),
            Event::Local {
                claim,
                updates,
                queue,
                stream,
            } => self.on_local(*claim, updates, queue, stream),
            Event::SessionUp { slot, gen, outbox } => self.on_session_up(slot, gen, outbox),
            Event::SessionDown { slot, gen } => self.on_session_down(slot, gen),
            Event::SessionState {
                slot,
                state,
                detail,
            } => {
                if let Some(s) = self.slots.get_mut(slot) {
                    s.status.state = state;
                    s.status.detail = detail;
                    s.status.since = crate::logship::now_ts();
                    self.status_dirty = true;
                }
            }
            Event::Job { job_id, report } => self.on_job_report(&job_id, *report),
            Event::UploadDone { job_id, outcome } => self.on_upload_done(&job_id, outcome),
            Event::ConfigChanged(cfg) => self.on_config(*cfg),
            Event::Probed(gpus) => self.ledger.probed(&gpus),
            Event::Capabilities { slot, reply } => {
                let _ = reply.send(self.capabilities(slot));
            }
            Event::Snapshot(reply) => {
                let _ = reply.send(self.snapshot());
            }
            Event::Tick => self.on_tick(),
            Event::Shutdown => self.on_shutdown(),
            Event::HoldForUpdate(reply) => {
                self.update_hold = Some(Some(reply));
                self.after_job();
            }
            Event::ReleaseHold => self.update_hold = None,
            Event::Pause(on) => {
                if self.live_paused != on {
                    tracing::info!(target: "worker", "{}", if on { "paused by the operator (pause): offers are rejected until resume" } else { "resumed by the operator: taking offers" });
                    self.live_paused = on;
                    self.heartbeats(true);
                    self.status_dirty = true;
                }
            }
            Event::UpdateState(state) => {
                self.update_state = Some(state);
                self.status_dirty = true;
            }
            Event::GradioChecked(state) => {
                self.gradio = Some(state);
                self.status_dirty = true;
            }
            Event::Stop(_) => {}
        }
    }

    // ---- pinned models ----------------------------------------------------

    /// The config's pinned models; a broken entry is logged and skipped.
    fn pins_from_config(&self) -> Vec<Pin> {
        let now = Instant::now();
        let mut pins = Vec::new();
        for m in self.cfg.models.iter().filter(|m| m.pin) {
            let claim = match m.claim(&format!("pin:{}", m.name)) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(target: "worker", "{e}; not loading it");
                    continue;
                }
            };
            let slot = self
                .slots
                .iter()
                .position(|s| m.gpu.is_some() && s.gpu == m.gpu)
                .unwrap_or(0);
            let gpu = m.gpu.or_else(|| self.slot_gpu(slot));
            let key = RunnerKey::for_claim(gpu, &claim);
            pins.push(Pin {
                key,
                claim,
                slot,
                next_try: now,
            });
        }
        pins
    }

    /// Loads every pinned model that is not resident, one at a time, when
    /// its slot is free.
    fn load_pins(&mut self) {
        if self.draining() {
            return;
        }
        let now = Instant::now();
        for i in 0..self.pins.len() {
            let p = &self.pins[i];
            if now < p.next_try
                || self.runners.is_resident(&p.key)
                || self.jobs.busy(p.slot)
                || self.jobs.get(&p.claim.job_id).is_some()
            {
                continue;
            }
            let (claim, slot, gpu) = (p.claim.clone(), p.slot, p.key.gpu);
            self.pins[i].next_try = now + PIN_RETRY;
            tracing::info!(target: "worker", "loading pinned model {} ({})", claim.model, claim.model_source.engine);
            let trust = Trust {
                local_files: true,
                preload: true,
                stream: false,
            };
            if let Err((_, e)) = self.begin_on(claim, slot, gpu, 0, false, trust) {
                tracing::error!(target: "worker", "pinned model could not be loaded: {e}");
            }
        }
    }

    // ---- sessions -------------------------------------------------------

    fn on_session_up(&mut self, slot: usize, gen: u64, outbox: mpsc::UnboundedSender<Outbound>) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        s.session = Some(SessionLink { gen, outbox });
        s.live_gen.send_replace(gen);
        self.metrics.session_opened(slot);
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        s.next_heartbeat = Instant::now();
        self.heartbeats(true);
        if self.life.borrow().finished {
            self.to_slot(slot, Outbound::Close);
        }
    }

    fn on_session_down(&mut self, slot: usize, gen: u64) {
        if let Some(s) = self.slots.get_mut(slot) {
            if s.session.as_ref().is_some_and(|l| l.gen == gen) {
                s.session = None;
                s.live_gen.send_replace(0);
            }
        }
    }

    /// Sends `out` to `slot`'s live session, if any.
    fn to_slot(&self, slot: usize, out: Outbound) {
        if let Some(link) = self.slots.get(slot).and_then(|s| s.session.as_ref()) {
            let _ = link.outbox.send(out);
        }
    }

    /// The outbox of `slot` when its live session is generation `gen`.
    fn session_of(&self, slot: usize, gen: u64) -> Option<&mpsc::UnboundedSender<Outbound>> {
        self.slots
            .get(slot)
            .and_then(|s| s.session.as_ref())
            .filter(|l| l.gen == gen)
            .map(|l| &l.outbox)
    }

    /// Sends each session its heartbeat when due (all of them when `now`).
    fn heartbeats(&mut self, now: bool) {
        let at = Instant::now();
        for i in 0..self.slots.len() {
            if self.slots[i].session.is_none() || (!now && at < self.slots[i].next_heartbeat) {
                continue;
            }
            self.slots[i].next_heartbeat = at + HEARTBEAT;
            self.slots[i].last_heartbeat = Some(at);
            let frame = WorkerFrame::Heartbeat {
                capabilities: self.capabilities(i),
                current_job_id: self.jobs.current(i).map(str::to_string),
            };
            self.to_slot(i, Outbound::Frame(Box::new(frame)));
        }
    }

    fn capabilities(&self, slot: usize) -> WorkerCapabilities {
        let of = crate::capabilities::For {
            gpu: self.slot_gpu(slot),
            table: self.slots.get(slot).and_then(|s| s.table),
        };
        crate::capabilities::snapshot(
            &self.cfg,
            &self.host,
            self.runners.catalog(),
            self.paused(slot),
            of,
        )
    }

    /// The largest estimate `slot` takes (its table's, else the top level).
    fn threshold(&self, slot: usize) -> f64 {
        self.cfg
            .threshold_for(self.slots.get(slot).and_then(|s| s.table))
    }

    /// The GPU of `slot`, if it has one.
    fn slot_gpu(&self, slot: usize) -> Option<u32> {
        self.slots.get(slot).and_then(|s| s.gpu)
    }

    // ---- admission ------------------------------------------------------

    fn paused(&self, slot: usize) -> bool {
        !self.cfg.auto_enabled || self.live_paused || self.draining() || self.cooling_down(slot)
    }

    /// Holding offers for an update.
    pub fn updating(&self) -> bool {
        self.update_hold.is_some()
    }

    fn draining(&self) -> bool {
        self.life.borrow().draining
    }

    fn cooling_down(&self, slot: usize) -> bool {
        self.breakers
            .get(slot)
            .is_some_and(|b| b.paused(Instant::now()).is_some())
    }

    fn on_offer(&mut self, slot: usize, gen: u64, raw: &serde_json::Value) {
        let Some(outbox) = self.session_of(slot, gen).cloned() else {
            // The session that carried it is gone; the studio released it.
            return;
        };
        let decision = admission::decide(self, slot, raw);
        let send = |f: WorkerFrame| {
            let _ = outbox.send(Outbound::Frame(Box::new(f)));
        };
        match decision {
            admission::Decision::Ignore => {}
            admission::Decision::Reject {
                job_id,
                reason,
                code,
            } => {
                tracing::info!(target: "ws", job_id = %job_id, "rejecting {job_id}: {reason}");
                self.counters.rejected += 1;
                let label = code.map_or("none", |c| match c {
                    studio_protocol::studio::RejectCode::Busy => "busy",
                    studio_protocol::studio::RejectCode::Paused => "paused",
                });
                self.count_offer(slot, raw, "rejected", label);
                send(WorkerFrame::Reject {
                    job_id,
                    reason,
                    code,
                });
            }
            admission::Decision::Broken { job_id, error } => {
                tracing::warn!(target: "job", job_id = %job_id, "{error}");
                self.counters.accepted += 1;
                self.counters.failed += 1;
                self.count_offer(
                    slot,
                    raw,
                    "failed",
                    studio_protocol::runner::ErrorClass::BadInput.as_str(),
                );
                send(WorkerFrame::Accept {
                    job_id: job_id.clone(),
                });
                send(WorkerFrame::Fail {
                    job_id,
                    error,
                    retryable: false,
                });
            }
            admission::Decision::Accept { claim, evict } => {
                send(WorkerFrame::Accept {
                    job_id: claim.job_id.clone(),
                });
                self.evict(&evict, &claim.job_id);
                let studio = Trust {
                    local_files: false,
                    preload: false,
                    stream: false,
                };
                if let Err((job_id, error)) =
                    self.begin(*claim, slot, gen, !evict.is_empty(), studio)
                {
                    self.counters.failed += 1;
                    send(WorkerFrame::Fail {
                        job_id,
                        retryable: error.retryable(),
                        error: error.message,
                    });
                }
            }
        }
        self.status_dirty = true;
    }

    /// Counts an offer that ended at admission, labelled with what it
    /// says of itself (`unknown` where it does not parse).
    fn count_offer(&mut self, slot: usize, raw: &serde_json::Value, outcome: &str, reason: &str) {
        let claim = JobOfferClaim::from_value(raw).ok();
        let kind = claim.as_ref().map_or("unknown", |c| c.task.kind().as_str());
        let engine = claim.as_ref().map_or("unknown".to_string(), |c| {
            c.model_source.engine.as_str().to_string()
        });
        let gpu = self.slot_gpu(slot);
        self.metrics.job(metrics::JobEnd {
            kind,
            engine: &engine,
            origin: "studio",
            outcome,
            reason,
            gpu,
        });
    }

    fn on_local(
        &mut self,
        claim: JobOfferClaim,
        updates: mpsc::UnboundedSender<LocalUpdate>,
        queue: Option<usize>,
        stream: bool,
    ) {
        let slot = self.local_slot(&claim);
        if let Some(cap) = queue {
            self.local_queue.retain(|(_, u, _)| !u.is_closed());
            if self.jobs.busy(slot) || !self.local_queue.is_empty() || self.draining() {
                if self.draining() {
                    let _ = updates.send(LocalUpdate::Done(Err(JobError::new(
                        studio_protocol::runner::ErrorClass::EngineUnavailable,
                        "the worker is shutting down",
                    ))));
                } else if self.local_queue.len() >= cap {
                    let _ = updates.send(LocalUpdate::QueueFull);
                } else {
                    self.local_queue.push_back((claim, updates, stream));
                    self.status_dirty = true;
                }
                return;
            }
        }
        if self.jobs.busy(slot) {
            let _ = updates.send(LocalUpdate::Done(Err(JobError::new(
                studio_protocol::runner::ErrorClass::Engine,
                "the worker already runs a job on this GPU",
            ))));
            return;
        }
        self.locals.insert(claim.job_id.clone(), updates);
        let local = Trust {
            local_files: true,
            preload: false,
            stream,
        };
        if let Err((job_id, e)) = self.begin(claim, slot, 0, false, local) {
            self.counters.failed += 1;
            if let Some(u) = self.locals.remove(&job_id) {
                let _ = u.send(LocalUpdate::Done(Err(e)));
            }
            // It never took the GPU: the next queued request may.
            self.next_local();
        }
    }

    /// The session slot a local job runs on: the one whose GPU holds its
    /// model, else the one whose GPU has the most memory available (slot 0
    /// without GPUs).
    fn local_slot(&self, claim: &JobOfferClaim) -> usize {
        let slot_of = |gpu: Option<u32>| {
            self.slots
                .iter()
                .position(|s| s.gpu == gpu && gpu.is_some())
        };
        let resident = self.slots.iter().find_map(|s| {
            let key = RunnerKey::for_claim(s.gpu, claim);
            self.runners
                .residents()
                .iter()
                .any(|r| r.key == key)
                .then(|| slot_of(s.gpu))
                .flatten()
        });
        resident
            .or_else(|| {
                self.slots
                    .iter()
                    .filter_map(|s| s.gpu)
                    .max_by_key(|g| self.ledger.available(*g, &self.runners).unwrap_or(0))
                    .and_then(|g| slot_of(Some(g)))
            })
            .unwrap_or(0)
    }

    /// Starts the next queued local request whose client still waits,
    /// when the GPU it goes to is free.
    fn next_local(&mut self) {
        while !self.draining() {
            let Some((claim, updates, stream)) = self.local_queue.pop_front() else {
                return;
            };
            if updates.is_closed() {
                continue;
            }
            if self.jobs.busy(self.local_slot(&claim)) {
                self.local_queue.push_front((claim, updates, stream));
                return;
            }
            self.on_local(claim, updates, None, stream);
            return;
        }
    }

    /// Stops idle runners to make room for `job_id`.
    fn evict(&mut self, pids: &[u32], job_id: &str) {
        for &pid in pids {
            if let Some((r, child)) = self.runners.evict(pid) {
                tracing::info!(target: "engine", job_id = %job_id, "stopping idle runner {} for {} (pid {}, {}) to make room for job {job_id}", r.key.engine, r.model, r.pid, ledger::gb(r.held()));
                self.metrics.evicted(&r.key.engine);
                stop_runner(*child);
            }
        }
    }

    /// Starts an accepted job: the table row, the runner lease, the task.
    /// `evicted`: runners were stopped for it, so on a real GPU the job
    /// waits (in its load phase) for the probe to show the memory back.
    fn begin(
        &mut self,
        claim: JobOfferClaim,
        slot: usize,
        gen: u64,
        evicted: bool,
        trust: Trust,
    ) -> Result<(), (String, JobError)> {
        let gpu = self.slot_gpu(slot);
        self.begin_on(claim, slot, gpu, gen, evicted, trust)
    }

    /// [`Self::begin`] on an explicit GPU.
    fn begin_on(
        &mut self,
        claim: JobOfferClaim,
        slot: usize,
        gpu: Option<u32>,
        gen: u64,
        evicted: bool,
        trust: Trust,
    ) -> Result<(), (String, JobError)> {
        let job_id = claim.job_id.clone();
        self.counters.accepted += 1;
        let engine = claim.model_source.engine.as_str().to_string();
        let origin = if trust.preload {
            "pinned"
        } else if trust.local_files {
            "local"
        } else {
            "studio"
        };
        let kind = claim.task.kind();
        let failed = |m: &mut metrics::Metrics, class: studio_protocol::runner::ErrorClass| {
            m.job(metrics::JobEnd {
                kind: kind.as_str(),
                engine: &engine,
                origin,
                outcome: "failed",
                reason: class.as_str(),
                gpu,
            })
        };
        if let Err(f) = self
            .runners
            .catalog()
            .check(&claim.model_source.engine, claim.task.kind())
        {
            tracing::warn!(target: "job", job_id = %job_id, "job failed ({}): {}", f.class.as_str(), f.message);
            failed(&mut self.metrics, f.class);
            return Err((job_id, JobError::new(f.class, f.message)));
        }
        let dead = self.runners.reap_idle();
        self.counters.runner_deaths += dead as u64;
        for _ in 0..dead {
            self.metrics.runner_ended("exited_idle");
        }
        let key = RunnerKey::for_claim(gpu, &claim);
        let book = gpu.and_then(|g| {
            self.ledger
                .books()
                .iter()
                .find(|b| b.gpu.index == g)
                .map(|b| b.gpu.clone())
        });
        let env = book.as_ref().map(pin_env).unwrap_or_default();
        let lease = match self.runners.lease(&key, &job_id, env) {
            Ok(l) => l,
            Err(f) => {
                failed(&mut self.metrics, f.class);
                return Err((job_id, JobError::new(f.class, f.message)));
            }
        };
        let need = ledger::bytes_of(claim.vram_gb_estimate);
        let mut wait = None;
        if let (Some(g), Lease::Spawn(_)) = (gpu, &lease) {
            self.ledger.reserve(&job_id, g, need);
            if evicted && book.is_some_and(|b| b.vendor != Vendor::Fake) {
                wait = Some(MemoryWait { gpu: g, need });
            }
        }
        tracing::info!(target: "job", job_id = %job_id, "running {} on {} (model {})", claim.task.kind(), engine, claim.model);
        self.jobs.accept(
            &job_id,
            JobRow {
                origin,
                ..JobRow::new(&engine, &claim.model, claim.task.kind(), slot, gen)
            },
        );
        self.leases.insert(
            job_id.clone(),
            (key, claim.vram_gb_estimate, claim.task.reported_prompt()),
        );
        // A local job can be asked to stop when its client goes away.
        let cancel = (trust.local_files && !trust.preload).then(|| {
            let (tx, rx) = oneshot::channel();
            self.cancels.insert(job_id.clone(), tx);
            rx
        });
        let task = tokio::spawn(job_task::run(
            self.env.clone(),
            claim,
            lease,
            job_task::Hooks { wait, cancel },
            trust,
            self.limits,
            self.tx.clone(),
        ));
        self.tasks.insert(job_id, task.abort_handle());
        Ok(())
    }

    // ---- job reports ----------------------------------------------------

    fn on_job_report(&mut self, job_id: &str, report: JobReport) {
        self.status_dirty = true;
        match report {
            JobReport::Downloading { done, total } => {
                self.jobs.set_phase(job_id, JobPhase::Downloading);
                self.jobs.set_progress(job_id, done, total);
                self.tell_local(
                    job_id,
                    LocalUpdate::Event(RunEvent::Downloading { done, total }),
                );
            }
            JobReport::Started {
                pid,
                epoch,
                deadline,
            } => {
                self.jobs
                    .set_runner(job_id, RunnerRef { pid, epoch }, deadline);
                // From here its model is resident and held there.
                self.ledger.release(job_id);
                self.jobs.set_phase(job_id, JobPhase::Loading);
                if let (Some((key, estimate, _)), Some(row)) =
                    (self.leases.get(job_id), self.jobs.get(job_id))
                {
                    let before = self.runners.residents().len();
                    self.runners
                        .started(key, job_id, pid, epoch, &row.model, *estimate);
                    if self.runners.residents().len() > before {
                        self.counters.runner_starts += 1;
                    }
                }
                self.tell_local(
                    job_id,
                    LocalUpdate::Event(RunEvent::Started {
                        pid,
                        epoch,
                        deadline,
                    }),
                );
            }
            JobReport::Loaded {
                host_bytes,
                device_bytes,
            } => {
                self.counters.loads += 1;
                if let Some(row) = self.jobs.get(job_id) {
                    self.metrics.loaded(&row.engine);
                }
                if let Some(pid) = self.jobs.get(job_id).and_then(|r| r.runner).map(|r| r.pid) {
                    self.runners.loaded(pid, host_bytes, device_bytes);
                }
            }
            JobReport::Progress { phase, done, total } => {
                let p = match phase {
                    Phase::Loading => JobPhase::Loading,
                    Phase::Running => JobPhase::Running,
                };
                self.jobs.set_phase(job_id, p);
                self.jobs.set_progress(job_id, done, total);
                self.tell_local(
                    job_id,
                    LocalUpdate::Event(RunEvent::Progress { phase, done, total }),
                );
            }
            JobReport::Delta(text) => {
                self.tell_local(job_id, LocalUpdate::Event(RunEvent::Delta(text)))
            }
            JobReport::Done { runner, result } => self.on_job_done(job_id, runner, result),
        }
    }

    /// Tells a local job's requester; one that is gone has its job asked
    /// to stop (the runner ends it early; nothing counts against it).
    fn tell_local(&mut self, job_id: &str, update: LocalUpdate) {
        let Some(u) = self.locals.get(job_id) else {
            return;
        };
        if u.send(update).is_err() {
            if let Some(cancel) = self.cancels.remove(job_id) {
                let _ = cancel.send(());
                self.cancelled.insert(job_id.to_string());
            }
        }
    }

    fn on_job_done(&mut self, job_id: &str, runner: RunnerFate, result: Result<JobData, JobError>) {
        self.tasks.remove(job_id);
        self.cancels.remove(job_id);
        self.ledger.release(job_id);
        let Some((key, _, prompt)) = self.leases.remove(job_id) else {
            // Handed back at a drain timeout: stop what it ran on.
            if let RunnerFate::Alive(child) = runner {
                stop_runner(*child);
            }
            return;
        };
        let healthy = result.is_ok();
        let fate = match runner {
            RunnerFate::Alive(child) => Some(Some(child)),
            RunnerFate::Dead => {
                self.counters.runner_deaths += 1;
                let why = result.as_ref().err().map_or("exited", |e| e.class.as_str());
                self.metrics.runner_ended(why);
                Some(None)
            }
            RunnerFate::Unused => None,
        };
        if let Some(child) = fate {
            if let Some(stop) = self.runners.returned(&key, child, healthy) {
                stop_runner(*stop);
            }
        }
        let mut result = result;
        if let Err(e) = &mut result {
            self.poison.judge(job_id, e);
            tracing::warn!(target: "job", job_id = %job_id, "job failed ({}): {}", e.class.as_str(), e.message);
        }
        let class = result.as_ref().err().map_or("", |e| e.class.as_str());
        if let Some(u) = self.locals.remove(job_id) {
            let row = self.jobs.finish(job_id);
            self.record(
                job_id,
                row.as_ref(),
                &result.as_ref().map(|_| ()).map_err(|e| e.message.clone()),
                class,
            );
            if let (Some(f), Ok(JobData::Json(v))) = (self.recent.back_mut(), &result) {
                f.tokens = v["usage"]["completion_tokens"].as_u64();
            }
            let _ = u.send(LocalUpdate::Done(result));
            // The GPU is free: a queued local request, a drain's end.
            self.after_job();
            return;
        }
        let Some(row) = self.jobs.get(job_id).cloned() else {
            return;
        };
        if row.gen == 0 {
            // A pinned model's load.
            self.jobs.finish(job_id);
            match &result {
                Ok(_) => {
                    tracing::info!(target: "worker", "pinned model {} loaded; it stays loaded", row.model)
                }
                Err(e) => {
                    tracing::error!(target: "worker", "pinned model {} could not be loaded: {e}; trying again in {} s", row.model, PIN_RETRY.as_secs())
                }
            }
            let outcome = result.as_ref().map(|_| ()).map_err(|e| e.message.clone());
            self.record(job_id, Some(&row), &outcome, class);
            self.after_job();
            return;
        }
        match result {
            Ok(JobData::Bytes { data, ext }) => {
                // The GPU is free: the upload runs beside the next job.
                self.jobs.set_phase(job_id, JobPhase::Uploading);
                self.note_job_end(job_id, &row, false);
                let (target, live) = match self.slots.get(row.slot) {
                    Some(s) => (s.target.clone(), s.live_gen.subscribe()),
                    None => (None, watch::channel(0).1),
                };
                let Some(target) = target else {
                    self.end_job(
                        job_id,
                        Err("no studio to upload to".into()),
                        false,
                        "upload",
                    );
                    return;
                };
                let task = tokio::spawn(upload::run(
                    self.uploads.clone(),
                    target,
                    live,
                    row.gen,
                    job_id.to_string(),
                    prompt,
                    ext,
                    data,
                    self.tx.clone(),
                ));
                self.tasks.insert(job_id.to_string(), task.abort_handle());
            }
            Ok(JobData::Json(result)) => {
                self.note_job_end(job_id, &row, false);
                self.jobs.finish(job_id);
                self.record(job_id, Some(&row), &Ok(()), "");
                self.deliver_json(job_id, &row, result, prompt);
            }
            Err(e) => {
                self.note_job_end(job_id, &row, e.worker_caused());
                self.end_job(
                    job_id,
                    Err(e.message.clone()),
                    e.retryable(),
                    e.class.as_str(),
                );
            }
        }
        self.after_job();
    }

    fn on_upload_done(&mut self, job_id: &str, outcome: Uploaded) {
        self.tasks.remove(job_id);
        self.status_dirty = true;
        match outcome {
            Uploaded::Done {
                ext,
                bytes,
                retries,
            } => {
                self.metrics.uploads_retried += u64::from(retries);
                let row = self.jobs.finish(job_id);
                self.record(job_id, row.as_ref(), &Ok(()), "");
                tracing::info!(target: "job", job_id = %job_id, "completed {job_id} ({bytes} bytes of {ext})");
            }
            Uploaded::Failed {
                error,
                retryable,
                retries,
                kept,
            } => {
                self.metrics.uploads_retried += u64::from(retries);
                self.metrics.results_kept += u64::from(kept);
                self.end_job(job_id, Err(error), retryable, "upload")
            }
        }
        self.after_job();
    }

    /// Ends a held job with a failure (or nothing more to say), telling its
    /// session when it is still live.
    fn end_job(&mut self, job_id: &str, outcome: Result<(), String>, retryable: bool, class: &str) {
        let Some(row) = self.jobs.finish(job_id) else {
            return;
        };
        self.record(job_id, Some(&row), &outcome, class);
        let Err(error) = outcome else {
            return;
        };
        match self.session_of(row.slot, row.gen) {
            Some(outbox) => {
                let _ = outbox.send(Outbound::Frame(Box::new(WorkerFrame::Fail {
                    job_id: job_id.to_string(),
                    error,
                    retryable,
                })));
            }
            None => {
                tracing::warn!(target: "job", job_id = %job_id, "job {job_id} finished after its session ended; failure not reported: {error}")
            }
        }
    }

    fn deliver_json(
        &mut self,
        job_id: &str,
        row: &JobRow,
        result: serde_json::Value,
        prompt: String,
    ) {
        match self.session_of(row.slot, row.gen) {
            Some(outbox) => {
                tracing::info!(target: "job", job_id = %job_id, "completed {job_id}");
                let _ = outbox.send(Outbound::Frame(Box::new(WorkerFrame::CompleteJson {
                    job_id: job_id.to_string(),
                    result,
                    prompt: Some(prompt),
                })));
            }
            None => {
                // The session that owned this claim is gone; the studio
                // released it. Keep what we have instead of confusing the
                // new session.
                let bytes = serde_json::to_vec_pretty(&result).unwrap_or_default();
                let note = match keep_result(
                    &self.cfg.results_dir(),
                    job_id,
                    "json",
                    &bytes,
                    self.cfg.results_max_mb * 1024 * 1024,
                ) {
                    Ok(p) => {
                        self.metrics.results_kept += 1;
                        format!("result kept at {}", p.display())
                    }
                    Err(e) => format!("result lost: {e}"),
                };
                tracing::warn!(target: "job", job_id = %job_id, "job {job_id} finished after its session ended; {note}");
            }
        }
    }

    /// A finished job in the status's recent list and counters.
    /// `class`: the failure's error class (empty on success).
    fn record(
        &mut self,
        job_id: &str,
        row: Option<&JobRow>,
        outcome: &Result<(), String>,
        class: &str,
    ) {
        match outcome {
            Ok(()) => self.counters.completed += 1,
            Err(_) => self.counters.failed += 1,
        }
        let label = if self.cancelled.remove(job_id) {
            "cancelled"
        } else if outcome.is_ok() {
            "completed"
        } else {
            "failed"
        };
        if let Some(r) = row {
            let gpu = self.slot_gpu(r.slot);
            self.metrics.job(metrics::JobEnd {
                kind: r.kind.as_str(),
                engine: &r.engine,
                origin: r.origin,
                outcome: label,
                reason: class,
                gpu,
            });
            for (phase, took) in r.phase_times() {
                self.metrics
                    .observe(r.kind.as_str(), phase.metric_name(), gpu, took);
            }
            self.metrics
                .observe(r.kind.as_str(), "total", gpu, r.accepted_at.elapsed());
        }
        if row.is_some_and(|r| r.engine == "gradio") {
            self.gradio_seen(outcome, class);
        }
        if self.recent.len() == snapshot::RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(Finished {
            job_id: job_id.to_string(),
            kind: row.map(|r| r.kind.as_str().to_string()).unwrap_or_default(),
            model: row.map(|r| r.model.clone()).unwrap_or_default(),
            outcome: label.into(),
            error: outcome.as_ref().err().cloned(),
            tokens: None,
            duration_ms: row.map_or(0, |r| r.accepted_at.elapsed().as_millis() as u64),
            at: crate::logship::now_ts(),
        });
    }

    /// After a job ended or freed its slot: a drain may be over, or a
    /// pinned model may load.
    fn after_job(&mut self) {
        if self.draining() {
            for (_, u, _) in self.local_queue.drain(..) {
                let _ = u.send(LocalUpdate::Done(Err(JobError::new(
                    studio_protocol::runner::ErrorClass::EngineUnavailable,
                    "the worker is shutting down",
                ))));
            }
        }
        if self.draining() && self.jobs.is_empty() {
            self.finish_drain();
        }
        self.next_local();
        if self.jobs.is_empty() {
            if let Some(reply) = self.update_hold.as_mut().and_then(Option::take) {
                let _ = reply.send(());
            }
        }
        self.load_pins();
    }

    // ---- breakers -------------------------------------------------------

    /// Counts a studio job's end towards the breakers.
    fn note_job_end(&mut self, job_id: &str, row: &JobRow, worker_caused: bool) {
        if row.gen == 0 {
            return;
        }
        let key: ModelKey = (row.engine.clone(), row.model.clone());
        let Some(breakers) = self.breakers.get_mut(row.slot) else {
            return;
        };
        if !worker_caused {
            breakers.success(&key);
            return;
        }
        let _ = job_id;
        match breakers.failure(&key, Instant::now()) {
            Trip::None => {}
            Trip::Model((engine, model), until) => {
                tracing::error!(
                    target: "worker",
                    "model {model} ({engine}) took down its runner {} times in a row: declining its offers until {}; other models keep running",
                    self.cfg.max_consecutive_failures,
                    wall_clock(until)
                );
            }
            Trip::All(models, until) => {
                tracing::error!(
                    target: "worker",
                    "{} runner failures in a row across {}: not claiming until {}; heartbeats say autoEnabled=false",
                    self.cfg.max_consecutive_failures,
                    model_names(&models),
                    wall_clock(until)
                );
                // Tell the studio now, not at the next tick.
                self.heartbeats(true);
            }
        }
    }

    // ---- config, timer, shutdown ----------------------------------------

    fn on_config(&mut self, mut c: Config) {
        if c.auto_enabled != self.cfg.auto_enabled {
            if c.auto_enabled {
                tracing::info!(target: "worker", "claiming resumed by operator");
            } else {
                tracing::info!(target: "worker", "claiming paused by operator");
            }
        }
        // Credentials in use stay as they are until restart.
        c.identity.auth_token = self
            .cfg
            .identity
            .auth_token
            .clone()
            .or(c.identity.auth_token);
        let t = Tuning::from_config(&c);
        for b in &mut self.breakers {
            b.configure(t.max_failures, t.cooldown);
        }
        self.runners.set_keep_alive(t.keep_alive);
        self.ledger.set_margin(t.vram_margin_gb);
        self.limits = t.limits;
        self.uploads.attempts = t.upload_attempts;
        self.uploads.results_dir = t.results_dir;
        self.uploads.results_max_bytes = t.results_max_bytes;
        let advertised = |c: &Config| {
            (
                c.auto_enabled,
                c.vram_threshold_gb.to_bits(),
                c.workers
                    .iter()
                    .map(|w| (w.gpu, w.vram_threshold_gb.map(f64::to_bits)))
                    .collect::<Vec<_>>(),
                c.supported_models_override.clone(),
                c.routes_images_to_gradio(),
            )
        };
        let changed = advertised(&c) != advertised(&self.cfg);
        self.cfg = c;
        self.status_dirty = true;
        if changed {
            self.heartbeats(true);
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let mut pause = false;
        for b in &mut self.breakers {
            let (models, ended) = b.expire(now);
            pause |= ended;
            for (engine, model) in &models {
                tracing::info!(target: "worker", "model {model} ({engine}) out of quarantine: taking its offers again");
            }
            if ended {
                tracing::info!(target: "worker", "failure cool-down over: claiming again");
            }
        }
        let dead = self.runners.reap_idle();
        if dead > 0 {
            self.counters.runner_deaths += dead as u64;
            for _ in 0..dead {
                self.metrics.runner_ended("exited_idle");
            }
            self.status_dirty = true;
        }
        for (r, child) in self.runners.expired(now) {
            tracing::info!(target: "engine", "stopping idle runner {} for {} (pid {}): unused for model_keep_alive_secs", r.key.engine, r.model, r.pid);
            self.metrics.unloaded(&r.key.engine);
            stop_runner(*child);
            self.status_dirty = true;
        }
        if self.drain_deadline.is_some_and(|d| now >= d) {
            self.hand_back_all();
        }
        self.load_pins();
        self.heartbeats(pause);
        self.write_status();
    }

    fn on_shutdown(&mut self) {
        if self.draining() {
            return;
        }
        self.life.send_modify(|l| l.draining = true);
        self.drain_deadline =
            Some(Instant::now() + Duration::from_secs(self.cfg.drain_timeout_secs));
        self.heartbeats(true);
        self.status_dirty = true;
        self.after_job();
    }

    /// The drain timeout passed: hand unfinished jobs back so the studio
    /// can requeue them now.
    fn hand_back_all(&mut self) {
        let held: Vec<String> = self.jobs.iter().map(|(id, _)| id.clone()).collect();
        for job_id in held {
            tracing::warn!(target: "worker", job_id = %job_id, "drain timeout: giving job {job_id} back unfinished");
            self.leases.remove(&job_id);
            let error = format!(
                "worker shut down before the job finished (drain_timeout_secs = {})",
                self.cfg.drain_timeout_secs
            );
            self.end_job(&job_id, Err(error), true, "drain_timeout");
        }
        self.finish_drain();
    }

    fn finish_drain(&mut self) {
        self.drain_deadline = None;
        if self.life.borrow().finished {
            return;
        }
        self.life.send_modify(|l| l.finished = true);
        for i in 0..self.slots.len() {
            self.to_slot(i, Outbound::Close);
        }
    }

    async fn stop(&mut self) {
        for (_, task) in std::mem::take(&mut self.tasks) {
            // Dropping a job task's runner kills its process group.
            task.abort();
        }
        let idle = self.runners.take_idle();
        let stops = idle
            .into_iter()
            .map(|(_, child)| child.shutdown(STOP_GRACE));
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            futures_util::future::join_all(stops),
        )
        .await;
        self.write_status();
    }

    // ---- status -------------------------------------------------------------

    /// The live status.
    pub fn snapshot(&self) -> Snapshot {
        let now = Instant::now();
        let sessions = self
            .slots
            .iter()
            .zip(&self.breakers)
            .enumerate()
            .map(|(i, (slot, b))| snapshot::SessionStatus {
                failure_pause: b.paused(now).map(|until| snapshot::Pause {
                    reason: self.cooldown_reason(i).unwrap_or_default(),
                    until: wall_clock(until),
                }),
                quarantines: b
                    .quarantines(now)
                    .into_iter()
                    .map(|((engine, model), until)| snapshot::Quarantine {
                        engine,
                        model,
                        until: wall_clock(until),
                    })
                    .collect(),
                threshold_gb: self.threshold(i),
                worker_id: slot.target.as_ref().map(|t| t.worker_id.clone()),
                heartbeat_age_ms: slot
                    .last_heartbeat
                    .map(|t| now.duration_since(t).as_millis() as u64),
                paused: self.paused(i),
                ..slot.status.clone()
            })
            .collect();
        Snapshot {
            at: crate::logship::now_ts(),
            pid: std::process::id(),
            version: crate::update::running_version(),
            update: self.update_state.clone(),
            sessions,
            operator_paused: !self.cfg.auto_enabled,
            control_paused: self.live_paused,
            local_queue: self
                .local_queue
                .iter()
                .filter(|(_, u, _)| !u.is_closed())
                .count(),
            draining: self.draining(),
            jobs: self
                .jobs
                .iter()
                .map(|(id, r)| snapshot::JobStatus {
                    job_id: id.clone(),
                    slot: r.slot,
                    kind: r.kind.as_str().into(),
                    engine: r.engine.clone(),
                    model: r.model.clone(),
                    phase: r.phase.as_str().into(),
                    done: r.progress.0,
                    total: r.progress.1,
                    runner_pid: r.runner.map(|x| x.pid),
                    age_ms: now.duration_since(r.accepted_at).as_millis() as u64,
                    prompt: self
                        .leases
                        .get(id)
                        .map(|(_, _, p)| p.clone())
                        .unwrap_or_default(),
                })
                .collect(),
            runners: self
                .runners
                .residents()
                .iter()
                .map(|r| snapshot::RunnerStatus {
                    pid: r.pid,
                    epoch: r.epoch,
                    engine: r.key.engine.clone(),
                    model: r.model.clone(),
                    gpu: r.key.gpu,
                    job_id: r.job.clone(),
                    loads: r.loads,
                    host_bytes: r.host_bytes,
                    device_bytes: r.device_bytes,
                    rss_bytes: crate::platform::rss_bytes(r.pid),
                    idle_ms: if r.job.is_some() {
                        0
                    } else {
                        now.duration_since(r.last_used).as_millis() as u64
                    },
                    pinned: r.pinned,
                })
                .collect(),
            gpus: self
                .ledger
                .books()
                .iter()
                .map(|b| {
                    let i = b.gpu.index;
                    snapshot::GpuStatus {
                        index: i,
                        name: b.gpu.name.clone(),
                        total_bytes: b.gpu.total_bytes,
                        free_bytes: self.ledger.probe_free(i, &self.runners).unwrap_or(0),
                        held_bytes: self.runners.held_on(i),
                        reserved_bytes: self.ledger.reserved(i),
                        available_bytes: self.ledger.available(i, &self.runners).unwrap_or(0),
                    }
                })
                .collect(),
            recent: self.recent.iter().cloned().collect(),
            engines: self.runners.catalog().names(),
            unusable: self.runners.catalog().unusable().clone(),
            gradio: self.gradio.clone(),
            counters: self.counters.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// What a gradio job's end says of the app: it answered, or it is
    /// away. An app that answered before its endpoint was known (it was
    /// down at start) is checked again in the background.
    fn gradio_seen(&mut self, outcome: &Result<(), String>, class: &str) {
        let Some(g) = &mut self.gradio else {
            return;
        };
        match outcome {
            Ok(()) => {
                g.answers = true;
                g.detail.clear();
                if g.endpoint.is_none() {
                    if let Some(cmd) = self.runners.catalog().command("gradio") {
                        let runner = cmd.program.clone();
                        let args: Vec<String> = cmd
                            .args
                            .iter()
                            .filter(|a| *a != "--stdio")
                            .cloned()
                            .collect();
                        let env = cmd.env.to_vec();
                        let cfg = self.cfg.clone();
                        let tx = self.tx.clone();
                        tokio::task::spawn_blocking(move || {
                            let checked = crate::runner::gradio::check(&runner, &args, &env, &cfg);
                            let _ = tx.send(Event::GradioChecked(checked.state));
                        });
                    }
                }
            }
            Err(e) if class == studio_protocol::runner::ErrorClass::EngineUnavailable.as_str() => {
                g.answers = false;
                g.detail = e.clone();
            }
            Err(_) => {}
        }
    }

    /// Why offers are declined `paused` during a failure cool-down.
    fn cooldown_reason(&self, slot: usize) -> Option<String> {
        let b = self.breakers.get(slot)?;
        let until = b.paused(Instant::now())?;
        Some(format!(
            "worker paused after repeated engine failures across {} until {}",
            model_names(b.paused_by()),
            wall_clock(until)
        ))
    }

    /// Writes `status.json` when something changed (best effort).
    fn write_status(&mut self) {
        let Some(path) = &self.status_path else {
            return;
        };
        if !self.status_dirty && self.jobs.is_empty() {
            return;
        }
        self.status_dirty = false;
        let tmp = path.with_extension("json.tmp");
        if let Ok(text) = serde_json::to_vec_pretty(&self.snapshot()) {
            if std::fs::write(&tmp, text).is_ok() {
                let _ = std::fs::rename(&tmp, path);
            }
        }
    }
}

/// The environment that pins a runner to `gpu`, with indices in the
/// probe's order (PCI bus order for NVIDIA).
fn pin_env(gpu: &Gpu) -> Vec<(String, String)> {
    let i = gpu.index.to_string();
    match gpu.vendor {
        Vendor::Nvidia | Vendor::Fake => vec![
            ("CUDA_DEVICE_ORDER".into(), "PCI_BUS_ID".into()),
            ("CUDA_VISIBLE_DEVICES".into(), i),
        ],
        Vendor::Amd => vec![("HIP_VISIBLE_DEVICES".into(), i)],
        Vendor::Apple => Vec::new(),
    }
}

/// How often real GPUs are probed for free memory.
const PROBE_EVERY: Duration = Duration::from_secs(3);

/// Probes the real GPUs every few seconds and reports to the scheduler.
fn spawn_probe(tx: mpsc::UnboundedSender<Event>) {
    tokio::spawn(async move {
        loop {
            let Ok(gpus) = tokio::task::spawn_blocking(crate::gpu::probe).await else {
                return;
            };
            if tx.send(Event::Probed(gpus)).is_err() {
                return;
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
    });
}

/// Stops a runner in the background (a shutdown request, then signals).
fn stop_runner(child: RunnerChild) {
    tokio::spawn(child.shutdown(STOP_GRACE));
}

/// `model (engine), …` for messages.
pub(crate) fn model_names(models: &[ModelKey]) -> String {
    models
        .iter()
        .map(|(engine, model)| format!("{model} ({engine})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A monotonic deadline as UTC wall-clock time (RFC 3339), for messages.
pub(crate) fn wall_clock(at: Instant) -> String {
    let left = at.saturating_duration_since(Instant::now());
    let t = time::OffsetDateTime::now_utc() + left;
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}
