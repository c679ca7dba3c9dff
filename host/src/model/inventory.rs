//! What the discover (Exchange) and fetch (Graph) stages hand to match and plan: only the fields
//! the sync needs, independent of how the clients model the services' answers.
//!
//! Timestamps are Unix seconds (UTC), as in the plugin contract. Enums carry the services'
//! spellings in serde so the store can keep these records as JSON an operator can read.

use serde::{Deserialize, Serialize};

/// Exchange `DeviceAccessState`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AccessState {
    /// Exchange does not say.
    #[default]
    Unknown,
    /// May sync.
    Allowed,
    /// May not sync.
    Blocked,
    /// May not sync until an admin or the connector decides.
    Quarantined,
    /// Exchange has seen the device but not finished discovering it.
    DeviceDiscovery,
}

impl AccessState {
    /// Every state, in declaration order.
    pub const ALL: [AccessState; 5] = [
        AccessState::Unknown,
        AccessState::Allowed,
        AccessState::Blocked,
        AccessState::Quarantined,
        AccessState::DeviceDiscovery,
    ];

    /// Exchange's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessState::Unknown => "Unknown",
            AccessState::Allowed => "Allowed",
            AccessState::Blocked => "Blocked",
            AccessState::Quarantined => "Quarantined",
            AccessState::DeviceDiscovery => "DeviceDiscovery",
        }
    }

    /// Parses Exchange's spelling, ignoring case (PowerShell does).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(text))
    }
}

/// Exchange `DeviceAccessLevel`: the organization default and device access rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AccessLevel {
    /// Devices may sync.
    Allow,
    /// Devices may not sync.
    Block,
    /// Devices wait for a decision.
    Quarantine,
}

impl AccessLevel {
    /// Exchange's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessLevel::Allow => "Allow",
            AccessLevel::Block => "Block",
            AccessLevel::Quarantine => "Quarantine",
        }
    }

    /// Parses Exchange's spelling, ignoring case.
    pub fn parse(text: &str) -> Option<Self> {
        [
            AccessLevel::Allow,
            AccessLevel::Block,
            AccessLevel::Quarantine,
        ]
        .into_iter()
        .find(|l| l.as_str().eq_ignore_ascii_case(text))
    }
}

/// Intune `complianceState`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ComplianceState {
    /// Not evaluated yet; also Graph's `unknownFutureValue`, its marker for values added after
    /// a client was written.
    #[default]
    #[serde(alias = "unknownFutureValue")]
    Unknown,
    /// Meets every compliance policy.
    Compliant,
    /// Fails a compliance policy.
    Noncompliant,
    /// Policies disagree.
    Conflict,
    /// Evaluation failed.
    Error,
    /// Noncompliant, within the grace period the policy allows.
    InGracePeriod,
    /// Compliance is managed by Configuration Manager.
    ConfigManager,
}

/// Intune `managedDeviceOwnerType`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OwnerType {
    /// Not recorded; also Graph's `unknownFutureValue`.
    #[default]
    #[serde(alias = "unknownFutureValue")]
    Unknown,
    /// Corporate-owned.
    Company,
    /// Bring your own device.
    Personal,
}

/// What the connector does with a device: the policy's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// On the mailbox's allow list.
    Allow,
    /// On the mailbox's block list.
    Block,
    /// On neither list, so the organization default (Quarantine) applies.
    Quarantine,
    /// Left as Exchange has it.
    Exempt,
}

impl Verdict {
    /// Every verdict, in declaration order.
    pub const ALL: [Verdict; 4] = [
        Verdict::Allow,
        Verdict::Block,
        Verdict::Quarantine,
        Verdict::Exempt,
    ];

    /// The contract's spelling, also used in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Block => "block",
            Verdict::Quarantine => "quarantine",
            Verdict::Exempt => "exempt",
        }
    }

    /// Parses [`Verdict::as_str`]'s spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == text)
    }

    /// Whether this verdict takes mail access away (what the blast-radius guard counts).
    pub fn restricts(self) -> bool {
        matches!(self, Verdict::Block | Verdict::Quarantine)
    }
}

