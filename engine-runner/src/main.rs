//! `engine-runner`: one engine family in a child process.
//!
//! ```text
//! engine-runner --stdio [--engine synthetic]          # framed, for the supervisor
//! engine-runner --stdio --json [--out-dir DIR]        # JSON lines, for a person
//! ```

use clap::Parser;
use engine_runner::engines;
use engine_runner::process::{run, RunnerArgs};

#[derive(Parser, Debug)]
#[command(
    name = "engine-runner",
    version,
    about = "Hosts one studio-worker engine in a child process"
)]
struct Args {
    #[command(flatten)]
    common: RunnerArgs,
    /// Engine family to host (`sd-cpp`, `llama-cpp` and `whisper-cpp` hand
    /// over to their own runner binaries beside this one).
    #[arg(long, default_value = "synthetic")]
    engine: String,
}

fn main() {
    // Native engine families live in sibling binaries (each bundles its own
    // ggml); hand over to the one that hosts the asked-for engine, with
    // its own flags, before parsing ours.
    if let Some(engine) = engine_arg() {
        if !engines::AVAILABLE.contains(&engine.as_str()) {
            delegate(&engine);
        }
    }
    let args = Args::parse();
    let engine = args.engine.clone();
    run("engine-runner", args.common, || engines::build(&engine));
}

/// Replaces this process with the sibling runner for `engine`, passing the
/// same arguments; returns only if there is none.
fn delegate(engine: &str) {
    use std::os::unix::process::CommandExt;
    let family =
        match studio_protocol::runner::family(&studio_protocol::studio::Engine::parse(engine)) {
            Some(f) if f.binary != "engine-runner" => f.binary,
            _ => return,
        };
    let Some(path) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(family)))
    else {
        return;
    };
    if !path.is_file() {
        return;
    }
    let err = std::process::Command::new(&path)
        .args(std::env::args_os().skip(1))
        .exec();
    eprintln!("engine-runner: cannot start {}: {err}", path.display());
    std::process::exit(2);
}

/// The value of `--engine` on the command line, if any.
fn engine_arg() -> Option<String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix("--engine=").map(str::to_string).or_else(|| {
            (a == "--engine")
                .then(|| args.get(i + 1).cloned())
                .flatten()
        })
    })
}
