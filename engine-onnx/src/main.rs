//! `engine-runner-onnx`: ONNX image models on ONNX Runtime, loaded at run
//! time; today object removal with a LaMa-family inpainting model. Same
//! channel and modes as `engine-runner`:
//!
//! ```text
//! engine-runner-onnx --stdio                              # framed, for the supervisor
//! engine-runner-onnx --stdio --json --model lama.onnx     # by hand
//! engine-runner-onnx --check                              # can this host load ONNX Runtime?
//! ```
//!
//! The library: `ORT_DYLIB_PATH` (the supervisor sets it from
//! `onnxruntime_path`), else `libonnxruntime.so*` beside this binary.

mod engine;
mod inpaint;

use clap::Parser;
use engine_runner::process::{self, run, ModelArgs, RunnerArgs};

#[derive(Parser, Debug)]
#[command(
    name = "engine-runner-onnx",
    version,
    about = "Hosts ONNX image models (object removal) on ONNX Runtime for studio-worker"
)]
struct Args {
    #[command(flatten)]
    common: RunnerArgs,
    #[command(flatten)]
    model: ModelArgs,
    /// Load ONNX Runtime, print its version and path, and exit (0: usable;
    /// 3: not, with the reason on stderr).
    #[arg(long)]
    check: bool,
}

fn main() {
    let args = Args::parse();
    if args.check {
        engine_ort::check_and_exit("studio-worker-onnx");
    }
    let (threads, model) = args.model.resolve("engine-runner-onnx", "onnx");
    run("engine-runner-onnx", args.common, move || {
        process::log_to_stderr();
        let env = engine_ort::load("studio-worker-onnx")?;
        Ok(Box::new(engine::Onnx::new(env, threads, model))
            as Box<dyn engine_runner::engine::Engine>)
    });
}
