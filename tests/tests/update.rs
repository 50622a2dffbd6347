//! Self-update end to end: real archives from `scripts/package` (this
//! build's binaries, as versions 9.8.0 and 9.9.0), installed with
//! `scripts/install.sh`, a release feed served by the fake studio over
//! loopback http, and the worker re-executing itself into the new version.
//! The test plays the service manager where one would restart the worker.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::{json, Value};
use studio_worker_tests::bounds;
use studio_worker_tests::claims::{claim, llm};
use studio_worker_tests::proc::{WorkerHome, WorkerProc};
use studio_worker_tests::release::{
    foreign_archive, host_target, install, package, root, sha256_hex,
};
use studio_worker_tests::studio::{FakeStudio, TOKEN, WORKER_ID};

const OLD: &str = "9.8.0";
const NEW: &str = "9.9.0";

/// The two archives, packed once for the file.
fn archives() -> &'static (PathBuf, PathBuf) {
    static A: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    A.get_or_init(|| {
        let dir = root().join("target/test-release/update-rs");
        let _ = std::fs::remove_dir_all(&dir);
        (package(OLD, &dir), package(NEW, &dir))
    })
}

/// A fresh install of the old version; its root.
fn install_old(home: &Path) -> PathBuf {
    install(&archives().0, home)
}

fn current(prefix: &Path) -> String {
    std::fs::read_link(prefix.join("current"))
        .unwrap()
        .display()
        .to_string()
}

/// Serves a feed with release NEW whose archive is `archive` and whose
/// sidecar says `digest`; returns the feed's URL.
fn serve_feed(studio: &FakeStudio, archive: &Path, digest: &str) -> String {
    let name = format!("studio-worker-{NEW}-{}-cpu.tar.xz", host_target());
    studio.serve_file(&name, std::fs::read(archive).unwrap());
    studio.serve_file(&format!("{name}.sha256"), format!("{digest}  {name}\n"));
    let feed = json!([
        {"tag_name": "v10.0.0", "draft": true, "assets": []},
        {"tag_name": format!("v{NEW}"), "assets": [
            {"name": name, "browser_download_url": studio.file_url(&name)},
            {"name": format!("{name}.sha256"), "browser_download_url": studio.file_url(&format!("{name}.sha256"))}
        ]},
        {"tag_name": format!("v{OLD}"), "assets": []}
    ]);
    studio.serve_file("releases.json", feed.to_string());
    studio.file_url("releases.json")
}

/// A worker home whose config reads `feed` every second.
fn home_with_feed(studio: &FakeStudio, feed: &str) -> WorkerHome {
    WorkerHome::new(
        &studio.url(),
        Some((WORKER_ID, TOKEN)),
        &format!("auto_update_feed = \"{feed}\"\nauto_update_interval_secs = 1\n"),
    )
}

/// Waits for a hello from `version`, the `n`th session or later.
async fn hello_from(studio: &FakeStudio, version: &str) -> Value {
    studio
        .wait_for(
            bounds::engine_work(),
            &format!("a hello from {version}"),
            |e| match e {
                studio_worker_tests::studio::Event::Frame(v)
                    if v["type"] == "hello" && v["capabilities"]["agentVersion"] == version =>
                {
                    Some(v.clone())
                }
                _ => None,
            },
        )
        .await
}

/// A studio whose feed offers NEW (its right digest), an install of OLD
/// (its temp dir kept alive by the caller) and a worker home reading the
/// feed.
async fn old_install_offered_new() -> (FakeStudio, tempfile::TempDir, PathBuf, WorkerHome) {
    let studio = FakeStudio::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let prefix = install_old(tmp.path());
    let new = &archives().1;
    let feed = serve_feed(&studio, new, &sha256_hex(new));
    let home = home_with_feed(&studio, &feed);
    (studio, tmp, prefix, home)
}

