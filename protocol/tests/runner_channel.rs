//! The runner channel: every message survives a frame round trip, and
//! malformed input (truncated, oversized, garbage) is an error value.

use std::collections::BTreeMap;
use std::io::Cursor;

use studio_protocol::runner::frame::{encode, HEADER_LEN};
use studio_protocol::runner::*;
use studio_protocol::studio::{ImageTask, LogLevel, ModelSource, Task};

fn all_messages() -> (Vec<ToRunner>, Vec<FromRunner>) {
    let job = JobRequest {
        job_id: "job-1".into(),
        epoch: 3,
        task: Task::Image(ImageTask {
            prompt: "fox".into(),
            width: Some(64),
            height: Some(64),
            ext: Some("png".into()),
            ..Default::default()
        }),
        model: "synthetic".into(),
        model_source: ModelSource::synthetic(),
        model_files: BTreeMap::from([("m.gguf".into(), "/models/m.gguf".into())]),
        inputs: BTreeMap::from([("inputUrl".into(), "/tmp/in.wav".into())]),
        scratch_dir: Some("/tmp/scratch".into()),
        preload: false,
        stream: false,
    };
    let to = vec![
        ToRunner::Hello {
            version: CHANNEL_VERSION,
            epoch: 3,
        },
        ToRunner::Job(Box::new(job)),
        ToRunner::Ping { seq: 9 },
        ToRunner::Shutdown,
    ];
    let from = vec![
        FromRunner::Hello {
            version: CHANNEL_VERSION,
            epoch: 3,
            engine: "synthetic".into(),
            pid: 42,
            runner_version: "0.3.0".into(),
        },
        FromRunner::Progress {
            job_id: "job-1".into(),
            epoch: 3,
            phase: Phase::Running,
            done: 1,
            total: 4,
        },
        FromRunner::Log {
            job_id: None,
            epoch: 3,
            level: LogLevel::Warn,
            message: "w".into(),
        },
        FromRunner::Result {
            job_id: "job-1".into(),
            epoch: 3,
            output: JobOutput::Bytes {
                data: vec![0, 1, 2, 255],
                ext: "png".into(),
            },
        },
        FromRunner::Result {
            job_id: "job-1".into(),
            epoch: 3,
            output: JobOutput::File {
                path: "/tmp/x.mp4".into(),
                ext: "mp4".into(),
            },
        },
        FromRunner::Result {
            job_id: "job-1".into(),
            epoch: 3,
            output: JobOutput::Json {
                value: serde_json::json!({"text": "hi", "duration": 1.5, "n": [1, 2]}),
            },
        },
        FromRunner::Error {
            job_id: "job-1".into(),
            epoch: 3,
            class: ErrorClass::BadInput,
            message: "task.width".into(),
        },
        FromRunner::Pong { seq: 9, epoch: 3 },
        FromRunner::Fatal {
            message: "bye".into(),
        },
    ];
    (to, from)
}

#[test]
fn every_message_round_trips_through_frames() {
    let (to, from) = all_messages();
    let mut buf = Vec::new();
    {
        let mut w = FrameWriter::new(&mut buf, DEFAULT_MAX_FRAME_BYTES);
        for m in &to {
            w.write(m).unwrap();
        }
    }
    let mut r = FrameReader::new(Cursor::new(buf), DEFAULT_MAX_FRAME_BYTES);
    for m in &to {
        assert_eq!(&r.read::<ToRunner>().unwrap().unwrap(), m);
    }
    assert!(r.read::<ToRunner>().unwrap().is_none(), "clean EOF is None");

    let mut buf = Vec::new();
    {
        let mut w = FrameWriter::new(&mut buf, DEFAULT_MAX_FRAME_BYTES);
        for m in &from {
            w.write(m).unwrap();
        }
    }
    let mut r = FrameReader::new(Cursor::new(buf), DEFAULT_MAX_FRAME_BYTES);
    for m in &from {
        assert_eq!(&r.read::<FromRunner>().unwrap().unwrap(), m);
    }
}

#[test]
fn bytes_travel_as_binary_not_as_an_array() {
    let data = vec![7u8; 100_000];
    let frame = encode(
        &FromRunner::Result {
            job_id: "j".into(),
            epoch: 0,
            output: JobOutput::Bytes {
                data,
                ext: "png".into(),
            },
        },
        DEFAULT_MAX_FRAME_BYTES,
    )
    .unwrap();
    assert!(frame.len() < 100_200, "frame is {} bytes", frame.len());
}

#[test]
fn json_lines_form_is_typeable() {
    let line = r#"{"job":{"jobId":"j1","task":{"kind":"llm","messages":[{"role":"user","content":"hi"}]}}}"#;
    let m: ToRunner = serde_json::from_str(line).unwrap();
    let ToRunner::Job(j) = m else { panic!() };
    assert_eq!(j.epoch, 0);
    assert_eq!(j.model_source, ModelSource::synthetic());
    assert_eq!(
        serde_json::from_str::<ToRunner>(r#""shutdown""#).unwrap(),
        ToRunner::Shutdown
    );
}

#[test]
fn truncated_frames_are_errors_not_eof() {
    let frame = encode(&ToRunner::Ping { seq: 1 }, 1024).unwrap();
    for cut in 1..frame.len() {
        let mut r = FrameReader::new(Cursor::new(frame[..cut].to_vec()), 1024);
        match r.read_frame() {
            Err(FrameError::Truncated { .. }) => {}
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

#[test]
fn oversized_frames_are_refused_before_allocating() {
    // A header claiming 4 GiB - 1 with no body: must not allocate or hang.
    let mut r = FrameReader::new(Cursor::new(vec![0xff, 0xff, 0xff, 0xff]), 1 << 20);
    assert!(matches!(
        r.read_frame(),
        Err(FrameError::TooLarge {
            len: 0xffff_ffff,
            max: 1_048_576
        })
    ));
    let big = ToRunner::Job(Box::new(JobRequest {
        job_id: "x".repeat(2000),
        epoch: 0,
        task: Task::Image(ImageTask {
            prompt: "p".into(),
            ..Default::default()
        }),
        model: String::new(),
        model_source: ModelSource::synthetic(),
        model_files: BTreeMap::new(),
        inputs: BTreeMap::new(),
        scratch_dir: None,
        preload: false,
        stream: false,
    }));
    assert!(matches!(
        encode(&big, 512),
        Err(FrameError::TooLarge { .. })
    ));
}

#[test]
fn garbage_is_a_decode_error() {
    // A deterministic pseudo-random sweep: no input may panic.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut decode_errors = 0;
    for _ in 0..2000 {
        let len = (next() % 64) as usize;
        let body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let mut framed = (len as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&body);
        let mut r = FrameReader::new(Cursor::new(framed), 1024);
        match r.read::<FromRunner>() {
            Ok(_) => {}
            Err(FrameError::Decode(_)) => decode_errors += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(
        decode_errors > 1900,
        "garbage decoded too often: {decode_errors}"
    );
    // Random header + body bytes fed straight in.
    for _ in 0..500 {
        let len = (next() % 40) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let mut r = FrameReader::new(Cursor::new(bytes), 4096);
        let _ = r.read::<ToRunner>();
    }
    assert_eq!(HEADER_LEN, 4);
}
