//! What a plugin's language costs: the built-in Rust policy next to the Python and JavaScript
//! examples, for docs/benchmarks.md.
//!
//! ```sh
//! bash .ci/install-plugin-toolchains
//! plugins/examples/python-policy/build.sh && plugins/examples/js-policy/build.sh
//! cargo bench -p easgate --bench polyglot
//! ```
//!
//! Per plugin: component size; compile time from Wasm (cold) and from the compile cache (a
//! restart); one call's fixed cost (instantiate + configure, deciding no device); verdicts per
//! second on batches of 1000 devices, one thread; and the smallest `memory_mib` under which a
//! batch of 1000 still succeeds. Each time is the median of several runs in this one process.
//! A plugin whose component is not built is reported as such and skipped.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use easgate::plugin::loaded::{LoadedPlugin, PluginSpec, load};
use easgate::plugin::manifest::Manifest;
use easgate::plugin::registry::BUILTIN_ACCESS_POLICY;
use easgate::plugin::types::{
    AccessState, ComplianceState, DeviceContext, EasDevice, ManagedDevice, Ownership, SyncInfo,
    SyncKind, User,
};
use easgate::plugin::{AccessPolicyPlugin, CompiledFrom, PluginEngine, Source};
use wasmtime::component::Component;

const BATCH: usize = 1000;

struct Subject {
    label: &'static str,
    bytes: Vec<u8>,
    /// The example's manifest (settings and limits); `None` for the built-in.
    manifest: Option<Manifest>,
}

fn main() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut subjects = vec![Subject {
        label: "Rust (built-in access-policy)",
        bytes: BUILTIN_ACCESS_POLICY.to_vec(),
        manifest: None,
    }];
    for (label, example) in [
        ("Python (python-policy)", "python-policy"),
        ("JavaScript (js-policy)", "js-policy"),
    ] {
        let dir = repo.join("plugins/examples").join(example);
        let wasm = dir.join("target").join(format!("{example}.wasm"));
        match std::fs::read(&wasm) {
            Ok(bytes) => subjects.push(Subject {
                label,
                bytes,
                manifest: Some(
                    Manifest::load(&dir.join(format!("{example}.toml"))).expect("manifest"),
                ),
            }),
            Err(err) => println!(
                "{label}: skipped, {} is not built ({err}); run {}/build.sh",
                wasm.display(),
                dir.display()
            ),
        }
    }

    let devices = devices(BATCH);
    let info = SyncInfo {
        kind: SyncKind::Full,
        now: 1_735_689_600,
        organization: "contoso".into(),
    };
    println!(
        "| plugin | component | compile (cold) | compile cache load | per call: instantiate + configure | verdicts/s (batches of {BATCH}) | smallest memory_mib for a batch |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for subject in &subjects {
        measure(subject, &info, &devices);
    }
}

fn measure(subject: &Subject, info: &SyncInfo, devices: &[DeviceContext]) {
    let engine = PluginEngine::new().expect("engine");
    let compile = median(3, || {
        let started = Instant::now();
        black_box(Component::new(engine.engine(), &subject.bytes).expect("compile"));
        started.elapsed()
    });

    // A restart: a new engine over the same cache directory. The first load fills it.
    let cache = tempfile::tempdir().expect("temp dir");
    let cached_engine = || {
        PluginEngine::builder()
            .compile_cache(cache.path())
            .build()
            .expect("engine")
    };
    load_with(&cached_engine(), subject, None);
    let cache_load = median(5, || {
        let plugin = load_with(&cached_engine(), subject, None);
        assert_eq!(plugin.meta.compilation.from, CompiledFrom::Cache);
        plugin.meta.compilation.took
    });

    let plugin = load_with(&engine, subject, None);
    let call = median(21, || {
        let started = Instant::now();
        black_box(plugin.decide(info, &[]).expect("decide"));
        started.elapsed()
    });
    // Enough batches per run for about a second of work, at least one.
    let one = median(3, || {
        let started = Instant::now();
        black_box(plugin.decide(info, devices).expect("decide"));
        started.elapsed()
    });
    let batches = (Duration::from_secs(1).as_secs_f64() / one.as_secs_f64()).ceil() as usize;
    let run = median(5, || {
        let started = Instant::now();
        for _ in 0..batches {
            black_box(plugin.decide(info, devices).expect("decide"));
        }
        started.elapsed()
    });
    let rate = (batches * devices.len()) as f64 / run.as_secs_f64();

    let engine = cached_engine();
    let memory = smallest_memory_mib(|mib| {
        let Some(plugin) = try_load_with(&engine, subject, Some(mib)) else {
            return false;
        };
        plugin.decide(info, devices).is_ok()
    });

    println!(
        "| {} | {:.1} MiB | {:.0} ms | {:.0} ms | {:.2} ms | {:.0} | {memory} |",
        subject.label,
        subject.bytes.len() as f64 / (1 << 20) as f64,
        ms(compile),
        ms(cache_load),
        ms(call),
        rate,
    );
}

