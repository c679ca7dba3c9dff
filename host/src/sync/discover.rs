//! Discover (Exchange) and fetch (Graph): reads an organization into an [`Inventory`].
//!
//! * Full: every mobile device partnership (`Get-MobileDevice`), every mailbox's lists
//!   (`Get-CASMailbox`) and UPN (`Get-Mailbox`), the organization settings, every Intune
//!   record, and the members of the in-scope groups. The listings run at once. The device
//!   listing, the longest (a hundred pages at 100 000 devices, each asked for only after the
//!   one before it), is split by `FirstSyncTime` into slices listed side by side
//!   ([`listing_slices`]).
//! * Quick: the partnerships Exchange first saw at or after the cursor (and their Intune
//!   records, `easDeviceId eq`), the Intune records that checked in since the cursor and the
//!   partnerships they match, and only the mailboxes of those partnerships. What Intune and
//!   the directory change without a check-in (compliance when a grace period runs out or an
//!   admin marks a device, a retire, a deleted record, group membership) leaves
//!   `lastSyncDateTime` alone: the quick sync finds it by listing every record's id,
//!   `easDeviceId`, compliance and management state (a hundred Graph pages at 100 000 devices)
//!   and the scope groups' members, and comparing them with the store ([`Moved`]). Every
//!   Exchange call, and every other Graph call, is per change (or per 20 changes), none per
//!   device of the org.
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
use tokio::task::JoinSet;

use super::progress;
use crate::exchange::cmdlets::{
    GetCasMailbox, GetDeviceAccessRule, GetMailbox, GetMobileDevice, GetMobileDeviceRecords,
    GetOrganizationSettings,
};
use crate::exchange::models::{self, DeviceAccessState};
use crate::exchange::{ExchangeClient, ExchangeError, Listed, PageSink};
use crate::graph::models as graph_models;
use crate::graph::{GraphClient, GraphError, ManagedDevices};
use crate::model::ComplianceState;
use crate::model::inventory::{
    AccessLevel, AccessState, DirectoryUser, ExchangeDevice, Inventory, KeyDigests, Mailbox,
    MailboxLanguages, ManagedDevice,
};
use crate::net::record::{self, Checked, Unreadable};
use crate::store::{Known, KnownRecord, StoreError};
use crate::timestamp::Timestamp;

/// How many `DeviceId`s one quick-sync `Get-MobileDevice -Filter` asks for.
const IDS_PER_FILTER: usize = 20;

/// Pages of the device listing decoded and not yet taken: matching needs every Intune record,
/// so the listing goes ahead this far while Graph is still being read, and no further.
const LISTED_AHEAD: usize = 4;

/// At most this many slices of the full device listing run side by side. Each decodes its
/// pages while the others do: at 100 000 devices, 8 slices raised the peak by 10 to 15 MB
/// (a more scattered heap) and were no faster than 4.
pub const MAX_LISTING_SLICES: usize = 4;

/// The span of `FirstSyncTime`s the slices share evenly (two years, about a device's life);
/// the oldest slice also takes everything before it.
const SLICED_SPAN_SECS: i64 = 730 * 86_400;

