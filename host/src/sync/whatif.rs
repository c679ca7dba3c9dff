//! What-if against the stored inventory (`easgate policy diff`): decide every stored device
//! with a candidate policy and plan against the state the last sync left, without asking
//! Exchange or Intune anything and without writing the store.
//!
//! The store keeps each partnership's Exchange and Intune views and its current verdict, but
//! not the mailboxes' lists nor the directory's users, so both are rebuilt from it:
//!
//! * a mailbox's lists are what its devices' stored verdicts put there (allow → allow list,
//!   block → block list, quarantine → neither), which is what the last applied plan enforced;
//!   devices no policy decided (or exempt) keep what Exchange reported (`Individual` access);
//! * a mailbox's user is the UPN of an Intune record of one of its devices, in no group; a
//!   mailbox none of whose devices is enrolled has no user. A candidate that scopes by group
//!   or treats `user: none` apart therefore sees less than a sync would.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use super::decide::{DEFAULT_BATCH_SIZE, decide};
use super::inventory::{
    AccessState, DeviceKey, DirectoryUser, ExchangeDevice, Inventory, Mailbox, Verdict,
};
use super::matching::match_inventory;
use super::plan::{Decided, PlannedCommand, plan};
use super::settings::SyncSettings;
use crate::plugin::{AccessPolicyPlugin, types};
use crate::store::{DeviceRecord, Store, StoreError, VerdictCounts};

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

/// What a candidate policy would do to the stored inventory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diff {
    pub organization: String,
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
    /// The commands the plan would issue.
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

/// The inventory as the last sync left it (see the module docs).
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
                groups: Vec::new(),
            })
            .collect(),
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
    let name = organization.to_owned();
    let records = tokio::task::spawn_blocking(move || {
        let org = store
            .find_organization(&name)?
            .ok_or_else(|| DiffError::UnknownOrganization(name.clone()))?;
        Ok::<_, DiffError>(store.devices(org)?)
    })
    .await
    .expect("a store task does not panic")?;
    let inventory = stored_inventory(&records);
    let matched = match_inventory(&inventory, settings, &HashSet::new());
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
    let decisions = decide(policy, info, contexts, DEFAULT_BATCH_SIZE).await;

    let mut verdicts = VerdictCounts::default();
    let mut stored_verdicts = VerdictCounts::default();
    let mut changes = Vec::new();
    let mut decided = Vec::new();
    for (i, decision) in decisions.decisions.iter().enumerate() {
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
    let plan = plan(
        &inventory.mailboxes,
        &decided,
        &[],
        &settings.max_new_restrictions,
        records.len(),
    );
    Ok(Diff {
        organization: organization.to_owned(),
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
