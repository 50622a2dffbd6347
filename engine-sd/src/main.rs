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
use engine_runner::hygiene;
use engine_runner::serve::{serve, Mode};
use studio_protocol::runner::DEFAULT_MAX_FRAME_BYTES;

#[derive(Parser, Debug)]
#[command(
    name = "engine-runner-sd",
    version,
    about = "Hosts stable-diffusion.cpp for studio-worker"
)]
struct Args {
    /// Serve the runner channel on stdin/stdout.
    #[arg(long)]
    stdio: bool,
    /// Engine family (only `sd-cpp`; accepted for symmetry with engine-runner).
    #[arg(long, default_value = "sd-cpp")]
    engine: String,
    /// Speak one JSON object per line instead of framed MessagePack.
    #[arg(long)]
    json: bool,
    /// JSON mode: where binary results are written.
    #[arg(long, default_value = ".")]
    out_dir: PathBuf,
    /// Framed mode: largest frame in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_FRAME_BYTES)]
    max_frame_bytes: usize,
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
    /// Default VAE.
    #[arg(long)]
    vae: Option<PathBuf>,
    /// Default tiny autoencoder.
    #[arg(long)]
    taesd: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    if !args.stdio {
        eprintln!("engine-runner-sd: nothing to do; pass --stdio (see --help)");
        std::process::exit(2);
    }
    if args.engine != "sd-cpp" {
        eprintln!(
            "engine-runner-sd: engine `{}` is not built into this runner (available: sd-cpp)",
            args.engine
        );
        std::process::exit(2);
    }
    // Before sd.cpp is touched: move the channel off fds 0/1.
    let channel = match hygiene::take_stdio_channel() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("engine-runner-sd: cannot set up the channel: {e}");
            std::process::exit(2);
        }
    };
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with constant arguments; die with the supervisor.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
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
        ("vae", args.vae),
        ("taesd", args.taesd),
    ]);
    let engine = engine::SdCpp::new(threads, engine::paths_from_args(&pairs));
    let mode = if args.json {
        Mode::JsonLines {
            out_dir: args.out_dir,
        }
    } else {
        Mode::Framed {
            max_frame_bytes: args.max_frame_bytes,
        }
    };
    std::process::exit(serve(channel, mode, Box::new(engine)));
}
