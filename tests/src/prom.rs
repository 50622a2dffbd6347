//! A running worker's endpoint, found through its run file, and `/metrics`
//! read with the Prometheus Python client's own text parser
//! (`prometheus_client.parser`), not ours.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::Value;
use studio_worker::control::{read_run_file, RunFile};

use crate::bounds;
use crate::models;
use crate::proc::WorkerHome;

/// The endpoint of the worker running in `home`.
pub struct Endpoint {
    /// Its run file.
    pub run: RunFile,
    http: reqwest::Client,
}

impl Endpoint {
    /// Waits for the run file of the worker in `home`.
    pub async fn of(home: &WorkerHome) -> Self {
        let config = home.config();
        let run = bounds::until("the worker's run file", bounds::event(), || {
            read_run_file(&config)
        })
        .await;
        Self {
            run,
            http: reqwest::Client::new(),
        }
    }

    /// `GET path` without a token: status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// `method path` with `token` as the bearer (none: no header).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> (u16, String) {
        let mut req = self
            .http
            .request(method, format!("http://{}{path}", self.run.addr));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("the endpoint answers");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    /// `method path` with the run file's token and a JSON body.
    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> (u16, String) {
        let resp = self
            .http
            .request(method, format!("http://{}{path}", self.run.addr))
            .bearer_auth(&self.run.token)
            .json(body)
            .send()
            .await
            .expect("the endpoint answers");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    /// `GET path` with the run file's token, as JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        let token = self.run.token.clone();
        let (status, text) = self.send(reqwest::Method::GET, path, Some(&token)).await;
        assert_eq!(status, 200, "{path}: {text}");
        serde_json::from_str(&text).expect("JSON")
    }

    /// `/metrics`, parsed.
    pub async fn scrape(&self) -> Scrape {
        let (status, text) = self.get("/metrics").await;
        assert_eq!(status, 200, "{text}");
        Scrape::parse(&text)
    }

    /// `/status` as JSON.
    pub async fn status(&self) -> Value {
        let (status, text) = self.get("/status").await;
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).expect("/status is JSON")
    }
}

/// One parsed exposition.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// Family name → type.
    pub types: BTreeMap<String, String>,
    /// Every sample: name, labels, value.
    pub samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {"types": {}, "samples": []}
for fam in text_string_to_metric_families(sys.stdin.read()):
    out["types"][fam.name] = fam.type
    for s in fam.samples:
        out["samples"].append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;

impl Scrape {
    /// Parses `text` with `prometheus_client`; a line it rejects fails the
    /// test.
    pub fn parse(text: &str) -> Self {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(PARSE)
            .env("PYTHONPATH", models::path(models::PROM_CLIENT))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("feed the parser");
        let out = child.wait_with_output().expect("the parser ends");
        assert!(
            out.status.success(),
            "prometheus_client rejected the exposition: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("parser output");
        let types = v["types"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, t)| (k.clone(), t.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let samples = v["samples"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| {
                        let labels = s[1]
                            .as_object()
                            .map(|o| {
                                o.iter()
                                    .map(|(k, v)| {
                                        (k.clone(), v.as_str().unwrap_or_default().to_string())
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        (
                            s[0].as_str().unwrap_or_default().to_string(),
                            labels,
                            s[2].as_f64().unwrap_or(f64::NAN),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self { types, samples }
    }

    /// The sum of the samples named `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    /// How much `name` (with `labels`) grew since `before`.
    pub fn delta(&self, before: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.sum(name, labels) - before.sum(name, labels)
    }
}
