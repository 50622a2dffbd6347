//! The TOML config file: where it lives, what it holds, and how it is
//! written (atomically, mode 0600, secrets never printed).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use studio_protocol::Secret;

/// Errors reading or writing the config file; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this config.
    #[error("config file {path} is not valid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, on one line.
        message: String,
    },
    /// Writing failed.
    #[error("cannot write config file {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No platform config directory and no `--config`.
    #[error("no config directory on this platform; pass --config PATH")]
    NoConfigDir,
}

/// Default studio root.
pub const DEFAULT_API_BASE_URL: &str = "https://studio.minis.gg/";
/// Default address of the metrics and control endpoint.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";
/// Default release feed.
pub const DEFAULT_FEED: &str = "https://api.github.com/repos/webbertakken/studio-worker/releases";

/// Everything in `config.toml`. Unknown keys are ignored so older and newer
/// files load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Studio root URL.
    pub api_base_url: String,
    /// Only read by `run` when no credentials exist yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap_token: Option<Secret>,
    /// The single session's identity (top-level keys).
    #[serde(flatten)]
    pub identity: Identity,
    /// Seconds between approval polls.
    pub registration_poll_secs: u64,
    /// Largest `vramGbEstimate` to take.
    pub vram_threshold_gb: f64,
    /// Start with the machine.
    pub auto_start: bool,
    /// False: online but not claiming (offers rejected `paused`).
    pub auto_enabled: bool,
    /// Seed key: `"gradio"` sends every studio image job to the Gradio
    /// app at `gradio_endpoint_url`, whatever its `modelSource` says (the
    /// worker still advertises `multi`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// Seed key: the Gradio app the `gradio` engine calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gradio_endpoint_url: Option<String>,
    /// Allow a `gradio_endpoint_url` that is not on this host.
    pub gradio_allow_remote: bool,
    /// `[gradio]`: how image jobs map onto the app's endpoint.
    #[serde(skip_serializing_if = "GradioTable::is_default")]
    pub gradio: GradioTable,
    /// Seed key: the image model ids to advertise (replacing the image
    /// engines' sentinel ids), e.g. the models a Gradio app serves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supported_models_override: Option<Vec<String>>,
    /// Update automatically between jobs.
    pub auto_update_enabled: bool,
    /// Seconds between feed checks.
    pub auto_update_interval_secs: u64,
    /// Release feed URL.
    pub auto_update_feed: String,
    /// Track pre-releases.
    pub auto_update_prerelease: bool,
    /// Where `run` serves `/metrics`, `/status`, `/healthz` and the
    /// control routes (`host:port`; port 0 picks a free one; `off`).
    pub metrics_listen: String,
    /// Allow a non-loopback `metrics_listen` (then every route needs the
    /// control token).
    pub metrics_allow_remote: bool,
    /// A fixed control token (a remote Prometheus needs one that survives
    /// restarts); unset: a fresh random one at each start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_token: Option<Secret>,
    /// Where `run` serves the local OpenAI-compatible API (`host:port`,
    /// e.g. `127.0.0.1:11435`; `off`).
    pub local_api_listen: String,
    /// Allow a non-loopback `local_api_listen`.
    pub local_api_allow_remote: bool,
    /// A fixed API token; unset: the one generated once into
    /// `<config>.local-api-token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_api_token: Option<Secret>,
    /// Local requests that may wait while the GPU is busy.
    pub local_api_queue: usize,
    /// Reconnect attempts before giving up; 0 = infinite.
    pub ws_reconnect_attempts: u32,
    /// Model cache root (`~` expanded).
    pub models_root: PathBuf,
    /// The runner binary; default: `engine-runner` beside this executable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine_runner_path: Option<PathBuf>,
    /// Where undelivered results are kept; default: the platform data dir.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results_dir: Option<PathBuf>,
    /// Cap on the results directory in MiB (oldest pruned).
    pub results_max_mb: u64,
    /// Largest runner-channel frame in bytes.
    pub max_frame_bytes: usize,
    /// Upload attempts for a binary result (5xx and transport errors).
    pub upload_attempts: u32,
    /// Seconds to let an in-flight job finish on SIGTERM.
    pub drain_timeout_secs: u64,
    /// A runner that reports no progress for this long is killed (stalled).
    pub stall_timeout_secs: u64,
    /// Hard cap on one job in seconds (timeout).
    pub job_timeout_secs: u64,
    /// A runner that answers no ping for this long is killed.
    pub ping_timeout_secs: u64,
    /// CPU threads per native engine (default: physical cores).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine_threads: Option<u32>,
    /// Host memory cap per runner in MB (none by default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine_memory_limit_mb: Option<u64>,
    /// Worker-caused failures in a row before claiming pauses; 0 = never.
    pub max_consecutive_failures: u32,
    /// How long claiming pauses after that, in seconds.
    pub failure_cooldown_secs: u64,
    /// First restart delay of a dead runner, in ms (doubles per death).
    pub restart_backoff_initial_ms: u64,
    /// Largest restart delay, in ms.
    pub restart_backoff_max_ms: u64,
    /// Seconds an idle runner keeps its model loaded (0: stop after every
    /// job; -1: never stop for idleness).
    pub model_keep_alive_secs: i64,
    /// GPU memory in GB kept free beyond every estimate.
    pub vram_margin_gb: f64,
    /// The ONNX Runtime library (`libonnxruntime.so.1.x`) for the piper
    /// and onnx engines; default: `ORT_DYLIB_PATH`, else beside the runner
    /// binaries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onnxruntime_path: Option<PathBuf>,
    /// Named models (`[[models]]`); `pin = true` ones load at start.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<crate::models::named::NamedModel>,
    /// One studio session per GPU: `"all"` or a list of indices. Unset:
    /// one session, on the largest GPU, with the top-level identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpus: Option<GpuSelection>,
    /// The per-GPU identities (`[[worker]]`), used when `gpus` is set.
    #[serde(rename = "worker", skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<WorkerTable>,
}

