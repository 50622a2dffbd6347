//! The Logs tab's entries and filter.

use serde::Deserialize;

/// One log entry from the endpoint's `/logs`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Its number (rising).
    pub seq: u64,
    /// RFC 3339 time.
    pub ts: String,
    /// `info`, `warn`, `error`.
    pub level: String,
    /// Where it comes from (`job`, `engine`, `ws`, ...).
    pub category: String,
    /// The line.
    pub message: String,
    /// The job it is about.
    #[serde(default)]
    pub job_id: Option<String>,
}

/// Entries kept by the window (as many as the worker keeps).
pub const KEEP: usize = 500;

/// The least severe level shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Level {
    /// Everything.
    #[default]
    Info,
    /// Warnings and errors.
    Warn,
    /// Errors only.
    Error,
}

impl Level {
    fn of(word: &str) -> Self {
        match word {
            "error" => Level::Error,
            "warn" | "warning" => Level::Warn,
            _ => Level::Info,
        }
    }
}

/// Adds `new` to `kept` (skipping entries already there), keeping the
/// last [`KEEP`].
pub fn append(kept: &mut Vec<Entry>, new: Vec<Entry>) {
    let last = kept.last().map_or(0, |e| e.seq);
    kept.extend(new.into_iter().filter(|e| e.seq > last));
    if kept.len() > KEEP {
        kept.drain(..kept.len() - KEEP);
    }
}

/// The entries at `level` or above whose category, message or job id
/// contains `query` (any case; empty: all).
pub fn filter<'a>(entries: &'a [Entry], level: Level, query: &str) -> Vec<&'a Entry> {
    let q = query.trim().to_lowercase();
    entries
        .iter()
        .filter(|e| Level::of(&e.level) >= level)
        .filter(|e| {
            q.is_empty()
                || e.category.to_lowercase().contains(&q)
                || e.message.to_lowercase().contains(&q)
                || e.job_id
                    .as_deref()
                    .is_some_and(|j| j.to_lowercase().contains(&q))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(seq: u64, level: &str, message: &str, job: Option<&str>) -> Entry {
        Entry {
            seq,
            ts: String::new(),
            level: level.into(),
            category: "job".into(),
            message: message.into(),
            job_id: job.map(str::to_string),
        }
    }

    #[test]
    fn the_filter_narrows_by_level_and_by_text_in_category_message_or_job_id() {
        let all = vec![
            e(1, "info", "offer job-1", Some("job-1")),
            e(2, "warn", "upload retried", Some("job-2")),
            e(3, "error", "runner died", None),
        ];
        assert_eq!(filter(&all, Level::Info, "").len(), 3);
        assert_eq!(filter(&all, Level::Warn, "").len(), 2);
        assert_eq!(filter(&all, Level::Error, "")[0].seq, 3);
        assert_eq!(filter(&all, Level::Info, "JOB-2")[0].seq, 2);
        assert_eq!(
            filter(&all, Level::Info, "job").len(),
            3,
            "the category matches"
        );
        assert!(filter(&all, Level::Error, "job-1").is_empty());
    }

    #[test]
    fn appending_skips_what_is_kept_and_keeps_the_last_500() {
        let mut kept = vec![e(1, "info", "a", None), e(2, "info", "b", None)];
        append(
            &mut kept,
            vec![e(2, "info", "b", None), e(3, "info", "c", None)],
        );
        assert_eq!(kept.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        append(
            &mut kept,
            (4..=600).map(|n| e(n, "info", "x", None)).collect(),
        );
        assert_eq!(kept.len(), KEEP);
        assert_eq!(kept[0].seq, 101);
    }
}
