//! The supervisor's side of the runner channel, synchronous and minimal:
//! for benchmarks that drive a runner binary directly.

use std::io::Write;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use studio_protocol::runner::frame::encode;
use studio_protocol::runner::{
    FrameReader, FromRunner, JobOutput, ToRunner, CHANNEL_VERSION, DEFAULT_MAX_FRAME_BYTES,
};

/// A runner child spoken to over the framed channel.
pub struct RunnerConn {
    child: Child,
    stdin: ChildStdin,
    out: FrameReader<ChildStdout>,
}

impl RunnerConn {
    /// Starts `bin args…` (stderr discarded) and completes the handshake.
    pub fn start(bin: &Path, args: &[&str]) -> Result<Self, String> {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("runner pipes missing".into());
        };
        let out = FrameReader::new(stdout, DEFAULT_MAX_FRAME_BYTES);
        let mut me = Self { child, stdin, out };
        me.send(&ToRunner::Hello {
            version: CHANNEL_VERSION,
            epoch: 1,
        })?;
        match me.recv()? {
            FromRunner::Hello { .. } => Ok(me),
            other => Err(format!("runner answered the handshake with {other:?}")),
        }
    }

    /// Starts a runner and runs `warmup` on it, so the model is loaded.
    /// Also returns the cold start: spawn → handshake and spawn → the
    /// engine's "model loaded" progress.
    pub fn start_warm(
        bin: &Path,
        args: &[&str],
        warmup: &ToRunner,
    ) -> Result<(Self, [std::time::Duration; 2]), String> {
        let spawn = std::time::Instant::now();
        let mut me = Self::start(bin, args)?;
        let hello = spawn.elapsed();
        let mut loaded = std::time::Duration::ZERO;
        me.send(warmup)?;
        me.until_result(|m| {
            if let FromRunner::Progress {
                phase: studio_protocol::runner::Phase::Loading,
                done: 1,
                ..
            } = m
            {
                loaded = spawn.elapsed();
            }
        })?;
        Ok((me, [hello, loaded]))
    }

    /// Sends one message.
    pub fn send(&mut self, m: &ToRunner) -> Result<(), String> {
        let frame = encode(m, DEFAULT_MAX_FRAME_BYTES).map_err(|e| e.to_string())?;
        self.stdin
            .write_all(&frame)
            .and_then(|_| self.stdin.flush())
            .map_err(|e| format!("write to runner: {e}"))
    }

    /// The next message.
    pub fn recv(&mut self) -> Result<FromRunner, String> {
        match self.out.read::<FromRunner>() {
            Ok(Some(m)) => Ok(m),
            Ok(None) => Err("runner closed the channel".into()),
            Err(e) => Err(format!("runner channel: {e}")),
        }
    }

    /// Receives until the job's result; a job error is an `Err`. `on` sees
    /// every message on the way.
    pub fn until_result(&mut self, mut on: impl FnMut(&FromRunner)) -> Result<JobOutput, String> {
        loop {
            let m = self.recv()?;
            on(&m);
            match m {
                FromRunner::Result { output, .. } => return Ok(output),
                FromRunner::Error { message, .. } => return Err(format!("job failed: {message}")),
                _ => {}
            }
        }
    }

    /// Asks the runner to exit and waits for it.
    pub fn stop(mut self) {
        let _ = self.send(&ToRunner::Shutdown);
        let _ = self.child.wait();
    }
}

/// Runs `studio-worker job ARGS --repeat N --timings FILE` (the binary
/// beside the current one) with `engine_threads = threads` in a scratch
/// config: the whole path a person or a worker takes, supervisor included.
/// Returns each run's time as the supervisor measured it (the first run
/// starts the runner and loads the model; the rest reuse it) and what the
/// last run wrote to stdout.
pub fn worker_job(
    args: &[&str],
    repeat: usize,
    threads: u32,
) -> Result<(Vec<std::time::Duration>, Vec<u8>), String> {
    let bin = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("studio-worker")))
        .filter(|p| p.exists())
        .ok_or("no studio-worker beside this binary (cargo build --release --workspace --bins)")?;
    let dir = std::env::temp_dir().join(format!("worker-job-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let config = dir.join("config.toml");
    let timings = dir.join("timings.json");
    std::fs::write(&config, format!("engine_threads = {threads}\n"))
        .map_err(|e| format!("{}: {e}", config.display()))?;
    let out = Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .arg("job")
        .args(args)
        .arg("--repeat")
        .arg(repeat.to_string())
        .arg("--timings")
        .arg(&timings)
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let read = std::fs::read(&timings);
    let _ = std::fs::remove_dir_all(&dir);
    if !out.status.success() {
        return Err(format!(
            "studio-worker job failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let rows: Vec<serde_json::Value> = read
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| format!("timings: {e}"))?;
    let times = rows
        .iter()
        .map(|r| {
            r["ms"]
                .as_f64()
                .map(|ms| std::time::Duration::from_secs_f64(ms / 1000.0))
                .ok_or_else(|| format!("timings: no ms in {r}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((times, out.stdout))
}
