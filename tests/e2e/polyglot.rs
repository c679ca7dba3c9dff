//! Plugins in Python and JavaScript, built with their standard component toolchains
//! (componentize-py, componentize-js) from `plugins/examples/{python,js}-policy`, then loaded,
//! tested and hot-reloaded exactly like a Rust plugin. Plus the compile cache across restarts.
//!
//! A test whose toolchain is absent says so on stderr and passes, unless
//! `EASGATE_REQUIRE_POLYGLOT=1` (set by `.ci/run`, which installs both) makes that a failure.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use easgate::plugin::json::TestCase;
use easgate::plugin::loaded::{LoadedPlugin, PluginSpec, load};
use easgate::plugin::registry::{BUILTIN_ACCESS_POLICY, RegistryOptions};
use easgate::plugin::{
    AccessPolicyPlugin, CompiledFrom, Digest, PluginEngine, PluginError, PluginRegistry, Source,
    types,
};

use crate::support::{device, repo, stderr, stdout, sync_info, wait_for_active};

const REQUIRE: &str = "EASGATE_REQUIRE_POLYGLOT";
/// How long an installed plugin may take to become active: compiling a Python one takes seconds.
const COMPILE_LIMIT: Duration = Duration::from_secs(120);

/// A component built by an example's `build.sh`, which puts its manifest beside it.
struct Built {
    wasm: PathBuf,
    cases: PathBuf,
}

/// Why a toolchain cannot run here, or `None` when it can.
fn missing_toolchain(example: &str) -> Option<String> {
    let runs = |program: &str, arg: &str| {
        Command::new(program)
            .arg(arg)
            .output()
            .is_ok_and(|output| output.status.success())
    };
    match example {
        "python-policy" if !runs("componentize-py", "--version") => {
            Some("componentize-py is not on PATH".into())
        }
        "js-policy" if !runs("node", "--version") => Some("node is not on PATH".into()),
        "js-policy"
            if !repo()
                .join("plugins/examples/js-policy/node_modules/@bytecodealliance/componentize-js")
                .is_dir() =>
        {
            Some(
                "componentize-js is not installed: run `npm ci` in plugins/examples/js-policy"
                    .into(),
            )
        }
        _ => None,
    }
}

/// Builds `example` once per test run, into the target directory; `None` (after saying why)
/// when its toolchain is absent and [`REQUIRE`] is not set. A build that fails is a failure.
fn built(example: &'static str) -> Option<&'static Built> {
    static PYTHON: OnceLock<Option<Built>> = OnceLock::new();
    static JS: OnceLock<Option<Built>> = OnceLock::new();
    static PROBE: OnceLock<Option<Built>> = OnceLock::new();
    let cell = match example {
        "python-policy" => &PYTHON,
        "js-policy" => &JS,
        "python-probe" => &PROBE,
        other => panic!("no example {other}"),
    };
    cell.get_or_init(|| build(example)).as_ref()
}

fn build(example: &str) -> Option<Built> {
    let toolchain = if example == "python-probe" {
        "python-policy"
    } else {
        example
    };
    if let Some(why) = missing_toolchain(toolchain) {
        if std::env::var(REQUIRE).is_ok_and(|v| v == "1") {
            panic!("{REQUIRE}=1 but the {example} toolchain is missing: {why}");
        }
        // Straight to the process's stderr: the test harness would swallow an `eprintln!`
        // of a passing test, and a skip must be seen.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: the {example} tests need its toolchain, and {why} \
             (.ci/install-plugin-toolchains installs it)"
        );
        return None;
    }
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("polyglot")
        .join(example);
    std::fs::create_dir_all(&out_dir).unwrap();
    let wasm = out_dir.join(format!("{example}.wasm"));
    let started = Instant::now();
    let output = if example == "python-probe" {
        // A test fixture, not an example: no build script of its own.
        Command::new("componentize-py")
            .current_dir(repo().join("tests/e2e/fixtures/python-probe"))
            .args(["--wit-path", "../../../../wit", "--world", "access-policy"])
            .args(["componentize", "--python-path", ".", "app", "--output"])
            .arg(&wasm)
            .output()
    } else {
        Command::new("bash")
            .arg(repo().join(format!("plugins/examples/{example}/build.sh")))
            .arg(&wasm)
            .output()
    }
    .unwrap();
    assert!(
        output.status.success(),
        "building {example} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!(
        "built {example} in {:.1} s: {} bytes",
        started.elapsed().as_secs_f64(),
        std::fs::metadata(&wasm).unwrap().len()
    );
    let example_dir = repo().join(format!("plugins/examples/{example}"));
    Some(Built {
        wasm,
        cases: example_dir.join("CASES.json"),
    })
}

