//! Self-update: a versioned install switched with one rename, verified
//! before it is switched to, and rolled back when the new version cannot
//! start.
//!
//! ```text
//! ROOT/versions/V/   a complete release (studio-worker, runners, manifest.json)
//! ROOT/current     → versions/V          services run ROOT/current/studio-worker
//! ROOT/update-state.json                 {pending: {version, previous, starts}, bad: [..]}
//!
//! every auto_update_interval_secs: feed ─▶ newer for this target and variant?
//!   ─▶ download archive + .sha256 (missing or wrong: refused) ─▶ unpack to versions/.incoming-V
//!   ─▶ manifest (product, target, variant, every runner, every file's SHA-256) ─▶ versions/V
//!   ─▶ probe: V's studio-worker `self-check` (each runner's handshake) and a synthetic `job`
//!   ─▶ hold: offers rejected `busy`, wait for the running job
//!   ─▶ pending {V, previous, 0} ─▶ flip `current` ─▶ drain the sessions ─▶ exec ROOT/current/studio-worker
//! start of V: starts + 1; healthy (runners handshake, sessions loop) ─▶ pending cleared
//!   starts > 2 (two starts that never got healthy) ─▶ flip back, V recorded bad, exec the previous
//! ```
//!
//! Downloading, checking and probing happen while jobs still run; only
//! the flip waits for idle, so the worker is away for one drain and one
//! exec, not for a download.

pub mod feed;
pub mod install;

/// Whether a release can be switched to in place (`current` flipped with
/// one rename of a symlink). Windows has no unprivileged directory symlink
/// and std cannot make a junction, so there `install.ps1` installs updates
/// and `run` does not update itself (`autoUpdate` stays false).
pub const IN_PLACE: bool = cfg!(unix);

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use anyhow::Context;
use serde::{Deserialize, Serialize};

pub use feed::Version;

/// A new version gets this many starts to become healthy.
pub const MAX_FAILED_STARTS: u32 = 2;

/// The product name in a release manifest.
pub const PRODUCT: &str = "studio-worker";

/// A release's `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`PRODUCT`] for ours.
    pub product: String,
    /// `0.4.0`.
    pub version: String,
    /// The target triple.
    pub target: String,
    /// `cpu` or `cuda`.
    pub variant: String,
    /// Every file with its SHA-256.
    pub files: Vec<ManifestFile>,
}

/// One file of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Its path in the release folder.
    pub path: String,
    /// Its SHA-256, hex.
    pub sha256: String,
}

impl Manifest {
    /// Reads `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<Self, String> {
        let path = dir.join("manifest.json");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// This program's install, when it runs from the versioned layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// ROOT.
    pub root: PathBuf,
    /// Its manifest (version, target, variant).
    pub manifest: Manifest,
}

impl Installed {
    /// The install this program runs from: its folder is
    /// `ROOT/versions/V` and holds a `manifest.json` of ours.
    pub fn detect() -> Option<Self> {
        let exe = std::env::current_exe().ok()?.canonicalize().ok()?;
        let dir = exe.parent()?;
        let versions = dir.parent()?;
        if versions.file_name()? != "versions" {
            return None;
        }
        let manifest = Manifest::read(dir).ok()?;
        let root = versions.parent()?.to_path_buf();
        (manifest.product == PRODUCT).then_some(Self { root, manifest })
    }

    /// `ROOT/current/studio-worker` (what services run).
    pub fn current_binary(&self) -> PathBuf {
        self.root
            .join("current")
            .join(format!("studio-worker{}", std::env::consts::EXE_SUFFIX))
    }

    fn state_path(&self) -> PathBuf {
        self.root.join("update-state.json")
    }

    /// The update state (empty when there is none or it is unreadable).
    pub fn state(&self) -> UpdateState {
        std::fs::read_to_string(self.state_path())
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// Writes the update state (atomically).
    pub fn save_state(&self, state: &UpdateState) -> anyhow::Result<()> {
        let path = self.state_path();
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(state)?)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
    }
}

/// What survives between starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateState {
    /// A version switched to that has not proved healthy yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
    /// Versions that failed here; never tried again.
    #[serde(default)]
    pub bad: Vec<String>,
}

/// A switch not yet proved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The new version.
    pub version: String,
    /// The one it replaced (rolled back to).
    pub previous: String,
    /// Starts so far.
    pub starts: u32,
}

/// This program's version: its install's manifest's, else the build's.
pub fn running_version() -> String {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| {
        Installed::detect()
            .map(|i| i.manifest.version)
            .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string())
    })
    .clone()
}

