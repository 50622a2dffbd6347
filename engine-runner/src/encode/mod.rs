//! Output encoders shared by every engine that produces images, video or
//! audio, and the rule for the programs they run.

pub mod audio;
pub mod image;
pub mod video;

/// Makes the program `cmd` will start die with this runner, whatever kills
/// the runner (`PR_SET_PDEATHSIG`).
pub fn die_with_runner(cmd: &mut std::process::Command) {
    // SAFETY: only prctl, async-signal-safe, between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, || {
            #[cfg(target_os = "linux")]
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
}
