//! What-if against the stored inventory (`easgate policy diff`): decide every stored device
//! with a candidate policy and plan against the state the last sync left, without asking
//! Exchange or Intune anything and without writing the store.
//!
//! The store keeps each partnership's Exchange and Intune views and its current verdict, and
//! the directory the syncs read: the mailboxes (identity, primary SMTP address, UPN, lists as
//! read) and the users with their in-scope groups. The candidate sees the devices, mailboxes and
//! users a sync would; the lists are the stored ones with each decided device moved to where
//! its stored verdict put it (allow → allow list, block → block list, quarantine → neither),
//! because the directory is read before the plan that enforced those verdicts was applied.
//!
//! A store written before the directory was kept (schema version 3), or whose organization no
//! full sync has read since, has no directory; the diff then rebuilds one from the devices and
//! says so ([`DirectorySource::Rebuilt`]):
//!
//! * a mailbox's lists are what its devices' stored verdicts put there; devices no policy
//!   decided (or exempt) keep what Exchange reported (`Individual` access);
//! * a mailbox's user is the UPN of an Intune record of one of its devices, in no group, and
//!   its primary SMTP address is that UPN; a mailbox none of whose devices is enrolled has no
//!   user. A candidate that scopes by group, or a mailbox whose SMTP address is not its UPN,
//!   therefore sees less than a sync would.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use super::decide::{DEFAULT_BATCH_SIZE, decide};
use super::matching::match_inventory;
use super::plan::{Decided, PlannedCommand, plan};
use super::progress::Counter;
use crate::model::inventory::{
    AccessState, DeviceKey, DirectoryUser, ExchangeDevice, Inventory, KeyDigests, Mailbox, Verdict,
};
use crate::model::settings::SyncSettings;
use crate::plugin::{AccessPolicyPlugin, types};
use crate::store::{DeviceRecord, Store, StoreError, StoredDirectory, VerdictCounts};

/// A device whose verdict the candidate changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerdictChange {
    pub key: DeviceKey,
    pub device_id: String,
    /// The stored verdict; `None` when no policy decided the device yet.
    pub from: Option<Verdict>,
    pub to: Verdict,
    /// The candidate's reason code.
    pub reason: String,
}

/// Where a diff's mailboxes and users came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DirectorySource {
    /// The directory the syncs stored.
    Stored,
    /// Rebuilt from the stored devices: the store has no directory (see the module docs).
    Rebuilt,
}

impl DirectorySource {
    /// What an operator should know about it, if anything.
    pub fn note(self) -> Option<&'static str> {
        match self {
            DirectorySource::Stored => None,
            DirectorySource::Rebuilt => Some(
                "the store holds no directory from a full sync (it was written before easgate                  kept one): mailboxes and users are rebuilt from the devices, without groups,                  and with each mailbox's UPN as its SMTP address; run a full sync for an exact diff",
            ),
        }
    }
}

/// What a candidate policy would do to the stored inventory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diff {
    pub organization: String,
    /// Whether the mailboxes and users are the ones a sync stored.
    pub directory: DirectorySource,
    /// The candidate's digest.
    pub plugin_digest: String,
    /// Stored devices decided.
    pub devices: u64,
    /// The candidate's verdicts (`undecided`: its batch failed).
    pub verdicts: VerdictCounts,
    /// The stored verdicts, for comparison.
    pub stored_verdicts: VerdictCounts,
    /// Devices whose verdict changes.
    pub changes: Vec<VerdictChange>,
    /// The commands the plan would issue, shown with each command as its REST `CmdletInput`
    /// (the report's shape since before the commands were typed).
    #[serde(serialize_with = "commands_as_cmdlet_input")]
    pub commands: Vec<PlannedCommand>,
    /// Devices the plan would take from allowed to blocked or quarantined, and the guard's
    /// limit; `held` when the guard would hold the plan.
    pub restrictions: u64,
    pub restriction_limit: u64,
    pub held: bool,
    /// Plugin batch failures, one line each.
    pub errors: Vec<String>,
}

