//! llama.cpp end to end: the real `engine-runner-llama` running the real
//! library on SmolLM2-135M-Instruct (a real GGUF from PyPI), whose file the
//! fake studio serves over loopback. Greedy decoding, so answers are fixed.
//!
//! One test function: engine work runs one job at a time, 1 thread.

use serde_json::{json, Value};
use studio_worker_tests::bounds;
use studio_worker_tests::studio::FakeStudio;
use studio_worker_tests::{models, start_worker};

fn offer(id: &str, src: &Value, task: Value) -> Value {
    json!({"jobId": id, "gameId": "g", "assetName": format!("g/{id}"), "model": "smollm2-135m", "vramGbEstimate": 0.2, "task": task, "modelSource": src})
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

async fn completion(studio: &FakeStudio, id: &str) -> Value {
    let done = studio
        .wait_frame_within("completeJson", id, bounds::engine_work())
        .await;
    done["result"].clone()
}

fn content(r: &Value) -> String {
    r["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llama_cpp_answers_stops_constrains_and_refuses_long_prompts() {
    let gguf = models::path(models::GGUF);
    let studio = FakeStudio::start().await;
    let file = studio.serve_model_file("model", &gguf);
    let src = json!({"engine": "llama-cpp", "files": [file], "cliDefaults": {"cfgScale": 1.0, "steps": 1, "width": 1, "height": 1, "contextSize": 2048}});
    let (home, worker) = start_worker(&studio, "engine_threads = 1\n", &[]).await;
    let hello = studio.wait_frame("hello", "").await;
    assert!(
        hello["capabilities"]["supportedModelsPerKind"]["llm"]
            .as_array()
            .unwrap()
            .contains(&json!("llama-cpp:*")),
        "{hello}"
    );

    // A factual question, greedy.
    studio.offer(offer(
        "fact",
        &src,
        json!({"kind": "llm", "messages": user("What is the capital city of France? Answer with one word."), "maxTokens": 24, "temperature": 0}),
    ));
    let r = completion(&studio, "fact").await;
    assert_eq!(r["object"], "chat.completion");
    assert!(content(&r).contains("Paris"), "{r}");
    assert_eq!(r["choices"][0]["finish_reason"], "stop", "{r}");
    let usage = &r["usage"];
    let (p, c) = (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
    );
    assert!(p > 5 && c > 0, "{usage}");
    assert_eq!(usage["total_tokens"].as_u64().unwrap(), p + c);
    assert!(r["elapsed_ms"].as_u64().is_some(), "{r}");

    // The budget: exactly maxTokens, finish_reason length.
    studio.offer(offer(
        "budget",
        &src,
        json!({"kind": "llm", "system": "You are a storyteller.", "messages": user("Tell me a long story about a dragon."), "maxTokens": 5, "temperature": 0}),
    ));
    let r = completion(&studio, "budget").await;
    assert_eq!(r["choices"][0]["finish_reason"], "length", "{r}");
    assert_eq!(r["usage"]["completion_tokens"], 5, "{r}");

    // Stop strings: cut before the stop, never emitted. The same prompt
    // without a stop shows what the stop removed.
    let count = user("Count from 1 to 10, separated by commas.");
    studio.offer(offer(
        "nostop",
        &src,
        json!({"kind": "llm", "messages": count, "maxTokens": 40, "temperature": 0}),
    ));
    let free = content(&completion(&studio, "nostop").await);
    assert!(free.contains('5') && free.contains('7'), "{free}");
    studio.offer(offer(
        "stop",
        &src,
        json!({"kind": "llm", "messages": count, "maxTokens": 40, "temperature": 0, "stop": ["5"]}),
    ));
    let r = completion(&studio, "stop").await;
    let stopped = content(&r);
    assert_eq!(r["choices"][0]["finish_reason"], "stop", "{r}");
    assert!(!stopped.contains('5'), "{stopped}");
    assert!(
        free.starts_with(&stopped),
        "{stopped:?} is a prefix of {free:?}"
    );
    assert!(stopped.contains('4'), "{stopped}");

    // JSON schema: the output parses and has the required typed fields.
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}}, "required": ["city", "population"], "additionalProperties": false});
    studio.offer(offer(
        "schema",
        &src,
        json!({"kind": "llm", "messages": user("Describe Paris as JSON with its city name and population."), "maxTokens": 64, "temperature": 0, "jsonSchema": schema}),
    ));
    let r = completion(&studio, "schema").await;
    let out: Value =
        serde_json::from_str(&content(&r)).unwrap_or_else(|e| panic!("not JSON ({e}): {r}"));
    let obj = out
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {out}"));
    assert!(obj["city"].is_string(), "{out}");
    assert!(
        obj["population"].is_i64() || obj["population"].is_u64(),
        "{out}"
    );
    assert_eq!(obj.len(), 2, "no other keys: {out}");

    // Seeded sampling is repeatable.
    let sampled = json!({"kind": "llm", "messages": user("Write a short poem about the sea."), "maxTokens": 16, "temperature": 0.9, "topP": 0.95, "seed": 42});
    studio.offer(offer("seed-a", &src, sampled.clone()));
    let a = content(&completion(&studio, "seed-a").await);
    studio.offer(offer("seed-b", &src, sampled));
    let b = content(&completion(&studio, "seed-b").await);
    assert_eq!(a, b, "same seed, same text");

    // All of that on one load.
    let l = studio.loads_through("seed-b").await;
    assert_eq!(
        l.len(),
        1,
        "one load for one model: {l:?}\n{}",
        worker.log()
    );
    assert!(l[0].contains("(load #1;"), "{l:?}");

    // A prompt longer than the context is refused, not truncated.
    let mut small = src.clone();
    small["cliDefaults"]["contextSize"] = json!(128);
    let long = "Please repeat the following words carefully. ".repeat(40);
    studio.offer(offer(
        "too-long",
        &small,
        json!({"kind": "llm", "messages": user(&long), "maxTokens": 8}),
    ));
    let fail = studio
        .wait_frame_within("fail", "too-long", bounds::engine_work())
        .await;
    assert_eq!(fail["retryable"], false, "{fail}");
    let msg = fail["error"].as_str().unwrap();
    assert!(msg.contains("does not fit the 128-token context"), "{msg}");
    // Bad input names the field.
    studio.offer(offer("empty", &src, json!({"kind": "llm", "messages": []})));
    let fail = studio
        .wait_frame_within("fail", "empty", bounds::engine_work())
        .await;
    assert!(
        fail["error"].as_str().unwrap().contains("task.messages"),
        "{fail}"
    );

    // A person drives the same engine: `studio-worker job` with the file
    // on disk (twice on one runner: the model loads once), and
    // `engine-runner --engine llama-cpp` in JSON-lines mode.
    let model_file = format!("model={}", gguf.display());
    let timings = home.dir.path().join("timings.json");
    let out = home.cli(&[
        "job",
        "llm",
        "--engine",
        "llama-cpp",
        "--prompt",
        "What is the capital city of France? Answer with one word.",
        "--temperature",
        "0",
        "--file",
        &model_file,
        "--repeat",
        "2",
        "--timings",
        &timings.to_string_lossy(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(content(&r).contains("Paris"), "{r}");
    let loads: Vec<_> = stderr
        .lines()
        .filter(|l| l.contains("model loaded"))
        .collect();
    assert_eq!(loads.len(), 1, "--repeat keeps the model loaded: {stderr}");
    assert!(stderr.contains("run 2/2:"), "{stderr}");
    let rows: Vec<Value> = serde_json::from_slice(&std::fs::read(&timings).unwrap()).unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows.iter().all(|r| r["ms"].as_f64().unwrap() > 0.0),
        "{rows:?}"
    );
    let lines = studio_worker_tests::proc::runner_json(
        &[
            "--engine",
            "llama-cpp",
            "--threads",
            "1",
            "--model",
            &gguf.to_string_lossy(),
        ],
        &[
            json!({"job": {"jobId": "by-hand", "task": {"kind": "llm", "messages": user("What is the capital city of France? Answer with one word."), "temperature": 0}}}),
        ],
    );
    assert_eq!(lines[0]["hello"]["engine"], "llama-cpp", "{lines:?}");
    let result = lines
        .iter()
        .find_map(|l| l["result"]["output"]["json"]["value"].as_object().cloned())
        .unwrap_or_else(|| panic!("no result in {lines:?}"));
    assert!(content(&Value::Object(result)).contains("Paris"));
}
