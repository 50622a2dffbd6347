//! One WebSocket session: upgrade, `hello` → `welcome`, then one event
//! loop over the studio's frames, the scheduler's outbox and the log
//! flush. Offers go to the scheduler; what it answers comes back through
//! the outbox, in order.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use studio_protocol::studio::http::ws_url;
use studio_protocol::studio::{ErrorCode, StudioFrame, WorkerFrame, SUBPROTOCOL};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::Session;
use crate::scheduler::{Event, Outbound};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const READ_IDLE: Duration = Duration::from_secs(20);
const LOG_FLUSH: Duration = Duration::from_secs(1);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// The token was refused (401, close 4001, `auth_failed`): stop.
    AuthFailed(String),
    /// The studio ended us for good (`worker_deleted`, `duplicate_worker`).
    Fatal(String),
    /// Anything else: reconnect with backoff.
    Disconnected {
        /// Whether `welcome` was reached (resets the backoff).
        welcomed: bool,
        /// Why.
        reason: String,
    },
    /// Drained and closed for shutdown.
    Shutdown,
}

type Stream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
type Sink = futures_util::stream::SplitSink<Stream, Message>;

/// What one incoming frame asks of the loop.
enum Step {
    Continue,
    End(SessionEnd),
}

async fn send(sink: &mut Sink, frame: &WorkerFrame) -> Result<(), String> {
    let text = serde_json::to_string(frame).map_err(|e| e.to_string())?;
    sink.send(Message::text(text))
        .await
        .map_err(|e| format!("send failed: {e}"))
}

async fn close(sink: &mut Sink, reason: &'static str) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
}

fn disconnected(welcomed: bool, reason: impl Into<String>) -> SessionEnd {
    SessionEnd::Disconnected {
        welcomed,
        reason: reason.into(),
    }
}

/// Runs one session to its end.
pub async fn run(w: &mut Session) -> SessionEnd {
    let worker_id = w.worker_id.clone();
    let token = w.auth_token.clone();
    let url = match ws_url(&w.api_base_url, &worker_id) {
        Ok(u) => u,
        Err(e) => return SessionEnd::Fatal(e),
    };
    let mut request = match url.as_str().into_client_request() {
        Ok(r) => r,
        Err(e) => return SessionEnd::Fatal(format!("bad studio URL {url}: {e}")),
    };
    let (Ok(bearer), Ok(proto)) = (
        HeaderValue::from_str(&format!("Bearer {}", token.expose())),
        HeaderValue::from_str(SUBPROTOCOL),
    ) else {
        return SessionEnd::AuthFailed("the stored auth token is not a valid header value".into());
    };
    request.headers_mut().insert("Authorization", bearer);
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", proto);

    let ws = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_tungstenite::connect_async_with_config(request, None, true),
    )
    .await
    {
        Err(_) => return disconnected(false, format!("connect to {url} timed out after 15 s")),
        Ok(Err(WsError::Http(resp))) if resp.status().as_u16() == 401 => {
            return SessionEnd::AuthFailed(
                "the studio refused the token (HTTP 401 on upgrade)".into(),
            )
        }
        Ok(Err(WsError::Http(resp))) => {
            let body: String = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).chars().take(300).collect())
                .unwrap_or_default();
            return disconnected(
                false,
                format!("upgrade refused: HTTP {} {body}", resp.status()),
            );
        }
        Ok(Err(e)) => return disconnected(false, format!("connect to {url} failed: {e}")),
        Ok(Ok((ws, _))) => ws,
    };
    let (mut sink, mut stream) = ws.split();

    let Some(caps) = w.handle.capabilities(w.slot).await else {
        return SessionEnd::Shutdown;
    };
    tracing::info!(
        target: "ws",
        "advertising engine={}, vram={}/{} GB threshold, auto_enabled={}, kinds=[{}], {} model(s)",
        caps.engine, caps.vram_total_gb, caps.vram_threshold_gb, caps.auto_enabled, caps.task_kinds.join(", "), caps.supported_models.len()
    );
    if caps.vram_total_gb > 0.0 && caps.vram_threshold_gb > caps.vram_total_gb {
        tracing::warn!(target: "ws", "vram threshold {} GB exceeds the detected {} GB", caps.vram_threshold_gb, caps.vram_total_gb);
    }
    if let Err(e) = send(
        &mut sink,
        &WorkerFrame::Hello {
            auth_token: token,
            capabilities: caps,
        },
    )
    .await
    {
        return disconnected(false, e);
    }

    // Nothing but hello until welcome; offers before it get no reply.
    let deadline = Instant::now() + READ_IDLE;
    loop {
        let next = tokio::select! {
            m = stream.next() => m,
            _ = sleep_until(deadline) => return disconnected(false, "no welcome within 20 s"),
        };
        let text = match next {
            None => return disconnected(false, "studio closed the connection before welcome"),
            Some(Err(e)) => return disconnected(false, format!("read failed before welcome: {e}")),
            Some(Ok(Message::Close(frame))) => return on_close(frame, false),
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(_)) => continue,
        };
        match serde_json::from_str::<StudioFrame>(&text) {
            Ok(StudioFrame::Welcome { worker_id, .. }) => {
                tracing::info!(target: "ws", "welcomed as {worker_id}");
                break;
            }
            Ok(StudioFrame::Error { code, message }) => {
                close(
                    &mut sink,
                    if code == ErrorCode::AuthFailed {
                        "auth failed"
                    } else {
                        "protocol violation"
                    },
                )
                .await;
                return on_error(code, message, false);
            }
            Ok(other) => {
                tracing::warn!(target: "ws", "discarding {} before welcome", frame_name(&other))
            }
            Err(e) => {
                tracing::warn!(target: "ws", "ignoring unparseable frame before welcome: {e}")
            }
        }
    }

    w.gen += 1;
    let (outbox_tx, mut outbox) = mpsc::unbounded_channel();
    w.handle.send(Event::SessionUp {
        slot: w.slot,
        gen: w.gen,
        outbox: outbox_tx,
    });
    w.record("connected", None);
    let end = event_loop(w, &mut sink, &mut stream, &mut outbox).await;
    w.handle.send(Event::SessionDown {
        slot: w.slot,
        gen: w.gen,
    });
    end
}

