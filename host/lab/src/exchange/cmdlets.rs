//! The cmdlets the lab's Exchange answers, each with its declared parameters, and how each reads
//! or changes the organization.
//!
//! `Get-` cmdlets page: they walk their objects in ascending key order from the request's resume
//! position and render one page; the handler turns the position after it into `@odata.nextLink`.
//! Writes take the organization's write lock for the whole command, so a command is atomic, as a
//! cmdlet is against one object in Exchange.

use std::borrow::Cow;
use std::sync::RwLock;

use serde::Serialize;

use super::ServerInfo;
use super::error::CmdletError;
use super::filter::{self, Field, Filter, Kind, Property};
use super::params::{Args, ResultSize, Spec};
use super::views;
use crate::org::{AccessLevel, DeviceRule, EasDevice, Mailbox, Org, WipeRequest};
use crate::paging::{self, Position};
use crate::random::{Guid, Rng};
use crate::utc::Utc;

/// What one request of a cmdlet produced.
#[derive(Debug, Default)]
pub(crate) struct Output {
    /// The JSON array of returned objects.
    pub value: Vec<u8>,
    pub count: usize,
    pub next: Option<Position>,
    pub warnings: Vec<String>,
}

/// What the cmdlets need besides the organization.
pub(crate) struct Env<'a> {
    pub servers: &'a [ServerInfo],
    /// FQDN of the CAS serving this request, as Exchange names it in errors.
    pub server: &'a str,
    pub now: Utc,
    pub position: Position,
    pub page_size: usize,
    /// GUID of the organization settings object.
    pub settings_guid: Guid,
}

pub(crate) static SPECS: &[Spec] = &[
    Spec {
        name: "Get-MobileDevice",
        params: &[
            "Identity",
            "Mailbox",
            "ResultSize",
            "Filter",
            "ActiveSync",
            "OWAforDevices",
        ],
        mandatory: &[],
    },
    Spec {
        name: "Get-MobileDeviceStatistics",
        params: &[
            "Identity",
            "Mailbox",
            "ActiveSync",
            "OWAforDevices",
            "ShowRecoveryPassword",
        ],
        mandatory: &[],
    },
    Spec {
        name: "Clear-MobileDevice",
        params: &[
            "Identity",
            "AccountOnly",
            "Cancel",
            "NotificationEmailAddresses",
        ],
        mandatory: &["Identity"],
    },
    Spec {
        name: "Remove-MobileDevice",
        params: &["Identity"],
        mandatory: &["Identity"],
    },
    Spec {
        name: "Get-CASMailbox",
        params: &["Identity", "ResultSize", "Filter"],
        mandatory: &[],
    },
    Spec {
        name: "Set-CASMailbox",
        params: &[
            "Identity",
            "ActiveSyncAllowedDeviceIDs",
            "ActiveSyncBlockedDeviceIDs",
            "ActiveSyncEnabled",
        ],
        mandatory: &["Identity"],
    },
    Spec {
        name: "Get-Mailbox",
        params: &["Identity", "ResultSize", "Filter"],
        mandatory: &[],
    },
    Spec {
        name: "Get-ActiveSyncOrganizationSettings",
        params: &["Identity"],
        mandatory: &[],
    },
    Spec {
        name: "Set-ActiveSyncOrganizationSettings",
        params: &[
            "Identity",
            "DefaultAccessLevel",
            "AdminMailRecipients",
            "UserMailInsert",
            "OtaNotificationMailInsert",
            "AllowAccessForUnSupportedPlatform",
        ],
        mandatory: &[],
    },
    Spec {
        name: "Get-ActiveSyncDeviceAccessRule",
        params: &["Identity"],
        mandatory: &[],
    },
    Spec {
        name: "New-ActiveSyncDeviceAccessRule",
        params: &["QueryString", "Characteristic", "AccessLevel"],
        mandatory: &["QueryString", "Characteristic", "AccessLevel"],
    },
    Spec {
        name: "Set-ActiveSyncDeviceAccessRule",
        params: &["Identity", "AccessLevel"],
        mandatory: &["Identity"],
    },
    Spec {
        name: "Remove-ActiveSyncDeviceAccessRule",
        params: &["Identity"],
        mandatory: &["Identity"],
    },
    Spec {
        name: "Get-ExchangeServer",
        params: &["Identity"],
        mandatory: &[],
    },
    Spec {
        name: "Get-ClientAccessService",
        params: &["Identity"],
        mandatory: &[],
    },
];

