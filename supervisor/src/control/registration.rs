//! The endpoint's register routes, for a `run` that waits for credentials
//! (the desktop window's register form): `GET /registration` (which
//! identities wait, their pending approval requests, and the trouble the
//! last step met), `POST /control/register` (a bootstrap token, used at
//! once) and `POST /control/request-approval` (the approval flow, now).
//! All three need the control token. They take [`crate::register::STEP`]
//! as `run`'s own loop does, so the two never make two requests for one
//! identity; `run` sees the stored credentials within a second.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use studio_protocol::Secret;

use super::{authorized, refused, Shared, Stage};
use crate::config::Config;
use crate::register::Approval;
use crate::runner::EngineCatalog;

/// What `run` waits for, as its loop last said.
#[derive(Debug, Default, Clone)]
pub(super) struct Waiting {
    /// The identities without credentials (`None`: the top-level one).
    pub tables: Vec<Option<u32>>,
    /// What the last registration or approval step ran into.
    pub trouble: Option<String>,
}

/// A refusal: its status and `{"error": {key, message}}`, the key naming
/// the field that was wrong (empty when none was).
pub(super) struct Refusal {
    code: StatusCode,
    key: &'static str,
    message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (
            self.code,
            axum::Json(json!({"error": {"key": self.key, "message": self.message}})),
        )
            .into_response()
    }
}

fn error(code: StatusCode, key: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        key,
        message: message.into(),
    }
}

/// The identities still waiting, or why the routes do not apply now.
fn waiting(shared: &Shared) -> Result<Vec<Option<u32>>, Refusal> {
    let running = shared
        .stage
        .read()
        .map(|s| matches!(*s, Stage::Running(_)))
        .unwrap_or(false);
    let tables = shared
        .waiting
        .read()
        .map(|w| w.tables.clone())
        .unwrap_or_default();
    if running || tables.is_empty() {
        return Err(error(
            StatusCode::CONFLICT,
            "",
            "this worker is not waiting for credentials (`studio-worker register` replaces an identity)",
        ));
    }
    Ok(tables)
}

fn load(shared: &Shared) -> Result<Config, Refusal> {
    Config::load(&shared.config_path)
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, "", e.to_string()))
}

/// `api_base_url` from a form, checked as the config checks it.
fn with_url(cfg: &Config, url: Option<&str>) -> Result<Config, Refusal> {
    match url.map(str::trim).filter(|u| !u.is_empty()) {
        Some(u) if u != cfg.api_base_url => {
            let mut patch = serde_json::Map::new();
            patch.insert("api_base_url".into(), u.into());
            cfg.patched(&patch)
                .map_err(|e| error(StatusCode::BAD_REQUEST, "api_base_url", e.message))
        }
        _ => Ok(cfg.clone()),
    }
}

fn identity_json(cfg: &Config, table: Option<u32>) -> serde_json::Value {
    let id = cfg.identity(table);
    json!({
        "gpu": table,
        "registered": id.has_credentials(),
        "worker_id": id.worker_id,
        "request_id": id.registration_request_id,
    })
}

/// `GET /registration`.
pub(super) async fn get(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return refused();
    }
    let answer = load(&shared).map(|cfg| {
        let w = shared.waiting.read().map(|w| w.clone()).unwrap_or_default();
        let running = shared
            .stage
            .read()
            .map(|s| matches!(*s, Stage::Running(_)))
            .unwrap_or(false);
        let identities: Vec<serde_json::Value> =
            w.tables.iter().map(|t| identity_json(&cfg, *t)).collect();
        axum::Json(json!({
            "waiting": !running && !w.tables.is_empty(),
            "api_base_url": cfg.api_base_url,
            "bootstrap_token_stored": cfg.bootstrap_token.is_some(),
            "identities": identities,
            "trouble": w.trouble,
        }))
        .into_response()
    });
    answer.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize)]
struct RegisterBody {
    bootstrap_token: String,
    #[serde(default)]
    api_base_url: Option<String>,
}

