//! The sync engine end to end: the real clients, store and plugins against a lab over HTTP.
//!
//! Expected outcomes come from the lab's ground truth (`support::lab::expected`), independently
//! of the connector's matching and plan code.

use std::time::Duration;

use easgate::graph::GraphClient;
use easgate::model::RunKind;
use easgate::model::{SyncKind, SyncSettings, Verdict};
use easgate::plugin::PluginEngine;
use easgate::store::{JournalState, RunOutcome, Store};
use easgate_lab::{ComplianceState, DeviceTruth};

use crate::support::lab::{
    assert_enforced, exempt_group, expected, org_sync_over, sync_lab, unguarded, write_config_over,
};
use crate::support::{
    Transport, builtin, easgate_json, easgate_within, faulty, lab_organization, plugin_registry,
    spawn_full_sync, succeeded, temp_store, test_http, within,
};

over_transports!(full_sync_enforces_the_builtin_policy_and_a_second_one_issues_nothing);
async fn full_sync_enforces_the_builtin_policy_and_a_second_one_issues_nothing(
    transport: Transport,
) {
    let lab = sync_lab(5_000).await;
    let (_dir, store) = temp_store();
    let engine = PluginEngine::new().expect("engine");
    let policy = builtin(&engine, "{}");
    let sync = org_sync_over(&lab, store.clone(), unguarded(), transport);

    let first = within(
        Duration::from_secs(240),
        sync.run(SyncKind::Full, false, policy.clone()),
    )
    .await
    .expect("the sync runs");
    assert_eq!(first.outcome, RunOutcome::Succeeded, "{first:#?}");
    assert_eq!(first.kind, RunKind::Full);
    assert!(first.commands_issued > 0);
    assert_eq!(first.verdicts.undecided, 0);
    assert_eq!(
        first.verdicts.allow + first.verdicts.block + first.verdicts.quarantine,
        5_000
    );

    assert_enforced(&lab, expected);
    // The journal of the run is clean.
    assert!(
        store
            .journal(first.run)
            .unwrap()
            .iter()
            .all(|e| e.state == JournalState::Done)
    );

    lab.control().reset_counters();
    let second = within(
        Duration::from_secs(240),
        sync.run(SyncKind::Full, false, policy),
    )
    .await
    .expect("the sync runs");
    assert_eq!(second.outcome, RunOutcome::Succeeded, "{second:#?}");
    assert_eq!(second.commands_issued, 0, "{second:#?}");
    let counters = lab.control().counters();
    assert_eq!(counters.calls("Set-CASMailbox"), 0);
    assert_eq!(counters.calls("Set-ActiveSyncOrganizationSettings"), 0);
}

