//! The access state a confirmed command leaves its devices in, written into their stored
//! Exchange view.
//!
//! The device rows hold Exchange's view as the last inventory read it. Without this, a device
//! the connector blocked showed `Allowed` on the status page and in the API until the next
//! full sync read it again (a quick sync does not re-read devices that did not change). When
//! Exchange confirms a command, its devices' state is what the command enforces, so it is
//! recorded then, in the same transaction that marks the command done:
//!
//! * `Set-CASMailbox`: each device's current verdict as Exchange spells the state (on the allow
//!   list: `Allowed`; block list: `Blocked`; on neither: `Quarantined`, the organization
//!   default the connector manages), reason `Individual` for a list entry, `Global` otherwise;
//!   where a rule or the default gives a device on no list another state (a quarantine under an
//!   allow default), the sync then records that one ([`Store::record_shown_states`]);
//! * `Set-ActiveSyncOrganizationSettings -DefaultAccessLevel L`: the devices that lose access
//!   by the switch take L's state, reason `Global`.
//!
//! Other commands (device rules, settings, `Remove-MobileDevice`) name no device whose state
//! they set; the next inventory reads those.
//!
//! What a command enforces is taken from the planned command the apply path already holds
//! ([`Enforces::split`]), not read back from its journal row and decoded again (docs/benchmarks.md,
//! "The connector CPU rise": most of this module's cost is the second write of each device's
//! row, not that read).

use rusqlite::Transaction;

use super::{OrgId, Store, StoreError};
use crate::model::command::{SET_CAS_MAILBOX, SET_ORG_SETTINGS};
use crate::model::{AccessLevel, Command, DeviceKey, PlannedCommand, ShownState};

/// The stored spelling of the state a level gives.
fn state_of(level: AccessLevel) -> &'static str {
    match level {
        AccessLevel::Allow => "Allowed",
        AccessLevel::Block => "Blocked",
        AccessLevel::Quarantine => "Quarantined",
    }
}

/// The devices whose access state a command sets once Exchange confirms it, and to what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enforces {
    org: OrgId,
    devices: Vec<DeviceKey>,
    /// `None`: each device's current verdict (a mailbox edit); `Some`: the level the
    /// organization default switches to.
    level: Option<AccessLevel>,
}

impl Enforces {
    /// Splits `planned`, a command of organization `org`, into the call to send and what it
    /// enforces once confirmed (`None` for a command that names no device whose state it sets).
    pub fn split(org: OrgId, planned: PlannedCommand) -> (Command, Option<Enforces>) {
        let PlannedCommand {
            devices, command, ..
        } = planned;
        let level = (command.cmdlet == SET_ORG_SETTINGS)
            .then(|| command.parameters.get_text("DefaultAccessLevel"))
            .flatten()
            .and_then(AccessLevel::parse);
        let enforces = (command.cmdlet == SET_CAS_MAILBOX || level.is_some()).then_some(Enforces {
            org,
            devices,
            level,
        });
        (command, enforces)
    }
}

/// Records, inside the caller's transaction (the one that marks the commands done), the state
/// the confirmed commands leave their devices in.
pub(super) fn record(
    tx: &Transaction<'_>,
    store: &Store,
    confirmed: &[&Enforces],
) -> Result<(), StoreError> {
    let doing = "recording the enforced access state";
    // By the verdict the device has now: the one the command was planned for (a held plan's
    // verdicts become current before its commands go out).
    let mut by_verdict = tx
        .prepare_cached(
            "UPDATE devices SET exchange = json_set(exchange,
                 '$.access_state', CASE verdict WHEN 'allow' THEN 'Allowed'
                     WHEN 'block' THEN 'Blocked' ELSE 'Quarantined' END,
                 '$.access_state_reason', CASE verdict WHEN 'quarantine' THEN 'Global'
                     ELSE 'Individual' END)
             WHERE org_id = ?1 AND device_key = ?2 AND verdict IN ('allow', 'block', 'quarantine')",
        )
        .map_err(store.sql(doing))?;
    let mut to_state = tx
        .prepare_cached(
            "UPDATE devices SET exchange = json_set(exchange,
                 '$.access_state', ?3, '$.access_state_reason', 'Global')
             WHERE org_id = ?1 AND device_key = ?2",
        )
        .map_err(store.sql(doing))?;
    for enforces in confirmed {
        let org = enforces.org.0;
        for key in &enforces.devices {
            match enforces.level {
                Some(level) => {
                    to_state.execute(rusqlite::params![org, key.as_str(), state_of(level)])
                }
                None => by_verdict.execute(rusqlite::params![org, key.as_str()]),
            }
            .map_err(store.sql(doing))?;
        }
    }
    Ok(())
}

impl Store {
    /// Records the state Exchange shows, where a confirmed list edit cannot give a device its
    /// verdict's (a quarantine under an allow rule or default)
    /// ([`ShownState`]). Called after [`record`] wrote the
    /// verdict's, for the devices of confirmed commands only.
    pub fn record_shown_states(&self, org: OrgId, states: &[ShownState]) -> Result<(), StoreError> {
        let doing = "recording the access state Exchange shows";
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(self.sql(doing))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE devices SET exchange = json_set(exchange,
                         '$.access_state', ?3, '$.access_state_reason', ?4)
                     WHERE org_id = ?1 AND device_key = ?2",
                )
                .map_err(self.sql(doing))?;
            for ShownState { key, level, reason } in states {
                stmt.execute(rusqlite::params![
                    org.0,
                    key.as_str(),
                    state_of(*level),
                    reason
                ])
                .map_err(self.sql(doing))?;
            }
        }
        tx.commit().map_err(self.sql(doing))
    }
}