/// How a set secret is shown.
pub const REDACTED: &str = "***";

/// A config value that cannot be used, naming its key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct FieldError {
    /// The key (`vram_threshold_gb`, `gradio.timeout_secs`).
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    fn new(key: &str, message: impl Into<String>) -> Self {
        Self {
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// The top-level keys a running worker applies without a restart (the
/// README's config table says the same).
pub const LIVE_KEYS: &[&str] = &[
    "registration_poll_secs",
    "vram_threshold_gb",
    "auto_enabled",
    "results_dir",
    "results_max_mb",
    "upload_attempts",
    "drain_timeout_secs",
    "stall_timeout_secs",
    "job_timeout_secs",
    "ping_timeout_secs",
    "max_consecutive_failures",
    "failure_cooldown_secs",
    "model_keep_alive_secs",
    "vram_margin_gb",
    "auto_update_enabled",
    "auto_update_interval_secs",
    "auto_update_feed",
    "auto_update_prerelease",
    "engine",
    "supported_models_override",
];

/// The `[gradio]` table: which endpoint of the app image jobs call and
/// how task fields become its parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GradioTable {
    /// The endpoint (`/generate`); unset: the first that takes a text
    /// prompt and returns an image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_name: Option<String>,
    /// Task field (`prompt`, `negativePrompt`, `width`, `height`,
    /// `steps`, `seed`, `cfgScale`, `samplingMethod`, `initImageUrl`,
    /// `maskUrl`, `denoise`) → the endpoint's parameter name; `""` leaves
    /// the field out. Unmapped fields go to parameters of the usual names.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub params: std::collections::BTreeMap<String, String>,
    /// Parameter name → a value sent with every job.
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub fixed: serde_json::Map<String, serde_json::Value>,
    /// The longest one job may take in the app, its queue included;
    /// default: `job_timeout_secs`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// A bearer token for an app behind auth (an `hf_…` token for a
    /// Hugging Face Space).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
}

impl GradioTable {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// `gpus = "all"` or `gpus = [0, 2]`, as written.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum GpuSelection {
    /// Indices as the probe numbers them.
    List(Vec<u32>),
    /// A word; only `"all"` means something (checked when resolved).
    Word(String),
}

impl<'de> Deserialize<'de> for GpuSelection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = GpuSelection;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("gpus = \"all\" or a list of GPU indices such as [0, 1]")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<GpuSelection, E> {
                Ok(GpuSelection::Word(v.into()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<GpuSelection, A::Error> {
                let mut list = Vec::new();
                while let Some(i) = seq.next_element::<u32>()? {
                    list.push(i);
                }
                Ok(GpuSelection::List(list))
            }
        }
        d.deserialize_any(V)
    }
}

/// One `[[worker]]` table: the studio identity of one GPU's session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerTable {
    /// The GPU index (as `status` lists them).
    pub gpu: u32,
    /// This GPU's own identity and approval state.
    #[serde(flatten)]
    pub identity: Identity,
    /// This GPU's largest `vramGbEstimate`; default: the top-level one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vram_threshold_gb: Option<f64>,
}

