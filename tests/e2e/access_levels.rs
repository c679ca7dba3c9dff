//! The organization default (allow, block, quarantine), Intune's platform exceptions (device
//! access rules) and `override_default_rule`, end to end: the lab evaluates every device with
//! Exchange's precedence (mailbox lists, then device access rules, then the default), so each
//! device's state below is what Exchange itself makes of the connector's plan.

use std::collections::BTreeSet;
use std::time::Duration;

use easgate::exchange::cmdlets::{GetOrganizationSettings, SetOrganizationSettings};
use easgate::model::{
    AccessLevel, DefaultAccess, DeviceAccessRule, RestrictionLimit, RuleCharacteristic, SyncKind,
    SyncSettings, Verdict,
};
use easgate::plugin::PluginEngine;
use easgate::store::RunOutcome;
use easgate::sync::dry_run::{Cause, DefaultSwitch, NewState};
use easgate_lab::{AccessReason, AccessState, ComplianceState, DeviceTruth, Lab};

use crate::support::lab::{expected, org_sync_over, sync_lab, unguarded};
use crate::support::{Transport, builtin, temp_store, within};

const LIMIT: Duration = Duration::from_secs(120);

/// A family rule (`DeviceType`), Intune's "device family" exception.
fn family(query: &str, level: AccessLevel) -> DeviceAccessRule {
    DeviceAccessRule {
        query_string: query.into(),
        characteristic: RuleCharacteristic::DeviceType,
        access_level: level,
    }
}

/// The built-in policy's verdict, or none for a partnership whose mailbox is gone (it has no
/// lists: rules and the default decide it).
fn verdict(d: &DeviceTruth) -> Option<Verdict> {
    d.mailbox.as_ref().map(|_| expected(d))
}

/// Every discovered device: (identity, state, reason, on the allow list, on the block list).
fn checked(lab: &Lab) -> Vec<DeviceTruth> {
    lab.control()
        .truth()
        .into_iter()
        .filter(|d| d.access_state != AccessState::DeviceDiscovery)
        .collect()
}

/// Devices not as `want` says: (allow list, block list, state, reason) per device.
fn wrong(
    lab: &Lab,
    want: impl Fn(&DeviceTruth) -> (bool, bool, AccessState, AccessReason),
) -> Vec<(DeviceTruth, (bool, bool, AccessState, AccessReason))> {
    checked(lab)
        .into_iter()
        .filter_map(|d| {
            let w = want(&d);
            let got = (
                d.in_allow_list,
                d.in_block_list,
                d.access_state,
                d.access_state_reason,
            );
            (got != w).then_some((d, w))
        })
        .collect()
}

fn assert_none_wrong(
    lab: &Lab,
    want: impl Fn(&DeviceTruth) -> (bool, bool, AccessState, AccessReason),
) {
    let wrong = wrong(lab, want);
    assert!(
        wrong.is_empty(),
        "{} devices not as expected, e.g. {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(3)]
    );
}

async fn org_default(sync: &easgate::sync::OrgSync) -> String {
    let settings = sync
        .exchange
        .run(&GetOrganizationSettings {})
        .await
        .unwrap()
        .remove(0);
    format!("{:?}", settings.default_access_level)
}

/// A first full sync of `lab` under `settings`, which succeeds: where a test's change starts.
async fn settle(
    lab: &Lab,
    store: std::sync::Arc<easgate::store::Store>,
    settings: SyncSettings,
    transport: Transport,
    policy: std::sync::Arc<easgate::plugin::AccessPolicyPlugin>,
) {
    let settled = org_sync_over(lab, store, settings, transport);
    let first = within(LIMIT, settled.run(SyncKind::Full, false, policy))
        .await
        .unwrap();
    assert_eq!(first.outcome, RunOutcome::Succeeded, "{first:#?}");
}

/// The device `identity` as `sync`'s store keeps it (what the status page and the API show).
fn stored(sync: &easgate::sync::OrgSync, identity: &str) -> easgate::store::DeviceRecord {
    let org = sync.store.organization(&sync.name, 0).unwrap();
    sync.store
        .device(org, &easgate::model::DeviceKey::new(identity))
        .unwrap()
        .expect("the device is stored")
}

