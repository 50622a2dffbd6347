//! Fake GPUs for tests on machines without one: `STUDIO_WORKER_FAKE_GPUS`
//! is a comma-separated list of sizes in GB (`"24,8"`: GPU 0 with 24 GB,
//! GPU 1 with 8 GB). They start empty; what is free on them is what the
//! worker's own ledger says.

use super::{Gpu, Vendor, GB};

/// The environment variable.
pub const ENV: &str = "STUDIO_WORKER_FAKE_GPUS";

/// The fake GPUs the environment asks for; `None` when it asks for none,
/// or (with a warning naming the value) when the value does not parse.
pub fn from_env() -> Option<Vec<Gpu>> {
    let value = std::env::var(ENV).ok()?;
    match parse(&value) {
        Ok(gpus) => Some(gpus),
        Err(e) => {
            tracing::warn!(target: "gpu", "ignoring {ENV}={value:?}: {e}");
            None
        }
    }
}

/// Parses `"24,8"`.
pub fn parse(value: &str) -> Result<Vec<Gpu>, String> {
    value
        .split(',')
        .enumerate()
        .map(|(i, size)| {
            let gb: f64 = size
                .trim()
                .parse()
                .map_err(|_| format!("`{}` is not a size in GB", size.trim()))?;
            if !(gb.is_finite() && gb > 0.0) {
                return Err(format!("`{}` is not a positive size in GB", size.trim()));
            }
            let bytes = (gb * GB) as u64;
            Ok(Gpu {
                index: i as u32,
                name: "fake GPU".into(),
                vendor: Vendor::Fake,
                total_bytes: bytes,
                free_bytes: Some(bytes),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_become_gpus_in_order() {
        let gpus = parse("24, 8").unwrap();
        assert_eq!(gpus.len(), 2);
        assert_eq!((gpus[0].index, gpus[0].total_gb()), (0, 24.0));
        assert_eq!((gpus[1].index, gpus[1].total_gb()), (1, 8.0));
        assert_eq!(gpus[1].free_gb(), Some(8.0));
        assert_eq!(gpus[0].vendor, Vendor::Fake);
    }

    #[test]
    fn bad_sizes_are_named() {
        assert!(parse("24,lots").unwrap_err().contains("`lots`"));
        assert!(parse("0").unwrap_err().contains("positive"));
        assert!(parse("").unwrap_err().contains("``"));
    }
}
