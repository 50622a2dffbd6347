//! One engine-runner child process.
//!
//! The child runs in its own process group and dies with the supervisor
//! (`PR_SET_PDEATHSIG` in the runner, channel EOF, and `kill_on_drop`).
//! Its failure is data: EOF, exit status, signal and the runner's last
//! `fatal` message fold into one [`ChildFailure`] that carries the tail of
//! its stderr.

use std::collections::VecDeque;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use studio_protocol::runner::{
    ErrorClass, FromRunner, JobOutput, JobRequest, ToRunner, CHANNEL_VERSION,
};
use studio_protocol::studio::LogLevel;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use super::channel::{read_msg, write_msg};

/// Lines of stderr kept for failure reports.
const TAIL_LINES: usize = 20;
/// How long a fresh child has to answer the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
    fn new(class: ErrorClass, message: impl Into<String>, child_dead: bool) -> Self {
        Self {
            class,
            message: message.into(),
            child_dead,
        }
    }
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
    child: Child,
    stdin: ChildStdin,
    events: mpsc::Receiver<Event>,
    tail: Arc<Mutex<VecDeque<String>>>,
    fatal: Option<String>,
}

impl RunnerChild {
    /// Spawns `program args…`, performs the handshake and returns the child.
    pub async fn spawn(
        program: &Path,
        args: &[String],
        engine: &str,
        epoch: u64,
        max_frame: usize,
    ) -> Result<Self, ChildFailure> {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .arg("--max-frame-bytes")
            .arg(max_frame.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        #[cfg(unix)]
        cmd.process_group(0);
        let mut child = cmd.spawn().map_err(|e| {
            ChildFailure::new(
                ErrorClass::EngineUnavailable,
                format!("cannot start engine runner {}: {e}", program.display()),
                true,
            )
        })?;
        let pid = child.id().unwrap_or(0);
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(ChildFailure::new(
                ErrorClass::EngineUnavailable,
                "runner pipes missing",
                true,
            ));
        };
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
        spawn_stderr_drain(stderr, tail.clone(), engine.to_string(), pid);
        let (tx, events) = mpsc::channel(256);
        tokio::spawn(async move {
            let mut stdout = stdout;
            loop {
                match read_msg::<_, FromRunner>(&mut stdout, max_frame).await {
                    Ok(Some(m)) => {
                        if tx.send(Event::Msg(m)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        let _ = tx.send(Event::Closed(None)).await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Event::Closed(Some(e.to_string()))).await;
                        return;
                    }
                }
            }
        });
        let mut me = Self {
            engine: engine.to_string(),
            epoch,
            pid,
            max_frame,
            child,
            stdin,
            events,
            tail,
            fatal: None,
        };
        me.handshake().await?;
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
        let answer = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.events.recv()).await;
        match answer {
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
            Ok(Some(Event::Msg(other))) => {
                self.kill().await;
                Err(ChildFailure::new(
                    ErrorClass::EngineUnavailable,
                    format!("runner answered the handshake with {other:?}"),
                    true,
                ))
            }
            Ok(Some(Event::Closed(err))) => {
                let why = err.unwrap_or_else(|| "channel closed".into());
                Err(self
                    .died(format!("runner exited during the handshake ({why})"))
                    .await)
            }
            Ok(None) => Err(self.died("runner exited during the handshake".into()).await),
            Err(_) => {
                self.kill().await;
                Err(ChildFailure::new(
                    ErrorClass::EngineUnavailable,
                    format!(
                        "runner did not answer the handshake within {}s{}",
                        HANDSHAKE_TIMEOUT.as_secs(),
                        self.tail_suffix()
                    ),
                    true,
                ))
            }
        }
    }

    /// Runs one job on this child. `on_progress` sees each progress report.
    pub async fn run_job(
        &mut self,
        mut job: JobRequest,
        mut on_progress: impl FnMut(u64, u64),
    ) -> Result<JobOutput, ChildFailure> {
        job.epoch = self.epoch;
        let job_id = job.job_id.clone();
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
        loop {
            let Some(ev) = self.events.recv().await else {
                return Err(self.died("runner channel closed".into()).await);
            };
            let msg = match ev {
                Event::Msg(m) => m,
                Event::Closed(None) => {
                    return Err(self.died("runner closed its channel".into()).await)
                }
                Event::Closed(Some(e)) => {
                    // Garbage or an oversized frame: the channel cannot be
                    // trusted any more.
                    self.kill().await;
                    return Err(ChildFailure::new(
                        ErrorClass::Crashed,
                        format!(
                            "runner {} (pid {}) broke the channel: {e}{}",
                            self.engine,
                            self.pid,
                            self.tail_suffix()
                        ),
                        true,
                    ));
                }
            };
            match msg {
                FromRunner::Progress {
                    job_id: j,
                    epoch,
                    done,
                    total,
                    ..
                } if j == job_id && epoch == self.epoch => on_progress(done, total),
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
                FromRunner::Pong { .. } | FromRunner::Hello { .. } => {}
                other => tracing::warn!(target: "engine", "dropped stale runner message {other:?}"),
            }
        }
    }

    /// Asks the child to exit, then kills its process group.
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = write_msg(&mut self.stdin, &ToRunner::Shutdown, self.max_frame).await;
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            self.kill().await;
        }
    }

    async fn kill(&mut self) {
        #[cfg(unix)]
        if self.pid > 0 {
            // SAFETY: signalling our own child's process group.
            unsafe {
                libc::kill(-(self.pid as i32), libc::SIGKILL);
            }
        }
        let _ = self.child.kill().await;
    }

    /// The child is gone or going: collect its exit status and describe it.
    async fn died(&mut self, context: String) -> ChildFailure {
        let status = match tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await {
            Ok(Ok(s)) => Some(s),
            _ => {
                self.kill().await;
                self.child.wait().await.ok()
            }
        };
        // Give the stderr drain a moment to catch the last lines.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let how = status
            .map(describe_status)
            .unwrap_or_else(|| "unknown exit".into());
        let fatal = self
            .fatal
            .as_ref()
            .map(|f| format!("; runner said: {f}"))
            .unwrap_or_default();
        ChildFailure::new(
            ErrorClass::Crashed,
            format!(
                "runner {} (pid {}) {how} ({context}){fatal}{}",
                self.engine,
                self.pid,
                self.tail_suffix()
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

/// "was killed by SIGSEGV" / "exited with code 3".
pub fn describe_status(s: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = s.signal() {
            return format!("was killed by {}", signal_name(sig));
        }
    }
    match s.code() {
        Some(c) => format!("exited with code {c}"),
        None => "exited".into(),
    }
}

fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGABRT => "SIGABRT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGINT => "SIGINT",
        libc::SIGPIPE => "SIGPIPE",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}

fn spawn_stderr_drain(
    stderr: tokio::process::ChildStderr,
    tail: Arc<Mutex<VecDeque<String>>>,
    engine: String,
    pid: u32,
) {
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
    });
}
