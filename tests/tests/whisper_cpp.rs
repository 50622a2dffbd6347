//! whisper.cpp end to end: the real `engine-runner-whisper` running the
//! real library on whisper tiny.en (converted from a PyPI package by the
//! project's own script), transcribing speech the test makes with
//! `espeak-ng`, in three encodings, with files served by the fake studio.
//!
//! One test function: engine work runs one job at a time, 1 thread.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use studio_worker_tests::bounds;
use studio_worker_tests::speech::wer;
use studio_worker_tests::studio::FakeStudio;
use studio_worker_tests::{models, start_worker};

const SENTENCE: &str =
    "Please send the report to the office before noon on Friday. The weather today is sunny and warm.";

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("tool runs (scripts/test installs it)");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ffmpeg(src: &Path, dst: &Path, args: &[&str]) {
    run(Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
        .arg(src)
        .args(args)
        .arg(dst));
}

fn offer(id: &str, src: &Value, task: Value) -> Value {
    json!({"jobId": id, "gameId": "g", "assetName": format!("g/{id}"), "model": "whisper-tiny.en", "vramGbEstimate": 0.2, "task": task, "modelSource": src})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whisper_cpp_transcribes_wav_float_stereo_and_mp3() {
    let dir = tempfile::tempdir().unwrap();
    let speech = dir.path().join("speech.wav");
    run(Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-w"])
        .arg(&speech)
        .arg(SENTENCE));
    let s16 = dir.path().join("s16.wav");
    let f32 = dir.path().join("f32.wav");
    let mp3 = dir.path().join("speech.mp3");
    ffmpeg(
        &speech,
        &s16,
        &["-ar", "16000", "-ac", "1", "-c:a", "pcm_s16le"],
    );
    ffmpeg(
        &speech,
        &f32,
        &["-ar", "44100", "-ac", "2", "-c:a", "pcm_f32le"],
    );
    ffmpeg(
        &speech,
        &mp3,
        &["-ar", "22050", "-c:a", "libmp3lame", "-b:a", "64k"],
    );

    let model = models::path(models::WHISPER);
    let studio = FakeStudio::start().await;
    let file = studio.serve_model_file("model", &model);
    let src = json!({"engine": "whisper-cpp", "files": [file], "cliDefaults": {"cfgScale": 1.0, "steps": 1, "width": 1, "height": 1}});
    for f in [&s16, &f32, &mp3] {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        studio.serve_file(&name, std::fs::read(f).unwrap());
    }
    let (home, worker) = start_worker(&studio, "engine_threads = 1\n", &[]).await;
    let hello = studio.wait_frame("hello", "").await;
    assert!(
        hello["capabilities"]["supportedModelsPerKind"]["audio_stt"]
            .as_array()
            .unwrap()
            .contains(&json!("whisper-cpp:*")),
        "{hello}"
    );

    for name in ["s16.wav", "f32.wav", "speech.mp3"] {
        let id = format!("stt-{name}");
        studio.offer(offer(
            &id,
            &src,
            json!({"kind": "audio_stt", "inputUrl": studio.file_url(name), "language": "en"}),
        ));
        let done = studio
            .wait_frame_within("completeJson", &id, bounds::engine_work())
            .await;
        let r = &done["result"];
        let text = r["text"].as_str().unwrap();
        let e = wer(SENTENCE, text);
        assert!(e < 0.3, "{name}: WER {e:.2} for {text:?}");
        assert_eq!(r["language"], "en");
        let d = r["duration"].as_f64().unwrap();
        assert!((3.0..12.0).contains(&d), "{name}: duration {d}");
        assert!(r["segments"].as_u64().unwrap() >= 1, "{r}");
    }

    // No language (the contract allows null) on an English-only model:
    // transcribed as English and reported `en`, with no detection pass
    // (which would cost a second encoder run and report a wrong code).
    // Timestamps: segments become a list with times inside the audio.
    studio.offer(offer(
        "stt-words",
        &src,
        json!({"kind": "audio_stt", "inputUrl": studio.file_url("s16.wav"), "language": null, "timestamps": "word"}),
    ));
    let done = studio
        .wait_frame_within("completeJson", "stt-words", bounds::engine_work())
        .await;
    assert_eq!(done["result"]["language"], "en", "{done}");
    let text = done["result"]["text"].as_str().unwrap();
    assert!(
        wer(SENTENCE, text) < 0.3,
        "WER {:.2} for {text:?}",
        wer(SENTENCE, text)
    );
    let segs = done["result"]["segments"].as_array().unwrap().clone();
    let dur = done["result"]["duration"].as_f64().unwrap();
    assert!(segs.len() >= 8, "about one segment per word: {segs:?}");
    let mut last = 0.0;
    for s in &segs {
        let (a, b) = (s["start"].as_f64().unwrap(), s["end"].as_f64().unwrap());
        assert!(
            a >= last - 0.01 && b >= a && b <= dur + 0.5,
            "{s} in {segs:?}"
        );
        last = a;
    }

    // Bad input names the field; the runner survives it.
    studio.offer(offer(
        "stt-bad-ts",
        &src,
        json!({"kind": "audio_stt", "inputUrl": studio.file_url("s16.wav"), "timestamps": "frame"}),
    ));
    let fail = studio
        .wait_frame_within("fail", "stt-bad-ts", bounds::engine_work())
        .await;
    assert!(
        fail["error"].as_str().unwrap().contains("task.timestamps"),
        "{fail}"
    );
    studio.serve_file("noise.wav", b"RIFF\x10\x00\x00\x00WAVEjunkjunk".to_vec());
    studio.offer(offer(
        "stt-bad-wav",
        &src,
        json!({"kind": "audio_stt", "inputUrl": studio.file_url("noise.wav")}),
    ));
    let fail = studio
        .wait_frame_within("fail", "stt-bad-wav", bounds::engine_work())
        .await;
    assert_eq!(fail["retryable"], false, "{fail}");
    assert!(
        fail["error"]
            .as_str()
            .unwrap()
            .contains("not a readable WAV"),
        "{fail}"
    );

    let loads = studio.loads_through("stt-bad-wav").await;
    assert_eq!(
        loads.len(),
        1,
        "one load for every job: {loads:?}\n{}",
        worker.log()
    );

    // A person drives the same engine: `studio-worker job` with local
    // files, and `engine-runner --engine whisper-cpp` in JSON-lines mode.
    let model_file = format!("model={}", model.display());
    let out = home.cli(&[
        "job",
        "audio_stt",
        "--engine",
        "whisper-cpp",
        "--input",
        &mp3.to_string_lossy(),
        "--file",
        &model_file,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(wer(SENTENCE, r["text"].as_str().unwrap()) < 0.3, "{r}");
    let lines = studio_worker_tests::proc::runner_json(
        &[
            "--engine",
            "whisper-cpp",
            "--threads",
            "1",
            "--model",
            &model.to_string_lossy(),
        ],
        &[
            json!({"job": {"jobId": "by-hand", "task": {"kind": "audio_stt", "inputUrl": "file"}, "inputs": {"inputUrl": s16.to_string_lossy()}}}),
        ],
    );
    assert_eq!(lines[0]["hello"]["engine"], "whisper-cpp", "{lines:?}");
    let text = lines
        .iter()
        .find_map(|l| {
            l["result"]["output"]["json"]["value"]["text"]
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_else(|| panic!("no result in {lines:?}"));
    assert!(wer(SENTENCE, &text) < 0.3, "{text}");
}
