//! The whisper-cpp engine: one ggml whisper model (and a decoding state)
//! kept loaded between jobs; audio in any format, text out.

use std::ffi::c_void;
use std::os::raw::c_int;
use std::path::PathBuf;
use std::time::Instant;

use engine_runner::engine::{single_model_file, Engine, EngineError, Loads, Reporter};
use serde_json::json;
use studio_protocol::runner::{JobOutput, JobRequest, Phase};
use studio_protocol::studio::{AudioSttTask, LogLevel, Task};
use whisper_rs::{
    FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState,
};

use crate::audio;

struct Loaded {
    path: PathBuf,
    // The state holds the context alive; keep both for clarity.
    _ctx: WhisperContext,
    state: WhisperState,
    /// False for the English-only (`*.en`) models.
    multilingual: bool,
}

/// whisper.cpp with the last model kept loaded.
pub struct Whisper {
    threads: i32,
    default_model: Option<PathBuf>,
    loaded: Option<Loaded>,
    loads: Loads,
}

impl Whisper {
    /// An engine with no model loaded yet.
    pub fn new(threads: i32, default_model: Option<PathBuf>) -> Self {
        Self {
            threads,
            default_model,
            loaded: None,
            loads: Loads::default(),
        }
    }

    /// The job's ggml model file (or the `--model` default).
    fn model_path(&self, job: &JobRequest) -> Result<std::path::PathBuf, EngineError> {
        single_model_file(
            job,
            self.default_model.as_deref(),
            "whisper-cpp",
            "a ggml whisper",
        )
    }

    fn ensure_loaded(
        &mut self,
        path: &PathBuf,
        report: &mut dyn Reporter,
    ) -> Result<&mut Loaded, EngineError> {
        if self.loaded.as_ref().is_none_or(|l| &l.path != path) {
            self.loaded = None;
            report.progress(Phase::Loading, 0, 1);
            let started = Loads::begin();
            let name = path.to_string_lossy();
            let mut params = WhisperContextParameters::default();
            params.use_gpu(cfg!(feature = "cuda"));
            let ctx = WhisperContext::new_with_params(&name, params).map_err(|e| {
                EngineError::bad_input(format!(
                    "model file {} is not a whisper.cpp ggml model: {e}",
                    path.display()
                ))
            })?;
            let state = ctx
                .create_state()
                .map_err(|e| EngineError::engine(format!("whisper.cpp state: {e}")))?;
            self.loads.record(report, started, "");
            self.loaded = Some(Loaded {
                path: path.clone(),
                multilingual: ctx.is_multilingual(),
                _ctx: ctx,
                state,
            });
        }
        self.loaded
            .as_mut()
            .ok_or_else(|| EngineError::engine("model vanished"))
    }

    fn transcribe(
        &mut self,
        job: &JobRequest,
        t: &AudioSttTask,
        report: &mut dyn Reporter,
    ) -> Result<JobOutput, EngineError> {
        let started = Instant::now();
        let timestamps = match t.timestamps.as_deref() {
            None | Some("") | Some("none") => None,
            Some(m @ ("segment" | "word")) => Some(m.to_string()),
            Some(other) => {
                return Err(EngineError::bad_input(format!(
                    "task.timestamps: `{other}` is not `segment` or `word`"
                )))
            }
        };
        let input = job.inputs.get("inputUrl").ok_or_else(|| {
            EngineError::engine("the supervisor did not hand over the fetched inputUrl")
        })?;
        let pcm = audio::load(std::path::Path::new(input))?;
        if pcm.samples.is_empty() {
            return Err(EngineError::bad_input("task.inputUrl: the audio is empty"));
        }
        report.log(
            LogLevel::Info,
            format!("audio: {:.2} s ({})", pcm.duration(), pcm.source),
        );
        let path = self.model_path(job)?;
        let threads = self.threads;
        let loaded = self.ensure_loaded(&path, report)?;
        let plan = plan_language(t.language.as_deref(), loaded.multilingual)?;
        let state = &mut loaded.state;
        if let LanguagePlan::Fixed {
            note: Some(note), ..
        } = &plan
        {
            report.log(LogLevel::Warn, note.clone());
        }

        let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
        params.set_n_threads(threads as c_int);
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_timestamps(false);
        params.set_print_special(false);
        params.set_translate(t.translate.unwrap_or(false));
        params.set_language(Some(match &plan {
            LanguagePlan::Fixed { code, .. } => code.as_str(),
            LanguagePlan::Detect => "auto",
        }));
        if let Some(p) = t.prompt.as_deref().filter(|p| !p.is_empty()) {
            params.set_initial_prompt(p);
        }
        if timestamps.as_deref() == Some("word") {
            // One segment per word, with token-level times.
            params.set_token_timestamps(true);
            params.set_max_len(1);
            params.set_split_on_word(true);
        }
        let mut reporter: &mut dyn Reporter = report;
        // SAFETY: the trampoline only runs inside `state.full` below, on
        // this thread, while `reporter` is alive and not otherwise used.
        unsafe {
            params.set_progress_callback(Some(on_progress));
            params.set_progress_callback_user_data(
                &mut reporter as *mut &mut dyn Reporter as *mut c_void,
            );
        }
        state
            .full(params, &pcm.samples)
            .map_err(|e| EngineError::engine(format!("whisper.cpp could not transcribe: {e}")))?;
        let mut text = String::new();
        let mut segments = Vec::new();
        for seg in state.as_iter() {
            let s = seg
                .to_str_lossy()
                .map_err(|e| EngineError::engine(format!("segment text: {e}")))?
                .into_owned();
            text.push_str(&s);
            segments.push(json!({
                "start": seg.start_timestamp() as f64 / 100.0,
                "end": seg.end_timestamp() as f64 / 100.0,
                "text": s.trim(),
            }));
        }
        let lang = match &plan {
            LanguagePlan::Fixed { code, .. } => code.as_str(),
            LanguagePlan::Detect => {
                whisper_rs::get_lang_str(state.full_lang_id_from_state()).unwrap_or("en")
            }
        };
        let mut value = json!({
            "text": text.trim(),
            "language": lang,
            "duration": (pcm.duration() * 1000.0).round() / 1000.0,
            "elapsed_ms": started.elapsed().as_millis() as u64,
        });
        // The reference shape has `segments` as a count; with timestamps
        // asked for it is the list of segments (or words).
        value["segments"] = if timestamps.is_some() {
            json!(segments)
        } else {
            json!(segments.len())
        };
        Ok(JobOutput::Json { value })
    }
}

