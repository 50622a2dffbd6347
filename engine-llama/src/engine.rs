//! The llama-cpp engine: one GGUF model and its context kept loaded
//! between jobs, chat prompts from the model's own template, sampling with
//! stop strings and JSON-schema grammars, OpenAI `chat.completion` results.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use engine_runner::engine::{single_model_file, Engine, EngineError, Loads, Reporter};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use serde_json::{json, Map};
use studio_protocol::runner::{JobOutput, JobRequest, Phase};
use studio_protocol::studio::{LlmTask, LogLevel, Task};

use crate::chat::{self, Turn};

/// Context size when `cliDefaults.contextSize` gives none.
pub const DEFAULT_CONTEXT: u32 = 8192;
/// Prompt tokens decoded per batch.
const BATCH: usize = 512;
/// Least time between two generation progress reports.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

self_cell::self_cell!(
    /// A model and the context that borrows it, kept together.
    struct Session {
        owner: LlamaModel,
        #[covariant]
        dependent: LlamaContext,
    }
);

struct Loaded {
    path: PathBuf,
    n_ctx: u32,
    session: Session,
    template: String,
}

/// llama.cpp with the last model (and its context) kept loaded.
pub struct Llama {
    backend: LlamaBackend,
    threads: i32,
    default_model: Option<PathBuf>,
    loaded: Option<Loaded>,
    loads: Loads,
}

fn engine_err(msg: impl Into<String>) -> EngineError {
    EngineError::engine(msg)
}

impl Llama {
    /// An engine with no model loaded yet.
    pub fn new(threads: i32, default_model: Option<PathBuf>) -> Result<Self, String> {
        let backend = LlamaBackend::init().map_err(|e| format!("llama.cpp backend: {e}"))?;
        Ok(Self {
            backend,
            threads,
            default_model,
            loaded: None,
            loads: Loads::default(),
        })
    }

    fn ensure_loaded(
        &mut self,
        path: &PathBuf,
        want_ctx: u32,
        report: &mut dyn Reporter,
    ) -> Result<&mut Loaded, EngineError> {
        let same_model = self.loaded.as_ref().is_some_and(|l| &l.path == path);
        if let Some(l) = self.loaded.as_mut().filter(|_| same_model) {
            let fits = want_ctx.min(l.session.borrow_owner().n_ctx_train().max(1));
            if l.n_ctx == fits {
                return self
                    .loaded
                    .as_mut()
                    .ok_or_else(|| engine_err("model vanished"));
            }
        }
        let started = Loads::begin();
        report.progress(Phase::Loading, 0, 1);
        let model = match self.loaded.take() {
            // Same file, other context size: keep the weights.
            Some(l) if same_model => l.session.into_owner(),
            _ => {
                let params = LlamaModelParams::default().with_n_gpu_layers(gpu_layers());
                LlamaModel::load_from_file(&self.backend, path, &params).map_err(|e| {
                    EngineError::bad_input(format!(
                        "model file {} is not a GGUF model llama.cpp can load: {e}",
                        path.display()
                    ))
                })?
            }
        };
        let train = model.n_ctx_train().max(1);
        let n_ctx = want_ctx.min(train);
        let template = match model.chat_template(None) {
            Ok(t) => t
                .to_string()
                .map_err(|e| engine_err(format!("chat template: {e}")))?,
            Err(_) => {
                report.log(
                    LogLevel::Warn,
                    "the model has no chat template; using ChatML".into(),
                );
                chat::CHATML.to_string()
            }
        };
        let threads = self.threads;
        let backend = &self.backend;
        let session = Session::try_new(model, |m| {
            let params = LlamaContextParams::default()
                .with_n_ctx(NonZeroU32::new(n_ctx))
                .with_n_batch(BATCH as u32)
                .with_n_threads(threads)
                .with_n_threads_batch(threads);
            m.new_context(backend, params)
        })
        .map_err(|e| engine_err(format!("llama.cpp context of {n_ctx} tokens: {e}")))?;
        if same_model {
            report.progress(Phase::Loading, 1, 1);
            report.log(
                LogLevel::Info,
                format!(
                    "context resized to {n_ctx} tokens in {} ms (model kept, load #{})",
                    started.elapsed().as_millis(),
                    self.loads.count()
                ),
            );
        } else {
            self.loads.record(
                report,
                started,
                &format!("; context {n_ctx} of {train} trained"),
            );
        }
        self.loaded = Some(Loaded {
            path: path.clone(),
            n_ctx,
            session,
            template,
        });
        self.loaded
            .as_mut()
            .ok_or_else(|| engine_err("model vanished"))
    }