/// A studio identity and its approval state: the top-level keys (one
/// session) or one `[[worker]]` table's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Identity {
    /// Set by registration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// Set by registration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<Secret>,
    /// Per-install id for the approval flow (generated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub install_id: Option<String>,
    /// Pending approval request (cleared on decision).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration_request_id: Option<String>,
    /// Bearer for polling the approval request (cleared on decision).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration_secret: Option<Secret>,
}

impl Identity {
    /// True when both credentials are present.
    pub fn has_credentials(&self) -> bool {
        self.worker_id.as_deref().is_some_and(|w| !w.is_empty())
            && self.auth_token.as_ref().is_some_and(|t| !t.is_empty())
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            api_base_url: DEFAULT_API_BASE_URL.into(),
            bootstrap_token: None,
            identity: Identity::default(),
            registration_poll_secs: 30,
            vram_threshold_gb: 12.0,
            auto_start: true,
            auto_enabled: true,
            engine: None,
            gradio_endpoint_url: None,
            gradio_allow_remote: false,
            gradio: GradioTable::default(),
            supported_models_override: None,
            auto_update_enabled: true,
            auto_update_interval_secs: 1800,
            auto_update_feed: DEFAULT_FEED.into(),
            auto_update_prerelease: false,
            metrics_listen: DEFAULT_METRICS_LISTEN.into(),
            metrics_allow_remote: false,
            metrics_token: None,
            local_api_listen: "off".into(),
            local_api_allow_remote: false,
            local_api_token: None,
            local_api_queue: 8,
            ws_reconnect_attempts: 0,
            models_root: PathBuf::from("~/models"),
            engine_runner_path: None,
            results_dir: None,
            results_max_mb: 1024,
            max_frame_bytes: studio_protocol::runner::DEFAULT_MAX_FRAME_BYTES,
            upload_attempts: 3,
            drain_timeout_secs: 60,
            stall_timeout_secs: 300,
            job_timeout_secs: 1800,
            ping_timeout_secs: 30,
            engine_threads: None,
            engine_memory_limit_mb: None,
            max_consecutive_failures: 5,
            failure_cooldown_secs: 300,
            restart_backoff_initial_ms: 100,
            restart_backoff_max_ms: 30_000,
            model_keep_alive_secs: 300,
            vram_margin_gb: 1.0,
            onnxruntime_path: None,
            models: Vec::new(),
            gpus: None,
            workers: Vec::new(),
        }
    }
}

impl Config {
    /// `engine = "gradio"`: studio image jobs go to the Gradio app.
    pub fn routes_images_to_gradio(&self) -> bool {
        self.engine
            .as_deref()
            .is_some_and(|e| e.trim().eq_ignore_ascii_case("gradio"))
    }

    /// The platform config path (`~/.config/minis-studio-worker/config.toml`
    /// on Linux).
    pub fn default_path() -> Result<PathBuf, ConfigError> {
        directories::ProjectDirs::from("gg", "minis", "minis-studio-worker")
            .map(|d| d.config_dir().join("config.toml"))
            .ok_or(ConfigError::NoConfigDir)
    }

