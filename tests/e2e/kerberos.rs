//! Remote PowerShell with Kerberos end to end: the connector's own Kerberos client (`sspi`)
//! gets its tickets from a real MIT KDC (`easgate_lab::kdc::TestKdc`) over TCP, authenticates
//! each HTTP connection to the lab's `/PowerShell/` face (MIT's GSS-API acceptor, mutual
//! authentication) and seals every envelope with WS-Management message encryption; the face
//! refuses plain envelopes under Kerberos, so a sync that converges went sealed all the way.
//!
//! Without MIT's KDC programs the tests say so on stderr and pass, unless
//! `EASGATE_REQUIRE_POLYGLOT=1` (set by `.ci/test`, which installs them) makes that a failure.

use std::path::PathBuf;
use std::time::Duration;

use easgate::config::{ExchangeAuth, Organization, Secret, SecretSource};
use easgate::exchange::ExchangeClient;
use easgate::exchange::cmdlets::GetMobileDevice;
use easgate::model::SyncKind;
use easgate::plugin::PluginEngine;
use easgate::store::RunOutcome;
use easgate::sync::OrgSync;
use easgate_lab::kdc::TestKdc;

use crate::support::lab::{
    assert_enforced, expected, list_devices, lists_every_device, sync_lab, unguarded,
};
use crate::support::{
    Transport, builtin, client_lab, organization_over, temp_store, test_http, within,
};

/// A lab of `devices` devices whose face accepts Kerberos from a fresh KDC.
async fn kerberos_lab(devices: usize, name: &str) -> (easgate_lab::Lab, TestKdc, PathBuf) {
    with_kdc(sync_lab(devices).await, name).await
}

/// `lab`, its face accepting Kerberos from a fresh KDC.
async fn with_kdc(lab: easgate_lab::Lab, name: &str) -> (easgate_lab::Lab, TestKdc, PathBuf) {
    let dir = std::env::temp_dir().join(format!("easgate-e2e-{name}-{}", std::process::id()));
    let kdc = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || TestKdc::start(&dir)
    })
    .await
    .expect("joined")
    .expect("the KDC starts");
    lab.enable_powershell_kerberos(kdc.keytab())
        .expect("the face's acceptor from the keytab");
    (lab, kdc, dir)
}

/// The lab's organization over remote PowerShell with Kerberos: the CAS by the name its SPN
/// has (`HTTP/localhost`), the KDC's address given explicitly.
fn kerberos_org(lab: &easgate_lab::Lab, kdc: &TestKdc) -> Organization {
    let mut org = organization_over(lab, Transport::PowerShell);
    org.exchange.cas_urls = org
        .exchange
        .cas_urls
        .iter()
        .map(|u| u.replace("127.0.0.1", easgate_lab::kdc::SERVICE_HOST))
        .collect();
    org.exchange.auth = ExchangeAuth::Kerberos {
        username: easgate_lab::kdc::USER.into(),
        password: Some(SecretSource::Inline(Secret::new(kdc.password()))),
        keytab: None,
        realm: Some(kdc.realm().into()),
        kdc: Some(kdc.kdc_addr().to_string()),
        spn: None,
    };
    org.exchange.parallel_commands = 8;
    org
}

/// A full sync of `lab` with `org` over `http` converges, and a second issues no command.
async fn converges(lab: &easgate_lab::Lab, org: &Organization, http: &easgate::net::HttpSettings) {
    let exchange = ExchangeClient::builder(org, http)
        .build()
        .expect("the Kerberos client builds");
    let graph = easgate::graph::GraphClient::new(org, http).expect("graph client");
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
    assert_enforced(lab, expected);

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
async fn a_full_sync_over_kerberos_converges_and_a_second_issues_nothing() {
    if !TestKdc::available_for("a_full_sync_over_kerberos_converges_and_a_second_issues_nothing") {
        return;
    }
    let (lab, kdc, dir) = kerberos_lab(1_500, "krb-sync").await;
    let org = kerberos_org(&lab, &kdc);
    converges(&lab, &org, &test_http()).await;
    drop(kdc);
    let _ = std::fs::remove_dir_all(dir);
}

/// The same over HTTPS: the CAS's certificate (issued to `localhost`, the SPN's host) trusted
/// through `network.ca_file`, the Kerberos context on TLS connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sync_over_kerberos_and_https_converges() {
    if !TestKdc::available_for("a_full_sync_over_kerberos_and_https_converges") {
        return;
    }
    let lab = crate::psrp_https::https_lab(1_500, None).await;
    let (lab, kdc, dir) = with_kdc(lab, "krb-https").await;
    let org = kerberos_org(&lab, &kdc);
    assert!(org.exchange.cas_urls[0].starts_with("https://localhost:"));
    let http = crate::psrp_https::trusting(&lab, &dir);
    converges(&lab, &org, &http).await;
    drop(kdc);
    let _ = std::fs::remove_dir_all(dir);
}