// Intune's usual on-premises set-up: block every device by default, let one platform in as an
// exception, and let compliance decide the enrolled ones.
over_transports!(default_block_with_an_allow_exception_for_a_platform);
async fn default_block_with_an_allow_exception_for_a_platform(transport: Transport) {
    let lab = sync_lab(400).await;
    let (_dir, store) = temp_store();
    let engine = PluginEngine::new().expect("engine");
    let settings = SyncSettings {
        default_access_level: Some(DefaultAccess::Block),
        device_access_rules: Some(vec![family("iPhone", AccessLevel::Allow)]),
        ..unguarded()
    };
    let sync = org_sync_over(&lab, store, settings, transport);
    let run = within(
        LIMIT,
        sync.run(SyncKind::Full, false, builtin(&engine, "{}")),
    )
    .await
    .unwrap();
    assert_eq!(run.outcome, RunOutcome::Succeeded, "{run:#?}");
    assert_eq!(org_default(&sync).await, "Block");

    let iphone = |d: &DeviceTruth| d.device_type.eq_ignore_ascii_case("iPhone");
    assert_none_wrong(&lab, |d| match verdict(d) {
        Some(Verdict::Allow) => (true, false, AccessState::Allowed, AccessReason::Individual),
        Some(Verdict::Block) => (false, true, AccessState::Blocked, AccessReason::Individual),
        // On no list: the exception lets iPhones in, the default blocks the rest.
        _ if iphone(d) => (false, false, AccessState::Allowed, AccessReason::DeviceRule),
        _ => (false, false, AccessState::Blocked, AccessReason::Global),
    });
    // Not vacuous: unenrolled devices on both sides of the exception, and both verdicts.
    let devices = checked(&lab);
    let unlisted = |excepted: bool| {
        devices
            .iter()
            .filter(|d| verdict(d) != Some(Verdict::Allow) && verdict(d) != Some(Verdict::Block))
            .filter(|d| iphone(d) == excepted)
            .count()
    };
    assert!(unlisted(true) > 0 && unlisted(false) > 0);
    assert!(devices.iter().any(|d| verdict(d) == Some(Verdict::Block)));
}

// Default allow, compliance blocks; a blocked platform with `override_default_rule` off keeps
// its compliant devices blocked, and turning it on lets them in through the allow list.
over_transports!(default_allow_with_compliance_blocks_and_override_off_then_on);
async fn default_allow_with_compliance_blocks_and_override_off_then_on(transport: Transport) {
    let lab = sync_lab(400).await;
    let (_dir, store) = temp_store();
    let engine = PluginEngine::new().expect("engine");
    let settings = SyncSettings {
        default_access_level: Some(DefaultAccess::Allow),
        device_access_rules: Some(vec![family("Android", AccessLevel::Block)]),
        override_default_rule: false,
        ..unguarded()
    };
    let sync = org_sync_over(&lab, store.clone(), settings.clone(), transport);
    let run = within(
        LIMIT,
        sync.run(SyncKind::Full, false, builtin(&engine, "{}")),
    )
    .await
    .unwrap();
    assert_eq!(run.outcome, RunOutcome::Succeeded, "{run:#?}");
    assert_eq!(org_default(&sync).await, "Allow");

    let android = |d: &DeviceTruth| d.device_type.eq_ignore_ascii_case("Android");
    assert_none_wrong(&lab, |d| match verdict(d) {
        Some(Verdict::Block) => (false, true, AccessState::Blocked, AccessReason::Individual),
        // Compliant, but the platform is blocked and compliance does not override it.
        Some(Verdict::Allow) if android(d) => {
            (false, false, AccessState::Blocked, AccessReason::DeviceRule)
        }
        Some(Verdict::Allow) => (true, false, AccessState::Allowed, AccessReason::Individual),
        _ if android(d) => (false, false, AccessState::Blocked, AccessReason::DeviceRule),
        // The policy would quarantine them, but the default lets them in: Exchange's verdict.
        _ => (false, false, AccessState::Allowed, AccessReason::Global),
    });
    let compliant_android: BTreeSet<String> = checked(&lab)
        .into_iter()
        .filter(|d| android(d) && verdict(d) == Some(Verdict::Allow))
        .map(|d| d.identity)
        .collect();
    assert!(!compliant_android.is_empty());

    // Stable: the same settings again change nothing.
    lab.control().reset_counters();
    let again = within(
        LIMIT,
        sync.run(SyncKind::Full, false, builtin(&engine, "{}")),
    )
    .await
    .unwrap();
    assert_eq!(again.commands_issued, 0, "{again:#?}");

    // Override on: the compliant devices of the blocked platform go on their allow lists.
    let overriding = org_sync_over(
        &lab,
        store,
        SyncSettings {
            override_default_rule: true,
            ..settings
        },
        transport,
    );
    let run = within(
        LIMIT,
        overriding.run(SyncKind::Full, false, builtin(&engine, "{}")),
    )
    .await
    .unwrap();
    assert_eq!(run.outcome, RunOutcome::Succeeded, "{run:#?}");
    for d in checked(&lab) {
        if compliant_android.contains(&d.identity) {
            assert!(
                d.in_allow_list && d.access_state == AccessState::Allowed,
                "{d:#?}"
            );
        }
    }
}