/// This build's target triple and the variant it was built as.
pub fn this_target() -> (String, String) {
    let target = option_env!("STUDIO_WORKER_TARGET")
        .map(str::to_string)
        .unwrap_or_else(|| {
            format!(
                "{}-{}",
                std::env::consts::ARCH,
                match std::env::consts::OS {
                    "linux" => "unknown-linux-gnu",
                    "macos" => "apple-darwin",
                    "windows" => "pc-windows-msvc",
                    other => other,
                }
            )
        });
    (target, "cpu".to_string())
}

static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Whether the update loop runs in this process (capabilities'
/// `autoUpdate`).
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

static EXEC: Mutex<Option<PathBuf>> = Mutex::new(None);

/// After `run` returns: the binary to exec into, if an update (or a
/// rollback) asked for one.
pub fn exec_requested() -> Option<PathBuf> {
    EXEC.lock().ok().and_then(|g| g.clone())
}

fn request_exec(path: PathBuf) {
    if let Ok(mut g) = EXEC.lock() {
        *g = Some(path);
    }
}

/// Replaces this process with `program` and the same arguments (Unix:
/// the same pid, so a service manager sees no exit); returns only on
/// failure.
pub fn exec(program: &Path) -> anyhow::Error {
    // Reports queued so far (a rollback's reason) go out first.
    crate::report::flush();
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let err = std::process::Command::new(program).args(&args).exec();
        anyhow::anyhow!("cannot exec {}: {err}", program.display())
    }
    #[cfg(not(unix))]
    {
        // No exec: start the new version and leave (the task restarts
        // on failure; a clean start keeps going on its own).
        match std::process::Command::new(program).args(&args).spawn() {
            Ok(_) => std::process::exit(0),
            Err(e) => anyhow::anyhow!("cannot start {}: {e}", program.display()),
        }
    }
}

/// At the start of `run`: counts this start of a pending version, and
/// after [`MAX_FAILED_STARTS`] failed ones flips back to the previous
/// version and execs it (recording this one as bad). Returns whether this
/// start is a pending version's (then [`mark_healthy`] clears it).
pub fn on_start() -> bool {
    let Some(inst) = Installed::detect() else {
        return false;
    };
    let mut state = inst.state();
    let me = inst.manifest.version.clone();
    let Some(p) = state.pending.as_mut().filter(|p| p.version == me) else {
        return false;
    };
    p.starts += 1;
    if p.starts <= MAX_FAILED_STARTS {
        let starts = p.starts;
        if let Err(e) = inst.save_state(&state) {
            tracing::warn!(target: "worker", "update state: {e:#}");
        }
        tracing::info!(target: "worker", "version {me}: start {starts} of {MAX_FAILED_STARTS} to prove healthy");
        fault_exit_at_start(&me);
        return true;
    }
    let previous = p.previous.clone();
    tracing::error!(target: "worker", "version {me} did not become healthy in {MAX_FAILED_STARTS} starts: rolling back to {previous}");
    state.pending = None;
    if !state.bad.contains(&me) {
        state.bad.push(me.clone());
    }
    let back = install::flip(&inst.root, &previous);
    if let Err(e) = inst.save_state(&state) {
        tracing::warn!(target: "worker", "update state: {e:#}");
    }
    match back {
        Ok(()) => {
            let err = exec(&inst.current_binary());
            tracing::error!(target: "worker", "rollback: {err:#}");
        }
        Err(e) => tracing::error!(target: "worker", "rollback to {previous} failed: {e:#}"),
    }
    crate::report::flush();
    std::process::exit(1);
}

/// Test hook: with `STUDIO_WORKER_FAULT_INJECTION=1`, a version named in
/// `STUDIO_WORKER_FAULT_EXIT_AT_START` exits at once (a release that
/// cannot start).
fn fault_exit_at_start(version: &str) {
    if std::env::var("STUDIO_WORKER_FAULT_INJECTION").as_deref() == Ok("1")
        && std::env::var("STUDIO_WORKER_FAULT_EXIT_AT_START").as_deref() == Ok(version)
    {
        eprintln!("studio-worker {version}: exiting at start (fault injection)");
        std::process::exit(3);
    }
}

/// The pending version proved healthy: forget it.
pub fn mark_healthy() {
    let Some(inst) = Installed::detect() else {
        return;
    };
    let mut state = inst.state();
    if state
        .pending
        .as_ref()
        .is_some_and(|p| p.version == inst.manifest.version)
    {
        state.pending = None;
        match inst.save_state(&state) {
            Ok(()) => {
                tracing::info!(target: "worker", "version {} is healthy", inst.manifest.version)
            }
            Err(e) => tracing::warn!(target: "worker", "update state: {e:#}"),
        }
    }
}

pub use install::{check_update, check_update_report, spawn_loop};
