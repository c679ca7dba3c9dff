//! Plan: from the verdicts and Exchange's current mailbox lists, the fewest commands that make
//! Exchange enforce the verdicts, and the blast-radius guard over them.
//!
//! A verdict sets the device's membership in its mailbox's two lists:
//!
//! | verdict    | `ActiveSyncAllowedDeviceIDs` | `ActiveSyncBlockedDeviceIDs` |
//! |------------|------------------------------|------------------------------|
//! | allow      | in                           | out                          |
//! | block      | out                          | in                           |
//! | quarantine | out                          | out (the org default applies)|
//! | exempt     | untouched                    | untouched                    |
//!
//! Block also takes the device off the allow list although the block list alone would win:
//! a stale allow entry would silently grant access the day someone clears the block list.
//!
//! Each mailbox whose lists must change gets one `Set-CASMailbox` with the `Add`/`Remove`
//! hashtable form, which edits the lists in place instead of replacing them, so entries the
//! connector does not own (other admins', other tools') survive and two plans for different
//! devices of one mailbox never overwrite each other. IDs compare ignoring case, as Exchange
//! compares them; an entry is removed in the spelling the list has, a new one is added in the
//! device's. A device whose membership is already right costs nothing.
//!
//! A device on no list gets what Exchange's device access rules (Intune's platform exceptions)
//! or, when none matches, the organization default give it ([`Platform`]). So quarantine is
//! enforced only where that is Quarantine, and one exception to the table: with
//! `override_default_rule` off, a device the policy allows but a rule or the default blocks is
//! left on no list (the block stands), instead of being put on the allow list.
//!
//! A full sync that manages the organization default appends the command that sets it
//! ([`Plan::set_org_default`]), and the blast-radius guard then also counts the devices the
//! switch takes from allowed to blocked or quarantined.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::model::{ParamValue, Parameters};
use serde::{Deserialize, Serialize};

use crate::exchange::models::{DeviceAccessRule as ExistingRule, OrganizationSettings};
use crate::model::inventory::{
    AccessLevel, AccessState, DeviceKey, ExchangeDevice, Mailbox, ShownState, Verdict,
};
use crate::model::settings::{
    DeviceAccessRule, RestrictionLimit, RuleCharacteristic, SyncSettings,
};

pub use crate::model::command::{
    ALLOWED_IDS, BLOCKED_IDS, NEW_ACCESS_RULE, REMOVE_ACCESS_RULE, REMOVE_MOBILE_DEVICE,
    SET_CAS_MAILBOX, SET_ORG_SETTINGS,
};

/// One cmdlet call: what the journal stores and the Exchange client runs as it is.
///
/// Parameters are given in the order the REST bodies have always had (alphabetical: the JSON
/// map they were built in sorted them), so that the bytes sent are the same as before the
/// typed parameters; PowerShell does not care.
pub use crate::model::{Command, PlannedCommand};

/// A device and the verdict the policy gave it.
#[derive(Debug, Clone, Copy)]
pub struct Decided<'a> {
    /// Exchange's current view of the device.
    pub device: &'a ExchangeDevice,
    /// What the policy decided.
    pub verdict: Verdict,
}

/// A device whose list membership the plan changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceChange {
    /// The partnership.
    pub key: DeviceKey,
    /// Its `DeviceId`.
    pub device_id: String,
    /// The mailbox whose lists change.
    pub mailbox: String,
    /// Exchange's state before the plan.
    pub from: AccessState,
    /// The verdict the plan enforces.
    pub verdict: Verdict,
}

/// Why a decided device gets no command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "why")]
pub enum SkipReason {
    /// Its mailbox is gone: there are no lists to edit.
    NoMailbox,
    /// Discovery did not report the lists of its mailbox.
    UnknownMailbox {
        /// The mailbox the device names.
        mailbox: String,
    },
    /// Another partnership of the same mailbox has the same `DeviceId` and came first.
    DuplicateDeviceId,
}

/// A decided device the plan cannot act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The partnership.
    pub key: DeviceKey,
    /// Why.
    pub reason: SkipReason,
}

/// A command of a plan as the sync holds it until it is recorded: a mailbox's list edits stay
/// plain strings, a fifth of the size of their JSON parameters (37 000 of them at 100 000
/// devices), and become their `Set-CASMailbox` chunk by chunk as the plan is journaled.
#[derive(Debug, Clone, PartialEq)]
pub enum PlanStep {
    /// One mailbox's list edits.
    MailboxEdit(MailboxEdit),
    /// Any other command, built already.
    Command(PlannedCommand),
}

impl PlanStep {
    /// The devices whose state the command changes.
    pub fn devices(&self) -> &[DeviceKey] {
        match self {
            PlanStep::MailboxEdit(edit) => &edit.devices,
            PlanStep::Command(command) => &command.devices,
        }
    }

    /// The command, as the journal stores it and Exchange receives it.
    pub fn into_planned(self) -> PlannedCommand {
        match self {
            PlanStep::MailboxEdit(edit) => edit.into_planned(),
            PlanStep::Command(command) => command,
        }
    }
}

impl From<PlannedCommand> for PlanStep {
    fn from(command: PlannedCommand) -> Self {
        PlanStep::Command(command)
    }
}

/// The `Add`/`Remove` edits of one mailbox's lists: its `Set-CASMailbox`, not yet built.
#[derive(Debug, Clone, PartialEq)]
pub struct MailboxEdit {
    /// The mailbox's `-Identity`.
    identity: String,
    allow_add: Vec<String>,
    allow_remove: Vec<String>,
    block_add: Vec<String>,
    block_remove: Vec<String>,
    devices: Vec<DeviceKey>,
}

/// The commands that enforce a set of verdicts, and whether they may run. `S` is how a command
/// is held: built ([`PlannedCommand`], what [`plan`] returns) or compact ([`PlanStep`], what
/// [`plan_steps`] returns for a sync to record chunk by chunk).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan<S = PlannedCommand> {
    /// One `Set-CASMailbox` per mailbox whose lists change (sorted by mailbox), then the
    /// `Remove-MobileDevice` calls.
    pub commands: Vec<S>,
    /// Every device whose lists change.
    pub changes: Vec<DeviceChange>,
    /// Decided devices the plan cannot act on.
    pub skipped: Vec<Skipped>,
    /// Quarantined devices whose lists are right but that Exchange reports allowed or blocked:
    /// a device access rule or the org default decides them, which no list edit can change.
    pub unenforced: Vec<DeviceKey>,
    /// Devices on no list after the plan, allowed now by a rule or the default, that a change
    /// of the device access rules blocks or quarantines ([`Plan::count_rule_changes`]); in
    /// `restricted` too.
    #[serde(default)]
    pub by_rules: Vec<DeviceKey>,
    /// Devices whose lists change but whose state Exchange will show is not their verdict's:
    /// a quarantine under an allow rule or default (no list can quarantine a device), an
    /// allowed device left to a blocking rule or default (`override_default_rule` off). With
    /// the state and `DeviceAccessStateReason` Exchange will show, for the store to record
    /// instead of the verdict's once the edit is confirmed.
    #[serde(default)]
    pub shown: Vec<ShownState>,
    /// Devices the plan takes from allowed to blocked or quarantined, or whose allowed
    /// partnership it removes: `restricted.len()`.
    pub restrictions: usize,
    /// Those devices.
    pub restricted: BTreeSet<DeviceKey>,
    /// The most restrictions a plan may carry without approval.
    pub limit: usize,
    /// True when `restrictions > limit`: store the plan, apply nothing, ask an operator.
    pub held: bool,
}

impl<S> Plan<S> {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }
}

/// The level the store records for a confirmed list edit by `verdict` (see
/// `store::enforced_state`); `None` for exempt, which no edit is for.
fn recorded_level(verdict: Verdict) -> Option<AccessLevel> {
    match verdict {
        Verdict::Allow => Some(AccessLevel::Allow),
        Verdict::Block => Some(AccessLevel::Block),
        Verdict::Quarantine => Some(AccessLevel::Quarantine),
        Verdict::Exempt => None,
    }
}

/// The edits of one mailbox's lists.
#[derive(Default)]
struct ListEdits<'a> {
    allow_add: Vec<String>,
    allow_remove: Vec<String>,
    block_add: Vec<String>,
    block_remove: Vec<String>,
    devices: Vec<DeviceKey>,
    /// The `DeviceId`s of the mailbox's partnerships planned so far, changed or not.
    seen: Vec<&'a str>,
}

