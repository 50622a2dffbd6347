//! The piper engine: one Piper voice (an ONNX model and its `.onnx.json`)
//! kept loaded in an ONNX Runtime session between jobs.
//!
//! ```text
//! text ─ split at . ! ? (sentences) and , ; : (clauses)
//!   the text ─▶ espeak-ng -q --ipa -v <the voice's espeak voice> ─▶ one IPA line per clause
//!     (lines that do not line up with our clauses: each clause asked on its own)
//!   each sentence: ^ _ (phoneme _)… (clause mark _) (space _)… $ ─▶ ids (phoneme_id_map)
//!   ─▶ session.run(input, input_lengths, scales [noise, length / speed, noise_w], sid?)
//!   ─▶ samples, peak-normalised ─▶ appended to the WAV file, 0.2 s between sentences
//! WAV ─▶ as it is, or mp3 / ogg / flac through ffmpeg
//! ```
//!
//! Only one sentence's samples are in memory at a time (the IPA of the
//! whole text is, a few bytes per word).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use engine_ort::ort;
use engine_runner::encode::audio;
use engine_runner::engine::{single_model_file, Engine, EngineError, Loads, Reporter};
use ort::session::Session;
use ort::value::Tensor;
use serde::Deserialize;
use studio_protocol::runner::{JobOutput, JobRequest, Phase};
use studio_protocol::studio::{AudioTtsTask, FileRole, LogLevel, Task};

/// Silence between sentences, in seconds (at speed 1).
const SENTENCE_GAP: f64 = 0.2;

/// What the voice says once per speed to learn how much its length scale
/// really shortens speech (one sentence with most English sounds).
const CALIBRATION: &str =
    "Please call Stella and ask her to bring these things with her from the store.";

/// What Piper's `.onnx.json` says about a voice (the parts we use).
#[derive(Debug, Clone, Deserialize)]
struct VoiceConfig {
    audio: AudioConfig,
    espeak: EspeakConfig,
    #[serde(default)]
    inference: Inference,
    phoneme_id_map: HashMap<String, Vec<i64>>,
    #[serde(default = "one")]
    num_speakers: u32,
    #[serde(default)]
    speaker_id_map: HashMap<String, i64>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
struct AudioConfig {
    sample_rate: u32,
}

#[derive(Debug, Clone, Deserialize)]
struct EspeakConfig {
    voice: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
struct Inference {
    noise_scale: f32,
    length_scale: f32,
    noise_w: f32,
}

impl Default for Inference {
    fn default() -> Self {
        Self {
            noise_scale: 0.667,
            length_scale: 1.0,
            noise_w: 0.8,
        }
    }
}

struct Voice {
    model: PathBuf,
    session: Session,
    cfg: VoiceConfig,
    /// The model takes a speaker id input (`sid`).
    takes_sid: bool,
    /// Per speed (its bits): the length the voice gives at that speed's
    /// length scale over its natural length, measured on [`CALIBRATION`].
    shrink: HashMap<u64, f64>,
}

/// Piper with the last voice kept loaded.
pub struct Piper {
    ort: engine_ort::Loaded,
    threads: i32,
    default_model: Option<PathBuf>,
    voice: Option<Voice>,
    loads: Loads,
}

impl Piper {
    /// An engine on loaded ONNX Runtime with no voice yet.
    pub fn new(ort: engine_ort::Loaded, threads: i32, default_model: Option<PathBuf>) -> Self {
        Self {
            ort,
            threads,
            default_model,
            voice: None,
            loads: Loads::default(),
        }
    }

    /// The job's voice files: `model` (the .onnx) and `config` (the
    /// .onnx.json); by hand, `--model` and the `.json` beside it.
    fn files(&self, job: &JobRequest) -> Result<(PathBuf, PathBuf), EngineError> {
        let model = single_model_file(
            job,
            self.default_model.as_deref(),
            "piper",
            "a voice's .onnx",
        )?;
        let files = &job.model_source.files;
        if files.is_empty() {
            let mut config = model.clone().into_os_string();
            config.push(".json");
            return Ok((model, PathBuf::from(config)));
        }
        let config = files
            .iter()
            .find(|f| f.role == FileRole::Config)
            .ok_or_else(|| {
                EngineError::bad_input(
                    "modelSource.files: piper needs the voice's `config` file (its .onnx.json) beside the `model`",
                )
            })?;
        let path = job
            .model_files
            .get(&config.filename)
            .map(PathBuf::from)
            .ok_or_else(|| {
                EngineError::engine(format!("config file {} was not fetched", config.filename))
            })?;
        Ok((model, path))
    }