/// `POST /control/register {"bootstrap_token", "api_base_url"?}`: every
/// waiting identity registers with the token now (the token is not
/// stored). 400 names what was wrong; nothing is kept from a failed try.
pub(super) async fn register(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Refusal> {
    if !authorized(&shared, &headers) {
        return Ok(refused());
    }
    let shared = &*shared;
    let body: RegisterBody = serde_json::from_slice(&body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "",
            format!("the body is not {{\"bootstrap_token\": …, \"api_base_url\": …}}: {e}"),
        )
    })?;
    let token = body.bootstrap_token.trim().to_string();
    if token.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "bootstrap_token",
            "enter the bootstrap token the studio's operator issued",
        ));
    }
    let tables = waiting(shared)?;
    let _one_at_a_time = crate::register::STEP.lock().await;
    let mut done = Vec::new();
    for table in tables {
        let cfg = load(shared)?;
        if cfg.identity(table).has_credentials() {
            continue;
        }
        let base = with_url(&cfg, body.api_base_url.as_deref())?.api_base_url;
        let catalog = EngineCatalog::discover(&cfg);
        let id = crate::register::register(
            &shared.config_path,
            cfg,
            Secret::new(token.clone()),
            base,
            &catalog,
            table,
        )
        .await
        .map_err(|e| error(StatusCode::BAD_REQUEST, "bootstrap_token", format!("{e:#}")))?;
        tracing::info!(target: "worker", "registered{} as {id} (from the control endpoint)", whose(table));
        done.push(json!({"gpu": table, "worker_id": id}));
    }
    Ok(axum::Json(json!({"registered": done})).into_response())
}

#[derive(Deserialize, Default)]
struct ApprovalBody {
    #[serde(default)]
    api_base_url: Option<String>,
}

/// `POST /control/request-approval {"api_base_url"?}`: a stored bootstrap
/// token is dropped (it no longer runs before the approval flow), then
/// each waiting identity makes its approval request now, or polls the one
/// it has. Answers the pending request ids; `run` keeps polling them.
pub(super) async fn request_approval(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Refusal> {
    if !authorized(&shared, &headers) {
        return Ok(refused());
    }
    let shared = &*shared;
    let body: ApprovalBody = if body.iter().all(u8::is_ascii_whitespace) {
        ApprovalBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                "",
                format!("the body is not {{\"api_base_url\": …}}: {e}"),
            )
        })?
    };
    let tables = waiting(shared)?;
    let _one_at_a_time = crate::register::STEP.lock().await;
    let cfg = load(shared)?;
    let mut next = with_url(&cfg, body.api_base_url.as_deref())?;
    if next.api_base_url != cfg.api_base_url {
        // A request made at another studio is moot.
        for t in &tables {
            let mut id = next.identity(*t);
            id.registration_request_id = None;
            id.registration_secret = None;
            next.set_identity(*t, id);
        }
    }
    next.bootstrap_token = None;
    next.save(&shared.config_path)
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, "", e.to_string()))?;
    let mut answer = Vec::new();
    for table in tables {
        let cfg = load(shared)?;
        if cfg.identity(table).has_credentials() {
            continue;
        }
        let catalog = EngineCatalog::discover(&cfg);
        let step = crate::register::approval_step(&shared.config_path, cfg, &catalog, table)
            .await
            .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, "", format!("{e:#}")))?;
        match step {
            Approval::Pending | Approval::Approved(_) => {}
            Approval::Retry(why) => {
                return Err(error(StatusCode::BAD_GATEWAY, "api_base_url", why))
            }
            Approval::Rejected(reason) => {
                return Err(error(
                    StatusCode::CONFLICT,
                    "",
                    format!(
                    "the operator rejected the request{}: {reason}; asking again makes a new one",
                    whose(table)
                ),
                ))
            }
        }
        answer.push(identity_json(&load(shared)?, table));
    }
    Ok(axum::Json(json!({"identities": answer})).into_response())
}

fn whose(table: Option<u32>) -> String {
    table.map(|g| format!(" for GPU {g}")).unwrap_or_default()
}
