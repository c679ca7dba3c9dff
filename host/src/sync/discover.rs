//! Discover (Exchange) and fetch (Graph): reads an organization into an [`Inventory`].
//!
//! * Full: every mobile device partnership (`Get-MobileDevice`), every mailbox's lists
//!   (`Get-CASMailbox`) and UPN (`Get-Mailbox`), the organization settings, every Intune
//!   record, and the members of the in-scope groups. The listings run at once; each is a
//!   handful of pages whatever the organization's size.
//! * Quick: the partnerships Exchange first saw at or after the cursor (and their Intune
//!   records, `easDeviceId eq`), the Intune records that changed since the cursor and the
//!   partnerships they match, and only the mailboxes of those partnerships. Every call is per
//!   change (or per 20 changes), none per device of the org.
//!
//! Both read the partnerships and the Intune records one record at a time (`net::record`): a
//! record that cannot be read is reported, and the partnership it concerns — its own record, or
//! the one its Intune record names by `easDeviceId` — is kept out of the inventory, so that the
//! run leaves it exactly as it is rather than judge it unenrolled or gone. An unreadable Intune
//! record whose `easDeviceId` is there but unreadable fails discovery: it could belong to any
//! partnership.
//!
//! What the sync does not fetch: `Get-MobileDeviceStatistics` (no built-in policy reads
//! `last-success-sync`, and it costs one call per device).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use tokio::sync::mpsc;

use super::inventory::{
    AccessLevel, AccessState, ComplianceState, DirectoryUser, ExchangeDevice, Inventory,
    KeyDigests, Mailbox, ManagedDevice, OwnerType,
};
use super::progress;
use crate::exchange::cmdlets::{
    GetCasMailbox, GetDeviceAccessRule, GetMailbox, GetMobileDevice, GetMobileDeviceRecords,
    GetOrganizationSettings,
};
use crate::exchange::models::{self, DeviceAccessState};
use crate::exchange::{CmdletTransport, ExchangeClient, ExchangeError, Listed};
use crate::graph::models as graph_models;
use crate::graph::{GraphClient, GraphError, ManagedDevices};
use crate::net::record::{self, Checked, Unreadable};
use crate::timestamp::Timestamp;

/// How many `DeviceId`s one quick-sync `Get-MobileDevice -Filter` asks for.
const IDS_PER_FILTER: usize = 20;

