//! The simulated organization: mailboxes, EAS device partnerships, Intune managed devices, Entra
//! groups, device access rules and the ActiveSync organization settings — one in-memory model
//! that both the Exchange and the Graph side read, so the two always describe the same world.
//!
//! Storage is chosen for a 100 000-device lab: devices live in a `Vec` indexed by a sequence
//! number that only grows (paging resumes "after sequence n", so removals never shift a page),
//! strings that can be derived (IMEI, serial numbers, user agents) are derived on demand from a
//! per-device seed, and lookups go through lowercase-keyed maps because both services compare
//! identities case-insensitively.
//!
//! The Exchange access state of every device is stored, not computed per read: it is recomputed
//! (by `exchange::access`) whenever something it depends on changes, which is also when Exchange
//! bumps the device's `WhenChanged`.

use std::collections::HashMap;

use crate::dataset::{self, Profile};
use crate::exchange::access;
use crate::random::{Guid, Rng};
use crate::utc::Utc;

/// Declares an enum whose variants are spelled as one of the services spells them, with
/// case-insensitive parsing (PowerShell and OData both accept any case for these names).
macro_rules! spelled_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The service's spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses the service's spelling, ignoring case.
            pub fn parse(text: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str().eq_ignore_ascii_case(text))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                Self::parse(&text).ok_or_else(|| {
                    let known: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                    serde::de::Error::custom(format!(
                        "unknown {} `{text}`, expected one of {}",
                        stringify!($name),
                        known.join(", ")
                    ))
                })
            }
        }
    };
}

spelled_enum! {
    /// Exchange `DeviceAccessState`.
    pub enum AccessState {
        Unknown = "Unknown",
        Allowed = "Allowed",
        Blocked = "Blocked",
        Quarantined = "Quarantined",
        DeviceDiscovery = "DeviceDiscovery",
    }
}

spelled_enum! {
    /// Exchange `DeviceAccessStateReason` (the values the lab produces; Exchange has more).
    pub enum AccessReason {
        Unknown = "Unknown",
        Global = "Global",
        Individual = "Individual",
        DeviceRule = "DeviceRule",
        Upgrade = "Upgrade",
        Policy = "Policy",
    }
}

spelled_enum! {
    /// Exchange `DeviceAccessLevel`, used by the org default and by device access rules.
    pub enum AccessLevel {
        Allow = "Allow",
        Block = "Block",
        Quarantine = "Quarantine",
    }
}

spelled_enum! {
    /// What a device access rule matches on (`-Characteristic`).
    pub enum Characteristic {
        DeviceType = "DeviceType",
        DeviceModel = "DeviceModel",
        DeviceOS = "DeviceOS",
        UserAgent = "UserAgent",
        XMSWLHeader = "XMSWLHeader",
    }
}

spelled_enum! {
    /// Graph `complianceState`.
    pub enum ComplianceState {
        Unknown = "unknown",
        Compliant = "compliant",
        Noncompliant = "noncompliant",
        Conflict = "conflict",
        Error = "error",
        InGracePeriod = "inGracePeriod",
        ConfigManager = "configManager",
    }
}

spelled_enum! {
    /// Graph `managedDeviceOwnerType`.
    pub enum OwnerType {
        Unknown = "unknown",
        Company = "company",
        Personal = "personal",
    }
}

spelled_enum! {
    /// Graph `managementState` (listed by DESIGN.md; Graph's beta schema documents it).
    pub enum ManagementState {
        Managed = "managed",
        RetirePending = "retirePending",
        RetireFailed = "retireFailed",
        WipePending = "wipePending",
        WipeFailed = "wipeFailed",
        Unhealthy = "unhealthy",
        DeletePending = "deletePending",
        RetireIssued = "retireIssued",
        WipeIssued = "wipeIssued",
        WipeCanceled = "wipeCanceled",
        RetireCanceled = "retireCanceled",
        Discovered = "discovered",
    }
}

