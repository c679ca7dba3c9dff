//! Policy evaluation and plugin lifecycle figures for docs/benchmarks.md.
//!
//! `cargo bench -p easgate --bench policy_eval --features bench-cedar`
//!
//! * verdicts per second, one thread, batches of 1000 realistic device contexts, through
//!   (a) the built-in Wasm policy, (b) the same decision table in native Rust, (c) the same
//!   table as a Cedar policy set;
//! * compile time and per-call instantiate time of the built-in policy;
//! * hot-reload latency: file written → new digest active, through the real watcher.
//!
//! Each figure is the median of several runs in this one process, so ratios compare like with
//! like on a noisy machine.

use std::collections::{HashMap, HashSet};
use std::hint::black_box;
use std::str::FromStr;
use std::time::{Duration, Instant};

use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicyId,
    PolicySet, Request, RestrictedExpression,
};
use easgate::plugin::loaded::{LoadedPlugin, PluginSpec, load};
use easgate::plugin::registry::{BUILTIN_ACCESS_POLICY, RegistryOptions, load_builtin};
use easgate::plugin::types::{
    ComplianceState, Decision, DeviceContext, SyncInfo, SyncKind, Verdict,
};
use easgate::plugin::{Digest, PluginEngine, PluginRegistry, Source, World};
use wasmtime::component::Component;

const BATCH: usize = 1000;
const RUNS: usize = 7;

const SETTINGS: &str = r#"{
    "includedGroups": ["g-staff", "g-contractors"],
    "excludedGroups": ["g-vip"],
    "accessRules": [
        {"deviceClass": {"name": "SM-G991B", "type": "model"}, "accessLevel": "allow"},
        {"deviceClass": {"name": "Android", "type": "family"}, "accessLevel": "block"},
        {"deviceClass": {"name": "Outlook", "type": "family"}, "accessLevel": "quarantine"}
    ]
}"#;

fn main() {
    let devices = realistic_devices(BATCH);
    let info = SyncInfo {
        kind: SyncKind::Full,
        now: 1_735_689_600,
        organization: "contoso".into(),
    };
    let engine = PluginEngine::new().expect("engine");
    let LoadedPlugin::Access(wasm) =
        load_builtin(&engine, World::AccessPolicy, SETTINGS).expect("built-in")
    else {
        unreachable!()
    };
    let native = NativePolicy::default();
    let cedar = CedarPolicy::new();

    // The three must agree before their speeds mean anything.
    let from_wasm = wasm.decide(&info, &devices).expect("wasm decide").decisions;
    let from_native: Vec<Decision> = devices.iter().map(|d| native.decide(d)).collect();
    let from_cedar: Vec<Decision> = devices.iter().map(|d| cedar.decide(d)).collect();
    assert_eq!(from_wasm, from_native, "wasm and native disagree");
    assert_eq!(from_wasm, from_cedar, "wasm and cedar disagree");

    println!("policy evaluation, 1 thread, batches of {BATCH} devices, median of {RUNS} runs");
    let wasm_rate = rate(
        200,
        |devices| {
            black_box(wasm.decide(&info, devices).expect("decide"));
        },
        &devices,
    );
    let native_rate = rate(
        2000,
        |devices| {
            for device in devices {
                black_box(native.decide(device));
            }
        },
        &devices,
    );
    let cedar_rate = rate(
        5,
        |devices| {
            for device in devices {
                black_box(cedar.decide(device));
            }
        },
        &devices,
    );
    println!("  wasm (built-in plugin)  {:>12.0} verdicts/s", wasm_rate);
    println!(
        "  native rust             {:>12.0} verdicts/s  ({:.1}x wasm)",
        native_rate,
        native_rate / wasm_rate
    );
    println!(
        "  cedar-policy 4          {:>12.0} verdicts/s  ({:.3}x wasm)",
        cedar_rate,
        cedar_rate / wasm_rate
    );

    let compile = median_duration(RUNS, || {
        let started = Instant::now();
        black_box(Component::new(engine.engine(), BUILTIN_ACCESS_POLICY).expect("compile"));
        started.elapsed()
    });
    let load_total = median_duration(RUNS, || {
        let started = Instant::now();
        black_box(load_builtin(&engine, World::AccessPolicy, SETTINGS).expect("load"));
        started.elapsed()
    });
    let empty_call = median_duration(101, || {
        let started = Instant::now();
        black_box(wasm.decide(&info, &[]).expect("decide"));
        started.elapsed()
    });
    println!(
        "built-in policy ({} KiB)",
        BUILTIN_ACCESS_POLICY.len() / 1024
    );
    println!(
        "  compile (Component::new)                 {:>8.2} ms",
        ms(compile)
    );
    println!(
        "  load (compile + link + configure)        {:>8.2} ms",
        ms(load_total)
    );
    println!(
        "  per call: instantiate + configure        {:>8.1} µs",
        micros(empty_call)
    );

    hot_reload_latency(&engine);
}