// Switching the default from Allow to Block takes access from every device only the default
// allowed: the dry run lists exactly those, the guard holds the real run (nothing changes),
// and the approved switch then changes exactly what the dry run listed.
over_transports!(a_default_switch_is_listed_by_the_dry_run_and_held_by_the_guard);
async fn a_default_switch_is_listed_by_the_dry_run_and_held_by_the_guard(transport: Transport) {
    let lab = sync_lab(600).await;
    let (_dir, store) = temp_store();
    let engine = PluginEngine::new().expect("engine");
    let policy = || builtin(&engine, "{}");
    let allow = SyncSettings {
        default_access_level: Some(DefaultAccess::Allow),
        ..unguarded()
    };
    settle(&lab, store.clone(), allow, transport, policy()).await;
    let state = |lab: &Lab| -> BTreeSet<(String, String)> {
        checked(lab)
            .into_iter()
            .map(|d| (d.identity, d.access_state.as_str().to_owned()))
            .collect()
    };
    let before = state(&lab);
    let by_default: BTreeSet<String> = checked(&lab)
        .into_iter()
        .filter(|d| {
            d.access_state == AccessState::Allowed && d.access_state_reason == AccessReason::Global
        })
        .map(|d| d.identity)
        .collect();
    // The default guard (10 %, at least 25) is below them.
    assert!(
        by_default.len() > 60,
        "{} allowed by the default",
        by_default.len()
    );

    let block = SyncSettings {
        default_access_level: Some(DefaultAccess::Block),
        ..SyncSettings::default()
    };
    let guarded = org_sync_over(&lab, store.clone(), block.clone(), transport);
    lab.control().reset_counters();
    let rehearsal = within(LIMIT, guarded.run(SyncKind::Full, true, policy()))
        .await
        .unwrap();
    assert_eq!(rehearsal.outcome, RunOutcome::Succeeded, "{rehearsal:#?}");
    assert_eq!(rehearsal.restrictions, by_default.len() as u64);
    let report = rehearsal.dry_run.as_ref().expect("a dry run's report");
    assert!(report.would_hold);
    assert_eq!(
        report.org_default,
        Some(DefaultSwitch {
            from: AccessLevel::Allow,
            to: AccessLevel::Block
        })
    );
    assert!(
        report
            .changes
            .iter()
            .all(|c| c.from == easgate::model::AccessState::Allowed
                && c.to == NewState::Blocked
                && c.by == Cause::OrgDefault)
    );
    let listed: BTreeSet<String> = report.changes.iter().map(|c| c.identity.clone()).collect();
    assert_eq!(listed, by_default);

    let held = within(LIMIT, guarded.run(SyncKind::Full, false, policy()))
        .await
        .unwrap();
    assert_eq!(held.outcome, RunOutcome::Held, "{held:#?}");
    assert_eq!(held.restrictions, by_default.len() as u64);
    let counters = lab.control().counters();
    assert_eq!(counters.calls("Set-ActiveSyncOrganizationSettings"), 0);
    assert_eq!(counters.calls("Set-CASMailbox"), 0);
    assert_eq!(org_default(&guarded).await, "Allow");
    assert_eq!(state(&lab), before);

    // Let through: exactly the listed devices change, each to Blocked.
    let unguarded_block = org_sync_over(
        &lab,
        store,
        SyncSettings {
            max_new_restrictions: unguarded().max_new_restrictions,
            ..block
        },
        transport,
    );
    let run = within(LIMIT, unguarded_block.run(SyncKind::Full, false, policy()))
        .await
        .unwrap();
    assert_eq!(run.outcome, RunOutcome::Succeeded, "{run:#?}");
    let after = state(&lab);
    let changed: BTreeSet<String> = after
        .difference(&before)
        .map(|(identity, state)| {
            assert_eq!(state, "Blocked", "{identity}");
            identity.clone()
        })
        .collect();
    assert_eq!(changed, listed);
}