over_transports!(a_plan_that_would_restrict_everyone_is_held_until_approved);
async fn a_plan_that_would_restrict_everyone_is_held_until_approved(transport: Transport) {
    let lab = sync_lab(400).await;
    let (_dir, store) = temp_store();
    let engine = PluginEngine::new().expect("engine");
    // Settle the lab on the built-in policy first, so that many devices are allowed.
    let settled = org_sync_over(&lab, store.clone(), unguarded(), transport);
    let first = within(
        Duration::from_secs(120),
        settled.run(SyncKind::Full, false, builtin(&engine, "{}")),
    )
    .await
    .unwrap();
    assert_eq!(first.outcome, RunOutcome::Succeeded, "{first:#?}");
    let allowed_before = lab
        .control()
        .truth()
        .iter()
        .filter(|d| d.in_allow_list)
        .count();
    assert!(allowed_before > 30, "{allowed_before} allowed");

    // An Intune incident: every enrolled device reports noncompliant at once, so the policy
    // would block every allowed device. (No shipped policy quarantines everyone; this is the
    // same blast through the real built-in.)
    let enrolled: Vec<String> = lab
        .control()
        .truth()
        .iter()
        .filter(|d| d.managed_device_id.is_some())
        .map(|d| d.device_id.clone())
        .collect();
    for id in &enrolled {
        lab.control()
            .set_compliance(id, ComplianceState::Noncompliant)
            .unwrap();
    }
    let guarded = org_sync_over(&lab, store.clone(), SyncSettings::default(), transport);
    lab.control().reset_counters();

    // A rehearsal says a real run would be held, lists the changes, and leaves nothing to
    // approve.
    let rehearsal = within(
        Duration::from_secs(120),
        guarded.run(SyncKind::Full, true, builtin(&engine, "{}")),
    )
    .await
    .unwrap();
    assert_eq!(rehearsal.kind, RunKind::WhatIf);
    // A dry run succeeds and says a real run would be held (it is not itself a held plan).
    assert_eq!(rehearsal.outcome, RunOutcome::Succeeded, "{rehearsal:#?}");
    let report = rehearsal.dry_run.as_ref().expect("a dry run's report");
    assert!(report.would_hold, "{rehearsal:#?}");
    assert_eq!(rehearsal.commands_issued, 0);
    assert_eq!(report.changes.len() as u64, rehearsal.devices_changed);
    assert!(
        report
            .changes
            .iter()
            .all(|c| c.verdict == Some(Verdict::Block))
    );
    let org = store.organization("contoso", 0).unwrap();
    assert!(store.held_runs(org).unwrap().is_empty());
    assert_eq!(
        store.run(rehearsal.run).unwrap().unwrap().outcome,
        RunOutcome::Succeeded
    );
    let held = within(
        Duration::from_secs(120),
        guarded.run(SyncKind::Full, false, builtin(&engine, "{}")),
    )
    .await
    .unwrap();
    assert_eq!(held.outcome, RunOutcome::Held, "{held:#?}");
    assert_eq!(held.commands_issued, 0);
    assert!(held.restrictions > held.restriction_limit, "{held:#?}");
    assert_eq!(lab.control().counters().calls("Set-CASMailbox"), 0);
    assert_eq!(
        lab.control()
            .truth()
            .iter()
            .filter(|d| d.in_allow_list)
            .count(),
        allowed_before
    );
    assert_eq!(
        store.run(held.run).unwrap().unwrap().outcome,
        RunOutcome::Held
    );

    let approved = within(Duration::from_secs(120), guarded.approve(held.run))
        .await
        .unwrap();
    assert_eq!(approved.outcome, RunOutcome::Succeeded, "{approved:#?}");
    assert!(approved.commands_issued > 0);
    assert_enforced(&lab, expected);
}

over_transports!(a_policy_that_traps_on_one_batch_leaves_those_devices_unchanged);
async fn a_policy_that_traps_on_one_batch_leaves_those_devices_unchanged(transport: Transport) {
    let lab = sync_lab(1_000).await;
    let (_dir, store) = temp_store();
    let engine = PluginEngine::new().expect("engine");
    let truth = lab.control().truth();
    // A device in the middle of the listing; the lab lists devices in a stable order.
    let victim = truth[truth.len() / 2].device_id.clone();
    let policy = faulty(
        &engine,
        serde_json::json!({"mode": "trap-on", "device_id": victim}),
    )
    .expect("faulty loads");
    let mut sync = org_sync_over(&lab, store.clone(), unguarded(), transport);
    sync.batch_size = 100;
    let summary = within(
        Duration::from_secs(120),
        sync.run(SyncKind::Full, false, policy),
    )
    .await
    .unwrap();
    assert_eq!(summary.outcome, RunOutcome::Partial, "{summary:#?}");
    assert_eq!(summary.verdicts.undecided, 100);
    assert_eq!(summary.verdicts.allow, 900);
    assert_eq!(summary.errors.len(), 1, "{:#?}", summary.errors);
    assert!(summary.errors[0].contains("decided nothing"));
    let run = store.run(summary.run).unwrap().unwrap();
    assert_eq!(run.outcome, RunOutcome::Partial);
    assert!(run.error.unwrap_or_default().contains("trap"));

    // The victim's batch kept its lists exactly; every other device (with a mailbox) is on its
    // allow list as the plugin's `allow` says.
    let after = lab.control().truth();
    let before: std::collections::HashMap<&str, &DeviceTruth> =
        truth.iter().map(|d| (d.identity.as_str(), d)).collect();
    let victim_after = after.iter().find(|d| d.device_id == victim).unwrap();
    let victim_before = before[victim_after.identity.as_str()];
    assert_eq!(victim_after.in_allow_list, victim_before.in_allow_list);
    assert_eq!(victim_after.in_block_list, victim_before.in_block_list);
    let allowed = after
        .iter()
        .filter(|d| d.mailbox.is_some() && d.in_allow_list && !d.in_block_list)
        .count();
    let with_mailbox = after.iter().filter(|d| d.mailbox.is_some()).count();
    assert!(
        allowed >= with_mailbox - 100,
        "{allowed} of {with_mailbox} allowed"
    );
}