/// `org` signing in from a keytab at `path` instead of the password.
fn from_keytab(org: &Organization, path: &std::path::Path) -> Organization {
    let mut org = org.clone();
    let ExchangeAuth::Kerberos {
        password, keytab, ..
    } = &mut org.exchange.auth
    else {
        panic!("a Kerberos sign-in");
    };
    *password = None;
    *keytab = Some(path.to_owned());
    org
}

/// Exports the user's keys to `path` as an admin would, `-norandkey` keeping its password (and
/// key version) as it is.
fn export_keytab(kdc: &TestKdc, path: &std::path::Path) {
    kdc.kadmin(&format!(
        "ktadd -k {} -norandkey {}",
        path.display(),
        kdc.user_principal()
    ))
    .expect("kadmin.local ktadd");
    assert!(path.is_file(), "ktadd wrote {}", path.display());
}

/// No password anywhere: the connector's key comes from a keytab `kadmin.local ktadd` wrote,
/// and a full sync over sealed Kerberos connections converges with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sync_signed_in_from_a_keytab_converges() {
    if !TestKdc::available_for("a_full_sync_signed_in_from_a_keytab_converges") {
        return;
    }
    let (lab, kdc, dir) = kerberos_lab(300, "krb-keytab").await;
    let keytab = dir.join("svc-easgate.keytab");
    export_keytab(&kdc, &keytab);
    let org = from_keytab(&kerberos_org(&lab, &kdc), &keytab);
    converges(&lab, &org, &test_http()).await;
    drop(kdc);
    let _ = std::fs::remove_dir_all(dir);
}

/// The account's password changes after the keytab was exported (its key version moves on):
/// the KDC refuses the keytab's key, and the connector says the keytab is stale and how to
/// export it again. Exported again, the same client signs in on its next connection (the
/// keytab is read at each sign-in).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_keytab_is_refused_with_how_to_export_it_again() {
    if !TestKdc::available_for("a_stale_keytab_is_refused_with_how_to_export_it_again") {
        return;
    }
    let (lab, kdc, dir) = kerberos_lab(10, "krb-stale-keytab").await;
    let keytab = dir.join("svc-easgate.keytab");
    export_keytab(&kdc, &keytab);
    let mut org = from_keytab(&kerberos_org(&lab, &kdc), &keytab);
    org.exchange.cas_failover = false;
    let cas = org.exchange.cas_urls[0].trim_end_matches('/').to_owned();
    kdc.kadmin(&format!(
        "cpw -pw Lab-Kerberos-Password-2 {}",
        kdc.user_principal()
    ))
    .expect("kadmin.local cpw");

    let client = ExchangeClient::builder(&org, &test_http())
        .build()
        .expect("the keytab is read at build");
    let e = within(
        Duration::from_secs(60),
        client.run(&GetMobileDevice::default()),
    )
    .await
    .expect_err("the stale key is refused")
    .to_string();
    eprintln!("{e}");
    for words in [
        cas.as_str(),
        "KDC_ERR_PREAUTH_FAILED",
        "svc-easgate@LAB.EASGATE.TEST",
        &keytab.display().to_string(),
        "the keytab's key: kvno 1, aes256-cts-hmac-sha1-96",
        "the keytab is stale",
        "ktpass",
        "-norandkey",
    ] {
        assert!(e.contains(words), "{words:?} in {e}");
    }

    // Exported again (now kvno 2): the next connection reads it and signs in.
    std::fs::remove_file(&keytab).unwrap();
    export_keytab(&kdc, &keytab);
    let devices = within(
        Duration::from_secs(60),
        client.run(&GetMobileDevice::default()),
    )
    .await
    .expect("the keytab exported again signs in");
    assert_eq!(devices.len(), lab.control().truth().len());
    client.close().await;
    drop(kdc);
    let _ = std::fs::remove_dir_all(dir);
}

