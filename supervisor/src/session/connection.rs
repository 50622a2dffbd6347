//! One WebSocket session: upgrade, `hello` → `welcome`, then one event
//! loop over frames, timers, job reports and shutdown.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use studio_protocol::studio::http::ws_url;
use studio_protocol::studio::{
    ClaimError, ErrorCode, JobOfferClaim, RejectCode, StudioFrame, WorkerFrame, SUBPROTOCOL,
};
use tokio::time::{sleep_until, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::executor::{ExecRequest, JobReport, Outcome};
use super::Worker;
use crate::capabilities::snapshot;
use crate::deliver::keep_result;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const READ_IDLE: Duration = Duration::from_secs(20);
const HEARTBEAT: Duration = Duration::from_secs(5);
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
pub async fn run(w: &mut Worker) -> SessionEnd {
    let worker_id = w.cfg.worker_id.clone().unwrap_or_default();
    let token = w.cfg.auth_token.clone().unwrap_or_default();
    let url = match ws_url(&w.cfg.api_base_url, &worker_id) {
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

    let caps = snapshot(&w.cfg, &w.host, &w.catalog, w.paused());
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
    w.deferred_offer = None;
    let _ = w.live_gen.send(w.gen);
    crate::state::record(&w.config_path, "connected", None);
    let end = event_loop(w, &mut sink, &mut stream).await;
    let _ = w.live_gen.send(0);
    end
}

async fn event_loop(
    w: &mut Worker,
    sink: &mut Sink,
    stream: &mut futures_util::stream::SplitStream<Stream>,
) -> SessionEnd {
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut logs = tokio::time::interval(LOG_FLUSH);
    logs.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut idle = Instant::now() + READ_IDLE;
    let mut drain_deadline: Option<Instant> = None;
    let mut shutdown = w.shutdown.clone();
    loop {
        if w.draining() && drain_deadline.is_none() {
            drain_deadline = Some(Instant::now() + Duration::from_secs(w.cfg.drain_timeout_secs));
            let _ = send(sink, &heartbeat_frame(w)).await;
        }
        if w.draining() && w.jobs.is_empty() {
            flush_logs(sink).await;
            close(sink, "session ended").await;
            return SessionEnd::Shutdown;
        }
        let far = Instant::now() + Duration::from_secs(86_400);
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
            _ = heartbeat.tick() => {
                w.reload_config();
                w.check_cooldown();
                if let Err(e) = send(sink, &heartbeat_frame(w)).await {
                    return disconnected(true, e);
                }
            }
            _ = logs.tick() => {
                if !flush_logs(sink).await {
                    return disconnected(true, "log batch send failed");
                }
            }
            Some(report) = w.reports.recv() => {
                if let Err(e) = on_report(w, sink, report).await {
                    return disconnected(true, e);
                }
                if let Err(e) = take_deferred(w, sink).await {
                    return disconnected(true, e);
                }
            }
            _ = shutdown.changed() => {}
            _ = sleep_until(drain_deadline.unwrap_or(far)) => {
                // Hand unfinished jobs back so the studio can requeue them now.
                for job_id in w.jobs.held() {
                    tracing::warn!(target: "worker", job_id = %job_id, "drain timeout: giving job {job_id} back unfinished");
                    let error = format!("worker shut down before the job finished (drain_timeout_secs = {})", w.cfg.drain_timeout_secs);
                    let _ = send(sink, &WorkerFrame::Fail { job_id, error, retryable: true }).await;
                }
                flush_logs(sink).await;
                close(sink, "session ended").await;
                return SessionEnd::Shutdown;
            }
        }
    }
}

fn heartbeat_frame(w: &Worker) -> WorkerFrame {
    WorkerFrame::Heartbeat {
        capabilities: snapshot(&w.cfg, &w.host, &w.catalog, w.paused()),
        current_job_id: w.jobs.current().map(str::to_string),
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

async fn on_text(w: &mut Worker, sink: &mut Sink, text: &str) -> Step {
    let frame = match serde_json::from_str::<StudioFrame>(text) {
        Ok(f) => f,
        Err(e) => {
            let preview: String = text.chars().take(120).collect();
            tracing::warn!(target: "ws", "ignoring a frame that does not parse ({e}): {preview}");
            return Step::Continue;
        }
    };
    match frame {
        StudioFrame::Offer { claim } => match on_offer(w, sink, &claim).await {
            Ok(()) => Step::Continue,
            Err(e) => Step::End(disconnected(true, e)),
        },
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

/// An offer: first take in every job report already queued (the studio
/// offers the next job as soon as it has our result, which can overtake
/// our own report of it), then decide.
async fn on_offer(w: &mut Worker, sink: &mut Sink, raw: &serde_json::Value) -> Result<(), String> {
    while let Ok(report) = w.reports.try_recv() {
        on_report(w, sink, report).await?;
        take_deferred(w, sink).await?;
    }
    handle_offer(w, sink, raw).await
}

/// Answers an offer held back during an upload, once the gate is free.
async fn take_deferred(w: &mut Worker, sink: &mut Sink) -> Result<(), String> {
    if w.jobs.is_empty() {
        if let Some(raw) = w.deferred_offer.take() {
            handle_offer(w, sink, &raw).await?;
        }
    }
    Ok(())
}

/// Declines an offer, with the log line that says why.
/// `code: None` tells the studio nothing is wrong with the worker: it
/// offers the job to another one.
async fn reject(
    sink: &mut Sink,
    job_id: String,
    reason: &str,
    code: Option<RejectCode>,
) -> Result<(), String> {
    tracing::info!(target: "ws", job_id = %job_id, "rejecting {job_id}: {reason}");
    send(
        sink,
        &WorkerFrame::Reject {
            job_id,
            reason: reason.into(),
            code,
        },
    )
    .await
}

async fn handle_offer(
    w: &mut Worker,
    sink: &mut Sink,
    raw: &serde_json::Value,
) -> Result<(), String> {
    let parsed = JobOfferClaim::from_value(raw);
    let job_id = match &parsed {
        Ok(c) => c.job_id.clone(),
        Err(ClaimError::Invalid { job_id, .. }) => job_id.clone(),
        Err(e @ ClaimError::NoJobId(_)) => {
            tracing::warn!(target: "ws", "ignoring an offer nobody can answer: {e}");
            return Ok(());
        }
    };
    if let Ok(c) = &parsed {
        tracing::info!(target: "ws", job_id = %job_id, "offer {job_id}: game {}, asset {}, model {}, {} GB", c.game_id, c.asset_name, c.model, c.vram_gb_estimate);
    }
    if w.paused() {
        let reason = if w.draining() {
            "worker is shutting down".to_string()
        } else if let Some(why) = w.cooldown_reason() {
            why
        } else {
            "worker paused by operator".to_string()
        };
        return reject(sink, job_id, &reason, Some(RejectCode::Paused)).await;
    }
    if let Ok(c) = &parsed {
        let key = (c.model_source.engine.as_str().to_string(), c.model.clone());
        if let Some(until) = w.quarantined(&key) {
            let reason = format!(
                "model {} ({}) is quarantined until {}: it took down its runner {} times in a row",
                c.model,
                key.0,
                super::wall_clock(until),
                w.cfg.max_consecutive_failures
            );
            return reject(sink, job_id, &reason, None).await;
        }
    }
    if w.jobs.only_uploading() && w.deferred_offer.is_none() {
        // The studio offers the next job as soon as it has our upload,
        // which may be before its HTTP answer reaches us: hold the offer
        // until the upload ends instead of rejecting it.
        w.deferred_offer = Some(raw.clone());
        return Ok(());
    }
    if !w.jobs.is_empty() {
        return reject(
            sink,
            job_id,
            "worker already has an in-flight job",
            Some(RejectCode::Busy),
        )
        .await;
    }
    send(
        sink,
        &WorkerFrame::Accept {
            job_id: job_id.clone(),
        },
    )
    .await?;
    let claim = match parsed {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(target: "job", job_id = %job_id, "{e}");
            return send(
                sink,
                &WorkerFrame::Fail {
                    job_id,
                    error: e.to_string(),
                    retryable: false,
                },
            )
            .await;
        }
    };
    w.jobs.accept(
        &job_id,
        claim.model_source.engine.as_str(),
        &claim.model,
        w.gen,
    );
    if w.exec_tx
        .send(ExecRequest { claim, gen: w.gen })
        .await
        .is_err()
    {
        w.jobs.finish(&job_id);
        return send(
            sink,
            &WorkerFrame::Fail {
                job_id,
                error: "the job executor stopped".into(),
                retryable: true,
            },
        )
        .await;
    }
    Ok(())
}

async fn on_report(w: &mut Worker, sink: &mut Sink, r: JobReport) -> Result<(), String> {
    if let Outcome::Phase {
        phase,
        runner,
        deadline,
    } = r.outcome
    {
        w.jobs.update(&r.job_id, phase, runner, deadline);
        return Ok(());
    }
    let row = w.jobs.finish(&r.job_id);
    if let Some(row) = &row {
        let on = row
            .runner
            .map(|x| format!(" on runner pid {} epoch {}", x.pid, x.epoch))
            .unwrap_or_default();
        tracing::debug!(target: "job", job_id = %r.job_id, "ended in phase {}{on} after {} ms", row.phase.as_str(), row.accepted_at.elapsed().as_millis());
    }
    let worker_caused = matches!(
        r.outcome,
        Outcome::Failed {
            worker_caused: true,
            ..
        }
    );
    // A job the table no longer holds (handed back at a drain timeout)
    // counts for no breaker.
    let tripped = row.is_some_and(|row| w.note_job_end(&(row.engine, row.model), worker_caused));
    if tripped {
        // Tell the studio now, not at the next tick.
        send(sink, &heartbeat_frame(w)).await?;
    }
    if r.gen != w.gen {
        // The session that owned this claim is gone; the studio released
        // it. Keep what we have instead of confusing the new session.
        let note = match &r.outcome {
            Outcome::Json(v) => {
                let bytes = serde_json::to_vec_pretty(v).unwrap_or_default();
                match keep_result(
                    &w.cfg.results_dir(),
                    &r.job_id,
                    "json",
                    &bytes,
                    w.cfg.results_max_mb * 1024 * 1024,
                ) {
                    Ok(p) => format!("result kept at {}", p.display()),
                    Err(e) => format!("result lost: {e}"),
                }
            }
            Outcome::Uploaded { .. } | Outcome::Phase { .. } => "result was uploaded".into(),
            Outcome::Failed { error, .. } => format!("failure not reported: {error}"),
        };
        tracing::warn!(target: "job", job_id = %r.job_id, "job {} finished after its session ended; {note}", r.job_id);
        return Ok(());
    }
    match r.outcome {
        Outcome::Json(result) => {
            tracing::info!(target: "job", job_id = %r.job_id, "completed {}", r.job_id);
            send(
                sink,
                &WorkerFrame::CompleteJson {
                    job_id: r.job_id,
                    result,
                    prompt: Some(r.prompt),
                },
            )
            .await
        }
        Outcome::Uploaded { ext, bytes } => {
            tracing::info!(target: "job", job_id = %r.job_id, "completed {} ({bytes} bytes of {ext})", r.job_id);
            Ok(())
        }
        Outcome::Failed {
            error, retryable, ..
        } => {
            send(
                sink,
                &WorkerFrame::Fail {
                    job_id: r.job_id,
                    error,
                    retryable,
                },
            )
            .await
        }
        Outcome::Phase { .. } => Ok(()),
    }
}
