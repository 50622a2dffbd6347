//! The local OpenAI-compatible API, driven by the official `openai` Python
//! client (PyPI `openai`), against a worker that also holds a studio
//! session: models, chat (synthetic and a real llama.cpp model, with stop
//! strings and a JSON schema), images, the token, and sharing the GPU
//! with studio jobs (a local request waits for a studio job; a full queue
//! answers 503; a studio offer during a local job is rejected `busy`).

use std::process::{Command, Stdio};

use serde_json::{json, Value};
use studio_worker_tests::bounds;
use studio_worker_tests::claims::{claim, claim_with, image};
use studio_worker_tests::models;
use studio_worker_tests::proc::{Gate, WorkerHome, WorkerProc};
use studio_worker_tests::start_worker;
use studio_worker_tests::studio::FakeStudio;

const API: &str = "local_api_listen = \"127.0.0.1:0\"\n";

/// The API's base URL and token for the worker running in `home`.
async fn api_of(home: &WorkerHome) -> (String, String) {
    let config = home.config();
    let addr = bounds::until("the local API in the run file", bounds::event(), || {
        studio_worker::control::read_run_file(&config)?.local_api
    })
    .await;
    let token = std::fs::read_to_string(studio_worker::local_api::token_path(&config))
        .expect("the token file")
        .trim()
        .to_string();
    (format!("http://{addr}/v1"), token)
}

/// Starts `script` (Python, with `openai` importable and the client
/// pointed at `api`); it prints one JSON value.
fn python(api: &(String, String), script: &str) -> std::process::Child {
    Command::new("python3")
        .arg("-c")
        .arg(script)
        .env("PYTHONPATH", models::path(models::OPENAI))
        .env("OPENAI_BASE_URL", &api.0)
        .env("OPENAI_API_KEY", &api.1)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs")
}

