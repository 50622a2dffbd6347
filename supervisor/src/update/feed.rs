//! The release feed: GitHub releases JSON (an array, or one release), and
//! which release, if any, is newer than this one for this target and
//! variant.

use std::cmp::Ordering;
use std::fmt;

use serde::Deserialize;

/// A semantic version (`1.2.3`, `1.2.3-rc.1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Major, minor, patch.
    pub core: (u64, u64, u64),
    /// The pre-release part after `-`, if any.
    pub pre: Option<String>,
}

impl Version {
    /// Parses `X.Y.Z[-pre]`, with an optional `v` or `studio-worker-v`
    /// in front (release tags).
    pub fn parse(tag: &str) -> Option<Self> {
        let s = tag.strip_prefix("studio-worker-").unwrap_or(tag);
        let s = s.strip_prefix('v').unwrap_or(s);
        let s = s.split('+').next()?;
        let (core, pre) = match s.split_once('-') {
            Some((c, p)) if !p.is_empty() => (c, Some(p.to_string())),
            Some(_) => return None,
            None => (s, None),
        };
        let mut parts = core.split('.').map(|p| {
            (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<u64>().ok())
                .flatten()
        });
        let v = (parts.next()??, parts.next()??, parts.next()??);
        if parts.next().is_some() {
            return None;
        }
        Some(Self { core: v, pre })
    }

    /// True for a pre-release.
    pub fn is_pre(&self) -> bool {
        self.pre.is_some()
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b, c) = self.core;
        write!(f, "{a}.{b}.{c}")?;
        if let Some(p) = &self.pre {
            write!(f, "-{p}")?;
        }
        Ok(())
    }
}

/// semver precedence: the core, then a release above its pre-releases,
/// then pre-release identifiers (numeric ones numerically, below text).
impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.core
            .cmp(&other.core)
            .then_with(|| match (&self.pre, &other.pre) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => {
                    let mut x = a.split('.');
                    let mut y = b.split('.');
                    loop {
                        match (x.next(), y.next()) {
                            (None, None) => return Ordering::Equal,
                            (None, Some(_)) => return Ordering::Less,
                            (Some(_), None) => return Ordering::Greater,
                            (Some(p), Some(q)) => {
                                let o = match (p.parse::<u64>(), q.parse::<u64>()) {
                                    (Ok(m), Ok(n)) => m.cmp(&n),
                                    (Ok(_), Err(_)) => Ordering::Less,
                                    (Err(_), Ok(_)) => Ordering::Greater,
                                    (Err(_), Err(_)) => p.cmp(q),
                                };
                                if o != Ordering::Equal {
                                    return o;
                                }
                            }
                        }
                    }
                }
            })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One release as the feed gives it (the fields we read).
#[derive(Debug, Clone, Deserialize)]
pub struct Release {
    /// `v0.4.0`.
    pub tag_name: String,
    /// Drafts are never installed.
    #[serde(default)]
    pub draft: bool,
    /// Pre-releases only with `auto_update_prerelease`.
    #[serde(default)]
    pub prerelease: bool,
    /// The files.
    #[serde(default)]
    pub assets: Vec<Asset>,
}

/// A release file.
#[derive(Debug, Clone, Deserialize)]
pub struct Asset {
    /// File name.
    pub name: String,
    /// Where to download it.
    pub browser_download_url: String,
}

/// Parses a feed body: an array of releases or a single one.
pub fn parse(body: &str) -> Result<Vec<Release>, String> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Feed {
        Many(Vec<Release>),
        One(Box<Release>),
    }
    match serde_json::from_str::<Feed>(body) {
        Ok(Feed::Many(v)) => Ok(v),
        Ok(Feed::One(r)) => Ok(vec![*r]),
        Err(e) => Err(format!("not a GitHub releases feed: {e}")),
    }
}

/// A newer release this worker could install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its version.
    pub version: Version,
    /// The archive's name and URL.
    pub archive: (String, String),
    /// The `.sha256` sidecar's URL, when the release has one.
    pub digest_url: Option<String>,
}

/// The archive name for a version, target and variant.
pub fn archive_name(version: &Version, target: &str, variant: &str) -> String {
    let ext = if target.contains("windows") {
        "zip"
    } else {
        "tar.xz"
    };
    format!("studio-worker-{version}-{target}-{variant}.{ext}")
}

/// What the feed offers this worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Newest {
    /// Nothing newer than `current` (the newest seen, if any).
    UpToDate(Option<Version>),
    /// Newer, and installable.
    Newer(Candidate),
    /// Newer, but without an archive for this target and variant.
    NoArchive(Version, String),
}

