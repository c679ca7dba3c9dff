//! Read-only views for the operator (the admin API and the status page): the outbox by
//! status, and what a held plan would do to each device.

use std::collections::BTreeMap;

use super::{NoticeStatus, OrgId, OutboxNotice, RunId, Store, StoreError, decode};
use crate::model::{AccessLevel, AccessState, DeviceKey, ExchangeDevice, Verdict};

/// A device a held plan would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldChange {
    /// The partnership.
    pub key: DeviceKey,
    /// Its Exchange view at the last inventory (`Identity`, `DeviceId` as Exchange spells
    /// them); `None` when the device is gone since.
    pub exchange: Option<ExchangeDevice>,
    /// Its state on Exchange now, as last read or enforced.
    pub state: Option<AccessState>,
    /// The verdict the plan holds for it; `None` for a device only the organization default's
    /// switch moves without a verdict of this plan.
    pub verdict: Option<Verdict>,
    /// The held verdict's reason.
    pub reason: Option<String>,
    /// The cmdlet that would change it.
    pub cmdlet: String,
    /// The organization default that cmdlet sets, when it is the default's switch: the level
    /// the device falls to.
    pub default_level: Option<AccessLevel>,
}

impl Store {
    /// The notices of `org` in `status`, newest first, at most `limit`.
    pub fn notices_in(
        &self,
        org: OrgId,
        status: NoticeStatus,
        limit: usize,
    ) -> Result<Vec<OutboxNotice>, StoreError> {
        self.query_notices(
            &format!(
                "SELECT {} FROM notices WHERE org_id = ?1 AND status = ?2
                 ORDER BY created_at DESC, id DESC LIMIT ?3",
                super::outbox::NOTICE_COLUMNS
            ),
            rusqlite::params![org.0, status.as_str(), limit.min(i64::MAX as usize) as i64],
        )
    }

    /// The devices the held plan of `run` would change, by `Identity`: every device its
    /// journaled commands name, with the verdict held for it.
    pub fn held_changes(&self, run: RunId) -> Result<Vec<HeldChange>, StoreError> {
        let doing = "reading a held plan";
        let record = self.run(run)?.ok_or(StoreError::UnknownRun(run))?;
        let mut cmdlets: BTreeMap<DeviceKey, (String, Option<AccessLevel>)> = BTreeMap::new();
        for entry in self.journal(run)? {
            let command = &entry.command.command;
            let level = command
                .parameters
                .get_text("DefaultAccessLevel")
                .and_then(AccessLevel::parse);
            for key in entry.command.devices {
                cmdlets
                    .entry(key)
                    .or_insert_with(|| (command.cmdlet.clone(), level));
            }
        }
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT d.exchange, h.verdict, h.reason
                 FROM (SELECT ?3 AS device_key) AS k
                 LEFT JOIN devices AS d ON d.org_id = ?2 AND d.device_key = k.device_key
                 LEFT JOIN held_decisions AS h ON h.sync_id = ?1 AND h.device_key = k.device_key",
            )
            .map_err(self.sql(doing))?;
        let mut changes = Vec::with_capacity(cmdlets.len());
        for (key, (cmdlet, default_level)) in cmdlets {
            let (exchange, verdict, reason): (Option<String>, Option<String>, Option<String>) =
                stmt.query_row((run.0, record.org.0, key.as_str()), |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .map_err(self.sql(doing))?;
            let exchange: Option<ExchangeDevice> = exchange
                .map(|text| decode("Exchange view of a device", &text))
                .transpose()?;
            let verdict = verdict
                .map(|text| {
                    Verdict::parse(&text).ok_or(StoreError::Decode {
                        what: "verdict",
                        detail: text,
                    })
                })
                .transpose()?;
            changes.push(HeldChange {
                key,
                state: exchange.as_ref().map(|e| e.access_state),
                exchange,
                verdict,
                reason,
                cmdlet,
                default_level,
            });
        }
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use crate::model::RunKind;
    use crate::model::{AccessState, ExchangeDevice, PlannedCommand, Verdict};
    use crate::model::{Command, Parameters};
    use crate::store::{DecisionBatch, DecisionRecord, DeviceView, NoticeStatus, Store};

    #[test]
    fn a_held_plan_shows_each_device_with_its_state_and_held_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let org = store.organization("Contoso", 1).unwrap();
        let devices: Vec<ExchangeDevice> = ["A1", "B2"]
            .iter()
            .map(|id| ExchangeDevice {
                device_id: (*id).into(),
                identity: format!("Alice\\ExchangeActiveSyncDevices\\iPhone§{id}"),
                mailbox: Some("Alice".into()),
                access_state: AccessState::Allowed,
                ..ExchangeDevice::default()
            })
            .collect();
        let views: Vec<DeviceView<'_>> = devices
            .iter()
            .map(|exchange| DeviceView {
                exchange,
                managed: None,
            })
            .collect();
        store.save_inventory(org, &views, 1).unwrap();
        let run = store.start_run(org, RunKind::Full, Some("d"), 2).unwrap();
        let decisions = [DecisionRecord {
            key: devices[0].key(),
            verdict: Verdict::Block,
            reason: "noncompliant".into(),
            notify: false,
        }];
        let commands = [
            PlannedCommand {
                mailbox: Some("Alice".into()),
                devices: vec![devices[0].key()],
                command: Command::new("Set-CASMailbox", Parameters::new()),
            },
            PlannedCommand {
                mailbox: None,
                devices: vec![devices[1].key()],
                command: Command::new(
                    "Set-ActiveSyncOrganizationSettings",
                    Parameters::new().text("DefaultAccessLevel", "Quarantine"),
                ),
            },
        ];
        store
            .record_decisions(&DecisionBatch {
                run,
                plugin_digest: "d",
                decided_at: 2,
                decisions: &decisions,
                commands: &commands,
                held: true,
                shown: &[],
            })
            .unwrap();
        let changes = store.held_changes(run).unwrap();
        let seen: Vec<(&str, Option<AccessState>, Option<Verdict>, &str)> = changes
            .iter()
            .map(|c| {
                (
                    c.exchange.as_ref().unwrap().device_id.as_str(),
                    c.state,
                    c.verdict,
                    c.cmdlet.as_str(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (
                    "A1",
                    Some(AccessState::Allowed),
                    Some(Verdict::Block),
                    "Set-CASMailbox"
                ),
                (
                    "B2",
                    Some(AccessState::Allowed),
                    None,
                    "Set-ActiveSyncOrganizationSettings"
                ),
            ]
        );
        assert_eq!(changes[0].reason.as_deref(), Some("noncompliant"));
        assert_eq!(
            (changes[0].default_level, changes[1].default_level),
            (None, Some(crate::model::AccessLevel::Quarantine))
        );
        assert!(
            store
                .notices_in(org, NoticeStatus::Pending, 10)
                .unwrap()
                .is_empty()
        );
    }
}
