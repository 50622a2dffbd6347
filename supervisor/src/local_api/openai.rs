//! OpenAI request shapes and their mapping onto studio tasks, and the
//! answers back. Pure.

use serde::Deserialize;
use serde_json::{json, Value};
use studio_protocol::studio::{AudioSttTask, AudioTtsTask, ChatMessage, ImageTask, LlmTask};

/// A message's content: a string, or parts of which the text ones count.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// `[{ "type": "text", "text": … }, …]`.
    Parts(Vec<Value>),
}

/// One chat message.
#[derive(Debug, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant`, …
    pub role: String,
    /// Its content (absent on some assistant turns).
    #[serde(default)]
    pub content: Option<Content>,
}

/// `stop`: a string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// Model id (`GET /v1/models`).
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Generation budget (legacy name).
    pub max_tokens: Option<u32>,
    /// Generation budget.
    pub max_completion_tokens: Option<u32>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Seed.
    pub seed: Option<u64>,
    /// Stop strings.
    pub stop: Option<Stop>,
    /// `{"type": "json_schema", "json_schema": {"schema": …}}` or
    /// `{"type": "json_object"}` or `{"type": "text"}`.
    pub response_format: Option<Value>,
    /// Streamed answer.
    pub stream: Option<bool>,
    /// `{"include_usage": true}`: a last chunk with the usage.
    pub stream_options: Option<Value>,
}

impl ChatRequest {
    /// The llm task; the error names what is wrong.
    pub fn task(&self) -> Result<LlmTask, String> {
        if self.messages.is_empty() {
            return Err("messages must hold at least one message".into());
        }
        let messages = self
            .messages
            .iter()
            .map(|m| ChatMessage {
                role: m.role.clone(),
                content: match &m.content {
                    Some(Content::Text(t)) => t.clone(),
                    Some(Content::Parts(parts)) => parts
                        .iter()
                        .filter(|p| p["type"] == "text")
                        .filter_map(|p| p["text"].as_str())
                        .collect::<Vec<_>>()
                        .join("\n"),
                    None => String::new(),
                },
            })
            .collect();
        let json_schema = match &self.response_format {
            None => None,
            Some(f) => match f["type"].as_str() {
                Some("text") => None,
                Some("json_schema") => Some(
                    f["json_schema"]["schema"]
                        .as_object()
                        .map(|o| Value::Object(o.clone()))
                        .ok_or(
                            "response_format json_schema needs json_schema.schema (an object)",
                        )?,
                ),
                Some("json_object") => Some(json!({"type": "object"})),
                other => {
                    return Err(format!(
                    "response_format type {other:?} is not one of text, json_object, json_schema"
                ))
                }
            },
        };
        Ok(LlmTask {
            messages,
            max_tokens: self.max_completion_tokens.or(self.max_tokens),
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            stop: self.stop.as_ref().map(|s| match s {
                Stop::One(x) => vec![x.clone()],
                Stop::Many(v) => v.clone(),
            }),
            json_schema,
            ..Default::default()
        })
    }
}

/// The engine's `chat.completion` with this request's id, model and time.
pub fn completion(mut result: Value, id: &str, model: &str, created: u64) -> Value {
    if let Some(o) = result.as_object_mut() {
        o.insert("id".into(), id.into());
        o.insert("object".into(), "chat.completion".into());
        o.insert("model".into(), model.into());
        o.insert("created".into(), created.into());
        if !o.contains_key("usage") {
            o.insert(
                "usage".into(),
                json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}),
            );
        }
    }
    result
}

/// `POST /v1/images/generations`.
#[derive(Debug, Deserialize)]
pub struct ImagesRequest {
    /// What to draw.
    pub prompt: String,
    /// Model id (default `synthetic`).
    pub model: Option<String>,
    /// How many (1–10).
    pub n: Option<u32>,
    /// `WIDTHxHEIGHT`.
    pub size: Option<String>,
    /// Only `b64_json`.
    pub response_format: Option<String>,
    /// Seed (an extension); image i gets seed + i.
    pub seed: Option<u64>,
    /// Output format (`png`, `jpeg`, `webp`).
    pub output_format: Option<String>,
}

