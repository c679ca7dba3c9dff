//! Devices: the last inventory of every partnership, its current verdict, and the append-only
//! audit of verdict changes.

use std::collections::HashSet;

use rusqlite::OptionalExtension;

use super::outbox::{self, NoticeBatch, Recorded};
use super::runs::RunOutcome;
use super::{CommandId, OrgId, RunId, Store, StoreError, decode, encode, held, journal};
use crate::model::RunKind;
use crate::model::{DeviceKey, ExchangeDevice, ManagedDevice, PlannedCommand, ShownState, Verdict};
use crate::plugin::types;

/// One partnership's views to save.
#[derive(Debug, Clone, Copy)]
pub struct DeviceView<'a> {
    /// Exchange's view.
    pub exchange: &'a ExchangeDevice,
    /// Intune's view, when the device is enrolled.
    pub managed: Option<&'a ManagedDevice>,
}

/// The verdict a device currently has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDecision {
    /// The verdict.
    pub verdict: Verdict,
    /// The policy's reason code.
    pub reason: String,
    /// Whether the policy asked for a notice.
    pub notify: bool,
    /// The policy version that decided.
    pub plugin_digest: String,
    /// When.
    pub decided_at: i64,
    /// The run that decided.
    pub run: RunId,
}

/// A stored device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The partnership.
    pub key: DeviceKey,
    /// Exchange's view at the last inventory.
    pub exchange: ExchangeDevice,
    /// Intune's view at the last inventory; `None` when not enrolled.
    pub managed: Option<ManagedDevice>,
    /// When an inventory last saw the device.
    pub seen_at: i64,
    /// `None` until a policy has decided the device.
    pub decision: Option<StoredDecision>,
}

/// One decision to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRecord {
    /// The partnership decided.
    pub key: DeviceKey,
    /// The verdict.
    pub verdict: Verdict,
    /// The policy's reason code.
    pub reason: String,
    /// Whether the policy asked for a notice.
    pub notify: bool,
}

impl DecisionRecord {
    /// The record of a plugin's decision for the device `key`.
    pub fn new(key: DeviceKey, decision: &types::Decision) -> Self {
        Self {
            key,
            verdict: decision.verdict.into(),
            reason: decision.reason.clone(),
            notify: decision.notify,
        }
    }
}

/// What one run decided and planned, recorded in one transaction.
#[derive(Debug, Clone, Copy)]
pub struct DecisionBatch<'a> {
    /// The run, a running quick or full sync.
    pub run: RunId,
    /// The policy version the run is pinned to.
    pub plugin_digest: &'a str,
    /// When the decisions were made.
    pub decided_at: i64,
    /// The decisions; devices of failed plugin batches are simply absent.
    pub decisions: &'a [DecisionRecord],
    /// The plan's commands, journaled as `planned`, or `held` when `held` is set.
    pub commands: &'a [PlannedCommand],
    /// The blast-radius guard held the plan.
    pub held: bool,
    /// A held plan's devices whose verdict no list edit can give, with the state Exchange
    /// shows them in instead ([`ShownState`]); kept for when the approved plan is applied.
    /// A plan that is not held records these itself once its commands are confirmed.
    pub shown: &'a [ShownState],
}

/// One audit row: a device's verdict, reason or deciding policy changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// The run that decided.
    pub run: RunId,
    /// The partnership.
    pub key: DeviceKey,
    /// Its `DeviceId`.
    pub device_id: String,
    /// Exchange's `DeviceAccessState` when decided.
    pub old_state: String,
    /// The verdict before, `None` for the first decision.
    pub old_verdict: Option<Verdict>,
    /// The new verdict.
    pub verdict: Verdict,
    /// The policy's reason code.
    pub reason: String,
    /// The policy version that decided.
    pub plugin_digest: String,
    /// When.
    pub decided_at: i64,
}

fn verdict(text: &str) -> Result<Verdict, StoreError> {
    Verdict::parse(text).ok_or_else(|| StoreError::Decode {
        what: "verdict",
        detail: text.to_owned(),
    })
}

type DeviceRow = (
    String,
    String,
    Option<String>,
    i64,
    Option<String>,
    Option<String>,
    Option<bool>,
    Option<String>,
    Option<i64>,
    Option<i64>,
);

