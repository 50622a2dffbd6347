//! Checking the feed, fetching and proving a release, switching to it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use sha2::{Digest, Sha256};

use super::feed::{self, Candidate, Newest, Version};
use super::{Installed, Manifest, Pending, PRODUCT};
use crate::config::Config;
use crate::scheduler::{Event, Handle};

/// How long the probe of a new release may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(120);

/// https, or http to a loopback address (tests, a local mirror).
fn check_url(url: &str) -> anyhow::Result<()> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("`{url}` is not a URL"))?;
    let loopback = match parsed.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        s => {
            bail!("`{url}`: updates are fetched over https only (http only from loopback), not {s}")
        }
    }
}

fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(format!("studio-worker/{}", super::running_version()))
        .connect_timeout(Duration::from_secs(15))
        .timeout(Duration::from_secs(600))
        .build()
        .context("HTTP client")
}

async fn get(client: &reqwest::Client, url: &str) -> anyhow::Result<reqwest::Response> {
    check_url(url)?;
    let resp = client
        .get(url)
        .header("Accept", "application/vnd.github+json")
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    if !resp.status().is_success() {
        bail!("GET {url}: HTTP {}", resp.status());
    }
    Ok(resp)
}

/// What the feed says for this worker.
pub async fn newest(cfg: &Config, inst: Option<&Installed>) -> anyhow::Result<(Version, Newest)> {
    let current = Version::parse(&super::running_version()).ok_or_else(|| {
        anyhow!(
            "this build's version {} is not semver",
            super::running_version()
        )
    })?;
    let (target, variant) = match inst {
        Some(i) => (i.manifest.target.clone(), i.manifest.variant.clone()),
        None => super::this_target(),
    };
    let bad = inst.map(|i| i.state().bad).unwrap_or_default();
    let body = get(&client()?, &cfg.auto_update_feed)
        .await?
        .text()
        .await
        .context("reading the release feed")?;
    let releases = feed::parse(&body).map_err(|e| anyhow!("{}: {e}", cfg.auto_update_feed))?;
    let newest = feed::newest(
        &releases,
        &current,
        cfg.auto_update_prerelease,
        &bad,
        &target,
        &variant,
    );
    Ok((current, newest))
}

/// `studio-worker check-update`: what the feed offers and what `run`
/// would do about it. Changes nothing.
pub async fn check_update(cfg: &Config) -> anyhow::Result<()> {
    print!("{}", check_update_report(cfg).await?);
    Ok(())
}

/// What [`check_update`] prints, as text (the control endpoint's
/// `check-update` answers it).
pub async fn check_update_report(cfg: &Config) -> anyhow::Result<String> {
    use std::fmt::Write as _;
    let mut out = String::new();
    let inst = Installed::detect();
    let (current, newest) = newest(cfg, inst.as_ref()).await?;
    let _ = writeln!(out, "current:  {current}");
    let _ = match &newest {
        Newest::UpToDate(seen) => writeln!(
            out,
            "newest:   {} (up to date)",
            seen.as_ref()
                .map_or("no release in the feed".into(), |v| v.to_string())
        ),
        Newest::NoArchive(v, name) => writeln!(out, "newest:   {v}, but the release has no {name}"),
        Newest::Newer(c) => writeln!(out, "newest:   {} ({})", c.version, c.archive.1),
    };
    let plan = match (&newest, &inst) {
        (Newest::Newer(c), _) if c.digest_url.is_none() => {
            format!("nothing: {} has no {}.sha256, and an update without its digest is refused", c.version, c.archive.0)
        }
        (Newest::Newer(c), _) if !super::IN_PLACE => {
            format!("nothing: on this platform {} is installed by running install.ps1 again", c.version)
        }
        (Newest::Newer(_), None) => {
            "nothing: this binary is not in a versioned install (ROOT/versions/V with a manifest); install with install.sh to update in place".into()
        }
        (Newest::Newer(c), Some(i)) if cfg.auto_update_enabled => format!(
            "`run` installs {} into {}, waits for the running job and switches to it",
            c.version,
            i.root.join("versions").join(c.version.to_string()).display()
        ),
        (Newest::Newer(_), Some(_)) => "nothing: auto_update_enabled is false".into(),
        _ => "nothing".into(),
    };
    let _ = writeln!(out, "would do: {plan}");
    if let Some(i) = &inst {
        let state = i.state();
        if !state.bad.is_empty() {
            let _ = writeln!(
                out,
                "skipped:  {} (failed to start here)",
                state.bad.join(", ")
            );
        }
    }
    Ok(out)
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("{}", path.display()))?;
    Ok(hex::encode(h.finalize()))
}

