//! Model downloads for `modelSource.files`, end to end: files served by the
//! fake studio over loopback, fetched by the real `studio-worker`.

use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use studio_worker_tests::claims::{claim, image};
use studio_worker_tests::proc::WorkerHome;
use studio_worker_tests::start_worker;
use studio_worker_tests::studio::FakeStudio;

fn blob(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect()
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn with_files(mut c: Value, files: Value) -> Value {
    c["modelSource"]["files"] = files;
    c
}

fn model_dir(home: &WorkerHome, model: &str) -> std::path::PathBuf {
    home.dir.path().join("models").join("synthetic").join(model)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_fetched_verified_cached_and_resumed_after_a_cut() {
    let studio = FakeStudio::start().await;
    let (home, _worker) = start_worker(&studio, "", &[]).await;
    let bytes = blob(3 << 20, 7);
    studio.serve_file("weights.bin", bytes.clone());
    studio.cut_file_after("weights.bin", 1 << 20);
    let files = json!([{"role": "model", "url": studio.file_url("weights.bin"), "filename": "weights.bin", "approxBytes": bytes.len(), "sha256": sha(&bytes)}]);
    let mut c = with_files(claim("dl-1", image(16, 16, "png")), files.clone());
    c["model"] = json!("tiny-model");
    studio.offer(c.clone());
    studio.wait_upload("dl-1").await;
    let on_disk = std::fs::read(model_dir(&home, "tiny-model").join("weights.bin")).unwrap();
    assert_eq!(on_disk.len(), bytes.len());
    assert!(on_disk == bytes, "downloaded bytes differ");
    assert!(!model_dir(&home, "tiny-model")
        .join("weights.bin.part")
        .exists());
    let gets = studio.file_gets("weights.bin");
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0], (None, 200));
    let (range, status) = &gets[1];
    assert_eq!(*status, 206);
    let from: usize = range
        .as_deref()
        .unwrap()
        .strip_prefix("bytes=")
        .unwrap()
        .strip_suffix('-')
        .unwrap()
        .parse()
        .unwrap();
    // Whatever arrived before the cut is kept (some bytes die in flight).
    assert!(from > 0 && from <= 1 << 20, "resumed from {from}");

    // A second job for the same model uses the cache.
    c["jobId"] = json!("dl-2");
    studio.offer(c);
    studio.wait_upload("dl-2").await;
    assert_eq!(
        studio.file_gets("weights.bin").len(),
        2,
        "no second download"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_fail_the_job_and_write_nothing() {
    let studio = FakeStudio::start().await;
    let (home, _worker) = start_worker(&studio, "", &[]).await;
    let bytes = blob(200_000, 9);
    studio.serve_file("w.bin", bytes.clone());
    let url = studio.file_url("w.bin");
    let wrong = "0".repeat(64);
    let cases = [
        (
            "hash",
            json!([{"role": "model", "url": url, "filename": "w.bin", "sha256": wrong}]),
            "SHA-256 mismatch",
            false,
        ),
        (
            "traversal",
            json!([{"role": "model", "url": url, "filename": "../evil.bin"}]),
            "../evil.bin",
            false,
        ),
        (
            "separator",
            json!([{"role": "model", "url": url, "filename": "sub/evil.bin"}]),
            "path separator",
            false,
        ),
        (
            "disk",
            json!([{"role": "model", "url": url, "filename": "huge.bin", "approxBytes": 1u64 << 60}]),
            "not enough disk space",
            true,
        ),
        (
            "http",
            json!([{"role": "model", "url": "http://example.invalid/w.bin", "filename": "w.bin"}]),
            "only to loopback",
            false,
        ),
        (
            "missing",
            json!([{"role": "model", "url": studio.file_url("nope.bin"), "filename": "nope.bin"}]),
            "HTTP 404",
            false,
        ),
    ];
    for (id, files, says, retryable) in cases {
        let mut c = with_files(claim(id, image(8, 8, "png")), files);
        c["model"] = json!(format!("m-{id}"));
        studio.offer(c);
        let fail = studio.wait_frame("fail", id).await;
        let msg = fail["error"].as_str().unwrap();
        assert!(msg.contains(says), "{id}: {msg}");
        assert_eq!(fail["retryable"], retryable, "{id}: {msg}");
        let dir = model_dir(&home, &format!("m-{id}"));
        let leftovers: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.ends_with(".lock"))
                    .collect()
            })
            .unwrap_or_default();
        assert!(leftovers.is_empty(), "{id}: left {leftovers:?}");
    }
    assert_eq!(
        studio.file_gets("w.bin").len(),
        1,
        "only the hash case downloaded"
    );
    assert!(
        !home.dir.path().join("evil.bin").exists()
            && !home.dir.path().join("models/evil.bin").exists()
    );
    // Mismatch names both digests.
    let fail = studio
        .frames("fail")
        .into_iter()
        .find(|f| f["jobId"] == "hash")
        .unwrap();
    let msg = fail["error"].as_str().unwrap();
    assert!(msg.contains(&wrong) && msg.contains(&sha(&bytes)), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_wanting_one_file_download_it_once() {
    let studio = FakeStudio::start().await;
    let bytes = blob(2 << 20, 11);
    studio.serve_file("shared.bin", bytes.clone());
    studio.throttle_file("shared.bin", Duration::from_millis(15));
    let home = WorkerHome::new(&studio.url(), None, "");
    let source = json!({"engine": "synthetic", "files": [{"role": "model", "url": studio.file_url("shared.bin"), "filename": "shared.bin", "sha256": sha(&bytes)}], "cliDefaults": {"cfgScale": 1.0, "steps": 1, "width": 8, "height": 8}}).to_string();
    let run = |home: &WorkerHome| {
        std::process::Command::new(studio_worker_tests::proc::bin("studio-worker"))
            .arg("--config")
            .arg(home.config())
            .args([
                "fetch-model",
                "--model",
                "shared-model",
                "--source",
                &source,
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = run(&home);
    let b = run(&home);
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let printed = String::from_utf8_lossy(&a.stdout);
    let path = printed.trim().split('\t').nth(1).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), bytes);
    assert_eq!(studio.file_gets("shared.bin").len(), 1, "downloaded once");
}
