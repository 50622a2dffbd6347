//! Synthetic chat completions in the OpenAI `chat.completion` shape with
//! real token counts (a whitespace-and-punctuation tokenizer).

use serde_json::json;
use studio_protocol::runner::{JobOutput, Phase};
use studio_protocol::studio::LlmTask;

use super::short_hex;
use crate::engine::{Deltas, EngineError, Reporter};

/// Splits text into word and punctuation tokens.
pub(crate) fn tokens(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for word in text.split_whitespace() {
        let mut start = 0;
        for (i, c) in word.char_indices() {
            if !c.is_alphanumeric() {
                if start < i {
                    out.push(&word[start..i]);
                }
                out.push(&word[i..i + c.len_utf8()]);
                start = i + c.len_utf8();
            }
        }
        if start < word.len() {
            out.push(&word[start..]);
        }
    }
    out
}

pub(super) fn run(
    t: &LlmTask,
    key: &[u8; 32],
    report: &mut dyn Reporter,
) -> Result<JobOutput, EngineError> {
    if t.messages.is_empty() {
        return Err(EngineError::bad_input(
            "task.messages: must hold at least one message",
        ));
    }
    let mut prompt = String::new();
    if let Some(s) = &t.system {
        prompt.push_str(s);
        prompt.push('\n');
    }
    for m in &t.messages {
        prompt.push_str(&m.role);
        prompt.push_str(": ");
        prompt.push_str(&m.content);
        prompt.push('\n');
    }
    let prompt_tokens = tokens(&prompt).len();
    let reply = format!("[synthetic] reply to prompt #{}", short_hex(key));
    // (token, starts a new word) pairs, so spaces can be put back.
    let all: Vec<(&str, bool)> = reply
        .split_whitespace()
        .flat_map(|w| tokens(w).into_iter().enumerate().map(|(i, t)| (t, i == 0)))
        .collect();
    let budget = t.effective_max_tokens() as usize;
    let mut content = String::new();
    let mut finish = "stop";
    let stops = t.stop.clone().unwrap_or_default();
    let mut deltas = Deltas::new(&stops);
    for (i, (tok, new_word)) in all.iter().enumerate() {
        if i == budget {
            finish = "length";
            break;
        }
        if report.cancelled() {
            break;
        }
        let glue = if i > 0 && *new_word { " " } else { "" };
        let candidate = format!("{content}{glue}{tok}");
        let stop_at = t
            .stop
            .iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .filter_map(|s| candidate.find(s.as_str()))
            .min();
        if let Some(cut) = stop_at {
            content = candidate[..cut].to_string();
            break;
        }
        content = candidate;
        report.progress(Phase::Running, i as u64 + 1, all.len() as u64);
        deltas.push(&content, report);
    }
    deltas.finish(&content, report);
    let completion_tokens = tokens(&content).len();
    Ok(JobOutput::Json {
        value: json!({
            "id": format!("chatcmpl-{}", short_hex(key)),
            "object": "chat.completion",
            "model": "synthetic-llm",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish,
            }],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::tokens;

    #[test]
    fn tokenizer_splits_words_and_punctuation() {
        assert_eq!(
            tokens("Hi, there! #ab12"),
            vec!["Hi", ",", "there", "!", "#", "ab12"]
        );
        assert!(tokens("   ").is_empty());
    }
}
