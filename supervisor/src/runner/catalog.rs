//! The engine catalog: which engine families this host can run, and how
//! to start each one's runner.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Config;
use studio_protocol::runner::{ErrorClass, FAMILIES};
use studio_protocol::studio::{Engine, TaskKind};

use super::child::ChildFailure;
use super::gradio;

/// How to start one engine's runner.
#[derive(Debug, Clone)]
struct Entry {
    path: PathBuf,
    args: Vec<String>,
    kinds: Vec<TaskKind>,
    /// Set in the runner's environment (`ORT_DYLIB_PATH`).
    env: Vec<(String, String)>,
}

/// How to start the runner for each engine present on this host.
#[derive(Debug, Clone)]
pub struct EngineCatalog {
    entries: BTreeMap<String, Entry>,
    /// Families this build has but this host cannot run, and why.
    unusable: BTreeMap<String, String>,
    /// What the Gradio app answered at start.
    gradio: Option<gradio::AppState>,
}

/// How to start one engine's runner (see [`EngineCatalog::command`]).
#[derive(Debug, Clone, Copy)]
pub struct RunnerCommand<'a> {
    /// The runner binary.
    pub program: &'a PathBuf,
    /// Its arguments.
    pub args: &'a [String],
    /// Added to its environment.
    pub env: &'a [(String, String)],
}

/// How long a runner may take to answer `--check`.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

impl EngineCatalog {
    /// The engine families whose runner binary (and programs, such as
    /// `espeak-ng`) are on this host ([`FAMILIES`]): `engine-runner`
    /// (synthetic, espeak) at `engine_runner_path`, and each native
    /// family's `engine-runner-<family>` beside it, where it was built.
    /// Native runners get `--threads` from `engine_threads`. A family on
    /// ONNX Runtime is offered only when its runner's `--check` loads the
    /// library (`onnxruntime_path`, else `ORT_DYLIB_PATH`, else beside the
    /// runner binaries).
    pub fn discover(cfg: &Config) -> Self {
        let runner = crate::session::runner_path(cfg);
        let threads: Vec<String> = cfg
            .engine_threads
            .map(|t| vec!["--threads".into(), t.to_string()])
            .unwrap_or_default();
        let ort_env: Vec<(String, String)> = cfg
            .onnxruntime_path
            .as_deref()
            .map(crate::config::expand_home)
            .map(|p| {
                vec![(
                    "ORT_DYLIB_PATH".to_string(),
                    p.to_string_lossy().into_owned(),
                )]
            })
            .unwrap_or_default();
        let mut entries = BTreeMap::new();
        let mut unusable = BTreeMap::new();
        let mut gradio_state = None;
        for family in FAMILIES {
            if let Some(missing) = family.programs.iter().find(|p| !on_path(p)) {
                unusable.insert(
                    family.engine.to_string(),
                    format!("{missing} is not on PATH (install it)"),
                );
                continue;
            }
            let path = if family.binary == "engine-runner" {
                runner.clone()
            } else {
                match runner
                    .parent()
                    .map(|d| d.join(crate::platform::exe(family.binary)))
                    .filter(|p| p.is_file())
                {
                    Some(p) => p,
                    None => continue,
                }
            };
            let mut env = if family.uses_onnxruntime() {
                ort_env.clone()
            } else {
                Vec::new()
            };
            let mut extra = Vec::new();
            if family.engine == "gradio" {
                match gradio::setup(cfg) {
                    Ok((args, token)) => {
                        extra = args;
                        env.extend(token);
                    }
                    Err(why) => {
                        unusable.insert(family.engine.to_string(), why);
                        continue;
                    }
                }
                let checked = gradio::check(&path, &extra, &env, cfg);
                if let Err(why) = &checked.usable {
                    tracing::error!(target: "engine", "engine gradio not offered: {why}");
                    unusable.insert(family.engine.to_string(), why.clone());
                    gradio_state = Some(checked.state);
                    continue;
                }
                gradio_state = Some(checked.state);
            }
            if family.uses_onnxruntime() {
                if let Err(why) = check(&path, &env) {
                    tracing::warn!(target: "engine", "engine {} not offered: {why}", family.engine);
                    unusable.insert(family.engine.to_string(), why);
                    continue;
                }
            }
            let mut args = vec!["--stdio".to_string()];
            args.extend(family.args.iter().map(|a| a.to_string()));
            args.extend(extra);
            if family.is_native() {
                args.extend(threads.iter().cloned());
            }
            entries.insert(
                family.engine.to_string(),
                Entry {
                    path,
                    args,
                    kinds: family.kinds.to_vec(),
                    env,
                },
            );
        }
        Self {
            entries,
            unusable,
            gradio: gradio_state,
        }
    }