/// Why there is nothing to compare with.
fn commands_as_cmdlet_input<S: serde::Serializer>(
    commands: &[PlannedCommand],
    s: S,
) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Shown<'a> {
        mailbox: &'a Option<String>,
        devices: &'a [crate::model::DeviceKey],
        command: serde_json::Value,
    }
    s.collect_seq(commands.iter().map(|c| Shown {
        mailbox: &c.mailbox,
        devices: &c.devices,
        command: crate::exchange::rest::cmdlet_input(&c.command),
    }))
}

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the store has no organization `{0}`: run `easgate sync` for it first")]
    UnknownOrganization(String),
}

/// The state a device's stored verdict leaves it in; `None`: as Exchange reported it.
fn enforced_state(record: &DeviceRecord) -> Option<(AccessState, &'static str)> {
    match record.decision.as_ref()?.verdict {
        Verdict::Allow => Some((AccessState::Allowed, "Individual")),
        Verdict::Block => Some((AccessState::Blocked, "Individual")),
        Verdict::Quarantine => Some((AccessState::Quarantined, "Global")),
        Verdict::Exempt => None,
    }
}

/// Moves each decided device of `records` to the list of its mailbox its verdict put it on.
fn enforce_verdicts(mailboxes: &mut [Mailbox], records: &[DeviceRecord]) {
    let by_key: HashMap<String, usize> = mailboxes
        .iter()
        .enumerate()
        .map(|(i, m)| (m.identity.to_lowercase(), i))
        .collect();
    for record in records {
        let Some(verdict) = record.decision.as_ref().map(|d| d.verdict) else {
            continue;
        };
        let Some(&i) = record
            .exchange
            .mailbox
            .as_ref()
            .and_then(|m| by_key.get(&m.to_lowercase()))
        else {
            continue;
        };
        if verdict == Verdict::Exempt {
            continue;
        }
        let (mailbox, id) = (&mut mailboxes[i], &record.exchange.device_id);
        mailbox.allowed.retain(|e| !e.eq_ignore_ascii_case(id));
        mailbox.blocked.retain(|e| !e.eq_ignore_ascii_case(id));
        match verdict {
            Verdict::Allow => mailbox.allowed.push(id.clone()),
            Verdict::Block => mailbox.blocked.push(id.clone()),
            Verdict::Quarantine | Verdict::Exempt => {}
        }
    }
}

/// The inventory as the last sync left it, with its stored directory (see the module docs).
pub fn inventory_with_directory(records: &[DeviceRecord], directory: StoredDirectory) -> Inventory {
    let StoredDirectory {
        mut mailboxes,
        users,
    } = directory;
    enforce_verdicts(&mut mailboxes, records);
    let mut devices = Vec::with_capacity(records.len());
    let mut managed = Vec::new();
    for record in records {
        let mut device = record.exchange.clone();
        if let Some((state, reason)) = enforced_state(record) {
            device.access_state = state;
            device.access_state_reason = reason.to_owned();
        }
        devices.push(device);
        managed.extend(record.managed.clone());
    }
    Inventory {
        devices,
        mailboxes,
        managed,
        users,
        // What-if runs send no notices.
        mailbox_languages: Default::default(),
        managed_complete: false,
    }
}

/// The inventory as the last sync left it, its directory rebuilt from the devices (see the
/// module docs).
pub fn stored_inventory(records: &[DeviceRecord]) -> Inventory {
    let mut mailboxes: BTreeMap<String, Mailbox> = BTreeMap::new();
    let mut devices = Vec::with_capacity(records.len());
    let mut managed = Vec::new();
    for record in records {
        let mut device: ExchangeDevice = record.exchange.clone();
        if let Some((state, reason)) = enforced_state(record) {
            device.access_state = state;
            device.access_state_reason = reason.to_owned();
        }
        if let Some(identity) = &device.mailbox {
            let mailbox = mailboxes
                .entry(identity.to_lowercase())
                .or_insert_with(|| Mailbox {
                    identity: identity.clone(),
                    ..Mailbox::default()
                });
            if device
                .access_state_reason
                .eq_ignore_ascii_case("Individual")
            {
                match device.access_state {
                    AccessState::Allowed => mailbox.allowed.push(device.device_id.clone()),
                    AccessState::Blocked => mailbox.blocked.push(device.device_id.clone()),
                    _ => {}
                }
            }
            if let Some(record) = &record.managed
                && mailbox.user_principal_name.is_none()
                && !record.user_principal_name.is_empty()
            {
                mailbox.user_principal_name = Some(record.user_principal_name.clone());
                mailbox.primary_smtp = record.user_principal_name.clone();
            }
        }
        if let Some(record) = &record.managed {
            managed.push(record.clone());
        }
        devices.push(device);
    }
    let users: HashSet<String> = mailboxes
        .values()
        .filter_map(|m| m.user_principal_name.clone())
        .collect();
    Inventory {
        devices,
        mailboxes: mailboxes.into_values().collect(),
        managed,
        users: users
            .into_iter()
            .map(|user_principal_name| DirectoryUser {
                user_principal_name,
                ..DirectoryUser::default()
            })
            .collect(),
        mailbox_languages: Default::default(),
        // Records missing from the store are not records Intune let go of.
        managed_complete: false,
    }
}