/// A keytab with the AES128 key only, while the account also has an AES256 one: the KDC answers
/// with the AES256 key (easgate asks for it first), which the keytab cannot read; the error
/// says so and how to export the AES256 key, rather than sspi's bare "slice" error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aes128_only_keytab_is_told_to_export_the_aes256_key() {
    if !TestKdc::available_for("an_aes128_only_keytab_is_told_to_export_the_aes256_key") {
        return;
    }
    let (lab, kdc, dir) = kerberos_lab(10, "krb-aes128-keytab").await;
    let both = dir.join("both.keytab");
    export_keytab(&kdc, &both);
    // ktutil (krb5-user) drops the AES256 entry, which ktadd writes first.
    let aes128 = dir.join("aes128.keytab");
    let script = format!(
        "rkt {}\ndelent 1\nwkt {}\nquit\n",
        both.display(),
        aes128.display()
    );
    let mut ktutil = std::process::Command::new("ktutil")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ktutil (krb5-user) runs");
    std::io::Write::write_all(&mut ktutil.stdin.take().unwrap(), script.as_bytes()).unwrap();
    assert!(ktutil.wait().unwrap().success());
    let org = from_keytab(&kerberos_org(&lab, &kdc), &aes128);
    let client = ExchangeClient::builder(&org, &test_http())
        .build()
        .expect("an AES128 key is usable as far as the keytab goes");
    let e = within(
        Duration::from_secs(60),
        client.run(&GetMobileDevice::default()),
    )
    .await
    .expect_err("the KDC's AES256 answer cannot be read")
    .to_string();
    eprintln!("{e}");
    for words in [
        "kvno 1, aes128-cts-hmac-sha1-96",
        "AES256 key",
        "ktpass /crypto AES256-SHA1",
    ] {
        assert!(e.contains(words), "{words:?} in {e}");
    }
    drop(kdc);
    let _ = std::fs::remove_dir_all(dir);
}

/// Changes what is given of a Kerberos sign-in.
fn set(
    a: &mut ExchangeAuth,
    new_password: Option<&str>,
    new_realm: Option<&str>,
    new_kdc: Option<String>,
    new_spn: Option<&str>,
) {
    let ExchangeAuth::Kerberos {
        password,
        realm,
        kdc,
        spn,
        ..
    } = a
    else {
        panic!("a Kerberos sign-in");
    };
    if let Some(p) = new_password {
        *password = Some(SecretSource::Inline(Secret::new(p)));
    }
    if let Some(r) = new_realm {
        *realm = Some(r.into());
    }
    if let Some(k) = new_kdc {
        *kdc = Some(k);
    }
    if let Some(s) = new_spn {
        *spn = Some(s.into());
    }
}

/// Kerberos over HTTPS does not bind the channel yet (sspi 0.23.1's binding is refused by MIT's
/// acceptor, see the connector's `psrp::connection`): a CAS whose Extended Protection is
/// `Allow` accepts the unbound ticket, one that requires it refuses it, and the refusal names
/// Extended Protection and the ways past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_extended_protection_allow_passes_and_require_is_named_with_the_way_past() {
    let test = "over_https_extended_protection_allow_passes_and_require_is_named_with_the_way_past";
    if !TestKdc::available_for(test) {
        return;
    }
    let allow =
        crate::psrp_https::protected_lab(40, None, easgate_lab::ExtendedProtection::Allow).await;
    let (allow, kdc, dir) = with_kdc(allow, "krb-ep").await;
    let http = crate::psrp_https::trusting(&allow, &dir);
    let org = kerberos_org(&allow, &kdc);
    let c = ExchangeClient::builder(&org, &http).build().unwrap();
    let devices = within(Duration::from_secs(60), c.run(&GetMobileDevice::default()))
        .await
        .expect("an unbound ticket passes Extended Protection `Allow`");
    assert_eq!(devices.len(), allow.control().truth().len());
    c.close().await;

    let require =
        crate::psrp_https::protected_lab(40, None, easgate_lab::ExtendedProtection::Require).await;
    require
        .enable_powershell_kerberos(kdc.keytab())
        .expect("the face's acceptor from the keytab");
    let http = crate::psrp_https::trusting(&require, &dir);
    let org = kerberos_org(&require, &kdc);
    let c = ExchangeClient::builder(&org, &http).build().unwrap();
    let e = within(Duration::from_secs(60), c.run(&GetMobileDevice::default()))
        .await
        .expect_err("an unbound ticket is refused under `Require`")
        .to_string();
    for words in [
        "refused the Kerberos ticket",
        "Extended Protection is `Require`",
        "use an http:// CAS URL",
        "kind = \"ntlm\"",
    ] {
        assert!(e.contains(words), "{words:?} in {e}");
    }
    drop(kdc);
    let _ = std::fs::remove_dir_all(dir);
}

