//! The quick sync and what Intune and the directory change without the device checking in: a
//! compliance state Intune changes on its own, a deleted record, a retire Intune has started,
//! a user taken out of a scope group. None of them moves the record's `lastSyncDateTime` (the
//! lab changes them the way Intune does); the next quick sync must enforce each, and edit only
//! the mailboxes of those devices.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use easgate::graph::GraphClient;
use easgate::model::{RunKind, SyncKind, SyncSettings, Verdict};
use easgate::plugin::PluginEngine;
use easgate::store::RunOutcome;
use easgate_lab::{ComplianceState, DeviceTruth};

use crate::support::lab::{
    assert_enforced, enforced, exempt_group, expected, org_sync_over, sync_lab, unguarded,
};
use crate::support::{Transport, builtin, lab_organization, temp_store, test_http, within};

over_transports!(a_quick_sync_enforces_what_intune_and_the_directory_changed_without_a_check_in);
async fn a_quick_sync_enforces_what_intune_and_the_directory_changed_without_a_check_in(
    transport: Transport,
) {
    let lab = sync_lab(3_000).await;
    let (_dir, store) = temp_store();
    let engine = PluginEngine::new().expect("engine");
    let graph = GraphClient::new(&lab_organization(&lab), &test_http()).unwrap();
    let truth = lab.control().truth();
    let (group, exempt) = exempt_group(
        &graph,
        truth
            .iter()
            .filter_map(|d| d.user_principal_name.as_deref())
            .take(400),
    )
    .await;
    let settings = SyncSettings {
        scope_groups: vec![group.clone()],
        ..unguarded()
    };
    let policy = builtin(
        &engine,
        &serde_json::json!({ "excludedGroups": [group] }).to_string(),
    );
    let sync = org_sync_over(&lab, store.clone(), settings, transport);
    let full = within(
        Duration::from_secs(240),
        sync.run(SyncKind::Full, false, policy.clone()),
    )
    .await
    .unwrap();
    assert_eq!(full.outcome, RunOutcome::Succeeded, "{full:#?}");
    let upn = |d: &DeviceTruth| d.user_principal_name.as_deref().map(str::to_lowercase);
    let is_exempt = |d: &DeviceTruth, exempt: &BTreeSet<String>| {
        d.mailbox.is_some() && upn(d).is_some_and(|u| exempt.contains(&u))
    };
    let exempt: BTreeSet<String> = exempt.into_iter().collect();
    let verdict_with = |exempt: &BTreeSet<String>| {
        let exempt = exempt.clone();
        move |d: &DeviceTruth| {
            if is_exempt(d, &exempt) {
                Verdict::Exempt
            } else {
                expected(d)
            }
        }
    };
    assert_enforced(&lab, verdict_with(&exempt));

    // The user taken out of the exempt group: a direct member one of whose devices the policy
    // would then judge otherwise than Exchange has it now.
    let truth = lab.control().truth();
    let mut devices_of: BTreeMap<String, Vec<&DeviceTruth>> = BTreeMap::new();
    for d in truth.iter().filter(|d| d.mailbox.is_some()) {
        if let Some(u) = upn(d) {
            devices_of.entry(u).or_default().push(d);
        }
    }
    let mut regrouped = None;
    for user in &exempt {
        let Some(devices) = devices_of.get(user) else {
            continue;
        };
        if devices.iter().all(|d| enforced(d, expected(d))) {
            continue;
        }
        // Members through a nested group stay members: try the next.
        if lab.control().set_membership(&group, user, false).is_err() {
            continue;
        }
        let members = graph.group_members(&group).await.unwrap();
        if members.iter().any(|m| {
            m.user_principal_name
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case(user))
        }) {
            continue;
        }
        regrouped = Some(user.clone());
        break;
    }
    let regrouped = regrouped.expect("an exempt user whose devices the policy would change");
    let mut exempt_now = exempt.clone();
    exempt_now.remove(&regrouped);

    // Intune's own changes, on devices of other users (one device each, so each mailbox edit
    // is one change's): a compliant, allowed device turns noncompliant; a record is deleted; a
    // retire starts (the policy allows a device leaving management as before: decided, no
    // edit).
    let mut users_taken = BTreeSet::from([regrouped.clone()]);
    let mut pick = || -> DeviceTruth {
        truth
            .iter()
            .find(|d| {
                let u = upn(d);
                d.in_allow_list
                    && d.compliance_state == Some(ComplianceState::Compliant)
                    && u.as_ref()
                        .is_some_and(|u| !exempt.contains(u) && devices_of[u].len() == 1)
                    && users_taken.insert(u.unwrap())
            })
            .expect("an allowed compliant device of a user with one device")
            .clone()
    };
    let (flipped, deleted, retiring) = (pick(), pick(), pick());
    lab.control()
        .set_compliance(&flipped.device_id, ComplianceState::Noncompliant)
        .unwrap();
    lab.control().retire(&deleted.device_id).unwrap();
    lab.control().retire_pending(&retiring.device_id).unwrap();

    let edits_before = lab.control().mailbox_edits();
    lab.control().reset_counters();
    let quick = within(
        Duration::from_secs(120),
        sync.run(SyncKind::Quick, false, policy.clone()),
    )
    .await
    .unwrap();
    assert_eq!(
        (quick.kind, quick.outcome),
        (RunKind::Quick, RunOutcome::Succeeded),
        "{quick:#?}"
    );
    assert_enforced(&lab, verdict_with(&exempt_now));
    let truth_after = lab.control().truth();
    let now = |d: &DeviceTruth| {
        truth_after
            .iter()
            .find(|t| t.identity == d.identity)
            .unwrap()
            .clone()
    };
    assert!(enforced(&now(&flipped), Verdict::Block), "{flipped:?}");
    assert!(enforced(&now(&deleted), Verdict::Quarantine), "{deleted:?}");
    assert!(enforced(&now(&retiring), Verdict::Allow), "{retiring:?}");

    // Decided: exactly those devices; edited: exactly their mailboxes.
    let regrouped_devices = devices_of[&regrouped].len() as u64;
    let v = quick.verdicts;
    assert_eq!(
        v.allow + v.block + v.quarantine + v.exempt,
        3 + regrouped_devices,
        "{quick:#?}"
    );
    let edited: BTreeSet<String> = lab
        .control()
        .mailbox_edits()
        .into_iter()
        .filter(|(mailbox, n)| edits_before.get(mailbox) != Some(n))
        .map(|(mailbox, _)| mailbox)
        .collect();
    let mailbox_of = |d: &DeviceTruth| d.identity.split('\\').next().unwrap().to_owned();
    let mut wanted = BTreeSet::from([mailbox_of(&flipped), mailbox_of(&deleted)]);
    wanted.extend(
        devices_of[&regrouped]
            .iter()
            .filter(|d| !enforced(d, expected(d)))
            .map(|d| mailbox_of(d)),
    );
    assert_eq!(edited, wanted, "{quick:#?}");
    assert!(
        quick.commands_issued as usize <= 2 + 2 * devices_of[&regrouped].len(),
        "{quick:#?}"
    );

    // The store now holds what Intune and the directory say: the next quick sync finds nothing.
    lab.control().reset_counters();
    let again = within(
        Duration::from_secs(120),
        sync.run(SyncKind::Quick, false, policy),
    )
    .await
    .unwrap();
    assert_eq!(again.outcome, RunOutcome::Succeeded, "{again:#?}");
    let v = again.verdicts;
    assert_eq!(v.allow + v.block + v.quarantine + v.exempt, 0, "{again:#?}");
    assert_eq!(again.commands_issued, 0, "{again:#?}");
    let counters = lab.control().counters();
    assert_eq!(counters.calls("Set-CASMailbox"), 0);
}
