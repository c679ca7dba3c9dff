//! What a dry run (`easgate sync --dry-run`) reports: every device whose access on Exchange
//! would change if the plan ran, in Exchange's own words (its `DeviceAccessState` now → the
//! state after the plan, the partnership's `Identity` as Exchange spells it), and why.
//!
//! A plan changes a device's access in three ways, and the report lists all three:
//!
//! * its mailbox's allow or block list is edited (`Set-CASMailbox`);
//! * the organization default moves (`Set-ActiveSyncOrganizationSettings`), which moves every
//!   device the default decides (on no list, matched by no rule): to Quarantine or Block takes
//!   access from those it allowed, to Allow gives it to those it kept out. Those devices get
//!   no command of their own, which is why a report built from the list edits alone missed
//!   them (825 of a 3 000-device organization, with 9 listed);
//! * a device access rule changes (`New-`/`Remove-ActiveSyncDeviceAccessRule`), which moves
//!   the devices on no list that the new rules (or, no rule matching any more, the default)
//!   decide otherwise: a new blocking rule takes access from every one it matches
//!   ([`Plan::count_rule_changes`]);
//! * its partnership is removed (`Remove-MobileDevice`, a device Intune retired).
//!
//! A list edit that leaves the state as it is (an allow entry for a device the default already
//! allows, put there so that the default's switch does not take it) is counted, not listed.
//!
//! The state after the plan is predicted the way Exchange decides it ([`Platform`]): the lists
//! first, then the device access rules, then the organization default. When the configuration
//! does not manage the rules they are not read, and a device the plan leaves on no list is
//! shown as the rule Exchange reports for it now, or else the default, would treat it.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::plan::{Decided, Plan, PlanStep, Platform, REMOVE_MOBILE_DEVICE, SET_ORG_SETTINGS};
use crate::model::inventory::{AccessLevel, AccessState, DeviceKey, ExchangeDevice, Verdict};

/// A device's access after the plan, in Exchange's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum NewState {
    Allowed,
    Blocked,
    Quarantined,
    /// The partnership is removed: the device must set up a new one, which starts quarantined.
    Removed,
}

impl NewState {
    /// Exchange's spelling (`Removed` for a removed partnership).
    pub fn as_str(self) -> &'static str {
        match self {
            NewState::Allowed => "Allowed",
            NewState::Blocked => "Blocked",
            NewState::Quarantined => "Quarantined",
            NewState::Removed => "Removed",
        }
    }

    fn of_level(level: AccessLevel) -> Self {
        match level {
            AccessLevel::Allow => NewState::Allowed,
            AccessLevel::Block => NewState::Blocked,
            AccessLevel::Quarantine => NewState::Quarantined,
        }
    }

    /// Whether a device now in `state` would be in the same one.
    fn same_as(self, state: AccessState) -> bool {
        matches!(
            (self, state),
            (NewState::Allowed, AccessState::Allowed)
                | (NewState::Blocked, AccessState::Blocked)
                | (NewState::Quarantined, AccessState::Quarantined)
        )
    }
}

/// What moves a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// An edit of its mailbox's allow or block list.
    MailboxLists,
    /// The organization default's switch.
    OrgDefault,
    /// A change of the device access rules.
    AccessRule,
    /// The removal of its partnership.
    Removal,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::MailboxLists => "mailbox lists",
            Cause::OrgDefault => "organization default",
            Cause::AccessRule => "device access rule",
            Cause::Removal => "removal of the partnership",
        }
    }
}

/// One device whose access would change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessChange {
    /// The partnership's `Identity`, as Exchange spells it.
    pub identity: String,
    /// Its `DeviceId`, as Exchange spells it.
    pub device_id: String,
    /// The mailbox's `-Identity`; `None` for a partnership whose mailbox is gone.
    pub mailbox: Option<String>,
    /// Exchange's `DeviceAccessState` now.
    pub from: AccessState,
    /// The state after the plan.
    pub to: NewState,
    /// The policy's verdict; `None` for a device it did not decide (its batch failed) that the
    /// default's switch moves all the same.
    pub verdict: Option<Verdict>,
    /// What moves it.
    pub by: Cause,
}

