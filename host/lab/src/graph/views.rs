//! Graph entities as JSON, with Graph's property names and enum spellings: `managedDevice`
//! (the v1.0 properties, plus `managementState` which DESIGN.md lists), `user`, and `group` /
//! `user` as members. Each is serialized directly from the organization, honouring `$select` as a
//! bit set over its property list.

use std::borrow::Cow;

use serde::Serialize;
use serde::ser::SerializeMap;

use crate::dataset::{Client, Platform, derived_alnum, derived_digits};
use crate::org::{Mailbox, ManagedDevice, Org, Owner, OwnerType};
use crate::random::mix;
use crate::utc::Utc;

/// `managedDevice` properties in Graph's order.
pub(crate) const MANAGED_DEVICE_FIELDS: &[&str] = &[
    "id",
    "userId",
    "deviceName",
    "managedDeviceOwnerType",
    "deviceActionResults",
    "enrolledDateTime",
    "lastSyncDateTime",
    "operatingSystem",
    "complianceState",
    "jailBroken",
    "managementAgent",
    "osVersion",
    "easActivated",
    "easDeviceId",
    "easActivationDateTime",
    "azureADRegistered",
    "deviceEnrollmentType",
    "activationLockBypassCode",
    "emailAddress",
    "azureADDeviceId",
    "deviceRegistrationState",
    "deviceCategoryDisplayName",
    "isSupervised",
    "exchangeLastSuccessfulSyncDateTime",
    "exchangeAccessState",
    "exchangeAccessStateReason",
    "remoteAssistanceSessionUrl",
    "remoteAssistanceSessionErrorDetails",
    "isEncrypted",
    "userPrincipalName",
    "model",
    "manufacturer",
    "imei",
    "complianceGracePeriodExpirationDateTime",
    "serialNumber",
    "phoneNumber",
    "androidSecurityPatchLevel",
    "userDisplayName",
    "configurationManagerClientEnabledFeatures",
    "wiFiMacAddress",
    "deviceHealthAttestationState",
    "subscriberCarrier",
    "meid",
    "totalStorageSpaceInBytes",
    "freeStorageSpaceInBytes",
    "managedDeviceName",
    "partnerReportedThreatState",
    "managementState",
];

/// One JSON value of an entity property.
enum Val<'a> {
    Str(Cow<'a, str>),
    Bool(bool),
    Int(i64),
    Time(Utc),
    Null,
    EmptyArray,
}

impl Serialize for Val<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Val::Str(v) => s.serialize_str(v),
            Val::Bool(v) => s.serialize_bool(*v),
            Val::Int(v) => s.serialize_i64(*v),
            Val::Time(t) => t.serialize(s),
            Val::Null => s.serialize_none(),
            Val::EmptyArray => [(); 0].serialize(s),
        }
    }
}

/// A `managedDevice` with the selected properties.
pub(crate) struct ManagedDeviceView<'a> {
    pub org: &'a Org,
    pub md: &'a ManagedDevice,
    pub select: u64,
}

fn owner_user<'a>(
    org: &'a Org,
    owner: &'a Owner,
) -> Option<(String, &'a str, &'a str, &'a str, &'a str)> {
    // (user id, UPN, display name, first name, mail)
    match owner {
        Owner::Mailbox(ix) => {
            let m = &org.mailboxes[*ix as usize];
            let first = m.display_name.split(' ').next().unwrap_or("");
            Some((
                m.user_id.to_string(),
                &m.upn,
                &m.display_name,
                first,
                &m.primary_smtp,
            ))
        }
        Owner::Departed(d) => {
            let first = d.display_name.split(' ').next().unwrap_or("");
            Some((d.user_id.to_string(), &d.upn, &d.display_name, first, ""))
        }
        Owner::Nobody => None,
    }
}

/// Per-device facts computed once per object, not once per property.
struct Facts<'a> {
    user: Option<(String, &'a str, &'a str, &'a str, &'a str)>,
    eas: Option<&'a crate::org::EasDevice>,
}

