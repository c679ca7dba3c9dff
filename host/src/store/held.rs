//! Held plans: what a run the blast-radius guard stopped decided, kept beside its journaled
//! commands until an operator approves the plan and it is applied.
//!
//! A held plan touches nothing that says what is enforced: its verdicts wait in
//! `held_decisions`, its notices in `held_notices`. Applying the approved plan makes them the
//! devices' verdicts (with their audit rows) and enqueues the notices in one transaction
//! ([`Store::enforce_approved`]), just before its commands are sent: the same order as a run
//! that was not held, where a verdict is recorded with or before its command.
//!
//! A plan waits only until a newer run of its organization plans: that run decided against
//! newer Exchange and Intune state (and perhaps another policy), so the older plan expires
//! ([`supersede_waiting_plans`]) and can no longer be approved.

use rusqlite::Transaction;

use super::devices::{DecisionBatch, DecisionRecord};
use super::outbox::{NoticeBatch, NoticeRequest};
use super::{OrgId, RunId, Store, StoreError};
use crate::model::{AccessLevel, DeviceKey, ShownState, Verdict};
use crate::notify::NoticeId;

/// What applying an approved plan's decisions did ([`Store::enforce_approved`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enforced {
    /// Verdicts that became the devices' own (devices gone since are skipped).
    pub decisions: u64,
    /// Notices enqueued.
    pub notices_queued: u64,
    /// Notices skipped: the verdict did not change, or a like notice is recent.
    pub notices_deduplicated: u64,
    /// The plan's devices (still present) whose verdict its list edits cannot give, with the
    /// state Exchange shows them in: to record once their commands are confirmed.
    pub shown: Vec<ShownState>,
}

/// Inside a recording transaction of run `run`: every earlier plan of `org` still waiting (held,
/// or approved and not yet begun) expires. Its commands are rejected, its waiting verdicts and
/// notices dropped, and the run records which run superseded it.
pub(super) fn supersede_waiting_plans(
    tx: &Transaction<'_>,
    store: &Store,
    org: OrgId,
    run: RunId,
    now: i64,
) -> Result<(), StoreError> {
    let doing = "expiring superseded held plans";
    let waiting: Vec<i64> = {
        let mut stmt = tx
            .prepare_cached(
                "SELECT id FROM sync_runs AS r
                 WHERE org_id = ?1 AND id < ?2 AND outcome IN ('held', 'running')
                   AND (outcome = 'held'
                        OR (approval = 'approved' AND NOT EXISTS (
                            SELECT 1 FROM command_journal
                            WHERE sync_id = r.id AND state <> 'planned')))",
            )
            .map_err(store.sql(doing))?;
        stmt.query_map((org.0, run.0), |row| row.get(0))
            .map_err(store.sql(doing))?
            .collect::<Result<_, _>>()
            .map_err(store.sql(doing))?
    };
    for old in waiting {
        let why = format!(
            "expired: run {run} planned since, against newer Exchange and Intune state; nothing of this plan was applied"
        );
        tx.execute(
            "UPDATE sync_runs SET outcome = 'rejected', superseded_by = ?2,
                 error = coalesce(error || char(10), '') || ?3
             WHERE id = ?1",
            (old, run.0, why),
        )
        .map_err(store.sql(doing))?;
        tx.execute(
            "UPDATE command_journal SET state = 'rejected', updated_at = ?2
             WHERE sync_id = ?1 AND state IN ('held', 'planned')",
            (old, now),
        )
        .map_err(store.sql(doing))?;
        drop_waiting(tx, store, RunId(old), doing)?;
        tracing::info!(
            run = old,
            by = run.0,
            "a held plan expired: a newer run planned"
        );
    }
    Ok(())
}

/// Forgets what a held plan would have made current.
pub(super) fn drop_waiting(
    tx: &Transaction<'_>,
    store: &Store,
    run: RunId,
    doing: &'static str,
) -> Result<(), StoreError> {
    for table in ["held_decisions", "held_notices", "held_shown"] {
        tx.execute(&format!("DELETE FROM {table} WHERE sync_id = ?1"), [run.0])
            .map_err(store.sql(doing))?;
    }
    Ok(())
}