// An admin changes the default by hand between full syncs: the quick sync reads the default
// Exchange has (one request) and predicts with it. A device whose verdict turns to quarantine
// stays allowed under that default, so it is neither listed as quarantined nor counted by the
// guard; and the quick sync never sets the default back (only a full sync does).
over_transports!(a_quick_sync_predicts_with_the_default_an_admin_set_by_hand);
async fn a_quick_sync_predicts_with_the_default_an_admin_set_by_hand(transport: Transport) {
    let lab = sync_lab(300).await;
    let (_dir, store) = temp_store();
    let engine = PluginEngine::new().expect("engine");
    let policy = || builtin(&engine, "{}");
    // The configured default: quarantine.
    let sync = org_sync_over(&lab, store, unguarded(), transport);
    let full = within(LIMIT, sync.run(SyncKind::Full, false, policy()))
        .await
        .unwrap();
    assert_eq!(full.outcome, RunOutcome::Succeeded, "{full:#?}");
    assert_eq!(org_default(&sync).await, "Quarantine");
    sync.exchange
        .run(&SetOrganizationSettings {
            default_access_level: AccessLevel::Allow,
        })
        .await
        .unwrap();
    // An allowed, enrolled device loses its record: the policy now quarantines it.
    let retired = checked(&lab)
        .into_iter()
        .find(|d| verdict(d) == Some(Verdict::Allow) && d.in_allow_list)
        .expect("an allowed device on its allow list");
    lab.control().retire(&retired.device_id).unwrap();

    lab.control().reset_counters();
    let rehearsal = within(LIMIT, sync.run(SyncKind::Quick, true, policy()))
        .await
        .unwrap();
    assert_eq!(
        lab.control()
            .counters()
            .calls("Get-ActiveSyncOrganizationSettings"),
        1
    );
    let report = rehearsal.dry_run.as_ref().expect("a dry run's report");
    assert!(
        report
            .changes
            .iter()
            .all(|c| c.identity != retired.identity),
        "listed as changing, but the default allows it: {:#?}",
        report.changes
    );
    assert_eq!(rehearsal.restrictions, 0, "{rehearsal:#?}");
    assert!(
        report.entries_only >= 1,
        "its allow entry goes: {report:#?}"
    );

    lab.control().reset_counters();
    let quick = within(LIMIT, sync.run(SyncKind::Quick, false, policy()))
        .await
        .unwrap();
    assert_eq!(quick.kind, easgate::model::RunKind::Quick);
    assert_eq!(quick.restrictions, 0, "{quick:#?}");
    assert_eq!(
        lab.control()
            .counters()
            .calls("Set-ActiveSyncOrganizationSettings"),
        0
    );
    assert_eq!(org_default(&sync).await, "Allow");
    let now = checked(&lab)
        .into_iter()
        .find(|d| d.identity == retired.identity)
        .unwrap();
    assert!(!now.in_allow_list && !now.in_block_list, "{now:#?}");
    assert_eq!(
        (now.access_state, now.access_state_reason),
        (AccessState::Allowed, AccessReason::Global)
    );
    // The store (the status page, the API) records what Exchange shows, not the verdict's
    // quarantine: the allow default decides the device.
    let stored = stored(&sync, &retired.identity);
    assert_eq!(
        stored.decision.map(|d| d.verdict),
        Some(Verdict::Quarantine)
    );
    assert_eq!(
        (
            stored.exchange.access_state,
            stored.exchange.access_state_reason.as_str()
        ),
        (easgate::model::AccessState::Allowed, "Global")
    );
}

