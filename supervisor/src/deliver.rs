//! Delivering binary results: the multipart upload with retries, and the
//! results directory that keeps what could not be delivered.

use std::path::{Path, PathBuf};
use std::time::Duration;

use studio_protocol::studio::http::{content_type_for_ext, http_url, multipart};
use studio_protocol::Secret;

/// Where to upload.
#[derive(Clone)]
pub struct UploadTarget {
    /// Studio root URL.
    pub api_base_url: String,
    /// This worker.
    pub worker_id: String,
    /// Bearer.
    pub auth_token: Secret,
}

/// Why an upload failed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The studio refused it (4xx): not retried.
    #[error("studio refused the upload: HTTP {status}: {body}")]
    Refused {
        /// Status code.
        status: u16,
        /// Up to 300 characters of the body.
        body: String,
    },
    /// 5xx or transport trouble after every attempt.
    #[error("upload failed after {attempts} attempt(s): {last}")]
    Exhausted {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: String,
    },
}

/// One binary result to upload.
pub struct ResultUpload<'a> {
    /// The job.
    pub job_id: &'a str,
    /// The full prompt (Part B §5.7).
    pub prompt: &'a str,
    /// Extension of `data`.
    pub ext: &'a str,
    /// The bytes.
    pub data: &'a [u8],
}

/// Uploads one result; retries 5xx and transport errors with backoff
/// (1 s, 2 s, 4 s, ...) up to `attempts` tries while `still_owned()` holds.
/// Returns the number of attempts it took.
pub async fn upload(
    client: &reqwest::Client,
    target: &UploadTarget,
    item: &ResultUpload<'_>,
    attempts: u32,
    still_owned: impl Fn() -> bool,
) -> Result<u32, UploadError> {
    let ResultUpload {
        job_id,
        prompt,
        ext,
        data,
    } = *item;
    let url = http_url(
        &target.api_base_url,
        &format!("/workers/{}/jobs/{}/complete", target.worker_id, job_id),
    );
    let attempts = attempts.max(1);
    let mut last = String::new();
    for attempt in 1..=attempts {
        let part = reqwest::multipart::Part::bytes(data.to_vec())
            .file_name(format!("{job_id}.{ext}"))
            .mime_str(content_type_for_ext(ext))
            .map_err(|e| UploadError::Exhausted {
                attempts: attempt,
                last: e.to_string(),
            })?;
        let form = reqwest::multipart::Form::new()
            .text(multipart::PROMPT, prompt.to_string())
            .text(multipart::EXT, ext.to_string())
            .part(multipart::FILE, part);
        let sent = client
            .post(&url)
            .bearer_auth(target.auth_token.expose())
            .multipart(form)
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => return Ok(attempt),
            Ok(resp) => {
                let status = resp.status();
                let body = body_snippet(resp).await;
                if status.is_client_error() {
                    return Err(UploadError::Refused {
                        status: status.as_u16(),
                        body,
                    });
                }
                last = format!("HTTP {status}: {body}");
            }
            Err(e) => last = e.to_string(),
        }
        tracing::warn!(target: "upload", job_id = %job_id, "upload attempt {attempt}/{attempts} failed: {last}");
        if attempt < attempts {
            if !still_owned() {
                return Err(UploadError::Exhausted {
                    attempts: attempt,
                    last: format!("{last}; the session that owned the job is gone"),
                });
            }
            tokio::time::sleep(Duration::from_secs(1 << (attempt - 1).min(4))).await;
        }
    }
    Err(UploadError::Exhausted { attempts, last })
}

/// Up to 300 characters of an error response's body, for logs and errors.
pub async fn body_snippet(resp: reqwest::Response) -> String {
    resp.text()
        .await
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect()
}

/// Keeps an undelivered result in `dir` as `<job id>.<ext>`, pruning the
/// oldest files so the directory stays under `max_bytes`. Returns the path.
pub fn keep_result(
    dir: &Path,
    job_id: &str,
    ext: &str,
    data: &[u8],
    max_bytes: u64,
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{}.{ext}", crate::jobs::sanitise(job_id)));
    std::fs::write(&path, data)?;
    prune(dir, max_bytes, &path)?;
    Ok(path)
}

fn prune(dir: &Path, max_bytes: u64, keep: &Path) -> std::io::Result<()> {
    let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            m.is_file().then(|| {
                (
                    m.modified().unwrap_or(std::time::UNIX_EPOCH),
                    m.len(),
                    e.path(),
                )
            })
        })
        .collect();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    files.sort();
    for (_, len, path) in files {
        if total <= max_bytes {
            break;
        }
        if path == keep {
            continue;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= len;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_dir_prunes_oldest_past_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let a = keep_result(dir.path(), "job-a", "png", &[0; 600], 1000).unwrap();
        // Older by an hour, whatever the clock's resolution.
        let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&a)
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
        let b = keep_result(dir.path(), "job/../b", "png", &[0; 600], 1000).unwrap();
        assert!(!a.exists(), "oldest pruned");
        assert!(b.exists());
        assert_eq!(b.file_name().unwrap(), "job_.._b.png");
    }
}
