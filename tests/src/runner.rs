//! Driving a runner binary directly over its framed channel (benchmarks).

use std::io::Write;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use studio_protocol::runner::frame::encode;
use studio_protocol::runner::{
    FrameReader, FromRunner, ToRunner, CHANNEL_VERSION, DEFAULT_MAX_FRAME_BYTES,
};

/// A runner child spoken to over the framed channel.
pub struct RunnerConn {
    child: Child,
    stdin: ChildStdin,
    out: FrameReader<ChildStdout>,
}

impl RunnerConn {
    /// Starts `bin args…` (stderr discarded) and completes the handshake.
    pub fn start(bin: &str, args: &[&str]) -> Self {
        let mut child = Command::new(crate::proc::bin(bin))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn runner");
        let stdin = child.stdin.take().expect("stdin");
        let out = FrameReader::new(
            child.stdout.take().expect("stdout"),
            DEFAULT_MAX_FRAME_BYTES,
        );
        let mut me = Self { child, stdin, out };
        me.send(&ToRunner::Hello {
            version: CHANNEL_VERSION,
            epoch: 1,
        });
        match me.recv() {
            FromRunner::Hello { .. } => me,
            other => panic!("runner answered the handshake with {other:?}"),
        }
    }

    /// Sends one message.
    pub fn send(&mut self, m: &ToRunner) {
        self.stdin
            .write_all(&encode(m, DEFAULT_MAX_FRAME_BYTES).expect("encode"))
            .expect("write to runner");
        self.stdin.flush().expect("flush");
    }

    /// The next message; panics if the runner ended.
    pub fn recv(&mut self) -> FromRunner {
        match self.out.read::<FromRunner>() {
            Ok(Some(m)) => m,
            other => panic!("runner ended: {other:?}"),
        }
    }

    /// Receives until the job's result (or error, which panics); `on` sees
    /// every message on the way.
    pub fn until_result(
        &mut self,
        mut on: impl FnMut(&FromRunner),
    ) -> studio_protocol::runner::JobOutput {
        loop {
            let m = self.recv();
            on(&m);
            match m {
                FromRunner::Result { output, .. } => return output,
                FromRunner::Error { message, .. } => panic!("job failed: {message}"),
                _ => {}
            }
        }
    }

    /// Asks the runner to exit and waits for it.
    pub fn stop(mut self) {
        self.send(&ToRunner::Shutdown);
        let _ = self.child.wait();
    }
}
