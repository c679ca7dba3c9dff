//! The objects Exchange cmdlets return, with Exchange's property names and value spellings.
//!
//! These are views borrowed from the `Org` while a page is rendered; nothing here is stored.
//! Property names follow Exchange's output exactly, including its inconsistencies
//! (`DeviceOS`, `DeviceImei`, `DeviceID` in statistics, `WhenChangedUTC`).

use serde::Serialize;

use super::ServerInfo;
use crate::dataset::derived_digits;
use crate::org::{
    AccessReason, AccessState, ComplianceState, DeviceRule, EasDevice, Mailbox, Org, OrgSettings,
};
use crate::random::Guid;
use crate::utc::Utc;

/// The `DistinguishedName` suffix of objects in the (Exchange Online shaped) directory.
fn dn_suffix(org: &Org) -> String {
    format!(
        "OU={},OU=Microsoft Exchange Hosted Organizations,DC=NAMPR01A001,DC=prod,DC=outlook,DC=com",
        org.tenant.initial_domain
    )
}

#[derive(Serialize)]
pub(crate) struct MobileDevice<'a> {
    #[serde(rename = "FriendlyName")]
    friendly_name: String,
    #[serde(rename = "DeviceId")]
    device_id: &'a str,
    #[serde(rename = "DeviceImei")]
    device_imei: String,
    #[serde(rename = "DeviceMobileOperator")]
    device_mobile_operator: &'static str,
    #[serde(rename = "DeviceOS")]
    device_os: &'static str,
    #[serde(rename = "DeviceOSLanguage")]
    device_os_language: &'static str,
    #[serde(rename = "DeviceTelephoneNumber")]
    device_telephone_number: String,
    #[serde(rename = "DeviceType")]
    device_type: &'static str,
    #[serde(rename = "DeviceUserAgent")]
    device_user_agent: String,
    #[serde(rename = "DeviceModel")]
    device_model: &'static str,
    #[serde(rename = "FirstSyncTime")]
    first_sync_time: Utc,
    #[serde(rename = "UserDisplayName")]
    user_display_name: &'a str,
    #[serde(rename = "DeviceAccessState")]
    device_access_state: AccessState,
    #[serde(rename = "DeviceAccessStateReason")]
    device_access_state_reason: AccessReason,
    #[serde(rename = "DeviceAccessControlRule")]
    device_access_control_rule: Option<String>,
    #[serde(rename = "ClientVersion")]
    client_version: &'static str,
    #[serde(rename = "ClientType")]
    client_type: &'static str,
    #[serde(rename = "IsManaged")]
    is_managed: bool,
    #[serde(rename = "IsCompliant")]
    is_compliant: bool,
    #[serde(rename = "IsDisabled")]
    is_disabled: bool,
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "DistinguishedName")]
    distinguished_name: String,
    #[serde(rename = "Identity")]
    identity: String,
    #[serde(rename = "Guid")]
    guid: Guid,
    #[serde(rename = "WhenChanged")]
    when_changed: Utc,
    #[serde(rename = "WhenCreated")]
    when_created: Utc,
    #[serde(rename = "WhenChangedUTC")]
    when_changed_utc: Utc,
    #[serde(rename = "WhenCreatedUTC")]
    when_created_utc: Utc,
    #[serde(rename = "IsValid")]
    is_valid: bool,
    #[serde(rename = "ObjectState")]
    object_state: &'static str,
}

/// Values shared by `Get-MobileDevice` and `Get-MobileDeviceStatistics`.
pub(crate) struct DeviceFacts<'a> {
    pub dev: &'a EasDevice,
    pub imei: String,
    pub phone: String,
    pub user_agent: String,
    pub device_os: &'static str,
    pub rule: Option<String>,
    pub friendly_name: String,
    pub identity: String,
    pub user_display_name: &'a str,
    pub managed: Option<ComplianceState>,
}

impl<'a> DeviceFacts<'a> {
    pub fn new(org: &'a Org, dev: &'a EasDevice) -> Self {
        let p = dev.profile();
        let build = &p.builds[usize::from(dev.build)];
        let (_, display) = org.owner_names(&dev.owner);
        let first = display.split(' ').next().unwrap_or(display);
        DeviceFacts {
            dev,
            imei: if p.is_phone() && p.client != crate::dataset::Client::Outlook {
                derived_digits(dev.derive, 15)
            } else {
                String::new()
            },
            phone: if p.is_phone() {
                format!("+1425555{}", derived_digits(dev.derive ^ 7, 4))
            } else {
                String::new()
            },
            user_agent: p.user_agent(build),
            device_os: build.eas_os,
            rule: dev.rule.map(|r| org.rules[usize::from(r)].name()),
            friendly_name: p.friendly_name(first),
            identity: org.device_identity(dev),
            user_display_name: display,
            managed: org.managed_by_eas_id(&dev.device_id).map(|m| m.compliance),
        }
    }

