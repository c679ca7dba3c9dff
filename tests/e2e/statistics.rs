//! Device statistics end to end: `Get-MobileDeviceStatistics` read from the lab over both
//! transports, the device's `LastSuccessSync` reaching the built-in policy, whose
//! `blockStaleAfterDays` blocks a device left unsynced, and the reads' cost and failures.

use std::collections::HashSet;
use std::time::Duration;

use easgate::exchange::ExchangeClient;
use easgate::model::{AccessState, ExchangeDevice, SyncKind, SyncSettings};
use easgate::plugin::PluginEngine;
use easgate::sync::statistics::{self, StatisticsReport};
use easgate_lab::{ComplianceState, DeviceTruth, NewDevices};

use crate::support::lab::{org_sync_over, sync_lab, unguarded};
use crate::support::{Transport, builtin, organization_over, temp_store, test_http, within};

const LIMIT: Duration = Duration::from_secs(120);
const DAY: i64 = 86_400;
const STATISTICS: &str = "Get-MobileDeviceStatistics";

fn now() -> i64 {
    easgate::timestamp::unix_now()
}

/// Enrolled, compliant devices with a mailbox: allowed unless stale.
fn compliant(truth: &[DeviceTruth]) -> Vec<&DeviceTruth> {
    truth
        .iter()
        .filter(|d| d.mailbox.is_some() && d.compliance_state == Some(ComplianceState::Compliant))
        .collect()
}

over_transports!(a_device_unsynced_past_the_limit_is_blocked_and_a_recent_one_allowed);
async fn a_device_unsynced_past_the_limit_is_blocked_and_a_recent_one_allowed(
    transport: Transport,
) {
    let lab = sync_lab(200).await;
    let truth = lab.control().truth();
    let candidates = compliant(&truth);
    let (stale, recent) = (candidates[0], candidates[1]);
    lab.control()
        .set_last_sync(&stale.device_id, now() - 100 * DAY)
        .unwrap();
    lab.control()
        .set_last_sync(&recent.device_id, now() - DAY)
        .unwrap();
    let (_dir, store) = temp_store();
    let settings = SyncSettings {
        read_device_statistics: Some(true),
        ..unguarded()
    };
    let policy = builtin(
        &PluginEngine::new().unwrap(),
        r#"{"blockStaleAfterDays": 90}"#,
    );
    let sync = org_sync_over(&lab, store, settings, transport);

    lab.control().reset_counters();
    let full = within(LIMIT, sync.run(SyncKind::Full, false, policy.clone()))
        .await
        .unwrap();
    assert!(full.errors.is_empty(), "{:?}", full.errors);
    let after = lab.control().truth();
    let state = |id: &str| after.iter().find(|d| d.device_id == id).unwrap().clone();
    assert!(
        state(&stale.device_id).in_block_list,
        "the stale device is not blocked"
    );
    assert!(!state(&recent.device_id).in_block_list);
    assert_eq!(
        state(&recent.device_id).access_state,
        easgate_lab::AccessState::Allowed
    );
    // One request per mailbox with devices, not one per device.
    let mailboxes: HashSet<String> = truth
        .iter()
        .filter_map(|d| d.mailbox.as_ref().map(|m| m.to_lowercase()))
        .collect();
    let calls = lab.control().counters().calls(STATISTICS);
    assert_eq!(calls, mailboxes.len() as u64);
    assert!(
        calls < truth.len() as u64,
        "{calls} for {} devices",
        truth.len()
    );

    // A quick sync reads the statistics of the devices it decides only: one new device's.
    let added = lab
        .control()
        .add_devices(&NewDevices {
            count: 1,
            mailbox: recent.mailbox.clone(),
            enroll: None,
        })
        .unwrap();
    lab.control().reset_counters();
    let quick = within(LIMIT, sync.run(SyncKind::Quick, false, policy))
        .await
        .unwrap();
    assert!(quick.errors.is_empty(), "{:?}", quick.errors);
    let calls = lab.control().counters().calls(STATISTICS);
    assert!(
        (1..=quick.exchange_reads).contains(&calls),
        "{calls} statistics reads in a quick sync that added {added:?}"
    );
}

over_transports!(statistics_are_off_unless_asked_for);
async fn statistics_are_off_unless_asked_for(transport: Transport) {
    let lab = sync_lab(50).await;
    let (_dir, store) = temp_store();
    let policy = builtin(
        &PluginEngine::new().unwrap(),
        r#"{"blockStaleAfterDays": 1}"#,
    );
    let sync = org_sync_over(&lab, store, unguarded(), transport);
    lab.control().reset_counters();
    within(LIMIT, sync.run(SyncKind::Full, false, policy))
        .await
        .unwrap();
    assert_eq!(lab.control().counters().calls(STATISTICS), 0);
}

fn device(identity: &str, mailbox: &str) -> ExchangeDevice {
    ExchangeDevice {
        device_id: identity.rsplit('§').next().unwrap_or_default().into(),
        identity: identity.into(),
        mailbox: Some(mailbox.into()),
        device_type: String::new(),
        device_model: String::new(),
        device_os: String::new(),
        user_agent: String::new(),
        first_sync: None,
        last_success_sync: None,
        access_state: AccessState::Allowed,
        access_state_reason: String::new(),
    }
}

over_transports!(a_device_or_mailbox_gone_meanwhile_is_left_without_statistics);
async fn a_device_or_mailbox_gone_meanwhile_is_left_without_statistics(transport: Transport) {
    let lab = sync_lab(20).await;
    let truth = lab.control().truth();
    let known = truth.iter().find(|d| d.mailbox.is_some()).unwrap();
    let mailbox = known.mailbox.clone().unwrap();
    let at = now() - 7 * DAY;
    lab.control().set_last_sync(&known.device_id, at).unwrap();
    let org = organization_over(&lab, transport);
    let exchange = ExchangeClient::builder(&org, &test_http()).build().unwrap();

    let mut devices = vec![
        device(&known.identity, &mailbox),
        // Removed from a mailbox that is still there.
        device(
            &format!("{mailbox}\\ExchangeActiveSyncDevices\\Gone§GONE1"),
            &mailbox,
        ),
        // Its mailbox removed too: Exchange's not-found.
        device(
            "left@contoso.com\\ExchangeActiveSyncDevices\\Gone§GONE2",
            "left@contoso.com",
        ),
    ];
    let mut report = StatisticsReport::default();
    within(
        LIMIT,
        statistics::fill(&exchange, &mut devices, &mut report),
    )
    .await;
    assert_eq!(
        report,
        StatisticsReport {
            requests: 2,
            read: 1,
            gone: 2,
            failed: 0,
            first_error: None,
        }
    );
    assert_eq!(devices[0].last_success_sync, Some(at));
    assert_eq!(devices[1].last_success_sync, None);
    assert_eq!(devices[2].last_success_sync, None);
}