/// The organization default before and after the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DefaultSwitch {
    pub from: AccessLevel,
    pub to: AccessLevel,
}

/// A dry run's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DryRun {
    /// Every device whose access would change, ordered by `Identity`.
    pub changes: Vec<AccessChange>,
    /// Devices whose list entries would change while their state stays.
    pub entries_only: u64,
    /// The organization default's switch, when the plan makes one.
    pub org_default: Option<DefaultSwitch>,
    /// Whether a real run would be held for approval (the blast-radius guard).
    pub would_hold: bool,
    /// Whether the account may run every cmdlet a real run could send.
    pub roles: RoleCheck,
}

/// What a dry run found of the account's rights to the cmdlets that change Exchange: asked of
/// its remote PowerShell session (`Get-Command`), whose commands the management roles
/// assigned to the account decide. The reads need no asking: the dry run ran them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "result")]
pub enum RoleCheck {
    /// Not asked: Exchange Online's admin API (REST) has no such question.
    #[default]
    NotChecked,
    /// The session has every one of `checked`.
    Complete { checked: Vec<String> },
    /// The session lacks `missing`: a real run's commands through them would fail.
    Lacking { missing: Vec<String> },
    /// The question itself failed (the dry run's report stands).
    Failed { error: String },
}

impl DryRun {
    /// Devices the plan touches: those whose access changes and those whose entries change.
    pub fn devices(&self) -> u64 {
        self.changes.len() as u64 + self.entries_only
    }
}