// A new blocking rule takes access from every device on no list it matches: the dry run lists
// exactly those (Allowed → Blocked, by a device access rule), the guard holds the real run
// (nothing changes), and the rule let through changes exactly what the dry run listed.
over_transports!(a_new_blocking_rule_is_listed_by_the_dry_run_and_held_by_the_guard);
async fn a_new_blocking_rule_is_listed_by_the_dry_run_and_held_by_the_guard(transport: Transport) {
    let lab = sync_lab(600).await;
    let (_dir, store) = temp_store();
    let engine = PluginEngine::new().expect("engine");
    let policy = || builtin(&engine, "{}");
    let allow = SyncSettings {
        default_access_level: Some(DefaultAccess::Allow),
        device_access_rules: Some(Vec::new()),
        ..unguarded()
    };
    settle(&lab, store.clone(), allow.clone(), transport, policy()).await;
    let state = |lab: &Lab| -> BTreeSet<(String, String)> {
        checked(lab)
            .into_iter()
            .map(|d| (d.identity, d.access_state.as_str().to_owned()))
            .collect()
    };
    let before = state(&lab);
    let android = |d: &DeviceTruth| d.device_type.eq_ignore_ascii_case("Android");
    // Allowed by the default, on no list: the rule takes them.
    let by_rule: BTreeSet<String> = checked(&lab)
        .into_iter()
        .filter(|d| {
            android(d)
                && d.access_state == AccessState::Allowed
                && d.access_state_reason == AccessReason::Global
        })
        .map(|d| d.identity)
        .collect();
    // A guard below them.
    let strict = easgate::model::RestrictionLimit {
        percent: 0.0,
        floor: 10,
    };
    assert!(
        by_rule.len() > strict.floor,
        "{} Androids only the default allows",
        by_rule.len()
    );

    let blocking = SyncSettings {
        device_access_rules: Some(vec![family("Android", AccessLevel::Block)]),
        max_new_restrictions: strict,
        ..allow
    };
    let guarded = org_sync_over(&lab, store.clone(), blocking.clone(), transport);
    let rehearsal = within(LIMIT, guarded.run(SyncKind::Full, true, policy()))
        .await
        .unwrap();
    assert_eq!(
        rehearsal.restrictions,
        by_rule.len() as u64,
        "{rehearsal:#?}"
    );
    let report = rehearsal.dry_run.as_ref().expect("a dry run's report");
    assert!(report.would_hold);
    assert!(
        report
            .changes
            .iter()
            .all(|c| c.from == easgate::model::AccessState::Allowed
                && c.to == NewState::Blocked
                && c.by == Cause::AccessRule),
        "{:#?}",
        report.changes
    );
    let listed: BTreeSet<String> = report.changes.iter().map(|c| c.identity.clone()).collect();
    assert_eq!(listed, by_rule);

    lab.control().reset_counters();
    let held = within(LIMIT, guarded.run(SyncKind::Full, false, policy()))
        .await
        .unwrap();
    assert_eq!(held.outcome, RunOutcome::Held, "{held:#?}");
    assert_eq!(held.restrictions, by_rule.len() as u64);
    let counters = lab.control().counters();
    assert_eq!(counters.calls("New-ActiveSyncDeviceAccessRule"), 0);
    assert_eq!(counters.calls("Set-CASMailbox"), 0);
    assert_eq!(state(&lab), before);

    let let_through = org_sync_over(
        &lab,
        store,
        SyncSettings {
            max_new_restrictions: unguarded().max_new_restrictions,
            ..blocking
        },
        transport,
    );
    let run = within(LIMIT, let_through.run(SyncKind::Full, false, policy()))
        .await
        .unwrap();
    assert_eq!(run.outcome, RunOutcome::Succeeded, "{run:#?}");
    let changed: BTreeSet<String> = state(&lab)
        .difference(&before)
        .map(|(identity, state)| {
            assert_eq!(state, "Blocked", "{identity}");
            identity.clone()
        })
        .collect();
    assert_eq!(changed, listed);
}

