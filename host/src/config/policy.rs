//! `[organization.policy]`: an organization's own access policy and settings.
//!
//! Group ids differ from one tenant to the next, so each organization may name its own policy
//! plugin and hand it its own settings; an organization without the section is decided by the
//! `[sync]` policy.
//!
//! ```toml
//! [organization.policy]
//! plugin = "byod-strict"                  # a plugin of sync.plugin_dir, or "access-policy"
//!                                         # (the built-in); default: sync.access_policy
//! settings_file = "contoso-policy.toml"   # relative to this file, TOML or JSON; watched
//! # or inline, instead of settings_file:
//! # [organization.policy.settings]
//! # includedGroups = ["5a0c1d7e-…"]
//! ```
//!
//! The settings file is not read here: it belongs to the organization alone, so a broken one
//! must fail that organization's syncs (the plugin registry says why), never the start-up.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::SyncConfig;
use crate::plugin::World;

/// `[organization.policy]`; see the module's documentation.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgPolicy {
    /// The policy plugin's name; `None`: `sync.access_policy`.
    pub plugin: Option<String>,
    /// The settings (a table, handed to the plugin as a JSON object).
    pub settings: Option<toml::Table>,
    /// A file holding the settings, read (and re-read when it changes) by the plugin registry.
    /// `.json` files hold a JSON object, any other a TOML table.
    pub settings_file: Option<PathBuf>,
}

impl OrgPolicy {
    /// The plugin this organization's policy runs, given the `[sync]` section.
    pub fn plugin_name<'a>(&'a self, sync: &'a SyncConfig) -> &'a str {
        self.plugin.as_deref().unwrap_or(&sync.access_policy)
    }

    /// Makes a relative settings file relative to the configuration's directory `dir`.
    pub(super) fn absolutize(&mut self, dir: &Path) {
        if let Some(file) = &mut self.settings_file
            && file.is_relative()
        {
            *file = dir.join(&*file);
        }
    }