/// The report of `plan`, planned for `devices` (every partnership discovery read) and the
/// verdicts in `decided` with `platform`; `org_default` is the organization's
/// `DefaultAccessLevel` as read (`None`: not read, as in a quick sync).
pub fn report(
    plan: &Plan<PlanStep>,
    devices: &[ExchangeDevice],
    decided: &[Decided<'_>],
    org_default: Option<AccessLevel>,
    platform: &Platform<'_>,
) -> DryRun {
    let switch = default_switch(plan);
    let org_default = match (org_default, switch) {
        (Some(from), Some((to, _))) if from != to => Some(DefaultSwitch { from, to }),
        _ => None,
    };
    let losing: HashSet<&DeviceKey> = switch.map_or_else(HashSet::new, |(_, keys)| {
        keys.iter().collect::<HashSet<&DeviceKey>>()
    });
    let outcomes = Outcomes {
        platform,
        switched_to: NewState::of_level(switch.map_or(AccessLevel::Quarantine, |(to, _)| to)),
        removed: removed_devices(plan),
        losing_verdicts: losing_verdicts(decided, &losing),
        losing,
        listed: plan.changes.iter().map(|c| (&c.key, c.verdict)).collect(),
        by_rules: plan.by_rules.iter().collect(),
        verdicts: if plan.by_rules.is_empty() {
            HashMap::new()
        } else {
            decided
                .iter()
                .map(|d| (d.device.key(), d.verdict))
                .collect()
        },
    };

    let mut changes = Vec::new();
    let mut entries_only = 0;
    for device in devices {
        let Some((to, verdict, by)) = outcomes.of(device) else {
            continue;
        };
        if to.same_as(device.access_state) {
            entries_only += 1;
            continue;
        }
        changes.push(AccessChange {
            identity: device.identity.clone(),
            device_id: device.device_id.clone(),
            mailbox: device.mailbox.clone(),
            from: device.access_state,
            to,
            verdict,
            by,
        });
    }
    changes.sort_by(|a, b| a.identity.cmp(&b.identity));
    DryRun {
        changes,
        entries_only,
        org_default,
        would_hold: plan.held,
        roles: RoleCheck::NotChecked,
    }
}

/// The default's switch is a command naming the devices that lose access by it.
fn default_switch(plan: &Plan<PlanStep>) -> Option<(AccessLevel, &Vec<DeviceKey>)> {
    plan.commands.iter().find_map(|step| match step {
        PlanStep::Command(c) if c.command.cmdlet == SET_ORG_SETTINGS => c
            .command
            .parameters
            .get_text("DefaultAccessLevel")
            .and_then(AccessLevel::parse)
            .map(|to| (to, &c.devices)),
        _ => None,
    })
}

/// The plan removes only the candidates the policy decided and did not exempt.
fn removed_devices(plan: &Plan<PlanStep>) -> HashSet<&DeviceKey> {
    plan.commands
        .iter()
        .filter_map(|step| match step {
            PlanStep::Command(c) if c.command.cmdlet == REMOVE_MOBILE_DEVICE => Some(&c.devices),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The verdicts of the devices the switch moves (exempt and undecided ones included).
fn losing_verdicts(
    decided: &[Decided<'_>],
    losing: &HashSet<&DeviceKey>,
) -> HashMap<DeviceKey, Verdict> {
    if losing.is_empty() {
        HashMap::new()
    } else {
        decided
            .iter()
            .map(|d| (d.device.key(), d.verdict))
            .filter(|(key, _)| losing.contains(key))
            .collect()
    }
}

/// What the plan does to each device, by the step that does it.
struct Outcomes<'p> {
    removed: HashSet<&'p DeviceKey>,
    listed: HashMap<&'p DeviceKey, Verdict>,
    losing: HashSet<&'p DeviceKey>,
    losing_verdicts: HashMap<DeviceKey, Verdict>,
    /// What Exchange gives the devices the plan leaves on no list.
    platform: &'p Platform<'p>,
    /// The state the default's switch gives the devices it moves.
    switched_to: NewState,
    /// The devices a change of the rules moves.
    by_rules: HashSet<&'p DeviceKey>,
    /// The verdicts of all decided devices, when a change of the rules moves some.
    verdicts: HashMap<DeviceKey, Verdict>,
}

impl Outcomes<'_> {
    /// The device's state after the plan, its verdict and what moves it; `None`: untouched.
    fn of(&self, device: &ExchangeDevice) -> Option<(NewState, Option<Verdict>, Cause)> {
        let key = &device.key();
        if self.removed.contains(key) {
            Some((
                NewState::Removed,
                self.listed.get(key).copied(),
                Cause::Removal,
            ))
        } else if let Some(&verdict) = self.listed.get(key) {
            let to = NewState::of_level(self.platform.after(verdict, device));
            Some((to, Some(verdict), Cause::MailboxLists))
        } else if self.losing.contains(key) {
            Some((
                self.switched_to,
                self.losing_verdicts.get(key).copied(),
                Cause::OrgDefault,
            ))
        } else if self.by_rules.contains(key) {
            let level = self
                .platform
                .level_of(device)
                .unwrap_or(AccessLevel::Quarantine);
            Some((
                NewState::of_level(level),
                self.verdicts.get(key).copied(),
                Cause::AccessRule,
            ))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::inventory::Mailbox;
    use crate::model::settings::RestrictionLimit;
    use crate::sync::plan::plan_steps;

    fn device(mailbox: &str, id: &str, state: AccessState, reason: &str) -> ExchangeDevice {
        ExchangeDevice {
            device_id: id.into(),
            identity: format!("{mailbox}\\ExchangeActiveSyncDevices\\iPhone§{id}"),
            mailbox: Some(mailbox.into()),
            device_type: "iPhone".into(),
            device_model: "iPhone15,2".into(),
            device_os: "iOS 17".into(),
            user_agent: String::new(),
            first_sync: None,
            last_success_sync: None,
            access_state: state,
            access_state_reason: reason.into(),
        }
    }

    fn mailbox(identity: &str, allowed: &[&str], blocked: &[&str]) -> Mailbox {
        Mailbox {
            identity: identity.into(),
            allowed: allowed.iter().map(|s| s.to_string()).collect(),
            blocked: blocked.iter().map(|s| s.to_string()).collect(),
            ..Mailbox::default()
        }
    }

    /// The bug: a full dry run that switches the default from Allow listed only the devices
    /// whose lists change, not the ones the switch quarantines.
    #[test]
    fn the_default_switch_lists_every_device_it_quarantines() {
        let devices = vec![
            // Allowed by the default; the policy allows it: it gets an allow entry and stays.
            device("Alice", "AAA1", AccessState::Allowed, "Global"),
            // Allowed by the default; exempt: the switch quarantines it.
            device("Bob", "BBB2", AccessState::Allowed, "Global"),
            // Allowed by the default; the policy blocks it.
            device("Carol", "CCC3", AccessState::Allowed, "Global"),
            // On the allow list; the policy quarantines it.
            device("Dave", "DDD4", AccessState::Allowed, "Individual"),
            // Blocked and staying blocked: nothing to do.
            device("Erin", "EEE5", AccessState::Blocked, "Individual"),
        ];
        let mailboxes = vec![
            mailbox("Alice", &[], &[]),
            mailbox("Bob", &[], &[]),
            mailbox("Carol", &[], &[]),
            mailbox("Dave", &["DDD4"], &[]),
            mailbox("Erin", &[], &["EEE5"]),
        ];
        let verdicts = [
            Verdict::Allow,
            Verdict::Exempt,
            Verdict::Block,
            Verdict::Quarantine,
            Verdict::Block,
        ];
        let decided: Vec<Decided<'_>> = devices
            .iter()
            .zip(verdicts)
            .map(|(device, verdict)| Decided { device, verdict })
            .collect();
        let limit = RestrictionLimit {
            percent: 10.0,
            floor: 1,
        };
        let platform = Platform {
            default: Some(AccessLevel::Quarantine),
            ..Platform::default()
        };
        let mut plan = plan_steps(&mailboxes, &decided, &[], &limit, devices.len(), &platform);
        plan.set_org_default(
            AccessLevel::Quarantine,
            AccessLevel::Allow,
            &devices,
            &decided,
            &platform,
        );
        let report = report(
            &plan,
            &devices,
            &decided,
            Some(AccessLevel::Allow),
            &platform,
        );

        let seen: Vec<(&str, AccessState, NewState, Cause)> = report
            .changes
            .iter()
            .map(|c| (c.identity.as_str(), c.from, c.to, c.by))
            .collect();
        assert_eq!(
            seen,
            [
                (
                    "Bob\\ExchangeActiveSyncDevices\\iPhone§BBB2",
                    AccessState::Allowed,
                    NewState::Quarantined,
                    Cause::OrgDefault
                ),
                (
                    "Carol\\ExchangeActiveSyncDevices\\iPhone§CCC3",
                    AccessState::Allowed,
                    NewState::Blocked,
                    Cause::MailboxLists
                ),
                (
                    "Dave\\ExchangeActiveSyncDevices\\iPhone§DDD4",
                    AccessState::Allowed,
                    NewState::Quarantined,
                    Cause::MailboxLists
                ),
            ]
        );
        assert_eq!(report.changes[0].verdict, Some(Verdict::Exempt));
        assert_eq!(report.entries_only, 1, "Alice's allow entry");
        assert_eq!(report.devices(), 4);
        assert_eq!(
            report.org_default,
            Some(DefaultSwitch {
                from: AccessLevel::Allow,
                to: AccessLevel::Quarantine
            })
        );
        assert!(report.would_hold, "3 restrictions over a limit of 1");
    }

    #[test]
    fn a_removed_partnership_and_a_quick_plan_without_the_default() {
        let devices = vec![
            device("Alice", "AAA1", AccessState::Allowed, "Individual"),
            device("Bob", "BBB2", AccessState::Blocked, "Individual"),
        ];
        let mailboxes = vec![
            mailbox("Alice", &["AAA1"], &[]),
            mailbox("Bob", &[], &["BBB2"]),
        ];
        let decided = vec![
            Decided {
                device: &devices[0],
                verdict: Verdict::Allow,
            },
            Decided {
                device: &devices[1],
                verdict: Verdict::Quarantine,
            },
        ];
        let limit = RestrictionLimit {
            percent: 100.0,
            floor: 100,
        };
        let removals = vec![&devices[0]];
        let platform = Platform::default();
        let plan = plan_steps(&mailboxes, &decided, &removals, &limit, 2, &platform);
        let report = report(&plan, &devices, &decided, None, &platform);
        let seen: Vec<(&str, NewState, Cause)> = report
            .changes
            .iter()
            .map(|c| (c.device_id.as_str(), c.to, c.by))
            .collect();
        assert_eq!(
            seen,
            [
                ("AAA1", NewState::Removed, Cause::Removal),
                ("BBB2", NewState::Quarantined, Cause::MailboxLists),
            ]
        );
        assert_eq!(report.org_default, None);
        assert!(!report.would_hold);
    }
}
