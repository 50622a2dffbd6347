//! One engine-runner child process.
//!
//! The child runs in its own process group, dies with the supervisor
//! (`PR_SET_PDEATHSIG` set between fork and exec, channel EOF, and
//! `kill_on_drop`) and is stopped in stages: a shutdown request, SIGTERM to
//! the group, SIGKILL to the group, reap. Its failure is data: EOF, exit
//! status, signal, a broken frame, a missed deadline and the runner's last
//! `fatal` message fold into one [`ChildFailure`] that carries the tail of
//! its stderr.

use std::collections::{BTreeSet, VecDeque};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use studio_protocol::runner::{
    ErrorClass, FromRunner, JobOutput, JobRequest, Phase, ToRunner, CHANNEL_VERSION,
};
use studio_protocol::studio::LogLevel;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::ChildStdin;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

use super::channel::{read_msg, write_msg};
use super::limits::Limits;
use crate::platform::{self, GroupChild, Spawn};

/// Lines of stderr kept for failure reports.
const TAIL_LINES: usize = 20;
/// How long a fresh child has to answer the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Process groups of every live runner, so a last-resort exit can kill
/// them all (see [`kill_all_groups`]).
fn groups() -> &'static Mutex<BTreeSet<u32>> {
    static G: std::sync::OnceLock<Mutex<BTreeSet<u32>>> = std::sync::OnceLock::new();
    G.get_or_init(|| Mutex::new(BTreeSet::new()))
}

/// Kills every live runner's process group at once (used when the
/// supervisor must exit now, e.g. on a second SIGTERM).
pub fn kill_all_groups() {
    if let Ok(g) = groups().lock() {
        for &leader in g.iter() {
            platform::kill_group_of(leader);
        }
    }
}

/// Why a job did not produce a result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ChildFailure {
    /// Classification.
    pub class: ErrorClass,
    /// What happened, with the stderr tail when the child died.
    pub message: String,
    /// True when the child is gone and must be replaced.
    pub child_dead: bool,
}

impl ChildFailure {
    pub(crate) fn new(class: ErrorClass, message: impl Into<String>, child_dead: bool) -> Self {
        Self {
            class,
            message: message.into(),
            child_dead,
        }
    }
}

/// What a running job tells its caller.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    /// The job is on runner `pid` (epoch `epoch`) and must end by `deadline`.
    Started {
        /// Runner process id.
        pid: u32,
        /// Runner epoch.
        epoch: u64,
        /// Hard deadline.
        deadline: Instant,
    },
    /// Model files are being fetched (before any runner has the job).
    Downloading {
        /// Bytes of the current file on disk.
        done: u64,
        /// Its size (0 when unknown).
        total: u64,
    },
    /// The job's model finished loading on this runner.
    Loaded {
        /// Growth of the runner's resident memory over the load.
        host_bytes: u64,
        /// Accelerator memory it took, when the engine can tell.
        device_bytes: Option<u64>,
    },
    /// The engine moved forward.
    Progress {
        /// Loading or running.
        phase: Phase,
        /// Units done.
        done: u64,
        /// Units in all (0 when unknown).
        total: u64,
    },
    /// New generated text (a `stream` job).
    Delta(String),
}

enum Event {
    Msg(FromRunner),
    /// The channel ended (clean EOF or a broken frame).
    Closed(Option<String>),
}

/// A live runner child.
pub struct RunnerChild {
    engine: String,
    epoch: u64,
    pid: u32,
    max_frame: usize,
    memory_limit: Option<u64>,
    child: GroupChild,
    stdin: ChildStdin,
    events: mpsc::Receiver<Event>,
    tail: Arc<Mutex<VecDeque<String>>>,
    /// Resolves when stderr reached EOF (every last line is in `tail`).
    stderr_done: Option<tokio::sync::oneshot::Receiver<()>>,
    fatal: Option<String>,
    /// The job it was last given (for crash reports).
    job: Option<String>,
    ping_seq: u64,
    /// The kernel's OOM-kill count when this child started.
    oom_kills_at_spawn: u64,
}