/// What whisper is told about the language of a job.
#[derive(Debug, PartialEq)]
enum LanguagePlan {
    /// Transcribe in `code` and report it; `note` says why it is not the
    /// language the task named.
    Fixed { code: String, note: Option<String> },
    /// Let whisper detect the language (one extra encoder pass over the
    /// first 30 s) and report what it found.
    Detect,
}

/// Decides the language from the task's `language` and whether the model
/// is multilingual. An English-only model (`*.en`) never runs detection:
/// whisper.cpp would spend a second encoder pass on it and report a
/// nonsense code, while the model can only write English anyway. A
/// language the task names is a hint (the contract's word): on an
/// English-only model the job still runs, as English, and says so.
fn plan_language(requested: Option<&str>, multilingual: bool) -> Result<LanguagePlan, EngineError> {
    let requested = requested
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.eq_ignore_ascii_case("auto"))
        .map(str::to_ascii_lowercase);
    let Some(code) = requested else {
        return Ok(if multilingual {
            LanguagePlan::Detect
        } else {
            LanguagePlan::Fixed {
                code: "en".into(),
                note: None,
            }
        });
    };
    if whisper_rs::get_lang_id(&code).is_none() {
        return Err(EngineError::bad_input(format!(
            "task.language: `{code}` is not a language whisper knows"
        )));
    }
    if !multilingual && code != "en" {
        return Ok(LanguagePlan::Fixed {
            note: Some(format!(
                "task.language is `{code}`, but this model only knows English: transcribing as English"
            )),
            code: "en".into(),
        });
    }
    Ok(LanguagePlan::Fixed { code, note: None })
}

unsafe extern "C" fn on_progress(
    _ctx: *mut whisper_rs_sys::whisper_context,
    _state: *mut whisper_rs_sys::whisper_state,
    progress: c_int,
    data: *mut c_void,
) {
    if data.is_null() {
        return;
    }
    // SAFETY: `data` is the `&mut &mut dyn Reporter` set right before
    // `full`, valid for its duration (see `transcribe`).
    let reporter = unsafe { &mut *(data as *mut &mut dyn Reporter) };
    reporter.progress(Phase::Running, progress.clamp(0, 100) as u64, 100);
}

impl Engine for Whisper {
    fn name(&self) -> &'static str {
        "whisper-cpp"
    }

    fn run(
        &mut self,
        job: &JobRequest,
        report: &mut dyn Reporter,
    ) -> Result<JobOutput, EngineError> {
        match &job.task {
            Task::AudioStt(t) => self.transcribe(job, t, report),
            other => Err(EngineError::cannot_serve("whisper-cpp", other)),
        }
    }

    fn preload(&mut self, job: &JobRequest, report: &mut dyn Reporter) -> Result<(), EngineError> {
        let path = self.model_path(job)?;
        self.ensure_loaded(&path, report).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(code: &str) -> LanguagePlan {
        LanguagePlan::Fixed {
            code: code.into(),
            note: None,
        }
    }

    #[test]
    fn an_english_only_model_never_detects() {
        for none in [None, Some(""), Some("auto"), Some(" AUTO ")] {
            assert_eq!(plan_language(none, false).unwrap(), fixed("en"), "{none:?}");
        }
        assert_eq!(plan_language(Some("en"), false).unwrap(), fixed("en"));
        match plan_language(Some("de"), false).unwrap() {
            LanguagePlan::Fixed { code, note } => {
                assert_eq!(code, "en");
                assert!(
                    note.is_some_and(|n| n.contains("`de`") && n.contains("only knows English"))
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_multilingual_model_detects_only_when_no_language_is_named() {
        for none in [None, Some(""), Some("auto")] {
            assert_eq!(
                plan_language(none, true).unwrap(),
                LanguagePlan::Detect,
                "{none:?}"
            );
        }
        assert_eq!(plan_language(Some("nl"), true).unwrap(), fixed("nl"));
        assert_eq!(plan_language(Some("DE"), true).unwrap(), fixed("de"));
    }

    #[test]
    fn an_unknown_language_names_the_field() {
        for multilingual in [true, false] {
            let e = plan_language(Some("klingon"), multilingual).unwrap_err();
            assert!(
                e.message.contains("task.language") && e.message.contains("klingon"),
                "{}",
                e.message
            );
        }
    }
}
