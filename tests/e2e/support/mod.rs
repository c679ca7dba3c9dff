//! Helpers shared by the end-to-end tests.

pub mod daemon;
pub mod lab;

use std::path::PathBuf;
use std::process::{Command, Output};

use easgate::plugin::loaded::{LoadedPlugin, PluginSpec, load};
use easgate::plugin::registry::{RegistryOptions, load_builtin};
use easgate::plugin::{
    AccessPolicyPlugin, NoticeTemplatePlugin, PluginEngine, PluginError, PluginRegistry, Source,
    World, types,
};

/// Where `host/build.rs` put the plugin components.
pub fn wasm_path(file: &str) -> PathBuf {
    PathBuf::from(env!("EASGATE_PLUGIN_WASM_DIR")).join(file)
}

pub fn wasm_bytes(file: &str) -> Vec<u8> {
    std::fs::read(wasm_path(file)).unwrap_or_else(|err| panic!("{file}: {err}"))
}

/// Loads the test-only faulty policy in one of its modes (see `plugins/faulty`).
pub fn faulty(
    engine: &PluginEngine,
    settings: serde_json::Value,
) -> Result<std::sync::Arc<AccessPolicyPlugin>, PluginError> {
    let bytes = wasm_bytes("faulty.wasm");
    let loaded = load(
        engine,
        PluginSpec {
            name: "faulty".into(),
            bytes: &bytes,
            source: Source::File(wasm_path("faulty.wasm")),
            manifest: None,
            settings_override: Some(settings.to_string()),
        },
    )?;
    match loaded {
        LoadedPlugin::Access(policy) => Ok(policy),
        LoadedPlugin::Notice(_) => panic!("faulty is an access policy"),
    }
}

/// A plugin registry, on an engine of its own, that loads the plugins in `dir` (the default
/// options otherwise: nothing watched until `watch`).
pub fn plugin_registry(dir: &std::path::Path) -> std::sync::Arc<PluginRegistry> {
    let options = RegistryOptions {
        dir: Some(dir.to_owned()),
        ..RegistryOptions::default()
    };
    PluginRegistry::new(PluginEngine::new().expect("engine"), options).expect("the registry")
}