pub(crate) fn spec(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.name.eq_ignore_ascii_case(name))
}

const ACCESS_STATES: &[&str] = &[
    "Unknown",
    "Allowed",
    "Blocked",
    "Quarantined",
    "DeviceDiscovery",
];
const ACCESS_REASONS: &[&str] = &[
    "Unknown",
    "Global",
    "Individual",
    "DeviceRule",
    "Upgrade",
    "Policy",
    "UserAgentsChanges",
    "RecentCommands",
    "Watsons",
    "OutOfBudgets",
    "SyncCommands",
    "EnableNotificationEmail",
];

const fn prop(name: &'static str, kind: Kind) -> Property {
    Property { name, kind }
}

/// What `Get-MobileDevice -Filter` can filter on, in the order `device_field` answers.
const DEVICE_PROPS: &[Property] = &[
    prop("DeviceAccessState", Kind::Enum(ACCESS_STATES)),
    prop("DeviceAccessStateReason", Kind::Enum(ACCESS_REASONS)),
    prop("FirstSyncTime", Kind::Time),
    prop("DeviceId", Kind::Text),
    prop("DeviceType", Kind::Text),
    prop("DeviceModel", Kind::Text),
    prop("DeviceOS", Kind::Text),
    prop("DeviceUserAgent", Kind::Text),
    prop("ClientType", Kind::Text),
    prop("UserDisplayName", Kind::Text),
    prop("DeviceAccessControlRule", Kind::Text),
    prop("WhenChanged", Kind::Time),
    prop("WhenChangedUTC", Kind::Time),
    prop("WhenCreated", Kind::Time),
    prop("WhenCreatedUTC", Kind::Time),
    prop("IsManaged", Kind::Bool),
    prop("IsCompliant", Kind::Bool),
];

fn device_field<'a>(org: &'a Org, dev: &'a EasDevice, i: usize) -> Option<Field<'a>> {
    let p = dev.profile();
    let text = |s: &'a str| Some(Field::Text(Cow::Borrowed(s)));
    let compliance = || org.managed_by_eas_id(&dev.device_id).map(|m| m.compliance);
    match i {
        0 => text(dev.state.as_str()),
        1 => text(dev.reason.as_str()),
        2 | 13 | 14 => Some(Field::Time(dev.first_sync)),
        3 => text(&dev.device_id),
        4 => text(p.eas_type),
        5 => text(p.eas_model),
        6 => text(p.builds[usize::from(dev.build)].eas_os),
        7 => Some(Field::Text(Cow::Owned(
            p.user_agent(&p.builds[usize::from(dev.build)]),
        ))),
        8 => text(p.client_type()),
        9 => text(org.owner_names(&dev.owner).1),
        10 => dev
            .rule
            .map(|r| Field::Text(Cow::Owned(org.rules[usize::from(r)].name()))),
        11 | 12 => Some(Field::Time(dev.when_changed)),
        15 => Some(Field::Bool(compliance().is_some())),
        16 => Some(Field::Bool(
            compliance() == Some(crate::org::ComplianceState::Compliant),
        )),
        _ => None,
    }
}

const CAS_MAILBOX_PROPS: &[Property] = &[
    prop("Name", Kind::Text),
    prop("DisplayName", Kind::Text),
    prop("PrimarySmtpAddress", Kind::Text),
    prop("ActiveSyncEnabled", Kind::Bool),
    prop("HasActiveSyncDevicePartnership", Kind::Bool),
    prop("ExternalDirectoryObjectId", Kind::Text),
    prop("WhenChanged", Kind::Time),
    prop("WhenChangedUTC", Kind::Time),
];

fn cas_mailbox_field(m: &Mailbox, i: usize) -> Option<Field<'_>> {
    let text = |s: &'_ str| Some(Field::Text(Cow::Owned(s.to_owned())));
    match i {
        0 => text(&m.alias),
        1 => text(&m.display_name),
        2 => text(&m.primary_smtp),
        3 => Some(Field::Bool(m.active_sync_enabled)),
        4 => Some(Field::Bool(!m.devices.is_empty())),
        5 => Some(Field::Text(Cow::Owned(m.user_id.to_string()))),
        6 | 7 => Some(Field::Time(m.when_changed)),
        _ => None,
    }
}

