//! A real Gradio app (`tests/gradio/apps.py`, Gradio 6 from the test
//! models' cache) on 127.0.0.1, for the gradio engine's tests and bench.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::{bounds, models};

/// The deterministic image every app draws for `prompt` and `seed` at
/// `w`×`h` (as `pattern` in `apps.py`).
pub fn pattern(prompt: &str, seed: u64, w: u32, h: u32) -> image::RgbImage {
    use sha2::Digest;
    let d = sha2::Sha256::digest(format!("{prompt}|{seed}").as_bytes());
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            ((d[0] as u32 + x) % 256) as u8,
            ((d[1] as u32 + y) % 256) as u8,
            d[2],
        ])
    })
}

/// One running app, killed when dropped.
pub struct GradioApp {
    shape: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
}

impl GradioApp {
    /// Starts the app of `shape` (`interface`, `blocks`) on a free port and
    /// waits until it answers `/gradio_api/info`.
    pub async fn start(shape: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut app = Self {
            shape: shape.into(),
            port,
            child: None,
        };
        app.restart().await;
        app
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same port (after [`GradioApp::stop`]).
    pub async fn restart(&mut self) {
        self.stop();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("gradio/apps.py");
        let child = Command::new("python3")
            .arg(script)
            .arg(&self.shape)
            .arg(self.port.to_string())
            .env("PYTHONPATH", models::path(models::GRADIO))
            .env("GRADIO_ANALYTICS_ENABLED", "False")
            .env("HF_HUB_OFFLINE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.log_path())
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .expect("start the Gradio app");
        let pid = child.id();
        self.child = Some(child);
        let info = format!("{}/gradio_api/info", self.url());
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + bounds::engine_work();
        loop {
            if let Ok(r) = http.get(&info).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                crate::proc::alive(pid),
                "the Gradio app ({}) exited while starting:\n{}",
                self.shape,
                self.log()
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "the Gradio app ({}) did not answer within {:?}:\n{}",
                self.shape,
                bounds::engine_work(),
                self.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    fn log_path(&self) -> PathBuf {
        std::env::temp_dir().join(format!("studio-worker-gradio-{}.log", self.port))
    }

    /// What the app printed (its tracebacks), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Kills it (as a crash or a closed terminal would end it).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for GradioApp {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(self.log_path());
    }
}