/// Downloads `url` to `dest`, streaming.
async fn download(client: &reqwest::Client, url: &str, dest: &Path) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let resp = get(client, url).await?;
    let mut file = tokio::fs::File::create(dest)
        .await
        .with_context(|| format!("{}", dest.display()))?;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.with_context(|| format!("downloading {url}"))?;
        file.write_all(&chunk)
            .await
            .with_context(|| format!("{}", dest.display()))?;
    }
    file.flush().await?;
    Ok(())
}

/// Checks an unpacked release against what this install needs: our
/// product, this target and variant, every runner binary, every file's
/// SHA-256.
pub fn check_release(dir: &Path, want: &Manifest, version: &Version) -> Result<Manifest, String> {
    let m = Manifest::read(dir)?;
    if m.product != PRODUCT {
        return Err(format!("the archive is `{}`, not {PRODUCT}", m.product));
    }
    if m.target != want.target || m.variant != want.variant {
        return Err(format!(
            "the archive is for {} ({}), this install is {} ({})",
            m.target, m.variant, want.target, want.variant
        ));
    }
    if m.version != version.to_string() {
        return Err(format!(
            "the archive says version {}, the feed {version}",
            m.version
        ));
    }
    let exe = std::env::consts::EXE_SUFFIX;
    let mut needed: Vec<String> = studio_protocol::runner::FAMILIES
        .iter()
        .map(|f| format!("{}{exe}", f.binary))
        .collect();
    needed.push(format!("studio-worker{exe}"));
    for n in &needed {
        if !m.files.iter().any(|f| &f.path == n) {
            return Err(format!("the archive lacks {n}"));
        }
    }
    for f in &m.files {
        let got = sha256_file(&dir.join(&f.path)).map_err(|e| format!("{e:#}"))?;
        if got != f.sha256 {
            return Err(format!("{} does not match the manifest", f.path));
        }
    }
    Ok(m)
}

/// Switches `ROOT/current` to `versions/VERSION` with one rename.
pub fn flip(root: &Path, version: &str) -> anyhow::Result<()> {
    let target = root.join("versions").join(version);
    if !target.is_dir() {
        bail!("{} does not exist", target.display());
    }
    let new = root.join("current.new");
    let _ = std::fs::remove_file(&new);
    #[cfg(unix)]
    std::os::unix::fs::symlink(Path::new("versions").join(version), &new)
        .with_context(|| format!("cannot link {}", new.display()))?;
    #[cfg(not(unix))]
    bail!(
        "{}: switching versions in place needs Unix links; install the release with install.ps1",
        new.display()
    );
    #[cfg(unix)]
    std::fs::rename(&new, root.join("current"))
        .with_context(|| format!("cannot switch {}", root.join("current").display()))
}

