//! The fake studio.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Notify};

use crate::bounds;

/// Something the studio saw.
#[derive(Debug, Clone)]
pub enum Event {
    /// A WebSocket session was upgraded.
    Connected {
        /// The Authorization header of the upgrade.
        authorization: String,
        /// The subprotocol the worker asked for.
        protocol: String,
    },
    /// A frame from the worker (text frames as JSON).
    Frame(Value),
    /// The worker's socket ended; the close code if a close frame came.
    Closed(Option<u16>),
    /// A multipart upload.
    Upload(Upload),
    /// A bootstrap registration body.
    Register(Value),
    /// An approval request body.
    RegisterRequest(Value),
    /// An approval poll: the request id and the answer's status code.
    RegisterPoll(String, u16),
    /// A GET of a served file: its name, the Range header, the status.
    FileGet {
        /// File name.
        name: String,
        /// The `Range` header, if any.
        range: Option<String>,
        /// Status answered.
        status: u16,
    },
}

/// A file served at `/files/<name>`.
#[derive(Clone, Default)]
struct ServedFile {
    /// Shared, so a multi-GB model is never copied per request.
    bytes: Bytes,
    /// The next full GET sends this many bytes, then drops the connection.
    cut_after: Option<usize>,
    /// Pause between 64 KiB chunks.
    throttle: Option<Duration>,
}

/// The operator's decision on an approval request.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Not decided.
    Pending,
    /// Approved: the worker gets the fake studio's identity.
    Approved,
    /// Approved as another identity (id, token), one added with
    /// [`FakeStudio::add_identity`].
    ApprovedAs(String, String),
    /// Rejected with a reason.
    Rejected(String),
}

/// One multipart `complete` upload.
#[derive(Debug, Clone)]
pub struct Upload {
    /// Job id in the URL.
    pub job_id: String,
    /// Worker id in the URL.
    pub worker_id: String,
    /// The `prompt` field.
    pub prompt: String,
    /// The `ext` field.
    pub ext: String,
    /// The file part's name.
    pub part_name: String,
    /// The file part's file name.
    pub filename: String,
    /// The file part's content type.
    pub content_type: String,
    /// The bytes.
    pub bytes: Vec<u8>,
    /// When it arrived.
    pub at: Instant,
}

enum Command {
    Text(String),
    Binary(Vec<u8>),
    Close(u16, String),
}

/// Offers fed one after another: the next goes out when the previous one
/// is completed or failed (as the real studio does).
struct Feed {
    queue: VecDeque<Value>,
    sent_at: HashMap<String, Instant>,
    latencies: Vec<Duration>,
}

#[derive(Default)]
struct Inner {
    worker_id: String,
    token: String,
    /// More identities (one per GPU of a multi-GPU worker): id → token.
    others: HashMap<String, String>,
    /// The live session of each other identity.
    other_sessions: HashMap<String, mpsc::UnboundedSender<Command>>,
    bootstrap_token: String,
    events: Vec<(Instant, Event)>,
    session: Option<mpsc::UnboundedSender<Command>>,
    sessions: usize,
    upload_statuses: VecDeque<u16>,
    files: HashMap<String, ServedFile>,
    feed: Option<Feed>,
    ack_heartbeats: bool,
    record_frames: bool,
    /// requestId → (sha256 of the secret, decision).
    requests: HashMap<String, (String, Decision)>,
    requests_made: usize,
}

struct Shared {
    inner: Mutex<Inner>,
    notify: Notify,
    kill: watch::Sender<u64>,
}

impl Inner {
    /// The token of identity `worker_id`, if the studio knows it.
    fn token_of(&self, worker_id: &str) -> Option<&str> {
        if worker_id == self.worker_id {
            return Some(&self.token);
        }
        self.others.get(worker_id).map(String::as_str)
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, e: Event) {
        let mut i = self.lock();
        let record = i.record_frames || !matches!(e, Event::Frame(_));
        if record {
            i.events.push((Instant::now(), e));
        }
        drop(i);
        self.notify.notify_waiters();
    }
}

