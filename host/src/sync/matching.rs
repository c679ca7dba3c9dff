//! Match: joins each EAS partnership to its Intune record and to its mailbox's user, and builds
//! the device context the access policy receives.
//!
//! * Device: Exchange `DeviceId` ↔ Intune `easDeviceId`, ignoring case (Intune often reports the
//!   ID in another case than Exchange).
//! * User: the mailbox's user is found by UPN: the override map's entry for the mailbox's
//!   primary SMTP address when there is one, else the UPN Exchange reported for the mailbox,
//!   else the primary SMTP address (the usual case, SMTP = UPN). A mailbox whose user is not in
//!   the directory, or a partnership whose mailbox is gone, is decided with `user: none`.
//! * Retired: a partnership whose Intune record is being retired or wiped, or whose record
//!   disappeared since the last full inventory, is a candidate for `Remove-MobileDevice`.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::model::inventory::{
    DeviceKey, DirectoryUser, ExchangeDevice, Inventory, KeyDigests, Mailbox, ManagedDevice,
};
use crate::model::settings::SyncSettings;
use crate::plugin::types;

/// Why a partnership counts as retired from Intune.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "why")]
pub enum Retired {
    /// Intune is retiring, wiping or deleting the record (`managementState`).
    LeavingManagement {
        /// The `managementState` reported.
        management_state: String,
    },
    /// The device had an Intune record at the last inventory and has none now.
    RecordGone,
}

/// One partnership, joined: where its parts are in the matched inventory.
///
/// The policy's context is built from these links when a batch is decided
/// ([`MatchedDevice::context`]) rather than kept for every device: at 100 000 devices the
/// contexts' copied strings cost more than a hundred megabytes.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchedDevice {
    /// The partnership's key.
    pub key: DeviceKey,
    /// The partnership: its index in [`Inventory::devices`].
    pub device: usize,
    /// Its mailbox, when reported: an index in [`Inventory::mailboxes`].
    pub mailbox: Option<usize>,
    /// Its Intune record, when matched: an index in [`Inventory::managed`].
    pub managed: Option<usize>,
    /// The mailbox's user, when in the directory: an index in [`Inventory::users`].
    pub user: Option<usize>,
    /// Set when Intune retired the device.
    pub retired: Option<Retired>,
}

impl MatchedDevice {
    /// What the policy sees of this partnership; `inventory` is the one that was matched.
    pub fn context(&self, inventory: &Inventory) -> types::DeviceContext {
        let mailbox = self.mailbox.map(|i| &inventory.mailboxes[i]);
        let smtp = mailbox.map_or("", |m| m.primary_smtp.as_str());
        types::DeviceContext {
            eas: inventory.devices[self.device].to_wit(smtp),
            managed: self.managed.map(|i| inventory.managed[i].to_wit()),
            user: self.user.map(|i| {
                let user = &inventory.users[i];
                types::User {
                    user_principal_name: user.user_principal_name.clone(),
                    primary_smtp: smtp.to_owned(),
                    groups: user.groups.clone(),
                }
            }),
        }
    }
}

/// What matching could not join, for the run summary and the operator.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchReport {
    /// Partnerships with no Intune record.
    pub unenrolled: usize,
    /// Partnerships whose mailbox is gone or was not reported.
    pub without_mailbox: usize,
    /// Partnerships whose mailbox has no user in the directory.
    pub without_user: usize,
    /// Override entries whose UPN is not in the directory (a typo in the configuration, or a
    /// user who left), by SMTP address.
    pub unresolved_overrides: Vec<String>,
    /// `easDeviceId`s (lowercase) held by more than one Intune record; the most recently synced
    /// record is used.
    pub duplicate_records: Vec<String>,
    /// Intune records with an `easDeviceId` that no partnership has.
    pub records_without_partnership: usize,
}

/// The result of matching one inventory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Matched {
    /// Every partnership of the inventory, in its order.
    pub devices: Vec<MatchedDevice>,
    /// What did not join.
    pub report: MatchReport,
}

impl Matched {
    /// The partnerships to remove with `Remove-MobileDevice`: the retired ones when the
    /// settings turn removal on, none otherwise. `inventory` is the one that was matched.
    pub fn removal_candidates<'a>(
        &self,
        inventory: &'a Inventory,
        settings: &SyncSettings,
    ) -> Vec<&'a ExchangeDevice> {
        if !settings.remove_retired_partnerships {
            return Vec::new();
        }
        self.devices
            .iter()
            .filter(|d| d.retired.is_some())
            .map(|d| &inventory.devices[d.device])
            .collect()
    }
}

