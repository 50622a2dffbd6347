//! `engine-runner-whisper`: whisper.cpp in its own runner process (it
//! bundles ggml, so it cannot share a binary with llama.cpp or
//! stable-diffusion.cpp). Same channel and modes as `engine-runner`:
//!
//! ```text
//! engine-runner-whisper --stdio                              # framed, for the supervisor
//! engine-runner-whisper --stdio --json --model ggml-tiny.en.bin   # by hand
//! ```

mod audio;
mod engine;

use clap::Parser;
use engine_runner::process::{self, run, ModelArgs, RunnerArgs};

#[derive(Parser, Debug)]
#[command(
    name = "engine-runner-whisper",
    version,
    about = "Hosts whisper.cpp for studio-worker"
)]
struct Args {
    #[command(flatten)]
    common: RunnerArgs,
    #[command(flatten)]
    model: ModelArgs,
}

fn main() {
    let args = Args::parse();
    let (threads, model) = args.model.resolve("engine-runner-whisper", "whisper-cpp");
    run("engine-runner-whisper", args.common, move || {
        process::log_to_stderr();
        whisper_rs::install_logging_hooks();
        Ok(Box::new(engine::Whisper::new(threads, model))
            as Box<dyn engine_runner::engine::Engine>)
    });
}
