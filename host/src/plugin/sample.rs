//! The rehearsal batch: realistic devices every new access-policy version decides before it
//! may become active, so that a version that loads but fails every decision (loops, runs out
//! of memory, answers the wrong count or an invalid reason) is rejected at load instead of
//! leaving a whole organization undecided.

use super::types;

/// Devices in the rehearsal batch: every combination the policy meets in a real sync.
pub const SAMPLE_SIZE: usize = 16;

/// A realistic, fully filled device context: a compliant, company-owned iPhone of alice's.
pub fn sample_device(id: &str) -> types::DeviceContext {
    types::DeviceContext {
        eas: types::EasDevice {
            device_id: id.to_owned(),
            identity: format!("alice@contoso.com\\ExchangeActiveSyncDevices\\iPhone§{id}"),
            mailbox: "alice@contoso.com".into(),
            device_type: "iPhone".into(),
            device_model: "iPhone15,2".into(),
            device_os: "iOS 17.4.1 21E236".into(),
            user_agent: "Apple-iPhone15C2/2104.236".into(),
            first_sync: Some(1_700_000_000),
            last_success_sync: Some(1_735_000_000),
            access_state: types::AccessState::Quarantined,
            access_state_reason: "Global".into(),
        },
        managed: Some(types::ManagedDevice {
            id: format!("m-{id}"),
            user_principal_name: "alice@contoso.com".into(),
            device_name: "Alice's iPhone".into(),
            operating_system: "iOS".into(),
            os_version: "17.4.1".into(),
            compliance_state: types::ComplianceState::Compliant,
            management_state: "managed".into(),
            ownership: types::Ownership::Company,
            last_sync: Some(1_735_000_000),
            enrolled: Some(1_700_000_000),
        }),
        user: Some(types::User {
            user_principal_name: "alice@contoso.com".into(),
            primary_smtp: "alice@contoso.com".into(),
            groups: vec!["g-all-staff".into()],
        }),
    }
}

/// The rehearsal batch: [`SAMPLE_SIZE`] devices across compliance states, ownership, access
/// states and device families, some without an Intune record, some without a user.
pub fn sample_batch() -> Vec<types::DeviceContext> {
    use types::{AccessState, ComplianceState, Ownership};
    let compliance = [
        ComplianceState::Compliant,
        ComplianceState::Noncompliant,
        ComplianceState::InGracePeriod,
        ComplianceState::Unknown,
        ComplianceState::Error,
        ComplianceState::Conflict,
        ComplianceState::ConfigManager,
    ];
    let access = [
        AccessState::Allowed,
        AccessState::Blocked,
        AccessState::Quarantined,
        AccessState::DeviceDiscovery,
        AccessState::Unknown,
    ];
    (0..SAMPLE_SIZE)
        .map(|i| {
            let mut device = sample_device(&format!("EASGATESAMPLE{i:02}"));
            device.eas.access_state = access[i % access.len()];
            if i % 2 == 1 {
                device.eas.device_type = "Android".into();
                device.eas.device_model = "SM-S918B".into();
                device.eas.device_os = "Android 14".into();
            }
            match i % 4 {
                // Not enrolled.
                3 => device.managed = None,
                _ => {
                    let managed = device.managed.as_mut().expect("filled");
                    managed.compliance_state = compliance[i % compliance.len()];
                    if i % 3 == 0 {
                        managed.ownership = Ownership::Personal;
                    }
                }
            }
            if i % 5 == 4 {
                // The mailbox's owner left.
                device.user = None;
                device.eas.mailbox.clear();
            }
            device
        })
        .collect()
}