    /// A catalog of `engines` (name, kinds) with no programs, for tests of
    /// what is advertised.
    #[cfg(test)]
    pub fn of(engines: &[(&str, &[TaskKind])]) -> Self {
        Self {
            entries: engines
                .iter()
                .map(|(name, kinds)| {
                    (
                        name.to_string(),
                        Entry {
                            path: PathBuf::new(),
                            args: Vec::new(),
                            kinds: kinds.to_vec(),
                            env: Vec::new(),
                        },
                    )
                })
                .collect(),
            unusable: BTreeMap::new(),
            gradio: None,
        }
    }

    /// The Gradio app as the start-up check found it (`None`: no
    /// `gradio_endpoint_url`).
    pub fn gradio(&self) -> Option<&gradio::AppState> {
        self.gradio.as_ref()
    }

    /// The program, arguments and environment that start `engine`'s
    /// runner.
    pub fn command(&self, engine: &str) -> Option<RunnerCommand<'_>> {
        self.entries.get(engine).map(|e| RunnerCommand {
            program: &e.path,
            args: &e.args,
            env: &e.env,
        })
    }

    /// Engines this build has that this host cannot run, with the reason.
    pub fn unusable(&self) -> &BTreeMap<String, String> {
        &self.unusable
    }

    /// The engines this host can run, by wire name.
    pub fn names(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    /// Kinds served by `engine`.
    pub fn kinds(&self, engine: &str) -> &[TaskKind] {
        self.entries
            .get(engine)
            .map(|e| e.kinds.as_slice())
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
        let Some(Entry { kinds, .. }) = self.entries.get(name) else {
            return Err(ChildFailure {
                class: ErrorClass::EngineUnavailable,
                message: match self.unusable.get(name) {
                    Some(why) => format!("engine `{name}` is not usable on this worker: {why}"),
                    None => format!(
                        "engine `{name}` is not available on this worker (available: {})",
                        self.names().join(", ")
                    ),
                },
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
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .any(|d| crate::platform::is_executable(&d.join(crate::platform::exe(program))))
    })
}

/// Runs `runner --check` (with `env`): Ok when it loads what it needs,
/// else the first line it printed about why.
fn check(runner: &Path, env: &[(String, String)]) -> Result<(), String> {
    let out = run_check(runner, &[], env)?;
    if out.status.success() {
        return Ok(());
    }
    Err(first_line(&out.stderr))
}

/// The first non-empty line of a check's stderr.
pub(super) fn first_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("the check failed without a reason")
        .to_string()
}

/// Runs `runner --check ARGS` (with `env`) for at most [`CHECK_TIMEOUT`].
pub(super) fn run_check(
    runner: &Path,
    args: &[String],
    env: &[(String, String)],
) -> Result<std::process::Output, String> {
    let mut child = std::process::Command::new(runner)
        .arg("--check")
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {} --check: {e}", runner.display()))?;
    let deadline = std::time::Instant::now() + CHECK_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} --check did not answer within 10 s",
                    runner.display()
                ));
            }
        }
    }
    child
        .wait_with_output()
        .map_err(|e| format!("{} --check: {e}", runner.display()))
}
