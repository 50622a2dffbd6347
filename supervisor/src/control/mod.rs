//! The running worker's local HTTP endpoint (`metrics_listen`, default
//! `127.0.0.1:9464`, `off` to disable): `GET /metrics` (Prometheus text,
//! [`prom`]), `GET /status` (the snapshot as JSON), `GET /healthz`, and,
//! token-protected: `POST /control/{pause,resume,drain,check-update}`,
//! `GET /logs?after=N` (the last 500 log entries), `GET`/`PUT
//! /config` (the config with its secrets as `***`; an edit is checked as
//! `run` checks the file and written by the worker, the config file's one
//! writer) and, while `run` waits for credentials, the register routes
//! ([`registration`]). The desktop window is a client of these routes.
//!
//! Every answer is read from the scheduler's snapshot or sent to it as an
//! event; this module keeps no state of its own beyond where `run` is
//! (still registering, and which identities wait, or running with a
//! scheduler).
//!
//! At start `run` writes a run file beside the config (`<config>.run.json`,
//! mode 0600: the bound address, a fresh random token, the pid) that the
//! CLI reads, so workers with different configs on one machine never
//! reach each other. A non-loopback address needs `metrics_allow_remote =
//! true`, and then every route needs the token.

pub mod client;
pub mod prom;
mod registration;
pub mod status_text;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{bail, Context as _};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::scheduler::{Event, Handle};

/// What the run file says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFile {
    /// The worker's process id.
    pub pid: u32,
    /// `host:port` it answers on.
    pub addr: String,
    /// The bearer token for the control routes.
    pub token: String,
    /// `host:port` of the local OpenAI-compatible API, when it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_api: Option<String>,
}

/// `<config>.run.json` beside the config file.
pub fn run_file_path(config: &Path) -> PathBuf {
    let name = config
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config".into());
    config.with_file_name(format!("{name}.run.json"))
}

/// Reads the run file of the worker running with `config`, if any.
pub fn read_run_file(config: &Path) -> Option<RunFile> {
    let text = std::fs::read(run_file_path(config)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Where `run` is.
enum Stage {
    /// Not running jobs yet (registering, waiting for approval): why.
    Starting(String),
    /// The scheduler runs.
    Running(Handle),
}

struct Shared {
    stage: RwLock<Stage>,
    /// The config file this worker runs with.
    config_path: PathBuf,
    token: String,
    /// Every route needs the token (a non-loopback address).
    guard_all: bool,
    /// The identities `run` still registers, while it does.
    waiting: RwLock<registration::Waiting>,
}

/// The endpoint while `run` holds it; dropping it removes the run file.
pub struct Endpoint {
    shared: Arc<Shared>,
    run_file: PathBuf,
    /// The address it answers on.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.run_file);
    }
}

impl Endpoint {
    /// From now on answers come from the scheduler behind `handle`.
    pub fn attach(&self, handle: Handle) {
        if let Ok(mut s) = self.shared.stage.write() {
            *s = Stage::Running(handle);
        }
    }

    /// Records the local API's address in the run file.
    pub fn note_local_api(&self, addr: SocketAddr) {
        let run = RunFile {
            pid: std::process::id(),
            addr: self.addr.to_string(),
            token: self.shared.token.clone(),
            local_api: Some(addr.to_string()),
        };
        if let Ok(bytes) = serde_json::to_vec_pretty(&run) {
            if let Err(e) = write_private(&self.run_file, &bytes) {
                tracing::warn!(target: "worker", "run file: {e:#}");
            }
        }
    }

    /// While waiting for credentials: which identities lack them (none:
    /// done) and what the last step ran into, for `/registration`.
    pub fn awaiting(&self, tables: &[Option<u32>], trouble: Option<String>) {
        if let Ok(mut w) = self.shared.waiting.write() {
            w.tables = tables.to_vec();
            w.trouble = trouble;
        }
    }

    /// While not running yet: what `/healthz` and `/status` say.
    pub fn starting(&self, why: &str) {
        if let Ok(mut s) = self.shared.stage.write() {
            if matches!(*s, Stage::Starting(_)) {
                *s = Stage::Starting(why.to_string());
            }
        }
    }
}

/// The address `metrics_listen` names, `None` for `off`; a non-loopback
/// address without `metrics_allow_remote` is refused.
pub fn listen_addr(cfg: &Config) -> anyhow::Result<Option<SocketAddr>> {
    let listen = cfg.metrics_listen.trim();
    if listen.eq_ignore_ascii_case("off") || listen.is_empty() {
        return Ok(None);
    }
    let addr: SocketAddr = listen.parse().map_err(|_| {
        anyhow::anyhow!(
            "metrics_listen = \"{listen}\" is not host:port with an IP address (e.g. 127.0.0.1:9464), or off"
        )
    })?;
    if !addr.ip().is_loopback() && !cfg.metrics_allow_remote {
        bail!(
            "metrics_listen = \"{listen}\" is not a loopback address: set metrics_allow_remote = true to serve it beyond this machine (every route then needs the control token)"
        );
    }
    Ok(Some(addr))
}

/// Binds `metrics_listen`, writes the run file and serves; `None` when
/// the key is `off`. An address already taken is an error naming the key.
pub async fn start(cfg: &Config, config_path: &Path) -> anyhow::Result<Option<Endpoint>> {
    let Some(want) = listen_addr(cfg)? else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(want).await.map_err(|e| {
        anyhow::anyhow!(
            "metrics_listen = \"{}\": cannot listen there ({e}); choose another port (0 picks a free one) or set it to off",
            cfg.metrics_listen.trim()
        )
    })?;
    let addr = listener.local_addr().context("the endpoint's address")?;
    let token = match &cfg.metrics_token {
        Some(t) if !t.is_empty() => t.expose().to_string(),
        _ => crate::register::random_hex(32),
    };
    let shared = Arc::new(Shared {
        stage: RwLock::new(Stage::Starting("starting".into())),
        config_path: config_path.to_path_buf(),
        token: token.clone(),
        guard_all: !addr.ip().is_loopback(),
        waiting: RwLock::default(),
    });
    let run_file = run_file_path(config_path);
    write_private(
        &run_file,
        &serde_json::to_vec_pretty(&RunFile {
            pid: std::process::id(),
            addr: addr.to_string(),
            token,
            local_api: None,
        })?,
    )?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/healthz", get(healthz))
        .route("/control/pause", post(pause))
        .route("/control/resume", post(resume))
        .route("/control/drain", post(drain))
        .route("/control/check-update", post(check_update))
        .route("/logs", get(logs))
        .route("/config", get(config_get).put(config_put))
        .route("/registration", get(registration::get))
        .route("/control/register", post(registration::register))
        .route(
            "/control/request-approval",
            post(registration::request_approval),
        )
        .with_state(shared.clone());
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(target: "worker", "the metrics endpoint stopped: {e}");
        }
    });
    tracing::info!(target: "worker", "metrics and control on http://{addr} (/metrics, /status, /healthz)");
    Ok(Some(Endpoint {
        shared,
        run_file,
        addr,
        task,
    }))
}