impl AccessState {
    /// Graph `exchangeAccessState` for this Exchange state.
    pub fn graph(self) -> &'static str {
        match self {
            AccessState::Allowed => "allowed",
            AccessState::Blocked => "blocked",
            AccessState::Quarantined => "quarantined",
            AccessState::Unknown | AccessState::DeviceDiscovery => "unknown",
        }
    }
}

impl AccessReason {
    /// Graph `exchangeAccessStateReason` for this Exchange reason.
    pub fn graph(self) -> &'static str {
        match self {
            AccessReason::Unknown => "unknown",
            AccessReason::Global => "exchangeGlobalRule",
            AccessReason::Individual => "exchangeIndividualRule",
            AccessReason::DeviceRule => "exchangeDeviceRule",
            AccessReason::Upgrade => "exchangeUpgrade",
            AccessReason::Policy => "exchangeMailboxPolicy",
        }
    }
}

impl AccessLevel {
    /// The state a device gets when this level applies to it.
    pub fn state(self) -> AccessState {
        match self {
            AccessLevel::Allow => AccessState::Allowed,
            AccessLevel::Block => AccessState::Blocked,
            AccessLevel::Quarantine => AccessState::Quarantined,
        }
    }
}

/// Names and identifiers of the simulated tenant.
#[derive(Debug, Clone)]
pub struct Tenant {
    /// Display name of the organization, e.g. "Contoso".
    pub organization: String,
    /// The mail domain (`contoso.com`).
    pub domain: String,
    /// The initial Entra domain (`contoso.onmicrosoft.com`); Exchange Online accepts it in place of
    /// the tenant GUID in the admin API path, and the token endpoint accepts both too.
    pub initial_domain: String,
    pub tenant_id: Guid,
    /// The app registration the connector signs in with (client credentials).
    pub client_id: Guid,
    pub client_secret: String,
}

impl Tenant {
    /// Whether `text` names this tenant (GUID or initial domain, any case).
    pub fn is(&self, text: &str) -> bool {
        Guid::parse(text) == Some(self.tenant_id) || text.eq_ignore_ascii_case(&self.initial_domain)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Mailbox {
    pub alias: Box<str>,
    pub display_name: Box<str>,
    pub upn: Box<str>,
    pub primary_smtp: Box<str>,
    /// Exchange object GUID.
    pub guid: Guid,
    /// Entra object id: `ExternalDirectoryObjectId` on Exchange, `id` of the Graph user.
    pub user_id: Guid,
    pub department: u8,
    /// Graph `preferredLanguage` (BCP 47); `None` is Graph's `null`, what most users have.
    pub preferred_language: Option<&'static str>,
    /// Exchange's `Languages` of the mailbox (culture names, most preferred first); empty for
    /// many mailboxes, as in real organizations.
    pub languages: &'static [&'static str],
    pub allowed: Vec<Box<str>>,
    pub blocked: Vec<Box<str>>,
    pub active_sync_enabled: bool,
    /// Sequence numbers of this mailbox's EAS devices, ascending.
    pub devices: Vec<u32>,
    pub when_created: Utc,
    pub when_changed: Utc,
    /// `Set-CASMailbox` commands that changed this mailbox's lists (refused ones and repeats
    /// that change nothing don't count): what fault drills compare with the connector's journal
    /// to see no edit lost or applied twice.
    pub edits_applied: u64,
}

/// The user a device partnership or Intune record belongs to.
#[derive(Debug, Clone)]
pub(crate) enum Owner {
    Mailbox(u32),
    /// The mailbox is gone (user left); Exchange keeps the partnership object, Intune may keep the
    /// record. Such devices can't be targeted through `Set-CASMailbox`.
    Departed(Box<Departed>),
    /// Intune records without a user (userless enrollment).
    Nobody,
}

#[derive(Debug, Clone)]
pub(crate) struct Departed {
    pub alias: Box<str>,
    pub display_name: Box<str>,
    pub upn: Box<str>,
    pub user_id: Guid,
}

/// One Exchange ActiveSync device partnership (what `Get-MobileDevice` lists).
#[derive(Debug, Clone)]
pub(crate) struct EasDevice {
    pub seq: u32,
    pub device_id: Box<str>,
    pub owner: Owner,
    pub profile: u16,
    pub build: u8,
    pub guid: Guid,
    /// Seed of the values derived on demand (IMEI, phone number, serial).
    pub derive: u64,
    pub first_sync: Utc,
    pub last_sync: Utc,
    pub when_changed: Utc,
    /// False while Exchange has not yet learnt the device's model: state `DeviceDiscovery`.
    pub discovered: bool,
    pub state: AccessState,
    pub reason: AccessReason,
    /// Index into `Org::rules` of the rule that decided, when `reason` is `DeviceRule`.
    pub rule: Option<u16>,
    /// A remote wipe `Clear-MobileDevice` asked for and the device has not yet carried out
    /// (lab devices never sync, so it stays pending). Boxed: almost every device has none.
    pub wipe: Option<Box<WipeRequest>>,
}

/// A pending remote wipe, as `Get-MobileDeviceStatistics` shows it (`Status =
/// DeviceWipePending`, `DeviceWipeRequestTime` or `AccountOnlyDeviceWipeRequestTime`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WipeRequest {
    #[serde(with = "utc_text")]
    pub requested: Utc,
    /// `-AccountOnly`: only the mail account's data is removed.
    pub account_only: bool,
}