const MAILBOX_PROPS: &[Property] = &[
    prop("Name", Kind::Text),
    prop("Alias", Kind::Text),
    prop("DisplayName", Kind::Text),
    prop("UserPrincipalName", Kind::Text),
    prop("PrimarySmtpAddress", Kind::Text),
    prop("RecipientTypeDetails", Kind::Text),
    prop("ExternalDirectoryObjectId", Kind::Text),
    prop("WhenCreated", Kind::Time),
    prop("WhenChanged", Kind::Time),
];

fn mailbox_field(m: &Mailbox, i: usize) -> Option<Field<'_>> {
    let text = |s: &'_ str| Some(Field::Text(Cow::Owned(s.to_owned())));
    match i {
        0 | 1 => text(&m.alias),
        2 => text(&m.display_name),
        3 => text(&m.upn),
        4 => text(&m.primary_smtp),
        5 => text("UserMailbox"),
        6 => Some(Field::Text(Cow::Owned(m.user_id.to_string()))),
        7 => Some(Field::Time(m.when_created)),
        8 => Some(Field::Time(m.when_changed)),
        _ => None,
    }
}

fn parse_filter(args: &Args, props: &[Property]) -> Result<Option<Filter>, CmdletError> {
    match args.string("Filter")? {
        None => Ok(None),
        Some(text) => filter::parse(&text, props)
            .map(Some)
            .map_err(|e| CmdletError::invalid_filter(e.0)),
    }
}

fn read(lock: &RwLock<Org>) -> std::sync::RwLockReadGuard<'_, Org> {
    // A panicking writer must not take the whole lab down with it; its command is lost, the
    // organization stays usable.
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write(lock: &RwLock<Org>) -> std::sync::RwLockWriteGuard<'_, Org> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Renders one page of `keys` with `view`.
fn page<T: Serialize>(
    keys: impl Iterator<Item = u32>,
    env: &Env<'_>,
    size: ResultSize,
    view: impl Fn(u32) -> T,
) -> Output {
    let s = paging::slice(keys, env.position, env.page_size, size.limit());
    let items: Vec<T> = s.keys.iter().map(|&k| view(k)).collect();
    let mut warnings = Vec::new();
    if s.truncated {
        warnings.push(match size {
            ResultSize::Default => format!(
                "By default, only the first {} items are returned. Use the ResultSize parameter to specify the number of items returned. To return all items, specify \"-ResultSize Unlimited\".",
                ResultSize::DEFAULT_LIMIT
            ),
            _ => "There are more results available than are currently displayed. To view them, increase the value for the ResultSize parameter.".to_owned(),
        });
    }
    Output {
        value: serde_json::to_vec(&items).expect("views serialize"),
        count: items.len(),
        next: s.next,
        warnings,
    }
}

fn single<T: Serialize>(item: Option<T>) -> Output {
    let items: Vec<T> = item.into_iter().collect();
    Output {
        value: serde_json::to_vec(&items).expect("views serialize"),
        count: items.len(),
        ..Output::default()
    }
}

/// Runs one request of `spec` with bound `args`.
pub(crate) fn run(
    lock: &RwLock<Org>,
    spec: &Spec,
    args: &Args,
    env: &Env<'_>,
) -> Result<Output, CmdletError> {
    match spec.name {
        "Get-MobileDevice" => get_mobile_device(&read(lock), args, env),
        "Get-MobileDeviceStatistics" => get_mobile_device_statistics(&read(lock), args, env),
        "Remove-MobileDevice" => remove_mobile_device(&mut write(lock), args, env),
        "Clear-MobileDevice" => clear_mobile_device(&mut write(lock), args, env),
        "Get-CASMailbox" => get_mailboxes(&read(lock), args, env, true),
        "Get-Mailbox" => get_mailboxes(&read(lock), args, env, false),
        "Set-CASMailbox" => set_cas_mailbox(&mut write(lock), args, env),
        "Get-ActiveSyncOrganizationSettings" => {
            let org = read(lock);
            Ok(single(Some(views::OrganizationSettings::new(
                &org.settings,
                env.settings_guid,
            ))))
        }
        "Set-ActiveSyncOrganizationSettings" => set_org_settings(&mut write(lock), args, env),
        "Get-ActiveSyncDeviceAccessRule" => get_rules(&read(lock), args, env),
        "New-ActiveSyncDeviceAccessRule" => new_rule(&mut write(lock), args, env),
        "Set-ActiveSyncDeviceAccessRule" => set_rule(&mut write(lock), args, env),
        "Remove-ActiveSyncDeviceAccessRule" => remove_rule(&mut write(lock), args, env),
        "Get-ExchangeServer" | "Get-ClientAccessService" => get_servers(spec.name, args, env),
        other => unreachable!("cmdlet {other} is declared but not dispatched"),
    }
}

