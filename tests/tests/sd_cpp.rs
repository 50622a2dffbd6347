//! stable-diffusion.cpp end to end: the real `engine-runner-sd` running the
//! real library on a tiny random-weight Z-Image model whose files the fake
//! studio serves over loopback. The images are noise; the tests check size,
//! format, determinism, model reuse and swaps, img2img and errors.
//!
//! One test function: engine work runs one job at a time, 1 thread.

use serde_json::{json, Value};
use studio_worker_tests::bounds;
use studio_worker_tests::claims::{claim, llm};
use studio_worker_tests::start_worker;
use studio_worker_tests::studio::{FakeStudio, Upload};
use studio_worker_tests::tiny_sd;

fn source(studio: &FakeStudio, m: &tiny_sd::TinyZImage) -> Value {
    let files: Vec<Value> = [
        ("diffusion-model", &m.diffusion),
        ("text-encoder", &m.text_encoder),
        ("taesd", &m.taesd),
    ]
    .iter()
    .map(|(role, path)| studio.serve_model_file(role, path))
    .collect();
    json!({"engine": "sd-cpp", "files": files, "cliDefaults": {"cfgScale": 1.0, "steps": 4, "width": 128, "height": 128, "samplingMethod": "euler"}})
}

fn offer(id: &str, model: &str, src: &Value, task: Value) -> Value {
    json!({"jobId": id, "gameId": "g", "assetName": format!("g/{id}"), "model": model, "vramGbEstimate": 1.0, "task": task, "modelSource": src})
}