impl EasDevice {
    pub fn profile(&self) -> &'static Profile {
        &dataset::PROFILES[usize::from(self.profile)]
    }
}

/// One Intune managed device (what `GET /deviceManagement/managedDevices` lists).
#[derive(Debug, Clone)]
pub(crate) struct ManagedDevice {
    pub seq: u32,
    pub id: Guid,
    pub azure_ad_device_id: Guid,
    pub owner: Owner,
    /// As Intune spells it; may differ in case from Exchange's `DeviceId`. Empty when the device
    /// has no EAS partnership.
    pub eas_device_id: Box<str>,
    /// The EAS partnership this record is linked to, while it exists.
    pub eas_seq: Option<u32>,
    pub profile: u16,
    pub build: u8,
    pub derive: u64,
    pub compliance: ComplianceState,
    pub owner_type: OwnerType,
    pub management_state: ManagementState,
    pub enrolled: Utc,
    pub last_sync: Utc,
    pub eas_activated_at: Utc,
    pub grace_expiry: Utc,
}

impl ManagedDevice {
    pub fn profile(&self) -> &'static Profile {
        &dataset::PROFILES[usize::from(self.profile)]
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub id: Guid,
    pub display_name: Box<str>,
    pub mail_nickname: Box<str>,
    /// Direct user members (mailbox indexes).
    pub users: Vec<u32>,
    /// Direct nested groups (indexes into `Org::groups`).
    pub groups: Vec<u32>,
}

#[derive(Debug, Clone)]
pub(crate) struct DeviceRule {
    pub guid: Guid,
    pub characteristic: Characteristic,
    pub query: Box<str>,
    pub level: AccessLevel,
    pub when_created: Utc,
    pub when_changed: Utc,
}

