//! An exclusive advisory lock on a file (`flock` on Unix, `LockFileEx` on
//! Windows, through `std`), held while one process downloads a model file;
//! other jobs and processes wait for it.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

/// Holds the lock until dropped (closing the file releases it).
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Takes the lock on `path`, polling every 100 ms; `on_wait` is called
    /// once if another holder makes us wait.
    pub async fn acquire(path: &Path, mut on_wait: impl FnMut()) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Self { _file: file }),
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
            if !told {
                on_wait();
                told = true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