async fn image_of(studio: &FakeStudio, id: &str) -> (Upload, image::DynamicImage) {
    let up = studio.wait_upload_within(id, bounds::engine_work()).await;
    let img = image::load_from_memory(&up.bytes).unwrap_or_else(|e| panic!("{id}: {e}"));
    (up, img)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sd_cpp_generates_reuses_swaps_and_edits() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = tiny_sd::write(&dir.path().join("m1"), 1).unwrap();
    let m2 = tiny_sd::write(&dir.path().join("m2"), 2).unwrap();
    let studio = FakeStudio::start().await;
    let (home, worker) = start_worker(&studio, "engine_threads = 1\n", &[]).await;
    let hello = studio.wait_frame("hello", "").await;
    assert!(
        hello["capabilities"]["supportedModelsPerKind"]["image"]
            .as_array()
            .unwrap()
            .contains(&json!("sd-cpp:*")),
        "{hello}"
    );
    let src1 = source(&studio, &m1);
    let src2 = source(&studio, &m2);
    let txt = |ext: &str, w: u32, h: u32| json!({"kind": "image", "prompt": "a stone golem", "width": w, "height": h, "seed": 7, "ext": ext});

    // txt2img, then the same job again: same bytes, no second load.
    studio.offer(offer("sd-1", "tiny", &src1, txt("png", 128, 128)));
    let (first, img) = image_of(&studio, "sd-1").await;
    assert_eq!((img.width(), img.height()), (128, 128));
    assert_eq!(first.ext, "png");
    studio.offer(offer("sd-2", "tiny", &src1, txt("png", 128, 128)));
    let (second, _) = image_of(&studio, "sd-2").await;
    assert!(
        first.bytes == second.bytes,
        "a fixed seed gives identical bytes"
    );
    for (id, ext, w, h) in [("sd-webp", "webp", 128, 64), ("sd-jpg", "jpg", 64, 128)] {
        studio.offer(offer(id, "tiny", &src1, txt(ext, w, h)));
        let (up, img) = image_of(&studio, id).await;
        assert_eq!((up.ext.as_str(), img.width(), img.height()), (ext, w, h));
    }
    // cliDefaults fill what the task leaves out (128×128 here).
    studio.offer(offer(
        "sd-defaults",
        "tiny",
        &src1,
        json!({"kind": "image", "prompt": "p", "seed": 1, "ext": "png"}),
    ));
    let (_, img) = image_of(&studio, "sd-defaults").await;
    assert_eq!((img.width(), img.height()), (128, 128));

    // img2img from the first result.
    studio.serve_file("init.png", first.bytes.clone());
    let i2i = json!({"kind": "image", "prompt": "a stone golem", "width": 128, "height": 128, "seed": 7, "ext": "png", "initImageUrl": studio.file_url("init.png"), "denoise": 0.5});
    studio.offer(offer("sd-i2i", "tiny", &src1, i2i));
    let (edited, img) = image_of(&studio, "sd-i2i").await;
    assert_eq!((img.width(), img.height()), (128, 128));
    assert!(edited.bytes != first.bytes, "img2img changed the image");

    // Inpaint: only the white half of the mask is repainted.
    let mut mask = image::GrayImage::new(128, 128);
    for (x, _, p) in mask.enumerate_pixels_mut() {
        p.0[0] = if x < 64 { 255 } else { 0 };
    }
    let mut mask_png = std::io::Cursor::new(Vec::new());
    mask.write_to(&mut mask_png, image::ImageFormat::Png)
        .unwrap();
    studio.serve_file("mask.png", mask_png.into_inner());
    let inpaint = json!({"kind": "image", "prompt": "a stone golem", "width": 128, "height": 128, "seed": 7, "ext": "png", "initImageUrl": studio.file_url("init.png"), "maskUrl": studio.file_url("mask.png"), "denoise": 0.9});
    studio.offer(offer("sd-inpaint", "tiny", &src1, inpaint));
    let (painted, img) = image_of(&studio, "sd-inpaint").await;
    assert_eq!((img.width(), img.height()), (128, 128));
    assert!(painted.bytes != first.bytes);

    // Bad input names the field; the runner survives it.
    let mut bad = txt("png", 128, 128);
    bad["samplingMethod"] = json!("sideways");
    studio.offer(offer("sd-bad-sampler", "tiny", &src1, bad));
    let fail = studio
        .wait_frame_within("fail", "sd-bad-sampler", bounds::engine_work())
        .await;
    assert_eq!(fail["retryable"], false);
    assert!(
        fail["error"]
            .as_str()
            .unwrap()
            .contains("task.samplingMethod"),
        "{fail}"
    );
    studio.offer(offer("sd-bad-size", "tiny", &src1, txt("png", 100, 128)));
    let fail = studio
        .wait_frame_within("fail", "sd-bad-size", bounds::engine_work())
        .await;
    assert!(
        fail["error"].as_str().unwrap().contains("multiples of 16"),
        "{fail}"
    );
    // A video job for an image model: a clear, final error.
    let vid = json!({"kind": "video", "prompt": "a golem walks", "width": 128, "height": 128, "seconds": 1.0, "fps": 5, "ext": "mp4"});
    studio.offer(offer("sd-video-on-image-model", "tiny", &src1, vid));
    let fail = studio
        .wait_frame_within("fail", "sd-video-on-image-model", bounds::engine_work())
        .await;
    assert_eq!(fail["retryable"], false);
    assert!(
        fail["error"]
            .as_str()
            .unwrap()
            .contains("this model generates images, it cannot serve a video job"),
        "{fail}"
    );

    // All of that on one load.
    let l = studio.loads_through("sd-video-on-image-model").await;
    assert_eq!(l.len(), 1, "one load for one model: {l:?}");
    assert!(l[0].contains("(load #1;"));

    // Another model: swapped in, different pixels.
    studio.offer(offer("sd-swap", "tiny-2", &src2, txt("png", 128, 128)));
    let (swapped, _) = image_of(&studio, "sd-swap").await;
    assert!(swapped.bytes != first.bytes);
    // An upload has no frame on the socket to order log batches by: a
    // synthetic job after it does.
    studio.offer(claim("after-swap", llm("hi")));
    studio.wait_frame("completeJson", "after-swap").await;
    let l = studio.loads_through("after-swap").await;
    assert_eq!(l.len(), 2, "{l:?}");
    // One runner per model: the second model loads in a runner of its own
    // and the first stays resident beside it.
    assert!(l[1].contains("(load #1;"));
    let status = home
        .wait_status("both sd.cpp models resident", |s| {
            s["runners"]
                .as_array()
                .is_some_and(|r| r.iter().filter(|r| r["engine"] == "sd-cpp").count() == 2)
        })
        .await;
    for r in status["runners"].as_array().unwrap() {
        if r["engine"] == "sd-cpp" {
            assert_eq!(r["loads"], 1, "{r}");
        }
    }
    assert!(
        studio.frames("fail").len() == 3,
        "only the three bad jobs failed"
    );
    assert!(
        worker.log().contains("runner sd-cpp started"),
        "{}",
        worker.log()
    );

    // A person runs the same engine locally on files on disk.
    let out_png = dir.path().join("local.png");
    let file = |role: &str, p: &std::path::Path| format!("{role}={}", p.display());
    let out = home.cli(&[
        "job",
        "image",
        "--engine",
        "sd-cpp",
        "--prompt",
        "a fox",
        "--width",
        "64",
        "--height",
        "64",
        "--seed",
        "3",
        "--ext",
        "png",
        "--out",
        out_png.to_str().unwrap(),
        "--file",
        &file("diffusion-model", &m1.diffusion),
        "--file",
        &file("text-encoder", &m1.text_encoder),
        "--file",
        &file("taesd", &m1.taesd),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let img = image::open(&out_png).unwrap();
    assert_eq!((img.width(), img.height()), (64, 64));
    let out = home.cli(&[
        "job",
        "image",
        "--engine",
        "sd-cpp",
        "--prompt",
        "x",
        "--file",
        "weights=/nonexistent",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown role `weights`"));
}