/// Whether two `DeviceId`s name the same device: compared as their lowercased forms, without
/// building them.
fn same_id(a: &str, b: &str) -> bool {
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

/// What Exchange gives a device that is on no mailbox list once the plan ran: the level of the
/// device access rule that decides it, else the organization default (Exchange's precedence:
/// mailbox lists, then rules, then the default); and Intune's `overrideDefaultRule`.
#[derive(Debug, Clone, Copy)]
pub struct Platform<'a> {
    /// The organization default after the plan; `None`: not known (neither managed nor read).
    pub default: Option<AccessLevel>,
    /// The device access rules after the plan (the configured ones, when the configuration
    /// manages them); `None`: not known, and Exchange's `DeviceAccessStateReason` tells whether
    /// a rule decides a device now.
    pub rules: Option<&'a [DeviceAccessRule]>,
    /// `override_default_rule`: an allowed device goes on the allow list even where a rule or
    /// the default blocks it.
    pub override_default_rule: bool,
}

impl Default for Platform<'_> {
    /// Nothing known, allowed devices listed: the plan as it was before rules were modelled.
    fn default() -> Self {
        Platform {
            default: None,
            rules: None,
            override_default_rule: true,
        }
    }
}

/// Where a device goes in its mailbox's lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// On the allow list.
    Allow,
    /// On the block list.
    Block,
    /// On neither: a rule or the default decides it.
    Neither,
}

impl Platform<'_> {
    /// The level a rule or the default gives `device` on no list; `None`: not known.
    pub fn level_of(&self, device: &ExchangeDevice) -> Option<AccessLevel> {
        let now_by = |reason: &str| {
            device
                .access_state_reason
                .eq_ignore_ascii_case(reason)
                .then(|| level_of_state(device.access_state))
                .flatten()
        };
        // Where the default is not known (a quick sync that does not manage it), a device the
        // default decides now shows it.
        let default = || self.default.or_else(|| now_by("Global"));
        match self.rules {
            Some(rules) => deciding_rule(rules, device).or_else(default),
            None => now_by("DeviceRule").or_else(default),
        }
    }

    /// What Exchange names as deciding `device` on no list: `DeviceRule` when a rule matches
    /// it (the configured ones, or without them the one Exchange reports now), else `Global`.
    pub fn reason_of(&self, device: &ExchangeDevice) -> &'static str {
        let by_rule = match self.rules {
            Some(rules) => deciding_rule(rules, device).is_some(),
            None => device
                .access_state_reason
                .eq_ignore_ascii_case("DeviceRule"),
        };
        if by_rule { "DeviceRule" } else { "Global" }
    }

    /// Where `verdict` puts `device`, given what rules and the default give it (`level`).
    fn place(&self, verdict: Verdict, level: Option<AccessLevel>) -> Place {
        match verdict {
            Verdict::Allow if !self.override_default_rule && level == Some(AccessLevel::Block) => {
                Place::Neither
            }
            Verdict::Allow => Place::Allow,
            Verdict::Block => Place::Block,
            Verdict::Quarantine | Verdict::Exempt => Place::Neither,
        }
    }

    /// The level `device` has once the plan gave it `verdict` (not exempt): its list's, or on
    /// no list what a rule or the default gives it, Quarantine where that is not known (the
    /// default the connector manages unless told otherwise).
    pub fn after(&self, verdict: Verdict, device: &ExchangeDevice) -> AccessLevel {
        let level = self.level_of(device);
        settled(self.place(verdict, level), level)
    }
}

/// The level a device in `place` has, `level` being what a rule or the default gives it.
fn settled(place: Place, level: Option<AccessLevel>) -> AccessLevel {
    match place {
        Place::Allow => AccessLevel::Allow,
        Place::Block => AccessLevel::Block,
        Place::Neither => level.unwrap_or(AccessLevel::Quarantine),
    }
}

/// The level a device in `state` has, when a rule or the default put it there.
fn level_of_state(state: AccessState) -> Option<AccessLevel> {
    match state {
        AccessState::Allowed => Some(AccessLevel::Allow),
        AccessState::Blocked => Some(AccessLevel::Block),
        AccessState::Quarantined => Some(AccessLevel::Quarantine),
        AccessState::Unknown | AccessState::DeviceDiscovery => None,
    }
}

/// The level of the rule among `rules` that decides `device`, as the lab's Exchange picks it:
/// the most specific characteristic that matches (model, user agent, OS, type; a model rule is
/// how an exception is carved out of a family rule), among those the most restrictive level.
/// `XMSWLHeader` rules are never matched: the inventory does not read that header.
fn deciding_rule(rules: &[DeviceAccessRule], device: &ExchangeDevice) -> Option<AccessLevel> {
    let specificity = |c: RuleCharacteristic| match c {
        RuleCharacteristic::DeviceModel => 4,
        RuleCharacteristic::UserAgent => 3,
        RuleCharacteristic::DeviceOS => 2,
        RuleCharacteristic::DeviceType => 1,
        RuleCharacteristic::XMSWLHeader => 0,
    };
    let restrictiveness = |level: AccessLevel| match level {
        AccessLevel::Block => 3,
        AccessLevel::Quarantine => 2,
        AccessLevel::Allow => 1,
    };
    rules
        .iter()
        .filter(|rule| {
            let value = match rule.characteristic {
                RuleCharacteristic::DeviceModel => &device.device_model,
                RuleCharacteristic::UserAgent => &device.user_agent,
                RuleCharacteristic::DeviceOS => &device.device_os,
                RuleCharacteristic::DeviceType => &device.device_type,
                RuleCharacteristic::XMSWLHeader => return false,
            };
            value.eq_ignore_ascii_case(&rule.query_string)
        })
        .max_by_key(|rule| {
            (
                specificity(rule.characteristic),
                restrictiveness(rule.access_level),
            )
        })
        .map(|rule| rule.access_level)
}

impl ListEdits<'_> {
    /// Edits `mailbox`'s lists so that `device_id` is where `place` says: on the allow list
    /// only if there, on the block list only if there. Whether anything changes.
    fn enforce(&mut self, mailbox: &Mailbox, device_id: &str, place: Place) -> bool {
        let in_allow = entries(&mailbox.allowed, device_id);
        let in_block = entries(&mailbox.blocked, device_id);
        let want_allow = place == Place::Allow;
        let want_block = place == Place::Block;
        let mut changed = false;
        if want_allow && in_allow.is_empty() {
            self.allow_add.push(device_id.to_owned());
            changed = true;
        }
        if !want_allow && !in_allow.is_empty() {
            self.allow_remove.extend(in_allow.into_iter().cloned());
            changed = true;
        }
        if want_block && in_block.is_empty() {
            self.block_add.push(device_id.to_owned());
            changed = true;
        }
        if !want_block && !in_block.is_empty() {
            self.block_remove.extend(in_block.into_iter().cloned());
            changed = true;
        }
        changed
    }

    fn into_edit(self, identity: &str) -> Option<MailboxEdit> {
        if self.devices.is_empty() {
            return None;
        }
        Some(MailboxEdit {
            identity: identity.to_owned(),
            allow_add: self.allow_add,
            allow_remove: self.allow_remove,
            block_add: self.block_add,
            block_remove: self.block_remove,
            devices: self.devices,
        })
    }
}

impl MailboxEdit {
    fn into_planned(self) -> PlannedCommand {
        // In the order the REST bodies always had (see `Command`): the lists, then `Identity`.
        let mut parameters = Parameters::new();
        if !self.allow_add.is_empty() || !self.allow_remove.is_empty() {
            parameters = parameters.hash_edit(ALLOWED_IDS, self.allow_add, self.allow_remove);
        }
        if !self.block_add.is_empty() || !self.block_remove.is_empty() {
            parameters = parameters.hash_edit(BLOCKED_IDS, self.block_add, self.block_remove);
        }
        parameters = parameters.text("Identity", self.identity.clone());
        PlannedCommand {
            mailbox: Some(self.identity),
            devices: self.devices,
            command: Command {
                cmdlet: SET_CAS_MAILBOX.into(),
                parameters,
            },
        }
    }
}

/// The entries of `list` that name `device_id`, in the list's spelling.
fn entries<'a>(list: &'a [String], device_id: &str) -> Vec<&'a String> {
    list.iter()
        .filter(|entry| entry.eq_ignore_ascii_case(device_id))
        .collect()
}

