//! Policy settings per organization (`[organization.policy]`), against two real labs (two
//! tenants, each with its own group ids): one organization's broken settings fail its own
//! syncs only and a fixed file recovers it without a restart; two organizations with their own
//! settings of the same built-in policy each decide by theirs.

use std::path::Path;
use std::time::Duration;

use easgate::graph::GraphClient;
use easgate::model::inventory::Verdict;
use easgate_lab::{DeviceTruth, Lab, LabOptions, LatencyModel};
use serde_json::Value;

use crate::support::daemon::{Easgate, add_admin, post, sample, scrape, status};
use crate::support::lab::{assert_enforced, exempt_group, expected};
use crate::support::{easgate_within, lab_organization, test_http};

const LIMIT: Duration = Duration::from_secs(240);

/// A lab of `devices` devices whose data (group ids included) comes from `seed`.
async fn tenant(devices: usize, seed: u64) -> Lab {
    Lab::start(LabOptions {
        devices,
        cas: 1,
        seed,
        latency: LatencyModel::uniform(1, 0),
        ..Default::default()
    })
    .await
    .expect("the lab starts")
}

/// `lab`'s organization named `name`, unguarded, with `extra` (more `[organization.*]`
/// sections) after it.
fn organization(lab: &Lab, name: &str, extra: &str) -> String {
    organization_text(
        lab.connector_config(&easgate_lab::SecretSource::Inline),
        name,
        extra,
    )
}

/// [`organization`] on-premises: Exchange over remote PowerShell, its account's password in
/// `dir/<name>-exchange.pw`.
fn on_premises_organization(lab: &Lab, dir: &Path, name: &str, extra: &str) -> String {
    let password_file = format!("{name}-exchange.pw");
    std::fs::write(dir.join(&password_file), lab.powershell_account().1).unwrap();
    let text = easgate_lab::powershell_connector_config(
        &lab.control().info(),
        name,
        &easgate_lab::SecretSource::Inline,
        &password_file,
    );
    organization_text(text, name, extra)
}

fn organization_text(text: String, name: &str, extra: &str) -> String {
    let text = &text[text.find("[[organization]]").expect("an organization")..];
    let text = text.replace("name = \"contoso\"", &format!("name = \"{name}\""));
    format!(
        "{text}\n[organization.sync]\n\
         max_new_restrictions = {{ percent = 100.0, floor = 1000000 }}\n{extra}\n"
    )
}

/// Each device's identity and whether it is on its mailbox's allow and block lists.
fn lists(lab: &Lab) -> Vec<(String, bool, bool)> {
    let mut lists: Vec<_> = lab
        .control()
        .truth()
        .iter()
        .map(|d| (d.identity.clone(), d.in_allow_list, d.in_block_list))
        .collect();
    lists.sort();
    lists
}

