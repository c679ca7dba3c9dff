//! Kerberos on the remote PowerShell face, against a real MIT KDC (`easgate_lab::kdc::TestKdc`):
//! the client side is MIT's GSS-API initiator (through `libgssapi`), getting its ticket from the
//! KDC with the account's password, as a domain-joined client would.
//!
//! Without MIT's KDC programs the tests say so on stderr and pass, unless
//! `EASGATE_REQUIRE_POLYGLOT=1` (set by `.ci/test`, which installs them) makes that a failure.

#[path = "../powershell/client.rs"]
mod client;

use std::sync::{Arc, Mutex};

use easgate_lab::kdc::TestKdc;
use libgssapi::context::{ClientCtx, CtxFlags, SecurityContext};
use libgssapi::credential::{Cred, CredUsage};
use libgssapi::name::Name;
use libgssapi::oid::{GSS_MECH_KRB5, GSS_NT_HOSTBASED_SERVICE, GSS_NT_KRB5_PRINCIPAL, OidSet};

use crate::lab;

fn kdc_available(test: &str) -> bool {
    match TestKdc::missing_tools() {
        None => true,
        Some(why) if std::env::var("EASGATE_REQUIRE_POLYGLOT").is_ok_and(|v| v == "1") => {
            panic!(
                "{test}: {why}, and EASGATE_REQUIRE_POLYGLOT=1 requires it (.ci/install-kerberos)"
            )
        }
        Some(why) => {
            eprintln!("skipping {test}: {why}");
            false
        }
    }
}

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
    let target = Name::new(b"HTTP@localhost", Some(GSS_NT_HOSTBASED_SERVICE)).expect("name");
    let mut ctx = ClientCtx::new(
        Some(cred.clone()),
        target,
        CtxFlags::GSS_C_MUTUAL_FLAG,
        Some(GSS_MECH_KRB5),
    );
    let token = ctx
        .step(None, None)
        .expect("an AP-REQ for HTTP/localhost")
        .expect("a token")
        .to_vec();
    (ctx, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kerberos_ticket_opens_a_shell_and_runs_a_cmdlet_with_mutual_authentication() {
    let test = "a_kerberos_ticket_opens_a_shell_and_runs_a_cmdlet_with_mutual_authentication";
    if !kdc_available(test) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("easgate-lab-kerberos-{}", std::process::id()));
    let kdc = TestKdc::start(&dir).expect("KDC starts");
    // SAFETY: the only test of this binary that touches the Kerberos variables; libkrb5 reads
    // KRB5_CONFIG when the credentials below are acquired.
    unsafe { std::env::set_var("KRB5_CONFIG", kdc.krb5_conf()) };
    let lab = lab(25).await;
    lab.enable_powershell_kerberos(kdc.keytab())
        .expect("acceptor from the keytab");

    // A wrong password gets no ticket at all: the KDC refuses it.
    assert!(
        user_cred(&kdc, "not-the-password").is_err(),
        "the KDC gave a ticket for a wrong password"
    );

    let cred = user_cred(&kdc, kdc.password()).expect("a TGT with the right password");
    let (user, password) = lab.powershell_account();
    let mut c = client::Client::new(&lab.powershell_urls()[0], &user, &password);
    // Every request carries a fresh AP-REQ (the face keeps no context per connection); the
    // contexts are kept to check the server's mutual-authentication answer.
    let contexts: Arc<Mutex<Vec<ClientCtx>>> = Arc::default();
    let (cred2, ctxs) = (cred.clone(), contexts.clone());
    c.authorization = Some(Box::new(move || {
        let (ctx, token) = client_token(&cred2);
        ctxs.lock().unwrap().push(ctx);
        format!("Kerberos {}", easgate_psrp::clixml::base64_encode(&token))
    }));
    c.open().await.expect("a shell opens under Kerberos");
    let answer = c
        .last_www_authenticate
        .clone()
        .expect("a mutual-auth answer");
    let reply = answer
        .strip_prefix("Kerberos ")
        .unwrap_or_else(|| panic!("WWW-Authenticate {answer:?}"));
    let reply = easgate_psrp::clixml::base64_decode(reply).expect("base64 AP-REP");
    {
        let mut ctxs = contexts.lock().unwrap();
        let last = ctxs.last_mut().expect("a context");
        assert!(
            last.step(Some(&reply), None)
                .expect("AP-REP verifies")
                .is_none()
        );
        assert!(last.is_complete(), "mutual authentication completed");
    }
    let pipeline = easgate_psrp::CreatePipeline::single(
        easgate_psrp::Command::cmdlet("Get-MobileDevice").param("ResultSize", "Unlimited"),
    );
    let o = c.run(&pipeline, true).await.expect("Get-MobileDevice runs");
    assert_eq!(o.count, 25);
    c.close().await.expect("closes");

    // A token that is no ticket, and a Negotiate without any: 401 offering every package.
    for header in ["Kerberos AAAA", "Negotiate"] {
        let r = reqwest::Client::new()
            .post(&lab.powershell_urls()[0])
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