async fn event_loop(
    w: &mut Session,
    sink: &mut Sink,
    stream: &mut futures_util::stream::SplitStream<Stream>,
    outbox: &mut mpsc::UnboundedReceiver<Outbound>,
) -> SessionEnd {
    let mut logs = tokio::time::interval(LOG_FLUSH);
    logs.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut idle = Instant::now() + READ_IDLE;
    loop {
        tokio::select! {
            next = stream.next() => {
                let step = match next {
                    None => Step::End(disconnected(true, "studio closed the connection")),
                    Some(Err(e)) => Step::End(disconnected(true, format!("read failed: {e}"))),
                    Some(Ok(Message::Close(frame))) => Step::End(on_close(frame, true)),
                    Some(Ok(Message::Text(t))) => {
                        idle = Instant::now() + READ_IDLE;
                        on_text(w, sink, &t).await
                    }
                    Some(Ok(Message::Binary(_))) => {
                        tracing::warn!(target: "ws", "ignoring a binary frame from the studio");
                        Step::Continue
                    }
                    Some(Ok(_)) => Step::Continue,
                };
                if let Step::End(end) = step {
                    return end;
                }
            }
            _ = sleep_until(idle) => {
                return disconnected(true, "no frame from the studio for 20 s");
            }
            _ = logs.tick() => {
                if !flush_logs(sink).await {
                    return after_send_failure(stream, "log batch send failed".into()).await;
                }
            }
            out = outbox.recv() => match out {
                Some(Outbound::Frame(frame)) => {
                    if let Err(e) = send(sink, &frame).await {
                        return after_send_failure(stream, e).await;
                    }
                }
                Some(Outbound::Close) | None => {
                    flush_logs(sink).await;
                    close(sink, "session ended").await;
                    return SessionEnd::Shutdown;
                }
            },
        }
    }
}