over_transports!(the_cli_syncs_and_a_dry_run_then_finds_nothing_to_change);
async fn the_cli_syncs_and_a_dry_run_then_finds_nothing_to_change(transport: Transport) {
    let lab = sync_lab(600).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_over(&lab, dir.path(), 8, transport);
    let config = config.to_str().unwrap();
    let summary = easgate_json(
        Duration::from_secs(120),
        &["sync", "--config", config, "--full", "--json"],
    )
    .await;
    assert_eq!(summary["kind"], "full");
    assert_eq!(summary["outcome"], "succeeded");
    assert!(summary["commands_issued"].as_u64().unwrap() > 0);
    assert_eq!(summary["verdicts"]["undecided"], 0);
    for key in [
        "run",
        "devices_changed",
        "exchange_reads",
        "graph_calls",
        "duration_ms",
    ] {
        assert!(summary.get(key).is_some(), "{key} missing: {summary}");
    }
    assert_enforced(&lab, expected);

    lab.control().reset_counters();
    let out = easgate_within(
        Duration::from_secs(120),
        &["sync", "--config", config, "--full", "--dry-run"],
    )
    .await;
    let text = succeeded(&out);
    assert!(text.contains("(what-if) succeeded"), "{text}");
    assert!(
        text.contains("devices changed 0, Exchange commands issued 0 of 0 planned"),
        "{text}"
    );
    assert_eq!(lab.control().counters().calls("Set-CASMailbox"), 0);
}

