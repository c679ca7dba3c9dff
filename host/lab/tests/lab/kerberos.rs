//! Kerberos on the remote PowerShell face, against a real MIT KDC (`easgate_lab::kdc::TestKdc`):
//! the client side is MIT's GSS-API initiator (through `libgssapi`), getting its ticket from the
//! KDC with the account's password, as a domain-joined client would.
//!
//! Without MIT's KDC programs the tests say so on stderr and pass, unless
//! `EASGATE_REQUIRE_POLYGLOT=1` (set by `.ci/test`, which installs them) makes that a failure.

use std::path::PathBuf;

use serde_json::{Value, json};

use easgate_lab::kdc::TestKdc;
use libgssapi::context::{ClientCtx, CtxFlags, SecurityContext};
use libgssapi::credential::{Cred, CredUsage};
use libgssapi::name::Name;
use libgssapi::oid::{GSS_MECH_KRB5, GSS_NT_HOSTBASED_SERVICE, GSS_NT_KRB5_PRINCIPAL, OidSet};

use crate::lab;

/// The client's credentials from the KDC, with a password (what `kinit` does, in memory).
fn user_cred(kdc: &TestKdc, password: &str) -> Result<Cred, libgssapi::error::Error> {
    let name = Name::new(kdc.user_principal().as_bytes(), Some(GSS_NT_KRB5_PRINCIPAL))?;
    let mut mechs = OidSet::new();
    mechs.add(GSS_MECH_KRB5)?;
    Cred::acquire_with_password(
        Some(&name),
        password,
        None,
        CredUsage::Initiate,
        Some(&mechs),
    )
}

/// A fresh security context for `HTTP@localhost`, and its first token (the AP-REQ).
fn client_token(cred: &Cred) -> (ClientCtx, Vec<u8>) {
    bound_client_token(cred, None)
}

/// The same with the channel binding `bindings` (application data) in the authenticator.
fn bound_client_token(cred: &Cred, bindings: Option<&[u8]>) -> (ClientCtx, Vec<u8>) {
    let target = Name::new(b"HTTP@localhost", Some(GSS_NT_HOSTBASED_SERVICE)).expect("name");
    let mut ctx = ClientCtx::new(
        Some(cred.clone()),
        target,
        CtxFlags::GSS_C_MUTUAL_FLAG,
        Some(GSS_MECH_KRB5),
    );
    let token = ctx
        .step(None, bindings)
        .expect("an AP-REQ for HTTP/localhost")
        .expect("a token")
        .to_vec();
    (ctx, token)
}

/// A fresh KDC in a directory of its own, named after `name`.
async fn start_kdc(name: &str) -> (TestKdc, PathBuf) {
    let dir = std::env::temp_dir().join(format!("easgate-lab-{name}-{}", std::process::id()));
    let kdc = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || TestKdc::start(&dir)
    })
    .await
    .expect("joined")
    .expect("KDC starts");
    (kdc, dir)
}

