//! A blocking client for the HTTP API of a Gradio app (Gradio 6.x, queue
//! protocol `sse_v3`):
//!
//! - `GET /gradio_api/info`: the named endpoints, each with its named
//!   parameters (component, type, default) and returns;
//! - `GET /config`: which dependency (`fn_index`) each endpoint is;
//! - `POST /gradio_api/upload`: input files, answered with server paths;
//! - `POST /gradio_api/queue/join` then `GET /gradio_api/queue/data`: a
//!   job through the app's queue, followed as server-sent events (queue
//!   position, progress, heartbeats, logs, the result or the app's error);
//! - `POST /gradio_api/cancel`; `GET /gradio_api/file=…` for results.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use url::Url;

/// Longest wait for the next bytes of an answer. Gradio's event stream
/// sends a heartbeat every 15 s, so silence past this means the app is
/// gone or wedged.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a call to the app failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No answer at all: refused, reset, timed out (the app is down or
    /// going away).
    #[error("the Gradio app at {url} does not answer ({cause})")]
    Unreachable {
        /// The app's URL.
        url: String,
        /// What the connection said.
        cause: String,
    },
    /// An HTTP error status.
    #[error("the Gradio app answered {status} to {what}: {body}")]
    Status {
        /// The call.
        what: &'static str,
        /// The HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// An answer we could not read.
    #[error("the Gradio app sent something unreadable for {what}: {cause}")]
    Unreadable {
        /// The call.
        what: &'static str,
        /// What was wrong.
        cause: String,
    },
}

impl ApiError {
    /// Worth another try soon: the queue is full or the app had a 5xx.
    pub fn is_busy(&self) -> bool {
        matches!(self, ApiError::Status { status, .. } if *status == 503 || *status >= 500)
    }
}

/// One named parameter of an endpoint, as `/gradio_api/info` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// `parameter_name` (the Python argument name).
    pub name: String,
    /// The component's label.
    pub label: String,
    /// The component (`Textbox`, `Number`, `Slider`, `Image`, ...).
    pub component: String,
    /// The JSON type (`string`, `number`, ..., or `object` for files).
    pub ty: String,
    /// Its default, when it has one.
    pub default: Option<Value>,
}

impl Param {
    /// Takes a file (an image upload).
    pub fn is_file(&self) -> bool {
        matches!(
            self.component.as_str(),
            "Image" | "ImageEditor" | "File" | "Gallery" | "Sketchpad"
        )
    }
}

impl std::fmt::Display for Param {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} {}", self.name, self.component, self.ty)?;
        match &self.default {
            Some(d) => write!(f, ", default {d})"),
            None => write!(f, ", required)"),
        }
    }
}

/// One named endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// `/generate`.
    pub api_name: String,
    /// The dependency index `queue/join` takes.
    pub fn_index: u64,
    /// Its parameters, in call order.
    pub params: Vec<Param>,
    /// The components it returns, in order.
    pub returns: Vec<String>,
}