over_transports!(a_sync_killed_in_the_middle_of_apply_converges_on_the_next_run);
async fn a_sync_killed_in_the_middle_of_apply_converges_on_the_next_run(transport: Transport) {
    let lab = sync_lab(5_000).await;
    // Slow enough that the kill lands in the middle of the mailbox edits.
    lab.control()
        .set_latency(crate::support::slow_mailbox_edits(1, 20));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_over(&lab, dir.path(), 4, transport);
    let before: std::collections::HashMap<String, (bool, bool)> = lab
        .control()
        .truth()
        .into_iter()
        .map(|d| (d.identity, (d.in_allow_list, d.in_block_list)))
        .collect();

    let mut child = spawn_full_sync(&config);
    within(Duration::from_secs(120), async {
        while lab.control().counters().calls("Set-CASMailbox") < 100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    let edits = lab.control().counters().calls("Set-CASMailbox");
    assert_eq!(
        lab.control()
            .counters()
            .calls("Set-ActiveSyncOrganizationSettings"),
        0,
        "killed after the whole apply ({edits} edits): the test proves nothing"
    );

    // Every device's lists are either as they were or as the policy decided: never anything
    // else. (A device the policy quarantines may still be allowed by the org default: the
    // switch to Quarantine is the apply's last step, so the kill came before it.)
    let wanted = |verdict: Verdict| match verdict {
        Verdict::Allow => (true, false),
        Verdict::Block => (false, true),
        _ => (false, false),
    };
    let odd: Vec<String> = lab
        .control()
        .truth()
        .iter()
        .filter(|d| d.mailbox.is_some())
        .filter(|d| {
            let lists = (d.in_allow_list, d.in_block_list);
            before[&d.identity] != lists && wanted(expected(d)) != lists
        })
        .map(|d| format!("{d:?} was {:?}", before[&d.identity]))
        .collect();
    assert!(odd.is_empty(), "{odd:#?}");

    let summary = easgate_json(
        Duration::from_secs(240),
        &["sync", "--config", config.to_str().unwrap(), "--json"],
    )
    .await;
    // The interrupted run forces a full sync even though a quick one was asked for.
    assert_eq!(summary["kind"], "full", "{summary}");
    assert_eq!(summary["outcome"], "succeeded", "{summary}");
    assert_enforced(&lab, expected);

    let store = Store::open(&dir.path().join("data")).unwrap();
    let org = store.organization("contoso", 0).unwrap();
    assert!(store.unfinished(org).unwrap().is_empty());
    let runs = store.recent_runs(org, 10).unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1].outcome, RunOutcome::Interrupted);
    assert!(
        store
            .journal(runs[1].id)
            .unwrap()
            .iter()
            .all(|e| matches!(e.state, JournalState::Done | JournalState::Abandoned))
    );
}

over_transports!(a_quick_sync_redecides_exactly_the_changed_devices);
async fn a_quick_sync_redecides_exactly_the_changed_devices(transport: Transport) {
    let lab = sync_lab(5_000).await;
    let (_dir, store) = temp_store();
    let engine = PluginEngine::new().expect("engine");
    let policy = builtin(&engine, "{}");
    let sync = org_sync_over(&lab, store.clone(), unguarded(), transport);
    let full = within(
        Duration::from_secs(240),
        sync.run(SyncKind::Full, false, policy.clone()),
    )
    .await
    .unwrap();
    assert_eq!(full.outcome, RunOutcome::Succeeded, "{full:#?}");
    assert_enforced(&lab, expected);

    // 20 compliant devices check in noncompliant (which moves their `lastSyncDateTime`; what
    // Intune changes on its own is `quick_sync::`'s); 10 devices arrive, half of them enrolled.
    let truth = lab.control().truth();
    let flipped: Vec<String> = truth
        .iter()
        .filter(|d| d.mailbox.is_some() && d.compliance_state == Some(ComplianceState::Compliant))
        .step_by(37)
        .take(20)
        .map(|d| d.device_id.clone())
        .collect();
    assert_eq!(flipped.len(), 20);
    for id in &flipped {
        lab.control()
            .check_in(id, ComplianceState::Noncompliant)
            .unwrap();
    }
    let mut arrived = lab
        .control()
        .add_devices(&easgate_lab::NewDevices {
            count: 5,
            mailbox: None,
            enroll: Some(ComplianceState::Compliant),
        })
        .unwrap();
    arrived.extend(
        lab.control()
            .add_devices(&easgate_lab::NewDevices {
                count: 5,
                mailbox: None,
                enroll: None,
            })
            .unwrap(),
    );

    lab.control().reset_counters();
    let quick = within(
        Duration::from_secs(120),
        sync.run(SyncKind::Quick, false, policy),
    )
    .await
    .unwrap();
    assert_eq!(quick.outcome, RunOutcome::Succeeded, "{quick:#?}");
    assert_eq!(quick.kind, RunKind::Quick);
    let v = quick.verdicts;
    assert_eq!(
        v.allow + v.block + v.quarantine + v.exempt,
        30,
        "exactly the changed devices are decided: {quick:#?}"
    );
    assert_eq!(v.block, 20, "{quick:#?}");
    assert_eq!(v.allow, 5, "{quick:#?}");
    assert_eq!(v.quarantine, 5, "{quick:#?}");
    assert_enforced(&lab, expected);

    // Calls grow with the 30 changes, not with the 5 000 devices.
    let counters = lab.control().counters();
    assert!(
        counters.exchange.commands <= 30 * 3 + 5,
        "{} Exchange requests: {:#?}",
        counters.exchange.commands,
        counters.exchange.by_cmdlet
    );
    assert!(counters.calls("Set-CASMailbox") <= 30);
    // One listing of the changed records, one lookup per new device without one, and the
    // listing of every record's state (a page per 1 000 records, the lab's page size).
    let state_pages = lab.control().info().managed_devices.div_ceil(1000) as u64;
    assert!(
        counters.graph.requests <= 3 + 10 + state_pages,
        "{:#?}",
        counters.graph.by_endpoint
    );
    // The summary's request counts are the ones the services saw (nothing was retried).
    assert_eq!(
        (
            quick.exchange_reads + quick.commands_issued,
            quick.graph_calls
        ),
        (counters.exchange.commands, counters.graph.requests),
        "{quick:#?}"
    );
    // The org's size, not the quick inventory's, is the base of the guard.
    assert!(quick.restriction_limit >= 500, "{quick:#?}");
}

