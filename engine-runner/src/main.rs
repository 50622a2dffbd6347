//! `engine-runner`: one engine family in a child process.
//!
//! ```text
//! engine-runner --stdio [--engine synthetic]          # framed, for the supervisor
//! engine-runner --stdio --json [--out-dir DIR]        # JSON lines, for a person
//! ```

use std::path::PathBuf;

use clap::Parser;
use engine_runner::serve::{serve, Mode};
use engine_runner::{engines, hygiene};
use studio_protocol::runner::DEFAULT_MAX_FRAME_BYTES;

#[derive(Parser, Debug)]
#[command(
    name = "engine-runner",
    version,
    about = "Hosts one studio-worker engine in a child process"
)]
struct Args {
    /// Serve the runner channel on stdin/stdout.
    #[arg(long)]
    stdio: bool,
    /// Engine family to host.
    #[arg(long, default_value = "synthetic")]
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
    if !args.stdio {
        eprintln!("engine-runner: nothing to do; pass --stdio (see --help)");
        std::process::exit(2);
    }
    // Before any engine exists: move the channel off fds 0/1.
    let channel = match hygiene::take_stdio_channel() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("engine-runner: cannot set up the channel: {e}");
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
    let engine = match engines::build(&args.engine) {
        Ok(e) => e,
        Err(msg) => {
            eprintln!("engine-runner: {msg}");
            std::process::exit(2);
        }
    };
    let mode = if args.json {
        Mode::JsonLines {
            out_dir: args.out_dir,
        }
    } else {
        Mode::Framed {
            max_frame_bytes: args.max_frame_bytes,
        }
    };
    std::process::exit(serve(channel, mode, engine));
}

/// Replaces this process with the sibling runner for `engine`, passing the
/// same arguments; returns only if there is none.
fn delegate(engine: &str) {
    use std::os::unix::process::CommandExt;
    let family = match engine {
        "sd-cpp" => "engine-runner-sd",
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