impl Endpoint {
    /// Its parameters, one per line's worth, for error messages.
    pub fn listing(&self) -> String {
        if self.params.is_empty() {
            return "none".into();
        }
        self.params
            .iter()
            .map(Param::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One event of a queued job.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Waiting in the app's queue: 0-based rank of `size`.
    Estimation { rank: u64, size: u64 },
    /// The app started the job.
    Starts,
    /// The app's own progress (`gr.Progress`): `index` of `length`.
    Progress {
        index: u64,
        length: u64,
        desc: String,
    },
    /// Nothing new; the app is alive.
    Heartbeat,
    /// `gr.Info` / `gr.Warning` from the app.
    Log { level: String, message: String },
    /// The job ended: its outputs, or the app's error message.
    Completed(Result<Vec<Value>, String>),
    /// The app failed outside the function.
    UnexpectedError(String),
    /// The stream is over.
    Closed,
    /// Anything else (`process_generating`, ...).
    Other,
}

/// One Gradio app.
pub struct App {
    base: Url,
    http: reqwest::blocking::Client,
    token: Option<String>,
}

impl App {
    /// The app at `url`, with an optional bearer token.
    pub fn new(url: &str, token: Option<String>) -> Result<Self, String> {
        let mut base = Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(format!("`{url}` is not an http(s) URL"));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::blocking::Client::builder()
            .timeout(READ_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Self { base, http, token })
    }

    fn at(&self, path: &str) -> Url {
        // `path` never starts with '/', so it stays under the base path.
        self.base.join(path).unwrap_or_else(|_| self.base.clone())
    }

    fn send(
        &self,
        what: &'static str,
        req: reqwest::blocking::RequestBuilder,
    ) -> Result<reqwest::blocking::Response, ApiError> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body: String = resp.text().unwrap_or_default().chars().take(300).collect();
        Err(ApiError::Status {
            what,
            status: status.as_u16(),
            body: body.trim().to_string(),
        })
    }

    fn unreachable(&self, e: &reqwest::Error) -> ApiError {
        // The root cause ("Connection refused"): the layers above it only
        // say that a request failed.
        let mut cause = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            cause = s.to_string();
            source = s.source();
        }
        if e.is_timeout() {
            cause = format!("no answer within {} s", READ_TIMEOUT.as_secs());
        }
        ApiError::Unreachable {
            url: self.base.to_string(),
            cause,
        }
    }

    fn json(
        &self,
        what: &'static str,
        resp: reqwest::blocking::Response,
    ) -> Result<Value, ApiError> {
        resp.json().map_err(|e| ApiError::Unreadable {
            what,
            cause: e.to_string(),
        })
    }

    /// Every named endpoint with its `fn_index`, in the app's order.
    pub fn endpoints(&self) -> Result<Vec<Endpoint>, ApiError> {
        const INFO: &str = "GET /gradio_api/info";
        const CONFIG: &str = "GET /config";
        let info = self.send(INFO, self.http.get(self.at("gradio_api/info")))?;
        let info = self.json(INFO, info)?;
        let config = self.send(CONFIG, self.http.get(self.at("config")))?;
        let config = self.json(CONFIG, config)?;
        parse_endpoints(&info, &config).map_err(|cause| ApiError::Unreadable { what: INFO, cause })
    }

    /// Uploads a local file; the app's FileData for it.
    pub fn upload(&self, path: &Path) -> Result<Value, ApiError> {
        const WHAT: &str = "POST /gradio_api/upload";
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "input".into());
        let bytes = std::fs::read(path).map_err(|e| ApiError::Unreadable {
            what: WHAT,
            cause: format!("cannot read {}: {e}", path.display()),
        })?;
        let part = reqwest::blocking::multipart::Part::bytes(bytes).file_name(name.clone());
        let form = reqwest::blocking::multipart::Form::new().part("files", part);
        let resp = self.send(
            WHAT,
            self.http.post(self.at("gradio_api/upload")).multipart(form),
        )?;
        let paths = self.json(WHAT, resp)?;
        let server = paths
            .as_array()
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::Unreadable {
                what: WHAT,
                cause: format!("expected a list of paths, got {paths}"),
            })?;
        Ok(json!({
            "path": server,
            "orig_name": name,
            "meta": {"_type": "gradio.FileData"},
        }))
    }

    /// Puts a job in the app's queue; its event id.
    pub fn join(&self, fn_index: u64, data: &[Value], session: &str) -> Result<String, ApiError> {
        const WHAT: &str = "POST /gradio_api/queue/join";
        let body = json!({
            "data": data,
            "fn_index": fn_index,
            "session_hash": session,
            "event_data": null,
            "trigger_id": null,
        });
        let resp = self.send(
            WHAT,
            self.http.post(self.at("gradio_api/queue/join")).json(&body),
        )?;
        let v = self.json(WHAT, resp)?;
        v["event_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ApiError::Unreadable {
                what: WHAT,
                cause: format!("no event_id in {v}"),
            })
    }

    /// The event stream of `session`.
    pub fn events(&self, session: &str) -> Result<Events, ApiError> {
        let mut url = self.at("gradio_api/queue/data");
        url.query_pairs_mut().append_pair("session_hash", session);
        let resp = self.send("GET /gradio_api/queue/data", self.http.get(url))?;
        Ok(Events {
            lines: BufReader::new(resp),
            url: self.base.to_string(),
        })
    }

    /// Asks the app to stop a queued or running job (best effort).
    pub fn cancel(&self, session: &str, fn_index: u64, event_id: &str) {
        let body = json!({"session_hash": session, "fn_index": fn_index, "event_id": event_id});
        let _ = self.send(
            "POST /gradio_api/cancel",
            self.http.post(self.at("gradio_api/cancel")).json(&body),
        );
    }

    /// Fetches a result file from this app: an absolute URL (only its
    /// path is used, against the app's own address), a relative URL, a
    /// `gradio_api/file=` path or a server path.
    pub fn fetch(&self, reference: &str) -> Result<Vec<u8>, ApiError> {
        const WHAT: &str = "GET /gradio_api/file=";
        let url = match Url::parse(reference) {
            Ok(abs) => {
                let mut own = self.base.clone();
                own.set_path(abs.path());
                own.set_query(abs.query());
                own
            }
            Err(_) if reference.starts_with('/') && reference.contains("gradio_api/") => {
                let mut own = self.base.clone();
                own.set_path(reference);
                own
            }
            Err(_) => {
                let mut u = self.at("gradio_api/file=");
                let p = format!("{}{}", u.path(), reference);
                u.set_path(&p);
                u
            }
        };
        let resp = self.send(WHAT, self.http.get(url))?;
        resp.bytes()
            .map(|b| b.to_vec())
            .map_err(|e| self.unreachable(&e))
    }
}

