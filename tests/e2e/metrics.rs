//! `/metrics` of the real `easgate run` against the lab: every figure issue 7 lists moves when
//! its event happens, and plugin errors carry the kind of failure.

use std::path::Path;
use std::time::{Duration, Instant};

use easgate::plugin::engine::Limits;
use easgate::plugin::{PluginEngine, PluginErrorKind};
use easgate_lab::{GraphLimits, Lab, LabOptions, LatencyModel};
use serde_json::json;

use crate::support::daemon::{
    Easgate, add_admin, post, scrape, total, wait_for, wait_for_first_full_sync,
};
use crate::support::lab::write_config_over;
use crate::support::{Transport, device, faulty, sync_info, wasm_bytes};

const TOKEN: &str = "metrics-e2e-token";
const ORG: (&str, &str) = ("org", "contoso");

/// Scrapes until `done` holds for `total(name, labels)` (bounded); returns the scrape's text.
async fn until_metric(
    url: &str,
    name: &str,
    labels: &[(&str, &str)],
    done: impl Fn(Option<f64>) -> bool,
) -> (prometheus_parse::Scrape, String) {
    let limit = Duration::from_secs(120);
    let started = Instant::now();
    loop {
        let (scrape, text) = scrape(url, TOKEN).await;
        if done(total(&scrape, name, labels)) {
            return (scrape, text);
        }
        assert!(
            started.elapsed() < limit,
            "{name}{labels:?} not as awaited within {limit:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The connector's configuration for `lab` with a watched plugin directory `plugins/`, the
/// admin API, and, with `smtp_port`, notices sent to that port.
fn config(lab: &Lab, dir: &Path, parallel: usize, smtp_port: Option<u16>) -> String {
    config_over(lab, dir, parallel, smtp_port, Transport::Rest)
}

/// [`config`] with Exchange reached over `transport`.
fn config_over(
    lab: &Lab,
    dir: &Path,
    parallel: usize,
    smtp_port: Option<u16>,
    transport: Transport,
) -> String {
    let path = write_config_over(lab, dir, parallel, transport);
    let mut text = std::fs::read_to_string(&path).unwrap().replace(
        "data_dir = \"data\"",
        "data_dir = \"data\"\nplugin_dir = \"plugins\"",
    );
    if let Some(port) = smtp_port {
        text.push_str(&format!(
            "\n[notify]\n\
             smtp = {{ host = \"127.0.0.1\", port = {port}, security = \"none\", timeout = \"2s\" }}\n\
             from = \"Contoso IT <noreply@contoso.com>\"\n\
             remediation_url = \"https://portal.contoso.example/enroll\"\n"
        ));
    }
    std::fs::write(&path, text).unwrap();
    add_admin(&path, TOKEN);
    std::fs::create_dir_all(dir.join("plugins")).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Writes the faulty policy as `plugins/NAME.wasm` with a manifest selecting `mode`. The wasm is
/// written once; later calls change only the manifest, which is what triggers the reload.
fn write_faulty(dir: &Path, name: &str, mode: &str) {
    let wasm = dir.join("plugins").join(format!("{name}.wasm"));
    let manifest = format!(
        "world = \"access-policy\"\n[settings]\nmode = \"{mode}\"\n\
         [limits]\ntimeout_ms = 200\nmemory_mib = 16\n"
    );
    // The manifest first: the wasm's own event then reloads both at once.
    std::fs::write(wasm.with_extension("toml"), manifest).unwrap();
    if !wasm.exists() {
        std::fs::write(&wasm, wasm_bytes("faulty.wasm")).unwrap();
    }
}

async fn trigger_full_sync(url: &str) {
    let full = json!({"kind": "full"});
    let answer = post(url, TOKEN, "/api/v1/organizations/contoso/sync", Some(full)).await;
    assert!(answer.is_success(), "sync trigger: {answer}");
}

over_transports!(every_listed_figure_moves_after_a_sync);
/// Every figure of the list moves after a sync of a real daemon, each because its event really
/// happened in the lab: the primary CAS answers 503 (failover), the lab admits one Exchange
/// request at a time while the connector sends four, or over remote PowerShell the account's
/// user load quota admits 100 commands a second (Exchange throttling, commands sent again),
/// Graph admits one request per second while the listing has several pages (Graph throttling),
/// the SMTP sink is down (notices wait in the outbox), and the plugin directory holds one good
/// and one broken plugin (reloads loaded and rejected). Plugin errors by kind: see
/// [`plugin_errors_are_counted_by_kind`].
///
/// Why Graph throttling went unseen before: a sync reads the managed devices in pages of 1000
/// and nothing else from Graph, so an organization of a few hundred devices makes one Graph
/// request per sync, and setting the lab's limits refills its buckets: that one request always
/// passes, however low the limit. Here the tenant has more than one page of managed devices.
async fn every_listed_figure_moves_after_a_sync(transport: Transport) {
    let lab = Lab::start(LabOptions {
        devices: 2500,
        cas: 2,
        seed: 5,
        latency: LatencyModel::uniform(1, 0),
        ..Default::default()
    })
    .await
    .expect("the lab starts");
    let managed = lab.control().info().managed_devices;
    assert!(
        managed > 1000,
        "one page of managed devices only: {managed}"
    );
    lab.control().fail_cas(0, 503).unwrap();
    crate::support::lab::throttle_exchange(&lab, transport, 100);
    // Through the lab's control API, as an operator of the lab would.
    let limits = GraphLimits {
        tenant_requests: 1,
        app_requests: 1,
        window_ms: 1000,
    };
    let answer = reqwest::Client::new()
        .put(format!("{}/_lab/throttling", lab.control_url()))
        .json(&json!({ "graph": limits }))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());
    assert_eq!(lab.control().graph_limits(), limits);
    let smtp_port = lab.smtp_addr().port();
    lab.control().stop_smtp().await;

    let dir = tempfile::tempdir().unwrap();
    let config = config_over(&lab, dir.path(), 4, Some(smtp_port), transport);
    // Loaded but not active (the built-in policy stays selected), and a file that is no plugin.
    write_faulty(dir.path(), "faulty", "ok");
    std::fs::write(dir.path().join("plugins/broken.wasm"), b"not a component").unwrap();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let (daemon, url) = Easgate::run_with_admin(&config, dir.path()).await;
    wait_for_first_full_sync(&url, TOKEN).await;
    let (m, text) = scrape(&url, TOKEN).await;
    let at_least = |name: &str, labels: &[(&str, &str)], floor: f64| {
        let value = total(&m, name, labels);
        assert!(
            value.is_some_and(|v| v >= floor),
            "{name}{labels:?} = {value:?}, expected at least {floor}:\n{text}"
        );
        value.unwrap()
    };
    // The scheduler asks for a quick sync at start; without a cursor it runs full.
    at_least(
        "easgate_syncs_total",
        &[ORG, ("kind", "quick"), ("outcome", "succeeded")],
        1.0,
    );
    at_least(
        "easgate_sync_runs_total",
        &[ORG, ("kind", "full"), ("outcome", "succeeded")],
        1.0,
    );
    at_least(
        "easgate_sync_duration_seconds_count",
        &[ORG, ("kind", "quick")],
        1.0,
    );
    at_least(
        "easgate_sync_duration_seconds_sum",
        &[ORG, ("kind", "quick")],
        0.001,
    );
    let devices = at_least("easgate_devices", &[ORG], 1.0);
    at_least("easgate_devices", &[ORG, ("verdict", "quarantine")], 1.0);
    at_least("easgate_commands_total", &[ORG, ("result", "sent")], 1.0);
    at_least("easgate_commands_total", &[ORG, ("result", "retried")], 1.0);
    at_least(
        "easgate_throttling_events_total",
        &[ORG, ("service", "exchange")],
        1.0,
    );
    // The connector is the lab's only Graph client: it counts every 429 the lab sent.
    let graph_throttled = lab.control().counters().graph.throttled;
    assert!(graph_throttled > 0, "the lab never throttled Graph");
    assert_eq!(
        total(
            &m,
            "easgate_throttling_events_total",
            &[ORG, ("service", "graph")]
        ),
        Some(graph_throttled as f64),
        "{text}"
    );
    at_least("easgate_cas_failovers_total", &[ORG], 1.0);
    // Requests by what they came to: every throttling answer is a throttled request, the
    // failing primary CAS's answers failed ones, and Exchange answered (connected).
    assert_eq!(
        total(
            &m,
            "easgate_requests_total",
            &[ORG, ("service", "graph"), ("status", "throttled")]
        ),
        Some(graph_throttled as f64),
        "{text}"
    );
    assert_eq!(
        total(
            &m,
            "easgate_requests_total",
            &[ORG, ("service", "exchange"), ("status", "throttled")]
        ),
        total(
            &m,
            "easgate_throttling_events_total",
            &[ORG, ("service", "exchange")]
        ),
        "{text}"
    );
    at_least(
        "easgate_requests_total",
        &[ORG, ("service", "exchange"), ("status", "failed")],
        1.0,
    );
    at_least(
        "easgate_requests_total",
        &[ORG, ("service", "exchange"), ("status", "ok")],
        1.0,
    );
    at_least(
        "easgate_requests_total",
        &[ORG, ("service", "graph"), ("status", "ok")],
        1.0,
    );
    assert_eq!(
        total(&m, "easgate_exchange_connected", &[ORG]),
        Some(1.0),
        "{text}"
    );
    at_least(
        "easgate_last_sync_attempt_timestamp_seconds",
        &[ORG],
        started.floor(),
    );
    at_least("easgate_build_info", &[], 1.0);
    assert_eq!(
        total(&m, "easgate_plugin_evaluations_total", &[ORG]),
        Some(devices),
        "every device went through the policy once: {text}"
    );
    assert_eq!(
        total(&m, "easgate_plugin_errors_total", &[ORG]),
        Some(0.0),
        "the built-in policy does not fail: {text}"
    );
    at_least("easgate_notice_outbox_pending", &[ORG], 1.0);
    // The SMTP sink is down: no notice was sent, and the attempts are counted as retrying.
    assert_eq!(
        total(&m, "easgate_notices_total", &[ORG, ("result", "sent")]),
        Some(0.0),
        "{text}"
    );
    at_least("easgate_notices_total", &[ORG, ("result", "retrying")], 1.0);
    at_least(
        "easgate_last_successful_sync_timestamp_seconds",
        &[ORG],
        started.floor(),
    );
    at_least("easgate_plugin_reloads_total", &[("result", "loaded")], 1.0);
    assert_eq!(
        total(
            &m,
            "easgate_plugin_reloads_total",
            &[("result", "rejected"), ("kind", "invalid")]
        ),
        Some(1.0),
        "{text}"
    );
    daemon.stop_cleanly().await;
}

/// The faulty policy, hot-reloaded into the running daemon mode after mode, fails each full
/// sync's one batch in its own way, and `/metrics` names the kind; a version whose `configure`
/// fails is rejected at reload and counted as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_errors_are_counted_by_kind() {
    let lab = crate::support::lab::sync_lab(200).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&lab, dir.path(), 8, None);
    // Selected by the file name: `access-policy.wasm` replaces the built-in policy.
    write_faulty(dir.path(), "access-policy", "trap");
    let (daemon, url) = Easgate::run_with_admin(&config, dir.path()).await;
    // Every run is full (the first for want of a cursor) and partial (its one batch fails).
    let full = [ORG, ("kind", "full"), ("outcome", "partial")];
    until_metric(&url, "easgate_sync_runs_total", &full, |v| v == Some(1.0)).await;
    let mut loaded = 1.0;
    let mut syncs = 1.0;
    for (mode, kind) in [
        ("trap", None),
        ("loop", Some("timeout")),
        ("alloc", Some("memory")),
        ("wrong-count", Some("bad-output")),
        ("huge-reason", Some("bad-output")),
    ] {
        if let Some(kind) = kind {
            write_faulty(dir.path(), "access-policy", mode);
            loaded += 1.0;
            until_metric(
                &url,
                "easgate_plugin_reloads_total",
                &[("result", "loaded")],
                |v| v == Some(loaded),
            )
            .await;
            let before = {
                let (m, _) = scrape(&url, TOKEN).await;
                total(&m, "easgate_plugin_errors_total", &[ORG, ("kind", kind)]).unwrap_or(0.0)
            };
            trigger_full_sync(&url).await;
            syncs += 1.0;
            until_metric(&url, "easgate_sync_runs_total", &full, |v| v == Some(syncs)).await;
            let (m, text) = scrape(&url, TOKEN).await;
            assert_eq!(
                total(&m, "easgate_plugin_errors_total", &[ORG, ("kind", kind)]),
                Some(before + 1.0),
                "{mode}: one batch of 200 devices failed:\n{text}"
            );
        } else {
            let (m, text) = scrape(&url, TOKEN).await;
            assert_eq!(
                total(&m, "easgate_plugin_errors_total", &[ORG, ("kind", "trap")]),
                Some(1.0),
                "{mode}:\n{text}"
            );
        }
    }
    let (m, text) = scrape(&url, TOKEN).await;
    assert_eq!(
        total(&m, "easgate_plugin_errors_total", &[ORG]),
        Some(5.0),
        "no other kind counted:\n{text}"
    );
    assert_eq!(
        total(&m, "easgate_plugin_evaluations_total", &[ORG]),
        Some(5.0 * 200.0),
        "{text}"
    );

    write_faulty(dir.path(), "access-policy", "configure-fails");
    until_metric(
        &url,
        "easgate_plugin_reloads_total",
        &[("result", "rejected"), ("kind", "configure")],
        |v| v == Some(1.0),
    )
    .await;
    daemon.stop_cleanly().await;
}

/// Regression (hostile run, hole 4): a version that passes its rehearsal but decides nothing in
/// a real sync (a time bomb) stayed active, and every run ended with all devices undecided. The
/// daemon rolls it back after the first such run, says why among the plugin's rejections, and
/// the next run decides with the version before it (here the built-in).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_that_decides_nothing_in_a_run_is_rolled_back() {
    let lab = crate::support::lab::sync_lab(200).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&lab, dir.path(), 8, None);
    write_faulty(dir.path(), "access-policy", "trap");
    let (daemon, url) = Easgate::run_with_admin(&config, dir.path()).await;
    let partial = [ORG, ("kind", "full"), ("outcome", "partial")];
    until_metric(&url, "easgate_sync_runs_total", &partial, |v| {
        v == Some(1.0)
    })
    .await;

    let plugins: serde_json::Value = reqwest::Client::new()
        .get(format!("{url}/api/v1/plugins"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        plugins["active"]["access_policy"]["source"], "built-in",
        "{plugins}"
    );
    let faulty = plugins["directory"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "access-policy")
        .expect("the faulty version is listed");
    let reason = faulty["rejections"][0]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("rolled back") && reason.contains("200 devices undecided"),
        "{faulty}"
    );

    trigger_full_sync(&url).await;
    let succeeded = [ORG, ("kind", "full"), ("outcome", "succeeded")];
    until_metric(&url, "easgate_sync_runs_total", &succeeded, |v| {
        v == Some(1.0)
    })
    .await;
    daemon.stop_cleanly().await;
}

