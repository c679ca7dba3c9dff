//! The objects Exchange cmdlets return, as the connector reads them.
//!
//! Tolerant of what we don't use (unknown properties are ignored, most optional ones may be
//! missing or `null`), strict on what the connector relies on: identities, device ids and access
//! states must be present and of the right type, or the page fails with the field named — except
//! for devices, which the sync reads one record at a time (`net::record`): a device record that
//! fails is reported and the rest of the page kept.

use serde::{Deserialize, Deserializer};

use crate::timestamp::Timestamp;

/// `null` or missing lists read as empty (Exchange writes `null` for an empty multi-valued
/// property).
fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// The Exchange property names `T` reads, as its derived `Deserialize` declares them (renames
/// included): what a transport that can ask for fewer properties asks for (remote PowerShell's
/// `Select-Object -Property`). `None` for a type that does not read as a struct of fields.
pub fn properties_of<'de, T: Deserialize<'de>>() -> Option<&'static [&'static str]> {
    use serde::de::{Error as _, Visitor, value::Error};

    /// A deserializer that only learns the fields a struct asks for.
    struct Fields<'a>(&'a mut Option<&'static [&'static str]>);

    impl<'de> Deserializer<'de> for Fields<'_> {
        type Error = Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
            Err(Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Error> {
            *self.0 = Some(fields);
            Err(Error::custom("fields learnt"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut fields = None;
    let _ = T::deserialize(Fields(&mut fields));
    fields
}

/// A device's Exchange ActiveSync access state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
pub enum DeviceAccessState {
    Unknown,
    Allowed,
    Blocked,
    Quarantined,
    DeviceDiscovery,
}

/// `Get-MobileDevice`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MobileDevice {
    /// `<mailbox>\ExchangeActiveSyncDevices\<name>`.
    pub identity: String,
    pub device_id: String,
    #[serde(default)]
    pub device_type: Option<String>,
    #[serde(default)]
    pub device_model: Option<String>,
    #[serde(rename = "DeviceOS", default)]
    pub device_os: Option<String>,
    #[serde(default)]
    pub device_user_agent: Option<String>,
    #[serde(default)]
    pub first_sync_time: Option<Timestamp>,
    #[serde(default)]
    pub user_display_name: Option<String>,
    #[serde(deserialize_with = "crate::net::string_enum")]
    pub device_access_state: DeviceAccessState,
    /// Unknown, Global, Individual, DeviceRule, Upgrade, Policy, … (an open list).
    pub device_access_state_reason: String,
    #[serde(default)]
    pub when_changed: Option<Timestamp>,
}

impl MobileDevice {
    /// The mailbox part of `Identity`.
    pub fn mailbox(&self) -> &str {
        self.identity
            .split_once("\\ExchangeActiveSyncDevices\\")
            .map_or(&self.identity, |(m, _)| m)
    }
}

impl crate::net::record::Record for MobileDevice {
    const WHAT: &'static str = "device";
    const KEYS: &'static [&'static str] = &["Identity", "DeviceId"];

    fn texts(&self) -> Vec<(&'static str, &str)> {
        let optional = [
            ("DeviceType", &self.device_type),
            ("DeviceModel", &self.device_model),
            ("DeviceOS", &self.device_os),
            ("DeviceUserAgent", &self.device_user_agent),
            ("UserDisplayName", &self.user_display_name),
        ];
        let mut texts = vec![
            ("Identity", self.identity.as_str()),
            ("DeviceId", self.device_id.as_str()),
            (
                "DeviceAccessStateReason",
                self.device_access_state_reason.as_str(),
            ),
        ];
        texts.extend(
            optional
                .into_iter()
                .filter_map(|(name, v)| v.as_deref().map(|v| (name, v))),
        );
        texts
    }
}

/// `Get-MobileDeviceStatistics`: the one fact the connector reads of it. Its other properties
/// (folders synced, wipe times, policy status, ...) are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MobileDeviceStatistics {
    /// The partnership's identity, as `Get-MobileDevice` spells it.
    pub identity: String,
    /// `null` for a partnership that never completed a sync.
    #[serde(default)]
    pub last_success_sync: Option<Timestamp>,
}

/// `Get-CASMailbox`: the per-mailbox allow and block lists.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CasMailbox {
    pub identity: String,
    pub primary_smtp_address: String,
    #[serde(default)]
    pub active_sync_enabled: Option<bool>,
    #[serde(
        rename = "ActiveSyncAllowedDeviceIDs",
        default,
        deserialize_with = "list"
    )]
    pub active_sync_allowed_device_ids: Vec<String>,
    #[serde(
        rename = "ActiveSyncBlockedDeviceIDs",
        default,
        deserialize_with = "list"
    )]
    pub active_sync_blocked_device_ids: Vec<String>,
    #[serde(default)]
    pub external_directory_object_id: Option<String>,
}

/// `Get-Mailbox`: how a mailbox maps to its user (UPN).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Mailbox {
    pub identity: String,
    pub user_principal_name: String,
    pub primary_smtp_address: String,
    #[serde(default)]
    pub external_directory_object_id: Option<String>,
    #[serde(default)]
    pub recipient_type_details: Option<String>,
    /// `Languages`: the mailbox's culture names (`de-DE`), most preferred first, as the user
    /// chose them in Outlook on the web or an admin set them; the notices' language when the
    /// directory has none. Often empty.
    #[serde(default, deserialize_with = "list")]
    pub languages: Vec<String>,
}

