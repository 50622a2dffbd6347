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

use clap::Parser;
use engine_runner::process::{self, run, ModelArgs, RunnerArgs};

#[derive(Parser, Debug)]
#[command(
    name = "engine-runner-llama",
    version,
    about = "Hosts llama.cpp for studio-worker"
)]
struct Args {
    #[command(flatten)]
    common: RunnerArgs,
    #[command(flatten)]
    model: ModelArgs,
}

fn main() {
    let args = Args::parse();
    let (threads, model) = args.model.resolve("engine-runner-llama", "llama-cpp");
    run("engine-runner-llama", args.common, move || {
        process::log_to_stderr();
        llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
        engine::Llama::new(threads, model)
            .map(|e| Box::new(e) as Box<dyn engine_runner::engine::Engine>)
    });
}