/// A running fake studio.
pub struct FakeStudio {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

/// The identity the fake studio accepts.
pub const WORKER_ID: &str = "w-test-1";
/// The auth token it accepts.
pub const TOKEN: &str = "tok-test-secret-0123456789";
/// The bootstrap token it accepts.
pub const BOOTSTRAP: &str = "boot-test-secret";

impl FakeStudio {
    /// Starts on a free loopback port.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("addr")).await
    }

    /// Starts on `addr` (to come back on the same port after an outage).
    pub async fn start_on(addr: SocketAddr) -> Self {
        let (kill, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                worker_id: WORKER_ID.into(),
                token: TOKEN.into(),
                bootstrap_token: BOOTSTRAP.into(),
                ack_heartbeats: true,
                record_frames: true,
                ..Default::default()
            }),
            notify: Notify::new(),
            kill,
        });
        let app = Router::new()
            .route("/graphics/api/workers/{id}/connect", get(connect))
            .route(
                "/graphics/api/workers/{id}/jobs/{job}/complete",
                post(complete),
            )
            .route("/graphics/api/workers/register", post(register))
            .route(
                "/graphics/api/workers/register-request",
                post(register_request),
            )
            .route(
                "/graphics/api/workers/register-requests/{id}",
                get(register_poll),
            )
            .route("/files/{name}", get(file))
            // Uploads as large as the worker sends (long speech, video).
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(shared.clone());
        let listener = bind_retry(addr).await;
        let addr = listener.local_addr().expect("local addr");
        // No Nagle: small frames must not wait for delayed ACKs.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            shared,
            server,
        }
    }

    /// The base URL to put in the worker's config.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// URL of a file served by [`FakeStudio::serve_file`].
    pub fn file_url(&self, name: &str) -> String {
        format!("http://{}/files/{name}", self.addr)
    }

    /// Serves `bytes` at `/files/<name>` (with Range support).
    pub fn serve_file(&self, name: &str, bytes: impl Into<Bytes>) {
        self.shared.lock().files.insert(
            name.into(),
            ServedFile {
                bytes: bytes.into(),
                ..Default::default()
            },
        );
    }

    /// Serves the file at `path` under its own name and returns its
    /// `modelSource.files` entry (role, URL, size and SHA-256).
    pub fn serve_model_file(&self, role: &str, path: &std::path::Path) -> Value {
        use sha2::Digest;
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let entry = serde_json::json!({"role": role, "url": self.file_url(&name), "filename": name, "approxBytes": bytes.len(), "sha256": hex::encode(sha2::Sha256::digest(&bytes))});
        self.serve_file(&name, bytes);
        entry
    }

    /// The runners' `model loaded … (load #N…)` lines shipped up to the
    /// result of `job_id` (see [`FakeStudio::shipped_logs_through`]).
    pub async fn loads_through(&self, job_id: &str) -> Vec<String> {
        let mut lines = self.shipped_logs_through(job_id).await;
        lines.retain(|m| m.contains("(load #"));
        lines
    }

    /// The next full download of `name` breaks after `bytes` bytes.
    pub fn cut_file_after(&self, name: &str, bytes: usize) {
        if let Some(f) = self.shared.lock().files.get_mut(name) {
            f.cut_after = Some(bytes);
        }
    }

    /// Slows downloads of `name`: `pause` between 64 KiB chunks.
    pub fn throttle_file(&self, name: &str, pause: Duration) {
        if let Some(f) = self.shared.lock().files.get_mut(name) {
            f.throttle = Some(pause);
        }
    }

    /// GETs of a served file so far: (Range header, status).
    pub fn file_gets(&self, name: &str) -> Vec<(Option<String>, u16)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::FileGet {
                    name: n,
                    range,
                    status,
                } if n == name => Some((range, status)),
                _ => None,
            })
            .collect()
    }

    /// The next uploads answer these statuses (then 200).
    pub fn fail_uploads_with(&self, statuses: &[u16]) {
        self.shared.lock().upload_statuses.extend(statuses);
    }

    /// Decides an approval request.
    pub fn decide(&self, request_id: &str, decision: Decision) {
        if let Some(r) = self.shared.lock().requests.get_mut(request_id) {
            r.1 = decision;
        }
    }

    /// Forgets every approval request (the next poll gets 404).
    pub fn forget_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Stop or resume acking heartbeats.
    pub fn ack_heartbeats(&self, on: bool) {
        self.shared.lock().ack_heartbeats = on;
    }

    /// Stop recording worker frames (for benchmarks).
    pub fn record_frames(&self, on: bool) {
        self.shared.lock().record_frames = on;
    }

    /// Number of sessions upgraded so far.
    pub fn sessions(&self) -> usize {
        self.shared.lock().sessions
    }

    /// Everything seen so far.
    pub fn events(&self) -> Vec<Event> {
        self.shared
            .lock()
            .events
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// When the first worker frame of `ty` for `job_id` arrived.
    pub fn frame_time(&self, ty: &str, job_id: &str) -> Option<Instant> {
        self.shared.lock().events.iter().find_map(|(t, e)| match e {
            Event::Frame(v) if v["type"] == ty && v["jobId"] == job_id => Some(*t),
            _ => None,
        })
    }

    /// When the upload of `job_id` arrived.
    pub fn upload_time(&self, job_id: &str) -> Option<Instant> {
        self.shared.lock().events.iter().find_map(|(_, e)| match e {
            Event::Upload(u) if u.job_id == job_id => Some(u.at),
            _ => None,
        })
    }

    /// How many worker frames of one `type` so far (without copying them).
    pub fn count_frames(&self, ty: &str) -> usize {
        self.shared
            .lock()
            .events
            .iter()
            .filter(|(_, e)| matches!(e, Event::Frame(v) if v["type"] == ty))
            .count()
    }

    /// Worker frames of one `type`.
    pub fn frames(&self, ty: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Frame(v) if v["type"] == ty => Some(v),
                _ => None,
            })
            .collect()
    }

    /// Uploads so far.
    pub fn uploads(&self) -> Vec<Upload> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Upload(u) => Some(u),
                _ => None,
            })
            .collect()
    }

    /// Waits until `pred` matches an event; panics with the event log after
    /// `timeout`.
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl FnMut(&Event) -> Option<T>,
    ) -> T {
        self.wait_for_since(0, timeout, what, pred).await
    }

    /// How many events so far (for [`FakeStudio::wait_for_since`]).
    pub fn mark(&self) -> usize {
        self.shared.lock().events.len()
    }

    /// Like [`FakeStudio::wait_for`], looking only at events after `mark`.
    pub async fn wait_for_since<T>(
        &self,
        mark: usize,
        timeout: Duration,
        what: &str,
        mut pred: impl FnMut(&Event) -> Option<T>,
    ) -> T {
        self.wait_until(timeout, what, |events| {
            events.iter().skip(mark).find_map(|(_, e)| pred(e))
        })
        .await
    }

    /// Waits until `check`, shown every event so far each time one
    /// arrives, returns `Some`; panics with the event log after `timeout`.
    pub async fn wait_until<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&[(Instant, Event)]) -> Option<T>,
    ) -> T {
        self.wait_state(timeout, what, |i| check(&i.events)).await
    }

    async fn wait_state<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&Inner) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(found) = check(&self.shared.lock()) {
                return found;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let log: Vec<String> = self
                    .events()
                    .iter()
                    .map(|e| format!("{e:?}").chars().take(300).collect())
                    .collect();
                panic!(
                    "timed out after {timeout:?} waiting for {what}; events:\n{}",
                    log.join("\n")
                );
            }
        }
    }

    /// Every shipped log message, once the worker has shipped all it logged
    /// before its `completeJson` or `fail` for `job_id`. A runner's lines
    /// about a job are queued before the job's result frame, and log
    /// batches and results leave through one socket in order, so the first
    /// `logBatch` after that frame closes the set (the studio's ack always
    /// makes the worker log one more line, so that batch comes).
    pub async fn shipped_logs_through(&self, job_id: &str) -> Vec<String> {
        let what = format!("a logBatch after the result of {job_id}");
        self.wait_until(bounds::event(), &what, |events| {
            let result = events.iter().position(|(_, e)| {
                matches!(e, Event::Frame(v) if (v["type"] == "completeJson" || v["type"] == "fail") && v["jobId"] == job_id)
            })?;
            let batch = events
                .iter()
                .skip(result + 1)
                .position(|(_, e)| matches!(e, Event::Frame(v) if v["type"] == "logBatch"))?;
            let messages = events[..=result + 1 + batch]
                .iter()
                .filter_map(|(_, e)| match e {
                    Event::Frame(v) if v["type"] == "logBatch" => v["entries"].as_array(),
                    _ => None,
                })
                .flatten()
                .filter_map(|e| e["message"].as_str().map(str::to_string))
                .collect();
            Some(messages)
        })
        .await
    }

    /// Waits for a heartbeat after `mark` whose `autoEnabled` is `enabled`.
    pub async fn wait_heartbeat(&self, mark: usize, enabled: bool) -> Value {
        let what = format!("a heartbeat with autoEnabled={enabled}");
        self.wait_for_since(mark, bounds::event(), &what, |e| match e {
            Event::Frame(v)
                if v["type"] == "heartbeat" && v["capabilities"]["autoEnabled"] == enabled =>
            {
                Some(v.clone())
            }
            _ => None,
        })
        .await
    }

    /// Waits for a worker frame of `ty` about `job_id` (any job if empty)
    /// that needs no real engine work (see [`bounds::event`]).
    pub async fn wait_frame(&self, ty: &str, job_id: &str) -> Value {
        self.wait_frame_within(ty, job_id, bounds::event()).await
    }

    /// [`FakeStudio::wait_frame`] with its own bound, for real engine work
    /// ([`bounds::engine_work`]).
    pub async fn wait_frame_within(&self, ty: &str, job_id: &str, bound: Duration) -> Value {
        self.wait_for(bound, &format!("{ty} for {job_id}"), |e| match e {
            Event::Frame(v) if v["type"] == ty && (job_id.is_empty() || v["jobId"] == job_id) => {
                Some(v.clone())
            }
            _ => None,
        })
        .await
    }

    /// Waits for the upload of `job_id` (a job with no real engine work).
    pub async fn wait_upload(&self, job_id: &str) -> Upload {
        self.wait_upload_within(job_id, bounds::event()).await
    }

    /// [`FakeStudio::wait_upload`] with its own bound.
    pub async fn wait_upload_within(&self, job_id: &str, bound: Duration) -> Upload {
        self.wait_for(bound, &format!("upload of {job_id}"), |e| match e {
            Event::Upload(u) if u.job_id == job_id => Some(u.clone()),
            _ => None,
        })
        .await
    }

    /// Waits for the `n`th session to be welcomed (1-based).
    pub async fn wait_session(&self, n: usize) {
        let what = format!("session {n} (sessions so far: {})", self.sessions());
        self.wait_state(bounds::event(), &what, |i| {
            (i.sessions >= n && i.session.is_some()).then_some(())
        })
        .await
    }

    /// Accepts another identity besides [`WORKER_ID`] (a multi-GPU worker
    /// holds one session per GPU, each with its own identity).
    pub fn add_identity(&self, worker_id: &str, token: &str) {
        self.shared
            .lock()
            .others
            .insert(worker_id.into(), token.into());
    }

    /// Waits until identity `worker_id` (added with
    /// [`FakeStudio::add_identity`]) has a welcomed session.
    pub async fn wait_session_of(&self, worker_id: &str) {
        let what = format!("a session of {worker_id}");
        self.wait_state(bounds::event(), &what, |i| {
            i.other_sessions.contains_key(worker_id).then_some(())
        })
        .await
    }

    /// Sends an offer for `claim` to identity `worker_id`'s session.
    pub fn offer_to(&self, worker_id: &str, claim: Value) {
        let tx = self.shared.lock().other_sessions.get(worker_id).cloned();
        let Some(tx) = tx else {
            panic!("no live session of {worker_id}")
        };
        let _ = tx.send(Command::Text(
            json!({"type": "offer", "claim": claim}).to_string(),
        ));
    }

    fn command(&self, c: Command) {
        let tx = self.shared.lock().session.clone();
        match tx {
            Some(tx) => {
                let _ = tx.send(c);
            }
            None => panic!("no live session to send to"),
        }
    }

    /// Sends an offer for `claim`.
    pub fn offer(&self, claim: Value) {
        self.send_text(json!({"type": "offer", "claim": claim}).to_string());
    }

    /// Sends any text frame.
    pub fn send_text(&self, text: impl Into<String>) {
        self.command(Command::Text(text.into()));
    }

    /// Sends a binary frame.
    pub fn send_binary(&self, bytes: Vec<u8>) {
        self.command(Command::Binary(bytes));
    }

    /// Closes the session with `code`.
    pub fn close(&self, code: u16, reason: &str) {
        self.command(Command::Close(code, reason.into()));
    }

    /// Feeds `claims` one at a time (next on complete/fail/upload) and
    /// sends the first now.
    pub fn feed(&self, claims: Vec<Value>) {
        let first = {
            let mut i = self.shared.lock();
            let mut feed = Feed {
                queue: claims.into(),
                sent_at: HashMap::new(),
                latencies: Vec::new(),
            };
            let first = feed.queue.pop_front();
            if let Some(c) = &first {
                feed.sent_at.insert(
                    c["jobId"].as_str().unwrap_or_default().to_string(),
                    Instant::now(),
                );
            }
            i.feed = Some(feed);
            first
        };
        if let Some(c) = first {
            self.offer(c);
        }
    }

    /// Offer-to-result latencies of fed jobs so far, and how many remain.
    pub fn feed_stats(&self) -> (Vec<Duration>, usize) {
        let i = self.shared.lock();
        i.feed
            .as_ref()
            .map(|f| (f.latencies.clone(), f.queue.len()))
            .unwrap_or_default()
    }

    /// A studio outage: drops every connection without a close frame and
    /// stops serving. Its port then accepts TCP connections and closes
    /// them at once (a studio down behind its load balancer), counting
    /// them, so a test can wait for the worker to try again.
    pub async fn crash(self) -> Outage {
        self.shared.kill.send_modify(|n| *n += 1);
        self.server.abort();
        let _ = self.server.await;
        let listener = bind_retry(self.addr).await;
        let attempts = Arc::new((Mutex::new(0usize), Notify::new()));
        let seen = attempts.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                drop(conn);
                *seen.0.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                seen.1.notify_waiters();
            }
        });
        Outage {
            addr: self.addr,
            attempts,
            task,
        }
    }
}

