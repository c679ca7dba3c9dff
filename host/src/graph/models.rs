//! Graph entities as the connector reads them. Strict on the properties the connector relies on
//! (ids, `easDeviceId`, compliance and ownership enums), tolerant of everything else.

use serde::Deserialize;

use crate::timestamp::Timestamp;

pub use crate::model::{ComplianceState, OwnerType};

/// The `$select` the connector sends: exactly the fields of [`ManagedDevice`].
pub const MANAGED_DEVICE_SELECT: &str = "id,userPrincipalName,deviceName,operatingSystem,osVersion,complianceState,managementState,managedDeviceOwnerType,lastSyncDateTime,enrolledDateTime,easActivated,easDeviceId,exchangeAccessState,exchangeAccessStateReason,azureADDeviceId";

/// The `$select` of the quick sync's look over every record: what Intune changes without the
/// device checking in (compliance, a retire), and what ties the record to a partnership.
pub const MANAGED_DEVICE_STATE_SELECT: &str = "id,easDeviceId,complianceState,managementState";

/// What [`MANAGED_DEVICE_STATE_SELECT`] reads of a record. Every field is text, read as Graph
/// spells it: this listing only compares with what the store holds, and a value it cannot
/// read counts as a change (the record is then read whole, where it is checked).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedDeviceState {
    pub id: String,
    #[serde(default)]
    pub eas_device_id: Option<String>,
    #[serde(default)]
    pub compliance_state: Option<String>,
    #[serde(default)]
    pub management_state: Option<String>,
}

/// An Intune `managedDevice`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedDevice {
    pub id: String,
    #[serde(default)]
    pub user_principal_name: Option<String>,
    #[serde(default)]
    pub device_name: Option<String>,
    #[serde(default)]
    pub operating_system: Option<String>,
    #[serde(default)]
    pub os_version: Option<String>,
    #[serde(deserialize_with = "crate::net::string_enum")]
    pub compliance_state: ComplianceState,
    #[serde(default)]
    pub management_state: Option<String>,
    #[serde(deserialize_with = "crate::net::string_enum")]
    pub managed_device_owner_type: OwnerType,
    #[serde(default)]
    pub last_sync_date_time: Option<Timestamp>,
    #[serde(default)]
    pub enrolled_date_time: Option<Timestamp>,
    #[serde(default)]
    pub eas_activated: Option<bool>,
    /// The EAS `DeviceId` this record matches; empty when the device never used EAS.
    #[serde(default)]
    pub eas_device_id: Option<String>,
    #[serde(default)]
    pub exchange_access_state: Option<String>,
    #[serde(default)]
    pub exchange_access_state_reason: Option<String>,
    #[serde(rename = "azureADDeviceId", default)]
    pub azure_ad_device_id: Option<String>,
}

/// Read one record at a time by the sync (`net::record`). `easDeviceId` names the record first:
/// it is what ties an unreadable record to the partnership the sync must then leave alone.
impl crate::net::record::Record for ManagedDevice {
    const WHAT: &'static str = "Intune record";
    const KEYS: &'static [&'static str] = &["easDeviceId", "id"];
    const LINK: Option<&'static str> = Some("easDeviceId");

    fn texts(&self) -> Vec<(&'static str, &str)> {
        let optional = [
            ("userPrincipalName", &self.user_principal_name),
            ("deviceName", &self.device_name),
            ("operatingSystem", &self.operating_system),
            ("osVersion", &self.os_version),
            ("managementState", &self.management_state),
            ("easDeviceId", &self.eas_device_id),
            ("exchangeAccessState", &self.exchange_access_state),
            (
                "exchangeAccessStateReason",
                &self.exchange_access_state_reason,
            ),
            ("azureADDeviceId", &self.azure_ad_device_id),
        ];
        let mut texts = vec![("id", self.id.as_str())];
        texts.extend(
            optional
                .into_iter()
                .filter_map(|(name, v)| v.as_deref().map(|v| (name, v))),
        );
        texts
    }
}

/// A member of a group or a group a user is in: a user, a group, or another directory object.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DirectoryObject {
    #[serde(rename = "@odata.type", default)]
    pub odata_type: Option<String>,
    pub id: String,
    #[serde(rename = "userPrincipalName", default)]
    pub user_principal_name: Option<String>,
    #[serde(rename = "displayName", default)]
    pub display_name: Option<String>,
    /// A user's language (BCP 47), read for its notices; `null` or absent for most tenants'
    /// users that nobody set it for.
    #[serde(rename = "preferredLanguage", default)]
    pub preferred_language: Option<String>,
}

impl DirectoryObject {
    pub fn is_user(&self) -> bool {
        self.odata_type.as_deref() == Some("#microsoft.graph.user")
    }

    pub fn is_group(&self) -> bool {
        self.odata_type.as_deref() == Some("#microsoft.graph.group")
    }
}

/// A Graph `user`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: String,
    pub user_principal_name: String,
    #[serde(default)]
    pub mail: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub preferred_language: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_names_every_field_read() {
        let fields: Vec<&str> = MANAGED_DEVICE_SELECT.split(',').collect();
        let json = format!(
            "{{{}}}",
            fields
                .iter()
                .map(|f| match *f {
                    "complianceState" => format!("\"{f}\":\"inGracePeriod\""),
                    "managedDeviceOwnerType" => format!("\"{f}\":\"personal\""),
                    "easActivated" => format!("\"{f}\":true"),
                    "lastSyncDateTime" | "enrolledDateTime" =>
                        format!("\"{f}\":\"2025-01-01T00:00:00Z\""),
                    _ => format!("\"{f}\":\"x\""),
                })
                .collect::<Vec<_>>()
                .join(",")
        );
        let d: ManagedDevice = serde_json::from_str(&json).unwrap();
        assert_eq!(d.compliance_state, ComplianceState::InGracePeriod);
        assert_eq!(d.azure_ad_device_id.as_deref(), Some("x"));
        assert_eq!(fields.len(), 15);
    }
}
