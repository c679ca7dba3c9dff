//! Remote PowerShell with NTLM end to end: the connector's own NTLM client (`sspi`) signs in on
//! each HTTP connection to the lab's `/PowerShell/` face in NTLM's two round trips (NEGOTIATE,
//! the face's CHALLENGE in a 401, AUTHENTICATE checked against the lab account's password) and
//! seals every envelope with WS-Management message encryption; the face refuses plain
//! envelopes once a connection signed in that way, so a sync that converges went sealed all the
//! way. NTLM needs no KDC: these tests always run.

use std::time::Duration;

use easgate::config::{ExchangeAuth, Organization, Secret, SecretSource};
use easgate::exchange::ExchangeClient;
use easgate::model::SyncKind;
use easgate::plugin::PluginEngine;
use easgate::store::RunOutcome;
use easgate::sync::OrgSync;

use crate::kerberos::refusal;
use crate::support::lab::{assert_enforced, expected, lists_every_device, sync_lab, unguarded};
use crate::support::{Transport, builtin, organization_over, temp_store, test_http, within};

/// The lab's organization over remote PowerShell with NTLM as `username` (the lab's account
/// password unless `password` is given), over the face's plain-HTTP URLs.
fn ntlm_org(lab: &easgate_lab::Lab, username: &str, password: Option<&str>) -> Organization {
    let mut org = organization_over(lab, Transport::PowerShell);
    let (_, right) = lab.powershell_account();
    org.exchange.auth = ExchangeAuth::Ntlm {
        username: username.into(),
        password: SecretSource::Inline(Secret::new(password.unwrap_or(&right))),
    };
    org.exchange.parallel_commands = 8;
    org
}

/// `LAB\svc-easgate`: the account in its down-level form.
fn down_level(lab: &easgate_lab::Lab) -> String {
    let (upn, _) = lab.powershell_account();
    let local = upn.split('@').next().unwrap().to_owned();
    format!("LAB\\{local}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sync_over_ntlm_converges_and_a_second_issues_nothing() {
    let lab = sync_lab(1_500).await;
    let org = ntlm_org(&lab, &down_level(&lab), None);
    let http = test_http();
    let exchange = ExchangeClient::builder(&org, &http)
        .build()
        .expect("the NTLM client builds");
    let graph = easgate::graph::GraphClient::new(&org, &http).expect("graph client");
    let (_store_dir, store) = temp_store();
    let sync = OrgSync::new(org.name.clone(), exchange, graph, unguarded(), store);
    let engine = PluginEngine::new().expect("engine");
    let policy = builtin(&engine, "{}");

    let first = within(
        Duration::from_secs(240),
        sync.run(SyncKind::Full, false, policy.clone()),
    )
    .await
    .expect("the sync runs");
    assert_eq!(first.outcome, RunOutcome::Succeeded, "{first:#?}");
    assert!(first.commands_issued > 0);
    assert_eq!(first.verdicts.undecided, 0);
    assert_enforced(&lab, expected);

    lab.control().reset_counters();
    let second = within(
        Duration::from_secs(240),
        sync.run(SyncKind::Full, false, policy),
    )
    .await
    .expect("the sync runs");
    assert_eq!(second.outcome, RunOutcome::Succeeded, "{second:#?}");
    assert_eq!(second.commands_issued, 0, "{second:#?}");
    assert_eq!(lab.control().counters().calls("Set-CASMailbox"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_or_user_is_named_with_the_cas_and_the_fix() {
    let lab = sync_lab(10).await;
    let (upn, _) = lab.powershell_account();
    let good = ntlm_org(&lab, &upn, None);
    let cas = good.exchange.cas_urls[0].clone();
    let cas = cas.trim_end_matches('/');

    let e = refusal(&ntlm_org(&lab, &upn, Some("not-the-password"))).await;
    for words in [
        cas,
        upn.as_str(),
        "wrong password or unknown user",
        "exchange.auth.password",
    ] {
        assert!(e.contains(words), "{words:?} in {e}");
    }
    let e = refusal(&ntlm_org(&lab, "LAB\\nobody", None)).await;
    for words in [cas, "LAB\\nobody", "wrong password or unknown user"] {
        assert!(e.contains(words), "{words:?} in {e}");
    }

    // The right settings work on the same lab, in either form, so the refusals were theirs.
    for username in [upn.clone(), down_level(&lab)] {
        let why = format!("the good settings sign in as {username}");
        lists_every_device(&lab, &ntlm_org(&lab, &username, None), &why).await;
    }
}

/// A CAS whose PowerShell virtual directory does not take NTLM: Negotiate limited to Kerberos
/// (the NTLM negotiation gets a plain 401), or Windows authentication off (the 401 offers Basic
/// only). Each is named with the CAS and its own fix, and the same settings sign in once the
/// directory takes NTLM again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cas_that_does_not_take_ntlm_is_named_with_the_fix() {
    let lab = sync_lab(10).await;
    let (upn, _) = lab.powershell_account();
    let org = ntlm_org(&lab, &upn, None);
    let cas = org.exchange.cas_urls[0].trim_end_matches('/').to_owned();

    lab.control()
        .set_windows_auth(easgate_lab::WindowsAuth::KerberosOnly);
    let e = refusal(&org).await;
    for words in [
        cas.as_str(),
        "offers Windows authentication (Negotiate, Kerberos, Basic",
        "did not answer the NTLM negotiation with a challenge",
        "kind = \"kerberos\"",
    ] {
        assert!(e.contains(words), "{words:?} in {e}");
    }

    lab.control()
        .set_windows_auth(easgate_lab::WindowsAuth::Off);
    let e = refusal(&org).await;
    for words in [
        cas.as_str(),
        "does not offer NTLM (its 401 offers: Basic",
        "Set-PowerShellVirtualDirectory -WindowsAuthentication $true",
    ] {
        assert!(e.contains(words), "{words:?} in {e}");
    }

    lab.control()
        .set_windows_auth(easgate_lab::WindowsAuth::Negotiate);
    lists_every_device(
        &lab,
        &org,
        "the same settings sign in once the CAS takes NTLM",
    )
    .await;
}