/// Verdicts per second: the median over [`RUNS`] runs of `batches` batches each.
fn rate(
    batches: usize,
    mut decide: impl FnMut(&[DeviceContext]),
    devices: &[DeviceContext],
) -> f64 {
    let run = median_duration(RUNS, || {
        let started = Instant::now();
        for _ in 0..batches {
            decide(devices);
        }
        started.elapsed()
    });
    (batches * devices.len()) as f64 / run.as_secs_f64()
}

fn median_duration(runs: usize, mut measure: impl FnMut() -> Duration) -> Duration {
    let mut samples: Vec<Duration> = (0..runs).map(|_| measure()).collect();
    samples.sort();
    samples[runs / 2]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

/// File written → new digest active, through the real watcher; median of 25 swaps.
fn hot_reload_latency(engine: &PluginEngine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = RegistryOptions {
        dir: Some(dir.path().to_owned()),
        ..RegistryOptions::default()
    };
    let registry = PluginRegistry::new(engine.clone(), options).expect("registry");
    let _watcher = registry.watch().expect("watch");
    let path = dir.path().join("access-policy.wasm");
    let mut samples = Vec::new();
    for swap in 0..25 {
        // A unique custom section: a new digest, so every swap compiles for real.
        let bytes = with_custom_section(BUILTIN_ACCESS_POLICY, &format!("swap {swap}"));
        let digest = Digest::of(&bytes);
        let started = Instant::now();
        std::fs::write(&path, &bytes).expect("write plugin");
        while registry.access_policy().meta.digest != digest {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "swap {swap} never became active"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        samples.push(started.elapsed());
    }
    samples.sort();
    println!(
        "hot reload, file written -> new digest active (debounce {} ms), 25 swaps",
        easgate::plugin::registry::DEBOUNCE.as_millis()
    );
    println!(
        "  median {:.1} ms, min {:.1} ms, max {:.1} ms",
        ms(samples[12]),
        ms(samples[0]),
        ms(samples[24])
    );
    // Also prove a core-module write does not disturb the active version.
    let before = registry.access_policy().meta.digest;
    let junk = load(
        engine,
        PluginSpec {
            name: "junk".into(),
            bytes: b"\0asm\x01\0\0\0",
            source: Source::Builtin,
            manifest: None,
            settings_override: None,
        },
    );
    assert!(junk.is_err());
    assert_eq!(registry.access_policy().meta.digest, before);
}

fn with_custom_section(bytes: &[u8], tag: &str) -> Vec<u8> {
    let name = b"easgate-bench";
    let mut content = vec![name.len() as u8];
    content.extend_from_slice(name);
    content.extend_from_slice(tag.as_bytes());
    let mut out = bytes.to_vec();
    out.push(0);
    out.push(content.len() as u8);
    out.extend(content);
    out
}

/// Device contexts as a sync sends them: every string filled, a realistic mix of platforms,
/// enrolment and compliance states, and users in and out of scope.
fn realistic_devices(count: usize) -> Vec<DeviceContext> {
    use easgate::plugin::types::{AccessState, EasDevice, ManagedDevice, Ownership, User};
    let platforms = [
        (
            "iPhone",
            "iPhone15,2",
            "iOS 17.4.1 21E236",
            "Apple-iPhone15C2/2104.236",
            "iOS",
            "17.4.1",
        ),
        (
            "iPad",
            "iPad13,18",
            "iOS 16.7.2 20H115",
            "Apple-iPad13C18/2007.115",
            "iOS",
            "16.7.2",
        ),
        (
            "Android",
            "SM-S918B",
            "Android 14",
            "Android-SAMSUNG-SM-S918B/101.34",
            "Android",
            "14",
        ),
        (
            "Android",
            "SM-G991B",
            "Android 13",
            "Android-SAMSUNG-SM-G991B/100.22",
            "Android",
            "13",
        ),
        (
            "Android",
            "Pixel 8",
            "Android 14",
            "Android/14-EAS-2.0",
            "Android",
            "14",
        ),
        (
            "Outlook",
            "Outlook for iOS and Android",
            "iOS 17.2",
            "Outlook-iOS-Android/1.0",
            "iOS",
            "17.2",
        ),
    ];
    let compliance = [
        ComplianceState::Compliant,
        ComplianceState::Compliant,
        ComplianceState::Compliant,
        ComplianceState::Noncompliant,
        ComplianceState::InGracePeriod,
        ComplianceState::Conflict,
        ComplianceState::Error,
    ];
    let groups = [
        vec!["g-staff"],
        vec!["g-contractors", "g-eu"],
        vec!["g-staff", "g-vip"],
        vec!["g-other"],
    ];
    (0..count)
        .map(|i| {
            let (family, model, os, agent, platform, version) = platforms[i % platforms.len()];
            let user = format!("user{:05}@contoso.com", i / 2);
            let device_id = format!("{:08X}{:024X}", i * 7919, i * 104_729);
            DeviceContext {
                eas: EasDevice {
                    device_id: device_id.clone(),
                    identity: format!("{user}\\ExchangeActiveSyncDevices\\{family}§{device_id}"),
                    mailbox: user.clone(),
                    device_type: family.into(),
                    device_model: model.into(),
                    device_os: os.into(),
                    user_agent: agent.into(),
                    first_sync: Some(1_700_000_000 + i as i64),
                    last_success_sync: Some(1_735_000_000 + i as i64),
                    access_state: AccessState::Quarantined,
                    access_state_reason: "Global".into(),
                },
                // About 70 % enrolled, as in the lab.
                managed: (i % 10 < 7).then(|| ManagedDevice {
                    id: format!("{:08x}-0000-4000-8000-{:012x}", i, i * 31),
                    user_principal_name: user.clone(),
                    device_name: format!("{family} of user {}", i / 2),
                    operating_system: platform.into(),
                    os_version: version.into(),
                    compliance_state: compliance[i % compliance.len()],
                    management_state: "managed".into(),
                    ownership: if i % 3 == 0 {
                        Ownership::Personal
                    } else {
                        Ownership::Company
                    },
                    last_sync: Some(1_735_600_000),
                    enrolled: Some(1_700_000_000),
                }),
                user: (i % 50 != 0).then(|| User {
                    user_principal_name: user.clone(),
                    primary_smtp: user.clone(),
                    groups: groups[i % groups.len()]
                        .iter()
                        .map(|g| g.to_string())
                        .collect(),
                }),
            }
        })
        .collect()
}

/// The built-in policy's decision table in plain Rust, configured like [`SETTINGS`].
struct NativePolicy {
    included: HashSet<String>,
    excluded: HashSet<String>,
    model_rules: HashMap<String, Verdict>,
    family_rules: HashMap<String, Verdict>,
}

impl Default for NativePolicy {
    fn default() -> Self {
        Self {
            included: ["g-staff", "g-contractors"].map(String::from).into(),
            excluded: ["g-vip"].map(String::from).into(),
            model_rules: [("sm-g991b".to_owned(), Verdict::Allow)].into(),
            family_rules: [
                ("android".to_owned(), Verdict::Block),
                ("outlook".to_owned(), Verdict::Quarantine),
            ]
            .into(),
        }
    }
}

impl NativePolicy {
    fn decide(&self, device: &DeviceContext) -> Decision {
        let decision = |verdict, reason: &str, notify| Decision {
            verdict,
            reason: reason.to_owned(),
            notify,
        };
        if let Some(user) = &device.user {
            let included =
                self.included.is_empty() || user.groups.iter().any(|g| self.included.contains(g));
            let excluded = user.groups.iter().any(|g| self.excluded.contains(g));
            if !included || excluded {
                return decision(Verdict::Exempt, "out-of-scope", false);
            }
        }
        if let Some(managed) = &device.managed {
            return match managed.compliance_state {
                ComplianceState::Compliant | ComplianceState::InGracePeriod => {
                    decision(Verdict::Allow, "compliant", false)
                }
                _ => decision(Verdict::Block, "noncompliant", true),
            };
        }
        let rule = self
            .model_rules
            .get(&device.eas.device_model.to_ascii_lowercase())
            .or_else(|| {
                self.family_rules
                    .get(&device.eas.device_type.to_ascii_lowercase())
            });
        match rule {
            Some(&verdict) => decision(verdict, "device-rule", verdict != Verdict::Allow),
            None => decision(Verdict::Quarantine, "not-enrolled", true),
        }
    }
}

/// The same table in Cedar. Cedar answers permit/deny, not four verdicts, so every row is a
/// `permit` policy and the first row (in table order) among the determining policies wins; one
/// authorization request per device, entities built per request as a host would.
struct CedarPolicy {
    policies: PolicySet,
    rows: HashMap<PolicyId, (usize, Verdict, &'static str, bool)>,
    authorizer: Authorizer,
    action: EntityUid,
}

const CEDAR_POLICIES: &str = r#"
permit(principal in Group::"g-vip", action, resource) when { context.has_user };
permit(principal, action, resource) when {
    context.has_user && !(principal in Group::"g-staff" || principal in Group::"g-contractors")
};
permit(principal, action, resource) when {
    resource.enrolled && (resource.compliance == "compliant" || resource.compliance == "inGracePeriod")
};
permit(principal, action, resource) when {
    resource.enrolled && !(resource.compliance == "compliant" || resource.compliance == "inGracePeriod")
};
permit(principal, action, resource) when { !resource.enrolled && resource.model == "sm-g991b" };
permit(principal, action, resource) when { !resource.enrolled && resource.family == "android" };
permit(principal, action, resource) when { !resource.enrolled && resource.family == "outlook" };
permit(principal, action, resource) when { !resource.enrolled };
"#;

impl CedarPolicy {
    fn new() -> Self {
        let policies = PolicySet::from_str(CEDAR_POLICIES).expect("cedar policies parse");
        // Row order of the table; rows 4 and 5 rank model before family, as the built-in does.
        let rows_in_order = [
            (0, Verdict::Exempt, "out-of-scope", false),
            (0, Verdict::Exempt, "out-of-scope", false),
            (1, Verdict::Allow, "compliant", false),
            (2, Verdict::Block, "noncompliant", true),
            (3, Verdict::Allow, "device-rule", false),
            (4, Verdict::Block, "device-rule", true),
            (4, Verdict::Quarantine, "device-rule", true),
            (5, Verdict::Quarantine, "not-enrolled", true),
        ];
        let rows = rows_in_order
            .into_iter()
            .enumerate()
            .map(|(index, row)| (PolicyId::new(format!("policy{index}")), row))
            .collect();
        let action = EntityUid::from_type_name_and_id(
            EntityTypeName::from_str("Action").expect("type"),
            EntityId::new("sync"),
        );
        Self {
            policies,
            rows,
            authorizer: Authorizer::new(),
            action,
        }
    }

    fn decide(&self, device: &DeviceContext) -> Decision {
        let user_type = EntityTypeName::from_str("User").expect("type");
        let group_type = EntityTypeName::from_str("Group").expect("type");
        let device_type = EntityTypeName::from_str("Device").expect("type");
        let principal = EntityUid::from_type_name_and_id(
            user_type,
            EntityId::new(
                device
                    .user
                    .as_ref()
                    .map_or("nobody", |u| u.user_principal_name.as_str()),
            ),
        );
        let resource =
            EntityUid::from_type_name_and_id(device_type, EntityId::new(&device.eas.device_id));
        let parents: HashSet<EntityUid> = device
            .user
            .iter()
            .flat_map(|user| &user.groups)
            .map(|group| EntityUid::from_type_name_and_id(group_type.clone(), EntityId::new(group)))
            .collect();
        let compliance = device
            .managed
            .as_ref()
            .map_or("none", |m| match m.compliance_state {
                ComplianceState::Compliant => "compliant",
                ComplianceState::InGracePeriod => "inGracePeriod",
                _ => "other",
            });
        let attrs = HashMap::from([
            (
                "enrolled".to_owned(),
                RestrictedExpression::new_bool(device.managed.is_some()),
            ),
            (
                "compliance".to_owned(),
                RestrictedExpression::new_string(compliance.to_owned()),
            ),
            (
                "model".to_owned(),
                RestrictedExpression::new_string(device.eas.device_model.to_ascii_lowercase()),
            ),
            (
                "family".to_owned(),
                RestrictedExpression::new_string(device.eas.device_type.to_ascii_lowercase()),
            ),
        ]);
        let entities = Entities::from_entities(
            [
                Entity::new_no_attrs(principal.clone(), parents),
                Entity::new(resource.clone(), attrs, HashSet::new()).expect("entity"),
            ],
            None,
        )
        .expect("entities");
        let context = Context::from_pairs([(
            "has_user".to_owned(),
            RestrictedExpression::new_bool(device.user.is_some()),
        )])
        .expect("context");
        let request =
            Request::new(principal, self.action.clone(), resource, context, None).expect("request");
        let response = self
            .authorizer
            .is_authorized(&request, &self.policies, &entities);
        let (_, verdict, reason, notify) = response
            .diagnostics()
            .reason()
            .map(|id| self.rows[id])
            .min_by_key(|row| row.0)
            .expect("the last row always matches");
        Decision {
            verdict,
            reason: reason.to_owned(),
            notify,
        }
    }
}
