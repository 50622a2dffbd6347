//! Apple silicon: the GPU shares the machine's memory, so its size is the
//! machine's (`sysctl -n hw.memsize`). What is free is not known here; the
//! ledger plans on what jobs reserve.

use super::{Gpu, ProbeError, Vendor};

const SOURCE: &str = "apple unified memory";

/// The one GPU of an Apple silicon Mac; unavailable anywhere else.
pub fn probe() -> Result<Vec<Gpu>, ProbeError> {
    if !(cfg!(target_os = "macos") && cfg!(target_arch = "aarch64")) {
        return Err(ProbeError::Unavailable(
            SOURCE,
            "not an Apple silicon Mac".into(),
        ));
    }
    let out = std::process::Command::new("sysctl")
        .args(["-n", "hw.memsize"])
        .output()
        .map_err(|e| ProbeError::Unavailable(SOURCE, format!("sysctl: {e}")))?;
    let total = parse_memsize(&String::from_utf8_lossy(&out.stdout))?;
    Ok(vec![Gpu {
        index: 0,
        name: "Apple GPU (unified memory)".into(),
        vendor: Vendor::Apple,
        total_bytes: total,
        free_bytes: None,
    }])
}

/// Parses `sysctl -n hw.memsize` (bytes on one line).
pub fn parse_memsize(text: &str) -> Result<u64, ProbeError> {
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|b| *b > 0)
        .ok_or_else(|| ProbeError::Unreadable(SOURCE, format!("hw.memsize is {:?}", text.trim())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memsize_is_bytes() {
        // A 64 GB M2 Max.
        assert_eq!(parse_memsize("68719476736\n").unwrap(), 68719476736);
        assert!(parse_memsize("").is_err());
        assert!(parse_memsize("sysctl: unknown oid 'hw.memsize'").is_err());
    }

    #[cfg(not(target_os = "macos"))]
    #[test]
    fn elsewhere_it_is_unavailable() {
        assert!(matches!(probe(), Err(ProbeError::Unavailable(..))));
    }
}