fn case_count(cases: &Path) -> usize {
    let cases: Vec<TestCase> =
        serde_json::from_str(&std::fs::read_to_string(cases).unwrap()).unwrap();
    cases.len()
}

/// `easgate policy test` on the built component, then `policy check` twice sharing one compile
/// cache: the second run (a restart) loads the code instead of compiling it.
fn passes_its_cases_and_restarts_from_the_cache(example: &'static str) {
    let Some(built) = built(example) else { return };
    let wasm = built.wasm.to_str().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_easgate"))
            .args(args)
            .env("EASGATE_LOG", "warn")
            .env("EASGATE_COMPILE_CACHE", cache.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "easgate {args:?}:\n{}\n{}",
            stdout(&output),
            stderr(&output)
        );
        stdout(&output)
    };

    let out = run(&["policy", "test", wasm, built.cases.to_str().unwrap()]);
    let expected = format!("{} passed, 0 failed", case_count(&built.cases));
    assert!(out.contains(&expected), "{out}");

    let out = run(&["policy", "check", wasm]);
    assert!(
        out.contains("compiled     loaded from the compile cache"),
        "{out}"
    );
    assert!(out.contains("self-checks  2 passed"), "{out}");
    assert!(out.contains("world        access-policy"), "{out}");
}

#[test]
fn python_policy_passes_its_cases_and_restarts_from_the_cache() {
    passes_its_cases_and_restarts_from_the_cache("python-policy");
}

#[test]
fn js_policy_passes_its_cases_and_restarts_from_the_cache() {
    passes_its_cases_and_restarts_from_the_cache("js-policy");
}

/// Installs `built` as the plugin `name` the way an operator should: manifest first, then the
/// component, each written aside and renamed into place so the watcher never sees half a file.
fn install(dir: &Path, name: &str, built: &Built) -> Digest {
    let manifest = std::fs::read(built.wasm.with_extension("toml")).unwrap();
    let wasm = std::fs::read(&built.wasm).unwrap();
    for (bytes, extension) in [(&manifest, "toml"), (&wasm, "wasm")] {
        let aside = dir.join(format!(".{name}.{extension}.partial"));
        std::fs::write(&aside, bytes).unwrap();
        std::fs::rename(&aside, dir.join(format!("{name}.{extension}"))).unwrap();
    }
    Digest::of(&wasm)
}

/// An enrolled, noncompliant personal iPhone on iOS 16, enrolled a day before `sync_info().now`.
fn old_noncompliant_iphone(id: &str) -> types::DeviceContext {
    let mut device = device(id);
    let managed = device.managed.as_mut().unwrap();
    managed.os_version = "16.1".into();
    managed.compliance_state = types::ComplianceState::Noncompliant;
    managed.ownership = types::Ownership::Personal;
    managed.enrolled = Some(sync_info().now - 86_400);
    device
}

/// An enrolled, compliant personal iPhone on iOS 16.
fn old_compliant_iphone(id: &str) -> types::DeviceContext {
    let mut device = old_noncompliant_iphone(id);
    device.managed.as_mut().unwrap().compliance_state = types::ComplianceState::Compliant;
    device
}