/// The identity of a device partnership across syncs: its Exchange `Identity`, lowercased.
///
/// Not the `DeviceId`: that is only unique per mailbox (one phone syncing two mailboxes has two
/// partnerships with the same `DeviceId`), while the plan, the store and the audit need one key
/// per partnership.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceKey(String);

impl DeviceKey {
    /// The key of the partnership Exchange names `identity`.
    pub fn new(identity: &str) -> Self {
        Self(identity.trim().to_lowercase())
    }

    /// The key as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The state Exchange will show for a device whose verdict no list edit can give it (a
/// quarantine under an allow rule or default), and Exchange's `DeviceAccessStateReason` for
/// it: what the store records once the edit is confirmed, instead of the verdict's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShownState {
    pub key: DeviceKey,
    pub level: AccessLevel,
    /// `DeviceRule` or `Global`.
    pub reason: String,
}

/// A set of device keys (or other normalized names) held as 128-bit digests instead of
/// strings: a few megabytes instead of tens at 100 000 keys, for sets a sync only asks
/// "is it in?". The digests are keyed at random per set, so nobody can craft two names that
/// share one; by chance, two of 100 000 names share one with a probability of about 10^-29.
#[derive(Debug, Clone, Default)]
pub struct KeyDigests {
    digests: std::collections::HashSet<u128>,
    keys: (std::hash::RandomState, std::hash::RandomState),
}

impl KeyDigests {
    fn digest(&self, name: &str) -> u128 {
        use std::hash::BuildHasher;
        (u128::from(self.keys.0.hash_one(name)) << 64) | u128::from(self.keys.1.hash_one(name))
    }

    /// Adds `name`; false when it was in already.
    pub fn insert(&mut self, name: &str) -> bool {
        self.digests.insert(self.digest(name))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.digests.contains(&self.digest(name))
    }

    /// An empty set with the same digest keys, whose names [`Self::absorb`] can move.
    pub fn empty_like(&self) -> Self {
        KeyDigests {
            digests: Default::default(),
            keys: self.keys.clone(),
        }
    }

    /// Moves the names of `other`, made by [`Self::empty_like`] of this set, into this one.
    pub fn absorb(&mut self, other: &mut KeyDigests) {
        self.digests.extend(other.digests.drain());
    }
}

impl<'a> FromIterator<&'a DeviceKey> for KeyDigests {
    fn from_iter<I: IntoIterator<Item = &'a DeviceKey>>(keys: I) -> Self {
        let mut set = KeyDigests::default();
        for key in keys {
            set.insert(key.as_str());
        }
        set
    }
}

/// One EAS device partnership as Exchange reports it (`Get-MobileDevice`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeDevice {
    /// `DeviceId`: the key of the mailbox allow and block lists.
    pub device_id: String,
    /// `Identity`, e.g. `alice\ExchangeActiveSyncDevices\iPhone§ABC`.
    pub identity: String,
    /// The `-Identity` of the owning mailbox as [`Mailbox::identity`] spells it; `None` when the
    /// mailbox is gone (the partnership outlived its user).
    pub mailbox: Option<String>,
    /// `DeviceType`.
    pub device_type: String,
    /// `DeviceModel`.
    pub device_model: String,
    /// `DeviceOS`.
    pub device_os: String,
    /// `DeviceUserAgent`.
    pub user_agent: String,
    /// `FirstSyncTime`.
    pub first_sync: Option<i64>,
    /// `LastSuccessSync` (`Get-MobileDeviceStatistics`), when fetched.
    pub last_success_sync: Option<i64>,
    /// `DeviceAccessState`.
    pub access_state: AccessState,
    /// `DeviceAccessStateReason` as Exchange spells it (`Individual`, `Global`, `DeviceRule`, ...).
    pub access_state_reason: String,
}

impl ExchangeDevice {
    /// This partnership's key.
    pub fn key(&self) -> DeviceKey {
        DeviceKey::new(&self.identity)
    }

