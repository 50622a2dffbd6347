//! ONNX Runtime for the runners that use it (`engine-runner-piper`,
//! `engine-runner-onnx`): found and loaded at run time, with a reason that
//! says what to install and where when it cannot be; the `--check` answer
//! the supervisor's catalog asks for; sessions built one way.

use std::path::{Path, PathBuf};

pub use ort;

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

/// The library's file name on this platform (a release archive puts it
/// beside the runners): `libonnxruntime.so*`, `libonnxruntime*.dylib`,
/// `onnxruntime.dll`.
fn is_onnxruntime(name: &str) -> bool {
    if cfg!(windows) {
        name.eq_ignore_ascii_case("onnxruntime.dll")
    } else if cfg!(target_os = "macos") {
        name.starts_with("libonnxruntime") && name.ends_with(".dylib")
    } else {
        name.starts_with("libonnxruntime.so")
    }
}

/// Where to look: `ORT_DYLIB_PATH`, else the library beside this binary.
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
                        .is_some_and(is_onnxruntime)
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.into_iter().next().ok_or_else(|| {
        format!(
            "no ONNX Runtime library: set onnxruntime_path in the config (or ORT_DYLIB_PATH) to ONNX Runtime 1.{}+ (libonnxruntime.so, .dylib or onnxruntime.dll), or put it beside {}",
            ort::MINOR_VERSION,
            dir.display()
        )
    })
}

/// Loads ONNX Runtime; the error names the file and why (not a library,
/// not ONNX Runtime, too old). `name` labels the environment (its logs).
pub fn load(name: &str) -> Result<Loaded, String> {
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
        .with_name(name)
        .build()
        .map_err(|e| format!("ONNX Runtime at {} would not start: {e}", path.display()))?;
    Ok(Loaded { env, path })
}

/// `--check`: loads ONNX Runtime, prints where from and exits 0, or prints
/// why not on stderr and exits 3 (the supervisor's catalog reads both).
pub fn check_and_exit(name: &str) -> ! {
    match load(name) {
        Ok(found) => {
            println!("{found}");
            std::process::exit(0)
        }
        Err(why) => {
            eprintln!("{why}");
            std::process::exit(3)
        }
    }
}

/// A session on `model` with `threads` intra-op threads. The memory
/// pattern (a plan cached per input shape) is off: the runners feed many
/// shapes (Piper: every sentence its own length), and with it a long job's
/// memory grew with each new shape (Piper, 1,000 words: +107 MB peak with
/// it, +5 MB without). `what` names the model in the error.
pub fn session(
    ort: &Loaded,
    model: &Path,
    threads: i32,
    what: &str,
) -> Result<ort::session::Session, SessionError> {
    fn runtime(e: impl std::fmt::Display) -> SessionError {
        SessionError::Runtime(e.to_string())
    }
    ort::session::Session::builder(&ort.env)
        .map_err(runtime)?
        .with_intra_threads(threads.max(1) as usize)
        .map_err(runtime)?
        .with_memory_pattern(false)
        .map_err(runtime)?
        .commit_from_file(model)
        .map_err(|e| {
            SessionError::Model(format!(
                "model file {} is not {what} ONNX Runtime can load: {e}",
                model.display()
            ))
        })
}

/// Why a session could not be made.
#[derive(Debug)]
pub enum SessionError {
    /// The model file (bad input: another file would do).
    Model(String),
    /// ONNX Runtime itself.
    Runtime(String),
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Model(m) => f.write_str(m),
            Self::Runtime(m) => write!(f, "ONNX Runtime session: {m}"),
        }
    }
}

impl std::error::Error for SessionError {}
