//! The sync's own settings, with their defaults in one place. The configuration file maps onto
//! this struct; tests build it as a literal or from [`SyncSettings::default`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How the sync behaves for one organization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncSettings {
    /// The blast-radius guard: how many devices one plan may move from allowed to blocked or
    /// quarantined before it is held for an operator's approval.
    pub max_new_restrictions: RestrictionLimit,
    /// The organization's `DefaultAccessLevel`, set by a full sync when Exchange has another
    /// one. Unset: Quarantine (see [`SyncSettings::org_default`]), because the quarantine
    /// verdict relies on it (a device on neither list gets the default) and because the
    /// connector this replaces pushed it on every full sync. `Unmanaged` leaves Exchange's
    /// value alone, for where another tool owns it.
    pub default_access_level: Option<DefaultAccess>,
    /// The key `default_access_level` replaces, still read so that existing configurations
    /// keep their meaning: `true` is `"quarantine"`, `false` is `"unmanaged"`. Setting both is
    /// refused ([`SyncSettings::validate`]).
    pub manage_org_default: Option<bool>,
    /// Intune's `overrideDefaultRule`: whether a device the policy allows is put on its
    /// mailbox's allow list even where a device access rule or the organization default would
    /// block it (on, the default: compliance wins). Off: such a device is left on no list, so
    /// the rule or the default that blocks it keeps it blocked; elsewhere an allowed device is
    /// listed as before.
    pub override_default_rule: bool,
    /// Mailbox primary SMTP address → the user's UPN, for users whose addresses differ. Keys
    /// compare ignoring case.
    pub upn_overrides: BTreeMap<String, String>,
    /// Whether the partnerships of devices Intune retired are removed from Exchange
    /// (`Remove-MobileDevice`). Off by default: removing a partnership deletes Exchange's record
    /// of the device, which an admin may not expect from an access-control tool.
    pub remove_retired_partnerships: bool,
    /// Object ids of the groups the access policy scopes by (the built-in policy's
    /// `includedGroups` and `excludedGroups`): the sync fetches their transitive members and
    /// lists them in each user's `groups`. Empty (the default) fetches no group.
    pub scope_groups: Vec<String>,
    /// `AdminMailRecipients` of the ActiveSync organization settings, set by a full sync when
    /// Exchange has other ones. Unset (the default): Exchange's value is left alone; an empty
    /// list clears it.
    pub admin_mail_recipients: Option<Vec<String>>,
    /// `UserMailInsert` (the text Exchange adds to its own quarantine mails), set by a full sync
    /// when it differs. Unset: left alone.
    pub user_mail_insert: Option<String>,
    /// The organization's device access rules, exactly: a full sync creates the missing ones
    /// and removes the others (a rule whose level differs is removed and created again). Unset:
    /// the rules are not read and left alone; an empty list removes every rule.
    pub device_access_rules: Option<Vec<DeviceAccessRule>>,
    /// Whether each device the sync decides gets its `LastSuccessSync` read
    /// (`Get-MobileDeviceStatistics`, one request per mailbox of the devices decided) for the
    /// policy's `last-success-sync`: it costs a full sync a request per mailbox more. Unset:
    /// read exactly when the built-in policy decides with `blockStaleAfterDays` set (see
    /// [`SyncSettings::reads_statistics`]); a third-party plugin's settings are never
    /// interpreted, so for one it must be set to `true`.
    pub read_device_statistics: Option<bool>,
}

/// `default_access_level`: the organization default a full sync keeps Exchange at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultAccess {
    Allow,
    Block,
    Quarantine,
    /// Exchange's value is left alone.
    Unmanaged,
}

impl SyncSettings {
    /// The `DefaultAccessLevel` a full sync sets; `None`: left alone.
    pub fn org_default(&self) -> Option<super::inventory::AccessLevel> {
        use super::inventory::AccessLevel;
        let chosen = match (self.default_access_level, self.manage_org_default) {
            (Some(chosen), _) => chosen,
            (None, Some(false)) => DefaultAccess::Unmanaged,
            (None, Some(true) | None) => DefaultAccess::Quarantine,
        };
        match chosen {
            DefaultAccess::Allow => Some(AccessLevel::Allow),
            DefaultAccess::Block => Some(AccessLevel::Block),
            DefaultAccess::Quarantine => Some(AccessLevel::Quarantine),
            DefaultAccess::Unmanaged => None,
        }
    }

