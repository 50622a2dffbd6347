//! A local OpenAI-compatible API (`local_api_listen`, off by default) that
//! shares the rig with studio jobs: every request is a local job submitted
//! to the same scheduler (same admission, GPU ledger and kept-loaded
//! runners), never a second runner pool; it runs on the GPU where its
//! model is resident, else the one with the most memory available. While a studio job runs, requests
//! wait in a bounded queue (`local_api_queue`; full → 503 with
//! `Retry-After`); while a local job runs, studio offers are answered
//! `busy`.
//!
//! Routes (shapes as the OpenAI API, errors as `{"error": {"message",
//! "type", "code"}}`): `GET /v1/models`, `POST /v1/chat/completions`
//! (streamed or not), `POST /v1/images/generations`,
//! `POST /v1/audio/transcriptions`, `POST /v1/audio/speech`. A bearer token is required: generated
//! once into `<config>.local-api-token` (mode 0600) and kept across
//! restarts, or `local_api_token`.

mod openai;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use studio_protocol::runner::ErrorClass;
use studio_protocol::studio::{JobOfferClaim, ModelSource, Task};

use crate::config::Config;
use crate::jobs::JobData;
use crate::runner::RunEvent;
use crate::scheduler::{Handle, LocalUpdate};

/// The running API; stops when dropped.
pub struct LocalApi {
    /// The address it answers on.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LocalApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    handle: Handle,
    token: String,
    models: Vec<crate::models::named::NamedModel>,
    queue: usize,
    seq: AtomicU64,
}

/// `<config>.local-api-token` beside the config file.
pub fn token_path(config: &Path) -> PathBuf {
    let name = config
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config".into());
    config.with_file_name(format!("{name}.local-api-token"))
}

/// The API token: `local_api_token`, else the one in the token file
/// (created, mode 0600, on first use).
pub fn token(cfg: &Config, config: &Path) -> anyhow::Result<String> {
    if let Some(t) = cfg.local_api_token.as_ref().filter(|t| !t.is_empty()) {
        return Ok(t.expose().to_string());
    }
    let path = token_path(config);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let t = text.trim();
        if !t.is_empty() {
            return Ok(t.to_string());
        }
    }
    let t = format!("sw-{}", crate::register::random_hex(24));
    crate::control::write_private(&path, format!("{t}\n").as_bytes())?;
    Ok(t)
}

/// Starts the API when `local_api_listen` is set; requests go to
/// `handle`'s scheduler.
pub async fn start(
    cfg: &Config,
    config: &Path,
    handle: Handle,
) -> anyhow::Result<Option<LocalApi>> {
    let listen = cfg.local_api_listen.trim();
    if listen.is_empty() || listen.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let want: SocketAddr = listen.parse().map_err(|_| {
        anyhow::anyhow!(
            "local_api_listen = \"{listen}\" is not host:port with an IP address (e.g. 127.0.0.1:11435), or off"
        )
    })?;
    if !want.ip().is_loopback() && !cfg.local_api_allow_remote {
        bail!(
            "local_api_listen = \"{listen}\" is not a loopback address: set local_api_allow_remote = true to serve it beyond this machine"
        );
    }
    let listener = tokio::net::TcpListener::bind(want).await.map_err(|e| {
        anyhow::anyhow!(
            "local_api_listen = \"{listen}\": cannot listen there ({e}); choose another port (0 picks a free one) or set it to off"
        )
    })?;
    let addr = listener.local_addr().context("the API's address")?;
    let shared = Arc::new(Shared {
        handle,
        token: token(cfg, config)?,
        models: cfg.models.clone(),
        queue: cfg.local_api_queue,
        seq: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/images/generations", post(images))
        .route("/v1/audio/transcriptions", post(transcriptions))
        .route("/v1/audio/speech", post(speech))
        .with_state(shared);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(target: "worker", "the local API stopped: {e}");
        }
    });
    tracing::info!(target: "worker", "local OpenAI-compatible API on http://{addr}/v1 (token in {})", token_path(config).display());
    Ok(Some(LocalApi { addr, task }))
}

