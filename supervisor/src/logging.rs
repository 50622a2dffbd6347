//! The worker's log: to stderr, human-readable or one JSON object a line
//! (`--log-format json`), filtered by `STUDIO_WORKER_LOG`, else
//! `RUST_LOG`, else `info`; and the same records to the studio through
//! [`crate::logship::ShipLayer`], and errors and warnings to Sentry when
//! it is on ([`crate::report::SentryLayer`]).
//!
//! A JSON line: `{"time", "level", "target", "message", "jobId"?,
//! "fields"?}`, where `fields` holds every other field of the event.
//! Secrets never reach a record: credentials are [`studio_protocol::Secret`]
//! values, which print `***`.

use std::io::Write as _;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::logship;

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per record.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// An event's fields: the message, the job id, the rest by name.
#[derive(Default)]
pub struct Record {
    /// The `message` field.
    pub message: String,
    /// The `job_id` field.
    pub job_id: Option<String>,
    /// Every other field.
    pub fields: Map<String, Value>,
}

impl Record {
    /// Reads `event`'s fields.
    pub fn of(event: &Event<'_>) -> Self {
        let mut r = Record::default();
        event.record(&mut r);
        r
    }

    fn put(&mut self, field: &Field, value: Value) {
        match (field.name(), value) {
            ("message", Value::String(s)) => self.message.push_str(&s),
            ("message", other) => self.message.push_str(&other.to_string()),
            ("job_id", Value::String(s)) => self.job_id = Some(s),
            ("job_id", other) => self.job_id = Some(other.to_string()),
            (name, v) => {
                self.fields.insert(name.to_string(), v);
            }
        }
    }

    /// The other fields as ` name=value` pairs (for one-line forms).
    pub fn extra(&self) -> String {
        self.fields
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!(" {k}={s}"),
                other => format!(" {k}={other}"),
            })
            .collect()
    }
}

impl Visit for Record {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
}

/// The JSON-lines layer.
struct JsonLines;

impl<S: Subscriber> Layer<S> for JsonLines {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let r = Record::of(event);
        let mut line = Map::new();
        line.insert("time".into(), logship::now_ts().into());
        line.insert(
            "level".into(),
            meta.level().as_str().to_ascii_lowercase().into(),
        );
        line.insert("target".into(), meta.target().into());
        line.insert("message".into(), r.message.into());
        if let Some(id) = r.job_id {
            line.insert("jobId".into(), id.into());
        }
        if !r.fields.is_empty() {
            line.insert("fields".into(), Value::Object(r.fields));
        }
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        // One write per line, so lines from several threads never mix.
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}

/// The filter: `STUDIO_WORKER_LOG`, else `RUST_LOG`, else `info`.
fn filter() -> EnvFilter {
    EnvFilter::try_from_env("STUDIO_WORKER_LOG")
        .or_else(|_| EnvFilter::try_from_env("RUST_LOG"))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the log for this process.
pub fn init(format: LogFormat) {
    let registry = tracing_subscriber::registry()
        .with(filter())
        .with(logship::ShipLayer)
        .with(crate::report::SentryLayer);
    let _ = match format {
        LogFormat::Human => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(true),
            )
            .try_init(),
        LogFormat::Json => registry.with(JsonLines).try_init(),
    };
}
