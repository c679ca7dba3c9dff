//! `easgate sync --dry-run` through the real binary: what it lists is exactly what the real
//! run then changes on the lab, device by device, in Exchange's words.

use std::collections::BTreeMap;
use std::time::Duration;

use easgate_lab::ComplianceState;

use crate::support::lab::{sync_lab, write_config_over};
use crate::support::{Transport, easgate_json, easgate_within, succeeded};

/// How long one `easgate` command may take.
const LIMIT: Duration = Duration::from_secs(120);

/// Every partnership's `Identity` (as Exchange spells it) and its access state on the lab.
fn states(lab: &easgate_lab::Lab) -> BTreeMap<String, String> {
    lab.control()
        .truth()
        .into_iter()
        .map(|d| (d.identity, d.access_state.as_str().to_owned()))
        .collect()
}

// The bug: an organization synced with its default left at Allow, then a full dry run that
// would switch the default to Quarantine listed only the few devices whose lists change, not
// the hundreds the switch quarantines, and said "held" with exit status 3.
over_transports!(a_dry_run_lists_exactly_what_the_real_run_then_changes);
async fn a_dry_run_lists_exactly_what_the_real_run_then_changes(transport: Transport) {
    let lab = sync_lab(600).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_over(&lab, dir.path(), 8, transport);
    let unguarded = std::fs::read_to_string(&config).unwrap();
    // Synced once without managing the default: the lists follow the verdicts, and the devices
    // the policy quarantines stay allowed by the default.
    std::fs::write(&config, format!("{unguarded}manage_org_default = false\n")).unwrap();
    let path = config.to_str().unwrap().to_owned();
    let first = easgate_json(LIMIT, &["sync", "--config", &path, "--full", "--json"]).await;
    assert_eq!(first["outcome"], "succeeded", "{first}");
    // Then a few enrolled, allowed devices fall out of compliance: list edits besides the switch.
    let noncompliant: Vec<String> = lab
        .control()
        .truth()
        .into_iter()
        .filter(|d| d.in_allow_list && d.managed_device_id.is_some())
        .take(5)
        .map(|d| d.device_id)
        .collect();
    assert_eq!(noncompliant.len(), 5);
    for id in &noncompliant {
        lab.control()
            .set_compliance(id, ComplianceState::Noncompliant)
            .unwrap();
    }

    // The default guard (10 %, at least 25) would hold the real run.
    let guarded = unguarded.replace(
        "max_new_restrictions = { percent = 100.0, floor = 1000000 }",
        "",
    );
    std::fs::write(&config, &guarded).unwrap();
    lab.control().reset_counters();
    let before = states(&lab);
    let out = easgate_within(LIMIT, &["sync", "--config", &path, "--full", "--dry-run"]).await;
    // A dry run that a real run would hold still succeeds: exit status 0.
    let text = succeeded(&out);
    assert!(text.contains("(what-if) succeeded"), "{text}");
    assert!(
        text.contains("would change the organization default: Allow -> Quarantine"),
        "{text}"
    );
    assert!(
        text.contains("a real run would be held for approval"),
        "{text}"
    );
    let report = easgate_json(
        LIMIT,
        &["sync", "--config", &path, "--full", "--dry-run", "--json"],
    )
    .await;
    assert_eq!(report["outcome"], "succeeded", "{report}");
    let dry_run = &report["dry_run"];
    assert_eq!(dry_run["would_hold"], true, "{report}");
    // The account's roles: asked of its remote PowerShell session, not of the REST admin API.
    match transport {
        Transport::Rest => assert_eq!(dry_run["roles"]["result"], "not-checked", "{report}"),
        Transport::PowerShell => {
            assert_eq!(dry_run["roles"]["result"], "complete", "{report}");
            assert_eq!(
                dry_run["roles"]["checked"],
                serde_json::json!(["Set-CASMailbox", "Set-ActiveSyncOrganizationSettings"]),
                "{report}"
            );
        }
    }
    let listed: BTreeMap<String, (String, String)> = dry_run["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let text = |key: &str| c[key].as_str().unwrap().to_owned();
            (text("identity"), (text("from"), text("to")))
        })
        .collect();
    let by = |cause: &str| {
        dry_run["changes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["by"] == cause)
            .count()
    };
    assert!(by("org-default") > 25, "{report}");
    assert_eq!(by("mailbox-lists"), noncompliant.len(), "{report}");
    // Every line of the text names a device the JSON lists, as Exchange spells it.
    let lines = text
        .lines()
        .filter(|l| l.starts_with("  would change ") && l.contains(" -> "))
        .filter(|l| !l.contains("organization default: Allow"))
        .count();
    assert_eq!(lines, listed.len(), "{text}");
    // Nothing was applied.
    assert_eq!(lab.control().counters().calls("Set-CASMailbox"), 0);
    assert_eq!(
        lab.control()
            .counters()
            .calls("Set-ActiveSyncOrganizationSettings"),
        0
    );
    assert_eq!(states(&lab), before);

    // The real run (unguarded, so that it applies) changes exactly the listed devices, to the
    // listed states.
    std::fs::write(&config, &unguarded).unwrap();
    let real = easgate_json(LIMIT, &["sync", "--config", &path, "--full", "--json"]).await;
    assert_eq!(real["outcome"], "succeeded", "{real}");
    let after = states(&lab);
    let changed: BTreeMap<String, (String, String)> = before
        .iter()
        .filter_map(|(identity, from)| {
            let to = after
                .get(identity)
                .cloned()
                .unwrap_or_else(|| "Removed".into());
            (&to != from).then(|| (identity.clone(), (from.clone(), to)))
        })
        .collect();
    assert_eq!(listed, changed);
}

