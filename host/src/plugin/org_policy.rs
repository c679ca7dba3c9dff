//! Each organization's own access policy: a plugin version bound to the organization's
//! settings (`[organization.policy]`).
//!
//! The binding shares the plugin version's compiled code (one compiled component per plugin
//! file, however many organizations use it) and differs only in the settings `configure`
//! receives. It is rebuilt whenever the plugin's version or the organization's settings file
//! changes, and checked before it serves (`configure` takes the settings, the rehearsal batch is
//! decided). A binding that fails leaves the organization on its last good binding, or — when
//! it never had one — without a policy: its syncs then fail with the reason, and every other
//! organization keeps syncing. Unlike the `[sync]` policy, an organization's policy never falls
//! back to the built-in: settings written for one plugin mean nothing to another.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::{AccessPolicyPlugin, PluginErrorKind, Source};

/// What one organization's policy is made of; see [`OrgPolicyOptions::from_config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgPolicyOptions {
    pub organization: String,
    /// The plugin's name: a plugin of the directory, or the built-in's.
    pub plugin: String,
    pub settings: OrgSettings,
}

/// Where an organization's policy settings come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrgSettings {
    /// The plugin's own: its manifest's, or for the built-in `[sync.builtin_policy_settings]`.
    Plugin,
    /// A JSON object, from the configuration file.
    Inline(String),
    /// A TOML (or, named `.json`, JSON) file, re-read when it changes.
    File(PathBuf),
}

impl OrgPolicyOptions {
    /// One entry per organization with an `[organization.policy]` section.
    pub fn from_config(config: &crate::config::Config) -> Vec<Self> {
        config
            .organizations
            .iter()
            .filter_map(|org| {
                let policy = org.policy.as_ref()?;
                let settings = match (&policy.settings, &policy.settings_file) {
                    (Some(table), _) => OrgSettings::Inline(
                        serde_json::to_string(table).expect("a TOML table is valid JSON"),
                    ),
                    (None, Some(file)) => OrgSettings::File(file.clone()),
                    (None, None) => OrgSettings::Plugin,
                };
                Some(Self {
                    organization: org.name.clone(),
                    plugin: policy.plugin_name(&config.sync).to_owned(),
                    settings,
                })
            })
            .collect()
    }
}

/// Why an organization's policy could not be put in place, or was taken out of service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgPolicyFailure {
    pub kind: PluginErrorKind,
    /// Names the plugin file, the settings and the cause; not the organization.
    pub reason: String,
    pub at: SystemTime,
}

/// An organization has no policy to sync with.
#[derive(Debug, Clone, thiserror::Error)]
#[error("organization {organization:?}: {}", failure.reason)]
pub struct OrgPolicyError {
    pub organization: String,
    pub failure: OrgPolicyFailure,
}

/// What `easgate status`, the admin API and `/metrics` show of an organization's own policy.
#[derive(Clone)]
pub struct OrgPolicyStatus {
    pub organization: String,
    pub plugin: String,
    /// `"the plugin's own"`, `"inline"` or the settings file's path.
    pub settings: String,
    /// The serving binding, if any.
    pub active: Option<Arc<AccessPolicyPlugin>>,
    /// Why the latest plugin version or settings do not serve (with `active` set: the last
    /// good binding serves meanwhile).
    pub failure: Option<OrgPolicyFailure>,
}

/// Size and modification time of a settings file (`None`: absent or unreadable).
pub(super) type Stamp = Option<(u64, SystemTime)>;

pub(super) fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

/// One organization's binding, as the registry keeps it.
pub(super) struct Binding {
    pub options: OrgPolicyOptions,
    pub active: Option<Arc<AccessPolicyPlugin>>,
    /// What `active` replaced: it serves again if `active` is rolled back.
    pub previous: Option<Arc<AccessPolicyPlugin>>,
    /// The plugin version and settings last tried, to build only on a change.
    pub tried: Option<(Arc<AccessPolicyPlugin>, String)>,
    /// The settings file's stamp when last read, and what reading it gave.
    pub file: Option<(Stamp, Result<String, String>)>,
    pub failure: Option<OrgPolicyFailure>,
}

impl Binding {
    pub fn new(options: OrgPolicyOptions) -> Self {
        Self {
            options,
            active: None,
            previous: None,
            tried: None,
            file: None,
            failure: None,
        }
    }