over_transports!(a_policy_swapped_between_two_syncs_changes_the_outcome_and_the_audit_names_it);
async fn a_policy_swapped_between_two_syncs_changes_the_outcome_and_the_audit_names_it(
    transport: Transport,
) {
    use easgate::model::DeviceKey;
    use easgate::plugin::Digest;

    let lab = sync_lab(1_000).await;
    let (_dir, store) = temp_store();
    let plugins = tempfile::tempdir().unwrap();
    let registry = plugin_registry(plugins.path());
    let sync = org_sync_over(&lab, store.clone(), unguarded(), transport);
    let first_policy = registry.access_policy();
    let first = within(
        Duration::from_secs(120),
        sync.run(SyncKind::Full, false, first_policy.clone()),
    )
    .await
    .unwrap();
    assert_eq!(first.outcome, RunOutcome::Succeeded, "{first:#?}");
    assert_enforced(&lab, expected);

    // A new version of the active policy: unenrolled iPhones may sync.
    let bytes = crate::support::with_custom_section(
        &crate::support::wasm_bytes("access_policy.wasm"),
        "iphones allowed",
    );
    std::fs::write(
        plugins.path().join("access-policy.toml"),
        "world = \"access-policy\"\n[settings]\naccessRules = [{ deviceClass = { name = \"iPhone\", type = \"family\" }, accessLevel = \"allow\" }]\n",
    )
    .unwrap();
    std::fs::write(plugins.path().join("access-policy.wasm"), &bytes).unwrap();
    registry.rescan();
    let second_policy = registry.access_policy();
    assert_eq!(
        second_policy.meta.digest,
        Digest::of(&bytes),
        "{:#?}",
        registry.status()
    );

    let second = within(
        Duration::from_secs(120),
        sync.run(SyncKind::Full, false, second_policy.clone()),
    )
    .await
    .unwrap();
    assert_eq!(second.outcome, RunOutcome::Succeeded, "{second:#?}");
    let iphone_rule = |d: &DeviceTruth| {
        if d.managed_device_id.is_none() && d.device_type.eq_ignore_ascii_case("iPhone") {
            Verdict::Allow
        } else {
            expected(d)
        }
    };
    assert_enforced(&lab, iphone_rule);

    let org = store.organization("contoso", 0).unwrap();
    let (d1, d2) = (
        first_policy.meta.digest.hex(),
        second_policy.meta.digest.hex(),
    );
    assert_eq!(
        store.run(first.run).unwrap().unwrap().plugin_digest,
        Some(d1.clone())
    );
    assert_eq!(
        store.run(second.run).unwrap().unwrap().plugin_digest,
        Some(d2.clone())
    );
    let truth = lab.control().truth();
    let changed = truth
        .iter()
        .find(|d| {
            d.mailbox.is_some()
                && d.managed_device_id.is_none()
                && d.device_type.eq_ignore_ascii_case("iPhone")
        })
        .expect("an unenrolled iPhone");
    let audit = store
        .audit(org, &DeviceKey::new(&changed.identity))
        .unwrap();
    let trail: Vec<(Verdict, &str)> = audit
        .iter()
        .map(|a| (a.verdict, a.plugin_digest.as_str()))
        .collect();
    assert_eq!(
        trail,
        [
            (Verdict::Quarantine, d1.as_str()),
            (Verdict::Allow, d2.as_str())
        ]
    );
    assert_eq!(audit[1].old_verdict, Some(Verdict::Quarantine));
    assert_eq!(audit[1].reason, "device-rule");
}

