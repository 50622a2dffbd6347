//! The window's own optional release archive, with the real tools:
//! `scripts/package --ui` (tar, xz, sha256sum) packs the binary this test
//! build made, and `scripts/install.sh --ui` installs it under a
//! temporary home, apart from the worker's versions (the `ui` feature).
#![cfg(feature = "ui")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use studio_worker_tests::release::{foreign_archive, host_target, root, sha256_hex};

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn install(home: &Path, archive: &Path, ui: bool) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg(root().join("scripts/install.sh"));
    if ui {
        cmd.arg("--ui");
    }
    cmd.arg("--archive")
        .arg(archive)
        .arg("--prefix")
        .arg(home.join("install"))
        .arg("--bin-dir")
        .arg(home.join("bin"))
        .output()
        .expect("install.sh runs")
}

#[test]
fn the_window_ships_as_its_own_archive_and_installs_apart_from_the_worker() {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_studio-worker-ui"));
    let out = tempfile::tempdir().unwrap();
    let packed = Command::new(root().join("scripts/package"))
        .args(["--ui", "--fast", "--version", "9.8.7", "--bin-dir"])
        .arg(bin.parent().unwrap())
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("scripts/package runs");
    assert!(packed.status.success(), "{}", said(&packed));
    let archive = PathBuf::from(String::from_utf8_lossy(&packed.stdout).trim());
    let target = host_target();
    let name = format!("studio-worker-ui-9.8.7-{target}.tar.xz");
    assert_eq!(archive.file_name().unwrap().to_string_lossy(), name);
    let sidecar = std::fs::read_to_string(format!("{}.sha256", archive.display())).unwrap();
    assert_eq!(sidecar, format!("{}  {name}\n", sha256_hex(&archive)));

    // The window alone, with its manifest; no worker, runner or library.
    let unpacked = tempfile::tempdir().unwrap();
    let tar = Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(unpacked.path())
        .output()
        .unwrap();
    assert!(tar.status.success(), "{}", said(&tar));
    let top = unpacked
        .path()
        .join(format!("studio-worker-ui-9.8.7-{target}"));
    let mut files: Vec<String> = std::fs::read_dir(&top)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["LICENSE", "README.md", "manifest.json", "studio-worker-ui"]
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(top.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["product"], "studio-worker-ui");
    assert_eq!(manifest["version"], "9.8.7");
    assert_eq!(manifest["target"], target.as_str());
    assert!(manifest.get("variant").is_none(), "{manifest}");
    for f in manifest["files"].as_array().unwrap() {
        let path = top.join(f["path"].as_str().unwrap());
        assert_eq!(f["sha256"], sha256_hex(&path), "{}", path.display());
    }
    assert_eq!(manifest["files"].as_array().unwrap().len(), 3);

    // The worker's installer refuses it: a window is not a worker.
    let home = tempfile::tempdir().unwrap();
    let refused = install(home.path(), &archive, false);
    assert!(!refused.status.success());
    assert!(
        said(&refused).contains("'studio-worker-ui', not studio-worker"),
        "{}",
        said(&refused)
    );
    assert!(!home.path().join("install/current").exists());

    // `--ui` installs it in PREFIX/ui, linked from the bin dir, and runs.
    let done = install(home.path(), &archive, true);
    assert!(done.status.success(), "{}", said(&done));
    assert!(home.path().join("install/ui/studio-worker-ui").is_file());
    assert!(!home.path().join("install/versions").exists());
    let ran = Command::new(home.path().join("bin/studio-worker-ui"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(ran.status.success(), "{}", said(&ran));
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout).trim(),
        format!("studio-worker-ui {}", env!("CARGO_PKG_VERSION"))
    );

    // And `--ui` refuses another product's archive.
    let other = foreign_archive(out.path(), "9.8.7");
    std::fs::write(
        format!("{}.sha256", other.display()),
        format!("{}  other.tar.xz\n", sha256_hex(&other)),
    )
    .unwrap();
    let refused = install(home.path(), &other, true);
    assert!(!refused.status.success());
    assert!(
        said(&refused).contains("not studio-worker-ui"),
        "{}",
        said(&refused)
    );
}