/// Devices in scope of `-Identity` / `-Mailbox`, ascending.
fn device_scope(org: &Org, args: &Args, env: &Env<'_>) -> Result<Vec<u32>, CmdletError> {
    if let Some(identity) = args.string("Identity")? {
        let seq = org
            .find_device(&identity)
            .ok_or_else(|| CmdletError::not_found(&identity, env.server))?;
        return Ok(vec![seq]);
    }
    if let Some(mailbox) = args.string("Mailbox")? {
        let ix = org
            .find_mailbox(&mailbox)
            .ok_or_else(|| CmdletError::not_found(&mailbox, env.server))?;
        return Ok(org.mailboxes[ix as usize].devices.clone());
    }
    Ok(Vec::new())
}

/// `-ActiveSync` restricts to EAS clients; `-OWAforDevices` to OWA for Devices (none in the lab).
fn client_filter(args: &Args) -> Result<impl Fn(&EasDevice) -> bool, CmdletError> {
    let eas = args.switch("ActiveSync")?;
    let owa = args.switch("OWAforDevices")?;
    Ok(move |d: &EasDevice| {
        let ty = d.profile().client_type();
        (!eas || ty == "EAS") && !owa
    })
}

fn get_mobile_device(org: &Org, args: &Args, env: &Env<'_>) -> Result<Output, CmdletError> {
    let size = args.result_size()?;
    let filter = parse_filter(args, DEVICE_PROPS)?;
    let by_client = client_filter(args)?;
    let keep = |d: &EasDevice| {
        by_client(d)
            && filter
                .as_ref()
                .is_none_or(|f| f.matches(&|i| device_field(org, d, i)))
    };
    let view = |seq: u32| views::MobileDevice::new(org, org.device(seq).expect("listed device"));
    if args.has("Identity") || args.has("Mailbox") {
        let scope = device_scope(org, args, env)?;
        let keys = scope
            .into_iter()
            .filter(|&s| org.device(s).is_some_and(keep));
        return Ok(page(keys, env, size, view));
    }
    // Resume at the position instead of scanning the pages before it again.
    let start = paging::resume_at(env.position, org.devices.len());
    let keys = org.devices[start..]
        .iter()
        .flatten()
        .filter(|d| keep(d))
        .map(|d| d.seq);
    Ok(page(keys, env, size, view))
}

fn get_mobile_device_statistics(
    org: &Org,
    args: &Args,
    env: &Env<'_>,
) -> Result<Output, CmdletError> {
    // Statistics are per mailbox or per device: Exchange has no parameter set for "all".
    if args.has("Identity") == args.has("Mailbox") {
        return Err(CmdletError::parameter_set());
    }
    let by_client = client_filter(args)?;
    let scope = device_scope(org, args, env)?;
    let keys = scope
        .into_iter()
        .filter(|&s| org.device(s).is_some_and(&by_client));
    Ok(page(keys, env, ResultSize::Unlimited, |seq| {
        views::MobileDeviceStatistics::new(org, org.device(seq).expect("listed device"))
    }))
}

fn remove_mobile_device(org: &mut Org, args: &Args, env: &Env<'_>) -> Result<Output, CmdletError> {
    let identity = args.string("Identity")?.unwrap_or_default();
    let seq = org
        .find_device(&identity)
        .ok_or_else(|| CmdletError::not_found(&identity, env.server))?;
    org.remove_device(seq);
    Ok(single::<()>(None))
}

