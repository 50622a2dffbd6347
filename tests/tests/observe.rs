//! The running worker's endpoint, end to end: `/metrics` read with the
//! Prometheus client's own parser moves by exactly what happened; `/status`
//! shows a running job; `/healthz` follows a studio outage; `pause`,
//! `resume` and `drain` change what the fake studio sees; the control
//! token is required; workers side by side answer their own CLI; a bad or
//! taken `metrics_listen` fails start naming the key.

use std::future::Future;
use std::time::Duration;

use serde_json::Value;
use studio_worker_tests::bounds;
use studio_worker_tests::claims::{claim, claim_with, image, llm};
use studio_worker_tests::proc::{Gate, WorkerHome};
use studio_worker_tests::prom::{Endpoint, Scrape};
use studio_worker_tests::start_worker;
use studio_worker_tests::studio::{FakeStudio, TOKEN, WORKER_ID};

const FAULTS: &[(&str, &str)] = &[("STUDIO_WORKER_FAULT_INJECTION", "1")];
const FAST: &str = "restart_backoff_max_ms = 50\nmax_consecutive_failures = 0\n";

/// Polls `check` (a fact read over HTTP) until it holds.
async fn until_async<T, F: Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let end = tokio::time::Instant::now() + bounds::event();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A scrape once the worker has taken the studio's welcome (the fake
/// studio counts a session a moment before the worker records it).
async fn connected_scrape(ep: &Endpoint) -> Scrape {
    until_async("the session to be up in /metrics", || async {
        let s = ep.scrape().await;
        (s.sum("studio_worker_session_up", &[]) == 1.0).then_some(s)
    })
    .await
}