/// Inside the recording transaction of a held plan: keeps its decisions, notices and shown
/// states aside.
pub(super) fn hold_decisions(
    tx: &Transaction<'_>,
    store: &Store,
    batch: &DecisionBatch<'_>,
    notices: &NoticeBatch<'_>,
) -> Result<(), StoreError> {
    let doing = "keeping a held plan's decisions";
    let mut decision = tx
        .prepare_cached(
            "INSERT OR REPLACE INTO held_decisions (sync_id, device_key, verdict, reason, notify,
                 decided_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(store.sql(doing))?;
    for d in batch.decisions {
        decision
            .execute(rusqlite::params![
                batch.run.0,
                d.key.as_str(),
                d.verdict.as_str(),
                d.reason,
                d.notify,
                batch.decided_at,
            ])
            .map_err(store.sql(doing))?;
    }
    let mut notice = tx
        .prepare_cached(
            "INSERT OR REPLACE INTO held_notices (sync_id, id, device_key, state, reason,
                 recipient, user_principal_name, resend_interval_secs, locale)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .map_err(store.sql(doing))?;
    for n in notices.requests {
        notice
            .execute(rusqlite::params![
                batch.run.0,
                n.id.as_str(),
                n.key.as_str(),
                n.state.as_str(),
                n.reason,
                n.recipient,
                n.user_principal_name,
                notices.resend_interval_secs,
                n.locale,
            ])
            .map_err(store.sql(doing))?;
    }
    let mut shown = tx
        .prepare_cached(
            "INSERT OR REPLACE INTO held_shown (sync_id, device_key, access_level, reason)
             VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(store.sql(doing))?;
    for ShownState { key, level, reason } in batch.shown {
        shown
            .execute(rusqlite::params![
                batch.run.0,
                key.as_str(),
                level.as_str(),
                reason
            ])
            .map_err(store.sql(doing))?;
    }
    Ok(())
}

fn parse_verdict(text: &str) -> Result<Verdict, StoreError> {
    Verdict::parse(text).ok_or_else(|| StoreError::Decode {
        what: "held verdict",
        detail: text.to_owned(),
    })
}

impl Store {
    /// Makes an approved plan's decisions the devices' verdicts (with audit rows) and enqueues
    /// its notices, in one transaction; call just before its commands are sent. Devices gone
    /// since the plan was made are skipped. A second call finds nothing left to do.
    pub fn enforce_approved(&self, run: RunId) -> Result<Enforced, StoreError> {
        let doing = "enforcing an approved plan's decisions";
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(self.sql(doing))?;
        let (org, digest): (OrgId, Option<String>) = tx
            .query_row(
                "SELECT org_id, plugin_digest FROM sync_runs WHERE id = ?1",
                [run.0],
                |row| Ok((OrgId(row.get(0)?), row.get(1)?)),
            )
            .map_err(self.sql(doing))?;
        let rows = self.held_decision_rows(&tx, run, org, doing)?;
        let notice_rows = self.held_notice_rows(&tx, run, org, doing)?;
        let decided_at = rows.first().map_or(0, |r| r.4);
        let decisions = decision_records(rows)?;
        let resend_interval_secs = notice_rows.first().map_or(0, |n| n.6);
        let requests = notice_requests(notice_rows)?;
        let shown = self.held_shown(&tx, run, org, doing)?;
        let (notices_queued, notices_deduplicated) = self.write_decisions(
            &tx,
            org,
            run,
            digest.as_deref().unwrap_or_default(),
            decided_at,
            &decisions,
            &NoticeBatch {
                requests: &requests,
                resend_interval_secs,
            },
        )?;
        drop_waiting(&tx, self, run, doing)?;
        tx.commit().map_err(self.sql(doing))?;
        Ok(Enforced {
            decisions: decisions.len() as u64,
            notices_queued,
            notices_deduplicated,
            shown,
        })
    }
}

/// A held decision as stored: device key, verdict, reason, notify, decided at.
type HeldRow = (String, String, String, bool, i64);
/// A held notice as stored: id, device key, state, reason, recipient, UPN, resend interval.
type NoticeRow = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    i64,
    String,
);

impl Store {
    /// The run's shown states for devices the organization still has.
    fn held_shown(
        &self,
        tx: &Transaction<'_>,
        run: RunId,
        org: OrgId,
        doing: &'static str,
    ) -> Result<Vec<ShownState>, StoreError> {
        let mut stmt = tx
            .prepare(
                "SELECT s.device_key, s.access_level, s.reason
                     FROM held_shown AS s
                     JOIN devices AS d ON d.org_id = ?2 AND d.device_key = s.device_key
                     WHERE s.sync_id = ?1 ORDER BY s.device_key",
            )
            .map_err(self.sql(doing))?;
        let rows: Vec<(String, String, String)> = stmt
            .query_map((run.0, org.0), |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .map_err(self.sql(doing))?
            .collect::<Result<_, _>>()
            .map_err(self.sql(doing))?;
        rows.into_iter()
            .map(|(key, level, reason)| {
                let level = AccessLevel::parse(&level).ok_or_else(|| StoreError::Decode {
                    what: "held shown access level",
                    detail: level.clone(),
                })?;
                Ok(ShownState {
                    key: DeviceKey::new(&key),
                    level,
                    reason,
                })
            })
            .collect()
    }

    /// The run's held decisions for devices the organization still has.
    fn held_decision_rows(
        &self,
        tx: &Transaction<'_>,
        run: RunId,
        org: OrgId,
        doing: &'static str,
    ) -> Result<Vec<HeldRow>, StoreError> {
        let mut stmt = tx
            .prepare(
                "SELECT h.device_key, h.verdict, h.reason, h.notify, h.decided_at
                     FROM held_decisions AS h
                     JOIN devices AS d ON d.org_id = ?2 AND d.device_key = h.device_key
                     WHERE h.sync_id = ?1 ORDER BY h.device_key",
            )
            .map_err(self.sql(doing))?;
        stmt.query_map((run.0, org.0), |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            ))
        })
        .map_err(self.sql(doing))?
        .collect::<Result<_, _>>()
        .map_err(self.sql(doing))
    }

    /// The run's held notices for devices the organization still has.
    fn held_notice_rows(
        &self,
        tx: &Transaction<'_>,
        run: RunId,
        org: OrgId,
        doing: &'static str,
    ) -> Result<Vec<NoticeRow>, StoreError> {
        let mut stmt = tx
            .prepare(
                "SELECT n.id, n.device_key, n.state, n.reason, n.recipient,
                         n.user_principal_name, n.resend_interval_secs, n.locale
                     FROM held_notices AS n
                     JOIN devices AS d ON d.org_id = ?2 AND d.device_key = n.device_key
                     WHERE n.sync_id = ?1 ORDER BY n.id",
            )
            .map_err(self.sql(doing))?;
        stmt.query_map((run.0, org.0), |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get(5)?,
                row.get(6)?,
                row.get(7)?,
            ))
        })
        .map_err(self.sql(doing))?
        .collect::<Result<_, _>>()
        .map_err(self.sql(doing))
    }
}