    /// Checks the section of organization `at("policy")`: one way to give settings, a plugin
    /// name that can exist, a settings file that cannot be taken for a plugin's manifest.
    pub(super) fn validate(
        &self,
        at: impl Fn(&str) -> String,
        sync: &SyncConfig,
    ) -> Result<(), (String, String)> {
        if self.plugin.is_none() && self.settings.is_none() && self.settings_file.is_none() {
            return Err((
                at("policy"),
                "names neither a plugin nor settings: remove the section to use the [sync] \
                 policy, or add `plugin`, `settings` or `settings_file`"
                    .into(),
            ));
        }
        if self.settings.is_some() && self.settings_file.is_some() {
            return Err((
                at("policy.settings_file"),
                "contradicts policy.settings: give the settings inline or in a file, not both"
                    .into(),
            ));
        }
        if let Some(name) = &self.plugin {
            crate::plugin::manifest::validate_name(name).map_err(|m| (at("policy.plugin"), m))?;
            if sync.plugin_dir.is_none() && name != World::AccessPolicy.builtin_name() {
                return Err((
                    at("policy.plugin"),
                    format!(
                        "`{name}` can only come from the plugin directory, and [sync] names no \
                         plugin_dir; the built-in policy is \"{}\"",
                        World::AccessPolicy.builtin_name()
                    ),
                ));
            }
        }
        if let Some(file) = &self.settings_file {
            let json = file.extension().is_some_and(|e| e == "json");
            if !json && file.extension().is_none_or(|e| e != "toml") {
                return Err((
                    at("policy.settings_file"),
                    format!(
                        "{}: write the settings in a .toml or a .json file",
                        file.display()
                    ),
                ));
            }
            if !json && sync.plugin_dir.as_deref() == file.parent() {
                return Err((
                    at("policy.settings_file"),
                    format!(
                        "{}: a .toml file in the plugin directory is read as the manifest of \
                         the plugin of that name; keep settings files elsewhere (beside this \
                         configuration, say)",
                        file.display()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Refuses `read_device_statistics = false` for organization `i` when the built-in policy
/// deciding it has `blockStaleAfterDays`, which would then silently never fire. Only settings
/// written here are seen: a settings file is read by the plugin registry (the run says it),
/// and a plugin other than the built-in is never interpreted.
pub(super) fn check_stale_limit(
    i: usize,
    org: &super::Organization,
    sync: &SyncConfig,
) -> Result<(), (String, String)> {
    use crate::model::settings::STALE_LIMIT_KEY;
    let (plugin, settings, written) = match &org.policy {
        Some(policy) => match (&policy.settings, &policy.settings_file) {
            (Some(inline), _) => (
                policy.plugin_name(sync),
                inline,
                format!("organization[{i}].policy.settings.{STALE_LIMIT_KEY}"),
            ),
            (None, Some(_)) => return Ok(()),
            (None, None) => (
                policy.plugin_name(sync),
                &sync.builtin_policy_settings,
                format!("sync.builtin_policy_settings.{STALE_LIMIT_KEY}"),
            ),
        },
        None => (
            sync.access_policy.as_str(),
            &sync.builtin_policy_settings,
            format!("sync.builtin_policy_settings.{STALE_LIMIT_KEY}"),
        ),
    };
    if plugin != World::AccessPolicy.builtin_name() {
        return Ok(());
    }
    let json = serde_json::to_string(settings).unwrap_or_default();
    if !org.sync.starves_stale_limit(Some(&json)) {
        return Ok(());
    }
    let days = settings.get(STALE_LIMIT_KEY).map(ToString::to_string);
    Err((
        format!("organization[{i}].sync.read_device_statistics"),
        format!(
            "is false, but the built-in policy's `{written} = {}` needs each device's last \
             sync, so it would never block a device: remove `read_device_statistics = false` \
             (unset, the statistics are read because of {STALE_LIMIT_KEY}) or remove \
             {STALE_LIMIT_KEY}",
            days.unwrap_or_default()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{FULL, parse, place};
    use std::path::Path;

    /// The last organization of FULL with `policy` appended as its `[organization.policy]`.
    fn with_policy(head: &str, policy: &str) -> String {
        format!("{head}{FULL}\n[organization.policy]\n{policy}")
    }

    #[test]
    fn an_organization_names_its_plugin_and_settings() {
        let c = parse(&with_policy(
            "[sync]\nplugin_dir = \"plugins\"\n",
            "plugin = \"byod-strict\"\nsettings_file = \"fabrikam-policy.toml\"\n",
        ))
        .unwrap();
        assert_eq!(c.organizations[0].policy, None);
        let policy = c.organizations[1].policy.as_ref().unwrap();
        assert_eq!(policy.plugin_name(&c.sync), "byod-strict");
        assert_eq!(
            policy.settings_file.as_deref(),
            Some(Path::new("/etc/easgate/fabrikam-policy.toml"))
        );

        // Inline settings, and the [sync] policy's plugin when it names none.
        let c = parse(&with_policy(
            "",
            "[organization.policy.settings]\nincludedGroups = [\"g1\"]\n",
        ))
        .unwrap();
        let policy = c.organizations[1].policy.as_ref().unwrap();
        assert_eq!(policy.plugin_name(&c.sync), "access-policy");
        assert_eq!(
            serde_json::to_string(policy.settings.as_ref().unwrap()).unwrap(),
            r#"{"includedGroups":["g1"]}"#
        );
    }

    #[test]
    fn unknown_and_contradictory_keys_are_refused_with_their_line() {
        let line_of =
            |text: &str, start: &str| text.lines().position(|l| l.starts_with(start)).unwrap() + 1;
        let cases = [
            (
                with_policy(
                    "",
                    "plugin = \"access-policy\"\nsetings_file = \"x.toml\"\n",
                ),
                "organization[1].policy.setings_file",
                "setings_file",
                "unknown field",
            ),
            (
                with_policy(
                    "",
                    "settings_file = \"x.toml\"\n[organization.policy.settings]\nnotify = false\n",
                ),
                "organization[1].policy.settings_file",
                "settings_file",
                "not both",
            ),
            (
                with_policy("", "plugin = \"byod-strict\"\n"),
                "organization[1].policy.plugin",
                "plugin",
                "no plugin_dir",
            ),
            (
                with_policy("", "plugin = \"Bad Name\"\n"),
                "organization[1].policy.plugin",
                "plugin",
                "a-z",
            ),
            (
                with_policy("", "settings_file = \"contoso.yaml\"\n"),
                "organization[1].policy.settings_file",
                "settings_file",
                ".toml or a .json",
            ),
            (
                with_policy(
                    "[sync]\nplugin_dir = \"plugins\"\n",
                    "settings_file = \"plugins/byod-strict.toml\"\n",
                ),
                "organization[1].policy.settings_file",
                "settings_file",
                "manifest",
            ),
        ];
        for (text, field, key, needle) in cases {
            let (line, _, got, message) = place(parse(&text).unwrap_err());
            assert_eq!(got, field, "{text}");
            assert_eq!(line, line_of(&text, key), "{text}");
            assert!(message.contains(needle), "{message}");
        }

        // An empty section is a mistake too, said at its header.
        let text = with_policy("", "");
        let (line, _, field, message) = place(parse(&text).unwrap_err());
        assert_eq!(field, "organization[1].policy");
        assert_eq!(line, line_of(&text, "[organization.policy]"));
        assert!(message.contains("neither"), "{message}");
    }

    /// Issue 17: the built-in policy's `blockStaleAfterDays` with the statistics read turned
    /// off is refused at the `read_device_statistics` line, naming both keys and the fix;
    /// unset, or for a plugin of the directory, it loads.
    #[test]
    fn a_stale_limit_with_statistics_turned_off_is_refused_at_its_line() {
        let line_of =
            |text: &str, start: &str| text.lines().position(|l| l.starts_with(start)).unwrap() + 1;
        let off = "\n[organization.sync]\nread_device_statistics = false\n";
        let cases = [
            (
                format!("[sync.builtin_policy_settings]\nblockStaleAfterDays = 90\n{FULL}{off}"),
                "sync.builtin_policy_settings.blockStaleAfterDays = 90",
            ),
            (
                format!(
                    "{FULL}{off}[organization.policy]\nplugin = \"access-policy\"\n\
                     [organization.policy.settings]\nblockStaleAfterDays = 30\n"
                ),
                "organization[1].policy.settings.blockStaleAfterDays = 30",
            ),
        ];
        for (text, other) in cases {
            let (line, _, field, message) = place(parse(&text).unwrap_err());
            assert_eq!(field, "organization[1].sync.read_device_statistics");
            assert_eq!(line, line_of(&text, "read_device_statistics"), "{text}");
            assert!(
                message.contains(other) && message.contains("remove `read_device_statistics"),
                "{message}"
            );
        }
        // Unset: loads, and the run reads statistics for the limit.
        let unset = format!("[sync.builtin_policy_settings]\nblockStaleAfterDays = 90\n{FULL}");
        let c = parse(&unset).unwrap();
        let settings = c.sync.builtin_policy_json();
        assert!(c.organizations[1].sync.reads_statistics(Some(&settings)));
        // Another organization's policy from the plugin directory: its settings are its own.
        let foreign = format!(
            "[sync]\nplugin_dir = \"plugins\"\n{FULL}{off}[organization.policy]\n\
             plugin = \"byod-strict\"\n[organization.policy.settings]\nblockStaleAfterDays = 9\n"
        );
        parse(&foreign).unwrap();
    }
}
