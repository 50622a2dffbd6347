//! Named models from the config (`[[models]]`): one shape for a model the
//! worker knows by name, used to pin models at start (and later by the
//! local API). An entry becomes the same `JobOfferClaim` a studio offer
//! would carry, so it runs through the same cache, key and runner.
//!
//! ```toml
//! [[models]]
//! name = "smollm2"
//! engine = "llama-cpp"
//! files = [{ role = "model", path = "/models/smollm2-135m.gguf" }]
//! options = { contextSize = 4096 }   # the studio's cliDefaults
//! gpu = 0                            # default: the session's GPU
//! pin = true                         # loaded at start, never stopped
//! vram_gb = 0.5                      # its estimate, until the runner reports
//! ```

use serde::{Deserialize, Serialize};
use studio_protocol::runner::FAMILIES;
use studio_protocol::studio::{
    Engine, FileRole, ImageTask, JobOfferClaim, LlmTask, ModelCliDefaults, ModelFile, ModelSource,
    Task, TaskKind,
};

/// One `[[models]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedModel {
    /// The name (the registry model id it runs under).
    pub name: String,
    /// Engine wire name.
    pub engine: String,
    /// Its files.
    #[serde(default)]
    pub files: Vec<NamedFile>,
    /// The studio's `cliDefaults` for it (camelCase keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<serde_json::Value>,
    /// GPU index (default: the session's GPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<u32>,
    /// Loaded at start and never stopped for idleness or room.
    #[serde(default)]
    pub pin: bool,
    /// GPU memory it needs in GB, until its runner reports.
    #[serde(default)]
    pub vram_gb: f64,
}

/// One file of a named model: a local `path`, or a `url` (with `sha256`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedFile {
    /// Its role (`model`, `diffusion-model`, `vae`, …).
    pub role: FileRole,
    /// A local file, used in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<std::path::PathBuf>,
    /// Or a URL to fetch into the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Its SHA-256 (required for a URL the worker should trust).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl NamedModel {
    /// The claim that loads this model (`job_id`, a task of a kind its
    /// engine serves); the error names the entry and what is wrong.
    pub fn claim(&self, job_id: &str) -> Result<JobOfferClaim, String> {
        let what = |why: String| format!("[[models]] `{}`: {why}", self.name);
        let Some(family) = FAMILIES.iter().find(|f| f.engine == self.engine) else {
            return Err(what(format!(
                "unknown engine `{}` (known: {})",
                self.engine,
                FAMILIES
                    .iter()
                    .map(|f| f.engine)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let mut files = Vec::new();
        for f in &self.files {
            let (url, filename) = match (&f.path, &f.url) {
                (Some(p), None) => {
                    let abs = std::fs::canonicalize(p)
                        .map_err(|e| what(format!("file {}: {e}", p.display())))?;
                    let url = reqwest::Url::from_file_path(&abs)
                        .map_err(|()| what(format!("file {}: not a usable path", p.display())))?;
                    let name = abs
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    (url.to_string(), name)
                }
                (None, Some(u)) => {
                    let name = reqwest::Url::parse(u)
                        .ok()
                        .and_then(|u| u.path_segments()?.next_back().map(str::to_string))
                        .filter(|n| !n.is_empty())
                        .ok_or_else(|| what(format!("url `{u}` names no file")))?;
                    (u.clone(), name)
                }
                _ => {
                    return Err(what(
                        "each file needs exactly one of `path` or `url`".into(),
                    ))
                }
            };
            files.push(ModelFile {
                role: f.role,
                url,
                filename,
                approx_bytes: None,
                sha256: f.sha256.clone(),
            });
        }
        let mut defaults = serde_json::to_value(ModelSource::synthetic().cli_defaults)
            .map_err(|e| what(e.to_string()))?;
        if let (Some(serde_json::Value::Object(over)), serde_json::Value::Object(base)) =
            (&self.options, &mut defaults)
        {
            base.extend(over.clone());
        }
        let cli_defaults: ModelCliDefaults =
            serde_json::from_value(defaults).map_err(|e| what(format!("options: {e}")))?;
        let task = match family.kinds.first() {
            Some(TaskKind::Llm) => Task::Llm(LlmTask::default()),
            _ => Task::Image(ImageTask::default()),
        };
        Ok(JobOfferClaim {
            job_id: job_id.into(),
            game_id: "local".into(),
            asset_name: format!("models/{}", self.name),
            model: self.name.clone(),
            vram_gb_estimate: self.vram_gb.max(0.0),
            task,
            model_source: ModelSource {
                engine: Engine::parse(&self.engine),
                files,
                cli_defaults,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(toml_text: &str) -> NamedModel {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn an_entry_becomes_the_claim_a_studio_offer_would_carry() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.gguf");
        std::fs::write(&file, b"x").unwrap();
        let m = entry(&format!(
            "name = \"smol\"\nengine = \"llama-cpp\"\npin = true\nvram_gb = 0.5\noptions = {{ contextSize = 4096 }}\nfiles = [{{ role = \"model\", path = \"{}\" }}, {{ role = \"config\", url = \"https://h/x/c.json\", sha256 = \"{}\" }}]\n",
            file.display(),
            "ab".repeat(32)
        ));
        let c = m.claim("pin:smol").unwrap();
        assert_eq!((c.model.as_str(), c.vram_gb_estimate), ("smol", 0.5));
        assert_eq!(c.task.kind(), TaskKind::Llm);
        assert_eq!(c.model_source.cli_defaults.context_size, Some(4096));
        assert!(c.model_source.files[0].url.starts_with("file://"));
        assert_eq!(c.model_source.files[0].filename, "m.gguf");
        assert_eq!(c.model_source.files[1].filename, "c.json");
    }

    #[test]
    fn bad_entries_are_named() {
        let e = entry("name = \"x\"\nengine = \"nope\"\n")
            .claim("j")
            .unwrap_err();
        assert!(
            e.contains("`x`") && e.contains("unknown engine `nope`"),
            "{e}"
        );
        let e = entry("name = \"y\"\nengine = \"llama-cpp\"\nfiles = [{ role = \"model\" }]\n")
            .claim("j")
            .unwrap_err();
        assert!(e.contains("exactly one of `path` or `url`"), "{e}");
        let e = entry("name = \"z\"\nengine = \"llama-cpp\"\nfiles = [{ role = \"model\", path = \"/no/such\" }]\n")
            .claim("j")
            .unwrap_err();
        assert!(e.contains("/no/such"), "{e}");
    }
}