over_transports!(one_unreachable_organization_does_not_stop_the_others);
async fn one_unreachable_organization_does_not_stop_the_others(transport: Transport) {
    let lab = sync_lab(300).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_over(&lab, dir.path(), 8, transport);
    // A second organization whose only CAS refuses connections (a port nothing listens on).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut text = std::fs::read_to_string(&config).unwrap();
    // The second organization speaks the same transport as the first, its primary CAS dead.
    let (second, primary, dead) = match transport {
        Transport::Rest => (
            lab.connector_config(&easgate_lab::SecretSource::Inline),
            lab.cas_urls()[0].clone(),
            dead,
        ),
        Transport::PowerShell => (
            easgate_lab::powershell_connector_config(
                &lab.control().info(),
                "contoso",
                &easgate_lab::SecretSource::Inline,
                "exchange.pw",
            ),
            lab.powershell_urls()[0].clone(),
            format!("{dead}/PowerShell/"),
        ),
    };
    assert!(second.contains(&format!("{primary:?}")), "{second}");
    let second = second
        .replace("name = \"contoso\"", "name = \"fabrikam\"")
        .replace(&format!("{primary:?}"), &format!("{dead:?}"))
        .replace(
            "[organization.graph]",
            "unavailable_timeout = \"1s\"\ncas_failover = false\n\n[organization.graph]",
        );
    text.push('\n');
    text.push_str(&second);
    std::fs::write(&config, text).unwrap();

    let out = easgate_within(
        Duration::from_secs(120),
        &[
            "sync",
            "--config",
            config.to_str().unwrap(),
            "--full",
            "--json",
        ],
    )
    .await;
    let text = crate::support::stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{text}{}",
        crate::support::stderr(&out)
    );
    let summaries: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(summaries.len(), 2, "{text}");
    assert_eq!(summaries[0]["organization"], "contoso");
    assert_eq!(summaries[0]["outcome"], "succeeded");
    assert_eq!(summaries[1]["organization"], "fabrikam");
    assert_eq!(summaries[1]["outcome"], "failed");
    assert!(
        summaries[1]["errors"][0]
            .as_str()
            .unwrap()
            .contains("discovery failed"),
        "{text}"
    );
    assert_enforced(&lab, expected);
}