/// Decides the stored devices of `organization` with `policy` and plans against the stored
/// state; reads the store only.
pub async fn diff(
    store: Arc<Store>,
    organization: &str,
    settings: &SyncSettings,
    policy: Arc<AccessPolicyPlugin>,
    now: i64,
) -> Result<Diff, DiffError> {
    let (records, directory) = read_stored(store, organization).await?;
    let (inventory, directory) = match directory {
        Some(directory) => (
            inventory_with_directory(&records, directory),
            DirectorySource::Stored,
        ),
        None => (stored_inventory(&records), DirectorySource::Rebuilt),
    };
    let matched = match_inventory(&inventory, settings, &KeyDigests::default());
    let info = types::SyncInfo {
        kind: types::SyncKind::WhatIf,
        now,
        organization: organization.to_owned(),
    };
    let contexts = matched
        .devices
        .iter()
        .map(|d| d.context(&inventory))
        .collect();
    let digest = policy.meta.digest.hex();
    let decisions = decide(
        policy,
        info,
        contexts,
        DEFAULT_BATCH_SIZE,
        Counter::default(),
    )
    .await;

    let Compared {
        verdicts,
        stored_verdicts,
        changes,
        decided,
    } = compare(&records, &inventory, &decisions.decisions);
    let plan = plan(
        &inventory.mailboxes,
        &decided,
        &[],
        &settings.max_new_restrictions,
        records.len(),
    );
    Ok(Diff {
        organization: organization.to_owned(),
        directory,
        plugin_digest: digest,
        devices: records.len() as u64,
        verdicts,
        stored_verdicts,
        changes,
        commands: plan.commands,
        restrictions: plan.restrictions as u64,
        restriction_limit: plan.limit as u64,
        held: plan.held,
        errors: decisions
            .failures
            .iter()
            .map(|f| {
                format!(
                    "policy batch of {} devices (from device {}) decided nothing: {}",
                    f.len, f.first, f.error
                )
            })
            .collect(),
    })
}

/// The organization's stored devices and directory, read off the async runtime.
async fn read_stored(
    store: Arc<Store>,
    organization: &str,
) -> Result<(Vec<DeviceRecord>, Option<StoredDirectory>), DiffError> {
    let name = organization.to_owned();
    tokio::task::spawn_blocking(move || {
        let org = store
            .find_organization(&name)?
            .ok_or_else(|| DiffError::UnknownOrganization(name.clone()))?;
        Ok::<_, DiffError>((store.devices(org)?, store.directory(org)?))
    })
    .await
    .expect("a store task does not panic")
}

/// The policy's verdicts next to the stored ones.
struct Compared<'a> {
    verdicts: VerdictCounts,
    stored_verdicts: VerdictCounts,
    changes: Vec<VerdictChange>,
    /// The decided devices, for the plan.
    decided: Vec<Decided<'a>>,
}

