//! The Config tab's form: every top-level config key in one of the groups
//! the product's first description names, each with the widget its value
//! calls for. The worker checks and writes what is saved; the form only
//! keeps the edits and says which wait for a restart.

use serde_json::{Map, Value};

/// The groups, in order, and their keys. A key the config has and no
/// group names lands in "Other" (and a test fails, so none is forgotten).
pub const GROUPS: &[(&str, &[&str])] = &[
    (
        "Connection",
        &[
            "api_base_url",
            "worker_id",
            "auth_token",
            "bootstrap_token",
            "install_id",
            "registration_request_id",
            "registration_secret",
            "registration_poll_secs",
            "ws_reconnect_attempts",
        ],
    ),
    (
        "Worker",
        &[
            "vram_threshold_gb",
            "vram_margin_gb",
            "auto_enabled",
            "auto_start",
            "gpus",
            "worker",
            "drain_timeout_secs",
            "results_dir",
            "results_max_mb",
            "upload_attempts",
        ],
    ),
    (
        "Engine",
        &[
            "engine",
            "gradio_endpoint_url",
            "gradio_allow_remote",
            "gradio",
            "supported_models_override",
            "engine_runner_path",
            "engine_threads",
            "engine_memory_limit_mb",
            "onnxruntime_path",
            "max_frame_bytes",
            "stall_timeout_secs",
            "job_timeout_secs",
            "ping_timeout_secs",
            "max_consecutive_failures",
            "failure_cooldown_secs",
            "restart_backoff_initial_ms",
            "restart_backoff_max_ms",
        ],
    ),
    (
        "Models",
        &["models_root", "model_keep_alive_secs", "models"],
    ),
    (
        "Auto-update",
        &[
            "auto_update_enabled",
            "auto_update_interval_secs",
            "auto_update_feed",
            "auto_update_prerelease",
        ],
    ),
    (
        "Endpoints",
        &[
            "metrics_listen",
            "metrics_allow_remote",
            "metrics_token",
            "local_api_listen",
            "local_api_allow_remote",
            "local_api_token",
            "local_api_queue",
        ],
    ),
];

/// How a value is edited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Widget {
    /// A checkbox.
    Check,
    /// A whole number.
    Integer,
    /// A number with a fraction.
    Number,
    /// One line of text.
    Text,
    /// A secret: shown as `***`, replaced by typing a new one.
    Secret,
    /// A list or table, edited as JSON.
    Json,
}

/// Keys whose value is a credential.
const SECRETS: &[&str] = &[
    "auth_token",
    "bootstrap_token",
    "registration_secret",
    "metrics_token",
    "local_api_token",
];

/// The widget for `key` holding `value` (unset keys edit as text).
pub fn widget(key: &str, value: &Value) -> Widget {
    if SECRETS.contains(&key) {
        return Widget::Secret;
    }
    match value {
        Value::Bool(_) => Widget::Check,
        Value::Number(n) if n.is_f64() => Widget::Number,
        Value::Number(_) => Widget::Integer,
        Value::Array(_) | Value::Object(_) => Widget::Json,
        Value::String(_) | Value::Null => Widget::Text,
    }
}

/// One row of the form.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The key.
    pub key: String,
    /// How it is edited.
    pub widget: Widget,
    /// Its text as the widget shows it (JSON for lists and tables).
    pub text: String,
    /// Whether a running worker applies it without a restart.
    pub live: bool,
}

/// The config (as `GET /config` gives it) laid out in groups; keys it
/// does not set show empty so they can be set.
pub fn layout(config: &Value, live: &[String]) -> Vec<(String, Vec<Field>)> {
    let empty = Map::new();
    let obj = config.as_object().unwrap_or(&empty);
    let field = |key: &str| {
        let value = obj.get(key).cloned().unwrap_or(Value::Null);
        Field {
            key: key.to_string(),
            widget: widget(key, &value),
            text: match &value {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                v => v.to_string(),
            },
            live: live.iter().any(|k| k == key),
        }
    };
    let mut out: Vec<(String, Vec<Field>)> = GROUPS
        .iter()
        .map(|(g, keys)| (g.to_string(), keys.iter().map(|k| field(k)).collect()))
        .collect();
    let other: Vec<Field> = obj
        .keys()
        .filter(|k| !GROUPS.iter().any(|(_, keys)| keys.contains(&k.as_str())))
        .map(|k| field(k))
        .collect();
    if !other.is_empty() {
        out.push(("Other".into(), other));
    }
    out
}