const DEVICE_COLUMNS: &str = "device_key, exchange, intune, seen_at, verdict, reason, notify,
    plugin_digest, decided_at, decided_in";

fn device_record(row: DeviceRow) -> Result<DeviceRecord, StoreError> {
    let (key, exchange, intune, seen_at, v, reason, notify, digest, decided_at, run) = row;
    let decision = match (v, reason, notify, digest, decided_at, run) {
        (Some(v), Some(reason), Some(notify), Some(plugin_digest), Some(decided_at), Some(run)) => {
            Some(StoredDecision {
                verdict: verdict(&v)?,
                reason,
                notify,
                plugin_digest,
                decided_at,
                run: RunId(run),
            })
        }
        _ => None,
    };
    Ok(DeviceRecord {
        key: DeviceKey::new(&key),
        exchange: decode("Exchange view of a device", &exchange)?,
        managed: intune
            .map(|text| decode("Intune view of a device", &text))
            .transpose()?,
        seen_at,
        decision,
    })
}

impl Store {
    /// Saves the views of `devices` (inserting new partnerships, replacing both views of known
    /// ones), in one transaction. Verdicts are kept.
    pub fn save_inventory(
        &self,
        org: OrgId,
        devices: &[DeviceView<'_>],
        now: i64,
    ) -> Result<(), StoreError> {
        self.upsert_views(org, devices, now, "intune = excluded.intune")
    }

    /// Saves the views of one page of a listing under way, in one transaction: as
    /// [`save_inventory`](Self::save_inventory), except that a device listed without an Intune
    /// record keeps the record stored for it. Only a listing that got to its end may drop those
    /// ([`forget_records`](Self::forget_records)): a sync that fails halfway must not erase
    /// that the device was enrolled, which is how the next sync sees its record gone.
    pub fn save_listed(
        &self,
        org: OrgId,
        devices: &[DeviceView<'_>],
        now: i64,
    ) -> Result<(), StoreError> {
        self.upsert_views(
            org,
            devices,
            now,
            "intune = coalesce(excluded.intune, devices.intune)",
        )
    }

    /// Inserts or updates the views of `devices`; `intune` is the `SET` clause of a known
    /// device's Intune view.
    fn upsert_views(
        &self,
        org: OrgId,
        devices: &[DeviceView<'_>],
        now: i64,
        intune: &'static str,
    ) -> Result<(), StoreError> {
        const DOING: &str = "saving the inventory";
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(self.sql(DOING))?;
        {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "INSERT INTO devices (org_id, device_key, device_id, mailbox, exchange, intune, seen_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT(org_id, device_key) DO UPDATE SET
                         device_id = excluded.device_id, mailbox = excluded.mailbox,
                         exchange = excluded.exchange, {intune}, seen_at = excluded.seen_at"
                ))
                .map_err(self.sql(DOING))?;
            // In key order: the rows of one transaction then share the key index's pages, and
            // SQLite writes each changed page once per transaction.
            let mut keyed: Vec<(DeviceKey, &DeviceView<'_>)> =
                devices.iter().map(|v| (v.exchange.key(), v)).collect();
            keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            for (key, view) in keyed {
                let exchange = encode("Exchange view of a device", view.exchange)?;
                let intune = view
                    .managed
                    .map(|m| encode("Intune view of a device", m))
                    .transpose()?;
                stmt.execute(rusqlite::params![
                    org.0,
                    key.as_str(),
                    view.exchange.device_id,
                    view.exchange.mailbox,
                    exchange,
                    intune,
                    now,
                ])
                .map_err(self.sql(DOING))?;
            }
        }
        tx.commit().map_err(self.sql(DOING))
    }

    /// Drops the stored Intune record of the partnerships `keys` (a complete listing found
    /// none for them), in one transaction.
    pub fn forget_records(&self, org: OrgId, keys: &[DeviceKey]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(self.sql("forgetting Intune records"))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE devices SET intune = NULL
                     WHERE org_id = ?1 AND device_key = ?2 AND intune IS NOT NULL",
                )
                .map_err(self.sql("forgetting Intune records"))?;
            for key in keys {
                stmt.execute((org.0, key.as_str()))
                    .map_err(self.sql("forgetting Intune records"))?;
            }
        }
        tx.commit().map_err(self.sql("forgetting Intune records"))
    }