fn spawn(home: &WorkerHome, prefix: &Path, env: &[(&str, &str)]) -> WorkerProc {
    home.spawn_run_of(&prefix.join("current/studio-worker"), env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_release_is_verified_probed_switched_to_and_serves_in_the_same_process() {
    let (studio, _tmp, prefix, home) = old_install_offered_new().await;
    let worker = spawn(&home, &prefix, &[]);
    let old = hello_from(&studio, OLD).await;
    assert_eq!(old["capabilities"]["autoUpdate"], true, "{old}");
    hello_from(&studio, NEW).await;
    studio.wait_session(2).await;
    assert_eq!(current(&prefix), format!("versions/{NEW}"));
    assert!(
        studio_worker_tests::proc::alive(worker.pid()),
        "re-exec keeps the pid"
    );
    // The new version serves jobs and, once healthy, has no pending switch.
    studio.offer(claim("after-update", llm("hi")));
    studio.wait_frame("completeJson", "after-update").await;
    bounds::until("the pending switch cleared", bounds::event(), || {
        let state = std::fs::read_to_string(prefix.join("update-state.json")).ok()?;
        let v: Value = serde_json::from_str(&state).ok()?;
        v.get("pending").is_none().then_some(())
    })
    .await;
    let status = home
        .wait_status("the status of the new version", |s| s["version"] == NEW)
        .await;
    assert_eq!(status["pid"], worker.pid(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_digest_or_a_foreign_archive_is_refused_and_the_worker_keeps_serving() {
    let new = &archives().1;
    // A foreign archive: another product's manifest, its digest right.
    let tmp = tempfile::tempdir().unwrap();
    let foreign = foreign_archive(tmp.path(), NEW);
    let cases = [
        (new.clone(), "0".repeat(64), "does not match its .sha256"),
        (foreign.clone(), sha256_hex(&foreign), "not studio-worker"),
    ];
    for (archive, digest, cause) in cases {
        let studio = FakeStudio::start().await;
        let dir = tempfile::tempdir().unwrap();
        let prefix = install_old(dir.path());
        let feed = serve_feed(&studio, &archive, &digest);
        let home = home_with_feed(&studio, &feed);
        let _worker = spawn(&home, &prefix, &[]);
        hello_from(&studio, OLD).await;
        studio.wait_session(1).await;
        let status = home
            .wait_status(&format!("the update refused ({cause})"), |s| {
                s["update"].as_str().is_some_and(|u| u.contains(cause))
            })
            .await;
        assert!(
            status["update"].as_str().unwrap().starts_with("failed"),
            "{status}"
        );
        assert_eq!(current(&prefix), format!("versions/{OLD}"));
        assert!(!prefix.join(format!("versions/{NEW}")).exists());
        studio.offer(claim("still-serving", llm("hi")));
        studio.wait_frame("completeJson", "still-serving").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_that_exits_at_once_is_rolled_back_after_two_starts() {
    let (studio, _tmp, prefix, home) = old_install_offered_new().await;
    // 9.9.0 passes its probe but its `run` exits at once.
    let env = [
        ("STUDIO_WORKER_FAULT_INJECTION", "1"),
        ("STUDIO_WORKER_FAULT_EXIT_AT_START", NEW),
    ];
    let mut worker = spawn(&home, &prefix, &env);
    hello_from(&studio, OLD).await;
    // The switch, then the new version's first start fails.
    let exit = worker.wait_exit().await;
    assert_eq!(exit.code(), Some(3), "{}", worker.log());
    assert_eq!(current(&prefix), format!("versions/{NEW}"));
    // The service manager restarts it: the second start fails too.
    let mut worker = spawn(&home, &prefix, &env);
    assert_eq!(worker.wait_exit().await.code(), Some(3));
    // The third start flips back and runs the old version.
    let sessions = studio.sessions();
    let worker = spawn(&home, &prefix, &env);
    studio.wait_session(sessions + 1).await;
    assert_eq!(current(&prefix), format!("versions/{OLD}"));
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(prefix.join("update-state.json")).unwrap())
            .unwrap();
    assert_eq!(state["bad"], json!([NEW]), "{state}");
    assert!(state.get("pending").is_none(), "{state}");
    // It does not try the bad version again.
    let status = home
        .wait_status("the feed checked again", |s| s["update"] == "up to date")
        .await;
    assert_eq!(status["version"], OLD, "{status}");
    assert!(studio_worker_tests::proc::alive(worker.pid()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_unpack_and_flip_leaves_the_old_version_and_the_next_start_updates() {
    let (studio, _tmp, prefix, home) = old_install_offered_new().await;
    let mut worker = spawn(
        &home,
        &prefix,
        &[
            ("STUDIO_WORKER_FAULT_INJECTION", "1"),
            ("STUDIO_WORKER_FAULT_UPDATE_KILL", "before-flip"),
        ],
    );
    hello_from(&studio, OLD).await;
    let exit = worker.wait_exit().await;
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&exit),
        Some(libc::SIGKILL)
    );
    assert_eq!(current(&prefix), format!("versions/{OLD}"));
    // Restarted (no fault): it still runs the old version, then updates.
    let sessions = studio.sessions();
    let _worker = spawn(&home, &prefix, &[]);
    studio.wait_session(sessions + 1).await;
    hello_from(&studio, NEW).await;
    assert_eq!(current(&prefix), format!("versions/{NEW}"));
    let leftovers: Vec<String> = std::fs::read_dir(prefix.join("versions"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(".incoming"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
