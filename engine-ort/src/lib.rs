//! Finding and loading ONNX Runtime at run time, with a reason that says
//! what to install and where when it cannot be loaded.

use std::path::{Path, PathBuf};

/// ONNX Runtime, loaded: its environment and where it came from.
pub struct Loaded {
    /// The environment sessions are built in.
    pub env: ort::environment::Environment,
    /// The library file.
    pub path: PathBuf,
}

impl std::fmt::Display for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ONNX Runtime from {}", self.path.display())
    }
}

/// Where to look: `ORT_DYLIB_PATH`, else `libonnxruntime.so*` beside this
/// binary.
fn locate() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            return Err(format!(
                "ONNX Runtime library {} (ORT_DYLIB_PATH / onnxruntime_path) does not exist: install ONNX Runtime 1.{}+ (for example `pip download onnxruntime` and take onnxruntime/capi/libonnxruntime.so.*) and point onnxruntime_path at it",
                p.display(),
                ort::MINOR_VERSION
            ));
        }
        return Ok(p);
    }
    let dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("libonnxruntime.so"))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.into_iter().next().ok_or_else(|| {
        format!(
            "no ONNX Runtime library: set onnxruntime_path in the config (or ORT_DYLIB_PATH) to a libonnxruntime.so of 1.{}+, or put one beside {}",
            ort::MINOR_VERSION,
            dir.display()
        )
    })
}

/// Loads ONNX Runtime; the error names the file and why (not a library,
/// not ONNX Runtime, too old).
pub fn load() -> Result<Loaded, String> {
    let path = locate()?;
    let builder = ort::init_from(&path).map_err(|e| match e {
        ort::LoadDynamicError::BadVersion { version_str, .. } => format!(
            "ONNX Runtime {version_str} at {} is too old: this runner needs 1.{} or newer",
            path.display(),
            ort::MINOR_VERSION
        ),
        ort::LoadDynamicError::MissingApi { .. } => format!(
            "{} is not ONNX Runtime (it has no OrtGetApiBase)",
            path.display()
        ),
        other => format!("cannot load ONNX Runtime: {other}"),
    })?;
    let env = builder
        .with_name("studio-worker-piper")
        .build()
        .map_err(|e| format!("ONNX Runtime at {} would not start: {e}", path.display()))?;
    Ok(Loaded { env, path })
}
