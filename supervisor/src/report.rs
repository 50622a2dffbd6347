//! Crash and error reports to Sentry, opt-in: nothing leaves the machine
//! unless `SENTRY_DSN` is set (`SENTRY_ENVIRONMENT` names the
//! environment; the release is `studio-worker@<version>`).
//!
//! What is sent: panics (with backtrace), every `error` log record as an
//! event, `warn` records as breadcrumbs leading up to it, a runner's
//! native crash (its signal and stderr tail, reported by the supervisor
//! since the runner cannot), and the error that ends the process.
//!
//! Secrets are scrubbed from every string of every event and breadcrumb
//! before it is queued: each credential this process has exposed (see
//! [`studio_protocol::exposed_secrets`]), `Bearer` values, URL query
//! strings and user info, and `token=`/`secret=`/`signature=`-style pairs.
//!
//! Everything is recorded on the main hub, so a breadcrumb from one
//! runtime thread is in the trail of an event captured on another.
//!
//! Events go out through the project's own `reqwest` on one background
//! thread (no second HTTP stack); a report that cannot be delivered is
//! dropped, never retried into the worker's way.

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use regex::Regex;
use sentry::protocol::{Breadcrumb, Event, Level, Map};
use sentry::types::Dsn;
use sentry::{ClientOptions, Envelope, Transport, TransportFactory};
use serde_json::Value;
use tracing::Subscriber;
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

use crate::logging::Record;

/// Reports queued at most while the endpoint is slow.
const QUEUE: usize = 64;
/// How long one delivery may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an exit waits for queued reports.
const EXIT_FLUSH: Duration = Duration::from_secs(3);

static ENABLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Set on the delivery thread: its own log records are not reported.
    static DELIVERING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Keeps reporting on; dropping it delivers what is queued (up to 3 s).
pub struct Guard(#[allow(dead_code)] Option<sentry::ClientInitGuard>);

/// Starts reporting when `SENTRY_DSN` is set. A DSN that does not parse
/// is named on stderr and reporting stays off; the worker runs either way.
pub fn init() -> Guard {
    let Some(raw) = std::env::var("SENTRY_DSN")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
    else {
        return Guard(None);
    };
    let dsn = match Dsn::from_str(&raw) {
        Ok(d) => d,
        Err(e) => {
            // The DSN itself is not printed: it carries the project key.
            eprintln!("studio-worker: SENTRY_DSN is not a Sentry DSN ({e}); error reports are off");
            return Guard(None);
        }
    };
    let environment = std::env::var("SENTRY_ENVIRONMENT")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .map(Cow::Owned);
    let mut options = ClientOptions::default();
    options.dsn = Some(dsn);
    options.release = Some(Cow::Owned(release()));
    options.environment = environment;
    options.transport = Some(Arc::new(HttpFactory));
    options.before_send = Some(Arc::new(|e| Some(scrub_event(e))));
    options.before_breadcrumb = Some(Arc::new(|b| Some(scrub_breadcrumb(b))));
    options.send_default_pii = false;
    options.shutdown_timeout = EXIT_FLUSH;
    let guard = sentry::init(options);
    ENABLED.store(guard.is_enabled(), Ordering::SeqCst);
    Guard(Some(guard))
}

/// `studio-worker@<version>`.
pub fn release() -> String {
    format!("studio-worker@{}", env!("CARGO_PKG_VERSION"))
}

fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed) && !DELIVERING.with(|d| d.get())
}

/// Reports the error that ends the process and waits (up to 3 s) for it
/// to be delivered.
pub fn fatal_error(message: &str) {
    if !enabled() {
        return;
    }
    sentry::Hub::main().capture_event(Event {
        level: Level::Fatal,
        message: Some(message.to_string()),
        logger: Some("studio-worker".into()),
        ..Default::default()
    });
    flush();
}

/// Delivers what is queued (up to 3 s); for exits that skip destructors
/// (`exec`, `process::exit`).
pub fn flush() {
    if let Some(client) = sentry::Hub::main().client() {
        client.flush(Some(EXIT_FLUSH));
    }
}

/// A runner died of a crash signal: report it with what the runner can
/// no longer say itself.
pub fn runner_crashed(
    engine: &str,
    pid: u32,
    signal: &str,
    job_id: Option<&str>,
    stderr_tail: &[String],
) {
    if !enabled() {
        return;
    }
    let mut tags = Map::new();
    tags.insert("engine".to_string(), engine.to_string());
    tags.insert("signal".to_string(), signal.to_string());
    if let Some(j) = job_id {
        tags.insert("job_id".to_string(), j.to_string());
    }
    let mut extra = Map::new();
    extra.insert("pid".to_string(), pid.into());
    extra.insert("stderr_tail".to_string(), stderr_tail.join("\n").into());
    sentry::Hub::main().capture_event(Event {
        level: Level::Error,
        message: Some(format!("engine runner {engine} crashed: {signal}")),
        logger: Some("engine".into()),
        // One issue per engine and signal, whatever the pid or job.
        fingerprint: Cow::Owned(vec![
            "runner-crash".into(),
            engine.to_string().into(),
            signal.to_string().into(),
        ]),
        tags,
        extra,
        ..Default::default()
    });
}