/// Waits (at most `limit`) until the registry's active access policy is the one with `digest`;
/// returns it.
pub fn wait_for_active(
    registry: &PluginRegistry,
    digest: easgate::plugin::Digest,
    limit: std::time::Duration,
) -> std::sync::Arc<AccessPolicyPlugin> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let policy = registry.access_policy();
        if policy.meta.digest == digest {
            return policy;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{digest:?} never became active within {limit:?}; status: {:#?}",
            registry.status()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The built-in access policy with `settings` (JSON).
pub fn builtin(engine: &PluginEngine, settings: &str) -> std::sync::Arc<AccessPolicyPlugin> {
    match load_builtin(engine, World::AccessPolicy, settings).expect("the built-in loads") {
        LoadedPlugin::Access(policy) => policy,
        LoadedPlugin::Notice(_) => unreachable!("asked for an access policy"),
    }
}

/// The built-in notice template with `settings` (JSON).
pub fn builtin_template(settings: &str) -> std::sync::Arc<NoticeTemplatePlugin> {
    let engine = PluginEngine::new().expect("engine");
    match load_builtin(&engine, World::NoticeTemplate, settings).expect("the built-in loads") {
        LoadedPlugin::Notice(template) => template,
        LoadedPlugin::Access(_) => unreachable!("asked for a notice template"),
    }
}

/// A realistic, fully filled device context (the host's rehearsal device).
pub fn device(id: &str) -> types::DeviceContext {
    easgate::plugin::sample::sample_device(id)
}

pub fn sync_info() -> types::SyncInfo {
    types::SyncInfo {
        kind: types::SyncKind::Full,
        now: 1_735_689_600,
        organization: "contoso".into(),
    }
}

/// `bytes` with a custom section appended: a valid component with a digest of its own.
pub fn with_custom_section(bytes: &[u8], tag: &str) -> Vec<u8> {
    let name = b"easgate-test";
    let mut content = leb128(name.len());
    content.extend_from_slice(name);
    content.extend_from_slice(tag.as_bytes());
    let mut out = bytes.to_vec();
    out.push(0); // custom section id
    out.extend(leb128(content.len()));
    out.extend(content);
    out
}

fn leb128(mut value: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Runs the real `easgate` binary.
pub fn easgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_easgate"))
        .args(args)
        .env("EASGATE_LOG", "warn")
        .output()
        .expect("the easgate binary runs")
}

/// Starts `easgate sync --full --config CONFIG` in the background, its output discarded: for
/// tests that kill it part way.
pub fn spawn_full_sync(config: &std::path::Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_easgate"))
        .args(["sync", "--full", "--config", config.to_str().unwrap()])
        .env("EASGATE_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("easgate starts")
}

/// Runs the real `easgate` binary off the async runtime (the lab answers it from this
/// process) and fails the test if it takes longer than `limit`.
pub async fn easgate_within(limit: std::time::Duration, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    within(
        limit,
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            easgate(&args)
        }),
    )
    .await
    .expect("the easgate binary's thread")
}

/// Fails the test, showing both outputs, unless the command exited 0; returns its stdout.
pub fn succeeded(output: &Output) -> String {
    let text = stdout(output);
    assert!(
        output.status.success(),
        "{}: {text}{}",
        output.status,
        stderr(output)
    );
    text
}

/// The one JSON object a command printed (`--json`): its whole stdout.
pub fn json_stdout(output: &Output) -> serde_json::Value {
    let text = stdout(output);
    serde_json::from_str(text.trim())
        .unwrap_or_else(|err| panic!("not one JSON object: {err}: {text}"))
}

/// Runs the binary as [`easgate_within`] does, requires success, and returns the one JSON
/// object it printed (`--json`).
pub async fn easgate_json(limit: std::time::Duration, args: &[&str]) -> serde_json::Value {
    let output = easgate_within(limit, args).await;
    succeeded(&output);
    json_stdout(&output)
}

/// A store in a fresh temporary directory (kept as long as the returned `TempDir`).
pub fn temp_store() -> (tempfile::TempDir, std::sync::Arc<easgate::store::Store>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = easgate::store::Store::open(dir.path()).expect("store");
    (dir, std::sync::Arc::new(store))
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A lab for the client tests: fixed seed and anchor, `devices` devices on `cas` CAS endpoints.
///
/// Its listeners get ports below the ephemeral range, each lab of this process its own: tests
/// stop CAS endpoints, and a freed port handed by the OS to another test's lab (same seed, so the
/// same tokens) would answer for the stopped CAS.
pub async fn client_lab(devices: usize, cas: usize) -> easgate_lab::Lab {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    for _ in 0..50 {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Slots of 8 ports between 20000 and 29999, starting at a place that depends on the
        // process so that two test runs at once rarely meet.
        let slot = (std::process::id() * 7 + n) % 1250;
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 20_000 + slot as u16 * 8));
        match easgate_lab::Lab::start(easgate_lab::LabOptions {
            devices,
            cas: cas.min(5),
            seed: 11,
            anchor: Some(easgate_lab::Utc::from_ymd_hms(2025, 1, 15, 0, 0, 0).unwrap()),
            listen,
            ..Default::default()
        })
        .await
        {
            Ok(lab) => return lab,
            Err(easgate_lab::LabError::Bind { .. }) => continue,
            Err(e) => panic!("lab: {e}"),
        }
    }
    panic!("no free ports for a lab");
}

