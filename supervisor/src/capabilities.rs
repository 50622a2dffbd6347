//! The capability snapshot advertised in `hello` and every heartbeat.

use std::collections::{BTreeMap, BTreeSet};

use studio_protocol::studio::{TaskKind, WorkerCapabilities};

use crate::config::Config;
use crate::runner::EngineCatalog;
use crate::sysinfo;

/// Host facts probed once at start.
#[derive(Debug, Clone)]
pub struct HostFacts {
    /// Host name.
    pub machine_name: String,
    /// OS user.
    pub username: String,
    /// The largest GPU's memory in GB.
    pub vram_total_gb: f64,
    /// Each GPU's index and memory in GB.
    pub gpu_totals_gb: Vec<(u32, f64)>,
}

impl HostFacts {
    /// Probes the host.
    pub fn probe() -> Self {
        Self::with_gpus(&crate::gpu::probe())
    }

    /// The host's facts with `gpus` already probed.
    pub fn with_gpus(gpus: &[crate::gpu::Gpu]) -> Self {
        Self {
            machine_name: sysinfo::hostname(),
            username: sysinfo::username(),
            vram_total_gb: crate::gpu::largest_total_gb(gpus),
            gpu_totals_gb: gpus.iter().map(|g| (g.index, g.total_gb())).collect(),
        }
    }
}

/// Which session a snapshot is for: its GPU (whose memory is advertised)
/// and the config table its threshold comes from (see
/// [`crate::settings::SessionPlan`]). The default is the single session.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct For {
    /// The session's GPU; `None`: the largest.
    pub gpu: Option<u32>,
    /// `None`: the top-level threshold; `Some(g)`: `[[worker]] gpu = g`'s.
    pub table: Option<u32>,
}

fn short(kind: TaskKind) -> &'static str {
    match kind {
        TaskKind::Image => "image",
        TaskKind::Llm => "llm",
        TaskKind::AudioStt => "stt",
        TaskKind::AudioTts => "tts",
        TaskKind::Video => "video",
    }
}

/// Builds the snapshot of session `of` from live config; `paused` forces
/// `autoEnabled` false (disabled, draining or cooling down).
pub fn snapshot(
    cfg: &Config,
    host: &HostFacts,
    catalog: &EngineCatalog,
    paused: bool,
    of: For,
) -> WorkerCapabilities {
    let mut per_kind: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // With `engine = "gradio"` every image job goes to the app: only it
    // speaks for the image kind (and nothing does while it is unusable).
    let gradio_only = cfg.routes_images_to_gradio();
    for engine in catalog.names() {
        for &kind in catalog.kinds(&engine) {
            if gradio_only && kind == TaskKind::Image && engine != "gradio" {
                continue;
            }
            let ids = per_kind.entry(kind.as_str().to_string()).or_default();
            if engine == "synthetic" {
                ids.push("synthetic".into());
                ids.push(format!("synthetic-{}", short(kind)));
            } else {
                ids.push(format!("{engine}:*"));
            }
        }
    }
    // The seed's `supported_models_override` declares the image model ids
    // (the models the owner verified in their app) in place of the image
    // engines' own ids.
    if let Some(ids) = cfg
        .supported_models_override
        .as_ref()
        .filter(|o| !o.is_empty())
    {
        if let Some(image) = per_kind.get_mut(TaskKind::Image.as_str()) {
            *image = ids.iter().map(|i| i.trim().to_string()).collect();
            image.retain(|i| !i.is_empty());
        }
    }
    for ids in per_kind.values_mut() {
        ids.sort();
        ids.dedup();
    }
    let all: BTreeSet<String> = per_kind.values().flatten().cloned().collect();
    WorkerCapabilities {
        machine_name: host.machine_name.clone(),
        username: host.username.clone(),
        agent_version: crate::update::running_version(),
        engine: "multi".into(),
        vram_total_gb: of
            .gpu
            .and_then(|g| host.gpu_totals_gb.iter().find(|(i, _)| *i == g))
            .map_or(host.vram_total_gb, |(_, gb)| *gb),
        vram_threshold_gb: cfg.threshold_for(of.table),
        auto_enabled: cfg.auto_enabled && !paused,
        auto_start: cfg.auto_start,
        // True only while the update loop runs in this process.
        auto_update: Some(crate::update::active()),
        start_minimised: None,
        only_when_idle: None,
        user_presence: None,
        supported_models: all.into_iter().collect(),
        task_kinds: TaskKind::ALL
            .iter()
            .filter(|k| per_kind.contains_key(k.as_str()))
            .map(|k| k.as_str().to_string())
            .collect(),
        supported_models_per_kind: per_kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostFacts {
        HostFacts {
            machine_name: "rig".into(),
            username: "me".into(),
            vram_total_gb: 24.0,
            gpu_totals_gb: vec![(0, 24.0)],
        }
    }

    fn advertised(extra: &str, engines: &[(&str, &[TaskKind])]) -> BTreeMap<String, Vec<String>> {
        let cfg: Config = toml::from_str(&format!("api_base_url = \"http://x\"\n{extra}")).unwrap();
        snapshot(
            &cfg,
            &host(),
            &EngineCatalog::of(engines),
            false,
            For::default(),
        )
        .supported_models_per_kind
    }

    const ENGINES: &[(&str, &[TaskKind])] = &[
        ("synthetic", &TaskKind::ALL),
        ("sd-cpp", &[TaskKind::Image, TaskKind::Video]),
        ("llama-cpp", &[TaskKind::Llm]),
        ("gradio", &[TaskKind::Image]),
    ];

    #[test]
    fn every_engine_advertises_its_sentinel_per_kind() {
        let k = advertised("", ENGINES);
        assert_eq!(
            k["image"],
            ["gradio:*", "sd-cpp:*", "synthetic", "synthetic-image"]
        );
        assert_eq!(k["llm"], ["llama-cpp:*", "synthetic", "synthetic-llm"]);
    }

    #[test]
    fn the_override_declares_the_image_models_and_leaves_other_kinds_alone() {
        let k = advertised(
            "supported_models_override = [\"sdxl\", \"flux\"]\n",
            ENGINES,
        );
        assert_eq!(k["image"], ["flux", "sdxl"]);
        assert_eq!(k["llm"], ["llama-cpp:*", "synthetic", "synthetic-llm"]);
        assert_eq!(k["video"], ["sd-cpp:*", "synthetic", "synthetic-video"]);
    }

    #[test]
    fn with_engine_gradio_only_the_app_speaks_for_images() {
        let k = advertised("engine = \"gradio\"\n", ENGINES);
        assert_eq!(k["image"], ["gradio:*"]);
        assert_eq!(k["video"], ["sd-cpp:*", "synthetic", "synthetic-video"]);
        let k = advertised(
            "engine = \"gradio\"\nsupported_models_override = [\"sdxl\"]\n",
            ENGINES,
        );
        assert_eq!(k["image"], ["sdxl"]);
        // The app unusable: no image kind at all rather than a promise.
        let k = advertised("engine = \"gradio\"\n", &ENGINES[..3]);
        assert!(!k.contains_key("image"), "{k:?}");
    }
}