/// A studio that is down; see [`FakeStudio::crash`].
pub struct Outage {
    addr: SocketAddr,
    attempts: Arc<(Mutex<usize>, Notify)>,
    task: tokio::task::JoinHandle<()>,
}

impl Outage {
    /// Waits until the worker has tried to connect `n` times during the
    /// outage.
    pub async fn wait_attempts(&self, n: usize) {
        bounds::within(
            &format!("{n} connection attempts during the outage"),
            bounds::event(),
            async {
                loop {
                    let notified = self.attempts.1.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    if *self.attempts.0.lock().unwrap_or_else(|p| p.into_inner()) >= n {
                        return;
                    }
                    notified.await;
                }
            },
        )
        .await
    }

    /// Ends the outage: a fresh studio on the same port.
    pub async fn end(self) -> FakeStudio {
        self.task.abort();
        let _ = self.task.await;
        FakeStudio::start_on(self.addr).await
    }
}

/// Binds `addr`, retrying while the previous listener on it goes away.
async fn bind_retry(addr: SocketAddr) -> tokio::net::TcpListener {
    let deadline = tokio::time::Instant::now() + bounds::event();
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) if tokio::time::Instant::now() > deadline => panic!("cannot bind {addr}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn bearer(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

async fn connect(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let expected = shared.lock().token_of(&id).map(|t| format!("Bearer {t}"));
    let authorization = bearer(&headers);
    if expected.as_deref() != Some(authorization.as_str()) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "unauthorized"})),
        )
            .into_response();
    }
    let protocol = headers
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    shared.push(Event::Connected {
        authorization,
        protocol,
    });
    ws.protocols(["studio-worker-v1"])
        .on_upgrade(move |socket| session(shared, socket, id))
}

