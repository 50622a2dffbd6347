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
/// installed worker (`install.sh --ui` puts the window in `PREFIX/ui`,
/// the worker in `PREFIX/current`), else the one on `PATH`.
pub fn worker_program() -> PathBuf {
    let name = studio_worker::platform::exe("studio-worker");
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
        .and_then(|dir| {
            let beside = dir.join(&name);
            let installed = dir.parent().map(|p| p.join("current").join(&name));
            std::iter::once(beside)
                .chain(installed)
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Where "Run in tray on login" is kept, per platform. Each starts
/// `studio-worker-ui --config C --tray` when the user logs in.
#[derive(Debug, Clone, PartialEq)]
pub enum Autostart {
    /// An XDG autostart entry (Linux and other freedesktop desktops).
    Desktop(PathBuf),
    /// A LaunchAgent plist (macOS), loaded by launchd at login.
    LaunchAgent(PathBuf),
    /// The `studio-worker-ui` value under [`RUN_KEY`] (Windows), set and
    /// read with `reg.exe`.
    RunValue,
}

/// The Windows key whose values run at the user's logon.
pub const RUN_KEY: &str = r"HKCU\Software\Microsoft\Windows\CurrentVersion\Run";

/// The value's name under [`RUN_KEY`], and the desktop entry's stem.
pub const RUN_VALUE: &str = "studio-worker-ui";

/// The LaunchAgent's label (the service's are `com.studio-worker.NAME`).
pub const AGENT_LABEL: &str = "com.studio-worker.ui";

impl Autostart {
    /// This platform's, for this user (`None` without a home directory).
    pub fn here() -> Option<Self> {
        if cfg!(windows) {
            Some(Autostart::RunValue)
        } else if cfg!(target_os = "macos") {
            let home = std::env::var_os("HOME")?;
            Some(Autostart::LaunchAgent(
                PathBuf::from(home).join(format!("Library/LaunchAgents/{AGENT_LABEL}.plist")),
            ))
        } else {
            xdg_config_home().map(|d| Autostart::Desktop(autostart_file(&d)))
        }
    }

    /// Where it is kept, for the window to say.
    pub fn describe(&self) -> String {
        match self {
            Autostart::Desktop(p) | Autostart::LaunchAgent(p) => p.display().to_string(),
            Autostart::RunValue => format!("{RUN_KEY}\\{RUN_VALUE}"),
        }
    }

    /// Whether the window starts at login now.
    pub fn is_on(&self) -> bool {
        match self {
            Autostart::Desktop(p) | Autostart::LaunchAgent(p) => p.is_file(),
            Autostart::RunValue => std::process::Command::new("reg")
                .args(["query", RUN_KEY, "/v", RUN_VALUE])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
        }
    }

    /// Turns it on (written for `exe` and `config`) or off (removed;
    /// removing what is not there is fine).
    pub fn set(&self, on: bool, exe: &Path, config: &Path) -> std::io::Result<()> {
        let file = match self {
            Autostart::Desktop(p) | Autostart::LaunchAgent(p) => p,
            Autostart::RunValue => {
                if !on && !self.is_on() {
                    return Ok(());
                }
                let out = std::process::Command::new("reg")
                    .args(reg_args(on, exe, config))
                    .output()?;
                return if out.status.success() {
                    Ok(())
                } else {
                    Err(std::io::Error::other(format!(
                        "reg {} failed: {}",
                        if on { "add" } else { "delete" },
                        String::from_utf8_lossy(&out.stderr).trim()
                    )))
                };
            }
        };
        if !on {
            return match std::fs::remove_file(file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = match self {
            Autostart::LaunchAgent(_) => launch_agent_plist(exe, config),
            _ => desktop_entry(exe, config),
        };
        std::fs::write(file, text)
    }
}

/// The XDG autostart entry under `xdg_config_home`.
pub fn autostart_file(xdg_config_home: &Path) -> PathBuf {
    xdg_config_home.join(format!("autostart/{RUN_VALUE}.desktop"))
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
    format!(
        "[Desktop Entry]\nType=Application\nName=studio-worker\nComment=The studio-worker window, in the tray\nExec={}\nTerminal=false\nX-GNOME-Autostart-enabled=true\n",
        command_line(exe, config)
    )
}

/// `"EXE" --config "CONFIG" --tray`, each path in double quotes (a quote
/// inside one escaped with a backslash): the desktop entry's `Exec` and
/// the Windows Run value's data.
pub fn command_line(exe: &Path, config: &Path) -> String {
    let quote = |p: &Path| format!("\"{}\"", p.display().to_string().replace('"', "\\\""));
    format!("{} --config {} --tray", quote(exe), quote(config))
}

/// The LaunchAgent: the window in the tray at login, in the user's GUI
/// session, not restarted after Quit.
pub fn launch_agent_plist(exe: &Path, config: &Path) -> String {
    let e = |p: &Path| studio_worker::service::render::xml_escape(&p.display().to_string());
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- Written by the studio-worker window's "Run in tray on login"; turning it off removes it. -->
<plist version="1.0">
<dict>
  <key>Label</key>
  <string>{AGENT_LABEL}</string>
  <key>ProgramArguments</key>
  <array>
    <string>{exe}</string>
    <string>--config</string>
    <string>{config}</string>
    <string>--tray</string>
  </array>
  <key>RunAtLoad</key>
  <true/>
  <key>LimitLoadToSessionType</key>
  <string>Aqua</string>
  <key>ProcessType</key>
  <string>Interactive</string>
</dict>
</plist>
"#,
        exe = e(exe),
        config = e(config),
    )
}

/// `reg.exe`'s arguments that set (`on`) or delete the Run value.
pub fn reg_args(on: bool, exe: &Path, config: &Path) -> Vec<String> {
    let mut args: Vec<String> = if on {
        vec!["add".into()]
    } else {
        vec!["delete".into()]
    };
    args.extend([RUN_KEY.to_string(), "/v".into(), RUN_VALUE.into()]);
    if on {
        args.extend([
            "/t".into(),
            "REG_SZ".into(),
            "/d".into(),
            command_line(exe, config),
        ]);
    }
    args.push("/f".into());
    args
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
        let at = Autostart::Desktop(autostart_file(dir.path()));
        assert!(!at.is_on());
        at.set(true, exe, config).unwrap();
        assert!(at.is_on());
        let text = std::fs::read_to_string(autostart_file(dir.path())).unwrap();
        assert!(text.contains("Exec=\"/opt/sw/studio-worker-ui\" --config \"/home/me/.config/minis-studio-worker/config.toml\" --tray"), "{text}");
        assert!(text.starts_with("[Desktop Entry]\nType=Application\n"));
        at.set(false, exe, config).unwrap();
        assert!(!at.is_on());
        // Removing what is not there is fine.
        at.set(false, exe, config).unwrap();
    }

    /// The plist as macOS reads it: parsed by Python's `plistlib`.
    #[test]
    fn the_launch_agent_runs_the_window_in_the_tray_at_login() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir
            .path()
            .join(format!("Library/LaunchAgents/{AGENT_LABEL}.plist"));
        let at = Autostart::LaunchAgent(file.clone());
        let exe = Path::new("/Applications/Studio & Co/studio-worker-ui");
        let config = Path::new("/Users/ann/<rigs>/config \"main\".toml");
        at.set(true, exe, config).unwrap();
        assert!(at.is_on());
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import json, plistlib, sys; print(json.dumps(plistlib.load(open(sys.argv[1], 'rb'))))",
            ])
            .arg(&file)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(p["Label"], AGENT_LABEL);
        assert_eq!(
            p["ProgramArguments"],
            serde_json::json!([
                "/Applications/Studio & Co/studio-worker-ui",
                "--config",
                "/Users/ann/<rigs>/config \"main\".toml",
                "--tray"
            ])
        );
        assert_eq!(p["RunAtLoad"], true);
        // Quit from the tray stays quit: no KeepAlive.
        assert!(p.get("KeepAlive").is_none(), "{p}");
        at.set(false, exe, config).unwrap();
        assert!(!file.exists());
    }

    #[test]
    fn the_windows_run_value_quotes_both_paths() {
        let exe = Path::new(r"C:\Program Files\studio-worker\studio-worker-ui.exe");
        let config = Path::new(r"C:\Users\Ann\AppData\Roaming\studio-worker\config.toml");
        assert_eq!(
            reg_args(true, exe, config),
            [
                "add",
                RUN_KEY,
                "/v",
                "studio-worker-ui",
                "/t",
                "REG_SZ",
                "/d",
                r#""C:\Program Files\studio-worker\studio-worker-ui.exe" --config "C:\Users\Ann\AppData\Roaming\studio-worker\config.toml" --tray"#,
                "/f"
            ]
        );
        assert_eq!(
            reg_args(false, exe, config),
            ["delete", RUN_KEY, "/v", "studio-worker-ui", "/f"]
        );
    }
}