/// Waits for a [`python`] child off the runtime and reads its JSON.
async fn answer(child: std::process::Child) -> Value {
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("python ends");
    assert!(
        out.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A worker with the local API and the test GGUF as `[[models]]` `smol`,
/// and the API's address and token.
async fn with_smol() -> (FakeStudio, WorkerHome, WorkerProc, (String, String)) {
    let studio = FakeStudio::start().await;
    let config = format!(
        "{API}[[models]]\nname = \"smol\"\nengine = \"llama-cpp\"\nfiles = [{{ role = \"model\", path = \"{}\" }}]\n",
        models::path(models::GGUF).display()
    );
    let (home, worker) = start_worker(&studio, &config, &[]).await;
    let api = api_of(&home).await;
    (studio, home, worker, api)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_client_lists_models_chats_and_draws() {
    let studio = FakeStudio::start().await;
    let (home, _worker) = start_worker(&studio, API, &[]).await;
    let api = api_of(&home).await;
    let out_dir = tempfile::tempdir().unwrap();
    let script = format!(
        r#"
import base64, json, os, openai
c = openai.OpenAI()
out = {{"models": [m.id for m in c.models.list()]}}
r = c.chat.completions.create(model="synthetic", messages=[{{"role": "system", "content": "be brief"}}, {{"role": "user", "content": "Tell me about golems."}}], max_tokens=16)
out["object"] = r.object
out["content"] = r.choices[0].message.content
out["finish"] = r.choices[0].finish_reason
out["id"] = r.id
imgs = c.images.generate(model="synthetic", prompt="a fox", size="48x32", n=2, response_format="b64_json")
for i, d in enumerate(imgs.data):
    open(os.path.join({dir:?}, f"{{i}}.png"), "wb").write(base64.b64decode(d.b64_json))
out["images"] = len(imgs.data)
try:
    openai.OpenAI(api_key="not-the-token").models.list()
    out["wrong_token"] = "accepted"
except openai.AuthenticationError as e:
    out["wrong_token"] = e.status_code
try:
    c.chat.completions.create(model="no-such-model", messages=[{{"role": "user", "content": "hi"}}])
except openai.NotFoundError as e:
    out["unknown_model"] = e.status_code
print(json.dumps(out))
"#,
        dir = out_dir.path().display().to_string()
    );
    let out = answer(python(&api, &script)).await;
    assert_eq!(out["models"], json!(["synthetic"]), "{out}");
    assert_eq!(out["object"], "chat.completion");
    assert!(!out["content"].as_str().unwrap().is_empty(), "{out}");
    assert!(
        out["id"].as_str().unwrap().starts_with("chatcmpl-api-"),
        "{out}"
    );
    assert_eq!(out["images"], 2);
    for i in 0..2 {
        let img = image::open(out_dir.path().join(format!("{i}.png"))).expect("a PNG");
        assert_eq!((img.width(), img.height()), (48, 32));
    }
    assert_eq!(out["wrong_token"], 401);
    assert_eq!(out["unknown_model"], 404);
    // Local jobs are counted as such, and never reach the studio.
    assert!(studio.frames("completeJson").is_empty());
    assert!(studio.uploads().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_llama_model_answers_with_stop_strings_and_a_json_schema() {
    let (_studio, _home, _worker, api) = with_smol().await;
    let script = r#"
import json, openai
c = openai.OpenAI()
out = {"models": [m.id for m in c.models.list()]}
r = c.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Count from one to ten in words, separated by commas."}], max_tokens=40, temperature=0, stop=["five"])
out["stopped"] = r.choices[0].message.content
out["usage"] = r.usage.completion_tokens
schema = {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}}, "required": ["city", "country"], "additionalProperties": False}
r = c.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Name a city and its country."}], max_tokens=60, temperature=0,
    response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": schema, "strict": True}})
out["json"] = json.loads(r.choices[0].message.content)
print(json.dumps(out))
"#;
    let out = tokio::time::timeout(bounds::engine_work(), answer(python(&api, script)))
        .await
        .expect("the llama answers in time");
    assert_eq!(out["models"], json!(["synthetic", "smol"]), "{out}");
    let stopped = out["stopped"].as_str().unwrap().to_lowercase();
    assert!(
        !stopped.contains("five") && !stopped.contains("six"),
        "{stopped}"
    );
    assert!(out["usage"].as_u64().unwrap() > 0, "{out}");
    let place = &out["json"];
    assert!(
        place["city"].is_string() && place["country"].is_string(),
        "{place}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_requests_wait_for_a_studio_job_and_a_full_queue_answers_503() {
    let studio = FakeStudio::start().await;
    let (home, _worker) = start_worker(
        &studio,
        &format!("{API}local_api_queue = 1\n"),
        &[("STUDIO_WORKER_FAULT_INJECTION", "1")],
    )
    .await;
    let api = api_of(&home).await;
    let gate = Gate::new();
    studio.offer(claim_with(
        "studio-long",
        &gate.model(),
        image(16, 16, "png"),
    ));
    gate.started().await;
    // The first request waits in the queue…
    let waiting = python(
        &api,
        r#"
import json, openai
r = openai.OpenAI().chat.completions.create(model="synthetic", messages=[{"role": "user", "content": "hello"}], max_tokens=8)
print(json.dumps({"content": r.choices[0].message.content}))
"#,
    );
    let queued = bounds::until("the request to be queued", bounds::event(), || {
        let s: Value = serde_json::from_str(
            &std::fs::read_to_string(studio_worker::state::status_path_for(&home.config())).ok()?,
        )
        .ok()?;
        (s["localQueue"].as_u64()? == 1).then_some(())
    });
    queued.await;
    // …a second finds the queue full.
    let full = answer(python(
        &api,
        r#"
import json, openai
try:
    openai.OpenAI(max_retries=0).chat.completions.create(model="synthetic", messages=[{"role": "user", "content": "hi"}])
    print(json.dumps({"status": 200}))
except openai.APIStatusError as e:
    print(json.dumps({"status": e.status_code, "retry_after": e.response.headers.get("retry-after"), "code": e.body.get("code") if isinstance(e.body, dict) else None}))
"#,
    ))
    .await;
    assert_eq!(full["status"], 503, "{full}");
    assert_eq!(full["retry_after"], "5", "{full}");
    assert_eq!(full["code"], "queue_full", "{full}");
    gate.open();
    studio.wait_upload("studio-long").await;
    let done = answer(waiting).await;
    assert!(!done["content"].as_str().unwrap().is_empty(), "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_studio_offer_during_a_local_stream_is_rejected_busy_and_the_stream_completes() {
    let studio = FakeStudio::start().await;
    let gate = Gate::new();
    // A named model that is a fault: its jobs wait at the gate.
    let config = format!(
        "{API}[[models]]\nname = \"{}\"\nengine = \"synthetic\"\nfiles = []\n",
        gate.model()
    );
    let (home, _worker) =
        start_worker(&studio, &config, &[("STUDIO_WORKER_FAULT_INJECTION", "1")]).await;
    let api = api_of(&home).await;
    let local = python(
        &api,
        &format!(
            r#"
import json, openai
parts = [ch.choices[0].delta.content or "" for ch in openai.OpenAI().chat.completions.create(model={:?}, messages=[{{"role": "user", "content": "hi"}}], max_tokens=8, stream=True) if ch.choices]
print(json.dumps({{"content": "".join(parts)}}))
"#,
            gate.model()
        ),
    );
    gate.started().await;
    let mark = studio.mark();
    studio.offer(claim("studio-1", image(8, 8, "png")));
    assert_eq!(
        studio.wait_frame("reject", "studio-1").await["code"],
        "busy"
    );
    // The heartbeat never names the local job.
    let hb = studio.wait_heartbeat(mark, true).await;
    assert!(hb["currentJobId"].is_null(), "{hb}");
    gate.open();
    let done = answer(local).await;
    assert!(!done["content"].as_str().unwrap().is_empty(), "{done}");
    studio.offer(claim("studio-2", image(8, 8, "png")));
    studio.wait_upload("studio-2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_chat_comes_as_chunks_with_usage_and_done() {
    let studio = FakeStudio::start().await;
    let (home, _worker) = start_worker(&studio, API, &[]).await;
    let api = api_of(&home).await;
    let script = r#"
import json, openai
c = openai.OpenAI()
msgs = [{"role": "user", "content": "Tell me about golems."}]
whole = c.chat.completions.create(model="synthetic", messages=msgs, max_tokens=32).choices[0].message.content
parts, finish, usage, roles = [], None, None, []
for ch in c.chat.completions.create(model="synthetic", messages=msgs, max_tokens=32, stream=True, stream_options={"include_usage": True}):
    if ch.usage is not None:
        usage = ch.usage.completion_tokens
    for choice in ch.choices:
        if choice.delta.role:
            roles.append(choice.delta.role)
        if choice.delta.content:
            parts.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
print(json.dumps({"whole": whole, "parts": parts, "finish": finish, "usage": usage, "roles": roles}))
"#;
    let out = answer(python(&api, script)).await;
    let parts: Vec<&str> = out["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(parts.len() > 2, "streamed in pieces: {out}");
    assert_eq!(parts.concat(), out["whole"].as_str().unwrap(), "{out}");
    assert_eq!(out["finish"], "stop");
    assert_eq!(out["roles"], json!(["assistant"]));
    assert!(out["usage"].as_u64().unwrap() > 0, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_llama_stream_matches_the_answer_and_a_closed_stream_stops_generating() {
    let (_studio, home, _worker, api) = with_smol().await;
    // Greedy decoding: the whole answer, then the same streamed, then the
    // same streamed again but closed after three pieces.
    let script = r#"
import json, openai
c = openai.OpenAI()
msgs = [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}]
kw = dict(model="smol", messages=msgs, max_tokens=64, temperature=0, seed=7)
whole = c.chat.completions.create(**kw)
streamed = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(stream=True, **kw) if ch.choices)
s = c.chat.completions.create(stream=True, **kw)
got = 0
for ch in s:
    if ch.choices and ch.choices[0].delta.content:
        got += 1
        if got == 3:
            break
s.close()
after = c.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Say hi."}], max_tokens=4, temperature=0)
print(json.dumps({"whole": whole.choices[0].message.content, "tokens": whole.usage.completion_tokens,
                  "streamed": streamed, "after": after.choices[0].message.content}))
"#;
    let out = tokio::time::timeout(bounds::engine_work(), answer(python(&api, script)))
        .await
        .expect("the llama answers in time");
    assert_eq!(out["streamed"], out["whole"], "{out}");
    assert!(!out["after"].as_str().unwrap().is_empty(), "{out}");
    let full = out["tokens"].as_u64().unwrap();
    assert!(full > 20, "the story is long enough to cut short: {out}");
    // The closed stream's job ended as cancelled, well before its budget.
    let recent = bounds::until("the cancelled job in the status", bounds::event(), || {
        let s: Value = serde_json::from_str(
            &std::fs::read_to_string(studio_worker::state::status_path_for(&home.config())).ok()?,
        )
        .ok()?;
        s["recent"]
            .as_array()?
            .iter()
            .find(|f| f["outcome"] == "cancelled")
            .cloned()
    })
    .await;
    let cut = recent["tokens"].as_u64().unwrap();
    assert!(cut < full, "stopped after {cut} of {full} tokens: {recent}");
    eprintln!("cancelled after {cut} of {full} tokens");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_from_espeak_is_transcribed_back_by_whisper() {
    let studio = FakeStudio::start().await;
    let config = format!(
        "{API}engine_threads = 1\n[[models]]\nname = \"voice\"\nengine = \"espeak\"\nfiles = []\n[[models]]\nname = \"whisper-tiny.en\"\nengine = \"whisper-cpp\"\nfiles = [{{ role = \"model\", path = \"{}\" }}]\n",
        models::path(models::WHISPER).display()
    );
    let (home, _worker) = start_worker(&studio, &config, &[]).await;
    let api = api_of(&home).await;
    let dir = tempfile::tempdir().unwrap();
    let sentence = "The quick brown fox jumps over the lazy dog.";
    let script = format!(
        r#"
import json, openai, os
c = openai.OpenAI()
wav = os.path.join({dir:?}, "speech.wav")
c.audio.speech.create(model="voice", voice="en", input={sentence:?}, response_format="wav").write_to_file(wav)
text = c.audio.transcriptions.create(model="whisper-tiny.en", file=open(wav, "rb"), response_format="text", language="en")
verbose = c.audio.transcriptions.create(model="whisper-tiny.en", file=open(wav, "rb"), response_format="verbose_json", timestamp_granularities=["segment"])
plain = c.audio.transcriptions.create(model="whisper-tiny.en", file=open(wav, "rb"))
heads = {{}}
for fmt in ["mp3", "opus", "flac"]:
    heads[fmt] = c.audio.speech.create(model="voice", voice="en", input="hello", response_format=fmt).content[:4].hex()
print(json.dumps({{"heads": heads, "text": text, "verbose": {{"text": verbose.text, "language": verbose.language, "duration": verbose.duration,
    "segments": [[s.start, s.end, s.text] for s in verbose.segments]}}, "plain": plain.text}}))
"#,
        dir = dir.path().display().to_string()
    );
    let out = tokio::time::timeout(bounds::engine_work(), answer(python(&api, &script)))
        .await
        .expect("speech and transcription in time");
    let wav = std::fs::read(dir.path().join("speech.wav")).unwrap();
    let reader = hound::WavReader::new(std::io::Cursor::new(wav)).expect("a WAV");
    assert!(reader.duration() > 0);
    for text in [&out["text"], &out["verbose"]["text"], &out["plain"]] {
        let text = text.as_str().unwrap();
        let e = studio_worker_tests::speech::wer(sentence, text);
        assert!(e < 0.3, "WER {e:.2} for {text:?}");
    }
    let segments = out["verbose"]["segments"].as_array().unwrap();
    assert!(!segments.is_empty(), "{out}");
    let end = segments.last().unwrap()[1].as_f64().unwrap();
    let duration = out["verbose"]["duration"].as_f64().unwrap();
    assert!(end > 0.0 && end <= duration + 0.5, "{out}");
    assert_eq!(out["verbose"]["language"], "en");
    // The other formats carry their containers' signatures.
    let head = |f: &str| out["heads"][f].as_str().unwrap().to_string();
    assert!(
        head("mp3").starts_with("494433") || head("mp3").starts_with("fff"),
        "{out}"
    );
    assert_eq!(head("opus"), hex::encode(b"OggS"), "{out}");
    assert_eq!(head("flac"), hex::encode(b"fLaC"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_the_api_alone_and_refuses_beside_a_running_worker() {
    let studio = FakeStudio::start().await;
    let (home, _worker) = start_worker(&studio, API, &[]).await;
    api_of(&home).await;
    let out = home.cli(&["serve"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("already runs with"), "{said}");

    // No studio at all: serve answers on its own.
    let alone = WorkerHome::new("http://127.0.0.1:9", None, API);
    let mut serve = alone.spawn_serve(&[]);
    let api = api_of(&alone).await;
    let out = answer(python(
        &api,
        r#"
import json, openai
r = openai.OpenAI().chat.completions.create(model="synthetic", messages=[{"role": "user", "content": "hi"}], max_tokens=8)
print(json.dumps({"content": r.choices[0].message.content}))
"#,
    ))
    .await;
    assert!(!out["content"].as_str().unwrap().is_empty(), "{out}");
    serve.signal(libc::SIGTERM);
    let exit = serve.wait_exit().await;
    assert!(exit.success(), "{exit:?}\n{}", serve.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_scheduler_per_gpu_whatever_config_each_worker_reads() {
    let studio = FakeStudio::start().await;
    // Two configs on one host: their claims meet in one directory.
    let claims = tempfile::tempdir().unwrap();
    let lock_dir = claims.path().to_str().unwrap();
    let env = [
        ("STUDIO_WORKER_FAKE_GPUS", "24"),
        ("STUDIO_WORKER_LOCK_DIR", lock_dir),
    ];
    let (home, mut worker) = start_worker(&studio, API, &env).await;
    let other = WorkerHome::new("http://127.0.0.1:9", None, API);
    // Spawned, not run to completion: without the guard it would serve.
    let mut refused = other.spawn_serve(&env);
    assert!(!refused.wait_exit().await.success());
    let said = refused.log();
    assert!(said.contains("GPU 0"), "{said}");
    assert!(
        said.contains(&format!(
            "pid {}, `run` with {}",
            worker.pid(),
            home.config().display()
        )),
        "{said}"
    );

    // Once the worker is gone the GPU is free; a `serve` holding it now
    // refuses a `run` in turn.
    worker.signal(libc::SIGTERM);
    assert!(worker.wait_exit().await.success(), "{}", worker.log());
    let mut serve = other.spawn_serve(&env);
    api_of(&other).await;
    let mut refused = home.spawn_run(&env);
    assert!(!refused.wait_exit().await.success());
    let said = refused.log();
    assert!(
        said.contains(&format!(
            "pid {}, `serve` with {}",
            serve.pid(),
            other.config().display()
        )),
        "{said}"
    );
    serve.signal(libc::SIGTERM);
    assert!(serve.wait_exit().await.success(), "{}", serve.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_request_goes_where_its_model_is_resident_else_to_the_roomiest_gpu() {
    use studio_worker_tests::studio::{TOKEN, WORKER_ID};
    let studio = FakeStudio::start().await;
    studio.add_identity("w-gpu-1", "tok-gpu-1");
    let home = WorkerHome::new(
        &studio.url(),
        None,
        &format!(
            "{API}gpus = \"all\"\n\
             [[worker]]\ngpu = 0\nworker_id = \"{WORKER_ID}\"\nauth_token = \"{TOKEN}\"\n\
             [[worker]]\ngpu = 1\nworker_id = \"w-gpu-1\"\nauth_token = \"tok-gpu-1\"\n\
             [[models]]\nname = \"other\"\nengine = \"synthetic\"\nfiles = []\n"
        ),
    );
    // GPU 0 has 24 GB, GPU 1 has 8 GB.
    let _worker = home.spawn_run(&[("STUDIO_WORKER_FAKE_GPUS", "24,8")]);
    studio.wait_session(1).await;
    studio.wait_session_of("w-gpu-1").await;
    // A studio job on GPU 1 leaves the synthetic model resident there.
    studio.offer_to("w-gpu-1", claim("studio-on-1", image(8, 8, "png")));
    studio.wait_upload("studio-on-1").await;
    let api = api_of(&home).await;
    let ep = studio_worker_tests::prom::Endpoint::of(&home).await;
    let chat = |model: &str| {
        format!(
            r#"
import json, openai
r = openai.OpenAI().chat.completions.create(model={model:?}, messages=[{{"role": "user", "content": "hi"}}], max_tokens=4)
print(json.dumps({{"content": r.choices[0].message.content}}))
"#
        )
    };
    let local_on = |s: &studio_worker_tests::prom::Scrape, gpu: &str| {
        s.sum(
            "studio_worker_jobs_total",
            &[("origin", "local"), ("gpu", gpu), ("outcome", "completed")],
        )
    };
    // Resident on GPU 1: it goes there, though GPU 0 has more room.
    answer(python(&api, &chat("synthetic"))).await;
    let s = ep.scrape().await;
    assert_eq!((local_on(&s, "0"), local_on(&s, "1")), (0.0, 1.0));
    // Not resident anywhere: the GPU with the most room.
    answer(python(&api, &chat("other"))).await;
    let s = ep.scrape().await;
    assert_eq!((local_on(&s, "0"), local_on(&s, "1")), (1.0, 1.0));
}
