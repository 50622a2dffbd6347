//! The `gradio` engine family's set-up: the runner's arguments from
//! `gradio_endpoint_url` and the `[gradio]` table, the app's token in the
//! runner's environment (never in its arguments, which every user of the
//! host can read), and the start-up check that asks the app for its
//! endpoint and tries the mapping on it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::Config;

/// The runner's environment variable for the app's bearer token.
const TOKEN_ENV: &str = "STUDIO_WORKER_GRADIO_TOKEN";

/// The app as a check found it, for `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct AppState {
    /// `gradio_endpoint_url`.
    pub url: String,
    /// Whether it answered.
    pub answers: bool,
    /// The endpoint image jobs call, once known.
    pub endpoint: Option<String>,
    /// Which parameter each task field feeds (`{"prompt": "text"}`).
    pub mapping: std::collections::BTreeMap<String, String>,
    /// Why it is not usable, or did not answer; empty when it is fine.
    pub detail: String,
}

/// A check's outcome: whether to offer the engine, and what was seen.
pub struct Checked {
    /// Err: the engine is not offered, with the reason.
    pub usable: Result<(), String>,
    /// What the app answered.
    pub state: AppState,
}

/// The runner arguments and token environment for the configured app;
/// Err names the key that makes the engine unusable.
#[allow(clippy::type_complexity)]
pub fn setup(cfg: &Config) -> Result<(Vec<String>, Option<(String, String)>), String> {
    let Some(url) = cfg
        .gradio_endpoint_url
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
    else {
        return Err("gradio_endpoint_url is not set".into());
    };
    let parsed = url::Url::parse(url)
        .map_err(|e| format!("gradio_endpoint_url = \"{url}\" is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "gradio_endpoint_url = \"{url}\" is not an http(s) URL"
        ));
    }
    if !cfg.gradio_allow_remote && !is_loopback(&parsed) {
        return Err(format!(
            "gradio_endpoint_url = \"{url}\" is not on this host; set gradio_allow_remote = true to use an app elsewhere"
        ));
    }
    let g = &cfg.gradio;
    let mut args = vec!["--url".to_string(), url.to_string()];
    if let Some(api) = g.api_name.as_deref().filter(|a| !a.trim().is_empty()) {
        args.extend(["--api-name".into(), api.trim().to_string()]);
    }
    for (field, name) in &g.params {
        args.extend(["--param".into(), format!("{field}={name}")]);
    }
    if !g.fixed.is_empty() {
        args.extend([
            "--fixed".into(),
            serde_json::Value::Object(g.fixed.clone()).to_string(),
        ]);
    }
    let timeout = g.timeout_secs.unwrap_or(cfg.job_timeout_secs).max(1);
    args.extend(["--timeout-secs".into(), timeout.to_string()]);
    let token = g
        .token
        .as_ref()
        .filter(|t| !t.is_empty())
        .map(|t| (TOKEN_ENV.to_string(), t.expose().to_string()));
    Ok((args, token))
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Runs the runner's `--check` against the app. A mapping that does not
/// fit the app makes the engine unusable (the reason lists the endpoint's
/// parameters); an app that does not answer yet leaves it offered, and
/// the first job checks again.
pub fn check(runner: &Path, args: &[String], env: &[(String, String)], cfg: &Config) -> Checked {
    let mut state = AppState {
        url: cfg.gradio_endpoint_url.clone().unwrap_or_default(),
        answers: false,
        endpoint: None,
        mapping: Default::default(),
        detail: String::new(),
    };
    let out = match super::catalog::run_check(runner, args, env) {
        Ok(out) => out,
        Err(why) => {
            state.detail = why.clone();
            return Checked {
                usable: Err(why),
                state,
            };
        }
    };
    let why = super::catalog::first_line(&out.stderr);
    match out.status.code() {
        Some(0) => {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            state.answers = true;
            state.endpoint = v["endpoint"].as_str().map(str::to_string);
            state.mapping = serde_json::from_value(v["mapping"].clone()).unwrap_or_default();
            tracing::info!(target: "engine", "gradio app at {} answers; image jobs call {}", state.url, state.endpoint.as_deref().unwrap_or("?"));
            Checked {
                usable: Ok(()),
                state,
            }
        }
        Some(4) => {
            tracing::warn!(target: "engine", "{why}; the engine stays offered and the first image job asks it again");
            state.detail = why;
            Checked {
                usable: Ok(()),
                state,
            }
        }
        _ => {
            state.answers = out.status.code() == Some(3);
            state.detail = why.clone();
            Checked {
                usable: Err(why),
                state,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Config {
        toml::from_str(&format!("api_base_url = \"http://x\"\n{extra}")).unwrap()
    }

    #[test]
    fn the_table_becomes_runner_arguments_and_the_token_stays_out_of_them() {
        let c = cfg(
            "gradio_endpoint_url = \"http://127.0.0.1:7860\"\n\
             [gradio]\napi_name = \"/txt2img\"\ntimeout_secs = 90\ntoken = \"hf_secret\"\n\
             params = { prompt = \"text\", negativePrompt = \"\" }\nfixed = { style = \"photo\", n = 1 }\n",
        );
        let (args, token) = setup(&c).unwrap();
        assert_eq!(
            args,
            [
                "--url",
                "http://127.0.0.1:7860",
                "--api-name",
                "/txt2img",
                "--param",
                "negativePrompt=",
                "--param",
                "prompt=text",
                "--fixed",
                r#"{"n":1,"style":"photo"}"#,
                "--timeout-secs",
                "90"
            ]
        );
        assert!(!args.iter().any(|a| a.contains("hf_secret")));
        assert_eq!(token, Some((TOKEN_ENV.into(), "hf_secret".into())));
    }

    #[test]
    fn an_app_elsewhere_needs_allow_remote_and_a_missing_url_is_named() {
        let e = setup(&cfg("gradio_endpoint_url = \"http://10.0.0.5:7860\"\n")).unwrap_err();
        assert!(e.contains("gradio_allow_remote"), "{e}");
        assert!(setup(&cfg(
            "gradio_endpoint_url = \"http://10.0.0.5:7860\"\ngradio_allow_remote = true\n"
        ))
        .is_ok());
        assert!(setup(&cfg("gradio_endpoint_url = \"http://localhost:7860\"\n")).is_ok());
        assert!(setup(&cfg("gradio_endpoint_url = \"http://[::1]:7860\"\n")).is_ok());
        let e = setup(&cfg("")).unwrap_err();
        assert!(e.contains("gradio_endpoint_url is not set"), "{e}");
        let e = setup(&cfg("gradio_endpoint_url = \"ftp://127.0.0.1\"\n")).unwrap_err();
        assert!(e.contains("not an http(s) URL"), "{e}");
    }
}
