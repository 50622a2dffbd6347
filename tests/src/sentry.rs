//! A local Sentry ingest endpoint on 127.0.0.1 that records every
//! envelope the worker posts (`/api/<project>/envelope/`), parsed into
//! its items, for tests of error reporting. The same server answers
//! `POST /graphics/api/workers/register` with an error that repeats the bearer token,
//! as careless servers do, so a test can check that the token is scrubbed
//! before it reaches a report.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::Value;

use crate::bounds;

/// The project key in [`SentryRecorder::dsn`].
pub const KEY: &str = "0123456789abcdef0123456789abcdef";

/// One envelope as received.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// Its `X-Sentry-Auth` header.
    pub auth: String,
    /// The project id from the path.
    pub project: String,
    /// The body as text.
    pub raw: String,
    /// `(item header, payload)` pairs; JSON payloads parsed.
    pub items: Vec<(Value, Value)>,
}

impl Envelope {
    /// The payloads of its `event` items.
    pub fn events(&self) -> impl Iterator<Item = &Value> {
        self.items
            .iter()
            .filter(|(h, _)| h["type"] == "event")
            .map(|(_, p)| p)
    }
}

type Seen = Arc<Mutex<Vec<Envelope>>>;

/// The recording endpoint; stops when dropped.
pub struct SentryRecorder {
    port: u16,
    seen: Seen,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SentryRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SentryRecorder {
    /// Starts listening on a free port.
    pub async fn start() -> Self {
        let seen: Seen = Arc::default();
        let app = Router::new()
            .route("/api/{project}/envelope/", post(record))
            .route("/graphics/api/workers/register", post(echo_token))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Sentry recorder");
        let port = listener.local_addr().expect("local addr").port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { port, seen, task }
    }

    /// A DSN for project 42 at this endpoint.
    pub fn dsn(&self) -> String {
        format!("http://{KEY}@127.0.0.1:{}/42", self.port)
    }

    /// A studio base URL whose registration fails with the token in the
    /// error text.
    pub fn echo_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every envelope so far.
    pub fn envelopes(&self) -> Vec<Envelope> {
        self.seen.lock().expect("recorder lock").clone()
    }

    /// Waits for an event for which `pred` holds and returns it with the
    /// envelope that carried it.
    pub async fn wait_event(&self, what: &str, pred: impl Fn(&Value) -> bool) -> (Envelope, Value) {
        bounds::until(what, bounds::event(), || {
            self.envelopes().into_iter().find_map(|env| {
                let hit = env.events().find(|e| pred(e)).cloned();
                hit.map(|e| (env, e))
            })
        })
        .await
    }
}

async fn record(
    State(seen): State<Seen>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let auth = headers
        .get("x-sentry-auth")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let envelope = Envelope {
        auth,
        project,
        raw: String::from_utf8_lossy(&body).into_owned(),
        items: parse_items(&body),
    };
    seen.lock().expect("recorder lock").push(envelope);
    StatusCode::OK
}

async fn echo_token(headers: HeaderMap) -> (StatusCode, String) {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let token = auth.strip_prefix("Bearer ").unwrap_or(auth);
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("no registration for {token}"),
    )
}

/// The items of an envelope body: a header line, then for each item a
/// header line and a payload (`length` bytes when given, else one line).
fn parse_items(body: &[u8]) -> Vec<(Value, Value)> {
    let mut items = Vec::new();
    let Some(first) = body.iter().position(|&b| b == b'\n') else {
        return items;
    };
    let mut at = first + 1;
    while at < body.len() {
        let end = body[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |p| at + p);
        let Ok(header) = serde_json::from_slice::<Value>(&body[at..end]) else {
            break;
        };
        at = end + 1;
        let len = header["length"]
            .as_u64()
            .map(|l| l as usize)
            .unwrap_or_else(|| {
                body[at.min(body.len())..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .unwrap_or(body.len().saturating_sub(at))
            });
        let stop = (at + len).min(body.len());
        let payload = serde_json::from_slice(&body[at.min(stop)..stop]).unwrap_or_else(|_| {
            Value::String(String::from_utf8_lossy(&body[at.min(stop)..stop]).into())
        });
        items.push((header, payload));
        at = stop + 1;
    }
    items
}
