//! `studio-worker register`: the bootstrap-token registration
//! (`POST /workers/register`), idempotent through the known `workerId`.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use studio_protocol::studio::http::{
    http_url, BootstrapRegisterRequest, BootstrapRegisterResponse,
};
use studio_protocol::Secret;

use crate::capabilities::{snapshot, For, HostFacts};
use crate::config::Config;
use crate::runner::EngineCatalog;

/// The capabilities a registration for identity `table` advertises.
fn capabilities_for(
    cfg: &Config,
    catalog: &EngineCatalog,
    table: Option<u32>,
) -> studio_protocol::studio::WorkerCapabilities {
    let gpus = crate::gpu::probe();
    let of = For {
        gpu: table.or_else(|| crate::settings::largest_gpu(&gpus)),
        table,
    };
    snapshot(cfg, &HostFacts::with_gpus(&gpus), catalog, false, of)
}

/// Registers and stores the identity in the config file (mode 0600): the
/// top-level one for `table = None`, else GPU `table`'s `[[worker]]`.
pub async fn register(
    config_path: &Path,
    mut cfg: Config,
    bootstrap_token: Secret,
    api_base_url: String,
    catalog: &EngineCatalog,
    table: Option<u32>,
) -> anyhow::Result<String> {
    let changed_studio = api_base_url != cfg.api_base_url;
    cfg.api_base_url = api_base_url;
    let mut id = cfg.identity(table);
    let body = BootstrapRegisterRequest {
        bootstrap_token: bootstrap_token.clone(),
        capabilities: capabilities_for(&cfg, catalog, table),
        // Re-registering with the same studio keeps the identity.
        worker_id: if changed_studio {
            None
        } else {
            id.worker_id.clone()
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
        let text = crate::deliver::body_snippet(resp).await;
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
    id.worker_id = Some(answer.worker_id.clone());
    id.auth_token = Some(answer.auth_token);
    // An approval request still pending is moot now.
    id.registration_request_id = None;
    id.registration_secret = None;
    cfg.set_identity(table, id);
    cfg.save(config_path)?;
    Ok(answer.worker_id)
}

/// Held across one registration or approval step, so that `run`'s own
/// loop and the control endpoint's register routes never make two
/// requests for one identity (each reloads the config under it).
pub static STEP: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One step of the approval flow (studio-protocol.md §4.1).
#[derive(Debug)]
pub enum Approval {
    /// Credentials were stored.
    Approved(String),
    /// Still waiting for the operator.
    Pending,
    /// The studio could not be asked this time (logged); the next step
    /// tries again.
    Retry(String),
    /// The operator refused.
    Rejected(String),
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut buf);
    hex::encode(buf)
}

fn new_install_id() -> String {
    let h = random_hex(16);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Creates the approval request of identity `table` (see [`register`]) if
/// there is none, else polls it once. Transient trouble is logged and
/// reported as `Retry`.
pub async fn approval_step(
    config_path: &Path,
    mut cfg: Config,
    catalog: &EngineCatalog,
    table: Option<u32>,
) -> anyhow::Result<Approval> {
    use sha2::Digest;
    use studio_protocol::studio::http::{
        RegisterPollResponse, RegisterRequestBody, RegisterRequestResponse,
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let mut id = cfg.identity(table);
    let (Some(request_id), Some(secret)) = (
        id.registration_request_id.clone(),
        id.registration_secret.clone(),
    ) else {
        let install_id = id.install_id.clone().unwrap_or_else(new_install_id);
        let secret = random_hex(32);
        let body = RegisterRequestBody {
            install_id: install_id.clone(),
            registration_secret_hash: hex::encode(sha2::Sha256::digest(secret.as_bytes())),
            capabilities: capabilities_for(&cfg, catalog, table),
            user_agent: format!("studio-worker/{}", env!("CARGO_PKG_VERSION")),
            label: None,
        };
        let url = http_url(&cfg.api_base_url, "/workers/register-request");
        let answer = async {
            let resp = client
                .post(&url)
                .json(&body)
                .send()
                .await?
                .error_for_status()?;
            resp.json::<RegisterRequestResponse>().await
        }
        .await;
        match answer {
            Ok(r) => {
                tracing::info!(target: "worker", "waiting for operator approval (request {})", r.request_id);
                id.install_id = Some(install_id);
                id.registration_request_id = Some(r.request_id);
                id.registration_secret = Some(Secret::new(secret));
                cfg.set_identity(table, id);
                cfg.save(config_path)?;
            }
            Err(e) => {
                tracing::warn!(target: "worker", "approval request failed, retrying: {e}");
                return Ok(Approval::Retry(format!(
                    "the approval request to {url} failed: {e}"
                )));
            }
        }
        return Ok(Approval::Pending);
    };
    let url = http_url(
        &cfg.api_base_url,
        &format!("/workers/register-requests/{request_id}"),
    );
    let resp = match client.get(&url).bearer_auth(secret.expose()).send().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(target: "worker", "approval poll failed, retrying: {e}");
            return Ok(Approval::Retry(format!("polling {url} failed: {e}")));
        }
    };
    if resp.status().as_u16() == 404 {
        tracing::warn!(target: "worker", "approval request {request_id} is unknown to the studio; making a new one");
        id.registration_request_id = None;
        id.registration_secret = None;
        cfg.set_identity(table, id);
        cfg.save(config_path)?;
        return Ok(Approval::Pending);
    }
    if !resp.status().is_success() {
        tracing::warn!(target: "worker", "approval poll answered HTTP {}; retrying", resp.status());
        return Ok(Approval::Retry(format!(
            "polling {url} answered HTTP {}",
            resp.status()
        )));
    }
    let decision: RegisterPollResponse = match resp.json().await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(target: "worker", "approval poll answer is not the expected JSON: {e}");
            return Ok(Approval::Retry(format!(
                "the approval poll's answer is not the expected JSON: {e}"
            )));
        }
    };
    Ok(match decision {
        RegisterPollResponse::Pending => Approval::Pending,
        RegisterPollResponse::Approved {
            worker_id,
            auth_token,
        } => {
            id.worker_id = Some(worker_id.clone());
            id.auth_token = Some(auth_token);
            id.registration_request_id = None;
            id.registration_secret = None;
            cfg.set_identity(table, id);
            cfg.save(config_path)?;
            Approval::Approved(worker_id)
        }
        RegisterPollResponse::Rejected { reason } => {
            id.registration_request_id = None;
            id.registration_secret = None;
            cfg.set_identity(table, id);
            cfg.save(config_path)?;
            Approval::Rejected(reason)
        }
    })
}
