//! Tasks of the five kinds with their parameters (studio-protocol.md
//! Part B §5). Optional fields stay `Option` so a task round-trips exactly;
//! the `effective_*` accessors apply the contract's defaults.

use serde::{Deserialize, Serialize};

/// The kind of a task (snake_case on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Image generation.
    Image,
    /// Chat completion.
    Llm,
    /// Speech to text.
    AudioStt,
    /// Text to speech.
    AudioTts,
    /// Video generation.
    Video,
}

impl TaskKind {
    /// Every kind, in wire order.
    pub const ALL: [TaskKind; 5] = [
        TaskKind::Image,
        TaskKind::Llm,
        TaskKind::AudioStt,
        TaskKind::AudioTts,
        TaskKind::Video,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Image => "image",
            TaskKind::Llm => "llm",
            TaskKind::AudioStt => "audio_stt",
            TaskKind::AudioTts => "audio_tts",
            TaskKind::Video => "video",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// True for kinds whose result is bytes uploaded over HTTP multipart.
    pub fn is_binary(self) -> bool {
        matches!(self, TaskKind::Image | TaskKind::AudioTts | TaskKind::Video)
    }
}

impl std::fmt::Display for TaskKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A task, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Task {
    /// Image generation.
    Image(ImageTask),
    /// Chat completion.
    Llm(LlmTask),
    /// Speech to text.
    AudioStt(AudioSttTask),
    /// Text to speech.
    AudioTts(AudioTtsTask),
    /// Video generation.
    Video(VideoTask),
}

impl Task {
    /// The task's kind.
    pub fn kind(&self) -> TaskKind {
        match self {
            Task::Image(_) => TaskKind::Image,
            Task::Llm(_) => TaskKind::Llm,
            Task::AudioStt(_) => TaskKind::AudioStt,
            Task::AudioTts(_) => TaskKind::AudioTts,
            Task::Video(_) => TaskKind::Video,
        }
    }

    /// The full prompt reported with a result (Part B §5.7).
    pub fn reported_prompt(&self) -> String {
        match self {
            Task::Image(t) => t.prompt.clone(),
            Task::Llm(t) => t
                .messages
                .last()
                .map(|m| m.content.clone())
                .unwrap_or_default(),
            Task::AudioStt(t) => t.input_url.clone(),
            Task::AudioTts(t) => t.text.clone(),
            Task::Video(t) => t.prompt.clone(),
        }
    }

    /// The extension the result must have (binary kinds only).
    pub fn requested_ext(&self) -> Option<String> {
        match self {
            Task::Image(t) => Some(t.effective_ext().to_string()),
            Task::AudioTts(t) => Some(t.effective_ext().to_string()),
            Task::Video(t) => Some(t.effective_ext().to_string()),
            Task::Llm(_) | Task::AudioStt(_) => None,
        }
    }

