//! `[sync]`: the store's and plugins' places, the active policy, digest pinning.

use std::path::PathBuf;

use serde::Deserialize;

use super::defaults;

/// `[sync]`: what every organization's sync shares.
///
/// ```toml
/// [sync]
/// data_dir = "data"                      # the store (easgate.db); relative to this file
/// plugin_dir = "plugins"                 # watched plugin files; absent: built-ins only
/// access_policy = "access-policy"        # the active policy's name (a file's, or the built-in)
/// # allowed_digests = ["sha256:…"]       # when set: only these directory plugins load
/// [sync.builtin_policy_settings]         # the built-in policy's settings (its README)
/// includedGroups = ["5a0c1d7e-…"]
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// The store's directory, created with owner-only access. Relative paths are taken from
    /// the configuration file's directory, so that a service and an operator's CLI run from
    /// elsewhere open the same store.
    pub data_dir: PathBuf,
    /// The plugin directory; `None` runs on the built-in plugins.
    pub plugin_dir: Option<PathBuf>,
    /// The active access policy's name.
    pub access_policy: String,
    /// Digest pinning: when set, a plugin of the directory (of either world) loads only if
    /// the sha256 of its `.wasm` is listed; any other version is rejected before it is
    /// compiled, and the last allowed version (or the built-in) keeps serving. The built-ins
    /// are part of the binary and always allowed. `None`: any valid plugin loads.
    pub allowed_digests: Option<Vec<String>>,
    /// The built-in access policy's settings (a table, handed to it as a JSON object).
    pub builtin_policy_settings: toml::Table,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(defaults::DATA_DIR),
            plugin_dir: None,
            access_policy: crate::plugin::World::AccessPolicy.builtin_name().to_owned(),
            allowed_digests: None,
            builtin_policy_settings: toml::Table::new(),
        }
    }
}

impl SyncConfig {
    /// The built-in policy's settings as the JSON object `configure` receives.
    pub fn builtin_policy_json(&self) -> String {
        serde_json::to_string(&self.builtin_policy_settings).unwrap_or_else(|_| "{}".into())
    }

    /// Every pinned digest is a plugin digest.
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        for (i, digest) in self.allowed_digests.iter().flatten().enumerate() {
            if crate::plugin::Digest::parse(digest).is_none() {
                return Err((
                    format!("sync.allowed_digests[{i}]"),
                    format!(
                        "`{digest}` is not a plugin digest: write \"sha256:\" and 64 hex digits, \
                         as `easgate policy check FILE` prints it"
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{FULL, parse, place};
    use std::path::Path;

    #[test]
    fn sync_sections_default_and_resolve_paths_beside_the_file() {
        let c = parse(FULL).unwrap();
        assert_eq!(c.sync.data_dir, Path::new("/etc/easgate/data"));
        assert_eq!(c.sync.plugin_dir, None);
        assert_eq!(c.sync.access_policy, "access-policy");
        assert_eq!(c.sync.builtin_policy_json(), "{}");
        assert_eq!(
            c.organizations[0].sync,
            crate::model::SyncSettings::default()
        );

        let text = format!(
            "[sync]\ndata_dir = \"state\"\nplugin_dir = \"/opt/plugins\"\n\
             [sync.builtin_policy_settings]\nincludedGroups = [\"g1\"]\n{FULL}\n\
             [organization.sync]\nmanage_org_default = false\nscope_groups = [\"g1\"]\n\
             max_new_restrictions = {{ percent = 5.0, floor = 10 }}\n\
             upn_overrides = {{ \"a@x.com\" = \"a@y.com\" }}\n"
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.sync.data_dir, Path::new("/etc/easgate/state"));
        assert_eq!(
            c.sync.plugin_dir.as_deref(),
            Some(Path::new("/opt/plugins"))
        );
        assert_eq!(c.sync.builtin_policy_json(), r#"{"includedGroups":["g1"]}"#);
        // The section belongs to the last organization.
        let s = &c.organizations[1].sync;
        assert_eq!(s.org_default(), None);
        assert_eq!(s.scope_groups, ["g1"]);
        assert_eq!(s.max_new_restrictions.floor, 10);
        assert_eq!(s.upn_overrides["a@x.com"], "a@y.com");
        assert_eq!(
            c.organizations[0].sync.org_default(),
            Some(crate::model::AccessLevel::Quarantine)
        );

        let both = format!(
            "{FULL}\n[organization.sync]\ndefault_access_level = \"block\"\nmanage_org_default = true\n"
        );
        let (_, _, field, message) = place(parse(&both).unwrap_err());
        assert_eq!(field, "organization[1].sync.manage_org_default");
        assert!(message.contains("default_access_level"), "{message}");

        let typo = format!("{FULL}\n[organization.sync]\nmanage_org_defaults = false\n");
        let (_, _, field, _) = place(parse(&typo).unwrap_err());
        assert!(field.contains("sync"), "{field}");
    }

    #[test]
    fn allowed_digests_must_be_sha256_digests() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let pinned = format!("[sync]\nallowed_digests = [\"{digest}\"]\n{FULL}");
        assert_eq!(
            parse(&pinned).unwrap().sync.allowed_digests,
            Some(vec![digest.clone()])
        );
        assert_eq!(parse(FULL).unwrap().sync.allowed_digests, None);
        let bad = format!("[sync]\nallowed_digests = [\"{digest}\", \"ab12\"]\n{FULL}");
        let (line, _, field, message) = place(parse(&bad).unwrap_err());
        assert_eq!(field, "sync.allowed_digests[1]");
        assert_eq!(line, 2);
        assert!(
            message.contains("\"ab12\"") || message.contains("`ab12`"),
            "{message}"
        );
    }
}
