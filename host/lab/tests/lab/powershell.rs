//! The remote PowerShell face (`/PowerShell/`): driven by an independent client, pypsrp, in a
//! Python process (what a script of an operator, or any PSRP client, sees), and by the lab's own
//! small client (`tests/powershell/client.rs`) for what pypsrp cannot show: the timeout fault,
//! envelope sizes, the quota, faults of the CAS, signals.
//!
//! Without pypsrp its tests say so on stderr and pass, unless `EASGATE_REQUIRE_POLYGLOT=1`
//! (set by `.ci/test`, which installs it) makes that a failure.

#[path = "../powershell/client.rs"]
mod client;

use std::path::PathBuf;
use std::process::Command;

use easgate_lab::Lab;
use serde_json::{Value, json};

use crate::{Client, lab};

const REQUIRE: &str = "EASGATE_REQUIRE_POLYGLOT";

pub(crate) fn script() -> PathBuf {
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
pub(crate) fn pypsrp_available(test: &str) -> bool {
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
    run_client(cmd, case).await
}

/// Runs the client script as `cmd` (one `case`, set up by the caller: URL, account, mechanism)
/// and returns the JSON it printed; a failed case fails the test with its output.
pub(crate) async fn run_client(mut cmd: Command, case: &str) -> Value {
    let case = case.to_owned();
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
async fn pypsrp_lists_devices_cut_to_a_few_properties_by_select_object() {
    if !pypsrp_available("pypsrp_lists_devices_cut_to_a_few_properties_by_select_object") {
        return;
    }
    let lab = lab(500).await;
    let r = pypsrp(&lab, "select", &["DeviceId", "identity", "NoSuchProperty"]).await;
    assert_eq!(
        (&r["count"], &r["had_errors"]),
        (&json!(500), &json!(false)),
        "{r}"
    );
    let first = &r["first"];
    assert_eq!(
        first["types"][0],
        "Selected.Microsoft.Exchange.Data.Directory.SystemConfiguration.MobileDevice",
        "{r}"
    );
    let props = first["props"].as_object().unwrap();
    let mut names: Vec<&str> = props.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["DeviceId", "Identity", "NoSuchProperty"], "{r}");
    assert!(props["NoSuchProperty"].is_null(), "{r}");
    let by_cmdlet = &lab.control().counters().exchange.by_cmdlet;
    assert_eq!(by_cmdlet["Get-MobileDevice"].selected, 1);

    // A restricted endpoint's proxy takes only `Get-Command`'s properties.
    lab.control()
        .set_powershell_select_object(easgate_lab::SelectObject::CommandPropertiesOnly);
    let r = pypsrp(&lab, "select", &["Name", "DeviceId"]).await;
    assert_eq!(
        (&r["count"], &r["had_errors"]),
        (&json!(0), &json!(true)),
        "{r}"
    );
    assert_eq!(
        r["errors"][0]["fq_error"], "ParameterArgumentValidationError,Select-Object",
        "{r}"
    );
    assert_eq!(r["errors"][0]["activity"], "Select-Object", "{r}");
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("\"DeviceId\" does not belong to the set")),
        "{r}"
    );

    // A session configuration without it refuses the pipeline, naming the command.
    lab.control()
        .set_powershell_select_object(easgate_lab::SelectObject::Absent);
    let r = pypsrp(&lab, "select", &["DeviceId"]).await;
    assert_eq!(
        (&r["count"], &r["had_errors"]),
        (&json!(0), &json!(true)),
        "{r}"
    );
    assert_eq!(
        r["errors"][0]["fq_error"], "CommandNotFoundException",
        "{r}"
    );
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("'Select-Object'")),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pypsrp_asks_get_command_which_role_cmdlets_the_account_has() {
    if !pypsrp_available("pypsrp_asks_get_command_which_role_cmdlets_the_account_has") {
        return;
    }
    let lab = lab(20).await;
    let names = ["Get-MobileDevice", "Set-CASMailbox", "Remove-Mailbox"];
    let r = pypsrp(&lab, "get-command", &names).await;
    // Remove-Mailbox is no role cmdlet of the lab's account.
    assert_eq!(
        r["names"],
        json!(["Get-MobileDevice", "Set-CASMailbox"]),
        "{r}"
    );
    assert_eq!(
        r["types"][0], "System.Management.Automation.CmdletInfo",
        "{r}"
    );
    assert_eq!(r["errors"].as_array().map(Vec::len), Some(1), "{r}");

    // The role trimmed of Set-CASMailbox: Get-Command no longer finds it, and it cannot run.
    lab.control().set_powershell_role_lacks(&["set-casmailbox"]);
    let r = pypsrp(&lab, "get-command", &names).await;
    assert_eq!(r["names"], json!(["Get-MobileDevice"]), "{r}");
    assert_eq!(r["state"], "4", "completed, the errors written: {r}");
    let errors = r["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{r}");
    assert_eq!(
        errors[0]["fq_error"],
        "CommandNotFoundException,Microsoft.PowerShell.Commands.GetCommandCommand",
        "{r}"
    );
    assert!(
        errors[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("'Set-CASMailbox'")),
        "{r}"
    );
    let r = pypsrp(&lab, "allow-device", &["nobody", "DEV1"]).await;
    assert_eq!(
        r["set_errors"][0]["fq_error"], "CommandNotFoundException",
        "{r}"
    );
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

fn ps_client(lab: &Lab, cas: usize) -> client::Client {
    let (user, password) = lab.powershell_account();
    client::Client::new(&lab.powershell_urls()[cas], &user, &password)
}

fn cmdlet(name: &str, params: &[(&str, easgate_psrp::Value)]) -> easgate_psrp::CreatePipeline {
    let mut c = easgate_psrp::Command::cmdlet(name);
    for (k, v) in params {
        c = c.param(*k, v.clone());
    }
    easgate_psrp::CreatePipeline::single(c)
}

#[tokio::test]
async fn an_idle_receive_answers_the_wsman_timeout_fault_after_operation_timeout() {
    let lab = lab(20).await;
    let mut c = ps_client(&lab, 0);
    c.open().await.expect("opens");
    let started = std::time::Instant::now();
    let f = c
        .receive(None, "PT0.700S")
        .await
        .expect_err("nothing to receive");
    let waited = started.elapsed();
    assert_eq!(
        (f.status, f.subcode.as_str(), f.code.as_str()),
        (500, "w:TimedOut", "2150858793"),
        "{f:?}"
    );
    assert!(
        waited >= std::time::Duration::from_millis(650)
            && waited < std::time::Duration::from_secs(5),
        "{waited:?}"
    );
    c.close().await.expect("closes");
    assert_eq!(lab.control().powershell_shells(), 0);
}

#[tokio::test]
async fn responses_stay_within_the_clients_max_envelope_size() {
    let lab = lab(300).await;
    let mut c = ps_client(&lab, 0);
    c.max_envelope = 8192;
    c.open().await.expect("opens");
    let o = c
        .run(
            &cmdlet("Get-MobileDevice", &[("ResultSize", "Unlimited".into())]),
            true,
        )
        .await
        .expect("runs");
    assert_eq!(o.count, 300);
    assert_eq!(
        o.state.as_ref().map(|s| s.0),
        Some(easgate_psrp::PipelineState::Completed)
    );
    assert!(
        o.largest_response <= 8192,
        "a response of {} bytes",
        o.largest_response
    );
    let first = easgate_psrp::from_clixml(&o.outputs[0]).unwrap();
    assert!(first.prop("DeviceId").and_then(|v| v.as_str()).is_some());

    // A large envelope carries many fragments, each with its own element: still within it.
    let mut big = ps_client(&lab, 0);
    big.max_envelope = 64 * 1024;
    big.open().await.expect("opens");
    let o = big
        .run(
            &cmdlet("Get-MobileDevice", &[("ResultSize", "Unlimited".into())]),
            false,
        )
        .await
        .expect("runs");
    assert_eq!(o.count, 300);
    assert!(
        o.largest_response <= 64 * 1024,
        "a response of {} bytes",
        o.largest_response
    );
    assert!(
        o.largest_response > 32 * 1024,
        "responses are filled: {}",
        o.largest_response
    );

    // Without -ResultSize: Exchange's first 1000 and its warning (here all 300, no warning);
    // with a smaller one, the warning that more exist.
    let o = c
        .run(
            &cmdlet(
                "Get-MobileDevice",
                &[("ResultSize", easgate_psrp::Value::I32(10))],
            ),
            false,
        )
        .await
        .unwrap();
    assert_eq!(o.count, 10);
    assert!(
        o.warnings[0].contains("There are more results available"),
        "{:?}",
        o.warnings
    );
}

#[tokio::test]
async fn a_wrong_resource_uri_path_or_password_answers_as_exchange_does() {
    let lab = lab(20).await;
    let mut c = ps_client(&lab, 0);
    c.resource = "http://schemas.microsoft.com/powershell/Microsoft.PowerShell".into();
    let f = c.open().await.expect_err("not Exchange's configuration");
    assert_eq!(f.subcode, "w:DestinationUnreachable", "{f:?}");
    assert!(
        f.message
            .contains("Microsoft.PowerShell) was not found in the WS-Management catalog"),
        "{f:?}"
    );

    let http = reqwest::Client::new();
    let r = http
        .post(&lab.powershell_urls()[0])
        .body("<x/>")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let offered: Vec<_> = r
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(offered, ["Negotiate", "Kerberos", "Basic realm=\"\""]);
    let (user, _) = lab.powershell_account();
    let r = http
        .post(&lab.powershell_urls()[0])
        .basic_auth(&user, Some("wrong"))
        .body("<x/>")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn the_user_load_quota_refuses_commands_beyond_it() {
    let lab = lab(20).await;
    lab.control()
        .set_powershell_limits(easgate_lab::PowerShellLimits {
            user_load_quota: Some(easgate_lab::UserLoadQuota {
                requests: 2,
                seconds: 60,
            }),
            ..Default::default()
        });
    let mut c = ps_client(&lab, 0);
    c.open().await.unwrap();
    for _ in 0..2 {
        c.run(&cmdlet("Get-ExchangeServer", &[]), false)
            .await
            .expect("within the quota");
    }
    let f = c
        .run(&cmdlet("Get-ExchangeServer", &[]), false)
        .await
        .expect_err("over the quota");
    assert_eq!(f.subcode, "w:QuotaLimit", "{f:?}");
    assert!(
        f.message
            .contains("The user load quota of 2 requests per 60 seconds has been exceeded"),
        "{f:?}"
    );
    lab.control().set_powershell_limits(Default::default());
    c.run(&cmdlet("Get-ExchangeServer", &[]), false)
        .await
        .expect("quota lifted");
}

#[tokio::test]
async fn cas_faults_apply_to_the_powershell_face() {
    let lab = lab(20).await;
    let mut c = ps_client(&lab, 1);
    c.open().await.unwrap();
    lab.control().fail_cas(1, 503).unwrap();
    let f = c
        .run(&cmdlet("Get-ExchangeServer", &[]), false)
        .await
        .expect_err("failing CAS");
    assert_eq!(f.status, 503);
    lab.control().heal_cas(1).unwrap();
    let o = c
        .run(&cmdlet("Get-ExchangeServer", &[]), true)
        .await
        .expect("healed");
    assert_eq!(o.count, 2);

    // A stopped CAS loses its shells: after a restart the shell is gone.
    lab.control().stop_cas(1).await.unwrap();
    assert!(
        c.run(&cmdlet("Get-ExchangeServer", &[]), false)
            .await
            .is_err()
    );
    lab.control().start_cas(1).await.unwrap();
    let f = c
        .run(&cmdlet("Get-ExchangeServer", &[]), false)
        .await
        .expect_err("shell gone");
    assert_eq!(f.subcode, "w:InvalidSelectors", "{f:?}");
    assert_eq!(lab.control().powershell_shells(), 0);
}

#[tokio::test]
async fn ctrl_c_stops_a_running_pipeline() {
    let lab = lab(20).await;
    lab.control()
        .set_latency(easgate_lab::LatencyModel::uniform(3_000, 0));
    let mut c = ps_client(&lab, 0);
    c.open().await.unwrap();
    let id = c.start(&cmdlet("Get-MobileDevice", &[])).await.unwrap();
    c.signal(&id, "http://schemas.microsoft.com/powershell/signal/crtl_c")
        .await
        .expect("signalled");
    let started = std::time::Instant::now();
    let o = c.finish(&id, false).await.unwrap();
    assert_eq!(
        o.state.map(|s| s.0),
        Some(easgate_psrp::PipelineState::Stopped)
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "stopped at once"
    );
    c.signal(
        &id,
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/terminate",
    )
    .await
    .expect("terminated");
    c.close().await.unwrap();
}

#[tokio::test]
async fn set_ad_server_settings_is_accepted_as_on_premises_sessions_send_it() {
    let lab = lab(20).await;
    let mut c = ps_client(&lab, 0);
    c.open().await.unwrap();
    let o = c
        .run(
            &cmdlet("Set-ADServerSettings", &[("ViewEntireForest", true.into())]),
            false,
        )
        .await
        .unwrap();
    assert_eq!(
        (o.count, o.state.map(|s| s.0)),
        (0, Some(easgate_psrp::PipelineState::Completed))
    );
    let o = c
        .run(
            &cmdlet("Set-ADServerSettings", &[("Bogus", true.into())]),
            false,
        )
        .await
        .unwrap();
    let (state, error) = o.state.unwrap();
    assert_eq!(state, easgate_psrp::PipelineState::Failed);
    assert_eq!(
        error.unwrap().fully_qualified_error_id,
        "NamedParameterNotFound,Set-ADServerSettings"
    );
    // The REST face (Exchange Online) has no such cmdlet.
    let e = Client::new(&lab)
        .await
        .invoke("Set-ADServerSettings", json!({"ViewEntireForest": true}))
        .await
        .unwrap_err();
    assert_eq!(e.status, 400);
}

#[tokio::test]
async fn a_write_through_rest_is_seen_through_powershell() {
    let lab = lab(100).await;
    let rest = Client::new(&lab).await;
    let truth = lab.control().truth();
    let dev = truth
        .iter()
        .find(|t| t.mailbox.is_some() && !t.in_block_list)
        .unwrap();
    let mailbox = dev.mailbox.clone().unwrap();
    rest.invoke(
        "Set-CASMailbox",
        json!({"Identity": mailbox, "ActiveSyncBlockedDeviceIDs": {"@odata.type": "#Exchange.GenericHashTable", "Add": [dev.device_id]}}),
    )
    .await
    .expect("REST write");
    let mut c = ps_client(&lab, 1);
    c.open().await.unwrap();
    let o = c
        .run(
            &cmdlet(
                "Get-MobileDevice",
                &[("Identity", dev.device_id.as_str().into())],
            ),
            true,
        )
        .await
        .unwrap();
    let d = easgate_psrp::from_clixml(&o.outputs[0]).unwrap();
    assert_eq!(
        d.prop("DeviceAccessState").and_then(|v| v.as_str()),
        Some("Blocked")
    );
    assert_eq!(
        d.prop("DeviceAccessStateReason").and_then(|v| v.as_str()),
        Some("Individual")
    );
}

#[tokio::test]
async fn get_mailbox_lists_the_mailbox_languages_on_both_faces() {
    let lab = lab(100).await;
    let truth = lab.control().truth();
    let mut mailboxes: Vec<String> = truth.iter().filter_map(|t| t.mailbox.clone()).collect();
    mailboxes.sort();
    mailboxes.dedup();
    let (set, unset) = (&mailboxes[0], &mailboxes[1]);
    lab.control()
        .set_mailbox_languages(set, &["fr-CA", "en-US"])
        .unwrap();
    lab.control().set_mailbox_languages(unset, &[]).unwrap();

    let rest = Client::new(&lab).await;
    let mut c = ps_client(&lab, 0);
    c.open().await.unwrap();
    for (mailbox, want) in [(set, vec!["fr-CA", "en-US"]), (unset, vec![])] {
        let found = rest
            .invoke("Get-Mailbox", json!({"Identity": mailbox}))
            .await
            .unwrap();
        assert_eq!(found[0]["Languages"], json!(want), "REST {mailbox}");

        let o = c
            .run(
                &cmdlet("Get-Mailbox", &[("Identity", mailbox.as_str().into())]),
                true,
            )
            .await
            .unwrap();
        let m = easgate_psrp::from_clixml(&o.outputs[0]).unwrap();
        let languages: Vec<&str> = m
            .prop("Languages")
            .and_then(|v| v.as_list())
            .unwrap_or_else(|| panic!("PowerShell {mailbox}: no Languages list"))
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(languages, want, "PowerShell {mailbox}");
    }
}
