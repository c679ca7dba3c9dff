//! A policy swap storm during a sync: `easgate run` against the lab starts its full sync, and
//! meanwhile the access policy file is written 100 times in one second (again, until the sync
//! has passed its decide stage), every other write
//! invalid (garbage, a truncated component, an empty file, a notice template in the policy's
//! place). The sync decides every device with the one version it pinned at its start (the
//! audit holds a single digest for the run, nothing undecided); afterwards the last valid
//! version written is the active one, and the next sync decides with it.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::daemon::{line_in_file, signal_process, url_in};
use crate::support::lab::{sync_lab, write_config};
use crate::support::{wasm_bytes, with_custom_section, within};

const TOKEN: &str = "swap-storm-token";
const LIMIT: Duration = Duration::from_secs(120);
const WRITES: usize = 100;
const STORM: Duration = Duration::from_secs(1);

async fn api(url: &str, method: Method, path: &str, body: Option<Value>) -> Value {
    let mut request = reqwest::Client::new()
        .request(method, format!("{url}{path}"))
        .bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the admin API answers");
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.expect("JSON")
}

async fn org_status(url: &str) -> Value {
    api(url, Method::GET, "/api/v1/status", None).await["organizations"][0].clone()
}

/// The digests of the access-policy decisions the audit recorded for run `run`, and their
/// number, read from the store's file as any SQLite client would.
fn audit_of(data: &Path, run: i64) -> (Vec<String>, i64) {
    let db = rusqlite::Connection::open_with_flags(
        data.join("easgate.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("the store opens read-only");
    let mut digests: Vec<String> = db
        .prepare("SELECT DISTINCT plugin_digest FROM decision_audit WHERE sync_id = ?1")
        .unwrap()
        .query_map([run], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    digests.sort();
    let count = db
        .query_row(
            "SELECT count(*) FROM decision_audit WHERE sync_id = ?1",
            [run],
            |row| row.get(0),
        )
        .unwrap();
    (digests, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_storm_during_a_sync_changes_nothing_in_it_and_the_last_valid_version_wins() {
    let lab = sync_lab(2_000).await;
    // A run of several seconds: listing the devices and editing the mailboxes take time, so
    // the storm falls inside the run.
    let mut latency = easgate_lab::LatencyModel::uniform(1, 0);
    for (cmdlet, base_ms, per_object_us) in [("Get-MobileDevice", 5, 300), ("Set-CASMailbox", 8, 0)]
    {
        latency.cmdlets.insert(
            cmdlet.into(),
            easgate_lab::CmdletLatency {
                base_ms,
                per_object_us,
            },
        );
    }
    lab.control().set_latency(latency);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&lab, dir.path(), 4);
    std::fs::write(dir.path().join("admin.token"), TOKEN).unwrap();
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[sync]\n",
        "[sync]\nplugin_dir = \"plugins.d\"\n",
        1,
    );
    std::fs::write(
        &config,
        format!(
            "{text}\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = {{ file = \"admin.token\" }}\n"
        ),
    )
    .unwrap();
    let plugins = dir.path().join("plugins.d");
    std::fs::create_dir_all(&plugins).unwrap();
    let target = plugins.join("access-policy.wasm");
    let policy = wasm_bytes("access_policy.wasm");
    let first = with_custom_section(&policy, "before the storm");
    std::fs::write(&target, &first).unwrap();

    // The versions of storm `round`: odd writes valid (each its own digest), even ones not.
    let template = wasm_bytes("notice_template.wasm");
    let storm_versions = |round: usize| -> Vec<Vec<u8>> {
        (0..WRITES)
            .map(|i| match (i % 2, i / 2 % 4) {
                (1, _) => with_custom_section(&policy, &format!("storm {round}, write {i}")),
                (_, 0) => b"not a component at all".to_vec(),
                (_, 1) => policy[..policy.len() / 2].to_vec(),
                (_, 2) => Vec::new(),
                _ => template.clone(),
            })
            .collect()
    };
    let hex = |bytes: &[u8]| easgate::plugin::Digest::of(bytes).hex();
    let mut valid = vec![hex(&first)];
    let mut last_valid: String;

    let stdout = dir.path().join("stdout.log");
    let mut daemon = tokio::process::Command::new(env!("CARGO_BIN_EXE_easgate"))
        .args(["run", "--config", config.to_str().unwrap()])
        .current_dir(dir.path())
        .env("EASGATE_LOG", "warn")
        .stdout(Stdio::from(std::fs::File::create(&stdout).unwrap()))
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("easgate starts");
    let url = url_in(&line_in_file(&stdout, "admin API", LIMIT).await);

    // The start-up full sync lists the devices; the storm begins.
    let started = within(LIMIT, async {
        loop {
            let org = org_status(&url).await;
            // A run starts with the plans an operator approved ("approved plans"), then lists.
            let stage = org["current_run"]["progress"]["stage"].as_str();
            if stage.is_some_and(|s| s != "approved plans") {
                return org["current_run"].clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // Storms of 100 writes in 1 s until the sync is past its decide stage (a slow machine may
    // still be listing devices after the first one).
    let mut storms = Vec::new();
    let during = loop {
        let versions = storm_versions(storms.len());
        valid.extend(versions.iter().skip(1).step_by(2).map(|v| hex(v)));
        last_valid = hex(versions.last().unwrap());
        let target = target.clone();
        let storm = tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            for (i, version) in versions.iter().enumerate() {
                let due = start + STORM * i as u32 / WRITES as u32;
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                std::fs::write(&target, version).unwrap();
            }
            start.elapsed()
        })
        .await
        .unwrap();
        assert!(storm < STORM * 2, "a storm took {storm:?}");
        storms.push(storm);
        let during = org_status(&url).await;
        assert_eq!(
            during["current_run"]["started_at"], started["started_at"],
            "the sync ended before the storm did: the test proves nothing; {during}"
        );
        let stage = during["current_run"]["progress"]["stage"]
            .as_str()
            .unwrap_or("");
        if !["discover", "decide"].contains(&stage) {
            break during;
        }
        assert!(storms.len() < 10, "the sync stays in {stage}: {during}");
    };
    // The storms span the decide stage: they began while the devices were being listed and
    // ended after the verdicts.
    let stage_before_storm = started["progress"]["stage"].clone();
    let stage_after_storm = during["current_run"]["progress"]["stage"].clone();
    assert_eq!(stage_before_storm, "discover", "{started}");

    // The run ends; it used one version throughout.
    let org = within(LIMIT, async {
        loop {
            let org = org_status(&url).await;
            if org["current_run"].is_null() && org["recent_runs"][0]["id"].is_i64() {
                return org;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let run = org["recent_runs"][0].clone();
    assert_eq!(run["outcome"], "succeeded", "{org}");
    assert_eq!(run["counts"]["undecided"], 0, "{run}");
    let pinned = run["plugin_digest"].as_str().unwrap().to_owned();
    assert!(
        valid.contains(&pinned),
        "the run names no valid version: {run}"
    );
    let (digests, audited) = audit_of(&dir.path().join("data"), run["id"].as_i64().unwrap());
    assert_eq!(digests, [pinned.as_str()], "one digest for the whole run");
    assert!(audited >= 2_000, "{audited} decisions audited");

    // Afterwards the last valid version is active, the invalid ones were rejected with reasons.
    let plugins = within(Duration::from_secs(30), async {
        loop {
            let plugins = api(&url, Method::GET, "/api/v1/plugins", None).await;
            if plugins["active"]["access_policy"]["digest"] == last_valid.as_str() {
                return plugins;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let entry = &plugins["directory"][0];
    assert_eq!(entry["digest"], last_valid.as_str(), "{plugins}");
    let rejections = entry["rejections"].as_array().unwrap();
    assert!(
        !rejections.is_empty(),
        "no invalid write was seen: {plugins}"
    );
    assert!(
        rejections
            .iter()
            .all(|r| r["reason"].as_str().is_some_and(|s| !s.is_empty())),
        "{plugins}"
    );

    // The next sync decides with it.
    let before = run["id"].as_i64().unwrap();
    api(
        &url,
        Method::POST,
        "/api/v1/organizations/contoso/sync",
        Some(json!({"kind": "full"})),
    )
    .await;
    let next = within(LIMIT, async {
        loop {
            let org = org_status(&url).await;
            let run = &org["recent_runs"][0];
            if run["id"].as_i64() > Some(before) && org["current_run"].is_null() {
                return run.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(next["outcome"], "succeeded", "{next}");
    assert_eq!(next["plugin_digest"], last_valid.as_str(), "{next}");
    let (digests, _) = audit_of(&dir.path().join("data"), next["id"].as_i64().unwrap());
    assert_eq!(digests, [last_valid.as_str()]);

    let reloads = plugins["reloads"].as_u64().unwrap();
    eprintln!(
        "swap storm: {} storm(s) of {WRITES} writes, in {storms:?}, from the sync's \
         {stage_before_storm} stage \
         to its {stage_after_storm} stage; \
         the run pinned {} ({}), {audited} decisions audited with that one digest; {reloads} \
         reload attempts, {} rejections kept; the last valid version active afterwards",
        storms.len(),
        &pinned[..12],
        if pinned == valid[0] {
            "the version before the storm"
        } else {
            "a storm version"
        },
        rejections.len(),
    );
    signal_process(daemon.id().unwrap(), "TERM");
    let exit = within(LIMIT, daemon.wait()).await.unwrap();
    assert!(exit.success(), "{exit}");
}
