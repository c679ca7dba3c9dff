//! The shipped Prometheus alert rules and Grafana dashboard (`deploy/`): promtool accepts the
//! rules and passes their unit tests, and every metric they name is exported by a real `easgate
//! run` after syncs against the lab (one of them failed, so that the failure figures exist).
//! `/metrics` answers OpenMetrics to a scraper that asks for it, and its text passes promtool's
//! lint.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::daemon::{Easgate, add_admin, post, scrape, total, wait_for_first_full_sync};
use crate::support::lab::{sync_lab, write_config};
use crate::support::repo;

const TOKEN: &str = "monitoring-e2e-token";
const RULES: &str = "deploy/prometheus/easgate-alerts.yml";
const RULE_TESTS: &str = "deploy/prometheus/easgate-alerts.test.yml";
const DASHBOARD: &str = "deploy/grafana/easgate-dashboard.json";

/// Set to `1` (by `.ci/test`, which installs promtool) to make a missing promtool a failure
/// instead of a skipped check.
const REQUIRE_PROMTOOL: &str = "EASGATE_REQUIRE_PROMTOOL";

/// `promtool`, or `None` (with a message) where it is missing and not required.
fn promtool() -> Option<&'static str> {
    let found = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some("promtool");
    }
    assert!(
        std::env::var(REQUIRE_PROMTOOL).as_deref() != Ok("1"),
        "{REQUIRE_PROMTOOL}=1 but no promtool on PATH (bash .ci/install-promtool)"
    );
    eprintln!("skipped: no promtool on PATH (bash .ci/install-promtool installs it)");
    None
}

/// Runs promtool with `args` (and `stdin`), failing the test with its output if it refuses.
fn run_promtool(promtool: &str, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(promtool)
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let Some(promtool) = promtool() else { return };
    let checked = run_promtool(promtool, &["check", "rules", RULES], None);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = run_promtool(promtool, &["test", "rules", RULE_TESTS], None);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// The dashboard's queries, as Grafana sends them: every panel queries Prometheus through the
/// dashboard's data source variable, and every query is PromQL that Prometheus parses (checked
/// by promtool as recording rules, Grafana's variables given values).
#[test]
fn the_dashboard_queries_are_promql() {
    let text = std::fs::read_to_string(repo().join(DASHBOARD)).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut rules = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        let title = &panel["title"];
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("a PromQL expr");
            let expr = expr.replace("$__rate_interval", "5m").replace("$org", ".*");
            let record = format!("dashboard:query_{}", rules.len());
            rules.push(json!({"record": record, "expr": expr}));
        }
    }
    assert!(rules.len() > 15, "{} queries", rules.len());
    let Some(promtool) = promtool() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-queries.yml");
    let groups = json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(&file, groups.to_string()).unwrap();
    let checked = run_promtool(promtool, &["check", "rules", file.to_str().unwrap()], None);
    assert!(checked.contains("SUCCESS"), "{checked}");
}

/// The metric names a file mentions: every `easgate_…` word.
fn metric_names(path: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut names = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("easgate_") {
        let word: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + word.len()..];
        names.insert(word);
    }
    names
}

/// The names of the samples in a scrape in the Prometheus text format.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_of_the_rules_and_the_dashboard_is_exported() {
    let rules = metric_names(RULES);
    let dashboard = metric_names(DASHBOARD);
    assert!(rules.len() >= 10, "{rules:?}");
    // The dashboard is JSON Grafana can import (its panels query Prometheus).
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join(DASHBOARD)).unwrap()).unwrap();
    assert!(json["panels"].as_array().is_some_and(|p| p.len() > 10));

    let lab = sync_lab(200).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&lab, dir.path(), 8);
    // A plugin directory holding a file that is no plugin: the plugin figures have a series.
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "data_dir = \"data\"",
        "data_dir = \"data\"\nplugin_dir = \"plugins\"",
    );
    // The organization names its policy (the built-in, its own settings): the readiness gauge
    // of per-organization policies has a series.
    let text = format!("{text}\n[organization.policy]\nplugin = \"access-policy\"\n");
    std::fs::write(&config, text).unwrap();
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    std::fs::write(dir.path().join("plugins/broken.wasm"), b"not a component").unwrap();
    add_admin(&config, TOKEN);
    let config = config.to_str().unwrap().to_owned();
    let (daemon, url) = Easgate::run_with_admin(&config, dir.path()).await;
    wait_for_first_full_sync(&url, TOKEN).await;
    // Issue 17: the counters alerts take `increase()` of are there at 0 before any event (no
    // throttling, failover, plugin error or refused command happened in this sync).
    let (m, text) = scrape(&url, TOKEN).await;
    let org = ("org", "contoso");
    for (name, labels) in [
        (
            "easgate_throttling_events_total",
            vec![org, ("service", "exchange")],
        ),
        (
            "easgate_throttling_events_total",
            vec![org, ("service", "graph")],
        ),
        ("easgate_cas_failovers_total", vec![org]),
        ("easgate_plugin_errors_total", vec![org]),
        ("easgate_device_statistics_failures_total", vec![org]),
        ("easgate_commands_total", vec![org, ("result", "failed")]),
        ("easgate_notices_total", vec![org, ("result", "given-up")]),
    ] {
        assert_eq!(
            total(&m, name, &labels),
            Some(0.0),
            "{name}{labels:?}:\n{text}"
        );
    }
    // A failed sync: the lab's only CAS refuses everything, so discovery fails.
    lab.control().fail_cas(0, 400).unwrap();
    let full = json!({"kind": "full"});
    let answer = post(
        &url,
        TOKEN,
        "/api/v1/organizations/contoso/sync",
        Some(full),
    )
    .await;
    assert!(answer.is_success(), "sync trigger: {answer}");
    let started = Instant::now();
    let text = loop {
        let (m, text) = scrape(&url, TOKEN).await;
        let failed = [("org", "contoso"), ("outcome", "failed")];
        if total(&m, "easgate_syncs_total", &failed).is_some_and(|n| n >= 1.0) {
            break text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no failed sync:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let have = exported(&text);
    let missing: Vec<_> = rules
        .union(&dashboard)
        .filter(|n| !have.contains(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "named by {RULES} or {DASHBOARD} but not exported: {missing:?}\n{text}"
    );

    // Prometheus asks for OpenMetrics and gets it.
    let answer = reqwest::Client::new()
        .get(format!("{url}/metrics"))
        .bearer_auth(TOKEN)
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .unwrap();
    let content_type = answer.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let open = answer.text().await.unwrap();
    assert!(open.ends_with("# EOF\n"), "{open}");
    assert!(open.contains("# TYPE easgate_syncs counter\n"), "{open}");
    daemon.stop_cleanly().await;

    if let Some(promtool) = promtool() {
        run_promtool(promtool, &["check", "metrics"], Some(&text));
    }
}
