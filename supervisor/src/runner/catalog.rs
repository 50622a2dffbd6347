//! The engine catalog: which engine families this host can run, and how
//! to start each one's runner.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::config::Config;
use studio_protocol::runner::{ErrorClass, FAMILIES};
use studio_protocol::studio::{Engine, TaskKind};

use super::child::ChildFailure;

/// How to start the runner for each engine present on this host.
#[derive(Debug, Clone)]
pub struct EngineCatalog {
    entries: BTreeMap<String, (PathBuf, Vec<String>, Vec<TaskKind>)>,
}

impl EngineCatalog {
    /// The engine families whose runner binary (and programs, such as
    /// `espeak-ng`) are on this host ([`FAMILIES`]): `engine-runner` (synthetic) at `engine_runner_path`,
    /// and each native family's `engine-runner-<family>` beside it, where
    /// it was built. Native runners get `--threads` from `engine_threads`.
    pub fn discover(cfg: &Config) -> Self {
        let runner = crate::session::runner_path(cfg);
        let threads: Vec<String> = cfg
            .engine_threads
            .map(|t| vec!["--threads".into(), t.to_string()])
            .unwrap_or_default();
        let mut entries = BTreeMap::new();
        for family in FAMILIES {
            if let Some(missing) = family.programs.iter().find(|p| !on_path(p)) {
                tracing::debug!(target: "engine", "engine {} not offered: {missing} is not on PATH", family.engine);
                continue;
            }
            let path = if family.binary == "engine-runner" {
                runner.clone()
            } else {
                match runner
                    .parent()
                    .map(|d| d.join(family.binary))
                    .filter(|p| p.is_file())
                {
                    Some(p) => p,
                    None => continue,
                }
            };
            let mut args = vec!["--stdio".to_string()];
            args.extend(family.args.iter().map(|a| a.to_string()));
            if family.is_native() {
                args.extend(threads.iter().cloned());
            }
            entries.insert(
                family.engine.to_string(),
                (path, args, family.kinds.to_vec()),
            );
        }
        Self { entries }
    }

    /// The program and arguments that start `engine`'s runner.
    pub fn command(&self, engine: &str) -> Option<(&PathBuf, &[String])> {
        self.entries.get(engine).map(|e| (&e.0, e.1.as_slice()))
    }

    /// The engines this host can run, by wire name.
    pub fn names(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    /// Kinds served by `engine`.
    pub fn kinds(&self, engine: &str) -> &[TaskKind] {
        self.entries
            .get(engine)
            .map(|e| e.2.as_slice())
            .unwrap_or(&[])
    }

    /// Checks that `engine` can serve `kind` here; the error says what is
    /// available.
    pub fn check(&self, engine: &Engine, kind: TaskKind) -> Result<(), ChildFailure> {
        let name = engine.as_str();
        if matches!(engine, Engine::Parakeet) {
            return Err(ChildFailure {
                class: ErrorClass::EngineUnavailable,
                message: "engine `parakeet` is LAN streaming only and not available for jobs"
                    .into(),
                child_dead: false,
            });
        }
        let Some((_, _, kinds)) = self.entries.get(name) else {
            return Err(ChildFailure {
                class: ErrorClass::EngineUnavailable,
                message: format!(
                    "engine `{name}` is not available on this worker (available: {})",
                    self.names().join(", ")
                ),
                child_dead: false,
            });
        };
        if !kinds.contains(&kind) {
            return Err(ChildFailure {
                class: ErrorClass::CannotServe,
                message: format!("{name} engine cannot serve {kind} tasks"),
                child_dead: false,
            });
        }
        Ok(())
    }
}

/// True when `program` is an executable file in a `PATH` directory.
fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|d| {
            std::fs::metadata(d.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}
