//! `engine-runner-gradio`: serves image jobs from a Gradio app on this
//! host, through the app's HTTP queue API. Same channel and modes as
//! `engine-runner`:
//!
//! ```text
//! engine-runner-gradio --stdio --url http://127.0.0.1:7860          # framed, for the supervisor
//! engine-runner-gradio --stdio --json --url http://127.0.0.1:7860   # by hand
//! engine-runner-gradio --check --url http://127.0.0.1:7860          # the endpoint and mapping, as JSON
//! ```
//!
//! A bearer token for an app behind auth comes from
//! `STUDIO_WORKER_GRADIO_TOKEN` (never an argument: arguments are
//! visible to every user of the host).

mod api;
mod engine;

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Parser;
use engine_runner::process::{self, run, RunnerArgs};

/// The environment variable holding the app's bearer token.
const TOKEN_ENV: &str = "STUDIO_WORKER_GRADIO_TOKEN";

#[derive(Parser, Debug)]
#[command(
    name = "engine-runner-gradio",
    version,
    about = "Serves studio-worker image jobs from a Gradio app over its HTTP API"
)]
struct Args {
    #[command(flatten)]
    common: RunnerArgs,
    /// The Gradio app's URL.
    #[arg(long)]
    url: String,
    /// The endpoint to call (`/generate`); default: the first that takes
    /// a text prompt and returns an image.
    #[arg(long)]
    api_name: Option<String>,
    /// `FIELD=PARAMETER`: feed task field FIELD (prompt, negativePrompt,
    /// width, height, steps, seed, cfgScale, samplingMethod, initImageUrl,
    /// maskUrl, denoise) to the endpoint's PARAMETER; `FIELD=` leaves it
    /// out. Repeatable.
    #[arg(long = "param", value_name = "FIELD=PARAMETER")]
    params: Vec<String>,
    /// A JSON object of fixed parameter values (`{"style": "photo"}`).
    #[arg(long, default_value = "{}")]
    fixed: String,
    /// The longest one job may take, the app's queue included.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    /// Contact the app, print the endpoint and the mapping as JSON, and
    /// exit: 0 usable; 2 bad arguments; 3 the mapping does not fit the
    /// app (the reason lists the endpoint's parameters); 4 the app does
    /// not answer.
    #[arg(long)]
    check: bool,
}

fn settings(args: &Args) -> Result<engine::Settings, String> {
    let mut params = BTreeMap::new();
    for p in &args.params {
        let (field, name) = p
            .split_once('=')
            .ok_or_else(|| format!("--param {p}: write FIELD=PARAMETER"))?;
        params.insert(field.trim().to_string(), name.trim().to_string());
    }
    let fixed = match serde_json::from_str(&args.fixed) {
        Ok(serde_json::Value::Object(m)) => m,
        Ok(_) => return Err("--fixed: expected a JSON object".into()),
        Err(e) => return Err(format!("--fixed: {e}")),
    };
    Ok(engine::Settings {
        url: args.url.clone(),
        api_name: args.api_name.clone(),
        params,
        fixed,
        timeout: Duration::from_secs(args.timeout_secs.max(1)),
        token: std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()),
    })
}

fn main() {
    let args = Args::parse();
    let settings = settings(&args).unwrap_or_else(|e| {
        eprintln!("engine-runner-gradio: {e}");
        std::process::exit(2)
    });
    if args.check {
        match engine::check(&settings) {
            Ok(v) => {
                println!("{v}");
                std::process::exit(0)
            }
            Err((code, why)) => {
                eprintln!("{why}");
                std::process::exit(code)
            }
        }
    }
    run("engine-runner-gradio", args.common, move || {
        process::log_to_stderr();
        Ok(Box::new(engine::Gradio::new(settings)?) as Box<dyn engine_runner::engine::Engine>)
    });
}
