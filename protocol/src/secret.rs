//! A string that must never reach a log line.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::{Mutex, OnceLock};

/// A secret value (auth token, bootstrap token, registration secret).
///
/// Serialises as the plain string (it has to travel on the wire and into
/// the 0600 config file) but its `Debug` and `Display` print `***`, so a
/// `{:?}` of a frame or a config can never leak it.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret string.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is put on the wire. Every
    /// value exposed is remembered (see [`exposed`]), so reports that leave
    /// the machine can scrub it from any text it reached.
    pub fn expose(&self) -> &str {
        if !self.0.is_empty() {
            let mut seen = registry().lock().unwrap_or_else(|p| p.into_inner());
            if !seen.contains(&self.0) {
                seen.insert(self.0.clone());
            }
        }
        &self.0
    }

    /// True when the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn registry() -> &'static Mutex<BTreeSet<String>> {
    static SEEN: OnceLock<Mutex<BTreeSet<String>>> = OnceLock::new();
    SEEN.get_or_init(Default::default)
}

/// Every secret value this process has exposed so far.
pub fn exposed() -> Vec<String> {
    registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .cloned()
        .collect()
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("tok-very-secret");
        assert_eq!(format!("{s:?}"), "\"***\"");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(s.expose(), "tok-very-secret");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"tok-very-secret\"");
    }
}