/// An API error: status, OpenAI error type and code, message.
struct ApiError {
    status: StatusCode,
    kind: &'static str,
    code: Option<&'static str>,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn bad(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: None,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"message": self.message, "type": self.kind, "code": self.code, "param": null}});
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            if let Ok(v) = s.to_string().parse() {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError::bad(format!(
            "the request body is not what this route takes: {}",
            r.body_text()
        ))
    }
}

fn check_token(shared: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    let got = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let same = got.len() == shared.token.len()
        && got
            .bytes()
            .zip(shared.token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            kind: "invalid_request_error",
            code: Some("invalid_api_key"),
            message: "missing or wrong API key: send the token from the file beside the config (<config>.local-api-token) as the bearer token".into(),
            retry_after: None,
        })
    }
}

/// The claim for `model` running `task`: `synthetic`, or a `[[models]]`
/// entry by name.
fn claim_for(shared: &Shared, model: &str, task: Task) -> Result<JobOfferClaim, ApiError> {
    let n = shared.seq.fetch_add(1, Ordering::Relaxed) + 1;
    let job_id = format!("api-{n}-{}", crate::register::random_hex(4));
    let mut claim = if model == "synthetic" {
        JobOfferClaim {
            job_id,
            game_id: "local".into(),
            asset_name: "local-api".into(),
            model: "synthetic".into(),
            vram_gb_estimate: 0.0,
            task: Task::Image(Default::default()),
            model_source: ModelSource::synthetic(),
        }
    } else {
        let entry = shared.models.iter().find(|m| m.name == model).ok_or_else(|| ApiError {
            status: StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            code: Some("model_not_found"),
            message: format!(
                "the model `{model}` does not exist here (GET /v1/models lists them: synthetic and the config's [[models]])"
            ),
            retry_after: None,
        })?;
        entry.claim(&job_id).map_err(|e| ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "server_error",
            code: None,
            message: e,
            retry_after: None,
        })?
    };
    claim.task = task;
    Ok(claim)
}

/// Runs `claim` through the scheduler and waits for its result.
async fn run(shared: &Shared, claim: JobOfferClaim) -> Result<JobData, ApiError> {
    let mut rx = shared
        .handle
        .submit_local_queued(claim, Some(shared.queue), false);
    loop {
        match rx.recv().await {
            Some(LocalUpdate::Event(_)) => {}
            Some(LocalUpdate::Done(Ok(data))) => return Ok(data),
            other => return Err(failure(shared, other)),
        }
    }
}

/// The API error for an update that ends a request without a result.
fn failure(shared: &Shared, update: Option<LocalUpdate>) -> ApiError {
    match update {
        Some(LocalUpdate::QueueFull) => ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "server_error",
            code: Some("queue_full"),
            message: format!(
                "the worker is busy and {} requests already wait (local_api_queue); try again shortly",
                shared.queue
            ),
            retry_after: Some(5),
        },
        Some(LocalUpdate::Done(Err(e))) => {
            let (status, kind) = match e.class {
                ErrorClass::BadInput | ErrorClass::CannotServe => {
                    (StatusCode::BAD_REQUEST, "invalid_request_error")
                }
                ErrorClass::EngineUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "server_error"),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
            };
            ApiError {
                status,
                kind,
                code: Some(e.class.as_str()),
                message: e.message,
                retry_after: None,
            }
        }
        Some(LocalUpdate::Done(Ok(_))) | Some(LocalUpdate::Event(_)) => ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "server_error",
            code: None,
            message: "unexpected answer from the scheduler".into(),
            retry_after: None,
        },
        None => ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "server_error",
            code: None,
            message: "the worker is stopping".into(),
            retry_after: None,
        },
    }
}

