//! Everything the supervisor asks of the operating system beyond `std`,
//! in one place: runner children in their own process group (Unix) or
//! Job Object (Windows) through `process-wrap`, dying with the supervisor
//! (`PR_SET_PDEATHSIG` on Linux, the Job Object's kill-on-close on
//! Windows), a data-size limit (`RLIMIT_DATA`), and the facts read from
//! `/proc` (resident memory, the kernel's OOM-kill count, zombies). Where
//! a platform cannot answer, the answer is the neutral one (0, false,
//! `None`) and the caller's behaviour stays correct, only less informed.

use std::path::Path;
use std::process::ExitStatus;

use process_wrap::tokio::{ChildWrapper, CommandWrap, KillOnDrop};

/// A spawned child together with everything it started: signals and kills
/// reach the whole group (Unix) or job (Windows).
pub type GroupChild = Box<dyn ChildWrapper>;

/// How a grouped child is started.
#[derive(Debug, Clone, Copy, Default)]
pub struct Spawn {
    /// Kill it when the supervisor dies, however it dies (Linux
    /// `PR_SET_PDEATHSIG`; Windows: the job closes with the process).
    pub die_with_parent: bool,
    /// Most bytes of data segment (heap) it may map (`RLIMIT_DATA`, Unix).
    pub data_limit: Option<u64>,
}

/// Spawns `cmd` (set up by `init`) as the leader of a new process group
/// (Unix) or in a new Job Object (Windows), killed when the returned
/// handle is dropped.
pub fn spawn_group(
    program: &Path,
    how: Spawn,
    init: impl FnOnce(&mut tokio::process::Command),
) -> std::io::Result<GroupChild> {
    let mut wrap = CommandWrap::with_new(program, init);
    #[cfg(unix)]
    {
        wrap.wrap(process_wrap::tokio::ProcessGroup::leader());
        // SAFETY: between fork and exec only async-signal-safe calls
        // (prctl, setrlimit) are made; no allocation, no locks.
        unsafe {
            wrap.command_mut()
                .pre_exec(move || unix::in_child(how.die_with_parent, how.data_limit));
        }
    }
    #[cfg(windows)]
    {
        let _ = how;
        wrap.wrap(process_wrap::tokio::JobObject);
    }
    wrap.wrap(KillOnDrop);
    wrap.spawn()
}

/// Waits up to `limit` for `child` to end, collecting its stdout and
/// stderr; past the limit kills its whole group and returns `None`.
pub async fn output_within(
    mut child: GroupChild,
    limit: std::time::Duration,
) -> std::io::Result<Option<std::process::Output>> {
    use tokio::io::AsyncReadExt;
    async fn all(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> Vec<u8> {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf).await;
        }
        buf
    }
    let (out, err) = (child.stdout().take(), child.stderr().take());
    let run = async {
        let (status, stdout, stderr) = tokio::join!(child.wait(), all(out), all(err));
        status.map(|status| std::process::Output {
            status,
            stdout,
            stderr,
        })
    };
    match tokio::time::timeout(limit, run).await {
        Ok(done) => done.map(Some),
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            Ok(None)
        }
    }
}

/// Asks the whole group to stop (SIGTERM on Unix; Windows has no polite
/// signal, so there it ends the job).
pub fn terminate(child: &mut GroupChild) {
    #[cfg(unix)]
    let _ = child.signal(libc::SIGTERM);
    #[cfg(not(unix))]
    let _ = child.start_kill();
}

/// Kills the group with `leader`'s id at once (Unix). Used for a
/// last-resort exit, where no handle is at hand; on Windows the jobs
/// close with this process and take their processes along.
pub fn kill_group_of(leader: u32) {
    #[cfg(unix)]
    if let Ok(pgid) = i32::try_from(leader) {
        if pgid > 0 {
            // SAFETY: signalling a process group this process created.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
    #[cfg(not(unix))]
    let _ = leader;
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

/// The signal that ended `s`, by name (`SIGSEGV`), when a signal did.
pub fn fatal_signal(s: ExitStatus) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        s.signal().map(signal_name)
    }
    #[cfg(not(unix))]
    {
        let _ = s;
        None
    }
}

/// True for the signals a process gets for its own fault (a bad memory
/// access, an abort, an illegal instruction), not for being stopped.
pub fn is_crash_signal(name: &str) -> bool {
    matches!(
        name,
        "SIGSEGV" | "SIGABRT" | "SIGBUS" | "SIGILL" | "SIGFPE" | "SIGTRAP" | "SIGSYS"
    )
}

/// True when `s` is a SIGKILL (what the kernel's OOM killer sends).
pub fn killed_outright(s: ExitStatus) -> bool {
    fatal_signal(s).as_deref() == Some("SIGKILL")
}

#[cfg(unix)]
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
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}

/// `name` as an executable's file name here (`.exe` on Windows).
pub fn exe(name: &str) -> String {
    format!("{name}{}", std::env::consts::EXE_SUFFIX)
}

/// True when `path` is a file this user may run (Unix: an execute bit).
pub fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| {
        #[cfg(unix)]
        let runnable = {
            use std::os::unix::fs::PermissionsExt;
            m.permissions().mode() & 0o111 != 0
        };
        #[cfg(not(unix))]
        let runnable = true;
        m.is_file() && runnable
    })
}

