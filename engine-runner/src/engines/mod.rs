//! Engines compiled into the `engine-runner` binary.

pub mod espeak;
pub mod synthetic;

use crate::engine::Engine;

/// Names accepted by `--engine` in this binary.
pub const AVAILABLE: &[&str] = &["synthetic", "espeak"];

/// Builds the engine named `name`, or says what is available.
pub fn build(name: &str) -> Result<Box<dyn Engine>, String> {
    match name {
        "synthetic" => Ok(Box::new(synthetic::Synthetic::default())),
        "espeak" => Ok(Box::new(espeak::Espeak::default())),
        other => Err(format!(
            "engine `{other}` is not built into this runner (available: {})",
            AVAILABLE.join(", ")
        )),
    }
}
