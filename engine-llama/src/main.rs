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
use engine_runner::process::{run, RunnerArgs};

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
    if args.engine != "llama-cpp" {
        eprintln!(
            "engine-runner-llama: engine `{}` is not built into this runner (available: llama-cpp)",
            args.engine
        );
        std::process::exit(2);
    }
    let threads = args
        .threads
        .filter(|t| *t > 0)
        .unwrap_or_else(engine_runner::process::physical_cores);
    let model = args.model;
    run("engine-runner-llama", args.common, move || {
        // llama.cpp's log lines go through tracing to stderr (which the
        // supervisor drains into its log), never onto the channel.
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_target(false)
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("STUDIO_WORKER_ENGINE_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .try_init();
        llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
        engine::Llama::new(threads, model)
            .map(|e| Box::new(e) as Box<dyn engine_runner::engine::Engine>)
    });
}
