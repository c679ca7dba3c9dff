//! Remote PowerShell over HTTPS: the lab's CAS listeners serve TLS with a certificate its own
//! authority signed, and the connector trusts that authority through `network.ca_file` (read
//! as the configuration would, into every HTTPS client). Basic (reqwest) and NTLM (our own
//! connections) sign in over it; a certificate issued to another name is refused with the
//! message naming the CAS and the fix. With the face requiring Extended Protection (channel
//! binding, as Exchange 2019 CU14+ does by default), NTLM signs in with the binding of its TLS
//! connection. Kerberos over HTTPS, with Extended Protection required, is in `kerberos.rs` (it
//! needs MIT's KDC).

use std::path::PathBuf;
use std::time::Duration;

use easgate::config::{ExchangeAuth, Network, Organization, Secret, SecretSource};
use easgate::exchange::ExchangeClient;
use easgate::exchange::cmdlets::GetMobileDevice;
use easgate::net::HttpSettings;
use easgate_lab::{ExtendedProtection, Lab, LabOptions, LatencyModel};

use crate::support::{Transport, organization_over, within};

/// A lab whose CAS listeners serve TLS, its certificate issued to `names` (the listen address
/// and `localhost` when `None`).
pub async fn https_lab(devices: usize, names: Option<Vec<String>>) -> Lab {
    protected_lab(devices, names, ExtendedProtection::None).await
}

/// The same, its `/PowerShell/` face checking the channel binding of Windows sign-ins as
/// `check` says (IIS's `extendedProtection tokenChecking`).
pub async fn protected_lab(
    devices: usize,
    names: Option<Vec<String>>,
    check: ExtendedProtection,
) -> Lab {
    Lab::start(LabOptions {
        devices,
        cas: 1,
        seed: 5,
        latency: LatencyModel::uniform(1, 0),
        cas_tls: true,
        tls_names: names,
        extended_protection: check,
        ..Default::default()
    })
    .await
    .expect("the lab starts")
}

/// Test connection settings trusting `lab`'s authority through a `ca_file` written to `dir`.
pub fn trusting(lab: &Lab, dir: &std::path::Path) -> HttpSettings {
    let path: PathBuf = dir.join("lab-ca.pem");
    std::fs::write(&path, lab.tls_ca_pem().expect("a TLS lab")).unwrap();
    let net = Network {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(10),
        ca_file: Some(path),
        ..Network::default()
    };
    HttpSettings::from_config(&net).expect("the lab's authority reads as a CA file")
}

fn ntlm(org: &mut Organization, lab: &Lab) {
    let (user, password) = lab.powershell_account();
    org.exchange.auth = ExchangeAuth::Ntlm {
        username: user,
        password: SecretSource::Inline(Secret::new(password)),
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_and_ntlm_sign_in_over_https_trusting_the_ca_file() {
    let lab = https_lab(40, None).await;
    let dir = tempfile::tempdir().unwrap();
    let http = trusting(&lab, dir.path());
    let basic = organization_over(&lab, Transport::PowerShell);
    assert!(basic.exchange.cas_urls[0].starts_with("https://127.0.0.1:"));
    let mut over_ntlm = basic.clone();
    ntlm(&mut over_ntlm, &lab);
    for org in [basic.clone(), over_ntlm] {
        // A Basic client that cannot connect retries until the CAS counts as unavailable.
        let mut org = org;
        org.exchange.unavailable_timeout = Duration::from_secs(5);
        let c = ExchangeClient::builder(&org, &http).build().unwrap();
        let devices = within(Duration::from_secs(60), c.run(&GetMobileDevice::default()))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", org.exchange.auth.kind()));
        assert_eq!(devices.len(), lab.control().truth().len());
        c.close().await;
    }
    // Without the authority, the same CAS is not trusted: the setting is what made it work.
    let mut untrusted = basic.clone();
    ntlm(&mut untrusted, &lab);
    let c = ExchangeClient::builder(&untrusted, &crate::support::test_http())
        .build()
        .unwrap();
    let e = within(Duration::from_secs(60), c.run(&GetMobileDevice::default()))
        .await
        .expect_err("an unknown authority is refused")
        .to_string();
    assert!(
        e.contains("is not trusted") && e.contains("network.ca_file"),
        "{e}"
    );

    // A refused NTLM sign-in over HTTPS may also be a channel binding that names a
    // TLS-terminating proxy's certificate instead of the CAS's: the message says so and how to
    // get past it, beside the password.
    let mut wrong = basic.clone();
    let (user, _) = lab.powershell_account();
    wrong.exchange.auth = ExchangeAuth::Ntlm {
        username: user,
        password: SecretSource::Inline(Secret::new("not-the-password")),
    };
    let c = ExchangeClient::builder(&wrong, &http).build().unwrap();
    let e = within(Duration::from_secs(60), c.run(&GetMobileDevice::default()))
        .await
        .expect_err("a wrong password is refused")
        .to_string();
    for words in [
        "wrong password or unknown user",
        "Extended Protection",
        "terminates TLS in front of the CAS",
        "use an http:// CAS URL",
    ] {
        assert!(e.contains(words), "{words:?} in {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_name_is_refused_naming_the_cas_and_the_fix() {
    let lab = https_lab(10, Some(vec!["cas01.lab.easgate.test".into()])).await;
    let dir = tempfile::tempdir().unwrap();
    let http = trusting(&lab, dir.path());
    let mut org = organization_over(&lab, Transport::PowerShell);
    ntlm(&mut org, &lab);
    let cas = org.exchange.cas_urls[0].trim_end_matches('/').to_owned();
    let c = ExchangeClient::builder(&org, &http).build().unwrap();
    let e = within(Duration::from_secs(60), c.run(&GetMobileDevice::default()))
        .await
        .expect_err("the name does not match")
        .to_string();
    eprintln!("{e}");
    for words in [
        cas.as_str(),
        "is not valid for `127.0.0.1`",
        "write the name the certificate is issued to in exchange.cas_urls",
    ] {
        assert!(e.contains(words), "{words:?} in {e}");
    }
}

/// Exchange 2019 CU14+ turns Extended Protection on: an NTLM sign-in over https must carry the
/// binding of its TLS connection (the lab refuses one without, see the lab's own tests). Under
/// `Require` and `Allow` alike, the connector's sign-in passes and the devices are listed (each
/// connection signs in with the binding of its own TLS session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntlm_signs_in_to_a_cas_that_requires_channel_binding() {
    for check in [ExtendedProtection::Require, ExtendedProtection::Allow] {
        let lab = protected_lab(300, None, check).await;
        let dir = tempfile::tempdir().unwrap();
        let http = trusting(&lab, dir.path());
        let mut org = organization_over(&lab, Transport::PowerShell);
        ntlm(&mut org, &lab);
        let c = ExchangeClient::builder(&org, &http).build().unwrap();
        let devices = within(Duration::from_secs(60), c.run(&GetMobileDevice::default()))
            .await
            .unwrap_or_else(|e| panic!("{check:?}: {e}"));
        assert_eq!(devices.len(), lab.control().truth().len(), "{check:?}");
        assert_eq!(
            lab.control().counters().exchange.rejected,
            0,
            "{check:?}: no sign-in was refused"
        );
        c.close().await;
    }
}