    /// Loads `path`; a missing file gives the defaults.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.into(),
                    source,
                })
            }
        };
        toml::from_str(&text).map_err(|e| {
            // Where the parser knows it, the line (and so the key) it means.
            let at = e
                .span()
                .map(|span| {
                    let line = text[..span.start.min(text.len())].matches('\n').count();
                    let shown = text.lines().nth(line).unwrap_or_default().trim();
                    format!(" (line {}: `{shown}`)", line + 1)
                })
                .unwrap_or_default();
            ConfigError::Parse {
                path: path.into(),
                message: format!("{}{at}", e.message().replace('\n', " ")),
            }
        })
    }

    /// Writes `path` atomically (temp file, fsync, rename) with mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let werr = |source| ConfigError::Write {
            path: path.into(),
            source,
        };
        let text = toml::to_string_pretty(self).map_err(|e| werr(std::io::Error::other(e)))?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(werr)?;
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("config.toml"),
            std::process::id()
        ));
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let result = (|| {
            let mut f = opts.open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            #[cfg(unix)]
            std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(werr)
    }

    /// The config as TOML with every secret replaced by `"***"`.
    pub fn redacted_toml(&self) -> String {
        toml::to_string_pretty(&self.redacted()).unwrap_or_default()
    }

    /// This config with every secret that is set written as `***`.
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        for s in c.secrets_mut() {
            if s.is_some() {
                *s = Some(Secret::new(REDACTED));
            }
        }
        c
    }

    /// Every secret key, in one order (for redaction and for keeping the
    /// secrets a redacted edit leaves as `***`).
    fn secrets_mut(&mut self) -> Vec<&mut Option<Secret>> {
        let mut secrets = vec![
            &mut self.metrics_token,
            &mut self.local_api_token,
            &mut self.bootstrap_token,
            &mut self.identity.auth_token,
            &mut self.identity.registration_secret,
            &mut self.gradio.token,
        ];
        for w in &mut self.workers {
            secrets.push(&mut w.identity.auth_token);
            secrets.push(&mut w.identity.registration_secret);
        }
        secrets
    }

    /// `self` edited by `patch` (top-level keys → new values, as the
    /// redacted JSON shows them): a secret sent back as `***` keeps its
    /// value; the result is checked as `run` would check it. The error
    /// names the key.
    pub fn patched(
        &self,
        patch: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Config, FieldError> {
        let mut doc =
            serde_json::to_value(self).map_err(|e| FieldError::new("config", e.to_string()))?;
        let Some(obj) = doc.as_object_mut() else {
            return Err(FieldError::new("config", "not a table"));
        };
        for (k, v) in patch {
            if v.is_null() {
                obj.remove(k);
            } else {
                obj.insert(k.clone(), v.clone());
            }
        }
        let mut next: Config = serde_path_to_error::deserialize(doc).map_err(|e| {
            let path = e.path().to_string();
            FieldError::new(path.trim_start_matches('.'), e.inner().to_string())
        })?;
        // Secrets shown as `***` and sent back unchanged stay as they are.
        let mut old = self.clone();
        let (olds, news) = (old.secrets_mut(), next.secrets_mut());
        if olds.len() == news.len() {
            for (o, n) in olds.into_iter().zip(news) {
                if n.as_ref().is_some_and(|s| s.expose() == REDACTED) {
                    *n = o.clone();
                }
            }
        }
        next.validate()?;
        Ok(next)
    }

    /// The checks `run` makes of values it reads: numbers in range,
    /// addresses that parse, the GPU selection's words. The error names
    /// the key.
    pub fn validate(&self) -> Result<(), FieldError> {
        if !self.vram_threshold_gb.is_finite() || self.vram_threshold_gb < 0.0 {
            return Err(FieldError::new("vram_threshold_gb", "must be a number ≥ 0"));
        }
        if !self.vram_margin_gb.is_finite() || self.vram_margin_gb < 0.0 {
            return Err(FieldError::new("vram_margin_gb", "must be a number ≥ 0"));
        }
        let url = url::Url::parse(&self.api_base_url)
            .map_err(|e| FieldError::new("api_base_url", format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FieldError::new("api_base_url", "must be an http(s) URL"));
        }
        crate::control::listen_addr(self)
            .map_err(|e| FieldError::new("metrics_listen", e.to_string()))?;
        let api = self.local_api_listen.trim();
        if !(api.is_empty() || api.eq_ignore_ascii_case("off")) {
            let addr: std::net::SocketAddr = api.parse().map_err(|_| {
                FieldError::new(
                    "local_api_listen",
                    "not host:port with an IP address (e.g. 127.0.0.1:11435), or off",
                )
            })?;
            if !addr.ip().is_loopback() && !self.local_api_allow_remote {
                return Err(FieldError::new(
                    "local_api_listen",
                    "not a loopback address: set local_api_allow_remote = true to serve it beyond this machine",
                ));
            }
        }
        if let Some(GpuSelection::Word(w)) = &self.gpus {
            if !w.eq_ignore_ascii_case("all") {
                return Err(FieldError::new(
                    "gpus",
                    "write \"all\" or a list of GPU indices such as [0, 1]",
                ));
            }
        }
        if matches!(&self.gpus, Some(GpuSelection::List(l)) if l.is_empty()) {
            return Err(FieldError::new(
                "gpus",
                "[] names no GPU: list at least one index, or remove the key",
            ));
        }
        if self
            .gradio_endpoint_url
            .as_deref()
            .is_some_and(|u| !u.trim().is_empty())
        {
            crate::runner::gradio::setup(self)
                .map_err(|e| FieldError::new("gradio_endpoint_url", e))?;
        }
        Ok(())
    }

    /// True when the top-level credentials are present.
    pub fn has_credentials(&self) -> bool {
        self.identity(None).has_credentials()
    }

    /// The identity of GPU `gpu`'s `[[worker]]` table (empty if it has
    /// none), or the top-level one for `None`.
    pub fn identity(&self, gpu: Option<u32>) -> Identity {
        match gpu {
            None => self.identity.clone(),
            Some(g) => self
                .workers
                .iter()
                .find(|w| w.gpu == g)
                .map(|w| w.identity.clone())
                .unwrap_or_default(),
        }
    }

    /// Stores `id` at the top level (`None`) or in GPU `gpu`'s `[[worker]]`
    /// table, adding the table if there is none.
    pub fn set_identity(&mut self, gpu: Option<u32>, id: Identity) {
        let Some(g) = gpu else {
            self.identity = id;
            return;
        };
        match self.workers.iter_mut().find(|w| w.gpu == g) {
            Some(w) => w.identity = id,
            None => self.workers.push(WorkerTable {
                gpu: g,
                identity: id,
                ..Default::default()
            }),
        }
    }

    /// The threshold of the session whose identity is `table` (a
    /// `[[worker]]` table's own, else the top-level one).
    pub fn threshold_for(&self, table: Option<u32>) -> f64 {
        table
            .and_then(|g| self.workers.iter().find(|w| w.gpu == g))
            .and_then(|w| w.vram_threshold_gb)
            .unwrap_or(self.vram_threshold_gb)
    }

    /// `models_root` with `~` expanded.
    pub fn models_root(&self) -> PathBuf {
        expand_home(&self.models_root)
    }

    /// Where undelivered results go.
    pub fn results_dir(&self) -> PathBuf {
        self.results_dir
            .as_deref()
            .map(expand_home)
            .unwrap_or_else(|| {
                directories::ProjectDirs::from("gg", "minis", "minis-studio-worker")
                    .map(|d| d.data_dir().join("results"))
                    .unwrap_or_else(|| std::env::temp_dir().join("studio-worker-results"))
            })
    }
}

