//! The JSON (and TOML) form of the WIT records, for `easgate policy eval|test` inputs and
//! manifest self-checks.
//!
//! Field names are the WIT names (kebab-case), enums their WIT case names, timestamps Unix
//! seconds. To keep cases short, every field but `eas.device-id` may be left out (strings
//! default to empty, options to none, enums to `unknown`); a misspelt field is an error rather
//! than a silent default.

use serde::{Deserialize, Serialize};

use super::bindings::types;
use super::wit::wit_name;
use crate::model::{AccessState, ComplianceState, OwnerType};

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DeviceContextJson {
    pub eas: EasDeviceJson,
    #[serde(default)]
    pub managed: Option<ManagedDeviceJson>,
    #[serde(default)]
    pub user: Option<UserJson>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct EasDeviceJson {
    pub device_id: String,
    #[serde(default)]
    pub identity: String,
    #[serde(default)]
    pub mailbox: String,
    #[serde(default)]
    pub device_type: String,
    #[serde(default)]
    pub device_model: String,
    #[serde(default)]
    pub device_os: String,
    #[serde(default)]
    pub user_agent: String,
    #[serde(default)]
    pub first_sync: Option<i64>,
    #[serde(default)]
    pub last_success_sync: Option<i64>,
    #[serde(default, with = "wit_name")]
    pub access_state: AccessState,
    #[serde(default)]
    pub access_state_reason: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ManagedDeviceJson {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub user_principal_name: String,
    #[serde(default)]
    pub device_name: String,
    #[serde(default)]
    pub operating_system: String,
    #[serde(default)]
    pub os_version: String,
    #[serde(default, with = "wit_name")]
    pub compliance_state: ComplianceState,
    #[serde(default)]
    pub management_state: String,
    #[serde(default, with = "wit_name")]
    pub ownership: OwnerType,
    #[serde(default)]
    pub last_sync: Option<i64>,
    #[serde(default)]
    pub enrolled: Option<i64>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct UserJson {
    #[serde(default)]
    pub user_principal_name: String,
    #[serde(default)]
    pub primary_smtp: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum VerdictJson {
    Allow,
    Block,
    Quarantine,
    Exempt,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DecisionJson {
    pub verdict: VerdictJson,
    pub reason: String,
    pub notify: bool,
}

/// One table-driven case of `easgate policy test` and of a manifest's `[[test]]` self-checks.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    pub name: String,
    /// `sync-info.now`; defaults to the fixed [`DEFAULT_NOW`] so cases are reproducible.
    #[serde(default)]
    pub now: Option<i64>,
    pub input: DeviceContextJson,
    pub expect: Expectation,
}

/// What a case expects; `reason` and `notify` are checked only when given.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    pub verdict: VerdictJson,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub notify: Option<bool>,
}

/// 2025-01-01T00:00:00Z: the `now` of cases that do not set one.
pub const DEFAULT_NOW: i64 = 1_735_689_600;

impl Expectation {
    /// `None` when `decision` meets the expectation, else what differs.
    pub fn mismatch(&self, decision: &DecisionJson) -> Option<String> {
        let mut diffs = Vec::new();
        if decision.verdict != self.verdict {
            diffs.push(format!(
                "verdict {:?}, expected {:?}",
                decision.verdict, self.verdict
            ));
        }
        if let Some(reason) = &self.reason
            && &decision.reason != reason
        {
            diffs.push(format!("reason {:?}, expected {reason:?}", decision.reason));
        }
        if let Some(notify) = self.notify
            && decision.notify != notify
        {
            diffs.push(format!("notify {}, expected {notify}", decision.notify));
        }
        (!diffs.is_empty()).then(|| diffs.join("; "))
    }
}

impl From<DeviceContextJson> for types::DeviceContext {
    fn from(json: DeviceContextJson) -> Self {
        Self {
            eas: json.eas.into(),
            managed: json.managed.map(Into::into),
            user: json.user.map(Into::into),
        }
    }
}

impl From<EasDeviceJson> for types::EasDevice {
    fn from(json: EasDeviceJson) -> Self {
        Self {
            device_id: json.device_id,
            identity: json.identity,
            mailbox: json.mailbox,
            device_type: json.device_type,
            device_model: json.device_model,
            device_os: json.device_os,
            user_agent: json.user_agent,
            first_sync: json.first_sync,
            last_success_sync: json.last_success_sync,
            access_state: json.access_state.into(),
            access_state_reason: json.access_state_reason,
        }
    }
}

impl From<ManagedDeviceJson> for types::ManagedDevice {
    fn from(json: ManagedDeviceJson) -> Self {
        Self {
            id: json.id,
            user_principal_name: json.user_principal_name,
            device_name: json.device_name,
            operating_system: json.operating_system,
            os_version: json.os_version,
            compliance_state: json.compliance_state.into(),
            management_state: json.management_state,
            ownership: json.ownership.into(),
            last_sync: json.last_sync,
            enrolled: json.enrolled,
        }
    }
}

impl From<UserJson> for types::User {
    fn from(json: UserJson) -> Self {
        Self {
            user_principal_name: json.user_principal_name,
            primary_smtp: json.primary_smtp,
            groups: json.groups,
        }
    }
}

impl From<&types::Decision> for DecisionJson {
    fn from(decision: &types::Decision) -> Self {
        Self {
            verdict: match decision.verdict {
                types::Verdict::Allow => VerdictJson::Allow,
                types::Verdict::Block => VerdictJson::Block,
                types::Verdict::Quarantine => VerdictJson::Quarantine,
                types::Verdict::Exempt => VerdictJson::Exempt,
            },
            reason: decision.reason.clone(),
            notify: decision.notify,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_context_fills_defaults() {
        let json: DeviceContextJson =
            serde_json::from_str(r#"{"eas":{"device-id":"A1","access-state":"device-discovery"}}"#)
                .unwrap();
        let context = types::DeviceContext::from(json);
        assert_eq!(context.eas.device_id, "A1");
        assert_eq!(
            context.eas.access_state,
            types::AccessState::DeviceDiscovery
        );
        assert!(context.managed.is_none() && context.user.is_none());
    }

    #[test]
    fn a_misspelt_field_is_an_error_naming_it() {
        let err = serde_json::from_str::<DeviceContextJson>(
            r#"{"eas":{"device-id":"A1","devicetype":"iPhone"}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("devicetype"), "{err}");
    }

    #[test]
    fn enums_use_the_wit_spelling() {
        let json: ManagedDeviceJson = serde_json::from_str(
            r#"{"compliance-state":"in-grace-period","ownership":"personal"}"#,
        )
        .unwrap();
        assert_eq!(json.compliance_state, ComplianceState::InGracePeriod);
        assert!(
            serde_json::from_str::<ManagedDeviceJson>(r#"{"compliance-state":"inGracePeriod"}"#)
                .is_err()
        );
    }

    #[test]
    fn expectation_reports_every_difference() {
        let expect = Expectation {
            verdict: VerdictJson::Block,
            reason: Some("noncompliant".into()),
            notify: None,
        };
        let got = DecisionJson {
            verdict: VerdictJson::Allow,
            reason: "compliant".into(),
            notify: false,
        };
        let mismatch = expect.mismatch(&got).unwrap();
        assert!(
            mismatch.contains("verdict") && mismatch.contains("reason"),
            "{mismatch}"
        );
        let same = DecisionJson {
            verdict: VerdictJson::Block,
            reason: "noncompliant".into(),
            notify: true,
        };
        assert_eq!(expect.mismatch(&same), None);
    }
}