    /// Forgets partnerships Exchange no longer has. Their audit rows stay.
    pub fn forget_devices(&self, org: OrgId, keys: &[DeviceKey]) -> Result<usize, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(self.sql("forgetting devices"))?;
        let mut removed = 0;
        {
            let mut stmt = tx
                .prepare_cached("DELETE FROM devices WHERE org_id = ?1 AND device_key = ?2")
                .map_err(self.sql("forgetting devices"))?;
            for key in keys {
                removed += stmt
                    .execute((org.0, key.as_str()))
                    .map_err(self.sql("forgetting devices"))?;
            }
        }
        tx.commit().map_err(self.sql("forgetting devices"))?;
        Ok(removed)
    }

    /// One device.
    pub fn device(&self, org: OrgId, key: &DeviceKey) -> Result<Option<DeviceRecord>, StoreError> {
        let row = self
            .conn()
            .query_row(
                &format!(
                    "SELECT {DEVICE_COLUMNS} FROM devices WHERE org_id = ?1 AND device_key = ?2"
                ),
                (org.0, key.as_str()),
                |row| DeviceRow::try_from(row),
            )
            .optional()
            .map_err(self.sql("reading a device"))?;
        row.map(device_record).transpose()
    }

    /// How many partnerships the organization has: the base of the blast-radius share, also
    /// on a quick sync that only sees the changed ones.
    pub fn device_count(&self, org: OrgId) -> Result<usize, StoreError> {
        self.conn()
            .query_row(
                "SELECT count(*) FROM devices WHERE org_id = ?1",
                [org.0],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| n as usize)
            .map_err(self.sql("counting devices"))
    }

    /// Every device of the organization, by key.
    pub fn devices(&self, org: OrgId) -> Result<Vec<DeviceRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices WHERE org_id = ?1 ORDER BY device_key"
            ))
            .map_err(self.sql("listing devices"))?;
        let rows = stmt
            .query_map([org.0], |row| DeviceRow::try_from(row))
            .map_err(self.sql("listing devices"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.sql("listing devices"))?;
        rows.into_iter().map(device_record).collect()
    }

    /// The keys of every device of the organization: what a full sync compares with the
    /// partnerships Exchange still has, without decoding each device's stored views.
    pub fn device_keys(&self, org: OrgId) -> Result<Vec<DeviceKey>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT device_key FROM devices WHERE org_id = ?1")
            .map_err(self.sql("listing device keys"))?;
        stmt.query_map([org.0], |row| row.get::<_, String>(0))
            .map_err(self.sql("listing device keys"))?
            .map(|key| key.map(|k| DeviceKey::new(&k)))
            .collect::<Result<_, _>>()
            .map_err(self.sql("listing device keys"))
    }

    /// The partnerships that had an Intune record at the last saved inventory (what matching
    /// needs to notice a record that disappeared).
    pub fn managed_keys(&self, org: OrgId) -> Result<HashSet<DeviceKey>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT device_key FROM devices WHERE org_id = ?1 AND intune IS NOT NULL")
            .map_err(self.sql("listing managed devices"))?;
        stmt.query_map([org.0], |row| row.get::<_, String>(0))
            .map_err(self.sql("listing managed devices"))?
            .map(|key| key.map(|k| DeviceKey::new(&k)))
            .collect::<Result<_, _>>()
            .map_err(self.sql("listing managed devices"))
    }

    /// Records a run's decisions and journals its plan, in one transaction: the devices'
    /// current verdicts, an audit row for each device whose verdict, reason or deciding policy
    /// changed, and the commands. Returns the journal ids, in the order of `commands`.
    ///
    /// Fails without writing anything when a decision names a device whose inventory was not
    /// saved, or when the run is not a running quick or full sync (a what-if run changes no
    /// verdict: it only records its counts with [`Store::finish_run`]).
    pub fn record_decisions(
        &self,
        batch: &DecisionBatch<'_>,
    ) -> Result<Vec<CommandId>, StoreError> {
        let none = NoticeBatch {
            requests: &[],
            resend_interval_secs: 0,
        };
        Ok(self.record_decisions_and_notices(batch, &none)?.commands)
    }

    /// [`Store::record_decisions`], and in the same transaction the notices of `notices` whose
    /// device's verdict changes with this batch and that no like notice within the resend
    /// interval makes redundant (see [`super::outbox`]): a notice is recorded if and only if
    /// its verdict is.
    pub fn record_decisions_and_notices(
        &self,
        batch: &DecisionBatch<'_>,
        notices: &NoticeBatch<'_>,
    ) -> Result<Recorded, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(self.sql("recording decisions"))?;
        let (org, kind, outcome): (OrgId, String, String) = tx
            .query_row(
                "SELECT org_id, kind, outcome FROM sync_runs WHERE id = ?1",
                [batch.run.0],
                |row| Ok((OrgId(row.get(0)?), row.get(1)?, row.get(2)?)),
            )
            .optional()
            .map_err(self.sql("recording decisions"))?
            .ok_or(StoreError::UnknownRun(batch.run))?;
        if kind == RunKind::WhatIf.as_str() || outcome != RunOutcome::Running.as_str() {
            return Err(StoreError::RunState {
                run: batch.run,
                outcome: format!("a {outcome} {kind} run"),
                doing: "recording decisions",
                needed: "running quick or full",
            });
        }
        // Whatever this run plans replaces the plans still waiting for an operator.
        held::supersede_waiting_plans(&tx, self, org, batch.run, batch.decided_at)?;
        let (notices_queued, notices_deduplicated) = if batch.held {
            // A held plan changes nothing on Exchange yet: its verdicts and notices wait
            // beside it and become the devices' only when the approved plan is applied.
            held::hold_decisions(&tx, self, batch, notices)?;
            (0, 0)
        } else {
            self.write_decisions(
                &tx,
                org,
                batch.run,
                batch.plugin_digest,
                batch.decided_at,
                batch.decisions,
                notices,
            )?
        };
        let ids = journal::insert(
            &tx,
            self,
            org,
            batch.run,
            batch.commands,
            batch.held,
            batch.decided_at,
        )?;
        tx.commit().map_err(self.sql("recording decisions"))?;
        Ok(Recorded {
            org,
            commands: ids,
            notices_queued,
            notices_deduplicated,
        })
    }

    /// Within `tx`: enqueues `notices` (of devices whose verdict changes), writes an audit row
    /// for each changed decision and makes `decisions` the devices' current verdicts.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn write_decisions(
        &self,
        tx: &rusqlite::Transaction<'_>,
        org: OrgId,
        run: RunId,
        plugin_digest: &str,
        decided_at: i64,
        decisions: &[DecisionRecord],
        notices: &NoticeBatch<'_>,
    ) -> Result<(u64, u64), StoreError> {
        // Notices read the old verdict too, so they are enqueued before the update.
        let (notices_queued, notices_deduplicated) =
            outbox::enqueue(tx, self, org, run, decided_at, notices)?;
        {
            // The audit row reads the old verdict, so it is written before the update.
            let mut audit = tx
                .prepare_cached(
                    "INSERT INTO decision_audit (org_id, sync_id, device_key, device_id, old_state,
                         old_verdict, verdict, reason, plugin_digest, decided_at)
                     SELECT org_id, ?3, device_key, device_id,
                         coalesce(json_extract(exchange, '$.access_state'), 'Unknown'),
                         verdict, ?4, ?5, ?6, ?7
                     FROM devices
                     WHERE org_id = ?1 AND device_key = ?2
                       AND (verdict IS NOT ?4 OR reason IS NOT ?5 OR plugin_digest IS NOT ?6)",
                )
                .map_err(self.sql("auditing decisions"))?;
            let mut update = tx
                .prepare_cached(
                    "UPDATE devices SET verdict = ?3, reason = ?4, notify = ?5, plugin_digest = ?6,
                         decided_at = ?7, decided_in = ?8
                     WHERE org_id = ?1 AND device_key = ?2",
                )
                .map_err(self.sql("recording decisions"))?;
            for d in decisions {
                audit
                    .execute(rusqlite::params![
                        org.0,
                        d.key.as_str(),
                        run.0,
                        d.verdict.as_str(),
                        d.reason,
                        plugin_digest,
                        decided_at,
                    ])
                    .map_err(self.sql("auditing decisions"))?;
                let updated = update
                    .execute(rusqlite::params![
                        org.0,
                        d.key.as_str(),
                        d.verdict.as_str(),
                        d.reason,
                        d.notify,
                        plugin_digest,
                        decided_at,
                        run.0,
                    ])
                    .map_err(self.sql("recording decisions"))?;
                if updated == 0 {
                    return Err(StoreError::UnknownDevice {
                        org,
                        key: d.key.clone(),
                    });
                }
            }
        }
        Ok((notices_queued, notices_deduplicated))
    }

    /// A device's audit trail, oldest first.
    pub fn audit(&self, org: OrgId, key: &DeviceKey) -> Result<Vec<AuditEntry>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT sync_id, device_key, device_id, old_state, old_verdict, verdict, reason,
                     plugin_digest, decided_at
                 FROM decision_audit WHERE org_id = ?1 AND device_key = ?2 ORDER BY id",
            )
            .map_err(self.sql("reading the audit"))?;
        let rows = stmt
            .query_map((org.0, key.as_str()), |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, Option<String>>(4)?,
                    row.get::<_, String>(5)?,
                    row.get::<_, String>(6)?,
                    row.get::<_, String>(7)?,
                    row.get::<_, i64>(8)?,
                ))
            })
            .map_err(self.sql("reading the audit"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.sql("reading the audit"))?;
        rows.into_iter()
            .map(
                |(run, key, device_id, old_state, old, v, reason, digest, at)| {
                    Ok(AuditEntry {
                        run: RunId(run),
                        key: DeviceKey::new(&key),
                        device_id,
                        old_state,
                        old_verdict: old.as_deref().map(verdict).transpose()?,
                        verdict: verdict(&v)?,
                        reason,
                        plugin_digest: digest,
                        decided_at: at,
                    })
                },
            )
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Command;
    use crate::model::RunKind;
    use crate::model::inventory::{AccessState, ComplianceState};
    use crate::store::JournalState;

    fn device(id: &str, state: AccessState) -> ExchangeDevice {
        ExchangeDevice {
            device_id: id.into(),
            identity: format!("alice\\ExchangeActiveSyncDevices\\iPhone\u{a7}{id}"),
            mailbox: Some("alice".into()),
            access_state: state,
            ..ExchangeDevice::default()
        }
    }

    fn decision(dev: &ExchangeDevice, verdict: Verdict, reason: &str) -> DecisionRecord {
        DecisionRecord {
            key: dev.key(),
            verdict,
            reason: reason.into(),
            notify: verdict.restricts(),
        }
    }

    fn command(mailbox: &str) -> PlannedCommand {
        let parameters = crate::model::Parameters::new().text("Identity", mailbox);
        PlannedCommand {
            mailbox: Some(mailbox.into()),
            devices: vec![],
            command: Command {
                cmdlet: "Set-CASMailbox".into(),
                parameters,
            },
        }
    }

    #[test]
    fn inventory_round_trips_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let a1 = device("A1", AccessState::Quarantined);
        let managed = ManagedDevice {
            id: "md-1".into(),
            eas_device_id: "a1".into(),
            compliance_state: ComplianceState::InGracePeriod,
            ..ManagedDevice::default()
        };
        let a2 = device("A2", AccessState::Allowed);
        let org = {
            let store = Store::open(dir.path()).unwrap();
            let org = store.organization("Contoso", 1).unwrap();
            let views = [
                DeviceView {
                    exchange: &a1,
                    managed: Some(&managed),
                },
                DeviceView {
                    exchange: &a2,
                    managed: None,
                },
            ];
            store.save_inventory(org, &views, 10).unwrap();
            org
        };
        let store = Store::open(dir.path()).unwrap();
        let record = store.device(org, &a1.key()).unwrap().unwrap();
        assert_eq!(record.exchange, a1);
        assert_eq!(record.managed.as_ref(), Some(&managed));
        assert_eq!((record.seen_at, record.decision.is_none()), (10, true));
        assert_eq!(store.devices(org).unwrap().len(), 2);
        assert_eq!(store.device_count(org).unwrap(), 2);
        let mut keys = store.device_keys(org).unwrap();
        keys.sort();
        let mut expected = vec![a1.key(), a2.key()];
        expected.sort();
        assert_eq!(keys, expected);
        assert_eq!(store.managed_keys(org).unwrap(), HashSet::from([a1.key()]));

        assert_eq!(store.forget_devices(org, &[a2.key()]).unwrap(), 1);
        assert!(store.device(org, &a2.key()).unwrap().is_none());
    }

    #[test]
    fn a_listing_keeps_a_stored_intune_record_until_told_to_forget_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let org = store.organization("Contoso", 1).unwrap();
        let a1 = device("A1", AccessState::Allowed);
        let managed = ManagedDevice {
            id: "md-1".into(),
            eas_device_id: "a1".into(),
            ..ManagedDevice::default()
        };
        let with = DeviceView {
            exchange: &a1,
            managed: Some(&managed),
        };
        store.save_inventory(org, &[with], 5).unwrap();
        let moved = device("A1", AccessState::Blocked);
        let without = DeviceView {
            exchange: &moved,
            managed: None,
        };
        store.save_listed(org, &[without], 9).unwrap();
        let record = store.device(org, &a1.key()).unwrap().unwrap();
        assert_eq!((record.exchange, record.seen_at), (moved.clone(), 9));
        assert_eq!(record.managed.as_ref(), Some(&managed), "kept");
        assert_eq!(store.managed_keys(org).unwrap(), HashSet::from([a1.key()]));

        store.forget_records(org, &[a1.key()]).unwrap();
        assert!(
            store
                .device(org, &a1.key())
                .unwrap()
                .unwrap()
                .managed
                .is_none()
        );
        assert!(store.managed_keys(org).unwrap().is_empty());
        // A record listed again is saved again.
        store.save_listed(org, &[with], 10).unwrap();
        assert_eq!(store.managed_keys(org).unwrap(), HashSet::from([a1.key()]));
    }

    #[test]
    fn decisions_audit_only_changes_and_name_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let org = store.organization("Contoso", 1).unwrap();
        let a1 = device("A1", AccessState::Quarantined);
        store
            .save_inventory(
                org,
                &[DeviceView {
                    exchange: &a1,
                    managed: None,
                }],
                1,
            )
            .unwrap();

        let record = |run, digest, verdict, reason| {
            store
                .record_decisions(&DecisionBatch {
                    run,
                    plugin_digest: digest,
                    decided_at: run.0 * 100,
                    decisions: &[decision(&a1, verdict, reason)],
                    commands: &[],
                    held: false,
                    shown: &[],
                })
                .unwrap();
        };
        let r1 = store
            .start_run(org, RunKind::Full, Some("d1"), 100)
            .unwrap();
        record(r1, "d1", Verdict::Quarantine, "not-enrolled");
        let r2 = store
            .start_run(org, RunKind::Full, Some("d1"), 200)
            .unwrap();
        record(r2, "d1", Verdict::Quarantine, "not-enrolled");
        let r3 = store
            .start_run(org, RunKind::Full, Some("d2"), 300)
            .unwrap();
        record(r3, "d2", Verdict::Quarantine, "not-enrolled");
        let r4 = store
            .start_run(org, RunKind::Quick, Some("d2"), 400)
            .unwrap();
        record(r4, "d2", Verdict::Allow, "compliant");

        let audit = store.audit(org, &a1.key()).unwrap();
        let summary: Vec<(RunId, Option<Verdict>, Verdict, &str)> = audit
            .iter()
            .map(|a| (a.run, a.old_verdict, a.verdict, a.plugin_digest.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                (r1, None, Verdict::Quarantine, "d1"),
                (r3, Some(Verdict::Quarantine), Verdict::Quarantine, "d2"),
                (r4, Some(Verdict::Quarantine), Verdict::Allow, "d2"),
            ]
        );
        assert_eq!(audit[0].old_state, "Quarantined");
        let current = store
            .device(org, &a1.key())
            .unwrap()
            .unwrap()
            .decision
            .unwrap();
        assert_eq!(
            (current.verdict, current.reason.as_str(), current.run),
            (Verdict::Allow, "compliant", r4)
        );
    }

    #[test]
    fn the_audit_is_append_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let org = store.organization("Contoso", 1).unwrap();
        let a1 = device("A1", AccessState::Allowed);
        store
            .save_inventory(
                org,
                &[DeviceView {
                    exchange: &a1,
                    managed: None,
                }],
                1,
            )
            .unwrap();
        let run = store.start_run(org, RunKind::Full, Some("d"), 1).unwrap();
        store
            .record_decisions(&DecisionBatch {
                run,
                plugin_digest: "d",
                decided_at: 1,
                decisions: &[decision(&a1, Verdict::Block, "noncompliant")],
                commands: &[],
                held: false,
                shown: &[],
            })
            .unwrap();
        let conn = store.conn();
        let update = conn.execute("UPDATE decision_audit SET verdict = 'allow'", []);
        assert!(update.unwrap_err().to_string().contains("append-only"));
        let delete = conn.execute("DELETE FROM decision_audit", []);
        assert!(delete.unwrap_err().to_string().contains("append-only"));
    }

    #[test]
    fn an_unknown_device_rolls_back_the_whole_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let org = store.organization("Contoso", 1).unwrap();
        let known = device("A1", AccessState::Allowed);
        let unknown = device("ZZ", AccessState::Allowed);
        store
            .save_inventory(
                org,
                &[DeviceView {
                    exchange: &known,
                    managed: None,
                }],
                1,
            )
            .unwrap();
        let run = store.start_run(org, RunKind::Full, Some("d"), 1).unwrap();
        let err = store
            .record_decisions(&DecisionBatch {
                run,
                plugin_digest: "d",
                decided_at: 1,
                decisions: &[
                    decision(&known, Verdict::Block, "noncompliant"),
                    decision(&unknown, Verdict::Block, "noncompliant"),
                ],
                commands: &[command("alice")],
                held: false,
                shown: &[],
            })
            .unwrap_err();
        assert!(matches!(err, StoreError::UnknownDevice { .. }), "{err:?}");
        assert!(
            store
                .device(org, &known.key())
                .unwrap()
                .unwrap()
                .decision
                .is_none()
        );
        assert!(store.audit(org, &known.key()).unwrap().is_empty());
        assert!(store.journal(run).unwrap().is_empty());
    }

    #[test]
    fn only_a_running_quick_or_full_run_records_decisions() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let org = store.organization("Contoso", 1).unwrap();
        let a1 = device("A1", AccessState::Allowed);
        store
            .save_inventory(
                org,
                &[DeviceView {
                    exchange: &a1,
                    managed: None,
                }],
                1,
            )
            .unwrap();
        let batch = |run| DecisionBatch {
            run,
            plugin_digest: "d",
            decided_at: 1,
            decisions: &[],
            commands: &[],
            held: false,
            shown: &[],
        };
        let rehearsal = store.start_run(org, RunKind::WhatIf, Some("d"), 1).unwrap();
        let err = store.record_decisions(&batch(rehearsal)).unwrap_err();
        assert!(err.to_string().contains("what-if"), "{err}");

        let finished = store.start_run(org, RunKind::Quick, Some("d"), 1).unwrap();
        store
            .finish_run(
                finished,
                &crate::store::RunEnd {
                    ended_at: 2,
                    outcome: RunOutcome::Failed,
                    counts: Default::default(),
                    devices_changed: 0,
                    commands_issued: 0,
                    error: Some("Exchange unreachable".into()),
                },
            )
            .unwrap();
        assert!(matches!(
            store.record_decisions(&batch(finished)),
            Err(StoreError::RunState { .. })
        ));
        assert!(matches!(
            store.record_decisions(&batch(RunId(99))),
            Err(StoreError::UnknownRun(RunId(99)))
        ));
    }

    #[test]
    fn a_plugin_decision_converts_to_a_record() {
        let key = DeviceKey::new("Alice\\ExchangeActiveSyncDevices\\iPhone\u{a7}A1");
        let record = DecisionRecord::new(
            key.clone(),
            &types::Decision {
                verdict: types::Verdict::Quarantine,
                reason: "not-enrolled".into(),
                notify: true,
            },
        );
        assert_eq!(
            record,
            DecisionRecord {
                key,
                verdict: Verdict::Quarantine,
                reason: "not-enrolled".into(),
                notify: true,
            }
        );
    }

    #[test]
    fn a_held_plan_is_journaled_held() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let org = store.organization("Contoso", 1).unwrap();
        let run = store.start_run(org, RunKind::Full, Some("d"), 1).unwrap();
        let ids = store
            .record_decisions(&DecisionBatch {
                run,
                plugin_digest: "d",
                decided_at: 1,
                decisions: &[],
                commands: &[command("alice"), command("bob")],
                held: true,
                shown: &[],
            })
            .unwrap();
        let journal = store.journal(run).unwrap();
        assert_eq!(journal.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
        assert!(journal.iter().all(|e| e.state == JournalState::Held));
        assert_eq!(journal[1].command, command("bob"));
    }
}
