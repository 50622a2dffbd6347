//! AMD through the amdgpu driver's sysfs files:
//! `/sys/class/drm/cardN/device/mem_info_vram_total` and
//! `mem_info_vram_used` (bytes), `product_name` when the driver has it.

use std::path::Path;

use super::{Gpu, ProbeError, Vendor};

const SOURCE: &str = "amd sysfs";

/// Lists the cards under `drm` (normally `/sys/class/drm`) that report
/// VRAM, in card-number order. Connectors (`card0-DP-1`), render nodes
/// and cards of other drivers (no `mem_info_vram_total`) are passed over.
pub fn probe(drm: &Path) -> Result<Vec<Gpu>, ProbeError> {
    let entries = std::fs::read_dir(drm)
        .map_err(|e| ProbeError::Unavailable(SOURCE, format!("{}: {e}", drm.display())))?;
    let mut cards: Vec<(u32, std::path::PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let n = name.strip_prefix("card")?.parse::<u32>().ok()?;
            Some((n, e.path().join("device")))
        })
        .collect();
    cards.sort();
    let mut gpus = Vec::new();
    for (card, dev) in cards {
        let read = |f: &str| std::fs::read_to_string(dev.join(f)).ok();
        let Some(total) = read("mem_info_vram_total") else {
            continue;
        };
        let total: u64 = total.trim().parse().map_err(|_| {
            ProbeError::Unreadable(
                SOURCE,
                format!("card{card}: mem_info_vram_total is {:?}", total.trim()),
            )
        })?;
        if total == 0 {
            continue;
        }
        let used = read("mem_info_vram_used").and_then(|u| u.trim().parse::<u64>().ok());
        let name = read("product_name")
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("AMD GPU (card{card})"));
        gpus.push(Gpu {
            index: gpus.len() as u32,
            name,
            vendor: Vendor::Amd,
            total_bytes: total,
            free_bytes: used.map(|u| total.saturating_sub(u)),
        });
    }
    Ok(gpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// A tree as two amdgpu cards and an Intel iGPU leave it: connectors,
    /// a render node, a card without VRAM files.
    fn rig(root: &Path) {
        write(root, "card0/device/vendor", "0x8086\n");
        write(root, "card0-HDMI-A-1/status", "connected\n");
        write(root, "card1/device/mem_info_vram_total", "25753026560\n");
        write(root, "card1/device/mem_info_vram_used", "1073741824\n");
        write(root, "card1/device/product_name", "Radeon RX 7900 XTX\n");
        write(root, "card1-DP-1/status", "disconnected\n");
        write(root, "card10/device/mem_info_vram_total", "17163091968\n");
        write(root, "card2/device/mem_info_vram_total", "68702699520\n");
        write(root, "renderD128/device/mem_info_vram_total", "1\n");
        write(root, "version", "drm 1.1.0\n");
    }

    #[test]
    fn cards_with_vram_in_card_order() {
        let dir = tempfile::tempdir().unwrap();
        rig(dir.path());
        let gpus = probe(dir.path()).unwrap();
        let names: Vec<&str> = gpus.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(
            names,
            ["Radeon RX 7900 XTX", "AMD GPU (card2)", "AMD GPU (card10)"]
        );
        assert_eq!(gpus[0].index, 0);
        assert_eq!(gpus[0].total_bytes, 25753026560);
        assert_eq!(gpus[0].free_bytes, Some(25753026560 - 1073741824));
        assert_eq!(gpus[1].free_bytes, None, "no used file: free unknown");
        assert_eq!(gpus[2].index, 2);
    }

    #[test]
    fn no_drm_dir_is_unavailable_and_junk_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            probe(&dir.path().join("missing")),
            Err(ProbeError::Unavailable(..))
        ));
        write(dir.path(), "card0/device/mem_info_vram_total", "lots\n");
        let e = probe(dir.path()).unwrap_err().to_string();
        assert!(e.contains("card0") && e.contains("lots"), "{e}");
    }

    #[test]
    fn a_host_without_amd_cards_has_none() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "card0/device/vendor", "0x8086\n");
        assert!(probe(dir.path()).unwrap().is_empty());
    }
}
