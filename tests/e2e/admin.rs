//! The admin API, `/metrics` and the status page, over real HTTP on loopback, against a real
//! SQLite store filled through its own API, a real plugin registry (with a rejected plugin)
//! and the real scheduler. The sync itself is a test run function standing in for the sync
//! runner: it records its run in the store and waits for the test's permission to finish.
//! The page in a browser, against the real daemon and the lab, is tested in `daemon.rs`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use easgate::admin::{self, AdminState};
use easgate::config::Secret;
use easgate::metrics::Metrics;
use easgate::model::RunKind;
use easgate::model::SyncKind;
use easgate::model::{AccessState, Command, DeviceKey, ExchangeDevice, PlannedCommand, Verdict};
use easgate::plugin::PluginRegistry;
use easgate::schedule::{OrgSchedule, RunFn, Scheduler, Shutdown};
use easgate::store::{
    DecisionBatch, DecisionRecord, DeviceView, RunEnd, RunId, RunOutcome, Store, VerdictCounts,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, oneshot};

use crate::support::daemon::sample;
use crate::support::plugin_registry;

const TOKEN: &str = "s3cret-admin-token";
/// Bound on every wait: a broken scheduler or page fails the test instead of hanging it.
const WAIT: Duration = Duration::from_secs(30);

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn exchange_device(mailbox: &str, n: usize, model: &str, state: AccessState) -> ExchangeDevice {
    let device_id = format!("DEV{n:04}");
    ExchangeDevice {
        identity: format!("{mailbox}\\ExchangeActiveSyncDevices\\iPhone§{device_id}"),
        device_id,
        mailbox: Some(mailbox.to_owned()),
        device_type: "iPhone".into(),
        device_model: model.into(),
        device_os: "iOS 18.1".into(),
        access_state: state,
        ..ExchangeDevice::default()
    }
}

/// Saves `devices` of `org` and their verdicts in one succeeded full run ending at `at`.
fn decided_run(store: &Store, org: &str, devices: &[(ExchangeDevice, Verdict)], at: i64) {
    let id = store.organization(org, at).unwrap();
    let run = store
        .start_run(id, RunKind::Full, Some("digest-1"), at - 10)
        .unwrap();
    let views: Vec<DeviceView<'_>> = devices
        .iter()
        .map(|(exchange, _)| DeviceView {
            exchange,
            managed: None,
        })
        .collect();
    store.save_inventory(id, &views, at - 5).unwrap();
    let decisions: Vec<DecisionRecord> = devices
        .iter()
        .map(|(d, verdict)| DecisionRecord {
            key: d.key(),
            verdict: *verdict,
            reason: format!("policy says {}", verdict.as_str()),
            notify: false,
        })
        .collect();
    store
        .record_decisions(&DecisionBatch {
            run,
            plugin_digest: "digest-1",
            decided_at: at - 2,
            decisions: &decisions,
            commands: &[],
            held: false,
            shown: &[],
        })
        .unwrap();
    let mut counts = VerdictCounts::default();
    for (_, verdict) in devices {
        counts.add(Some(*verdict));
    }
    store
        .finish_run(
            run,
            &RunEnd {
                ended_at: at,
                outcome: RunOutcome::Succeeded,
                counts,
                devices_changed: devices.len() as u64,
                commands_issued: 0,
                error: None,
            },
        )
        .unwrap();
}

/// A plan of `org` held by the blast-radius guard.
fn held_plan(store: &Store, org: &str, mailboxes: &[&str], at: i64) -> RunId {
    let id = store.organization(org, at).unwrap();
    let run = store
        .start_run(id, RunKind::Full, Some("digest-1"), at)
        .unwrap();
    let commands: Vec<PlannedCommand> = mailboxes
        .iter()
        .map(|mailbox| {
            let parameters = easgate::model::Parameters::new().text("Identity", *mailbox);
            PlannedCommand {
                mailbox: Some((*mailbox).to_owned()),
                devices: vec![DeviceKey::new(&format!("{mailbox}\\x\\d"))],
                command: Command {
                    cmdlet: "Set-CASMailbox".into(),
                    parameters,
                },
            }
        })
        .collect();
    store
        .record_decisions(&DecisionBatch {
            run,
            plugin_digest: "digest-1",
            decided_at: at,
            decisions: &[],
            commands: &commands,
            held: true,
            shown: &[],
        })
        .unwrap();
    store
        .finish_run(
            run,
            &RunEnd {
                ended_at: at + 1,
                outcome: RunOutcome::Held,
                counts: VerdictCounts::default(),
                devices_changed: mailboxes.len() as u64,
                commands_issued: 0,
                error: None,
            },
        )
        .unwrap();
    run
}