    /// The settings for `version`: the organization's (its file read again only when its
    /// stamp changed), or the version's own.
    pub fn settings(&mut self, version: &AccessPolicyPlugin) -> Result<String, String> {
        match &self.options.settings {
            OrgSettings::Plugin => Ok(version.meta.settings.clone()),
            OrgSettings::Inline(json) => Ok(json.clone()),
            OrgSettings::File(path) => {
                let now = stamp(path);
                match &self.file {
                    Some((seen, read)) if *seen == now && now.is_some() => read.clone(),
                    _ => {
                        let read = read_settings(path);
                        self.file = Some((now, read.clone()));
                        read
                    }
                }
            }
        }
    }

    /// How the settings are named in messages.
    pub fn settings_origin(&self) -> String {
        match &self.options.settings {
            OrgSettings::Plugin => "the plugin's own".into(),
            OrgSettings::Inline(_) => "inline".into(),
            OrgSettings::File(path) => path.display().to_string(),
        }
    }

    /// Records `failure` and says so once: a failure already recorded is not logged again.
    pub fn fail(&mut self, kind: PluginErrorKind, reason: String) {
        let same = self
            .failure
            .as_ref()
            .is_some_and(|f| f.kind == kind && f.reason == reason);
        if !same {
            tracing::warn!(
                org = %self.options.organization,
                serving = ?self.active.as_ref().map(|p| p.meta.digest),
                "the organization's access policy cannot be put in place: {reason}"
            );
            self.failure = Some(OrgPolicyFailure {
                kind,
                reason,
                at: SystemTime::now(),
            });
        }
    }

    pub fn status(&self) -> OrgPolicyStatus {
        OrgPolicyStatus {
            organization: self.options.organization.clone(),
            plugin: self.options.plugin.clone(),
            settings: self.settings_origin(),
            active: self.active.clone(),
            failure: self.failure.clone(),
        }
    }
}

/// Names a plugin version's file in messages: its path, or "built-in".
pub fn file_of(source: &Source) -> String {
    match source {
        Source::Builtin => "built-in".into(),
        Source::File(path) => path.display().to_string(),
    }
}

/// Reads a settings file as the JSON object `configure` receives.
pub fn read_settings(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read the settings file {}: {err}", path.display()))?;
    if path.extension().is_some_and(|e| e == "json") {
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(value) if value.is_object() => Ok(value.to_string()),
            Ok(_) => Err(format!("{}: must hold a JSON object", path.display())),
            Err(err) => Err(format!(
                "{}:{}:{}: {err}",
                path.display(),
                err.line(),
                err.column()
            )),
        }
    } else {
        let table: toml::Table = toml::from_str(&text).map_err(|err| {
            let offset = err.span().map_or(0, |s| s.start).min(text.len());
            let line = text[..offset].matches('\n').count() + 1;
            format!("{}:{line}: {}", path.display(), err.message().trim())
        })?;
        Ok(serde_json::to_string(&table).expect("a TOML table is valid JSON"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_files_are_read_as_json_objects_and_errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let toml_file = dir.path().join("a.toml");
        std::fs::write(&toml_file, "includedGroups = [\"g1\"]\nnotify = false\n").unwrap();
        assert_eq!(
            read_settings(&toml_file).unwrap(),
            r#"{"includedGroups":["g1"],"notify":false}"#
        );
        std::fs::write(&toml_file, "notify = false\nincludedGroups = [\"g1\"\n").unwrap();
        let err = read_settings(&toml_file).unwrap_err();
        assert!(
            err.starts_with(&format!("{}:2: ", toml_file.display())),
            "{err}"
        );

        let json_file = dir.path().join("b.json");
        std::fs::write(&json_file, r#"{"notify": true}"#).unwrap();
        assert_eq!(read_settings(&json_file).unwrap(), r#"{"notify":true}"#);
        std::fs::write(&json_file, "[1]").unwrap();
        assert!(
            read_settings(&json_file)
                .unwrap_err()
                .contains("JSON object")
        );

        let missing = dir.path().join("c.toml");
        let err = read_settings(&missing).unwrap_err();
        assert!(
            err.contains("cannot read the settings file") && err.contains("c.toml"),
            "{err}"
        );
    }
}