/// Why discovery failed; a sync whose discovery failed decides and sends nothing (see
/// [`super::save`] for what it stored).
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("Exchange: {0}")]
    Exchange(#[from] ExchangeError),
    #[error("Graph: {0}")]
    Graph(#[from] GraphError),
    /// An Intune record that cannot be read, whose `easDeviceId` cannot be read either: any
    /// device without a readable record might be its device, and would be judged unenrolled.
    #[error("Graph: {0}; no partnership can be left out for it, so nothing is decided")]
    UnlinkedRecord(Box<Unreadable>),
}

/// What discovery read, and what it cost.
#[derive(Debug, Default)]
pub struct Discovered {
    pub inventory: Inventory,
    /// The organization's `DefaultAccessLevel` (full sync only).
    pub org_default: Option<AccessLevel>,
    /// The ActiveSync organization settings (full sync only).
    pub org_settings: Option<models::OrganizationSettings>,
    /// The device access rules (full sync that manages them only).
    pub access_rules: Option<Vec<models::DeviceAccessRule>>,
    /// Records that could not be read, and partnerships left out because of them, one line
    /// each. Such devices are neither decided nor counted as gone. A full sync's come from its
    /// [`DevicePages`] once every page is in.
    pub unreadable: Vec<String>,
}

/// What discovery does with records it cannot read: report each, and keep out of the
/// inventory every partnership whose own record or Intune record is unreadable, so that it is
/// left exactly as it is (no verdict, no list edit) instead of looking unenrolled or gone.
#[derive(Debug, Default)]
struct Unreadables {
    lines: Vec<String>,
    /// Lowercase `DeviceId`s whose Intune record could not be read.
    intune: BTreeSet<String>,
}

impl Unreadables {
    fn devices(
        &mut self,
        records: Vec<Checked<models::MobileDevice>>,
    ) -> Vec<models::MobileDevice> {
        let (good, bad) = record::split(records);
        for u in bad {
            self.lines.push(format!("left as it is: {u}"));
        }
        good
    }

    fn managed(
        &mut self,
        records: Vec<Checked<graph_models::ManagedDevice>>,
    ) -> Result<Vec<graph_models::ManagedDevice>, DiscoverError> {
        let (good, bad) = record::split(records);
        for u in bad {
            match &u.link {
                // A record without `easDeviceId` concerns no partnership.
                Some(id) => {
                    if !id.is_empty() {
                        self.intune.insert(id.to_lowercase());
                    }
                    self.lines.push(format!("{u}"));
                }
                None => return Err(DiscoverError::UnlinkedRecord(Box::new(u))),
            }
        }
        Ok(good)
    }

    /// Takes the partnerships of unreadable Intune records out of `devices`.
    fn keep_out(&mut self, devices: &mut Vec<models::MobileDevice>) {
        if self.intune.is_empty() {
            return;
        }
        let intune = &self.intune;
        let lines = &mut self.lines;
        devices.retain(|d| {
            let unreadable = intune.contains(&d.device_id.to_lowercase());
            if unreadable {
                lines.push(format!(
                    "left as it is: device with Identity `{}`: its Intune record could not be read",
                    d.identity
                ));
            }
            !unreadable
        });
    }
}

/// The identities of the partnerships listed so far, to leave out a second listing of one
/// partnership (same `Identity`).
#[derive(Debug)]
struct Repeats {
    /// Lowercase identities of the listing under way.
    seen: KeyDigests,
    /// Lowercase identities of listings Exchange made start over: listed again, not twice.
    earlier: KeyDigests,
}

impl Default for Repeats {
    fn default() -> Self {
        let seen = KeyDigests::default();
        Repeats {
            earlier: seen.empty_like(),
            seen,
        }
    }
}

impl Repeats {
    /// `devices` without the partnerships listed before; a repeat within one listing is
    /// reported.
    fn remove(
        &mut self,
        devices: Vec<models::MobileDevice>,
        unreadable: &mut Unreadables,
    ) -> Vec<models::MobileDevice> {
        devices
            .into_iter()
            .filter(|d| {
                let identity = d.identity.to_lowercase();
                if self.earlier.contains(&identity) {
                    return false;
                }
                let first = self.seen.insert(&identity);
                if !first {
                    unreadable.lines.push(format!(
                        "device with Identity `{}` listed twice; its first listing is used",
                        d.identity
                    ));
                }
                first
            })
            .collect()
    }

    /// The listing starts over: what it lists again is no repeat.
    fn restart(&mut self) {
        self.earlier.absorb(&mut self.seen);
    }
}

fn access_state(state: DeviceAccessState) -> AccessState {
    match state {
        DeviceAccessState::Unknown => AccessState::Unknown,
        DeviceAccessState::Allowed => AccessState::Allowed,
        DeviceAccessState::Blocked => AccessState::Blocked,
        DeviceAccessState::Quarantined => AccessState::Quarantined,
        DeviceAccessState::DeviceDiscovery => AccessState::DeviceDiscovery,
    }
}

/// A partnership, with its mailbox resolved against the mailboxes Exchange listed (`None` when
/// the mailbox is gone).
fn exchange_device(d: models::MobileDevice, mailboxes: &HashMap<String, String>) -> ExchangeDevice {
    let mailbox = ExchangeDevice::mailbox_of(&d.identity)
        .and_then(|m| mailboxes.get(&m.to_lowercase()))
        .cloned();
    ExchangeDevice {
        device_id: d.device_id,
        identity: d.identity,
        mailbox,
        device_type: d.device_type.unwrap_or_default(),
        device_model: d.device_model.unwrap_or_default(),
        device_os: d.device_os.unwrap_or_default(),
        user_agent: d.device_user_agent.unwrap_or_default(),
        first_sync: d.first_sync_time.map(|t| t.0),
        last_success_sync: None,
        access_state: access_state(d.device_access_state),
        access_state_reason: d.device_access_state_reason,
    }
}

fn managed_device(m: graph_models::ManagedDevice) -> ManagedDevice {
    use graph_models::ComplianceState as G;
    let compliance_state = match m.compliance_state {
        G::Unknown | G::UnknownFutureValue => ComplianceState::Unknown,
        G::Compliant => ComplianceState::Compliant,
        G::Noncompliant => ComplianceState::Noncompliant,
        G::Conflict => ComplianceState::Conflict,
        G::Error => ComplianceState::Error,
        G::InGracePeriod => ComplianceState::InGracePeriod,
        G::ConfigManager => ComplianceState::ConfigManager,
    };
    let owner_type = match m.managed_device_owner_type {
        graph_models::OwnerType::Company => OwnerType::Company,
        graph_models::OwnerType::Personal => OwnerType::Personal,
        _ => OwnerType::Unknown,
    };
    ManagedDevice {
        id: m.id,
        eas_device_id: m.eas_device_id.unwrap_or_default(),
        user_principal_name: m.user_principal_name.unwrap_or_default(),
        device_name: m.device_name.unwrap_or_default(),
        operating_system: m.operating_system.unwrap_or_default(),
        os_version: m.os_version.unwrap_or_default(),
        compliance_state,
        management_state: m.management_state.unwrap_or_default(),
        owner_type,
        last_sync: m.last_sync_date_time.map(|t| t.0),
        enrolled: m.enrolled_date_time.map(|t| t.0),
    }
}

/// Joins `Get-CASMailbox` (lists) with `Get-Mailbox` (UPN) by identity.
fn mailboxes(cas: Vec<models::CasMailbox>, mailboxes: Vec<models::Mailbox>) -> Vec<Mailbox> {
    let upn: HashMap<String, String> = mailboxes
        .into_iter()
        .map(|m| (m.identity.to_lowercase(), m.user_principal_name))
        .collect();
    cas.into_iter()
        .map(|c| Mailbox {
            user_principal_name: upn.get(&c.identity.to_lowercase()).cloned(),
            identity: c.identity,
            primary_smtp: c.primary_smtp_address,
            allowed: c.active_sync_allowed_device_ids,
            blocked: c.active_sync_blocked_device_ids,
        })
        .collect()
}

/// The directory users the mailboxes name, each with the in-scope groups it is a member of.
/// Every mailbox's UPN counts as a user: the admin API lists mailboxes of existing users only.
fn users(mailboxes: &[Mailbox], groups: &BTreeMap<String, Vec<String>>) -> Vec<DirectoryUser> {
    mailboxes
        .iter()
        .map(|m| {
            let upn = m
                .user_principal_name
                .clone()
                .unwrap_or_else(|| m.primary_smtp.clone());
            let key = upn.to_lowercase();
            DirectoryUser {
                groups: groups.get(&key).cloned().unwrap_or_default(),
                user_principal_name: upn,
            }
        })
        .collect()
}

/// UPN (lowercase) → the in-scope groups the user is a transitive member of.
async fn group_membership(
    graph: &GraphClient,
    scope_groups: &[String],
) -> Result<BTreeMap<String, Vec<String>>, GraphError> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for group in scope_groups {
        for member in graph.group_members(group).await? {
            let is_user = member.is_user();
            if let Some(upn) = member.user_principal_name.filter(|_| is_user) {
                out.entry(upn.to_lowercase())
                    .or_default()
                    .push(group.clone());
            }
        }
    }
    Ok(out)
}

