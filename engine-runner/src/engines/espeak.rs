//! `espeak`: `audio_tts` with the `espeak-ng` program alone, no model
//! files, so every worker with espeak-ng installed speaks. espeak-ng is
//! GPL, so it runs as a separate process, never linked.
//!
//! ```text
//! voice (when espeak knows it) ─┐
//! language (when it knows it) ──┼─▶ espeak-ng -v V -s 175×speed -w out.wav --stdin ◀─ text
//! en-us ────────────────────────┘        │
//!                                        └─ mp3 / ogg (Opus) / flac: ffmpeg out.wav → out.<ext>
//! ```
//!
//! espeak-ng writes the WAV itself as it speaks, so a long text never sits
//! in memory as audio; the result goes back as a file.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use studio_protocol::runner::{JobOutput, JobRequest, Phase};
use studio_protocol::studio::{AudioTtsTask, LogLevel, Task};

use crate::encode::audio;
use crate::engine::{Engine, EngineError, Reporter};

/// espeak-ng's own rate at `speed` 1.0, in words per minute.
const WPM: f64 = 175.0;
/// The rates espeak-ng accepts.
const WPM_RANGE: (f64, f64) = (80.0, 450.0);
/// The voice when neither `voice` nor `language` names one espeak knows.
const DEFAULT_VOICE: &str = "en-us";

/// The espeak engine; it remembers the voices the installed espeak-ng has.
#[derive(Default)]
pub struct Espeak {
    voices: Option<BTreeSet<String>>,
}

impl Espeak {
    /// The names `-v` accepts here: each voice's language codes, its name
    /// and its file (`espeak-ng --voices`), lower-cased.
    fn voices(&mut self) -> Result<&BTreeSet<String>, EngineError> {
        if self.voices.is_none() {
            let mut cmd = Command::new("espeak-ng");
            cmd.arg("--voices");
            let out = audio::run_program(cmd, "espeak-ng", &[])?;
            self.voices = Some(parse_voices(&String::from_utf8_lossy(&out)));
        }
        Ok(self.voices.get_or_insert_with(BTreeSet::new))
    }

    /// `-v`: `voice` when espeak knows it, else `language`, else en-us.
    fn pick_voice(
        &mut self,
        t: &AudioTtsTask,
        report: &mut dyn Reporter,
    ) -> Result<String, EngineError> {
        let known = self.voices()?;
        let asked = [t.voice.as_deref(), t.language.as_deref()];
        if let Some(v) = asked
            .into_iter()
            .flatten()
            .map(|v| v.trim().to_ascii_lowercase().replace('_', "-"))
            .find(|v| known.contains(v))
        {
            return Ok(v);
        }
        if let Some(lang) = t.language.as_deref().filter(|l| !l.trim().is_empty()) {
            report.log(
                LogLevel::Warn,
                format!("espeak-ng has no voice for language `{lang}`; speaking {DEFAULT_VOICE}"),
            );
        }
        Ok(DEFAULT_VOICE.into())
    }

    fn speak(
        &mut self,
        job: &JobRequest,
        t: &AudioTtsTask,
        report: &mut dyn Reporter,
    ) -> Result<JobOutput, EngineError> {
        let audio::Checked { ext, codec, speed } = audio::check("espeak", t)?;
        let wpm = (WPM * speed).clamp(WPM_RANGE.0, WPM_RANGE.1).round();
        let voice = self.pick_voice(t, report)?;
        report.log(
            LogLevel::Info,
            format!("espeak-ng voice {voice}, {wpm} words per minute"),
        );
        let (dir, stem) = audio::target(job)?;
        let wav = dir.join(format!("{stem}.wav"));
        let mut cmd = Command::new("espeak-ng");
        cmd.args(["-v", &voice, "-s", &format!("{wpm}"), "-w"])
            .arg(&wav)
            .arg("--stdin");
        audio::run_program(cmd, "espeak-ng", t.text.as_bytes()).inspect_err(|_| {
            let _ = std::fs::remove_file(&wav);
        })?;
        report.progress(Phase::Running, 1, 1);
        audio::finish(wav, &ext, codec, 1.0)
    }
}

impl Engine for Espeak {
    fn name(&self) -> &'static str {
        "espeak"
    }

    fn run(
        &mut self,
        job: &JobRequest,
        report: &mut dyn Reporter,
    ) -> Result<JobOutput, EngineError> {
        match &job.task {
            Task::AudioTts(t) => self.speak(job, t, report),
            other => Err(EngineError::cannot_serve("espeak", other)),
        }
    }

    /// Nothing to load: checks that espeak-ng answers.
    fn preload(
        &mut self,
        _job: &JobRequest,
        _report: &mut dyn Reporter,
    ) -> Result<(), EngineError> {
        self.voices().map(|_| ())
    }
}

/// The `-v` names in `espeak-ng --voices` output: the language column (and
/// any "other languages" codes), the voice name and the file, lower-cased.
fn parse_voices(listing: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in listing.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 5 {
            continue;
        }
        names.insert(cols[1].to_ascii_lowercase());
        names.insert(cols[3].to_ascii_lowercase());
        names.insert(cols[4].to_ascii_lowercase());
        if let Some(base) = Path::new(cols[4]).file_name() {
            names.insert(base.to_string_lossy().to_ascii_lowercase());
        }
        for other in &cols[5..] {
            if let Some(code) = other
                .strip_prefix('(')
                .and_then(|o| o.split_whitespace().next())
            {
                names.insert(code.trim_end_matches(')').to_ascii_lowercase());
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voices_are_read_from_the_listing() {
        let listing = "Pty Language       Age/Gender VoiceName          File                 Other Languages\n \
 5  af              --/M      Afrikaans          gmw/af\n \
 2  en-us           --/M      English_(America)  gmw/en-US            (en 3)\n \
 5  de              --/M      German             gmw/de\n";
        let v = parse_voices(listing);
        for name in [
            "af",
            "en-us",
            "gmw/en-us",
            "english_(america)",
            "de",
            "german",
            "en",
        ] {
            assert!(v.contains(name), "{name} in {v:?}");
        }
        assert!(!v.contains("language"), "the header is not a voice");
    }
}