/// What listing the devices with `org` fails with (the sign-in refusals of every mechanism).
pub(crate) async fn refusal(org: &Organization) -> String {
    let e = list_devices(org).await.expect_err("the sign-in is refused");
    // Shown with --nocapture: what an admin reads.
    eprintln!("{e}");
    e.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_an_admin_gets_wrong_is_named_with_the_cas_and_the_fix() {
    if !TestKdc::available_for("what_an_admin_gets_wrong_is_named_with_the_cas_and_the_fix") {
        return;
    }
    let (lab, kdc, dir) = kerberos_lab(10, "krb-errors").await;
    let good = kerberos_org(&lab, &kdc);
    let cas = good.exchange.cas_urls[0].trim_end_matches('/').to_owned();
    let with = |f: &dyn Fn(&mut ExchangeAuth)| {
        let mut org = good.clone();
        f(&mut org.exchange.auth);
        org
    };
    // A wrong password: the KDC's pre-authentication fails.
    let e = refusal(&with(&|a| {
        set(a, Some("not-the-password"), None, None, None)
    }))
    .await;
    for words in [
        cas.as_str(),
        "KDC_ERR_PREAUTH_FAILED",
        "exchange.auth.password",
        "svc-easgate@LAB.EASGATE.TEST",
    ] {
        assert!(e.contains(words), "{words:?} in {e}");
    }

    // An SPN the KDC does not have.
    let e = refusal(&with(&|a| {
        set(a, None, None, None, Some("HTTP/cas99.lab.easgate.test"))
    }))
    .await;
    for words in [
        cas.as_str(),
        "KDC_ERR_S_PRINCIPAL_UNKNOWN",
        "HTTP/cas99.lab.easgate.test",
        "setspn",
        "exchange.auth.spn",
    ] {
        assert!(e.contains(words), "{words:?} in {e}");
    }

    // A realm that KDC does not serve.
    let e = refusal(&with(&|a| {
        set(a, None, Some("NOSUCH.EASGATE.TEST"), None, None)
    }))
    .await;
    for words in [cas.as_str(), "NOSUCH.EASGATE.TEST", "exchange.auth.realm"] {
        assert!(e.contains(words), "{words:?} in {e}");
    }

    // No KDC where the configuration says (a port nobody listens on).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = closed.local_addr().unwrap().to_string();
    drop(closed);
    let e = refusal(&with(&|a| set(a, None, None, Some(gone.clone()), None))).await;
    for words in [
        cas.as_str(),
        gone.as_str(),
        "did not answer",
        "exchange.auth.kdc",
    ] {
        assert!(e.contains(words), "{words:?} in {e}");
    }

    // A virtual directory with Windows authentication off: its 401 offers Basic only, which is
    // said instead of blaming the ticket.
    lab.control()
        .set_windows_auth(easgate_lab::WindowsAuth::Off);
    let e = refusal(&good).await;
    for words in [
        cas.as_str(),
        "does not offer Kerberos (its 401 offers: Basic)",
        "Set-PowerShellVirtualDirectory -WindowsAuthentication $true",
    ] {
        assert!(e.contains(words), "{words:?} in {e}");
    }
    lab.control()
        .set_windows_auth(easgate_lab::WindowsAuth::Negotiate);

    // The right settings work on the same lab, so the refusals above were theirs.
    lists_every_device(&lab, &good, "the good settings sign in").await;
    drop(kdc);
    let _ = std::fs::remove_dir_all(dir);
}

/// A CAS restart drops every connection and its context: the next command authenticates new
/// connections (new tickets, new contexts) and opens a new pool, without failing the CAS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_lost_with_a_restarted_cas_are_authenticated_again() {
    if !TestKdc::available_for("connections_lost_with_a_restarted_cas_are_authenticated_again") {
        return;
    }
    let (lab, kdc, dir) = with_kdc(client_lab(50, 1).await, "krb-restart").await;
    let mut org = kerberos_org(&lab, &kdc);
    org.exchange.cas_failover = false;
    let c = ExchangeClient::builder(&org, &test_http()).build().unwrap();
    c.run(&GetMobileDevice::default()).await.unwrap();
    lab.control().stop_cas(0).await.unwrap();
    lab.control().start_cas(0).await.unwrap();
    let devices = within(Duration::from_secs(30), c.run(&GetMobileDevice::default()))
        .await
        .expect("new connections sign in again");
    assert_eq!(devices.len(), lab.control().truth().len());
    assert!(
        c.cas_health()[0].up,
        "a lost connection is not a failed CAS"
    );
    c.close().await;
    drop(kdc);
    let _ = std::fs::remove_dir_all(dir);
}