/// A lab of `devices` devices whose face accepts Kerberos from a fresh KDC in its own directory.
async fn kerberos_lab(devices: usize, name: &str) -> (easgate_lab::Lab, TestKdc, PathBuf) {
    let (kdc, dir) = start_kdc(name).await;
    let lab = lab(devices).await;
    lab.enable_powershell_kerberos(kdc.keytab())
        .expect("acceptor from the keytab");
    (lab, kdc, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kerberos_ticket_authenticates_the_connection_with_mutual_authentication() {
    let test = "a_kerberos_ticket_authenticates_the_connection_with_mutual_authentication";
    if !TestKdc::available_for(test) {
        return;
    }
    let (lab, kdc, dir) = kerberos_lab(5, "kerberos-raw").await;
    let _config = KRB5_CONFIG.lock().await;
    // SAFETY: set only under `KRB5_CONFIG`, held for the whole test (the other tests give it to
    // a child process); libkrb5 reads it whenever the initiator below asks the KDC.
    unsafe { std::env::set_var("KRB5_CONFIG", kdc.krb5_conf()) };

    // A wrong password gets no ticket at all: the KDC refuses it.
    assert!(
        user_cred(&kdc, "not-the-password").is_err(),
        "the KDC gave a ticket for a wrong password"
    );
    let cred = user_cred(&kdc, kdc.password()).expect("a TGT with the right password");
    let url = lab.powershell_urls()[0].clone();
    let http = reqwest::Client::new();

    // The authenticating request of an encrypting client: no envelope, a 200 and the AP-REP.
    let (mut ctx, token) = client_token(&cred);
    let r = http
        .post(&url)
        .header(
            "authorization",
            format!("Kerberos {}", easgate_psrp::clixml::base64_encode(&token)),
        )
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status().as_u16(), 200);
    let answer = r
        .headers()
        .get("www-authenticate")
        .expect("a mutual-authentication answer")
        .to_str()
        .unwrap()
        .to_owned();
    let reply = answer
        .strip_prefix("Kerberos ")
        .unwrap_or_else(|| panic!("WWW-Authenticate {answer:?}"));
    let reply = easgate_psrp::clixml::base64_decode(reply).expect("base64 AP-REP");
    assert!(
        ctx.step(Some(&reply), None)
            .expect("the AP-REP verifies")
            .is_none()
    );
    assert!(ctx.is_complete(), "mutual authentication completed");

    // A plain envelope under Kerberos over HTTP: refused, as with AllowUnencrypted=false.
    let (_ctx, token) = client_token(&cred);
    let r = http
        .post(&url)
        .header(
            "authorization",
            format!("Kerberos {}", easgate_psrp::clixml::base64_encode(&token)),
        )
        .header("content-type", "application/soap+xml;charset=UTF-8")
        .body("<s:Envelope/>")
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status().as_u16(), 401, "a plain envelope under Kerberos");

    // A token that is no ticket, and a Negotiate without any: 401 offering every package.
    for header in ["Kerberos AAAA", "Negotiate"] {
        let r = reqwest::Client::new()
            .post(&url)
            .header("authorization", header)
            .header("content-type", "application/soap+xml;charset=UTF-8")
            .body("<s:Envelope/>")
            .send()
            .await
            .expect("answers");
        assert_eq!(r.status().as_u16(), 401, "{header}");
        let offered: Vec<&str> = r
            .headers()
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            offered,
            ["Negotiate", "Kerberos", "Basic realm=\"\""],
            "{header}"
        );
    }
    drop(kdc);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Held by the tests that point this process's `KRB5_CONFIG` at their own KDC, for as long as
/// their initiator may read it.
static KRB5_CONFIG: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Under Extended Protection over https, MIT's acceptor is given the face's channel binding: a
/// ticket whose authenticator carries it is accepted, one carrying another binding is refused,
/// and one carrying none is refused under `Require` and accepted under `Allow`. The expected
/// binding is computed here from the certificate the lab showed on the TLS connection
/// (`tls-server-end-point`, SHA-256 as its ECDSA-with-SHA256 signature asks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protection_checks_the_tickets_channel_binding() {
    use easgate_lab::ExtendedProtection;
    use sha2::Digest;
    let test = "extended_protection_checks_the_tickets_channel_binding";
    if !TestKdc::available_for(test) {
        return;
    }
    let (kdc, dir) = start_kdc("krb-ep").await;
    let _config = KRB5_CONFIG.lock().await;
    // SAFETY: see the other test that sets it; both hold `KRB5_CONFIG`.
    unsafe { std::env::set_var("KRB5_CONFIG", kdc.krb5_conf()) };
    let cred = user_cred(&kdc, kdc.password()).expect("a TGT with the right password");

    for check in [ExtendedProtection::Require, ExtendedProtection::Allow] {
        let lab = easgate_lab::Lab::start(easgate_lab::LabOptions {
            cas_tls: true,
            extended_protection: check,
            ..crate::options(5)
        })
        .await
        .expect("lab starts");
        lab.enable_powershell_kerberos(kdc.keytab())
            .expect("acceptor from the keytab");
        let ca = reqwest::Certificate::from_pem(lab.tls_ca_pem().unwrap().as_bytes()).unwrap();
        let url = lab.powershell_urls()[0].clone();
        // One connection per request (the context is bound to it): a fresh client each time.
        let client = || {
            reqwest::Client::builder()
                .add_root_certificate(ca.clone())
                .tls_info(true)
                .build()
                .unwrap()
        };
        let probe = client().post(&url).send().await.expect("answers");
        let cert = probe
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|t| t.peer_certificate())
            .expect("the lab's certificate")
            .to_vec();
        let mut ours = b"tls-server-end-point:".to_vec();
        ours.extend_from_slice(&sha2::Sha256::digest(&cert));
        let mut other = b"tls-server-end-point:".to_vec();
        other.extend_from_slice(&sha2::Sha256::digest(b"another certificate"));

        let require = check == ExtendedProtection::Require;
        for (bindings, accepted, what) in [
            (Some(ours.as_slice()), true, "the connection's binding"),
            (
                Some(other.as_slice()),
                false,
                "another connection's binding",
            ),
            (None, !require, "no binding"),
        ] {
            let (_ctx, token) = bound_client_token(&cred, bindings);
            let r = client()
                .post(&url)
                .header(
                    "authorization",
                    format!("Negotiate {}", easgate_psrp::clixml::base64_encode(&token)),
                )
                .send()
                .await
                .expect("answers");
            let status = r.status().as_u16();
            assert_eq!(
                status,
                if accepted { 200 } else { 401 },
                "{check:?}: a ticket with {what}"
            );
        }
    }
    drop(kdc);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether pypsrp with its Kerberos extras can run; panics when it cannot but must.
