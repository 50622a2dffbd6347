//! `install-service` / `uninstall-service`: the worker as an OS service
//! that starts with the machine (or the login) and restarts on failure.
//!
//! ```text
//! Linux   systemd user unit  ~/.config/systemd/user/NAME.service   systemctl --user enable --now
//!         --system --user U  /etc/systemd/system/NAME.service       systemctl enable --now (as root)
//! macOS   LaunchAgent        ~/Library/LaunchAgents/com.studio-worker.NAME.plist   launchctl bootstrap
//! Windows scheduled task     NAME (at logon, restart on failure)    schtasks /Create /XML
//! ```
//!
//! The text of each is in [`render`] (pure, tested on every platform).
//! Installing is idempotent: an unchanged definition is left alone, a
//! changed one is rewritten (and the running service told to restart).
//! When the service manager cannot be reached (no user session, a
//! container), the file is still written and the exact commands to run
//! are printed.

pub mod render;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

pub use render::{Scope, Spec};

/// What `install-service` was asked.
#[derive(Debug, Clone)]
pub struct Request {
    /// The service's name.
    pub name: String,
    /// A system unit for a dedicated account (Linux): `Some(account)`.
    pub system_user: Option<String>,
    /// Only print the definition; change nothing.
    pub print: bool,
}

/// The binary a service should run: `<root>/current/studio-worker` when
/// this one lives in a versioned install (`<root>/versions/<v>/`), so an
/// update's flip of `current` is what the service starts next; else this
/// binary itself.
pub fn service_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let exe = exe.canonicalize().unwrap_or(exe);
    Ok(versioned_link(&exe).unwrap_or(exe))
}

fn versioned_link(exe: &Path) -> Option<PathBuf> {
    let version_dir = exe.parent()?;
    let versions = version_dir.parent()?;
    if versions.file_name()? != "versions" {
        return None;
    }
    let link = versions.parent()?.join("current").join(exe.file_name()?);
    link.exists().then_some(link)
}

/// The service definition for this worker and `config`.
pub fn spec(name: &str, config: &Path, drain_timeout_secs: u64) -> anyhow::Result<Spec> {
    let config = std::path::absolute(config)
        .with_context(|| format!("cannot make {} absolute", config.display()))?;
    Ok(Spec {
        name: name.to_string(),
        binary: service_binary()?,
        config,
        drain_timeout_secs,
    })
}

/// Checks a service name: letters, digits, `-`, `_`, `.`, `@` only (it
/// becomes a file name and a unit name).
pub fn check_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
    {
        bail!("--name `{name}`: use letters, digits, `-`, `_`, `.` and `@` only");
    }
    Ok(())
}

