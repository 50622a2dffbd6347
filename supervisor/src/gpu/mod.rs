//! What GPUs this host has, and how much memory each has total and free.
//!
//! [`probe`] asks, in order, and takes the first source that answers:
//!
//! 1. `STUDIO_WORKER_FAKE_GPUS="24,8"`: fake GPUs of those sizes in GB, for
//!    tests of admission on a machine without a GPU ([`fake`]).
//! 2. NVIDIA through NVML, loaded at run time (`libnvidia-ml.so.1`), so the
//!    binary starts on machines without the driver ([`nvml`]).
//! 3. `nvidia-smi`, when NVML cannot be loaded ([`smi`]).
//! 4. AMD: `/sys/class/drm/card*/device/mem_info_vram_{total,used}`
//!    ([`amd`]).
//! 5. Apple silicon: unified memory, `sysctl -n hw.memsize` ([`apple`]).
//!
//! None answering means no GPU: an empty list, total 0.
//!
//! Indices are the order each source lists its devices: NVML and
//! `nvidia-smi` list by PCI bus id, which is what CUDA uses under
//! `CUDA_DEVICE_ORDER=PCI_BUS_ID`; AMD cards are listed by card number.

pub mod amd;
pub mod apple;
pub mod claim;
pub mod fake;
pub mod nvml;
pub mod smi;

/// Bytes in the GB the studio contract speaks of (`vramGbEstimate`,
/// `vramTotalGb`): 2^30, as the 0.2.0 worker computed it (MiB / 1024).
pub const GB: f64 = (1u64 << 30) as f64;

/// Who made a GPU (and so which source reported it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// NVIDIA, through NVML or `nvidia-smi`.
    Nvidia,
    /// AMD, through the amdgpu driver's sysfs files.
    Amd,
    /// Apple silicon: the GPU shares the machine's memory.
    Apple,
    /// `STUDIO_WORKER_FAKE_GPUS`.
    Fake,
}

/// One GPU.
#[derive(Debug, Clone, PartialEq)]
pub struct Gpu {
    /// Its index in the probe's order (see the module docs).
    pub index: u32,
    /// Its name as the driver reports it.
    pub name: String,
    /// Who made it.
    pub vendor: Vendor,
    /// Memory in bytes.
    pub total_bytes: u64,
    /// Free memory in bytes, when the source knows it.
    pub free_bytes: Option<u64>,
}

impl Gpu {
    /// Total memory in GB.
    pub fn total_gb(&self) -> f64 {
        self.total_bytes as f64 / GB
    }

    /// Free memory in GB, when known.
    pub fn free_gb(&self) -> Option<f64> {
        self.free_bytes.map(|b| b as f64 / GB)
    }
}

/// Why a source could not answer (the next one is asked).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The source is not on this host (no driver, no tool, no files).
    #[error("{0} not available: {1}")]
    Unavailable(&'static str, String),
    /// The source answered something we could not read.
    #[error("{0} answered something unreadable: {1}")]
    Unreadable(&'static str, String),
}

/// One way of asking.
type Source = fn() -> Result<Vec<Gpu>, ProbeError>;

/// Every GPU on this host, from the first source that answers; empty when
/// none does. What each source said is logged at debug level.
pub fn probe() -> Vec<Gpu> {
    if let Some(gpus) = fake::from_env() {
        return gpus;
    }
    let sources: [(&str, Source); 4] = [
        ("nvml", nvml::probe),
        ("nvidia-smi", smi::probe),
        ("amd sysfs", || {
            amd::probe(std::path::Path::new("/sys/class/drm"))
        }),
        ("apple", apple::probe),
    ];
    for (name, source) in sources {
        match source() {
            Ok(gpus) if !gpus.is_empty() => return gpus,
            Ok(_) => tracing::debug!(target: "gpu", "{name}: no GPUs"),
            Err(e) => tracing::debug!(target: "gpu", "{e}"),
        }
    }
    Vec::new()
}

/// The largest GPU's memory in GB (what a single-session worker
/// advertises as `vramTotalGb`), 0 without a GPU.
pub fn largest_total_gb(gpus: &[Gpu]) -> f64 {
    gpus.iter().map(Gpu::total_gb).fold(0.0, f64::max)
}