    fn name(&self) -> String {
        format!(
            "{}\u{a7}{}",
            self.dev.profile().eas_type,
            self.dev.device_id
        )
    }
}

impl<'a> MobileDevice<'a> {
    pub fn new(org: &'a Org, dev: &'a EasDevice) -> Self {
        let f = DeviceFacts::new(org, dev);
        let p = dev.profile();
        let (alias, _) = org.owner_names(&dev.owner);
        MobileDevice {
            distinguished_name: format!(
                "CN={},CN=ExchangeActiveSyncDevices,CN={alias},{}",
                f.name(),
                dn_suffix(org)
            ),
            name: f.name(),
            friendly_name: f.friendly_name,
            device_id: &dev.device_id,
            device_imei: f.imei,
            device_mobile_operator: if p.is_phone() { "Contoso Mobile" } else { "" },
            device_os: f.device_os,
            device_os_language: "en-US",
            device_telephone_number: f.phone,
            device_type: p.eas_type,
            device_user_agent: f.user_agent,
            device_model: p.eas_model,
            first_sync_time: dev.first_sync,
            user_display_name: f.user_display_name,
            device_access_state: dev.state,
            device_access_state_reason: dev.reason,
            device_access_control_rule: f.rule,
            client_version: p.client_version(),
            client_type: p.client_type(),
            is_managed: f.managed.is_some(),
            is_compliant: f.managed == Some(ComplianceState::Compliant),
            is_disabled: false,
            identity: f.identity,
            guid: dev.guid,
            when_changed: dev.when_changed,
            when_created: dev.first_sync,
            when_changed_utc: dev.when_changed,
            when_created_utc: dev.first_sync,
            is_valid: true,
            object_state: "Unchanged",
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct MobileDeviceStatistics<'a> {
    first_sync_time: Utc,
    last_policy_update_time: Utc,
    last_sync_attempt_time: Utc,
    last_success_sync: Utc,
    device_type: &'static str,
    #[serde(rename = "DeviceID")]
    device_id: &'a str,
    device_user_agent: String,
    device_wipe_sent_time: Option<Utc>,
    device_wipe_request_time: Option<Utc>,
    device_wipe_ack_time: Option<Utc>,
    account_only_device_wipe_sent_time: Option<Utc>,
    account_only_device_wipe_request_time: Option<Utc>,
    account_only_device_wipe_ack_time: Option<Utc>,
    last_ping_heartbeat: u32,
    device_model: &'static str,
    device_imei: String,
    device_friendly_name: String,
    #[serde(rename = "DeviceOS")]
    device_os: &'static str,
    #[serde(rename = "DeviceOSLanguage")]
    device_os_language: &'static str,
    device_phone_number: String,
    device_mobile_operator: &'static str,
    identity: String,
    guid: Guid,
    is_remote_wipe_supported: bool,
    status: &'static str,
    status_note: Option<&'static str>,
    device_access_state: AccessState,
    device_access_state_reason: AccessReason,
    device_access_control_rule: Option<String>,
    device_policy_applied: &'static str,
    device_policy_application_status: &'static str,
    client_version: &'static str,
    number_of_folders_synced: u32,
    client_type: &'static str,
    is_valid: bool,
    object_state: &'static str,
}

impl<'a> MobileDeviceStatistics<'a> {
    pub fn new(org: &'a Org, dev: &'a EasDevice) -> Self {
        let f = DeviceFacts::new(org, dev);
        let p = dev.profile();
        let wipe = dev.wipe.as_deref();
        MobileDeviceStatistics {
            first_sync_time: dev.first_sync,
            last_policy_update_time: dev.first_sync,
            last_sync_attempt_time: dev.last_sync,
            last_success_sync: dev.last_sync,
            device_type: p.eas_type,
            device_id: &dev.device_id,
            device_user_agent: f.user_agent,
            device_wipe_sent_time: None,
            device_wipe_request_time: wipe.filter(|w| !w.account_only).map(|w| w.requested),
            device_wipe_ack_time: None,
            account_only_device_wipe_sent_time: None,
            account_only_device_wipe_request_time: wipe
                .filter(|w| w.account_only)
                .map(|w| w.requested),
            account_only_device_wipe_ack_time: None,
            last_ping_heartbeat: 540,
            device_model: p.eas_model,
            device_imei: f.imei,
            device_friendly_name: f.friendly_name,
            device_os: f.device_os,
            device_os_language: "en-US",
            device_phone_number: f.phone,
            device_mobile_operator: if p.is_phone() { "Contoso Mobile" } else { "" },
            identity: f.identity,
            guid: dev.guid,
            is_remote_wipe_supported: true,
            // A lab device never syncs, so a wipe it was asked for stays pending.
            status: if wipe.is_some() {
                "DeviceWipePending"
            } else {
                "DeviceOk"
            },
            status_note: None,
            device_access_state: dev.state,
            device_access_state_reason: dev.reason,
            device_access_control_rule: f.rule,
            device_policy_applied: "Default",
            device_policy_application_status: "AppliedInFull",
            client_version: p.client_version(),
            number_of_folders_synced: 12,
            client_type: p.client_type(),
            is_valid: true,
            object_state: "Unchanged",
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CasMailbox<'a> {
    identity: &'a str,
    name: &'a str,
    display_name: &'a str,
    primary_smtp_address: &'a str,
    active_sync_enabled: bool,
    #[serde(rename = "ActiveSyncAllowedDeviceIDs")]
    active_sync_allowed_device_ids: &'a [Box<str>],
    #[serde(rename = "ActiveSyncBlockedDeviceIDs")]
    active_sync_blocked_device_ids: &'a [Box<str>],
    active_sync_mailbox_policy: &'static str,
    active_sync_mailbox_policy_is_defaulted: bool,
    active_sync_debug_logging: bool,
    has_active_sync_device_partnership: bool,
    #[serde(rename = "OWAEnabled")]
    owa_enabled: bool,
    ews_enabled: bool,
    external_directory_object_id: Guid,
    guid: Guid,
    when_changed: Utc,
    when_created: Utc,
    #[serde(rename = "WhenChangedUTC")]
    when_changed_utc: Utc,
    #[serde(rename = "WhenCreatedUTC")]
    when_created_utc: Utc,
    is_valid: bool,
}

impl<'a> CasMailbox<'a> {
    pub fn new(m: &'a Mailbox) -> Self {
        CasMailbox {
            identity: &m.alias,
            name: &m.alias,
            display_name: &m.display_name,
            primary_smtp_address: &m.primary_smtp,
            active_sync_enabled: m.active_sync_enabled,
            active_sync_allowed_device_ids: &m.allowed,
            active_sync_blocked_device_ids: &m.blocked,
            active_sync_mailbox_policy: "Default",
            active_sync_mailbox_policy_is_defaulted: true,
            active_sync_debug_logging: false,
            has_active_sync_device_partnership: !m.devices.is_empty(),
            owa_enabled: true,
            ews_enabled: true,
            external_directory_object_id: m.user_id,
            guid: m.guid,
            when_changed: m.when_changed,
            when_created: m.when_created,
            when_changed_utc: m.when_changed,
            when_created_utc: m.when_created,
            is_valid: true,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct MailboxView<'a> {
    identity: &'a str,
    name: &'a str,
    alias: &'a str,
    display_name: &'a str,
    user_principal_name: &'a str,
    primary_smtp_address: &'a str,
    windows_email_address: &'a str,
    email_addresses: Vec<String>,
    recipient_type: &'static str,
    recipient_type_details: &'static str,
    /// Culture names, most preferred first; an empty list when unset, as Exchange lists it.
    languages: &'a [&'static str],
    external_directory_object_id: Guid,
    guid: Guid,
    distinguished_name: String,
    when_changed: Utc,
    when_created: Utc,
    #[serde(rename = "WhenChangedUTC")]
    when_changed_utc: Utc,
    #[serde(rename = "WhenCreatedUTC")]
    when_created_utc: Utc,
    is_valid: bool,
}

impl<'a> MailboxView<'a> {
    pub fn new(org: &Org, m: &'a Mailbox) -> Self {
        let mut addresses = vec![
            format!("SMTP:{}", m.primary_smtp),
            format!("smtp:{}@{}", m.alias, org.tenant.initial_domain),
        ];
        if !m.upn.eq_ignore_ascii_case(&m.primary_smtp) {
            addresses.push(format!("smtp:{}", m.upn));
        }
        MailboxView {
            identity: &m.alias,
            name: &m.alias,
            alias: &m.alias,
            display_name: &m.display_name,
            user_principal_name: &m.upn,
            primary_smtp_address: &m.primary_smtp,
            windows_email_address: &m.primary_smtp,
            email_addresses: addresses,
            recipient_type: "UserMailbox",
            recipient_type_details: "UserMailbox",
            languages: m.languages,
            external_directory_object_id: m.user_id,
            guid: m.guid,
            distinguished_name: format!("CN={},{}", m.alias, dn_suffix(org)),
            when_changed: m.when_changed,
            when_created: m.when_created,
            when_changed_utc: m.when_changed,
            when_created_utc: m.when_created,
            is_valid: true,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct OrganizationSettings<'a> {
    identity: &'static str,
    name: &'static str,
    default_access_level: crate::org::AccessLevel,
    user_mail_insert: &'a str,
    admin_mail_recipients: &'a [Box<str>],
    ota_notification_mail_insert: &'a str,
    allow_access_for_un_supported_platform: bool,
    #[serde(rename = "AllowRMSSupportForUnenlightenedApps")]
    allow_rms_support_for_unenlightened_apps: bool,
    is_intune_managed: bool,
    has_azure_premium_subscription: bool,
    guid: Guid,
    when_changed: Utc,
    #[serde(rename = "WhenChangedUTC")]
    when_changed_utc: Utc,
    is_valid: bool,
}

impl<'a> OrganizationSettings<'a> {
    pub fn new(s: &'a OrgSettings, guid: Guid) -> Self {
        OrganizationSettings {
            identity: "Mobile Mailbox Settings",
            name: "Mobile Mailbox Settings",
            default_access_level: s.default_access,
            user_mail_insert: &s.user_mail_insert,
            admin_mail_recipients: &s.admin_mail_recipients,
            ota_notification_mail_insert: &s.ota_notification_mail_insert,
            allow_access_for_un_supported_platform: s.allow_access_for_unsupported_platform,
            allow_rms_support_for_unenlightened_apps: false,
            is_intune_managed: false,
            has_azure_premium_subscription: false,
            guid,
            when_changed: s.when_changed,
            when_changed_utc: s.when_changed,
            is_valid: true,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AccessRule<'a> {
    identity: String,
    name: String,
    access_level: crate::org::AccessLevel,
    characteristic: crate::org::Characteristic,
    query_string: &'a str,
    guid: Guid,
    when_changed: Utc,
    when_created: Utc,
    #[serde(rename = "WhenChangedUTC")]
    when_changed_utc: Utc,
    #[serde(rename = "WhenCreatedUTC")]
    when_created_utc: Utc,
    is_valid: bool,
}

impl<'a> AccessRule<'a> {
    pub fn new(r: &'a DeviceRule) -> Self {
        AccessRule {
            identity: r.name(),
            name: r.name(),
            access_level: r.level,
            characteristic: r.characteristic,
            query_string: &r.query,
            guid: r.guid,
            when_changed: r.when_changed,
            when_created: r.when_created,
            when_changed_utc: r.when_changed,
            when_created_utc: r.when_created,
            is_valid: true,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ExchangeServer<'a> {
    identity: &'a str,
    name: &'a str,
    fqdn: &'a str,
    server_role: &'static str,
    edition: &'static str,
    admin_display_version: &'static str,
    site: &'static str,
    is_client_access_server: bool,
    is_mailbox_server: bool,
    guid: Guid,
}

impl<'a> ExchangeServer<'a> {
    pub fn new(s: &'a ServerInfo) -> Self {
        ExchangeServer {
            identity: &s.name,
            name: &s.name,
            fqdn: &s.fqdn,
            server_role: "Mailbox, ClientAccess",
            edition: "Enterprise",
            admin_display_version: "Version 15.2 (Build 1544.4)",
            site: "contoso.com/Configuration/Sites/Default-First-Site-Name",
            is_client_access_server: true,
            is_mailbox_server: true,
            guid: s.guid,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ClientAccessService<'a> {
    identity: &'a str,
    name: &'a str,
    fqdn: &'a str,
    /// The one place Exchange publishes where a CAS answers; a client derives the server's base
    /// URL (scheme, host, port) from it.
    auto_discover_service_internal_uri: String,
    auto_discover_site_scope: [&'static str; 1],
    is_out_of_service: bool,
    guid: Guid,
}

impl<'a> ClientAccessService<'a> {
    pub fn new(s: &'a ServerInfo) -> Self {
        ClientAccessService {
            identity: &s.name,
            name: &s.name,
            fqdn: &s.fqdn,
            auto_discover_service_internal_uri: format!(
                "{}/Autodiscover/Autodiscover.xml",
                s.base_url
            ),
            auto_discover_site_scope: ["Default-First-Site-Name"],
            is_out_of_service: false,
            guid: s.guid,
        }
    }
}