/// The admin server on a loopback port over a filled store; stops on drop.
struct Admin {
    url: String,
    http: reqwest::Client,
    store: Arc<Store>,
    registry: Arc<PluginRegistry>,
    scheduler: Scheduler,
    /// Each sync waits for one permit before it finishes.
    gate: Arc<Semaphore>,
    /// Every sync the scheduler started: (org, kind).
    runs: Arc<Mutex<Vec<(String, SyncKind)>>>,
    /// Plans of contoso: one a newer plan superseded, and the newer one, held.
    plans: [RunId; 2],
    stop: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Admin {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("data")).unwrap());
        let past = now() - 86_400;
        let mut devices = Vec::new();
        for n in 0..60 {
            let verdict = [Verdict::Allow, Verdict::Block, Verdict::Quarantine][n % 3];
            let mailbox = if n < 30 { "alice" } else { "bob" };
            devices.push((
                exchange_device(mailbox, n, "iPhone15,2", AccessState::Allowed),
                verdict,
            ));
        }
        devices.push((
            exchange_device(
                "mallory",
                99,
                "<script>alert(1)</script>",
                AccessState::Quarantined,
            ),
            Verdict::Quarantine,
        ));
        decided_run(&store, "contoso", &devices, past);
        let plans = [
            held_plan(&store, "contoso", &["alice", "bob"], past + 100),
            held_plan(&store, "contoso", &["carol"], past + 200),
        ];
        store.organization("fabrikam", past).unwrap();

        let plugin_dir = dir.path().join("plugins.d");
        std::fs::create_dir_all(&plugin_dir).unwrap();
        std::fs::write(plugin_dir.join("broken.wasm"), b"not a component").unwrap();
        let registry = plugin_registry(&plugin_dir);

        let gate = Arc::new(Semaphore::new(0));
        let runs = Arc::new(Mutex::new(Vec::new()));
        let run: RunFn = {
            let (store, gate, runs) = (store.clone(), gate.clone(), runs.clone());
            Arc::new(move |request| {
                let (store, gate, runs) = (store.clone(), gate.clone(), runs.clone());
                Box::pin(async move {
                    runs.lock()
                        .unwrap()
                        .push((request.org.clone(), request.kind));
                    let org = store.organization(&request.org, now())?;
                    let run = store.start_run(org, request.kind.into(), Some("digest-1"), now())?;
                    request.progress.set("discover", 1, Some(3));
                    tokio::select! {
                        permit = gate.acquire() => permit?.forget(),
                        () = request.cancel.cancelled() => anyhow::bail!("cancelled"),
                    }
                    let end = RunEnd {
                        ended_at: now(),
                        outcome: RunOutcome::Succeeded,
                        counts: VerdictCounts::default(),
                        devices_changed: 0,
                        commands_issued: 0,
                        error: None,
                    };
                    store.finish_run(run, &end)?;
                    Ok(())
                })
            })
        };
        let metrics = Arc::new(Metrics::default());
        let scheduler = Scheduler::start(
            ["contoso", "fabrikam"].map(|o| (o.to_owned(), OrgSchedule::default())),
            run,
            metrics.clone(),
            now,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel();
        let state = AdminState {
            store: store.clone(),
            registry: registry.clone(),
            scheduler: scheduler.clone(),
            metrics,
            token: Secret::new(TOKEN),
            now,
            // No Exchange here: the device actions are tested in `device_actions`.
            actions: Default::default(),
            confirmations: Default::default(),
        };
        tokio::spawn(admin::serve(listener, state, async move {
            let _ = stopped.await;
        }));
        Self {
            url,
            http: reqwest::Client::builder().timeout(WAIT).build().unwrap(),
            store,
            registry,
            scheduler,
            gate,
            runs,
            plans,
            stop: Some(stop),
            _dir: dir,
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|err| panic!("{path}: not JSON ({err}): {text}"));
        (status, body)
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        body
    }

    fn runs(&self) -> Vec<(String, SyncKind)> {
        self.runs.lock().unwrap().clone()
    }

    /// Waits (bounded) until `done` holds.
    async fn until(&self, what: &str, mut done: impl FnMut(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !done(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "waited too long: {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(mut self) {
        self.scheduler.shutdown(Shutdown::Cancel).await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Every operation `openapi.yaml` describes: method, path (parameters filled in with values
/// the test admin knows), and whether it needs the token. Read from the file, so a route added
/// there is covered here without a change.
fn described_operations() -> Vec<(Method, String, bool)> {
    let spec = std::fs::read_to_string(crate::support::repo().join("openapi.yaml")).unwrap();
    let paths = spec
        .split("\npaths:\n")
        .nth(1)
        .expect("openapi.yaml has paths")
        .split("\ncomponents:")
        .next()
        .unwrap();
    let mut operations: Vec<(Method, String, bool)> = Vec::new();
    let mut path = None;
    for line in paths.lines() {
        if let Some(p) = line.strip_prefix("  /").and_then(|p| p.strip_suffix(':')) {
            path = Some(
                format!("/{p}")
                    .replace("{org}", "contoso")
                    .replace("{id}", "1"),
            );
        } else if let Some(method) = line.strip_prefix("    ").and_then(|m| m.strip_suffix(':'))
            && ["get", "post", "put", "patch", "delete"].contains(&method)
        {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            operations.push((method, path.clone().expect("a path first"), true));
        } else if line.trim() == "security: []" {
            operations.last_mut().expect("an operation").2 = false;
        }
    }
    assert!(operations.len() >= 10, "{operations:?}");
    operations
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_but_healthz_needs_the_token() {
    let admin = Admin::start().await;
    let operations = described_operations();
    let open: Vec<&str> = operations
        .iter()
        .filter(|(_, _, token)| !token)
        .map(|(_, path, _)| path.as_str())
        .collect();
    assert_eq!(open, ["/healthz", "/"], "only these go without the token");
    // What a caller without the right token may try: nothing, another token, the token with a
    // character changed, added or dropped, the token in another scheme or in the query.
    let near_misses: Vec<(&str, Option<String>)> = vec![
        ("no Authorization", None),
        ("a wrong token", Some("Bearer wrong".into())),
        ("a case change", Some("Bearer s3cret-admin-tokeN".into())),
        ("a longer token", Some(format!("Bearer {TOKEN}x"))),
        (
            "a prefix",
            Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        ),
        ("an empty token", Some("Bearer ".into())),
        ("the Basic scheme", Some(format!("Basic {TOKEN}"))),
        ("the token alone", Some(TOKEN.into())),
    ];
    let unknown = ["/api/v1/nothing", "/api/v2/status", "/metrics/x", "/admin"];
    let mut tried = 0;
    for (method, path, needs_token) in &operations {
        if !needs_token {
            let response = admin
                .http
                .request(method.clone(), format!("{}{path}", admin.url))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{method} {path}");
            continue;
        }
        // The described method, every other one (no 405 that tells what exists before the
        // token), and the token in the query string instead of the header.
        let methods = [Method::GET, Method::POST, Method::PUT, Method::DELETE];
        for try_method in methods.iter().chain([method]) {
            for (what, authorization) in &near_misses {
                let mut request = admin
                    .http
                    .request(try_method.clone(), format!("{}{path}", admin.url))
                    .json(&json!({"kind": "quick"}));
                if let Some(authorization) = authorization {
                    request = request.header("authorization", authorization);
                }
                let response = request.send().await.unwrap();
                assert_eq!(
                    response.status(),
                    StatusCode::UNAUTHORIZED,
                    "{try_method} {path} with {what}"
                );
                assert_eq!(response.headers()["www-authenticate"], "Bearer");
                let body: Value = response.json().await.unwrap();
                assert!(body["error"].as_str().unwrap().contains("token"), "{body}");
                tried += 1;
            }
        }
        let in_query = admin
            .http
            .request(
                method.clone(),
                format!("{}{path}?token={TOKEN}&access_token={TOKEN}", admin.url),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(in_query.status(), StatusCode::UNAUTHORIZED, "{path}?token=");
    }
    // Paths that do not exist look the same as those that do until the token is right.
    for path in unknown {
        let response = admin
            .http
            .get(format!("{}{path}", admin.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        let (status, _) = admin.call(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    assert!(tried >= 8 * 5 * 8, "{tried} refused calls");
    // The scheme is case-insensitive, the token is not.
    let lower = admin
        .http
        .get(format!("{}/api/v1/status", admin.url))
        .header("authorization", format!("bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(lower.status(), StatusCode::OK);
    // Nothing was triggered or decided by the refused calls.
    assert!(admin.runs().is_empty());
    let contoso = admin.store.organization("contoso", now()).unwrap();
    assert_eq!(admin.store.held_runs(contoso).unwrap().len(), 1);
    admin.stop().await;
}

/// What a page on another site can make a browser send: a form post (URL-encoded, multipart or
/// plain text), even one that somehow carried the token, changes nothing; no answer grants
/// cross-origin reads, and no answer may be framed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_requests_change_nothing_and_nothing_may_be_framed() {
    let admin = Admin::start().await;
    let plan = admin.plans[1];
    let posts = [
        "/api/v1/organizations/contoso/sync".to_owned(),
        format!("/api/v1/plans/{plan}/approve"),
        format!("/api/v1/plans/{plan}/reject"),
    ];
    let forms = [
        ("application/x-www-form-urlencoded", "kind=full"),
        (
            "multipart/form-data; boundary=x",
            "--x\r\n\r\nfull\r\n--x--\r\n",
        ),
        ("text/plain", "{\"kind\": \"full\"}"),
        ("application/x-www-form-urlencoded", ""),
    ];
    for path in &posts {
        for (content_type, body) in forms {
            for token in [None, Some(TOKEN)] {
                let mut request = admin
                    .http
                    .post(format!("{}{path}", admin.url))
                    .header("content-type", content_type)
                    .header("origin", "https://evil.example")
                    .body(body);
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                let response = request.send().await.unwrap();
                let expected = match token {
                    None => StatusCode::UNAUTHORIZED,
                    Some(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                };
                assert_eq!(response.status(), expected, "{path} as {content_type}");
                assert!(
                    response
                        .headers()
                        .get("access-control-allow-origin")
                        .is_none(),
                    "{path}"
                );
            }
        }
        // A body without a type is refused as well.
        let response = admin
            .http
            .post(format!("{}{path}", admin.url))
            .bearer_auth(TOKEN)
            .body("{\"kind\": \"full\"}")
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{path}"
        );
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("application/json"),
            "{body}"
        );
    }
    assert!(admin.runs().is_empty(), "a refused post triggered a sync");
    let contoso = admin.store.organization("contoso", now()).unwrap();
    assert_eq!(admin.store.held_runs(contoso).unwrap().len(), 1);
    assert_eq!(admin.store.run(plan).unwrap().unwrap().approval, None);

    // A preflight is not granted: no CORS header, whatever the origin asks.
    let preflight = admin
        .http
        .request(Method::OPTIONS, format!("{}/api/v1/status", admin.url))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert_ne!(preflight.status(), StatusCode::OK);
    assert!(
        preflight
            .headers()
            .keys()
            .all(|name| !name.as_str().starts_with("access-control-")),
        "{:?}",
        preflight.headers()
    );

    // The page, an API answer, a refusal: none may be framed or sniffed.
    let page = admin.http.get(format!("{}/", admin.url));
    let api = admin
        .http
        .get(format!("{}/api/v1/status", admin.url))
        .bearer_auth(TOKEN);
    let refused = admin.http.get(format!("{}/api/v1/status", admin.url));
    for (what, request) in [("page", page), ("API", api), ("401", refused)] {
        let response = request.send().await.unwrap();
        let headers = response.headers();
        assert_eq!(headers["x-frame-options"], "DENY", "{what}");
        assert_eq!(
            headers["content-security-policy"], "frame-ancestors 'none'",
            "{what}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff", "{what}");
        assert!(headers.get("set-cookie").is_none(), "{what}");
        assert!(
            headers.get("access-control-allow-origin").is_none(),
            "{what}"
        );
    }
    // The page authenticates with a header from the tab's session storage, never a cookie.
    let page = admin
        .http
        .get(format!("{}/", admin.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("\"Authorization\": \"Bearer \""),
        "the page sends the header"
    );
    assert!(!page.contains("document.cookie") && !page.contains("credentials:"));
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_organization_is_a_404_naming_it() {
    let admin = Admin::start().await;
    let (status, body) = admin
        .call(
            Method::POST,
            "/api/v1/organizations/northwind/sync",
            Some(json!({"kind": "full"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["error"].as_str().unwrap().contains("\"northwind\""),
        "{body}"
    );
    let (status, body) = admin
        .call(Method::GET, "/api/v1/devices?org=northwind", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["error"].as_str().unwrap().contains("northwind"),
        "{body}"
    );
    let (status, body) = admin
        .call(Method::GET, "/api/v1/devices/nothing%5Chere", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["error"].as_str().unwrap().contains("nothing\\\\here"),
        "{body}"
    );
    let (status, body) = admin
        .call(Method::POST, "/api/v1/plans/4242/approve", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "no sync run 4242");
    let (status, body) = admin
        .call(
            Method::POST,
            "/api/v1/organizations/contoso/sync",
            Some(json!({"kind": "weekly"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().unwrap().contains("\"kind\""),
        "{body}"
    );
    // Regression (hostile run, hole 11): a 10 MB body got 400, as if it were a malformed one.
    // One byte over the API's 2 MiB limit: the server reads the whole body before it answers,
    // so the answer is never lost to a connection reset over unread bytes.
    let wrapper = json!({"kind": "full", "padding": ""}).to_string().len();
    let huge = json!({"kind": "full", "padding": "x".repeat((2 << 20) + 1 - wrapper)});
    let (status, body) = admin
        .call(
            Method::POST,
            "/api/v1/organizations/contoso/sync",
            Some(huge),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(body["error"].as_str().unwrap().contains("larger"), "{body}");
    assert!(admin.runs().is_empty());
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_while_a_sync_runs_is_queued_not_doubled() {
    let admin = Admin::start().await;
    let path = "/api/v1/organizations/contoso/sync";
    let (status, body) = admin
        .call(Method::POST, path, Some(json!({"kind": "quick"})))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        body,
        json!({"org": "contoso", "kind": "quick", "status": "started"})
    );
    admin
        .until("the first sync runs", |a| a.runs().len() == 1)
        .await;
    for kind in ["full", "quick", "full"] {
        let (status, body) = admin
            .call(Method::POST, path, Some(json!({ "kind": kind })))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(body["status"], "queued", "{body}");
    }
    let status = admin.get("/api/v1/status").await;
    let contoso = &status["organizations"][0];
    assert_eq!(contoso["name"], "contoso");
    assert_eq!(contoso["current_run"]["kind"], "quick");
    assert_eq!(contoso["current_run"]["progress"]["stage"], "discover");
    assert_eq!(contoso["queued"], "full");
    // The notice outbox is shown even when empty.
    assert_eq!(contoso["notices"]["counts"]["pending"], 0, "{contoso}");
    assert_eq!(contoso["notices"]["unsent"], json!([]), "{contoso}");
    // fabrikam is not held up by contoso's run.
    admin
        .call(
            Method::POST,
            "/api/v1/organizations/fabrikam/sync",
            Some(json!({"kind": "full"})),
        )
        .await;
    admin
        .until("fabrikam runs too", |a| a.runs().len() == 2)
        .await;
    admin.gate.add_permits(2);
    admin
        .until("the queued sync starts", |a| a.runs().len() == 3)
        .await;
    admin.gate.add_permits(1);
    admin
        .until("contoso is idle", |a| {
            a.scheduler.state("contoso").unwrap().current.is_none()
        })
        .await;
    // Give a doubled run every chance to show up.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let contoso_runs: Vec<SyncKind> = admin
        .runs()
        .into_iter()
        .filter(|(org, _)| org == "contoso")
        .map(|(_, kind)| kind)
        .collect();
    assert_eq!(contoso_runs, [SyncKind::Quick, SyncKind::Full]);
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approving_and_rejecting_held_plans_changes_the_store() {
    let admin = Admin::start().await;
    let [superseded, held] = admin.plans;
    let status = admin.get("/api/v1/status").await;
    let waiting: Vec<i64> = status["organizations"][0]["held_plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        waiting,
        [held.0],
        "the newer plan made the older one expire"
    );

    // Regression (hostile run, hole 1): a superseded plan was approved and applied.
    let (status, body) = admin
        .call(
            Method::POST,
            &format!("/api/v1/plans/{superseded}/approve"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("expired") && error.contains(&format!("run {held}")),
        "{body}"
    );
    let run = admin.store.run(superseded).unwrap().unwrap();
    assert_eq!((run.outcome, run.approval), (RunOutcome::Rejected, None));

    let (status, body) = admin
        .call(Method::POST, &format!("/api/v1/plans/{held}/approve"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"run": held.0, "decision": "approved", "commands": 1})
    );
    let run = admin.store.run(held).unwrap().unwrap();
    assert_eq!(run.approval.as_deref(), Some("approved"));
    assert_eq!(run.outcome, RunOutcome::Running);

    // Deciding again is a conflict that says why.
    let (status, body) = admin
        .call(Method::POST, &format!("/api/v1/plans/{held}/reject"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        body["error"].as_str().unwrap().contains("running"),
        "{body}"
    );
    let status = admin.get("/api/v1/status").await;
    assert_eq!(status["organizations"][0]["held_plans"], json!([]));
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_filter_page_and_show_their_history() {
    let admin = Admin::start().await;
    let all = admin.get("/api/v1/devices?limit=500").await;
    assert_eq!(all["total"], 61);
    let blocked = admin
        .get("/api/v1/devices?verdict=block&user=ALICE&limit=4")
        .await;
    assert_eq!(blocked["total"], 10);
    let page = blocked["devices"].as_array().unwrap();
    assert_eq!(page.len(), 4);
    assert!(
        page.iter()
            .all(|d| d["verdict"] == "block" && d["user"] == "alice")
    );
    let next = admin
        .get("/api/v1/devices?verdict=block&user=alice&limit=4&offset=8")
        .await;
    assert_eq!(next["devices"].as_array().unwrap().len(), 2);
    let quarantined = admin.get("/api/v1/devices?state=quarantined").await;
    assert_eq!(quarantined["total"], 1);
    assert_eq!(
        quarantined["devices"][0]["model"],
        "<script>alert(1)</script>"
    );
    let (status, body) = admin
        .call(Method::GET, "/api/v1/devices?verdict=maybe", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("maybe"), "{body}");

    let id = page[0]["id"].as_str().unwrap();
    let encoded: String = id
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let device = admin
        .get(&format!("/api/v1/devices/{encoded}?org=contoso"))
        .await;
    assert_eq!(device["device"]["id"], id);
    let history = device["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{device}");
    assert_eq!(history[0]["verdict"], "block");
    assert_eq!(history[0]["reason"], "policy says block");
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_show_the_active_versions_and_rejections_with_reasons() {
    let admin = Admin::start().await;
    let plugins = admin.get("/api/v1/plugins").await;
    let digest = admin.registry.access_policy().meta.digest.hex();
    assert_eq!(plugins["active"]["access_policy"]["digest"], digest);
    assert_eq!(plugins["active"]["access_policy"]["source"], "built-in");
    let broken = &plugins["directory"][0];
    assert_eq!(broken["name"], "broken");
    assert_eq!(broken["digest"], Value::Null);
    let reason = broken["rejections"][0]["reason"].as_str().unwrap();
    assert!(!reason.is_empty());
    assert_eq!(reason, admin.registry.status()[0].rejections[0].reason);
    admin.stop().await;
}

async fn scrape(admin: &Admin) -> prometheus_parse::Scrape {
    let response = admin
        .http
        .get(format!("{}/metrics", admin.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = response.text().await.unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).unwrap_or_else(|err| panic!("{err}:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_after_a_sync() {
    let admin = Admin::start().await;
    let before = scrape(&admin).await;
    let contoso = [("org", "contoso")];
    assert_eq!(
        sample(
            &before,
            "easgate_devices",
            &[("org", "contoso"), ("verdict", "quarantine")]
        ),
        Some(21.0)
    );
    assert_eq!(sample(&before, "easgate_held_plans", &contoso), Some(1.0));
    // The outbox gauge is the status's pending notice count, read at scrape time.
    let status = admin.get("/api/v1/status").await;
    let pending = status["organizations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "contoso")
        .expect("contoso in the status")["notices"]["counts"]["pending"]
        .as_f64()
        .expect("a pending count");
    assert_eq!(
        sample(&before, "easgate_notice_outbox_pending", &contoso),
        Some(pending)
    );
    let last_before = sample(
        &before,
        "easgate_last_successful_sync_timestamp_seconds",
        &contoso,
    )
    .expect("contoso has synced");
    assert_eq!(
        sample(&before, "easgate_syncs_total", &[("org", "contoso")]),
        None,
        "no sync finished yet"
    );
    assert_eq!(
        sample(
            &before,
            "easgate_plugin_rejections",
            &[("plugin", "broken")]
        ),
        Some(1.0)
    );

    admin.scheduler.trigger("contoso", SyncKind::Full).unwrap();
    admin.until("the sync runs", |a| a.runs().len() == 1).await;
    let during = scrape(&admin).await;
    assert_eq!(sample(&during, "easgate_sync_running", &contoso), Some(1.0));
    admin.gate.add_permits(1);
    admin
        .until("the sync ends", |a| {
            a.scheduler.state("contoso").unwrap().last.is_some()
        })
        .await;
    let after = scrape(&admin).await;
    assert_eq!(
        sample(
            &after,
            "easgate_syncs_total",
            &[
                ("org", "contoso"),
                ("kind", "full"),
                ("outcome", "succeeded")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(sample(&after, "easgate_sync_running", &contoso), Some(0.0));
    let last_after = sample(
        &after,
        "easgate_last_successful_sync_timestamp_seconds",
        &contoso,
    )
    .unwrap();
    assert!(last_after > last_before, "{last_after} > {last_before}");
    admin.stop().await;
}

/// The status page's views: the run history with durations and the verdict trend, the outbox
/// by status, and what a held plan would do; bad parameters are a 400 naming them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_outbox_and_held_plans_answer_with_the_stores_facts() {
    let admin = Admin::start().await;
    let [_, held] = admin.plans;
    let history = admin.get("/api/v1/organizations/contoso/history").await;
    let runs = history["runs"].as_array().unwrap();
    assert!(!runs.is_empty(), "{history}");
    for run in runs {
        let (start, end) = (run["started_at"].as_i64(), run["ended_at"].as_i64());
        match end {
            Some(end) => assert_eq!(run["duration_s"].as_i64(), Some(end - start.unwrap())),
            None => assert!(run["duration_s"].is_null(), "{run}"),
        }
    }
    // The trend has a point per quick or full run that ended, oldest first, each the
    // organization's counts then.
    let trend = history["trend"].as_array().unwrap();
    assert!(!trend.is_empty(), "{history}");
    let ats: Vec<i64> = trend.iter().map(|p| p["at"].as_i64().unwrap()).collect();
    assert!(ats.windows(2).all(|w| w[0] <= w[1]), "{ats:?}");
    let status = admin.get("/api/v1/status").await;
    let last = &trend.last().unwrap()["counts"];
    assert_eq!(last, &status["organizations"][0]["verdicts"], "{history}");

    let one = admin
        .get("/api/v1/organizations/contoso/history?limit=1")
        .await;
    assert_eq!(one["runs"].as_array().unwrap().len(), 1);
    let (code, body) = admin
        .call(
            Method::GET,
            "/api/v1/organizations/contoso/history?limit=0",
            None,
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("limit"), "{body}");
    let (code, _) = admin
        .call(Method::GET, "/api/v1/organizations/northwind/history", None)
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);

    let outbox = admin.get("/api/v1/organizations/contoso/notices").await;
    for status in ["pending", "sent", "failed", "given_up"] {
        assert!(outbox["counts"][status].is_u64(), "{outbox}");
    }
    let pending = admin
        .get("/api/v1/organizations/contoso/notices?status=pending")
        .await;
    assert!(
        pending["notices"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["status"] == "pending"),
        "{pending}"
    );
    let (code, body) = admin
        .call(
            Method::GET,
            "/api/v1/organizations/contoso/notices?status=lost",
            None,
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("\"lost\""),
        "{body}"
    );

    // The held plan names its command's device and counts it by transition.
    let plan = admin.get(&format!("/api/v1/plans/{held}")).await;
    assert_eq!(plan["run"]["id"], held.0, "{plan}");
    assert_eq!(plan["run"]["outcome"], "held", "{plan}");
    assert_eq!(plan["devices_total"], 1, "{plan}");
    assert_eq!(plan["devices"][0]["cmdlet"], "Set-CASMailbox", "{plan}");
    let counted: u64 = plan["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 1, "{plan}");
    let (code, body) = admin.call(Method::GET, "/api/v1/plans/4242", None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "no sync run 4242");
    admin.stop().await;
}
