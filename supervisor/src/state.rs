//! The last session state, written by `run` beside the config file and
//! read by `status`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What `status` shows about the session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionState {
    /// `connecting`, `connected`, `disconnected`, `auth_failed`, `stopped`.
    pub state: String,
    /// When it changed (RFC 3339).
    pub since: String,
    /// Detail (the reason for a disconnect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Process id of the `run` that wrote it.
    pub pid: u32,
}

/// `state.json` beside the config file.
pub fn path_for(config_path: &Path) -> PathBuf {
    config_path.with_file_name("state.json")
}

/// `status.json` beside the config file: the running worker's snapshot.
pub fn status_path_for(config_path: &Path) -> PathBuf {
    config_path.with_file_name("status.json")
}

/// Records a state change (best effort: a status file must never stop the
/// worker).
pub fn record(config_path: &Path, state: &str, detail: Option<String>) {
    let s = SessionState {
        state: state.into(),
        since: crate::logship::now_ts(),
        detail,
        pid: std::process::id(),
    };
    let path = path_for(config_path);
    let tmp = path.with_extension("json.tmp");
    if let Ok(text) = serde_json::to_vec_pretty(&s) {
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
}

/// Reads the last recorded state.
pub fn read(config_path: &Path) -> Option<SessionState> {
    let text = std::fs::read(path_for(config_path)).ok()?;
    serde_json::from_slice(&text).ok()
}