/// The status of organization `name` once `done` holds for it (bounded).
async fn wait_for_org(
    url: &str,
    token: &str,
    name: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    let waited = tokio::time::timeout(LIMIT, async {
        loop {
            let all = status(url, token).await;
            last = all["organizations"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["name"] == name)
                .cloned()
                .expect("the organization is listed");
            if done(&last) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "{name}: no {what}; last status {last}");
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_settings_file_fails_its_organization_only_until_it_is_fixed() {
    let (alpha, beta) = (tenant(300, 11).await, tenant(300, 12).await);
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("alpha-policy.toml");
    // The built-in policy refuses it: a group list must be a list.
    std::fs::write(&settings, "includedGroups = \"not-a-list\"\n").unwrap();
    let config = dir.path().join("easgate.toml");
    std::fs::write(
        &config,
        format!(
            "[sync]\ndata_dir = \"data\"\n\n{}{}",
            organization(
                &alpha,
                "alpha",
                "[organization.policy]\nsettings_file = \"alpha-policy.toml\"\n"
            ),
            organization(&beta, "beta", "")
        ),
    )
    .unwrap();
    let alpha_lists = lists(&alpha);
    let token = "org-policy-token";
    add_admin(&config, token);
    let (daemon, url) = Easgate::run_with_admin(&config, dir.path()).await;

    // beta syncs and converges; alpha's first sync fails, saying why once.
    wait_for_org(&url, token, "beta", "successful sync", |o| {
        o["last_successful_sync"].is_i64() && o["current_run"].is_null()
    })
    .await;
    assert_enforced(&beta, expected);
    let failed = wait_for_org(&url, token, "alpha", "failed attempt", |o| {
        o["last_attempt"]["error"].is_string()
    })
    .await;
    let error = failed["last_attempt"]["error"].as_str().unwrap();
    assert_eq!(error.matches("alpha").count(), 2, "{error}"); // the org, its settings file
    for needle in [
        "organization \"alpha\"",
        &settings.display().to_string(),
        "built-in",
        "configure rejected its settings",
        "includedGroups",
    ] {
        assert!(error.contains(needle), "{needle:?} not in {error}");
    }
    assert_eq!(failed["policy"]["error_kind"], "configure", "{failed}");
    // Regression: the policy's failure showed as `connection: disconnected`. Exchange is
    // reachable; the policy's state is told apart.
    assert_eq!(failed["policy"]["state"], "unavailable", "{failed}");
    let connected = wait_for_org(&url, token, "alpha", "connection", |o| {
        o["connection"] != "unknown"
    })
    .await;
    assert_eq!(connected["connection"], "connected", "{connected}");
    assert_eq!(connected["policy"]["state"], "unavailable", "{connected}");
    assert!(failed["last_successful_sync"].is_null(), "{failed}");
    assert_eq!(failed["recent_runs"][0]["outcome"], "failed", "{failed}");
    assert_eq!(failed["recent_runs"][0]["error"], error, "{failed}");
    // Nothing was done to alpha's Exchange.
    assert_eq!(lists(&alpha), alpha_lists, "alpha's lists were changed");
    let (metrics, text) = scrape(&url, token).await;
    let ready = |org| {
        sample(
            &metrics,
            "easgate_organization_policy_ready",
            &[("org", org)],
        )
    };
    assert_eq!(ready("alpha"), Some(0.0), "{text}");
    assert_eq!(ready("beta"), None, "beta has no policy of its own: {text}");
    // Regression: every retry of the sync counted the same broken settings again.
    for _ in 0..2 {
        let before = status(&url, token).await["organizations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == "alpha")
            .unwrap()["recent_runs"][0]["id"]
            .clone();
        let code = post(
            &url,
            token,
            "/api/v1/organizations/alpha/sync",
            Some(serde_json::json!({ "kind": "quick" })),
        )
        .await;
        assert!(code.is_success(), "{code}");
        wait_for_org(&url, token, "alpha", "another failed attempt", |o| {
            o["recent_runs"][0]["id"] != before && o["current_run"].is_null()
        })
        .await;
    }
    let (metrics, text) = scrape(&url, token).await;
    assert_eq!(
        sample(
            &metrics,
            "easgate_plugin_errors_total",
            &[("org", "alpha"), ("kind", "configure")]
        ),
        Some(1.0),
        "three failed attempts, one failure: {text}"
    );
    assert_eq!(
        sample(
            &metrics,
            "easgate_organization_policy_ready",
            &[("org", "alpha")]
        ),
        Some(0.0),
        "{text}"
    );
    // `easgate status` says it too.
    let out = easgate_within(LIMIT, &["status", "--config", config.to_str().unwrap()]).await;
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        printed.contains("policy error: access policy") && printed.contains("includedGroups"),
        "{printed}"
    );

    // Fixed in place: the watcher puts alpha's policy in place, and alpha converges.
    std::fs::write(&settings, "includedGroups = []\nnotify = true\n").unwrap();
    wait_for_org(&url, token, "alpha", "policy in place", |o| {
        o["policy"]["error"].is_null() && o["policy"]["digest"].is_string()
    })
    .await;
    let code = post(
        &url,
        token,
        "/api/v1/organizations/alpha/sync",
        Some(serde_json::json!({ "kind": "full" })),
    )
    .await;
    assert!(code.is_success(), "{code}");
    wait_for_org(&url, token, "alpha", "successful sync", |o| {
        o["last_successful_sync"].is_i64() && o["current_run"].is_null()
    })
    .await;
    assert_enforced(&alpha, expected);
    let (metrics, text) = scrape(&url, token).await;
    assert_eq!(
        sample(
            &metrics,
            "easgate_organization_policy_ready",
            &[("org", "alpha")]
        ),
        Some(1.0),
        "{text}"
    );
    daemon.stop_cleanly().await;
    alpha.shutdown().await;
    beta.shutdown().await;
}

/// The exempt group of `lab` (its id is the tenant's own) and the identities of the devices
/// its members use, lowercase.
async fn exempt_devices(lab: &Lab) -> (String, std::collections::BTreeSet<String>) {
    let graph = GraphClient::new(&lab_organization(lab), &test_http()).unwrap();
    let truth = lab.control().truth();
    let users = truth
        .iter()
        .filter_map(|d| d.user_principal_name.as_deref());
    let (group, members) = exempt_group(&graph, users).await;
    let devices = truth
        .iter()
        .filter(|d| d.mailbox.is_some())
        .filter(|d| {
            d.user_principal_name
                .as_deref()
                .is_some_and(|u| members.contains(&u.to_lowercase()))
        })
        .map(|d| d.identity.to_lowercase())
        .collect();
    (group, devices)
}

/// Two organizations, one each way an admin may have them: alpha in Exchange Online (REST),
/// beta on-premises (remote PowerShell), each deciding by its own settings in one run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_organizations_decide_by_their_own_settings_of_the_builtin_policy() {
    let (alpha, beta) = (tenant(400, 21).await, tenant(400, 22).await);
    let (alpha_group, alpha_exempt) = exempt_devices(&alpha).await;
    let (beta_group, beta_exempt) = exempt_devices(&beta).await;
    assert_ne!(alpha_group, beta_group, "the tenants' group ids differ");
    assert!(!alpha_exempt.is_empty() && !beta_exempt.is_empty());

    let dir = tempfile::tempdir().unwrap();
    // alpha's settings inline, beta's in a JSON file; each names its own tenant's group.
    std::fs::write(
        dir.path().join("beta-policy.json"),
        serde_json::json!({ "excludedGroups": [beta_group] }).to_string(),
    )
    .unwrap();
    let policy_of = |group: &str, settings: &str| {
        format!("scope_groups = [\"{group}\"]\n[organization.policy]\n{settings}")
    };
    let config = dir.path().join("easgate.toml");
    std::fs::write(
        &config,
        format!(
            "[sync]\ndata_dir = \"data\"\n\n{}{}",
            organization(
                &alpha,
                "alpha",
                &policy_of(
                    &alpha_group,
                    &format!(
                        "plugin = \"access-policy\"\n\
                         settings = {{ excludedGroups = [\"{alpha_group}\"] }}\n"
                    )
                )
            ),
            on_premises_organization(
                &beta,
                dir.path(),
                "beta",
                &policy_of(&beta_group, "settings_file = \"beta-policy.json\"\n")
            ),
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();

    // The dry run decides each organization by its own settings already...
    let exempt_in = |summaries: &str, org: &str| -> u64 {
        summaries
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|s| s["organization"] == org)
            .unwrap_or_else(|| panic!("no summary of {org} in {summaries}"))["verdicts"]["exempt"]
            .as_u64()
            .unwrap()
    };
    let args = ["sync", "--config", config, "--init", "--dry-run", "--json"];
    let dry = easgate_within(LIMIT, &args).await;
    let dry = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert_eq!(exempt_in(&dry, "alpha"), alpha_exempt.len() as u64, "{dry}");
    assert_eq!(exempt_in(&dry, "beta"), beta_exempt.len() as u64, "{dry}");

    // ... and so does the real one, on each tenant's Exchange.
    let real = easgate_within(LIMIT, &["sync", "--config", config, "--full", "--json"]).await;
    let real = String::from_utf8_lossy(&real.stdout).into_owned();
    assert_eq!(
        exempt_in(&real, "alpha"),
        alpha_exempt.len() as u64,
        "{real}"
    );
    assert_eq!(exempt_in(&real, "beta"), beta_exempt.len() as u64, "{real}");
    for (lab, exempt) in [(&alpha, &alpha_exempt), (&beta, &beta_exempt)] {
        let verdict = |d: &DeviceTruth| {
            if exempt.contains(&d.identity.to_lowercase()) {
                Verdict::Exempt
            } else {
                expected(d)
            }
        };
        assert_enforced(lab, verdict);
    }
    // Each over its own transport: only remote PowerShell listings end in `Select-Object`, and
    // the CLI closed beta's sessions.
    let selected =
        |lab: &Lab| lab.control().counters().exchange.by_cmdlet["Get-MobileDevice"].selected;
    assert_eq!((selected(&alpha), selected(&beta) > 0), (0, true));
    assert_eq!(beta.control().powershell_shells(), 0);
    alpha.shutdown().await;
    beta.shutdown().await;
}
