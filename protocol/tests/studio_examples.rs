//! Every JSON example of the studio contract parses into our types and
//! serialises back to a superset of itself (defaults may be added, nothing
//! the example said may change or vanish).

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use studio_protocol::studio::http::{
    BootstrapRegisterRequest, BootstrapRegisterResponse, RegisterPollResponse, RegisterRequestBody,
    RegisterRequestResponse,
};
use studio_protocol::studio::*;

/// Asserts that every key of `small` is in `big` with an equal value,
/// recursively (nulls in `small` count as absent).
fn assert_subset(small: &Value, big: &Value, path: &str) {
    match (small, big) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                if v.is_null() {
                    continue;
                }
                let Some(bv) = b.get(k) else {
                    panic!("{path}.{k} vanished in round trip");
                };
                assert_subset(v, bv, &format!("{path}.{k}"));
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{path}: array length changed");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_subset(x, y, &format!("{path}[{i}]"));
            }
        }
        (Value::Number(a), Value::Number(b)) => {
            assert_eq!(a.as_f64(), b.as_f64(), "{path}: number changed");
        }
        _ => assert_eq!(small, big, "{path} changed"),
    }
}

fn round_trip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(text: &str) -> T {
    let original: Value = serde_json::from_str(text).expect("example is JSON");
    let parsed: T = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let back = serde_json::to_value(&parsed).unwrap();
    assert_subset(&original, &back, "$");
    let again: T = serde_json::from_value(back).unwrap();
    assert_eq!(parsed, again);
    parsed
}

const SYNTH_SOURCE: &str = r#"{"engine": "synthetic", "files": [], "cliDefaults": {"cfgScale": 1.0, "steps": 8, "width": 1024, "height": 1024}}"#;

#[test]
fn capabilities_examples() {
    let newest = r#"{"machineName": "rig-01","username": "webber","agentVersion": "0.2.0","engine": "synthetic","vramTotalGb": 24.0,"vramThresholdGb": 12.0,"autoEnabled": true,"autoStart": false,"autoUpdate": true,"startMinimised": true,"onlyWhenIdle": true,"userPresence": "idle","supportedModels": ["synthetic", "sdxl"],"taskKinds": [],"supportedModelsPerKind": {}}"#;
    let c: WorkerCapabilities = round_trip(newest);
    assert_eq!(c.user_presence, Some(UserPresence::Idle));
    let prod = r#"{"machineName": "alice-rig","username": "alice","agentVersion": "0.4.15","engine": "multi","vramTotalGb": 24.0,"vramThresholdGb": 12.0,"autoEnabled": true,"autoStart": true,"supportedModels": ["llama-cpp:*", "sd-cpp:*", "synthetic", "synthetic-image", "synthetic-llm", "synthetic-stt", "synthetic-tts", "synthetic-video"],"taskKinds": ["image", "llm", "audio_stt", "audio_tts", "video"],"supportedModelsPerKind": {"image": ["sd-cpp:*", "synthetic", "synthetic-image"],"llm": ["llama-cpp:*", "synthetic", "synthetic-llm"],"audio_stt": ["synthetic", "synthetic-stt"],"audio_tts": ["synthetic", "synthetic-tts"],"video": ["synthetic", "synthetic-video"]}}"#;
    let c: WorkerCapabilities = round_trip(prod);
    assert_eq!(c.task_kinds.len(), 5);
    assert_eq!(c.auto_update, None);
    // Older workers omit the new fields and may send null for lists.
    let old: WorkerCapabilities = serde_json::from_value(json!({"machineName":"m","username":"u","agentVersion":"0.1.0","engine":"synthetic","vramTotalGb":0,"vramThresholdGb":1,"autoEnabled":true,"autoStart":false,"supportedModels":[],"taskKinds":null})).unwrap();
    assert!(old.task_kinds.is_empty() && old.supported_models_per_kind.is_empty());
}