impl ImagesRequest {
    /// One image task per requested image, and the model.
    pub fn tasks(&self) -> Result<(Vec<ImageTask>, String), String> {
        if let Some(f) = self.response_format.as_deref().filter(|f| *f != "b64_json") {
            return Err(format!(
                "response_format `{f}` is not served: this worker answers b64_json only"
            ));
        }
        let n = self.n.unwrap_or(1);
        if !(1..=10).contains(&n) {
            return Err(format!("n must be 1 to 10, not {n}"));
        }
        let (width, height) = match self.size.as_deref() {
            None | Some("auto") => (None, None),
            Some(s) => {
                let (w, h) = s
                    .split_once('x')
                    .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
                    .filter(|(w, h)| *w > 0 && *h > 0)
                    .ok_or_else(|| format!("size `{s}` is not WIDTHxHEIGHT"))?;
                (Some(w), Some(h))
            }
        };
        let ext = match self.output_format.as_deref() {
            None => "png".to_string(),
            Some(f @ ("png" | "webp")) => f.to_string(),
            Some("jpeg" | "jpg") => "jpg".to_string(),
            Some(f) => return Err(format!("output_format `{f}` is not png, jpeg or webp")),
        };
        let tasks = (0..n)
            .map(|i| ImageTask {
                prompt: self.prompt.clone(),
                width,
                height,
                seed: self.seed.map(|s| s + u64::from(i)),
                ext: Some(ext.clone()),
                ..Default::default()
            })
            .collect();
        Ok((
            tasks,
            self.model.clone().unwrap_or_else(|| "synthetic".into()),
        ))
    }
}

/// What a transcription answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TranscriptFormat {
    /// `{"text"}`.
    Json,
    /// The text alone.
    Text,
    /// Language, duration and segments (or words) too.
    Verbose,
}

/// The text fields of a transcription form.
#[derive(Debug, Default)]
pub struct TranscriptionForm {
    /// Model id.
    pub model: Option<String>,
    /// Language (ISO 639-1).
    pub language: Option<String>,
    /// Initial prompt.
    pub prompt: Option<String>,
    /// `json`, `text`, `verbose_json`.
    pub response_format: Option<String>,
    /// `segment` and/or `word`.
    pub granularities: Vec<String>,
}

impl TranscriptionForm {
    /// Records one field (unknown ones are ignored, like the API does).
    pub fn set(&mut self, name: &str, value: String) {
        match name {
            "model" => self.model = Some(value),
            "language" => self.language = Some(value),
            "prompt" => self.prompt = Some(value),
            "response_format" => self.response_format = Some(value),
            "timestamp_granularities[]" | "timestamp_granularities" => {
                self.granularities.push(value)
            }
            _ => {}
        }
    }

    /// The task for the audio at `input`, and the answer's format.
    pub fn task(&self, input: &str) -> Result<(AudioSttTask, TranscriptFormat), String> {
        let format = match self.response_format.as_deref() {
            None | Some("json") => TranscriptFormat::Json,
            Some("text") => TranscriptFormat::Text,
            Some("verbose_json") => TranscriptFormat::Verbose,
            Some(f) => {
                return Err(format!(
                    "response_format `{f}` is not json, text or verbose_json"
                ))
            }
        };
        let timestamps = if format != TranscriptFormat::Verbose {
            None
        } else if self.granularities.iter().any(|g| g == "word") {
            Some("word".to_string())
        } else {
            Some("segment".to_string())
        };
        Ok((
            AudioSttTask {
                input_url: input.to_string(),
                language: self.language.clone(),
                prompt: self.prompt.clone(),
                timestamps,
                ..Default::default()
            },
            format,
        ))
    }
}

/// The engine's transcript as `verbose_json`.
pub fn verbose_transcript(result: &Value) -> Value {
    let segments: Vec<Value> = result["segments"]
        .as_array()
        .map(|a| {
            a.iter()
                .enumerate()
                .map(|(i, s)| json!({"id": i, "start": s["start"], "end": s["end"], "text": s["text"]}))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "task": "transcribe",
        "language": result["language"],
        "duration": result["duration"],
        "text": result["text"],
        "segments": segments,
    })
}

