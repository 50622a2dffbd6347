//! Starting a worker from the window when none runs, and the window's own
//! "run in tray on login". The window never becomes a worker itself: it
//! starts the installed service when one runs this config, else
//! `studio-worker run` as its own child (which it drains when it quits).

use std::path::{Path, PathBuf};

/// How a worker for a config would be started.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    /// The installed service runs this config: start it through its
    /// manager.
    Service {
        /// The unit file that names the config.
        unit: PathBuf,
        /// The command that starts it.
        command: Vec<String>,
    },
    /// No service for it: `studio-worker --config C run` as the window's
    /// child.
    Child {
        /// The `studio-worker` binary.
        program: PathBuf,
    },
}

impl Start {
    /// What the button says it will do.
    pub fn describe(&self) -> String {
        match self {
            Start::Service { unit, command } => format!(
                "start the installed service ({}): {}",
                unit.display(),
                command.join(" ")
            ),
            Start::Child { program } => format!(
                "run {} in the background, as this window's child (it stops when the window quits)",
                program.display()
            ),
        }
    }
}

/// Where systemd units of this worker may be, with whether each directory
/// is the user's own manager's.
pub fn unit_dirs() -> Vec<(PathBuf, bool)> {
    let mut dirs = Vec::new();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push((PathBuf::from(home).join(".config/systemd/user"), true));
    }
    dirs.push((PathBuf::from("/etc/systemd/system"), false));
    dirs
}

/// The `--config` path in a unit's `ExecStart` line, if any.
fn unit_config(unit_text: &str) -> Option<PathBuf> {
    let line = unit_text
        .lines()
        .find(|l| l.trim_start().starts_with("ExecStart="))?;
    let rest = line.split_once("--config")?.1.trim_start();
    let path = if let Some(q) = rest.strip_prefix('"') {
        q.split_once('"')?
            .0
            .replace("\\\"", "\"")
            .replace("\\\\", "\\")
    } else {
        rest.split_whitespace().next()?.to_string()
    };
    Some(PathBuf::from(path.replace("%%", "%")))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// How to start a worker for `config`: the service whose unit in `dirs`
/// runs it, else `program` as a child.
pub fn plan(config: &Path, program: &Path, dirs: &[(PathBuf, bool)]) -> Start {
    for (dir, user) in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !(name.starts_with("studio-worker") && name.ends_with(".service")) {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(e.path()) else {
                continue;
            };
            if unit_config(&text).is_some_and(|c| same_file(&c, config)) {
                let mut command = vec!["systemctl".to_string()];
                if *user {
                    command.push("--user".into());
                }
                command.extend(["start".into(), name]);
                return Start::Service {
                    unit: e.path(),
                    command,
                };
            }
        }
    }
    Start::Child {
        program: program.to_path_buf(),
    }
}

/// Starts the worker as planned; the child when the window started one.
pub fn start(plan: &Start, config: &Path) -> Result<Option<std::process::Child>, String> {
    match plan {
        Start::Service { command, .. } => {
            let out = std::process::Command::new(&command[0])
                .args(&command[1..])
                .output()
                .map_err(|e| format!("{}: {e}", command.join(" ")))?;
            if out.status.success() {
                Ok(None)
            } else {
                Err(format!(
                    "{} failed: {}",
                    command.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        }
        Start::Child { program } => {
            // Its log goes beside the config, as a service's would go to
            // the journal.
            let log_path = config.with_extension("ui-worker.log");
            let log = std::fs::File::create(&log_path)
                .map_err(|e| format!("cannot write {}: {e}", log_path.display()))?;
            let err = log
                .try_clone()
                .map_err(|e| format!("cannot write {}: {e}", log_path.display()))?;
            std::process::Command::new(program)
                .arg("--config")
                .arg(config)
                .arg("run")
                .stdin(std::process::Stdio::null())
                .stdout(log)
                .stderr(err)
                .spawn()
                .map(Some)
                .map_err(|e| format!("cannot start {}: {e}", program.display()))
        }
    }
}

/// The `studio-worker` binary the window starts: beside its own, else the
/// one on `PATH`.
pub fn worker_program() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("studio-worker")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("studio-worker"))
}

/// The XDG autostart entry that runs the window in the tray at login.
pub fn autostart_file(xdg_config_home: &Path) -> PathBuf {
    xdg_config_home.join("autostart/studio-worker-ui.desktop")
}

/// The user's XDG config directory (`$XDG_CONFIG_HOME`, else
/// `~/.config`).
pub fn xdg_config_home() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
}

/// The desktop entry's text.
pub fn desktop_entry(exe: &Path, config: &Path) -> String {
    let quote = |p: &Path| format!("\"{}\"", p.display().to_string().replace('"', "\\\""));
    format!(
        "[Desktop Entry]\nType=Application\nName=studio-worker\nComment=The studio-worker window, in the tray\nExec={} --config {} --tray\nTerminal=false\nX-GNOME-Autostart-enabled=true\n",
        quote(exe),
        quote(config)
    )
}

/// Writes (`on`) or removes the autostart entry under `xdg_config_home`.
pub fn set_autostart(
    xdg_config_home: &Path,
    on: bool,
    exe: &Path,
    config: &Path,
) -> std::io::Result<()> {
    let file = autostart_file(xdg_config_home);
    if on {
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&file, desktop_entry(exe, config))
    } else {
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_that_runs_this_config_is_started_through_its_manager_else_a_child() {
        let dir = tempfile::tempdir().unwrap();
        let units = dir.path().join("units");
        std::fs::create_dir_all(&units).unwrap();
        let config = dir.path().join("my config.toml");
        std::fs::write(&config, "").unwrap();
        let program = Path::new("/opt/sw/studio-worker");
        let dirs = vec![(units.clone(), true)];
        assert_eq!(
            plan(&config, program, &dirs),
            Start::Child {
                program: program.into()
            }
        );
        // Another config's unit is not this worker's.
        std::fs::write(
            units.join("studio-worker-other.service"),
            "[Service]\nExecStart=/opt/sw/studio-worker --config /elsewhere.toml run\n",
        )
        .unwrap();
        assert!(matches!(plan(&config, program, &dirs), Start::Child { .. }));
        std::fs::write(
            units.join("studio-worker.service"),
            format!(
                "[Service]\nExecStart=/opt/sw/studio-worker --config \"{}\" run\n",
                config.display()
            ),
        )
        .unwrap();
        match plan(&config, program, &dirs) {
            Start::Service { command, unit } => {
                assert_eq!(
                    command,
                    ["systemctl", "--user", "start", "studio-worker.service"]
                );
                assert!(unit.ends_with("studio-worker.service"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_autostart_entry_is_written_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let exe = Path::new("/opt/sw/studio-worker-ui");
        let config = Path::new("/home/me/.config/minis-studio-worker/config.toml");
        set_autostart(dir.path(), true, exe, config).unwrap();
        let text = std::fs::read_to_string(autostart_file(dir.path())).unwrap();
        assert!(text.contains("Exec=\"/opt/sw/studio-worker-ui\" --config \"/home/me/.config/minis-studio-worker/config.toml\" --tray"), "{text}");
        assert!(text.starts_with("[Desktop Entry]\nType=Application\n"));
        set_autostart(dir.path(), false, exe, config).unwrap();
        assert!(!autostart_file(dir.path()).exists());
        // Removing what is not there is fine.
        set_autostart(dir.path(), false, exe, config).unwrap();
    }
}