/// Makes the `chat.completion.chunk`s of one streamed answer.
struct Chunks {
    id: String,
    model: String,
    created: u64,
    usage: bool,
}

impl Chunks {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> String {
        json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    }

    /// What one update adds to the stream; true when the stream ends.
    fn on(
        &self,
        update: Option<LocalUpdate>,
        out: &mut std::collections::VecDeque<String>,
    ) -> bool {
        match update {
            Some(LocalUpdate::Event(RunEvent::Delta(t))) => {
                out.push_back(self.chunk(json!({"content": t}), None));
                false
            }
            Some(LocalUpdate::Event(_)) => false,
            Some(LocalUpdate::Done(Ok(data))) => {
                let result = match data {
                    JobData::Json(v) => v,
                    JobData::Bytes { .. } => json!({}),
                };
                let finish = result["choices"][0]["finish_reason"]
                    .as_str()
                    .unwrap_or("stop")
                    .to_string();
                out.push_back(self.chunk(json!({}), Some(&finish)));
                if self.usage {
                    out.push_back(
                        json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                            "model": self.model, "choices": [], "usage": result["usage"]})
                        .to_string(),
                    );
                }
                out.push_back("[DONE]".into());
                true
            }
            Some(LocalUpdate::Done(Err(e))) => {
                out.push_back(
                    json!({"error": {"message": e.message, "type": "server_error", "code": e.class.as_str()}})
                        .to_string(),
                );
                true
            }
            Some(LocalUpdate::QueueFull) | None => true,
        }
    }
}

/// A streamed chat: `chat.completion.chunk` events as text is generated,
/// then the finish reason (and usage when asked), then `[DONE]`. An end
/// before anything is generated (a full queue, a bad request) is a plain
/// error answer. A client that goes away drops the stream, and the
/// scheduler asks the runner to stop generating.
async fn chat_stream(
    shared: Arc<Shared>,
    claim: JobOfferClaim,
    model: String,
    usage: bool,
) -> Result<Response, ApiError> {
    use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
    let chunks = Chunks {
        id: format!("chatcmpl-{}", claim.job_id),
        model,
        created: now_secs(),
        usage,
    };
    let mut rx = shared
        .handle
        .submit_local_queued(claim, Some(shared.queue), true);
    let first = loop {
        match rx.recv().await {
            Some(LocalUpdate::Event(RunEvent::Delta(t))) => {
                break Some(LocalUpdate::Event(RunEvent::Delta(t)))
            }
            Some(LocalUpdate::Event(_)) => {}
            Some(LocalUpdate::Done(Ok(data))) => break Some(LocalUpdate::Done(Ok(data))),
            other => return Err(failure(&shared, other)),
        }
    };
    let mut out = std::collections::VecDeque::new();
    out.push_back(chunks.chunk(json!({"role": "assistant", "content": ""}), None));
    let done = chunks.on(first, &mut out);
    let stream = futures_util::stream::unfold(
        (rx, out, done, chunks),
        |(mut rx, mut out, mut done, chunks)| async move {
            loop {
                if let Some(next) = out.pop_front() {
                    let ev = SseEvent::default().data(next);
                    return Some((
                        Ok::<_, std::convert::Infallible>(ev),
                        (rx, out, done, chunks),
                    ));
                }
                if done {
                    return None;
                }
                done = chunks.on(rx.recv().await, &mut out);
            }
        },
    );
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn models(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_token(&shared, &headers)?;
    let mut data = vec![
        json!({"id": "synthetic", "object": "model", "created": 0, "owned_by": "studio-worker"}),
    ];
    for m in &shared.models {
        data.push(json!({"id": m.name, "object": "model", "created": 0, "owned_by": m.engine}));
    }
    Ok(Json(json!({"object": "list", "data": data})))
}

async fn chat(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Json<openai::ChatRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    check_token(&shared, &headers)?;
    let Json(req) = body?;
    let task = req.task().map_err(ApiError::bad)?;
    let claim = claim_for(&shared, &req.model, Task::Llm(task))?;
    if req.stream.unwrap_or(false) {
        let usage = req
            .stream_options
            .as_ref()
            .is_some_and(|o| o["include_usage"] == true);
        return chat_stream(shared.clone(), claim, req.model.clone(), usage).await;
    }
    let id = format!("chatcmpl-{}", claim.job_id);
    let data = run(&shared, claim).await?;
    let JobData::Json(result) = data else {
        return Err(ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "server_error",
            code: None,
            message: "the engine answered a chat with a file".into(),
            retry_after: None,
        });
    };
    Ok(Json(openai::completion(result, &id, &req.model, now_secs())).into_response())
}