impl DeviceRule {
    /// Exchange names a rule after what it matches: `iPhone (DeviceType)`.
    pub fn name(&self) -> String {
        format!("{} ({})", self.query, self.characteristic)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct OrgSettings {
    pub default_access: AccessLevel,
    pub admin_mail_recipients: Vec<Box<str>>,
    pub user_mail_insert: Box<str>,
    pub ota_notification_mail_insert: Box<str>,
    pub allow_access_for_unsupported_platform: bool,
    pub when_changed: Utc,
}

/// Problems with a control request (the lab's own API, not the simulated services).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum OrgError {
    #[error("no EAS device or Intune record with device id `{0}`")]
    UnknownDevice(String),
    #[error("no mailbox `{0}`")]
    UnknownMailbox(String),
    #[error("no group with id or display name `{0}`")]
    UnknownGroup(String),
    #[error("device `{0}` is already enrolled in Intune")]
    AlreadyEnrolled(String),
    #[error("device `{0}` is not enrolled in Intune")]
    NotEnrolled(String),
    #[error("device id `{0}` already exists")]
    DuplicateDevice(String),
}

/// What a new device partnership should look like (`LabControl::add_devices`).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NewDevices {
    /// How many devices to add.
    pub count: usize,
    /// Put them on this mailbox (alias, UPN or SMTP); a random one when absent.
    pub mailbox: Option<String>,
    /// Also enroll them in Intune with this compliance state.
    pub enroll: Option<ComplianceState>,
}

/// The whole simulated organization.
#[derive(Debug)]
pub(crate) struct Org {
    pub tenant: Tenant,
    pub settings: OrgSettings,
    pub rules: Vec<DeviceRule>,
    pub mailboxes: Vec<Mailbox>,
    /// Lowercase alias, UPN, primary SMTP, GUID and Entra id → mailbox index.
    pub mailbox_index: HashMap<Box<str>, u32>,
    /// Indexed by `seq`; `None` once removed.
    pub devices: Vec<Option<EasDevice>>,
    /// Lowercase `DeviceId` → `seq`.
    pub device_index: HashMap<Box<str>, u32>,
    /// Indexed by `seq`; `None` once retired.
    pub managed: Vec<Option<ManagedDevice>>,
    /// Lowercase `easDeviceId` → managed `seq`.
    pub managed_by_eas: HashMap<Box<str>, u32>,
    pub groups: Vec<Group>,
    /// Direct groups of each mailbox's user, so `transitiveMemberOf` costs the depth of the
    /// nesting, not the size of the groups (a connector may ask it for every user).
    pub user_groups: Vec<Vec<u32>>,
    /// Draws for devices that arrive while the lab runs, continuing the seeded sequence.
    pub arrivals: Rng,
    /// Seed of this dataset, for derived values of new objects.
    pub seed: u64,
}

impl Org {
    pub fn mailbox_key(text: &str) -> Box<str> {
        text.trim().to_ascii_lowercase().into_boxed_str()
    }

    /// Resolves a mailbox identity the way `-Identity`/`-Mailbox` accept it: alias (Exchange
    /// Online's `Name`), UPN, primary SMTP, GUID or Entra object id.
    /// Sets when a partnership last synced successfully (`LastSuccessSync` of
    /// `Get-MobileDeviceStatistics`), as a device left in a drawer would have it.
    pub fn set_last_sync(&mut self, device_id: &str, at: Utc) -> Result<(), OrgError> {
        let seq = *self
            .device_index
            .get(&Self::mailbox_key(device_id))
            .ok_or_else(|| OrgError::UnknownDevice(device_id.to_owned()))?;
        let device = self.devices[seq as usize]
            .as_mut()
            .ok_or_else(|| OrgError::UnknownDevice(device_id.to_owned()))?;
        device.last_sync = at;
        Ok(())
    }

    /// Sets a user's Graph `preferredLanguage` (`None`: `null`), as an admin would in Entra.
    pub fn set_preferred_language(
        &mut self,
        mailbox: &str,
        language: Option<&'static str>,
    ) -> Result<(), OrgError> {
        let ix = self
            .find_mailbox(mailbox)
            .ok_or_else(|| OrgError::UnknownMailbox(mailbox.to_owned()))?;
        self.mailboxes[ix as usize].preferred_language = language;
        Ok(())
    }