/// Marks a remote wipe pending (`-AccountOnly`: the mail account only), or with `-Cancel`
/// withdraws it. Exchange answers nothing; `Get-MobileDeviceStatistics` shows the request.
fn clear_mobile_device(org: &mut Org, args: &Args, env: &Env<'_>) -> Result<Output, CmdletError> {
    let identity = args.string("Identity")?.unwrap_or_default();
    let account_only = args.switch("AccountOnly")?;
    let cancel = args.switch("Cancel")?;
    let seq = org
        .find_device(&identity)
        .ok_or_else(|| CmdletError::not_found(&identity, env.server))?;
    let dev = org.devices[seq as usize].as_mut().expect("found device");
    dev.wipe = (!cancel).then(|| {
        Box::new(WipeRequest {
            requested: env.now,
            account_only,
        })
    });
    dev.when_changed = env.now;
    Ok(single::<()>(None))
}

fn get_mailboxes(org: &Org, args: &Args, env: &Env<'_>, cas: bool) -> Result<Output, CmdletError> {
    let size = args.result_size()?;
    let props = if cas {
        CAS_MAILBOX_PROPS
    } else {
        MAILBOX_PROPS
    };
    let filter = parse_filter(args, props)?;
    let keys: Vec<u32> = match args.string("Identity")? {
        Some(identity) => vec![
            org.find_mailbox(&identity)
                .ok_or_else(|| CmdletError::not_found(&identity, env.server))?,
        ],
        None => (0..org.mailboxes.len() as u32).collect(),
    };
    let keep = |ix: &u32| {
        let m = &org.mailboxes[*ix as usize];
        filter.as_ref().is_none_or(|f| {
            if cas {
                f.matches(&|i| cas_mailbox_field(m, i))
            } else {
                f.matches(&|i| mailbox_field(m, i))
            }
        })
    };
    let keys = keys.into_iter().filter(keep);
    Ok(if cas {
        page(keys, env, size, |ix| {
            views::CasMailbox::new(&org.mailboxes[ix as usize])
        })
    } else {
        page(keys, env, size, |ix| {
            views::MailboxView::new(org, &org.mailboxes[ix as usize])
        })
    })
}

fn set_cas_mailbox(org: &mut Org, args: &Args, env: &Env<'_>) -> Result<Output, CmdletError> {
    let identity = args.string("Identity")?.unwrap_or_default();
    let ix = org
        .find_mailbox(&identity)
        .ok_or_else(|| CmdletError::not_found(&identity, env.server))?;
    let allowed = args.multi("ActiveSyncAllowedDeviceIDs")?;
    let blocked = args.multi("ActiveSyncBlockedDeviceIDs")?;
    let enabled = args.boolean("ActiveSyncEnabled")?;
    let m = &org.mailboxes[ix as usize];
    // Both lists are computed before either is stored: a failing half fails the whole command.
    let mut new_allowed = m.allowed.clone();
    let mut new_blocked = m.blocked.clone();
    if let Some(w) = &allowed {
        w.apply(&mut new_allowed)?;
    }
    if let Some(w) = &blocked {
        w.apply(&mut new_blocked)?;
    }
    let m = &mut org.mailboxes[ix as usize];
    // A repeat that changes nothing (a `Remove` of an absent id) is no second effect.
    if new_allowed != m.allowed || new_blocked != m.blocked {
        m.edits_applied += 1;
    }
    m.allowed = new_allowed;
    m.blocked = new_blocked;
    if let Some(e) = enabled {
        m.active_sync_enabled = e;
    }
    m.when_changed = env.now;
    org.recompute_mailbox(ix, env.now);
    Ok(single::<()>(None))
}

fn set_org_settings(org: &mut Org, args: &Args, env: &Env<'_>) -> Result<Output, CmdletError> {
    let level = args.access_level("DefaultAccessLevel")?;
    let recipients = args.multi("AdminMailRecipients")?;
    let insert = args.string("UserMailInsert")?;
    let ota = args.string("OtaNotificationMailInsert")?;
    let unsupported = args.boolean("AllowAccessForUnSupportedPlatform")?;
    let mut new_recipients = org.settings.admin_mail_recipients.clone();
    if let Some(w) = &recipients {
        w.apply(&mut new_recipients)?;
    }
    let s = &mut org.settings;
    s.admin_mail_recipients = new_recipients;
    if let Some(t) = insert {
        s.user_mail_insert = t.into();
    }
    if let Some(t) = ota {
        s.ota_notification_mail_insert = t.into();
    }
    if let Some(u) = unsupported {
        s.allow_access_for_unsupported_platform = u;
    }
    s.when_changed = env.now;
    if let Some(level) = level
        && level != org.settings.default_access
    {
        org.settings.default_access = level;
        org.recompute_all(env.now);
    }
    Ok(single::<()>(None))
}