#[test]
fn model_source_examples() {
    let full = r#"{"engine": "sd-cpp","files": [{"role": "diffusion-model", "url": "https://huggingface.co/.../z_image_turbo-Q4_K.gguf", "filename": "z_image_turbo-Q4_K.gguf", "approxBytes": 2700000000, "sha256": "0000000000000000000000000000000000000000000000000000000000000000"},{"role": "text-encoder", "url": "https://...", "filename": "Qwen3-4B-Instruct-2507-Q4_K_M.gguf"},{"role": "vae", "url": "https://...", "filename": "ae.safetensors"}],"cliDefaults": {"cfgScale": 1.0, "steps": 8, "width": 1024, "height": 1024, "samplingMethod": "euler"}}"#;
    let m: ModelSource = round_trip(full);
    assert_eq!(m.engine, Engine::SdCpp);
    assert_eq!(m.files[0].role, FileRole::DiffusionModel);
    assert_eq!(m.files[0].approx_bytes, Some(2_700_000_000));
    let s: ModelSource = round_trip(SYNTH_SOURCE);
    assert_eq!(s, ModelSource::synthetic());
    // Engines this worker does not know still parse, by name.
    let odd: ModelSource =
        serde_json::from_str(&SYNTH_SOURCE.replace("synthetic", "comfyui")).unwrap();
    assert_eq!(odd.engine, Engine::Other("comfyui".into()));
    assert_eq!(serde_json::to_value(&odd).unwrap()["engine"], "comfyui");
    let app: ModelSource =
        serde_json::from_str(&SYNTH_SOURCE.replace("synthetic", "gradio")).unwrap();
    assert_eq!(app.engine, Engine::Gradio);
}