#[cfg(test)]
mod tests {
    use crate::model::RunKind;
    use crate::model::{AccessState, DeviceKey, ExchangeDevice, PlannedCommand, Verdict};
    use crate::model::{Command, Parameters};
    use crate::store::{DecisionBatch, DecisionRecord, DeviceView, Enforces, Store};

    fn device(mailbox: &str, id: &str) -> ExchangeDevice {
        ExchangeDevice {
            device_id: id.into(),
            identity: format!("{mailbox}\\ExchangeActiveSyncDevices\\iPhone§{id}"),
            mailbox: Some(mailbox.into()),
            access_state: AccessState::Allowed,
            access_state_reason: "Global".into(),
            ..ExchangeDevice::default()
        }
    }

    /// Device rules, settings and partnership removals name no device whose state they set;
    /// an org default switch without a level it can name sets none either.
    #[test]
    fn only_mailbox_edits_and_the_org_defaults_switch_enforce_a_state() {
        let org = crate::store::OrgId(1);
        let planned = |cmdlet: &str, parameters: Parameters| PlannedCommand {
            mailbox: None,
            devices: vec![DeviceKey::new("m\\x\\d")],
            command: Command::new(cmdlet, parameters),
        };
        let enforces = |p: PlannedCommand| Enforces::split(org, p).1.is_some();
        assert!(enforces(planned("Set-CASMailbox", Parameters::new())));
        assert!(enforces(planned(
            "Set-ActiveSyncOrganizationSettings",
            Parameters::new().text("DefaultAccessLevel", "Block"),
        )));
        assert!(!enforces(planned(
            "Set-ActiveSyncOrganizationSettings",
            Parameters::new().text("UserMailInsert", "x"),
        )));
        assert!(!enforces(planned("Remove-MobileDevice", Parameters::new())));
        assert!(!enforces(planned(
            "New-ActiveSyncDeviceAccessRule",
            Parameters::new()
        )));
        // The call sent is the planned one.
        let (command, _) = Enforces::split(org, planned("Set-CASMailbox", Parameters::new()));
        assert_eq!(command, Command::new("Set-CASMailbox", Parameters::new()));
    }

    /// The bug: the status page showed `Allowed` for devices the connector had blocked, until
    /// the next full sync.
    #[test]
    fn a_confirmed_command_leaves_its_devices_in_the_state_it_enforces() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let org = store.organization("Contoso", 1).unwrap();
        let devices = [
            device("alice", "A1"),
            device("bob", "B2"),
            device("carol", "C3"),
        ];
        let views: Vec<DeviceView<'_>> = devices
            .iter()
            .map(|exchange| DeviceView {
                exchange,
                managed: None,
            })
            .collect();
        store.save_inventory(org, &views, 1).unwrap();
        let key = |d: &ExchangeDevice| d.key();
        let decisions = [
            (key(&devices[0]), Verdict::Block),
            (key(&devices[1]), Verdict::Allow),
            (key(&devices[2]), Verdict::Quarantine),
        ]
        .map(|(key, verdict)| DecisionRecord {
            key,
            verdict,
            reason: "r".into(),
            notify: false,
        });
        let edit = |devices: Vec<DeviceKey>| PlannedCommand {
            mailbox: Some("alice".into()),
            devices,
            command: Command::new(
                "Set-CASMailbox",
                Parameters::new().text("Identity", "alice"),
            ),
        };
        let commands = [
            edit(vec![key(&devices[0]), key(&devices[1])]),
            PlannedCommand {
                mailbox: None,
                devices: vec![key(&devices[2])],
                command: Command::new(
                    "Set-ActiveSyncOrganizationSettings",
                    Parameters::new().text("DefaultAccessLevel", "Quarantine"),
                ),
            },
        ];
        let run = store.start_run(org, RunKind::Full, Some("d"), 2).unwrap();
        let ids = store
            .record_decisions(&DecisionBatch {
                run,
                plugin_digest: "d",
                decided_at: 2,
                decisions: &decisions,
                commands: &commands,
                held: false,
                shown: &[],
            })
            .unwrap();
        store.mark_sent(&ids, 3).unwrap();
        // What each command enforces, as the apply path holds it.
        let enforces: Vec<Option<Enforces>> = commands
            .iter()
            .map(|c| Enforces::split(org, c.clone()).1)
            .collect();
        assert!(enforces.iter().all(Option::is_some));
        let confirmed = |i: usize| [(ids[i], enforces[i].as_ref())];
        let state = |d: &ExchangeDevice| {
            let record = store.device(org, &d.key()).unwrap().unwrap();
            (
                record.exchange.access_state,
                record.exchange.access_state_reason,
            )
        };
        // Sent is not confirmed: the state stays as read.
        assert_eq!(state(&devices[0]).0, AccessState::Allowed);
        store.mark_done(&confirmed(0), 4).unwrap();
        assert_eq!(
            state(&devices[0]),
            (AccessState::Blocked, "Individual".into())
        );
        assert_eq!(
            state(&devices[1]),
            (AccessState::Allowed, "Individual".into())
        );
        assert_eq!(state(&devices[2]).0, AccessState::Allowed);
        // A confirmation the journal refuses (already done) writes no state either.
        assert!(
            store
                .mark_done(&[confirmed(0)[0], confirmed(1)[0]], 5)
                .is_err()
        );
        assert_eq!(state(&devices[2]).0, AccessState::Allowed);
        store.mark_done(&confirmed(1), 5).unwrap();
        assert_eq!(
            state(&devices[2]),
            (AccessState::Quarantined, "Global".into())
        );
        // The rest of the view is the inventory's.
        let record = store.device(org, &devices[0].key()).unwrap().unwrap();
        assert_eq!(record.exchange.identity, devices[0].identity);
    }
}