impl<'a> ManagedDeviceView<'a> {
    fn facts(&self) -> Facts<'a> {
        Facts {
            user: owner_user(self.org, &self.md.owner),
            eas: self.md.eas_seq.and_then(|s| self.org.device(s)),
        }
    }

    fn value(&self, facts: &'a Facts<'a>, i: usize) -> Val<'a> {
        let (org, md) = (self.org, self.md);
        let p = md.profile();
        let build = &p.builds[usize::from(md.build)];
        let user = &facts.user;
        let eas = facts.eas;
        let text = |s: &'static str| Val::Str(Cow::Borrowed(s));
        let owned = |s: String| Val::Str(Cow::Owned(s));
        let apple = p.manufacturer == "Apple";
        let android = p.platform == Platform::Android;
        match MANAGED_DEVICE_FIELDS[i] {
            "id" => owned(md.id.to_string()),
            "userId" => owned(user.as_ref().map_or(String::new(), |u| u.0.clone())),
            "deviceName" => owned(p.friendly_name(user.as_ref().map_or("", |u| u.3))),
            "managedDeviceOwnerType" => text(md.owner_type.as_str()),
            "deviceActionResults" => Val::EmptyArray,
            "enrolledDateTime" => Val::Time(md.enrolled),
            "lastSyncDateTime" => Val::Time(md.last_sync),
            "operatingSystem" => text(p.platform.graph_os()),
            "complianceState" => text(md.compliance.as_str()),
            "jailBroken" => text("False"),
            "managementAgent" => text("mdm"),
            "osVersion" => text(build.version),
            "easActivated" => Val::Bool(!md.eas_device_id.is_empty()),
            "easDeviceId" => Val::Str(Cow::Borrowed(&md.eas_device_id)),
            "easActivationDateTime" => Val::Time(md.eas_activated_at),
            "azureADRegistered" => Val::Bool(true),
            "deviceEnrollmentType" => text(match (p.platform, md.owner_type) {
                (Platform::Windows, _) => "windowsAzureADJoin",
                (Platform::Ios | Platform::IpadOs | Platform::MacOs, OwnerType::Company) => {
                    "appleBulkWithUser"
                }
                _ => "userEnrollment",
            }),
            "activationLockBypassCode" => Val::Null,
            "emailAddress" => Val::Str(Cow::Borrowed(user.as_ref().map_or("", |u| u.4))),
            "azureADDeviceId" => owned(md.azure_ad_device_id.to_string()),
            "deviceRegistrationState" => text("registered"),
            "deviceCategoryDisplayName" => text(""),
            "isSupervised" => Val::Bool(apple && md.owner_type == OwnerType::Company),
            "exchangeLastSuccessfulSyncDateTime" => {
                Val::Time(eas.map_or(Utc::NEVER, |d| d.last_sync))
            }
            "exchangeAccessState" => text(eas.map_or("none", |d| d.state.graph())),
            "exchangeAccessStateReason" => text(eas.map_or("none", |d| d.reason.graph())),
            "remoteAssistanceSessionUrl" | "remoteAssistanceSessionErrorDetails" => Val::Null,
            "isEncrypted" => Val::Bool(true),
            "userPrincipalName" => Val::Str(Cow::Borrowed(user.as_ref().map_or("", |u| u.1))),
            "model" => text(p.model),
            "manufacturer" => text(p.manufacturer),
            "imei" => owned(if p.is_phone() && p.client != Client::Outlook {
                derived_digits(md.derive, 15)
            } else {
                String::new()
            }),
            "complianceGracePeriodExpirationDateTime" => Val::Time(md.grace_expiry),
            "serialNumber" => owned(derived_alnum(md.derive, 12)),
            "phoneNumber" => owned(if p.is_phone() {
                format!("+1425555{}", derived_digits(md.derive ^ 7, 4))
            } else {
                String::new()
            }),
            "androidSecurityPatchLevel" => text(if android { "2024-05-01" } else { "" }),
            "userDisplayName" => Val::Str(Cow::Borrowed(user.as_ref().map_or("", |u| u.2))),
            "configurationManagerClientEnabledFeatures" | "deviceHealthAttestationState" => {
                Val::Null
            }
            "wiFiMacAddress" => owned(format!(
                "{:012x}",
                mix(md.derive ^ 0x3ac) & 0xffff_ffff_ffff
            )),
            "subscriberCarrier" => text(if p.is_phone() { "Contoso Mobile" } else { "" }),
            "meid" => text(""),
            "totalStorageSpaceInBytes" => Val::Int((p.storage_gb << 30) as i64),
            "freeStorageSpaceInBytes" => {
                Val::Int(((p.storage_gb << 30) / 100 * (10 + mix(md.derive) % 70)) as i64)
            }
            "managedDeviceName" => owned(p.managed_device_name(
                match &md.owner {
                    Owner::Mailbox(ix) => &org.mailboxes[*ix as usize].alias,
                    Owner::Departed(d) => &d.alias,
                    Owner::Nobody => "",
                },
                md.enrolled,
            )),
            "partnerReportedThreatState" => text("unknown"),
            "managementState" => text(md.management_state.as_str()),
            other => unreachable!("managedDevice field {other} has no value"),
        }
    }
}

