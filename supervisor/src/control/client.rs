//! The CLI's side of the endpoint: find the running worker through its
//! run file and ask it.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use super::read_run_file;

/// A running worker's answer: status code and body.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body text.
    pub body: String,
}

/// Sends `method path` (with the token) to the worker running with
/// `config`; `None` when none runs (no run file, or nobody answers there).
pub async fn ask(
    config: &Path,
    method: reqwest::Method,
    path: &str,
) -> anyhow::Result<Option<Answer>> {
    let Some(run) = read_run_file(config) else {
        return Ok(None);
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("HTTP client")?;
    let url = format!("http://{}{path}", run.addr);
    let sent = client
        .request(method, &url)
        .bearer_auth(&run.token)
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        // A run file left by a worker that died: nobody there.
        Err(e) if e.is_connect() => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("asking the running worker at {url}")),
    };
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    Ok(Some(Answer { status, body }))
}
