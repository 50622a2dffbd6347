//! The `studio-worker` command line: config, status, enable/disable,
//! set-threshold and the local `job` command.

use studio_worker_tests::proc::WorkerHome;

fn text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_and_status_never_show_secrets() {
    let home = WorkerHome::new(
        "http://127.0.0.1:9/",
        Some(("w-9", "tok-super-secret")),
        "bootstrap_token = \"boot-super-secret\"\n",
    );
    let (out, err) = text(&home.cli(&["config"]));
    assert!(out.contains(&home.config().display().to_string()), "{out}");
    assert!(out.contains("worker_id = \"w-9\""), "{out}");
    assert!(out.contains("auth_token = \"***\""), "{out}");
    assert!(!out.contains("super-secret") && !err.contains("super-secret"));
    let (out, _) = text(&home.cli(&["status"]));
    assert!(
        out.contains("w-9") && out.contains("12 GB") && out.contains("enabled:       true"),
        "{out}"
    );
    assert!(out.contains("never run"), "{out}");
    assert!(
        out.contains("engines:       espeak, llama-cpp, sd-cpp, synthetic, whisper-cpp"),
        "{out}"
    );
    assert!(!out.contains("super-secret"));
}

#[test]
fn status_lists_the_gpus_and_warns_of_a_threshold_above_them() {
    let home = WorkerHome::new("http://127.0.0.1:9/", None, "vram_threshold_gb = 30.0\n");
    let status = |gpus: &str| {
        let out = std::process::Command::new(studio_worker_tests::proc::bin("studio-worker"))
            .arg("--config")
            .arg(home.config())
            .arg("status")
            .env("STUDIO_WORKER_FAKE_GPUS", gpus)
            .output()
            .expect("run studio-worker");
        assert!(out.status.success(), "{out:?}");
        text(&out)
    };
    let (out, _) = status("24,8");
    assert!(
        out.contains("gpu 0:         fake GPU (24.0 GB, 24.0 GB free)"),
        "{out}"
    );
    assert!(
        out.contains("gpu 1:         fake GPU (8.0 GB, 8.0 GB free)"),
        "{out}"
    );
    assert!(
        out.contains("the threshold (30 GB) is above the largest GPU (24.0 GB)"),
        "{out}"
    );
    // A value that does not parse is named, and the real probe runs.
    let (out, err) = status("24,lots");
    assert!(
        err.contains("STUDIO_WORKER_FAKE_GPUS") && err.contains("`lots`"),
        "{err}"
    );
    assert!(!out.contains("fake GPU"), "{out}");
}

#[test]
fn enable_disable_and_set_threshold_write_the_config() {
    let home = WorkerHome::new("http://127.0.0.1:9/", None, "");
    assert!(home.cli(&["disable"]).status.success());
    assert!(std::fs::read_to_string(home.config())
        .unwrap()
        .contains("auto_enabled = false"));
    assert!(home.cli(&["enable"]).status.success());
    assert!(std::fs::read_to_string(home.config())
        .unwrap()
        .contains("auto_enabled = true"));
    assert!(home.cli(&["set-threshold", "7.5"]).status.success());
    let (out, _) = text(&home.cli(&["status"]));
    assert!(out.contains("7.5 GB"), "{out}");
    for bad in ["-1", "abc", "NaN", "inf"] {
        let out = home.cli(&["set-threshold", "--", bad]);
        assert!(!out.status.success(), "{bad} accepted");
        let (_, err) = text(&out);
        assert!(
            err.contains("studio-worker: error:") && err.contains(bad),
            "{err}"
        );
    }
    let (out, _) = text(&home.cli(&["status"]));
    assert!(
        out.contains("7.5 GB"),
        "refused values left the config alone: {out}"
    );
}

#[test]
fn a_corrupt_config_is_a_one_line_error_naming_the_file() {
    let home = WorkerHome::new("http://127.0.0.1:9/", None, "");
    std::fs::write(home.config(), "api_base_url = \"unterminated\nvram = [\n").unwrap();
    for cmd in [&["status"][..], &["config"], &["run"], &["disable"]] {
        let out = home.cli(cmd);
        assert_eq!(out.status.code(), Some(1), "{cmd:?}");
        let (_, err) = text(&out);
        let lines: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(
            lines[0].contains(&home.config().display().to_string()),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn the_job_command_runs_every_kind_locally() {
    let home = WorkerHome::new("http://127.0.0.1:9/", None, "");
    let dir = home.dir.path();
    let png = dir.join("fox.png");
    let out = home.cli(&[
        "job",
        "image",
        "--prompt",
        "a fox",
        "--width",
        "96",
        "--height",
        "64",
        "--ext",
        "png",
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out).1);
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), (96, 64));

    let out = home.cli(&["job", "llm", "--prompt", "The capital of France is"]);
    assert!(out.status.success());
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("llm result on stdout is JSON");
    assert_eq!(v["object"], "chat.completion");

    let wav = dir.join("hi.wav");
    assert!(home
        .cli(&[
            "job",
            "tts",
            "--text",
            "hello there",
            "--out",
            wav.to_str().unwrap()
        ])
        .status
        .success());
    let out = home.cli(&["job", "stt", "--input", wav.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out).1);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["duration"].as_f64().unwrap() > 0.5);

    let gif = dir.join("v.gif");
    assert!(home
        .cli(&[
            "job",
            "video",
            "--prompt",
            "x",
            "--width",
            "16",
            "--height",
            "16",
            "--seconds",
            "1",
            "--fps",
            "3",
            "--ext",
            "gif",
            "--out",
            gif.to_str().unwrap()
        ])
        .status
        .success());
    assert!(std::fs::metadata(&gif).unwrap().len() > 0);

    // --repeat runs the job on one runner N times and times each run.
    let timings = dir.join("timings.json");
    let out = home.cli(&[
        "job",
        "image",
        "--prompt",
        "a fox",
        "--width",
        "32",
        "--height",
        "24",
        "--ext",
        "png",
        "--out",
        png.to_str().unwrap(),
        "--repeat",
        "3",
        "--timings",
        timings.to_str().unwrap(),
    ]);
    let stderr = text(&out).1;
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("run 3/3:"), "{stderr}");
    assert!(stderr.contains("3 runs on one runner"), "{stderr}");
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&timings).unwrap()).unwrap();
    let runs: Vec<u64> = rows.iter().map(|r| r["run"].as_u64().unwrap()).collect();
    assert_eq!(runs, [1, 2, 3]);
    assert!(
        rows.iter().all(|r| r["ms"].as_f64().unwrap() > 0.0),
        "{rows:?}"
    );
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), (32, 24));
    let out = home.cli(&["job", "image", "--prompt", "x", "--repeat", "0"]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("--repeat"), "{}", text(&out).1);

    // Bad input is a clear error, not a panic.
    let out = home.cli(&["job", "image", "--prompt", "x", "--width", "0"]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("task.width"));
    let out = home.cli(&["job", "llm", "--messages", "not json"]);
    assert!(text(&out).1.contains("--messages"));
    let out = home.cli(&["job", "image", "--prompt", "x", "--engine", "sd-cpp"]);
    assert!(text(&out).1.contains("sd-cpp"), "{}", text(&out).1);
}
