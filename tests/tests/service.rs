//! `install-service` / `uninstall-service` with the real binary and the
//! real systemd tools: the units it writes pass `systemd-analyze verify`,
//! and installing into a home whose user manager cannot be reached writes
//! the unit, prints the commands to run, and is idempotent.

use std::path::Path;
use std::process::{Command, Output};

use studio_worker_tests::proc::bin;

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `studio-worker --config CONFIG ARGS` in `home`, where no user service
/// manager can be reached (no bus, an empty runtime dir): nothing here may
/// touch the machine's own services.
fn worker(home: &Path, config: &Path, args: &[&str]) -> Output {
    let run = home.join("run");
    std::fs::create_dir_all(&run).unwrap();
    Command::new(bin("studio-worker"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_RUNTIME_DIR", &run)
        .env(
            "DBUS_SESSION_BUS_ADDRESS",
            format!("unix:path={}/no-bus", run.display()),
        )
        .output()
        .expect("studio-worker runs")
}

/// `systemd-analyze verify` on `unit` (written as `name`); its output on
/// failure.
fn verify(dir: &Path, name: &str, unit: &str) {
    let path = dir.join(name);
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze runs (scripts/test installs systemd)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify {name}:\n{}\n{unit}",
        text(&out)
    );
}

#[test]
fn the_units_pass_systemd_analyze_verify() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("worker config.toml");
    std::fs::write(&config, "drain_timeout_secs = 120\n").unwrap();
    let user = worker(home.path(), &config, &["install-service", "--print"]);
    assert!(user.status.success(), "{}", text(&user));
    let unit = String::from_utf8(user.stdout).unwrap();
    let exe = bin("studio-worker").canonicalize().unwrap();
    assert!(
        unit.contains(&format!(
            "ExecStart={} --config \"{}\" run",
            exe.display(),
            config.display()
        )),
        "absolute paths, quoted where needed:\n{unit}"
    );
    assert!(
        unit.contains("TimeoutStopSec=150"),
        "outwaits the 120 s drain:\n{unit}"
    );
    verify(home.path(), "studio-worker.service", &unit);

    let system = worker(
        home.path(),
        &config,
        &["install-service", "--system", "--user", "root", "--print"],
    );
    assert!(system.status.success(), "{}", text(&system));
    let unit = String::from_utf8(system.stdout).unwrap();
    assert!(unit.lines().any(|l| l == "User=root"), "{unit}");
    verify(home.path(), "studio-worker-system.service", &unit);

    // --system needs the account; a bad name is refused.
    let no_user = worker(home.path(), &config, &["install-service", "--system"]);
    assert!(!no_user.status.success());
    let bad = worker(
        home.path(),
        &config,
        &["install-service", "--name", "../x", "--print"],
    );
    assert!(!bad.status.success());
    assert!(text(&bad).contains("--name"), "{}", text(&bad));
}

#[test]
fn install_without_a_user_manager_writes_the_unit_says_what_to_run_and_is_idempotent() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    let unit = home.path().join(".config/systemd/user/rig-a.service");

    let first = worker(
        home.path(),
        &config,
        &["install-service", "--name", "rig-a"],
    );
    let said = text(&first);
    assert!(first.status.success(), "{said}");
    assert!(
        said.contains(&format!("wrote {}", unit.display())),
        "{said}"
    );
    assert!(
        said.contains("systemctl --user daemon-reload")
            && said.contains("systemctl --user enable --now rig-a.service"),
        "the commands to run: {said}"
    );
    let written = std::fs::read_to_string(&unit).unwrap();
    assert!(written.contains("KillMode=control-group"), "{written}");
    assert!(written.contains("Restart=on-failure"), "{written}");

    let again = worker(
        home.path(),
        &config,
        &["install-service", "--name", "rig-a"],
    );
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("unchanged:"), "{}", text(&again));
    assert_eq!(std::fs::read_to_string(&unit).unwrap(), written);

    let gone = worker(
        home.path(),
        &config,
        &["uninstall-service", "--name", "rig-a"],
    );
    assert!(gone.status.success(), "{}", text(&gone));
    assert!(text(&gone).contains("removed"), "{}", text(&gone));
    assert!(!unit.exists());
    let twice = worker(
        home.path(),
        &config,
        &["uninstall-service", "--name", "rig-a"],
    );
    assert!(twice.status.success(), "{}", text(&twice));
    assert!(text(&twice).contains("not installed"), "{}", text(&twice));
}