// A held plan may hold a quarantine that an allow default overrides on Exchange. Once it is
// approved and applied, the store (the status page, the API) records what Exchange shows, as
// after a run that was not held: `Allowed` by the default, not the verdict's quarantine.
over_transports!(an_approved_plan_records_the_state_exchange_shows_not_the_verdict);
async fn an_approved_plan_records_the_state_exchange_shows_not_the_verdict(transport: Transport) {
    let lab = sync_lab(300).await;
    let (_dir, store) = temp_store();
    let engine = PluginEngine::new().expect("engine");
    let policy = || builtin(&engine, "{}");
    let allow = SyncSettings {
        default_access_level: Some(DefaultAccess::Allow),
        ..unguarded()
    };
    settle(&lab, store.clone(), allow.clone(), transport, policy()).await;
    let allowed: Vec<DeviceTruth> = checked(&lab)
        .into_iter()
        .filter(|d| verdict(d) == Some(Verdict::Allow) && d.in_allow_list)
        .collect();
    // One allowed device loses its record (the policy quarantines it, the default allows it);
    // another turns noncompliant (a block: a restriction the guard below holds).
    let (retired, blocked) = (&allowed[0], &allowed[1]);
    lab.control().retire(&retired.device_id).unwrap();
    lab.control()
        .set_compliance(&blocked.device_id, ComplianceState::Noncompliant)
        .unwrap();

    let nothing_new = SyncSettings {
        max_new_restrictions: RestrictionLimit {
            percent: 0.0,
            floor: 0,
        },
        ..allow
    };
    let guarded = org_sync_over(&lab, store, nothing_new, transport);
    let held = within(LIMIT, guarded.run(SyncKind::Full, false, policy()))
        .await
        .unwrap();
    assert_eq!(held.outcome, RunOutcome::Held, "{held:#?}");
    assert_eq!(held.restrictions, 1, "{held:#?}");
    let approved = within(LIMIT, guarded.approve(held.run)).await.unwrap();
    assert_eq!(approved.outcome, RunOutcome::Succeeded, "{approved:#?}");

    let on_exchange = |identity: &str| {
        checked(&lab)
            .into_iter()
            .find(|d| d.identity == identity)
            .expect("the device is on Exchange")
    };
    let now = on_exchange(&retired.identity);
    assert!(!now.in_allow_list && !now.in_block_list, "{now:#?}");
    assert_eq!(
        (now.access_state, now.access_state_reason),
        (AccessState::Allowed, AccessReason::Global)
    );
    assert_eq!(
        on_exchange(&blocked.identity).access_state,
        AccessState::Blocked
    );

    let retired_row = stored(&guarded, &retired.identity);
    assert_eq!(
        retired_row.decision.map(|d| d.verdict),
        Some(Verdict::Quarantine)
    );
    assert_eq!(
        (
            retired_row.exchange.access_state,
            retired_row.exchange.access_state_reason.as_str()
        ),
        (easgate::model::AccessState::Allowed, "Global"),
        "the store shows what Exchange shows"
    );
    assert_eq!(
        stored(&guarded, &blocked.identity).exchange.access_state,
        easgate::model::AccessState::Blocked
    );
}
