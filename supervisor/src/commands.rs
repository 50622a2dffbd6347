//! The `studio-worker` subcommands, shared by the binary and anything
//! else that drives the worker as a library.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use studio_protocol::Secret;

use crate::cli::{Cli, Command};
use crate::config::Config;
use crate::control::{self, status_text};
use crate::scheduler::snapshot::Snapshot;
use crate::{gpu, local_job, models, progress, register, runner, session, state};

fn config_path(cli: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match cli {
        Some(p) => Ok(p.clone()),
        None => Ok(Config::default_path()?),
    }
}

fn update(path: &Path, f: impl FnOnce(&mut Config)) -> anyhow::Result<Config> {
    let mut cfg = Config::load(path)?;
    f(&mut cfg);
    cfg.save(path)?;
    Ok(cfg)
}

/// Starts every usable runner beside this binary and completes its
/// handshake; names the unusable ones. Fails on the first runner that
/// does not answer.
async fn self_check(cfg: &Config) -> anyhow::Result<()> {
    let mut cfg = cfg.clone();
    // The runners beside this binary, whatever the config points at.
    cfg.engine_runner_path = None;
    let catalog = runner::EngineCatalog::discover(&cfg);
    for engine in catalog.names() {
        let Some(cmd) = catalog.command(&engine) else {
            continue;
        };
        let child = runner::RunnerChild::spawn(
            cmd.program,
            cmd.args,
            &engine,
            1,
            studio_protocol::runner::DEFAULT_MAX_FRAME_BYTES,
            None,
            cmd.env,
        )
        .await
        .map_err(|e| anyhow::anyhow!("runner {engine} ({}): {e}", cmd.program.display()))?;
        child.shutdown(std::time::Duration::from_secs(2)).await;
        println!("runner {engine}: handshake ok");
    }
    for (engine, why) in catalog.unusable() {
        println!("runner {engine}: not usable here: {why}");
    }
    Ok(())
}

fn service_request(args: crate::cli::ServiceArgs) -> crate::service::Request {
    crate::service::Request {
        name: args.name,
        system_user: args.user.filter(|_| args.system),
        print: args.print,
    }
}