impl Serialize for ManagedDeviceView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let facts = self.facts();
        let mut map = s.serialize_map(None)?;
        for (i, name) in MANAGED_DEVICE_FIELDS.iter().enumerate() {
            if self.select & (1 << i) != 0 {
                map.serialize_entry(name, &self.value(&facts, i))?;
            }
        }
        map.end()
    }
}

/// `user` properties: the default set first, then ones only returned when selected.
pub(crate) const USER_FIELDS: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
    "accountEnabled",
    "department",
    "proxyAddresses",
];

/// What Graph returns without `$select`.
pub(crate) const USER_DEFAULT: u64 = (1 << 11) - 1;

pub(crate) struct UserView<'a> {
    pub org: &'a Org,
    pub m: &'a Mailbox,
    pub select: u64,
    /// Adds `"@odata.type":"#microsoft.graph.user"`, as member listings do.
    pub typed: bool,
}

impl Serialize for UserView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = self.m;
        let (given, surname) = m
            .display_name
            .split_once(' ')
            .unwrap_or((&m.display_name, ""));
        let mut map = s.serialize_map(None)?;
        if self.typed {
            map.serialize_entry("@odata.type", "#microsoft.graph.user")?;
        }
        for (i, name) in USER_FIELDS.iter().enumerate() {
            if self.select & (1 << i) == 0 {
                continue;
            }
            let v = match *name {
                "businessPhones" => Val::EmptyArray,
                "displayName" => Val::Str(Cow::Borrowed(&m.display_name)),
                "givenName" => Val::Str(Cow::Borrowed(given)),
                "jobTitle" | "mobilePhone" | "officeLocation" => Val::Null,
                "mail" => Val::Str(Cow::Borrowed(&m.primary_smtp)),
                "preferredLanguage" => match m.preferred_language {
                    Some(language) => Val::Str(Cow::Borrowed(language)),
                    None => Val::Null,
                },
                "surname" => Val::Str(Cow::Borrowed(surname)),
                "userPrincipalName" => Val::Str(Cow::Borrowed(&m.upn)),
                "id" => Val::Str(Cow::Owned(m.user_id.to_string())),
                "accountEnabled" => Val::Bool(true),
                "department" => {
                    Val::Str(Cow::Borrowed(crate::dataset::department_name(m.department)))
                }
                "proxyAddresses" => {
                    map.serialize_entry(
                        name,
                        &[
                            format!("SMTP:{}", m.primary_smtp),
                            format!("smtp:{}@{}", m.alias, self.org.tenant.initial_domain),
                        ],
                    )?;
                    continue;
                }
                other => unreachable!("user field {other} has no value"),
            };
            map.serialize_entry(name, &v)?;
        }
        map.end()
    }
}

/// `group` properties of a group listed as a member or as `transitiveMemberOf`.
pub(crate) const GROUP_FIELDS: &[&str] = &[
    "id",
    "displayName",
    "mailNickname",
    "mailEnabled",
    "securityEnabled",
    "description",
];

pub(crate) struct GroupView<'a> {
    pub org: &'a Org,
    pub index: usize,
    pub select: u64,
}

impl Serialize for GroupView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let g = &self.org.groups[self.index];
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("@odata.type", "#microsoft.graph.group")?;
        for (i, name) in GROUP_FIELDS.iter().enumerate() {
            if self.select & (1 << i) == 0 {
                continue;
            }
            let v = match *name {
                "id" => Val::Str(Cow::Owned(g.id.to_string())),
                "displayName" => Val::Str(Cow::Borrowed(&g.display_name)),
                "mailNickname" => Val::Str(Cow::Borrowed(&g.mail_nickname)),
                "mailEnabled" => Val::Bool(false),
                "securityEnabled" => Val::Bool(true),
                "description" => Val::Null,
                other => unreachable!("group field {other} has no value"),
            };
            map.serialize_entry(name, &v)?;
        }
        map.end()
    }
}