/// Stops a spawned task when the discovery that needs it is dropped (a cancelled sync).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A discovery whose partnerships come page by page: everything else is in `discovered`
/// (whose inventory has no devices yet), the partnerships come from `devices`.
pub struct Started {
    pub discovered: Discovered,
    pub devices: DevicePages,
}

/// The partnerships of a discovery, a page at a time, each read against the mailboxes and the
/// Intune records the discovery read first.
pub struct DevicePages {
    source: Source,
    /// Lowercase mailbox identity → the identity as listed.
    mailboxes: HashMap<String, String>,
    unreadable: Unreadables,
    repeats: Repeats,
}

enum Source {
    /// The device listing's task, handing on its pages.
    Listing {
        pages: mpsc::UnboundedReceiver<Listed<Checked<models::MobileDevice>>>,
        task: tokio::task::JoinHandle<Result<(), ExchangeError>>,
        _abort: AbortOnDrop,
    },
    /// Partnerships read already (a quick sync), handed on as one page.
    Read(Option<Vec<ExchangeDevice>>),
}

impl DevicePages {
    /// The next page's partnerships (without those left out), `None` after the last.
    pub async fn next(&mut self) -> Result<Option<Vec<ExchangeDevice>>, DiscoverError> {
        let (pages, task) = match &mut self.source {
            Source::Read(devices) => return Ok(devices.take()),
            Source::Listing { pages, task, .. } => (pages, task),
        };
        loop {
            match pages.recv().await {
                Some(Listed::Page(records)) => {
                    let good = self.unreadable.devices(records);
                    let mut devices = self.repeats.remove(good, &mut self.unreadable);
                    self.unreadable.keep_out(&mut devices);
                    return Ok(Some(
                        devices
                            .into_iter()
                            .map(|d| exchange_device(d, &self.mailboxes))
                            .collect(),
                    ));
                }
                Some(Listed::Restarted) => self.repeats.restart(),
                None => {
                    // The listing's end, or its failure.
                    task.await
                        .expect("the device listing task does not panic")?;
                    return Ok(None);
                }
            }
        }
    }