    /// Whether a run reads device statistics. `builtin_policy_settings`: the settings (a JSON
    /// object) of the policy deciding the run when it is the built-in one, `None` for any
    /// other plugin. Unset, it follows the built-in policy's `blockStaleAfterDays`, which
    /// never fires without them.
    pub fn reads_statistics(&self, builtin_policy_settings: Option<&str>) -> bool {
        self.read_device_statistics
            .unwrap_or_else(|| builtin_policy_settings.is_some_and(sets_stale_limit))
    }

    /// Whether statistics are turned off while the built-in policy's `blockStaleAfterDays`
    /// needs them: a limit that would silently never fire.
    pub fn starves_stale_limit(&self, builtin_policy_settings: Option<&str>) -> bool {
        self.read_device_statistics == Some(false)
            && builtin_policy_settings.is_some_and(sets_stale_limit)
    }

    /// The old and the new key for the org default are not both set: which one would win is
    /// not something an admin should have to guess. The error names the field (relative to
    /// `[organization.sync]`) and the fix.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if let (Some(new), Some(old)) = (self.default_access_level, self.manage_org_default) {
            let same = if old { "quarantine" } else { "unmanaged" };
            let new = serde_json::to_value(new).unwrap_or_default();
            return Err((
                "manage_org_default".into(),
                format!(
                    "is replaced by `default_access_level` (here {new}): remove it \
                     (`manage_org_default = {old}` means `default_access_level = \"{same}\"`)"
                ),
            ));
        }
        Ok(())
    }
}

/// The built-in policy's key whose verdicts need the devices' statistics.
pub const STALE_LIMIT_KEY: &str = "blockStaleAfterDays";

/// Whether the built-in policy's settings (a JSON object) set `blockStaleAfterDays`. Settings
/// that are not a JSON object set nothing (the policy refuses them itself).
pub fn sets_stale_limit(builtin_policy_settings: &str) -> bool {
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(builtin_policy_settings)
        .is_ok_and(|o| o.get(STALE_LIMIT_KEY).is_some_and(|v| !v.is_null()))
}

/// One device access rule (`New-ActiveSyncDeviceAccessRule`): Intune's platform exceptions
/// (a device family is a `DeviceType` rule, a model a `DeviceModel` rule). Rules decide the
/// devices that no mailbox list names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceAccessRule {
    /// What the rule matches, e.g. `iPhone`.
    pub query_string: String,
    /// What it matches on.
    pub characteristic: RuleCharacteristic,
    /// What matching devices get.
    pub access_level: super::inventory::AccessLevel,
}

/// `-Characteristic` of a device access rule, as Exchange spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RuleCharacteristic {
    DeviceType,
    DeviceModel,
    DeviceOS,
    UserAgent,
    XMSWLHeader,
}

impl RuleCharacteristic {
    /// Exchange's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DeviceType => "DeviceType",
            Self::DeviceModel => "DeviceModel",
            Self::DeviceOS => "DeviceOS",
            Self::UserAgent => "UserAgent",
            Self::XMSWLHeader => "XMSWLHeader",
        }
    }
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            max_new_restrictions: RestrictionLimit::default(),
            default_access_level: None,
            manage_org_default: None,
            override_default_rule: true,
            upn_overrides: BTreeMap::new(),
            remove_retired_partnerships: false,
            scope_groups: Vec::new(),
            admin_mail_recipients: None,
            user_mail_insert: None,
            device_access_rules: None,
            read_device_statistics: None,
        }
    }
}

/// The blast-radius limit: a share of the organization's devices, but never below a floor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestrictionLimit {
    /// Percent of the organization's EAS devices (default 10).
    pub percent: f64,
    /// The limit is at least this many devices (default 25), so that in a small organization an
    /// ordinary day's handful of newly noncompliant phones is not held.
    pub floor: usize,
}

impl Default for RestrictionLimit {
    fn default() -> Self {
        Self {
            percent: 10.0,
            floor: 25,
        }
    }
}