    /// Sets a mailbox's `Languages` (most preferred first; empty clears them), as
    /// `Set-MailboxRegionalConfiguration` or the user in Outlook on the web would.
    pub fn set_mailbox_languages(
        &mut self,
        mailbox: &str,
        languages: &'static [&'static str],
    ) -> Result<(), OrgError> {
        let ix = self
            .find_mailbox(mailbox)
            .ok_or_else(|| OrgError::UnknownMailbox(mailbox.to_owned()))?;
        self.mailboxes[ix as usize].languages = languages;
        Ok(())
    }

    pub fn find_mailbox(&self, identity: &str) -> Option<u32> {
        self.mailbox_index
            .get(&Self::mailbox_key(identity))
            .copied()
    }

    pub fn device(&self, seq: u32) -> Option<&EasDevice> {
        self.devices.get(seq as usize).and_then(Option::as_ref)
    }

    pub fn device_by_id(&self, device_id: &str) -> Option<&EasDevice> {
        let seq = self.device_index.get(&Self::mailbox_key(device_id))?;
        self.device(*seq)
    }

    pub fn managed(&self, seq: u32) -> Option<&ManagedDevice> {
        self.managed.get(seq as usize).and_then(Option::as_ref)
    }

    pub fn managed_by_eas_id(&self, device_id: &str) -> Option<&ManagedDevice> {
        let seq = self.managed_by_eas.get(&Self::mailbox_key(device_id))?;
        self.managed(*seq)
    }

    /// Alias and display name of a device owner (also for departed users).
    pub fn owner_names<'a>(&'a self, owner: &'a Owner) -> (&'a str, &'a str) {
        match owner {
            Owner::Mailbox(ix) => {
                let m = &self.mailboxes[*ix as usize];
                (&m.alias, &m.display_name)
            }
            Owner::Departed(d) => (&d.alias, &d.display_name),
            Owner::Nobody => ("", ""),
        }
    }

    /// `<mailbox>\ExchangeActiveSyncDevices\<DeviceType>§<DeviceId>`, as Exchange Online prints it.
    pub fn device_identity(&self, dev: &EasDevice) -> String {
        let (alias, _) = self.owner_names(&dev.owner);
        format!(
            "{alias}\\ExchangeActiveSyncDevices\\{}\u{a7}{}",
            dev.profile().eas_type,
            dev.device_id
        )
    }

    /// Resolves a mobile device identity: the printed `Identity`, the object GUID, or (as a
    /// convenience Exchange also offers) the bare `DeviceId` when it is unique.
    pub fn find_device(&self, identity: &str) -> Option<u32> {
        let identity = identity.trim();
        if let Some(guid) = Guid::parse(identity) {
            return self
                .devices
                .iter()
                .flatten()
                .find(|d| d.guid == guid)
                .map(|d| d.seq);
        }
        let last = identity.rsplit('\\').next().unwrap_or(identity);
        let id = last.rsplit('\u{a7}').next().unwrap_or(last);
        let dev = self.device_by_id(id)?;
        // With a full identity, the mailbox part must name the owner.
        if identity.contains('\\') {
            let printed = self.device_identity(dev);
            if !printed.eq_ignore_ascii_case(identity) {
                return None;
            }
        }
        Some(dev.seq)
    }

    /// Recomputes the access state of one device; bumps `WhenChanged` when it changed.
    pub fn recompute_device(&mut self, seq: u32, now: Utc) {
        let Some(dev) = self.devices.get(seq as usize).and_then(Option::as_ref) else {
            return;
        };
        let mailbox = match dev.owner {
            Owner::Mailbox(ix) => Some(&self.mailboxes[ix as usize]),
            Owner::Departed(_) | Owner::Nobody => None,
        };
        let verdict = access::evaluate(dev, mailbox, &self.rules, self.settings.default_access);
        let dev = self.devices[seq as usize]
            .as_mut()
            .expect("device checked above");
        if (dev.state, dev.reason, dev.rule) != (verdict.state, verdict.reason, verdict.rule) {
            dev.state = verdict.state;
            dev.reason = verdict.reason;
            dev.rule = verdict.rule;
            dev.when_changed = now;
        }
    }

    pub fn recompute_mailbox(&mut self, ix: u32, now: Utc) {
        let seqs = self.mailboxes[ix as usize].devices.clone();
        for seq in seqs {
            self.recompute_device(seq, now);
        }
    }

    pub fn recompute_all(&mut self, now: Utc) {
        for seq in 0..self.devices.len() as u32 {
            self.recompute_device(seq, now);
        }
    }

    /// Removes device access rule `i`, keeping the rule index of the other devices' verdicts.
    pub fn remove_rule(&mut self, i: usize, now: Utc) {
        self.rules.remove(i);
        for dev in self.devices.iter_mut().flatten() {
            if let Some(r) = dev.rule
                && usize::from(r) > i
            {
                dev.rule = Some(r - 1);
            }
        }
        self.recompute_all(now);
    }

    fn managed_mut_by_eas_id(&mut self, device_id: &str) -> Option<&mut ManagedDevice> {
        let seq = *self.managed_by_eas.get(&Self::mailbox_key(device_id))?;
        self.managed.get_mut(seq as usize).and_then(Option::as_mut)
    }

    /// Changes a managed device's compliance. `checked_in`: the device checked in and reported
    /// it, which moves `lastSyncDateTime`; otherwise the change is Intune's own (a grace period
    /// running out, an admin marking the device) and `lastSyncDateTime` stays where it was.
    pub fn set_compliance(
        &mut self,
        device_id: &str,
        state: ComplianceState,
        checked_in: bool,
        now: Utc,
    ) -> Result<(), OrgError> {
        let md = self
            .managed_mut_by_eas_id(device_id)
            .ok_or_else(|| OrgError::NotEnrolled(device_id.to_owned()))?;
        md.compliance = state;
        if checked_in {
            md.last_sync = now;
        }
        md.grace_expiry = if state == ComplianceState::InGracePeriod {
            now.plus_secs(3 * 86_400)
        } else {
            Utc::NO_DEADLINE
        };
        Ok(())
    }

    /// Enrolls an existing EAS device in Intune.
    pub fn enroll(
        &mut self,
        device_id: &str,
        state: ComplianceState,
        now: Utc,
    ) -> Result<(), OrgError> {
        if self.managed_by_eas_id(device_id).is_some() {
            return Err(OrgError::AlreadyEnrolled(device_id.to_owned()));
        }
        let dev = self
            .device_by_id(device_id)
            .ok_or_else(|| OrgError::UnknownDevice(device_id.to_owned()))?
            .clone();
        let mut rng = Rng::stream(self.seed ^ u64::from(dev.seq), 0xe5_0011);
        let md = ManagedDevice {
            seq: self.managed.len() as u32,
            id: rng.guid(),
            azure_ad_device_id: rng.guid(),
            owner: dev.owner.clone(),
            eas_device_id: dev.device_id.clone(),
            eas_seq: Some(dev.seq),
            profile: dev.profile,
            build: dev.build,
            derive: dev.derive,
            compliance: state,
            owner_type: OwnerType::Personal,
            management_state: ManagementState::Managed,
            enrolled: now,
            last_sync: now,
            eas_activated_at: now,
            grace_expiry: if state == ComplianceState::InGracePeriod {
                now.plus_secs(3 * 86_400)
            } else {
                Utc::NO_DEADLINE
            },
        };
        self.insert_managed(md);
        Ok(())
    }

    pub fn insert_managed(&mut self, md: ManagedDevice) {
        if !md.eas_device_id.is_empty() {
            self.managed_by_eas
                .insert(Self::mailbox_key(&md.eas_device_id), md.seq);
        }
        self.managed.push(Some(md));
    }

    /// Starts retiring a device, as an admin's Retire does: Intune keeps the record, with
    /// `managementState` `retirePending`, until the device checks in; `lastSyncDateTime` stays.
    pub fn retire_pending(&mut self, device_id: &str) -> Result<(), OrgError> {
        let md = self
            .managed_mut_by_eas_id(device_id)
            .ok_or_else(|| OrgError::NotEnrolled(device_id.to_owned()))?;
        md.management_state = ManagementState::RetirePending;
        Ok(())
    }

    /// Adds user `user` (a mailbox's alias, UPN or SMTP address) to group `group` (its id or
    /// display name) as a direct member, or takes it out. Changes nothing about the user's
    /// devices: Graph's `lastSyncDateTime` is the device's, not the directory's.
    pub fn set_membership(
        &mut self,
        group: &str,
        user: &str,
        member: bool,
    ) -> Result<(), OrgError> {
        let g = self
            .groups
            .iter()
            .position(|g| {
                Guid::parse(group).is_some_and(|id| id == g.id)
                    || g.display_name.eq_ignore_ascii_case(group)
            })
            .ok_or_else(|| OrgError::UnknownGroup(group.to_owned()))? as u32;
        let ix = self
            .find_mailbox(user)
            .ok_or_else(|| OrgError::UnknownMailbox(user.to_owned()))?;
        let users = &mut self.groups[g as usize].users;
        let direct = &mut self.user_groups[ix as usize];
        if member {
            if !users.contains(&ix) {
                users.push(ix);
                direct.push(g);
            }
        } else {
            users.retain(|&u| u != ix);
            direct.retain(|&d| d != g);
        }
        Ok(())
    }

    /// Retires a device from Intune: its record disappears from `managedDevices`.
    pub fn retire(&mut self, device_id: &str) -> Result<(), OrgError> {
        let key = Self::mailbox_key(device_id);
        let seq = self
            .managed_by_eas
            .remove(&key)
            .ok_or_else(|| OrgError::NotEnrolled(device_id.to_owned()))?;
        self.managed[seq as usize] = None;
        Ok(())
    }

    /// Removes an EAS partnership (`Remove-MobileDevice`). The Intune record stays, unlinked.
    pub fn remove_device(&mut self, seq: u32) {
        let Some(dev) = self.devices.get_mut(seq as usize).and_then(Option::take) else {
            return;
        };
        self.device_index.remove(&Self::mailbox_key(&dev.device_id));
        if let Owner::Mailbox(ix) = dev.owner {
            self.mailboxes[ix as usize].devices.retain(|&s| s != seq);
        }
        if let Some(md) = self.managed_mut_by_eas_id(&dev.device_id) {
            md.eas_seq = None;
        }
    }

    /// Adds device partnerships that "just connected": `FirstSyncTime` now, state from the
    /// current lists, rules and org default. Returns their device ids.
    pub fn add_devices(&mut self, spec: &NewDevices, now: Utc) -> Result<Vec<String>, OrgError> {
        let fixed_mailbox = match &spec.mailbox {
            Some(m) => Some(
                self.find_mailbox(m)
                    .ok_or_else(|| OrgError::UnknownMailbox(m.clone()))?,
            ),
            None => None,
        };
        let mut ids = Vec::with_capacity(spec.count);
        for _ in 0..spec.count {
            let ix = match fixed_mailbox {
                Some(ix) => ix,
                None => self.arrivals.below(self.mailboxes.len() as u64) as u32,
            };
            let seq = self.devices.len() as u32;
            let mut dev =
                dataset::new_device(&mut self.arrivals, self.seed, seq, Owner::Mailbox(ix));
            // Vanishingly rare, but a collision would make two partnerships share an id.
            while self
                .device_index
                .contains_key(&Self::mailbox_key(&dev.device_id))
            {
                dev = dataset::new_device(&mut self.arrivals, self.seed, seq, Owner::Mailbox(ix));
            }
            dev.first_sync = now;
            dev.last_sync = now;
            dev.when_changed = now;
            let id = dev.device_id.to_string();
            self.device_index.insert(Self::mailbox_key(&id), seq);
            self.mailboxes[ix as usize].devices.push(seq);
            self.devices.push(Some(dev));
            self.recompute_device(seq, now);
            if let Some(state) = spec.enroll {
                self.enroll(&id, state, now)?;
            }
            ids.push(id);
        }
        Ok(ids)
    }

    /// Groups that user `ix` belongs to directly or through nesting, ascending.
    pub fn groups_of(&self, ix: u32) -> Vec<u32> {
        let mut found: Vec<u32> = self.user_groups[ix as usize].clone();
        let mut next = 0;
        while next < found.len() {
            let g = found[next];
            for (parent, p) in self.groups.iter().enumerate() {
                if p.groups.contains(&g) && !found.contains(&(parent as u32)) {
                    found.push(parent as u32);
                }
            }
            next += 1;
        }
        found.sort_unstable();
        found
    }

    /// Every live EAS device with the state Exchange reports and what it is based on.
    pub fn truth(&self) -> Vec<DeviceTruth> {
        self.devices
            .iter()
            .flatten()
            .map(|dev| {
                let mailbox = match dev.owner {
                    Owner::Mailbox(ix) => Some(&self.mailboxes[ix as usize]),
                    _ => None,
                };
                let contains =
                    |list: &[Box<str>]| list.iter().any(|x| x.eq_ignore_ascii_case(&dev.device_id));
                let md = self.managed_by_eas_id(&dev.device_id);
                DeviceTruth {
                    device_id: dev.device_id.to_string(),
                    identity: self.device_identity(dev),
                    mailbox: mailbox.map(|m| m.primary_smtp.to_string()),
                    user_principal_name: mailbox.map(|m| m.upn.to_string()),
                    device_type: dev.profile().eas_type.to_owned(),
                    device_model: dev.profile().eas_model.to_owned(),
                    access_state: dev.state,
                    access_state_reason: dev.reason,
                    access_rule: dev.rule.map(|r| self.rules[usize::from(r)].name()),
                    in_allow_list: mailbox.is_some_and(|m| contains(&m.allowed)),
                    in_block_list: mailbox.is_some_and(|m| contains(&m.blocked)),
                    first_sync_time: dev.first_sync,
                    managed_device_id: md.map(|m| m.id.to_string()),
                    compliance_state: md.map(|m| m.compliance),
                    wipe: dev.wipe.as_deref().cloned(),
                }
            })
            .collect()
    }
}

