//! Fault injection for tests of crash isolation.
//!
//! Active only when the environment has `STUDIO_WORKER_FAULT_INJECTION=1`;
//! then a job whose model id is `fault:<what>` misbehaves on purpose before
//! the engine runs. Without the variable these ids are ordinary models.
//! `fault:slow:MS`, `fault:gate:DIR` and `fault:orphan:DIR` succeed after
//! a delay; the others crash, hang, break the channel or exhaust memory.

use std::time::Duration;

use studio_protocol::runner::{JobRequest, Phase};
use studio_protocol::studio::LogLevel;

use crate::engine::Reporter;
use crate::serve::SharedOutbox;

/// The environment switch.
pub const ENV: &str = "STUDIO_WORKER_FAULT_INJECTION";

fn enabled() -> bool {
    std::env::var(ENV).map(|v| v == "1").unwrap_or(false)
}

/// Runs the fault named by the job's model, if injection is on. Faults
/// that do not end the process return and let the job complete.
pub(crate) fn before_job(job: &JobRequest, out: &SharedOutbox, report: &mut dyn Reporter) {
    if !enabled() {
        return;
    }
    let Some(fault) = job.model.strip_prefix("fault:") else {
        return;
    };
    report.log(LogLevel::Warn, format!("fault injection: {fault}"));
    match fault {
        "abort" => std::process::abort(),
        "segv" => {
            // What a native library might print before it dies: the crash
            // report carries this stderr tail, with the query scrubbed.
            eprintln!(
                "fault:segv while reading https://files.invalid/m.gguf?X-Amz-Signature=f4u1t516"
            );
            // SAFETY: deliberately not safe: a read from an unmapped page
            // to produce a real SIGSEGV for the crash-isolation tests.
            let bad = std::hint::black_box(8usize) as *const u8;
            let _ = unsafe { std::ptr::read_volatile(bad) };
        }
        "exit" => {
            report.progress(Phase::Running, 1, 2);
            std::process::exit(3);
        }
        "hang" => {
            // Hold the channel lock: no progress, no pongs.
            let _guard = out.lock();
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        "garbage" => {
            if let Ok(mut o) = out.lock() {
                let _ = o.write_raw(&[0x00, 0x00, 0x01, 0x00, 0xc1, 0xc1, 0xde, 0xad, 0xbe, 0xef]);
                let _ = o.write_raw(&[0xc1; 256]);
            }
        }
        "stdout" => {
            // SAFETY: printf of a constant C string with no arguments.
            unsafe {
                libc::printf(c"fault:stdout junk written by native code to fd 1\n".as_ptr());
                libc::fflush(std::ptr::null_mut());
            }
        }
        "oom" => oom(report),
        other if other.starts_with("gate:") => gate(&other["gate:".len()..], report),
        other if other.starts_with("orphan:") => {
            let dir = &other["orphan:".len()..];
            orphan(dir, report);
            gate(dir, report)
        }
        other => {
            if let Some(ms) = other
                .strip_prefix("slow:")
                .and_then(|m| m.parse::<u64>().ok())
            {
                let steps = (ms / 20).max(1);
                for i in 0..steps {
                    std::thread::sleep(Duration::from_millis(ms / steps));
                    report.progress(Phase::Running, i + 1, steps);
                }
            }
        }
    }
}

/// `fault:gate:DIR`: a job that runs (reporting progress) until a test
/// lets it finish. On start it writes its pid to `DIR/started` (atomically,
/// so a test that sees the file sees the pid); it then finishes as soon as
/// `DIR/open` exists. Tests use it to act while a job is certainly running
/// in the engine, whatever the machine's speed.
fn gate(dir: &str, report: &mut dyn Reporter) {
    let dir = std::path::Path::new(dir);
    let tmp = dir.join(format!(".started.{}", std::process::id()));
    let wrote = std::fs::write(&tmp, std::process::id().to_string())
        .and_then(|()| std::fs::rename(&tmp, dir.join("started")));
    if let Err(e) = wrote {
        report.log(
            LogLevel::Error,
            format!("fault:gate cannot write {}: {e}", dir.display()),
        );
        return;
    }
    let mut ticks = 0;
    while !dir.join("open").exists() {
        std::thread::sleep(Duration::from_millis(20));
        ticks += 1;
        report.progress(Phase::Running, ticks, 0);
    }
}

/// `fault:orphan:DIR`: starts `sleep 3600` as a plain child (no
/// death signal of its own, so only the runner's process group can take
/// it along), writes its pid to `DIR/orphan`, then waits at the gate in
/// `DIR`. Tests check that killing the runner kills this grandchild.
fn orphan(dir: &str, report: &mut dyn Reporter) {
    let spawned = std::process::Command::new("sleep")
        .arg("3600")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn();
    let dir = std::path::Path::new(dir);
    let wrote = spawned.and_then(|child| {
        let tmp = dir.join(".orphan");
        std::fs::write(&tmp, child.id().to_string())?;
        std::fs::rename(&tmp, dir.join("orphan"))
    });
    if let Err(e) = wrote {
        report.log(LogLevel::Error, format!("fault:orphan: {e}"));
    }
}

/// Allocates and touches memory until the allocator fails (which aborts
/// the process with "memory allocation of N bytes failed"). Refuses to run
/// without a finite data limit, so a test can never eat the machine.
fn oom(report: &mut dyn Reporter) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_DATA, &mut lim) } == 0;
    if !ok || lim.rlim_cur == libc::RLIM_INFINITY || lim.rlim_cur > 8 << 30 {
        report.log(
            LogLevel::Error,
            "fault:oom refused: no memory limit (set engine_memory_limit_mb)".into(),
        );
        return;
    }
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk: Vec<u8> = Vec::with_capacity(16 << 20);
        chunk.resize(16 << 20, 1);
        hoard.push(std::hint::black_box(chunk));
        report.progress(Phase::Running, hoard.len() as u64, 0);
    }
}
