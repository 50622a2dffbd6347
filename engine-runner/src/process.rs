//! The start of every runner process (`engine-runner`, `engine-runner-sd`,
//! and the engine families to come): shared flags, channel hygiene before
//! the engine exists, death with the parent, then the runner loop.

use std::path::PathBuf;

use studio_protocol::runner::DEFAULT_MAX_FRAME_BYTES;

use crate::engine::Engine;
use crate::hygiene;
use crate::platform;
use crate::serve::{serve, Mode};

/// Flags every runner binary takes.
#[derive(clap::Args, Debug, Clone)]
pub struct RunnerArgs {
    /// Serve the runner channel on stdin/stdout.
    #[arg(long)]
    pub stdio: bool,
    /// Speak one JSON object per line instead of framed MessagePack.
    #[arg(long)]
    pub json: bool,
    /// JSON mode: where binary results are written.
    #[arg(long, default_value = ".")]
    pub out_dir: PathBuf,
    /// Framed mode: largest frame in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_FRAME_BYTES)]
    pub max_frame_bytes: usize,
}

fn fail(name: &str, msg: impl std::fmt::Display) -> ! {
    eprintln!("{name}: {msg}");
    std::process::exit(2);
}

/// Runs a runner process to its end and exits with the loop's code.
/// `build` creates the engine after the channel has left fds 0/1, so
/// nothing a native library prints at load can reach the channel.
pub fn run(
    name: &str,
    args: RunnerArgs,
    build: impl FnOnce() -> Result<Box<dyn Engine>, String>,
) -> ! {
    if !args.stdio {
        fail(name, "nothing to do; pass --stdio (see --help)");
    }
    let channel = hygiene::take_stdio_channel()
        .unwrap_or_else(|e| fail(name, format!("cannot set up the channel: {e}")));
    platform::die_with_parent();
    let engine = build().unwrap_or_else(|msg| fail(name, msg));
    let mode = if args.json {
        Mode::JsonLines {
            out_dir: args.out_dir,
        }
    } else {
        Mode::Framed {
            max_frame_bytes: args.max_frame_bytes,
        }
    };
    let code = serve(channel, mode, engine);
    // Out without running exit handlers: when the channel closed mid-job
    // the engine thread is still inside its library, and ONNX Runtime's
    // static destructors under it crashed the process (SIGSEGV). Every
    // frame is already written; stderr is unbuffered.
    use std::io::Write;
    let _ = std::io::stderr().flush();
    platform::exit_now(code)
}

/// Exits with a clear line when `--engine` names another family than the
/// one this runner binary hosts.
pub fn require_engine(binary: &str, asked: &str, hosted: &str) {
    if asked != hosted {
        eprintln!("{binary}: engine `{asked}` is not built into this runner (available: {hosted})");
        std::process::exit(2);
    }
}

/// The thread count from `--threads`, else [`platform::physical_cores`].
pub fn threads_or_default(threads: Option<i32>) -> i32 {
    threads
        .filter(|t| *t > 0)
        .unwrap_or_else(platform::physical_cores)
}

/// Routes a native library's `tracing` events to stderr (which the
/// supervisor drains into its log), filtered by `STUDIO_WORKER_ENGINE_LOG`
/// (default `warn`); never onto the channel.
pub fn log_to_stderr() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STUDIO_WORKER_ENGINE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
}

/// The flags of a runner binary that hosts one model file (llama.cpp,
/// whisper.cpp), beside [`RunnerArgs`].
#[derive(clap::Args, Debug)]
pub struct ModelArgs {
    /// Engine family (accepted for symmetry with `engine-runner`; only the
    /// one this binary hosts).
    #[arg(long)]
    pub engine: Option<String>,
    /// CPU threads for ggml (default: physical cores).
    #[arg(long)]
    pub threads: Option<i32>,
    /// Default model file when a job names no files (driving it by hand).
    #[arg(long)]
    pub model: Option<PathBuf>,
}

impl ModelArgs {
    /// Checks `--engine` against `hosted` (exits 2 naming both if they
    /// differ) and returns (threads, default model).
    pub fn resolve(self, binary: &str, hosted: &str) -> (i32, Option<PathBuf>) {
        require_engine(binary, self.engine.as_deref().unwrap_or(hosted), hosted);
        (threads_or_default(self.threads), self.model)
    }
}