/// Plans the commands for `decided` against the lists in `mailboxes`.
///
/// Devices that were not decided (their plugin batch failed) are simply not in `decided`, and
/// keep their state. `removals` are partnerships to remove (`Remove-MobileDevice`): the devices
/// Intune retired, when the settings ask for it; a partnership is only removed when the policy
/// decided it and did not exempt it. `org_devices` is the organization's device count, the base
/// of the blast-radius share: the whole organization's, also on a quick sync (from the store).
pub fn plan(
    mailboxes: &[Mailbox],
    decided: &[Decided<'_>],
    removals: &[&ExchangeDevice],
    limit: &RestrictionLimit,
    org_devices: usize,
) -> Plan {
    let plan = plan_steps(
        mailboxes,
        decided,
        removals,
        limit,
        org_devices,
        &Platform::default(),
    );
    Plan {
        commands: plan
            .commands
            .into_iter()
            .map(PlanStep::into_planned)
            .collect(),
        changes: plan.changes,
        skipped: plan.skipped,
        unenforced: plan.unenforced,
        by_rules: plan.by_rules,
        shown: plan.shown,
        restrictions: plan.restrictions,
        restricted: plan.restricted,
        limit: plan.limit,
        held: plan.held,
    }
}

/// [`plan`] for devices whose rules and default `platform` knows, its mailbox edits left
/// compact ([`PlanStep`]).
pub fn plan_steps(
    mailboxes: &[Mailbox],
    decided: &[Decided<'_>],
    removals: &[&ExchangeDevice],
    limit: &RestrictionLimit,
    org_devices: usize,
    platform: &Platform<'_>,
) -> Plan<PlanStep> {
    let by_identity: HashMap<String, &Mailbox> = mailboxes
        .iter()
        .map(|m| (m.identity.to_lowercase(), m))
        .collect();
    let mut planning = Planning {
        platform: *platform,
        edits: HashMap::new(),
        changes: Vec::new(),
        skipped: Vec::new(),
        unenforced: Vec::new(),
        restricted: BTreeSet::new(),
        shown: Vec::new(),
    };
    for d in decided {
        planning.device(&by_identity, d);
    }
    let Planning {
        platform: _,
        edits,
        changes,
        skipped,
        unenforced,
        mut restricted,
        shown,
    } = planning;
    let mut edits: Vec<(&str, (&Mailbox, ListEdits))> = edits.into_iter().collect();
    edits.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut commands: Vec<PlanStep> = edits
        .into_iter()
        .filter_map(|(_, (mailbox, edit))| edit.into_edit(&mailbox.identity))
        .map(PlanStep::MailboxEdit)
        .collect();
    commands.extend(removal_steps(decided, removals, &mut restricted));
    let restrictions = restricted.len();
    let limit = limit.limit(org_devices);
    Plan {
        commands,
        changes,
        skipped,
        unenforced,
        by_rules: Vec::new(),
        shown,
        restrictions,
        restricted,
        limit,
        held: restrictions > limit,
    }
}

/// The list edits of a plan as the decided devices come, and what the plan says of each device.
struct Planning<'a> {
    /// What rules and the default give a device on no list.
    platform: Platform<'a>,
    /// Keyed by the plan's lowercased mailbox names (borrowed, not copies); hashed while the
    /// devices come (a tree costs a dozen string comparisons per device at 100 000), sorted
    /// once for the commands' order.
    edits: HashMap<&'a str, (&'a Mailbox, ListEdits<'a>)>,
    changes: Vec<DeviceChange>,
    skipped: Vec<Skipped>,
    unenforced: Vec<DeviceKey>,
    restricted: BTreeSet<DeviceKey>,
    shown: Vec<ShownState>,
}

impl<'a> Planning<'a> {
    /// Plans the list edits that give `d` its verdict, in its mailbox (found in `by_identity`,
    /// keyed by lowercased identity).
    fn device(&mut self, by_identity: &'a HashMap<String, &'a Mailbox>, d: &Decided<'a>) {
        if d.verdict == Verdict::Exempt {
            return;
        }
        let device = d.device;
        let key = device.key();
        let skip = |reason| Skipped {
            key: key.clone(),
            reason,
        };
        let Some(mailbox_name) = &device.mailbox else {
            self.skipped.push(skip(SkipReason::NoMailbox));
            return;
        };
        let Some((mailbox_key, mailbox)) = by_identity.get_key_value(&mailbox_name.to_lowercase())
        else {
            self.skipped.push(skip(SkipReason::UnknownMailbox {
                mailbox: mailbox_name.clone(),
            }));
            return;
        };
        let (_, edit) = self
            .edits
            .entry(mailbox_key.as_str())
            .or_insert_with(|| (mailbox, ListEdits::default()));
        // A mailbox has a handful of partnerships: a scan of its own beats a set of every
        // (mailbox, DeviceId) pair of the organization (100 000 pairs of copied strings).
        if edit.seen.iter().any(|id| same_id(id, &device.device_id)) {
            self.skipped.push(skip(SkipReason::DuplicateDeviceId));
            return;
        }
        edit.seen.push(&device.device_id);
        let level = self.platform.level_of(device);
        let place = self.platform.place(d.verdict, level);
        if edit.enforce(mailbox, &device.device_id, place) {
            let after = settled(place, level);
            if device.access_state == AccessState::Allowed && after != AccessLevel::Allow {
                self.restricted.insert(key.clone());
            }
            if Some(after) != recorded_level(d.verdict) {
                self.shown.push(ShownState {
                    key: key.clone(),
                    level: after,
                    reason: self.platform.reason_of(device).to_owned(),
                });
            }
            edit.devices.push(key.clone());
            self.changes.push(DeviceChange {
                key,
                device_id: device.device_id.clone(),
                mailbox: mailbox.identity.clone(),
                from: device.access_state,
                verdict: d.verdict,
            });
        } else if d.verdict == Verdict::Quarantine
            && matches!(
                device.access_state,
                AccessState::Allowed | AccessState::Blocked
            )
        {
            self.unenforced.push(key);
        }
    }
}

/// A `Remove-MobileDevice` for each of `removals` that was decided (an exempt device stays),
/// adding the allowed ones to `restricted`.
fn removal_steps(
    decided: &[Decided<'_>],
    removals: &[&ExchangeDevice],
    restricted: &mut BTreeSet<DeviceKey>,
) -> Vec<PlanStep> {
    // Only when there is something to remove: a key per decided device is 10 MB at 100 000.
    let removable: HashSet<DeviceKey> = if removals.is_empty() {
        HashSet::new()
    } else {
        decided
            .iter()
            .filter(|d| d.verdict != Verdict::Exempt)
            .map(|d| d.device.key())
            .collect()
    };
    let mut steps = Vec::new();
    for device in removals
        .iter()
        .filter(|device| removable.contains(&device.key()))
    {
        // The REST endpoint never prompts, but the flag documents intent and matches what an
        // admin would type.
        let parameters = Parameters::new()
            .bool("Confirm", false)
            .text("Identity", device.identity.clone());
        steps.push(PlanStep::Command(PlannedCommand {
            mailbox: device.mailbox.clone(),
            devices: vec![device.key()],
            command: Command {
                cmdlet: REMOVE_MOBILE_DEVICE.into(),
                parameters,
            },
        }));
        if device.access_state == AccessState::Allowed {
            restricted.insert(device.key());
        }
    }
    steps
}

impl<S: From<PlannedCommand>> Plan<S> {
    /// Adds a full sync's org-default step: when the organization's `DefaultAccessLevel`
    /// (`current`) is not `target`, a `Set-ActiveSyncOrganizationSettings -DefaultAccessLevel
    /// <target>`, last, so that the devices the plan lists are on their lists before the
    /// default changes.
    ///
    /// The switch moves every device that the default decides now (reason `Global`: on no list,
    /// matched by no rule) and that stays on no list after the plan and matched by no rule of
    /// `platform`, whatever its verdict, exempt and undecided ones included: `devices` is every
    /// partnership of the organization. The command names them; those it takes from allowed
    /// to blocked or quarantined count for the blast-radius guard. `platform` is the one the
    /// plan was made with (its default is `target`).
    pub fn set_org_default(
        &mut self,
        target: AccessLevel,
        current: AccessLevel,
        devices: &[ExchangeDevice],
        decided: &[Decided<'_>],
        platform: &Platform<'_>,
    ) {
        if current == target {
            return;
        }
        let by_default = |device: &ExchangeDevice| {
            device.access_state_reason.eq_ignore_ascii_case("Global")
                && level_of_state(device.access_state).is_some_and(|level| level != target)
                && platform
                    .rules
                    .is_none_or(|rules| deciding_rule(rules, device).is_none())
        };
        // The devices the default decides, less those on a list after the plan. (Not a set of
        // the listed devices: that is a key per decided device, 10 MB at 100 000.)
        let mut moving_set: HashSet<DeviceKey> = devices
            .iter()
            .filter(|d| by_default(d))
            .map(ExchangeDevice::key)
            .collect();
        let skipped: HashSet<&DeviceKey> = self.skipped.iter().map(|s| &s.key).collect();
        for d in decided {
            let place = platform.place(d.verdict, platform.level_of(d.device));
            if place != Place::Neither {
                let key = d.device.key();
                if !skipped.contains(&key) {
                    moving_set.remove(&key);
                }
            }
        }
        drop(skipped);
        let mut moving = Vec::new();
        for device in devices.iter().filter(|d| by_default(d)) {
            let key = device.key();
            if moving_set.contains(&key) {
                if device.access_state == AccessState::Allowed {
                    self.restricted.insert(key.clone());
                }
                moving.push(key);
            }
        }
        // A switch to Quarantine is what enforces their quarantine. (A set: at 100 000 devices
        // both lists hold tens of thousands, and a scan of one per entry of the other took a
        // second.)
        if target == AccessLevel::Quarantine {
            self.unenforced.retain(|key| !moving_set.contains(key));
        }
        let parameters = Parameters::new().text("DefaultAccessLevel", target.as_str());
        self.commands.push(
            PlannedCommand {
                mailbox: None,
                devices: moving,
                command: Command {
                    cmdlet: SET_ORG_SETTINGS.into(),
                    parameters,
                },
            }
            .into(),
        );
        self.restrictions = self.restricted.len();
        self.held = self.restrictions > self.limit;
    }
}

impl<S> Plan<S> {
    /// Counts, for the blast-radius guard, the devices a full sync's change of the device
    /// access rules takes from allowed to blocked or quarantined: those Exchange allows now by
    /// a rule or the default (reason `DeviceRule` or `Global`; a listed device is decided by
    /// its list), that are on no list after the plan (decided so, or not decided and on none
    /// now) and that the configured rules (`platform.rules`), or failing them the default
    /// after the plan, block or quarantine. Devices already counted (a list edit, the
    /// default's switch) are not counted twice. Call it only when the rules change: with the
    /// rules as they are, a device's state already is what they give it.
    pub fn count_rule_changes(
        &mut self,
        devices: &[ExchangeDevice],
        decided: &[Decided<'_>],
        platform: &Platform<'_>,
    ) {
        if platform.rules.is_none() {
            return;
        }
        // A device the plan could not list (no or an unknown mailbox) stays on no list.
        let skipped: HashSet<&DeviceKey> = self.skipped.iter().map(|s| &s.key).collect();
        let verdicts: HashMap<DeviceKey, Verdict> = decided
            .iter()
            .map(|d| (d.device.key(), d.verdict))
            .filter(|(key, _)| !skipped.contains(key))
            .collect();
        drop(skipped);
        for device in devices {
            let by_rule_or_default = ["DeviceRule", "Global"]
                .iter()
                .any(|r| device.access_state_reason.eq_ignore_ascii_case(r));
            if device.access_state != AccessState::Allowed || !by_rule_or_default {
                continue;
            }
            let key = device.key();
            let level = platform.level_of(device);
            let unlisted = match verdicts.get(&key) {
                Some(&verdict) => platform.place(verdict, level) == Place::Neither,
                // Not decided (or exempt): its lists stay, and it is on none now.
                None => true,
            };
            if unlisted
                && matches!(level, Some(AccessLevel::Block | AccessLevel::Quarantine))
                && !self.restricted.contains(&key)
            {
                self.restricted.insert(key.clone());
                self.by_rules.push(key);
            }
        }
        self.restrictions = self.restricted.len();
        self.held = self.restrictions > self.limit;
    }
}

fn exchange_level(level: crate::exchange::models::AccessLevel) -> AccessLevel {
    use crate::exchange::models::AccessLevel as Level;
    match level {
        Level::Allow => AccessLevel::Allow,
        Level::Block => AccessLevel::Block,
        Level::Quarantine => AccessLevel::Quarantine,
    }
}

/// The cmdlets that change Exchange a sync under `settings` may send, which the account's
/// management roles must hold beside the reads: the mailbox lists always, the others as the
/// settings manage partnerships, device access rules and the organization's settings.
pub fn write_cmdlets(settings: &SyncSettings) -> Vec<&'static str> {
    let mut cmdlets = vec![SET_CAS_MAILBOX];
    if settings.remove_retired_partnerships {
        cmdlets.push(REMOVE_MOBILE_DEVICE);
    }
    if settings.device_access_rules.is_some() {
        cmdlets.extend([NEW_ACCESS_RULE, REMOVE_ACCESS_RULE]);
    }
    if settings.org_default().is_some()
        || settings.admin_mail_recipients.is_some()
        || settings.user_mail_insert.is_some()
    {
        cmdlets.push(SET_ORG_SETTINGS);
    }
    cmdlets
}

/// A full sync's organization settings step: the `Set-ActiveSyncOrganizationSettings` for the
/// configured `AdminMailRecipients` and `UserMailInsert` that differ from `current`, and the
/// device access rule commands that make Exchange's rules (`rules`, read only when the
/// configuration manages them) the configured ones. What the configuration leaves unset is
/// not touched; nothing differs, no command.
pub fn exchange_settings(
    settings: &SyncSettings,
    current: Option<&OrganizationSettings>,
    rules: Option<&[ExistingRule]>,
) -> Vec<PlannedCommand> {
    let mut commands = Vec::new();
    if let Some(current) = current {
        let mut parameters = Parameters::new();
        if let Some(wanted) = &settings.admin_mail_recipients {
            let same = wanted.len() == current.admin_mail_recipients.len()
                && wanted.iter().all(|w| {
                    current
                        .admin_mail_recipients
                        .iter()
                        .any(|c| c.eq_ignore_ascii_case(w))
                });
            if !same {
                parameters.push("AdminMailRecipients", ParamValue::Texts(wanted.clone()));
            }
        }
        if let Some(wanted) = &settings.user_mail_insert
            && current.user_mail_insert.as_deref().unwrap_or("") != wanted
        {
            parameters.push("UserMailInsert", ParamValue::Text(wanted.clone()));
        }
        if !parameters.is_empty() {
            commands.push(PlannedCommand {
                mailbox: None,
                devices: Vec::new(),
                command: Command {
                    cmdlet: SET_ORG_SETTINGS.into(),
                    parameters,
                },
            });
        }
    }
    if let (Some(wanted), Some(existing)) = (&settings.device_access_rules, rules) {
        let same = |e: &ExistingRule, w: &crate::model::settings::DeviceAccessRule| {
            e.characteristic
                .eq_ignore_ascii_case(w.characteristic.as_str())
                && e.query_string.eq_ignore_ascii_case(&w.query_string)
        };
        let rule_command = |cmdlet: &str, parameters: Parameters| PlannedCommand {
            mailbox: None,
            devices: Vec::new(),
            command: Command {
                cmdlet: cmdlet.into(),
                parameters,
            },
        };
        for e in existing {
            let keep = wanted
                .iter()
                .any(|w| same(e, w) && exchange_level(e.access_level) == w.access_level);
            if !keep {
                let parameters = Parameters::new().text("Identity", e.identity.clone());
                commands.push(rule_command(REMOVE_ACCESS_RULE, parameters));
            }
        }
        for w in wanted {
            let present = existing
                .iter()
                .any(|e| same(e, w) && exchange_level(e.access_level) == w.access_level);
            if !present {
                let parameters = Parameters::new()
                    .text("AccessLevel", w.access_level.as_str())
                    .text("Characteristic", w.characteristic.as_str())
                    .text("QueryString", w.query_string.clone());
                commands.push(rule_command(NEW_ACCESS_RULE, parameters));
            }
        }
    }
    commands
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn the_write_cmdlets_follow_what_the_settings_manage() {
        use crate::model::settings::DefaultAccess;
        let lists_only = SyncSettings {
            default_access_level: Some(DefaultAccess::Unmanaged),
            ..SyncSettings::default()
        };
        assert_eq!(write_cmdlets(&lists_only), [SET_CAS_MAILBOX]);
        // The defaults manage the organization default (Quarantine).
        assert_eq!(
            write_cmdlets(&SyncSettings::default()),
            [SET_CAS_MAILBOX, SET_ORG_SETTINGS]
        );
        let everything = SyncSettings {
            remove_retired_partnerships: true,
            device_access_rules: Some(Vec::new()),
            user_mail_insert: Some("Enroll first.".into()),
            ..lists_only
        };
        assert_eq!(
            write_cmdlets(&everything),
            [
                SET_CAS_MAILBOX,
                REMOVE_MOBILE_DEVICE,
                NEW_ACCESS_RULE,
                REMOVE_ACCESS_RULE,
                SET_ORG_SETTINGS
            ]
        );
    }

    const GENERIC_HASH_TABLE: &str = "#Exchange.GenericHashTable";

    /// A command as the REST transport sends it: the assertions below were written against
    /// that JSON, and still hold.
    trait Rest {
        fn invoke_body(&self) -> Value;
        fn rest_parameters(&self) -> Value;
    }

    impl Rest for Command {
        fn invoke_body(&self) -> Value {
            serde_json::from_slice(&crate::exchange::rest::invoke_body(
                &self.cmdlet,
                &self.parameters,
            ))
            .unwrap()
        }
        fn rest_parameters(&self) -> Value {
            self.invoke_body()["CmdletInput"]["Parameters"].take()
        }
    }

    fn typed_rest(cmdlet: &impl crate::exchange::Cmdlet) -> Value {
        serde_json::from_slice::<Value>(&crate::exchange::rest::invoke_body(
            cmdlet.name(),
            &cmdlet.parameters(),
        ))
        .unwrap()["CmdletInput"]["Parameters"]
            .take()
    }

    #[test]
    fn exchange_settings_issue_only_what_differs() {
        use crate::exchange::models::AccessLevel as Level;
        use crate::model::{DeviceAccessRule, RuleCharacteristic};
        let current = OrganizationSettings {
            default_access_level: Level::Quarantine,
            user_mail_insert: Some("Call 4711".into()),
            admin_mail_recipients: vec!["A@contoso.com".into()],
        };
        let existing = |q: &str, level| ExistingRule {
            identity: format!("{q} (DeviceType)"),
            query_string: q.into(),
            characteristic: "DeviceType".into(),
            access_level: level,
        };
        let wanted = |q: &str, level| DeviceAccessRule {
            query_string: q.into(),
            characteristic: RuleCharacteristic::DeviceType,
            access_level: level,
        };
        let mut settings = SyncSettings {
            admin_mail_recipients: Some(vec!["a@contoso.com".into()]),
            user_mail_insert: Some("Call 4711".into()),
            device_access_rules: Some(vec![
                wanted("Nokia", AccessLevel::Block),
                wanted("Kindle", AccessLevel::Allow),
            ]),
            ..SyncSettings::default()
        };
        let rules = [
            existing("nokia", Level::Block),
            existing("Kindle", Level::Quarantine),
            existing("Zune", Level::Allow),
        ];
        let cmdlets = |commands: Vec<PlannedCommand>| -> Vec<(String, Value)> {
            commands
                .into_iter()
                .map(|c| (c.command.cmdlet.clone(), c.command.rest_parameters()))
                .collect()
        };
        assert_eq!(
            cmdlets(exchange_settings(&settings, Some(&current), Some(&rules))),
            vec![
                (
                    REMOVE_ACCESS_RULE.to_owned(),
                    json!({"Identity": "Kindle (DeviceType)"})
                ),
                (
                    REMOVE_ACCESS_RULE.to_owned(),
                    json!({"Identity": "Zune (DeviceType)"})
                ),
                (
                    NEW_ACCESS_RULE.to_owned(),
                    json!({"QueryString": "Kindle", "Characteristic": "DeviceType", "AccessLevel": "Allow"})
                ),
            ]
        );
        settings.user_mail_insert = Some("Call 4712".into());
        settings.device_access_rules = None;
        assert_eq!(
            cmdlets(exchange_settings(&settings, Some(&current), Some(&rules))),
            vec![(
                SET_ORG_SETTINGS.to_owned(),
                json!({"UserMailInsert": "Call 4712"})
            )]
        );
    }

    fn mailbox(identity: &str, allowed: &[&str], blocked: &[&str]) -> Mailbox {
        Mailbox {
            identity: identity.into(),
            primary_smtp: format!("{identity}@contoso.com"),
            user_principal_name: None,
            allowed: allowed.iter().map(|s| s.to_string()).collect(),
            blocked: blocked.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn device(mailbox: &str, id: &str, state: AccessState) -> ExchangeDevice {
        ExchangeDevice {
            device_id: id.into(),
            identity: format!("{mailbox}\\ExchangeActiveSyncDevices\\iPhone\u{a7}{id}"),
            mailbox: Some(mailbox.into()),
            access_state: state,
            ..ExchangeDevice::default()
        }
    }

    const NO_LIMIT: RestrictionLimit = RestrictionLimit {
        percent: 100.0,
        floor: usize::MAX,
    };

    #[test]
    fn one_command_per_mailbox_in_the_hashtable_form() {
        let mailboxes = [
            mailbox("alice", &["OLD"], &["A2"]),
            mailbox("bob", &[], &[]),
        ];
        let a1 = device("alice", "A1", AccessState::Quarantined);
        let a2 = device("alice", "A2", AccessState::Blocked);
        let old = device("alice", "old", AccessState::Allowed);
        let b1 = device("bob", "B1", AccessState::Allowed);
        let decided = [
            Decided {
                device: &a1,
                verdict: Verdict::Allow,
            },
            Decided {
                device: &a2,
                verdict: Verdict::Allow,
            },
            Decided {
                device: &old,
                verdict: Verdict::Quarantine,
            },
            Decided {
                device: &b1,
                verdict: Verdict::Exempt,
            },
        ];
        let plan = plan(&mailboxes, &decided, &[], &NO_LIMIT, 4);
        assert_eq!(plan.commands.len(), 1, "{plan:#?}");
        let body = plan.commands[0].command.invoke_body();
        assert_eq!(
            body,
            json!({"CmdletInput": {"CmdletName": "Set-CASMailbox", "Parameters": {
                "Identity": "alice",
                "ActiveSyncAllowedDeviceIDs": {"@odata.type": "#Exchange.GenericHashTable",
                    "Add": ["A1", "A2"], "Remove": ["OLD"]},
                "ActiveSyncBlockedDeviceIDs": {"@odata.type": "#Exchange.GenericHashTable",
                    "Add": [], "Remove": ["A2"]},
            }}})
        );
        // Byte for byte what main sent (its parameters were a sorted JSON map).
        let c = &plan.commands[0].command;
        assert_eq!(
            String::from_utf8(crate::exchange::rest::invoke_body(&c.cmdlet, &c.parameters))
                .unwrap(),
            serde_json::to_string(&body).unwrap()
        );
        assert_eq!(plan.changes.len(), 3);
        assert_eq!(plan.restrictions, 1, "old goes from allowed to quarantine");
        assert!(!plan.held);
    }

    #[test]
    fn devices_already_right_cost_nothing_and_case_does_not_matter() {
        let mailboxes = [mailbox("alice", &["a1"], &["a2"])];
        let a1 = device("alice", "A1", AccessState::Allowed);
        let a2 = device("alice", "A2", AccessState::Blocked);
        let a3 = device("alice", "A3", AccessState::Quarantined);
        let decided = [
            Decided {
                device: &a1,
                verdict: Verdict::Allow,
            },
            Decided {
                device: &a2,
                verdict: Verdict::Block,
            },
            Decided {
                device: &a3,
                verdict: Verdict::Quarantine,
            },
        ];
        let plan = plan(&mailboxes, &decided, &[], &NO_LIMIT, 3);
        assert!(plan.is_empty(), "{plan:#?}");
        assert!(plan.changes.is_empty() && plan.unenforced.is_empty());
    }

    #[test]
    fn removal_keeps_the_lists_spelling() {
        let mailboxes = [mailbox("alice", &["abc"], &[])];
        let dev = device("alice", "ABC", AccessState::Allowed);
        let decided = [Decided {
            device: &dev,
            verdict: Verdict::Block,
        }];
        let plan = plan(&mailboxes, &decided, &[], &NO_LIMIT, 1);
        let params = &plan.commands[0].command.rest_parameters();
        assert_eq!(params[ALLOWED_IDS]["Remove"], json!(["abc"]));
        assert_eq!(params[BLOCKED_IDS]["Add"], json!(["ABC"]));
    }

    #[test]
    fn devices_without_lists_are_skipped_with_the_reason() {
        let mailboxes = [mailbox("alice", &[], &[])];
        let mut gone = device("x", "G1", AccessState::Allowed);
        gone.mailbox = None;
        let unknown = device("carol", "C1", AccessState::Allowed);
        let first = device("alice", "D1", AccessState::Quarantined);
        let mut twin = device("alice", "d1", AccessState::Quarantined);
        twin.identity.push_str("-twin");
        let decided = [&gone, &unknown, &first, &twin].map(|device| Decided {
            device,
            verdict: Verdict::Block,
        });
        let plan = plan(&mailboxes, &decided, &[], &NO_LIMIT, 4);
        let reasons: Vec<&SkipReason> = plan.skipped.iter().map(|s| &s.reason).collect();
        assert_eq!(
            reasons,
            [
                &SkipReason::NoMailbox,
                &SkipReason::UnknownMailbox {
                    mailbox: "carol".into()
                },
                &SkipReason::DuplicateDeviceId,
            ]
        );
        assert_eq!(plan.commands.len(), 1);
        assert_eq!(plan.commands[0].devices, [first.key()]);
    }

    #[test]
    fn a_quarantine_that_a_device_rule_overrides_is_reported() {
        let mailboxes = [mailbox("alice", &[], &[])];
        let mut dev = device("alice", "A1", AccessState::Allowed);
        dev.access_state_reason = "DeviceRule".into();
        let decided = [Decided {
            device: &dev,
            verdict: Verdict::Quarantine,
        }];
        let plan = plan(&mailboxes, &decided, &[], &NO_LIMIT, 1);
        assert!(plan.is_empty());
        assert_eq!(plan.unenforced, [dev.key()]);
        assert_eq!(plan.restrictions, 0);
    }

    #[test]
    fn removing_a_retired_partnership_is_a_command_and_a_restriction() {
        let mailboxes = [mailbox("alice", &[], &["A1"])];
        let dev = device("alice", "A1", AccessState::Allowed);
        let decided = [Decided {
            device: &dev,
            verdict: Verdict::Block,
        }];
        let plan = plan(&mailboxes, &decided, &[&dev], &NO_LIMIT, 1);
        assert_eq!(
            plan.commands[0].command.invoke_body(),
            json!({"CmdletInput": {"CmdletName": "Remove-MobileDevice",
                "Parameters": {"Identity": dev.identity, "Confirm": false}}})
        );
        let c = &plan.commands[0].command;
        assert_eq!(
            String::from_utf8(crate::exchange::rest::invoke_body(&c.cmdlet, &c.parameters))
                .unwrap(),
            serde_json::to_string(&c.invoke_body()).unwrap()
        );
        assert_eq!(plan.commands[0].mailbox.as_deref(), Some("alice"));
        assert_eq!(plan.restrictions, 1);
    }

    #[test]
    fn exempt_or_undecided_partnerships_are_not_removed() {
        let exempt = device("alice", "A1", AccessState::Allowed);
        let undecided = device("alice", "A2", AccessState::Allowed);
        let decided = [Decided {
            device: &exempt,
            verdict: Verdict::Exempt,
        }];
        let plan = plan(&[], &decided, &[&exempt, &undecided], &NO_LIMIT, 2);
        assert!(plan.is_empty(), "{plan:#?}");
    }

    #[test]
    fn the_guard_holds_a_plan_above_the_limit_and_counts_only_lost_access() {
        let limit = RestrictionLimit {
            percent: 10.0,
            floor: 2,
        };
        let mailboxes: Vec<Mailbox> = (0..30)
            .map(|i| mailbox(&format!("m{i}"), &[], &[]))
            .collect();
        // 30 devices: limit max(ceil(3.0), 2) = 3.
        let allowed: Vec<ExchangeDevice> = (0..30)
            .map(|i| device(&format!("m{i}"), &format!("D{i}"), AccessState::Allowed))
            .collect();
        let quarantined: Vec<ExchangeDevice> = (0..30)
            .map(|i| device(&format!("m{i}"), &format!("Q{i}"), AccessState::Quarantined))
            .collect();
        fn decide(devices: &[ExchangeDevice], n: usize) -> Vec<Decided<'_>> {
            devices[..n]
                .iter()
                .map(|device| Decided {
                    device,
                    verdict: Verdict::Block,
                })
                .collect()
        }
        let at_limit = plan(&mailboxes, &decide(&allowed, 3), &[], &limit, 30);
        assert_eq!((at_limit.restrictions, at_limit.limit), (3, 3));
        assert!(!at_limit.held);
        let above = plan(&mailboxes, &decide(&allowed, 4), &[], &limit, 30);
        assert!(above.held, "{above:#?}");
        // Blocking devices that had no access anyway is not a blast.
        let harmless = plan(&mailboxes, &decide(&quarantined, 30), &[], &limit, 30);
        assert_eq!(harmless.restrictions, 0);
        assert!(!harmless.held && harmless.commands.len() == 30);
    }

    #[test]
    fn the_org_default_is_set_last_and_counts_who_loses_access_by_it() {
        let limit = RestrictionLimit {
            percent: 0.0,
            floor: 3,
        };
        let mailboxes = [mailbox("alice", &[], &[])];
        let global = |id| {
            let mut dev = device("alice", id, AccessState::Allowed);
            dev.access_state_reason = "Global".into();
            dev
        };
        let all = ["K", "B", "Q", "E", "U"].map(global);
        let [kept, blocked, quarantined, exempt, undecided] = &all;
        let decided = [
            (kept, Verdict::Allow),
            (blocked, Verdict::Block),
            (quarantined, Verdict::Quarantine),
            (exempt, Verdict::Exempt),
        ]
        .map(|(device, verdict)| Decided { device, verdict });
        let mut plan = plan(&mailboxes, &decided, &[], &limit, all.len());
        assert_eq!((plan.restrictions, plan.held), (1, false));
        assert_eq!(plan.unenforced, [quarantined.key()]);

        plan.set_org_default(
            AccessLevel::Quarantine,
            AccessLevel::Allow,
            &all,
            &decided,
            &Platform::default(),
        );
        assert_eq!(plan.commands.len(), 2);
        let last = plan.commands.last().unwrap();
        assert_eq!(
            last.command.invoke_body(),
            json!({"CmdletInput": {"CmdletName": "Set-ActiveSyncOrganizationSettings",
                "Parameters": {"DefaultAccessLevel": "Quarantine"}}})
        );
        assert_eq!(
            last.devices,
            [quarantined.key(), exempt.key(), undecided.key()]
        );
        assert!(
            plan.unenforced.is_empty(),
            "the switch enforces Q's quarantine"
        );
        // B loses access by its list edit, Q, E and U by the switch.
        assert_eq!(
            plan.restricted,
            BTreeSet::from([blocked, quarantined, exempt, undecided].map(|d| d.key()))
        );
        assert!(plan.held);

        let mut steady = super::plan(&mailboxes, &decided, &[], &limit, all.len());
        steady.set_org_default(
            AccessLevel::Quarantine,
            AccessLevel::Quarantine,
            &all,
            &decided,
            &Platform::default(),
        );
        assert_eq!(
            steady.commands.len(),
            1,
            "no org command when already Quarantine"
        );
    }

    /// Issue 17: a new blocking rule restricts every allowed device on no list that it matches
    /// (decided or not); a device it matches that goes on its allow list, one already counted,
    /// one on a list now or one not allowed now is not counted.
    #[test]
    fn a_new_blocking_rule_counts_the_devices_on_no_list_it_takes_access_from() {
        let rules = [crate::model::DeviceAccessRule {
            query_string: "Android".into(),
            characteristic: RuleCharacteristic::DeviceType,
            access_level: AccessLevel::Block,
        }];
        let platform = Platform {
            default: Some(AccessLevel::Allow),
            rules: Some(&rules),
            override_default_rule: true,
        };
        let mailboxes = [mailbox("alice", &["LISTED"], &[])];
        let all = [
            typed("alice", "Q", "Android", AccessState::Allowed, "Global"),
            typed("alice", "U", "Android", AccessState::Allowed, "DeviceRule"),
            typed("alice", "A", "Android", AccessState::Allowed, "Global"),
            typed(
                "alice",
                "LISTED",
                "Android",
                AccessState::Allowed,
                "Individual",
            ),
            typed("alice", "IPHONE", "iPhone", AccessState::Allowed, "Global"),
            typed(
                "alice",
                "QUAR",
                "Android",
                AccessState::Quarantined,
                "Global",
            ),
        ];
        let [quarantined, undecided, allowed, listed, iphone, already] = &all;
        let decided = [
            (quarantined, Verdict::Quarantine),
            (allowed, Verdict::Allow),
            (listed, Verdict::Exempt),
            (iphone, Verdict::Quarantine),
            (already, Verdict::Quarantine),
        ]
        .map(|(device, verdict)| Decided { device, verdict });
        let limit = RestrictionLimit {
            percent: 0.0,
            floor: 1,
        };
        let mut plan = plan_steps(&mailboxes, &decided, &[], &limit, all.len(), &platform);
        // A goes on its allow list (allowed already: no restriction); nothing else changes.
        assert_eq!((plan.restrictions, plan.held), (0, false));
        plan.count_rule_changes(&all, &decided, &platform);
        assert_eq!(plan.by_rules, [quarantined.key(), undecided.key()]);
        assert_eq!((plan.restrictions, plan.held), (2, true));
        // Counted once, however often asked.
        plan.count_rule_changes(&all, &decided, &platform);
        assert_eq!(plan.restrictions, 2);

        let report = crate::sync::dry_run::report(
            &plan,
            &all,
            &decided,
            Some(AccessLevel::Allow),
            &platform,
        );
        let listed: Vec<_> = report
            .changes
            .iter()
            .filter(|c| c.by == crate::sync::dry_run::Cause::AccessRule)
            .map(|c| (c.device_id.as_str(), c.from, c.to, c.verdict))
            .collect();
        use crate::sync::dry_run::NewState;
        assert_eq!(
            listed,
            [
                (
                    "Q",
                    AccessState::Allowed,
                    NewState::Blocked,
                    Some(Verdict::Quarantine)
                ),
                ("U", AccessState::Allowed, NewState::Blocked, None),
            ]
        );
    }

    /// Issue 17: an edit that cannot give a device its verdict's state says what Exchange
    /// will show instead: a quarantine under an allow default stays allowed, an allowed device
    /// left to a blocking rule (override off) stays blocked.
    #[test]
    fn an_edit_says_the_state_exchange_shows_where_it_is_not_the_verdicts() {
        let rules = [crate::model::DeviceAccessRule {
            query_string: "Android".into(),
            characteristic: RuleCharacteristic::DeviceType,
            access_level: AccessLevel::Block,
        }];
        let platform = Platform {
            default: Some(AccessLevel::Allow),
            rules: Some(&rules),
            override_default_rule: false,
        };
        let mailboxes = [mailbox("alice", &["Q", "A", "B"], &[])];
        let all = [
            typed("alice", "Q", "iPhone", AccessState::Allowed, "Individual"),
            typed("alice", "A", "Android", AccessState::Allowed, "Individual"),
            typed("alice", "B", "iPhone", AccessState::Allowed, "Individual"),
        ];
        let decided = [
            (&all[0], Verdict::Quarantine),
            (&all[1], Verdict::Allow),
            (&all[2], Verdict::Block),
        ]
        .map(|(device, verdict)| Decided { device, verdict });
        let plan = plan_steps(&mailboxes, &decided, &[], &NO_LIMIT, 3, &platform);
        assert_eq!(plan.changes.len(), 3);
        assert_eq!(
            plan.shown,
            [
                ShownState {
                    key: all[0].key(),
                    level: AccessLevel::Allow,
                    reason: "Global".into(),
                },
                ShownState {
                    key: all[1].key(),
                    level: AccessLevel::Block,
                    reason: "DeviceRule".into(),
                },
            ]
        );
    }

    fn typed(
        mailbox: &str,
        id: &str,
        ty: &str,
        state: AccessState,
        reason: &str,
    ) -> ExchangeDevice {
        ExchangeDevice {
            device_type: ty.into(),
            device_model: format!("{ty}-model"),
            access_state_reason: reason.into(),
            ..device(mailbox, id, state)
        }
    }

    /// Exchange's order for a device on no list: the most specific matching rule, else the
    /// default; without the rules, the rule Exchange reports now, else the default (or, not
    /// known either, what the default gives the device now).
    #[test]
    fn the_platform_level_follows_exchanges_precedence() {
        use crate::model::DeviceAccessRule as Rule;
        let rule = |q: &str, characteristic, access_level| Rule {
            query_string: q.into(),
            characteristic,
            access_level,
        };
        let rules = [
            rule("iphone", RuleCharacteristic::DeviceType, AccessLevel::Allow),
            rule(
                "iPhone-model",
                RuleCharacteristic::DeviceModel,
                AccessLevel::Quarantine,
            ),
            rule(
                "Android",
                RuleCharacteristic::DeviceType,
                AccessLevel::Allow,
            ),
            rule(
                "Android",
                RuleCharacteristic::DeviceType,
                AccessLevel::Block,
            ),
        ];
        let known = Platform {
            default: Some(AccessLevel::Block),
            rules: Some(&rules),
            override_default_rule: true,
        };
        let iphone = typed("a", "1", "iPhone", AccessState::Allowed, "Individual");
        let android = typed("a", "2", "Android", AccessState::Allowed, "Individual");
        let nokia = typed("a", "3", "Nokia", AccessState::Allowed, "Individual");
        assert_eq!(
            known.level_of(&iphone),
            Some(AccessLevel::Quarantine),
            "model beats family"
        );
        assert_eq!(
            known.level_of(&android),
            Some(AccessLevel::Block),
            "most restrictive"
        );
        assert_eq!(
            known.level_of(&nokia),
            Some(AccessLevel::Block),
            "the default"
        );

        let unknown = Platform::default();
        let by_rule = typed("a", "4", "Nokia", AccessState::Blocked, "DeviceRule");
        let by_default = typed("a", "5", "Nokia", AccessState::Allowed, "Global");
        assert_eq!(unknown.level_of(&by_rule), Some(AccessLevel::Block));
        assert_eq!(unknown.level_of(&by_default), Some(AccessLevel::Allow));
        assert_eq!(unknown.level_of(&nokia), None);
        assert_eq!(
            unknown.after(Verdict::Quarantine, &nokia),
            AccessLevel::Quarantine
        );
    }

    /// `override_default_rule`: on, an allowed device goes on the allow list whatever blocks
    /// it; off, a device a rule or the default blocks stays on no list (and an allow entry it
    /// had is taken away, which the guard counts), while one they would let in is listed.
    #[test]
    fn override_off_leaves_a_blocked_platform_blocked() {
        use crate::model::DeviceAccessRule as Rule;
        let rules = [Rule {
            query_string: "Android".into(),
            characteristic: RuleCharacteristic::DeviceType,
            access_level: AccessLevel::Block,
        }];
        let mailboxes = [mailbox("alice", &["A1"], &[])];
        let listed = typed("alice", "A1", "Android", AccessState::Allowed, "Individual");
        let new = typed("alice", "A2", "Android", AccessState::Blocked, "DeviceRule");
        let other = typed("alice", "A3", "iPhone", AccessState::Quarantined, "Global");
        let decided = [&listed, &new, &other].map(|device| Decided {
            device,
            verdict: Verdict::Allow,
        });
        let mut platform = Platform {
            default: Some(AccessLevel::Quarantine),
            rules: Some(&rules),
            override_default_rule: false,
        };
        let off = plan_steps(&mailboxes, &decided, &[], &NO_LIMIT, 3, &platform);
        let edit = off.commands[0].clone().into_planned();
        assert_eq!(
            edit.command.rest_parameters()[ALLOWED_IDS],
            json!({"@odata.type": GENERIC_HASH_TABLE, "Add": ["A3"], "Remove": ["A1"]})
        );
        assert_eq!(off.restricted, BTreeSet::from([listed.key()]));
        assert_eq!(platform.after(Verdict::Allow, &new), AccessLevel::Block);

        platform.override_default_rule = true;
        let on = plan_steps(&mailboxes, &decided, &[], &NO_LIMIT, 3, &platform);
        let PlanStep::MailboxEdit(edit) = &on.commands[0] else {
            panic!("{on:#?}")
        };
        assert_eq!(edit.allow_add, ["A2", "A3"]);
        assert!(edit.allow_remove.is_empty() && on.restricted.is_empty());
    }

    /// A switch to Block or Allow moves the devices the default decides and that stay on no
    /// list, matched by no rule; only those it takes from allowed are restrictions.
    #[test]
    fn a_switch_to_block_or_allow_moves_only_what_the_default_decides() {
        use crate::model::DeviceAccessRule as Rule;
        let rules = [Rule {
            query_string: "iPhone".into(),
            characteristic: RuleCharacteristic::DeviceType,
            access_level: AccessLevel::Allow,
        }];
        let mailboxes = [mailbox("alice", &[], &[])];
        let quarantined = typed("alice", "Q", "Nokia", AccessState::Allowed, "Global");
        let excepted = typed("alice", "I", "iPhone", AccessState::Allowed, "Global");
        let allowed = typed("alice", "A", "Nokia", AccessState::Allowed, "Global");
        let listed = typed("alice", "L", "Nokia", AccessState::Allowed, "Individual");
        let all = [
            quarantined.clone(),
            excepted.clone(),
            allowed.clone(),
            listed.clone(),
        ];
        let decided = [
            (&quarantined, Verdict::Quarantine),
            (&excepted, Verdict::Quarantine),
            (&allowed, Verdict::Allow),
        ]
        .map(|(device, verdict)| Decided { device, verdict });
        let platform = Platform {
            default: Some(AccessLevel::Block),
            rules: Some(&rules),
            override_default_rule: true,
        };
        let limit = RestrictionLimit {
            percent: 0.0,
            floor: 0,
        };
        let mut to_block = plan_steps(&mailboxes, &decided, &[], &limit, 4, &platform);
        to_block.set_org_default(
            AccessLevel::Block,
            AccessLevel::Allow,
            &all,
            &decided,
            &platform,
        );
        let PlanStep::Command(switch) = to_block.commands.last().unwrap() else {
            panic!("{to_block:#?}")
        };
        assert_eq!(
            switch.command.parameters.get_text("DefaultAccessLevel"),
            Some("Block")
        );
        // The undecided `listed` is on the allow list (reason Individual): the default does
        // not decide it. The excepted iPhone has its rule; `allowed` goes on its list.
        assert_eq!(switch.devices, [quarantined.key()]);
        assert_eq!(to_block.restricted, BTreeSet::from([quarantined.key()]));
        assert!(to_block.held);

        let blocked = typed("alice", "B", "Nokia", AccessState::Blocked, "Global");
        let to_allow_platform = Platform {
            default: Some(AccessLevel::Allow),
            ..platform
        };
        let mut to_allow = plan_steps(&mailboxes, &[], &[], &limit, 1, &to_allow_platform);
        to_allow.set_org_default(
            AccessLevel::Allow,
            AccessLevel::Block,
            std::slice::from_ref(&blocked),
            &[],
            &to_allow_platform,
        );
        assert_eq!(to_allow.commands.last().unwrap().devices(), [blocked.key()]);
        assert_eq!((to_allow.restrictions, to_allow.held), (0, false));
    }

    /// The journal stores these commands as JSON and the Exchange client has typed cmdlets:
    /// both must put the same `Parameters` on the wire.
    #[test]
    fn commands_match_the_exchange_clients_typed_cmdlets() {
        use crate::exchange::cmdlets::{HashTableEdit, SetCasMailbox, SetOrganizationSettings};
        use crate::exchange::models::AccessLevel as ClientLevel;

        let mailboxes = [mailbox("alice", &["OLD"], &["A2"])];
        let mut a1 = device("alice", "A1", AccessState::Quarantined);
        a1.access_state_reason = "Global".into();
        let a2 = device("alice", "A2", AccessState::Blocked);
        let old = device("alice", "OLD", AccessState::Allowed);
        let decided = [
            (&a1, Verdict::Allow),
            (&a2, Verdict::Block),
            (&old, Verdict::Quarantine),
        ]
        .map(|(device, verdict)| Decided { device, verdict });
        let mut plan = plan(&mailboxes, &decided, &[], &NO_LIMIT, 3);
        let all = [a1.clone(), a2.clone(), old.clone()];
        plan.set_org_default(
            AccessLevel::Quarantine,
            AccessLevel::Allow,
            &all,
            &decided,
            &Platform::default(),
        );

        let typed = SetCasMailbox {
            identity: "alice".into(),
            allowed: Some(HashTableEdit::new(vec!["A1".into()], vec!["OLD".into()])),
            blocked: None,
        };
        assert_eq!(
            plan.commands[0].command.rest_parameters(),
            typed_rest(&typed)
        );
        let typed = SetOrganizationSettings {
            default_access_level: ClientLevel::Quarantine,
        };
        assert_eq!(plan.commands[1].command.cmdlet, SET_ORG_SETTINGS);
        assert_eq!(
            plan.commands[1].command.rest_parameters(),
            typed_rest(&typed)
        );
    }

    /// SplitMix64: a seeded generator, so a failing case can be replayed from its seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn chance(&mut self, percent: u64) -> bool {
            self.next() % 100 < percent
        }
    }

    /// Applies a `Set-CASMailbox` hashtable edit the way Exchange does: removals ignoring case,
    /// and an `Add` of a value already present is an error.
    fn apply_edit(list: &mut Vec<String>, edit: &Value) {
        assert_eq!(edit["@odata.type"], GENERIC_HASH_TABLE);
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_owned())
                .collect()
        };
        let remove = strings(&edit["Remove"]);
        list.retain(|x| !remove.iter().any(|r| r.eq_ignore_ascii_case(x)));
        for add in strings(&edit["Add"]) {
            assert!(
                !list.iter().any(|x| x.eq_ignore_ascii_case(&add)),
                "Exchange rejects adding {add}, already in {list:?}"
            );
            list.push(add);
        }
    }

    /// Exchange's precedence with no device rules: block list, allow list, org default.
    fn state_of(
        mailbox: &Mailbox,
        device_id: &str,
        default: AccessLevel,
    ) -> (AccessState, &'static str) {
        if !entries(&mailbox.blocked, device_id).is_empty() {
            (AccessState::Blocked, "Individual")
        } else if !entries(&mailbox.allowed, device_id).is_empty() {
            (AccessState::Allowed, "Individual")
        } else {
            let state = match default {
                AccessLevel::Allow => AccessState::Allowed,
                AccessLevel::Block => AccessState::Blocked,
                AccessLevel::Quarantine => AccessState::Quarantined,
            };
            (state, "Global")
        }
    }

    fn random_case(rng: &mut Rng, id: &str) -> String {
        match rng.below(3) {
            0 => id.to_lowercase(),
            1 => id.to_uppercase(),
            _ => id.to_owned(),
        }
    }

    /// Random mailboxes, lists (in random case, with entries the connector does not own),
    /// verdicts (some devices undecided) and org defaults: applying the plan with Exchange's
    /// semantics yields exactly the verdicts, leaves exempt and undecided devices' lists alone,
    /// counts in the guard exactly the devices that lose access, and a second plan is empty.
    #[test]
    fn applying_a_plan_yields_the_verdicts_and_a_second_plan_is_empty() {
        for seed in 0..400 {
            let mut rng = Rng(seed);
            let levels = [
                AccessLevel::Quarantine,
                AccessLevel::Allow,
                AccessLevel::Block,
            ];
            let mut default = levels[rng.below(3)];
            let mut mailboxes: Vec<Mailbox> = (0..1 + rng.below(6))
                .map(|m| mailbox(&format!("mbx{m}"), &[], &[]))
                .collect();
            let mut devices = Vec::new();
            for (m, mailbox) in mailboxes.iter_mut().enumerate() {
                for d in 0..rng.below(6) {
                    let id = format!("Dev{m}x{d}");
                    if rng.chance(40) {
                        mailbox.allowed.push(random_case(&mut rng, &id));
                    }
                    if rng.chance(30) {
                        mailbox.blocked.push(random_case(&mut rng, &id));
                    }
                    let mut dev = device(&mailbox.identity, &id, AccessState::Unknown);
                    let (state, reason) = state_of(mailbox, &id, default);
                    dev.access_state = state;
                    dev.access_state_reason = reason.into();
                    devices.push(dev);
                }
                if rng.chance(30) {
                    mailbox.allowed.push(format!("Foreign{m}"));
                }
            }
            // `None`: the device's plugin batch failed.
            let verdicts: Vec<Option<Verdict>> = devices
                .iter()
                .map(|_| Verdict::ALL.get(rng.below(5)).copied())
                .collect();
            let decided: Vec<Decided<'_>> = devices
                .iter()
                .zip(&verdicts)
                .filter_map(|(device, v)| v.map(|verdict| Decided { device, verdict }))
                .collect();
            let before = mailboxes.clone();
            let mut first = plan(&mailboxes, &decided, &[], &NO_LIMIT, devices.len());
            first.set_org_default(
                AccessLevel::Quarantine,
                default,
                &devices,
                &decided,
                &Platform::default(),
            );

            let mut touched = HashSet::new();
            for (i, planned) in first.commands.iter().enumerate() {
                let params = &planned.command.rest_parameters();
                if planned.command.cmdlet == SET_ORG_SETTINGS {
                    assert_eq!(i, first.commands.len() - 1, "seed {seed}: org default last");
                    default =
                        AccessLevel::parse(params["DefaultAccessLevel"].as_str().unwrap()).unwrap();
                    continue;
                }
                assert_eq!(planned.command.cmdlet, SET_CAS_MAILBOX);
                let identity = params["Identity"].as_str().unwrap();
                assert!(
                    touched.insert(identity.to_owned()),
                    "seed {seed}: two commands"
                );
                let mailbox = mailboxes
                    .iter_mut()
                    .find(|m| m.identity == identity)
                    .unwrap();
                if let Some(edit) = params.get(ALLOWED_IDS) {
                    apply_edit(&mut mailbox.allowed, edit);
                }
                if let Some(edit) = params.get(BLOCKED_IDS) {
                    apply_edit(&mut mailbox.blocked, edit);
                }
            }
            assert_eq!(default, AccessLevel::Quarantine, "seed {seed}");

            let find = |list: &[Mailbox], dev: &ExchangeDevice| -> Mailbox {
                list.iter()
                    .find(|m| Some(&m.identity) == dev.mailbox.as_ref())
                    .unwrap()
                    .clone()
            };
            let mut after_devices = devices.clone();
            for (dev, verdict) in after_devices.iter_mut().zip(&verdicts) {
                let (old, new) = (find(&before, dev), find(&mailboxes, dev));
                let (state, reason) = state_of(&new, &dev.device_id, default);
                let context = format!("seed {seed}: {} {verdict:?}", dev.device_id);
                match verdict {
                    Some(Verdict::Allow) => assert_eq!(state, AccessState::Allowed, "{context}"),
                    Some(Verdict::Block) => assert_eq!(state, AccessState::Blocked, "{context}"),
                    Some(Verdict::Quarantine) => {
                        assert_eq!(state, AccessState::Quarantined, "{context}")
                    }
                    Some(Verdict::Exempt) | None => {
                        let id = &dev.device_id;
                        assert_eq!(
                            entries(&old.allowed, id),
                            entries(&new.allowed, id),
                            "{context}"
                        );
                        assert_eq!(
                            entries(&old.blocked, id),
                            entries(&new.blocked, id),
                            "{context}"
                        );
                    }
                }
                let lost =
                    dev.access_state == AccessState::Allowed && state != AccessState::Allowed;
                assert_eq!(first.restricted.contains(&dev.key()), lost, "{context}");
                dev.access_state = state;
                dev.access_state_reason = reason.into();
            }
            for (old, new) in before.iter().zip(&mailboxes) {
                for foreign in old.allowed.iter().filter(|e| e.starts_with("Foreign")) {
                    assert!(new.allowed.contains(foreign), "seed {seed}");
                }
            }

            let decided_after: Vec<Decided<'_>> = after_devices
                .iter()
                .zip(&verdicts)
                .filter_map(|(device, v)| v.map(|verdict| Decided { device, verdict }))
                .collect();
            let mut second = plan(&mailboxes, &decided_after, &[], &NO_LIMIT, devices.len());
            second.set_org_default(
                AccessLevel::Quarantine,
                default,
                &after_devices,
                &decided_after,
                &Platform::default(),
            );
            assert!(second.is_empty(), "seed {seed}: {second:#?}");
            assert!(
                second.changes.is_empty() && second.restricted.is_empty(),
                "seed {seed}"
            );
        }
    }
}
