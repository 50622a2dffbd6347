//! Starting the real binaries.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use crate::bounds;

/// Path of a workspace binary built beside the test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> or target/<profile>/<bench> → target/<profile>/<name>
    let mut dir = exe.parent().expect("exe dir");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("target dir");
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`; scripts/test does this)",
        path.display()
    );
    path
}

/// A private config directory for one worker.
pub struct WorkerHome {
    /// Holds the files.
    pub dir: tempfile::TempDir,
}

impl WorkerHome {
    /// A home whose config points at `studio_url` with the given identity
    /// (`None` = not registered) and `extra` TOML lines.
    pub fn new(studio_url: &str, identity: Option<(&str, &str)>, extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut toml = format!(
            "api_base_url = \"{studio_url}\"\nresults_dir = \"{}\"\nmodels_root = \"{}\"\n",
            dir.path().join("results").display(),
            dir.path().join("models").display()
        );
        if let Some((id, token)) = identity {
            toml.push_str(&format!("worker_id = \"{id}\"\nauth_token = \"{token}\"\n"));
        }
        // Tests run side by side: each worker's endpoint on a free port.
        if !extra.contains("metrics_listen") {
            toml.push_str("metrics_listen = \"127.0.0.1:0\"\n");
        }
        toml.push_str(extra);
        std::fs::write(dir.path().join("config.toml"), toml).expect("write config");
        Self { dir }
    }

    /// The config file.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// The config file's permission bits (`0o600` once the worker or the
    /// CLI has written it).
    pub fn config_mode(&self) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(self.config())
            .expect("the config file")
            .permissions()
            .mode()
            & 0o777
    }

    /// The running worker's last written status (`status.json`).
    pub fn status(&self) -> Option<serde_json::Value> {
        let text = std::fs::read(self.dir.path().join("status.json")).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Waits until the written status satisfies `check` (it is rewritten
    /// every second while anything changes); returns it.
    pub async fn wait_status(
        &self,
        what: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        bounds::until(what, bounds::event(), || self.status().filter(|s| check(s))).await
    }

    /// Waits until the live status lists a runner of `engine`; returns it.
    pub async fn wait_runner(&self, engine: &str) -> serde_json::Value {
        let runner = |s: &serde_json::Value| {
            s["runners"]
                .as_array()
                .and_then(|r| r.iter().find(|r| r["engine"] == engine).cloned())
        };
        bounds::until(
            &format!("a {engine} runner in the status"),
            bounds::event(),
            || self.status().as_ref().and_then(runner),
        )
        .await
    }

    /// Runs a one-shot `studio-worker` command to completion.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        self.cli_with(args, &[])
    }

    /// [`WorkerHome::cli`] with extra environment variables.
    pub fn cli_with(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        std::process::Command::new(bin("studio-worker"))
            .arg("--config")
            .arg(self.config())
            .args(args)
            .env("STUDIO_WORKER_LOCK_DIR", self.dir.path())
            .envs(env.iter().copied())
            .output()
            .expect("run studio-worker")
    }

    /// Starts `studio-worker run` with extra environment variables.
    pub fn spawn_run(&self, env: &[(&str, &str)]) -> WorkerProc {
        self.spawn_run_of(&bin("studio-worker"), env)
    }

    /// Starts `program run` (another build of `studio-worker`, for
    /// before/after benches; it finds its runners beside itself).
    pub fn spawn_run_of(&self, program: &std::path::Path, env: &[(&str, &str)]) -> WorkerProc {
        self.spawn_command(program, "run", env)
    }

    /// Starts `studio-worker serve` (the local API alone).
    pub fn spawn_serve(&self, env: &[(&str, &str)]) -> WorkerProc {
        self.spawn_command(&bin("studio-worker"), "serve", env)
    }

    fn spawn_command(
        &self,
        program: &std::path::Path,
        command: &str,
        env: &[(&str, &str)],
    ) -> WorkerProc {
        let mut cmd = Command::new(program);
        cmd.arg("--config").arg(self.config()).arg(command);
        // Tests run side by side on the same fake GPUs: each worker claims
        // them in its own directory unless the test shares one.
        cmd.env("STUDIO_WORKER_LOCK_DIR", self.dir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn studio-worker");
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        let pid = child.id().unwrap_or(0);
        WorkerProc {
            child,
            pid,
            log,
            reader: Some(reader),
        }
    }
}

/// A running `studio-worker run`.
pub struct WorkerProc {
    /// The process.
    pub child: Child,
    pid: u32,
    log: Arc<Mutex<String>>,
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl WorkerProc {
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// What it printed on stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits for exit (and for its last stderr line); panics with the log
    /// if it has not exited after [`bounds::event`].
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let bound = bounds::event();
        let status = match tokio::time::timeout(bound, self.child.wait()).await {
            Ok(Ok(s)) => s,
            _ => panic!("worker did not exit within {bound:?}; log:\n{}", self.log()),
        };
        if let Some(reader) = self.reader.take() {
            let _ = tokio::time::timeout(bound, reader).await;
        }
        status
    }

    /// Waits until its stderr contains `needle`; panics with the log after
    /// [`bounds::event`].
    pub async fn wait_log(&self, needle: &str) {
        let bound = bounds::event();
        let end = tokio::time::Instant::now() + bound;
        while !self.log().contains(needle) {
            if tokio::time::Instant::now() > end {
                panic!(
                    "no {needle:?} in the worker log within {bound:?}:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.pid() as i32, sig);
        }
    }
}

/// Pids of live processes whose parent is `ppid`.
pub fn children_of(ppid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) =
            std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat"))
        else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(ppid) {
            out.push(pid);
        }
    }
    out
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits (up to [`bounds::event`]) for every pid in `pids` to be gone;
/// returns those still alive then.
pub async fn wait_gone(pids: &[u32]) -> Vec<u32> {
    let deadline = tokio::time::Instant::now() + bounds::event();
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() || tokio::time::Instant::now() > deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The first child process of `pid` to appear (waits up to
/// [`bounds::event`]).
pub async fn first_child(pid: u32) -> u32 {
    bounds::until(
        &format!("a child process of {pid}"),
        bounds::event(),
        || children_of(pid).into_iter().next(),
    )
    .await
}

/// A job that runs until the test lets it finish: its model id is
/// `fault:gate:DIR` (the synthetic runner's fault injection, so the worker
/// needs `STUDIO_WORKER_FAULT_INJECTION=1`). While closed the job reports
/// progress and never ends; [`Gate::started`] tells when the engine is
/// running it, and which runner process that is.
pub struct Gate {
    dir: tempfile::TempDir,
}

impl Gate {
    /// A closed gate.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The model id that makes a job wait at this gate.
    pub fn model(&self) -> String {
        format!("fault:gate:{}", self.dir.path().display())
    }

    /// The model id that makes a job start a plain `sleep` child (a
    /// grandchild of the supervisor with no death signal of its own) and
    /// then wait at this gate.
    pub fn orphan_model(&self) -> String {
        format!("fault:orphan:{}", self.dir.path().display())
    }

    /// The pid of the `sleep` an [`Gate::orphan_model`] job started.
    pub async fn orphan(&self) -> u32 {
        let file = self.dir.path().join("orphan");
        bounds::until("the runner to start its child", bounds::event(), || {
            std::fs::read_to_string(&file).ok()?.trim().parse().ok()
        })
        .await
    }

    /// Waits until a runner is running the job; returns that runner's pid.
    pub async fn started(&self) -> u32 {
        let file = self.dir.path().join("started");
        bounds::until(
            "the gated job to start in a runner",
            bounds::event(),
            || std::fs::read_to_string(&file).ok()?.trim().parse().ok(),
        )
        .await
    }

    /// Lets the job finish.
    pub fn open(&self) {
        std::fs::write(self.dir.path().join("open"), b"").expect("open the gate");
    }

    /// Closes the gate again and forgets the last start, for another job.
    pub fn reset(&self) {
        for f in ["open", "started"] {
            let _ = std::fs::remove_file(self.dir.path().join(f));
        }
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

/// Resident and peak memory of `pid` in KiB (VmRSS, VmHWM).
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Open file descriptors of `pid`.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The `p` quantile (0..=1) of sorted durations, 0 for none.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Width, height, frame rate (`num/den`) and frame count of a video's
/// first stream, as ffprobe reports them.
pub fn ffprobe(bytes: &[u8], ext: &str) -> (u32, u32, String, u32) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("v.{ext}"));
    std::fs::write(&path, bytes).unwrap();
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_frames",
            "-show_entries",
            "stream=width,height,r_frame_rate,nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(&path)
        .output()
        .expect("ffprobe is installed (scripts/test installs ffmpeg)");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let f: Vec<&str> = text.split(',').collect();
    assert_eq!(f.len(), 4, "ffprobe said {text:?}");
    (
        f[0].parse().unwrap(),
        f[1].parse().unwrap(),
        f[2].to_string(),
        f[3].parse().unwrap(),
    )
}

/// Drives `engine-runner --stdio --json ARGS…` the way a person would:
/// writes `lines` (then `"shutdown"`) and returns every JSON line it
/// printed on stdout.
pub fn runner_json(args: &[&str], lines: &[serde_json::Value]) -> Vec<serde_json::Value> {
    use std::io::Write;
    let mut child = std::process::Command::new(bin("engine-runner"))
        .args(["--stdio", "--json"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("engine-runner starts");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        for l in lines {
            writeln!(stdin, "{l}").expect("write job");
        }
        writeln!(stdin, "\"shutdown\"").expect("write shutdown");
    }
    let out = child.wait_with_output().expect("engine-runner ends");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
