//! The window's tabs, driven through AccessKit with `egui_kittest`
//! against a real worker connected to the fake studio (the `ui` feature):
//! the Status badge follows a job from idle to busy to idle, the Jobs tab
//! shows the job's progress and then its outcome, a config edit is saved
//! (0600) or refused naming the key, Pause makes the studio see
//! `paused`, the Logs filter narrows to one job id, and a worker without
//! credentials is registered from the Status tab.
#![cfg(feature = "ui")]

use std::time::{Duration, Instant};

use egui_kittest::kittest::{NodeT, Queryable};
use egui_kittest::Harness;
use studio_worker_tests::bounds;
use studio_worker_tests::claims::{claim, claim_with, image};
use studio_worker_tests::proc::Gate;
use studio_worker_tests::studio::FakeStudio;
use studio_worker_ui::app::App;

const FAULTS: &[(&str, &str)] = &[("STUDIO_WORKER_FAULT_INJECTION", "1")];

/// Steps the window until `found` holds (the poller reads the worker on
/// its own thread); panics naming `what`.
fn wait<T>(
    h: &mut Harness<'_, App>,
    what: &str,
    mut found: impl FnMut(&Harness<'_, App>) -> Option<T>,
) -> T {
    let end = Instant::now() + bounds::event();
    loop {
        h.run_steps(3);
        if let Some(v) = found(h) {
            return v;
        }
        assert!(Instant::now() < end, "the window never showed {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn shows(h: &Harness<'_, App>, text: &str) -> Option<()> {
    h.query_all_by_label_contains(text).next().map(|_| ())
}

#[test]
fn every_tab_follows_and_drives_a_real_worker() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let studio = rt.block_on(FakeStudio::start());
    let (home, _worker) = rt.block_on(studio_worker_tests::start_worker(&studio, "", FAULTS));
    let app = App::new(home.config(), || {});
    let mut h = Harness::builder()
        .with_size(egui::vec2(900.0, 700.0))
        .build_ui_state(|ui, app: &mut App| app.ui(ui), app);

    // Status: idle, then busy while a job runs, then idle.
    wait(&mut h, "the idle badge", |h| shows(h, "idle"));
    let gate = Gate::new();
    let mut task = image(16, 16, "png");
    task["prompt"] = "a tin robot".into();
    studio.offer(claim_with("ui-job", &gate.model(), task));
    rt.block_on(gate.started());
    wait(&mut h, "the busy badge", |h| shows(h, "busy"));

    // Jobs: the job in flight with its prompt and progress.
    h.get_by_label("Jobs").click();
    wait(&mut h, "the job's prompt", |h| shows(h, "a tin robot"));
    wait(&mut h, "the job's progress", |h| shows(h, "running"));
    gate.open();
    rt.block_on(studio.wait_upload("ui-job"));
    wait(&mut h, "the job's outcome", |h| shows(h, "completed"));
    h.get_by_label("Status").click();
    wait(&mut h, "idle again", |h| shows(h, "idle"));

    // Config: a bad value is refused naming the key; a good one saved.
    h.get_by_label("Config").click();
    wait(&mut h, "the threshold field", |h| {
        h.query_by_label("vram_threshold_gb").map(|_| ())
    });
    let edit = |h: &mut Harness<'_, App>, value: &str| {
        h.get_by_label("vram_threshold_gb").focus();
        h.run_steps(3);
        h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
        h.get_by_label("vram_threshold_gb").type_text(value);
        h.run_steps(3);
        h.get_by_label("Save").click();
    };
    edit(&mut h, "-2");
    wait(&mut h, "the refusal naming the key", |h| {
        shows(h, "not saved: vram_threshold_gb")
    });
    edit(&mut h, "7.5");
    wait(&mut h, "the save", |h| shows(h, "saved: vram_threshold_gb"));
    let text = std::fs::read_to_string(home.config()).unwrap();
    assert!(text.contains("vram_threshold_gb = 7.5"), "{text}");
    assert_eq!(home.config_mode(), 0o600);

    // Pause from the window: the studio's next offer is rejected paused.
    h.get_by_label("Status").click();
    h.run_steps(3);
    h.state().toggle_pause();
    wait(&mut h, "the paused badge", |h| shows(h, "paused"));
    studio.offer(claim("while-paused", image(8, 8, "png")));
    let reject = rt.block_on(studio.wait_frame("reject", "while-paused"));
    assert_eq!(reject["code"], "paused");
    h.state().toggle_pause();
    wait(&mut h, "idle after resume", |h| shows(h, "idle"));

    // Logs: the filter narrows to the job's lines.
    h.get_by_label("Logs").click();
    wait(&mut h, "log entries", |h| shows(h, " entries"));
    h.get_by_label("search").focus();
    h.run_steps(3);
    h.get_by_label("search").type_text("ui-job");
    h.run_steps(3);
    let (shown, all) = wait(&mut h, "the filtered count", |h| {
        let n = h.query_by_label_contains(" entries")?;
        // A label's text is its AccessKit value.
        let text = n.accesskit_node().value().unwrap_or_default();
        let nums: Vec<usize> = text
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|t| t.parse().ok())
            .collect();
        (nums.len() == 2 && nums[0] > 0 && nums[0] < nums[1]).then(|| (nums[0], nums[1]))
    });
    assert!(shown < all);
    assert!(shows(&h, "[ui-job]").is_some());
    assert!(
        h.query_all_by_label_contains("while-paused")
            .next()
            .is_none(),
        "another job's line passed the filter"
    );

    // About: the worker's own update check answers in the window.
    h.get_by_label("About").click();
    wait(&mut h, "the config path", |h| shows(h, "config:"));
}

