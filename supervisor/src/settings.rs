//! The config's second stage: what `run` does with the file as read
//! ([`Config`]) on the GPUs as probed, decided in one place.
//!
//! ```text
//!  gpus unset          → one session on the largest GPU (or none), top-level identity
//!  gpus = "all"        → one session per probed GPU, each its [[worker]] table's identity
//!  gpus = [0, 2]       → one session on each listed GPU, likewise
//! ```
//!
//! Mistakes (an unknown word, a GPU this host does not have, two tables
//! for one GPU) are errors naming the key and the value.
//!
//! [`Tuning`] is the rest of the file turned into the values the scheduler
//! works with (durations, byte counts, expanded paths), built here at
//! start and again on every change of the file.

use std::path::PathBuf;
use std::time::Duration;

use studio_protocol::Secret;

use crate::config::{Config, GpuSelection};
use crate::gpu::Gpu;
use crate::runner::{Backoff, Limits};
use crate::scheduler::runners::KeepAlive;

/// The config's knobs as the scheduler uses them. Which of them apply
/// live is the README's config table.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Job deadlines and the runner memory cap.
    pub limits: Limits,
    /// Restart backoff of a dead runner.
    pub backoff: Backoff,
    /// How long an idle runner lives.
    pub keep_alive: KeepAlive,
    /// Failures in a row before a quarantine or pause (0: never).
    pub max_failures: u32,
    /// How long a quarantine or pause lasts.
    pub cooldown: Duration,
    /// GPU memory kept free beyond every estimate, in GB.
    pub vram_margin_gb: f64,
    /// Tries for a binary upload.
    pub upload_attempts: u32,
    /// Where undelivered results go.
    pub results_dir: PathBuf,
    /// Cap on `results_dir` in bytes.
    pub results_max_bytes: u64,
    /// The model cache.
    pub models_root: PathBuf,
    /// A download that moves no byte for this long is retried.
    pub download_stall: Duration,
}

impl Tuning {
    /// Builds every knob from `cfg` (zero durations become one second).
    pub fn from_config(cfg: &Config) -> Self {
        let ping_timeout = Duration::from_secs(cfg.ping_timeout_secs.max(1));
        let stall = Duration::from_secs(cfg.stall_timeout_secs.max(1));
        let backoff_initial = Duration::from_millis(cfg.restart_backoff_initial_ms);
        Self {
            limits: Limits {
                stall,
                job: Duration::from_secs(cfg.job_timeout_secs.max(1)),
                ping_interval: (ping_timeout / 4)
                    .clamp(Duration::from_millis(100), Duration::from_secs(5)),
                ping_timeout,
                memory_bytes: cfg.engine_memory_limit_mb.map(|mb| mb * 1024 * 1024),
            },
            backoff: Backoff::new(
                backoff_initial,
                Duration::from_millis(cfg.restart_backoff_max_ms).max(backoff_initial),
            ),
            keep_alive: match cfg.model_keep_alive_secs {
                0 => KeepAlive::None,
                s if s < 0 => KeepAlive::Forever,
                s => KeepAlive::For(Duration::from_secs(s.unsigned_abs())),
            },
            max_failures: cfg.max_consecutive_failures,
            cooldown: Duration::from_secs(cfg.failure_cooldown_secs),
            vram_margin_gb: cfg.vram_margin_gb.max(0.0),
            upload_attempts: cfg.upload_attempts,
            results_dir: cfg.results_dir(),
            results_max_bytes: cfg.results_max_mb * 1024 * 1024,
            models_root: cfg.models_root(),
            download_stall: stall,
        }
    }
}

/// A `gpus` / `[[worker]]` setting that cannot be run.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum SettingsError {
    /// `gpus` is a word other than `"all"`.
    #[error(
        "gpus = \"{0}\" is not understood: write \"all\" or a list of GPU indices such as [0, 1]"
    )]
    UnknownWord(String),
    /// `gpus = []`.
    #[error("gpus = [] names no GPU: list at least one index, or remove the key")]
    EmptyList,
    /// `gpus` asks for GPUs and none was detected.
    #[error("gpus is set but no GPU was detected on this host; remove the key to run one session")]
    NoGpus,
    /// `gpus` names a GPU the probe did not find.
    #[error("gpus names GPU {index}, which this host does not have (detected: {detected})")]
    UnknownGpu {
        /// The index asked for.
        index: u32,
        /// The indices found.
        detected: String,
    },
    /// `gpus` names one GPU twice.
    #[error("gpus names GPU {0} twice")]
    Repeated(u32),
    /// Two `[[worker]]` tables say the same `gpu`.
    #[error("two [[worker]] tables have gpu = {0}; keep one")]
    DuplicateTable(u32),
}

