//! Error reports (Sentry), end to end against a local endpoint that
//! records the envelopes: a runner's native crash with its signal and
//! stderr tail, errors as events with warnings as breadcrumbs, the error
//! that ends the process, a panic; secrets scrubbed; nothing sent without
//! `SENTRY_DSN`.

use serde_json::Value;
use studio_worker_tests::claims::{claim_with, image};
use studio_worker_tests::proc::WorkerHome;
use studio_worker_tests::sentry::{SentryRecorder, KEY};
use studio_worker_tests::start_worker;
use studio_worker_tests::studio::{FakeStudio, TOKEN};

const RELEASE: &str = concat!("studio-worker@", env!("CARGO_PKG_VERSION"));

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_crash_is_reported_with_its_signal_and_scrubbed_stderr_tail() {
    let sentry = SentryRecorder::start().await;
    let studio = FakeStudio::start().await;
    let dsn = sentry.dsn();
    let (_home, _worker) = start_worker(
        &studio,
        "max_consecutive_failures = 2\nrestart_backoff_max_ms = 50\n",
        &[
            ("STUDIO_WORKER_FAULT_INJECTION", "1"),
            ("SENTRY_DSN", &dsn),
            ("SENTRY_ENVIRONMENT", "ci-test"),
        ],
    )
    .await;
    for id in ["crash-1", "crash-2"] {
        studio.offer(claim_with(id, "fault:segv", image(16, 16, "png")));
        studio.wait_frame("fail", id).await;
    }
    let (env, crash) = sentry
        .wait_event("the crash report", |e| {
            text(&e["message"]).contains("crashed: SIGSEGV") && e["tags"]["job_id"] == "crash-1"
        })
        .await;
    assert_eq!(env.project, "42");
    assert!(
        env.auth.contains(&format!("sentry_key={KEY}")),
        "{}",
        env.auth
    );
    assert_eq!(crash["release"], RELEASE, "{crash}");
    assert_eq!(crash["environment"], "ci-test");
    assert_eq!(crash["tags"]["engine"], "synthetic");
    assert_eq!(crash["tags"]["signal"], "SIGSEGV");
    let tail = text(&crash["extra"]["stderr_tail"]);
    assert!(
        tail.contains("fault:segv while reading https://files.invalid/m.gguf?***"),
        "{tail}"
    );
    // The runner's own warning before it died came along as a breadcrumb.
    let crumbs = crash["breadcrumbs"]["values"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        crumbs
            .iter()
            .any(|b| b["level"] == "warning"
                && text(&b["message"]).contains("fault injection: segv")),
        "{crumbs:?}"
    );
    // The breaker's error record is an event of its own.
    let (_, tripped) = sentry
        .wait_event("the breaker's error event", |e| {
            text(&e["message"]).contains("took down its runner 2 times in a row")
        })
        .await;
    // Sentry leaves out the level when it is the default, `error`.
    assert_eq!(tripped["level"].as_str().unwrap_or("error"), "error");
    assert_eq!(tripped["logger"], "worker");
    for env in sentry.envelopes() {
        assert!(
            !env.raw.contains("f4u1t516"),
            "signed URL leaked: {}",
            env.raw
        );
        assert!(!env.raw.contains(TOKEN), "auth token leaked: {}", env.raw);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_error_that_ends_the_process_is_reported_without_the_token_it_carried() {
    let sentry = SentryRecorder::start().await;
    let home = WorkerHome::new(&sentry.echo_url(), None, "");
    let dsn = sentry.dsn();
    let token = "boot-5e3c71d2a9";
    let out = home.cli_with(
        &[
            "register",
            "--bootstrap-token",
            token,
            "--api-base-url",
            &sentry.echo_url(),
        ],
        &[("SENTRY_DSN", &dsn)],
    );
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    // The operator's own terminal shows the server's answer as it was.
    assert!(
        said.contains(&format!("no registration for {token}")),
        "{said}"
    );
    let (env, fatal) = sentry
        .wait_event("the fatal error", |e| e["level"] == "fatal")
        .await;
    let message = text(&fatal["message"]);
    assert!(
        message.contains("registration failed: HTTP 500")
            && message.contains("no registration for ***"),
        "{message}"
    );
    assert!(!env.raw.contains(token), "{}", env.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_reported_before_the_process_dies() {
    let sentry = SentryRecorder::start().await;
    let home = WorkerHome::new("http://127.0.0.1:9", None, "");
    let dsn = sentry.dsn();
    let out = home.cli_with(
        &["config"],
        &[
            ("SENTRY_DSN", &dsn),
            ("STUDIO_WORKER_FAULT_INJECTION", "1"),
            ("STUDIO_WORKER_FAULT_PANIC", "1"),
        ],
    );
    assert_eq!(out.status.code(), Some(101), "a panic exits 101");
    // The panic handler delivers before the process goes: the event is
    // already here when the process has exited.
    let panics: Vec<Value> = sentry
        .envelopes()
        .iter()
        .flat_map(|e| e.events().cloned().collect::<Vec<_>>())
        .collect();
    let ex = panics
        .iter()
        .find_map(|e| e["exception"]["values"].as_array()?.first().cloned())
        .unwrap_or_else(|| panic!("no exception event: {panics:?}"));
    assert!(
        text(&ex["value"]).contains("fault injection: panic"),
        "{ex}"
    );
    assert_eq!(ex["mechanism"]["type"], "panic", "{ex}");
    assert_eq!(panics[0]["release"], RELEASE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_sent_without_a_dsn_and_a_bad_dsn_is_named() {
    let sentry = SentryRecorder::start().await;
    let home = WorkerHome::new(&sentry.echo_url(), None, "");
    let register = [
        "register",
        "--bootstrap-token",
        "boot-x",
        "--api-base-url",
        &sentry.echo_url(),
    ];
    let out = home.cli(&register);
    assert!(!out.status.success());
    let out = home.cli_with(&register, &[("SENTRY_DSN", "not a dsn")]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("SENTRY_DSN is not a Sentry DSN"), "{said}");
    assert!(
        said.contains("registration failed"),
        "the command still ran: {said}"
    );
    // Both processes have exited: anything they would have sent is here.
    assert!(sentry.envelopes().is_empty(), "{:?}", sentry.envelopes());
}
