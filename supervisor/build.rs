//! Records the target triple for `studio_worker_build_info`.
fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=STUDIO_WORKER_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
}