/// Expands a leading `~` to the home directory.
pub fn expand_home(p: &Path) -> PathBuf {
    match p.strip_prefix("~") {
        Ok(rest) => directories::BaseDirs::new()
            .map(|b| b.home_dir().join(rest))
            .unwrap_or_else(|| std::env::temp_dir().join(rest)),
        Err(_) => p.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_is_0600_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.toml");
        let c = Config {
            identity: Identity {
                worker_id: Some("w-1".into()),
                auth_token: Some(Secret::new("tok-secret")),
                ..Default::default()
            },
            ..Default::default()
        };
        c.save(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert_eq!(Config::load(&path).unwrap(), c);
        let shown = c.redacted_toml();
        assert!(!shown.contains("tok-secret") && shown.contains("***"));
        assert!(!format!("{c:?}").contains("tok-secret"));
    }

    #[test]
    fn unknown_keys_are_ignored_and_missing_keys_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "api_base_url = \"http://x\"\nlabel = \"old\"\nengine = \"gradio\"\n",
        )
        .unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.api_base_url, "http://x");
        assert_eq!(c.vram_threshold_gb, 12.0);
        assert_eq!(c.engine.as_deref(), Some("gradio"));
    }

    #[test]
    fn corrupt_file_is_one_line_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "vram_threshold_gb = [unclosed\n").unwrap();
        let msg = Config::load(&path).unwrap_err().to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        std::fs::write(&path, "gpus = 3\n").unwrap();
        let msg = Config::load(&path).unwrap_err().to_string();
        assert!(msg.contains("gpus = \"all\" or a list"), "{msg}");
        std::fs::write(&path, "vram_threshold_gb = \"lots\"\n").unwrap();
        let msg = Config::load(&path).unwrap_err().to_string();
        assert!(
            msg.contains("c.toml") && msg.contains("invalid type"),
            "{msg}"
        );
    }

    #[test]
    fn the_live_keys_are_the_ones_the_readme_table_calls_live() {
        let readme = include_str!("../../README.md");
        let mut checked = 0;
        for row in readme.lines().filter(|l| l.starts_with("| `")) {
            let cols: Vec<&str> = row.split('|').map(str::trim).collect();
            let (keys, live) = (cols[1], cols[3]);
            let live = match live {
                "yes" | "each check" => true,
                "restart" => false,
                _ => continue,
            };
            for key in keys.split(", ").map(|k| k.trim_matches('`')) {
                if key.starts_with('[') {
                    continue;
                }
                assert_eq!(
                    LIVE_KEYS.contains(&key),
                    live,
                    "{key}: README says live = {live}"
                );
                checked += 1;
            }
        }
        assert!(checked > 40, "only {checked} keys in the README's table");
    }

    #[test]
    fn an_edit_is_checked_names_the_key_and_keeps_secrets_sent_back_redacted() {
        let c: Config = toml::from_str(
            "api_base_url = \"http://x\"\nauth_token = \"tok\"\nworker_id = \"w\"\n",
        )
        .unwrap();
        let shown = serde_json::to_value(c.redacted()).unwrap();
        assert_eq!(shown["auth_token"], "***");
        let mut patch = shown.as_object().unwrap().clone();
        patch.insert("vram_threshold_gb".into(), serde_json::json!(6.5));
        let next = c.patched(&patch).unwrap();
        assert_eq!(next.vram_threshold_gb, 6.5);
        assert_eq!(
            next.identity
                .auth_token
                .as_ref()
                .map(|t| t.expose().to_string()),
            Some("tok".into())
        );
        let bad = |k: &str, v: serde_json::Value| {
            let mut p = serde_json::Map::new();
            p.insert(k.into(), v);
            c.patched(&p).unwrap_err()
        };
        assert_eq!(
            bad("vram_threshold_gb", serde_json::json!(-1)).key,
            "vram_threshold_gb"
        );
        assert_eq!(
            bad("upload_attempts", serde_json::json!("many")).key,
            "upload_attempts"
        );
        assert_eq!(
            bad("metrics_listen", serde_json::json!("0.0.0.0:9464")).key,
            "metrics_listen"
        );
        assert_eq!(bad("gpus", serde_json::json!("some")).key, "gpus");
        assert_eq!(
            bad("gradio", serde_json::json!({"timeout_secs": "x"})).key,
            "gradio.timeout_secs"
        );
    }
}