over_transports!(devices_of_an_excluded_group_are_exempt_and_their_lists_untouched);
async fn devices_of_an_excluded_group_are_exempt_and_their_lists_untouched(transport: Transport) {
    let lab = sync_lab(2_000).await;
    let (_dir, store) = temp_store();
    let engine = PluginEngine::new().expect("engine");
    let org = lab_organization(&lab);
    let graph = GraphClient::new(&org, &test_http()).unwrap();

    let truth = lab.control().truth();
    let users = truth
        .iter()
        .filter_map(|d| d.user_principal_name.as_deref());
    let (group, exempt) = exempt_group(&graph, users.take(400)).await;
    assert!(!exempt.is_empty());

    let settings = SyncSettings {
        scope_groups: vec![group.clone()],
        ..unguarded()
    };
    let policy = builtin(
        &engine,
        &serde_json::json!({ "excludedGroups": [group] }).to_string(),
    );
    let sync = org_sync_over(&lab, store.clone(), settings, transport);
    let summary = within(
        Duration::from_secs(120),
        sync.run(SyncKind::Full, false, policy),
    )
    .await
    .unwrap();
    assert_eq!(summary.outcome, RunOutcome::Succeeded, "{summary:#?}");

    let is_exempt = |d: &DeviceTruth| {
        d.user_principal_name
            .as_deref()
            .is_some_and(|u| exempt.contains(&u.to_lowercase()))
            && d.mailbox.is_some()
    };
    let exempt_devices = truth.iter().filter(|d| is_exempt(d)).count() as u64;
    assert!(exempt_devices > 0);
    assert_eq!(summary.verdicts.exempt, exempt_devices, "{summary:#?}");
    let before: std::collections::HashMap<&str, (bool, bool)> = truth
        .iter()
        .map(|d| (d.identity.as_str(), (d.in_allow_list, d.in_block_list)))
        .collect();
    for d in lab.control().truth().iter().filter(|d| is_exempt(d)) {
        assert_eq!(
            before[d.identity.as_str()],
            (d.in_allow_list, d.in_block_list),
            "{d:?}"
        );
    }
    assert_enforced(&lab, |d| {
        if is_exempt(d) {
            Verdict::Exempt
        } else {
            expected(d)
        }
    });
}

over_transports!(a_full_sync_sets_the_configured_org_settings_and_access_rules_once);
async fn a_full_sync_sets_the_configured_org_settings_and_access_rules_once(transport: Transport) {
    use easgate::exchange::cmdlets::{GetDeviceAccessRule, GetOrganizationSettings};
    use easgate::model::{AccessLevel, DeviceAccessRule, RuleCharacteristic};
    use easgate::model::{Command, Parameters};

    let lab = sync_lab(200).await;
    let (_dir, store) = temp_store();
    let engine = PluginEngine::new().expect("engine");
    let policy = builtin(&engine, "{}");
    let settings = SyncSettings {
        admin_mail_recipients: Some(vec!["mdm-admins@contoso.com".into()]),
        user_mail_insert: Some("Ask the helpdesk, ext. 4711.".into()),
        device_access_rules: Some(vec![
            DeviceAccessRule {
                query_string: "Nokia".into(),
                characteristic: RuleCharacteristic::DeviceType,
                access_level: AccessLevel::Block,
            },
            DeviceAccessRule {
                query_string: "Pixel 8".into(),
                characteristic: RuleCharacteristic::DeviceModel,
                access_level: AccessLevel::Quarantine,
            },
        ]),
        ..unguarded()
    };
    let sync = org_sync_over(&lab, store.clone(), settings, transport);
    // A rule someone made by hand, which the configuration does not list.
    let stray = Command::new(
        "New-ActiveSyncDeviceAccessRule",
        Parameters::new()
            .text("QueryString", "Kindle")
            .text("Characteristic", "DeviceType")
            .text("AccessLevel", "Allow"),
    );
    sync.exchange
        .run(&stray)
        .await
        .expect("the stray rule is created");

    let first = within(
        Duration::from_secs(120),
        sync.run(SyncKind::Full, false, policy.clone()),
    )
    .await
    .expect("the sync runs");
    assert_eq!(first.outcome, RunOutcome::Succeeded, "{first:#?}");

    let org = sync
        .exchange
        .run(&GetOrganizationSettings {})
        .await
        .unwrap()
        .remove(0);
    assert_eq!(org.admin_mail_recipients, vec!["mdm-admins@contoso.com"]);
    assert_eq!(
        org.user_mail_insert.as_deref(),
        Some("Ask the helpdesk, ext. 4711.")
    );
    let mut rules: Vec<(String, String, String)> = sync
        .exchange
        .run(&GetDeviceAccessRule {})
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.query_string,
                r.characteristic,
                format!("{:?}", r.access_level),
            )
        })
        .collect();
    rules.sort();
    assert_eq!(
        rules,
        vec![
            ("Nokia".into(), "DeviceType".into(), "Block".into()),
            ("Pixel 8".into(), "DeviceModel".into(), "Quarantine".into()),
        ]
    );
    // Journaled like the list edits.
    let journal = store.journal(first.run).unwrap();
    for cmdlet in [
        "Set-ActiveSyncOrganizationSettings",
        "New-ActiveSyncDeviceAccessRule",
        "Remove-ActiveSyncDeviceAccessRule",
    ] {
        assert!(
            journal
                .iter()
                .any(|e| e.command.command.cmdlet == cmdlet && e.state == JournalState::Done),
            "{cmdlet} not journaled as done"
        );
    }

    lab.control().reset_counters();
    let second = within(
        Duration::from_secs(120),
        sync.run(SyncKind::Full, false, policy),
    )
    .await
    .expect("the sync runs");
    assert_eq!(second.outcome, RunOutcome::Succeeded, "{second:#?}");
    assert_eq!(second.commands_issued, 0, "{second:#?}");
    let counters = lab.control().counters();
    assert_eq!(counters.calls("Get-ActiveSyncDeviceAccessRule"), 1);
    for cmdlet in [
        "Set-ActiveSyncOrganizationSettings",
        "New-ActiveSyncDeviceAccessRule",
        "Remove-ActiveSyncDeviceAccessRule",
    ] {
        assert_eq!(counters.calls(cmdlet), 0, "{cmdlet}");
    }
}

