//! Every kind, end to end: fake studio → real `studio-worker` → real
//! `engine-runner` → result back, decoded and checked.

use std::io::Cursor;

use image::{AnimationDecoder, ImageFormat};
use serde_json::json;
use studio_worker_tests::claims::{claim, image, llm};
use studio_worker_tests::start_worker;
use studio_worker_tests::studio::FakeStudio;

fn wav_bytes(seconds: f32, rate: u32, channels: u16) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut buf = Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut buf, spec).unwrap();
    for i in 0..(seconds * rate as f32) as usize * channels as usize {
        w.write_sample(((i as f32 * 0.05).sin() * 8000.0) as i16)
            .unwrap();
    }
    w.finalize().unwrap();
    buf.into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_completes_with_a_valid_result() {
    let studio = FakeStudio::start().await;
    let (_home, _worker) = start_worker(&studio, "", &[]).await;

    // Images in every format at odd sizes.
    for (i, (w, h, ext, fmt)) in [
        (64, 48, "png", ImageFormat::Png),
        (33, 17, "webp", ImageFormat::WebP),
        (120, 80, "jpg", ImageFormat::Jpeg),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("img-{i}");
        studio.offer(claim(&id, image(w, h, ext)));
        studio.wait_frame("accept", &id).await;
        let up = studio.wait_upload(&id).await;
        assert_eq!(up.ext, ext, "uploaded ext is the requested one");
        assert_eq!(up.part_name, "image");
        assert_eq!(up.filename, format!("{id}.{ext}"));
        assert_eq!(up.prompt, "a stone golem in cinematic light");
        let decoded = image::load_from_memory_with_format(&up.bytes, fmt).expect("decodable image");
        assert_eq!((decoded.width(), decoded.height()), (w, h));
    }
    assert_eq!(studio.uploads()[0].content_type, "image/png");

    // Determinism: the same task gives the same bytes.
    studio.offer(claim("img-again", image(64, 48, "png")));
    let again = studio.wait_upload("img-again").await;
    assert_eq!(again.bytes, studio.uploads()[0].bytes);

    // llm: an OpenAI chat.completion with real usage counts.
    studio.offer(claim("llm-1", llm("Tell me about golems, please.")));
    let done = studio.wait_frame("completeJson", "llm-1").await;
    let r = &done["result"];
    assert_eq!(r["object"], "chat.completion");
    assert_eq!(r["choices"][0]["message"]["role"], "assistant");
    assert_eq!(done["prompt"], "Tell me about golems, please.");
    let usage = &r["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() >= 6);
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );

    // llm with a tiny budget stops for length.
    studio.offer(claim(
        "llm-2",
        json!({"kind": "llm", "messages": [{"role": "user", "content": "hi"}], "maxTokens": 2}),
    ));
    let short = studio.wait_frame("completeJson", "llm-2").await;
    assert_eq!(short["result"]["choices"][0]["finish_reason"], "length");
    assert_eq!(short["result"]["usage"]["completion_tokens"], 2);

    // audio_stt: the input WAV is fetched from the studio over loopback.
    studio.serve_file("clip.wav", wav_bytes(1.5, 16_000, 1));
    let url = studio.file_url("clip.wav");
    studio.offer(claim(
        "stt-1",
        json!({"kind": "audio_stt", "inputUrl": url, "language": null}),
    ));
    let stt = studio.wait_frame("completeJson", "stt-1").await;
    assert_eq!(stt["result"]["duration"], 1.5);
    assert_eq!(stt["result"]["language"], "en");
    assert!(stt["result"]["text"]
        .as_str()
        .unwrap()
        .starts_with("[synthetic] transcript of "));
    assert_eq!(stt["prompt"], url);

    // audio_tts: a real WAV whose length follows the text.
    studio.offer(claim(
        "tts-short",
        json!({"kind": "audio_tts", "text": "hi there", "ext": "wav"}),
    ));
    let short = studio.wait_upload("tts-short").await;
    assert_eq!(short.content_type, "audio/wav");
    studio.offer(claim("tts-long", json!({"kind": "audio_tts", "text": "hi there, this sentence is a good deal longer than the first one"})));
    let long = studio.wait_upload("tts-long").await;
    let dur = |b: &[u8]| {
        let r = hound::WavReader::new(Cursor::new(b)).expect("valid wav");
        r.duration() as f64 / r.spec().sample_rate as f64
    };
    assert!(
        dur(&long.bytes) > dur(&short.bytes) * 2.0,
        "longer text, longer audio"
    );

    // video: an animated GIF with fps × seconds frames of the requested size.
    studio.offer(claim("vid-gif", json!({"kind": "video", "prompt": "a tiny dragon", "seconds": 1.0, "fps": 5, "width": 40, "height": 30, "ext": "gif"})));
    let gif = studio.wait_upload("vid-gif").await;
    assert_eq!(gif.ext, "gif");
    let frames = image::codecs::gif::GifDecoder::new(Cursor::new(&gif.bytes))
        .unwrap()
        .into_frames()
        .collect_frames()
        .unwrap();
    assert_eq!(frames.len(), 5);
    assert_eq!(frames[0].buffer().dimensions(), (40, 30));
    assert_ne!(frames[0].buffer(), frames[4].buffer(), "frames move");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_becomes_mp4_and_webm_through_ffmpeg() {
    let studio = FakeStudio::start().await;
    let (_home, _worker) = start_worker(&studio, "", &[]).await;
    studio.offer(claim("vid-mp4", json!({"kind": "video", "prompt": "a tiny dragon", "seconds": 1.5, "fps": 8, "width": 64, "height": 48, "ext": "mp4"})));
    let mp4 = studio.wait_upload("vid-mp4").await;
    assert_eq!(
        (mp4.ext.as_str(), mp4.content_type.as_str()),
        ("mp4", "video/mp4")
    );
    assert_eq!(
        studio_worker_tests::proc::ffprobe(&mp4.bytes, "mp4"),
        (64, 48, "8/1".to_string(), 12)
    );
    // faststart: the moov atom precedes the media data.
    let pos = |tag: &[u8]| mp4.bytes.windows(4).position(|w| w == tag).unwrap();
    assert!(pos(b"moov") < pos(b"mdat"), "mp4 is faststart");

    studio.offer(claim("vid-webm", json!({"kind": "video", "prompt": "a tiny dragon", "seconds": 1.0, "fps": 4, "width": 32, "height": 32, "ext": "webm"})));
    let webm = studio.wait_upload("vid-webm").await;
    assert_eq!(
        studio_worker_tests::proc::ffprobe(&webm.bytes, "webm"),
        (32, 32, "4/1".to_string(), 4)
    );

    // Odd sizes cannot be yuv420p: a clear, non-retryable failure.
    studio.offer(claim("vid-odd", json!({"kind": "video", "prompt": "x", "seconds": 1.0, "width": 33, "height": 32, "ext": "mp4"})));
    let fail = studio.wait_frame("fail", "vid-odd").await;
    assert_eq!(fail["retryable"], false);
    assert!(fail["error"].as_str().unwrap().contains("even"), "{fail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_ffmpeg_is_a_clear_job_error() {
    let studio = FakeStudio::start().await;
    // A PATH with no ffmpeg on it.
    let empty = tempfile::tempdir().unwrap();
    let path = empty.path().to_string_lossy().to_string();
    let (_home, _worker) = start_worker(&studio, "", &[("PATH", &path)]).await;
    studio.offer(claim("vid-noff", json!({"kind": "video", "prompt": "x", "seconds": 1.0, "width": 32, "height": 32, "ext": "mp4"})));
    let fail = studio.wait_frame("fail", "vid-noff").await;
    let msg = fail["error"].as_str().unwrap();
    assert!(msg.contains("ffmpeg not found on PATH"), "{msg}");
    assert_eq!(fail["retryable"], true, "another worker may have ffmpeg");
    // GIF needs no ffmpeg and still works on this worker.
    studio.offer(claim("vid-gif2", json!({"kind": "video", "prompt": "x", "seconds": 1.0, "fps": 2, "width": 16, "height": 16, "ext": "gif"})));
    studio.wait_upload("vid-gif2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_limits_fail_naming_the_field() {
    let studio = FakeStudio::start().await;
    let (_home, _worker) = start_worker(&studio, "", &[]).await;
    for (id, task, field) in [
        ("too-wide", image(9000, 10, "png"), "task.width"),
        ("too-many", image(8000, 8000, "png"), "40-megapixel"),
        ("bad-ext", image(10, 10, "bmp"), "task.ext"),
        (
            "tts-mp3",
            json!({"kind": "audio_tts", "text": "x", "ext": "mp3"}),
            "task.ext",
        ),
    ] {
        studio.offer(claim(id, task));
        let fail = studio.wait_frame("fail", id).await;
        assert_eq!(fail["retryable"], false, "{fail}");
        assert!(fail["error"].as_str().unwrap().contains(field), "{fail}");
    }
}
