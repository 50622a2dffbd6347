//! Downloading one model's files.
//!
//! Per file: validate the name (plain file names only) → lock
//! `<file>.lock` → reuse a verified file → free-disk preflight from
//! `approxBytes` → stream to `<file>.part` (resuming with `Range` after a
//! cut connection), hashing while streaming → check the length and the
//! SHA-256 → fsync, rename atomically, record the verified hash.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use studio_protocol::runner::ErrorClass;
use studio_protocol::studio::{Engine, ModelFile};
use tokio::io::AsyncWriteExt;

use super::lock::FileLock;
use crate::fetch::is_loopback;

/// Attempts per file (a cut connection resumes on the next one).
const ATTEMPTS: u32 = 5;
/// Space kept free beyond a file's size.
const DISK_MARGIN: u64 = 256 * 1024 * 1024;

/// Why a model file could not be made available.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The file name is not a plain name (never retried; nothing written).
    #[error("modelSource.files: filename `{filename}` {why}")]
    BadName {
        /// The offending name.
        filename: String,
        /// Why.
        why: &'static str,
    },
    /// The URL is not allowed.
    #[error("modelSource.files[{filename}].url `{url}`: {why}")]
    BadUrl {
        /// The file.
        filename: String,
        /// The URL.
        url: String,
        /// Why.
        why: String,
    },
    /// The bytes are not the ones the studio promised.
    #[error("{filename}: SHA-256 mismatch: expected {expected}, got {got} (file deleted)")]
    HashMismatch {
        /// The file.
        filename: String,
        /// From `sha256`.
        expected: String,
        /// Of the bytes received.
        got: String,
    },
    /// Not enough disk for it.
    #[error("{filename}: not enough disk space in {dir}: needs {needed} bytes (+{DISK_MARGIN} margin), {free} free")]
    NoSpace {
        /// The file.
        filename: String,
        /// The cache directory.
        dir: String,
        /// Bytes still to download.
        needed: u64,
        /// Bytes free.
        free: u64,
    },
    /// The server refused (4xx).
    #[error("{filename}: {url} answered HTTP {status}")]
    Refused {
        /// The file.
        filename: String,
        /// The URL.
        url: String,
        /// Status code.
        status: u16,
    },
    /// Transfer trouble after every attempt.
    #[error("{filename}: download from {url} failed after {attempts} attempt(s): {last}")]
    Transfer {
        /// The file.
        filename: String,
        /// The URL.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: String,
    },
    /// Local file trouble.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

impl DownloadError {
    /// The job failure class: input errors are not retryable.
    pub fn class(&self) -> ErrorClass {
        match self {
            DownloadError::BadName { .. }
            | DownloadError::BadUrl { .. }
            | DownloadError::HashMismatch { .. }
            | DownloadError::Refused { .. } => ErrorClass::BadInput,
            DownloadError::NoSpace { .. }
            | DownloadError::Transfer { .. }
            | DownloadError::Io { .. } => ErrorClass::EngineUnavailable,
        }
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> DownloadError + '_ {
    move |source| DownloadError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Progress of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadProgress<'a> {
    /// The file.
    pub filename: &'a str,
    /// Bytes on disk so far.
    pub done: u64,
    /// Bytes in all (0 when unknown).
    pub total: u64,
}

/// The cache under `models_root`.
#[derive(Clone)]
pub struct ModelCache {
    root: PathBuf,
    client: reqwest::Client,
    allow_local: bool,
}

/// Checks that a file name is a plain name in one directory.
pub fn check_filename(name: &str) -> Result<(), DownloadError> {
    let bad = |why| {
        Err(DownloadError::BadName {
            filename: name.to_string(),
            why,
        })
    };
    if name.is_empty() {
        return bad("is empty");
    }
    if name.contains(['/', '\\', '\0']) {
        return bad("contains a path separator");
    }
    if name == "." || name == ".." || name.contains("..") {
        return bad("contains `..`");
    }
    if name.starts_with('.') {
        return bad("starts with a dot");
    }
    Ok(())
}

/// A model id or engine name as one safe directory name.
fn dir_name(s: &str) -> String {
    crate::jobs::safe_name(s, "m")
}

async fn sha256_of(path: &Path) -> Result<(Sha256, u64), DownloadError> {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut f = std::fs::File::open(&p)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut n_total = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                return Ok((h, n_total));
            }
            h.update(&buf[..n]);
            n_total += n as u64;
        }
    })
    .await
    .map_err(|e| DownloadError::Io {
        path: path.display().to_string(),
        source: std::io::Error::other(e),
    })?
    .map_err(io_err(path))
}