/// The smallest MiB in 1..=1024 for which `works` holds, assuming more never hurts.
fn smallest_memory_mib(mut works: impl FnMut(u64) -> bool) -> String {
    let (mut low, mut high) = (0, 1024);
    if !works(high) {
        return "over 1024".into();
    }
    while high - low > 1 {
        let middle = (low + high) / 2;
        if works(middle) {
            high = middle;
        } else {
            low = middle;
        }
    }
    high.to_string()
}

fn load_with(
    engine: &PluginEngine,
    subject: &Subject,
    memory_mib: Option<u64>,
) -> std::sync::Arc<AccessPolicyPlugin> {
    try_load_with(engine, subject, memory_mib).expect("the plugin loads")
}

/// Loads `subject` with its manifest, the memory limit replaced by `memory_mib` if given
/// (the manifest's timeout, or a generous one for the built-in, so only memory can fail).
fn try_load_with(
    engine: &PluginEngine,
    subject: &Subject,
    memory_mib: Option<u64>,
) -> Option<std::sync::Arc<AccessPolicyPlugin>> {
    let mut manifest = subject.manifest.clone().unwrap_or_else(|| {
        Manifest::parse("world = \"access-policy\"", "built-in").expect("manifest")
    });
    manifest.limits.timeout_ms.get_or_insert(5000);
    if memory_mib.is_some() {
        manifest.limits.memory_mib = memory_mib;
    }
    let loaded = load(
        engine,
        PluginSpec {
            name: "bench".into(),
            bytes: &subject.bytes,
            source: Source::File(PathBuf::from(subject.label)),
            manifest: Some(manifest),
            settings_override: None,
        },
    );
    match loaded {
        Ok(LoadedPlugin::Access(plugin)) => Some(plugin),
        Ok(LoadedPlugin::Notice(_)) => panic!("{} is not an access policy", subject.label),
        Err(_) => None,
    }
}

fn median(runs: usize, mut measure: impl FnMut() -> Duration) -> Duration {
    let mut samples: Vec<Duration> = (0..runs).map(|_| measure()).collect();
    samples.sort();
    samples[runs / 2]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// A mix of platforms, OS versions, ownership, compliance and enrolment ages, so each policy
/// takes each of its branches.
fn devices(count: usize) -> Vec<DeviceContext> {
    let platforms = [
        ("iPhone", "iOS", "17.4.1"),
        ("iPad", "iOS", "16.7.2"),
        ("Android", "Android", "14"),
        ("Android", "Android", "12"),
        ("WindowsMail", "Windows", "10.0.19045.3803"),
        ("Mac", "macOS", "14.4"),
    ];
    let compliance = [
        ComplianceState::Compliant,
        ComplianceState::Compliant,
        ComplianceState::Noncompliant,
        ComplianceState::InGracePeriod,
        ComplianceState::Unknown,
    ];
    let ownership = [Ownership::Company, Ownership::Personal, Ownership::Unknown];
    (0..count)
        .map(|i| {
            let (family, os, version) = platforms[i % platforms.len()];
            let upn = format!("user{}@contoso.com", i % 400);
            let managed = (i % 11 != 0).then(|| ManagedDevice {
                id: format!("m-{i}"),
                user_principal_name: upn.clone(),
                device_name: format!("{family} {i}"),
                operating_system: os.into(),
                os_version: version.into(),
                compliance_state: compliance[i % compliance.len()],
                management_state: "managed".into(),
                ownership: ownership[i % ownership.len()],
                last_sync: Some(1_735_600_000),
                enrolled: Some(1_735_689_600 - (i as i64 % 30) * 86_400),
            });
            DeviceContext {
                eas: EasDevice {
                    device_id: format!("DEV{i:06}"),
                    identity: format!("{upn}\\ExchangeActiveSyncDevices\\{family}§DEV{i:06}"),
                    mailbox: upn.clone(),
                    device_type: family.into(),
                    device_model: format!("{family}-model"),
                    device_os: format!("{os} {version}"),
                    user_agent: format!("{family}/1.0"),
                    first_sync: Some(1_700_000_000),
                    last_success_sync: Some(1_735_600_000),
                    access_state: AccessState::Quarantined,
                    access_state_reason: "Global".into(),
                },
                managed,
                user: Some(User {
                    user_principal_name: upn.clone(),
                    primary_smtp: upn,
                    groups: vec!["g-staff".into()],
                }),
            }
        })
        .collect()
}
