//! The service definitions, as text: a systemd unit (Linux), a LaunchAgent
//! plist (macOS) and a Task Scheduler task (Windows). Pure functions, so
//! the Linux build tests every platform's rendering.

use std::path::{Path, PathBuf};

/// What every platform's service runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The service's name (`studio-worker`).
    pub name: String,
    /// Absolute path of the `studio-worker` binary to run.
    pub binary: PathBuf,
    /// Absolute path of its config file.
    pub config: PathBuf,
    /// The config's `drain_timeout_secs`: a stop waits this long for the
    /// running job, so the service manager must wait longer.
    pub drain_timeout_secs: u64,
}

impl Spec {
    /// Seconds the service manager waits for a stop before killing:
    /// the drain, plus the runners' staged stop, plus a margin.
    pub fn stop_timeout_secs(&self) -> u64 {
        self.drain_timeout_secs + 30
    }
}

/// Where a systemd unit runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The user's own manager (`systemctl --user`).
    User,
    /// The system manager, as a dedicated account.
    System {
        /// The account the worker runs as.
        user: String,
    },
}

/// systemd quotes a path with spaces; `%` is its specifier character.
fn systemd_word(p: &Path) -> String {
    let s = p.display().to_string().replace('%', "%%");
    if s.contains([' ', '\t', '"', '\\']) {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s
    }
}

/// One line saying what the service is.
fn description(spec: &Spec) -> String {
    if spec.name == "studio-worker" {
        "studio-worker: a GPU worker for the studio".into()
    } else {
        format!("studio-worker ({}): a GPU worker for the studio", spec.name)
    }
}

/// The systemd unit.
pub fn systemd_unit(spec: &Spec, scope: &Scope) -> String {
    let (account, wanted_by) = match scope {
        Scope::User => (String::new(), "default.target"),
        Scope::System { user } => (format!("User={user}\n"), "multi-user.target"),
    };
    format!(
        "# Written by `studio-worker install-service`; `studio-worker uninstall-service` removes it.
[Unit]
Description={description}
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
{account}ExecStart={binary} --config {config} run
Restart=on-failure
RestartSec=5
# The whole group (the worker and its engine runners) stops together.
KillMode=control-group
KillSignal=SIGTERM
# SIGTERM drains: the running job may take drain_timeout_secs ({drain} s).
TimeoutStopSec={stop}

[Install]
WantedBy={wanted_by}
",
        description = description(spec),
        binary = systemd_word(&spec.binary),
        config = systemd_word(&spec.config),
        drain = spec.drain_timeout_secs,
        stop = spec.stop_timeout_secs(),
    )
}

/// `s` with XML's five special characters escaped.
pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// The LaunchAgent's label (`com.studio-worker.NAME`).
pub fn launchd_label(spec: &Spec) -> String {
    format!("com.studio-worker.{}", spec.name)
}

/// The macOS LaunchAgent plist: started at login, restarted when it exits
/// with an error, logs beside the config.
pub fn launchd_plist(spec: &Spec) -> String {
    let log_dir = spec
        .config
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let e = |p: &Path| xml_escape(&p.display().to_string());
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- Written by `studio-worker install-service`; `studio-worker uninstall-service` removes it. -->
<plist version="1.0">
<dict>
  <key>Label</key>
  <string>{label}</string>
  <key>ProgramArguments</key>
  <array>
    <string>{binary}</string>
    <string>--config</string>
    <string>{config}</string>
    <string>run</string>
  </array>
  <key>RunAtLoad</key>
  <true/>
  <key>KeepAlive</key>
  <dict>
    <key>SuccessfulExit</key>
    <false/>
  </dict>
  <key>ThrottleInterval</key>
  <integer>5</integer>
  <key>ExitTimeOut</key>
  <integer>{stop}</integer>
  <key>ProcessType</key>
  <string>Background</string>
  <key>StandardOutPath</key>
  <string>{out}</string>
  <key>StandardErrorPath</key>
  <string>{err}</string>
</dict>
</plist>
"#,
        label = xml_escape(&launchd_label(spec)),
        binary = e(&spec.binary),
        config = e(&spec.config),
        stop = spec.stop_timeout_secs(),
        out = e(&log_dir.join(format!("{}.out.log", spec.name))),
        err = e(&log_dir.join(format!("{}.err.log", spec.name))),
    )
}