/// Runs one parsed command line.
pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    fault_panic();
    let path = config_path(&cli.config)?;
    match cli.command {
        Command::Run => session::run(path).await,
        Command::Serve => crate::local_api::serve(path).await,
        Command::Register {
            bootstrap_token,
            api_base_url,
            gpu,
        } => {
            let cfg = Config::load(&path)?;
            let catalog = runner::EngineCatalog::discover(&cfg);
            if let Some(g) = gpu {
                let gpus = gpu::probe();
                if !gpus.iter().any(|x| x.index == g) {
                    eprintln!("warning: GPU {g} is not on this host now ({} detected); registering anyway", gpus.len());
                }
            }
            let id = register::register(
                &path,
                cfg,
                Secret::new(bootstrap_token),
                api_base_url,
                &catalog,
                gpu,
            )
            .await?;
            let table = gpu
                .map(|g| format!(" ([[worker]] gpu = {g})"))
                .unwrap_or_default();
            println!(
                "registered as {id}; identity stored in {}{table}",
                path.display()
            );
            Ok(())
        }
        Command::Status { json } => {
            if let Some(a) = control::client::ask(&path, reqwest::Method::GET, "/status").await? {
                if a.status == 200 {
                    if json {
                        println!("{}", a.body);
                    } else {
                        let snap: Snapshot = serde_json::from_str(&a.body)
                            .context("the running worker's /status is not a snapshot")?;
                        print!("{}", status_text::summary(&snap));
                    }
                    return Ok(());
                }
                // Running but not yet serving (registering): say so, then the config.
                let detail = serde_json::from_str::<serde_json::Value>(&a.body)
                    .ok()
                    .and_then(|v| v["detail"].as_str().map(str::to_string))
                    .unwrap_or_else(|| a.body.trim().to_string());
                println!("worker:        starting: {detail}");
            } else if json {
                println!("{}", serde_json::json!({"running": false}));
                return Ok(());
            } else {
                println!("worker:        not running");
            }
            let cfg = Config::load(&path)?;
            println!("config:        {}", path.display());
            let registration = match (
                &cfg.identity.worker_id,
                &cfg.identity.registration_request_id,
            ) {
                (Some(id), _) if cfg.has_credentials() => format!("approved as {id}"),
                (_, Some(rr)) => format!("pending operator approval (request {rr})"),
                _ => "not registered".to_string(),
            };
            println!(
                "worker id:     {}",
                cfg.identity.worker_id.as_deref().unwrap_or("(none)")
            );
            println!("registration:  {registration}");
            println!("api base url:  {}", cfg.api_base_url);
            println!("threshold:     {} GB", cfg.vram_threshold_gb);
            println!("enabled:       {}", cfg.auto_enabled);
            println!("models root:   {}", cfg.models_root().display());
            let catalog = runner::EngineCatalog::discover(&cfg);
            println!("engines:       {}", catalog.names().join(", "));
            for (engine, why) in catalog.unusable() {
                println!("not usable:    {engine}: {why}");
            }
            let gpus = gpu::probe();
            if gpus.is_empty() {
                println!("gpus:          none found (jobs run on the CPU)");
            }
            for g in &gpus {
                let free = g
                    .free_gb()
                    .map(|f| format!(", {f:.1} GB free"))
                    .unwrap_or_default();
                println!(
                    "gpu {}:         {} ({:.1} GB{free})",
                    g.index,
                    g.name,
                    g.total_gb()
                );
            }
            match crate::settings::identities(&cfg, &gpus) {
                Ok(ids) if ids != [None] => {
                    for g in ids.into_iter().flatten() {
                        let id = cfg.identity(Some(g));
                        let who = match (&id.worker_id, &id.registration_request_id) {
                            (Some(w), _) if id.has_credentials() => format!("approved as {w}"),
                            (_, Some(rr)) => format!("pending operator approval (request {rr})"),
                            _ => format!(
                                "not registered: run `studio-worker register --gpu {g} ...`"
                            ),
                        };
                        println!(
                            "session gpu {g}: {who}, threshold {} GB",
                            cfg.threshold_for(Some(g))
                        );
                    }
                }
                Ok(_) => {}
                Err(e) => println!("error:         {e}"),
            }
            let largest = gpu::largest_total_gb(&gpus);
            if largest > 0.0 && cfg.vram_threshold_gb > largest {
                println!(
                    "warning:       the threshold ({} GB) is above the largest GPU ({largest:.1} GB)",
                    cfg.vram_threshold_gb
                );
            }
            match state::read(&path) {
                Some(s) => println!(
                    "last session:  {} since {}{} (pid {})",
                    s.state,
                    s.since,
                    s.detail.map(|d| format!(": {d}")).unwrap_or_default(),
                    s.pid
                ),
                None => println!("last session:  never run"),
            }
            Ok(())
        }
        Command::Config => {
            let cfg = Config::load(&path)?;
            println!("# {}", path.display());
            print!("{}", cfg.redacted_toml());
            Ok(())
        }
        Command::Pause => control_command(&path, "/control/pause").await,
        Command::Resume => control_command(&path, "/control/resume").await,
        Command::Drain => control_command(&path, "/control/drain").await,
        Command::Enable => {
            update(&path, |c| c.auto_enabled = true)?;
            println!("claiming enabled");
            Ok(())
        }
        Command::Disable => {
            update(&path, |c| c.auto_enabled = false)?;
            println!("claiming disabled: the worker stays online and rejects offers (paused)");
            Ok(())
        }
        Command::SetThreshold { gb } => {
            let value: f64 = gb
                .trim()
                .parse()
                .with_context(|| format!("`{gb}` is not a number of gigabytes"))?;
            if !value.is_finite() || value < 0.0 {
                bail!("threshold must be a number ≥ 0, got {gb}");
            }
            update(&path, |c| c.vram_threshold_gb = value)?;
            println!("vram threshold set to {value} GB");
            Ok(())
        }
        Command::CheckUpdate => {
            let cfg = Config::load(&path)?;
            crate::update::check_update(&cfg).await
        }
        Command::SelfCheck => {
            let cfg = Config::load(&path)?;
            self_check(&cfg).await
        }
        Command::InstallService(args) => {
            let cfg = Config::load(&path)?;
            crate::service::install(&path, cfg.drain_timeout_secs, &service_request(args))
        }
        Command::UninstallService(args) => crate::service::uninstall(&service_request(args)),
        Command::FetchModel { model, source } => {
            let cfg = Config::load(&path)?;
            let text = if std::path::Path::new(&source).is_file() {
                std::fs::read_to_string(&source).with_context(|| format!("cannot read {source}"))?
            } else {
                source.clone()
            };
            let source: studio_protocol::studio::ModelSource =
                serde_json::from_str(&text).context("--source is not a modelSource JSON object")?;
            let cache = models::ModelCache::new(
                cfg.models_root(),
                std::time::Duration::from_secs(cfg.stall_timeout_secs.max(1)),
            );
            let mut bar = progress::TermBar::new(&model);
            let mut on_progress = |p: models::DownloadProgress<'_>| bar.show(p.done, p.total);
            let files = cache
                .ensure(&source.engine, &model, &source.files, &mut on_progress)
                .await;
            bar.finish();
            for (name, path) in files? {
                println!("{name}\t{path}");
            }
            Ok(())
        }
        Command::Job(args) => {
            let cfg = Config::load(&path)?;
            local_job::run(&cfg, *args).await
        }
    }
}

/// Test hook: with `STUDIO_WORKER_FAULT_INJECTION=1` and
/// `STUDIO_WORKER_FAULT_PANIC=1`, every command panics at once (error
/// reports must capture it).
fn fault_panic() {
    if std::env::var("STUDIO_WORKER_FAULT_INJECTION").as_deref() == Ok("1")
        && std::env::var("STUDIO_WORKER_FAULT_PANIC").as_deref() == Ok("1")
    {
        panic!("fault injection: panic (STUDIO_WORKER_FAULT_PANIC)");
    }
}

/// Sends a control route to the running worker and prints its answer.
async fn control_command(path: &Path, route: &str) -> anyhow::Result<()> {
    match control::client::ask(path, reqwest::Method::POST, route).await? {
        Some(a) if a.status == 200 => {
            print!("{}", a.body);
            Ok(())
        }
        Some(a) => bail!("the running worker answered HTTP {}: {}", a.status, a.body.trim()),
        None => bail!(
            "no worker is running with {} (no answer through its run file); `enable`/`disable` edit the config instead",
            path.display()
        ),
    }
}