/// Resolves a rule identity: its name (`iPhone (DeviceType)`) or GUID.
fn find_rule(org: &Org, identity: &str) -> Option<usize> {
    let guid = Guid::parse(identity);
    org.rules
        .iter()
        .position(|r| Some(r.guid) == guid || r.name().eq_ignore_ascii_case(identity.trim()))
}

fn get_rules(org: &Org, args: &Args, env: &Env<'_>) -> Result<Output, CmdletError> {
    let keys: Vec<u32> = match args.string("Identity")? {
        Some(identity) => vec![
            find_rule(org, &identity)
                .ok_or_else(|| CmdletError::not_found(&identity, env.server))? as u32,
        ],
        None => (0..org.rules.len() as u32).collect(),
    };
    Ok(page(keys.into_iter(), env, ResultSize::Unlimited, |i| {
        views::AccessRule::new(&org.rules[i as usize])
    }))
}

fn new_rule(org: &mut Org, args: &Args, env: &Env<'_>) -> Result<Output, CmdletError> {
    let query = args.string("QueryString")?.unwrap_or_default();
    let characteristic = args
        .characteristic("Characteristic")?
        .expect("mandatory parameter");
    let level: AccessLevel = args
        .access_level("AccessLevel")?
        .expect("mandatory parameter");
    let mut rng = Rng::stream(org.seed ^ env.now.unix() as u64, org.rules.len() as u64);
    let rule = DeviceRule {
        guid: rng.guid(),
        characteristic,
        query: query.into(),
        level,
        when_created: env.now,
        when_changed: env.now,
    };
    if find_rule(org, &rule.name()).is_some() {
        return Err(CmdletError::already_exists(&rule.name()));
    }
    org.rules.push(rule);
    org.recompute_all(env.now);
    let rule = org.rules.last().expect("just pushed");
    Ok(single(Some(views::AccessRule::new(rule))))
}

fn set_rule(org: &mut Org, args: &Args, env: &Env<'_>) -> Result<Output, CmdletError> {
    let identity = args.string("Identity")?.unwrap_or_default();
    let i =
        find_rule(org, &identity).ok_or_else(|| CmdletError::not_found(&identity, env.server))?;
    if let Some(level) = args.access_level("AccessLevel")? {
        org.rules[i].level = level;
        org.rules[i].when_changed = env.now;
        org.recompute_all(env.now);
    }
    Ok(single::<()>(None))
}

fn remove_rule(org: &mut Org, args: &Args, env: &Env<'_>) -> Result<Output, CmdletError> {
    let identity = args.string("Identity")?.unwrap_or_default();
    let i =
        find_rule(org, &identity).ok_or_else(|| CmdletError::not_found(&identity, env.server))?;
    org.remove_rule(i, env.now);
    Ok(single::<()>(None))
}

fn get_servers(cmdlet: &str, args: &Args, env: &Env<'_>) -> Result<Output, CmdletError> {
    let keys: Vec<u32> = match args.string("Identity")? {
        Some(identity) => {
            let i = env
                .servers
                .iter()
                .position(|s| {
                    s.name.eq_ignore_ascii_case(&identity) || s.fqdn.eq_ignore_ascii_case(&identity)
                })
                .ok_or_else(|| CmdletError::not_found(&identity, env.server))?;
            vec![i as u32]
        }
        None => (0..env.servers.len() as u32).collect(),
    };
    let keys = keys.into_iter();
    Ok(if cmdlet == "Get-ExchangeServer" {
        page(keys, env, ResultSize::Unlimited, |i| {
            views::ExchangeServer::new(&env.servers[i as usize])
        })
    } else {
        page(keys, env, ResultSize::Unlimited, |i| {
            views::ClientAccessService::new(&env.servers[i as usize])
        })
    })
}