fn decision_records(rows: Vec<HeldRow>) -> Result<Vec<DecisionRecord>, StoreError> {
    rows.into_iter()
        .map(|(key, verdict, reason, notify, _)| {
            Ok(DecisionRecord {
                key: DeviceKey::new(&key),
                verdict: parse_verdict(&verdict)?,
                reason,
                notify,
            })
        })
        .collect()
}

fn notice_requests(rows: Vec<NoticeRow>) -> Result<Vec<NoticeRequest>, StoreError> {
    rows.into_iter()
        .map(|(id, key, state, reason, recipient, upn, _, locale)| {
            Ok(NoticeRequest {
                id: NoticeId::new(id).map_err(|e| StoreError::Decode {
                    what: "held notice id",
                    detail: e.to_string(),
                })?,
                key: DeviceKey::new(&key),
                state: parse_verdict(&state)?,
                reason,
                recipient,
                user_principal_name: upn,
                locale,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RunKind;
    use crate::model::inventory::AccessState;
    use crate::model::{Command, ExchangeDevice, PlannedCommand};
    use crate::store::devices::DeviceView;
    use crate::store::{JournalState, RunEnd, RunOutcome, VerdictCounts};

    fn device(id: &str) -> ExchangeDevice {
        ExchangeDevice {
            device_id: id.into(),
            identity: format!("alice\\ExchangeActiveSyncDevices\\iPhone\u{a7}{id}"),
            mailbox: Some("alice".into()),
            access_state: AccessState::Allowed,
            ..ExchangeDevice::default()
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

    /// A store with one allowed device of `alice`, and a run that planned `verdict` for it.
    struct Fixture {
        _dir: tempfile::TempDir,
        store: Store,
        org: OrgId,
        a1: ExchangeDevice,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            let org = store.organization("Contoso", 1).unwrap();
            let a1 = device("A1");
            let view = DeviceView {
                exchange: &a1,
                managed: None,
            };
            store.save_inventory(org, &[view], 1).unwrap();
            Fixture {
                _dir: dir,
                store,
                org,
                a1,
            }
        }

        /// A run deciding `verdict` for A1 with a notice, held or applied, then finished.
        fn run(&self, at: i64, verdict: Verdict, held: bool) -> RunId {
            self.run_showing(at, verdict, held, &[])
        }

        /// [`Fixture::run`], with the states Exchange shows where the list edits cannot give
        /// the verdicts.
        fn run_showing(
            &self,
            at: i64,
            verdict: Verdict,
            held: bool,
            shown: &[ShownState],
        ) -> RunId {
            let s = &self.store;
            let run = s.start_run(self.org, RunKind::Full, Some("d"), at).unwrap();
            let key = self.a1.key();
            let request = NoticeRequest {
                id: NoticeId::derive("Contoso", key.as_str(), verdict.as_str(), &run.to_string()),
                key: key.clone(),
                state: verdict,
                reason: "why".into(),
                recipient: "alice@contoso.com".into(),
                user_principal_name: None,
                locale: String::new(),
            };
            s.record_decisions_and_notices(
                &DecisionBatch {
                    run,
                    plugin_digest: "d",
                    decided_at: at,
                    decisions: &[DecisionRecord {
                        key,
                        verdict,
                        reason: "why".into(),
                        notify: true,
                    }],
                    commands: &[command("alice")],
                    held,
                    shown,
                },
                &NoticeBatch {
                    requests: &[request],
                    resend_interval_secs: 3600,
                },
            )
            .unwrap();
            let outcome = if held {
                RunOutcome::Held
            } else {
                RunOutcome::Succeeded
            };
            let end = RunEnd {
                ended_at: at + 1,
                outcome,
                counts: VerdictCounts::default(),
                devices_changed: 1,
                commands_issued: 0,
                error: None,
            };
            s.finish_run(run, &end).unwrap();
            run
        }

        fn verdict(&self) -> Option<Verdict> {
            let record = self.store.device(self.org, &self.a1.key()).unwrap();
            record.unwrap().decision.map(|d| d.verdict)
        }

        fn pending_notices(&self) -> usize {
            self.store
                .due_notices(self.org, i64::MAX, 100)
                .unwrap()
                .len()
        }
    }

    /// Regression (hostile run, hole 3): a held plan's verdicts were stored as the devices'
    /// own although Exchange was not touched, and the next good run then "changed" them back
    /// and mailed users whose access never changed.
    #[test]
    fn a_held_plan_leaves_the_enforced_verdicts_and_the_outbox_alone() {
        let f = Fixture::new();
        f.run(10, Verdict::Allow, false);
        assert_eq!(f.verdict(), Some(Verdict::Allow));
        let queued = f.pending_notices();
        f.run(20, Verdict::Block, true);
        assert_eq!(
            f.verdict(),
            Some(Verdict::Allow),
            "held verdicts are not current"
        );
        assert_eq!(f.pending_notices(), queued, "nobody is told of a held plan");
        assert_eq!(f.store.audit(f.org, &f.a1.key()).unwrap().len(), 1);
    }

    /// Regression (hostile run, hole 2): an approved held plan never mailed anyone.
    #[test]
    fn an_approved_plan_makes_its_verdicts_current_and_queues_its_notices() {
        let f = Fixture::new();
        let held = f.run(10, Verdict::Block, true);
        assert_eq!(f.pending_notices(), 0);
        assert_eq!(f.store.approve(held, 30).unwrap(), 1);
        let enforced = f.store.enforce_approved(held).unwrap();
        assert_eq!(
            enforced,
            Enforced {
                decisions: 1,
                notices_queued: 1,
                notices_deduplicated: 0,
                shown: Vec::new(),
            }
        );
        assert_eq!(f.verdict(), Some(Verdict::Block));
        let notices = f.store.due_notices(f.org, i64::MAX, 100).unwrap();
        assert_eq!(notices.len(), 1);
        assert_eq!(
            (notices[0].state, notices[0].run),
            (Verdict::Block, Some(held))
        );
        let audit = f.store.audit(f.org, &f.a1.key()).unwrap();
        assert_eq!((audit.len(), audit[0].run), (1, held));
        // Nothing is left to enforce a second time.
        assert_eq!(f.store.enforce_approved(held).unwrap(), Enforced::default());
    }

    /// A quarantine under an allow default stays allowed on Exchange: the approved plan hands
    /// back the state to record once its command is confirmed, and only once.
    #[test]
    fn an_approved_plan_hands_back_the_states_exchange_shows() {
        let f = Fixture::new();
        let shown = [ShownState {
            key: f.a1.key(),
            level: AccessLevel::Allow,
            reason: "Global".to_owned(),
        }];
        let held = f.run_showing(10, Verdict::Quarantine, true, &shown);
        assert_eq!(f.store.approve(held, 30).unwrap(), 1);
        let enforced = f.store.enforce_approved(held).unwrap();
        assert_eq!(enforced.shown, shown);
        assert_eq!(f.store.enforce_approved(held).unwrap(), Enforced::default());
    }

    /// Regression (hostile run, hole 1): a held plan superseded by later runs could still be
    /// approved, and blocked most of the organization.
    #[test]
    fn a_newer_plan_makes_a_waiting_plan_expire() {
        let f = Fixture::new();
        let held = f.run(10, Verdict::Block, true);
        let approved = f.run(20, Verdict::Block, true);
        assert_eq!(f.store.approve(approved, 25).unwrap(), 1);
        let good = f.run(30, Verdict::Allow, false);

        for old in [held, approved] {
            let record = f.store.run(old).unwrap().unwrap();
            assert_eq!(record.outcome, RunOutcome::Rejected, "{old}");
            assert_eq!(
                record.superseded_by,
                Some(if old == held { approved } else { good })
            );
            let states: Vec<JournalState> = f
                .store
                .journal(old)
                .unwrap()
                .iter()
                .map(|e| e.state)
                .collect();
            assert_eq!(states, [JournalState::Rejected]);
        }
        let refused = f.store.approve(held, 40).unwrap_err();
        assert!(
            matches!(refused, StoreError::Superseded { run, by } if run == held && by == approved),
            "{refused}"
        );
        assert!(refused.to_string().contains("expired"), "{refused}");
        assert!(f.store.held_runs(f.org).unwrap().is_empty());
        // What expired left nothing to enforce behind it.
        assert_eq!(
            f.store.enforce_approved(approved).unwrap(),
            Enforced::default()
        );
        assert_eq!(f.verdict(), Some(Verdict::Allow));
    }

    #[test]
    fn an_approved_plan_being_applied_is_not_superseded() {
        let f = Fixture::new();
        let held = f.run(10, Verdict::Block, true);
        f.store.approve(held, 15).unwrap();
        let ids: Vec<_> = f
            .store
            .journal(held)
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        f.store.mark_sent(&ids, 16).unwrap();
        f.run(20, Verdict::Allow, false);
        let record = f.store.run(held).unwrap().unwrap();
        assert_eq!(
            (record.outcome, record.superseded_by),
            (RunOutcome::Running, None)
        );
    }
}
