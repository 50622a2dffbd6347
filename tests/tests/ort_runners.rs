//! The ONNX Runtime runners (`engine-runner-piper`, `engine-runner-onnx`)
//! driven directly, as the supervisor and a person do: input that ends
//! mid-job, and a job by hand in JSON lines.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use studio_protocol::runner::frame::encode;
use studio_protocol::runner::{
    FrameReader, FromRunner, JobRequest, Phase, ToRunner, CHANNEL_VERSION, DEFAULT_MAX_FRAME_BYTES,
};
use studio_protocol::studio::{AudioTtsTask, Engine, ModelSource, Task};
use studio_worker_tests::proc::bin;
use studio_worker_tests::{bounds, models};

#[test]
fn a_piper_runner_whose_channel_closes_mid_job_exits_cleanly() {
    // The supervisor gone while ONNX Runtime works: the runner must end
    // without a crash. (ONNX Runtime's exit-time destructors under a busy
    // engine thread crashed it, 5 times in 6, when the channel closed
    // 50 ms to 1.2 s into a voice's load; the runner now leaves with
    // _exit. That window cannot be hit on an event, so this cuts at the
    // load's start: a clean exit, whatever the moment.)
    let mut child = Command::new(bin("engine-runner-piper"))
        .args(["--stdio", "--threads", "2", "--model"])
        .arg(models::path(models::VOICE))
        .env("ORT_DYLIB_PATH", models::path(models::ORT))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = FrameReader::new(child.stdout.take().unwrap(), DEFAULT_MAX_FRAME_BYTES);
    let mut send = |m: &ToRunner| {
        stdin
            .write_all(&encode(m, DEFAULT_MAX_FRAME_BYTES).unwrap())
            .unwrap();
        stdin.flush().unwrap();
    };
    send(&ToRunner::Hello {
        version: CHANNEL_VERSION,
        epoch: 1,
    });
    let mut source = ModelSource::synthetic();
    source.engine = Engine::Piper;
    send(&ToRunner::Job(Box::new(JobRequest {
        job_id: "cut".into(),
        epoch: 1,
        task: Task::AudioTts(AudioTtsTask {
            text: "A sentence to keep the voice busy. ".repeat(40),
            ..Default::default()
        }),
        model: "joe".into(),
        model_source: source,
        model_files: Default::default(),
        inputs: Default::default(),
        scratch_dir: Some(tempfile::tempdir().unwrap().keep().display().to_string()),
        preload: false,
        stream: false,
    })));
    // Close the channel as the voice starts loading (where it crashed).
    loop {
        match out.read::<FromRunner>().expect("a valid frame") {
            Some(FromRunner::Progress {
                phase: Phase::Loading,
                ..
            }) => break,
            Some(FromRunner::Result { .. }) | Some(FromRunner::Error { .. }) | None => {
                panic!("the runner ended the job before it was cut")
            }
            Some(_) => {}
        }
    }
    drop(stdin);
    let status = bounds::until_blocking("the runner to exit", bounds::event(), || {
        child.try_wait().unwrap()
    });
    assert!(
        status.success(),
        "exit {status:?} (signal {:?})",
        status.signal()
    );
}

#[test]
fn object_removal_by_hand_in_json_lines_finishes_at_end_of_input() {
    let dir = tempfile::tempdir().unwrap();
    let (w, h) = (200u32, 120u32);
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 90]));
    let mask = image::GrayImage::from_fn(w, h, |x, y| {
        image::Luma([if (90..110).contains(&x) && (50..70).contains(&y) {
            255
        } else {
            0
        }])
    });
    img.save(dir.path().join("photo.png")).unwrap();
    mask.save(dir.path().join("mask.png")).unwrap();
    // engine-runner hands over to engine-runner-onnx.
    let mut child = Command::new(bin("engine-runner"))
        .args(["--stdio", "--json", "--engine", "onnx", "--model"])
        .arg(models::path(models::INPAINT))
        .arg("--out-dir")
        .arg(dir.path())
        .env("ORT_DYLIB_PATH", models::path(models::ORT))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let job = serde_json::json!({"job": {"jobId": "by-hand", "task": {"kind": "image", "prompt": "", "initImageUrl": "photo", "maskUrl": "mask", "ext": "png"},
        "inputs": {"initImageUrl": dir.path().join("photo.png"), "maskUrl": dir.path().join("mask.png")}}});
    writeln!(stdin, "{job}").unwrap();
    // No "shutdown": the end of input finishes the job first.
    drop(stdin);
    let lines: Vec<serde_json::Value> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).expect("every line is JSON"))
        .collect();
    assert!(child.wait().unwrap().success());
    assert_eq!(lines[0]["hello"]["engine"], "onnx", "{lines:?}");
    let file = lines
        .iter()
        .find_map(|l| l["result"]["output"]["file"]["path"].as_str())
        .unwrap_or_else(|| panic!("a file result in {lines:?}"));
    let out = image::open(file).unwrap().to_rgb8();
    assert_eq!(out.dimensions(), (w, h));
    assert_ne!(
        out.get_pixel(100, 60),
        img.get_pixel(100, 60),
        "the masked centre"
    );
    assert_eq!(
        out.get_pixel(10, 10),
        img.get_pixel(10, 10),
        "far from the mask"
    );
}