    /// The mailbox part of a `Get-MobileDevice` `Identity`
    /// (`<mailbox>\ExchangeActiveSyncDevices\<name>`), which is the mailbox's `Get-CASMailbox`
    /// `Identity`: what discover puts in [`ExchangeDevice::mailbox`] when that mailbox exists.
    pub fn mailbox_of(identity: &str) -> Option<&str> {
        let (mailbox, rest) = identity.split_once('\\')?;
        let container = rest.split('\\').next()?;
        (container.eq_ignore_ascii_case("ExchangeActiveSyncDevices") && !mailbox.is_empty())
            .then_some(mailbox)
    }
}

/// A mailbox as `Get-CASMailbox` (and `Get-Mailbox` for the UPN) reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mailbox {
    /// What `Set-CASMailbox -Identity` is given for this mailbox; devices refer to it.
    pub identity: String,
    /// `PrimarySmtpAddress`.
    pub primary_smtp: String,
    /// `UserPrincipalName`, when discovery fetched it; matching falls back to the SMTP address.
    pub user_principal_name: Option<String>,
    /// `ActiveSyncAllowedDeviceIDs`, as Exchange spells the entries.
    pub allowed: Vec<String>,
    /// `ActiveSyncBlockedDeviceIDs`, as Exchange spells the entries.
    pub blocked: Vec<String>,
}

/// One Intune managed device (Graph `managedDevice`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedDevice {
    /// `id`.
    pub id: String,
    /// `easDeviceId`: Exchange's `DeviceId`, possibly in another case; empty when none.
    pub eas_device_id: String,
    /// `userPrincipalName`.
    pub user_principal_name: String,
    /// `deviceName`.
    pub device_name: String,
    /// `operatingSystem`.
    pub operating_system: String,
    /// `osVersion`.
    pub os_version: String,
    /// `complianceState`.
    pub compliance_state: ComplianceState,
    /// `managementState` as Graph spells it (`managed`, `retirePending`, ...): kept as text
    /// because Graph adds values over time.
    pub management_state: String,
    /// `managedDeviceOwnerType`.
    pub owner_type: OwnerType,
    /// `lastSyncDateTime`.
    pub last_sync: Option<i64>,
    /// `enrolledDateTime`.
    pub enrolled: Option<i64>,
}

/// `managementState` values of a device Intune is retiring, wiping or deleting.
const LEAVING_MANAGEMENT: &[&str] = &[
    "retirePending",
    "retireIssued",
    "wipePending",
    "wipeIssued",
    "deletePending",
];

impl ManagedDevice {
    /// Whether Intune is retiring (or wiping, or deleting) this device.
    pub fn is_leaving_management(&self) -> bool {
        LEAVING_MANAGEMENT
            .iter()
            .any(|s| s.eq_ignore_ascii_case(&self.management_state))
    }
}

/// A directory (Entra) user and the in-scope groups they are a transitive member of.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryUser {
    /// `userPrincipalName`.
    pub user_principal_name: String,
    /// Object ids of the in-scope groups the user belongs to.
    pub groups: Vec<String>,
    /// Graph `preferredLanguage` (BCP 47, e.g. `de-DE`): the language of the user's notices.
    /// Empty when the directory has none or the user was not listed with the in-scope groups.
    #[serde(default)]
    pub locale: String,
}

/// The most preferred of the Exchange `Languages` of each of [`Inventory::mailboxes`], by
/// position. An organization has a few distinct tags, so each mailbox holds a small index:
/// 100 000 mailboxes cost 200 kB, not a map of their identities.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailboxLanguages {
    /// The distinct tags.
    tags: Vec<String>,
    /// Per mailbox, in the order of the mailboxes: 1 + its tag's index in `tags`, 0 for none.
    of: Vec<u16>,
}

impl MailboxLanguages {
    /// Records the language of the next mailbox (`None` or blank: it has none).
    pub fn push(&mut self, tag: Option<&str>) {
        let tag = tag.map(str::trim).filter(|t| !t.is_empty());
        let index = match tag {
            None => 0,
            Some(tag) => match self.tags.iter().position(|t| t == tag) {
                Some(i) => i + 1,
                // Past u16's range (no real organization has that many cultures): none.
                None if self.tags.len() >= usize::from(u16::MAX) => 0,
                None => {
                    self.tags.push(tag.to_owned());
                    self.tags.len()
                }
            },
        };
        self.of.push(index as u16);
    }