    fn chat(
        &mut self,
        job: &JobRequest,
        t: &LlmTask,
        report: &mut dyn Reporter,
    ) -> Result<JobOutput, EngineError> {
        let started = Instant::now();
        if t.messages.is_empty() {
            return Err(EngineError::bad_input(
                "task.messages: must hold at least one message",
            ));
        }
        let d = &job.model_source.cli_defaults;
        let want_ctx = d.context_size.unwrap_or(DEFAULT_CONTEXT).max(64);
        // Per-request kwargs override the model's.
        let mut kwargs: Map<String, serde_json::Value> =
            d.chat_template_kwargs.clone().unwrap_or_default();
        kwargs.extend(t.chat_template_kwargs.clone().unwrap_or_default());
        let grammar = match &t.json_schema {
            Some(schema) => Some(
                llama_cpp_2::json_schema_to_grammar(&schema.to_string()).map_err(|e| {
                    EngineError::bad_input(format!(
                        "task.jsonSchema: not a schema llama.cpp can enforce: {e}"
                    ))
                })?,
            ),
            None => None,
        };
        let path = single_model_file(job, self.default_model.as_deref(), "llama-cpp", "a GGUF")?;
        let loaded = self.ensure_loaded(&path, want_ctx, report)?;
        let n_ctx = loaded.n_ctx;
        let template = loaded.template.clone();
        let mut turns = Vec::new();
        if let Some(s) = &t.system {
            turns.push(Turn {
                role: "system".into(),
                content: s.clone(),
            });
        }
        turns.extend(t.messages.iter().map(|m| Turn {
            role: m.role.clone(),
            content: m.content.clone(),
        }));
        let stops: Vec<String> = t.stop.clone().unwrap_or_default();
        let max_tokens = t.effective_max_tokens().max(1);
        let temperature = t.effective_temperature();
        let seed = t.seed.map_or_else(random_seed, |s| s as u32);
        let model_name = job.model.clone();

        loaded.session.with_dependent_mut(|model, ctx| {
            let vocab = model.vocab();
            let piece = |tok: LlamaToken| {
                String::from_utf8_lossy(&vocab.token_to_piece(tok, true, None)).into_owned()
            };
            let (bos, eos) = (piece(vocab.bos()), piece(vocab.eos()));
            let prompt = chat::render(&template, &turns, &bos, &eos, &kwargs)
                .map_err(EngineError::bad_input)?;
            tracing::debug!(target: "engine", "prompt: {prompt:?}");
            let add_bos = vocab.should_add_bos() && (bos.is_empty() || !prompt.starts_with(&bos));
            let tokens = vocab.tokenize(prompt.as_bytes(), add_bos, true);
            if tokens.len() + 1 > n_ctx as usize {
                return Err(EngineError::bad_input(format!(
                    "task.messages: the prompt is {} tokens and does not fit the {n_ctx}-token context (cliDefaults.contextSize; the model was trained for {}); shorten it, nothing was truncated",
                    tokens.len(),
                    model.n_ctx_train()
                )));
            }
            ctx.clear_kv_cache();
            // Prompt, in batches; logits only for the last token.
            let mut batch = LlamaBatch::new(BATCH, 1);
            let total = tokens.len() as u64;
            for (chunk_i, chunk) in tokens.chunks(BATCH).enumerate() {
                batch.clear();
                let base = chunk_i * BATCH;
                for (i, tok) in chunk.iter().enumerate() {
                    let pos = base + i;
                    batch
                        .add(*tok, pos as i32, &[0], pos + 1 == tokens.len())
                        .map_err(|e| engine_err(format!("batch: {e}")))?;
                }
                ctx.decode(&mut batch)
                    .map_err(|e| engine_err(format!("llama.cpp could not process the prompt: {e}")))?;
                report.progress(Phase::Running, (base + chunk.len()) as u64, total);
            }
            let first_token_after = started.elapsed();
            let mut sampler = build_sampler(model, grammar.as_deref(), temperature, t.top_p, seed)?;
            let room = n_ctx as usize - tokens.len();
            let budget = (max_tokens as usize).min(room);
            let mut text_out = chat::TextOut::new(&stops);
            let mut deltas = engine_runner::engine::Deltas::new(&stops);
            let mut generated = 0usize;
            let mut last_report = Instant::now();
            let mut finish = "length";
            let mut idx = batch.n_tokens() - 1;
            let mut pos = tokens.len();
            while generated < budget {
                let tok = sampler.sample(ctx, idx);
                if vocab.is_eog(tok) {
                    finish = "stop";
                    break;
                }
                generated += 1;
                // Progress for the first token, then at most every 100 ms:
                // enough for the stall detector, cheap per token.
                if generated == 1 || last_report.elapsed() >= PROGRESS_EVERY {
                    report.progress(Phase::Running, generated as u64, budget as u64);
                    last_report = Instant::now();
                }
                if text_out.push(&vocab.token_to_piece(tok, false, None)) {
                    finish = "stop";
                    break;
                }
                deltas.push(text_out.text(), report);
                if report.cancelled() {
                    // The client went away: end here, with what there is.
                    finish = "stop";
                    break;
                }
                if generated == budget {
                    break;
                }
                batch.clear();
                batch
                    .add(tok, pos as i32, &[0], true)
                    .map_err(|e| engine_err(format!("batch: {e}")))?;
                pos += 1;
                idx = 0;
                ctx.decode(&mut batch)
                    .map_err(|e| engine_err(format!("llama.cpp decode: {e}")))?;
            }
            report.progress(Phase::Running, generated as u64, budget as u64);
            let text = text_out.finish();
            deltas.finish(&text, report);
            let (reasoning, content) = chat::split_think(&text);
            let mut message = json!({"role": "assistant", "content": content});
            if let Some(r) = reasoning {
                message["reasoning_content"] = json!(r);
            }
            let prompt_tokens = tokens.len();
            Ok(JobOutput::Json {
                value: json!({
                    "id": format!("chatcmpl-{}", job.job_id),
                    "object": "chat.completion",
                    "created": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
                    "model": model_name,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": generated,
                        "total_tokens": prompt_tokens + generated,
                    },
                    "elapsed_ms": started.elapsed().as_millis() as u64,
                    "time_to_first_token_ms": first_token_after.as_millis() as u64,
                }),
            })
        })
    }
}