// The bug: the store kept a device's Exchange state as the last inventory read it, so the
// status page and the API showed `Allowed` for devices a quick sync had just blocked until the
// next full sync read them again. A confirmed command now records the state it enforces.
over_transports!(a_quick_sync_records_the_state_it_enforces);
async fn a_quick_sync_records_the_state_it_enforces(transport: Transport) {
    let lab = sync_lab(300).await;
    let (_dir, store) = temp_store();
    let engine = PluginEngine::new().expect("engine");
    let sync = org_sync_over(&lab, store.clone(), unguarded(), transport);
    let full = within(
        Duration::from_secs(120),
        sync.run(SyncKind::Full, false, builtin(&engine, "{}")),
    )
    .await
    .unwrap();
    assert_eq!(full.outcome, RunOutcome::Succeeded, "{full:#?}");
    let allowed: Vec<DeviceTruth> = lab
        .control()
        .truth()
        .into_iter()
        .filter(|d| d.in_allow_list && d.managed_device_id.is_some())
        .take(3)
        .collect();
    assert_eq!(allowed.len(), 3);
    for device in &allowed {
        lab.control()
            .set_compliance(&device.device_id, ComplianceState::Noncompliant)
            .unwrap();
    }
    let quick = within(
        Duration::from_secs(120),
        sync.run(SyncKind::Quick, false, builtin(&engine, "{}")),
    )
    .await
    .unwrap();
    assert_eq!(
        (quick.kind, quick.outcome),
        (RunKind::Quick, RunOutcome::Succeeded),
        "{quick:#?}"
    );
    assert!(quick.commands_issued > 0, "{quick:#?}");
    let org = store.organization("contoso", 0).unwrap();
    let truth = lab.control().truth();
    for device in &allowed {
        let key = easgate::model::DeviceKey::new(&device.identity);
        let stored = store
            .device(org, &key)
            .unwrap()
            .expect("the device is stored");
        let now = truth
            .iter()
            .find(|d| d.identity == device.identity)
            .unwrap();
        assert_eq!(now.access_state.as_str(), "Blocked", "{}", device.identity);
        assert_eq!(
            stored.exchange.access_state.as_str(),
            now.access_state.as_str(),
            "{}",
            device.identity
        );
    }
}
