//! The manifest beside a plugin: `NAME.toml` next to `NAME.wasm`.
//!
//! ```toml
//! name = "byod-strict"        # optional, defaults to the file stem
//! world = "access-policy"     # or "notice-template"
//! [settings]                  # optional, handed to `configure` as a JSON object
//! minOsVersion = { iOS = "17.0" }
//! [limits]                    # optional
//! timeout_ms = 1000           # deadline of one call
//! memory_mib = 64             # largest memory the plugin may grow to
//! [[test]]                    # optional self-checks that must pass before activation
//! name = "unenrolled iPhone"
//! input = { eas = { device-id = "A1", device-type = "iPhone" } }
//! expect = { verdict = "block", reason = "not-enrolled" }
//! ```

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::World;
use super::engine::{Limits, MAX_MEMORY_MIB, MAX_TIMEOUT};
use super::json::TestCase;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(default)]
    pub name: Option<String>,
    pub world: World,
    #[serde(default)]
    pub settings: toml::Table,
    #[serde(default)]
    pub limits: ManifestLimits,
    #[serde(default, rename = "test")]
    pub tests: Vec<TestCase>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ManifestLimits {
    pub timeout_ms: Option<u64>,
    pub memory_mib: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("manifest {path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("manifest {path}: {message}")]
    Invalid { path: String, message: String },
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates a manifest; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ManifestError> {
        let manifest: Manifest = toml::from_str(text).map_err(|source| ManifestError::Parse {
            path: origin.to_owned(),
            source,
        })?;
        let invalid = |message: String| ManifestError::Invalid {
            path: origin.to_owned(),
            message,
        };
        if let Some(name) = &manifest.name {
            validate_name(name).map_err(invalid)?;
        }
        if let Some(ms) = manifest.limits.timeout_ms
            && (ms == 0 || Duration::from_millis(ms) > MAX_TIMEOUT)
        {
            return Err(invalid(format!(
                "limits.timeout_ms = {ms}: must be between 1 and {}",
                MAX_TIMEOUT.as_millis()
            )));
        }
        if let Some(mib) = manifest.limits.memory_mib
            && (mib == 0 || mib > MAX_MEMORY_MIB)
        {
            return Err(invalid(format!(
                "limits.memory_mib = {mib}: must be between 1 and {MAX_MEMORY_MIB}"
            )));
        }
        if manifest.world == World::NoticeTemplate && !manifest.tests.is_empty() {
            return Err(invalid(
                "[[test]] cases are for access policies; a notice template has none".into(),
            ));
        }
        Ok(manifest)
    }

    /// The manifest's settings as the JSON object `configure` receives.
    pub fn settings_json(&self) -> String {
        serde_json::to_string(&self.settings).expect("a TOML table is valid JSON")
    }

    /// The manifest's limits over `defaults`.
    pub fn limits(&self, defaults: Limits) -> Limits {
        Limits {
            timeout: self
                .limits
                .timeout_ms
                .map_or(defaults.timeout, Duration::from_millis),
            memory_bytes: self
                .limits
                .memory_mib
                .map_or(defaults.memory_bytes, |mib| (mib as usize) << 20),
        }
    }
}

/// Plugin names appear in file names, logs and URLs: keep them plain.
pub fn validate_name(name: &str) -> Result<(), String> {
    let plain = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if plain {
        Ok(())
    } else {
        Err(format!(
            "plugin name {name:?}: use 1 to 64 characters out of a-z, 0-9, '-' and '_', starting with a letter or digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::json::VerdictJson;

    #[test]
    fn parses_a_full_manifest() {
        let manifest = Manifest::parse(
            r#"
            name = "byod-strict"
            world = "access-policy"
            [settings]
            minOsVersion = { iOS = "17.0" }
            [limits]
            timeout_ms = 250
            memory_mib = 32
            [[test]]
            name = "unenrolled"
            input = { eas = { device-id = "A1", device-type = "iPhone" } }
            expect = { verdict = "block", reason = "not-enrolled" }
            "#,
            "byod-strict.toml",
        )
        .unwrap();
        assert_eq!(manifest.world, World::AccessPolicy);
        assert_eq!(
            manifest.settings_json(),
            r#"{"minOsVersion":{"iOS":"17.0"}}"#
        );
        let limits = manifest.limits(Limits::default());
        assert_eq!(limits.timeout, Duration::from_millis(250));
        assert_eq!(limits.memory_bytes, 32 << 20);
        assert_eq!(manifest.tests[0].expect.verdict, VerdictJson::Block);
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let cases = [
            ("world = \"access-polcy\"", "access-polcy"),
            ("world = \"access-policy\"\nsetings = {}", "setings"),
            (
                "world = \"access-policy\"\n[limits]\ntimeout_ms = 0",
                "timeout_ms",
            ),
            (
                "world = \"access-policy\"\n[limits]\nmemory_mib = 4096",
                "memory_mib",
            ),
            ("name = \"Bad Name\"\nworld = \"access-policy\"", "Bad Name"),
            ("name = \"x\"", "world"),
        ];
        for (text, needle) in cases {
            let err = Manifest::parse(text, "p.toml").unwrap_err().to_string();
            assert!(
                err.contains("p.toml") && err.contains(needle),
                "{text:?} gave {err}"
            );
        }
    }

    #[test]
    fn a_parse_error_gives_the_line() {
        let err = Manifest::parse("world = \"access-policy\"\n[limits\n", "p.toml").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}