/// The `tracing` layer: `error` records become events, `warn` records
/// breadcrumbs.
pub struct SentryLayer;

impl<S: Subscriber> Layer<S> for SentryLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if !enabled() {
            return;
        }
        let meta = event.metadata();
        let level = *meta.level();
        if level != tracing::Level::ERROR && level != tracing::Level::WARN {
            return;
        }
        let r = Record::of(event);
        let data: Map<String, Value> = r.fields.into_iter().collect();
        if level == tracing::Level::WARN {
            sentry::Hub::main().add_breadcrumb(Breadcrumb {
                category: Some(meta.target().to_string()),
                level: Level::Warning,
                message: Some(r.message),
                data,
                ..Default::default()
            });
            return;
        }
        let mut tags = Map::new();
        if let Some(j) = r.job_id {
            tags.insert("job_id".to_string(), j);
        }
        sentry::Hub::main().capture_event(Event {
            level: Level::Error,
            message: Some(r.message),
            logger: Some(meta.target().to_string()),
            tags,
            extra: data,
            ..Default::default()
        });
    }
}

// ---- scrubbing ---------------------------------------------------------

struct Rules {
    bearer: Regex,
    userinfo: Regex,
    query: Regex,
    pair: Regex,
}

fn rules() -> &'static Rules {
    static R: OnceLock<Rules> = OnceLock::new();
    R.get_or_init(|| Rules {
        bearer: Regex::new(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+").expect("valid regex"),
        userinfo: Regex::new(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@")
            .expect("valid regex"),
        query: Regex::new(r#"(?i)\b((?:https?|wss?)://[^\s?#"'<>]*)\?[^\s#"'<>]*"#)
            .expect("valid regex"),
        pair: Regex::new(
            r#"(?i)\b([a-z0-9_-]*(?:token|secret|password|passwd|apikey|api_key|api-key|signature|credential)[a-z0-9_-]*|sig|key|auth|authorization|dsn)("?\s*[=:]\s*"?)(?:(?:bearer|basic)\s+)?[^\s"&,;]+"#,
        )
        .expect("valid regex"),
    })
}

/// `text` with every secret it may hold replaced by `***`.
pub fn scrub(text: &str) -> String {
    let mut out = text.to_string();
    for secret in studio_protocol::exposed_secrets() {
        if secret.len() >= 4 && out.contains(&secret) {
            out = out.replace(&secret, "***");
        }
    }
    let r = rules();
    let out = r.userinfo.replace_all(&out, "${1}***@");
    let out = r.query.replace_all(&out, "${1}?***");
    let out = r.bearer.replace_all(&out, "${1} ***");
    let out = r.pair.replace_all(&out, "${1}${2}***");
    out.into_owned()
}

fn scrub_json(v: &mut Value) {
    match v {
        Value::String(s) => *s = scrub(s),
        Value::Array(a) => a.iter_mut().for_each(scrub_json),
        Value::Object(o) => o.values_mut().for_each(scrub_json),
        _ => {}
    }
}

/// Every string of `e`, wherever it sits, scrubbed. An event that cannot
/// be walked is cut down to its scrubbed message.
fn scrub_event(e: Event<'static>) -> Event<'static> {
    let fallback = Event {
        event_id: e.event_id,
        level: e.level,
        message: e.message.as_deref().map(scrub),
        release: e.release.clone(),
        environment: e.environment.clone(),
        ..Default::default()
    };
    let Ok(mut v) = serde_json::to_value(&e) else {
        return fallback;
    };
    scrub_json(&mut v);
    serde_json::from_value(v).unwrap_or(fallback)
}

fn scrub_breadcrumb(mut b: Breadcrumb) -> Breadcrumb {
    b.message = b.message.as_deref().map(scrub);
    for v in b.data.values_mut() {
        scrub_json(v);
    }
    b
}

// ---- delivery ----------------------------------------------------------

struct HttpFactory;

impl TransportFactory for HttpFactory {
    fn create_transport_with_options(
        &self,
        options: sentry::TransportOptions,
    ) -> Arc<dyn Transport> {
        Arc::new(Http::start(options.dsn))
    }
}

/// Count of reports queued or in flight, and a signal when it drops.
type Pending = Arc<(Mutex<usize>, Condvar)>;

struct Http {
    tx: Mutex<Option<SyncSender<Envelope>>>,
    pending: Pending,
}

impl Http {
    fn start(dsn: Dsn) -> Self {
        let (tx, rx) = sync_channel::<Envelope>(QUEUE);
        let pending: Pending = Arc::new((Mutex::new(0), Condvar::new()));
        let done = pending.clone();
        let url = dsn.envelope_api_url().to_string();
        let auth = dsn
            .to_auth(Some(&format!(
                "studio-worker/{}",
                env!("CARGO_PKG_VERSION")
            )))
            .to_string();
        let spawned = std::thread::Builder::new()
            .name("sentry-delivery".into())
            .spawn(move || {
                DELIVERING.with(|d| d.set(true));
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                let _in_runtime = rt.enter();
                let Ok(client) = reqwest::Client::builder().timeout(SEND_TIMEOUT).build() else {
                    return;
                };
                while let Ok(envelope) = rx.recv() {
                    let mut body = Vec::new();
                    if envelope.to_writer(&mut body).is_ok() {
                        let send = client
                            .post(&url)
                            .header("X-Sentry-Auth", &auth)
                            .header("Content-Type", "application/x-sentry-envelope")
                            .body(body)
                            .send();
                        if let Err(e) = rt.block_on(send) {
                            tracing::debug!(target: "worker", "error report not delivered: {e}");
                        }
                    }
                    let (count, cv) = &*done;
                    let mut n = count.lock().unwrap_or_else(|p| p.into_inner());
                    *n = n.saturating_sub(1);
                    cv.notify_all();
                }
            });
        Self {
            tx: Mutex::new(spawned.ok().map(|_| tx)),
            pending,
        }
    }
}

impl Transport for Http {
    fn send_envelope(&self, envelope: Envelope) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = tx.as_ref() else {
            return;
        };
        let (count, _) = &*self.pending;
        *count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        if tx.try_send(envelope).is_err() {
            // Queue full or delivery gone: drop this report.
            let mut n = count.lock().unwrap_or_else(|p| p.into_inner());
            *n = n.saturating_sub(1);
        }
    }

    fn flush(&self, timeout: Duration) -> bool {
        let (count, cv) = &*self.pending;
        let n = count.lock().unwrap_or_else(|p| p.into_inner());
        cv.wait_timeout_while(n, timeout, |n| *n > 0)
            .map(|(n, _)| *n == 0)
            .unwrap_or(false)
    }

    fn shutdown(&self, timeout: Duration) -> bool {
        let drained = self.flush(timeout);
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        drained
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_text_are_scrubbed() {
        let cases = [
            (
                "GET https://files.example/m.gguf?X-Amz-Signature=abc123&X-Amz-Credential=k failed",
                "GET https://files.example/m.gguf?*** failed",
            ),
            (
                "connect wss://studio.example/ws?token=t0k3n: refused",
                "connect wss://studio.example/ws?*** refused",
            ),
            (
                "proxy http://ann:hunter2@proxy.local:3128/ down",
                "proxy http://***@proxy.local:3128/ down",
            ),
            ("Authorization: Bearer eyJhbGciOi.x.y", "Authorization: ***"),
            ("header bearer abc.def", "header bearer ***"),
            (
                "auth_token=abcd api_key: zz9",
                "auth_token=*** api_key: ***",
            ),
            (
                r#"{"registration_secret": "s3"}"#,
                r#"{"registration_secret": "***"}"#,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(scrub(text), want, "{text}");
        }
        // Words that only look alike stay.
        let plain = "runner synthetic (pid 7) was killed by SIGSEGV; signal=SIGSEGV job_id=j-1";
        assert_eq!(scrub(plain), plain);
    }

    #[test]
    fn every_exposed_secret_is_scrubbed_wherever_it_appears() {
        let s = studio_protocol::Secret::new("wkr-tok-7f3a9c");
        assert_eq!(s.expose(), "wkr-tok-7f3a9c");
        assert_eq!(
            scrub("studio said: unknown worker wkr-tok-7f3a9c!"),
            "studio said: unknown worker ***!"
        );
        let mut e = Event {
            message: Some("boom".into()),
            ..Default::default()
        };
        e.extra.insert(
            "deep".into(),
            serde_json::json!({"list": ["x wkr-tok-7f3a9c y"]}),
        );
        let e = scrub_event(e);
        assert_eq!(e.extra["deep"]["list"][0], "x *** y");
        let b = scrub_breadcrumb(Breadcrumb {
            message: Some("retry with wkr-tok-7f3a9c".into()),
            ..Default::default()
        });
        assert_eq!(b.message.as_deref(), Some("retry with ***"));
    }
}
