//! A one-line progress bar on stderr for a person at a terminal
//! (`studio-worker job`, `fetch-model`); silent when stderr is not a TTY,
//! where the log lines say the same.

use std::io::{IsTerminal, Write};

/// A redrawn `\r` progress line.
pub struct TermBar {
    label: String,
    tty: bool,
    shown: bool,
    last_permille: u64,
}

impl TermBar {
    /// A bar titled `label`.
    pub fn new(label: &str) -> Self {
        Self {
            label: label.to_string(),
            tty: std::io::stderr().is_terminal(),
            shown: false,
            last_permille: u64::MAX,
        }
    }

    /// Draws `done` of `total` bytes (total 0 = unknown).
    pub fn show(&mut self, done: u64, total: u64) {
        if !self.tty {
            return;
        }
        let permille = (done * 1000).checked_div(total).unwrap_or(0);
        if permille == self.last_permille && self.shown {
            return;
        }
        self.last_permille = permille;
        let width = 30u64;
        let filled = (done * width).checked_div(total).unwrap_or(0).min(width);
        let bar: String = (0..width)
            .map(|i| if i < filled { '#' } else { '.' })
            .collect();
        let mb = |b: u64| b as f64 / 1_048_576.0;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{} [{bar}] {:5.1}% {:.1}/{:.1} MB",
            self.label,
            permille as f64 / 10.0,
            mb(done),
            mb(total)
        );
        let _ = err.flush();
        self.shown = true;
    }

    /// Ends the line if a bar was drawn.
    pub fn finish(&mut self) {
        if self.shown {
            eprintln!();
            self.shown = false;
        }
    }
}
