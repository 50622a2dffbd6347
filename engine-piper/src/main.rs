//! `engine-runner-piper`: Piper neural voices on ONNX Runtime, loaded at
//! run time. Same channel and modes as `engine-runner`:
//!
//! ```text
//! engine-runner-piper --stdio                                   # framed, for the supervisor
//! engine-runner-piper --stdio --json --model en_US-joe-medium.onnx   # by hand
//! engine-runner-piper --check                                   # can this host load ONNX Runtime?
//! ```
//!
//! The library: `ORT_DYLIB_PATH` (the supervisor sets it from
//! `onnxruntime_path`), else `libonnxruntime.so*` beside this binary.

mod engine;

use clap::Parser;
use engine_runner::process::{self, run, ModelArgs, RunnerArgs};

#[derive(Parser, Debug)]
#[command(
    name = "engine-runner-piper",
    version,
    about = "Hosts Piper voices on ONNX Runtime for studio-worker"
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
    // glibc keeps freed heap memory and raises its mmap threshold as large
    // blocks come and go, so a long text (hundreds of sentences, each its
    // own tensor sizes) grew the peak by 100+ MB over a short one. A fixed
    // threshold sends every large block through mmap, returned on free.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt with constant arguments, before any other thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
    let args = Args::parse();
    if args.check {
        engine_ort::check_and_exit("studio-worker-piper");
    }
    let (threads, model) = args.model.resolve("engine-runner-piper", "piper");
    run("engine-runner-piper", args.common, move || {
        process::log_to_stderr();
        let env = engine_ort::load("studio-worker-piper")?;
        Ok(Box::new(engine::Piper::new(env, threads, model))
            as Box<dyn engine_runner::engine::Engine>)
    });
}