/// Over remote PowerShell a dry run asks the session which of the cmdlets a real run may send
/// the account's management roles hold, and names the ones they lack; the real run then fails
/// exactly those commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_names_the_cmdlets_the_accounts_roles_lack() {
    let lab = sync_lab(200).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_over(&lab, dir.path(), 4, Transport::PowerShell);
    let path = config.to_str().unwrap().to_owned();
    // A role trimmed one entry too many.
    lab.control().set_powershell_role_lacks(&["Set-CASMailbox"]);

    let out = easgate_within(LIMIT, &["sync", "--config", &path, "--full", "--dry-run"]).await;
    let text = succeeded(&out);
    assert!(
        text.contains(
            "! the account's management roles lack Set-CASMailbox: a real run's commands through \
             them would fail"
        ),
        "{text}"
    );
    assert!(
        text.contains("New-ManagementRoleEntry \"<role>\\Set-CASMailbox\""),
        "{text}"
    );
    let report = easgate_json(
        LIMIT,
        &["sync", "--config", &path, "--full", "--dry-run", "--json"],
    )
    .await;
    assert_eq!(
        report["dry_run"]["roles"],
        serde_json::json!({"result": "lacking", "missing": ["Set-CASMailbox"]}),
        "{report}"
    );
    assert_eq!(lab.control().counters().calls("Set-CASMailbox"), 0);

    // As predicted: the real run's mailbox edits fail, naming the cmdlet and the fix.
    let real = easgate_within(LIMIT, &["sync", "--config", &path, "--full"]).await;
    let text = String::from_utf8_lossy(&real.stdout);
    assert!(!real.status.success(), "{text}");
    assert!(
        text.contains("management roles do not include Set-CASMailbox"),
        "{text}"
    );

    // The entry put back, the next dry run finds every cmdlet.
    lab.control().set_powershell_role_lacks(&[]);
    let report = easgate_json(
        LIMIT,
        &["sync", "--config", &path, "--full", "--dry-run", "--json"],
    )
    .await;
    assert_eq!(report["dry_run"]["roles"]["result"], "complete", "{report}");
}