/// One studio session `run` holds.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionPlan {
    /// The GPU its runners use (`None`: no GPU).
    pub gpu: Option<u32>,
    /// Where its identity and threshold live: `None` the top level,
    /// `Some(g)` the `[[worker]]` table with `gpu = g`.
    pub table: Option<u32>,
    /// Its studio worker id.
    pub worker_id: String,
    /// Its studio auth token.
    pub auth_token: Secret,
}

/// The identities `run` needs, one per session: `[None]` for the single
/// session, else each selected GPU's table.
pub fn identities(cfg: &Config, gpus: &[Gpu]) -> Result<Vec<Option<u32>>, SettingsError> {
    let mut seen = std::collections::BTreeSet::new();
    for w in &cfg.workers {
        if !seen.insert(w.gpu) {
            return Err(SettingsError::DuplicateTable(w.gpu));
        }
    }
    let detected: Vec<u32> = gpus.iter().map(|g| g.index).collect();
    let chosen = match &cfg.gpus {
        None => return Ok(vec![None]),
        Some(GpuSelection::Word(w)) if w.eq_ignore_ascii_case("all") => detected.clone(),
        Some(GpuSelection::Word(w)) => return Err(SettingsError::UnknownWord(w.clone())),
        Some(GpuSelection::List(l)) if l.is_empty() => return Err(SettingsError::EmptyList),
        Some(GpuSelection::List(l)) => l.clone(),
    };
    if detected.is_empty() {
        return Err(SettingsError::NoGpus);
    }
    let mut out = Vec::new();
    for index in chosen {
        if !detected.contains(&index) {
            return Err(SettingsError::UnknownGpu {
                index,
                detected: detected
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        if out.contains(&Some(index)) {
            return Err(SettingsError::Repeated(index));
        }
        out.push(Some(index));
    }
    Ok(out)
}

/// The sessions to hold, for identities that have credentials (the
/// others are left out: `run` waits for them first).
pub fn sessions(cfg: &Config, gpus: &[Gpu]) -> Result<Vec<SessionPlan>, SettingsError> {
    Ok(identities(cfg, gpus)?
        .into_iter()
        .filter_map(|table| {
            let id = cfg.identity(table);
            if !id.has_credentials() {
                return None;
            }
            Some(SessionPlan {
                gpu: table.or_else(|| largest_gpu(gpus)),
                table,
                worker_id: id.worker_id.unwrap_or_default(),
                auth_token: id.auth_token.unwrap_or_default(),
            })
        })
        .collect())
}

/// The index of the GPU with the most memory (the first of equals): the
/// single session's GPU, the one `vramTotalGb` advertises.
pub fn largest_gpu(gpus: &[Gpu]) -> Option<u32> {
    gpus.iter()
        .fold(None::<&Gpu>, |best, g| match best {
            Some(b) if b.total_bytes >= g.total_bytes => Some(b),
            _ => Some(g),
        })
        .map(|g| g.index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WorkerTable;

    fn gpus(sizes: &[u64]) -> Vec<Gpu> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, gb)| Gpu {
                index: i as u32,
                name: format!("g{i}"),
                vendor: crate::gpu::Vendor::Fake,
                total_bytes: gb << 30,
                free_bytes: None,
            })
            .collect()
    }

    fn table(gpu: u32, id: &str) -> WorkerTable {
        WorkerTable {
            gpu,
            identity: crate::config::Identity {
                worker_id: Some(id.into()),
                auth_token: Some(Secret::new(format!("tok-{id}"))),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn parse(text: &str) -> Config {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn tuning_turns_numbers_into_durations_and_bytes() {
        let c = parse("ping_timeout_secs = 2\nstall_timeout_secs = 0\nmodel_keep_alive_secs = -1\nengine_memory_limit_mb = 512\nrestart_backoff_initial_ms = 500\nrestart_backoff_max_ms = 100\n");
        let t = Tuning::from_config(&c);
        assert_eq!(t.limits.ping_timeout, Duration::from_secs(2));
        assert_eq!(t.limits.ping_interval, Duration::from_millis(500));
        assert_eq!(t.limits.stall, Duration::from_secs(1), "0 is not 'at once'");
        assert_eq!(t.limits.memory_bytes, Some(512 << 20));
        assert_eq!(t.keep_alive, KeepAlive::Forever);
        let d = Tuning::from_config(&Config::default());
        assert_eq!(d.keep_alive, KeepAlive::For(Duration::from_secs(300)));
        assert_eq!(
            Tuning::from_config(&parse("model_keep_alive_secs = 0\n")).keep_alive,
            KeepAlive::None
        );
        assert_eq!(d.results_max_bytes, 1024 << 20);
    }

    #[test]
    fn unset_is_one_session_on_the_largest_gpu_with_the_top_level_identity() {
        let mut c = parse("worker_id = \"w\"\nauth_token = \"t\"\n");
        c.workers.push(table(0, "ignored"));
        let s = sessions(&c, &gpus(&[8, 24, 24])).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].gpu, s[0].table), (Some(1), None));
        assert_eq!(s[0].worker_id, "w");
        assert_eq!(sessions(&c, &[]).unwrap()[0].gpu, None);
    }

    #[test]
    fn all_and_lists_pick_tables_and_skip_those_without_credentials() {
        let text = "gpus = \"all\"\n[[worker]]\ngpu = 1\nworker_id = \"w1\"\nauth_token = \"t1\"\nvram_threshold_gb = 6.5\n[[worker]]\ngpu = 0\nworker_id = \"w0\"\nauth_token = \"t0\"\n";
        let c = parse(text);
        assert_eq!(c.threshold_for(Some(1)), 6.5);
        assert_eq!(c.threshold_for(Some(0)), c.vram_threshold_gb);
        let s = sessions(&c, &gpus(&[24, 8])).unwrap();
        let ids: Vec<_> = s.iter().map(|p| (p.gpu, p.worker_id.as_str())).collect();
        assert_eq!(ids, [(Some(0), "w0"), (Some(1), "w1")]);
        let mut c = parse("gpus = [1, 2]\n");
        c.workers.push(table(1, "w1"));
        assert_eq!(
            identities(&c, &gpus(&[1, 1, 1])).unwrap(),
            [Some(1), Some(2)]
        );
        let s = sessions(&c, &gpus(&[1, 1, 1])).unwrap();
        assert_eq!(s.len(), 1, "GPU 2 has no credentials yet");
        assert_eq!(s[0].table, Some(1));
    }

    #[test]
    fn mistakes_are_named() {
        let g = gpus(&[24, 8]);
        let err = |text: &str, g: &[Gpu]| identities(&parse(text), g).unwrap_err().to_string();
        assert!(err("gpus = \"both\"\n", &g).contains("gpus = \"both\""));
        assert!(err("gpus = []\n", &g).contains("gpus = []"));
        assert!(err("gpus = \"all\"\n", &[]).contains("no GPU was detected"));
        let e = err("gpus = [0, 3]\n", &g);
        assert!(e.contains("GPU 3") && e.contains("detected: 0, 1"), "{e}");
        assert!(err("gpus = [1, 1]\n", &g).contains("GPU 1 twice"));
        let e = err("[[worker]]\ngpu = 0\n[[worker]]\ngpu = 0\n", &g);
        assert!(e.contains("gpu = 0"), "{e}");
    }

    #[test]
    fn identities_round_trip_through_the_file_and_secrets_are_hidden() {
        let mut c = Config::default();
        c.set_identity(
            Some(3),
            crate::config::Identity {
                worker_id: Some("w3".into()),
                auth_token: Some(Secret::new("secret-three")),
                install_id: Some("i3".into()),
                ..Default::default()
            },
        );
        c.set_identity(
            None,
            crate::config::Identity {
                worker_id: Some("top".into()),
                ..Default::default()
            },
        );
        let text = toml::to_string_pretty(&c).unwrap();
        assert!(text.contains("[[worker]]"), "{text}");
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.identity(Some(3)).worker_id.as_deref(), Some("w3"));
        assert!(back.identity(Some(3)).has_credentials());
        assert!(!back.identity(Some(4)).has_credentials());
        assert_eq!(back.identity.worker_id.as_deref(), Some("top"));
        let shown = c.redacted_toml();
        assert!(
            !shown.contains("secret-three") && shown.contains("***"),
            "{shown}"
        );
    }
}
