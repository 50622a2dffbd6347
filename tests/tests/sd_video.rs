//! Opt-in heavy test: stable-diffusion.cpp video end to end on a Wan-shaped
//! random-weight model. sd.cpp sizes Wan from its layer count, and the
//! smallest Wan it knows (2.1 T2V 1.3B) is 2.8 GB even with random weights,
//! so this test does not run in CI. Run it with
//!
//! ```sh
//! scripts/heavy-tests
//! ```
//!
//! (which is `STUDIO_WORKER_HEAVY_TESTS=1 cargo test --release -p
//! studio-worker-tests --test sd_video -- --ignored --nocapture`). It needs
//! about 6 GB of disk in the temp dir and 8 GB of memory.

use std::time::Instant;

use serde_json::{json, Value};
use studio_worker_tests::bounds;
use studio_worker_tests::proc::ffprobe;
use studio_worker_tests::start_worker;
use studio_worker_tests::studio::{Event, FakeStudio, Upload};
use studio_worker_tests::tiny_sd;

/// Waits for the job's upload, or panics at once with its failure.
async fn result_of(studio: &FakeStudio, id: &str) -> Upload {
    let out = studio
        .wait_for(
            bounds::heavy_work(),
            &format!("result of {id}"),
            |e| match e {
                Event::Upload(u) if u.job_id == id => Some(Ok(u.clone())),
                Event::Frame(v) if v["type"] == "fail" && v["jobId"] == id => Some(Err(v.clone())),
                _ => None,
            },
        )
        .await;
    out.unwrap_or_else(|fail| panic!("{id} failed: {fail}"))
}

fn offer(id: &str, src: &Value, task: Value) -> Value {
    json!({"jobId": id, "gameId": "g", "assetName": format!("g/{id}"), "model": "random-wan", "vramGbEstimate": 4.0, "task": task, "modelSource": src})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "heavy (writes a 2.8 GB model): run scripts/heavy-tests"]
async fn sd_cpp_makes_mp4_and_webm_video_on_a_wan_shaped_model() {
    assert_eq!(
        std::env::var("STUDIO_WORKER_HEAVY_TESTS").as_deref(),
        Ok("1"),
        "this test writes and loads a 2.8 GB model: set STUDIO_WORKER_HEAVY_TESTS=1 (scripts/heavy-tests)"
    );
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let m = tiny_sd::write_wan(dir.path(), 1).unwrap();
    eprintln!("wrote the Wan-shaped model in {:.1?}", t.elapsed());

    let studio = FakeStudio::start().await;
    let files: Vec<Value> = [("diffusion-model", &m.diffusion), ("taesd", &m.taesd)]
        .iter()
        .map(|(role, path)| studio.serve_model_file(role, path))
        .collect();
    let src = json!({"engine": "sd-cpp", "files": files, "cliDefaults": {"cfgScale": 1.0, "steps": 2, "width": 64, "height": 64, "samplingMethod": "euler"}});
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (_home, worker) = start_worker(
        &studio,
        &format!("engine_threads = {threads}\nstall_timeout_secs = 900\njob_timeout_secs = 1800\n"),
        &[],
    )
    .await;
    let hello = studio.wait_frame("hello", "").await;
    assert!(
        hello["capabilities"]["supportedModelsPerKind"]["video"]
            .as_array()
            .unwrap()
            .contains(&json!("sd-cpp:*")),
        "{hello}"
    );

    // 1 s at 5 fps: 5 frames, on Wan's 4k+1 grid as asked.
    let t = Instant::now();
    let job = json!({"kind": "video", "prompt": "a paper boat on a pond", "width": 64, "height": 64, "seconds": 1.0, "fps": 5, "seed": 11, "ext": "mp4"});
    studio.offer(offer("wan-mp4", &src, job));
    let mp4 = result_of(&studio, "wan-mp4").await;
    eprintln!(
        "first video (download, load, sample, encode) in {:.1?}",
        t.elapsed()
    );
    assert_eq!(mp4.ext, "mp4");
    assert_eq!(ffprobe(&mp4.bytes, "mp4"), (64, 64, "5/1".to_string(), 5));

    // 1 s at 8 fps: 8 frames wanted, 9 sampled on the grid, one trimmed;
    // the model stays loaded.
    let t = Instant::now();
    let job = json!({"kind": "video", "prompt": "a paper boat on a pond", "width": 80, "height": 48, "seconds": 1.0, "fps": 8, "seed": 11, "ext": "webm"});
    studio.offer(offer("wan-webm", &src, job));
    let webm = result_of(&studio, "wan-webm").await;
    eprintln!("second video (model kept loaded) in {:.1?}", t.elapsed());
    assert_eq!(webm.ext, "webm");
    assert_eq!(ffprobe(&webm.bytes, "webm"), (80, 48, "8/1".to_string(), 8));

    // An image job for the video model: a clear, final error.
    let img = json!({"kind": "image", "prompt": "a boat", "width": 64, "height": 64, "ext": "png"});
    studio.offer(offer("wan-image", &src, img));
    let fail = studio
        .wait_frame_within("fail", "wan-image", bounds::engine_work())
        .await;
    assert_eq!(fail["retryable"], false);
    assert!(
        fail["error"]
            .as_str()
            .unwrap()
            .contains("this model generates video, it cannot serve an image job"),
        "{fail}"
    );

    let loads = studio.loads_through("wan-image").await;
    assert_eq!(
        loads.len(),
        1,
        "one load for three jobs: {loads:?}\n{}",
        worker.log()
    );
    eprintln!("{}", loads[0]);
}
