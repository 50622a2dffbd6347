//! Everything a runner asks of the operating system beyond `std`, in one
//! place: dying with its parent (Linux `PR_SET_PDEATHSIG`, for itself
//! and for the programs it starts), its resident memory and the machine's
//! physical cores (Linux `/proc`), and leaving without exit handlers.
//! Where a platform cannot answer, the answer is the neutral one (0, all
//! logical CPUs) and the caller stays correct, only less informed.

/// Makes this process die when its parent (the supervisor) dies, however
/// the parent dies (Linux; elsewhere the channel's EOF does it).
pub fn die_with_parent() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with constant arguments.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
    }
}

/// Makes the program `cmd` will start die with this runner, whatever kills
/// the runner (Linux `PR_SET_PDEATHSIG`).
pub fn die_with_runner(cmd: &mut std::process::Command) {
    #[cfg(target_os = "linux")]
    // SAFETY: only prctl, async-signal-safe, between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, || {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            );
            Ok(())
        });
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

/// Ends the process with `code` without running exit handlers or static
/// destructors.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: ends the process; nothing runs after it.
    unsafe { libc::_exit(code) }
}

/// This process's resident set size in bytes (0 where `/proc` is absent).
pub fn resident_bytes() -> u64 {
    proc_file("self/status")
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// Physical CPU cores (ggml's default thread count: its threads spin, so
/// hyper-threads only slow it down); all logical CPUs if that is unknown.
pub fn physical_cores() -> i32 {
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
    let Some(info) = proc_file("cpuinfo") else {
        return logical as i32;
    };
    let mut cores = std::collections::BTreeSet::new();
    let mut physical = "";
    for line in info.lines() {
        let mut kv = line.splitn(2, ':').map(str::trim);
        match (kv.next(), kv.next()) {
            (Some("physical id"), Some(v)) => physical = v,
            (Some("core id"), Some(v)) => {
                cores.insert((physical, v));
            }
            _ => {}
        }
    }
    if cores.is_empty() {
        logical as i32
    } else {
        cores.len().min(logical) as i32
    }
}

fn proc_file(rel: &str) -> Option<String> {
    if cfg!(target_os = "linux") {
        std::fs::read_to_string(format!("/proc/{rel}")).ok()
    } else {
        None
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn this_process_is_measured() {
        assert!(super::resident_bytes() > 0);
        let cores = super::physical_cores();
        let logical = std::thread::available_parallelism().map_or(1, |n| n.get()) as i32;
        assert!(cores >= 1 && cores <= logical, "{cores} of {logical}");
    }
}
