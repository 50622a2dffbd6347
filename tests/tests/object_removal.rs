//! Object removal end to end: the real worker and `engine-runner-onnx` on
//! real ONNX Runtime, an inpainting graph with LaMa's signature (built by
//! `scripts/make-inpaint-test-model.py` with the `onnx` package), and the
//! fake studio serving the image and the mask.

use image::{DynamicImage, GrayImage, Luma, Rgb, RgbImage};
use serde_json::{json, Value};
use studio_worker_tests::bounds;
use studio_worker_tests::studio::FakeStudio;
use studio_worker_tests::{models, start_worker};

const W: u32 = 640;
const H: u32 = 480;
/// The disc to remove: centre and radius; the mask's radius.
const OBJECT: (i64, i64, i64) = (420, 250, 30);
const MASK_RADIUS: i64 = 34;
/// How far a changed pixel may lie from the mask (README: `grow` =
/// max(2, ramp / 2) plus `ramp` = max(4, short side / 128); 480 → 2 + 4).
const REACH: i64 = 6;

/// A textured background (so a copy is told from a repaint).
fn background(x: u32, y: u32) -> Rgb<u8> {
    Rgb([
        (90 + (x * 7 + y * 3) % 60) as u8,
        (140 + ((x * 5) ^ (y * 11)) % 50) as u8,
        (70 + (x + 2 * y) % 40) as u8,
    ])
}

fn in_disc(x: u32, y: u32, r: i64) -> bool {
    let (dx, dy) = (x as i64 - OBJECT.0, y as i64 - OBJECT.1);
    dx * dx + dy * dy <= r * r
}

/// The photo (a dark disc on the texture) and its mask (white = remove).
fn scene() -> (RgbImage, GrayImage) {
    let img = RgbImage::from_fn(W, H, |x, y| {
        if in_disc(x, y, OBJECT.2) {
            Rgb([15, 15, 15])
        } else {
            background(x, y)
        }
    });
    let mask = GrayImage::from_fn(W, H, |x, y| {
        Luma([if in_disc(x, y, MASK_RADIUS) { 255 } else { 0 }])
    });
    (img, mask)
}

fn encoded(img: DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn claim(id: &str, model: &Value, task: Value) -> Value {
    json!({"jobId": id, "gameId": "g", "assetName": format!("g/{id}"), "model": "lama-test", "vramGbEstimate": 0.5,
        "task": task, "modelSource": {"engine": "onnx", "files": [model], "cliDefaults": {"cfgScale": 1.0, "steps": 1, "width": 512, "height": 512}}})
}

/// Checks a removal: the init image's size, every changed pixel within
/// `REACH` of the mask, the object gone (repainted near the background's
/// mean colour).
fn check_removed(out: &RgbImage, init: &RgbImage, mask: &GrayImage, label: &str) {
    assert_eq!(out.dimensions(), (W, H), "{label}: the init image's size");
    let mut changed = 0;
    for (x, y, p) in out.enumerate_pixels() {
        if p == init.get_pixel(x, y) {
            continue;
        }
        changed += 1;
        let near = (-REACH..=REACH).any(|dy| {
            (-REACH..=REACH).any(|dx| {
                let (mx, my) = (x as i64 + dx, y as i64 + dy);
                (0..W as i64).contains(&mx)
                    && (0..H as i64).contains(&my)
                    && mask.get_pixel(mx as u32, my as u32).0[0] > 0
            })
        });
        assert!(
            near,
            "{label}: ({x},{y}) changed but is {REACH}+ from the mask"
        );
    }
    let object: Vec<&Rgb<u8>> = out
        .enumerate_pixels()
        .filter(|(x, y, _)| in_disc(*x, *y, OBJECT.2))
        .map(|(_, _, p)| p)
        .collect();
    assert!(
        changed >= object.len(),
        "{label}: {changed} pixels changed, the object has {}",
        object.len()
    );
    let n = (W * H) as f64;
    for c in 0..3 {
        let want: f64 = (0..H)
            .flat_map(|y| (0..W).map(move |x| background(x, y).0[c] as f64))
            .sum::<f64>()
            / n;
        let got = object.iter().map(|p| p.0[c] as f64).sum::<f64>() / object.len() as f64;
        assert!(
            (got - want).abs() < 20.0,
            "{label}: channel {c} of the removed object is {got:.0}, the background's mean {want:.0}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_removal_changes_only_the_feathered_mask_and_keeps_the_size() {
    let studio = FakeStudio::start().await;
    let model = studio.serve_model_file("model", &models::path(models::INPAINT));
    let cfg = format!(
        "engine_threads = 1\nonnxruntime_path = \"{}\"\n",
        models::path(models::ORT).display()
    );
    let (home, _worker) = start_worker(&studio, &cfg, &[]).await;
    let hello = studio.wait_frame("hello", "").await;
    assert!(
        hello["capabilities"]["supportedModelsPerKind"]["image"]
            .as_array()
            .unwrap()
            .contains(&json!("onnx:*")),
        "{hello}"
    );

    let (init, mask) = scene();
    studio.serve_file(
        "photo.png",
        encoded(
            DynamicImage::ImageRgb8(init.clone()),
            image::ImageFormat::Png,
        ),
    );
    studio.serve_file(
        "photo.webp",
        encoded(
            DynamicImage::ImageRgb8(init.clone()),
            image::ImageFormat::WebP,
        ),
    );
    studio.serve_file(
        "mask.png",
        encoded(
            DynamicImage::ImageLuma8(mask.clone()),
            image::ImageFormat::Png,
        ),
    );

    for (id, photo, ext, format) in [
        ("remove-png", "photo.png", "png", image::ImageFormat::Png),
        (
            "remove-webp",
            "photo.webp",
            "webp",
            image::ImageFormat::WebP,
        ),
    ] {
        // width / height are not the image's: the output keeps its size.
        studio.offer(claim(
            id,
            &model,
            json!({"kind": "image", "prompt": "", "initImageUrl": studio.file_url(photo),
            "maskUrl": studio.file_url("mask.png"), "width": 512, "height": 512, "ext": ext}),
        ));
        let up = studio.wait_upload_within(id, bounds::engine_work()).await;
        assert_eq!(up.ext, ext);
        let out = image::load_from_memory_with_format(&up.bytes, format)
            .unwrap_or_else(|e| panic!("{id}: the upload is not a {ext}: {e}"))
            .to_rgb8();
        check_removed(&out, &init, &mask, id);
    }
    // One model load for both jobs.
    let runner = home.wait_runner("onnx").await;
    assert_eq!(runner["loads"], 1, "{runner}");

    // No mask: bad input naming the field; the worker takes the next job.
    studio.offer(claim(
        "no-mask",
        &model,
        json!({"kind": "image", "prompt": "", "initImageUrl": studio.file_url("photo.png"), "ext": "png"}),
    ));
    let fail = studio.wait_frame("fail", "no-mask").await;
    let error = fail["error"].as_str().unwrap();
    assert!(error.contains("maskUrl"), "{fail}");
    assert_eq!(fail["retryable"], false, "{fail}");
    studio.offer(claim(
        "after-no-mask",
        &model,
        json!({"kind": "image", "prompt": "", "initImageUrl": studio.file_url("photo.png"),
        "maskUrl": studio.file_url("mask.png"), "ext": "png"}),
    ));
    studio
        .wait_upload_within("after-no-mask", bounds::engine_work())
        .await;
}
