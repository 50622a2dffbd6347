//! `studio-worker register`: the bootstrap-token registration
//! (`POST /workers/register`), idempotent through the known `workerId`.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use studio_protocol::studio::http::{
    http_url, BootstrapRegisterRequest, BootstrapRegisterResponse,
};
use studio_protocol::Secret;

use crate::capabilities::{snapshot, HostFacts};
use crate::config::Config;
use crate::runner::EngineCatalog;

/// Registers and stores the identity in the config file (mode 0600).
pub async fn register(
    config_path: &Path,
    mut cfg: Config,
    bootstrap_token: Secret,
    api_base_url: String,
    catalog: &EngineCatalog,
) -> anyhow::Result<String> {
    let changed_studio = api_base_url != cfg.api_base_url;
    cfg.api_base_url = api_base_url;
    let body = BootstrapRegisterRequest {
        bootstrap_token: bootstrap_token.clone(),
        capabilities: snapshot(&cfg, &HostFacts::probe(), catalog, false),
        // Re-registering with the same studio keeps the identity.
        worker_id: if changed_studio {
            None
        } else {
            cfg.worker_id.clone()
        },
    };
    let url = http_url(&cfg.api_base_url, "/workers/register");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let resp = client
        .post(&url)
        .bearer_auth(bootstrap_token.expose())
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        let text: String = resp
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        if status.as_u16() == 401 || status.as_u16() == 403 {
            bail!("registration refused: the bootstrap token was not accepted (HTTP {status})");
        }
        bail!("registration failed: HTTP {status}: {text}");
    }
    let answer: BootstrapRegisterResponse = resp
        .json()
        .await
        .context("registration answer is not the expected JSON")?;
    if answer.worker_id.is_empty() || answer.auth_token.is_empty() {
        bail!("registration answer has an empty workerId or authToken");
    }
    cfg.worker_id = Some(answer.worker_id.clone());
    cfg.auth_token = Some(answer.auth_token);
    cfg.save(config_path)?;
    Ok(answer.worker_id)
}