/// Exchange's organization-wide default for devices no list or rule decides, and a rule's level.
pub use crate::model::AccessLevel;

/// `Get-ActiveSyncOrganizationSettings`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OrganizationSettings {
    #[serde(deserialize_with = "crate::net::string_enum")]
    pub default_access_level: AccessLevel,
    #[serde(default)]
    pub user_mail_insert: Option<String>,
    #[serde(default, deserialize_with = "list")]
    pub admin_mail_recipients: Vec<String>,
}

/// `Get-ActiveSyncDeviceAccessRule`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeviceAccessRule {
    /// The rule's name, `QueryString (Characteristic)`: what `-Identity` takes.
    pub identity: String,
    #[serde(default)]
    pub query_string: String,
    /// `DeviceType`, `DeviceModel`, ... as Exchange spells it.
    pub characteristic: String,
    #[serde(deserialize_with = "crate::net::string_enum")]
    pub access_level: AccessLevel,
}

/// `Get-ExchangeServer`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExchangeServer {
    pub name: String,
    #[serde(default)]
    pub fqdn: Option<String>,
    /// Missing on Exchange Online; there every listed server serves clients.
    #[serde(default)]
    pub is_client_access_server: Option<bool>,
}

/// `Get-Command`: a command the session has.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CommandInfo {
    pub name: String,
}

/// `Get-ClientAccessService`: where a CAS answers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ClientAccessService {
    pub name: String,
    #[serde(default)]
    pub fqdn: Option<String>,
    /// `https://cas02.contoso.com/Autodiscover/Autodiscover.xml`: the server's base URL is its
    /// scheme, host and port.
    #[serde(default)]
    pub auto_discover_service_internal_uri: Option<String>,
    #[serde(default)]
    pub is_out_of_service: Option<bool>,
}

impl ClientAccessService {
    /// `scheme://host[:port]` of the autodiscover URI.
    pub fn base_url(&self) -> Option<String> {
        let uri = self.auto_discover_service_internal_uri.as_deref()?;
        let url = reqwest::Url::parse(uri).ok()?;
        let host = url.host_str()?;
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        Some(match url.port() {
            Some(p) => format!("{}://{host}:{p}", url.scheme()),
            None => format!("{}://{host}", url.scheme()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_properties_a_model_reads_are_its_fields_by_exchange_name() {
        let device = properties_of::<MobileDevice>().unwrap();
        for name in [
            "Identity",
            "DeviceId",
            "DeviceOS",
            "DeviceAccessStateReason",
        ] {
            assert!(device.contains(&name), "{name} in {device:?}");
        }
        assert_eq!(device.len(), 11, "{device:?}");
        let cas = properties_of::<CasMailbox>().unwrap();
        assert!(cas.contains(&"ActiveSyncAllowedDeviceIDs"), "{cas:?}");
        assert!(cas.contains(&"ActiveSyncBlockedDeviceIDs"), "{cas:?}");
        // Not a struct: nothing to select.
        assert_eq!(properties_of::<serde::de::IgnoredAny>(), None);
        assert_eq!(properties_of::<Vec<String>>(), None);
    }

    #[test]
    fn a_device_reads_from_exchange_json_ignoring_the_rest() {
        let d: MobileDevice = serde_json::from_str(
            r#"{"Identity":"alice\\ExchangeActiveSyncDevices\\iPhone§ABC","DeviceId":"ABC",
                "DeviceType":"iPhone","DeviceOS":null,"FirstSyncTime":"2024-05-01T10:00:00Z",
                "DeviceAccessState":"Quarantined","DeviceAccessStateReason":"Global",
                "SomethingNew":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(d.mailbox(), "alice");
        assert_eq!(d.device_access_state, DeviceAccessState::Quarantined);
        assert_eq!(d.device_os, None);
        assert!(d.first_sync_time.is_some());
        let bad = serde_json::from_str::<MobileDevice>(
            r#"{"Identity":"a","DeviceId":"A","DeviceAccessState":"Sideways","DeviceAccessStateReason":"Global"}"#,
        );
        assert!(bad.is_err());
    }

    #[test]
    fn cas_base_url_comes_from_autodiscover() {
        let c = |uri: &str| ClientAccessService {
            name: "CAS02".into(),
            fqdn: None,
            auto_discover_service_internal_uri: Some(uri.into()),
            is_out_of_service: None,
        };
        assert_eq!(
            c("https://cas02.contoso.com/Autodiscover/Autodiscover.xml")
                .base_url()
                .unwrap(),
            "https://cas02.contoso.com"
        );
        assert_eq!(
            c("http://127.0.0.1:4711/Autodiscover/Autodiscover.xml")
                .base_url()
                .unwrap(),
            "http://127.0.0.1:4711"
        );
        assert_eq!(c("not a url").base_url(), None);
        let m: CasMailbox = serde_json::from_str(
            r#"{"Identity":"a","PrimarySmtpAddress":"a@x","ActiveSyncAllowedDeviceIDs":null}"#,
        )
        .unwrap();
        assert!(m.active_sync_allowed_device_ids.is_empty());
    }
}
