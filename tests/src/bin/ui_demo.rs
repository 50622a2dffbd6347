//! A worker to look at: the fake studio, a real worker on a fake 24 GB
//! GPU, some finished jobs (one failed) and one held in flight. Prints the
//! worker's config path, then keeps it all running until stdin closes.
//! `scripts/ui-screenshots` points the desktop window at it.
//!
//! Run: `cargo build --workspace --bins && target/debug/ui-demo`

use std::io::Read;

use serde_json::json;
use studio_worker_tests::claims::{claim, claim_with, image, llm};
use studio_worker_tests::proc::Gate;
use studio_worker_tests::start_worker;
use studio_worker_tests::studio::FakeStudio;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let studio = FakeStudio::start().await;
    let (home, _worker) = start_worker(
        &studio,
        "vram_threshold_gb = 16.0\n",
        &[
            ("STUDIO_WORKER_FAKE_GPUS", "24"),
            ("STUDIO_WORKER_FAULT_INJECTION", "1"),
        ],
    )
    .await;
    for (i, prompt) in ["a stone golem", "a moss-covered lantern", "an aurora fox"]
        .iter()
        .enumerate()
    {
        let id = format!("img-{}", i + 1);
        let mut task = image(256, 256, "png");
        task["prompt"] = json!(prompt);
        studio.offer(claim(&id, task));
        studio.wait_upload(&id).await;
    }
    studio.offer(claim("chat-1", llm("Name three rivers.")));
    studio.wait_frame("completeJson", "chat-1").await;
    studio.offer(claim("img-bad", image(64, 64, "bmp")));
    studio.wait_frame("fail", "img-bad").await;
    let gate = Gate::new();
    let mut task = image(512, 512, "webp");
    task["prompt"] = json!("a lighthouse keeper's cat at dawn");
    studio.offer(claim_with("img-4", &gate.model(), task));
    gate.started().await;
    println!("{}", home.config().display());
    // Held until whoever started us is done looking.
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await
    .ok();
    gate.open();
}