fn close_msg(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.to_string().into(),
    }))
}

async fn session(shared: Arc<Shared>, mut socket: WebSocket, worker_id: String) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut kill = shared.kill.subscribe();
    let mut welcomed = false;
    loop {
        tokio::select! {
            _ = kill.changed() => {
                // Outage: vanish without a close frame.
                return;
            }
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { continue };
                let msg = match cmd {
                    Command::Text(t) => Message::Text(t.into()),
                    Command::Binary(b) => Message::Binary(Bytes::from(b)),
                    Command::Close(code, reason) => {
                        let _ = socket.send(close_msg(code, &reason)).await;
                        shared.lock().forget(&worker_id);
                        shared.push(Event::Closed(Some(code)));
                        return;
                    }
                };
                if socket.send(msg).await.is_err() {
                    break;
                }
            }
            msg = socket.recv() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Close(frame))) => {
                        shared.lock().forget(&worker_id);
                        shared.push(Event::Closed(frame.map(|f| f.code)));
                        return;
                    }
                    Some(Ok(Message::Binary(_))) => {
                        shared.push(Event::Frame(json!({"type": "<binary>"})));
                        continue;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => break,
                };
                let Ok(v) = serde_json::from_str::<Value>(&text) else {
                    shared.push(Event::Frame(json!({"type": "<not json>", "text": text})));
                    continue;
                };
                // Recorded before it is acted on, so whoever sees the
                // reaction (a welcome, the next fed offer) also sees it.
                shared.push(Event::Frame(v.clone()));
                let reply = on_frame(&shared, &worker_id, &v, &tx, &mut welcomed);
                match reply {
                    Reply::None => {}
                    Reply::Send(m) => {
                        if socket.send(Message::Text(m.to_string().into())).await.is_err() {
                            break;
                        }
                    }
                    Reply::Refuse(m) => {
                        let _ = socket.send(Message::Text(m.to_string().into())).await;
                        let _ = socket.send(close_msg(4001, "auth failed")).await;
                        shared.push(Event::Closed(Some(4001)));
                        return;
                    }
                }
            }
        }
    }
    shared.lock().forget(&worker_id);
    shared.push(Event::Closed(None));
}

