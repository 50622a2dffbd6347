//! The gradio engine against real Gradio 6 apps (`tests/gradio/apps.py`):
//! fake studio → real `studio-worker` → `engine-runner-gradio` → the app's
//! HTTP queue API → the image back, decoded and compared pixel for pixel.

use serde_json::{json, Value};
use studio_worker_tests::claims::claim_with;
use studio_worker_tests::gradio::{pattern, GradioApp};
use studio_worker_tests::proc::WorkerHome;
use studio_worker_tests::start_worker;
use studio_worker_tests::studio::FakeStudio;

fn config(app: &GradioApp, extra: &str) -> String {
    format!(
        "engine = \"gradio\"\ngradio_endpoint_url = \"{}\"\n{extra}",
        app.url()
    )
}

/// An sd-cpp model the studio would attach: with `engine = "gradio"` its
/// files are never fetched (the URL does not even exist).
fn sd_source(studio: &FakeStudio) -> Value {
    json!({
        "engine": "sd-cpp",
        "files": [{"role": "model", "filename": "sdxl.safetensors", "url": studio.file_url("missing.safetensors")}],
        "cliDefaults": {"cfgScale": 7.0, "steps": 30, "width": 1024, "height": 1024}
    })
}

fn offer(studio: &FakeStudio, id: &str, task: Value) {
    let mut c = claim_with(id, "sdxl", task);
    c["modelSource"] = sd_source(studio);
    studio.offer(c);
}

fn decode(bytes: &[u8]) -> image::RgbImage {
    image::load_from_memory(bytes)
        .expect("an image the worker uploaded")
        .to_rgb8()
}

