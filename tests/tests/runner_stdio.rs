//! The real `engine-runner` driven over its channel with raw bytes, the way
//! the supervisor (or a person) does.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use studio_protocol::runner::frame::encode;
use studio_protocol::runner::{
    ErrorClass, FrameReader, FromRunner, JobOutput, JobRequest, ToRunner, CHANNEL_VERSION,
    DEFAULT_MAX_FRAME_BYTES,
};
use studio_protocol::studio::{ImageTask, ModelSource, Task};
use studio_worker_tests::bounds;
use studio_worker_tests::proc::bin;

struct Runner {
    child: Child,
    stdin: ChildStdin,
    out: FrameReader<ChildStdout>,
}

fn start(env: &[(&str, &str)]) -> Runner {
    let mut cmd = Command::new(bin("engine-runner"));
    cmd.args(["--stdio", "--engine", "synthetic"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stdin = child.stdin.take().unwrap();
    let out = FrameReader::new(child.stdout.take().unwrap(), DEFAULT_MAX_FRAME_BYTES);
    Runner { child, stdin, out }
}

impl Runner {
    fn send(&mut self, m: &ToRunner) {
        self.stdin
            .write_all(&encode(m, DEFAULT_MAX_FRAME_BYTES).unwrap())
            .unwrap();
        self.stdin.flush().unwrap();
    }
    fn recv(&mut self) -> FromRunner {
        self.out
            .read::<FromRunner>()
            .expect("valid frame")
            .expect("not EOF")
    }
    fn hello(&mut self, epoch: u64) {
        self.send(&ToRunner::Hello {
            version: CHANNEL_VERSION,
            epoch,
        });
        match self.recv() {
            FromRunner::Hello {
                version,
                epoch: e,
                engine,
                ..
            } => {
                assert_eq!(
                    (version, e, engine.as_str()),
                    (CHANNEL_VERSION, epoch, "synthetic")
                );
            }
            other => panic!("expected hello, got {other:?}"),
        }
    }
    fn wait(&mut self) -> std::process::ExitStatus {
        let child = &mut self.child;
        bounds::until_blocking("the runner to exit", bounds::event(), || {
            child.try_wait().unwrap()
        })
    }
}

fn job(id: &str, model: &str, w: u32, h: u32) -> ToRunner {
    ToRunner::Job(Box::new(JobRequest {
        job_id: id.into(),
        epoch: 4,
        task: Task::Image(ImageTask {
            prompt: "p".into(),
            width: Some(w),
            height: Some(h),
            ext: Some("png".into()),
            ..Default::default()
        }),
        model: model.into(),
        model_source: ModelSource::synthetic(),
        model_files: Default::default(),
        inputs: Default::default(),
        scratch_dir: None,
        preload: false,
        stream: false,
    }))
}

#[test]
fn handshake_job_progress_and_result() {
    let mut r = start(&[]);
    r.hello(4);
    r.send(&job("j1", "synthetic", 40, 30));
    let mut progress = 0;
    let mut loads = 0;
    let output = loop {
        match r.recv() {
            FromRunner::Progress { job_id, epoch, .. } => {
                assert_eq!((job_id.as_str(), epoch), ("j1", 4));
                progress += 1;
            }
            FromRunner::Loaded {
                job_id,
                epoch,
                model,
                device_bytes,
                ..
            } => {
                assert_eq!((job_id.as_str(), epoch), ("j1", 4));
                assert_eq!((model.as_str(), device_bytes), ("synthetic", None));
                loads += 1;
            }
            FromRunner::Result {
                job_id,
                epoch,
                output,
            } => {
                assert_eq!((job_id.as_str(), epoch), ("j1", 4));
                break output;
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(progress >= 1);
    assert_eq!(loads, 1, "the first job on a model loads it");
    // A second job on the same model: no load.
    r.send(&job("j2", "synthetic", 16, 16));
    loop {
        match r.recv() {
            FromRunner::Result { job_id, .. } => {
                assert_eq!(job_id, "j2");
                break;
            }
            FromRunner::Loaded { .. } => panic!("the model was loaded again"),
            _ => {}
        }
    }
    let JobOutput::Bytes { data, ext } = output else {
        panic!("bytes expected")
    };
    assert_eq!(ext, "png");
    let img = image::load_from_memory(&data).unwrap();
    assert_eq!((img.width(), img.height()), (40, 30));
    // Closing the channel ends the runner cleanly.
    let mut child = r.child;
    drop(r.stdin);
    let status = bounds::until_blocking("the runner to exit on EOF", bounds::event(), || {
        child.try_wait().unwrap()
    });
    assert!(status.success());
}

#[test]
fn pings_are_answered_while_the_engine_works() {
    let mut r = start(&[("STUDIO_WORKER_FAULT_INJECTION", "1")]);
    r.hello(1);
    // A job that runs until the test opens its gate, reporting progress
    // every 20 ms meanwhile.
    let gate = tempfile::tempdir().unwrap();
    let model = format!("fault:gate:{}", gate.path().display());
    r.send(&job("slow", &model, 8, 8));
    // Its first progress: the engine thread is working.
    while !matches!(r.recv(), FromRunner::Progress { .. }) {}
    r.send(&ToRunner::Ping { seq: 77 });
    let deadline = Instant::now() + bounds::event();
    loop {
        match r.recv() {
            FromRunner::Pong { seq, .. } => {
                assert_eq!(seq, 77);
                break;
            }
            FromRunner::Result { .. } => panic!("the job ended with its gate closed"),
            _ => assert!(Instant::now() < deadline, "no pong while the engine works"),
        }
    }
    std::fs::write(gate.path().join("open"), b"").unwrap();
    loop {
        if let FromRunner::Result { job_id, .. } = r.recv() {
            assert_eq!(job_id, "slow");
            break;
        }
    }
}

#[test]
fn native_stdout_never_reaches_the_channel() {
    let mut r = start(&[("STUDIO_WORKER_FAULT_INJECTION", "1")]);
    r.hello(1);
    r.send(&job("junk", "fault:stdout", 8, 8));
    let out = loop {
        match r.recv() {
            FromRunner::Result { output, .. } => break output,
            FromRunner::Error { message, .. } => panic!("{message}"),
            _ => {}
        }
    };
    assert!(matches!(out, JobOutput::Bytes { .. }));
    r.send(&ToRunner::Shutdown);
    assert!(r.wait().success());
    let mut err = String::new();
    r.child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains("fault:stdout junk"),
        "junk went to stderr: {err}"
    );
}

#[test]
fn a_wrong_version_or_a_missing_hello_is_fatal() {
    let mut r = start(&[]);
    r.send(&ToRunner::Hello {
        version: CHANNEL_VERSION + 1,
        epoch: 0,
    });
    assert!(matches!(r.recv(), FromRunner::Fatal { message } if message.contains("not supported")));
    assert_eq!(r.wait().code(), Some(2));

    let mut r = start(&[]);
    r.send(&job("early", "synthetic", 8, 8));
    assert!(matches!(r.recv(), FromRunner::Fatal { message } if message.contains("hello")));
    assert_eq!(r.wait().code(), Some(2));

    // Garbage and oversized frames from the supervisor side.
    let mut r = start(&[]);
    r.hello(1);
    r.stdin.write_all(&[0, 0, 0, 3, 0xc1, 0xc1, 0xc1]).unwrap();
    r.stdin.flush().unwrap();
    assert!(matches!(r.recv(), FromRunner::Fatal { .. }));
    assert_eq!(r.wait().code(), Some(2));
    let mut r = start(&[]);
    r.hello(1);
    r.stdin.write_all(&[0xff, 0xff, 0xff, 0xff]).unwrap();
    r.stdin.flush().unwrap();
    assert!(matches!(r.recv(), FromRunner::Fatal { message } if message.contains("cap")));
    assert_eq!(r.wait().code(), Some(2));
}

#[test]
fn bad_input_is_a_typed_error() {
    let mut r = start(&[]);
    r.hello(1);
    r.send(&job("big", "synthetic", 9000, 9000));
    let mut reply = r.recv();
    if let FromRunner::Loaded { .. } = reply {
        reply = r.recv();
    }
    match reply {
        FromRunner::Error { class, message, .. } => {
            assert_eq!(class, ErrorClass::BadInput);
            assert!(message.contains("task.width"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn json_lines_mode_is_drivable_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin("engine-runner"))
        .args(["--stdio", "--json", "--out-dir"])
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, r#"{{"job":{{"jobId":"by-hand","task":{{"kind":"image","prompt":"a fox","width":24,"height":12,"ext":"webp"}}}}}}"#).unwrap();
    writeln!(stdin, "this line is not json").unwrap();
    writeln!(stdin, r#"{{"job":{{"jobId":"chat","task":{{"kind":"llm","messages":[{{"role":"user","content":"hi"}}]}}}}}}"#).unwrap();
    writeln!(stdin, r#""shutdown""#).unwrap();
    drop(stdin);
    let lines: Vec<serde_json::Value> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).expect("every line is JSON"))
        .collect();
    assert!(child.wait().unwrap().success());
    assert!(lines[0].get("hello").is_some());
    let file = lines
        .iter()
        .find_map(|l| l["result"]["output"]["file"]["path"].as_str())
        .expect("a file result");
    let img = image::open(file).unwrap();
    assert_eq!((img.width(), img.height()), (24, 12));
    assert!(lines.iter().any(|l| l["log"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("ignored line"))));
    assert!(lines
        .iter()
        .any(|l| l["result"]["output"]["json"]["value"]["object"] == "chat.completion"));
}
