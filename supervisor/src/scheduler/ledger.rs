//! GPU memory accounting, per GPU. What is free for a new model is the
//! probe's free memory, less what accepted jobs have reserved but not yet
//! loaded, less `vram_margin_gb`. Resident models hold their reported
//! device bytes (their job's estimate until reported); on a real GPU the
//! probe already sees them, on a fake one ([`crate::gpu::fake`]) the free
//! memory is computed from them, so admission is testable without a GPU.
//!
//! ```text
//! offer (need = vramGbEstimate) ─┬─ model resident on the GPU ───────────────▶ fits
//!                                ├─ need ≤ free ──────────────────────────────▶ fits
//!                                ├─ need ≤ free + idle unpinned residents ───▶ fits after stopping them, LRU first
//!                                ├─ need > total − margin − pinned ──────────▶ never (reject, no code)
//!                                └─ otherwise ────────────────────────────────▶ busy (needed vs free)
//! ```

use std::collections::BTreeMap;

use crate::gpu::{Gpu, Vendor, GB};

use super::runners::{RunnerKey, Runners};

/// One GPU's book.
#[derive(Debug, Clone)]
pub struct Book {
    /// The GPU as last probed.
    pub gpu: Gpu,
    /// For a fake GPU: what other programs hold (fixed).
    external: u64,
}

/// Whether a new model fits on a GPU.
#[derive(Debug, Clone, PartialEq)]
pub enum Fit {
    /// Yes (or the worker has no GPU to account for).
    Fits,
    /// After stopping these idle runners (pids), least recently used first.
    AfterEvicting(Vec<u32>),
    /// Not now: bytes needed and free (counting what could be evicted).
    Busy { need: u64, free: u64 },
    /// Never beside the pinned models: bytes needed and the most there is.
    Never { need: u64, room: u64 },
}

/// The ledger of every GPU.
#[derive(Debug, Default)]
pub struct Ledger {
    books: Vec<Book>,
    margin: u64,
    /// Accepted jobs whose model is not resident yet: GPU and bytes.
    reserved: BTreeMap<String, (u32, u64)>,
}

/// `bytes` as "3.5 GB".
pub fn gb(bytes: u64) -> String {
    format!("{:.1} GB", bytes as f64 / GB)
}

impl Ledger {
    /// A ledger over `gpus` keeping `margin_gb` free.
    pub fn new(gpus: Vec<Gpu>, margin_gb: f64) -> Self {
        let books = gpus
            .into_iter()
            .map(|gpu| Book {
                external: if gpu.vendor == Vendor::Fake {
                    gpu.total_bytes - gpu.free_bytes.unwrap_or(gpu.total_bytes)
                } else {
                    0
                },
                gpu,
            })
            .collect();
        Self {
            books,
            margin: bytes_of(margin_gb),
            reserved: BTreeMap::new(),
        }
    }

    /// Takes a changed margin.
    pub fn set_margin(&mut self, margin_gb: f64) {
        self.margin = bytes_of(margin_gb);
    }

    /// The books.
    pub fn books(&self) -> &[Book] {
        &self.books
    }

    /// Takes a fresh probe of real GPUs (fake ones follow the ledger).
    pub fn probed(&mut self, gpus: &[Gpu]) {
        for g in gpus {
            if let Some(b) = self.books.iter_mut().find(|b| b.gpu.index == g.index) {
                if b.gpu.vendor != Vendor::Fake {
                    b.gpu.free_bytes = g.free_bytes;
                }
            }
        }
    }

    /// Reserves `bytes` on `gpu` for `job_id` until its model is resident.
    pub fn reserve(&mut self, job_id: &str, gpu: u32, bytes: u64) {
        self.reserved.insert(job_id.to_string(), (gpu, bytes));
    }

    /// Ends `job_id`'s reservation.
    pub fn release(&mut self, job_id: &str) {
        self.reserved.remove(job_id);
    }

    /// Bytes reserved on `gpu`.
    pub fn reserved(&self, gpu: u32) -> u64 {
        self.reserved
            .values()
            .filter(|(g, _)| *g == gpu)
            .map(|(_, b)| b)
            .sum()
    }

    fn book(&self, gpu: u32) -> Option<&Book> {
        self.books.iter().find(|b| b.gpu.index == gpu)
    }

    /// Free memory on `gpu` as the probe says (for a fake GPU: its size
    /// less others' use and what `runners` hold on it).
    pub fn probe_free(&self, gpu: u32, runners: &Runners) -> Option<u64> {
        let b = self.book(gpu)?;
        Some(if b.gpu.vendor == Vendor::Fake {
            b.gpu
                .total_bytes
                .saturating_sub(b.external + runners.held_on(gpu))
        } else {
            b.gpu.free_bytes.unwrap_or(b.gpu.total_bytes)
        })
    }

    /// What a new model may take on `gpu` now.
    pub fn available(&self, gpu: u32, runners: &Runners) -> Option<u64> {
        Some(
            self.probe_free(gpu, runners)?
                .saturating_sub(self.reserved(gpu))
                .saturating_sub(self.margin),
        )
    }

    /// Whether `need` bytes for the model `key` fit on its GPU.
    pub fn fit(&self, key: &RunnerKey, need: u64, runners: &Runners) -> Fit {
        let Some(gpu) = key.gpu else {
            return Fit::Fits;
        };
        let (Some(book), Some(free)) = (self.book(gpu), self.available(gpu, runners)) else {
            return Fit::Fits;
        };
        if runners.is_resident(key) || need <= free {
            return Fit::Fits;
        }
        let mut evict = Vec::new();
        let mut freed = 0;
        for (pid, held) in runners.evictable_on(gpu) {
            evict.push(pid);
            freed += held;
            if need <= free + freed {
                return Fit::AfterEvicting(evict);
            }
        }
        // Others' use of the GPU may end; pinned models stay.
        let room = book
            .gpu
            .total_bytes
            .saturating_sub(self.margin + runners.pinned_on(gpu));
        if need > room {
            return Fit::Never { need, room };
        }
        Fit::Busy {
            need,
            free: free + freed,
        }
    }
}

/// GB (2^30 bytes, as the studio counts) to bytes.
pub fn bytes_of(gb: f64) -> u64 {
    if gb.is_finite() && gb > 0.0 {
        (gb * GB) as u64
    } else {
        0
    }
}