const JOBS: &str = "studio_worker_jobs_total";
const PHASES: &str = "studio_worker_job_phase_duration_seconds_count";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_by_exactly_what_happened() {
    let studio = FakeStudio::start().await;
    let (home, _worker) = start_worker(&studio, FAST, FAULTS).await;
    let ep = Endpoint::of(&home).await;
    let before = connected_scrape(&ep).await;
    assert_eq!(before.types["studio_worker_jobs"], "counter");
    assert_eq!(
        before.types["studio_worker_job_phase_duration_seconds"],
        "histogram"
    );
    assert_eq!(before.types["studio_worker_session_up"], "gauge");
    assert_eq!(
        before.sum("studio_worker_session_up", &[("slot", "0")]),
        1.0
    );
    assert_eq!(before.sum("studio_worker_build_info", &[]), 1.0);

    for id in ["img-1", "img-2"] {
        studio.offer(claim(id, image(16, 16, "png")));
        studio.wait_upload(id).await;
    }
    studio.offer(claim("llm-1", llm("hi")));
    studio.wait_frame("completeJson", "llm-1").await;
    studio.offer(claim_with("crash", "fault:segv", image(16, 16, "png")));
    studio.wait_frame("fail", "crash").await;

    // A slow job: /status shows it running, an offer meanwhile is busy.
    let gate = Gate::new();
    studio.offer(claim_with("slow", &gate.model(), image(16, 16, "png")));
    let runner = gate.started().await;
    let job = until_async("/status to show the slow job running", || async {
        let s = ep.status().await;
        let j = s["jobs"].as_array()?.first()?.clone();
        (j["phase"] == "running").then_some(j)
    })
    .await;
    assert_eq!(job["jobId"], "slow");
    assert_eq!(job["runnerPid"], runner);
    let mid = ep.scrape().await;
    assert_eq!(mid.sum("studio_worker_jobs_in_progress", &[]), 1.0);
    studio.offer(claim("busy-1", image(8, 8, "png")));
    assert_eq!(studio.wait_frame("reject", "busy-1").await["code"], "busy");
    gate.open();
    studio.wait_upload("slow").await;

    let after = until_async("the slow job to leave the table", || async {
        let s = ep.scrape().await;
        (s.sum("studio_worker_jobs_in_progress", &[]) == 0.0).then_some(s)
    })
    .await;
    let d = |labels: &[(&str, &str)]| after.delta(&before, JOBS, labels);
    let studio_image = [
        ("kind", "image"),
        ("engine", "synthetic"),
        ("origin", "studio"),
    ];
    assert_eq!(
        d(&[studio_image.as_slice(), &[("outcome", "completed")]].concat()),
        3.0
    );
    assert_eq!(d(&[("kind", "llm"), ("outcome", "completed")]), 1.0);
    assert_eq!(d(&[("outcome", "failed"), ("reason", "crashed")]), 1.0);
    assert_eq!(d(&[("outcome", "failed")]), 1.0, "nothing else failed");
    assert_eq!(d(&[("outcome", "rejected"), ("reason", "busy")]), 1.0);
    assert_eq!(d(&[]), 6.0, "every offer counted once");
    assert_eq!(
        after.delta(
            &before,
            "studio_worker_runner_restarts_total",
            &[("reason", "crashed")]
        ),
        1.0
    );
    // Every image job that ended passed the queue; the three delivered
    // ones were uploaded.
    let phase = |p: &str| after.delta(&before, PHASES, &[("kind", "image"), ("phase", p)]);
    assert_eq!(phase("queue"), 4.0);
    assert_eq!(phase("upload"), 3.0);
    assert_eq!(
        after.delta(&before, PHASES, &[("kind", "llm"), ("phase", "queue")]),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_series_and_a_retried_upload_are_exported() {
    let studio = FakeStudio::start().await;
    let (home, _worker) = start_worker(
        &studio,
        "vram_threshold_gb = 12.0\n",
        &[("STUDIO_WORKER_FAKE_GPUS", "24")],
    )
    .await;
    let ep = Endpoint::of(&home).await;
    let before = connected_scrape(&ep).await;
    let status = ep.status().await;
    let total = status["gpus"][0]["totalBytes"].as_f64().unwrap();
    assert!(total > 0.0);
    let gpu0 = [("gpu", "0")];
    assert_eq!(
        before.sum("studio_worker_gpu_memory_total_bytes", &gpu0),
        total
    );
    assert_eq!(before.sum("studio_worker_gpu_threshold_bytes", &gpu0), 12e9);
    assert_eq!(
        before.sum("studio_worker_session_up", &[("slot", "0"), ("gpu", "0")]),
        1.0
    );
    // One upload answered 503 first: one retry, then delivered.
    studio.fail_uploads_with(&[503]);
    studio.offer(claim("retried", image(16, 16, "png")));
    studio.wait_upload("retried").await;
    let after = until_async("the retried job to end", || async {
        let s = ep.scrape().await;
        (s.delta(&before, JOBS, &[("outcome", "completed")]) == 1.0).then_some(s)
    })
    .await;
    assert_eq!(
        after.delta(&before, "studio_worker_uploads_retried_total", &[]),
        1.0
    );
    assert_eq!(
        after.delta(&before, JOBS, &[("gpu", "0"), ("kind", "image")]),
        1.0
    );
    assert_eq!(
        after.delta(&before, PHASES, &[("gpu", "0"), ("phase", "upload")]),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_turns_503_in_an_outage_and_200_after_the_reconnect() {
    let studio = FakeStudio::start().await;
    let (home, _worker) = start_worker(&studio, "", &[]).await;
    let ep = Endpoint::of(&home).await;
    let body = until_async("/healthz to say ok once the welcome is taken", || async {
        let (code, body) = ep.get("/healthz").await;
        (code == 200).then_some(body)
    })
    .await;
    assert_eq!(body.trim(), "ok");
    let outage = studio.crash().await;
    let body = until_async("/healthz to turn 503", || async {
        let (code, body) = ep.get("/healthz").await;
        (code == 503).then_some(body)
    })
    .await;
    assert!(body.starts_with("session 0 "), "{body}");
    outage.wait_attempts(1).await;
    let studio = outage.end().await;
    studio.wait_session(1).await;
    until_async("/healthz to turn 200 again", || async {
        (ep.get("/healthz").await.0 == 200).then_some(())
    })
    .await;
    let s = ep.scrape().await;
    assert_eq!(
        s.sum("studio_worker_session_connects_total", &[("slot", "0")]),
        2.0
    );
    assert_eq!(s.sum("studio_worker_session_up", &[("slot", "0")]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_503_while_the_worker_waits_for_operator_approval() {
    let studio = FakeStudio::start().await;
    let home = WorkerHome::new(&studio.url(), None, "registration_poll_secs = 1\n");
    let _worker = home.spawn_run(&[]);
    studio
        .wait_for(bounds::event(), "an approval request", |e| match e {
            studio_worker_tests::studio::Event::RegisterRequest(_) => Some(()),
            _ => None,
        })
        .await;
    let ep = Endpoint::of(&home).await;
    let (code, body) = ep.get("/healthz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("operator approval"), "{body}");
    // /metrics answers already: the build, no jobs.
    let s = ep.scrape().await;
    assert_eq!(s.sum("studio_worker_build_info", &[]), 1.0);
    assert_eq!(s.sum(JOBS, &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_worker_registers_through_the_endpoint_or_asks_for_approval() {
    use studio_worker_tests::studio::{Event, BOOTSTRAP};
    let studio = FakeStudio::start().await;
    // A stored token the studio refuses: `run` keeps trying it and says so.
    let home = WorkerHome::new(
        &studio.url(),
        None,
        "bootstrap_token = \"stale-token\"\nregistration_poll_secs = 1\n",
    );
    let _worker = home.spawn_run(&[]);
    let ep = Endpoint::of(&home).await;
    for (method, path) in [
        (reqwest::Method::GET, "/registration"),
        (reqwest::Method::POST, "/control/register"),
        (reqwest::Method::POST, "/control/request-approval"),
    ] {
        assert_eq!(ep.send(method, path, None).await.0, 401, "{path}");
    }
    let reg = until_async("the refused token in /registration", || async {
        let r = ep.get_json("/registration").await;
        r["trouble"]
            .as_str()
            .is_some_and(|t| t.contains("not accepted"))
            .then_some(r)
    })
    .await;
    assert_eq!(reg["waiting"], true, "{reg}");
    assert_eq!(reg["bootstrap_token_stored"], true, "{reg}");
    assert_eq!(reg["api_base_url"], studio.url().as_str(), "{reg}");
    assert_eq!(reg["identities"][0]["registered"], false, "{reg}");
    assert!(reg["identities"][0]["request_id"].is_null(), "{reg}");

    // Asking for approval drops the stored token and makes the request now.
    let (code, text) = ep
        .send_json(
            reqwest::Method::POST,
            "/control/request-approval",
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(code, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["identities"][0]["request_id"], "rr-1", "{answer}");
    let cfg = std::fs::read_to_string(home.config()).unwrap();
    assert!(!cfg.contains("stale-token"), "{cfg}");
    assert!(cfg.contains("registration_request_id = \"rr-1\""), "{cfg}");
    // Only one request, though `run` polls it meanwhile.
    studio
        .wait_for(bounds::event(), "a poll of rr-1", |e| {
            matches!(e, Event::RegisterPoll(id, 200) if id == "rr-1").then_some(())
        })
        .await;
    let requests = studio
        .events()
        .iter()
        .filter(|e| matches!(e, Event::RegisterRequest(_)))
        .count();
    assert_eq!(requests, 1);
    let reg = ep.get_json("/registration").await;
    assert_eq!(reg["identities"][0]["request_id"], "rr-1", "{reg}");
    assert_eq!(reg["bootstrap_token_stored"], false, "{reg}");

    // A wrong token is refused naming the field; nothing is stored.
    let (code, text) = ep
        .send_json(
            reqwest::Method::POST,
            "/control/register",
            &serde_json::json!({"bootstrap_token": "wrong"}),
        )
        .await;
    assert_eq!(code, 400, "{text}");
    let e: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(e["error"]["key"], "bootstrap_token", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not accepted"),
        "{e}"
    );
    // A bad studio URL is refused naming that key.
    let (code, text) = ep
        .send_json(
            reqwest::Method::POST,
            "/control/register",
            &serde_json::json!({"bootstrap_token": BOOTSTRAP, "api_base_url": "not a url"}),
        )
        .await;
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("\"api_base_url\""), "{text}");

    // The operator's token registers at once and `run` connects.
    let (code, text) = ep
        .send_json(
            reqwest::Method::POST,
            "/control/register",
            &serde_json::json!({"bootstrap_token": BOOTSTRAP}),
        )
        .await;
    assert_eq!(code, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["registered"][0]["worker_id"], WORKER_ID, "{answer}");
    studio.wait_session(1).await;
    let cfg = std::fs::read_to_string(home.config()).unwrap();
    assert!(cfg.contains(TOKEN) && !cfg.contains(BOOTSTRAP), "{cfg}");
    assert_eq!(home.config_mode(), 0o600);
    // Registered: the routes no longer apply.
    let (code, _) = until_async("the running worker", || async {
        let r = ep
            .send_json(
                reqwest::Method::POST,
                "/control/register",
                &serde_json::json!({"bootstrap_token": BOOTSTRAP}),
            )
            .await;
        (r.0 == 409).then_some(r)
    })
    .await;
    assert_eq!(code, 409);
    // The request the token made moot is gone from the config.
    let cfg = std::fs::read_to_string(home.config()).unwrap();
    assert!(!cfg.contains("registration_secret"), "{cfg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_drain_change_what_the_studio_sees() {
    let studio = FakeStudio::start().await;
    let (home, mut worker) = start_worker(&studio, "", FAULTS).await;
    let ep = Endpoint::of(&home).await;
    let config_before = std::fs::read_to_string(home.config()).unwrap();

    let mark = studio.mark();
    let out = home.cli(&["pause"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    studio.wait_heartbeat(mark, false).await;
    studio.offer(claim("while-paused", image(8, 8, "png")));
    assert_eq!(
        studio.wait_frame("reject", "while-paused").await["code"],
        "paused"
    );
    assert_eq!(
        std::fs::read_to_string(home.config()).unwrap(),
        config_before,
        "the config is not edited"
    );
    let (code, body) = ep.get("/healthz").await;
    assert_eq!(code, 200, "paused is healthy");
    assert!(body.contains("paused"), "{body}");
    let status = home.cli(&["status"]);
    let said = String::from_utf8_lossy(&status.stdout);
    assert!(said.contains("paused (resume to take offers)"), "{said}");

    let mark = studio.mark();
    assert!(home.cli(&["resume"]).status.success());
    studio.wait_heartbeat(mark, true).await;
    studio.offer(claim("after-resume", image(8, 8, "png")));
    studio.wait_upload("after-resume").await;

    // Drain: the running job finishes and is delivered, then exit 0.
    let gate = Gate::new();
    studio.offer(claim_with("last", &gate.model(), image(16, 16, "png")));
    gate.started().await;
    let out = home.cli(&["drain"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    studio.offer(claim("while-draining", image(8, 8, "png")));
    assert_eq!(
        studio.wait_frame("reject", "while-draining").await["code"],
        "paused"
    );
    gate.open();
    studio.wait_upload("last").await;
    let exit = worker.wait_exit().await;
    assert!(exit.success(), "{exit:?}\n{}", worker.log());
    assert!(
        studio_worker::control::read_run_file(&home.config()).is_none(),
        "the run file goes with the worker"
    );
    let said = String::from_utf8_lossy(&home.cli(&["status"]).stdout).into_owned();
    assert!(said.contains("not running"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_serves_the_log_tail_config_edits_and_the_update_check() {
    let studio = FakeStudio::start().await;
    studio.serve_file("releases.json", "[]");
    let (home, _worker) = start_worker(
        &studio,
        &format!(
            "auto_update_feed = \"{}\"\n",
            studio.file_url("releases.json")
        ),
        FAULTS,
    )
    .await;
    let ep = Endpoint::of(&home).await;
    for (method, path) in [
        (reqwest::Method::GET, "/logs"),
        (reqwest::Method::GET, "/config"),
        (reqwest::Method::PUT, "/config"),
        (reqwest::Method::POST, "/control/check-update"),
    ] {
        assert_eq!(
            ep.send(method, path, None).await.0,
            401,
            "{path} needs the token"
        );
    }

    // The job in flight shows its prompt; its log lines are in the tail.
    let gate = Gate::new();
    let mut task = image(16, 16, "png");
    task["prompt"] = "a lantern in the fog".into();
    studio.offer(claim_with("lit", &gate.model(), task));
    gate.started().await;
    let s = ep.status().await;
    assert_eq!(s["jobs"][0]["prompt"], "a lantern in the fog", "{s}");
    gate.open();
    studio.wait_upload("lit").await;
    let logs = until_async("the job's lines in the log tail", || async {
        let t = ep.get_json("/logs").await;
        t["entries"]
            .as_array()
            .filter(|e| e.iter().any(|e| e["jobId"] == "lit"))
            .map(|_| t.clone())
    })
    .await;
    let last = logs["last"].as_u64().unwrap();
    let seqs: Vec<u64> = logs["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]) && seqs.last() == Some(&last),
        "{seqs:?} then {last}"
    );
    let later = ep.get_json(&format!("/logs?after={last}")).await;
    assert!(
        later["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["seq"].as_u64() > Some(last)),
        "{later}"
    );

    // The config: secrets hidden; an edit is checked, written 0600 by the
    // worker and applied live; a bad value is refused naming the key.
    let c = ep.get_json("/config").await;
    assert_eq!(c["config"]["auth_token"], "***", "{c}");
    assert_eq!(c["path"], home.config().display().to_string());
    let mark = studio.mark();
    let (code, body) = ep
        .send_json(
            reqwest::Method::PUT,
            "/config",
            &serde_json::json!({"vram_threshold_gb": 3.5, "auth_token": "***"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let said: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        said["changed"],
        serde_json::json!(["vram_threshold_gb"]),
        "{said}"
    );
    assert_eq!(said["restart"], serde_json::json!([]), "{said}");
    let file = std::fs::read_to_string(home.config()).unwrap();
    assert!(file.contains("vram_threshold_gb = 3.5"), "{file}");
    assert!(
        file.contains(&format!("auth_token = \"{TOKEN}\"")),
        "the token kept: {file}"
    );
    assert_eq!(home.config_mode(), 0o600);
    studio
        .wait_for_since(
            mark,
            bounds::event(),
            "a heartbeat with the new threshold",
            |e| match e {
                studio_worker_tests::studio::Event::Frame(v)
                    if v["type"] == "heartbeat" && v["capabilities"]["vramThresholdGb"] == 3.5 =>
                {
                    Some(())
                }
                _ => None,
            },
        )
        .await;
    let (code, body) = ep
        .send_json(
            reqwest::Method::PUT,
            "/config",
            &serde_json::json!({"metrics_listen": "0.0.0.0:9464"}),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["key"],
        "metrics_listen",
        "{body}"
    );
    assert!(!std::fs::read_to_string(home.config())
        .unwrap()
        .contains("0.0.0.0"));
    let (code, body) = ep
        .send_json(
            reqwest::Method::PUT,
            "/config",
            &serde_json::json!({"local_api_queue": 3}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["restart"],
        serde_json::json!(["local_api_queue"])
    );

    // The worker's own update check, against the feed in its config.
    let token = ep.run.token.clone();
    let (code, body) = ep
        .send(reqwest::Method::POST, "/control/check-update", Some(&token))
        .await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("current:") && body.contains("no release in the feed"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_routes_refuse_a_missing_or_wrong_token() {
    let studio = FakeStudio::start().await;
    let (home, _worker) = start_worker(&studio, "", &[]).await;
    let ep = Endpoint::of(&home).await;
    use reqwest::Method;
    for route in ["/control/pause", "/control/resume", "/control/drain"] {
        assert_eq!(ep.send(Method::POST, route, None).await.0, 401, "{route}");
        assert_eq!(
            ep.send(Method::POST, route, Some("not-the-token")).await.0,
            401,
            "{route}"
        );
    }
    // Still taking offers: nothing above got through.
    studio.offer(claim("still-open", image(8, 8, "png")));
    studio.wait_upload("still-open").await;
    let token = ep.run.token.clone();
    assert_eq!(
        ep.send(Method::POST, "/control/pause", Some(&token))
            .await
            .0,
        200
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let run_file = studio_worker::control::run_file_path(&home.config());
        let mode = std::fs::metadata(run_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_address_needs_the_flag_and_then_the_token_everywhere() {
    let studio = FakeStudio::start().await;
    let home = WorkerHome::new(
        &studio.url(),
        Some((WORKER_ID, TOKEN)),
        "metrics_listen = \"0.0.0.0:0\"\n",
    );
    let mut worker = home.spawn_run(&[]);
    assert!(!worker.wait_exit().await.success());
    assert!(
        worker.log().contains("metrics_allow_remote = true"),
        "{}",
        worker.log()
    );

    let (home, _worker) = start_worker(
        &studio,
        "metrics_listen = \"0.0.0.0:0\"\nmetrics_allow_remote = true\nmetrics_token = \"prom-7c1e5a\"\n",
        &[],
    )
    .await;
    let ep = Endpoint::of(&home).await;
    let token = ep.run.token.clone();
    assert_eq!(token, "prom-7c1e5a", "a fixed token is used as given");
    let shown = String::from_utf8_lossy(&home.cli(&["config"]).stdout).into_owned();
    assert!(!shown.contains("prom-7c1e5a"), "{shown}");
    // Healthy once the worker has taken the studio's welcome.
    until_async("/healthz with the token to say ok", || async {
        (ep.send(reqwest::Method::GET, "/healthz", Some(&token))
            .await
            .0
            == 200)
            .then_some(())
    })
    .await;
    for route in ["/metrics", "/status", "/healthz"] {
        assert_eq!(ep.get(route).await.0, 401, "{route}");
        assert_eq!(
            ep.send(reqwest::Method::GET, route, Some(&token)).await.0,
            200,
            "{route}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_fails_start_naming_the_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let studio = FakeStudio::start().await;
    let home = WorkerHome::new(
        &studio.url(),
        Some((WORKER_ID, TOKEN)),
        &format!("metrics_listen = \"127.0.0.1:{port}\"\n"),
    );
    let mut worker = home.spawn_run(&[]);
    assert!(!worker.wait_exit().await.success());
    let log = worker.log();
    assert!(
        log.contains(&format!(
            "metrics_listen = \"127.0.0.1:{port}\": cannot listen there"
        )),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_side_by_side_each_answer_their_own_cli() {
    let (a, b) = (FakeStudio::start().await, FakeStudio::start().await);
    let (home_a, worker_a) = start_worker(&a, "", &[]).await;
    let (home_b, worker_b) = start_worker(&b, "", &[]).await;
    let (ep_a, ep_b) = (Endpoint::of(&home_a).await, Endpoint::of(&home_b).await);
    assert_ne!(ep_a.run.addr, ep_b.run.addr);
    for (home, pid) in [(&home_a, worker_a.pid()), (&home_b, worker_b.pid())] {
        let out = home.cli(&["status", "--json"]);
        assert!(out.status.success());
        let snap: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(snap["pid"], pid);
    }
    // Pausing one leaves the other taking offers.
    assert!(home_a.cli(&["pause"]).status.success());
    a.offer(claim("a-1", image(8, 8, "png")));
    assert_eq!(a.wait_frame("reject", "a-1").await["code"], "paused");
    b.offer(claim("b-1", image(8, 8, "png")));
    b.wait_upload("b-1").await;
}

#[test]
fn the_dashboard_queries_only_exported_metrics() {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            studio_worker_tests::release::root().join("docs/grafana-dashboard.json"),
        )
        .expect("docs/grafana-dashboard.json"),
    )
    .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    assert!(exprs.len() >= 5, "{exprs:?}");
    // Every family name the worker exports, from a rendered snapshot read
    // by the Prometheus parser.
    let exported = exported_families();
    for e in &exprs {
        let names: Vec<&str> = e
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .filter(|w| w.starts_with("studio_worker_"))
            .collect();
        assert!(!names.is_empty(), "{e}");
        for n in names {
            let family = ["_bucket", "_count", "_sum", "_total"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .unwrap_or(n);
            assert!(
                exported.contains(&family.to_string()),
                "{n} (in {e}) is not exported; exported: {exported:?}"
            );
        }
    }
}

/// The family names of a full exposition (a snapshot with a GPU, a
/// session, a runner and a finished job, so no family is empty).
fn exported_families() -> Vec<String> {
    use studio_worker::control::prom::{render, Extra};
    use studio_worker::scheduler::metrics::{JobEnd, Metrics};
    use studio_worker::scheduler::snapshot::{GpuStatus, RunnerStatus, SessionStatus, Snapshot};
    let mut m = Metrics::default();
    m.job(JobEnd {
        kind: "image",
        engine: "synthetic",
        origin: "studio",
        outcome: "completed",
        reason: "",
        gpu: Some(0),
    });
    m.observe("image", "run", Some(0), Duration::from_millis(5));
    m.loaded("synthetic");
    m.unloaded("synthetic");
    m.evicted("synthetic");
    m.runner_ended("crashed");
    m.session_opened(0);
    let s = Snapshot {
        sessions: vec![SessionStatus {
            slot: 0,
            gpu: Some(0),
            state: "connected".into(),
            heartbeat_age_ms: Some(5),
            ..Default::default()
        }],
        gpus: vec![GpuStatus {
            index: 0,
            ..Default::default()
        }],
        runners: vec![RunnerStatus {
            engine: "synthetic".into(),
            ..Default::default()
        }],
        metrics: m,
        ..Default::default()
    };
    Scrape::parse(&render(
        &s,
        &Extra {
            log_lines_dropped: 0,
        },
    ))
    .types
    .into_keys()
    .collect()
}