enum Reply {
    None,
    Send(Value),
    Refuse(Value),
}

fn on_frame(
    shared: &Shared,
    worker_id: &str,
    v: &Value,
    tx: &mpsc::UnboundedSender<Command>,
    welcomed: &mut bool,
) -> Reply {
    let mut i = shared.lock();
    match v["type"].as_str().unwrap_or_default() {
        "hello" => {
            if i.token_of(worker_id).is_none_or(|t| v["authToken"] != t) {
                return Reply::Refuse(
                    json!({"type": "error", "code": "auth_failed", "message": "bad token"}),
                );
            }
            *welcomed = true;
            if worker_id == i.worker_id {
                i.sessions += 1;
                i.session = Some(tx.clone());
            } else {
                i.other_sessions.insert(worker_id.to_string(), tx.clone());
            }
            drop(i);
            shared.notify.notify_waiters();
            Reply::Send(
                json!({"type": "welcome", "workerId": worker_id, "serverTime": "2026-11-27T00:00:00Z"}),
            )
        }
        "heartbeat" if i.ack_heartbeats => Reply::Send(json!({"type": "heartbeatAck"})),
        "completeJson" | "fail" => {
            let job = v["jobId"].as_str().unwrap_or_default().to_string();
            feed_next(&mut i, &job, tx);
            let ty = if v["type"] == "fail" {
                "failAck"
            } else {
                "completeAck"
            };
            Reply::Send(json!({"type": ty, "jobId": job}))
        }
        _ => Reply::None,
    }
}

