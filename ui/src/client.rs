//! A blocking client of the running worker's endpoint, found through the
//! run file beside its config (address and token), as the CLI finds it.
//! The window calls it from a background thread, never from the UI
//! thread.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use studio_worker::control::{read_run_file, RunFile};
use studio_worker::scheduler::snapshot::Snapshot;

/// Why the worker could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No run file: no worker runs with this config.
    #[error("no worker runs with {0} (no run file beside it)")]
    NotRunning(PathBuf),
    /// The worker did not answer.
    #[error("the worker at {addr} does not answer: {cause}")]
    Unreachable {
        /// Its address.
        addr: String,
        /// Why.
        cause: String,
    },
    /// It answered with an error.
    #[error("{0}")]
    Refused(String),
    /// A config edit it refused, naming the key.
    #[error("{key}: {message}")]
    BadValue {
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// The worker running with one config.
pub struct Client {
    config: PathBuf,
    http: reqwest::blocking::Client,
}

/// What a config save answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Saved {
    /// The keys that changed.
    pub changed: Vec<String>,
    /// Those that wait for a restart.
    pub restart: Vec<String>,
}

impl Client {
    /// A client of the worker that runs with `config`.
    pub fn new(config: &Path) -> Self {
        Self {
            config: config.to_path_buf(),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }

    /// The config file it is for.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    fn run(&self) -> Result<RunFile, ClientError> {
        read_run_file(&self.config).ok_or_else(|| ClientError::NotRunning(self.config.clone()))
    }

    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, String), ClientError> {
        let run = self.run()?;
        let mut req = self
            .http
            .request(method, format!("http://{}{path}", run.addr))
            .bearer_auth(&run.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().map_err(|e| ClientError::Unreachable {
            addr: run.addr.clone(),
            cause: e.to_string(),
        })?;
        let code = resp.status().as_u16();
        Ok((code, resp.text().unwrap_or_default()))
    }

    fn json(&self, path: &str) -> Result<Value, ClientError> {
        let (code, text) = self.call(reqwest::Method::GET, path, None)?;
        if code != 200 {
            return Err(ClientError::Refused(format!(
                "{path}: {code} {}",
                text.trim()
            )));
        }
        serde_json::from_str(&text).map_err(|e| ClientError::Refused(format!("{path}: {e}")))
    }

    /// The live snapshot; while the worker is still starting (waiting for
    /// registration or approval) the reason it gives.
    pub fn status(&self) -> Result<Result<Snapshot, String>, ClientError> {
        let (code, text) = self.call(reqwest::Method::GET, "/status", None)?;
        match code {
            200 => serde_json::from_str(&text)
                .map(Ok)
                .map_err(|e| ClientError::Refused(format!("/status: {e}"))),
            503 => {
                let v: Value = serde_json::from_str(&text).unwrap_or_default();
                Ok(Err(v["detail"].as_str().unwrap_or(text.trim()).to_string()))
            }
            _ => Err(ClientError::Refused(format!(
                "/status: {code} {}",
                text.trim()
            ))),
        }
    }

    /// Log entries numbered above `after`, and the highest number so far
    /// (ask after it next).
    pub fn logs(&self, after: u64) -> Result<(Vec<crate::logs::Entry>, u64), ClientError> {
        let v = self.json(&format!("/logs?after={after}"))?;
        let entries = serde_json::from_value(v["entries"].clone())
            .map_err(|e| ClientError::Refused(format!("/logs: {e}")))?;
        Ok((entries, v["last"].as_u64().unwrap_or(after)))
    }

    /// The config (secrets as `***`) and the keys applied live.
    pub fn config(&self) -> Result<(Value, Vec<String>), ClientError> {
        let v = self.json("/config")?;
        let live = serde_json::from_value(v["live"].clone()).unwrap_or_default();
        Ok((v["config"].clone(), live))
    }

    /// Saves changed keys through the worker (it checks and writes them).
    pub fn save_config(
        &self,
        patch: &serde_json::Map<String, Value>,
    ) -> Result<Saved, ClientError> {
        let (code, text) = self.call(
            reqwest::Method::PUT,
            "/config",
            Some(&Value::Object(patch.clone())),
        )?;
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        match code {
            200 => Ok(Saved {
                changed: serde_json::from_value(v["changed"].clone()).unwrap_or_default(),
                restart: serde_json::from_value(v["restart"].clone()).unwrap_or_default(),
            }),
            400 => Err(ClientError::BadValue {
                key: v["error"]["key"].as_str().unwrap_or_default().to_string(),
                message: v["error"]["message"]
                    .as_str()
                    .unwrap_or(text.trim())
                    .to_string(),
            }),
            _ => Err(ClientError::Refused(format!(
                "/config: {code} {}",
                text.trim()
            ))),
        }
    }

    fn control(&self, what: &str) -> Result<String, ClientError> {
        let path = format!("/control/{what}");
        let (code, text) = self.call(reqwest::Method::POST, &path, None)?;
        if code == 200 {
            Ok(text.trim().to_string())
        } else {
            Err(ClientError::Refused(format!(
                "{path}: {code} {}",
                text.trim()
            )))
        }
    }

    /// Stops claiming (offers rejected `paused`) without editing the config.
    pub fn pause(&self) -> Result<String, ClientError> {
        self.control("pause")
    }

    /// Takes offers again.
    pub fn resume(&self) -> Result<String, ClientError> {
        self.control("resume")
    }

    /// Lets the running job finish, then the worker exits.
    pub fn drain(&self) -> Result<String, ClientError> {
        self.control("drain")
    }

    /// The worker's own update check, as text.
    pub fn check_update(&self) -> Result<String, ClientError> {
        self.control("check-update")
    }

    /// What a worker that waits for credentials waits for.
    pub fn registration(&self) -> Result<Registration, ClientError> {
        let v = self.json("/registration")?;
        serde_json::from_value(v).map_err(|e| ClientError::Refused(format!("/registration: {e}")))
    }

    /// Registers every waiting identity with an operator's bootstrap
    /// token (and the studio at `api_base_url`, when given); the worker ids.
    pub fn register(
        &self,
        bootstrap_token: &str,
        api_base_url: Option<&str>,
    ) -> Result<Vec<String>, ClientError> {
        let body = serde_json::json!({
            "bootstrap_token": bootstrap_token,
            "api_base_url": api_base_url,
        });
        let v = self.post_form("/control/register", &body)?;
        Ok(v["registered"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["worker_id"].as_str().map(str::to_string))
            .collect())
    }

    /// Asks the studio for an operator's approval now (a stored bootstrap
    /// token is dropped); the identities with their pending requests.
    pub fn request_approval(
        &self,
        api_base_url: Option<&str>,
    ) -> Result<Vec<Waiting>, ClientError> {
        let body = serde_json::json!({ "api_base_url": api_base_url });
        let v = self.post_form("/control/request-approval", &body)?;
        serde_json::from_value(v["identities"].clone())
            .map_err(|e| ClientError::Refused(format!("/control/request-approval: {e}")))
    }

    /// A POST whose refusal names a field (`{"error": {key, message}}`).
    fn post_form(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        let (code, text) = self.call(reqwest::Method::POST, path, Some(body))?;
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        if code == 200 {
            return Ok(v);
        }
        match v["error"]["message"].as_str() {
            Some(message) => Err(ClientError::BadValue {
                key: v["error"]["key"].as_str().unwrap_or_default().to_string(),
                message: message.to_string(),
            }),
            None => Err(ClientError::Refused(format!(
                "{path}: {code} {}",
                text.trim()
            ))),
        }
    }
}

/// `GET /registration`: a `run` that waits for credentials.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
pub struct Registration {
    /// True while `run` waits for credentials.
    pub waiting: bool,
    /// The studio it registers with.
    pub api_base_url: String,
    /// A bootstrap token in the config (tried before the approval flow).
    pub bootstrap_token_stored: bool,
    /// The identities without credentials.
    pub identities: Vec<Waiting>,
    /// What the worker's last try ran into.
    pub trouble: Option<String>,
}

/// One identity that waits.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
pub struct Waiting {
    /// Its GPU (`None`: the worker's one identity).
    pub gpu: Option<u32>,
    /// Whether it has credentials now.
    pub registered: bool,
    /// Its pending approval request.
    pub request_id: Option<String>,
}
