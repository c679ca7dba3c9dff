//! Malformed records from the lab (its control API breaks one device's record in the Exchange or
//! the Graph listing: a missing field, a huge string, bytes that are not UTF-8, half a surrogate
//! pair): the sync names the record and the field, leaves that device exactly as it is — never
//! judged unenrolled, gone or anything else for want of a readable record — and decides the rest.
//!
//! Each case starts from a lab the connector has already settled; the victim is a compliant,
//! allowed device that then turns noncompliant, so any decision about it would move it off its
//! allow list. After the record is fixed, the next run converges.

use std::time::Duration;

use easgate::model::{SyncKind, Verdict};
use easgate::plugin::PluginEngine;
use easgate::store::RunOutcome;
use easgate_lab::{ComplianceState, Damage, DeviceTruth, Malformation, Service};

use crate::support::lab::{expected, mismatches, org_sync, sync_lab, unguarded};
use crate::support::{builtin, temp_store, within};

/// What the first run after the damage must report.
enum Expect {
    /// Partial: these lines (each must contain every part) among the errors; the victim
    /// left as it is.
    Skipped(&'static [&'static [&'static str]]),
    /// Partial: this line among the errors; the victim decided once, like every device.
    Repeated(&'static [&'static str]),
}

struct Case {
    service: Service,
    field: &'static str,
    damage: Damage,
    expect: Expect,
}

/// `{id}` and `{identity}` in an expected part stand for the victim's.
fn fill(part: &str, victim: &DeviceTruth) -> String {
    part.replace("{id}", &victim.device_id)
        .replace("{identity}", &victim.identity)
}

/// Whether `d`'s lists say what `verdict` says (the access state may still lag behind the org
/// default, which a run with unreadable records does not change).
fn listed_as(d: &DeviceTruth, verdict: Verdict) -> bool {
    match verdict {
        Verdict::Allow => d.in_allow_list && !d.in_block_list,
        Verdict::Block => d.in_block_list && !d.in_allow_list,
        Verdict::Quarantine => !d.in_allow_list && !d.in_block_list,
        Verdict::Exempt => true,
    }
}

async fn drill(case: &Case) {
    let lab = sync_lab(300).await;
    let (_dir, store) = temp_store();
    let engine = PluginEngine::new().unwrap();
    let sync = org_sync(&lab, store.clone(), unguarded());
    let run = || {
        within(
            Duration::from_secs(60),
            sync.run(SyncKind::Full, false, builtin(&engine, "{}")),
        )
    };
    let settled = run().await.unwrap();
    assert_eq!(settled.outcome, RunOutcome::Succeeded, "{settled:#?}");

    let victim = lab
        .control()
        .truth()
        .into_iter()
        .find(|d| d.mailbox.is_some() && d.in_allow_list && d.managed_device_id.is_some())
        .expect("an allowed, enrolled device");
    lab.control()
        .set_compliance(&victim.device_id, ComplianceState::Noncompliant)
        .unwrap();
    lab.control().malform(Malformation {
        service: case.service,
        device_id: victim.device_id.clone(),
        field: case.field.into(),
        damage: case.damage,
    });
    lab.control().reset_counters();
    let first = run().await.unwrap();
    let what = format!("{:?} {} {:?}", case.service, case.field, case.damage);
    let after = lab.control().truth();
    let victim_after = after
        .iter()
        .find(|d| d.device_id == victim.device_id)
        .unwrap();
    let has_line = |parts: &[&str]| {
        let parts: Vec<String> = parts.iter().map(|p| fill(p, &victim)).collect();
        assert!(
            first
                .errors
                .iter()
                .any(|e| parts.iter().all(|p| e.contains(p.as_str()))),
            "{what}: no error with {parts:?} in {:#?}",
            first.errors
        );
    };
    let others_as_decided = || {
        let wrong: Vec<&DeviceTruth> = after
            .iter()
            .filter(|d| d.mailbox.is_some() && d.device_id != victim.device_id)
            .filter(|d| !listed_as(d, expected(d)))
            .collect();
        assert!(wrong.is_empty(), "{what}: {wrong:#?}");
    };
    let decided = |v: easgate::store::VerdictCounts| v.allow + v.block + v.quarantine + v.exempt;
    match case.expect {
        Expect::Skipped(lines) => {
            assert_eq!(first.outcome, RunOutcome::Partial, "{what}: {first:#?}");
            assert_eq!(
                (
                    victim_after.in_allow_list,
                    victim_after.in_block_list,
                    victim_after.access_state
                ),
                (true, false, victim.access_state),
                "{what}: the victim was touched"
            );
            for parts in lines {
                has_line(parts);
            }
            assert_eq!(
                decided(first.verdicts),
                299,
                "{what}: every other device decided once: {:?}",
                first.verdicts
            );
            others_as_decided();
        }
        Expect::Repeated(parts) => {
            assert_eq!(first.outcome, RunOutcome::Partial, "{what}: {first:#?}");
            has_line(parts);
            assert_eq!(decided(first.verdicts), 300, "{what}: {:?}", first.verdicts);
            assert!(listed_as(victim_after, Verdict::Block), "{victim_after:?}");
            others_as_decided();
        }
    }

    lab.control().clear_malformations();
    let fixed = run().await.unwrap();
    assert_eq!(fixed.outcome, RunOutcome::Succeeded, "{what}: {fixed:#?}");
    let wrong = mismatches(&lab, expected);
    assert!(wrong.is_empty(), "{what}: {wrong:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_record_that_cannot_be_read_is_named_and_left_as_it_is() {
    let cases = [
        Case {
            service: Service::Exchange,
            field: "DeviceAccessState",
            damage: Damage::MissingField,
            expect: Expect::Skipped(&[&[
                "left as it is: device with Identity `{identity}`",
                "DeviceAccessState: missing field",
            ]]),
        },
        Case {
            service: Service::Exchange,
            field: "DeviceModel",
            damage: Damage::HugeField { bytes: 1 << 20 },
            expect: Expect::Skipped(&[&[
                "device with Identity `{identity}`",
                "DeviceModel: 1048576 bytes, more than the 4096 allowed",
            ]]),
        },
        Case {
            service: Service::Exchange,
            field: "",
            damage: Damage::Duplicate,
            expect: Expect::Repeated(&["device with Identity `{identity}` listed twice"]),
        },
        Case {
            service: Service::Graph,
            field: "complianceState",
            damage: Damage::MissingField,
            expect: Expect::Skipped(&[
                &[
                    "Intune record with easDeviceId `{id}`",
                    "complianceState: missing field",
                ],
                &[
                    "left as it is: device with Identity `{identity}`: its Intune record could not be read",
                ],
            ]),
        },
        Case {
            service: Service::Graph,
            field: "deviceName",
            damage: Damage::HugeField { bytes: 1 << 20 },
            expect: Expect::Skipped(&[&[
                "Intune record with easDeviceId `{id}`",
                "deviceName: 1048576 bytes",
            ]]),
        },
    ];
    for case in &cases {
        drill(case).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_whose_bytes_are_not_json_text_is_named_and_left_as_it_is() {
    let cases = [
        Case {
            service: Service::Exchange,
            field: "DeviceModel",
            damage: Damage::InvalidUtf8,
            expect: Expect::Skipped(&[&[
                "left as it is: device with Identity `{identity}`",
                "DeviceModel: invalid unicode code point",
            ]]),
        },
        Case {
            service: Service::Exchange,
            field: "DeviceOS",
            damage: Damage::LoneSurrogate,
            expect: Expect::Skipped(&[&[
                "left as it is: device with Identity `{identity}`",
                "DeviceOS: unexpected end of hex escape",
            ]]),
        },
        Case {
            service: Service::Graph,
            field: "deviceName",
            damage: Damage::InvalidUtf8,
            expect: Expect::Skipped(&[
                &[
                    "Intune record with easDeviceId `{id}`",
                    "deviceName: invalid unicode code point",
                ],
                &[
                    "left as it is: device with Identity `{identity}`: its Intune record could not be read",
                ],
            ]),
        },
    ];
    for case in &cases {
        drill(case).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partnership_whose_mailbox_is_not_listed_is_decided_but_no_list_is_edited() {
    let lab = sync_lab(300).await;
    let (_dir, store) = temp_store();
    let engine = PluginEngine::new().unwrap();
    let sync = org_sync(&lab, store.clone(), unguarded());
    let victim = lab
        .control()
        .truth()
        .into_iter()
        .find(|d| d.mailbox.is_some() && d.managed_device_id.is_some() && !d.in_allow_list)
        .expect("an enrolled device");
    lab.control().malform(Malformation {
        service: Service::Exchange,
        device_id: victim.device_id.clone(),
        field: String::new(),
        damage: Damage::NoMailbox,
    });
    let run = within(
        Duration::from_secs(60),
        sync.run(SyncKind::Full, false, builtin(&engine, "{}")),
    )
    .await
    .unwrap();
    assert_eq!(run.outcome, RunOutcome::Succeeded, "{run:#?}");
    let v = run.verdicts;
    assert_eq!(v.allow + v.block + v.quarantine + v.exempt, 300, "{v:?}");
    let after = lab.control().truth();
    let victim_after = after
        .iter()
        .find(|d| d.device_id == victim.device_id)
        .unwrap();
    assert_eq!(
        (victim_after.in_allow_list, victim_after.in_block_list),
        (victim.in_allow_list, victim.in_block_list)
    );
    let wrong: Vec<String> = mismatches(&lab, expected)
        .into_iter()
        .filter(|m| !m.contains(&victim.device_id))
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_run_with_an_unreadable_record_keeps_the_org_default() {
    // A fresh lab: the org default is still Allow, and the victim is allowed by it alone.
    let lab = sync_lab(300).await;
    let (_dir, store) = temp_store();
    let engine = PluginEngine::new().unwrap();
    let sync = org_sync(&lab, store.clone(), unguarded());
    let run = || {
        within(
            Duration::from_secs(60),
            sync.run(SyncKind::Full, false, builtin(&engine, "{}")),
        )
    };
    let victim = lab
        .control()
        .truth()
        .into_iter()
        .find(|d| {
            d.mailbox.is_some()
                && d.managed_device_id.is_none()
                && !d.in_allow_list
                && !d.in_block_list
                && d.access_state == easgate_lab::AccessState::Allowed
        })
        .expect("an unenrolled device allowed by the org default");
    lab.control().malform(Malformation {
        service: Service::Exchange,
        device_id: victim.device_id.clone(),
        field: "DeviceAccessState".into(),
        damage: Damage::MissingField,
    });
    let first = run().await.unwrap();
    assert_eq!(first.outcome, RunOutcome::Partial, "{first:#?}");
    assert!(
        first
            .errors
            .iter()
            .any(|e| e.starts_with("the organization default stays Allow this run")),
        "{:#?}",
        first.errors
    );
    assert_eq!(
        lab.control()
            .counters()
            .calls("Set-ActiveSyncOrganizationSettings"),
        0
    );
    let victim_after = lab
        .control()
        .truth()
        .into_iter()
        .find(|d| d.device_id == victim.device_id)
        .unwrap();
    assert_eq!(
        victim_after.access_state,
        easgate_lab::AccessState::Allowed,
        "not quarantined by a default switch nobody decided for it"
    );

    lab.control().clear_malformations();
    let fixed = run().await.unwrap();
    assert_eq!(fixed.outcome, RunOutcome::Succeeded, "{fixed:#?}");
    let wrong = mismatches(&lab, expected);
    assert!(wrong.is_empty(), "{wrong:#?}");
}