/// `POST /v1/audio/speech`.
#[derive(Debug, Deserialize)]
pub struct SpeechRequest {
    /// Model id.
    pub model: String,
    /// The text to speak.
    pub input: String,
    /// Voice.
    pub voice: Option<String>,
    /// 0.25–4.0.
    pub speed: Option<f64>,
    /// `wav`, `mp3`, `opus`, `flac`.
    pub response_format: Option<String>,
}

impl SpeechRequest {
    /// The TTS task.
    pub fn task(&self) -> Result<AudioTtsTask, String> {
        if self.input.trim().is_empty() {
            return Err("input must not be empty".into());
        }
        // Opus travels in an Ogg container (the encoders' `ogg`).
        let ext = match self.response_format.as_deref() {
            None => "wav",
            Some("opus") => "ogg",
            Some(f @ ("wav" | "mp3" | "flac")) => f,
            Some(f) => {
                return Err(format!(
                    "response_format `{f}` is not wav, mp3, opus or flac"
                ))
            }
        };
        if let Some(s) = self.speed.filter(|s| !(0.25..=4.0).contains(s)) {
            return Err(format!("speed must be 0.25 to 4.0, not {s}"));
        }
        Ok(AudioTtsTask {
            text: self.input.clone(),
            voice: self.voice.clone(),
            speed: self.speed,
            ext: Some(ext.to_string()),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_request_becomes_an_llm_task() {
        let req: ChatRequest = serde_json::from_value(json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {}}]}
            ],
            "max_tokens": 9, "max_completion_tokens": 7, "stop": "END", "seed": 3,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
        }))
        .unwrap();
        let t = req.task().unwrap();
        assert_eq!(t.messages[1].content, "hi");
        assert_eq!(t.max_tokens, Some(7));
        assert_eq!(t.stop, Some(vec!["END".to_string()]));
        assert_eq!(t.json_schema, Some(json!({"type": "object"})));
        let bad: ChatRequest = serde_json::from_value(
            json!({"model": "m", "messages": [], "response_format": {"type": "xml"}}),
        )
        .unwrap();
        assert!(bad.task().unwrap_err().contains("at least one"));
    }

    #[test]
    fn image_sizes_and_counts_are_checked() {
        let req: ImagesRequest =
            serde_json::from_value(json!({"prompt": "p", "n": 2, "size": "64x32", "seed": 5}))
                .unwrap();
        let (tasks, model) = req.tasks().unwrap();
        assert_eq!(model, "synthetic");
        assert_eq!(
            (tasks[1].width, tasks[1].height, tasks[1].seed),
            (Some(64), Some(32), Some(6))
        );
        for (body, why) in [
            (json!({"prompt": "p", "size": "big"}), "WIDTHxHEIGHT"),
            (json!({"prompt": "p", "n": 11}), "1 to 10"),
            (
                json!({"prompt": "p", "response_format": "url"}),
                "b64_json only",
            ),
        ] {
            let r: ImagesRequest = serde_json::from_value(body).unwrap();
            assert!(r.tasks().unwrap_err().contains(why));
        }
    }

    #[test]
    fn audio_forms_become_tasks() {
        let mut f = TranscriptionForm::default();
        f.set("response_format", "verbose_json".into());
        f.set("timestamp_granularities[]", "word".into());
        f.set("language", "en".into());
        let (t, format) = f.task("/tmp/a.wav").unwrap();
        assert_eq!(format, TranscriptFormat::Verbose);
        assert_eq!(t.timestamps.as_deref(), Some("word"));
        assert_eq!(t.input_url, "/tmp/a.wav");
        f.set("response_format", "srt".into());
        assert!(f.task("x").unwrap_err().contains("srt"));
        let s: SpeechRequest =
            serde_json::from_value(json!({"model": "v", "input": "hi", "speed": 5.0})).unwrap();
        assert!(s.task().unwrap_err().contains("0.25 to 4.0"));
        let s: SpeechRequest =
            serde_json::from_value(json!({"model": "v", "input": "hi", "response_format": "flac"}))
                .unwrap();
        assert_eq!(s.task().unwrap().ext.as_deref(), Some("flac"));
    }
}