/// Lab latencies where every request takes `request_ms` and each `Set-CASMailbox` (an allow or
/// block list edit) `edit_ms`: slow edits keep a sync in its apply stage long enough for a test
/// to act in the middle of it.
pub fn slow_mailbox_edits(request_ms: u64, edit_ms: u64) -> easgate_lab::LatencyModel {
    let mut latency = easgate_lab::LatencyModel::uniform(request_ms, 0);
    latency.cmdlets.insert(
        "Set-CASMailbox".into(),
        easgate_lab::CmdletLatency {
            base_ms: edit_ms,
            per_object_us: 0,
        },
    );
    latency
}

/// The organization of the configuration the lab writes (secret inline), as the connector would
/// load it; tests adjust its fields.
pub fn lab_organization(lab: &easgate_lab::Lab) -> easgate::config::Organization {
    let text = lab.connector_config(&easgate_lab::SecretSource::Inline);
    let config = easgate::config::Config::from_toml(&text, std::path::Path::new("lab.toml"))
        .expect("the lab's configuration loads");
    config.organizations.into_iter().next().expect("one org")
}

/// A sync scenario `async fn name(transport)`, run as two tests, `name::rest` and
/// `name::powershell`: the suite is one, the transports two.
macro_rules! over_transports {
    ($name:ident) => {
        mod $name {
            use crate::support::Transport;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rest() {
                super::$name(Transport::Rest).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn powershell() {
                super::$name(Transport::PowerShell).await
            }
        }
    };
}

/// How the connector reaches the lab's Exchange: every sync test runs over both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The admin API's `InvokeCommand` (Exchange Online).
    Rest,
    /// Remote PowerShell at `/PowerShell/` (on-premises).
    PowerShell,
}

/// The lab's organization as the connector would configure it over `transport`: for
/// PowerShell, the `/PowerShell/` URLs of every CAS, Basic with the lab's service account, no
/// tenant.
pub fn organization_over(
    lab: &easgate_lab::Lab,
    transport: Transport,
) -> easgate::config::Organization {
    use easgate::config::{ExchangeAuth, ExchangeTransport, Secret, SecretSource};
    let mut org = lab_organization(lab);
    if transport == Transport::PowerShell {
        let (username, password) = lab.powershell_account();
        org.exchange.transport = ExchangeTransport::PowerShell;
        org.exchange.cas_urls = lab.powershell_urls();
        org.exchange.tenant_id = String::new();
        org.exchange.auth = ExchangeAuth::Basic {
            username,
            password: SecretSource::Inline(Secret::new(password)),
        };
    }
    org
}

/// Connection settings for tests: defaults, with short timeouts so a failure shows quickly.
pub fn test_http() -> easgate::net::HttpSettings {
    let net = easgate::config::Network {
        connect_timeout: std::time::Duration::from_secs(2),
        request_timeout: std::time::Duration::from_secs(10),
        ..Default::default()
    };
    easgate::net::HttpSettings::from_config(&net).expect("no proxy secret")
}

/// Runs `f` and fails the test if it takes longer than `limit`: client tests must end.
pub async fn within<T>(limit: std::time::Duration, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("did not finish within {limit:?}"))
}

/// Set to `1` (by `.ci/test`, which installs Chromium and Playwright) to make a missing browser
/// a failure instead of a skipped test.
pub const REQUIRE_BROWSER: &str = "EASGATE_REQUIRE_BROWSER";

/// The repository's root.
pub fn repo() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A file of the repository (`path` from its root), as an argument for the binary.
pub fn repo_file(path: &str) -> String {
    repo().join(path).display().to_string()
}

/// Why the browser test cannot run here, or `None` when it can.
pub fn browser_missing() -> Option<String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !std::path::Path::new(&chromium).exists() {
        return Some(format!("no Chromium at {chromium}"));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("no node on PATH".into());
    }
    if !repo()
        .join("tests/browser/node_modules/playwright-core")
        .exists()
    {
        return Some("tests/browser/node_modules has no playwright-core".into());
    }
    None
}
