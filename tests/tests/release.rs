//! Release packaging with the real tools: `scripts/package` (tar, xz,
//! sha256sum), `scripts/install.sh` into a temporary home, the installed
//! binary running a job, and the workflows through actionlint.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;
use studio_protocol::runner::FAMILIES;
use studio_worker_tests::models;
use studio_worker_tests::release::{foreign_archive, host_target, package, root, sha256_hex};

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One archive of this build as release 9.8.7, packed once for the file.
fn archive() -> &'static PathBuf {
    static ARCHIVE: OnceLock<PathBuf> = OnceLock::new();
    ARCHIVE.get_or_init(|| {
        // Under target/, replaced each run (not left in the temp dir).
        let dir = root().join("target/test-release/release-rs");
        let _ = std::fs::remove_dir_all(&dir);
        package("9.8.7", &dir)
    })
}

fn install(home: &Path, archive: &Path) -> Output {
    Command::new("sh")
        .arg(root().join("scripts/install.sh"))
        .arg("--archive")
        .arg(archive)
        .env("HOME", home)
        .env_remove("XDG_DATA_HOME")
        .output()
        .expect("install.sh runs")
}

#[test]
fn the_archive_holds_every_binary_a_manifest_and_its_digest() {
    let archive = archive();
    let name = archive.file_name().unwrap().to_string_lossy().to_string();
    let target = host_target();
    assert_eq!(name, format!("studio-worker-9.8.7-{target}-cpu.tar.xz"));
    let sidecar = std::fs::read_to_string(format!("{}.sha256", archive.display())).unwrap();
    assert_eq!(sidecar, format!("{}  {name}\n", sha256_hex(archive)));
    // Unpacked by tar itself, the manifest matches every file.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", said(&out));
    let top = dir.path().join(name.trim_end_matches(".tar.xz"));
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(top.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["product"], "studio-worker");
    assert_eq!(manifest["version"], "9.8.7");
    assert_eq!(manifest["target"], target.as_str());
    assert_eq!(manifest["variant"], "cpu");
    let files = manifest["files"].as_array().unwrap();
    let listed: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    for f in files {
        let path = top.join(f["path"].as_str().unwrap());
        assert_eq!(
            f["sha256"],
            sha256_hex(&path).as_str(),
            "{}",
            path.display()
        );
    }
    let mut needed: Vec<&str> = FAMILIES.iter().map(|f| f.binary).collect();
    needed.extend(["studio-worker", models::ORT, "LICENSE", "README.md"]);
    for n in needed {
        assert!(listed.contains(&n), "{n} missing from {listed:?}");
    }
}

#[test]
fn install_sh_installs_the_versioned_layout_and_the_installed_worker_runs_a_job() {
    let home = tempfile::tempdir().unwrap();
    let out = install(home.path(), archive());
    assert!(out.status.success(), "{}", said(&out));
    let prefix = home.path().join(".local/share/studio-worker");
    assert_eq!(
        std::fs::read_link(prefix.join("current")).unwrap(),
        PathBuf::from("versions/9.8.7")
    );
    let link = home.path().join(".local/bin/studio-worker");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        prefix.join("current/studio-worker")
    );
    let result = home.path().join("fox.png");
    let job = Command::new(&link)
        .arg("--config")
        .arg(home.path().join("config.toml"))
        .args([
            "job", "image", "--prompt", "a fox", "--width", "48", "--height", "32", "--ext", "png",
            "--out",
        ])
        .arg(&result)
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert!(job.status.success(), "{}", said(&job));
    let img = image::open(&result).unwrap();
    assert_eq!((img.width(), img.height()), (48, 32));
    // Installing the same release again is fine.
    let again = install(home.path(), archive());
    assert!(again.status.success(), "{}", said(&again));
}

#[test]
fn install_sh_refuses_a_wrong_digest_and_a_foreign_archive() {
    let dir = tempfile::tempdir().unwrap();
    // The real archive with a digest that does not match.
    let copy = dir.path().join(archive().file_name().unwrap());
    std::fs::copy(archive(), &copy).unwrap();
    std::fs::write(
        format!("{}.sha256", copy.display()),
        format!("{}  x\n", "0".repeat(64)),
    )
    .unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = install(home.path(), &copy);
    assert!(!out.status.success());
    assert!(said(&out).contains("does not match"), "{}", said(&out));
    assert!(!home
        .path()
        .join(".local/share/studio-worker/current")
        .exists());

    // Another product's archive, with a right digest.
    let foreign = foreign_archive(dir.path(), "1.0.0");
    std::fs::write(
        format!("{}.sha256", foreign.display()),
        format!("{}  other.tar.xz\n", sha256_hex(&foreign)),
    )
    .unwrap();
    let out = install(home.path(), &foreign);
    assert!(!out.status.success());
    assert!(said(&out).contains("not studio-worker"), "{}", said(&out));
    assert!(!home
        .path()
        .join(".local/share/studio-worker/current")
        .exists());
}

#[test]
fn the_workflows_pass_actionlint() {
    let workflows: Vec<PathBuf> = std::fs::read_dir(root().join(".github/workflows"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(workflows.len() >= 2, "{workflows:?}");
    let out = Command::new(models::path(models::ACTIONLINT))
        .args(&workflows)
        .output()
        .unwrap();
    assert!(out.status.success(), "actionlint:\n{}", said(&out));
}