async fn images(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Json<openai::ImagesRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    check_token(&shared, &headers)?;
    let Json(req) = body?;
    let (tasks, model) = req.tasks().map_err(ApiError::bad)?;
    let mut data = Vec::new();
    for task in tasks {
        let claim = claim_for(&shared, &model, Task::Image(task))?;
        match run(&shared, claim).await? {
            JobData::Bytes { data: bytes, .. } => {
                use base64::Engine as _;
                data.push(
                    json!({"b64_json": base64::engine::general_purpose::STANDARD.encode(bytes)}),
                );
            }
            JobData::Json(_) => {
                return Err(ApiError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    kind: "server_error",
                    code: None,
                    message: "the engine answered an image request with JSON".into(),
                    retry_after: None,
                })
            }
        }
    }
    Ok(Json(json!({"created": now_secs(), "data": data})))
}

/// `POST /v1/audio/transcriptions` (multipart): `file`, `model`,
/// `language`, `prompt`, `response_format` (json, text, verbose_json),
/// `timestamp_granularities[]`.
async fn transcriptions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    mut form: axum::extract::Multipart,
) -> Result<Response, ApiError> {
    check_token(&shared, &headers)?;
    let dir = tempfile::tempdir().map_err(|e| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        kind: "server_error",
        code: None,
        message: format!("no room for the upload: {e}"),
        retry_after: None,
    })?;
    let mut fields = openai::TranscriptionForm::default();
    let mut audio: Option<std::path::PathBuf> = None;
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| ApiError::bad(format!("the multipart body does not read: {e}")))?
    {
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            let file_name = field
                .file_name()
                .map(|n| crate::jobs::safe_name(n, "audio"))
                .unwrap_or_else(|| "audio".into());
            let bytes = field
                .bytes()
                .await
                .map_err(|e| ApiError::bad(format!("field `file`: {e}")))?;
            let path = dir.path().join(file_name);
            std::fs::write(&path, &bytes).map_err(|e| ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                kind: "server_error",
                code: None,
                message: format!("cannot keep the upload: {e}"),
                retry_after: None,
            })?;
            audio = Some(path);
        } else {
            let value = field
                .text()
                .await
                .map_err(|e| ApiError::bad(format!("field `{name}`: {e}")))?;
            fields.set(&name, value);
        }
    }
    let audio = audio.ok_or_else(|| ApiError::bad("the form has no `file`"))?;
    let (task, format) = fields
        .task(&audio.to_string_lossy())
        .map_err(ApiError::bad)?;
    let model = fields.model.clone().unwrap_or_else(|| "synthetic".into());
    let claim = claim_for(&shared, &model, Task::AudioStt(task))?;
    let JobData::Json(result) = run(&shared, claim).await? else {
        return Err(ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "server_error",
            code: None,
            message: "the engine answered a transcription with a file".into(),
            retry_after: None,
        });
    };
    drop(dir);
    Ok(match format {
        openai::TranscriptFormat::Text => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{}\n", result["text"].as_str().unwrap_or_default()),
        )
            .into_response(),
        openai::TranscriptFormat::Json => Json(json!({"text": result["text"]})).into_response(),
        openai::TranscriptFormat::Verbose => {
            Json(openai::verbose_transcript(&result)).into_response()
        }
    })
}