/// Writes `bytes` to `path` readable by this user only, atomically.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        open.mode(0o600);
    }
    let mut f = open
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::io::Write::write_all(&mut f, bytes)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    let Some(got) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    // Compare every byte whatever the first difference.
    got.len() == shared.token.len()
        && got
            .bytes()
            .zip(shared.token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn refused() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        "missing or wrong control token (see the run file beside the config)\n",
    )
        .into_response()
}

fn handle_of(shared: &Shared) -> Result<Handle, String> {
    match &*shared
        .stage
        .read()
        .map_err(|_| "state lock poisoned".to_string())?
    {
        Stage::Running(h) => Ok(h.clone()),
        Stage::Starting(why) => Err(why.clone()),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if shared.guard_all && !authorized(&shared, &headers) {
        return refused();
    }
    let extra = prom::Extra {
        log_lines_dropped: crate::logship::dropped_total(),
    };
    let snap = match handle_of(&shared) {
        Ok(h) => match h.snapshot().await {
            Some(s) => s,
            None => return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response(),
        },
        // Not running yet: the build and the zero totals.
        Err(_) => crate::scheduler::snapshot::Snapshot {
            version: crate::update::running_version(),
            ..Default::default()
        },
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        prom::render(&snap, &extra),
    )
        .into_response()
}

async fn status(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if shared.guard_all && !authorized(&shared, &headers) {
        return refused();
    }
    match handle_of(&shared) {
        Ok(h) => match h.snapshot().await {
            Some(s) => axum::Json(s).into_response(),
            None => (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response(),
        },
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"state": "starting", "detail": why})),
        )
            .into_response(),
    }
}

async fn healthz(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if shared.guard_all && !authorized(&shared, &headers) {
        return refused();
    }
    let snap = match handle_of(&shared) {
        Ok(h) => h.snapshot().await,
        Err(why) => return (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    };
    let Some(s) = snap else {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response();
    };
    let (ok, body) = health(&s);
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, format!("{body}\n")).into_response()
}