/// A command to run, for the printed instructions.
fn shown(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd`; its failure as text (`None`: it worked).
fn attempt(mut cmd: Command) -> Option<String> {
    match cmd.output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "`{}` failed: {}",
            shown(&cmd),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("`{}` could not start: {e}", shown(&cmd))),
    }
}

/// Writes `text` to `path` unless it already holds exactly that; whether
/// it changed.
#[cfg(unix)]
fn write_if_changed(path: &Path, text: &str) -> anyhow::Result<bool> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(true)
}

#[cfg(target_os = "linux")]
mod platform {
    //! systemd.

    use super::*;

    fn unit_dir(scope: &Scope) -> anyhow::Result<PathBuf> {
        match scope {
            Scope::System { .. } => Ok(PathBuf::from("/etc/systemd/system")),
            // $XDG_CONFIG_HOME, else ~/.config.
            Scope::User => Ok(directories::BaseDirs::new()
                .context("no home directory for the user unit")?
                .config_dir()
                .join("systemd/user")),
        }
    }

    fn systemctl(scope: &Scope, args: &[&str]) -> Command {
        let mut cmd = Command::new("systemctl");
        if *scope == Scope::User {
            cmd.arg("--user");
        }
        cmd.args(args);
        cmd
    }

    fn scope_of(req: &Request) -> Scope {
        match &req.system_user {
            Some(user) => Scope::System { user: user.clone() },
            None => Scope::User,
        }
    }

    fn require_root(scope: &Scope) -> anyhow::Result<()> {
        // SAFETY: geteuid has no preconditions.
        if matches!(scope, Scope::System { .. }) && !crate::platform::is_root() {
            bail!("--system writes /etc/systemd/system: run it as root (sudo studio-worker install-service --system --user NAME)");
        }
        Ok(())
    }

    fn linger_hint() -> Option<String> {
        let user = std::env::var("USER").ok().filter(|u| !u.is_empty())?;
        let out = Command::new("loginctl")
            .args(["show-user", &user, "-p", "Linger", "--value"])
            .output()
            .ok()?;
        let linger = String::from_utf8_lossy(&out.stdout).trim() == "yes";
        (!linger).then(|| {
            format!(
                "headless rig? a user service runs only while {user} is logged in unless lingering is on: sudo loginctl enable-linger {user}"
            )
        })
    }

    pub fn install(spec: &Spec, req: &Request) -> anyhow::Result<()> {
        let scope = scope_of(req);
        let text = render::systemd_unit(spec, &scope);
        if req.print {
            print!("{text}");
            return Ok(());
        }
        require_root(&scope)?;
        let unit = format!("{}.service", spec.name);
        let path = unit_dir(&scope)?.join(&unit);
        let changed = write_if_changed(&path, &text)?;
        println!(
            "{} {}",
            if changed { "wrote" } else { "unchanged:" },
            path.display()
        );
        let steps = [
            systemctl(&scope, &["daemon-reload"]),
            systemctl(&scope, &["enable", "--now", &unit]),
        ];
        let mut failed = None;
        for step in steps {
            if let Some(why) = attempt(step) {
                failed = Some(why);
                break;
            }
        }
        match failed {
            None => {
                if changed {
                    // A running service keeps its old definition until
                    // restarted; a restart drains the job in hand first.
                    if let Some(why) = attempt(systemctl(&scope, &["try-restart", &unit])) {
                        println!("{why}");
                    }
                }
                println!("enabled and started {unit}");
                println!(
                    "status: {}   logs: journalctl {}-u {unit} -f",
                    shown(&systemctl(&scope, &["status", &unit])),
                    if scope == Scope::User { "--user " } else { "" }
                );
            }
            Some(why) => {
                println!("the service manager was not reached ({why}); to enable it, run:");
                println!("  {}", shown(&systemctl(&scope, &["daemon-reload"])));
                println!(
                    "  {}",
                    shown(&systemctl(&scope, &["enable", "--now", &unit]))
                );
            }
        }
        if scope == Scope::User {
            if let Some(hint) = linger_hint() {
                println!("{hint}");
            }
        }
        Ok(())
    }

    pub fn uninstall(name: &str, req: &Request) -> anyhow::Result<()> {
        let scope = scope_of(req);
        require_root(&scope)?;
        let unit = format!("{name}.service");
        let path = unit_dir(&scope)?.join(&unit);
        if !path.exists() {
            println!("not installed: {} does not exist", path.display());
            return Ok(());
        }
        let stop = attempt(systemctl(&scope, &["disable", "--now", &unit]));
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        println!("removed {}", path.display());
        match stop.or_else(|| attempt(systemctl(&scope, &["daemon-reload"]))) {
            None => println!("stopped and disabled {unit}"),
            Some(why) => println!(
                "the service manager was not reached ({why}); if the service runs, stop it with: {}",
                shown(&systemctl(&scope, &["stop", &unit]))
            ),
        }
        Ok(())
    }
}

#[cfg(target_os = "macos")]
mod platform {
    //! launchd.

    use super::*;

    fn plist_path(spec_name: &str) -> anyhow::Result<PathBuf> {
        Ok(directories::BaseDirs::new()
            .context("no home directory for the LaunchAgent")?
            .home_dir()
            .join("Library/LaunchAgents")
            .join(format!("com.studio-worker.{spec_name}.plist")))
    }

    fn domain() -> String {
        // SAFETY: getuid has no preconditions.
        format!("gui/{}", crate::platform::uid())
    }

    pub fn install(spec: &Spec, req: &Request) -> anyhow::Result<()> {
        if req.system_user.is_some() {
            bail!("--system is for Linux; on macOS the worker runs as a LaunchAgent of the logged-in user");
        }
        let text = render::launchd_plist(spec);
        if req.print {
            print!("{text}");
            return Ok(());
        }
        let path = plist_path(&spec.name)?;
        let changed = write_if_changed(&path, &text)?;
        println!(
            "{} {}",
            if changed { "wrote" } else { "unchanged:" },
            path.display()
        );
        let target = format!("{}/{}", domain(), render::launchd_label(spec));
        if changed {
            // A loaded agent keeps its old definition: unload it first.
            let mut out = Command::new("launchctl");
            out.args(["bootout", &target]);
            let _ = attempt(out);
        }
        let mut load = Command::new("launchctl");
        load.args(["bootstrap", &domain()]).arg(&path);
        match attempt(load) {
            None => println!("loaded {target}"),
            Some(why) if !changed => println!("already loaded ({why})"),
            Some(why) => println!(
                "launchctl did not load it ({why}); run: launchctl bootstrap {} {}",
                domain(),
                path.display()
            ),
        }
        Ok(())
    }

    pub fn uninstall(name: &str, _req: &Request) -> anyhow::Result<()> {
        let path = plist_path(name)?;
        if !path.exists() {
            println!("not installed: {} does not exist", path.display());
            return Ok(());
        }
        let mut out = Command::new("launchctl");
        out.args(["bootout", &format!("{}/com.studio-worker.{name}", domain())]);
        let _ = attempt(out);
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        println!("unloaded and removed {}", path.display());
        Ok(())
    }
}

#[cfg(windows)]
mod platform {
    //! Task Scheduler.

    use super::*;

    fn user() -> String {
        let domain = std::env::var("USERDOMAIN").unwrap_or_default();
        let name = std::env::var("USERNAME").unwrap_or_default();
        if domain.is_empty() {
            name
        } else {
            format!("{domain}\\{name}")
        }
    }

    pub fn install(spec: &Spec, req: &Request) -> anyhow::Result<()> {
        if req.system_user.is_some() {
            bail!("--system is for Linux; on Windows the worker runs as a scheduled task at logon");
        }
        let text = render::windows_task_xml(spec, &user());
        if req.print {
            print!("{text}");
            return Ok(());
        }
        let xml = std::env::temp_dir().join(format!("{}-task.xml", spec.name));
        // schtasks reads the XML as UTF-16 (it says so in its header).
        let mut bytes = vec![0xFF, 0xFE];
        for unit in text.encode_utf16() {
            bytes.extend(unit.to_le_bytes());
        }
        std::fs::write(&xml, bytes).with_context(|| format!("cannot write {}", xml.display()))?;
        let mut create = Command::new("schtasks");
        create
            .args(["/Create", "/F", "/TN", &spec.name, "/XML"])
            .arg(&xml);
        let created = attempt(create);
        let _ = std::fs::remove_file(&xml);
        if let Some(why) = created {
            bail!("{why}");
        }
        let mut run = Command::new("schtasks");
        run.args(["/Run", "/TN", &spec.name]);
        let _ = attempt(run);
        println!(
            "scheduled task {} created (at logon, restarted on failure) and started",
            spec.name
        );
        Ok(())
    }

    pub fn uninstall(name: &str, _req: &Request) -> anyhow::Result<()> {
        let mut end = Command::new("schtasks");
        end.args(["/End", "/TN", name]);
        let _ = attempt(end);
        let mut delete = Command::new("schtasks");
        delete.args(["/Delete", "/F", "/TN", name]);
        match attempt(delete) {
            None => println!("scheduled task {name} stopped and removed"),
            Some(_) => println!("not installed: no scheduled task {name}"),
        }
        Ok(())
    }
}

/// `install-service`.
pub fn install(config: &Path, drain_timeout_secs: u64, req: &Request) -> anyhow::Result<()> {
    check_name(&req.name)?;
    let spec = spec(&req.name, config, drain_timeout_secs)?;
    platform::install(&spec, req)
}

/// `uninstall-service`.
pub fn uninstall(req: &Request) -> anyhow::Result<()> {
    check_name(&req.name)?;
    platform::uninstall(&req.name, req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_versioned_install_runs_through_current() {
        let dir = tempfile::tempdir().unwrap();
        let v = dir.path().join("versions/0.4.0");
        std::fs::create_dir_all(&v).unwrap();
        std::fs::write(v.join("studio-worker"), "").unwrap();
        assert_eq!(
            versioned_link(&v.join("studio-worker")),
            None,
            "no current yet"
        );
        std::os::unix::fs::symlink("versions/0.4.0", dir.path().join("current")).unwrap();
        assert_eq!(
            versioned_link(&v.join("studio-worker")),
            Some(dir.path().join("current/studio-worker"))
        );
        assert_eq!(versioned_link(Path::new("/usr/bin/studio-worker")), None);
    }

    #[test]
    fn names_are_file_and_unit_safe() {
        assert!(check_name("studio-worker").is_ok());
        assert!(check_name("rig_2.gpu@1").is_ok());
        for bad in ["", "a b", "../x", "a/b", "ü"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