/// The newest release above `current` (drafts skipped, pre-releases only
/// with `prerelease`, versions in `bad` skipped) and its archive for
/// `target` and `variant`.
pub fn newest(
    releases: &[Release],
    current: &Version,
    prerelease: bool,
    bad: &[String],
    target: &str,
    variant: &str,
) -> Newest {
    let best = releases
        .iter()
        .filter(|r| !r.draft && (prerelease || !r.prerelease))
        .filter_map(|r| Version::parse(&r.tag_name).map(|v| (v, r)))
        .filter(|(v, _)| prerelease || !v.is_pre())
        .filter(|(v, _)| !bad.contains(&v.to_string()))
        .max_by(|a, b| a.0.cmp(&b.0));
    let Some((version, release)) = best else {
        return Newest::UpToDate(None);
    };
    if version <= *current {
        return Newest::UpToDate(Some(version));
    }
    let name = archive_name(&version, target, variant);
    let Some(asset) = release.assets.iter().find(|a| a.name == name) else {
        return Newest::NoArchive(version, name);
    };
    let digest = format!("{name}.sha256");
    Newest::Newer(Candidate {
        digest_url: release
            .assets
            .iter()
            .find(|a| a.name == digest)
            .map(|a| a.browser_download_url.clone()),
        archive: (name, asset.browser_download_url.clone()),
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn tags_parse_in_three_spellings_and_junk_does_not() {
        assert_eq!(v("v1.2.3").core, (1, 2, 3));
        assert_eq!(v("1.2.3").core, (1, 2, 3));
        assert_eq!(v("studio-worker-v0.4.0").core, (0, 4, 0));
        assert_eq!(v("1.2.3-rc.1").pre.as_deref(), Some("rc.1"));
        for bad in ["", "v1.2", "1.2.3.4", "x1.2.3", "1.2.3-", "1..3", "v1.2.x"] {
            assert_eq!(Version::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn versions_order_as_semver_says() {
        let order = [
            "0.9.9",
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.10.0",
        ];
        for w in order.windows(2) {
            assert!(v(w[0]) < v(w[1]), "{} < {}", w[0], w[1]);
        }
    }

    fn feed() -> Vec<Release> {
        parse(
            r#"[
          {"tag_name": "v0.5.0", "draft": true, "assets": []},
          {"tag_name": "v0.4.1-rc.1", "prerelease": true, "assets": [
            {"name": "studio-worker-0.4.1-rc.1-x86_64-unknown-linux-gnu-cpu.tar.xz", "browser_download_url": "https://h/rc"}]},
          {"tag_name": "v0.4.0", "assets": [
            {"name": "studio-worker-0.4.0-x86_64-unknown-linux-gnu-cpu.tar.xz", "browser_download_url": "https://h/a"},
            {"name": "studio-worker-0.4.0-x86_64-unknown-linux-gnu-cpu.tar.xz.sha256", "browser_download_url": "https://h/a.sha256"},
            {"name": "studio-worker-0.4.0-x86_64-pc-windows-msvc-cpu.zip", "browser_download_url": "https://h/w"}]},
          {"tag_name": "nightly", "assets": []},
          {"tag_name": "v0.3.0", "assets": []}
        ]"#,
        )
        .unwrap()
    }

    #[test]
    fn the_newest_release_skips_drafts_and_pre_releases_unless_asked() {
        let linux = "x86_64-unknown-linux-gnu";
        match newest(&feed(), &v("0.3.0"), false, &[], linux, "cpu") {
            Newest::Newer(c) => {
                assert_eq!(c.version, v("0.4.0"));
                assert_eq!(c.archive.1, "https://h/a");
                assert_eq!(c.digest_url.as_deref(), Some("https://h/a.sha256"));
            }
            other => panic!("{other:?}"),
        }
        match newest(&feed(), &v("0.3.0"), true, &[], linux, "cpu") {
            Newest::Newer(c) => {
                assert_eq!(c.version, v("0.4.1-rc.1"));
                assert_eq!(c.digest_url, None, "no sidecar: the install refuses it");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            newest(&feed(), &v("0.4.0"), false, &[], linux, "cpu"),
            Newest::UpToDate(Some(v("0.4.0")))
        );
        assert_eq!(
            newest(&feed(), &v("0.3.0"), false, &["0.4.0".into()], linux, "cpu"),
            Newest::UpToDate(Some(v("0.3.0"))),
            "a version that failed here is not tried again"
        );
        assert!(matches!(
            newest(&feed(), &v("0.3.0"), false, &[], linux, "cuda"),
            Newest::NoArchive(_, name) if name.ends_with("-cuda.tar.xz")
        ));
        match newest(
            &feed(),
            &v("0.3.0"),
            false,
            &[],
            "x86_64-pc-windows-msvc",
            "cpu",
        ) {
            Newest::Newer(c) => assert_eq!(c.archive.1, "https://h/w"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_single_release_object_is_a_feed_too() {
        let one = parse(r#"{"tag_name": "v1.0.0", "assets": []}"#).unwrap();
        assert_eq!(one.len(), 1);
        assert!(parse("<html>").is_err());
    }
}
