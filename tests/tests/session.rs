//! The studio session, end to end against the real `studio-worker`:
//! registration, auth failures, reconnects, robustness to bad frames and
//! offers, busy/paused, upload retries and log shipping.

use std::time::Duration;

use serde_json::{json, Value};
use studio_worker_tests::bounds;
use studio_worker_tests::claims::{claim, claim_with, image, llm, synthetic_source};
use studio_worker_tests::proc::{Gate, WorkerHome};
use studio_worker_tests::start_worker;
use studio_worker_tests::studio::{Event, FakeStudio, BOOTSTRAP, TOKEN, WORKER_ID};

const FAULTS: &[(&str, &str)] = &[("STUDIO_WORKER_FAULT_INJECTION", "1")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_writes_the_identity_0600_and_is_idempotent() {
    let studio = FakeStudio::start().await;
    let home = WorkerHome::new("https://unused.invalid/", None, "");
    let url = studio.url();
    let out = home.cli(&[
        "register",
        "--bootstrap-token",
        BOOTSTRAP,
        "--api-base-url",
        &url,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(home.config_mode(), 0o600);
    let text = std::fs::read_to_string(home.config()).unwrap();
    assert!(text.contains(WORKER_ID) && text.contains(TOKEN) && text.contains(&url));
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !printed.contains(TOKEN) && !printed.contains(BOOTSTRAP),
        "secrets printed: {printed}"
    );
    let first = studio
        .wait_for(bounds::event(), "register", |e| match e {
            Event::Register(b) => Some(b.clone()),
            _ => None,
        })
        .await;
    assert!(
        first.get("workerId").is_none(),
        "first registration has no id"
    );
    assert_eq!(first["capabilities"]["engine"], "multi");

    // Again: the known id is sent, the identity is unchanged.
    let out = home.cli(&[
        "register",
        "--bootstrap-token",
        BOOTSTRAP,
        "--api-base-url",
        &url,
    ]);
    assert!(out.status.success());
    let regs: Vec<Value> = studio
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Register(b) => Some(b),
            _ => None,
        })
        .collect();
    assert_eq!(regs.len(), 2);
    assert_eq!(regs[1]["workerId"], WORKER_ID);

    // A wrong bootstrap token fails with a one-line reason and keeps the identity.
    let out = home.cli(&[
        "register",
        "--bootstrap-token",
        "nope",
        "--api-base-url",
        &url,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bootstrap token was not accepted"), "{err}");
    assert!(std::fs::read_to_string(home.config())
        .unwrap()
        .contains(TOKEN));

    // The registered worker then connects and works.
    let mut worker = home.spawn_run(&[]);
    studio.wait_session(1).await;
    studio.offer(claim("after-register", llm("hi")));
    studio.wait_frame("completeJson", "after-register").await;
    worker.signal(libc::SIGTERM);
    assert!(worker.wait_exit().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_ends_the_process_non_zero() {
    let studio = FakeStudio::start().await;
    // 401 on the upgrade.
    let home = WorkerHome::new(&studio.url(), Some((WORKER_ID, "tok-wrong")), "");
    let mut w = home.spawn_run(&[]);
    let status = w.wait_exit().await;
    assert!(!status.success());
    assert!(w.log().contains("ws auth failed"), "{}", w.log());
    assert!(!w.log().contains("tok-wrong"), "token leaked to the log");

    // Close 4001 after welcome.
    let (_home, mut w) = start_worker(&studio, "", &[]).await;
    studio.close(4001, "token revoked");
    assert!(!w.wait_exit().await.success());
    assert!(w.log().contains("4001"), "{}", w.log());

    // An auth_failed error frame.
    let (_home, mut w) = start_worker(&studio, "", &[]).await;
    studio.send_text(
        json!({"type": "error", "code": "auth_failed", "message": "revoked"}).to_string(),
    );
    assert!(!w.wait_exit().await.success());
    // The worker closed with 1000 itself.
    studio
        .wait_for(bounds::event(), "close 1000", |e| {
            matches!(e, Event::Closed(Some(1000))).then_some(())
        })
        .await;

    // worker_deleted is terminal too.
    let (_home, mut w) = start_worker(&studio, "", &[]).await;
    studio.send_text(
        json!({"type": "error", "code": "worker_deleted", "message": "gone"}).to_string(),
    );
    assert!(!w.wait_exit().await.success());
    assert!(w.log().contains("worker_deleted"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_close_or_an_outage_is_followed_by_a_reconnect() {
    let studio = FakeStudio::start().await;
    let (_home, worker) = start_worker(&studio, "", &[]).await;
    let pid = worker.pid();
    studio.offer(claim("before", image(16, 16, "png")));
    studio.wait_upload("before").await;

    studio.close(1000, "deploy");
    studio.wait_session(2).await;
    studio.offer(claim("after-close", image(16, 16, "png")));
    studio.wait_upload("after-close").await;

    // A transient studio error also reconnects.
    studio.send_text(
        json!({"type": "error", "code": "internal_error", "message": "oops"}).to_string(),
    );
    studio.wait_session(3).await;

    // Outage: the studio vanishes; the worker keeps trying (two attempts
    // seen: it backs off and tries again); then the studio comes back on
    // the same port.
    let outage = studio.crash().await;
    outage.wait_attempts(2).await;
    let studio = outage.end().await;
    studio.wait_session(1).await;
    studio.offer(claim("after-outage", llm("still there?")));
    studio.wait_frame("completeJson", "after-outage").await;
    assert_eq!(worker.pid(), pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_and_offers_keep_the_session() {
    let studio = FakeStudio::start().await;
    let (_home, _worker) = start_worker(&studio, "", &[]).await;
    studio.send_text("this is not json");
    studio.send_text(json!({"type": "cancel", "jobId": "x"}).to_string());
    studio.send_binary(vec![1, 2, 3]);
    studio.send_text(json!({"type": "offer", "claim": {"gameId": "no job id"}}).to_string());

    let src = synthetic_source();
    let base = |id: &str| json!({"jobId": id, "gameId": "g", "assetName": "g/a", "model": "m", "vramGbEstimate": 1.0});
    let mut no_task = base("bad-no-task");
    no_task["modelSource"] = src.clone();
    let mut bad_kind = claim("bad-kind", json!({"kind": "sculpture", "prompt": "p"}));
    bad_kind["model"] = json!("m");
    let neg = claim(
        "bad-neg",
        json!({"kind": "image", "prompt": "p", "width": -64}),
    );
    let zero = claim(
        "bad-zero",
        json!({"kind": "image", "prompt": "p", "height": 0}),
    );
    let mut role = claim("bad-role", image(8, 8, "png"));
    role["modelSource"]["files"] =
        json!([{"role": "weights", "url": "https://x.invalid/f", "filename": "f"}]);
    let mut wrong_type = claim("bad-type", image(8, 8, "png"));
    wrong_type["vramGbEstimate"] = json!("lots");
    for (offer, field) in [
        (no_task, "task"),
        (bad_kind, "task.kind"),
        (neg, "task.width"),
        (zero, "task.height"),
        (role, "role"),
        (wrong_type, "vramGbEstimate"),
    ] {
        let id = offer["jobId"].as_str().unwrap().to_string();
        studio.offer(offer);
        studio.wait_frame("accept", &id).await;
        let fail = studio.wait_frame("fail", &id).await;
        assert_eq!(fail["retryable"], false, "{fail}");
        assert!(
            fail["error"].as_str().unwrap().contains(field),
            "{field}: {fail}"
        );
    }

    // An engine this worker lacks: accepted, failed retryable, naming it.
    for engine in ["comfyui", "gradio", "onnx", "parakeet"] {
        let mut c = claim(&format!("eng-{engine}"), llm("hi"));
        c["modelSource"]["engine"] = json!(engine);
        studio.offer(c);
        let fail = studio.wait_frame("fail", &format!("eng-{engine}")).await;
        assert_eq!(fail["retryable"], true, "{fail}");
        assert!(fail["error"].as_str().unwrap().contains(engine), "{fail}");
    }
    let fail = studio
        .frames("fail")
        .into_iter()
        .find(|f| f["jobId"] == "eng-comfyui")
        .unwrap();
    // Names what this host has (synthetic always; sd-cpp when built).
    let msg = fail["error"].as_str().unwrap();
    assert!(
        msg.contains("(available: ") && msg.contains("synthetic"),
        "{fail}"
    );

    // Still the same session, and it still works.
    studio.offer(claim("good", image(8, 8, "png")));
    studio.wait_upload("good").await;
    assert_eq!(studio.sessions(), 1);
    assert!(studio.frames("reject").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_offer_during_a_job_is_rejected_busy() {
    let studio = FakeStudio::start().await;
    let (_home, _worker) = start_worker(&studio, "", FAULTS).await;
    let gate = Gate::new();
    studio.offer(claim_with("slow", &gate.model(), image(16, 16, "png")));
    gate.started().await;
    studio.offer(claim("second", image(16, 16, "png")));
    let reject = studio.wait_frame("reject", "second").await;
    assert_eq!(reject["code"], "busy");
    // Heartbeats name the running job.
    let hb = studio
        .wait_for(
            bounds::event(),
            "heartbeat with currentJobId",
            |e| match e {
                Event::Frame(v) if v["type"] == "heartbeat" && v["currentJobId"] == "slow" => {
                    Some(v.clone())
                }
                _ => None,
            },
        )
        .await;
    assert_eq!(hb["capabilities"]["autoEnabled"], true);
    gate.open();
    studio.wait_upload("slow").await;
    studio.offer(claim("third", image(16, 16, "png")));
    studio.wait_upload("third").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_worker_rejects_paused_until_enabled() {
    let studio = FakeStudio::start().await;
    let (home, _worker) = start_worker(&studio, "auto_enabled = false\n", &[]).await;
    let hello = studio.wait_frame("hello", "").await;
    assert_eq!(hello["capabilities"]["autoEnabled"], false);
    studio.offer(claim("p1", image(8, 8, "png")));
    let r = studio.wait_frame("reject", "p1").await;
    assert_eq!(r["code"], "paused");
    assert_eq!(r["reason"], "worker paused by operator");

    // `enable` on the running worker takes effect at the next heartbeat.
    let mark = studio.mark();
    assert!(home.cli(&["enable"]).status.success());
    studio.wait_heartbeat(mark, true).await;
    studio.offer(claim("p2", image(8, 8, "png")));
    studio.wait_upload("p2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_retry_on_5xx_and_keep_the_result_when_refused() {
    let studio = FakeStudio::start().await;
    let (home, _worker) = start_worker(&studio, "", &[]).await;
    studio.fail_uploads_with(&[503, 502]);
    studio.offer(claim("retry", image(16, 16, "png")));
    let up = studio.wait_upload("retry").await;
    assert_eq!(up.ext, "png");
    assert!(studio.frames("fail").is_empty());

    // 409 (claim released): no retry, fail retryable, bytes kept on disk.
    studio.fail_uploads_with(&[409]);
    studio.offer(claim("refused", image(16, 16, "png")));
    let fail = studio.wait_frame("fail", "refused").await;
    assert_eq!(fail["retryable"], true);
    let msg = fail["error"].as_str().unwrap();
    assert!(
        msg.contains("409") && msg.contains("result kept at"),
        "{msg}"
    );
    let kept = home.dir.path().join("results/refused.png");
    let img = image::open(&kept).expect("kept result decodes");
    assert_eq!(img.width(), 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_shipped_in_batches_with_job_ids() {
    let studio = FakeStudio::start().await;
    let (_home, _worker) = start_worker(&studio, "", &[]).await;
    studio.offer(claim("logged", llm("hi")));
    studio.wait_frame("completeJson", "logged").await;
    let entry = studio
        .wait_for(bounds::event(), "a log line about the job", |e| match e {
            Event::Frame(v) if v["type"] == "logBatch" => v["entries"]
                .as_array()
                .and_then(|es| es.iter().find(|x| x["jobId"] == "logged").cloned()),
            _ => None,
        })
        .await;
    assert!(entry["ts"].as_str().unwrap().ends_with('Z'));
    assert!(["info", "warn", "error"].contains(&entry["level"].as_str().unwrap()));
    for batch in studio.frames("logBatch") {
        assert!(
            !batch["entries"].as_array().unwrap().is_empty(),
            "no empty batches"
        );
        assert!(!batch.to_string().contains(TOKEN), "token in a log line");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_a_line_with_the_job_id_and_no_secret() {
    let studio = FakeStudio::start().await;
    let (_home, worker) = start_worker(&studio, "", &[("STUDIO_WORKER_LOG_FORMAT", "json")]).await;
    studio.offer(claim("json-logged", llm("hi")));
    studio.wait_frame("completeJson", "json-logged").await;
    let job_line = |log: &str| {
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["jobId"] == "json-logged")
    };
    let line = bounds::until("a JSON log line with the job id", bounds::event(), || {
        job_line(&worker.log())
    })
    .await;
    assert!(line["time"].as_str().unwrap().ends_with('Z'), "{line}");
    assert!(
        ["info", "warn", "error"].contains(&line["level"].as_str().unwrap()),
        "{line}"
    );
    assert!(
        line["target"].is_string() && line["message"].is_string(),
        "{line}"
    );
    let log = worker.log();
    for l in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["time"].is_string(), "{l}");
    }
    assert!(!log.contains(TOKEN), "token in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_stdout_junk_and_a_crash_do_not_disturb_the_session() {
    let studio = FakeStudio::start().await;
    let (_home, worker) = start_worker(&studio, "", FAULTS).await;
    // Native junk on fd 1 goes to the log, not the channel.
    studio.offer(claim_with("junk", "fault:stdout", image(16, 16, "png")));
    let up = studio.wait_upload("junk").await;
    assert!(image::load_from_memory(&up.bytes).is_ok());
    // A segfaulting engine fails its job with the signal, and the next job
    // runs on a fresh runner.
    studio.offer(claim_with("segv", "fault:segv", image(16, 16, "png")));
    let fail = studio.wait_frame("fail", "segv").await;
    assert!(
        fail["error"].as_str().unwrap().contains("SIGSEGV"),
        "{fail}"
    );
    assert_eq!(fail["retryable"], true);
    studio.offer(claim("next", image(16, 16, "png")));
    studio.wait_upload("next").await;
    assert!(
        worker.log().contains("epoch 2"),
        "runner restarted: {}",
        worker.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_the_session_and_exits_zero() {
    let studio = FakeStudio::start().await;
    let (_home, mut worker) = start_worker(&studio, "", FAULTS).await;
    let gate = Gate::new();
    studio.offer(claim_with("draining", &gate.model(), image(16, 16, "png")));
    let runner = gate.started().await;
    let runners = studio_worker_tests::proc::children_of(worker.pid());
    assert_eq!(runners, [runner], "one runner child while the job runs");
    worker.signal(libc::SIGTERM);
    // An offer racing the signal may still be answered `busy`; once the
    // worker says it drains, every offer is answered `paused`.
    worker.wait_log("signal received: draining").await;
    // No new work while draining.
    studio.offer(claim("late", image(8, 8, "png")));
    let r = studio.wait_frame("reject", "late").await;
    assert_eq!(r["code"], "paused");
    // The job in flight is still delivered, then a clean close and exit 0.
    gate.open();
    studio.wait_upload("draining").await;
    let status = worker.wait_exit().await;
    assert!(status.success(), "{}", worker.log());
    studio
        .wait_for(bounds::event(), "close 1000", |e| {
            matches!(e, Event::Closed(Some(1000))).then_some(())
        })
        .await;
    let left = studio_worker_tests::proc::wait_gone(&runners).await;
    assert!(left.is_empty(), "runner outlived the supervisor: {left:?}");
}

/// Regression: the studio offers the next job the moment it has a result,
/// which can overtake the worker's own report of that result. Such offers
/// must be taken, never rejected `busy`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_to_back_offers_after_results_are_never_rejected_busy() {
    let studio = FakeStudio::start().await;
    let (_home, _worker) = start_worker(&studio, "", &[]).await;
    let n = 2000;
    let claims = (0..n)
        .map(|i| {
            if i % 2 == 0 {
                claim(&format!("bb-{i}"), image(16, 16, "png"))
            } else {
                claim(&format!("bb-{i}"), llm("hi"))
            }
        })
        .collect();
    studio.feed(claims);
    // No bound on the whole run (its speed is e2e-bench's figure); only on
    // a stall: no job finishing for a long while.
    let mut done = 0;
    let mut progress_at = tokio::time::Instant::now();
    while done < n {
        assert_eq!(
            studio.count_frames("reject"),
            0,
            "rejected: {:?}",
            studio.frames("reject")
        );
        let now_done = studio.feed_stats().0.len();
        if now_done > done {
            (done, progress_at) = (now_done, tokio::time::Instant::now());
        }
        assert!(
            progress_at.elapsed() < bounds::event(),
            "stalled after {done} of {n} jobs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(studio.frames("reject").is_empty());
    assert_eq!(studio.uploads().len(), n / 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_credentials_run_asks_for_approval_and_then_connects() {
    use studio_worker_tests::studio::Decision;
    let studio = FakeStudio::start().await;
    let home = WorkerHome::new(&studio.url(), None, "registration_poll_secs = 1\n");
    let mut worker = home.spawn_run(&[]);
    let body = studio
        .wait_for(bounds::event(), "register-request", |e| match e {
            Event::RegisterRequest(b) => Some(b.clone()),
            _ => None,
        })
        .await;
    assert_eq!(body["capabilities"]["autoEnabled"], true);
    assert!(body["userAgent"]
        .as_str()
        .unwrap()
        .starts_with("studio-worker/"));
    let install = body["installId"].as_str().unwrap();
    assert_eq!(install.len(), 36);
    assert_eq!(body["registrationSecretHash"].as_str().unwrap().len(), 64);
    studio
        .wait_for(bounds::event(), "a poll", |e| {
            matches!(e, Event::RegisterPoll(_, 200)).then_some(())
        })
        .await;
    let status = home.cli(&["status"]);
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(
        shown.contains("pending operator approval (request rr-1)"),
        "{shown}"
    );
    // The studio forgets the request: a 404 makes the worker ask anew with
    // the same install id.
    studio.forget_requests();
    let again = studio
        .wait_until(bounds::event(), "a second register-request", |events| {
            events
                .iter()
                .filter_map(|(_, e)| match e {
                    Event::RegisterRequest(b) => Some(b.clone()),
                    _ => None,
                })
                .nth(1)
        })
        .await;
    assert_eq!(again["installId"], install);
    assert_ne!(
        again["registrationSecretHash"],
        body["registrationSecretHash"]
    );
    studio
        .wait_for(bounds::event(), "a poll of the new request", |e| {
            matches!(e, Event::RegisterPoll(id, 200) if id == "rr-2").then_some(())
        })
        .await;
    studio.decide("rr-2", Decision::Approved);
    studio.wait_session(1).await;
    let cfg = std::fs::read_to_string(home.config()).unwrap();
    assert!(
        cfg.contains(WORKER_ID) && !cfg.contains("registration_request_id"),
        "{cfg}"
    );
    assert_eq!(home.config_mode(), 0o600);
    studio.offer(claim("approved-job", llm("hi")));
    studio.wait_frame("completeJson", "approved-job").await;
    worker.signal(libc::SIGTERM);
    assert!(worker.wait_exit().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_approval_ends_run_with_the_reason() {
    use studio_worker_tests::studio::Decision;
    let studio = FakeStudio::start().await;
    let home = WorkerHome::new(&studio.url(), None, "registration_poll_secs = 1\n");
    let mut worker = home.spawn_run(&[]);
    studio
        .wait_for(bounds::event(), "register-request", |e| {
            matches!(e, Event::RegisterRequest(_)).then_some(())
        })
        .await;
    studio.decide("rr-1", Decision::Rejected("unknown contributor".into()));
    let status = worker.wait_exit().await;
    assert!(!status.success());
    assert!(
        worker.log().contains("unknown contributor"),
        "{}",
        worker.log()
    );
    let cfg = std::fs::read_to_string(home.config()).unwrap();
    assert!(
        !cfg.contains("registration_secret"),
        "secret cleared: {cfg}"
    );
}