impl ModelCache {
    /// A cache under `root`; a connection silent for `stall` is dropped
    /// (and resumed), so a slow but moving download never times out.
    pub fn new(root: PathBuf, stall: Duration) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(stall)
            .build()
            .unwrap_or_default();
        Self {
            root,
            client,
            allow_local: false,
        }
    }

    /// Also accepts `file://` URLs, used in place (for `studio-worker job`
    /// run by a person; never for studio offers).
    pub fn allow_local_files(mut self) -> Self {
        self.allow_local = true;
        self
    }

    /// Makes every file of a model available; returns file name → path.
    pub async fn ensure(
        &self,
        engine: &Engine,
        model: &str,
        files: &[ModelFile],
        progress: &mut (dyn FnMut(DownloadProgress<'_>) + Send),
    ) -> Result<BTreeMap<String, String>, DownloadError> {
        // Validate everything before writing anything.
        for f in files {
            check_filename(&f.filename)?;
            let bad_url = |why: String| DownloadError::BadUrl {
                filename: f.filename.clone(),
                url: f.url.clone(),
                why,
            };
            let url = reqwest::Url::parse(&f.url).map_err(|e| bad_url(e.to_string()))?;
            match url.scheme() {
                "https" => {}
                "http" if is_loopback(&url) => {}
                "http" => {
                    return Err(bad_url(
                        "plain http is allowed only to loopback; use https".into(),
                    ))
                }
                "file" if self.allow_local => {}
                other => return Err(bad_url(format!("scheme `{other}` is not allowed"))),
            }
            if let Some(h) = &f.sha256 {
                if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad_url(format!("sha256 `{h}` is not 64 hex digits")));
                }
            }
        }
        let mut out = BTreeMap::new();
        if files.is_empty() {
            return Ok(out);
        }
        let dir = self
            .root
            .join(dir_name(engine.as_str()))
            .join(dir_name(model));
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(io_err(&dir))?;
        for f in files {
            if let Some(local) = self.local_file(f)? {
                out.insert(f.filename.clone(), local);
                continue;
            }
            let path = self.ensure_file(&dir, f, progress).await?;
            out.insert(f.filename.clone(), path.to_string_lossy().into_owned());
        }
        Ok(out)
    }

    /// A `file://` model file used in place (only with `allow_local_files`).
    fn local_file(&self, f: &ModelFile) -> Result<Option<String>, DownloadError> {
        if !self.allow_local || !f.url.starts_with("file://") {
            return Ok(None);
        }
        let bad = |why: String| DownloadError::BadUrl {
            filename: f.filename.clone(),
            url: f.url.clone(),
            why,
        };
        let path = reqwest::Url::parse(&f.url)
            .ok()
            .and_then(|u| u.to_file_path().ok())
            .ok_or_else(|| bad("is not a local file path".into()))?;
        if !path.is_file() {
            return Err(bad("no such file".into()));
        }
        Ok(Some(path.to_string_lossy().into_owned()))
    }

    async fn ensure_file(
        &self,
        dir: &Path,
        f: &ModelFile,
        progress: &mut (dyn FnMut(DownloadProgress<'_>) + Send),
    ) -> Result<PathBuf, DownloadError> {
        let name = &f.filename;
        let path = dir.join(name);
        let lock_path = dir.join(format!("{name}.lock"));
        let _lock = FileLock::acquire(&lock_path, || {
            tracing::info!(target: "job", "waiting for another download of {name}");
        })
        .await
        .map_err(io_err(&lock_path))?;
        let expected = f.sha256.as_ref().map(|h| h.to_ascii_lowercase());
        let verified = dir.join(format!(".{name}.sha256"));
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            match &expected {
                None => return Ok(path),
                Some(want) => {
                    if tokio::fs::read_to_string(&verified)
                        .await
                        .map(|s| s.trim() == want)
                        .unwrap_or(false)
                    {
                        return Ok(path);
                    }
                    let (h, _) = sha256_of(&path).await?;
                    if hex::encode(h.finalize()) == *want {
                        let _ = tokio::fs::write(&verified, want).await;
                        return Ok(path);
                    }
                    tracing::warn!(target: "job", "{name}: cached file does not match its sha256; downloading again");
                    tokio::fs::remove_file(&path).await.map_err(io_err(&path))?;
                }
            }
        }
        let part = dir.join(format!("{name}.part"));
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            match self.attempt(dir, f, &part, progress).await {
                Ok(Attempt::Done(hasher)) => {
                    let got = hex::encode(hasher.finalize());
                    if let Some(want) = &expected {
                        if got != *want {
                            let _ = tokio::fs::remove_file(&part).await;
                            return Err(DownloadError::HashMismatch {
                                filename: name.clone(),
                                expected: want.clone(),
                                got,
                            });
                        }
                    }
                    tokio::fs::rename(&part, &path)
                        .await
                        .map_err(io_err(&path))?;
                    let _ = tokio::fs::write(&verified, &got).await;
                    tracing::info!(target: "job", "{name}: downloaded and verified (sha256 {got})");
                    return Ok(path);
                }
                Ok(Attempt::Retry(why)) => {
                    tracing::warn!(target: "job", "{name}: download attempt {attempt}/{ATTEMPTS} broke off: {why}; resuming");
                    last = why;
                    tokio::time::sleep(Duration::from_millis(200 * attempt as u64)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(DownloadError::Transfer {
            filename: name.clone(),
            url: f.url.clone(),
            attempts: ATTEMPTS,
            last,
        })
    }

    /// One request: resumes `.part` when the server allows it.
    async fn attempt(
        &self,
        dir: &Path,
        f: &ModelFile,
        part: &Path,
        progress: &mut (dyn FnMut(DownloadProgress<'_>) + Send),
    ) -> Result<Attempt, DownloadError> {
        let name = &f.filename;
        let mut have = tokio::fs::metadata(part)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        if let Some(approx) = f.approx_bytes {
            let needed = approx.saturating_sub(have);
            if let Some(free) = crate::platform::free_bytes(dir) {
                if free < needed + DISK_MARGIN {
                    return Err(DownloadError::NoSpace {
                        filename: name.clone(),
                        dir: dir.display().to_string(),
                        needed,
                        free,
                    });
                }
            }
        }
        let mut req = self.client.get(&f.url);
        if have > 0 {
            req = req.header("Range", format!("bytes={have}-"));
        }
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Ok(Attempt::Retry(e.to_string())),
        };
        let status = resp.status();
        let append = match status.as_u16() {
            206 if have > 0 => true,
            200 => {
                have = 0;
                false
            }
            416 => {
                // Our partial file is not a prefix the server recognises.
                let _ = tokio::fs::remove_file(part).await;
                return Ok(Attempt::Retry(
                    "server refused the resume range; starting over".into(),
                ));
            }
            s if (400..500).contains(&s) => {
                return Err(DownloadError::Refused {
                    filename: name.clone(),
                    url: f.url.clone(),
                    status: s,
                })
            }
            s => return Ok(Attempt::Retry(format!("HTTP {s}"))),
        };
        let total = resp.content_length().map(|n| n + have);
        let mut hasher = if append {
            sha256_of(part).await?.0
        } else {
            Sha256::new()
        };
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(part)
            .await
            .map_err(io_err(part))?;
        let mut done = have;
        let mut last_report = 0u64;
        progress(DownloadProgress {
            filename: name,
            done,
            total: total.unwrap_or(0),
        });
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    file.flush().await.map_err(io_err(part))?;
                    return Ok(Attempt::Retry(format!(
                        "connection broke after {done} bytes: {e}"
                    )));
                }
            };
            file.write_all(&chunk).await.map_err(io_err(part))?;
            hasher.update(&chunk);
            done += chunk.len() as u64;
            if done - last_report >= 1 << 20 {
                last_report = done;
                progress(DownloadProgress {
                    filename: name,
                    done,
                    total: total.unwrap_or(0),
                });
            }
        }
        file.flush().await.map_err(io_err(part))?;
        file.sync_all().await.map_err(io_err(part))?;
        progress(DownloadProgress {
            filename: name,
            done,
            total: total.unwrap_or(done),
        });
        if let Some(t) = total {
            if done != t {
                return Ok(Attempt::Retry(format!(
                    "got {done} of {t} bytes (Content-Length)"
                )));
            }
        }
        Ok(Attempt::Done(hasher))
    }
}

enum Attempt {
    Done(Sha256),
    Retry(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_file_names_pass() {
        for ok in ["model.gguf", "ae.safetensors", "a-b_c.1.bin"] {
            assert!(check_filename(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "a/b",
            "a\\\\b",
            "..",
            ".",
            ".hidden",
            "x..y",
            "/etc/passwd",
        ] {
            assert!(check_filename(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn directory_names_are_safe() {
        assert_eq!(dir_name("sd-cpp"), "sd-cpp");
        assert_eq!(dir_name("../../etc"), "m.._.._etc");
        assert_eq!(dir_name("flux1/dev:q4"), "flux1_dev_q4");
    }
}