/// The Windows Task Scheduler task (XML for `schtasks /Create /XML`): at
/// logon of `user`, restarted every minute on failure (up to 999 times),
/// no time limit, not stopped on battery.
pub fn windows_task_xml(spec: &Spec, user: &str) -> String {
    let quoted = |p: &Path| format!("\"{}\"", p.display());
    format!(
        r#"<?xml version="1.0" encoding="UTF-16"?>
<Task version="1.4" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">
  <RegistrationInfo>
    <Description>{description}. Written by `studio-worker install-service`.</Description>
  </RegistrationInfo>
  <Triggers>
    <LogonTrigger>
      <Enabled>true</Enabled>
      <UserId>{user}</UserId>
    </LogonTrigger>
  </Triggers>
  <Principals>
    <Principal id="Author">
      <UserId>{user}</UserId>
      <LogonType>InteractiveToken</LogonType>
      <RunLevel>LeastPrivilege</RunLevel>
    </Principal>
  </Principals>
  <Settings>
    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>
    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>
    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>
    <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>
    <RestartOnFailure>
      <Interval>PT1M</Interval>
      <Count>999</Count>
    </RestartOnFailure>
    <Enabled>true</Enabled>
  </Settings>
  <Actions Context="Author">
    <Exec>
      <Command>{binary}</Command>
      <Arguments>--config {config} run</Arguments>
    </Exec>
  </Actions>
</Task>
"#,
        description = xml_escape(&description(spec)),
        user = xml_escape(user),
        binary = xml_escape(&quoted(&spec.binary)),
        config = xml_escape(&quoted(&spec.config)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            name: "studio-worker".into(),
            binary: "/home/ann/.local/share/studio-worker/current/studio-worker".into(),
            config: "/home/ann/My Configs/studio-worker.toml".into(),
            drain_timeout_secs: 60,
        }
    }

    #[test]
    fn the_user_unit_restarts_kills_the_group_and_outwaits_the_drain() {
        let u = systemd_unit(&spec(), &Scope::User);
        for line in [
            "ExecStart=/home/ann/.local/share/studio-worker/current/studio-worker --config \"/home/ann/My Configs/studio-worker.toml\" run",
            "Restart=on-failure",
            "RestartSec=5",
            "KillMode=control-group",
            "TimeoutStopSec=90",
            "WantedBy=default.target",
        ] {
            assert!(u.lines().any(|l| l == line), "{line} in\n{u}");
        }
        assert!(!u.contains("User="), "{u}");
    }

    #[test]
    fn the_system_unit_runs_as_the_named_account() {
        let u = systemd_unit(&spec(), &Scope::System { user: "gpu".into() });
        assert!(u.lines().any(|l| l == "User=gpu"), "{u}");
        assert!(u.lines().any(|l| l == "WantedBy=multi-user.target"), "{u}");
    }

    #[test]
    fn percent_signs_are_escaped_for_systemd() {
        let mut s = spec();
        s.config = "/srv/100%/c.toml".into();
        let u = systemd_unit(&s, &Scope::User);
        assert!(u.contains("--config /srv/100%%/c.toml run"), "{u}");
    }

    #[test]
    fn the_launch_agent_starts_at_load_and_keeps_alive_on_failure() {
        let p = launchd_plist(&spec());
        for part in [
            "<string>com.studio-worker.studio-worker</string>",
            "<string>/home/ann/My Configs/studio-worker.toml</string>",
            "<key>RunAtLoad</key>\n  <true/>",
            "<key>SuccessfulExit</key>\n    <false/>",
            "<integer>90</integer>",
            "/home/ann/My Configs/studio-worker.err.log",
        ] {
            assert!(p.contains(part), "{part} in\n{p}");
        }
    }

    #[test]
    fn the_windows_task_starts_at_logon_and_restarts_on_failure() {
        let mut s = spec();
        s.binary = r"C:\Users\Ann & Co\studio-worker\current\studio-worker.exe".into();
        let x = windows_task_xml(&s, r"RIG\ann");
        for part in [
            "<LogonTrigger>",
            "<UserId>RIG\\ann</UserId>",
            "<RestartOnFailure>",
            "<ExecutionTimeLimit>PT0S</ExecutionTimeLimit>",
            "<Command>&quot;C:\\Users\\Ann &amp; Co\\studio-worker\\current\\studio-worker.exe&quot;</Command>",
        ] {
            assert!(x.contains(part), "{part} in\n{x}");
        }
    }
}