/// The kind comes from the real wasmtime error of each faulty mode, not from its message.
#[test]
fn each_faulty_mode_fails_with_its_kind() {
    let engine = PluginEngine::builder()
        .default_limits(Limits {
            timeout: Duration::from_millis(200),
            memory_bytes: 16 << 20,
        })
        .build()
        .unwrap();
    let devices = [device("A"), device("B")];
    for (mode, kind) in [
        ("trap", PluginErrorKind::Trap),
        ("loop", PluginErrorKind::Timeout),
        ("sleep", PluginErrorKind::HostRefused),
        ("alloc", PluginErrorKind::Memory),
        ("wrong-count", PluginErrorKind::BadOutput),
        ("too-many", PluginErrorKind::BadOutput),
        ("bad-reason", PluginErrorKind::BadOutput),
        ("huge-reason", PluginErrorKind::BadOutput),
    ] {
        let policy = faulty(&engine, json!({"mode": mode})).unwrap();
        let err = policy.decide(&sync_info(), &devices).unwrap_err();
        assert_eq!(err.kind(), kind, "{mode}: {err}");
    }
    let Err(rejected) = faulty(&engine, json!({"mode": "configure-fails"})) else {
        panic!("configure-fails loaded");
    };
    assert_eq!(rejected.kind(), PluginErrorKind::Configure, "{rejected}");
}

