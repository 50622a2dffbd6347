//! `engine-runner-sd`: stable-diffusion.cpp in its own runner process
//! (it bundles ggml, so it cannot share a binary with llama.cpp or
//! whisper.cpp). Same channel and modes as `engine-runner`:
//!
//! ```text
//! engine-runner-sd --stdio                                   # framed, for the supervisor
//! engine-runner-sd --stdio --json --diffusion-model M --llm T --taesd A   # by hand
//! ```

mod engine;
mod ffi;

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Parser;
use engine_runner::process::{run, RunnerArgs};

#[derive(Parser, Debug)]
#[command(
    name = "engine-runner-sd",
    version,
    about = "Hosts stable-diffusion.cpp for studio-worker"
)]
struct Args {
    #[command(flatten)]
    common: RunnerArgs,
    /// Engine family (only `sd-cpp`; accepted for symmetry with engine-runner).
    #[arg(long, default_value = "sd-cpp")]
    engine: String,
    /// CPU threads for ggml (default: physical cores).
    #[arg(long)]
    threads: Option<i32>,
    /// Default model when a job names no files: single-file checkpoint.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Default diffusion model.
    #[arg(long)]
    diffusion_model: Option<PathBuf>,
    /// Default LLM text encoder.
    #[arg(long)]
    llm: Option<PathBuf>,
    /// Default T5 text encoder.
    #[arg(long)]
    t5xxl: Option<PathBuf>,
    /// Default CLIP-L.
    #[arg(long)]
    clip_l: Option<PathBuf>,
    /// Default CLIP-G.
    #[arg(long)]
    clip_g: Option<PathBuf>,
    /// Default CLIP vision encoder (Wan 2.1 image-to-video).
    #[arg(long)]
    clip_vision: Option<PathBuf>,
    /// Default LLM vision encoder (Qwen-Image-Edit).
    #[arg(long)]
    llm_vision: Option<PathBuf>,
    /// Default VAE.
    #[arg(long)]
    vae: Option<PathBuf>,
    /// Default tiny autoencoder.
    #[arg(long)]
    taesd: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    if args.engine != "sd-cpp" {
        eprintln!(
            "engine-runner-sd: engine `{}` is not built into this runner (available: sd-cpp)",
            args.engine
        );
        std::process::exit(2);
    }
    let threads = args.threads.filter(|t| *t > 0).unwrap_or_else(|| {
        // SAFETY: a pure query.
        unsafe { diffusion_rs_sys::sd_get_num_physical_cores() }.max(1)
    });
    let pairs: BTreeMap<&str, Option<PathBuf>> = BTreeMap::from([
        ("model", args.model),
        ("diffusion-model", args.diffusion_model),
        ("llm", args.llm),
        ("t5xxl", args.t5xxl),
        ("clip-l", args.clip_l),
        ("clip-g", args.clip_g),
        ("clip-vision", args.clip_vision),
        ("llm-vision", args.llm_vision),
        ("vae", args.vae),
        ("taesd", args.taesd),
    ]);
    // sd.cpp is touched only inside `build`, after the channel moved.
    run("engine-runner-sd", args.common, move || {
        Ok(Box::new(engine::SdCpp::new(
            threads,
            engine::paths_from_args(&pairs),
        )))
    });
}
