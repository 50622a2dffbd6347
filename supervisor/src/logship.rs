//! Log lines for the studio: a `tracing` layer copies every info/warn/error
//! event into a bounded queue that the session drains into `logBatch`
//! frames once a second (studio-protocol.md §3.8).
//!
//! The category is the event's target (`ws`, `job`, `engine`, ...), the
//! job id comes from a `job_id` field. Secrets never reach here because no
//! code passes them to `tracing`.

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};

use studio_protocol::studio::{LogEntry, LogLevel};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// Lines dropped since start (for `/metrics`).
static DROPPED_TOTAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many log lines were dropped since start because the queue was full.
pub fn dropped_total() -> u64 {
    DROPPED_TOTAL.load(std::sync::atomic::Ordering::Relaxed)
}

/// Most lines kept while no session drains them.
pub const QUEUE_CAP: usize = 5000;

#[derive(Default)]
struct Queue {
    lines: VecDeque<LogEntry>,
    dropped: u64,
}

fn queue() -> &'static Mutex<Queue> {
    static Q: OnceLock<Mutex<Queue>> = OnceLock::new();
    Q.get_or_init(|| Mutex::new(Queue::default()))
}

fn lock() -> std::sync::MutexGuard<'static, Queue> {
    queue().lock().unwrap_or_else(|p| p.into_inner())
}

/// Takes every queued line (oldest first), noting drops.
pub fn drain() -> Vec<LogEntry> {
    let mut q = lock();
    let mut out: Vec<LogEntry> = q.lines.drain(..).collect();
    if q.dropped > 0 {
        out.insert(
            0,
            entry(
                LogLevel::Warn,
                "logs",
                format!("{} log line(s) dropped: queue full", q.dropped),
                None,
            ),
        );
        q.dropped = 0;
    }
    out
}

/// Puts a batch that could not be sent back at the front.
pub fn requeue(batch: Vec<LogEntry>) {
    let mut q = lock();
    for e in batch.into_iter().rev() {
        q.lines.push_front(e);
    }
    while q.lines.len() > QUEUE_CAP {
        q.lines.pop_front();
        q.dropped += 1;
        DROPPED_TOTAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Entries the log tail keeps for the control endpoint's `/logs`.
pub const TAIL_CAP: usize = 500;

#[derive(Default)]
struct Tail {
    next: u64,
    lines: VecDeque<(u64, LogEntry)>,
}

fn tail_lock() -> std::sync::MutexGuard<'static, Tail> {
    static T: OnceLock<Mutex<Tail>> = OnceLock::new();
    T.get_or_init(|| Mutex::new(Tail::default()))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The last [`TAIL_CAP`] entries numbered from 1, those after `after`
/// (0: all kept), oldest first; and the highest number given so far (ask
/// after it next time).
pub fn tail(after: u64) -> (Vec<(u64, LogEntry)>, u64) {
    let t = tail_lock();
    let lines = t
        .lines
        .iter()
        .filter(|(n, _)| *n > after)
        .cloned()
        .collect();
    (lines, t.next)
}

fn push(e: LogEntry) {
    {
        let mut t = tail_lock();
        t.next += 1;
        let n = t.next;
        if t.lines.len() >= TAIL_CAP {
            t.lines.pop_front();
        }
        t.lines.push_back((n, e.clone()));
    }
    let mut q = lock();
    if q.lines.len() >= QUEUE_CAP {
        q.lines.pop_front();
        q.dropped += 1;
        DROPPED_TOTAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    q.lines.push_back(e);
}

/// RFC 3339 UTC with milliseconds and `Z`.
pub fn now_ts() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    now.format(&fmt).unwrap_or_default()
}

fn entry(level: LogLevel, category: &str, message: String, job_id: Option<String>) -> LogEntry {
    LogEntry {
        ts: now_ts(),
        level,
        category: category.into(),
        message,
        job_id,
    }
}

/// The layer that feeds the queue.
pub struct ShipLayer;

impl<S: Subscriber> Layer<S> for ShipLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let level = match *meta.level() {
            Level::ERROR => LogLevel::Error,
            Level::WARN => LogLevel::Warn,
            Level::INFO => LogLevel::Info,
            _ => return,
        };
        let target = meta.target();
        // Only our own events: library internals stay local.
        if !(target == "ws"
            || target == "job"
            || target == "engine"
            || target == "upload"
            || target == "worker"
            || target.starts_with("studio_worker"))
        {
            return;
        }
        let r = crate::logging::Record::of(event);
        let category = target.rsplit("::").next().unwrap_or(target);
        push(entry(
            level,
            category,
            format!("{}{}", r.message, r.extra()),
            r.job_id,
        ));
    }
}