    /// Records that could not be read and partnerships left out because of them, one line
    /// each, once every page is in (see [`Discovered::unreadable`]).
    pub fn unreadable(self) -> Vec<String> {
        self.unreadable.lines
    }
}

/// Everything, for a full sync. The partnerships come page by page from the device listing,
/// which starts first and runs on while the rest is read: the caller works on each page while
/// the next one is on its way.
/// `read_rules`: also read the device access rules (when the configuration manages them).
pub async fn full(
    exchange: &ExchangeClient,
    graph: &GraphClient,
    scope_groups: &[String],
    read_rules: bool,
) -> Result<Started, DiscoverError> {
    // Every client type, not only `-ActiveSync`: Outlook for iOS and Android shows as
    // `ClientType Outlook` and obeys the same mailbox lists.
    // The device listing is the longest chain of requests (its pages come one after another):
    // it gets a task of its own, so that decoding the other listings' pages never delays the
    // request for its next page.
    let (to_caller, pages) = mpsc::unbounded_channel();
    let task = tokio::spawn({
        let exchange = exchange.clone();
        // Its pages count for the discover stage awaiting it.
        progress::inherit_pages(async move {
            exchange
                .run_paged(&GetMobileDeviceRecords::default(), |listed| {
                    // The caller may stop listening (a failed discovery); the task is
                    // aborted then.
                    let _ = to_caller.send(listed);
                })
                .await
        })
    });
    let _abort = AbortOnDrop(task.abort_handle());
    let (cas, mbx, settings) = (
        GetCasMailbox::default(),
        GetMailbox::default(),
        GetOrganizationSettings {},
    );
    let rules = async {
        if read_rules {
            exchange.run(&GetDeviceAccessRule {}).await.map(Some)
        } else {
            Ok(None)
        }
    };
    let (cas, mbx, settings, managed, groups, rules) = tokio::join!(
        exchange.run(&cas),
        exchange.run(&mbx),
        exchange.run(&settings),
        graph.managed_device_records(ManagedDevices::All),
        group_membership(graph, scope_groups),
        rules,
    );
    let mailboxes = mailboxes(cas?, mbx?);
    let by_identity: HashMap<String, String> = mailboxes
        .iter()
        .map(|m| (m.identity.to_lowercase(), m.identity.clone()))
        .collect();
    let mut unreadable = Unreadables::default();
    let managed = unreadable.managed(managed?)?;
    let org_settings = settings?.into_iter().next();
    let org_default = org_settings.as_ref().map(|s| match s.default_access_level {
        models::AccessLevel::Allow => AccessLevel::Allow,
        models::AccessLevel::Block => AccessLevel::Block,
        models::AccessLevel::Quarantine => AccessLevel::Quarantine,
    });
    let users = users(&mailboxes, &groups?);
    Ok(Started {
        discovered: Discovered {
            inventory: Inventory {
                devices: Vec::new(),
                mailboxes,
                managed: managed.into_iter().map(managed_device).collect(),
                users,
                managed_complete: true,
            },
            org_default,
            org_settings,
            access_rules: rules?,
            unreadable: Vec::new(),
        },
        devices: DevicePages {
            source: Source::Listing {
                pages,
                task,
                _abort,
            },
            mailboxes: by_identity,
            unreadable,
            repeats: Repeats::default(),
        },
    })
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The changes since `since`, for a quick sync.
pub async fn quick(
    exchange: &ExchangeClient,
    graph: &GraphClient,
    scope_groups: &[String],
    since: i64,
) -> Result<Started, DiscoverError> {
    let new_devices = GetMobileDeviceRecords(GetMobileDevice {
        filter: Some(format!(
            "FirstSyncTime -ge {}",
            quote(&Timestamp(since).to_string())
        )),
        ..Default::default()
    });
    let (new_devices, changed) = tokio::join!(
        exchange.run(&new_devices),
        graph.managed_device_records(ManagedDevices::SyncedSince(Timestamp(since)))
    );
    let mut unreadable = Unreadables::default();
    let mut devices: BTreeMap<String, models::MobileDevice> = unreadable
        .devices(new_devices?)
        .into_iter()
        .map(|d| (d.identity.to_lowercase(), d))
        .collect();
    let mut changed: Vec<ManagedDevice> = unreadable
        .managed(changed?)?
        .into_iter()
        .map(managed_device)
        .collect();

    // A new partnership of a device enrolled long ago (a user adding the account again) has a
    // record that did not change: ask Intune for it, one request per such device.
    let have: BTreeSet<String> = changed
        .iter()
        .map(|m| m.eas_device_id.to_lowercase())
        .collect();
    let unknown: BTreeSet<String> = devices
        .values()
        .map(|d| d.device_id.clone())
        .filter(|id| !have.contains(&id.to_lowercase()))
        .collect();
    for id in unknown {
        let records = graph
            .managed_device_records(ManagedDevices::EasDeviceId(&id))
            .await?;
        changed.extend(unreadable.managed(records)?.into_iter().map(managed_device));
    }

    // The partnerships of the changed records that are not among the new ones.
    let known: BTreeSet<String> = devices
        .values()
        .map(|d| d.device_id.to_lowercase())
        .collect();
    let wanted: Vec<&str> = changed
        .iter()
        .map(|m| m.eas_device_id.as_str())
        .filter(|id| !id.is_empty() && !known.contains(&id.to_lowercase()))
        .collect();
    let lookups: Vec<GetMobileDeviceRecords> = wanted
        .chunks(IDS_PER_FILTER)
        .map(|ids| {
            GetMobileDeviceRecords(GetMobileDevice {
                filter: Some(
                    ids.iter()
                        .map(|id| format!("DeviceId -eq {}", quote(id)))
                        .collect::<Vec<_>>()
                        .join(" -or "),
                ),
                ..Default::default()
            })
        })
        .collect();
    for found in exchange.run_all(lookups).await {
        for d in unreadable.devices(found?) {
            devices.entry(d.identity.to_lowercase()).or_insert(d);
        }
    }
    let mut listed: Vec<models::MobileDevice> = devices.into_values().collect();
    unreadable.keep_out(&mut listed);
    let devices: BTreeMap<String, models::MobileDevice> = listed
        .into_iter()
        .map(|d| (d.identity.to_lowercase(), d))
        .collect();

    // Only the mailboxes of those partnerships.
    let names: BTreeSet<String> = devices
        .values()
        .filter_map(|d| ExchangeDevice::mailbox_of(&d.identity).map(str::to_lowercase))
        .collect();
    let cas_calls: Vec<GetCasMailbox> = names
        .iter()
        .map(|n| GetCasMailbox {
            identity: Some(n.clone()),
            ..Default::default()
        })
        .collect();
    let mbx_calls: Vec<GetMailbox> = names
        .iter()
        .map(|n| GetMailbox {
            identity: Some(n.clone()),
            ..Default::default()
        })
        .collect();
    let (cas, mbx) = tokio::join!(exchange.run_all(cas_calls), exchange.run_all(mbx_calls));
    let mut cas_found = Vec::new();
    let mut mbx_found = Vec::new();
    // A mailbox that is gone leaves its partnerships with `mailbox: None`.
    for r in cas {
        match r {
            Ok(v) => cas_found.extend(v),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    for r in mbx {
        match r {
            Ok(v) => mbx_found.extend(v),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mailboxes = mailboxes(cas_found, mbx_found);
    let by_identity: HashMap<String, String> = mailboxes
        .iter()
        .map(|m| (m.identity.to_lowercase(), m.identity.clone()))
        .collect();
    let devices = devices
        .into_values()
        .map(|d| exchange_device(d, &by_identity))
        .collect();
    let groups = group_membership(graph, scope_groups).await?;
    let users = users(&mailboxes, &groups);
    Ok(Started {
        discovered: Discovered {
            inventory: Inventory {
                devices: Vec::new(),
                mailboxes,
                managed: changed,
                users,
                managed_complete: false,
            },
            org_default: None,
            org_settings: None,
            access_rules: None,
            unreadable: unreadable.lines,
        },
        devices: DevicePages {
            source: Source::Read(Some(devices)),
            mailboxes: HashMap::new(),
            unreadable: Unreadables::default(),
            repeats: Repeats::default(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_values_are_quoted_for_opath() {
        assert_eq!(quote("a'b"), "'a''b'");
    }

    #[test]
    fn unreadable_intune_records_keep_their_partnerships_out_or_fail_discovery() {
        let page = |records: &str| -> Vec<Checked<graph_models::ManagedDevice>> {
            serde_json::from_str(records).unwrap()
        };
        let device = |id: &str| {
            mobile_device(
                &format!("alice\\ExchangeActiveSyncDevices\\{id}"),
                id,
                DeviceAccessState::Allowed,
                "Individual",
            )
        };
        let mut u = Unreadables::default();
        let good = u
            .managed(page(
                r#"[{"id":"m1","easDeviceId":"AAA","complianceState":"compliant","managedDeviceOwnerType":"company"},
                    {"id":"m2","easDeviceId":"bbb","managedDeviceOwnerType":"company"}]"#,
            ))
            .unwrap();
        assert_eq!(good.len(), 1);
        let mut devices = vec![device("AAA"), device("BBB")];
        u.keep_out(&mut devices);
        assert_eq!(devices, [device("AAA")]);
        assert_eq!(u.lines.len(), 2, "{:?}", u.lines);
        assert!(u.lines[1].contains("ExchangeActiveSyncDevices\\BBB`: its Intune record"));

        // A bad record of a device that never used EAS concerns no partnership.
        let mut u = Unreadables::default();
        let none = u
            .managed(page(r#"[{"id":"m4","easDeviceId":null}]"#))
            .unwrap();
        assert!(none.is_empty() && u.intune.is_empty());
        assert_eq!(u.lines.len(), 1);

        let unlinked = Unreadables::default().managed(page(
            r#"[{"id":"m3","easDeviceId":7,"complianceState":"compliant","managedDeviceOwnerType":"company"}]"#,
        ));
        assert!(matches!(unlinked, Err(DiscoverError::UnlinkedRecord(_))));
    }

    /// A partnership as Exchange lists it, with only what these tests look at.
    fn mobile_device(
        identity: &str,
        id: &str,
        state: DeviceAccessState,
        reason: &str,
    ) -> models::MobileDevice {
        models::MobileDevice {
            identity: identity.into(),
            device_id: id.into(),
            device_type: None,
            device_model: None,
            device_os: None,
            device_user_agent: None,
            first_sync_time: None,
            user_display_name: None,
            device_access_state: state,
            device_access_state_reason: reason.into(),
            when_changed: None,
        }
    }

    #[test]
    fn a_partnership_of_a_gone_mailbox_has_none() {
        let known: HashMap<String, String> = [("alice".to_owned(), "Alice".to_owned())].into();
        let device =
            |identity: &str| mobile_device(identity, "X", DeviceAccessState::Quarantined, "Global");
        let d = exchange_device(device("alice\\ExchangeActiveSyncDevices\\x"), &known);
        assert_eq!(d.mailbox.as_deref(), Some("Alice"));
        assert_eq!(d.access_state, AccessState::Quarantined);
        let gone = exchange_device(device("bob\\ExchangeActiveSyncDevices\\x"), &known);
        assert_eq!(gone.mailbox, None);
    }
}