/// Ground truth of one device, for tests and the `/_lab/truth` endpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceTruth {
    pub device_id: String,
    pub identity: String,
    /// Primary SMTP of the owning mailbox; `None` when the owner left.
    pub mailbox: Option<String>,
    pub user_principal_name: Option<String>,
    pub device_type: String,
    pub device_model: String,
    pub access_state: AccessState,
    pub access_state_reason: AccessReason,
    /// Name of the device access rule that decided, if one did.
    pub access_rule: Option<String>,
    pub in_allow_list: bool,
    pub in_block_list: bool,
    #[serde(with = "utc_text")]
    pub first_sync_time: Utc,
    /// Intune record, when the device is enrolled.
    pub managed_device_id: Option<String>,
    pub compliance_state: Option<ComplianceState>,
    /// The remote wipe pending on the device, if one was asked for.
    #[serde(default)]
    pub wipe: Option<WipeRequest>,
}

/// `Utc` as text inside the lab's own JSON (it only serializes natively).
mod utc_text {
    use crate::utc::Utc;

    pub fn serialize<S: serde::Serializer>(t: &Utc, s: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(t, s)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Utc, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        Utc::parse_iso(&text).ok_or_else(|| serde::de::Error::custom("not an ISO 8601 timestamp"))
    }
}
