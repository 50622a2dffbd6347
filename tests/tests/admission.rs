//! GPU-memory admission end to end: the real worker and runners, the fake
//! studio, and fake GPUs (`STUDIO_WORKER_FAKE_GPUS`) whose free memory
//! follows the worker's own ledger.

use serde_json::{json, Value};
use studio_worker_tests::claims::{claim_with, image};
use studio_worker_tests::proc::alive;
use studio_worker_tests::start_worker;
use studio_worker_tests::studio::FakeStudio;

/// A synthetic image job for `model` that says it needs `gb` of GPU memory.
fn job(id: &str, model: &str, gb: f64) -> Value {
    let mut c = claim_with(id, model, image(16, 16, "png"));
    c["vramGbEstimate"] = json!(gb);
    c
}

/// The resident runners in a status: model → (pid, loads).
fn residents(status: &Value) -> Vec<(String, u64, u64)> {
    let mut v: Vec<_> = status["runners"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (
                        r["model"].as_str().unwrap_or_default().to_string(),
                        r["pid"].as_u64().unwrap_or(0),
                        r["loads"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_above_the_threshold_is_rejected_naming_both() {
    let studio = FakeStudio::start().await;
    let (_home, _worker) = start_worker(
        &studio,
        "vram_threshold_gb = 12.0\n",
        &[("STUDIO_WORKER_FAKE_GPUS", "24")],
    )
    .await;
    studio.offer(job("big", "m-big", 13.0));
    let reject = studio.wait_frame("reject", "big").await;
    assert!(reject.get("code").is_none_or(Value::is_null), "{reject}");
    let reason = reject["reason"].as_str().unwrap();
    assert!(
        reason.contains("13 GB") && reason.contains("12 GB"),
        "{reason}"
    );
    // Within the threshold it runs.
    studio.offer(job("small", "m-small", 11.0));
    studio.wait_upload("small").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_needs_room_stops_the_least_recently_used_idle_runner() {
    let studio = FakeStudio::start().await;
    let (home, _worker) = start_worker(
        &studio,
        "vram_threshold_gb = 8.0\n",
        &[("STUDIO_WORKER_FAKE_GPUS", "8")],
    )
    .await;
    // 8 GB, 1 GB margin: two 3 GB models fit side by side, a third does not.
    studio.offer(job("a1", "m-a", 3.0));
    studio.wait_upload("a1").await;
    studio.offer(job("b1", "m-b", 3.0));
    studio.wait_upload("b1").await;
    // A second job on a resident model: no second load.
    studio.offer(job("b2", "m-b", 3.0));
    studio.wait_upload("b2").await;
    let status = home
        .wait_status("two models resident, 6 GB held", |s| {
            s["runners"].as_array().is_some_and(|r| r.len() == 2)
                && s["gpus"][0]["heldBytes"].as_u64() == Some(6 << 30)
                && s["counters"]["completed"].as_u64() == Some(3)
        })
        .await;
    let before = residents(&status);
    assert_eq!(
        before
            .iter()
            .map(|r| (r.0.as_str(), r.2))
            .collect::<Vec<_>>(),
        [("m-a", 1), ("m-b", 1)],
        "one load each: {status}"
    );
    let (pid_a, pid_b) = (before[0].1 as u32, before[1].1 as u32);
    // The runner is pinned to the GPU it was admitted on.
    let environ = std::fs::read(format!("/proc/{pid_a}/environ")).expect("runner environ");
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ.contains("CUDA_VISIBLE_DEVICES=0")
            && environ.contains("CUDA_DEVICE_ORDER=PCI_BUS_ID"),
        "runner pinned to GPU 0"
    );

    // A third model: m-a was used longest ago, so it makes the room.
    studio.offer(job("c1", "m-c", 3.0));
    studio.wait_upload("c1").await;
    assert!(studio.frames("reject").is_empty());
    let status = home
        .wait_status("m-a evicted, m-c resident", |s| {
            let r = residents(s);
            r.len() == 2 && r.iter().any(|r| r.0 == "m-c")
        })
        .await;
    let after = residents(&status);
    assert_eq!(
        after.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        ["m-b", "m-c"],
        "{status}"
    );
    assert_eq!(after[0].1 as u32, pid_b, "m-b kept its runner");
    studio_worker_tests::bounds::until(
        "the evicted runner's process to exit",
        studio_worker_tests::bounds::event(),
        || (!alive(pid_a)).then_some(()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_that_cannot_fit_now_is_rejected_busy_with_needed_and_free() {
    let studio = FakeStudio::start().await;
    // Another program holds 5 of the 8 GB: 2 GB left beyond the margin.
    let (_home, _worker) = start_worker(
        &studio,
        "vram_threshold_gb = 8.0\n",
        &[("STUDIO_WORKER_FAKE_GPUS", "8:5")],
    )
    .await;
    studio.offer(job("too-big", "m-x", 3.0));
    let reject = studio.wait_frame("reject", "too-big").await;
    assert_eq!(reject["code"], "busy", "{reject}");
    let reason = reject["reason"].as_str().unwrap();
    assert!(
        reason.contains("needs 3.0 GB") && reason.contains("2.0 GB is free"),
        "{reason}"
    );
    studio.offer(job("fits", "m-y", 1.5));
    studio.wait_upload("fits").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_model_loads_at_start_and_survives_eviction_and_keep_alive() {
    let studio = FakeStudio::start().await;
    let pinned = "vram_threshold_gb = 8.0\nmodel_keep_alive_secs = 300\n\n[[models]]\nname = \"pinned-m\"\nengine = \"synthetic\"\npin = true\nvram_gb = 3.0\n";
    let (home, _worker) = start_worker(&studio, pinned, &[("STUDIO_WORKER_FAKE_GPUS", "8")]).await;
    // Loaded before any offer.
    let status = home
        .wait_status("the pinned model resident", |s| {
            s["runners"].as_array().is_some_and(|r| {
                r.iter()
                    .any(|r| r["model"] == "pinned-m" && r["loads"] == 1)
            })
        })
        .await;
    let runner = &status["runners"][0];
    assert_eq!(runner["pinned"], true, "{status}");
    let pinned_pid = runner["pid"].as_u64().unwrap();
    assert!(studio.frames("accept").is_empty(), "no offer was needed");

    // 8 GB less the 1 GB margin less 3 GB pinned: one 3 GB model fits
    // beside it; the next one evicts that, never the pinned model.
    studio.offer(job("a1", "m-a", 3.0));
    studio.wait_upload("a1").await;
    studio.offer(job("c1", "m-c", 3.0));
    studio.wait_upload("c1").await;
    let status = home
        .wait_status("m-c beside the pinned model", |s| {
            let r = residents(s);
            r.len() == 2 && r.iter().any(|r| r.0 == "m-c")
        })
        .await;
    let r = residents(&status);
    assert_eq!(
        r.iter().map(|r| (r.0.as_str(), r.1)).collect::<Vec<_>>(),
        [("m-c", r[0].1), ("pinned-m", pinned_pid)],
        "{status}"
    );
    // More than could ever fit beside the pinned model: no code, said so.
    studio.offer(job("huge", "m-h", 5.0));
    let reject = studio.wait_frame("reject", "huge").await;
    assert!(reject.get("code").is_none_or(Value::is_null), "{reject}");
    let reason = reject["reason"].as_str().unwrap();
    assert!(
        reason.contains("pinned") && reason.contains("4.0 GB"),
        "{reason}"
    );

    // Keep-alive (changed live to 1 s) stops m-c, not the pinned model.
    let config = std::fs::read_to_string(home.config()).unwrap();
    std::fs::write(
        home.config(),
        config.replace("model_keep_alive_secs = 300", "model_keep_alive_secs = 1"),
    )
    .unwrap();
    let status = home
        .wait_status("only the pinned model left", |s| residents(s).len() == 1)
        .await;
    assert_eq!(residents(&status)[0].0, "pinned-m");
    assert_eq!(residents(&status)[0].1, pinned_pid, "the same runner");
    assert_eq!(residents(&status)[0].2, 1, "never reloaded");
}

/// `CUDA_VISIBLE_DEVICES` of process `pid`.
fn visible_devices(pid: u32) -> String {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    String::from_utf8_lossy(&environ)
        .split('\0')
        .find_map(|kv| kv.strip_prefix("CUDA_VISIBLE_DEVICES="))
        .unwrap_or_default()
        .to_string()
}

/// A worker on fake GPUs of 24 and 8 GB with one identity each (GPU 1's
/// threshold 6 GB), fault injection on, both sessions welcomed.
async fn two_gpus(
    extra: &str,
) -> (
    FakeStudio,
    studio_worker_tests::proc::WorkerHome,
    studio_worker_tests::proc::WorkerProc,
) {
    use studio_worker_tests::studio::{TOKEN, WORKER_ID};
    let studio = FakeStudio::start().await;
    studio.add_identity("w-gpu-1", "tok-gpu-1");
    let home = studio_worker_tests::proc::WorkerHome::new(
        &studio.url(),
        None,
        &format!(
            "gpus = \"all\"\n{extra}\
             [[worker]]\ngpu = 0\nworker_id = \"{WORKER_ID}\"\nauth_token = \"{TOKEN}\"\n\
             [[worker]]\ngpu = 1\nworker_id = \"w-gpu-1\"\nauth_token = \"tok-gpu-1\"\nvram_threshold_gb = 6.0\n"
        ),
    );
    let worker = home.spawn_run(&[
        ("STUDIO_WORKER_FAKE_GPUS", "24,8"),
        ("STUDIO_WORKER_FAULT_INJECTION", "1"),
    ]);
    studio.wait_session(1).await;
    studio.wait_session_of("w-gpu-1").await;
    (studio, home, worker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gpus_hold_two_sessions_and_a_crash_on_one_fails_only_its_job() {
    use studio_worker_tests::proc::Gate;
    use studio_worker_tests::studio::TOKEN;
    let (studio, _home, _worker) = two_gpus("").await;
    // Each session advertises its own GPU and threshold.
    let mut adverts: Vec<(String, f64, f64)> = studio
        .frames("hello")
        .iter()
        .map(|h| {
            let caps = &h["capabilities"];
            (
                h["authToken"].as_str().unwrap_or_default().to_string(),
                caps["vramTotalGb"].as_f64().unwrap_or(-1.0),
                caps["vramThresholdGb"].as_f64().unwrap_or(-1.0),
            )
        })
        .collect();
    adverts.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        adverts,
        [
            ("tok-gpu-1".to_string(), 8.0, 6.0),
            (TOKEN.to_string(), 24.0, 12.0)
        ]
    );

    // One job per session, both running at once, each on its own GPU.
    let (gate0, gate1) = (Gate::new(), Gate::new());
    studio.offer(claim_with("on-gpu0", &gate0.model(), image(16, 16, "png")));
    studio.offer_to(
        "w-gpu-1",
        claim_with("on-gpu1", &gate1.model(), image(16, 16, "png")),
    );
    let (pid0, pid1) = (gate0.started().await, gate1.started().await);
    assert_ne!(pid0, pid1);
    assert_eq!(
        (visible_devices(pid0), visible_devices(pid1)),
        ("0".to_string(), "1".to_string())
    );
    studio.wait_frame("accept", "on-gpu0").await;
    studio.wait_frame("accept", "on-gpu1").await;

    // SIGKILL of GPU 0's runner fails GPU 0's job only.
    // SAFETY: killing our own test's grandchild.
    unsafe {
        libc::kill(pid0 as i32, libc::SIGKILL);
    }
    let fail = studio.wait_frame("fail", "on-gpu0").await;
    assert!(
        fail["error"].as_str().unwrap().contains("SIGKILL"),
        "{fail}"
    );
    assert!(alive(pid1), "GPU 1's runner untouched");
    gate1.open();
    let upload = studio.wait_upload("on-gpu1").await;
    assert_eq!(upload.worker_id, "w-gpu-1");
    assert!(
        !studio
            .frames("fail")
            .iter()
            .any(|f| f["jobId"] == "on-gpu1"),
        "GPU 1's job did not fail"
    );
    // GPU 0 takes its next job.
    studio.offer(job("next-gpu0", "m-next", 1.0));
    studio.wait_upload("next-gpu0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_gpu_asks_for_approval_with_its_own_install_id_and_register_gpu_writes_its_table() {
    use studio_worker_tests::bounds;
    use studio_worker_tests::proc::WorkerHome;
    use studio_worker_tests::studio::{Decision, Event, BOOTSTRAP, WORKER_ID};
    let studio = FakeStudio::start().await;
    studio.add_identity("w-gpu-1", "tok-gpu-1");
    let home = WorkerHome::new(
        &studio.url(),
        None,
        "registration_poll_secs = 1\ngpus = [0, 1]\n",
    );
    let env = [("STUDIO_WORKER_FAKE_GPUS", "24,8")];
    let _worker = home.spawn_run(&env);
    // Two approval requests, one per GPU (rr-1, rr-2 in the order made),
    // each advertising its own GPU's memory.
    let bodies = studio
        .wait_until(bounds::event(), "two register-requests", |events| {
            let b: Vec<Value> = events
                .iter()
                .filter_map(|(_, e)| match e {
                    Event::RegisterRequest(b) => Some(b.clone()),
                    _ => None,
                })
                .collect();
            (b.len() >= 2).then_some(b)
        })
        .await;
    assert_ne!(bodies[0]["installId"], bodies[1]["installId"]);
    assert_eq!(bodies[0]["capabilities"]["vramTotalGb"], 24.0);
    assert_eq!(bodies[1]["capabilities"]["vramTotalGb"], 8.0);
    studio.decide("rr-1", Decision::Approved);
    studio.decide(
        "rr-2",
        Decision::ApprovedAs("w-gpu-1".into(), "tok-gpu-1".into()),
    );
    studio.wait_session(1).await;
    studio.wait_session_of("w-gpu-1").await;
    let cfg: toml::Value =
        toml::from_str(&std::fs::read_to_string(home.config()).unwrap()).unwrap();
    assert!(cfg.get("worker_id").is_none(), "top level untouched: {cfg}");
    let tables = cfg["worker"].as_array().unwrap();
    let ids: Vec<(i64, &str, &str)> = tables
        .iter()
        .map(|t| {
            (
                t["gpu"].as_integer().unwrap(),
                t["worker_id"].as_str().unwrap(),
                t["install_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ids,
        [
            (0, WORKER_ID, bodies[0]["installId"].as_str().unwrap()),
            (1, "w-gpu-1", bodies[1]["installId"].as_str().unwrap())
        ]
    );
    // `status` asks the running worker: each GPU's session and identity.
    let shown = home.cli_with(&["status"], &env);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("session 0 (gpu 0): connected since")
            && shown.contains(&format!("as {WORKER_ID}\n"))
            && shown.contains("session 1 (gpu 1): connected since")
            && shown.contains("as w-gpu-1\n"),
        "{shown}"
    );

    // `register --gpu 2` writes a third table and nothing else.
    let out = home.cli(&[
        "register",
        "--gpu",
        "2",
        "--bootstrap-token",
        BOOTSTRAP,
        "--api-base-url",
        &studio.url(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg: toml::Value =
        toml::from_str(&std::fs::read_to_string(home.config()).unwrap()).unwrap();
    assert!(cfg.get("worker_id").is_none(), "{cfg}");
    let third = &cfg["worker"].as_array().unwrap()[2];
    assert_eq!(third["gpu"].as_integer(), Some(2));
    assert_eq!(third["worker_id"].as_str(), Some(WORKER_ID));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_across_models_on_one_gpu_pause_only_that_gpus_session() {
    let (studio, home, _worker) = two_gpus(
        "max_consecutive_failures = 2\nfailure_cooldown_secs = 600\nrestart_backoff_max_ms = 50\n",
    )
    .await;
    for (id, model) in [("sick-1", "fault:exit"), ("sick-2", "fault:abort")] {
        studio.offer_to("w-gpu-1", job(id, model, 1.0));
        studio.wait_frame("fail", id).await;
    }
    // GPU 1 declines `paused`, naming the models; GPU 0 keeps working.
    studio.offer_to("w-gpu-1", job("gpu1-after", "m-ok", 1.0));
    let reject = studio.wait_frame("reject", "gpu1-after").await;
    assert_eq!(reject["code"], "paused", "{reject}");
    let reason = reject["reason"].as_str().unwrap();
    assert!(
        reason.contains("fault:exit (synthetic), fault:abort (synthetic)"),
        "{reason}"
    );
    studio.offer(job("gpu0-after", "m-ok", 1.0));
    studio.wait_upload("gpu0-after").await;
    // The status says so per session.
    let status = home
        .wait_status("GPU 1's session paused", |s| {
            s["sessions"][1]["failurePause"].is_object()
        })
        .await;
    assert!(
        status["sessions"][0].get("failurePause").is_none(),
        "{status}"
    );
    assert_eq!(status["sessions"][1]["gpu"], 1);
}
