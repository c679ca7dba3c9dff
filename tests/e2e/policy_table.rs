//! The built-in access policy's decision table, row by row, through the real Wasm component.

use easgate::plugin::registry::load_builtin;
use easgate::plugin::types::{ComplianceState, DeviceContext, Verdict};
use easgate::plugin::{PluginEngine, World};

use crate::support::{builtin, device, sync_info};

const SETTINGS: &str = r#"{
    "includedGroups": ["g-staff", "g-contractors"],
    "excludedGroups": ["g-vip"],
    "accessRules": [
        {"deviceClass": {"name": "SM-G991B", "type": "model"}, "accessLevel": "allow"},
        {"deviceClass": {"name": "Android", "type": "family"}, "accessLevel": "block"},
        {"deviceClass": {"name": "Outlook", "type": "family"}, "accessLevel": "quarantine"}
    ]
}"#;

fn staff() -> DeviceContext {
    let mut ctx = device("D1");
    ctx.user.as_mut().unwrap().groups = vec!["g-staff".into()];
    ctx
}

fn unenrolled(device_type: &str, model: &str) -> DeviceContext {
    let mut ctx = staff();
    ctx.managed = None;
    ctx.eas.device_type = device_type.into();
    ctx.eas.device_model = model.into();
    ctx
}

fn compliance(state: ComplianceState) -> DeviceContext {
    let mut ctx = staff();
    ctx.managed.as_mut().unwrap().compliance_state = state;
    ctx
}

#[test]
fn every_row_of_the_decision_table() {
    let policy = builtin(&PluginEngine::new().unwrap(), SETTINGS);
    let mut outsider = staff();
    outsider.user.as_mut().unwrap().groups = vec!["g-other".into()];
    let mut vip = staff();
    vip.user.as_mut().unwrap().groups = vec!["g-staff".into(), "g-vip".into()];
    let mut no_user_unenrolled = unenrolled("iPhone", "iPhone15,2");
    no_user_unenrolled.user = None;

    #[rustfmt::skip]
    let rows: Vec<(&str, DeviceContext, Verdict, &str, bool)> = vec![
        ("user outside the included groups", outsider, Verdict::Exempt, "out-of-scope", false),
        ("user in an excluded group beats compliance", vip, Verdict::Exempt, "out-of-scope", false),
        ("enrolled and compliant", compliance(ComplianceState::Compliant), Verdict::Allow, "compliant", false),
        ("enrolled, in grace period", compliance(ComplianceState::InGracePeriod), Verdict::Allow, "compliant", false),
        ("enrolled, noncompliant", compliance(ComplianceState::Noncompliant), Verdict::Block, "noncompliant", true),
        ("enrolled, conflict", compliance(ComplianceState::Conflict), Verdict::Block, "noncompliant", true),
        ("enrolled, error", compliance(ComplianceState::Error), Verdict::Block, "noncompliant", true),
        ("enrolled, unknown", compliance(ComplianceState::Unknown), Verdict::Block, "noncompliant", true),
        ("enrolled, config manager", compliance(ComplianceState::ConfigManager), Verdict::Block, "noncompliant", true),
        ("model rule, case-insensitive", unenrolled("Android", "sm-g991b"), Verdict::Allow, "device-rule", false),
        ("family rule", unenrolled("ANDROID", "Pixel 8"), Verdict::Block, "device-rule", true),
        ("quarantine family rule", unenrolled("Outlook", "Outlook for iOS"), Verdict::Quarantine, "device-rule", true),
        ("not enrolled, no rule", unenrolled("iPhone", "iPhone15,2"), Verdict::Quarantine, "not-enrolled", true),
        ("no resolvable user is not out of scope", no_user_unenrolled, Verdict::Quarantine, "not-enrolled", true),
    ];

    // One batch, as a sync sends them: the order of the answers must follow the input.
    let devices: Vec<DeviceContext> = rows.iter().map(|row| row.1.clone()).collect();
    let verdicts = policy.decide(&sync_info(), &devices).unwrap();
    for ((name, _, verdict, reason, notify), got) in rows.iter().zip(&verdicts.decisions) {
        assert_eq!(
            (got.verdict, got.reason.as_str(), got.notify),
            (*verdict, *reason, *notify),
            "row: {name}"
        );
    }
}

#[test]
fn empty_settings_put_everyone_in_scope() {
    let policy = builtin(&PluginEngine::new().unwrap(), "{}");
    let mut outsider = unenrolled("iPhone", "iPhone15,2");
    outsider.user.as_mut().unwrap().groups = vec!["anything".into()];
    let verdicts = policy.decide(&sync_info(), &[outsider]).unwrap();
    assert_eq!(verdicts.decisions[0].verdict, Verdict::Quarantine);
}

#[test]
fn notify_false_silences_every_notice() {
    let settings = SETTINGS.replacen('{', r#"{"notify": false,"#, 1);
    let policy = builtin(&PluginEngine::new().unwrap(), &settings);
    let devices = [
        compliance(ComplianceState::Noncompliant),
        unenrolled("iPhone", "iPhone15,2"),
    ];
    let verdicts = policy.decide(&sync_info(), &devices).unwrap();
    assert_eq!(verdicts.decisions[0].verdict, Verdict::Block);
    assert!(verdicts.decisions.iter().all(|d| !d.notify));
}

#[test]
fn bad_settings_are_rejected_at_load_naming_the_key() {
    let engine = PluginEngine::new().unwrap();
    let settings = r#"{"accessRules": [{"deviceClass": {"name": "X", "type": "model"}, "accessLevel": "deny"}]}"#;
    let err = load_builtin(&engine, World::AccessPolicy, settings)
        .err()
        .expect("rejected");
    let message = err.to_string();
    assert!(
        message.contains("configure rejected") && message.contains("accessLevel"),
        "{message}"
    );
}