    /// The language of the mailbox at `position`; empty when it has none.
    pub fn get(&self, position: usize) -> &str {
        match self.of.get(position) {
            Some(&i) if i > 0 => &self.tags[usize::from(i) - 1],
            _ => "",
        }
    }
}

/// Everything discover and fetch found for one organization.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// EAS partnerships.
    pub devices: Vec<ExchangeDevice>,
    /// The mailboxes those partnerships belong to.
    pub mailboxes: Vec<Mailbox>,
    /// Intune records.
    pub managed: Vec<ManagedDevice>,
    /// Users the mailboxes may belong to.
    pub users: Vec<DirectoryUser>,
    /// The most preferred of each mailbox's Exchange `Languages`: the notices' language when
    /// the directory has none.
    pub mailbox_languages: MailboxLanguages,
    /// True when `managed` holds the Intune record of every partnership in `devices` that has
    /// one: every record of the tenant (a full sync), or those of the partnerships a quick sync
    /// read, which it checked against a listing of every record's id. Only then does a record's
    /// absence mean Intune let go of a device that it managed before. A what-if run reads
    /// stored records and says false.
    pub managed_complete: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_languages_keep_each_mailboxs_tag_by_position() {
        let mut languages = MailboxLanguages::default();
        for tag in [
            Some("de-DE"),
            None,
            Some(" fr-CA "),
            Some("de-DE"),
            Some(""),
        ] {
            languages.push(tag);
        }
        let got: Vec<&str> = (0..6).map(|i| languages.get(i)).collect();
        assert_eq!(got, ["de-DE", "", "fr-CA", "de-DE", "", ""]);
        assert_eq!(languages.tags.len(), 2);
    }

    #[test]
    fn key_digests_tell_names_apart_and_move_between_sets_of_the_same_keys() {
        let keys: KeyDigests = [
            DeviceKey::new("Alice\\eas\\A1"),
            DeviceKey::new("bob\\eas\\b1"),
        ]
        .iter()
        .collect();
        assert!(keys.contains("alice\\eas\\a1") && keys.contains("bob\\eas\\b1"));
        assert!(!keys.contains("Alice\\eas\\A1"), "names are taken as given");
        assert!(!keys.contains("carol\\eas\\c1"));
        let mut earlier = keys.empty_like();
        assert!(!earlier.contains("alice\\eas\\a1"));
        let mut seen = earlier.empty_like();
        assert!(seen.insert("x"));
        assert!(!seen.insert("x"));
        earlier.absorb(&mut seen);
        assert!(earlier.contains("x") && !seen.contains("x"));
    }

    #[test]
    fn the_mailbox_is_the_first_part_of_a_device_identity() {
        assert_eq!(
            ExchangeDevice::mailbox_of("alice\\ExchangeActiveSyncDevices\\iPhone\u{a7}ABC"),
            Some("alice")
        );
        assert_eq!(
            ExchangeDevice::mailbox_of("Bob Smith\\exchangeactivesyncdevices\\x"),
            Some("Bob Smith")
        );
        assert_eq!(ExchangeDevice::mailbox_of("ABC"), None);
        assert_eq!(
            ExchangeDevice::mailbox_of("\\ExchangeActiveSyncDevices\\x"),
            None
        );
        assert_eq!(ExchangeDevice::mailbox_of("alice\\Other\\x"), None);
    }

    #[test]
    fn spellings_round_trip() {
        for state in AccessState::ALL {
            assert_eq!(
                AccessState::parse(&state.as_str().to_lowercase()),
                Some(state)
            );
        }
        for verdict in Verdict::ALL {
            assert_eq!(Verdict::parse(verdict.as_str()), Some(verdict));
        }
        assert_eq!(
            AccessLevel::parse("quarantine"),
            Some(AccessLevel::Quarantine)
        );
        let json = serde_json::to_string(&ComplianceState::InGracePeriod).unwrap();
        assert_eq!(json, "\"inGracePeriod\"");
    }
}