    /// Checks what parsing cannot: sizes and counts that must be positive.
    /// The error names the offending field (`task.width`).
    pub fn validate(&self) -> Result<(), String> {
        fn positive(name: &str, v: Option<u32>) -> Result<(), String> {
            match v {
                Some(0) => Err(format!("task.{name}: must be greater than 0")),
                _ => Ok(()),
            }
        }
        match self {
            Task::Image(t) => {
                positive("width", t.width)?;
                positive("height", t.height)?;
                positive("steps", t.steps)?;
                if let Some(d) = t.denoise {
                    if !(0.0..=1.0).contains(&d) {
                        return Err(format!("task.denoise: {d} is outside 0..1"));
                    }
                }
            }
            Task::Llm(t) => {
                if t.messages.is_empty() {
                    return Err("task.messages: must hold at least one message".into());
                }
                positive("maxTokens", t.max_tokens)?;
            }
            Task::AudioStt(t) => {
                if t.input_url.trim().is_empty() {
                    return Err("task.inputUrl: must not be empty".into());
                }
            }
            Task::AudioTts(t) => {
                if let Some(s) = t.speed {
                    if !(s.is_finite() && s > 0.0) {
                        return Err(format!("task.speed: {s} must be greater than 0"));
                    }
                }
            }
            Task::Video(t) => {
                positive("width", t.width)?;
                positive("height", t.height)?;
                positive("fps", t.fps)?;
                if let Some(s) = t.seconds {
                    if !(s.is_finite() && s > 0.0) {
                        return Err(format!("task.seconds: {s} must be greater than 0"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// `image` task (Part B §5.1).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageTask {
    /// Positive prompt.
    pub prompt: String,
    /// What to avoid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    /// Base image for img2img.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_image_url: Option<String>,
    /// Inpaint mask (white = repaint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_url: Option<String>,
    /// Reference image for edit models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_image_url: Option<String>,
    /// img2img strength 0..1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denoise: Option<f64>,
    /// Guidance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cfg_scale: Option<f64>,
    /// Sampler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_method: Option<String>,
    /// Width in pixels (default 512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Height in pixels (default 512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Sampling steps (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u32>,
    /// Seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Output format (default `webp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext: Option<String>,
}

impl ImageTask {
    /// Width, default 512.
    pub fn effective_width(&self) -> u32 {
        self.width.unwrap_or(512)
    }
    /// Height, default 512.
    pub fn effective_height(&self) -> u32 {
        self.height.unwrap_or(512)
    }
    /// Steps, default 20.
    pub fn effective_steps(&self) -> u32 {
        self.steps.unwrap_or(20)
    }
    /// Extension, default `webp`.
    pub fn effective_ext(&self) -> &str {
        self.ext.as_deref().unwrap_or("webp")
    }
}

/// One chat turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// `llm` task (Part B §5.2).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LlmTask {
    /// Chat turns.
    pub messages: Vec<ChatMessage>,
    /// System prompt placed before the messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Generation budget (default 512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature (default 0.7; ≤ 0 is greedy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Stop strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<String>>,
    /// Seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Strict JSON output schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<serde_json::Value>,
    /// Reasoning-effort hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    /// Per-request chat-template variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template_kwargs: Option<serde_json::Map<String, serde_json::Value>>,
}

impl LlmTask {
    /// Budget, default 512.
    pub fn effective_max_tokens(&self) -> u32 {
        self.max_tokens.unwrap_or(512)
    }
    /// Temperature, default 0.7.
    pub fn effective_temperature(&self) -> f64 {
        self.temperature.unwrap_or(0.7)
    }
}

/// `audio_stt` task (Part B §5.3).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AudioSttTask {
    /// Where to fetch the audio.
    pub input_url: String,
    /// Language hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Translate to English.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translate: Option<bool>,
    /// Initial prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Voice-activity detection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vad: Option<bool>,
    /// `segment` or `word`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamps: Option<String>,
}

/// `audio_tts` task (Part B §5.4).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AudioTtsTask {
    /// Text to speak.
    pub text: String,
    /// Voice id (default `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
    /// 1.0 = natural.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<f64>,
    /// Language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Output format (default `wav`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext: Option<String>,
}

impl AudioTtsTask {
    /// Extension, default `wav`.
    pub fn effective_ext(&self) -> &str {
        self.ext.as_deref().unwrap_or("wav")
    }
}

/// `video` task (Part B §5.5).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VideoTask {
    /// Prompt.
    pub prompt: String,
    /// What to avoid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    /// First frame for image-to-video.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_image_url: Option<String>,
    /// Duration in seconds (default 2.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// Frames per second (engine default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps: Option<u32>,
    /// Width (default 512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Height (default 512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Container (default `mp4`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext: Option<String>,
}

impl VideoTask {
    /// Duration, default 2 s.
    pub fn effective_seconds(&self) -> f64 {
        self.seconds.unwrap_or(2.0)
    }
    /// Width, default 512.
    pub fn effective_width(&self) -> u32 {
        self.width.unwrap_or(512)
    }
    /// Height, default 512.
    pub fn effective_height(&self) -> u32 {
        self.height.unwrap_or(512)
    }
    /// Container, default `mp4`.
    pub fn effective_ext(&self) -> &str {
        self.ext.as_deref().unwrap_or("mp4")
    }
}