/// Runs the new release's own binary: each runner's handshake
/// (`self-check`) and a synthetic job.
async fn probe(dir: &Path, config: &Path) -> anyhow::Result<()> {
    let bin = dir.join(format!("studio-worker{}", std::env::consts::EXE_SUFFIX));
    let scratch = tempfile::tempdir().context("probe scratch dir")?;
    let out = scratch.path().join("probe.png");
    let steps: [Vec<std::ffi::OsString>; 2] = [
        vec!["--config".into(), config.into(), "self-check".into()],
        vec![
            "--config".into(),
            config.into(),
            "job".into(),
            "image".into(),
            "--engine".into(),
            "synthetic".into(),
            "--prompt".into(),
            "update probe".into(),
            "--width".into(),
            "16".into(),
            "--height".into(),
            "16".into(),
            "--ext".into(),
            "png".into(),
            "--out".into(),
            out.clone().into(),
        ],
    ];
    for args in steps {
        // In its own group: a probe that times out is killed with every
        // runner it started.
        let child = crate::platform::spawn_group(&bin, Default::default(), |cmd| {
            cmd.args(&args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
        })
        .with_context(|| format!("cannot start {}", bin.display()))?;
        let run = crate::platform::output_within(child, PROBE_TIMEOUT)
            .await
            .with_context(|| format!("cannot run {}", bin.display()))?
            .ok_or_else(|| anyhow!("{} did not finish in {PROBE_TIMEOUT:?}", bin.display()))?;
        if !run.status.success() {
            let err = String::from_utf8_lossy(&run.stderr);
            let tail: Vec<&str> = err.lines().rev().take(5).collect();
            bail!(
                "{} {} failed ({}): {}",
                bin.display(),
                args.get(2).map(|a| a.to_string_lossy()).unwrap_or_default(),
                run.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            );
        }
    }
    if !out.is_file() {
        bail!("the probe job wrote no result");
    }
    Ok(())
}

/// Fetches, checks, unpacks and probes `c` into `ROOT/versions/V`;
/// nothing is switched yet.
pub async fn prepare(inst: &Installed, c: &Candidate, config: &Path) -> anyhow::Result<PathBuf> {
    let digest_url = c.digest_url.as_deref().ok_or_else(|| {
        anyhow!(
            "release {} has no {}.sha256: an update without its digest is refused",
            c.version,
            c.archive.0
        )
    })?;
    let versions = inst.root.join("versions");
    let incoming = versions.join(format!(".incoming-{}", c.version));
    let _ = std::fs::remove_dir_all(&incoming);
    std::fs::create_dir_all(&incoming)
        .with_context(|| format!("cannot create {}", incoming.display()))?;
    let result = async {
        let client = client()?;
        let archive = incoming.join(&c.archive.0);
        download(&client, &c.archive.1, &archive).await?;
        let sidecar = get(&client, digest_url).await?.text().await?;
        let want = sidecar
            .split_whitespace()
            .next()
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| anyhow!("{digest_url} is not a SHA-256 sidecar"))?
            .to_ascii_lowercase();
        let got = sha256_file(&archive)?;
        if got != want {
            bail!(
                "{}: SHA-256 {got} does not match its .sha256 ({want})",
                c.archive.0
            );
        }
        let unpack = incoming.join("unpack");
        std::fs::create_dir_all(&unpack)?;
        let tar = tokio::process::Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&unpack)
            .output()
            .await
            .context("cannot run tar")?;
        if !tar.status.success() {
            bail!(
                "cannot unpack {}: {}",
                c.archive.0,
                String::from_utf8_lossy(&tar.stderr).trim()
            );
        }
        let top: Vec<PathBuf> = std::fs::read_dir(&unpack)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        let [release] = top.as_slice() else {
            bail!("{} does not hold one folder", c.archive.0);
        };
        check_release(release, &inst.manifest, &c.version)
            .map_err(|e| anyhow!("{}: {e}", c.archive.0))?;
        let dest = versions.join(c.version.to_string());
        if dest.exists() {
            std::fs::remove_dir_all(&dest)
                .with_context(|| format!("cannot replace {}", dest.display()))?;
        }
        std::fs::rename(release, &dest)
            .with_context(|| format!("cannot move the release to {}", dest.display()))?;
        probe(&dest, config)
            .await
            .map_err(|e| anyhow!("the new release failed its probe: {e:#}"))?;
        Ok(dest)
    }
    .await;
    let _ = std::fs::remove_dir_all(&incoming);
    result
}