    fn ensure_loaded(
        &mut self,
        model: &Path,
        config: &Path,
        report: &mut dyn Reporter,
    ) -> Result<&mut Voice, EngineError> {
        if self.voice.as_ref().is_none_or(|v| v.model != model) {
            self.voice = None;
            report.progress(Phase::Loading, 0, 1);
            let started = Loads::begin();
            let text = std::fs::read_to_string(config).map_err(|e| {
                EngineError::bad_input(format!(
                    "the voice's `config` file {} cannot be read: {e}",
                    config.display()
                ))
            })?;
            let cfg: VoiceConfig = serde_json::from_str(&text).map_err(|e| {
                EngineError::bad_input(format!(
                    "the voice's `config` file {} is not a Piper .onnx.json: {e}",
                    config.display()
                ))
            })?;
            let session = engine_ort::session(&self.ort, model, self.threads, "a Piper voice")
                .map_err(|e| match e {
                    engine_ort::SessionError::Model(m) => EngineError::bad_input(m),
                    other => EngineError::engine(other.to_string()),
                })?;
            let takes_sid = session.inputs().iter().any(|i| i.name() == "sid");
            self.loads.record(report, started, "");
            self.voice = Some(Voice {
                model: model.to_path_buf(),
                session,
                cfg,
                takes_sid,
                shrink: HashMap::new(),
            });
        }
        self.voice
            .as_mut()
            .ok_or_else(|| EngineError::engine("voice vanished"))
    }

    fn speak(
        &mut self,
        job: &JobRequest,
        t: &AudioTtsTask,
        report: &mut dyn Reporter,
    ) -> Result<JobOutput, EngineError> {
        let audio::Checked { ext, codec, speed } = audio::check("piper", t)?;
        let (model, config) = self.files(job)?;
        let (dir, stem) = audio::target(job)?;
        let voice = self.ensure_loaded(&model, &config, report)?;
        let sid = speaker(&voice.cfg, t.voice.as_deref(), report)?;
        let sentences = split(&t.text);
        let rate = voice.cfg.audio.sample_rate;
        let wav = dir.join(format!("{stem}.wav"));
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let werr = |e: hound::Error| EngineError::engine(format!("writing {}: {e}", wav.display()));
        let scales = [
            voice.cfg.inference.noise_scale,
            voice.cfg.inference.length_scale / speed as f32,
            voice.cfg.inference.noise_w,
        ];
        let shrink = shrink(voice, speed, scales, sid)?;
        // The length scale alone falls short (each phoneme lasts whole
        // frames, rounded up); ffmpeg's atempo makes up the rest.
        let tempo = shrink * speed;
        if (tempo - 1.0).abs() > 1e-3 {
            report.log(
                LogLevel::Info,
                format!(
                    "speed {speed}: the length scale gives {shrink:.2} of the natural length; atempo {tempo:.3} makes it {:.2}",
                    1.0 / speed
                ),
            );
        }
        let result = (|| {
            let mut out = hound::WavWriter::create(&wav, spec).map_err(werr)?;
            let total = sentences.len() as u64;
            let ipa = phonemes_all(&voice.cfg.espeak.voice, &sentences)?;
            let mut skipped = 0usize;
            for (i, sentence) in sentences.iter().enumerate() {
                report.progress(Phase::Running, i as u64, total);
                let (ids, unknown) = sentence_ids(
                    &voice.cfg,
                    sentence,
                    ipa.as_ref().map(|all| all[i].as_slice()),
                )?;
                skipped += unknown;
                let samples = synthesize(voice, ids, scales, sid)?;
                if i > 0 {
                    // After atempo: SENTENCE_GAP / speed.
                    for _ in 0..(SENTENCE_GAP * shrink * rate as f64) as usize {
                        out.write_sample(0i16).map_err(werr)?;
                    }
                }
                for s in samples {
                    out.write_sample(s).map_err(werr)?;
                }
            }
            out.finalize().map_err(werr)?;
            if skipped > 0 {
                report.log(
                    LogLevel::Warn,
                    format!("{skipped} phoneme(s) not in the voice's phoneme_id_map were left out"),
                );
            }
            report.progress(Phase::Running, total, total);
            Ok(())
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&wav);
            return Err(e);
        }
        audio::finish(wav, &ext, codec, tempo)
    }
}

impl Engine for Piper {
    fn name(&self) -> &'static str {
        "piper"
    }

