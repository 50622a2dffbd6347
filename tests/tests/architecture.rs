//! Architecture invariants (ARCHITECTURE.md), checked over the real
//! dependency graph with `cargo tree`.

use std::process::Command;

/// Normal (non-dev, non-build) dependencies of a workspace package.
fn deps(package: &str) -> Vec<String> {
    deps_with(package, &[])
}

/// [`deps`] with extra `cargo tree` arguments (`--features ui`).
fn deps_with(package: &str, extra: &[&str]) -> Vec<String> {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "-p",
            package,
        ])
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

const NATIVE_ENGINES: &[&str] = &[
    "diffusion-rs-sys",
    "llama-cpp-2",
    "llama-cpp-sys-2",
    "whisper-rs",
    "whisper-rs-sys",
    "ort",
    "ort-sys",
];

#[test]
fn the_supervisor_links_no_inference_library() {
    let d = deps("studio-worker");
    for n in NATIVE_ENGINES {
        assert!(!d.iter().any(|x| x == n), "studio-worker depends on {n}");
    }
    assert!(d.iter().any(|x| x == "studio-protocol"));
}

#[test]
fn the_protocol_crate_does_no_io_policy() {
    let d = deps("studio-protocol");
    for n in ["tokio", "reqwest", "tokio-tungstenite", "hyper", "libc"] {
        assert!(!d.iter().any(|x| x == n), "studio-protocol depends on {n}");
    }
}

#[test]
fn each_runner_binary_links_at_most_one_ggml() {
    // Each native family bundles its own ggml: one family per binary.
    // The families' own table says which binary may link which.
    for family in studio_protocol::runner::FAMILIES {
        let (pkg, allowed) = (family.binary, family.native_crates);
        for n in allowed {
            assert!(
                NATIVE_ENGINES.contains(n),
                "{n} missing from NATIVE_ENGINES"
            );
        }
        let d = deps(pkg);
        let native: Vec<&str> = NATIVE_ENGINES
            .iter()
            .copied()
            .filter(|n| d.iter().any(|x| x == n))
            .collect();
        assert_eq!(native, allowed, "{pkg} links {native:?}");
    }
}

/// Crates that bring a window, a GPU surface or a tray.
const GUI: &[&str] = &[
    "eframe",
    "egui",
    "winit",
    "glutin",
    "wgpu",
    "tray-icon",
    "gtk",
    "muda",
];

#[test]
fn only_the_ui_feature_brings_gui_crates() {
    let headless = [
        "studio-worker",
        "engine-runner",
        "engine-runner-sd",
        "engine-runner-llama",
        "engine-runner-whisper",
        "engine-runner-piper",
        "engine-runner-onnx",
        "engine-runner-gradio",
        // Without its feature the UI crate is only the window's model.
        "studio-worker-ui",
    ];
    for package in headless {
        let d = deps(package);
        for g in GUI {
            assert!(!d.iter().any(|x| x == g), "{package} depends on {g}");
        }
    }
    let ui = deps_with("studio-worker-ui", &["--features", "ui"]);
    for g in ["eframe", "egui", "tray-icon"] {
        assert!(ui.iter().any(|x| x == g), "the ui feature should bring {g}");
    }
    assert!(!ui.iter().any(|x| x == "gtk"), "the tray links GTK");
}
