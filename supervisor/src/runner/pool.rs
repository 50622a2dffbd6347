//! The runner pool: one child per engine family, spawned on first use and
//! kept alive between jobs; a dead child is replaced on the next job with a
//! higher epoch.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::config::Config;
use std::time::Duration;

use studio_protocol::runner::{ErrorClass, JobOutput, JobRequest, FAMILIES};
use studio_protocol::studio::{Engine, TaskKind};

use super::child::{ChildFailure, RunEvent, RunnerChild};
use super::limits::{Backoff, Limits};

/// How to start the runner for each engine present on this host.
#[derive(Debug, Clone)]
pub struct EngineCatalog {
    entries: BTreeMap<String, (PathBuf, Vec<String>, Vec<TaskKind>)>,
}

impl EngineCatalog {
    /// The engine families whose runner binary is on this host
    /// ([`FAMILIES`]): `engine-runner` (synthetic) at `engine_runner_path`,
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

/// Live children by engine name.
pub struct RunnerPool {
    catalog: EngineCatalog,
    max_frame: usize,
    limits: Limits,
    children: BTreeMap<String, RunnerChild>,
    epochs: BTreeMap<String, u64>,
    backoff: BTreeMap<String, Backoff>,
    backoff_template: Backoff,
}

impl RunnerPool {
    /// An empty pool; children start on first use. A child that died is
    /// replaced after the `restart` backoff.
    pub fn new(catalog: EngineCatalog, max_frame: usize, limits: Limits, restart: Backoff) -> Self {
        Self {
            catalog,
            max_frame,
            limits,
            children: BTreeMap::new(),
            epochs: BTreeMap::new(),
            backoff: BTreeMap::new(),
            backoff_template: restart,
        }
    }

    /// The catalog.
    pub fn catalog(&self) -> &EngineCatalog {
        &self.catalog
    }

    /// Runs `job` on the child for `engine`, starting one if needed;
    /// `load_extra` is added to the deadlines for loading big models.
    pub async fn run(
        &mut self,
        engine: &Engine,
        job: JobRequest,
        load_extra: Duration,
        on_event: impl FnMut(RunEvent),
    ) -> Result<JobOutput, ChildFailure> {
        self.catalog.check(engine, job.task.kind())?;
        let name = engine.as_str().to_string();
        if !self.children.contains_key(&name) {
            let Some((program, args, _)) = self.catalog.entries.get(&name) else {
                return Err(ChildFailure {
                    class: ErrorClass::EngineUnavailable,
                    message: format!("engine `{name}` is not available"),
                    child_dead: false,
                });
            };
            let backoff = self
                .backoff
                .entry(name.clone())
                .or_insert_with(|| self.backoff_template.clone());
            let delay = backoff.delay();
            if !delay.is_zero() {
                tracing::info!(target: "engine", job_id = %job.job_id, "restarting runner {name} in {} ms", delay.as_millis());
                tokio::time::sleep(delay).await;
            }
            let epoch = self.epochs.entry(name.clone()).or_insert(0);
            *epoch += 1;
            match RunnerChild::spawn(
                program,
                args,
                &name,
                *epoch,
                self.max_frame,
                self.limits.memory_bytes,
            )
            .await
            {
                Ok(child) => {
                    self.children.insert(name.clone(), child);
                }
                Err(f) => {
                    backoff.on_death();
                    return Err(f);
                }
            }
        }
        let Some(child) = self.children.get_mut(&name) else {
            return Err(ChildFailure {
                class: ErrorClass::EngineUnavailable,
                message: "runner vanished".into(),
                child_dead: true,
            });
        };
        let result = child.run_job(job, &self.limits, load_extra, on_event).await;
        let backoff = self
            .backoff
            .entry(name.clone())
            .or_insert_with(|| self.backoff_template.clone());
        match &result {
            Ok(_) => backoff.on_success(),
            Err(f) if f.child_dead => {
                backoff.on_death();
                self.children.remove(&name);
            }
            Err(_) => {}
        }
        result
    }

    /// Stops every child: a shutdown request, then SIGTERM and SIGKILL to
    /// its group after `grace`.
    pub async fn shutdown(&mut self, grace: Duration) {
        let children = std::mem::take(&mut self.children);
        for (_, child) in children {
            child.shutdown(grace).await;
        }
    }
}
