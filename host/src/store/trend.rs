//! The organization's devices per verdict over time, for the status page's chart: a row per
//! quick or full run, written as the run ends (a what-if run changes no verdict).

use rusqlite::Transaction;
use serde::Serialize;

use super::{OrgId, RunId, Store, StoreError, VerdictCounts};

/// The organization's devices per current verdict when a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrendPoint {
    /// The run.
    pub run: RunId,
    /// When it ended (Unix seconds).
    pub at: i64,
    /// Devices per verdict then.
    pub counts: VerdictCounts,
}

/// Records, inside the caller's transaction, the counts of the organization of `run` as it
/// ends at `at` (again for an approved plan's run, which ends twice: the later counts stand).
pub(super) fn record(
    tx: &Transaction<'_>,
    store: &Store,
    run: RunId,
    at: i64,
) -> Result<(), StoreError> {
    // One pass over the organization's rows (a covering scan of the verdict column); the
    // status page's own counts take as long.
    tx.prepare_cached(
        "INSERT OR REPLACE INTO verdict_trend
             (sync_id, org_id, at, allowed, blocked, quarantined, exempt, undecided)
         SELECT r.id, r.org_id, ?2,
             coalesce(sum(d.verdict = 'allow'), 0), coalesce(sum(d.verdict = 'block'), 0),
             coalesce(sum(d.verdict = 'quarantine'), 0), coalesce(sum(d.verdict = 'exempt'), 0),
             coalesce(sum(d.device_key IS NOT NULL AND d.verdict IS NULL), 0)
         FROM sync_runs r LEFT JOIN devices d ON d.org_id = r.org_id
         WHERE r.id = ?1 AND r.kind IN ('quick', 'full')
         GROUP BY r.id",
    )
    .and_then(|mut stmt| stmt.execute((run.0, at)))
    .map_err(store.sql("recording the verdict trend"))?;
    Ok(())
}

impl Store {
    /// The organization's last `limit` trend points, oldest first.
    pub fn verdict_trend(&self, org: OrgId, limit: usize) -> Result<Vec<TrendPoint>, StoreError> {
        let doing = "reading the verdict trend";
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT sync_id, at, allowed, blocked, quarantined, exempt, undecided
                 FROM (SELECT * FROM verdict_trend WHERE org_id = ?1
                       ORDER BY sync_id DESC LIMIT ?2)
                 ORDER BY sync_id",
            )
            .map_err(self.sql(doing))?;
        let points = stmt
            .query_map((org.0, limit as i64), |row| {
                Ok(TrendPoint {
                    run: RunId(row.get(0)?),
                    at: row.get(1)?,
                    counts: VerdictCounts {
                        allow: row.get(2)?,
                        block: row.get(3)?,
                        quarantine: row.get(4)?,
                        exempt: row.get(5)?,
                        undecided: row.get(6)?,
                    },
                })
            })
            .map_err(self.sql(doing))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.sql(doing))?;
        Ok(points)
    }
}

#[cfg(test)]
mod tests {
    use crate::model::RunKind;
    use crate::model::{ExchangeDevice, Verdict};
    use crate::store::{
        DecisionBatch, DecisionRecord, DeviceView, RunEnd, RunOutcome, Store, VerdictCounts,
    };

    fn end(at: i64) -> RunEnd {
        RunEnd {
            ended_at: at,
            outcome: RunOutcome::Succeeded,
            counts: VerdictCounts::default(),
            devices_changed: 0,
            commands_issued: 0,
            error: None,
        }
    }

    #[test]
    fn each_run_that_ends_records_the_organizations_counts_and_a_what_if_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let org = store.organization("Contoso", 1).unwrap();
        let other = store.organization("Fabrikam", 1).unwrap();
        let empty = store.start_run(org, RunKind::Full, Some("d"), 2).unwrap();
        store.finish_run(empty, &end(3)).unwrap();

        let devices: Vec<ExchangeDevice> = (0..3)
            .map(|n| ExchangeDevice {
                device_id: format!("D{n}"),
                identity: format!("alice\\ExchangeActiveSyncDevices\\D{n}"),
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
        store.save_inventory(org, &views, 4).unwrap();
        store.save_inventory(other, &views, 4).unwrap();
        let run = store.start_run(org, RunKind::Quick, Some("d"), 5).unwrap();
        let decisions: Vec<DecisionRecord> = [Verdict::Block, Verdict::Allow]
            .iter()
            .zip(&devices)
            .map(|(verdict, device)| DecisionRecord {
                key: device.key(),
                verdict: *verdict,
                reason: "r".into(),
                notify: false,
            })
            .collect();
        store
            .record_decisions(&DecisionBatch {
                run,
                plugin_digest: "d",
                decided_at: 5,
                decisions: &decisions,
                commands: &[],
                held: false,
                shown: &[],
            })
            .unwrap();
        store.finish_run(run, &end(6)).unwrap();
        let what_if = store.start_run(org, RunKind::WhatIf, Some("d"), 7).unwrap();
        store.finish_run(what_if, &end(8)).unwrap();

        let trend = store.verdict_trend(org, 10).unwrap();
        let seen: Vec<(i64, VerdictCounts)> = trend.iter().map(|p| (p.at, p.counts)).collect();
        assert_eq!(
            seen,
            [
                (3, VerdictCounts::default()),
                (
                    6,
                    VerdictCounts {
                        allow: 1,
                        block: 1,
                        undecided: 1,
                        ..VerdictCounts::default()
                    }
                ),
            ]
        );
        assert_eq!(store.verdict_trend(org, 1).unwrap()[0].at, 6, "the latest");
        assert!(store.verdict_trend(other, 10).unwrap().is_empty());
    }
}