#[test]
fn with_no_worker_the_window_starts_one_and_drains_it_when_it_quits() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let studio = rt.block_on(FakeStudio::start());
    let home = studio_worker_tests::proc::WorkerHome::new(
        &studio.url(),
        Some((
            studio_worker_tests::studio::WORKER_ID,
            studio_worker_tests::studio::TOKEN,
        )),
        "",
    );
    let app = App::new(home.config(), || {})
        .with_worker_program(studio_worker_tests::proc::bin("studio-worker"));
    let mut h = Harness::builder()
        .with_size(egui::vec2(900.0, 700.0))
        .build_ui_state(|ui, app: &mut App| app.ui(ui), app);
    wait(&mut h, "the offer to start a worker", |h| {
        shows(h, "as this window's child")
    });
    h.get_by_label("Start worker").click();
    wait(&mut h, "the started worker, idle", |h| shows(h, "idle"));
    rt.block_on(studio.wait_session(1));
    assert!(studio_worker::control::read_run_file(&home.config()).is_some());
    // Quitting the window drains the worker it started: it exits and
    // takes its run file along.
    drop(h);
    assert!(
        studio_worker::control::read_run_file(&home.config()).is_none(),
        "the worker the window started is still running"
    );
}

#[test]
fn a_worker_without_credentials_is_registered_from_the_status_tab() {
    use studio_worker_tests::studio::{Event, BOOTSTRAP, WORKER_ID};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let studio = rt.block_on(FakeStudio::start());
    // A stale token in the config: the studio refuses it, and the worker
    // says so while it keeps trying.
    let home = studio_worker_tests::proc::WorkerHome::new(
        &studio.url(),
        None,
        "bootstrap_token = \"stale-token\"\nregistration_poll_secs = 1\n",
    );
    let _worker = {
        let _in = rt.enter();
        home.spawn_run(&[])
    };
    let app = App::new(home.config(), || {});
    let mut h = Harness::builder()
        .with_size(egui::vec2(900.0, 700.0))
        .build_ui_state(|ui, app: &mut App| app.ui(ui), app);
    wait(&mut h, "the form with the refused token", |h| {
        shows(h, "Register this worker")?;
        shows(h, "the bootstrap token was not accepted")
    });
    assert!(shows(&h, "This worker: not registered").is_some());

    // Request approval: the pending request shows.
    h.get_by_label("Request approval").click();
    wait(&mut h, "the pending request", |h| {
        shows(h, "pending operator approval (request rr-1)")
    });
    let cfg = std::fs::read_to_string(home.config()).unwrap();
    assert!(!cfg.contains("stale-token"), "{cfg}");

    // A wrong token is refused in the window; the operator's one registers.
    let token = |h: &mut Harness<'_, App>, value: &str| {
        h.get_by_label("bootstrap token").focus();
        h.run_steps(3);
        h.get_by_label("bootstrap token").type_text(value);
        h.run_steps(3);
        h.get_by_label("Register").click();
    };
    token(&mut h, "not-the-token");
    wait(&mut h, "the refusal", |h| {
        shows(h, "not registered: registration refused")
    });
    token(&mut h, BOOTSTRAP);
    wait(&mut h, "the registration", |h| {
        shows(h, &format!("registered as {WORKER_ID}"))
    });
    rt.block_on(studio.wait_session(1));
    wait(&mut h, "the idle badge", |h| shows(h, "idle"));
    assert!(h
        .query_all_by_label_contains("Register this worker")
        .next()
        .is_none());
    let registers = studio
        .events()
        .iter()
        .filter(|e| matches!(e, Event::Register(b) if b["bootstrapToken"] == BOOTSTRAP))
        .count();
    assert_eq!(registers, 1);
    assert_eq!(home.config_mode(), 0o600);
}