impl Inner {
    /// Drops identity `worker_id`'s live session.
    fn forget(&mut self, worker_id: &str) {
        if worker_id == self.worker_id {
            self.session = None;
        } else {
            self.other_sessions.remove(worker_id);
        }
    }
}

/// Records the fed job's latency and offers the next one.
fn feed_next(i: &mut Inner, job: &str, tx: &mpsc::UnboundedSender<Command>) {
    let Some(feed) = i.feed.as_mut() else { return };
    if let Some(t0) = feed.sent_at.remove(job) {
        feed.latencies.push(t0.elapsed());
    }
    if let Some(next) = feed.queue.pop_front() {
        feed.sent_at.insert(
            next["jobId"].as_str().unwrap_or_default().to_string(),
            Instant::now(),
        );
        let _ = tx.send(Command::Text(
            json!({"type": "offer", "claim": next}).to_string(),
        ));
    }
}

async fn complete(
    State(shared): State<Arc<Shared>>,
    Path((worker_id, job_id)): Path<(String, String)>,
    headers: HeaderMap,
    mut form: Multipart,
) -> Response {
    let expected = shared
        .lock()
        .token_of(&worker_id)
        .map(|t| format!("Bearer {t}"));
    if expected.as_deref() != Some(bearer(&headers).as_str()) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let mut up = Upload {
        job_id: job_id.clone(),
        worker_id,
        prompt: String::new(),
        ext: String::new(),
        part_name: String::new(),
        filename: String::new(),
        content_type: String::new(),
        bytes: Vec::new(),
        at: Instant::now(),
    };
    let mut order = Vec::new();
    while let Ok(Some(field)) = form.next_field().await {
        let name = field.name().unwrap_or_default().to_string();
        order.push(name.clone());
        match name.as_str() {
            "prompt" => up.prompt = field.text().await.unwrap_or_default(),
            "ext" => up.ext = field.text().await.unwrap_or_default(),
            _ => {
                up.part_name = name;
                up.filename = field.file_name().unwrap_or_default().to_string();
                up.content_type = field.content_type().unwrap_or_default().to_string();
                up.bytes = field.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
            }
        }
    }
    if order != ["prompt", "ext", "image"] {
        return (
            StatusCode::BAD_REQUEST,
            format!("multipart parts out of order: {order:?}"),
        )
            .into_response();
    }
    let status = shared.lock().upload_statuses.pop_front();
    if let Some(code) = status {
        return (
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "injected failure",
        )
            .into_response();
    }
    up.at = Instant::now();
    // Feed the next offer before anyone can see this upload, so a test
    // that reacts to it never races the feed.
    {
        let mut i = shared.lock();
        if let Some(tx) = i.session.clone() {
            feed_next(&mut i, &job_id, &tx);
        }
    }
    shared.push(Event::Upload(up));
    Json(json!({"ok": true})).into_response()
}