    fn run(
        &mut self,
        job: &JobRequest,
        report: &mut dyn Reporter,
    ) -> Result<JobOutput, EngineError> {
        match &job.task {
            Task::AudioTts(t) => self.speak(job, t, report),
            other => Err(EngineError::cannot_serve("piper", other)),
        }
    }

    fn preload(&mut self, job: &JobRequest, report: &mut dyn Reporter) -> Result<(), EngineError> {
        let (model, config) = self.files(job)?;
        self.ensure_loaded(&model, &config, report).map(|_| ())
    }
}

/// How much `scales` (a speed's length scale) shortens the voice's speech
/// against its natural length scale, measured once per speed on
/// [`CALIBRATION`] and kept with the voice; 1.0 at speed 1.
fn shrink(
    voice: &mut Voice,
    speed: f64,
    scales: [f32; 3],
    sid: Option<i64>,
) -> Result<f64, EngineError> {
    if speed == 1.0 {
        return Ok(1.0);
    }
    if let Some(r) = voice.shrink.get(&speed.to_bits()) {
        return Ok(*r);
    }
    let sentences = split(CALIBRATION);
    let ipa = phonemes_all(&voice.cfg.espeak.voice, &sentences)?;
    let (ids, _) = sentence_ids(
        &voice.cfg,
        &sentences[0],
        ipa.as_ref().map(|all| all[0].as_slice()),
    )?;
    let natural = [scales[0], voice.cfg.inference.length_scale, scales[2]];
    let at_speed = synthesize(voice, ids.clone(), scales, sid)?.len();
    let at_one = synthesize(voice, ids, natural, sid)?.len().max(1);
    let r = at_speed as f64 / at_one as f64;
    voice.shrink.insert(speed.to_bits(), r);
    Ok(r)
}

/// The speaker id for `voice` on a multi-speaker voice (a name from its
/// `speaker_id_map`, or a number); single-speaker voices take none.
fn speaker(
    cfg: &VoiceConfig,
    voice: Option<&str>,
    report: &mut dyn Reporter,
) -> Result<Option<i64>, EngineError> {
    if cfg.num_speakers <= 1 {
        return Ok(None);
    }
    let Some(v) = voice.filter(|v| !v.is_empty() && *v != "default") else {
        return Ok(Some(0));
    };
    if let Some(id) = cfg.speaker_id_map.get(v) {
        return Ok(Some(*id));
    }
    match v.parse::<i64>() {
        Ok(id) if (0..cfg.num_speakers as i64).contains(&id) => Ok(Some(id)),
        _ => {
            report.log(
                LogLevel::Warn,
                format!("voice `{v}` is not a speaker of this voice model; using speaker 0"),
            );
            Ok(Some(0))
        }
    }
}

/// A sentence as its clauses, each with the punctuation that ended it.
type Sentence = Vec<(String, Option<char>)>;

/// Splits `text` into sentences (at `.`, `!`, `?`) of clauses (at `,`,
/// `;`, `:`), because `espeak-ng --ipa` drops punctuation.
fn split(text: &str) -> Vec<Sentence> {
    let mut sentences = Vec::new();
    let mut sentence: Sentence = Vec::new();
    let mut clause = String::new();
    for c in text.chars() {
        match c {
            '.' | '!' | '?' | ',' | ';' | ':' => {
                if !clause.trim().is_empty() {
                    sentence.push((clause.trim().to_string(), Some(c)));
                }
                clause.clear();
                if matches!(c, '.' | '!' | '?') && !sentence.is_empty() {
                    sentences.push(std::mem::take(&mut sentence));
                }
            }
            '\n' | '\r' | '\t' => clause.push(' '),
            _ => clause.push(c),
        }
    }
    if !clause.trim().is_empty() {
        sentence.push((clause.trim().to_string(), None));
    }
    if !sentence.is_empty() {
        sentences.push(sentence);
    }
    sentences
}

/// The IPA of every clause from one `espeak-ng --ipa` run over the whole
/// text, which prints one line per clause; `None` when its lines do not
/// line up with our clauses (then each clause is asked on its own).
fn phonemes_all(
    espeak_voice: &str,
    sentences: &[Sentence],
) -> Result<Option<Vec<Vec<String>>>, EngineError> {
    let mut text = String::new();
    for (clause, mark) in sentences.iter().flatten() {
        text.push_str(clause);
        text.push(mark.unwrap_or('.'));
        text.push('\n');
    }
    let lines: Vec<String> = phonemes(espeak_voice, &text)?
        .split('\n')
        .map(str::to_string)
        .collect();
    let clauses: usize = sentences.iter().map(Vec::len).sum();
    if lines.len() != clauses {
        return Ok(None);
    }
    let mut lines = lines.into_iter();
    Ok(Some(
        sentences
            .iter()
            .map(|s| lines.by_ref().take(s.len()).collect())
            .collect(),
    ))
}

/// The IPA of one clause, from `espeak-ng --ipa` in the voice's language.
fn phonemes(espeak_voice: &str, clause: &str) -> Result<String, EngineError> {
    let mut cmd = Command::new("espeak-ng");
    cmd.args(["-q", "--ipa", "-v", espeak_voice, "--stdin"]);
    let out = audio::run_program(cmd, "espeak-ng", clause.as_bytes())?;
    // One line per clause espeak saw.
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n"))
}

/// A sentence's phoneme ids: `^ _`, each phoneme's ids then `_`, each
/// clause's punctuation and a space between clauses, then `$`. Also how
/// many phonemes the map did not have.
fn sentence_ids(
    cfg: &VoiceConfig,
    sentence: &Sentence,
    ipa: Option<&[String]>,
) -> Result<(Vec<i64>, usize), EngineError> {
    let id = |s: &str| cfg.phoneme_id_map.get(s).cloned().unwrap_or_default();
    let pad = id("_");
    let mut ids = id("^");
    ids.extend(&pad);
    let mut unknown = 0;
    let mut push = |ids: &mut Vec<i64>, c: char| match cfg
        .phoneme_id_map
        .get(c.encode_utf8(&mut [0; 4]) as &str)
    {
        Some(v) => {
            ids.extend(v);
            ids.extend(&pad);
        }
        None => unknown += 1,
    };
    for (i, (clause, mark)) in sentence.iter().enumerate() {
        let own;
        let clause_ipa = match ipa.and_then(|v| v.get(i)) {
            Some(p) => p.as_str(),
            None => {
                own = phonemes(&cfg.espeak.voice, clause)?;
                own.as_str()
            }
        };
        for c in clause_ipa.chars().map(|c| if c == '\n' { ' ' } else { c }) {
            push(&mut ids, c);
        }
        if let Some(m) = mark {
            push(&mut ids, *m);
        }
        if i + 1 < sentence.len() {
            push(&mut ids, ' ');
        }
    }
    ids.extend(id("$"));
    Ok((ids, unknown))
}

/// Runs the voice on one sentence's ids; 16-bit samples, peak-normalised.
fn synthesize(
    voice: &mut Voice,
    ids: Vec<i64>,
    scales: [f32; 3],
    sid: Option<i64>,
) -> Result<Vec<i16>, EngineError> {
    let n = ids.len();
    let err = |e: ort::Error| EngineError::engine(format!("ONNX Runtime: {e}"));
    let mut inputs = ort::inputs![
        "input" => Tensor::from_array(([1usize, n], ids)).map_err(err)?,
        "input_lengths" => Tensor::from_array(([1usize], vec![n as i64])).map_err(err)?,
        "scales" => Tensor::from_array(([3usize], scales.to_vec())).map_err(err)?,
    ];
    if voice.takes_sid {
        inputs.push((
            "sid".into(),
            Tensor::from_array(([1usize], vec![sid.unwrap_or(0)]))
                .map_err(err)?
                .into(),
        ));
    }
    let outputs = voice.session.run(inputs).map_err(err)?;
    let (_, samples) = outputs[0].try_extract_tensor::<f32>().map_err(err)?;
    let peak = samples.iter().fold(0.01f32, |m, s| m.max(s.abs()));
    let gain = 32767.0 / peak;
    Ok(samples
        .iter()
        .map(|s| (s * gain).clamp(-32768.0, 32767.0) as i16)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_splits_into_sentences_of_clauses_with_their_marks() {
        let s = split("Hello, world. How are you?\nFine; thanks: bye");
        assert_eq!(
            s,
            vec![
                vec![("Hello".into(), Some(',')), ("world".into(), Some('.'))],
                vec![("How are you".into(), Some('?'))],
                vec![
                    ("Fine".into(), Some(';')),
                    ("thanks".into(), Some(':')),
                    ("bye".into(), None)
                ],
            ]
        );
        assert!(split(" ... ").is_empty());
    }
}
