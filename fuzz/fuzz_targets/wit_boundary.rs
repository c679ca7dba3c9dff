//! The WIT boundary: arbitrary device contexts (any strings, timestamps, enum values, present
//! or absent records, up to 64 devices) through the built-in access policy, compiled and
//! sandboxed as in production. Every call must succeed with exactly one decision per device,
//! each with a valid reason — the host checks that too, so a violation shows up either as our
//! assertion or as a `WrongCount`/`InvalidReason` error, both of which fail the target.
#![no_main]

use std::sync::{Arc, LazyLock};

use arbitrary::Arbitrary;
use easgate::plugin::loaded::LoadedPlugin;
use easgate::plugin::registry::load_builtin;
use easgate::plugin::types::{
    AccessState, ComplianceState, DeviceContext, EasDevice, ManagedDevice, Ownership, SyncInfo,
    SyncKind, User,
};
use easgate::plugin::{AccessPolicyPlugin, PluginEngine, World};
use libfuzzer_sys::fuzz_target;

/// Settings that reach every branch of the built-in policy: groups in and out of scope and an
/// access rule of each kind.
const SETTINGS: &str = r#"{
    "includedGroups": ["g-staff", "g-contractors"],
    "excludedGroups": ["g-vip"],
    "accessRules": [
        {"deviceClass": {"name": "SM-G991B", "type": "model"}, "accessLevel": "allow"},
        {"deviceClass": {"name": "Android", "type": "family"}, "accessLevel": "block"},
        {"deviceClass": {"name": "Outlook", "type": "family"}, "accessLevel": "quarantine"}
    ]
}"#;

/// Compiling the component takes a while: once per fuzzing process. The engine is kept with
/// the plugin: its epoch ticker enforces the CPU deadline.
static POLICY: LazyLock<(PluginEngine, Arc<AccessPolicyPlugin>)> = LazyLock::new(|| {
    let engine = PluginEngine::new().expect("the plugin engine starts");
    match load_builtin(&engine, World::AccessPolicy, SETTINGS).expect("the built-in loads") {
        LoadedPlugin::Access(policy) => (engine, policy),
        LoadedPlugin::Notice(_) => unreachable!("asked for the access-policy world"),
    }
});

#[derive(Debug, Arbitrary)]
struct Input {
    kind: u8,
    now: i64,
    organization: String,
    devices: Vec<Device>,
}

#[derive(Debug, Arbitrary)]
struct Device {
    eas: Eas,
    managed: Option<Managed>,
    user: Option<Owner>,
}

#[derive(Debug, Arbitrary)]
struct Eas {
    device_id: String,
    identity: String,
    mailbox: String,
    /// Mostly the families the settings name, so the rules are exercised.
    device_type: Choice,
    device_model: Choice,
    device_os: String,
    user_agent: String,
    first_sync: Option<i64>,
    last_success_sync: Option<i64>,
    access_state: u8,
    access_state_reason: String,
}

#[derive(Debug, Arbitrary)]
struct Managed {
    id: String,
    user_principal_name: String,
    device_name: String,
    operating_system: String,
    os_version: String,
    compliance_state: u8,
    management_state: String,
    ownership: u8,
    last_sync: Option<i64>,
    enrolled: Option<i64>,
}

#[derive(Debug, Arbitrary)]
struct Owner {
    user_principal_name: String,
    primary_smtp: String,
    groups: Vec<Choice>,
}

/// A value the settings name, or any string.
#[derive(Debug, Arbitrary)]
enum Choice {
    Known(u8),
    Any(String),
}

impl Choice {
    fn into_string(self) -> String {
        const KNOWN: [&str; 8] = [
            "Android",
            "Outlook",
            "iPhone",
            "SM-G991B",
            "g-staff",
            "g-contractors",
            "g-vip",
            "",
        ];
        match self {
            Choice::Known(i) => KNOWN[usize::from(i) % KNOWN.len()].to_owned(),
            Choice::Any(s) => s,
        }
    }
}

fn access_state(n: u8) -> AccessState {
    match n % 5 {
        0 => AccessState::Unknown,
        1 => AccessState::Allowed,
        2 => AccessState::Blocked,
        3 => AccessState::Quarantined,
        _ => AccessState::DeviceDiscovery,
    }
}

fn compliance_state(n: u8) -> ComplianceState {
    match n % 7 {
        0 => ComplianceState::Unknown,
        1 => ComplianceState::Compliant,
        2 => ComplianceState::Noncompliant,
        3 => ComplianceState::Conflict,
        4 => ComplianceState::Error,
        5 => ComplianceState::InGracePeriod,
        _ => ComplianceState::ConfigManager,
    }
}

fn ownership(n: u8) -> Ownership {
    match n % 3 {
        0 => Ownership::Unknown,
        1 => Ownership::Company,
        _ => Ownership::Personal,
    }
}

impl From<Device> for DeviceContext {
    fn from(d: Device) -> Self {
        DeviceContext {
            eas: EasDevice {
                device_id: d.eas.device_id,
                identity: d.eas.identity,
                mailbox: d.eas.mailbox,
                device_type: d.eas.device_type.into_string(),
                device_model: d.eas.device_model.into_string(),
                device_os: d.eas.device_os,
                user_agent: d.eas.user_agent,
                first_sync: d.eas.first_sync,
                last_success_sync: d.eas.last_success_sync,
                access_state: access_state(d.eas.access_state),
                access_state_reason: d.eas.access_state_reason,
            },
            managed: d.managed.map(|m| ManagedDevice {
                id: m.id,
                user_principal_name: m.user_principal_name,
                device_name: m.device_name,
                operating_system: m.operating_system,
                os_version: m.os_version,
                compliance_state: compliance_state(m.compliance_state),
                management_state: m.management_state,
                ownership: ownership(m.ownership),
                last_sync: m.last_sync,
                enrolled: m.enrolled,
            }),
            user: d.user.map(|u| User {
                user_principal_name: u.user_principal_name,
                primary_smtp: u.primary_smtp,
                groups: u.groups.into_iter().map(Choice::into_string).collect(),
            }),
        }
    }
}

fn valid_reason(reason: &str) -> bool {
    (1..=64).contains(&reason.len())
        && reason
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fuzz_target!(|input: Input| {
    let info = SyncInfo {
        kind: match input.kind % 3 {
            0 => SyncKind::Quick,
            1 => SyncKind::Full,
            _ => SyncKind::WhatIf,
        },
        now: input.now,
        organization: input.organization,
    };
    let devices: Vec<DeviceContext> = input
        .devices
        .into_iter()
        .take(64)
        .map(DeviceContext::from)
        .collect();
    let verdicts = POLICY
        .1
        .decide(&info, &devices)
        .unwrap_or_else(|e| panic!("the built-in policy failed: {e}"));
    assert_eq!(verdicts.decisions.len(), devices.len(), "decision count");
    for (i, d) in verdicts.decisions.iter().enumerate() {
        assert!(valid_reason(&d.reason), "device {i}: reason {:?}", d.reason);
    }
});
