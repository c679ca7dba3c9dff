//! `easgate policy diff`: a candidate policy against the last stored inventory, through the
//! real binary, after a real full sync of a lab. It must ask Exchange and Intune nothing and
//! leave the store as it was.

use std::path::Path;
use std::time::Duration;

use crate::support::lab::{exempt_group, sync_lab, write_config};
use crate::support::{easgate_json, easgate_within, repo_file, succeeded, wasm_path};

/// How long one `easgate` command may take.
const LIMIT: Duration = Duration::from_secs(120);

/// The bytes of the store's database and WAL: what a writer would change.
fn store_bytes(data: &Path) -> Vec<Vec<u8>> {
    ["easgate.db", "easgate.db-wal"]
        .iter()
        .map(|file| std::fs::read(data.join(file)).unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stricter_policy_diff_reports_the_changes_and_touches_nothing() {
    let lab = sync_lab(300).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&lab, dir.path(), 8);
    let config = config.to_str().unwrap().to_owned();
    let out = easgate_within(LIMIT, &["sync", "--config", &config, "--full"]).await;
    succeeded(&out);

    let wasm = dir.path().join("byod-strict.wasm");
    std::fs::copy(wasm_path("byod_strict.wasm"), &wasm).unwrap();
    std::fs::copy(
        repo_file("plugins/examples/byod-strict/byod-strict.toml"),
        dir.path().join("byod-strict.toml"),
    )
    .unwrap();
    let data = dir.path().join("data");
    let before = store_bytes(&data);
    lab.control().reset_counters();

    // The built-in policy that decided the stored verdicts finds nothing to change.
    let same = easgate_json(
        LIMIT,
        &[
            "policy",
            "diff",
            "builtin:access-policy",
            "--config",
            &config,
            "--json",
        ],
    )
    .await;
    assert_eq!(same["devices"], 300, "{same}");
    assert_eq!(same["changes"].as_array().unwrap().len(), 0, "{same}");
    assert_eq!(same["commands"].as_array().unwrap().len(), 0, "{same}");

    let diff = easgate_json(
        LIMIT,
        &[
            "policy",
            "diff",
            wasm.to_str().unwrap(),
            "--config",
            &config,
            "--json",
        ],
    )
    .await;
    let changes = diff["changes"].as_array().unwrap();
    assert!(!changes.is_empty(), "{diff}");
    // byod-strict allows a subset of what the built-in allows, never quarantines, and its
    // manifest exempts the Outlook app (app protection policies cover it).
    for change in changes {
        if change["to"] == "exempt" {
            assert_eq!(change["reason"], "app-protected", "{change}");
            continue;
        }
        assert_eq!(change["to"], "block", "{change}");
        assert!(
            change["from"] == "allow" || change["from"] == "quarantine",
            "{change}"
        );
    }
    assert_eq!(diff["verdicts"]["quarantine"], 0, "{diff}");
    assert!(changes.iter().any(|c| c["to"] == "block"), "{diff}");
    let commands = diff["commands"].as_array().unwrap();
    assert!(!commands.is_empty(), "{diff}");
    for command in commands {
        assert_eq!(
            command["command"]["CmdletName"], "Set-CASMailbox",
            "{command}"
        );
    }

    // The plain report names the changes too.
    let out = easgate_within(
        LIMIT,
        &[
            "policy",
            "diff",
            wasm.to_str().unwrap(),
            "--config",
            &config,
        ],
    )
    .await;
    let text = succeeded(&out);
    assert!(
        text.contains(&format!("{} devices change verdict", changes.len())),
        "{text}"
    );
    assert!(text.contains("-> block ("), "{text}");

    let counters = lab.control().counters();
    assert!(
        counters.exchange.by_cmdlet.values().all(|c| c.calls == 0),
        "{:?}",
        counters.exchange.by_cmdlet
    );
    assert_eq!(counters.graph.requests, 0);
    assert!(
        before == store_bytes(&data),
        "policy diff changed the store"
    );
}

/// The diff decides with the directory the sync stored: a candidate that exempts a group sees
/// the group memberships of every mailbox's user, also of users with no enrolled device, whom
/// a directory rebuilt from the stored devices does not know (nor any group at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_that_exempts_a_group_changes_exactly_its_members_devices() {
    let lab = sync_lab(600).await;
    let org = crate::support::lab_organization(&lab);
    let graph =
        easgate::graph::GraphClient::new(&org, &crate::support::test_http()).expect("graph");
    let truth = lab.control().truth();
    let users = truth
        .iter()
        .filter_map(|d| d.user_principal_name.as_deref());
    let (group, members) = exempt_group(&graph, users).await;
    let exempted: std::collections::BTreeSet<String> = truth
        .iter()
        .filter(|d| d.mailbox.is_some())
        .filter(|d| {
            d.user_principal_name
                .as_deref()
                .is_some_and(|u| members.contains(&u.to_lowercase()))
        })
        .map(|d| d.identity.to_lowercase())
        .collect();
    // The case a rebuilt directory gets wrong is among them.
    assert!(
        truth
            .iter()
            .any(|d| exempted.contains(&d.identity.to_lowercase())
                && d.managed_device_id.is_none()),
        "no member has an unenrolled device"
    );

    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&lab, dir.path(), 8);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}scope_groups = [\"{group}\"]\n")).unwrap();
    let config = config.to_str().unwrap().to_owned();
    let out = easgate_within(LIMIT, &["sync", "--config", &config, "--full"]).await;
    succeeded(&out);

    let diff = easgate_json(
        LIMIT,
        &[
            "policy",
            "diff",
            "builtin:access-policy",
            "--settings",
            &serde_json::json!({ "excludedGroups": [group] }).to_string(),
            "--config",
            &config,
            "--json",
        ],
    )
    .await;
    assert_eq!(diff["directory"], "stored", "{diff}");
    let changed: std::collections::BTreeSet<String> = diff["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["to"], "exempt", "{c}");
            c["key"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(changed, exempted);
    // Exempt leaves a device's lists as they are: nothing to do on Exchange.
    assert_eq!(diff["commands"], serde_json::json!([]), "{diff}");
}