/// Why discovery failed; a sync whose discovery failed decides and sends nothing (see
/// [`super::save`] for what it stored).
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("Exchange: {0}")]
    Exchange(#[from] ExchangeError),
    #[error("Graph: {0}")]
    Graph(#[from] GraphError),
    /// What the last sync saw could not be read, so what changed since cannot be told.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// An Intune record that cannot be read, whose `easDeviceId` cannot be read either: any
    /// device without a readable record might be its device, and would be judged unenrolled.
    #[error("Graph: {0}; no partnership can be left out for it, so nothing is decided")]
    UnlinkedRecord(Box<Unreadable>),
}

/// What discovery read, and what it cost.
#[derive(Debug, Default)]
pub struct Discovered {
    pub inventory: Inventory,
    /// The organization's `DefaultAccessLevel` as Exchange has it now (read by both syncs: a
    /// quick sync predicts each unlisted device's state from it, and never sets it).
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

    /// A listing (one slice of it) starts over: what it lists again is no repeat. The names of
    /// the other slices move along, so a repeat of theirs after this is left out unreported:
    /// slices are disjoint, and the first listing is used either way.
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
    ManagedDevice {
        id: m.id,
        eas_device_id: m.eas_device_id.unwrap_or_default(),
        user_principal_name: m.user_principal_name.unwrap_or_default(),
        device_name: m.device_name.unwrap_or_default(),
        operating_system: m.operating_system.unwrap_or_default(),
        os_version: m.os_version.unwrap_or_default(),
        compliance_state: m.compliance_state,
        management_state: m.management_state.unwrap_or_default(),
        owner_type: m.managed_device_owner_type,
        last_sync: m.last_sync_date_time.map(|t| t.0),
        enrolled: m.enrolled_date_time.map(|t| t.0),
    }
}

/// The mailboxes, joining `Get-CASMailbox` (lists) with `Get-Mailbox` (UPN) by identity, and
/// each one's most preferred language, which the same `Get-Mailbox` listing carries at no
/// request of its own.
fn mailboxes(
    cas: Vec<models::CasMailbox>,
    mailboxes: Vec<models::Mailbox>,
) -> (Vec<Mailbox>, MailboxLanguages) {
    let by_identity: HashMap<String, (String, Option<String>)> = mailboxes
        .into_iter()
        .map(|m| {
            let language = m.languages.into_iter().find(|l| !l.trim().is_empty());
            (m.identity.to_lowercase(), (m.user_principal_name, language))
        })
        .collect();
    let mut languages = MailboxLanguages::default();
    let mailboxes = cas
        .into_iter()
        .map(|c| {
            let found = by_identity.get(&c.identity.to_lowercase());
            languages.push(found.and_then(|(_, language)| language.as_deref()));
            Mailbox {
                user_principal_name: found.map(|(upn, _)| upn.clone()),
                identity: c.identity,
                primary_smtp: c.primary_smtp_address,
                allowed: c.active_sync_allowed_device_ids,
                blocked: c.active_sync_blocked_device_ids,
            }
        })
        .collect();
    (mailboxes, languages)
}

/// The directory users the mailboxes name, each with the in-scope groups it is a member of and
/// its language. Every mailbox's UPN counts as a user: the admin API lists mailboxes of existing
/// users only.
fn users(mailboxes: &[Mailbox], members: &BTreeMap<String, DirectoryUser>) -> Vec<DirectoryUser> {
    mailboxes
        .iter()
        .map(|m| {
            let upn = m
                .user_principal_name
                .clone()
                .unwrap_or_else(|| m.primary_smtp.clone());
            let member = members.get(&upn.to_lowercase());
            DirectoryUser {
                groups: member.map(|u| u.groups.clone()).unwrap_or_default(),
                locale: member.map(|u| u.locale.clone()).unwrap_or_default(),
                user_principal_name: upn,
            }
        })
        .collect()
}

/// UPN (lowercase) → the user as the in-scope groups' listings show it: the groups it is a
/// transitive member of and its `preferredLanguage` (read in the same listing, so the notices'
/// language costs no request of its own).
async fn group_membership(
    graph: &GraphClient,
    scope_groups: &[String],
) -> Result<BTreeMap<String, DirectoryUser>, GraphError> {
    let mut out: BTreeMap<String, DirectoryUser> = BTreeMap::new();
    for group in scope_groups {
        for member in graph.group_members(group).await? {
            let is_user = member.is_user();
            if let Some(upn) = member.user_principal_name.filter(|_| is_user) {
                let user = out.entry(upn.to_lowercase()).or_default();
                user.groups.push(group.clone());
                if let Some(locale) = member.preferred_language.filter(|l| !l.is_empty()) {
                    user.locale = locale;
                }
            }
        }
    }
    Ok(out)
}

/// The full device listing in `count` slices by `FirstSyncTime`, which never changes for a
/// partnership, so that every partnership is in exactly one slice, however long the listing
/// takes and whatever is added meanwhile. Cut `now - k * (span / count)` for `k` in
/// `1..count`: the newest slice is open towards the future (new partnerships), the oldest
/// towards the past, and takes the partnerships without a `FirstSyncTime` too (`-not`, not
/// `-lt`). One slice is the plain listing.
///
/// An organization whose partnerships crowd into one slice lists no faster than before, and
/// no slower: its other slices are a request or two each, side by side.
pub fn listing_slices(count: usize, now: i64) -> Vec<GetMobileDeviceRecords> {
    let count = count.clamp(1, MAX_LISTING_SLICES);
    let width = SLICED_SPAN_SECS / count as i64;
    let cut = |k: usize| quote(&Timestamp(now - k as i64 * width).to_string());
    (0..count)
        .map(|k| {
            let filter = match k {
                _ if count == 1 => None,
                0 => Some(format!("FirstSyncTime -ge {}", cut(1))),
                _ if k == count - 1 => Some(format!("-not (FirstSyncTime -ge {})", cut(k))),
                _ => Some(format!(
                    "FirstSyncTime -ge {} -and FirstSyncTime -lt {}",
                    cut(k + 1),
                    cut(k)
                )),
            };
            // Every client type, not only `-ActiveSync`: Outlook for iOS and Android shows
            // as `ClientType Outlook` and obeys the same mailbox lists.
            GetMobileDeviceRecords(GetMobileDevice {
                filter,
                ..Default::default()
            })
        })
        .collect()
}

/// `listing`, logging how long it took: which listing a slow discovery waited for.
async fn timed<T>(what: &str, listing: impl Future<Output = T>) -> T {
    let started = std::time::Instant::now();
    let out = listing.await;
    tracing::debug!(
        listing = what,
        ms = started.elapsed().as_millis() as u64,
        "listed"
    );
    out
}

/// Hands a slice's pages on to the discovery's caller; a full queue holds the slice back.
struct SliceSink(mpsc::Sender<Sliced>);

impl PageSink<Checked<models::MobileDevice>> for SliceSink {
    async fn take(&mut self, listed: Listed<Checked<models::MobileDevice>>) {
        // The caller may stop listening (a failed discovery); the tasks are aborted then.
        let _ = self.0.send(Sliced::Listed(listed)).await;
    }
}

/// What a slice of the device listing hands on.
enum Sliced {
    Listed(Listed<Checked<models::MobileDevice>>),
    /// The slice failed: the listing is incomplete.
    Failed(ExchangeError),
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
    /// The tasks of the device listing's slices, handing on their pages. Dropping the set
    /// (a failed discovery, a cancelled sync) stops them.
    Listing {
        pages: mpsc::Receiver<Sliced>,
        slices: JoinSet<()>,
    },
    /// Partnerships read already (a quick sync), handed on as one page.
    Read(Option<Vec<ExchangeDevice>>),
}

impl DevicePages {
    /// The next page's partnerships (without those left out), `None` after the last.
    pub async fn next(&mut self) -> Result<Option<Vec<ExchangeDevice>>, DiscoverError> {
        let (pages, slices) = match &mut self.source {
            Source::Read(devices) => return Ok(devices.take()),
            Source::Listing { pages, slices } => (pages, slices),
        };
        loop {
            match pages.recv().await {
                Some(Sliced::Listed(Listed::Page(records))) => {
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
                Some(Sliced::Listed(Listed::Restarted)) => self.repeats.restart(),
                Some(Sliced::Failed(e)) => return Err(e.into()),
                None => {
                    // Every slice got to its end, unless one panicked: that must not pass
                    // for a complete listing.
                    while let Some(joined) = slices.join_next().await {
                        if let Err(e) = joined {
                            std::panic::resume_unwind(e.into_panic());
                        }
                    }
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

/// Everything, for a full sync. The partnerships come page by page from the device listing's
/// `slices` (see [`listing_slices`]), which start first and run on while the rest is read: the
/// caller works on each page while the next ones are on their way.
/// `read_rules`: also read the device access rules (when the configuration manages them).
pub async fn full(
    exchange: &ExchangeClient,
    graph: &GraphClient,
    scope_groups: &[String],
    read_rules: bool,
    slices: Vec<GetMobileDeviceRecords>,
) -> Result<Started, DiscoverError> {
    let (pages, tasks) = spawn_slices(exchange, slices);
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
        timed("Get-CASMailbox", exchange.run(&cas)),
        timed("Get-Mailbox", exchange.run(&mbx)),
        timed(
            "Get-ActiveSyncOrganizationSettings",
            exchange.run(&settings)
        ),
        timed(
            "Graph managedDevices",
            graph.managed_device_records(ManagedDevices::All)
        ),
        timed("Graph group members", group_membership(graph, scope_groups)),
        timed("Get-ActiveSyncDeviceAccessRule", rules),
    );
    let (mailboxes, mailbox_languages) = mailboxes(cas?, mbx?);
    let by_identity: HashMap<String, String> = mailboxes
        .iter()
        .map(|m| (m.identity.to_lowercase(), m.identity.clone()))
        .collect();
    let mut unreadable = Unreadables::default();
    let managed = unreadable.managed(managed?)?;
    let org_settings = settings?.into_iter().next();
    let org_default = org_settings.as_ref().map(|s| s.default_access_level);
    let users = users(&mailboxes, &groups?);
    Ok(Started {
        discovered: Discovered {
            inventory: Inventory {
                devices: Vec::new(),
                mailboxes,
                managed: managed.into_iter().map(managed_device).collect(),
                users,
                mailbox_languages,
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
                slices: tasks,
            },
            mailboxes: by_identity,
            unreadable,
            repeats: Repeats::default(),
        },
    })
}

/// Starts the device listing's `slices`, each the longest chain of requests, in a task of its
/// own, so that decoding the other listings' pages never delays the request for its next
/// page. The pages come on the returned channel.
fn spawn_slices(
    exchange: &ExchangeClient,
    slices: Vec<GetMobileDeviceRecords>,
) -> (mpsc::Receiver<Sliced>, JoinSet<()>) {
    let (to_caller, pages) = mpsc::channel(LISTED_AHEAD);
    let mut tasks = JoinSet::new();
    for slice in slices {
        let exchange = exchange.clone();
        let to_caller = to_caller.clone();
        // Its pages count for the discover stage awaiting it.
        tasks.spawn(progress::inherit_pages(async move {
            let what = format!(
                "Get-MobileDevice {}",
                slice.0.filter.as_deref().unwrap_or("")
            );
            let mut sink = SliceSink(to_caller);
            let listed = timed(&what, exchange.run_paged(&slice, &mut sink)).await;
            if let Err(e) = listed {
                let _ = sink.0.send(Sliced::Failed(e)).await;
            }
        }));
    }
    drop(to_caller);
    (pages, tasks)
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The changes since `since`, for a quick sync: the partnerships new since then, those of the
/// Intune records that changed, and those of what Intune and the directory changed without the
/// device checking in, which leaves `lastSyncDateTime` where it was ([`Moved`]); the mailboxes
/// of all of them. `known`: what the store holds, to compare with.
pub async fn quick(
    exchange: &ExchangeClient,
    graph: &GraphClient,
    scope_groups: &[String],
    since: i64,
    known: impl Future<Output = Result<Known, StoreError>>,
) -> Result<Started, DiscoverError> {
    let mut unreadable = Unreadables::default();
    // The default as Exchange has it, not as configured: an admin may have changed it by hand
    // since the last full sync, and only a full sync puts it back. One request.
    let settings = GetOrganizationSettings {};
    let (since_cursor, states, groups, known, settings) = tokio::join!(
        changed_since(exchange, graph, since, &mut unreadable),
        timed("Graph managedDevices states", graph.managed_device_states()),
        timed("Graph group members", group_membership(graph, scope_groups)),
        known,
        timed(
            "Get-ActiveSyncOrganizationSettings",
            exchange.run(&settings)
        ),
    );
    let (devices, mut changed) = since_cursor?;
    let (states, groups, known) = (states?, groups?, known?);
    let org_default = settings?.into_iter().next().map(|s| s.default_access_level);
    let moved = Moved::find(&known, &states, &groups, &devices, &changed);
    tracing::debug!(
        records = moved.records.len(),
        partnerships = moved.partnerships.len(),
        users = moved.users.len(),
        "changed without a check-in"
    );
    changed.extend(records_of(graph, &moved.records, &mut unreadable).await?);
    let devices = with_partnerships_of(
        exchange,
        devices,
        &changed,
        &moved.partnerships,
        &mut unreadable,
    )
    .await?;
    let (mailboxes, mailbox_languages) = mailboxes_of(exchange, &devices).await?;
    let by_identity: HashMap<String, String> = mailboxes
        .iter()
        .map(|m| (m.identity.to_lowercase(), m.identity.clone()))
        .collect();
    let devices = devices
        .into_values()
        .map(|d| exchange_device(d, &by_identity))
        .collect();
    let mut users = users(&mailboxes, &groups);
    // Users whose groups changed are saved even when none of their devices is here, so that
    // the next quick sync does not find the same change again.
    let here: BTreeSet<String> = users
        .iter()
        .map(|u| u.user_principal_name.to_lowercase())
        .collect();
    users.extend(
        moved
            .users
            .into_iter()
            .filter(|u| !here.contains(&u.user_principal_name)),
    );
    Ok(Started {
        discovered: Discovered {
            inventory: Inventory {
                devices: Vec::new(),
                mailboxes,
                managed: changed,
                users,
                mailbox_languages,
                // Every partnership here has its record here when Intune has one (the state
                // listing said which do): a partnership without one lost it.
                managed_complete: true,
            },
            org_default,
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

/// What changed since the last sync without moving a record's `lastSyncDateTime`, found by
/// comparing Graph's current state listing and group members with what the store holds.
#[derive(Debug, Default, PartialEq, Eq)]
struct Moved {
    /// `DeviceId`s whose Intune record is to be read whole: its compliance or management state
    /// changed, it is a new record of a stored partnership, or its user's groups changed.
    records: Vec<String>,
    /// `DeviceId`s of stored partnerships to list again without a record: their record is gone
    /// (deleted, retired), or their user's groups changed and they have none.
    partnerships: Vec<String>,
    /// Users whose in-scope groups changed, with their groups now.
    users: Vec<DirectoryUser>,
}

impl Moved {
    /// `new` and `changed`: the partnerships and records the quick sync reads anyway.
    fn find(
        known: &Known,
        states: &[graph_models::ManagedDeviceState],
        groups: &BTreeMap<String, DirectoryUser>,
        new: &BTreeMap<String, models::MobileDevice>,
        changed: &[ManagedDevice],
    ) -> Moved {
        let mut by_device: HashMap<String, Vec<&graph_models::ManagedDeviceState>> = HashMap::new();
        for s in states {
            if let Some(id) = s.eas_device_id.as_deref().filter(|id| !id.is_empty()) {
                by_device.entry(id.to_lowercase()).or_default().push(s);
            }
        }
        let mut moved = Moved::default();
        let mut regrouped = BTreeSet::new();
        for (user, was) in &known.groups {
            let member = groups.get(user);
            let mut now = member.map(|u| u.groups.clone()).unwrap_or_default();
            now.sort();
            if &now != was {
                regrouped.insert(user.as_str());
                moved.users.push(DirectoryUser {
                    user_principal_name: user.clone(),
                    groups: now,
                    locale: member.map(|u| u.locale.clone()).unwrap_or_default(),
                });
            }
        }
        let mut seen: BTreeSet<String> = changed
            .iter()
            .map(|m| m.eas_device_id.to_lowercase())
            .chain(new.values().map(|d| d.device_id.to_lowercase()))
            .collect();
        for d in &known.devices {
            let id = d.device_id.to_lowercase();
            if seen.contains(&id) {
                continue;
            }
            let now = by_device.get(&id).map(Vec::as_slice).unwrap_or_default();
            let record_moved = match &d.record {
                Some(was) => now.is_empty() || !now.iter().any(|s| same_record(was, s)),
                None => !now.is_empty(),
            };
            let user_moved = d.user.as_deref().is_some_and(|u| regrouped.contains(u));
            if record_moved || user_moved {
                seen.insert(id);
                if now.is_empty() {
                    moved.partnerships.push(d.device_id.clone());
                } else {
                    moved.records.push(d.device_id.clone());
                }
            }
        }
        moved
    }
}

/// Whether `now` is the stored record `was`, in the same compliance and management state. A
/// compliance state that does not read as one counts as a change.
fn same_record(was: &KnownRecord, now: &graph_models::ManagedDeviceState) -> bool {
    let compliance = |text: &str| -> Option<ComplianceState> {
        serde_json::from_value(serde_json::Value::String(text.to_owned())).ok()
    };
    let now_compliance = now.compliance_state.as_deref().and_then(compliance);
    was.id == now.id
        && now_compliance.is_some()
        && now_compliance == compliance(&was.compliance_state)
        && was
            .management_state
            .eq_ignore_ascii_case(now.management_state.as_deref().unwrap_or_default())
}

/// The Intune records of `device_ids`, one request each (`easDeviceId eq`), eight at a time:
/// after a service-side change of many records (a grace period running out) one after another
/// they would wait a round trip each, while the Graph client's budget paces them either way.
/// In order of `device_ids`; the first failure stops the lookups not yet started.
async fn records_of(
    graph: &GraphClient,
    device_ids: &[String],
    unreadable: &mut Unreadables,
) -> Result<Vec<ManagedDevice>, DiscoverError> {
    // Workers of one task, taking the next id in turn (the client is shared, not cloned).
    // Atomic and a mutex only because the sync's future must be `Send`; nothing contends.
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    let next = AtomicUsize::new(0);
    let found = std::sync::Mutex::new(Vec::with_capacity(device_ids.len()));
    let worker = || async {
        loop {
            let i = next.fetch_add(1, Relaxed);
            let Some(id) = device_ids.get(i) else { break };
            let records = graph
                .managed_device_records(ManagedDevices::EasDeviceId(id))
                .await;
            if records.is_err() {
                next.store(device_ids.len(), Relaxed);
            }
            found.lock().expect("record lookups").push((i, records));
        }
    };
    tokio::join!(
        worker(),
        worker(),
        worker(),
        worker(),
        worker(),
        worker(),
        worker(),
        worker()
    );
    let mut found = found.into_inner().expect("record lookups");
    found.sort_unstable_by_key(|(i, _)| *i);
    let mut out = Vec::new();
    for (_, records) in found {
        out.extend(
            unreadable
                .managed(records?)?
                .into_iter()
                .map(managed_device),
        );
    }
    Ok(out)
}

/// The partnerships first synced since `since` (by lowercased identity), and the Intune
/// records synced since then or belonging to one of those partnerships.
async fn changed_since(
    exchange: &ExchangeClient,
    graph: &GraphClient,
    since: i64,
    unreadable: &mut Unreadables,
) -> Result<(BTreeMap<String, models::MobileDevice>, Vec<ManagedDevice>), DiscoverError> {
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
    let devices: BTreeMap<String, models::MobileDevice> = unreadable
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
    let unknown: Vec<String> = devices
        .values()
        .map(|d| d.device_id.clone())
        .filter(|id| !have.contains(&id.to_lowercase()))
        .collect::<BTreeSet<String>>()
        .into_iter()
        .collect();
    changed.extend(records_of(graph, &unknown, unreadable).await?);
    Ok((devices, changed))
}

/// `devices` with the partnerships of the `changed` records and of `more` (`DeviceId`s) that are
/// not among them, less the partnerships whose records could not be read.
async fn with_partnerships_of(
    exchange: &ExchangeClient,
    mut devices: BTreeMap<String, models::MobileDevice>,
    changed: &[ManagedDevice],
    more: &[String],
    unreadable: &mut Unreadables,
) -> Result<BTreeMap<String, models::MobileDevice>, DiscoverError> {
    let mut listed: BTreeSet<String> = devices
        .values()
        .map(|d| d.device_id.to_lowercase())
        .collect();
    let wanted: Vec<&str> = changed
        .iter()
        .map(|m| m.eas_device_id.as_str())
        .chain(more.iter().map(String::as_str))
        .filter(|id| !id.is_empty() && listed.insert(id.to_lowercase()))
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
    Ok(listed
        .into_iter()
        .map(|d| (d.identity.to_lowercase(), d))
        .collect())
}

/// Only the mailboxes of `devices`' partnerships. A mailbox that is gone is left out: its
/// partnerships get `mailbox: None`.
async fn mailboxes_of(
    exchange: &ExchangeClient,
    devices: &BTreeMap<String, models::MobileDevice>,
) -> Result<(Vec<Mailbox>, MailboxLanguages), DiscoverError> {
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
    let cas_found = found_or_gone(cas)?;
    let mbx_found = found_or_gone(mbx)?;
    Ok(mailboxes(cas_found, mbx_found))
}

/// The objects of lookups by identity, a lookup whose object is gone finding none.
fn found_or_gone<T>(results: Vec<Result<Vec<T>, ExchangeError>>) -> Result<Vec<T>, DiscoverError> {
    let mut found = Vec::new();
    for r in results {
        match r {
            Ok(v) => found.extend(v),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::cmdlets::ResultSize;

    #[test]
    fn listing_slices_cut_firstsynctime_into_adjoining_ranges_open_at_both_ends() {
        let filters = |count, now| -> Vec<Option<String>> {
            listing_slices(count, now)
                .into_iter()
                .map(|s| s.0.filter)
                .collect()
        };
        assert_eq!(filters(1, 0), [None]);
        assert_eq!(filters(0, 0), [None], "at least one slice");
        // 2026-01-01T00:00:00Z; four slices of 182.5 days.
        let now = 1_767_225_600;
        assert_eq!(
            filters(4, now),
            [
                Some("FirstSyncTime -ge '2025-07-02T12:00:00Z'".to_owned()),
                Some("FirstSyncTime -ge '2025-01-01T00:00:00Z' -and FirstSyncTime -lt '2025-07-02T12:00:00Z'".to_owned()),
                Some("FirstSyncTime -ge '2024-07-02T12:00:00Z' -and FirstSyncTime -lt '2025-01-01T00:00:00Z'".to_owned()),
                Some("-not (FirstSyncTime -ge '2024-07-02T12:00:00Z')".to_owned()),
            ]
        );
        assert_eq!(filters(100, now).len(), MAX_LISTING_SLICES);
        assert!(
            listing_slices(2, now)
                .iter()
                .all(|s| s.0.result_size == ResultSize::Unlimited),
            "every slice is listed to its end"
        );
    }

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