impl Drop for RunnerChild {
    fn drop(&mut self) {
        // kill_on_drop kills the runner itself; make sure anything it
        // started goes too (only while the group leader is unreaped, so the
        // id cannot have been reused).
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.start_kill();
        }
        if let Ok(mut g) = groups().lock() {
            g.remove(&self.pid);
        }
    }
}

impl RunnerChild {
    /// Process id (and process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Restart count it was started with.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// How it ended, when it has exited (an idle runner can be killed from
    /// outside, by a person or the kernel's OOM killer).
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(platform::describe_status(status)),
            // A killed multi-threaded process is a zombie (its main thread
            // gone) before it can be waited for (its other threads still
            // exiting): dead all the same.
            Ok(None) => self
                .child
                .id()
                .filter(|pid| platform::is_zombie(*pid))
                .map(|_| "has exited".to_string()),
            Err(e) => Some(format!("cannot be waited for ({e})")),
        }
    }

    /// Spawns `program args…`, performs the handshake and returns the child.
    pub async fn spawn(
        program: &Path,
        args: &[String],
        engine: &str,
        epoch: u64,
        max_frame: usize,
        memory_limit: Option<u64>,
        env: &[(String, String)],
    ) -> Result<Self, ChildFailure> {
        let how = Spawn {
            die_with_parent: true,
            data_limit: memory_limit,
        };
        let mut child = platform::spawn_group(program, how, |cmd| {
            cmd.args(args)
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .arg("--max-frame-bytes")
                .arg(max_frame.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        })
        .map_err(|e| {
            ChildFailure::new(
                ErrorClass::EngineUnavailable,
                format!("cannot start engine runner {}: {e}", program.display()),
                true,
            )
        })?;
        let pid = child.id().unwrap_or(0);
        if let Ok(mut g) = groups().lock() {
            g.insert(pid);
        }
        let (Some(stdin), Some(stdout), Some(stderr)) = (
            child.stdin().take(),
            child.stdout().take(),
            child.stderr().take(),
        ) else {
            return Err(ChildFailure::new(
                ErrorClass::EngineUnavailable,
                "runner pipes missing",
                true,
            ));
        };
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
        let stderr_done = Some(spawn_stderr_drain(
            stderr,
            tail.clone(),
            engine.to_string(),
            pid,
        ));
        let (tx, events) = mpsc::channel(256);
        tokio::spawn(async move {
            let mut stdout = stdout;
            loop {
                let ev = match read_msg::<_, FromRunner>(&mut stdout, max_frame).await {
                    Ok(Some(m)) => Event::Msg(m),
                    Ok(None) => Event::Closed(None),
                    Err(e) => Event::Closed(Some(e.to_string())),
                };
                let last = matches!(ev, Event::Closed(_));
                if tx.send(ev).await.is_err() || last {
                    return;
                }
            }
        });
        let mut me = Self {
            engine: engine.to_string(),
            epoch,
            pid,
            max_frame,
            memory_limit,
            child,
            stdin,
            events,
            tail,
            stderr_done,
            fatal: None,
            job: None,
            ping_seq: 0,
            oom_kills_at_spawn: platform::oom_kills(),
        };
        me.handshake().await.map_err(|mut f| {
            f.class = ErrorClass::EngineUnavailable;
            f
        })?;
        Ok(me)
    }

    async fn handshake(&mut self) -> Result<(), ChildFailure> {
        let hello = ToRunner::Hello {
            version: CHANNEL_VERSION,
            epoch: self.epoch,
        };
        if let Err(e) = write_msg(&mut self.stdin, &hello, self.max_frame).await {
            return Err(self.died(format!("handshake write failed: {e}")).await);
        }
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.events.recv()).await {
            Ok(Some(Event::Msg(FromRunner::Hello { version, epoch, .. })))
                if version == CHANNEL_VERSION && epoch == self.epoch =>
            {
                tracing::info!(target: "engine", "runner {} started (pid {}, epoch {})", self.engine, self.pid, self.epoch);
                Ok(())
            }
            Ok(Some(Event::Msg(FromRunner::Fatal { message }))) => {
                self.fatal = Some(message.clone());
                Err(self
                    .died(format!("runner refused the handshake: {message}"))
                    .await)
            }
            Ok(Some(Event::Msg(other))) => Err(self
                .kill_with(
                    ErrorClass::EngineUnavailable,
                    format!("answered the handshake with {other:?}"),
                )
                .await),
            Ok(Some(Event::Closed(err))) => {
                let why = err.unwrap_or_else(|| "channel closed".into());
                Err(self
                    .died(format!("runner exited during the handshake ({why})"))
                    .await)
            }
            Ok(None) => Err(self.died("runner exited during the handshake".into()).await),
            Err(_) => Err(self
                .kill_with(
                    ErrorClass::EngineUnavailable,
                    format!(
                        "did not answer the handshake within {}s",
                        HANDSHAKE_TIMEOUT.as_secs()
                    ),
                )
                .await),
        }
    }

    /// Runs one job on this child under `limits` (plus `load_extra` for
    /// loading a model). `on_event` sees the start and each progress report.
    pub async fn run_job(
        &mut self,
        mut job: JobRequest,
        limits: &Limits,
        load_extra: Duration,
        mut cancel: Option<tokio::sync::oneshot::Receiver<()>>,
        mut on_event: impl FnMut(RunEvent),
    ) -> Result<JobOutput, ChildFailure> {
        job.epoch = self.epoch;
        let job_id = job.job_id.clone();
        self.job = Some(job_id.clone());
        if let Err(e) = write_msg(
            &mut self.stdin,
            &ToRunner::Job(Box::new(job)),
            self.max_frame,
        )
        .await
        {
            return Err(self
                .died(format!("cannot send the job to the runner: {e}"))
                .await);
        }
        let start = Instant::now();
        let hard = start + limits.job + load_extra;
        // Loading until the runner reports its first `Running` progress.
        let mut loading = true;
        let mut stall = limits.stall_deadline(start, load_extra, loading);
        let mut last_pong = start;
        on_event(RunEvent::Started {
            pid: self.pid,
            epoch: self.epoch,
            deadline: hard,
        });
        let mut ping = tokio::time::interval_at(start + limits.ping_interval, limits.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let ev = tokio::select! {
                ev = self.events.recv() => ev,
                asked = async {
                    match cancel.as_mut() {
                        Some(c) => c.await.is_ok(),
                        None => std::future::pending().await,
                    }
                }, if cancel.is_some() => {
                    cancel = None;
                    if asked {
                        tracing::info!(target: "engine", job_id = %job_id, "asking runner {} (pid {}) to stop job {job_id}: its client went away", self.engine, self.pid);
                        if let Err(e) = write_msg(&mut self.stdin, &ToRunner::Cancel { job_id: job_id.clone() }, self.max_frame).await {
                            return Err(self.died(format!("cannot send the cancel to the runner: {e}")).await);
                        }
                    }
                    continue;
                }
                _ = sleep_until(stall) => {
                    let secs = limits.stall.as_secs_f64();
                    return Err(self.kill_with(ErrorClass::Stalled, format!("made no progress for {secs:.0} s (stall_timeout_secs)")).await);
                }
                _ = sleep_until(hard) => {
                    let secs = (limits.job + load_extra).as_secs_f64();
                    return Err(self.kill_with(ErrorClass::Timeout, format!("ran past the {secs:.0} s job timeout (job_timeout_secs)")).await);
                }
                _ = ping.tick() => {
                    if last_pong.elapsed() > limits.ping_timeout {
                        let secs = last_pong.elapsed().as_secs_f64();
                        return Err(self.kill_with(ErrorClass::Stalled, format!("stopped answering pings ({secs:.0} s without a pong)")).await);
                    }
                    self.ping_seq += 1;
                    if let Err(e) = write_msg(&mut self.stdin, &ToRunner::Ping { seq: self.ping_seq }, self.max_frame).await {
                        return Err(self.died(format!("cannot ping the runner: {e}")).await);
                    }
                    continue;
                }
            };
            let msg = match ev {
                Some(Event::Msg(m)) => m,
                None | Some(Event::Closed(None)) => {
                    return Err(self.died("runner closed its channel".into()).await)
                }
                Some(Event::Closed(Some(e))) => {
                    // Garbage or an oversized frame: the channel cannot be
                    // trusted any more.
                    return Err(self
                        .kill_with(ErrorClass::Crashed, format!("broke the channel: {e}"))
                        .await);
                }
            };
            match msg {
                FromRunner::Progress {
                    job_id: j,
                    epoch,
                    done,
                    total,
                    phase,
                } if j == job_id && epoch == self.epoch => {
                    loading &= phase == Phase::Loading;
                    stall = limits.stall_deadline(Instant::now(), load_extra, loading);
                    on_event(RunEvent::Progress { phase, done, total })
                }
                FromRunner::Loaded {
                    job_id: j,
                    epoch,
                    host_bytes,
                    device_bytes,
                    ..
                } if j == job_id && epoch == self.epoch => on_event(RunEvent::Loaded {
                    host_bytes,
                    device_bytes,
                }),
                FromRunner::Pong { epoch, .. } if epoch == self.epoch => last_pong = Instant::now(),
                FromRunner::Delta {
                    job_id: j,
                    epoch,
                    text,
                } if j == job_id && epoch == self.epoch => {
                    // Text is progress too.
                    stall = limits.stall_deadline(Instant::now(), load_extra, false);
                    on_event(RunEvent::Delta(text))
                }
                FromRunner::Log {
                    job_id: j,
                    level,
                    message,
                    ..
                } => {
                    let j = j.unwrap_or_default();
                    match level {
                        LogLevel::Error => {
                            tracing::error!(target: "engine", job_id = %j, "{message}")
                        }
                        LogLevel::Warn => {
                            tracing::warn!(target: "engine", job_id = %j, "{message}")
                        }
                        LogLevel::Info => {
                            tracing::info!(target: "engine", job_id = %j, "{message}")
                        }
                    }
                }
                FromRunner::Result {
                    job_id: j,
                    epoch,
                    output,
                } if j == job_id && epoch == self.epoch => return Ok(output),
                FromRunner::Error {
                    job_id: j,
                    epoch,
                    class,
                    message,
                } if j == job_id && epoch == self.epoch => {
                    return Err(ChildFailure::new(class, message, false))
                }
                FromRunner::Fatal { message } => self.fatal = Some(message),
                other => {
                    tracing::warn!(target: "engine", "dropped a stale runner message: {other:?}")
                }
            }
        }
    }

    /// Stops the child in stages: a shutdown request, SIGTERM to the group
    /// after `grace`, SIGKILL to the group a second later, then reaps it.
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = write_msg(&mut self.stdin, &ToRunner::Shutdown, self.max_frame).await;
        if tokio::time::timeout(grace, self.child.wait()).await.is_ok() {
            return;
        }
        platform::terminate(&mut self.child);
        if tokio::time::timeout(Duration::from_secs(1), self.child.wait())
            .await
            .is_ok()
        {
            return;
        }
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Kills the group for a reason of ours and describes the end.
    async fn kill_with(&mut self, class: ErrorClass, why: String) -> ChildFailure {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        if let Some(done) = self.stderr_done.take() {
            let _ = tokio::time::timeout(Duration::from_millis(500), done).await;
        }
        ChildFailure::new(
            class,
            format!(
                "runner {} (pid {}) {why}; killed{}",
                self.engine,
                self.pid,
                self.tail_suffix()
            ),
            true,
        )
    }

    /// The child is gone or going: reap it and describe how it ended.
    async fn died(&mut self, context: String) -> ChildFailure {
        // Kill the group while the leader is unreaped (its id cannot be
        // reused yet): takes any grandchild along, and cannot change the
        // exit status of a process that is already dying.
        let _ = self.child.start_kill();
        let status = tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .ok()
            .and_then(Result::ok);
        // Let the stderr drain reach EOF so the last lines (an allocation
        // failure, a CUDA error) are in the report.
        if let Some(done) = self.stderr_done.take() {
            let _ = tokio::time::timeout(Duration::from_millis(500), done).await;
        }
        let how = status
            .map(platform::describe_status)
            .unwrap_or_else(|| "ended".into());
        let fatal = self
            .fatal
            .as_ref()
            .map(|f| format!("; runner said: {f}"))
            .unwrap_or_default();
        let tail = self.tail_suffix();
        let kernel_oom = status.is_some_and(platform::killed_outright)
            && platform::oom_kills() > self.oom_kills_at_spawn;
        let (class, what) = if kernel_oom {
            (
                ErrorClass::Oom,
                "was killed by the kernel OOM killer (SIGKILL; /proc/vmstat oom_kill went up)"
                    .to_string(),
            )
        } else if looks_oom(&tail) {
            let limit = self
                .memory_limit
                .map(|b| format!(" (limit {} MB)", b / (1024 * 1024)))
                .unwrap_or_default();
            (
                ErrorClass::Oom,
                format!("ran out of memory{limit} and {how}"),
            )
        } else {
            // A native crash: the runner cannot report it, so we do.
            if let Some(signal) = status
                .and_then(platform::fatal_signal)
                .filter(|s| platform::is_crash_signal(s))
            {
                let lines = self
                    .tail
                    .lock()
                    .map(|t| t.iter().cloned().collect::<Vec<_>>());
                crate::report::runner_crashed(
                    &self.engine,
                    self.pid,
                    &signal,
                    self.job.as_deref(),
                    &lines.unwrap_or_default(),
                );
            }
            (ErrorClass::Crashed, how)
        };
        ChildFailure::new(
            class,
            format!(
                "runner {} (pid {}) {what} ({context}){fatal}{tail}",
                self.engine, self.pid
            ),
            true,
        )
    }

    fn tail_suffix(&self) -> String {
        let tail = self
            .tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        if tail.is_empty() {
            String::new()
        } else {
            format!("; stderr tail: {}", tail.join(" | "))
        }
    }
}

/// Allocation failures as Rust, C++ and ggml print them.
fn looks_oom(tail: &str) -> bool {
    [
        "memory allocation of",
        "out of memory",
        "std::bad_alloc",
        "Cannot allocate memory",
        "failed to allocate",
    ]
    .iter()
    .any(|m| tail.contains(m))
}

fn spawn_stderr_drain(
    stderr: tokio::process::ChildStderr,
    tail: Arc<Mutex<VecDeque<String>>>,
    engine: String,
    pid: u32,
) -> tokio::sync::oneshot::Receiver<()> {
    let (done_tx, done) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::debug!(target: "engine", "[{engine} {pid}] {line}");
            if let Ok(mut t) = tail.lock() {
                if t.len() == TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(line);
            }
        }
        let _ = done_tx.send(());
    });
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_failures_read_as_oom() {
        assert!(looks_oom(
            "; stderr tail: memory allocation of 16777216 bytes failed"
        ));
        assert!(looks_oom(
            "terminate called after throwing an instance of 'std::bad_alloc'"
        ));
        assert!(looks_oom("CUDA error: out of memory"));
        assert!(!looks_oom("segmentation fault"));
    }
}
