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
    // `read_device_statistics` unset: the built-in policy's blockStaleAfterDays turns it on.
    let settings = unguarded();
    assert_eq!(settings.read_device_statistics, None);
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
    let read = full.statistics.as_ref().expect("statistics were read");
    assert!(read.read > 0 && read.failed == 0, "{read:?}");
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

// Nothing is read when nothing needs it, nor when turned off; turned off under a stale limit
// (a settings file the configuration cannot see), the run says the limit never fires.
over_transports!(statistics_are_off_unless_needed_or_asked_for);
async fn statistics_are_off_unless_needed_or_asked_for(transport: Transport) {
    let lab = sync_lab(50).await;
    let engine = PluginEngine::new().unwrap();
    let (_dir, store) = temp_store();
    let sync = org_sync_over(&lab, store, unguarded(), transport);
    lab.control().reset_counters();
    let run = within(
        LIMIT,
        sync.run(
            SyncKind::Full,
            false,
            builtin(&engine, r#"{"notify": true}"#),
        ),
    )
    .await
    .unwrap();
    assert_eq!(lab.control().counters().calls(STATISTICS), 0);
    assert_eq!(run.statistics, None);

    let (_dir, store) = temp_store();
    let off = SyncSettings {
        read_device_statistics: Some(false),
        ..unguarded()
    };
    let sync = org_sync_over(&lab, store, off, transport);
    lab.control().reset_counters();
    let run = within(
        LIMIT,
        sync.run(
            SyncKind::Full,
            false,
            builtin(&engine, r#"{"blockStaleAfterDays": 1}"#),
        ),
    )
    .await
    .unwrap();
    assert_eq!(lab.control().counters().calls(STATISTICS), 0);
    let said: Vec<&String> = run
        .errors
        .iter()
        .filter(|e| e.contains("blockStaleAfterDays never fires"))
        .collect();
    assert_eq!(said.len(), 1, "{:?}", run.errors);
    assert!(said[0].contains("read_device_statistics = false"));
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

// Any error other than a gone mailbox or device is counted, and the first is kept naming its
// mailbox once, with its cause: what the run's summary, errors and metric carry.
over_transports!(a_failed_read_is_counted_with_its_mailbox_and_cause);
async fn a_failed_read_is_counted_with_its_mailbox_and_cause(transport: Transport) {
    let lab = sync_lab(20).await;
    let truth = lab.control().truth();
    let mut mailboxes: Vec<String> = truth.iter().filter_map(|d| d.mailbox.clone()).collect();
    mailboxes.sort();
    mailboxes.dedup();
    let known: Vec<&DeviceTruth> = mailboxes[..2]
        .iter()
        .map(|m| {
            truth
                .iter()
                .find(|d| d.mailbox.as_ref() == Some(m))
                .unwrap()
        })
        .collect();
    let org = organization_over(&lab, transport);
    let exchange = ExchangeClient::builder(&org, &test_http()).build().unwrap();
    let mut devices: Vec<ExchangeDevice> = known
        .iter()
        .map(|d| device(&d.identity, d.mailbox.as_deref().unwrap()))
        .collect();
    // Exchange refuses every request: neither a gone mailbox nor a gone device.
    lab.control().fail_cas(0, 400).unwrap();
    let mut report = StatisticsReport::default();
    within(
        LIMIT,
        statistics::fill(&exchange, &mut devices, &mut report),
    )
    .await;
    lab.control().heal_cas(0).unwrap();
    assert_eq!(
        (report.requests, report.read, report.gone, report.failed),
        (2, 0, 0, 2),
        "{report:?}"
    );
    assert!(devices.iter().all(|d| d.last_success_sync.is_none()));
    let first = report.first_error.clone().expect("the first error is kept");
    let named: Vec<&String> = mailboxes[..2]
        .iter()
        .filter(|m| first.to_lowercase().contains(&m.to_lowercase()))
        .collect();
    assert_eq!(named.len(), 1, "one mailbox named: {first}");
    assert_eq!(
        first
            .to_lowercase()
            .matches(&named[0].to_lowercase())
            .count(),
        1,
        "named once: {first}"
    );
    assert!(first.contains(STATISTICS), "the cause: {first}");
    let line = report.error_line().unwrap();
    assert!(
        line.contains("2 devices") && line.ends_with(&first),
        "{line}"
    );
}
