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

use std::path::PathBuf;

use clap::Parser;
use engine_runner::process::{self, run, RunnerArgs};

#[derive(Parser, Debug)]
#[command(
    name = "engine-runner-whisper",
    version,
    about = "Hosts whisper.cpp for studio-worker"
)]
struct Args {
    #[command(flatten)]
    common: RunnerArgs,
    /// Engine family (only `whisper-cpp`; accepted for symmetry with engine-runner).
    #[arg(long, default_value = "whisper-cpp")]
    engine: String,
    /// CPU threads for ggml (default: physical cores).
    #[arg(long)]
    threads: Option<i32>,
    /// Default ggml whisper model when a job names no files.
    #[arg(long)]
    model: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    process::require_engine("engine-runner-whisper", &args.engine, "whisper-cpp");
    let threads = process::threads_or_default(args.threads);
    let model = args.model;
    run("engine-runner-whisper", args.common, move || {
        process::log_to_stderr();
        whisper_rs::install_logging_hooks();
        Ok(Box::new(engine::Whisper::new(threads, model))
            as Box<dyn engine_runner::engine::Engine>)
    });
}