/// Removes what an interrupted update left (`versions/.incoming-*`).
fn clean_incoming(root: &Path) {
    if let Ok(rd) = std::fs::read_dir(root.join("versions")) {
        for e in rd.filter_map(Result::ok) {
            if e.file_name().to_string_lossy().starts_with(".incoming-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

fn fault(point: &str) {
    if std::env::var("STUDIO_WORKER_FAULT_INJECTION").as_deref() == Ok("1")
        && std::env::var("STUDIO_WORKER_FAULT_UPDATE_KILL").as_deref() == Ok(point)
    {
        crate::platform::kill_self();
    }
}

/// One check and, when there is a newer release, the whole update: the
/// result says what happened (for the log and the status).
async fn attempt(
    cfg: &Config,
    inst: &Installed,
    config: &Path,
    handle: &Handle,
) -> anyhow::Result<Option<String>> {
    let (current, newest) = newest(cfg, Some(inst)).await?;
    let c = match newest {
        Newest::Newer(c) => c,
        Newest::NoArchive(v, name) => return Ok(Some(format!("{v} has no {name}"))),
        Newest::UpToDate(_) => return Ok(None),
    };
    handle.send(Event::UpdateState(format!("preparing {}", c.version)));
    tracing::info!(target: "worker", "update: {} is newer than {current}: fetching {}", c.version, c.archive.1);
    prepare(inst, &c, config).await?;
    fault("before-flip");
    tracing::info!(target: "worker", "update: {} passed its probe; waiting for the running job", c.version);
    handle.send(Event::UpdateState(format!(
        "waiting for idle to switch to {}",
        c.version
    )));
    handle.hold_for_update().await;
    let mut state = inst.state();
    state.pending = Some(Pending {
        version: c.version.to_string(),
        previous: current.to_string(),
        starts: 0,
    });
    inst.save_state(&state)?;
    if let Err(e) = flip(&inst.root, &c.version.to_string()) {
        state.pending = None;
        let _ = inst.save_state(&state);
        handle.send(Event::ReleaseHold);
        return Err(e);
    }
    tracing::info!(target: "worker", "update: switched to {}; restarting into it", c.version);
    super::request_exec(inst.current_binary());
    handle.send(Event::Shutdown);
    Ok(Some(format!("switched to {}", c.version)))
}

/// Starts the update loop when `auto_update_enabled` and this program runs
/// from a versioned install: a check every `auto_update_interval_secs`
/// (the first one at once).
pub fn spawn_loop(cfg: &Config, config: PathBuf, handle: Handle) {
    if !cfg.auto_update_enabled {
        return;
    }
    if !super::IN_PLACE {
        tracing::info!(target: "worker", "auto-update off: on this platform a release is installed with install.ps1");
        return;
    }
    let Some(inst) = Installed::detect() else {
        tracing::info!(target: "worker", "auto-update off: this binary is not in a versioned install (see install.sh)");
        return;
    };
    clean_incoming(&inst.root);
    super::ACTIVE.store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::spawn(async move {
        loop {
            let cfg = Config::load(&config).unwrap_or_default();
            if cfg.auto_update_enabled {
                match attempt(&cfg, &inst, &config, &handle).await {
                    Ok(Some(done)) if done.starts_with("switched") => return,
                    Ok(Some(note)) => handle.send(Event::UpdateState(note)),
                    Ok(None) => handle.send(Event::UpdateState("up to date".into())),
                    Err(e) => {
                        tracing::warn!(target: "worker", "update: {e:#}");
                        handle.send(Event::UpdateState(format!("failed: {e:#}")));
                        handle.send(Event::ReleaseHold);
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(cfg.auto_update_interval_secs.max(1))).await;
        }
    });
}