/// Sampler chain: the JSON grammar first (when asked), then greedy for
/// temperature ≤ 0, else top-p, temperature and a seeded draw.
fn build_sampler(
    model: &LlamaModel,
    grammar: Option<&str>,
    temperature: f64,
    top_p: Option<f64>,
    seed: u32,
) -> Result<LlamaSampler, EngineError> {
    let mut chain = Vec::new();
    if let Some(g) = grammar {
        chain.push(LlamaSampler::grammar(model, g, "root").map_err(|e| {
            EngineError::bad_input(format!(
                "task.jsonSchema: grammar rejected by llama.cpp: {e}"
            ))
        })?);
    }
    if temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        if let Some(p) = top_p.filter(|p| *p > 0.0 && *p < 1.0) {
            chain.push(LlamaSampler::top_p(p as f32, 1));
        }
        chain.push(LlamaSampler::temp(temperature as f32));
        chain.push(LlamaSampler::dist(seed));
    }
    Ok(LlamaSampler::chain_simple(chain))
}

fn random_seed() -> u32 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos ^ std::process::id().rotate_left(16)
}

/// Offload every layer when built with a GPU backend.
fn gpu_layers() -> u32 {
    if cfg!(feature = "cuda") {
        u32::MAX
    } else {
        0
    }
}

impl Engine for Llama {
    fn name(&self) -> &'static str {
        "llama-cpp"
    }

    fn run(
        &mut self,
        job: &JobRequest,
        report: &mut dyn Reporter,
    ) -> Result<JobOutput, EngineError> {
        match &job.task {
            Task::Llm(t) => self.chat(job, t, report),
            other => Err(EngineError::cannot_serve("llama-cpp", other)),
        }
    }

    fn preload(&mut self, job: &JobRequest, report: &mut dyn Reporter) -> Result<(), EngineError> {
        let want_ctx = job
            .model_source
            .cli_defaults
            .context_size
            .unwrap_or(DEFAULT_CONTEXT)
            .max(64);
        let path = single_model_file(job, self.default_model.as_deref(), "llama-cpp", "a GGUF")?;
        self.ensure_loaded(&path, want_ctx, report).map(|_| ())
    }
}
