//! One scheduler per GPU. `run` and `serve` each claim the GPUs their
//! sessions use before their scheduler starts: an exclusive advisory lock
//! (`flock` / `LockFileEx`, through `std`) on one file per GPU in a
//! directory every user of the host shares, held until the process ends
//! (the kernel drops it however the process dies). A second `run` or
//! `serve` on the same GPU, whatever config it reads, is refused and told
//! who holds it, so two schedulers never both think they own a GPU's
//! memory.
//!
//! The directory is `STUDIO_WORKER_LOCK_DIR` when set, else
//! `/run/lock/studio-worker` where `/run/lock` exists (world-writable on
//! Debian, Ubuntu and Fedora, and shared by a service and a user's shell),
//! else `studio-worker-locks` in the temporary directory. A claim that
//! cannot be made for a reason other than another holder (a read-only
//! directory, say) is logged and skipped: the guard is lost, not the
//! worker.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::{Gpu, Vendor};

/// Overrides where the claim files live (tests give each worker its own).
pub const DIR_ENV: &str = "STUDIO_WORKER_LOCK_DIR";

/// Where claim files live (see the module docs).
pub fn dir() -> PathBuf {
    if let Some(d) = std::env::var_os(DIR_ENV).filter(|d| !d.is_empty()) {
        return d.into();
    }
    let run_lock = Path::new("/run/lock");
    if cfg!(unix) && run_lock.is_dir() {
        return run_lock.join("studio-worker");
    }
    std::env::temp_dir().join("studio-worker-locks")
}

/// The claims this process holds; dropping them releases the GPUs.
#[derive(Debug, Default)]
pub struct Claims {
    files: Vec<(u32, File)>,
}

impl Claims {
    /// The GPU indices held.
    pub fn gpus(&self) -> Vec<u32> {
        self.files.iter().map(|(g, _)| *g).collect()
    }
}

/// Why the GPUs could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// Another process holds a GPU's claim.
    #[error(
        "GPU {gpu} ({name}) is already scheduled by another studio-worker ({holder}): one scheduler per GPU. Stop it first, or set local_api_listen in its config and use its local API"
    )]
    Held {
        /// The GPU's index.
        gpu: u32,
        /// Its name.
        name: String,
        /// Who holds it, as its claim file says.
        holder: String,
    },
}

/// Claims each GPU in `indices` (those not in `gpus` are skipped) for
/// `command` run with `config`. All or none: on a refusal the claims
/// already taken are released.
pub fn claim(
    gpus: &[Gpu],
    indices: &[u32],
    command: &str,
    config: &Path,
) -> Result<Claims, ClaimError> {
    claim_in(&dir(), gpus, indices, command, config)
}

/// [`claim`] with claim files in `dir`.
pub fn claim_in(
    dir: &Path,
    gpus: &[Gpu],
    indices: &[u32],
    command: &str,
    config: &Path,
) -> Result<Claims, ClaimError> {
    let mut claims = Claims::default();
    if indices.is_empty() {
        return Ok(claims);
    }
    if let Err(e) = make_shared_dir(dir) {
        tracing::warn!(target: "gpu", "cannot create the GPU claim directory {}: {e}; running without the one-scheduler-per-GPU guard", dir.display());
        return Ok(claims);
    }
    for gpu in gpus.iter().filter(|g| indices.contains(&g.index)) {
        if claims.files.iter().any(|(i, _)| *i == gpu.index) {
            continue;
        }
        let path = dir.join(file_name(gpu));
        let (mut file, writable) = match open(&path) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(target: "gpu", "cannot open {}: {e}; GPU {} runs without the one-scheduler guard", path.display(), gpu.index);
                continue;
            }
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(ClaimError::Held {
                    gpu: gpu.index,
                    name: gpu.name.clone(),
                    holder: holder(&mut file),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                tracing::warn!(target: "gpu", "cannot lock {}: {e}; GPU {} runs without the one-scheduler guard", path.display(), gpu.index);
                continue;
            }
        }
        if writable {
            let who = format!(
                "pid {}, `{command}` with {}\n",
                std::process::id(),
                config.display()
            );
            let written = file.set_len(0).and_then(|()| {
                use std::io::Seek;
                file.rewind()?;
                file.write_all(who.as_bytes())
            });
            if let Err(e) = written {
                tracing::debug!(target: "gpu", "cannot note the holder in {}: {e}", path.display());
            }
        }
        claims.files.push((gpu.index, file));
    }
    Ok(claims)
}

/// `nvidia-0.lock`, `fake-1.lock`: real and fake GPUs never share a file.
fn file_name(gpu: &Gpu) -> String {
    let vendor = match gpu.vendor {
        Vendor::Nvidia => "nvidia",
        Vendor::Amd => "amd",
        Vendor::Apple => "apple",
        Vendor::Fake => "fake",
    };
    format!("{vendor}-{}.lock", gpu.index)
}

/// Opens (creating) a claim file; another user's file opens read-only,
/// which is enough to lock it.
fn open(path: &Path) -> std::io::Result<(File, bool)> {
    let mut rw = OpenOptions::new();
    rw.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        rw.mode(0o644);
    }
    match rw.open(path) {
        Ok(f) => Ok((f, true)),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Ok((File::open(path)?, false))
        }
        Err(e) => Err(e),
    }
}

/// What the holder wrote in its claim file.
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    match text.trim() {
        "" => "holder unknown".to_string(),
        t => t.chars().take(300).collect(),
    }
}

/// Creates `dir` so that every user can claim in it (sticky and
/// world-writable on Unix, as `/tmp`).
fn make_shared_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777)) {
            tracing::debug!(target: "gpu", "cannot share {}: {e}", dir.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpus() -> Vec<Gpu> {
        super::super::fake::parse("24,8").unwrap()
    }

    #[test]
    fn a_second_claim_on_a_gpu_is_refused_naming_the_holder_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = claim_in(dir.path(), &gpus(), &[0], "run", Path::new("/a.toml")).unwrap();
        assert_eq!(first.gpus(), vec![0]);
        // Another GPU is free.
        let other = claim_in(dir.path(), &gpus(), &[1], "serve", Path::new("/b.toml")).unwrap();
        assert_eq!(other.gpus(), vec![1]);
        drop(other);
        // All or none: GPU 1 is free, GPU 0 is held.
        let err = claim_in(dir.path(), &gpus(), &[1, 0], "serve", Path::new("/b.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("GPU 0"), "{err}");
        assert!(
            err.contains(&format!("pid {}, `run` with /a.toml", std::process::id())),
            "{err}"
        );
        let again = claim_in(dir.path(), &gpus(), &[1], "serve", Path::new("/b.toml")).unwrap();
        assert_eq!(again.gpus(), vec![1], "the refused claim released GPU 1");
        drop(first);
        let later = claim_in(dir.path(), &gpus(), &[0], "serve", Path::new("/b.toml")).unwrap();
        assert_eq!(later.gpus(), vec![0]);
    }

    #[test]
    fn no_gpus_claims_nothing_and_an_unusable_directory_is_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let none = claim_in(dir.path(), &gpus(), &[], "run", Path::new("/a.toml")).unwrap();
        assert!(none.gpus().is_empty());
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"").unwrap();
        let blocked = claim_in(&file.join("sub"), &gpus(), &[0], "run", Path::new("/a")).unwrap();
        assert!(blocked.gpus().is_empty());
    }
}