/// Joins `inventory`. `previously_managed` holds the partnerships that had an Intune record at
/// the last inventory (from the store); it is only consulted when the inventory's Intune list
/// is complete.
pub fn match_inventory(
    inventory: &Inventory,
    settings: &SyncSettings,
    previously_managed: &KeyDigests,
) -> Matched {
    let mut matcher = Matcher::new(
        &inventory.managed,
        &inventory.mailboxes,
        &inventory.users,
        inventory.managed_complete,
        settings,
        previously_managed,
    );
    let devices = inventory
        .devices
        .iter()
        .enumerate()
        .map(|(index, device)| matcher.match_device(index, device))
        .collect();
    Matched {
        devices,
        report: matcher.finish(),
    }
}

/// Joins partnerships one at a time against an inventory's Intune records, mailboxes and users,
/// which must be complete before the first partnership: a full sync matches each page of the
/// device listing while the next one is on its way.
pub struct Matcher<'a> {
    /// Lowercase `easDeviceId` → the record used for it, with its index.
    managed: HashMap<String, (usize, &'a ManagedDevice)>,
    /// Lowercase identity → the mailbox, with its index.
    mailboxes: HashMap<String, (usize, &'a Mailbox)>,
    /// Lowercase UPN → index of the user.
    users: HashMap<String, usize>,
    /// Lowercase SMTP address → the UPN the configuration says it belongs to.
    overrides: HashMap<String, &'a String>,
    managed_complete: bool,
    previously_managed: &'a KeyDigests,
    unresolved: HashSet<String>,
    /// By index of [`Inventory::managed`]: whether a partnership matched the record so far.
    partnered: Vec<bool>,
    report: MatchReport,
}

impl<'a> Matcher<'a> {
    /// A matcher for partnerships of an inventory with these Intune records, mailboxes and
    /// users. `managed_complete` and `previously_managed`: as in [`Inventory`] and
    /// [`match_inventory`].
    pub fn new(
        managed_records: &'a [ManagedDevice],
        mailboxes: &'a [Mailbox],
        users: &'a [DirectoryUser],
        managed_complete: bool,
        settings: &'a SyncSettings,
        previously_managed: &'a KeyDigests,
    ) -> Self {
        let mut report = MatchReport::default();
        let mut managed: HashMap<String, (usize, &ManagedDevice)> = HashMap::new();
        let mut duplicates = HashSet::new();
        for (index, record) in managed_records.iter().enumerate() {
            if record.eas_device_id.is_empty() {
                continue;
            }
            let id = record.eas_device_id.to_lowercase();
            match managed.get(&id) {
                Some(existing) => {
                    duplicates.insert(id.clone());
                    // A re-enrolled device leaves its old record behind for a while; the one
                    // that checked in last describes the device as it is now.
                    if record.last_sync > existing.1.last_sync {
                        managed.insert(id, (index, record));
                    }
                }
                None => {
                    managed.insert(id, (index, record));
                }
            }
        }
        report.duplicate_records = duplicates.into_iter().collect();
        report.duplicate_records.sort();

        Matcher {
            managed,
            mailboxes: mailboxes
                .iter()
                .enumerate()
                .map(|(i, m)| (m.identity.to_lowercase(), (i, m)))
                .collect(),
            users: users
                .iter()
                .enumerate()
                .map(|(i, u)| (u.user_principal_name.to_lowercase(), i))
                .collect(),
            overrides: settings
                .upn_overrides
                .iter()
                .map(|(smtp, upn)| (smtp.to_lowercase(), upn))
                .collect(),
            managed_complete,
            previously_managed,
            unresolved: HashSet::new(),
            partnered: vec![false; managed_records.len()],
            report,
        }
    }

    /// Joins the partnership `device`, which is `index` in its inventory's devices.
    pub fn match_device(&mut self, index: usize, device: &ExchangeDevice) -> MatchedDevice {
        let key = device.key();
        let device_id = device.device_id.to_lowercase();
        let record = self.managed.get(&device_id).copied();
        if let Some((index, _)) = record {
            self.partnered[index] = true;
        }

        let mailbox = device
            .mailbox
            .as_ref()
            .and_then(|m| self.mailboxes.get(&m.to_lowercase()).copied());
        let user = mailbox.and_then(|(_, m)| {
            let smtp = m.primary_smtp.to_lowercase();
            let upn = match self.overrides.get(&smtp) {
                Some(upn) => upn.as_str(),
                None => m.user_principal_name.as_deref().unwrap_or(&m.primary_smtp),
            };
            let found = self.users.get(&upn.to_lowercase()).copied();
            if found.is_none() && self.overrides.contains_key(&smtp) {
                self.unresolved.insert(smtp);
            }
            found
        });

        let retired = match record {
            Some((_, r)) if r.is_leaving_management() => Some(Retired::LeavingManagement {
                management_state: r.management_state.clone(),
            }),
            None if self.managed_complete && self.previously_managed.contains(key.as_str()) => {
                Some(Retired::RecordGone)
            }
            _ => None,
        };

        if record.is_none() {
            self.report.unenrolled += 1;
        }
        if mailbox.is_none() {
            self.report.without_mailbox += 1;
        } else if user.is_none() {
            self.report.without_user += 1;
        }

        MatchedDevice {
            key,
            device: index,
            mailbox: mailbox.map(|(i, _)| i),
            managed: record.map(|(i, _)| i),
            user,
            retired,
        }
    }

    /// What did not join, once every partnership is matched.
    pub fn finish(self) -> MatchReport {
        let mut report = self.report;
        report.records_without_partnership = self
            .managed
            .values()
            .filter(|(index, _)| !self.partnered[*index])
            .count();
        report.unresolved_overrides = self.unresolved.into_iter().collect();
        report.unresolved_overrides.sort();
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::inventory::{AccessState, ComplianceState, DirectoryUser, ExchangeDevice};

    fn device(mailbox: Option<&str>, id: &str) -> ExchangeDevice {
        ExchangeDevice {
            device_id: id.into(),
            identity: format!(
                "{}\\ExchangeActiveSyncDevices\\iPhone\u{a7}{id}",
                mailbox.unwrap_or("gone")
            ),
            mailbox: mailbox.map(Into::into),
            device_type: "iPhone".into(),
            access_state: AccessState::Quarantined,
            access_state_reason: "Global".into(),
            ..ExchangeDevice::default()
        }
    }

    fn mailbox(identity: &str, smtp: &str) -> Mailbox {
        Mailbox {
            identity: identity.into(),
            primary_smtp: smtp.into(),
            ..Mailbox::default()
        }
    }

    fn user(upn: &str, groups: &[&str]) -> DirectoryUser {
        DirectoryUser {
            user_principal_name: upn.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            locale: String::new(),
        }
    }

    fn record(eas_id: &str, state: &str, last_sync: i64) -> ManagedDevice {
        ManagedDevice {
            id: format!("md-{eas_id}-{last_sync}"),
            eas_device_id: eas_id.into(),
            compliance_state: ComplianceState::Compliant,
            management_state: state.into(),
            last_sync: Some(last_sync),
            ..ManagedDevice::default()
        }
    }

    fn by_id<'a>(matched: &'a Matched, inventory: &Inventory, id: &str) -> &'a MatchedDevice {
        matched
            .devices
            .iter()
            .find(|d| inventory.devices[d.device].device_id == id)
            .unwrap()
    }

    /// The context the policy gets for the partnership with `DeviceId` `id`.
    fn context(matched: &Matched, inventory: &Inventory, id: &str) -> types::DeviceContext {
        by_id(matched, inventory, id).context(inventory)
    }

    #[test]
    fn device_ids_match_ignoring_case_and_the_newest_duplicate_wins() {
        let inventory = Inventory {
            devices: vec![device(Some("alice"), "ABC123"), device(Some("alice"), "Z9")],
            mailboxes: vec![mailbox("alice", "alice@contoso.com")],
            managed: vec![
                record("abc123", "managed", 100),
                record("AbC123", "managed", 200),
                record("lonely", "managed", 1),
            ],
            users: vec![user("alice@contoso.com", &["g1"])],
            managed_complete: true,
            ..Inventory::default()
        };
        let matched = match_inventory(&inventory, &SyncSettings::default(), &KeyDigests::default());
        let abc = by_id(&matched, &inventory, "ABC123");
        assert_eq!(inventory.managed[abc.managed.unwrap()].id, "md-AbC123-200");
        assert_eq!(
            abc.context(&inventory)
                .managed
                .as_ref()
                .unwrap()
                .compliance_state,
            types::ComplianceState::Compliant
        );
        assert_eq!(abc.context(&inventory).eas.mailbox, "alice@contoso.com");
        assert_eq!(
            abc.context(&inventory).user.as_ref().unwrap().groups,
            ["g1"]
        );
        assert!(context(&matched, &inventory, "Z9").managed.is_none());
        assert_eq!(matched.report.unenrolled, 1);
        assert_eq!(matched.report.duplicate_records, ["abc123"]);
        assert_eq!(matched.report.records_without_partnership, 1);
    }

    #[test]
    fn users_resolve_through_the_override_then_exchange_upn_then_smtp() {
        let mut upn_on_exchange = mailbox("bob", "bob@contoso.com");
        upn_on_exchange.user_principal_name = Some("BOB@corp.contoso.com".into());
        let inventory = Inventory {
            devices: vec![
                device(Some("alice"), "A1"),
                device(Some("bob"), "B1"),
                device(Some("carol"), "C1"),
                device(Some("dave"), "D1"),
            ],
            mailboxes: vec![
                mailbox("alice", "Alice.Smith@contoso.com"),
                upn_on_exchange,
                mailbox("carol", "carol@contoso.com"),
                mailbox("dave", "dave@contoso.com"),
            ],
            users: vec![
                user("asmith@contoso.onmicrosoft.com", &[]),
                user("bob@corp.contoso.com", &[]),
                user("carol@contoso.com", &[]),
                user("dave@contoso.com", &[]),
            ],
            ..Inventory::default()
        };
        let mut settings = SyncSettings::default();
        settings.upn_overrides.insert(
            "alice.smith@CONTOSO.com".into(),
            "ASmith@contoso.onmicrosoft.com".into(),
        );
        settings
            .upn_overrides
            .insert("dave@contoso.com".into(), "david@contoso.com".into());
        let matched = match_inventory(&inventory, &settings, &KeyDigests::default());
        let upn = |id: &str| {
            context(&matched, &inventory, id)
                .user
                .as_ref()
                .map(|u| u.user_principal_name.clone())
        };
        assert_eq!(upn("A1").as_deref(), Some("asmith@contoso.onmicrosoft.com"));
        assert_eq!(upn("B1").as_deref(), Some("bob@corp.contoso.com"));
        assert_eq!(upn("C1").as_deref(), Some("carol@contoso.com"));
        // An override is taken at its word: no silent fallback to the SMTP address.
        assert_eq!(upn("D1"), None);
        assert_eq!(matched.report.unresolved_overrides, ["dave@contoso.com"]);
        assert_eq!(
            context(&matched, &inventory, "A1")
                .user
                .as_ref()
                .unwrap()
                .primary_smtp,
            "Alice.Smith@contoso.com"
        );
    }

    #[test]
    fn devices_without_mailbox_or_user_are_decided_with_user_none() {
        let inventory = Inventory {
            devices: vec![
                device(None, "G1"),
                device(Some("left"), "L1"),
                device(Some("unreported"), "U1"),
            ],
            mailboxes: vec![mailbox("left", "left@contoso.com")],
            ..Inventory::default()
        };
        let matched = match_inventory(&inventory, &SyncSettings::default(), &KeyDigests::default());
        assert_eq!(matched.devices.len(), 3);
        assert!(
            matched
                .devices
                .iter()
                .all(|d| d.context(&inventory).user.is_none())
        );
        assert_eq!(context(&matched, &inventory, "G1").eas.mailbox, "");
        assert_eq!(
            context(&matched, &inventory, "L1").eas.mailbox,
            "left@contoso.com"
        );
        assert_eq!(matched.report.without_mailbox, 2);
        assert_eq!(matched.report.without_user, 1);
    }

    #[test]
    fn retired_devices_are_found_by_state_or_by_a_vanished_record() {
        let pending = device(Some("alice"), "P1");
        let vanished = device(Some("alice"), "V1");
        let never = device(Some("alice"), "N1");
        let previously: KeyDigests = [pending.key(), vanished.key()].iter().collect();
        let mut inventory = Inventory {
            devices: vec![pending, vanished, never],
            mailboxes: vec![mailbox("alice", "alice@contoso.com")],
            managed: vec![record("p1", "retirePending", 5)],
            managed_complete: true,
            ..Inventory::default()
        };
        let matched = match_inventory(&inventory, &SyncSettings::default(), &previously);
        assert_eq!(
            by_id(&matched, &inventory, "P1").retired,
            Some(Retired::LeavingManagement {
                management_state: "retirePending".into()
            })
        );
        assert_eq!(
            by_id(&matched, &inventory, "V1").retired,
            Some(Retired::RecordGone)
        );
        assert_eq!(by_id(&matched, &inventory, "N1").retired, None);

        // Removal is off by default, and then removes exactly the retired partnerships.
        let off = SyncSettings::default();
        assert!(matched.removal_candidates(&inventory, &off).is_empty());
        let on = SyncSettings {
            remove_retired_partnerships: true,
            ..SyncSettings::default()
        };
        let ids: Vec<&str> = matched
            .removal_candidates(&inventory, &on)
            .iter()
            .map(|d| d.device_id.as_str())
            .collect();
        assert_eq!(ids, ["P1", "V1"]);

        // A quick sync lists only changed records: a missing one proves nothing.
        inventory.managed_complete = false;
        let quick = match_inventory(&inventory, &SyncSettings::default(), &previously);
        assert_eq!(by_id(&quick, &inventory, "V1").retired, None);
    }
}
