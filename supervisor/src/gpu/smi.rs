//! NVIDIA through `nvidia-smi`, when NVML cannot be loaded.

use std::process::{Command, Stdio};

use super::{Gpu, ProbeError, Vendor};

/// The query: sizes in MiB, one GPU a line, in PCI bus order.
pub const ARGS: [&str; 2] = [
    "--query-gpu=index,name,memory.total,memory.free",
    "--format=csv,noheader,nounits",
];

const SOURCE: &str = "nvidia-smi";

/// Runs `nvidia-smi` and parses what it prints.
pub fn probe() -> Result<Vec<Gpu>, ProbeError> {
    let out = Command::new("nvidia-smi")
        .args(ARGS)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| ProbeError::Unavailable(SOURCE, e.to_string()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // Without a working driver it says why on stdout, exit code 9.
        let why = stdout
            .lines()
            .chain(String::from_utf8_lossy(&out.stderr).lines())
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output")
            .trim()
            .to_string();
        return Err(ProbeError::Unavailable(
            SOURCE,
            format!("{} ({why})", out.status),
        ));
    }
    parse(&stdout)
}

/// Parses the query's output. A line whose total memory is not a number
/// (`[N/A]`, `[Not Supported]`) is left out with a warning: admission
/// cannot plan on a GPU of unknown size. An unknown free size is `None`.
pub fn parse(text: &str) -> Result<Vec<Gpu>, ProbeError> {
    let mut gpus = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() < 4 {
            return Err(ProbeError::Unreadable(
                SOURCE,
                format!("expected index, name, total, free in {line:?}"),
            ));
        }
        let index = fields[0].parse::<u32>().map_err(|_| {
            ProbeError::Unreadable(
                SOURCE,
                format!("`{}` is not a GPU index in {line:?}", fields[0]),
            )
        })?;
        let name = fields[1..fields.len() - 2].join(",");
        let mib = |s: &str| s.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0);
        let Some(total) = mib(fields[fields.len() - 2]) else {
            tracing::warn!(target: "gpu", "nvidia-smi: GPU {index} ({name}) reports no memory size ({}); left out", fields[fields.len() - 2]);
            continue;
        };
        let free = mib(fields[fields.len() - 1]);
        gpus.push(Gpu {
            index,
            name,
            vendor: Vendor::Nvidia,
            total_bytes: (total * 1024.0 * 1024.0) as u64,
            free_bytes: free.map(|f| (f * 1024.0 * 1024.0) as u64),
        });
    }
    Ok(gpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn four_gpus_as_a_rig_prints_them() {
        let gpus = parse(include_str!("fixtures/nvidia-smi-4x4090.csv")).unwrap();
        assert_eq!(gpus.len(), 4);
        assert_eq!(gpus[0].name, "NVIDIA GeForce RTX 4090");
        assert_eq!(gpus[0].total_bytes, 24564 * MIB);
        assert_eq!(gpus[0].free_bytes, Some(24082 * MIB));
        assert_eq!(gpus[3].index, 3);
        assert_eq!(gpus[3].free_bytes, Some(1210 * MIB), "a busy GPU");
        assert!((gpus[0].total_gb() - 23.99).abs() < 0.01);
    }

    #[test]
    fn unknown_sizes_leave_out_the_gpu_or_the_free_figure() {
        let gpus = parse(include_str!("fixtures/nvidia-smi-na.csv")).unwrap();
        // GPU 0: total known, free [N/A]; GPU 1: total [N/A] (left out).
        assert_eq!(gpus.len(), 1, "{gpus:?}");
        assert_eq!(gpus[0].index, 0);
        assert_eq!(gpus[0].free_bytes, None);
        assert_eq!(gpus[0].total_bytes, 143771 * MIB);
    }

    #[test]
    fn no_lines_is_no_gpu_and_a_short_line_is_named() {
        assert!(parse("").unwrap().is_empty());
        assert!(parse("\n  \n").unwrap().is_empty());
        let e = parse("0, NVIDIA A100\n").unwrap_err().to_string();
        assert!(e.contains("NVIDIA A100"), "{e}");
        let e = parse("GPU-0, x, 1, 1\n").unwrap_err().to_string();
        assert!(e.contains("`GPU-0`"), "{e}");
    }

    #[test]
    fn the_driver_failure_text_is_not_a_gpu() {
        // What nvidia-smi prints (exit 9) on a host whose driver is gone;
        // `probe` reports the exit status, and the text does not parse.
        let text = include_str!("fixtures/nvidia-smi-no-driver.txt");
        assert!(parse(text).is_err());
    }
}
