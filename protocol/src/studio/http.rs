//! HTTP bodies: registration (both flows) and multipart completion
//! (Part B §4).

use serde::{Deserialize, Serialize};

use super::WorkerCapabilities;
use crate::Secret;

/// Prefix of every studio route below the base URL.
pub const API_PREFIX: &str = "/graphics/api";

/// Multipart field names of `POST /workers/<id>/jobs/<jobId>/complete`.
pub mod multipart {
    /// Text field: the full prompt.
    pub const PROMPT: &str = "prompt";
    /// Text field: the extension of the bytes.
    pub const EXT: &str = "ext";
    /// File part (named `image` for every binary kind).
    pub const FILE: &str = "image";
}

/// Content type of an uploaded result part.
pub fn content_type_for_ext(ext: &str) -> &'static str {
    match ext {
        "png" => "image/png",
        "webp" => "image/webp",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "wav" => "audio/wav",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "flac" => "audio/flac",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        _ => "application/octet-stream",
    }
}

/// `POST /workers/register` with a bootstrap token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapRegisterRequest {
    /// The operator-issued bootstrap token.
    pub bootstrap_token: Secret,
    /// Snapshot.
    pub capabilities: WorkerCapabilities,
    /// Known id when re-registering (idempotent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
}

/// Answer to [`BootstrapRegisterRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapRegisterResponse {
    /// Worker id.
    pub worker_id: String,
    /// Session bearer.
    pub auth_token: Secret,
}

/// `POST /workers/register-request` (approval flow).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterRequestBody {
    /// Per-install id.
    pub install_id: String,
    /// Lowercase hex SHA-256 of the 64-hex secret string.
    pub registration_secret_hash: String,
    /// Snapshot with `autoEnabled: true`.
    pub capabilities: WorkerCapabilities,
    /// `studio-worker/<version>`.
    pub user_agent: String,
    /// Optional label (0.2.x era).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// Answer to [`RegisterRequestBody`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterRequestResponse {
    /// `rr-<uuid>`.
    pub request_id: String,
    /// `pending`.
    pub status: String,
}

/// `GET /workers/register-requests/<id>` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "camelCase")]
pub enum RegisterPollResponse {
    /// Not decided yet.
    Pending,
    /// Approved: credentials issued.
    #[serde(rename_all = "camelCase")]
    Approved {
        /// Worker id.
        worker_id: String,
        /// Session bearer.
        auth_token: Secret,
    },
    /// Refused.
    Rejected {
        /// Why (may be absent).
        #[serde(default)]
        reason: String,
    },
}

/// Normalises a base URL as the contract says (§1.1): query and fragment
/// dropped, trailing `/` trimmed, a trailing `/graphics/api` removed.
pub fn normalise_base(base: &str) -> String {
    let mut s = base.trim();
    if let Some(i) = s.find(['?', '#']) {
        s = &s[..i];
    }
    let mut s = s.trim_end_matches('/').to_string();
    if s.ends_with(API_PREFIX) {
        s.truncate(s.len() - API_PREFIX.len());
    }
    s.trim_end_matches('/').to_string()
}

/// `<base>/graphics/api<route>` for an HTTP route.
pub fn http_url(base: &str, route: &str) -> String {
    format!("{}{API_PREFIX}{route}", normalise_base(base))
}

/// The WebSocket URL of the session for `worker_id`, or an error naming
/// the unsupported scheme.
pub fn ws_url(base: &str, worker_id: &str) -> Result<String, String> {
    let b = normalise_base(base);
    let (scheme, rest) = b
        .split_once("://")
        .ok_or_else(|| format!("api_base_url `{base}` has no scheme"))?;
    let ws_scheme = match scheme {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        other => {
            return Err(format!(
                "api_base_url scheme `{other}` is not http(s) or ws(s)"
            ))
        }
    };
    Ok(format!(
        "{ws_scheme}://{rest}{API_PREFIX}/workers/{worker_id}/connect"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_normalise_as_the_contract_says() {
        assert_eq!(
            http_url(
                "https://studio.example/custom/graphics/api",
                "/workers/register-request"
            ),
            "https://studio.example/custom/graphics/api/workers/register-request"
        );
        assert_eq!(
            http_url("https://studio.minis.gg/?x=1#f", "/workers/register"),
            "https://studio.minis.gg/graphics/api/workers/register"
        );
        assert_eq!(
            ws_url("https://studio.minis.gg/", "w-1").unwrap(),
            "wss://studio.minis.gg/graphics/api/workers/w-1/connect"
        );
        assert_eq!(
            ws_url("http://127.0.0.1:9/graphics/api/", "w-2").unwrap(),
            "ws://127.0.0.1:9/graphics/api/workers/w-2/connect"
        );
        assert!(ws_url("ftp://x", "w").unwrap_err().contains("ftp"));
    }
}
