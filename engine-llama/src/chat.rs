//! Chat prompts: the model's own Jinja chat template (GGUF metadata
//! `tokenizer.chat_template`) rendered with minijinja, and the reply's
//! `<think>` split.

use minijinja::{context, Environment, Value};
use serde_json::Map;

/// One chat turn.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Turn {
    /// `system`, `user`, `assistant`, ...
    pub role: String,
    /// The text.
    pub content: String,
}

/// ChatML, for a model whose file carries no template.
pub const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Renders `template` for `turns`, ending with the assistant's turn.
/// `kwargs` are extra template variables (`chatTemplateKwargs`, e.g.
/// `enable_thinking`). Errors name the template problem.
pub fn render(
    template: &str,
    turns: &[Turn],
    bos: &str,
    eos: &str,
    kwargs: &Map<String, serde_json::Value>,
) -> Result<String, String> {
    let mut env = Environment::new();
    // Hugging Face templates call Python string methods (`.strip()`,
    // `.startswith()`) and `raise_exception`.
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    minijinja_contrib::add_to_environment(&mut env);
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<Value, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env.add_template("chat", template)
        .map_err(|e| format!("the model's chat template does not parse: {e}"))?;
    let tmpl = env
        .get_template("chat")
        .map_err(|e| format!("chat template: {e}"))?;
    let base = context! {
        messages => turns,
        add_generation_prompt => true,
        bos_token => bos,
        eos_token => eos,
    };
    let extra = Value::from_serialize(kwargs);
    // Earlier spreads win: kwargs cannot replace the messages.
    tmpl.render(context! { ..base, ..extra })
        .map_err(|e| format!("the model's chat template failed: {e}"))
}

/// A reply split into (reasoning, content) when it opens with a
/// `<think>…</think>` block.
pub fn split_think(text: &str) -> (Option<String>, String) {
    let trimmed = text.trim_start();
    if let Some(rest) = trimmed.strip_prefix("<think>") {
        if let Some(end) = rest.find("</think>") {
            let reasoning = rest[..end].trim().to_string();
            let content = rest[end + "</think>".len()..].trim_start().to_string();
            return (Some(reasoning), content);
        }
    }
    (None, text.to_string())
}

/// The reply as it grows token by token: bytes become text as soon as
/// they are whole UTF-8, and stop strings are looked for only where a new
/// piece could complete one (so the cost per token does not grow).
pub struct TextOut<'a> {
    text: String,
    pending: Vec<u8>,
    stops: &'a [String],
    longest: usize,
    stopped: bool,
}

impl<'a> TextOut<'a> {
    /// An empty reply that ends at any of `stops`.
    pub fn new(stops: &'a [String]) -> Self {
        Self {
            text: String::new(),
            pending: Vec::new(),
            stops,
            longest: stops.iter().map(String::len).max().unwrap_or(0),
            stopped: false,
        }
    }

    /// Adds a token's bytes; true when a stop string has been reached (the
    /// text is then cut before it).
    pub fn push(&mut self, piece: &[u8]) -> bool {
        if self.stopped {
            return true;
        }
        self.pending.extend_from_slice(piece);
        let before = self.text.len();
        match std::str::from_utf8(&self.pending) {
            Ok(s) => {
                self.text.push_str(s);
                self.pending.clear();
            }
            Err(e) => {
                let (good, rest) = self.pending.split_at(e.valid_up_to());
                // Safe: `valid_up_to` bytes are valid UTF-8.
                self.text.push_str(&String::from_utf8_lossy(good));
                let rest = rest.to_vec();
                // An invalid (not just incomplete) sequence is replaced.
                if e.error_len().is_some() {
                    self.text.push_str(&String::from_utf8_lossy(&rest));
                    self.pending.clear();
                } else {
                    self.pending = rest;
                }
            }
        }
        if self.longest == 0 || self.text.len() == before {
            return false;
        }
        let mut from = before.saturating_sub(self.longest - 1);
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        if let Some(cut) = find_stop(&self.text[from..], self.stops) {
            self.text.truncate(from + cut);
            self.stopped = true;
        }
        self.stopped
    }

    /// The reply so far (whole characters only).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The reply (a trailing incomplete character is replaced).
    pub fn finish(mut self) -> String {
        if !self.stopped && !self.pending.is_empty() {
            self.text.push_str(&String::from_utf8_lossy(&self.pending));
        }
        self.text
    }
}

/// Where the earliest stop string starts in `text`, if one does.
pub fn find_stop(text: &str, stops: &[String]) -> Option<usize> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turns() -> Vec<Turn> {
        vec![
            Turn {
                role: "system".into(),
                content: "Be brief.".into(),
            },
            Turn {
                role: "user".into(),
                content: "Hi".into(),
            },
        ]
    }

    #[test]
    fn chatml_renders_with_the_generation_prompt() {
        let out = render(CHATML, &turns(), "", "", &Map::new()).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_methods_kwargs_and_raise_exception_work() {
        let t = "{% if enable_thinking is defined and not enable_thinking %}/no_think {% endif %}{% for m in messages %}{% if m.role not in ['system', 'user'] %}{{ raise_exception('bad role ' + m.role) }}{% endif %}{{ m.content.strip().upper() }}|{% endfor %}";
        let mut kw = Map::new();
        kw.insert("enable_thinking".into(), serde_json::json!(false));
        assert_eq!(
            render(t, &turns(), "", "", &kw).unwrap(),
            "/no_think BE BRIEF.|HI|"
        );
        kw.insert("messages".into(), serde_json::json!([]));
        assert_eq!(
            render(t, &turns(), "", "", &kw).unwrap(),
            "/no_think BE BRIEF.|HI|",
            "kwargs never replace the messages"
        );
        let bad = vec![Turn {
            role: "robot".into(),
            content: "x".into(),
        }];
        let e = render(t, &bad, "", "", &Map::new()).unwrap_err();
        assert!(e.contains("bad role robot"), "{e}");
        assert!(render("{% for %}", &bad, "", "", &Map::new())
            .unwrap_err()
            .contains("does not parse"));
    }

    #[test]
    fn think_blocks_are_split_off() {
        assert_eq!(
            split_think("<think>\nplan\n</think>\n\nanswer"),
            (Some("plan".into()), "answer".into())
        );
        assert_eq!(split_think("plain"), (None, "plain".into()));
        assert_eq!(
            split_think("<think>never closed"),
            (None, "<think>never closed".into())
        );
    }

    #[test]
    fn a_stop_split_across_pieces_is_never_emitted() {
        let stops = vec!["<END>".to_string()];
        let mut out = TextOut::new(&stops);
        for piece in ["Hello", " wor", "ld <E", "N", "D> more"] {
            if out.push(piece.as_bytes()) {
                break;
            }
        }
        assert_eq!(out.finish(), "Hello world ");
        // A character split across tokens is joined, not mangled.
        let mut out = TextOut::new(&[]);
        let e = "é".as_bytes();
        assert!(!out.push(&e[..1]));
        assert!(!out.push(&e[1..]));
        assert!(!out.push(b"!"));
        assert_eq!(out.finish(), "é!");
        // A multi-byte stop right at the start of the text.
        let stops = vec!["→".to_string()];
        let mut out = TextOut::new(&stops);
        assert!(out.push("→ rest".as_bytes()));
        assert_eq!(out.finish(), "");
    }

    #[test]
    fn the_earliest_stop_wins() {
        let stops = vec!["END".to_string(), "\n\n".to_string(), String::new()];
        assert_eq!(find_stop("a\n\nb END", &stops), Some(1));
        assert_eq!(find_stop("abc", &stops), None);
    }
}