#[test]
fn a_running_registry_hot_reloads_builtin_then_python_then_js() {
    let (Some(python), Some(js)) = (built("python-policy"), built("js-policy")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let options = RegistryOptions {
        dir: Some(dir.path().to_owned()),
        ..RegistryOptions::default()
    };
    let registry = PluginRegistry::new(PluginEngine::new().unwrap(), options).unwrap();
    let _watcher = registry.watch().unwrap();
    let builtin = registry.access_policy().meta.digest;
    // A full batch, under each manifest's own time and memory limits.
    let batch: Vec<_> = (0..1000)
        .map(|i| old_compliant_iphone(&format!("D{i}")))
        .collect();
    let decide = |policy: &AccessPolicyPlugin, device: types::DeviceContext| {
        let verdicts = policy.decide(&sync_info(), &[device]).unwrap();
        let decision = &verdicts.decisions[0];
        (decision.verdict, decision.reason.clone())
    };

    let python_digest = install(dir.path(), "access-policy", python);
    let policy = wait_for_active(&registry, python_digest, COMPILE_LIMIT);
    assert_ne!(python_digest, builtin);
    assert_eq!(
        decide(&policy, old_compliant_iphone("P1")),
        (types::Verdict::Block, "os-too-old".into())
    );
    let verdicts = policy.decide(&sync_info(), &batch).unwrap();
    assert_eq!(verdicts.decisions.len(), batch.len());
    assert!(verdicts.decisions.iter().all(|d| d.reason == "os-too-old"));

    let js_digest = install(dir.path(), "access-policy", js);
    let policy = wait_for_active(&registry, js_digest, COMPILE_LIMIT);
    assert_eq!(
        decide(&policy, old_noncompliant_iphone("J1")),
        (types::Verdict::Allow, "grace-period".into())
    );
    let verdicts = policy.decide(&sync_info(), &batch).unwrap();
    assert!(verdicts.decisions.iter().all(|d| d.reason == "compliant"));

    std::fs::remove_file(dir.path().join("access-policy.wasm")).unwrap();
    wait_for_active(&registry, builtin, COMPILE_LIMIT);
}

/// The probe policy with `settings`, deciding one device.
fn probe(engine: &PluginEngine, built: &Built, probe: &str) -> Result<String, PluginError> {
    let bytes = std::fs::read(&built.wasm).unwrap();
    let loaded = load(
        engine,
        PluginSpec {
            name: "python-probe".into(),
            bytes: &bytes,
            source: Source::File(built.wasm.clone()),
            manifest: None,
            settings_override: Some(serde_json::json!({ "probe": probe }).to_string()),
        },
    )?;
    let LoadedPlugin::Access(policy) = loaded else {
        panic!("the probe is an access policy")
    };
    let verdicts = policy.decide(&sync_info(), &[device("X")])?;
    Ok(verdicts.decisions[0].reason.clone())
}

#[test]
fn a_python_plugin_gets_no_files_environment_network_or_sleep() {
    let Some(built) = built("python-probe") else {
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let engine = PluginEngine::builder()
        .compile_cache(cache.path())
        .build()
        .unwrap();
    for attempt in ["open", "listdir", "environ", "socket"] {
        assert_eq!(
            probe(&engine, built, attempt).unwrap(),
            "denied",
            "{attempt}"
        );
    }
    // Python's `time.sleep` waits on a wasi:io pollable of an older WASI than the host's: the
    // host's refusal must reach it all the same, or it would hold a thread past its deadline.
    let err = probe(&engine, built, "sleep").unwrap_err().to_string();
    assert!(err.contains("plugins may not wait or sleep"), "{err}");
    // And a probe that does not exist traps rather than passing for a denial.
    let err = probe(&engine, built, "nonsense").unwrap_err().to_string();
    assert!(err.contains("decide trapped"), "{err}");
}

fn load_builtin_file(engine: &PluginEngine) -> Arc<AccessPolicyPlugin> {
    let loaded = load(
        engine,
        PluginSpec {
            name: "access-policy".into(),
            bytes: BUILTIN_ACCESS_POLICY,
            source: Source::Builtin,
            manifest: None,
            settings_override: None,
        },
    )
    .unwrap();
    match loaded {
        LoadedPlugin::Access(policy) => policy,
        LoadedPlugin::Notice(_) => panic!("the built-in policy is an access policy"),
    }
}

/// Needs no toolchain: the built-in policy goes through the same cache as any plugin.
#[test]
fn the_compile_cache_survives_restarts_and_recovers_from_a_corrupt_entry() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("compiled");
    let restart = || {
        PluginEngine::builder()
            .compile_cache(&cache)
            .build()
            .unwrap()
    };
    let expected = load_builtin_file(&PluginEngine::new().unwrap())
        .decide(&sync_info(), &[device("A")])
        .unwrap()
        .decisions;

    let first = load_builtin_file(&restart());
    assert_eq!(first.meta.compilation.from, CompiledFrom::Wasm);
    let second = load_builtin_file(&restart());
    assert_eq!(second.meta.compilation.from, CompiledFrom::Cache);
    assert_eq!(
        second
            .decide(&sync_info(), &[device("A")])
            .unwrap()
            .decisions,
        expected
    );

    // Damage every entry (there is one): the next start compiles again, works, and repairs it.
    let entries: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let mut bytes = std::fs::read(&entries[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] = bytes[middle].wrapping_add(1);
    std::fs::write(&entries[0], &bytes).unwrap();
    let third = load_builtin_file(&restart());
    assert_eq!(third.meta.compilation.from, CompiledFrom::Wasm);
    assert_eq!(
        third
            .decide(&sync_info(), &[device("A")])
            .unwrap()
            .decisions,
        expected
    );
    let fourth = load_builtin_file(&restart());
    assert_eq!(fourth.meta.compilation.from, CompiledFrom::Cache);

    // Garbage where the cache directory should be is a start-up error that names it.
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = PluginEngine::builder()
        .compile_cache(&file)
        .build()
        .err()
        .expect("a file is no cache directory")
        .to_string();
    assert!(err.contains("not-a-dir"), "{err}");
}

#[test]
fn the_easgate_binary_runs_without_a_cache_by_default() {
    let output = Command::new(env!("CARGO_BIN_EXE_easgate"))
        .args(["policy", "check", "builtin:access-policy"])
        .env("EASGATE_LOG", "warn")
        .env_remove("EASGATE_COMPILE_CACHE")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("compiled     in "),
        "{}",
        stdout(&output)
    );
}