impl RestrictionLimit {
    /// How many new restrictions a plan for an organization of `devices` devices may carry.
    pub fn limit(&self, devices: usize) -> usize {
        let share = (devices as f64 * self.percent.max(0.0) / 100.0).ceil() as usize;
        share.max(self.floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchange_settings_are_unmanaged_unless_configured() {
        let unset: SyncSettings = toml::from_str("").unwrap();
        assert_eq!(unset.admin_mail_recipients, None);
        assert_eq!(unset.user_mail_insert, None);
        assert_eq!(unset.device_access_rules, None);
        let set: SyncSettings = toml::from_str(
            r#"admin_mail_recipients = []
               user_mail_insert = "Call 4711"
               device_access_rules = [
                 { query_string = "iPhone", characteristic = "DeviceModel", access_level = "Block" },
               ]"#,
        )
        .unwrap();
        assert_eq!(set.admin_mail_recipients, Some(vec![]));
        assert_eq!(
            set.device_access_rules,
            Some(vec![DeviceAccessRule {
                query_string: "iPhone".into(),
                characteristic: RuleCharacteristic::DeviceModel,
                access_level: crate::model::AccessLevel::Block,
            }])
        );
        let typo = toml::from_str::<SyncSettings>(
            r#"device_access_rules = [{ query_string = "x", characteristic = "Model", access_level = "Block" }]"#,
        );
        assert!(typo.is_err());
    }

    #[test]
    fn the_limit_is_the_share_but_never_below_the_floor() {
        let limit = RestrictionLimit::default();
        assert_eq!(limit.limit(0), 25);
        assert_eq!(limit.limit(100), 25);
        assert_eq!(limit.limit(1_000), 100);
        assert_eq!(limit.limit(1_001), 101);
        let strict = RestrictionLimit {
            percent: 0.0,
            floor: 0,
        };
        assert_eq!(strict.limit(5_000), 0);
    }

    #[test]
    fn the_org_default_from_the_new_key_or_the_old_one_never_both() {
        use crate::model::AccessLevel;
        let read = |text: &str| toml::from_str::<SyncSettings>(text).unwrap();
        let rows = [
            ("", Some(AccessLevel::Quarantine)),
            ("default_access_level = \"block\"", Some(AccessLevel::Block)),
            ("default_access_level = \"allow\"", Some(AccessLevel::Allow)),
            (
                "default_access_level = \"quarantine\"",
                Some(AccessLevel::Quarantine),
            ),
            ("default_access_level = \"unmanaged\"", None),
            ("manage_org_default = true", Some(AccessLevel::Quarantine)),
            ("manage_org_default = false", None),
        ];
        for (text, want) in rows {
            let settings = read(text);
            assert_eq!(settings.org_default(), want, "{text}");
            assert_eq!(settings.validate(), Ok(()), "{text}");
        }
        let both = read("default_access_level = \"allow\"\nmanage_org_default = false");
        let (field, message) = both.validate().unwrap_err();
        assert_eq!(field, "manage_org_default");
        assert!(
            message.contains("default_access_level = \"unmanaged\"")
                && message.contains("\"allow\""),
            "{message}"
        );
        assert!(toml::from_str::<SyncSettings>("default_access_level = \"Deny\"").is_err());
    }

    #[test]
    fn defaults_manage_the_org_default_and_keep_partnerships() {
        let settings: SyncSettings = toml::from_str("").unwrap();
        assert_eq!(settings, SyncSettings::default());
        assert_eq!(
            settings.org_default(),
            Some(crate::model::AccessLevel::Quarantine)
        );
        assert!(settings.override_default_rule);
        assert!(!settings.remove_retired_partnerships);
        assert!(toml::from_str::<SyncSettings>("max_new_restriction = 3").is_err());
    }

    /// Issue 17: `blockStaleAfterDays` of the built-in policy turns the statistics read on
    /// unless the organization says otherwise; another plugin's settings mean nothing here.
    #[test]
    fn the_built_in_stale_limit_turns_the_statistics_read_on_unless_told_otherwise() {
        let read = |text: &str| toml::from_str::<SyncSettings>(text).unwrap();
        let stale = Some(r#"{"blockStaleAfterDays": 90, "notify": true}"#);
        let (unset, on, off) = (
            read(""),
            read("read_device_statistics = true"),
            read("read_device_statistics = false"),
        );
        assert!(unset.reads_statistics(stale));
        assert!(!unset.reads_statistics(Some(r#"{"notify": true}"#)));
        assert!(!unset.reads_statistics(Some(r#"{"blockStaleAfterDays": null}"#)));
        assert!(!unset.reads_statistics(Some("not json")));
        // A third-party plugin (no built-in settings) is never second-guessed.
        assert!(!unset.reads_statistics(None));
        assert!(on.reads_statistics(None));
        assert!(!off.reads_statistics(stale));
        assert!(off.starves_stale_limit(stale));
        assert!(!unset.starves_stale_limit(stale) && !on.starves_stale_limit(stale));
        assert!(!off.starves_stale_limit(None));
    }
}
