//! NTLM on the lab's `/PowerShell/` face, proved by an independent client: pypsrp (PyPI, with
//! pyspnego's NTLM) signs in as the lab's account in both name forms, seals every envelope
//! (encryption="auto" over HTTP) and lists the devices; a wrong password is refused. Over https
//! with Extended Protection required, pypsrp's own channel binding (its hash of the lab's
//! certificate) is accepted and a sign-in without one is refused.

use serde_json::Value;

use crate::powershell::{pypsrp_available, script};

/// Runs one case of the client script with NTLM against CAS 0, as `user`/`password`.
async fn pypsrp(lab: &easgate_lab::Lab, user: &str, password: &str, case: &str) -> Value {
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(script())
        .args([lab.powershell_urls()[0].as_str(), user, password, case])
        .env("PYPSRP_AUTH", "ntlm");
    crate::powershell::run_client(cmd, case).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pypsrp_signs_in_over_ntlm_seals_and_lists_and_a_wrong_password_is_refused() {
    if !pypsrp_available(
        "pypsrp_signs_in_over_ntlm_seals_and_lists_and_a_wrong_password_is_refused",
    ) {
        return;
    }
    let lab = crate::lab(150).await;
    let (upn, password) = lab.powershell_account();
    let down_level = format!("LAB\\{}", upn.split('@').next().unwrap());
    for user in [upn.as_str(), down_level.as_str()] {
        let listed = pypsrp(&lab, user, &password, "list").await;
        assert_eq!(listed["count"], 150, "{user}: {listed}");
        assert_eq!(listed["had_errors"], false, "{user}: {listed}");
    }
    let refused = pypsrp(&lab, &upn, &password, "wrong-password").await;
    assert_eq!(refused["opened"], false, "{refused}");
    assert_eq!(refused["error"], "AuthenticationError", "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_requiring_extended_protection_pypsrps_binding_passes_and_none_is_refused() {
    let test =
        "over_https_requiring_extended_protection_pypsrps_binding_passes_and_none_is_refused";
    if !pypsrp_available(test) {
        return;
    }
    let lab = easgate_lab::Lab::start(easgate_lab::LabOptions {
        cas_tls: true,
        extended_protection: easgate_lab::ExtendedProtection::Require,
        ..crate::options(20)
    })
    .await
    .expect("lab starts");
    let ca = std::env::temp_dir().join(format!("easgate-lab-ep-ca-{}.pem", std::process::id()));
    std::fs::write(&ca, lab.tls_ca_pem().unwrap()).unwrap();
    let (upn, password) = lab.powershell_account();
    let run = |cbt: &str, case: &str| {
        let mut cmd = std::process::Command::new("python3");
        cmd.arg(script())
            .args([lab.powershell_urls()[0].as_str(), &upn, &password, case])
            .env("PYPSRP_AUTH", "ntlm")
            .env("PYPSRP_CA", &ca)
            .env("PYPSRP_CBT", cbt);
        cmd
    };
    let listed = crate::powershell::run_client(run("1", "list"), "list").await;
    assert_eq!(listed["count"], 20, "{listed}");
    // The right password, no binding: refused as IIS refuses it (401), which pypsrp reports
    // as it reports a wrong password.
    let refused = crate::powershell::run_client(run("0", "refused"), "refused").await;
    assert_eq!(refused["opened"], false, "{refused}");
    assert_eq!(refused["error"], "AuthenticationError", "{refused}");
    let _ = std::fs::remove_file(&ca);
}
