//! `ModelSource`: which engine runs a job and which files it needs
//! (studio-protocol.md Part B §2.2.4, Part A A4).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Download and engine spec attached to every offer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelSource {
    /// The engine the job must run on (strict routing, no fallback).
    pub engine: Engine,
    /// Files to fetch into the model cache.
    #[serde(default, deserialize_with = "super::capabilities::null_as_default")]
    pub files: Vec<ModelFile>,
    /// Model-level defaults.
    pub cli_defaults: ModelCliDefaults,
}

impl ModelSource {
    /// The minimal synthetic source used by tests and `studio-worker job`.
    pub fn synthetic() -> Self {
        Self {
            engine: Engine::Synthetic,
            files: Vec::new(),
            cli_defaults: ModelCliDefaults {
                cfg_scale: 1.0,
                steps: 8,
                width: 1024,
                height: 1024,
                sampling_method: None,
                flow_shift: None,
                zero_cond_t: None,
                offload_to_cpu: None,
                context_size: None,
                chat_template_kwargs: None,
            },
        }
    }
}

/// An engine name. Unknown names parse (into [`Engine::Other`]) so that an
/// offer naming an engine this worker lacks can be accepted and failed
/// with a clear reason instead of killing the session.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Engine {
    /// Deterministic outputs for every kind, no model.
    Synthetic,
    /// stable-diffusion.cpp (image, video).
    SdCpp,
    /// llama.cpp (llm).
    LlamaCpp,
    /// whisper.cpp (audio_stt).
    WhisperCpp,
    /// ONNX Runtime (image).
    Onnx,
    /// Piper neural voices (audio_tts).
    Piper,
    /// espeak-ng (audio_tts without a model file).
    Espeak,
    /// A Gradio app on this host (image; no model files).
    Gradio,
    /// Parakeet: LAN streaming only, never available for jobs.
    Parakeet,
    /// A name this worker does not know.
    Other(String),
}

impl Engine {
    /// The kebab-case wire name.
    pub fn as_str(&self) -> &str {
        match self {
            Engine::Synthetic => "synthetic",
            Engine::SdCpp => "sd-cpp",
            Engine::LlamaCpp => "llama-cpp",
            Engine::WhisperCpp => "whisper-cpp",
            Engine::Onnx => "onnx",
            Engine::Piper => "piper",
            Engine::Espeak => "espeak",
            Engine::Gradio => "gradio",
            Engine::Parakeet => "parakeet",
            Engine::Other(s) => s,
        }
    }

    /// Parses a wire name; never fails.
    pub fn parse(s: &str) -> Self {
        match s {
            "synthetic" => Engine::Synthetic,
            "sd-cpp" => Engine::SdCpp,
            "llama-cpp" => Engine::LlamaCpp,
            "whisper-cpp" => Engine::WhisperCpp,
            "onnx" => Engine::Onnx,
            "piper" => Engine::Piper,
            "espeak" => Engine::Espeak,
            "gradio" => Engine::Gradio,
            "parakeet" => Engine::Parakeet,
            other => Engine::Other(other.to_string()),
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Engine {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Engine {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Engine::parse(&s))
    }
}

/// One file a model needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelFile {
    /// What the engine uses the file for.
    pub role: FileRole,
    /// Where to download it (https; loopback http for tests).
    pub url: String,
    /// Plain file name in the model cache.
    pub filename: String,
    /// Size hint in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approx_bytes: Option<u64>,
    /// Lowercase hex SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// The role of a model file (kebab-case on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileRole {
    /// Diffusion model weights.
    DiffusionModel,
    /// Text encoder.
    TextEncoder,
    /// Vision text encoder.
    TextEncoderVision,
    /// Autoencoder.
    Vae,
    /// LoRA adapter.
    Lora,
    /// A whole model in one file.
    Model,
    /// A companion config (e.g. a Piper voice's `.onnx.json`).
    Config,
    /// A tiny autoencoder for stable-diffusion.cpp.
    Taesd,
}

/// Model-level defaults; the four numeric fields are required on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelCliDefaults {
    /// Guidance scale.
    pub cfg_scale: f64,
    /// Sampling steps.
    pub steps: u32,
    /// Default width.
    pub width: u32,
    /// Default height.
    pub height: u32,
    /// Sampler name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_method: Option<String>,
    /// Flow-model shift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_shift: Option<f64>,
    /// Qwen-Image edit flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zero_cond_t: Option<bool>,
    /// Keep weights in RAM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offload_to_cpu: Option<bool>,
    /// LLM context window (tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_size: Option<u32>,
    /// LLM chat-template variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template_kwargs: Option<serde_json::Map<String, serde_json::Value>>,
}