fn pypsrp_kerberos_available(test: &str) -> bool {
    if !TestKdc::available_for(test) {
        return false;
    }
    let why = match std::process::Command::new("python3")
        .args(["-c", "import pypsrp, spnego, gssapi, krb5"])
        .output()
    {
        Err(e) => format!("python3 cannot run: {e}"),
        Ok(o) if !o.status.success() => format!(
            "pypsrp[kerberos] is not installed ({})",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Ok(_) => return true,
    };
    if std::env::var("EASGATE_REQUIRE_POLYGLOT").is_ok_and(|v| v == "1") {
        panic!(
            "{test}: {why}, and EASGATE_REQUIRE_POLYGLOT=1 requires it (.ci/install-plugin-toolchains)"
        );
    }
    eprintln!("skipping {test}: {why}");
    false
}

/// Runs one case of the client script with Kerberos against CAS 0, as `user`/`password`.
async fn pypsrp(
    lab: &easgate_lab::Lab,
    kdc: &TestKdc,
    password: &str,
    case: &str,
    args: &[&str],
) -> Value {
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(crate::powershell::script())
        .args([
            lab.powershell_urls()[0].as_str(),
            &kdc.user_principal(),
            password,
            case,
        ])
        .args(args)
        .env("PYPSRP_AUTH", "kerberos")
        .env("KRB5_CONFIG", kdc.krb5_conf())
        // pyspnego's kinit keeps the ticket in memory; no ccache of the machine is touched.
        .env("KRB5CCNAME", format!("MEMORY:pypsrp-{case}"));
    crate::powershell::run_client(cmd, case).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pypsrp_with_kerberos_and_message_encryption_lists_and_edits() {
    let test = "pypsrp_with_kerberos_and_message_encryption_lists_and_edits";
    if !pypsrp_kerberos_available(test) {
        return;
    }
    let (lab, kdc, dir) = kerberos_lab(200, "kerberos-pypsrp").await;

    let listed = pypsrp(&lab, &kdc, kdc.password(), "list", &[]).await;
    assert_eq!(listed["count"], 200, "{listed}");
    assert_eq!(listed["had_errors"], false, "{listed}");

    let truth = lab.control().truth();
    let dev = truth
        .iter()
        .find(|t| {
            t.mailbox.is_some()
                && t.access_state != easgate_lab::AccessState::Allowed
                && !t.in_block_list
        })
        .expect("the dataset has devices that are not allowed");
    let mailbox = dev.mailbox.clone().unwrap();
    let edited = pypsrp(
        &lab,
        &kdc,
        kdc.password(),
        "allow-device",
        &[&mailbox, &dev.device_id],
    )
    .await;
    assert_eq!(edited["set_errors"], json!([]), "{edited}");
    assert_eq!(
        edited["mailbox"]["props"]["ActiveSyncAllowedDeviceIDs"]["items"],
        json!([dev.device_id]),
        "{edited}"
    );
    assert_eq!(
        edited["device"]["props"]["DeviceAccessState"], "Allowed",
        "{edited}"
    );

    let refused = pypsrp(&lab, &kdc, "not-the-password", "wrong-password", &[]).await;
    assert_eq!(refused["opened"], false, "{refused}");
    // Refused by the KDC (pre-authentication with the wrong key fails to decrypt), through
    // pyspnego's krb5 binding, before any ticket could reach the face.
    assert_eq!(refused["error"], "Krb5Error", "{refused}");
    drop(kdc);
    let _ = std::fs::remove_dir_all(&dir);
}