/// Counts both sides' verdicts and lists the devices whose verdict would change.
fn compare<'a>(
    records: &[DeviceRecord],
    inventory: &'a Inventory,
    decisions: &[Option<types::Decision>],
) -> Compared<'a> {
    let mut verdicts = VerdictCounts::default();
    let mut stored_verdicts = VerdictCounts::default();
    let mut changes = Vec::new();
    let mut decided = Vec::new();
    for (i, decision) in decisions.iter().enumerate() {
        let record = &records[i];
        let stored = record.decision.as_ref().map(|d| d.verdict);
        stored_verdicts.add(stored);
        let verdict = decision.as_ref().map(|d| Verdict::from(d.verdict));
        verdicts.add(verdict);
        let (Some(d), Some(verdict)) = (decision, verdict) else {
            continue;
        };
        decided.push(Decided {
            device: &inventory.devices[i],
            verdict,
        });
        if stored != Some(verdict) {
            changes.push(VerdictChange {
                key: record.key.clone(),
                device_id: record.exchange.device_id.clone(),
                from: stored,
                to: verdict,
                reason: d.reason.clone(),
            });
        }
    }
    Compared {
        verdicts,
        stored_verdicts,
        changes,
        decided,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{RunId, StoredDecision};

    fn record(
        mailbox: &str,
        id: &str,
        verdict: Option<Verdict>,
        state: AccessState,
    ) -> DeviceRecord {
        let exchange = ExchangeDevice {
            device_id: id.into(),
            identity: format!("{mailbox}\\ExchangeActiveSyncDevices\\iPhone§{id}"),
            mailbox: Some(mailbox.into()),
            access_state: state,
            access_state_reason: "Individual".into(),
            ..ExchangeDevice::default()
        };
        DeviceRecord {
            key: exchange.key(),
            exchange,
            managed: None,
            seen_at: 0,
            decision: verdict.map(|verdict| StoredDecision {
                verdict,
                reason: String::new(),
                notify: false,
                plugin_digest: String::new(),
                decided_at: 0,
                run: RunId(1),
            }),
        }
    }

    #[test]
    fn stored_lists_get_each_decided_device_where_its_verdict_put_it() {
        let records = [
            record("alice", "A1", Some(Verdict::Allow), AccessState::Blocked),
            record(
                "alice",
                "A2",
                Some(Verdict::Quarantine),
                AccessState::Allowed,
            ),
            record("alice", "A3", Some(Verdict::Exempt), AccessState::Allowed),
            record("alice", "A4", None, AccessState::Blocked),
        ];
        // Read before the plan ran: A1 still blocked, A2 allowed (in another case), and an
        // entry of a partnership the store does not know.
        let directory = StoredDirectory {
            mailboxes: vec![Mailbox {
                identity: "Alice".into(),
                primary_smtp: "alice@contoso.com".into(),
                user_principal_name: Some("alice@corp.contoso.com".into()),
                allowed: vec!["a2".into(), "A3".into(), "OLD".into()],
                blocked: vec!["A1".into(), "A4".into()],
            }],
            users: vec![DirectoryUser {
                user_principal_name: "alice@corp.contoso.com".into(),
                groups: vec!["g1".into()],
                locale: String::new(),
            }],
        };
        let inventory = inventory_with_directory(&records, directory.clone());
        let alice = &inventory.mailboxes[0];
        assert_eq!(alice.allowed, ["A3", "OLD", "A1"]);
        assert_eq!(alice.blocked, ["A4"]);
        assert_eq!(alice.primary_smtp, "alice@contoso.com");
        assert_eq!(inventory.users, directory.users);
        assert_eq!(inventory.devices[0].access_state, AccessState::Allowed);
    }

    #[test]
    fn the_lists_are_what_the_stored_verdicts_enforce() {
        // Saved before the plan was applied, Exchange's view lags the verdicts.
        let records = [
            record(
                "alice",
                "A1",
                Some(Verdict::Allow),
                AccessState::Quarantined,
            ),
            record("alice", "A2", Some(Verdict::Block), AccessState::Allowed),
            record(
                "alice",
                "A3",
                Some(Verdict::Quarantine),
                AccessState::Allowed,
            ),
            record("bob", "B1", None, AccessState::Blocked),
            record("bob", "B2", Some(Verdict::Exempt), AccessState::Allowed),
        ];
        let inventory = stored_inventory(&records);
        let lists: Vec<(&str, Vec<String>, Vec<String>)> = inventory
            .mailboxes
            .iter()
            .map(|m| (m.identity.as_str(), m.allowed.clone(), m.blocked.clone()))
            .collect();
        assert_eq!(
            lists,
            vec![
                ("alice", vec!["A1".to_owned()], vec!["A2".to_owned()]),
                ("bob", vec!["B2".to_owned()], vec!["B1".to_owned()]),
            ]
        );
        assert_eq!(inventory.devices[2].access_state, AccessState::Quarantined);
        assert!(!inventory.managed_complete);
    }
}