over_transports!(refused_commands_and_failed_runs_are_counted);
/// Commands Exchange refuses are counted `failed`, and a run whose discovery fails is counted
/// failed twice over (by the scheduler and as a run): the default blast-radius guard holds the
/// first plan, then the lab's only CAS starts refusing everything with 400, then the plan is
/// approved and the daemon applies it.
async fn refused_commands_and_failed_runs_are_counted(transport: Transport) {
    let lab = crate::support::lab::sync_lab(600).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_over(&lab, dir.path(), 8, None, transport);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "max_new_restrictions = { percent = 100.0, floor = 1000000 }",
        "max_new_restrictions = { percent = 10.0, floor = 25 }",
    );
    std::fs::write(&config, text).unwrap();
    let (daemon, url) = Easgate::run_with_admin(&config, dir.path()).await;
    let org = wait_for(&url, TOKEN, "a held plan", |o| {
        o["held_plans"].as_array().is_some_and(|p| !p.is_empty()) && o["current_run"].is_null()
    })
    .await;
    let held = org["held_plans"][0]["id"].as_i64().unwrap();
    let (m, text) = scrape(&url, TOKEN).await;
    assert_eq!(
        total(
            &m,
            "easgate_sync_runs_total",
            &[ORG, ("kind", "full"), ("outcome", "held")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        total(&m, "easgate_commands_total", &[ORG, ("result", "failed")]),
        Some(0.0),
        "{text}"
    );
    let sent_before = total(&m, "easgate_commands_total", &[ORG, ("result", "sent")]);

    lab.control().fail_cas(0, 400).unwrap();
    let answer = post(&url, TOKEN, &format!("/api/v1/plans/{held}/approve"), None).await;
    assert_eq!(answer, 200);
    let failed_runs = [ORG, ("outcome", "failed")];
    let (m, text) = until_metric(&url, "easgate_syncs_total", &failed_runs, |v| {
        v.is_some_and(|v| v >= 1.0)
    })
    .await;
    let failed = total(&m, "easgate_commands_total", &[ORG, ("result", "failed")]);
    assert!(failed.is_some_and(|n| n > 0.0), "{text}");
    let sent = total(&m, "easgate_commands_total", &[ORG, ("result", "sent")]).unwrap_or(0.0);
    assert_eq!(
        sent - sent_before.unwrap_or(0.0),
        failed.unwrap(),
        "every command sent for the approved plan failed:\n{text}"
    );
    assert!(
        total(&m, "easgate_sync_runs_total", &[ORG, ("outcome", "failed")])
            .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    daemon.stop_cleanly().await;
}
