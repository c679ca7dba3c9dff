//! The cmdlets the connector runs, with typed parameters serialized as `CmdletInput.Parameters`
//! and typed results. Listing cmdlets ask for `-ResultSize Unlimited` by default: without it
//! Exchange stops at 1000 objects with only a warning.

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Serialize, Serializer};

use super::models::{
    AccessLevel, CasMailbox, ClientAccessService, DeviceAccessRule, ExchangeServer, Mailbox,
    MobileDevice, OrganizationSettings,
};

/// A cmdlet with its parameters (serialized as `Parameters`) and the objects it returns.
pub trait Cmdlet: Serialize + Send + Sync {
    /// The cmdlet's name, e.g. `Get-MobileDevice`.
    const NAME: &'static str;
    /// Changes state. A write whose request may have reached Exchange without an answer is
    /// retried only where repeating it has the same effect; see `ExchangeError::is_repeat_of_applied`.
    const WRITE: bool;
    type Output: DeserializeOwned + Send + 'static;
}

/// `-ResultSize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResultSize {
    #[default]
    Unlimited,
    Limit(u32),
}

impl Serialize for ResultSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ResultSize::Unlimited => s.serialize_str("Unlimited"),
            ResultSize::Limit(n) => s.serialize_u32(*n),
        }
    }
}

/// An `@{Add=…; Remove=…}` change of a multi-valued property, sent as Exchange's
/// `#Exchange.GenericHashTable`. Repeating it has the same effect (Exchange refuses an `Add` of a
/// present value, which the client recognizes after an unanswered attempt).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct HashTableEdit {
    #[serde(rename = "@odata.type")]
    odata_type: &'static str,
    #[serde(rename = "Add")]
    pub add: Vec<String>,
    #[serde(rename = "Remove")]
    pub remove: Vec<String>,
}

impl HashTableEdit {
    pub fn new(add: Vec<String>, remove: Vec<String>) -> Self {
        HashTableEdit {
            odata_type: "#Exchange.GenericHashTable",
            add,
            remove,
        }
    }
}

/// `Get-MobileDevice`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetMobileDevice {
    pub result_size: ResultSize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<String>,
    /// OPATH filter, e.g. `FirstSyncTime -gt '2025-01-01T00:00:00Z'`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// EAS devices only (not OWA for Devices).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub active_sync: bool,
}

impl Cmdlet for GetMobileDevice {
    const NAME: &'static str = "Get-MobileDevice";
    const WRITE: bool = false;
    type Output = MobileDevice;
}

/// `Get-MobileDevice` read one record at a time: a device record that cannot be read is
/// returned as such (which device, which field) instead of failing its page.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(transparent)]
pub struct GetMobileDeviceRecords(pub GetMobileDevice);

impl Cmdlet for GetMobileDeviceRecords {
    const NAME: &'static str = "Get-MobileDevice";
    const WRITE: bool = false;
    type Output = crate::net::record::Checked<MobileDevice>;
}

/// `Get-CASMailbox`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetCasMailbox {
    pub result_size: ResultSize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

impl Cmdlet for GetCasMailbox {
    const NAME: &'static str = "Get-CASMailbox";
    const WRITE: bool = false;
    type Output = CasMailbox;
}

/// `Get-Mailbox`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetMailbox {
    pub result_size: ResultSize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

impl Cmdlet for GetMailbox {
    const NAME: &'static str = "Get-Mailbox";
    const WRITE: bool = false;
    type Output = Mailbox;
}

/// `Set-CASMailbox -Identity X -ActiveSyncAllowedDeviceIDs @{…} -ActiveSyncBlockedDeviceIDs @{…}`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SetCasMailbox {
    pub identity: String,
    #[serde(
        rename = "ActiveSyncAllowedDeviceIDs",
        skip_serializing_if = "Option::is_none"
    )]
    pub allowed: Option<HashTableEdit>,
    #[serde(
        rename = "ActiveSyncBlockedDeviceIDs",
        skip_serializing_if = "Option::is_none"
    )]
    pub blocked: Option<HashTableEdit>,
}

