//! Text to speech end to end: the real worker and runners, the fake
//! studio, and speech proved real by transcribing it back with our own
//! whisper.cpp runner (whisper tiny.en) through the same worker.
//!
//! One test function: engine work runs one job at a time, 1 thread.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use studio_worker_tests::bounds;
use studio_worker_tests::speech::{wer, words};
use studio_worker_tests::studio::FakeStudio;
use studio_worker_tests::{models, start_worker};

const SENTENCE: &str =
    "Please send the report to the office before noon on Friday. The weather today is sunny and warm.";

/// ffprobe's format name and duration of `bytes` (written to `dir/name`).
fn probe(dir: &Path, name: &str, bytes: &[u8]) -> (String, f64) {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=format_name,duration",
            "-of",
            "csv=p=0",
        ])
        .arg(&path)
        .output()
        .expect("ffprobe runs (scripts/test installs it)");
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (format, duration) = text.rsplit_once(',').expect("format,duration");
    (format.to_string(), duration.parse().expect("a duration"))
}

fn espeak(id: &str, task: Value) -> Value {
    json!({"jobId": id, "gameId": "g", "assetName": format!("g/{id}"), "model": "espeak", "vramGbEstimate": 0.0,
        "task": task, "modelSource": {"engine": "espeak", "files": [], "cliDefaults": {"cfgScale": 1.0, "steps": 1, "width": 1, "height": 1}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn espeak_speaks_without_model_files_and_whisper_hears_it() {
    let dir = tempfile::tempdir().unwrap();
    let studio = FakeStudio::start().await;
    let whisper = studio.serve_model_file("model", &models::path(models::WHISPER));
    let stt_src = json!({"engine": "whisper-cpp", "files": [whisper], "cliDefaults": {"cfgScale": 1.0, "steps": 1, "width": 1, "height": 1}});
    let (_home, _worker) = start_worker(&studio, "engine_threads = 1\n", &[]).await;
    let hello = studio.wait_frame("hello", "").await;
    assert!(
        hello["capabilities"]["supportedModelsPerKind"]["audio_tts"]
            .as_array()
            .unwrap()
            .contains(&json!("espeak:*")),
        "{hello}"
    );

    // Natural speed and double speed: about half the duration.
    let mut durations = Vec::new();
    for (id, speed) in [("tts-1x", 1.0), ("tts-2x", 2.0)] {
        studio.offer(espeak(
            id,
            json!({"kind": "audio_tts", "text": SENTENCE, "speed": speed, "language": "en"}),
        ));
        let up = studio.wait_upload_within(id, bounds::engine_work()).await;
        assert_eq!(up.ext, "wav");
        let (format, seconds) = probe(dir.path(), &format!("{id}.wav"), &up.bytes);
        assert_eq!(format, "wav");
        durations.push(seconds);
        studio.serve_file(&format!("{id}.wav"), up.bytes);
    }
    let ratio = durations[1] / durations[0];
    assert!(
        (0.425..=0.575).contains(&ratio),
        "speed 2.0 took {:.2} s against {:.2} s at 1.0 (ratio {ratio:.2})",
        durations[1],
        durations[0]
    );

    // The speech is real: whisper transcribes it back.
    studio.offer(json!({"jobId": "hear-1x", "gameId": "g", "assetName": "g/hear", "model": "whisper-tiny.en", "vramGbEstimate": 0.2,
        "task": {"kind": "audio_stt", "inputUrl": studio.file_url("tts-1x.wav"), "language": "en"}, "modelSource": stt_src}));
    let done = studio
        .wait_frame_within("completeJson", "hear-1x", bounds::engine_work())
        .await;
    let text = done["result"]["text"].as_str().unwrap();
    let e = wer(SENTENCE, text);
    assert!(e < 0.3, "WER {e:.2} for {text:?}");

    // mp3 and ogg (Opus) decode with ffprobe.
    for ext in ["mp3", "ogg"] {
        let id = format!("tts-{ext}");
        studio.offer(espeak(
            &id,
            json!({"kind": "audio_tts", "text": "Short and clear.", "ext": ext}),
        ));
        let up = studio.wait_upload_within(&id, bounds::engine_work()).await;
        assert_eq!(up.ext, ext);
        let (format, seconds) = probe(dir.path(), &format!("{id}.{ext}"), &up.bytes);
        assert!(format.contains(ext), "{ext}: ffprobe says {format}");
        assert!(seconds > 0.3, "{ext}: {seconds} s");
    }

    // Bad input is named, and the next job runs.
    studio.offer(espeak(
        "tts-png",
        json!({"kind": "audio_tts", "text": "no", "ext": "png"}),
    ));
    let fail = studio.wait_frame("fail", "tts-png").await;
    assert!(
        fail["error"].as_str().unwrap().contains("task.ext"),
        "{fail}"
    );
    assert_eq!(fail["retryable"], false, "{fail}");
    studio.offer(espeak(
        "tts-after",
        json!({"kind": "audio_tts", "text": "Still here."}),
    ));
    studio
        .wait_upload_within("tts-after", bounds::engine_work())
        .await;
}

/// The Piper voice's two files as served `modelSource.files` entries.
fn voice_files(studio: &FakeStudio) -> (Value, Value) {
    let model = models::path(models::VOICE);
    let config = models::path(&format!("{}.json", models::VOICE));
    (
        studio.serve_model_file("model", &model),
        studio.serve_model_file("config", &config),
    )
}

fn piper(id: &str, files: Vec<Value>, task: Value) -> Value {
    json!({"jobId": id, "gameId": "g", "assetName": format!("g/{id}"), "model": "piper-joe", "vramGbEstimate": 0.1,
        "task": task, "modelSource": {"engine": "piper", "files": files, "cliDefaults": {"cfgScale": 1.0, "steps": 1, "width": 1, "height": 1}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piper_speaks_a_neural_voice_that_whisper_transcribes_word_for_word() {
    let dir = tempfile::tempdir().unwrap();
    let studio = FakeStudio::start().await;
    let (model, config) = voice_files(&studio);
    let whisper = studio.serve_model_file("model", &models::path(models::WHISPER));
    let stt_src = json!({"engine": "whisper-cpp", "files": [whisper], "cliDefaults": {"cfgScale": 1.0, "steps": 1, "width": 1, "height": 1}});
    let cfg = format!(
        "engine_threads = 1\nonnxruntime_path = \"{}\"\n",
        models::path(models::ORT).display()
    );
    let (home, _worker) = start_worker(&studio, &cfg, &[]).await;
    let hello = studio.wait_frame("hello", "").await;
    assert!(
        hello["capabilities"]["supportedModelsPerKind"]["audio_tts"]
            .as_array()
            .unwrap()
            .contains(&json!("piper:*")),
        "{hello}"
    );

    studio.offer(piper(
        "joe",
        vec![model.clone(), config.clone()],
        json!({"kind": "audio_tts", "text": SENTENCE}),
    ));
    let up = studio
        .wait_upload_within("joe", bounds::engine_work())
        .await;
    assert_eq!(up.ext, "wav");
    let (format, seconds) = probe(dir.path(), "joe.wav", &up.bytes);
    assert_eq!(format, "wav");
    assert!((2.0..15.0).contains(&seconds), "{seconds} s");
    studio.serve_file("joe.wav", up.bytes);
    studio.offer(json!({"jobId": "hear-joe", "gameId": "g", "assetName": "g/hear", "model": "whisper-tiny.en", "vramGbEstimate": 0.2,
        "task": {"kind": "audio_stt", "inputUrl": studio.file_url("joe.wav"), "language": "en"}, "modelSource": stt_src}));
    let done = studio
        .wait_frame_within("completeJson", "hear-joe", bounds::engine_work())
        .await;
    let text = done["result"]["text"].as_str().unwrap();
    let e = wer(SENTENCE, text);
    assert!(e < 0.2, "WER {e:.2} for {text:?}");

    // Double speed: about half the duration (the length scale, then
    // atempo for what whole-frame phonemes leave over).
    studio.offer(piper(
        "joe-2x",
        vec![model.clone(), config.clone()],
        json!({"kind": "audio_tts", "text": SENTENCE, "speed": 2.0}),
    ));
    let fast = studio
        .wait_upload_within("joe-2x", bounds::engine_work())
        .await;
    let (_, fast_seconds) = probe(dir.path(), "joe-2x.wav", &fast.bytes);
    let ratio = fast_seconds / seconds;
    assert!(
        (0.425..=0.575).contains(&ratio),
        "speed 2.0: {fast_seconds:.2} s against {seconds:.2} s ({ratio:.2}, not half within 15 %)"
    );

    // The voice stays loaded: an mp3 on the same runner, no second load.
    studio.offer(piper(
        "joe-mp3",
        vec![model.clone(), config],
        json!({"kind": "audio_tts", "text": "Short and clear.", "ext": "mp3"}),
    ));
    let up = studio
        .wait_upload_within("joe-mp3", bounds::engine_work())
        .await;
    let (format, _) = probe(dir.path(), "joe.mp3", &up.bytes);
    assert_eq!(format, "mp3");
    let runner = home.wait_runner("piper").await;
    assert_eq!(runner["loads"], 1, "{runner}");

    // A voice without its config: bad input naming the role; the worker
    // takes the next job.
    studio.offer(piper(
        "no-config",
        vec![model],
        json!({"kind": "audio_tts", "text": "Hello."}),
    ));
    let fail = studio.wait_frame("fail", "no-config").await;
    let error = fail["error"].as_str().unwrap();
    assert!(
        error.contains("`config`") && error.contains(".onnx.json"),
        "{fail}"
    );
    assert_eq!(fail["retryable"], false, "{fail}");
    studio.offer(espeak(
        "after-no-config",
        json!({"kind": "audio_tts", "text": "Still here."}),
    ));
    studio
        .wait_upload_within("after-no-config", bounds::engine_work())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_usable_onnx_runtime_piper_and_onnx_are_not_offered_and_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("libonnxruntime.so.1.99.0");
    let not_ort = models::path(&format!("{}.json", models::VOICE));
    let cases = [
        (missing.clone(), "does not exist"),
        (not_ort.clone(), "dlopen"),
        (models::path(models::OLD_ORT), "1.19.2"),
    ];
    for (i, (lib, cause)) in cases.iter().enumerate() {
        let studio = FakeStudio::start().await;
        let (model, config) = voice_files(&studio);
        let cfg = format!("onnxruntime_path = \"{}\"\n", lib.display());
        let (home, _worker) = start_worker(&studio, &cfg, &[]).await;
        let hello = studio.wait_frame("hello", "").await;
        let kinds = &hello["capabilities"]["supportedModelsPerKind"];
        assert!(
            !kinds["audio_tts"]
                .as_array()
                .unwrap()
                .contains(&json!("piper:*")),
            "{lib:?}: {kinds}"
        );
        assert!(
            !kinds["image"]
                .as_array()
                .unwrap()
                .contains(&json!("onnx:*")),
            "{lib:?}: {kinds}"
        );
        let id = format!("piper-{i}");
        studio.offer(piper(
            &id,
            vec![model, config],
            json!({"kind": "audio_tts", "text": "Hello."}),
        ));
        let fail = studio.wait_frame("fail", &id).await;
        let error = fail["error"].as_str().unwrap();
        assert!(
            error.contains("piper") && error.contains(cause),
            "{lib:?}: {fail}"
        );
        assert_eq!(fail["retryable"], true, "engine-unavailable: {fail}");
        // The same for object removal (engine-runner-onnx).
        let id = format!("onnx-{i}");
        studio.offer(json!({"jobId": id, "gameId": "g", "assetName": "g/o", "model": "lama", "vramGbEstimate": 0.5,
            "task": {"kind": "image", "prompt": "", "initImageUrl": studio.file_url("x.png"), "maskUrl": studio.file_url("m.png")},
            "modelSource": {"engine": "onnx", "files": [], "cliDefaults": {"cfgScale": 1.0, "steps": 1, "width": 512, "height": 512}}}));
        let fail = studio.wait_frame("fail", &id).await;
        let error = fail["error"].as_str().unwrap();
        assert!(
            error.contains("onnx") && error.contains(cause),
            "{lib:?}: {fail}"
        );
        assert_eq!(fail["retryable"], true, "engine-unavailable: {fail}");
        // `status` says it too, for both.
        let status = home.cli(&["status"]);
        let shown = String::from_utf8_lossy(&status.stdout);
        assert!(
            shown.contains("not usable:")
                && shown.contains("piper: ")
                && shown.contains("onnx: ")
                && shown.contains(cause),
            "{shown}"
        );
        // The worker takes the next job.
        studio.offer(espeak(
            &format!("after-{i}"),
            json!({"kind": "audio_tts", "text": "Still here."}),
        ));
        studio
            .wait_upload_within(&format!("after-{i}"), bounds::engine_work())
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_words_stream_to_a_file_and_peak_like_twenty() {
    let studio = FakeStudio::start().await;
    let (model, config) = voice_files(&studio);
    // The same voice under other names: another model, so a fresh runner.
    let copies = tempfile::tempdir().unwrap();
    let copy = copies.path().join("joe-copy.onnx");
    std::fs::copy(models::path(models::VOICE), &copy).unwrap();
    std::fs::copy(
        models::path(&format!("{}.json", models::VOICE)),
        copies.path().join("joe-copy.onnx.json"),
    )
    .unwrap();
    let model2 = studio.serve_model_file("model", &copy);
    let config2 = studio.serve_model_file("config", &copies.path().join("joe-copy.onnx.json"));
    let cfg = format!(
        "engine_threads = 1\nmodel_keep_alive_secs = -1\nonnxruntime_path = \"{}\"\n",
        models::path(models::ORT).display()
    );
    let (home, _worker) = start_worker(&studio, &cfg, &[]).await;
    // 20 words, then 1,000 (fifty sentences of twenty).
    let twenty = "The quick brown fox jumps over the lazy dog, and then it runs back home across the wide green field.";
    assert_eq!(words(twenty).len(), 20);
    let thousand = vec![twenty; 50].join(" ");
    assert_eq!(words(&thousand).len(), 1000);
    let mut peaks = Vec::new();
    for (id, files, text) in [
        ("short", vec![model, config], twenty.to_string()),
        ("long", vec![model2, config2], thousand),
    ] {
        let mut claim = piper(id, files, json!({"kind": "audio_tts", "text": text}));
        claim["model"] = json!(format!("piper-{id}"));
        studio.offer(claim);
        let up = studio.wait_upload_within(id, bounds::engine_work()).await;
        assert!(up.bytes.len() > 44, "{id}: {} bytes", up.bytes.len());
        let model_id = format!("piper-{id}");
        let status = home
            .wait_status(&format!("the runner of {id}"), |s| {
                s["runners"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r["model"] == model_id.as_str()))
            })
            .await;
        let pid = status["runners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["model"] == model_id.as_str())
            .and_then(|r| r["pid"].as_u64())
            .unwrap() as u32;
        let (_, peak_kib) = studio_worker_tests::proc::rss_kib(pid);
        assert!(peak_kib > 0, "{id}: no VmHWM for pid {pid}");
        peaks.push((id, peak_kib, up.bytes.len()));
    }
    eprintln!("runner peak RSS (KiB) and result bytes: {peaks:?}");
    let (short, long) = (peaks[0].1 as i64, peaks[1].1 as i64);
    assert!(
        (long - short).abs() < 20 * 1024,
        "peak RSS: 20 words {} MiB, 1,000 words {} MiB ({peaks:?})",
        short / 1024,
        long / 1024
    );
    // And the long one really is long: many times the audio.
    assert!(peaks[1].2 > 20 * peaks[0].2, "{peaks:?}");
}