/// `POST /v1/audio/speech`: `model`, `input`, `voice`, `speed`,
/// `response_format` (wav, mp3, opus, flac); the audio bytes back.
async fn speech(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Json<openai::SpeechRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    check_token(&shared, &headers)?;
    let Json(req) = body?;
    let task = req.task().map_err(ApiError::bad)?;
    let ext = task.effective_ext().to_string();
    let claim = claim_for(&shared, &req.model, Task::AudioTts(task))?;
    match run(&shared, claim).await? {
        JobData::Bytes { data, .. } => Ok((
            [(
                header::CONTENT_TYPE,
                studio_protocol::studio::http::content_type_for_ext(&ext),
            )],
            data,
        )
            .into_response()),
        JobData::Json(_) => Err(ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "server_error",
            code: None,
            message: "the engine answered a speech request with JSON".into(),
            retry_after: None,
        }),
    }
}

/// `studio-worker serve`: the local API (and the metrics endpoint) on a
/// scheduler of its own, with no studio session. Refuses to start while a
/// worker already runs with this config, or while another `run` or
/// `serve` holds its GPU ([`crate::gpu::claim`]: one scheduler per GPU). SIGTERM
/// or Ctrl-C drains: the running request finishes, then exit 0.
pub async fn serve(config_path: PathBuf) -> anyhow::Result<()> {
    let cfg = Config::load(&config_path)?;
    if let Some(a) =
        crate::control::client::ask(&config_path, reqwest::Method::GET, "/healthz").await?
    {
        let pid = crate::control::read_run_file(&config_path).map_or(0, |r| r.pid);
        bail!(
            "a worker (pid {pid}) already runs with {} (it answered: {}): one scheduler per GPU; stop it first, or set local_api_listen for it",
            config_path.display(),
            a.body.trim()
        );
    }
    let listen = cfg.local_api_listen.trim();
    if listen.is_empty() || listen.eq_ignore_ascii_case("off") {
        bail!("serve needs local_api_listen in the config (e.g. \"127.0.0.1:11435\")");
    }
    let gpus = crate::gpu::probe();
    let gpu = crate::settings::largest_gpu(&gpus);
    let _claims = crate::gpu::claim::claim(
        &gpus,
        &gpu.into_iter().collect::<Vec<_>>(),
        "serve",
        &config_path,
    )?;
    let mut signals = crate::platform::StopSignals::new()?;
    let endpoint = crate::control::start(&cfg, &config_path).await?;
    let (handle, mut life, task) = crate::scheduler::start(crate::scheduler::Setup {
        status_path: Some(crate::state::status_path_for(&config_path)),
        host: crate::capabilities::HostFacts::with_gpus(&gpus),
        catalog: crate::runner::EngineCatalog::discover(&cfg),
        slots: vec![crate::scheduler::SlotSetup {
            gpu,
            table: None,
            target: None,
        }],
        gpus,
        cfg: cfg.clone(),
    });
    if let Some(e) = &endpoint {
        e.attach(handle.clone());
    }
    let api = start(&cfg, &config_path, handle.clone()).await?;
    if let (Some(e), Some(a)) = (&endpoint, &api) {
        e.note_local_api(a.addr);
    }
    signals.recv().await;
    tracing::info!(target: "worker", "signal received: draining (the running request finishes), send again to exit at once");
    handle.send(crate::scheduler::Event::Shutdown);
    tokio::select! {
        _ = life.wait_for(|l| l.finished) => {}
        _ = signals.recv() => {
            tracing::warn!(target: "worker", "second signal: exiting now");
            crate::runner::kill_all_groups();
        }
    }
    drop(api);
    handle.stop().await;
    let _ = task.await;
    drop(endpoint);
    Ok(())
}
