//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// studio-worker: turns this machine into a worker for a studio API.
#[derive(Parser, Debug)]
#[command(name = "studio-worker", version, about)]
pub struct Cli {
    /// Config file (default: the platform config dir,
    /// minis-studio-worker/config.toml).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// How log lines are written to stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        env = "STUDIO_WORKER_LOG_FORMAT"
    )]
    pub log_format: crate::logging::LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Hold the studio session and run offered jobs.
    Run,
    /// Serve only the local OpenAI-compatible API (`local_api_listen`), with
    /// no studio session.
    Serve,
    /// Register with the studio using a bootstrap token (idempotent).
    Register {
        /// Operator-issued bootstrap token.
        #[arg(long)]
        bootstrap_token: String,
        /// Studio root URL.
        #[arg(long)]
        api_base_url: String,
        /// Register the identity of GPU N's own session (a `[[worker]]`
        /// table, used with `gpus = "all"` or a list) instead of the
        /// machine's single one.
        #[arg(long, value_name = "N")]
        gpu: Option<u32>,
    },
    /// What the running worker is doing now (session, job, runners, GPU
    /// memory, recent failures); with none running, the config's summary.
    Status {
        /// The running worker's raw snapshot as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop claiming on the running worker (offers rejected `paused`)
    /// without editing the config; `resume` undoes it.
    Pause,
    /// Take offers again after `pause`.
    Resume,
    /// Let the running worker finish and deliver its job, then exit 0.
    Drain,
    /// Print the resolved config (secrets hidden) and its path.
    Config,
    /// Resume claiming offers.
    Enable,
    /// Stay online but reject offers (`paused`).
    Disable,
    /// Set the largest VRAM estimate (GB) the worker will take.
    SetThreshold {
        /// Gigabytes, ≥ 0.
        gb: String,
    },
    /// Run one job locally through the runner, with no studio.
    Job(Box<JobArgs>),
    /// Install the OS service that runs `studio-worker run` with this
    /// config (systemd user unit, macOS LaunchAgent, Windows scheduled
    /// task) and start it. Idempotent.
    InstallService(ServiceArgs),
    /// Stop, disable and remove the OS service. Idempotent.
    UninstallService(ServiceArgs),
    /// Ask the release feed for a newer version and say what `run` would
    /// do about it (installs nothing).
    CheckUpdate,
    /// Start each engine runner beside this binary and complete its
    /// channel handshake (an update's probe of a new release).
    #[command(hide = true)]
    SelfCheck,
    /// Download and verify a model's files into the model cache.
    FetchModel {
        /// Model id (names the cache directory).
        #[arg(long)]
        model: String,
        /// The `modelSource` as JSON, or a path to a JSON file.
        #[arg(long)]
        source: String,
    },
}

/// `install-service` / `uninstall-service`.
#[derive(Args, Debug)]
pub struct ServiceArgs {
    /// A system unit (Linux, as root) for the account given with `--user`,
    /// instead of the invoking user's own unit.
    #[arg(long, requires = "user")]
    pub system: bool,
    /// The account a `--system` unit runs as.
    #[arg(long, requires = "system", value_name = "NAME")]
    pub user: Option<String>,
    /// The service's name (several workers on one machine need their own).
    #[arg(long, default_value = "studio-worker")]
    pub name: String,
    /// Print the service definition and change nothing.
    #[arg(long)]
    pub print: bool,
}

/// Job kinds on the command line.
#[derive(ValueEnum, Clone, Copy, Debug)]
#[value(rename_all = "snake_case")]
pub enum KindArg {
    /// Image generation.
    Image,
    /// Chat completion.
    Llm,
    /// Speech to text.
    #[value(alias = "stt")]
    AudioStt,
    /// Text to speech.
    #[value(alias = "tts")]
    AudioTts,
    /// Video generation.
    Video,
}

/// `studio-worker job <kind>`.
#[derive(Args, Debug)]
pub struct JobArgs {
    /// The kind of job.
    pub kind: KindArg,
    /// Where to write the result (default: stdout for JSON kinds,
    /// `result.<ext>` for binary kinds).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Prompt (image, video; for llm a single user message).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Text to speak (audio_tts).
    #[arg(long)]
    pub text: Option<String>,
    /// Input audio: a local path or URL (audio_stt).
    #[arg(long)]
    pub input: Option<String>,
    /// Chat messages as JSON: '[{"role":"user","content":"hi"}]' (llm).
    #[arg(long)]
    pub messages: Option<String>,
    /// System prompt (llm).
    #[arg(long)]
    pub system: Option<String>,
    /// Token budget (llm).
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// Sampling temperature (llm; 0 is greedy, default 0.7).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Context size in tokens (llm; cliDefaults.contextSize, default 8192).
    #[arg(long)]
    pub context_size: Option<u32>,
    /// Timestamps: `segment` or `word` (audio_stt).
    #[arg(long)]
    pub timestamps: Option<String>,
    /// Width in pixels.
    #[arg(long)]
    pub width: Option<u32>,
    /// Height in pixels.
    #[arg(long)]
    pub height: Option<u32>,
    /// Output format (png, webp, jpg; wav; mp4, webm, gif).
    #[arg(long)]
    pub ext: Option<String>,
    /// Seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Video length in seconds.
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Video frames per second.
    #[arg(long)]
    pub fps: Option<u32>,
    /// Language (audio_stt, audio_tts).
    #[arg(long)]
    pub language: Option<String>,
    /// Model id.
    #[arg(long, default_value = "synthetic")]
    pub model: String,
    /// Engine (modelSource.engine).
    #[arg(long, default_value = "synthetic")]
    pub engine: String,
    /// A local model file as ROLE=PATH (diffusion-model, text-encoder,
    /// vae, taesd, model, ...); repeat for each file.
    #[arg(long = "file", value_name = "ROLE=PATH")]
    pub files: Vec<String>,
    /// Run the job N times on one runner, as a worker does with a model
    /// kept loaded: the first run loads the model, the rest reuse it. Each
    /// run's time goes to stderr; the last result is written.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// Write each run's time as JSON (`[{"run":1,"ms":812.4},...]`).
    #[arg(long, value_name = "FILE")]
    pub timings: Option<PathBuf>,
}
