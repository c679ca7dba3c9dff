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
    /// Whether a full sync sets the organization's `DefaultAccessLevel` to Quarantine. On by
    /// default because the quarantine verdict relies on it (a device on neither list gets the
    /// org default) and because the connector this replaces pushed its settings on every full
    /// sync; turn it off only where another tool owns that setting.
    pub manage_org_default: bool,
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
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            max_new_restrictions: RestrictionLimit::default(),
            manage_org_default: true,
            upn_overrides: BTreeMap::new(),
            remove_retired_partnerships: false,
            scope_groups: Vec::new(),
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
    fn defaults_manage_the_org_default_and_keep_partnerships() {
        let settings: SyncSettings = toml::from_str("").unwrap();
        assert_eq!(settings, SyncSettings::default());
        assert!(settings.manage_org_default);
        assert!(!settings.remove_retired_partnerships);
        assert!(toml::from_str::<SyncSettings>("max_new_restriction = 3").is_err());
    }
}
