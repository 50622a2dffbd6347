//! Fetching a job's inputs (`inputUrl`, `initImageUrl`, ...) to local files
//! for the runner: https anywhere, plain http only to loopback, local
//! paths only for `studio-worker job`.

use std::path::{Path, PathBuf};

use reqwest::Url;
use tokio::io::AsyncWriteExt;

/// Largest input accepted (512 MiB).
pub const MAX_INPUT_BYTES: u64 = 512 * 1024 * 1024;

/// Why an input could not be fetched; the message names the field.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL is not allowed or not valid (not retryable).
    #[error("task.{field}: {message}")]
    Refused {
        /// Task field.
        field: String,
        /// Why.
        message: String,
    },
    /// Transport or server trouble (retryable).
    #[error("task.{field}: fetching {url} failed: {message}")]
    Failed {
        /// Task field.
        field: String,
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
}

impl FetchError {
    /// Whether another attempt might work.
    pub fn retryable(&self) -> bool {
        matches!(self, FetchError::Failed { .. })
    }
}

/// True when `url` may be fetched over plain http (loopback only).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

/// Fetches `source` into `dest_dir/<field>`; returns the local path.
pub async fn fetch_input(
    client: &reqwest::Client,
    field: &str,
    source: &str,
    dest_dir: &Path,
    allow_local: bool,
) -> Result<PathBuf, FetchError> {
    let refused = |message: String| FetchError::Refused {
        field: field.into(),
        message,
    };
    let failed = |message: String| FetchError::Failed {
        field: field.into(),
        url: source.into(),
        message,
    };
    let url = match Url::parse(source) {
        Ok(u) => u,
        Err(_) if allow_local && Path::new(source).exists() => return Ok(PathBuf::from(source)),
        Err(e) => return Err(refused(format!("`{source}` is not a URL ({e})"))),
    };
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(refused(format!(
                "`{source}`: plain http is allowed only to loopback; use https"
            )))
        }
        "file" if allow_local => {
            return url
                .to_file_path()
                .map_err(|_| refused(format!("`{source}` is not a local file path")))
        }
        other => {
            return Err(refused(format!(
                "`{source}`: scheme `{other}` is not allowed (https)"
            )))
        }
    }
    let mut resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    let status = resp.status();
    if !status.is_success() {
        let msg = format!("HTTP {status}");
        return Err(if status.is_client_error() {
            refused(format!("`{source}`: {msg}"))
        } else {
            failed(msg)
        });
    }
    if resp.content_length().is_some_and(|n| n > MAX_INPUT_BYTES) {
        return Err(refused(format!(
            "`{source}` is larger than {MAX_INPUT_BYTES} bytes"
        )));
    }
    tokio::fs::create_dir_all(dest_dir)
        .await
        .map_err(|e| failed(format!("scratch dir: {e}")))?;
    let path = dest_dir.join(format!("input-{field}"));
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(|e| failed(format!("{}: {e}", path.display())))?;
    let mut total = 0u64;
    while let Some(chunk) = resp.chunk().await.map_err(|e| failed(e.to_string()))? {
        total += chunk.len() as u64;
        if total > MAX_INPUT_BYTES {
            return Err(refused(format!(
                "`{source}` is larger than {MAX_INPUT_BYTES} bytes"
            )));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| failed(format!("{}: {e}", path.display())))?;
    }
    file.flush().await.map_err(|e| failed(e.to_string()))?;
    Ok(path)
}