/// Healthy when every session is connected (with none configured: the
/// scheduler answers) and not all of them cool down; paused is healthy.
pub fn health(s: &crate::scheduler::snapshot::Snapshot) -> (bool, String) {
    for x in &s.sessions {
        if x.state != "connected" {
            let detail = x
                .detail
                .as_deref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            return (false, format!("session {} {}{detail}", x.slot, x.state));
        }
    }
    if !s.sessions.is_empty() && s.sessions.iter().all(|x| x.failure_pause.is_some()) {
        let why = s.sessions[0]
            .failure_pause
            .as_ref()
            .map(|p| p.reason.clone())
            .unwrap_or_default();
        return (false, format!("cooling down: {why}"));
    }
    let paused = if s.control_paused {
        " (paused by pause; resume to take offers)"
    } else if s.operator_paused {
        " (paused: auto_enabled = false)"
    } else if s.draining {
        " (draining)"
    } else {
        ""
    };
    (true, format!("ok{paused}"))
}

async fn control(shared: Arc<Shared>, headers: HeaderMap, ev: Event, said: &str) -> Response {
    if !authorized(&shared, &headers) {
        return refused();
    }
    match handle_of(&shared) {
        Ok(h) => {
            h.send(ev);
            (StatusCode::OK, format!("{said}\n")).into_response()
        }
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not running jobs yet: {why}\n"),
        )
            .into_response(),
    }
}

async fn pause(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    control(
        shared,
        headers,
        Event::Pause(true),
        "paused: offers are rejected until resume",
    )
    .await
}

async fn resume(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    control(
        shared,
        headers,
        Event::Pause(false),
        "resumed: taking offers",
    )
    .await
}

async fn drain(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    control(
        shared,
        headers,
        Event::Shutdown,
        "draining: the running job finishes and is delivered, then the worker exits",
    )
    .await
}

/// `GET /logs?after=N`: the entries after number N (0 or none: the last
/// 500), and `last`, the number to ask after next time.
async fn logs(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<std::collections::BTreeMap<String, String>>,
) -> Response {
    if !authorized(&shared, &headers) {
        return refused();
    }
    let after = q.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
    let (lines, last) = crate::logship::tail(after);
    let entries: Vec<serde_json::Value> = lines
        .into_iter()
        .map(|(seq, e)| {
            let mut v = serde_json::to_value(&e).unwrap_or_default();
            v["seq"] = seq.into();
            v
        })
        .collect();
    axum::Json(serde_json::json!({"entries": entries, "last": last})).into_response()
}

/// `GET /config`: the file's config, secrets as `***`, its path and the
/// keys a running worker applies without a restart.
async fn config_get(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return refused();
    }
    match Config::load(&shared.config_path) {
        Ok(cfg) => axum::Json(serde_json::json!({
            "path": shared.config_path.display().to_string(),
            "config": cfg.redacted(),
            "live": crate::config::LIVE_KEYS,
        }))
        .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(serde_json::json!({"error": {"key": "", "message": e.to_string()}})),
        )
            .into_response(),
    }
}

/// `PUT /config` with a JSON object of top-level keys: checked, then
/// written (mode 0600). Answers the keys that changed and which of them
/// wait for a restart; a bad value is 400 naming its key, and nothing is
/// written.
async fn config_put(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !authorized(&shared, &headers) {
        return refused();
    }
    let bad = |key: &str, message: String| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({"error": {"key": key, "message": message}})),
        )
            .into_response()
    };
    let patch: serde_json::Map<String, serde_json::Value> = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return bad(
                "",
                format!("the body is not a JSON object of config keys: {e}"),
            )
        }
    };
    let current = match Config::load(&shared.config_path) {
        Ok(c) => c,
        Err(e) => return bad("", e.to_string()),
    };
    let next = match current.patched(&patch) {
        Ok(n) => n,
        Err(e) => return bad(&e.key, e.message),
    };
    let (before, after) = (
        serde_json::to_value(&current).unwrap_or_default(),
        serde_json::to_value(&next).unwrap_or_default(),
    );
    let changed: Vec<String> = after
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, v)| before.get(k.as_str()) != Some(*v))
        .map(|(k, _)| k.clone())
        .chain(
            before
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| after.get(k.as_str()).is_none())
                .map(|(k, _)| k.clone()),
        )
        .collect();
    if let Err(e) = next.save(&shared.config_path) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(serde_json::json!({"error": {"key": "", "message": e.to_string()}})),
        )
            .into_response();
    }
    let restart: Vec<&String> = changed
        .iter()
        .filter(|k| !crate::config::LIVE_KEYS.contains(&k.as_str()))
        .collect();
    tracing::info!(target: "worker", "config edited through the control endpoint: {}", changed.join(", "));
    axum::Json(serde_json::json!({"changed": changed, "restart": restart})).into_response()
}

/// `POST /control/check-update`: the worker's own update check, as
/// `studio-worker check-update` prints it.
async fn check_update(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return refused();
    }
    let cfg = match Config::load(&shared.config_path) {
        Ok(c) => c,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    };
    match crate::update::check_update_report(&cfg).await {
        Ok(text) => (StatusCode::OK, text).into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, format!("{e:#}\n")).into_response(),
    }
}