/// Joins `/gradio_api/info` (parameters) with `/config` (fn indices).
fn parse_endpoints(info: &Value, config: &Value) -> Result<Vec<Endpoint>, String> {
    let named = info["named_endpoints"]
        .as_object()
        .ok_or("no named_endpoints")?;
    let deps = config["dependencies"]
        .as_array()
        .ok_or("/config has no dependencies")?;
    let mut out = Vec::new();
    for (api_name, e) in named {
        let bare = api_name.trim_start_matches('/');
        let Some(fn_index) = deps.iter().enumerate().find_map(|(i, d)| {
            (d["api_name"].as_str() == Some(bare)).then(|| d["id"].as_u64().unwrap_or(i as u64))
        }) else {
            continue;
        };
        let params = e["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .enumerate()
                    .map(|(i, p)| Param {
                        name: p["parameter_name"]
                            .as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| format!("param_{i}")),
                        label: p["label"].as_str().unwrap_or_default().to_string(),
                        component: p["component"].as_str().unwrap_or_default().to_string(),
                        ty: p["type"]["type"]
                            .as_str()
                            .or_else(|| p["python_type"]["type"].as_str())
                            .unwrap_or("any")
                            .to_string(),
                        default: (p["parameter_has_default"] == true)
                            .then(|| p["parameter_default"].clone()),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let returns = e["returns"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .map(|r| r["component"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default();
        out.push(Endpoint {
            api_name: api_name.clone(),
            fn_index,
            params,
            returns,
        });
    }
    out.sort_by_key(|e| e.fn_index);
    Ok(out)
}

/// The events of one session, as they arrive.
pub struct Events {
    lines: BufReader<reqwest::blocking::Response>,
    url: String,
}

impl Events {
    /// The next event; an error when the stream breaks (the app went
    /// away) or says something unreadable.
    pub fn next_event(&mut self) -> Result<Event, ApiError> {
        loop {
            let mut line = String::new();
            let n = self
                .lines
                .read_line(&mut line)
                .map_err(|e| ApiError::Unreachable {
                    url: self.url.clone(),
                    cause: format!("the event stream broke: {e}"),
                })?;
            if n == 0 {
                return Ok(Event::Closed);
            }
            let Some(data) = line.trim_end().strip_prefix("data:") else {
                continue;
            };
            let v: Value = serde_json::from_str(data.trim()).map_err(|e| ApiError::Unreadable {
                what: "the queue's event stream",
                cause: format!("{e}: {}", data.chars().take(200).collect::<String>()),
            })?;
            return Ok(parse_event(&v));
        }
    }
}

fn parse_event(v: &Value) -> Event {
    let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    match v["msg"].as_str().unwrap_or_default() {
        "estimation" => Event::Estimation {
            rank: v["rank"].as_u64().unwrap_or(0),
            size: v["queue_size"].as_u64().unwrap_or(0),
        },
        "process_starts" => Event::Starts,
        "progress" => {
            let p = &v["progress_data"][0];
            let length = p["length"].as_u64().unwrap_or(0);
            let index = match p["index"].as_u64() {
                Some(i) => i,
                // A fraction (`progress(0.3)`) rather than steps.
                None => (p["progress"].as_f64().unwrap_or(0.0) * 1000.0) as u64,
            };
            Event::Progress {
                index,
                length: if p["index"].is_u64() { length } else { 1000 },
                desc: p["desc"].as_str().unwrap_or_default().to_string(),
            }
        }
        "heartbeat" => Event::Heartbeat,
        "log" => Event::Log {
            level: text("level"),
            message: text("log"),
        },
        "process_completed" => {
            if v["success"] == true {
                Event::Completed(Ok(v["output"]["data"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()))
            } else {
                let e = &v["output"]["error"];
                Event::Completed(Err(match e.as_str() {
                    Some(s) if !s.is_empty() => s.to_string(),
                    _ if e.is_null() => "the app raised an error and gave no message (launch it with show_error=True to see it)".into(),
                    _ => e.to_string(),
                }))
            }
        }
        "unexpected_error" => Event::UnexpectedError(text("message")),
        "close_stream" => Event::Closed,
        "server_stopping" => Event::UnexpectedError("the app is shutting down".into()),
        _ => Event::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_join_info_parameters_with_config_indices() {
        let info = json!({"named_endpoints": {
            "/edit": {"parameters": [
                {"parameter_name": "image", "label": "Input", "component": "Image", "parameter_has_default": false, "type": {"type": "object"}},
                {"parameter_name": "strength", "label": "S", "component": "Slider", "parameter_has_default": true, "parameter_default": 0.5, "type": {"type": "number"}}
            ], "returns": [{"component": "Gallery"}]},
            "/generate": {"parameters": [], "returns": [{"component": "Image"}]},
            "/hidden": {"parameters": [], "returns": []}
        }});
        let config = json!({"dependencies": [
            {"id": 0, "api_name": "generate"}, {"id": 3, "api_name": "edit"}
        ]});
        let eps = parse_endpoints(&info, &config).unwrap();
        assert_eq!(eps.len(), 2, "{eps:?}");
        assert_eq!(
            (eps[0].api_name.as_str(), eps[0].fn_index),
            ("/generate", 0)
        );
        assert_eq!((eps[1].api_name.as_str(), eps[1].fn_index), ("/edit", 3));
        assert!(eps[1].params[0].is_file());
        assert_eq!(
            eps[1].listing(),
            "image (Image object, required), strength (Slider number, default 0.5)"
        );
        assert_eq!(eps[1].returns, vec!["Gallery"]);
    }

    #[test]
    fn events_are_read_from_the_queue_stream() {
        let p = parse_event(
            &json!({"msg": "progress", "progress_data": [{"index": 2, "length": 4, "desc": "d"}]}),
        );
        assert_eq!(
            p,
            Event::Progress {
                index: 2,
                length: 4,
                desc: "d".into()
            }
        );
        let f = parse_event(
            &json!({"msg": "progress", "progress_data": [{"index": null, "length": null, "progress": 0.25}]}),
        );
        assert_eq!(
            f,
            Event::Progress {
                index: 250,
                length: 1000,
                desc: String::new()
            }
        );
        let err = parse_event(
            &json!({"msg": "process_completed", "success": false, "output": {"error": "no GPU"}}),
        );
        assert_eq!(err, Event::Completed(Err("no GPU".into())));
        let ok = parse_event(
            &json!({"msg": "process_completed", "success": true, "output": {"data": [1]}}),
        );
        assert_eq!(ok, Event::Completed(Ok(vec![json!(1)])));
        assert_eq!(
            parse_event(&json!({"msg": "estimation", "rank": 2, "queue_size": 5})),
            Event::Estimation { rank: 2, size: 5 }
        );
    }
}
