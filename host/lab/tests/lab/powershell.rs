//! The remote PowerShell face (`/PowerShell/`) driven by an independent client, pypsrp, in a
//! Python process: what a script of an operator (or any PSRP client) sees.
//!
//! Without pypsrp the tests say so on stderr and pass, unless `EASGATE_REQUIRE_POLYGLOT=1`
//! (set by `.ci/test`, which installs it) makes that a failure.

use std::path::PathBuf;
use std::process::Command;

use easgate_lab::Lab;
use serde_json::{Value, json};

use crate::{Client, lab};

const REQUIRE: &str = "EASGATE_REQUIRE_POLYGLOT";

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/powershell/pypsrp_client.py")
}

/// Why pypsrp cannot run here, or `None` when it can.
fn missing_pypsrp() -> Option<String> {
    match Command::new("python3")
        .args(["-c", "import pypsrp"])
        .output()
    {
        Err(e) => Some(format!("python3 cannot run: {e}")),
        Ok(o) if !o.status.success() => Some(format!(
            "pypsrp is not installed ({})",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(_) => None,
    }
}

/// Whether the test can run; panics when it cannot but must.
fn pypsrp_available(test: &str) -> bool {
    match missing_pypsrp() {
        None => true,
        Some(why) if std::env::var(REQUIRE).is_ok_and(|v| v == "1") => {
            panic!("{test}: {why}, and {REQUIRE}=1 requires it (run .ci/install-plugin-toolchains)")
        }
        Some(why) => {
            eprintln!("skipping {test}: {why}");
            false
        }
    }
}

/// Runs one case of the client script against CAS 0 and returns what it printed.
async fn pypsrp(lab: &Lab, case: &str, args: &[&str]) -> Value {
    let url = lab.powershell_urls()[0].clone();
    let (user, password) = lab.powershell_account();
    let mut cmd = Command::new("python3");
    cmd.arg(script())
        .args([url.as_str(), &user, &password, case])
        .args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("joined")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pypsrp case {case} failed ({}):\n{}\n{}",
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("case {case} printed no JSON ({e}): {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pypsrp_lists_ten_thousand_devices_as_exchange_objects() {
    if !pypsrp_available("pypsrp_lists_ten_thousand_devices_as_exchange_objects") {
        return;
    }
    let lab = lab(10_000).await;
    let r = pypsrp(&lab, "list", &[]).await;
    assert_eq!(r["count"], 10_000, "{r}");
    assert_eq!(r["had_errors"], false);
    let first = &r["first"];
    assert_eq!(
        first["types"][0],
        "Deserialized.Microsoft.Exchange.Data.Directory.SystemConfiguration.MobileDevice"
    );
    let props = &first["props"];
    let truth = lab.control().truth();
    let mut ids: Vec<&str> = truth.iter().map(|t| t.device_id.as_str()).collect();
    ids.sort_unstable();
    assert!(
        ids.binary_search(&props["DeviceId"].as_str().unwrap())
            .is_ok(),
        "{props}"
    );
    assert_eq!(first["to_string"], props["Identity"]);
    assert!(
        props["FirstSyncTime"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{props}"
    );
    assert!(matches!(
        props["DeviceAccessState"].as_str(),
        Some("Allowed" | "Blocked" | "Quarantined" | "DeviceDiscovery")
    ));
    assert!(props["IsManaged"].is_boolean(), "{props}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pypsrp_reads_and_edits_a_cas_mailbox_that_exchange_then_enforces() {
    if !pypsrp_available("pypsrp_reads_and_edits_a_cas_mailbox_that_exchange_then_enforces") {
        return;
    }
    let lab = lab(400).await;
    // A device that is not allowed, whose owner is still there.
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

    let r = pypsrp(&lab, "get-casmailbox", &[&mailbox]).await;
    let o = &r["objects"][0];
    assert_eq!(
        o["types"][0], "Deserialized.Microsoft.Exchange.Data.Directory.Management.CASMailbox",
        "{r}"
    );
    assert_eq!(o["props"]["PrimarySmtpAddress"], mailbox.as_str());

    let r = pypsrp(&lab, "allow-device", &[&mailbox, &dev.device_id]).await;
    assert_eq!(r["set_errors"], json!([]), "{r}");
    let allowed = &r["mailbox"]["props"]["ActiveSyncAllowedDeviceIDs"];
    assert!(
        allowed["types"][0]
            .as_str()
            .unwrap()
            .contains("MultiValuedProperty"),
        "{r}"
    );
    assert_eq!(allowed["items"], json!([dev.device_id]), "{r}");
    assert_eq!(r["device"]["props"]["DeviceAccessState"], "Allowed", "{r}");
    assert_eq!(
        r["device"]["props"]["DeviceAccessStateReason"], "Individual",
        "{r}"
    );

    // The REST face sees the same organization.
    let rest = Client::new(&lab).await;
    let devices = rest
        .invoke("Get-MobileDevice", json!({"Identity": dev.device_id}))
        .await
        .expect("REST answers");
    assert_eq!(devices[0]["DeviceAccessState"], "Allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pypsrp_meets_exchange_refusals() {
    if !pypsrp_available("pypsrp_meets_exchange_refusals") {
        return;
    }
    let lab = lab(200).await;

    let r = pypsrp(&lab, "script", &[]).await;
    assert_eq!(r["had_errors"], true, "{r}");
    assert_eq!(r["output"], 0);
    assert_eq!(r["errors"][0]["fq_error"], "ScriptsNotAllowed", "{r}");
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("no-language mode"),
        "{r}"
    );

    let r = pypsrp(&lab, "unknown-parameter", &[]).await;
    assert_eq!(r["had_errors"], true, "{r}");
    assert_eq!(
        r["errors"][0]["message"],
        "A parameter cannot be found that matches parameter name 'Bogus'."
    );
    assert_eq!(
        r["errors"][0]["fq_error"],
        "NamedParameterNotFound,Get-CASMailbox"
    );

    // Exchange writes a task's error and completes the pipeline (pypsrp's `had_errors` only
    // reports a failed pipeline).
    let r = pypsrp(&lab, "not-found", &[]).await;
    assert_eq!(
        (r["had_errors"].clone(), r["output"].clone()),
        (json!(false), json!(0)),
        "{r}"
    );
    let fq = r["errors"][0]["fq_error"].as_str().unwrap();
    assert!(fq.contains("ManagementObjectNotFoundException"), "{r}");
    assert_eq!(
        r["errors"][0]["reason"],
        "ManagementObjectNotFoundException"
    );

    let r = pypsrp(&lab, "wrong-password", &[]).await;
    assert_eq!(r["opened"], false, "{r}");
    assert_eq!(r["error"], "AuthenticationError");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pypsrp_reaches_the_shell_limit_and_gets_a_shell_once_one_closes() {
    if !pypsrp_available("pypsrp_reaches_the_shell_limit_and_gets_a_shell_once_one_closes") {
        return;
    }
    let lab = lab(50).await;
    assert_eq!(lab.control().powershell_limits().max_shells_per_user, 18);
    let r = pypsrp(&lab, "shell-limit", &["18"]).await;
    assert_eq!(r["opened"], 18, "{r}");
    assert_eq!(r["reopened"], true);
    let reason = r["refused"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("maximum number of 18 concurrent shells"),
        "{r}"
    );
    assert_eq!(
        lab.control().powershell_shells(),
        0,
        "the client closed every shell"
    );
}