/// A send failed: the studio may have closed the session just before (a
/// close code such as 4001 must not pass for a plain disconnect), so read
/// what is left for up to a second and end as its close frame says.
async fn after_send_failure(
    stream: &mut futures_util::stream::SplitStream<Stream>,
    reason: String,
) -> SessionEnd {
    let read_close = async {
        while let Some(next) = stream.next().await {
            match next {
                Ok(Message::Close(frame)) => return Some(on_close(frame, true)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    };
    match tokio::time::timeout(Duration::from_secs(1), read_close).await {
        Ok(Some(end)) => end,
        _ => disconnected(true, reason),
    }
}

/// Sends queued log lines; false when the socket failed (the batch is put
/// back for the next session).
async fn flush_logs(sink: &mut Sink) -> bool {
    let entries = crate::logship::drain();
    if entries.is_empty() {
        return true;
    }
    let frame = WorkerFrame::LogBatch { entries };
    if send(sink, &frame).await.is_err() {
        if let WorkerFrame::LogBatch { entries } = frame {
            crate::logship::requeue(entries);
        }
        return false;
    }
    true
}

fn frame_name(f: &StudioFrame) -> &'static str {
    match f {
        StudioFrame::Welcome { .. } => "welcome",
        StudioFrame::Offer { .. } => "offer",
        StudioFrame::HeartbeatAck => "heartbeatAck",
        StudioFrame::CompleteAck { .. } => "completeAck",
        StudioFrame::FailAck { .. } => "failAck",
        StudioFrame::Error { .. } => "error",
    }
}

fn on_close(frame: Option<CloseFrame>, welcomed: bool) -> SessionEnd {
    match frame {
        Some(f) if u16::from(f.code) == 4001 => SessionEnd::AuthFailed(format!(
            "studio closed the session with 4001 ({})",
            f.reason
        )),
        Some(f) => disconnected(
            welcomed,
            format!(
                "studio closed the session ({} {})",
                u16::from(f.code),
                f.reason
            ),
        ),
        None => disconnected(welcomed, "studio closed the session"),
    }
}

fn on_error(code: ErrorCode, message: String, welcomed: bool) -> SessionEnd {
    match code {
        ErrorCode::AuthFailed => SessionEnd::AuthFailed(format!("auth_failed: {message}")),
        ErrorCode::WorkerDeleted => SessionEnd::Fatal(format!("worker_deleted: {message}")),
        ErrorCode::DuplicateWorker => SessionEnd::Fatal(format!(
            "duplicate_worker: another process holds this identity ({message})"
        )),
        other => disconnected(welcomed, format!("studio error {other:?}: {message}")),
    }
}

async fn on_text(w: &mut Session, sink: &mut Sink, text: &str) -> Step {
    let frame = match serde_json::from_str::<StudioFrame>(text) {
        Ok(f) => f,
        Err(e) => {
            let preview: String = text.chars().take(120).collect();
            tracing::warn!(target: "ws", "ignoring a frame that does not parse ({e}): {preview}");
            return Step::Continue;
        }
    };
    match frame {
        StudioFrame::Offer { claim } => {
            w.handle.send(Event::Offer {
                slot: w.slot,
                gen: w.gen,
                raw: claim,
            });
            Step::Continue
        }
        StudioFrame::HeartbeatAck => Step::Continue,
        StudioFrame::CompleteAck { job_id } => {
            tracing::info!(target: "ws", job_id = %job_id, "studio confirmed completion of job {job_id}");
            Step::Continue
        }
        StudioFrame::FailAck { job_id } => {
            tracing::info!(target: "ws", job_id = %job_id, "studio confirmed failure of job {job_id}");
            Step::Continue
        }
        StudioFrame::Welcome { .. } => {
            tracing::info!(target: "ws", "ignoring a second welcome");
            Step::Continue
        }
        StudioFrame::Error { code, message } => {
            close(
                sink,
                if code == ErrorCode::AuthFailed {
                    "auth failed"
                } else {
                    "session ended"
                },
            )
            .await;
            Step::End(on_error(code, message, true))
        }
    }
}
