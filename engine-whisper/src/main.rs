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
use engine_runner::process::{run, RunnerArgs};

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
    if args.engine != "whisper-cpp" {
        eprintln!(
            "engine-runner-whisper: engine `{}` is not built into this runner (available: whisper-cpp)",
            args.engine
        );
        std::process::exit(2);
    }
    let threads = args
        .threads
        .filter(|t| *t > 0)
        .unwrap_or_else(engine_runner::process::physical_cores);
    let model = args.model;
    run("engine-runner-whisper", args.common, move || {
        // whisper.cpp and ggml log through tracing to stderr (drained by
        // the supervisor), never onto the channel.
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_target(false)
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("STUDIO_WORKER_ENGINE_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .try_init();
        whisper_rs::install_logging_hooks();
        Ok(Box::new(engine::Whisper::new(threads, model))
            as Box<dyn engine_runner::engine::Engine>)
    });
}
