//! Fake GPUs for tests on machines without one: `STUDIO_WORKER_FAKE_GPUS`
//! is a comma-separated list of sizes in GB (`"24,8"`: GPU 0 with 24 GB,
//! GPU 1 with 8 GB). A size may say how much other programs hold on it
//! (`"8:5"`: 8 GB, 5 GB of it taken by someone else). What is free on them
//! beyond that is what the worker's own ledger says.

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

/// Parses `"24,8"` or `"8:5"`.
pub fn parse(value: &str) -> Result<Vec<Gpu>, String> {
    value
        .split(',')
        .enumerate()
        .map(|(i, spec)| {
            let (size, used) = match spec.split_once(':') {
                Some((s, u)) => (s.trim(), Some(u.trim())),
                None => (spec.trim(), None),
            };
            let gb: f64 = size
                .parse()
                .map_err(|_| format!("`{size}` is not a size in GB"))?;
            if !(gb.is_finite() && gb > 0.0) {
                return Err(format!("`{size}` is not a positive size in GB"));
            }
            let used_gb: f64 = match used {
                Some(u) => u
                    .parse()
                    .ok()
                    .filter(|u: &f64| u.is_finite() && (0.0..=gb).contains(u))
                    .ok_or_else(|| format!("`{u}` is not a used size between 0 and {gb} GB"))?,
                None => 0.0,
            };
            let bytes = (gb * GB) as u64;
            Ok(Gpu {
                index: i as u32,
                name: "fake GPU".into(),
                vendor: Vendor::Fake,
                total_bytes: bytes,
                free_bytes: Some(bytes - (used_gb * GB) as u64),
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
    fn a_size_may_say_what_others_hold() {
        let gpus = parse("8:5,24").unwrap();
        assert_eq!((gpus[0].total_gb(), gpus[0].free_gb()), (8.0, Some(3.0)));
        assert_eq!(gpus[1].free_gb(), Some(24.0));
        assert!(parse("8:9").unwrap_err().contains("`9`"));
        assert!(parse("8:x").unwrap_err().contains("`x`"));
    }

    #[test]
    fn bad_sizes_are_named() {
        assert!(parse("24,lots").unwrap_err().contains("`lots`"));
        assert!(parse("0").unwrap_err().contains("positive"));
        assert!(parse("").unwrap_err().contains("``"));
    }
}