async fn register(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let (boot, id, token) = {
        let i = shared.lock();
        (
            i.bootstrap_token.clone(),
            i.worker_id.clone(),
            i.token.clone(),
        )
    };
    shared.push(Event::Register(body.clone()));
    if bearer(&headers) != format!("Bearer {boot}") || body["bootstrapToken"] != boot.as_str() {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "bad bootstrap token"})),
        )
            .into_response();
    }
    Json(json!({"workerId": id, "authToken": token})).into_response()
}

async fn file(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let range = headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let served = {
        let mut i = shared.lock();
        match i.files.get_mut(&name) {
            Some(f) => {
                let copy = f.clone();
                if range.is_none() {
                    f.cut_after = None;
                }
                Some(copy)
            }
            None => None,
        }
    };
    let Some(f) = served else {
        shared.push(Event::FileGet {
            name,
            range,
            status: 404,
        });
        return StatusCode::NOT_FOUND.into_response();
    };
    let total = f.bytes.len();
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    let (status, from) = match start {
        Some(s) if s < total => (StatusCode::PARTIAL_CONTENT, s),
        Some(_) => {
            shared.push(Event::FileGet {
                name,
                range,
                status: 416,
            });
            return StatusCode::RANGE_NOT_SATISFIABLE.into_response();
        }
        None => (StatusCode::OK, 0),
    };
    shared.push(Event::FileGet {
        name,
        range,
        status: status.as_u16(),
    });
    let body = f.bytes.slice(from..);
    let cut = if from == 0 { f.cut_after } else { None };
    let throttle = f.throttle;
    // Stream in 64 KiB chunks; a cut ends the stream with an error, which
    // drops the connection mid-body.
    let stream = futures_util::stream::unfold((body, 0usize), move |(body, sent)| async move {
        if sent >= body.len() {
            return None;
        }
        if let Some(limit) = cut {
            if sent >= limit {
                return Some((Err(std::io::Error::other("cut")), (body, usize::MAX)));
            }
        }
        if let Some(p) = throttle {
            tokio::time::sleep(p).await;
        }
        let mut end = (sent + 64 * 1024).min(body.len());
        if let Some(limit) = cut {
            end = end.min(limit.max(sent + 1));
        }
        let chunk = body.slice(sent..end);
        Some((Ok(chunk), (body, end)))
    });
    let mut resp = axum::body::Body::from_stream(stream).into_response();
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        "content-length",
        (total - from).to_string().parse().expect("header"),
    );
    h.insert("accept-ranges", "bytes".parse().expect("header"));
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            "content-range",
            format!("bytes {from}-{}/{total}", total - 1)
                .parse()
                .expect("header"),
        );
    }
    resp
}