fn status(home: &WorkerHome) -> Value {
    let out = home.cli(&["status", "--json"]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("status --json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interface_app_serves_image_jobs_with_its_own_pixels_and_progress() {
    let app = GradioApp::start("interface").await;
    let studio = FakeStudio::start().await;
    let (home, _worker) = start_worker(
        &studio,
        &config(
            &app,
            "supported_models_override = [\"sdxl\", \"flux-dev\"]\n",
        ),
        &[],
    )
    .await;
    // The override declares the image models; other kinds are untouched.
    let hello = &studio.frames("hello")[0]["capabilities"];
    assert_eq!(
        hello["supportedModelsPerKind"]["image"],
        json!(["flux-dev", "sdxl"])
    );
    assert!(hello["taskKinds"]
        .as_array()
        .unwrap()
        .contains(&json!("llm")));

    for (id, w, h, seed, ext) in [
        ("g-png", 40, 24, 7u64, "png"),
        ("g-webp", 33, 17, 9, "webp"),
    ] {
        offer(
            &studio,
            id,
            json!({"kind": "image", "prompt": "a fox", "width": w, "height": h, "seed": seed, "ext": ext}),
        );
        let up = studio.wait_upload(id).await;
        assert_eq!(up.ext, ext);
        assert_eq!(
            decode(&up.bytes),
            pattern("a fox", seed, w, h),
            "{id}: the app's pixels"
        );
    }
    assert!(
        studio.file_gets("missing.safetensors").is_empty(),
        "an sd-cpp model file was fetched for a gradio job"
    );

    // The app's progress reaches the worker's live status.
    offer(
        &studio,
        "g-slow",
        json!({"kind": "image", "prompt": "slow fox", "width": 8, "height": 8, "ext": "png"}),
    );
    let job = home
        .wait_status("the app's progress in the status", |s| {
            s["jobs"].as_array().is_some_and(|j| {
                j.iter()
                    .any(|j| j["total"] == 60 && j["done"].as_u64() >= Some(2))
            })
        })
        .await;
    let s = status(&home);
    assert_eq!(s["gradio"]["answers"], true, "{s}");
    assert_eq!(s["gradio"]["endpoint"], "/generate", "{s}");
    assert_eq!(s["gradio"]["mapping"]["prompt"], "prompt", "{s}");
    drop(job);
    studio.wait_upload("g-slow").await;

    // The app's own error comes back in its words, retryable elsewhere.
    offer(
        &studio,
        "g-fail",
        json!({"kind": "image", "prompt": "fail please", "width": 8, "height": 8, "ext": "png"}),
    );
    let fail = studio.wait_frame("fail", "g-fail").await;
    assert!(
        fail["error"]
            .as_str()
            .unwrap()
            .contains("this app refuses prompts that say fail"),
        "{fail}"
    );
    assert_eq!(fail["retryable"], true, "{fail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocks_app_answers_through_a_gallery_and_an_img2img_endpoint() {
    let app = GradioApp::start("blocks").await;
    let studio = FakeStudio::start().await;
    // The default endpoint: the first taking a prompt and returning an
    // image (here a gallery of two; the first is the job's).
    let (home, worker) = start_worker(&studio, &config(&app, ""), &[]).await;
    offer(
        &studio,
        "gal-exact",
        json!({"kind": "image", "prompt": "moss", "negativePrompt": "-", "seed": 4, "width": 96, "height": 80, "ext": "png"}),
    );
    let up = studio.wait_upload("gal-exact").await;
    assert_eq!(decode(&up.bytes), pattern("moss-", 4, 96, 80));
    // Another size: the app's 96×80 is resized to the one asked for.
    offer(
        &studio,
        "gal-resized",
        json!({"kind": "image", "prompt": "moss", "width": 48, "height": 40, "ext": "jpg"}),
    );
    let up = studio.wait_upload("gal-resized").await;
    assert_eq!(decode(&up.bytes).dimensions(), (48, 40));
    assert_eq!(status(&home)["gradio"]["endpoint"], "/txt2img");
    drop(worker);

    // img2img: the init image goes up to the app, the inverse comes back.
    let studio = FakeStudio::start().await;
    let (_home, _worker) = start_worker(
        &studio,
        &config(&app, "[gradio]\napi_name = \"/img2img\"\n"),
        &[],
    )
    .await;
    let input = pattern("input", 1, 40, 30);
    let mut png = Vec::new();
    image::DynamicImage::ImageRgb8(input.clone())
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    studio.serve_file("input.png", png);
    offer(
        &studio,
        "i2i",
        json!({"kind": "image", "prompt": "invert", "initImageUrl": studio.file_url("input.png"), "denoise": 0.4, "width": 40, "height": 30, "ext": "png"}),
    );
    let up = studio.wait_upload("i2i").await;
    let mut inverted = input;
    image::imageops::invert(&mut inverted);
    assert_eq!(decode(&up.bytes), inverted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_that_does_not_fit_the_app_is_named_at_start_with_its_parameters() {
    let app = GradioApp::start("blocks").await;
    let studio = FakeStudio::start().await;
    let (home, _worker) = start_worker(
        &studio,
        &config(&app, "[gradio]\napi_name = \"/styled\"\n"),
        &[],
    )
    .await;
    let s = status(&home);
    let why = s["unusable"]["gradio"].as_str().unwrap_or_default();
    assert!(why.contains("parameter `style` is required"), "{s}");
    assert!(
        why.contains("prompt (Textbox string, required), style (Textbox string, required)"),
        "{s}"
    );
    // No image kind is promised while the app cannot serve it.
    let hello = &studio.frames("hello")[0]["capabilities"];
    assert!(
        !hello["taskKinds"]
            .as_array()
            .unwrap()
            .contains(&json!("image")),
        "{hello}"
    );

    // With the parameter given a value, the same endpoint serves.
    let studio = FakeStudio::start().await;
    let (_home, _worker) = start_worker(
        &studio,
        &config(
            &app,
            "[gradio]\napi_name = \"/styled\"\nfixed = { style = \"sketch\" }\n",
        ),
        &[],
    )
    .await;
    offer(
        &studio,
        "styled",
        json!({"kind": "image", "prompt": "owl", "width": 32, "height": 32, "ext": "png"}),
    );
    let up = studio.wait_upload("styled").await;
    assert_eq!(decode(&up.bytes), pattern("owlsketch", 0, 32, 32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_stopped_mid_job_fails_it_retryably_and_is_picked_up_again_when_back() {
    let mut app = GradioApp::start("interface").await;
    let studio = FakeStudio::start().await;
    let (home, worker) = start_worker(&studio, &config(&app, ""), &[]).await;
    offer(
        &studio,
        "cut",
        json!({"kind": "image", "prompt": "slow heron", "width": 8, "height": 8, "ext": "png"}),
    );
    home.wait_status("the job running in the app", |s| {
        s["jobs"]
            .as_array()
            .is_some_and(|j| j.iter().any(|j| j["done"].as_u64() >= Some(1)))
    })
    .await;
    app.stop();
    let fail = studio.wait_frame("fail", "cut").await;
    assert_eq!(fail["retryable"], true, "{fail}");
    assert!(
        fail["error"].as_str().unwrap().contains("Gradio app"),
        "{fail}"
    );
    // The worker kept its session; the app comes back on the same port and
    // the next job is served without a restart.
    let sessions = studio.sessions();
    app.restart().await;
    offer(
        &studio,
        "after",
        json!({"kind": "image", "prompt": "heron", "width": 16, "height": 12, "seed": 2, "ext": "png"}),
    );
    let up = studio.wait_upload("after").await;
    assert_eq!(decode(&up.bytes), pattern("heron", 2, 16, 12));
    assert_eq!(studio.sessions(), sessions);
    assert!(studio_worker_tests::proc::alive(worker.pid()));
    let s = status(&home);
    assert_eq!(s["gradio"]["answers"], true, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_app_queue_is_retried_with_backoff_until_the_job_gets_in() {
    // One running job (6 s) and one waiting (2 s) fill this app; a third
    // is refused with 503 "Queue is full" until the first ends.
    let app = GradioApp::start("narrow").await;
    let http = reqwest::Client::new();
    for (who, prompt) in [("running", "hold"), ("waiting", "brief")] {
        let joined = http
            .post(format!("{}/gradio_api/queue/join", app.url()))
            .json(&json!({"data": [prompt, 8, 8, 1], "fn_index": 0, "session_hash": who}))
            .send()
            .await
            .unwrap();
        assert!(joined.status().is_success(), "{}", joined.status());
    }
    let full = http
        .post(format!("{}/gradio_api/queue/join", app.url()))
        .json(&json!({"data": ["x", 8, 8, 1], "fn_index": 0, "session_hash": "probe"}))
        .send()
        .await
        .unwrap();
    assert_eq!(full.status(), 503, "the app's queue should be full");

    let studio = FakeStudio::start().await;
    let (_home, _worker) = start_worker(&studio, &config(&app, ""), &[]).await;
    offer(
        &studio,
        "crowded",
        json!({"kind": "image", "prompt": "kingfisher", "width": 12, "height": 10, "seed": 5, "ext": "png"}),
    );
    let up = studio.wait_upload("crowded").await;
    assert_eq!(decode(&up.bytes), pattern("kingfisher", 5, 12, 10));
    // The retry is in the job's log the studio receives.
    studio
        .wait_until(
            studio_worker_tests::bounds::event(),
            "the job's retry after a 503 in a log batch",
            |events| {
                events.iter().find_map(|(_, e)| match e {
                    studio_worker_tests::studio::Event::Frame(v) if v["type"] == "logBatch" => v
                        ["entries"]
                        .as_array()?
                        .iter()
                        .find(|e| {
                            e["jobId"] == "crowded"
                                && e["message"].as_str().is_some_and(|m| {
                                    m.contains("answered 503") && m.contains("trying again")
                                })
                        })
                        .cloned(),
                    _ => None,
                })
            },
        )
        .await;
}
