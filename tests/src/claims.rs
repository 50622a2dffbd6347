//! Offer claims for tests.

use serde_json::{json, Value};

/// The minimal synthetic model source.
pub fn synthetic_source() -> Value {
    json!({"engine": "synthetic", "files": [], "cliDefaults": {"cfgScale": 1.0, "steps": 8, "width": 1024, "height": 1024}})
}

/// A claim for `task` on the synthetic engine.
pub fn claim(job_id: &str, task: Value) -> Value {
    claim_with(job_id, "synthetic", task)
}

/// A claim with a chosen model id (fault injection uses `fault:*`).
pub fn claim_with(job_id: &str, model: &str, task: Value) -> Value {
    json!({
        "jobId": job_id,
        "gameId": "game-of-tests",
        "assetName": format!("game-of-tests/assets/{job_id}"),
        "model": model,
        "vramGbEstimate": 1.0,
        "task": task,
        "modelSource": synthetic_source(),
    })
}

/// An image task.
pub fn image(w: u32, h: u32, ext: &str) -> Value {
    json!({"kind": "image", "prompt": "a stone golem in cinematic light", "width": w, "height": h, "ext": ext})
}

/// An llm task.
pub fn llm(content: &str) -> Value {
    json!({"kind": "llm", "messages": [{"role": "user", "content": content}], "maxTokens": 32})
}
