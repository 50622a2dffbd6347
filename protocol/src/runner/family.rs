//! The engine families: which runner binary serves which engine and task
//! kinds. One table, read by the supervisor's catalog (what this host can
//! run and how to start it), by `engine-runner --engine E` (which binary
//! to hand over to) and by the architecture test (which native library
//! each binary may link).

use crate::studio::{Engine, TaskKind};

/// One engine family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    /// The engine's wire name (`modelSource.engine`).
    pub engine: &'static str,
    /// The runner binary (beside `studio-worker`) and its cargo package.
    pub binary: &'static str,
    /// Arguments after `--stdio` that select the engine inside the binary.
    pub args: &'static [&'static str],
    /// The task kinds it serves.
    pub kinds: &'static [TaskKind],
    /// The native inference crates the binary links (each bundles its own
    /// ggml, so at most one family's per binary). Empty: pure Rust, and no
    /// `--threads` flag.
    pub native_crates: &'static [&'static str],
    /// Programs it runs, which must be on `PATH` for the family to be
    /// offered on a host (`espeak-ng` for `espeak`).
    pub programs: &'static [&'static str],
}

impl Family {
    /// True when the family runs a native engine (and takes `--threads`).
    pub fn is_native(&self) -> bool {
        !self.native_crates.is_empty()
    }

    /// True when the family's runner loads ONNX Runtime at run time (and
    /// answers `--check` with whether it can).
    pub fn uses_onnxruntime(&self) -> bool {
        self.native_crates.contains(&"ort")
    }
}

/// Every engine family this build knows, the synthetic one first.
pub const FAMILIES: &[Family] = &[
    Family {
        engine: "synthetic",
        binary: "engine-runner",
        args: &["--engine", "synthetic"],
        kinds: &TaskKind::ALL,
        native_crates: &[],
        programs: &[],
    },
    Family {
        engine: "sd-cpp",
        binary: "engine-runner-sd",
        args: &[],
        kinds: &[TaskKind::Image, TaskKind::Video],
        native_crates: &["diffusion-rs-sys"],
        programs: &[],
    },
    Family {
        engine: "llama-cpp",
        binary: "engine-runner-llama",
        args: &[],
        kinds: &[TaskKind::Llm],
        native_crates: &["llama-cpp-2", "llama-cpp-sys-2"],
        programs: &[],
    },
    Family {
        engine: "whisper-cpp",
        binary: "engine-runner-whisper",
        args: &[],
        kinds: &[TaskKind::AudioStt],
        native_crates: &["whisper-rs", "whisper-rs-sys"],
        programs: &[],
    },
    Family {
        engine: "piper",
        binary: "engine-runner-piper",
        args: &[],
        kinds: &[TaskKind::AudioTts],
        native_crates: &["ort", "ort-sys"],
        programs: &["espeak-ng"],
    },
    Family {
        engine: "onnx",
        binary: "engine-runner-onnx",
        args: &[],
        kinds: &[TaskKind::Image],
        native_crates: &["ort", "ort-sys"],
        programs: &[],
    },
    Family {
        engine: "espeak",
        binary: "engine-runner",
        args: &["--engine", "espeak"],
        kinds: &[TaskKind::AudioTts],
        native_crates: &[],
        programs: &["espeak-ng"],
    },
    Family {
        engine: "gradio",
        binary: "engine-runner-gradio",
        args: &[],
        kinds: &[TaskKind::Image],
        native_crates: &[],
        programs: &[],
    },
];

/// The family serving `engine`, if this build has one.
pub fn family(engine: &Engine) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.engine == engine.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_names_a_known_engine_once() {
        for f in FAMILIES {
            assert!(
                !matches!(Engine::parse(f.engine), Engine::Other(_)),
                "{}",
                f.engine
            );
            assert_eq!(FAMILIES.iter().filter(|g| g.engine == f.engine).count(), 1);
            assert_eq!(family(&Engine::parse(f.engine)), Some(f));
        }
        assert_eq!(family(&Engine::Parakeet), None);
        assert_eq!(FAMILIES[0].engine, "synthetic");
    }
}
