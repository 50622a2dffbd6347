//! `engine-runner-llama`: llama.cpp in its own runner process (it bundles
//! ggml, so it cannot share a binary with whisper.cpp or
//! stable-diffusion.cpp). Same channel and modes as `engine-runner`:
//!
//! ```text
//! engine-runner-llama --stdio                                # framed, for the supervisor
//! engine-runner-llama --stdio --json --model M.gguf          # by hand
//! ```

mod chat;
mod engine;

use std::path::PathBuf;

use clap::Parser;
use engine_runner::process::{self, run, RunnerArgs};

#[derive(Parser, Debug)]
#[command(
    name = "engine-runner-llama",
    version,
    about = "Hosts llama.cpp for studio-worker"
)]
struct Args {
    #[command(flatten)]
    common: RunnerArgs,
    /// Engine family (only `llama-cpp`; accepted for symmetry with engine-runner).
    #[arg(long, default_value = "llama-cpp")]
    engine: String,
    /// CPU threads for ggml (default: physical cores).
    #[arg(long)]
    threads: Option<i32>,
    /// Default GGUF model when a job names no files.
    #[arg(long)]
    model: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    process::require_engine("engine-runner-llama", &args.engine, "llama-cpp");
    let threads = process::threads_or_default(args.threads);
    let model = args.model;
    run("engine-runner-llama", args.common, move || {
        process::log_to_stderr();
        llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
        engine::Llama::new(threads, model)
            .map(|e| Box::new(e) as Box<dyn engine_runner::engine::Engine>)
    });
}
