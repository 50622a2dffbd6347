//! Channel hygiene.
//!
//! SAFETY CONTRACT: native inference libraries print to stdout. If the
//! channel stayed on fd 1, one stray `printf` would corrupt a frame. So,
//! before any engine is loaded, [`take_stdio_channel`]:
//!
//! 1. duplicates fds 0 and 1 to fresh close-on-exec descriptors that only
//!    the channel uses (grandchildren such as `ffmpeg` do not inherit them);
//! 2. points fd 1 at fd 2 (the supervisor drains stderr into its log);
//! 3. points fd 0 at `/dev/null`.
//!
//! After this, anything written to fd 1 by any code in the process lands in
//! the log, never on the channel. It must run while the process has one
//! thread, before anything else touches fds 0–2.

use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, RawFd};

/// The channel's private ends.
pub struct Channel {
    /// Requests from the supervisor (was fd 0).
    pub input: File,
    /// Replies to the supervisor (was fd 1).
    pub output: File,
}

fn dup_cloexec(fd: RawFd) -> io::Result<RawFd> {
    // SAFETY: fcntl on a descriptor we own; the result is checked.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(new)
}

fn dup2(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: plain dup2 of open descriptors; the result is checked.
    if unsafe { libc::dup2(from, to) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Moves the channel off fds 0/1 (see the module docs).
pub fn take_stdio_channel() -> io::Result<Channel> {
    let input = dup_cloexec(0)?;
    let output = dup_cloexec(1)?;
    dup2(2, 1)?;
    let null = File::open("/dev/null")?;
    dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0)?;
    // SAFETY: `input` and `output` are fresh descriptors owned by nobody
    // else; the Files take ownership of them.
    Ok(unsafe {
        Channel {
            input: File::from_raw_fd(input),
            output: File::from_raw_fd(output),
        }
    })
}