#[test]
fn worker_frame_examples() {
    let hello = r#"{"type": "hello", "authToken": "t0k3n", "capabilities": {"machineName": "rig-01", "username": "webber", "agentVersion": "0.2.0", "engine": "synthetic", "vramTotalGb": 24.0, "vramThresholdGb": 12.0, "autoEnabled": true, "autoStart": false, "supportedModels": ["synthetic", "sdxl"], "taskKinds": [], "supportedModelsPerKind": {}}}"#;
    let f: WorkerFrame = round_trip(hello);
    let WorkerFrame::Hello { auth_token, .. } = &f else {
        panic!("not hello")
    };
    assert_eq!(auth_token.expose(), "t0k3n");
    assert!(
        !format!("{f:?}").contains("t0k3n"),
        "Debug must hide the token"
    );

    let hb = r#"{"type": "heartbeat", "capabilities": {"machineName": "rig-01", "username": "webber", "agentVersion": "0.2.0", "engine": "synthetic", "vramTotalGb": 24.0, "vramThresholdGb": 12.0, "autoEnabled": true, "autoStart": false, "supportedModels": []}, "currentJobId": "job-9"}"#;
    let f: WorkerFrame = round_trip(hb);
    assert!(
        matches!(f, WorkerFrame::Heartbeat { current_job_id: Some(ref j), .. } if j == "job-9")
    );
    let idle: WorkerFrame = serde_json::from_str(&hb.replace(r#""job-9""#, "null")).unwrap();
    assert!(matches!(
        idle,
        WorkerFrame::Heartbeat {
            current_job_id: None,
            ..
        }
    ));
    let idle_json = serde_json::to_value(&idle).unwrap();
    assert!(
        idle_json.get("currentJobId").is_none(),
        "absent optional must be omitted"
    );

    assert_eq!(
        round_trip::<WorkerFrame>(r#"{"type": "accept", "jobId": "job-1"}"#),
        WorkerFrame::Accept {
            job_id: "job-1".into()
        }
    );
    let r: WorkerFrame = round_trip(
        r#"{"type": "reject", "jobId": "job-1", "reason": "worker paused by operator", "code": "paused"}"#,
    );
    assert!(matches!(
        r,
        WorkerFrame::Reject {
            code: Some(RejectCode::Paused),
            ..
        }
    ));
    let r: WorkerFrame =
        round_trip(r#"{"type": "reject", "jobId": "job-1", "reason": "model unloaded"}"#);
    assert!(matches!(r, WorkerFrame::Reject { code: None, .. }));
    round_trip::<WorkerFrame>(
        r#"{"type": "completeJson", "jobId": "job-1", "result": {"role": "assistant", "content": "hi"}, "prompt": "the final prompt"}"#,
    );
    let c: WorkerFrame = round_trip(
        r#"{"type": "completeJson", "jobId": "job-2", "result": [{"text": "a"}, {"text": "b"}]}"#,
    );
    assert!(matches!(c, WorkerFrame::CompleteJson { prompt: None, .. }));
    let f: WorkerFrame =
        round_trip(r#"{"type": "fail", "jobId": "job-1", "error": "oom", "retryable": true}"#);
    assert!(matches!(
        f,
        WorkerFrame::Fail {
            retryable: true,
            ..
        }
    ));
    let lb: WorkerFrame = round_trip(
        r#"{"type": "logBatch", "entries": [{"ts": "2026-05-25T12:00:00Z", "level": "info", "category": "engine", "message": "starting dispatch", "jobId": "job-1"}]}"#,
    );
    let WorkerFrame::LogBatch { entries } = lb else {
        panic!()
    };
    assert_eq!(entries[0].level, LogLevel::Info);
    assert_eq!(
        round_trip::<WorkerFrame>(r#"{"type": "readyForMore"}"#),
        WorkerFrame::ReadyForMore
    );
}

#[test]
fn studio_frame_examples() {
    let w: StudioFrame = round_trip(
        r#"{"type": "welcome", "workerId": "w-1", "serverTime": "2026-05-25T12:00:00Z"}"#,
    );
    assert!(matches!(w, StudioFrame::Welcome { ref worker_id, .. } if worker_id == "w-1"));
    for (text, kind) in [
        (
            r#"{"type": "offer", "claim": {"jobId": "job-1", "gameId": "game-of-elements", "assetName": "game-of-elements/creatures/aurora-fox", "model": "synthetic-image", "vramGbEstimate": 4.0, "task": {"kind": "image", "prompt": "an aurora fox at dusk", "width": 1024, "height": 1024, "ext": "webp"}, "modelSource": {"engine": "synthetic", "files": [], "cliDefaults": {"cfgScale": 1.0, "steps": 8, "width": 1024, "height": 1024}}}}"#,
            TaskKind::Image,
        ),
        (
            r#"{"type": "offer", "claim": {"jobId": "job-llm", "gameId": "g", "assetName": "g/dialogue/scribe", "model": "synthetic", "vramGbEstimate": 1.0, "task": {"kind": "llm", "messages": [{"role": "user", "content": "hi"}], "maxTokens": 4, "temperature": 0.5}, "modelSource": {"engine": "synthetic", "files": [], "cliDefaults": {"cfgScale": 1.0, "steps": 8, "width": 1024, "height": 1024}}}}"#,
            TaskKind::Llm,
        ),
        (
            r#"{"type": "offer", "claim": {"jobId": "job-stt", "gameId": "g", "assetName": "g/dialogue/transcript", "model": "synthetic", "vramGbEstimate": 1.0, "task": {"kind": "audio_stt", "inputUrl": "https://example/audio.wav", "language": null}, "modelSource": {"engine": "synthetic", "files": [], "cliDefaults": {"cfgScale": 1.0, "steps": 8, "width": 1024, "height": 1024}}}}"#,
            TaskKind::AudioStt,
        ),
    ] {
        let f: StudioFrame = round_trip(text);
        let StudioFrame::Offer { claim } = f else {
            panic!("not an offer")
        };
        let c = JobOfferClaim::from_value(&claim).unwrap();
        assert_eq!(c.task.kind(), kind);
        // The typed claim round-trips too.
        let back = serde_json::to_value(&c).unwrap();
        assert_subset(&claim, &back, "$.claim");
    }
    assert_eq!(
        round_trip::<StudioFrame>(r#"{"type": "heartbeatAck"}"#),
        StudioFrame::HeartbeatAck
    );
    round_trip::<StudioFrame>(r#"{"type": "completeAck", "jobId": "job-1"}"#);
    round_trip::<StudioFrame>(r#"{"type": "failAck", "jobId": "job-1"}"#);
    let e: StudioFrame = round_trip(
        r#"{"type": "error", "code": "protocol_violation", "message": "accept for unknown jobId"}"#,
    );
    assert!(matches!(
        e,
        StudioFrame::Error {
            code: ErrorCode::ProtocolViolation,
            ..
        }
    ));
    let unknown: StudioFrame =
        serde_json::from_str(r#"{"type":"error","code":"rate_limited","message":"x"}"#).unwrap();
    assert!(matches!(
        unknown,
        StudioFrame::Error {
            code: ErrorCode::Unknown,
            ..
        }
    ));
    assert!(ErrorCode::AuthFailed.is_terminal() && !ErrorCode::InternalError.is_terminal());
}

#[test]
fn task_examples_and_defaults() {
    let img: Task = round_trip(
        r#"{"kind": "image", "prompt": "a stone golem", "negativePrompt": "text, watermark, low quality", "initImageUrl": "https://example.invalid/t2-golem-stone/latest.webp", "denoise": 0.55, "cfgScale": 7.5, "samplingMethod": "dpm++2m", "width": 768, "height": 512, "steps": 30, "seed": 1234, "ext": "webp"}"#,
    );
    let Task::Image(i) = &img else { panic!() };
    assert_eq!(
        (i.effective_width(), i.effective_height(), i.seed),
        (768, 512, Some(1234))
    );
    let llm: Task = round_trip(
        r#"{"kind": "llm", "messages": [{"role": "user", "content": "hi"}], "maxTokens": 32, "temperature": 0.5}"#,
    );
    assert_eq!(llm.reported_prompt(), "hi");
    let stt: Task = round_trip(
        r#"{"kind": "audio_stt", "inputUrl": "https://example/audio.wav", "language": null}"#,
    );
    assert_eq!(stt.reported_prompt(), "https://example/audio.wav");
    let tts: Task =
        round_trip(r#"{"kind": "audio_tts", "text": "hi there", "voice": "v", "ext": "wav"}"#);
    assert_eq!(tts.requested_ext().as_deref(), Some("wav"));
    let vid: Task = round_trip(
        r#"{"kind": "video", "prompt": "a tiny dragon", "seconds": 1.0, "width": 256, "height": 256, "ext": "mp4"}"#,
    );
    assert!(vid.kind().is_binary());

    // Defaults when fields are absent.
    let Task::Image(d) = serde_json::from_str::<Task>(r#"{"kind":"image","prompt":"p"}"#).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (
            d.effective_width(),
            d.effective_height(),
            d.effective_steps(),
            d.effective_ext()
        ),
        (512, 512, 20, "webp")
    );
    let Task::Llm(l) = serde_json::from_str::<Task>(r#"{"kind":"llm","messages":[]}"#).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (l.effective_max_tokens(), l.effective_temperature()),
        (512, 0.7)
    );
    let Task::Video(v) = serde_json::from_str::<Task>(r#"{"kind":"video","prompt":"p"}"#).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (
            v.effective_seconds(),
            v.effective_ext(),
            v.effective_width()
        ),
        (2.0, "mp4", 512)
    );
    let Task::AudioTts(t) =
        serde_json::from_str::<Task>(r#"{"kind":"audio_tts","text":"x"}"#).unwrap()
    else {
        panic!()
    };
    assert_eq!(t.effective_ext(), "wav");
}

#[test]
fn http_body_examples() {
    let rr: RegisterRequestBody = round_trip(
        r#"{"installId": "11111111-2222-3333-4444-555555555555","registrationSecretHash": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","capabilities": {"machineName": "alice-rig", "username": "alice", "agentVersion": "0.4.15", "engine": "multi", "vramTotalGb": 24.0, "vramThresholdGb": 12.0, "autoEnabled": true, "autoStart": true, "supportedModels": ["synthetic"], "taskKinds": ["image"], "supportedModelsPerKind": {"image": ["synthetic"]}},"userAgent": "studio-worker/0.4.15"}"#,
    );
    assert_eq!(rr.user_agent, "studio-worker/0.4.15");
    round_trip::<RegisterRequestResponse>(r#"{"requestId": "rr-abc-123", "status": "pending"}"#);
    assert_eq!(
        round_trip::<RegisterPollResponse>(r#"{"status": "pending"}"#),
        RegisterPollResponse::Pending
    );
    let a: RegisterPollResponse = round_trip(
        r#"{"status": "approved", "workerId": "w-real-42", "authToken": "tok-issued-by-studio"}"#,
    );
    assert!(
        matches!(a, RegisterPollResponse::Approved { ref worker_id, .. } if worker_id == "w-real-42")
    );
    round_trip::<RegisterPollResponse>(
        r#"{"status": "rejected", "reason": "unknown contributor"}"#,
    );
    let no_reason: RegisterPollResponse = serde_json::from_str(r#"{"status":"rejected"}"#).unwrap();
    assert_eq!(
        no_reason,
        RegisterPollResponse::Rejected {
            reason: String::new()
        }
    );
    let boot: BootstrapRegisterRequest = serde_json::from_value(json!({"bootstrapToken":"bt","capabilities":{"machineName":"m","username":"u","agentVersion":"0","engine":"multi","vramTotalGb":0,"vramThresholdGb":12,"autoEnabled":true,"autoStart":false,"supportedModels":[]}})).unwrap();
    assert_eq!(boot.worker_id, None);
    assert!(serde_json::to_value(&boot)
        .unwrap()
        .get("workerId")
        .is_none());
    let resp: BootstrapRegisterResponse =
        round_trip(r#"{"workerId": "w-1", "authToken": "tok-xyz"}"#);
    assert_eq!(resp.auth_token.expose(), "tok-xyz");
    assert_eq!(
        studio_protocol::studio::http::content_type_for_ext("gif"),
        "image/gif"
    );
    assert_eq!(
        studio_protocol::studio::http::content_type_for_ext("xyz"),
        "application/octet-stream"
    );
}

fn claim_with(task: Value, source: Value) -> Value {
    json!({"jobId": "job-x", "gameId": "g", "assetName": "g/a", "model": "m", "vramGbEstimate": 1.0, "task": task, "modelSource": source})
}

fn field_of(v: Value) -> (String, String) {
    match JobOfferClaim::from_value(&v) {
        Err(ClaimError::Invalid {
            job_id,
            field,
            message,
        }) => {
            assert_eq!(job_id, "job-x");
            (field, message)
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn broken_claims_name_the_offending_field() {
    let src: Value = serde_json::from_str(SYNTH_SOURCE).unwrap();
    let (f, _) = field_of(
        json!({"jobId": "job-x", "gameId": "g", "assetName": "a", "model": "m", "vramGbEstimate": 12.0}),
    );
    assert_eq!(f, "task");
    let (f, m) = field_of(claim_with(
        json!({"kind": "sculpture", "prompt": "p"}),
        src.clone(),
    ));
    assert_eq!(f, "task.kind");
    assert!(m.contains("sculpture"), "{m}");
    let (f, _) = field_of(claim_with(
        json!({"kind": "image", "prompt": "p", "width": -5}),
        src.clone(),
    ));
    assert_eq!(f, "task.width");
    let (f, _) = field_of(claim_with(
        json!({"kind": "image", "prompt": "p", "height": 0}),
        src.clone(),
    ));
    assert_eq!(f, "task.height");
    let (f, _) = field_of(claim_with(
        json!({"kind": "image", "width": 64}),
        src.clone(),
    ));
    assert_eq!(f, "task.prompt");
    let (f, _) = field_of(claim_with(
        json!({"kind": "llm", "messages": "hi"}),
        src.clone(),
    ));
    assert_eq!(f, "task.messages");
    let mut bad_role = src.clone();
    bad_role["files"] = json!([{"role": "weights", "url": "https://x", "filename": "f"}]);
    let (f, m) = field_of(claim_with(
        json!({"kind": "image", "prompt": "p"}),
        bad_role,
    ));
    assert!(
        f.starts_with("modelSource.files") && f.ends_with("role"),
        "{f}"
    );
    assert!(m.contains("weights"));
    let (f, _) = field_of(claim_with(
        json!({"kind": "image", "prompt": "p"}),
        json!({"engine": "synthetic", "files": []}),
    ));
    assert_eq!(f, "modelSource.cliDefaults");
    let (f, _) = field_of(claim_with(
        json!({"kind": "video", "prompt": "p", "seconds": -1.0}),
        src.clone(),
    ));
    assert_eq!(f, "task.seconds");
    assert!(matches!(
        JobOfferClaim::from_value(&json!({"gameId": "g"})),
        Err(ClaimError::NoJobId(_))
    ));
    assert!(matches!(
        JobOfferClaim::from_value(&json!({"jobId": 7})),
        Err(ClaimError::NoJobId(_))
    ));
}