/// The signals that ask the worker to stop: SIGTERM and SIGINT on Unix,
/// Ctrl-C and the console closing on Windows.
pub struct StopSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(windows)]
    ctrl_c: tokio::signal::windows::CtrlC,
    #[cfg(windows)]
    close: tokio::signal::windows::CtrlClose,
}

impl StopSignals {
    /// Starts listening (inside a tokio runtime).
    pub fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(windows)]
        {
            Ok(Self {
                ctrl_c: tokio::signal::windows::ctrl_c()?,
                close: tokio::signal::windows::ctrl_close()?,
            })
        }
    }

    /// Waits for the next one.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(windows)]
        tokio::select! {
            _ = self.ctrl_c.recv() => {}
            _ = self.close.recv() => {}
        }
    }
}

/// Resident memory of process `pid` in bytes (Linux `/proc`; 0 where it
/// cannot be read).
pub fn rss_bytes(pid: u32) -> u64 {
    proc_file(&format!("{pid}/status"))
        .as_deref()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// The kernel's count of OOM kills since boot (Linux `/proc/vmstat`
/// `oom_kill`; 0 where it is not available).
pub fn oom_kills() -> u64 {
    proc_file("vmstat").map_or(0, |s| parse_oom_kills(&s))
}

fn parse_oom_kills(vmstat: &str) -> u64 {
    vmstat
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// True when `/proc` shows `pid` as a zombie (Linux; elsewhere false).
pub fn is_zombie(pid: u32) -> bool {
    proc_file(&format!("{pid}/stat")).is_some_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// True when the NVIDIA kernel driver is loaded (Linux `/proc`).
pub fn nvidia_driver_loaded() -> bool {
    cfg!(target_os = "linux") && Path::new("/proc/driver/nvidia").exists()
}

fn proc_file(rel: &str) -> Option<String> {
    if cfg!(target_os = "linux") {
        std::fs::read_to_string(format!("/proc/{rel}")).ok()
    } else {
        None
    }
}

/// Bytes free for an unprivileged user on the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        unix::free_bytes(dir)
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// The host name, or `unknown`.
pub fn hostname() -> String {
    #[cfg(unix)]
    let name = unix::hostname();
    #[cfg(not(unix))]
    let name = std::env::var("COMPUTERNAME").ok();
    name.filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// True when this process runs as root (Unix); false elsewhere.
pub fn is_root() -> bool {
    #[cfg(unix)]
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    #[cfg(not(unix))]
    let root = false;
    root
}

/// This process's user id (Unix; 0 elsewhere).
pub fn uid() -> u32 {
    #[cfg(unix)]
    // SAFETY: getuid cannot fail.
    let id = unsafe { libc::getuid() };
    #[cfg(not(unix))]
    let id = 0;
    id
}

/// Ends this process at once, as a crash would (fault injection).
pub fn kill_self() -> ! {
    #[cfg(unix)]
    // SAFETY: kill(2) on ourselves with a constant signal.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    std::process::abort()
}

#[cfg(unix)]
mod unix {
    use std::path::Path;

    /// Runs in the child between fork and exec: only async-signal-safe
    /// calls.
    pub(super) fn in_child(die_with_parent: bool, data_limit: Option<u64>) -> std::io::Result<()> {
        #[cfg(target_os = "linux")]
        // SAFETY: prctl with constant arguments.
        if die_with_parent
            && unsafe {
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                )
            } != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        #[cfg(not(target_os = "linux"))]
        let _ = die_with_parent;
        if let Some(bytes) = data_limit {
            let lim = libc::rlimit {
                rlim_cur: bytes as libc::rlim_t,
                rlim_max: bytes as libc::rlim_t,
            };
            // SAFETY: setrlimit reads the struct we pass.
            if unsafe { libc::setrlimit(libc::RLIMIT_DATA, &lim) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }

    pub(super) fn free_bytes(dir: &Path) -> Option<u64> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        // SAFETY: statvfs fills the zeroed struct we pass; the path is
        // NUL-terminated.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return None;
        }
        Some(st.f_bavail as u64 * st.f_frsize as u64)
    }

    pub(super) fn hostname() -> Option<String> {
        let mut buf = [0u8; 256];
        // SAFETY: gethostname writes at most buf.len() bytes into buf.
        if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
            return None;
        }
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        std::str::from_utf8(&buf[..end]).ok().map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_oom_count_is_read_from_vmstat() {
        assert_eq!(parse_oom_kills("pgfault 10\noom_kill 7\npgmajfault 2\n"), 7);
        assert_eq!(parse_oom_kills("pgfault 10\n"), 0);
    }

    #[cfg(unix)]
    #[test]
    fn exit_statuses_are_named() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            describe_status(ExitStatus::from_raw(libc::SIGSEGV)),
            "was killed by SIGSEGV"
        );
        assert_eq!(
            describe_status(ExitStatus::from_raw(3 << 8)),
            "exited with code 3"
        );
        assert_eq!(
            describe_status(ExitStatus::from_raw(64)),
            "was killed by signal 64"
        );
        assert!(killed_outright(ExitStatus::from_raw(libc::SIGKILL)));
        assert!(!killed_outright(ExitStatus::from_raw(libc::SIGSEGV)));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_measured_and_not_a_zombie() {
        let me = std::process::id();
        assert!(rss_bytes(me) > 0);
        assert!(!is_zombie(me));
        assert!(hostname() != "unknown");
        assert!(free_bytes(Path::new("/")).is_some());
    }
}
