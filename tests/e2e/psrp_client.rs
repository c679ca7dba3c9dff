//! The Exchange client over remote PowerShell against the lab's `/PowerShell/` face: a real
//! WS-Management + PSRP conversation on loopback, Basic authentication, the lab's runspace
//! pools, CLIXML both ways. Listings and edits are checked against the REST face and the lab's
//! ground truth, which share the organization.

use std::collections::BTreeSet;
use std::time::Duration;

use easgate::config::{ExchangeAuth, Secret, SecretSource};
use easgate::exchange::ExchangeClient;
use easgate::exchange::cmdlets::{GetCasMailbox, GetMobileDevice, HashTableEdit, SetCasMailbox};
use easgate::exchange::psrp::PsrpWire;
use easgate::model::{Command, Parameters};

use crate::support::{Transport, client_lab, organization_over, test_http, within};

fn client(org: &easgate::config::Organization) -> ExchangeClient {
    ExchangeClient::builder(org, &test_http())
        .build()
        .expect("the PowerShell client builds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_opens_once_and_lists_every_device_as_the_rest_face_does() {
    let lab = client_lab(2_500, 1).await;
    let ps = client(&organization_over(&lab, Transport::PowerShell));
    let rest = client(&organization_over(&lab, Transport::Rest));

    let listed = within(
        Duration::from_secs(120),
        ps.run(&GetMobileDevice::default()),
    )
    .await
    .expect("the listing runs over PowerShell");
    let truth: BTreeSet<String> = lab
        .control()
        .truth()
        .into_iter()
        .map(|d| d.device_id)
        .collect();
    let ids: BTreeSet<String> = listed.iter().map(|d| d.device_id.clone()).collect();
    assert_eq!(listed.len(), truth.len(), "every device once");
    assert_eq!(ids, truth);
    // Field by field, the objects decode as the REST face's do (same models, same values).
    let mut by_rest = rest.run(&GetMobileDevice::default()).await.unwrap();
    let mut by_ps = listed;
    by_rest.sort_by(|a, b| a.identity.cmp(&b.identity));
    by_ps.sort_by(|a, b| a.identity.cmp(&b.identity));
    assert_eq!(by_ps, by_rest);
    // Over PowerShell the lab sent just the properties the model reads (`| Select-Object`).
    let counters = lab.control().counters();
    assert_eq!(counters.exchange.by_cmdlet["Get-MobileDevice"].selected, 1);

    // A second command reuses the pool: still one shell on the lab, set up once with the
    // forest-wide view (view_entire_forest's default).
    ps.run(&GetCasMailbox::default()).await.unwrap();
    assert_eq!(lab.control().powershell_shells(), 1);
    assert_eq!(lab.control().counters().calls("Set-ADServerSettings"), 1);
    ps.close().await;

    // Without it, a pool runs nothing before the first command.
    let mut single_domain = organization_over(&lab, Transport::PowerShell);
    single_domain.exchange.view_entire_forest = Some(false);
    let c = client(&single_domain);
    c.run(&GetCasMailbox::default()).await.unwrap();
    assert_eq!(lab.control().counters().calls("Set-ADServerSettings"), 1);
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_cas_mailbox_edits_are_enforced_and_errors_keep_their_class() {
    let lab = client_lab(200, 1).await;
    let ps = client(&organization_over(&lab, Transport::PowerShell));
    let rest = client(&organization_over(&lab, Transport::Rest));
    let mailbox = rest.run(&GetCasMailbox::default()).await.unwrap()[0]
        .identity
        .clone();

    ps.run(&SetCasMailbox {
        identity: mailbox.clone(),
        allowed: Some(HashTableEdit::new(vec!["PSRPTEST1".into()], vec![])),
        blocked: Some(HashTableEdit::new(vec!["PSRPTEST2".into()], vec![])),
    })
    .await
    .expect("the edit is applied");
    // Seen through the other face: the lab applied it to the organization.
    let after = rest
        .run(&GetCasMailbox {
            identity: Some(mailbox.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        after[0]
            .active_sync_allowed_device_ids
            .contains(&"PSRPTEST1".to_owned())
    );
    assert!(
        after[0]
            .active_sync_blocked_device_ids
            .contains(&"PSRPTEST2".to_owned())
    );

    // Exchange's refusals come back as the same error classes as over REST.
    let again = ps
        .run(&SetCasMailbox {
            identity: mailbox.clone(),
            allowed: Some(HashTableEdit::new(vec!["PSRPTEST1".into()], vec![])),
            blocked: None,
        })
        .await;
    match again {
        Ok(_) => {}
        Err(e) => assert!(e.is_repeat_of_applied(), "{e}"),
    }
    let missing = ps
        .run(&SetCasMailbox {
            identity: "nobody-at-all".into(),
            allowed: Some(HashTableEdit::new(vec!["X".into()], vec![])),
            blocked: None,
        })
        .await
        .expect_err("no such mailbox");
    assert!(missing.is_not_found(), "{missing}");
    assert!(missing.to_string().contains("nobody-at-all"), "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_an_admin_gets_wrong_is_named_with_the_cas_and_the_fix() {
    let lab = client_lab(10, 1).await;
    let good = organization_over(&lab, Transport::PowerShell);
    let url = good.exchange.cas_urls[0].clone();
    // As the client names it (the CAS pool keeps URLs without their trailing slash).
    let named = url.trim_end_matches('/').to_owned();

    // A wrong password.
    let mut wrong = good.clone();
    if let ExchangeAuth::Basic { password, .. } = &mut wrong.exchange.auth {
        *password = SecretSource::Inline(Secret::new("not-the-password"));
    }
    wrong.exchange.cas_failover = false;
    let e = within(
        Duration::from_secs(30),
        client(&wrong).run(&GetCasMailbox::default()),
    )
    .await
    .expect_err("refused");
    let text = e.to_string();
    assert!(
        text.starts_with("Get-CASMailbox: ")
            && text.contains(&format!("wrong user name or password for {named}")),
        "{text}"
    );

    // The WinRM path instead of Exchange's virtual directory.
    let mut wsman = good.clone();
    wsman.exchange.cas_urls = vec![url.replace("/PowerShell/", "/wsman")];
    wsman.exchange.cas_failover = false;
    let e = within(
        Duration::from_secs(30),
        client(&wsman).run(&GetCasMailbox::default()),
    )
    .await
    .expect_err("no endpoint");
    let text = e.to_string();
    assert!(text.contains("no /PowerShell/ endpoint at"), "{text}");
    assert!(text.contains("/wsman"), "{text}");

    // A cmdlet outside the account's role: named, with the role to fix.
    let wire = PsrpWire::new(&good, &test_http()).unwrap();
    let e = wire
        .run_to_end(
            &url,
            &Command::new("Remove-Mailbox", Parameters::new().text("Identity", "x")),
        )
        .await
        .expect_err("not in the role");
    let text = e.to_string();
    assert!(text.contains("Remove-Mailbox"), "{text}");
    assert!(text.contains("management roles do not include"), "{text}");
    assert!(
        !e.is_not_found(),
        "a missing cmdlet must never read as a gone object"
    );
    wire.close().await;

    assert_eq!(lab.control().powershell_shells(), 0, "no shell left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_without_select_object_still_lists_with_every_property() {
    // A session configuration that offers the role's cmdlets alone.
    lists_every_property_where_the_session_refuses(easgate_lab::SelectObject::Absent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_select_object_taking_only_command_properties_still_lists_with_every_property() {
    // A restricted endpoint's proxy: `-Property DeviceId` fails its ValidateSet.
    lists_every_property_where_the_session_refuses(
        easgate_lab::SelectObject::CommandPropertiesOnly,
    )
    .await;
}

/// The listing runs again with every property after the session refuses the selection, and
/// the next listing asks for every property straight away.
async fn lists_every_property_where_the_session_refuses(offered: easgate_lab::SelectObject) {
    let lab = client_lab(300, 1).await;
    let org = organization_over(&lab, Transport::PowerShell);
    let selected = client(&org).run(&GetMobileDevice::default()).await.unwrap();

    lab.control().set_powershell_select_object(offered);
    lab.control().reset_counters();
    let ps = client(&org);
    let mut whole = within(Duration::from_secs(60), ps.run(&GetMobileDevice::default()))
        .await
        .expect("the listing runs again without the selection");
    let mut selected = selected;
    selected.sort_by(|a, b| a.identity.cmp(&b.identity));
    whole.sort_by(|a, b| a.identity.cmp(&b.identity));
    assert_eq!(whole, selected, "the same devices, field by field");
    // The next listing asks for every property straight away: one refusal in all.
    ps.run(&GetCasMailbox::default()).await.unwrap();
    let counters = lab.control().counters();
    for cmdlet in ["Get-MobileDevice", "Get-CASMailbox"] {
        let c = &counters.exchange.by_cmdlet[cmdlet];
        assert_eq!((c.calls, c.selected), (1, 0), "{cmdlet}: {c:?}");
    }
    let refused = &counters.exchange.by_cmdlet["Select-Object"];
    assert_eq!((refused.calls, refused.errors), (1, 1), "{refused:?}");
    ps.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_deletes_every_shell_and_the_client_reopens_after() {
    let lab = client_lab(50, 2).await;
    let mut org = organization_over(&lab, Transport::PowerShell);
    org.exchange.cas_failover = false;
    let c = client(&org);
    c.run(&GetCasMailbox::default()).await.unwrap();
    assert_eq!(lab.control().powershell_shells(), 1);
    assert_eq!(c.close().await, 1);
    assert_eq!(lab.control().powershell_shells(), 0);
    // Closing twice closes nothing more.
    assert_eq!(c.close().await, 0);
    c.run(&GetCasMailbox::default()).await.unwrap();
    assert_eq!(lab.control().powershell_shells(), 1);
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shell_limit_throttles_until_a_shell_is_closed() {
    let lab = client_lab(20, 1).await;
    lab.control()
        .set_powershell_limits(easgate_lab::PowerShellLimits {
            max_shells_per_user: 1,
            user_load_quota: None,
        });
    let mut org = organization_over(&lab, Transport::PowerShell);
    org.exchange.cas_failover = false;
    let first = client(&org);
    let second = client(&org);
    first.run(&GetCasMailbox::default()).await.unwrap();
    // The second account session is refused a shell: throttled, not failed; it goes on once
    // the first closes its pool.
    let waiting = tokio::spawn({
        let second = second.clone();
        async move { second.run(&GetCasMailbox::default()).await }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !waiting.is_finished(),
        "the second client waits for a shell"
    );
    assert_eq!(first.close().await, 1);
    let listed = within(Duration::from_secs(60), waiting)
        .await
        .unwrap()
        .expect("served once a shell is free");
    assert!(!listed.is_empty());
    second.close().await;
}

/// Only the primary configured: the others are discovered over PowerShell too
/// (`Get-ClientAccessService`, their `/PowerShell/` endpoints). The primary stopped in the
/// middle of a listing: the pipeline cannot move, so the listing starts over on another CAS and
/// completes, every device once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cas_stopped_mid_listing_restarts_it_on_a_discovered_one() {
    let lab = client_lab(3000, 3).await;
    let mut model = easgate_lab::LatencyModel::default();
    model.cmdlets.insert(
        "Get-MobileDevice".into(),
        easgate_lab::CmdletLatency {
            base_ms: 0,
            per_object_us: 400,
        },
    );
    lab.control().set_latency(model);
    let mut org = organization_over(&lab, Transport::PowerShell);
    org.exchange.cas_urls.truncate(1);
    org.exchange.probe_interval = Duration::from_millis(200);
    let c = client(&org);
    let known = c.discover().await.expect("discovery over PowerShell");
    let want: Vec<String> = lab
        .powershell_urls()
        .iter()
        .map(|u| u.trim_end_matches('/').to_owned())
        .collect();
    assert_eq!(
        known, want,
        "the other CAS found, as /PowerShell/ endpoints"
    );

    let listing = tokio::spawn({
        let c = c.clone();
        async move { c.run(&GetMobileDevice::default()).await }
    });
    // 3000 objects at 0.4 ms: about 1.2 s of streaming; stop the primary early in it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    lab.control().stop_cas(0).await.unwrap();
    let devices = within(Duration::from_secs(60), listing)
        .await
        .unwrap()
        .expect("the listing completes elsewhere");
    let ids: BTreeSet<String> = devices.iter().map(|d| d.device_id.clone()).collect();
    assert_eq!(
        devices.len(),
        3000,
        "nothing lost, nothing kept from the broken run"
    );
    assert_eq!(ids.len(), 3000, "nothing twice");
    let by_cas = lab.control().counters().exchange.by_cas;
    assert!(by_cas[1] + by_cas[2] >= 1, "another CAS served: {by_cas:?}");
    assert!(!c.cas_health()[0].up);
    c.close().await;
}

/// A CAS answering 503 fails over as over REST; with failover off, a dead primary is a clear
/// error naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_cas_fails_over_and_with_failover_off_the_error_names_it() {
    let lab = client_lab(50, 2).await;
    let org = organization_over(&lab, Transport::PowerShell);
    let c = client(&org);
    lab.control().fail_cas(0, 503).unwrap();
    let boxes = within(Duration::from_secs(20), c.run(&GetCasMailbox::default()))
        .await
        .unwrap();
    assert!(!boxes.is_empty());
    assert!(!c.cas_health()[0].up);
    c.close().await;

    let mut off = org.clone();
    off.exchange.cas_failover = false;
    off.exchange.unavailable_timeout = Duration::from_millis(500);
    let c = client(&off);
    let e = within(Duration::from_secs(20), c.run(&GetCasMailbox::default()))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("cas_failover is off"), "{text}");
    assert!(
        text.contains(org.exchange.cas_urls[0].trim_end_matches('/')),
        "{text}"
    );
}

/// One `Set-CASMailbox` per mailbox adding `tag-<alias>` to its allow list.
fn add_one_each(mailboxes: &[String], tag: &str) -> Vec<SetCasMailbox> {
    mailboxes
        .iter()
        .map(|m| SetCasMailbox {
            identity: m.clone(),
            allowed: Some(HashTableEdit::new(vec![format!("{tag}-{m}")], vec![])),
            blocked: None,
        })
        .collect()
}

async fn allow_lists(c: &ExchangeClient) -> std::collections::BTreeMap<String, Vec<String>> {
    c.run(&GetCasMailbox::default())
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.identity, m.active_sync_allowed_device_ids))
        .collect()
}

/// The user load quota drives the adaptive pool as a 429 does: fewer commands in flight,
/// waits as long as Exchange says, and every command applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_load_quota_slows_a_batch_down_without_losing_a_command() {
    let lab = client_lab(200, 1).await;
    let mut org = organization_over(&lab, Transport::PowerShell);
    org.exchange.parallel_commands = 8;
    let c = client(&org);
    let mailboxes: Vec<String> = allow_lists(&c).await.into_keys().take(40).collect();
    assert_eq!(mailboxes.len(), 40);
    lab.control()
        .set_powershell_limits(easgate_lab::PowerShellLimits {
            max_shells_per_user: easgate_lab::DEFAULT_MAX_SHELLS,
            user_load_quota: Some(easgate_lab::UserLoadQuota {
                requests: 10,
                seconds: 1,
            }),
        });
    lab.control().reset_counters();
    let started = std::time::Instant::now();
    let results = within(
        Duration::from_secs(60),
        c.run_all(add_one_each(&mailboxes, "QUOTA")),
    )
    .await;
    let took = started.elapsed();
    for (m, r) in mailboxes.iter().zip(&results) {
        assert!(r.is_ok(), "{m}: {:?}", r.as_ref().err());
    }
    // 40 commands at 10 per second: the quota was met, and waited out.
    assert!(took >= Duration::from_secs(3), "{took:?}");
    assert!(c.effective_concurrency() < 8, "the client backed off");
    let x = lab.control().counters().exchange;
    assert_eq!(x.by_cmdlet["Set-CASMailbox"].calls, 40, "each applied once");
    lab.control()
        .set_powershell_limits(easgate_lab::PowerShellLimits::default());
    let after = allow_lists(&c).await;
    for m in &mailboxes {
        assert!(after[m].contains(&format!("QUOTA-{m}")), "{m}");
    }
    c.close().await;
}

/// The primary stopped in the middle of a batch of writes over PowerShell: each write is
/// applied exactly once (a write sent to the stopped CAS and resent elsewhere is recognized as
/// applied by Exchange's "already present").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cas_stopped_mid_batch_of_writes_applies_each_exactly_once() {
    let lab = client_lab(600, 2).await;
    let mut model = easgate_lab::LatencyModel::default();
    model.cmdlets.insert(
        "Set-CASMailbox".into(),
        easgate_lab::CmdletLatency {
            base_ms: 40,
            per_object_us: 0,
        },
    );
    lab.control().set_latency(model);
    let mut org = organization_over(&lab, Transport::PowerShell);
    org.exchange.parallel_commands = 4;
    org.exchange.probe_interval = Duration::from_millis(200);
    let c = client(&org);
    let before = allow_lists(&c).await;
    let mailboxes: Vec<String> = before.keys().cloned().collect();
    assert!(mailboxes.len() >= 200);

    let batch = tokio::spawn({
        let c = c.clone();
        let commands = add_one_each(&mailboxes, "FAILOVER");
        async move { c.run_all(commands).await }
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    lab.control().stop_cas(0).await.unwrap();
    let results = within(Duration::from_secs(90), batch).await.unwrap();
    for (m, r) in mailboxes.iter().zip(&results) {
        assert!(r.is_ok(), "{m}: {:?}", r.as_ref().err());
    }
    let after = allow_lists(&c).await;
    for m in &mailboxes {
        let mut want = before[m].clone();
        want.push(format!("FAILOVER-{m}"));
        assert_eq!(after[m], want, "{m}");
    }
    let by_cas = lab.control().counters().exchange.by_cas;
    assert!(by_cas[0] > 0 && by_cas[1] > 0, "{by_cas:?}");
    c.close().await;
}

/// The daemon over remote PowerShell: its first full sync runs through the lab's
/// `/PowerShell/` face, and stopping it (SIGTERM) deletes its shell, so the service account's
/// `PowerShellMaxConcurrency` is not held by a connector that is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_syncs_over_powershell_and_closes_its_shells_when_stopped() {
    use crate::support::daemon::{Easgate, add_admin, wait_for_first_full_sync};
    let lab = crate::support::lab::sync_lab(300).await;
    let dir = tempfile::tempdir().unwrap();
    let config = crate::support::lab::write_config_over(&lab, dir.path(), 4, Transport::PowerShell);
    let token = "psrp-daemon-token";
    add_admin(&config, token);
    let (daemon, url) = Easgate::run_with_admin(&config, dir.path()).await;
    let org = wait_for_first_full_sync(&url, token).await;
    assert_eq!(org["recent_runs"][0]["outcome"], "succeeded", "{org}");
    crate::support::lab::assert_enforced(&lab, crate::support::lab::expected);
    assert_eq!(lab.control().powershell_shells(), 1, "one pool, kept open");
    assert!(lab.control().counters().calls("Set-CASMailbox") > 0);
    daemon.stop_cleanly().await;
    assert_eq!(lab.control().powershell_shells(), 0, "closed on shutdown");
}

/// A CAS that restarted has lost its shells: the client's pool there is gone, and the next
/// command reopens one instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_lost_with_a_restarted_cas_is_reopened() {
    let lab = client_lab(50, 1).await;
    let mut org = organization_over(&lab, Transport::PowerShell);
    org.exchange.cas_failover = false;
    let c = client(&org);
    c.run(&GetCasMailbox::default()).await.unwrap();
    lab.control().stop_cas(0).await.unwrap();
    lab.control().start_cas(0).await.unwrap();
    assert_eq!(
        lab.control().powershell_shells(),
        0,
        "the restart lost the shell"
    );
    let boxes = within(Duration::from_secs(30), c.run(&GetCasMailbox::default()))
        .await
        .expect("a fresh pool serves");
    assert!(!boxes.is_empty());
    assert_eq!(lab.control().powershell_shells(), 1);
    assert!(c.cas_health()[0].up, "a lost pool is not a failed CAS");
    c.close().await;
}

/// A pipeline that says nothing for longer than the request timeout (a hung cmdlet: every
/// `Receive` only times out) fails its CAS, as a REST request would time out, instead of
/// waiting forever; with every CAS so, the command ends with the CASes' unavailability.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_silent_past_the_request_timeout_fails_its_cas() {
    let lab = client_lab(50, 2).await;
    let mut org = organization_over(&lab, Transport::PowerShell);
    org.exchange.unavailable_timeout = Duration::from_secs(4);
    let http = easgate::net::HttpSettings {
        request_timeout: Duration::from_secs(3),
        ..test_http()
    };
    let c = ExchangeClient::builder(&org, &http).build().unwrap();
    c.run(&GetCasMailbox::default()).await.unwrap();
    // Every Get-CASMailbox now takes 60 s before its first object (each HTTP request is
    // answered at once: the Receives time out, as Exchange's do).
    let mut model = easgate_lab::LatencyModel::default();
    model.cmdlets.insert(
        "Get-CASMailbox".into(),
        easgate_lab::CmdletLatency {
            base_ms: 60_000,
            per_object_us: 0,
        },
    );
    lab.control().set_latency(model);
    let started = std::time::Instant::now();
    let e = within(Duration::from_secs(30), c.run(&GetCasMailbox::default()))
        .await
        .expect_err("no CAS says anything");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let text = e.to_string();
    assert!(text.contains("no Client Access Server answered"), "{text}");
    assert!(
        text.contains("Get-CASMailbox sent nothing for 3s"),
        "{text}"
    );
    c.close().await;
}
