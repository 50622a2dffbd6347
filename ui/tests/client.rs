//! The window's client and model against a real worker connected to the
//! fake studio: the badge follows a job from idle to busy to idle, Pause
//! makes the studio see `paused`, the log filter narrows to one job, and
//! a config edit is written (0600) or refused naming the key.

use studio_worker_tests::claims::{claim, claim_with, image};
use studio_worker_tests::proc::Gate;
use studio_worker_tests::studio::FakeStudio;
use studio_worker_tests::{bounds, start_worker};
use studio_worker_ui::client::{Client, ClientError};
use studio_worker_ui::logs::{self, Level};
use studio_worker_ui::state::{Badge, Tray};

const FAULTS: &[(&str, &str)] = &[("STUDIO_WORKER_FAULT_INJECTION", "1")];

/// The badge as the window would show it now (the client is blocking).
async fn badge(client: &std::sync::Arc<Client>) -> Badge {
    let c = client.clone();
    let status = tokio::task::spawn_blocking(move || c.status().ok())
        .await
        .unwrap();
    Badge::of(status.as_ref())
}

async fn wait_badge(
    client: &std::sync::Arc<Client>,
    what: &str,
    want: impl Fn(&Badge) -> bool,
) -> Badge {
    let end = tokio::time::Instant::now() + bounds::event();
    loop {
        let b = badge(client).await;
        if want(&b) {
            return b;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "gave up waiting for {what}; last {b:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_model_follows_a_real_worker_and_drives_it() {
    let studio = FakeStudio::start().await;
    let (home, _worker) = start_worker(&studio, "", FAULTS).await;
    // A blocking client lives outside the async runtime (the window keeps
    // it on a background thread): made and dropped on a blocking thread.
    let config = home.config();
    let client = tokio::task::spawn_blocking(move || std::sync::Arc::new(Client::new(&config)))
        .await
        .unwrap();

    let idle = wait_badge(&client, "idle", |b| *b == Badge::Idle).await;
    assert_eq!(idle.tray(), Tray::Green);

    let gate = Gate::new();
    let mut task = image(16, 16, "png");
    task["prompt"] = "a tin robot".into();
    studio.offer(claim_with("ui-job", &gate.model(), task));
    gate.started().await;
    let busy = wait_badge(&client, "busy", |b| b.label() == "busy").await;
    assert_eq!(busy.tray(), Tray::Amber);
    let c = client.clone();
    let snap = tokio::task::spawn_blocking(move || c.status())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(snap.jobs[0].prompt, "a tin robot");
    gate.open();
    studio.wait_upload("ui-job").await;
    wait_badge(&client, "idle again", |b| *b == Badge::Idle).await;

    // Pause from the window: the studio's next offer is rejected `paused`.
    let c = client.clone();
    tokio::task::spawn_blocking(move || c.pause())
        .await
        .unwrap()
        .unwrap();
    let paused = wait_badge(&client, "paused", |b| b.label() == "paused").await;
    assert!(paused.resumable());
    studio.offer(claim("while-paused", image(8, 8, "png")));
    assert_eq!(
        studio.wait_frame("reject", "while-paused").await["code"],
        "paused"
    );
    let c = client.clone();
    tokio::task::spawn_blocking(move || c.resume())
        .await
        .unwrap()
        .unwrap();
    wait_badge(&client, "idle after resume", |b| *b == Badge::Idle).await;

    // The log filter narrows to one job id.
    let c = client.clone();
    let (entries, next) = tokio::task::spawn_blocking(move || c.logs(0))
        .await
        .unwrap()
        .unwrap();
    let mut kept = Vec::new();
    logs::append(&mut kept, entries);
    let only = logs::filter(&kept, Level::Info, "ui-job");
    assert!(!only.is_empty(), "{kept:?}");
    assert!(only
        .iter()
        .all(|e| e.job_id.as_deref() == Some("ui-job") || e.message.contains("ui-job")));
    assert!(logs::filter(&kept, Level::Info, "").len() > only.len());
    assert_eq!(next, kept.last().map_or(0, |e| e.seq));

    // Config: a bad value is refused naming the key; a good one is written.
    let c = client.clone();
    let (config, live) = tokio::task::spawn_blocking(move || c.config())
        .await
        .unwrap()
        .unwrap();
    let mut fields: Vec<_> = studio_worker_ui::form::layout(&config, &live)
        .into_iter()
        .flat_map(|(_, f)| f)
        .collect();
    let i = fields
        .iter()
        .position(|f| f.key == "vram_threshold_gb")
        .unwrap();
    fields[i].text = "-2".into();
    let bad = studio_worker_ui::form::patch(&config, &fields).unwrap();
    let c = client.clone();
    match tokio::task::spawn_blocking(move || c.save_config(&bad))
        .await
        .unwrap()
    {
        Err(ClientError::BadValue { key, .. }) => assert_eq!(key, "vram_threshold_gb"),
        other => panic!("expected a refusal naming the key, got {other:?}"),
    }
    fields[i].text = "7.5".into();
    let good = studio_worker_ui::form::patch(&config, &fields).unwrap();
    let c = client.clone();
    let saved = tokio::task::spawn_blocking(move || c.save_config(&good))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(saved.changed, ["vram_threshold_gb"]);
    assert!(saved.restart.is_empty());
    let text = std::fs::read_to_string(home.config()).unwrap();
    assert!(text.contains("vram_threshold_gb = 7.5"), "{text}");
    assert_eq!(home.config_mode(), 0o600);
    tokio::task::spawn_blocking(move || drop(client))
        .await
        .unwrap();
}

#[test]
fn with_no_worker_the_client_says_so_and_the_tray_is_red() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::new(&dir.path().join("config.toml"));
    let err = client.status().unwrap_err();
    assert!(matches!(err, ClientError::NotRunning(_)), "{err}");
    assert!(err.to_string().contains("no worker runs with"));
    assert_eq!(Badge::of(None).tray(), Tray::Red);
}
