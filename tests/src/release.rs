//! Release archives for the tests, made by `scripts/package` from the
//! binaries this test build already has (no second release build).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::models;
use crate::proc::bin;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// This build's target triple (the host's: the tests build natively).
pub fn host_target() -> String {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("rustc -vV names the host")
}

/// Packs this build's binaries (and the test ONNX Runtime) as release
/// `version` into `out` with `scripts/package --fast`; the archive's path
/// (its `.sha256` beside it).
pub fn package(version: &str, out: &Path) -> PathBuf {
    let bin_dir = bin("studio-worker")
        .parent()
        .map(Path::to_path_buf)
        .expect("a bin dir");
    let result = Command::new(root().join("scripts/package"))
        .args(["--fast", "--version", version, "--bin-dir"])
        .arg(&bin_dir)
        .arg("--ort")
        .arg(models::path(models::ORT))
        .arg("--out")
        .arg(out)
        .output()
        .expect("scripts/package runs");
    assert!(
        result.status.success(),
        "scripts/package failed:\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&result.stdout).trim())
}

/// Another product's release archive (`dir/other.tar.xz`, one folder with
/// a manifest of product `other` at `version` for this target): what an
/// installer or an update must refuse.
pub fn foreign_archive(dir: &Path, version: &str) -> PathBuf {
    let top = dir.join("other");
    std::fs::create_dir_all(&top).expect("folder");
    let manifest = serde_json::json!({"product": "other", "version": version,
        "target": host_target(), "variant": "cpu", "files": []});
    std::fs::write(top.join("manifest.json"), manifest.to_string()).expect("manifest");
    let archive = dir.join("other.tar.xz");
    let tar = Command::new("tar")
        .arg("-cJf")
        .arg(&archive)
        .arg("-C")
        .arg(dir)
        .arg("other")
        .output()
        .expect("tar runs");
    assert!(
        tar.status.success(),
        "{}",
        String::from_utf8_lossy(&tar.stderr)
    );
    archive
}

/// Installs `archive` with `scripts/install.sh` under `home` (prefix
/// `home/install`, links in `home/bin`); the prefix.
pub fn install(archive: &Path, home: &Path) -> PathBuf {
    let prefix = home.join("install");
    let out = Command::new("sh")
        .arg(root().join("scripts/install.sh"))
        .arg("--archive")
        .arg(archive)
        .arg("--prefix")
        .arg(&prefix)
        .arg("--bin-dir")
        .arg(home.join("bin"))
        .output()
        .expect("install.sh runs");
    assert!(
        out.status.success(),
        "install.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    prefix
}

/// The SHA-256 of a file, in hex.
pub fn sha256_hex(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(
        std::fs::read(path).expect("read the file"),
    ))
}
