//! The plugin contract's form of the ground floor's types: `From` each [`crate::model`] enum
//! into its WIT twin, and the records a policy is handed. Here rather than in `model`, so the
//! floor does not depend on the generated bindings.
//!
//! [`WitName`] gives the enums the contract's spelling (kebab-case) for the JSON of
//! [`super::json`], where serde would otherwise spell them as the services do.

use serde::de::{Deserialize, Deserializer, Error as _};
use serde::ser::Serializer;

use super::types;
use crate::model::{
    AccessState, ComplianceState, ExchangeDevice, ManagedDevice, OwnerType, RunKind, SyncKind,
    Verdict,
};

impl From<AccessState> for types::AccessState {
    fn from(state: AccessState) -> Self {
        match state {
            AccessState::Unknown => types::AccessState::Unknown,
            AccessState::Allowed => types::AccessState::Allowed,
            AccessState::Blocked => types::AccessState::Blocked,
            AccessState::Quarantined => types::AccessState::Quarantined,
            AccessState::DeviceDiscovery => types::AccessState::DeviceDiscovery,
        }
    }
}

impl From<ComplianceState> for types::ComplianceState {
    fn from(state: ComplianceState) -> Self {
        match state {
            ComplianceState::Unknown => types::ComplianceState::Unknown,
            ComplianceState::Compliant => types::ComplianceState::Compliant,
            ComplianceState::Noncompliant => types::ComplianceState::Noncompliant,
            ComplianceState::Conflict => types::ComplianceState::Conflict,
            ComplianceState::Error => types::ComplianceState::Error,
            ComplianceState::InGracePeriod => types::ComplianceState::InGracePeriod,
            ComplianceState::ConfigManager => types::ComplianceState::ConfigManager,
        }
    }
}

impl From<OwnerType> for types::Ownership {
    fn from(owner: OwnerType) -> Self {
        match owner {
            OwnerType::Unknown => types::Ownership::Unknown,
            OwnerType::Company => types::Ownership::Company,
            OwnerType::Personal => types::Ownership::Personal,
        }
    }
}

impl From<RunKind> for types::SyncKind {
    fn from(kind: RunKind) -> Self {
        match kind {
            RunKind::Quick => types::SyncKind::Quick,
            RunKind::Full => types::SyncKind::Full,
            RunKind::WhatIf => types::SyncKind::WhatIf,
        }
    }
}

impl From<SyncKind> for types::SyncKind {
    fn from(kind: SyncKind) -> Self {
        RunKind::from(kind).into()
    }
}

impl From<Verdict> for types::Verdict {
    fn from(verdict: Verdict) -> Self {
        match verdict {
            Verdict::Allow => types::Verdict::Allow,
            Verdict::Block => types::Verdict::Block,
            Verdict::Quarantine => types::Verdict::Quarantine,
            Verdict::Exempt => types::Verdict::Exempt,
        }
    }
}

impl From<types::Verdict> for Verdict {
    fn from(verdict: types::Verdict) -> Self {
        match verdict {
            types::Verdict::Allow => Verdict::Allow,
            types::Verdict::Block => Verdict::Block,
            types::Verdict::Quarantine => Verdict::Quarantine,
            types::Verdict::Exempt => Verdict::Exempt,
        }
    }
}

impl ExchangeDevice {
    /// The plugins' view of this partnership, syncing the mailbox whose primary SMTP address is
    /// `mailbox_smtp` (empty when the mailbox is gone).
    pub fn to_wit(&self, mailbox_smtp: &str) -> types::EasDevice {
        types::EasDevice {
            device_id: self.device_id.clone(),
            identity: self.identity.clone(),
            mailbox: mailbox_smtp.to_owned(),
            device_type: self.device_type.clone(),
            device_model: self.device_model.clone(),
            device_os: self.device_os.clone(),
            user_agent: self.user_agent.clone(),
            first_sync: self.first_sync,
            last_success_sync: self.last_success_sync,
            access_state: self.access_state.into(),
            access_state_reason: self.access_state_reason.clone(),
        }
    }
}

impl ManagedDevice {
    /// The plugin contract's form.
    pub fn to_wit(&self) -> types::ManagedDevice {
        types::ManagedDevice {
            id: self.id.clone(),
            user_principal_name: self.user_principal_name.clone(),
            device_name: self.device_name.clone(),
            operating_system: self.operating_system.clone(),
            os_version: self.os_version.clone(),
            compliance_state: self.compliance_state.into(),
            management_state: self.management_state.clone(),
            ownership: self.owner_type.into(),
            last_sync: self.last_sync,
            enrolled: self.enrolled,
        }
    }
}

/// An enum's case names in the plugin contract (`in-grace-period`, not Graph's `inGracePeriod`).
pub trait WitName: Copy + Sized + 'static {
    /// Every case, and its contract name at the same index.
    const CASES: &'static [Self];
    const NAMES: &'static [&'static str];

    fn wit_name(self) -> &'static str
    where
        Self: PartialEq,
    {
        let i = Self::CASES.iter().position(|c| *c == self);
        Self::NAMES[i.expect("every case is listed")]
    }
}

impl WitName for AccessState {
    const CASES: &'static [Self] = &AccessState::ALL;
    const NAMES: &'static [&'static str] = &[
        "unknown",
        "allowed",
        "blocked",
        "quarantined",
        "device-discovery",
    ];
}

impl WitName for ComplianceState {
    const CASES: &'static [Self] = &[
        ComplianceState::Unknown,
        ComplianceState::Compliant,
        ComplianceState::Noncompliant,
        ComplianceState::Conflict,
        ComplianceState::Error,
        ComplianceState::InGracePeriod,
        ComplianceState::ConfigManager,
    ];
    const NAMES: &'static [&'static str] = &[
        "unknown",
        "compliant",
        "noncompliant",
        "conflict",
        "error",
        "in-grace-period",
        "config-manager",
    ];
}

impl WitName for OwnerType {
    const CASES: &'static [Self] = &[OwnerType::Unknown, OwnerType::Company, OwnerType::Personal];
    const NAMES: &'static [&'static str] = &["unknown", "company", "personal"];
}

/// `#[serde(with = "wit_name")]`: a field spelt with its [`WitName`].
pub mod wit_name {
    use super::*;

    pub fn serialize<S: Serializer, T: WitName + PartialEq>(
        value: &T,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(value.wit_name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: WitName>(
        deserializer: D,
    ) -> Result<T, D::Error> {
        let name = String::deserialize(deserializer)?;
        T::NAMES
            .iter()
            .position(|n| *n == name)
            .map(|i| T::CASES[i])
            .ok_or_else(|| D::Error::unknown_variant(&name, T::NAMES))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<T: WitName + PartialEq + std::fmt::Debug>() {
        for case in T::CASES {
            let json = wit_name::serialize(case, serde_json::value::Serializer).unwrap();
            assert_eq!(wit_name::deserialize::<_, T>(json).unwrap(), *case);
        }
    }

    #[test]
    fn wit_names_round_trip_and_services_spellings_are_refused() {
        round_trips::<AccessState>();
        round_trips::<ComplianceState>();
        round_trips::<OwnerType>();
        let graph = serde_json::Value::from("inGracePeriod");
        let err = wit_name::deserialize::<_, ComplianceState>(graph).unwrap_err();
        assert!(err.to_string().contains("in-grace-period"), "{err}");
    }
}