impl Cmdlet for SetCasMailbox {
    const NAME: &'static str = "Set-CASMailbox";
    const WRITE: bool = true;
    type Output = IgnoredAny;
}

/// `Get-ActiveSyncOrganizationSettings`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GetOrganizationSettings {}

impl Cmdlet for GetOrganizationSettings {
    const NAME: &'static str = "Get-ActiveSyncOrganizationSettings";
    const WRITE: bool = false;
    type Output = OrganizationSettings;
}

/// `Set-ActiveSyncOrganizationSettings -DefaultAccessLevel …`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SetOrganizationSettings {
    pub default_access_level: AccessLevel,
}

impl Cmdlet for SetOrganizationSettings {
    const NAME: &'static str = "Set-ActiveSyncOrganizationSettings";
    const WRITE: bool = true;
    type Output = IgnoredAny;
}

/// `Get-ActiveSyncDeviceAccessRule`: every rule of the organization.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GetDeviceAccessRule {}

impl Cmdlet for GetDeviceAccessRule {
    const NAME: &'static str = "Get-ActiveSyncDeviceAccessRule";
    const WRITE: bool = false;
    type Output = DeviceAccessRule;
}

/// `Get-ExchangeServer`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GetExchangeServer {}

impl Cmdlet for GetExchangeServer {
    const NAME: &'static str = "Get-ExchangeServer";
    const WRITE: bool = false;
    type Output = ExchangeServer;
}

/// `Get-ClientAccessService`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GetClientAccessService {}

impl Cmdlet for GetClientAccessService {
    const NAME: &'static str = "Get-ClientAccessService";
    const WRITE: bool = false;
    type Output = ClientAccessService;
}

/// Defines a cmdlet whose parameters are sent exactly as given: for commands the sync planned
/// and journaled as JSON (`sync::plan::Command`), so that what runs is what the journal holds,
/// byte for byte, without a round trip through the typed parameters.
macro_rules! journaled {
    ($(#[$meta:meta])* $name:ident = $cmdlet:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Serialize)]
        #[serde(transparent)]
        pub struct $name(pub serde_json::Map<String, serde_json::Value>);

        impl Cmdlet for $name {
            const NAME: &'static str = $cmdlet;
            const WRITE: bool = true;
            type Output = IgnoredAny;
        }
    };
}

journaled!(
    /// A planned `Set-CASMailbox` (the `Add`/`Remove` form; repeating it is harmless).
    JournaledSetCasMailbox = "Set-CASMailbox"
);
journaled!(
    /// A planned `Remove-MobileDevice`.
    JournaledRemoveMobileDevice = "Remove-MobileDevice"
);
journaled!(
    /// A planned `Set-ActiveSyncOrganizationSettings`.
    JournaledSetOrganizationSettings = "Set-ActiveSyncOrganizationSettings"
);
journaled!(
    /// A planned `New-ActiveSyncDeviceAccessRule`.
    JournaledNewDeviceAccessRule = "New-ActiveSyncDeviceAccessRule"
);
journaled!(
    /// A planned `Remove-ActiveSyncDeviceAccessRule`.
    JournaledRemoveDeviceAccessRule = "Remove-ActiveSyncDeviceAccessRule"
);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parameters_serialize_as_exchange_expects() {
        let set = SetCasMailbox {
            identity: "alice".into(),
            allowed: Some(HashTableEdit::new(vec!["ID1".into()], vec![])),
            blocked: None,
        };
        assert_eq!(
            serde_json::to_value(&set).unwrap(),
            json!({"Identity":"alice","ActiveSyncAllowedDeviceIDs":
                {"@odata.type":"#Exchange.GenericHashTable","Add":["ID1"],"Remove":[]}})
        );
        assert_eq!(
            serde_json::to_value(GetMobileDevice::default()).unwrap(),
            json!({"ResultSize":"Unlimited"})
        );
        let limited = GetCasMailbox {
            result_size: ResultSize::Limit(5),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(limited).unwrap(),
            json!({"ResultSize":5})
        );
        assert_eq!(
            serde_json::to_value(GetExchangeServer {}).unwrap(),
            json!({})
        );
    }
}