async fn register_request(State(shared): State<Arc<Shared>>, Json(body): Json<Value>) -> Response {
    let Some(hash) = body["registrationSecretHash"].as_str().map(str::to_string) else {
        shared.push(Event::RegisterRequest(body));
        return (StatusCode::BAD_REQUEST, "missing registrationSecretHash").into_response();
    };
    let id = {
        let mut i = shared.lock();
        i.requests_made += 1;
        let id = format!("rr-{}", i.requests_made);
        i.requests.insert(id.clone(), (hash, Decision::Pending));
        id
    };
    // Recorded only once the request exists, so a test can decide it.
    shared.push(Event::RegisterRequest(body));
    Json(json!({"requestId": id, "status": "pending"})).into_response()
}

async fn register_poll(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    use sha2::Digest;
    let secret = bearer(&headers)
        .strip_prefix("Bearer ")
        .unwrap_or_default()
        .to_string();
    let hash = hex::encode(sha2::Sha256::digest(secret.as_bytes()));
    let (status, body) = {
        let i = shared.lock();
        match i.requests.get(&id) {
            None => (StatusCode::NOT_FOUND, json!({"error": "unknown request"})),
            Some((h, _)) if *h != hash => {
                (StatusCode::UNAUTHORIZED, json!({"error": "bad secret"}))
            }
            Some((_, Decision::Pending)) => (StatusCode::OK, json!({"status": "pending"})),
            Some((_, Decision::Approved)) => (
                StatusCode::OK,
                json!({"status": "approved", "workerId": i.worker_id, "authToken": i.token}),
            ),
            Some((_, Decision::ApprovedAs(id, token))) => (
                StatusCode::OK,
                json!({"status": "approved", "workerId": id, "authToken": token}),
            ),
            Some((_, Decision::Rejected(r))) => {
                (StatusCode::OK, json!({"status": "rejected", "reason": r}))
            }
        }
    };
    shared.push(Event::RegisterPoll(id, status.as_u16()));
    (status, Json(body)).into_response()
}