/// What a field's text means as a config value, or why it does not parse
/// (naming the key). The worker's own check comes after.
pub fn value_of(field: &Field) -> Result<Value, String> {
    let t = field.text.trim();
    let bad = |what: &str| format!("{}: {what}", field.key);
    Ok(match field.widget {
        Widget::Check => Value::Bool(t == "true"),
        Widget::Integer if t.is_empty() => Value::Null,
        Widget::Integer => Value::from(t.parse::<i64>().map_err(|_| bad("not a whole number"))?),
        Widget::Number if t.is_empty() => Value::Null,
        Widget::Number => Value::from(t.parse::<f64>().map_err(|_| bad("not a number"))?),
        Widget::Json if t.is_empty() => Value::Null,
        Widget::Json => serde_json::from_str(t).map_err(|e| bad(&format!("not JSON ({e})")))?,
        Widget::Text | Widget::Secret if t.is_empty() => Value::Null,
        Widget::Text | Widget::Secret => Value::String(t.to_string()),
    })
}

/// The edits between the config as loaded and the fields now: the body
/// of `PUT /config`.
pub fn patch(loaded: &Value, fields: &[Field]) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for f in fields {
        let now = value_of(f)?;
        let before = loaded.get(&f.key).cloned().unwrap_or(Value::Null);
        // A number typed the same (`6` for `6.0`) is no edit.
        let same = match (&before, &now) {
            (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
            (a, b) => a == b,
        };
        if !same {
            out.insert(f.key.clone(), now);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_config_key_is_in_exactly_one_group() {
        let all = serde_json::to_value(studio_worker::config::Config::default()).unwrap();
        let mut keys: Vec<String> = all.as_object().unwrap().keys().cloned().collect();
        // Keys the default leaves unset are still keys.
        keys.extend(
            [
                "worker_id",
                "auth_token",
                "bootstrap_token",
                "install_id",
                "registration_request_id",
                "registration_secret",
                "engine",
                "gradio_endpoint_url",
                "gradio",
                "supported_models_override",
                "metrics_token",
                "local_api_token",
                "engine_runner_path",
                "results_dir",
                "engine_threads",
                "engine_memory_limit_mb",
                "onnxruntime_path",
                "models",
                "gpus",
                "worker",
            ]
            .map(String::from),
        );
        for k in &keys {
            let n = GROUPS
                .iter()
                .filter(|(_, g)| g.contains(&k.as_str()))
                .count();
            assert_eq!(n, 1, "{k} is in {n} groups");
        }
        let laid = layout(&all, &[]);
        assert!(laid.iter().all(|(g, _)| g != "Other"), "{laid:?}");
    }

    #[test]
    fn widgets_follow_the_values_and_only_edits_are_sent() {
        let loaded = serde_json::json!({
            "vram_threshold_gb": 12.0, "auto_enabled": true, "upload_attempts": 3,
            "auth_token": "***", "gpus": [0, 1], "api_base_url": "http://s"
        });
        let live = vec!["vram_threshold_gb".to_string()];
        let mut fields: Vec<Field> = layout(&loaded, &live)
            .into_iter()
            .flat_map(|(_, f)| f)
            .collect();
        let get = |fields: &[Field], k: &str| -> usize {
            fields.iter().position(|f| f.key == k).unwrap()
        };
        let t = get(&fields, "vram_threshold_gb");
        assert_eq!((fields[t].widget, fields[t].live), (Widget::Number, true));
        assert_eq!(fields[get(&fields, "auto_enabled")].widget, Widget::Check);
        assert_eq!(
            fields[get(&fields, "upload_attempts")].widget,
            Widget::Integer
        );
        assert_eq!(fields[get(&fields, "auth_token")].widget, Widget::Secret);
        assert_eq!(fields[get(&fields, "gpus")].widget, Widget::Json);
        assert!(
            patch(&loaded, &fields).unwrap().is_empty(),
            "nothing edited"
        );
        fields[t].text = "6".into();
        let a = get(&fields, "upload_attempts");
        fields[a].text = "5".into();
        let p = patch(&loaded, &fields).unwrap();
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p["vram_threshold_gb"], 6.0);
        fields[a].text = "many".into();
        assert_eq!(
            patch(&loaded, &fields).unwrap_err(),
            "upload_attempts: not a whole number"
        );
    }
}
