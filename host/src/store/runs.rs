//! Sync runs: one row per quick, full or what-if sync, from start to outcome.

use rusqlite::{OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use super::{OrgId, RunId, Store, StoreError};
use crate::model::Verdict;

use crate::model::RunKind;

/// Reads a stored run kind.
fn parse_kind(text: &str) -> Result<RunKind, StoreError> {
    RunKind::parse(text).ok_or_else(|| StoreError::Decode {
        what: "run kind",
        detail: text.to_owned(),
    })
}

/// How a run ended (or that it has not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunOutcome {
    /// Still going (or an approved plan being applied).
    Running,
    /// Everything decided and applied.
    Succeeded,
    /// Some plugin batches or commands failed; the rest was applied.
    Partial,
    /// The plan tripped the blast-radius guard and waits for an operator.
    Held,
    /// An operator rejected the held plan.
    Rejected,
    /// Nothing was applied (e.g. discovery failed).
    Failed,
    /// The connector stopped during the run; found by [`Store::recover`].
    Interrupted,
}

impl RunOutcome {
    const ALL: [RunOutcome; 7] = [
        RunOutcome::Running,
        RunOutcome::Succeeded,
        RunOutcome::Partial,
        RunOutcome::Held,
        RunOutcome::Rejected,
        RunOutcome::Failed,
        RunOutcome::Interrupted,
    ];

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Running => "running",
            RunOutcome::Succeeded => "succeeded",
            RunOutcome::Partial => "partial",
            RunOutcome::Held => "held",
            RunOutcome::Rejected => "rejected",
            RunOutcome::Failed => "failed",
            RunOutcome::Interrupted => "interrupted",
        }
    }

    pub(super) fn parse(text: &str) -> Result<Self, StoreError> {
        Self::ALL
            .into_iter()
            .find(|o| o.as_str() == text)
            .ok_or_else(|| StoreError::Decode {
                what: "run outcome",
                detail: text.to_owned(),
            })
    }
}

/// Devices per verdict in one run; `undecided` are those whose plugin batch failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictCounts {
    /// Devices the policy allowed.
    pub allow: u64,
    /// Devices the policy blocked.
    pub block: u64,
    /// Devices the policy quarantined.
    pub quarantine: u64,
    /// Devices the policy left alone.
    pub exempt: u64,
    /// Devices of failed plugin batches: they keep their state.
    pub undecided: u64,
}

impl VerdictCounts {
    /// Counts one device with `verdict`, or an undecided one for `None`.
    pub fn add(&mut self, verdict: Option<Verdict>) {
        let slot = match verdict {
            Some(Verdict::Allow) => &mut self.allow,
            Some(Verdict::Block) => &mut self.block,
            Some(Verdict::Quarantine) => &mut self.quarantine,
            Some(Verdict::Exempt) => &mut self.exempt,
            None => &mut self.undecided,
        };
        *slot += 1;
    }
}

/// What [`Store::finish_run`] records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEnd {
    /// When the run ended.
    pub ended_at: i64,
    /// How it ended; `Running` is not an end and is refused.
    pub outcome: RunOutcome,
    /// Devices per verdict.
    pub counts: VerdictCounts,
    /// Devices whose state the run changed (or would, for a what-if or held plan).
    pub devices_changed: u64,
    /// Exchange commands sent.
    pub commands_issued: u64,
    /// What went wrong, for partial and failed runs.
    pub error: Option<String>,
}

/// A stored run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    /// The run.
    pub id: RunId,
    /// Its organization.
    pub org: OrgId,
    /// Quick, full or what-if.
    pub kind: RunKind,
    /// When it started.
    pub started_at: i64,
    /// When it ended; `None` while running.
    pub ended_at: Option<i64>,
    /// How it ended.
    pub outcome: RunOutcome,
    /// The access-policy version the run was pinned to.
    pub plugin_digest: Option<String>,
    /// Devices per verdict.
    pub counts: VerdictCounts,
    /// Devices whose state the run changed (or would have).
    pub devices_changed: u64,
    /// Exchange commands sent.
    pub commands_issued: u64,
    /// `approved` or `rejected`, when an operator acted on a held plan.
    pub approval: Option<String>,
    /// The newer run whose plan made this held plan expire (its outcome is then `rejected`).
    pub superseded_by: Option<RunId>,
    /// What went wrong.
    pub error: Option<String>,
}

const RUN_COLUMNS: &str = "id, org_id, kind, started_at, ended_at, outcome, plugin_digest,
    allowed, blocked, quarantined, exempt, undecided, devices_changed, commands_issued,
    approval, error, superseded_by";

type RunRow = (
    i64,
    i64,
    String,
    i64,
    Option<i64>,
    String,
    Option<String>,
    [u64; 7],
    Option<String>,
    Option<String>,
    Option<i64>,
);

fn run_row(row: &Row<'_>) -> rusqlite::Result<RunRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        [
            row.get(7)?,
            row.get(8)?,
            row.get(9)?,
            row.get(10)?,
            row.get(11)?,
            row.get(12)?,
            row.get(13)?,
        ],
        row.get(14)?,
        row.get(15)?,
        row.get(16)?,
    ))
}

fn run_record(row: RunRow) -> Result<RunRecord, StoreError> {
    let (id, org, kind, started_at, ended_at, outcome, plugin_digest, n, approval, error, by) = row;
    Ok(RunRecord {
        id: RunId(id),
        org: OrgId(org),
        kind: parse_kind(&kind)?,
        started_at,
        ended_at,
        outcome: RunOutcome::parse(&outcome)?,
        plugin_digest,
        counts: VerdictCounts {
            allow: n[0],
            block: n[1],
            quarantine: n[2],
            exempt: n[3],
            undecided: n[4],
        },
        devices_changed: n[5],
        commands_issued: n[6],
        approval,
        superseded_by: by.map(RunId),
        error,
    })
}

impl Store {
    /// Records the start of a run pinned to the policy version `plugin_digest`.
    pub fn start_run(
        &self,
        org: OrgId,
        kind: RunKind,
        plugin_digest: Option<&str>,
        now: i64,
    ) -> Result<RunId, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO sync_runs (org_id, kind, started_at, outcome, plugin_digest)
             VALUES (?1, ?2, ?3, 'running', ?4)",
            (org.0, kind.as_str(), now, plugin_digest),
        )
        .map_err(self.sql("starting a run"))?;
        Ok(RunId(conn.last_insert_rowid()))
    }

    /// Records how a run ended. A succeeded quick or full run also moves the organization's
    /// last successful sync and its quick-sync cursor, in the same transaction; a partial run
    /// does not (its undecided devices must be picked up again), nor does a what-if.
    pub fn finish_run(&self, run: RunId, end: &RunEnd) -> Result<(), StoreError> {
        if end.outcome == RunOutcome::Running {
            return Err(StoreError::RunState {
                run,
                outcome: "running".into(),
                doing: "finishing it as running",
                needed: "finished",
            });
        }
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(self.sql("finishing a run"))?;
        let c = &end.counts;
        let changed = tx
            .execute(
                "UPDATE sync_runs SET ended_at = ?2, outcome = ?3, allowed = ?4, blocked = ?5,
                     quarantined = ?6, exempt = ?7, undecided = ?8, devices_changed = ?9,
                     commands_issued = ?10, error = ?11
                 WHERE id = ?1",
                rusqlite::params![
                    run.0,
                    end.ended_at,
                    end.outcome.as_str(),
                    c.allow,
                    c.block,
                    c.quarantine,
                    c.exempt,
                    c.undecided,
                    end.devices_changed,
                    end.commands_issued,
                    end.error,
                ],
            )
            .map_err(self.sql("finishing a run"))?;
        if changed == 0 {
            return Err(StoreError::UnknownRun(run));
        }
        super::trend::record(&tx, self, run, end.ended_at)?;
        if end.outcome == RunOutcome::Succeeded {
            tx.execute(
                "UPDATE organizations SET last_success_sync_at = ?2, sync_cursor = r.started_at
                 FROM (SELECT org_id, started_at FROM sync_runs
                       WHERE id = ?1 AND kind IN ('quick', 'full')) AS r
                 WHERE organizations.id = r.org_id",
                (run.0, end.ended_at),
            )
            .map_err(self.sql("recording the last successful sync"))?;
        }
        tx.commit().map_err(self.sql("finishing a run"))
    }

    /// One run.
    pub fn run(&self, run: RunId) -> Result<Option<RunRecord>, StoreError> {
        let row = self
            .conn()
            .query_row(
                &format!("SELECT {RUN_COLUMNS} FROM sync_runs WHERE id = ?1"),
                [run.0],
                run_row,
            )
            .optional()
            .map_err(self.sql("reading a run"))?;
        row.map(run_record).transpose()
    }

    /// The organization's plans waiting for an operator, oldest first.
    pub fn held_runs(&self, org: OrgId) -> Result<Vec<RunRecord>, StoreError> {
        self.runs_where("org_id = ?1 AND outcome = 'held' ORDER BY id", &[org.0])
    }

    fn runs_where(&self, filter: &str, params: &[i64]) -> Result<Vec<RunRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM sync_runs WHERE {filter}"
            ))
            .map_err(self.sql("listing runs"))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(params), run_row)
            .map_err(self.sql("listing runs"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.sql("listing runs"))?;
        rows.into_iter().map(run_record).collect()
    }

    /// The organization's most recent runs, newest first.
    pub fn recent_runs(&self, org: OrgId, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        self.runs_where(
            "org_id = ?1 ORDER BY id DESC LIMIT ?2",
            &[org.0, limit as i64],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_per_verdict() {
        let mut counts = VerdictCounts::default();
        for v in [
            Some(Verdict::Allow),
            Some(Verdict::Allow),
            Some(Verdict::Exempt),
            None,
        ] {
            counts.add(v);
        }
        assert_eq!(
            counts,
            VerdictCounts {
                allow: 2,
                exempt: 1,
                undecided: 1,
                ..VerdictCounts::default()
            }
        );
    }

    #[test]
    fn a_run_records_its_counts_and_a_success_moves_the_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let org = store.organization("Contoso", 1).unwrap();
        assert_eq!(store.last_successful_sync(org).unwrap(), None);

        let run = store
            .start_run(org, RunKind::Full, Some("abc123"), 100)
            .unwrap();
        let record = store.run(run).unwrap().unwrap();
        assert_eq!(record.outcome, RunOutcome::Running);
        assert_eq!(record.plugin_digest.as_deref(), Some("abc123"));

        let end = RunEnd {
            ended_at: 160,
            outcome: RunOutcome::Succeeded,
            counts: VerdictCounts {
                allow: 5,
                block: 2,
                quarantine: 1,
                exempt: 1,
                undecided: 0,
            },
            devices_changed: 3,
            commands_issued: 2,
            error: None,
        };
        store.finish_run(run, &end).unwrap();
        let record = store.run(run).unwrap().unwrap();
        assert_eq!(record.counts, end.counts);
        assert_eq!((record.devices_changed, record.commands_issued), (3, 2));
        assert_eq!(record.ended_at, Some(160));
        assert_eq!(store.last_successful_sync(org).unwrap(), Some(160));

        let failed = store.start_run(org, RunKind::Quick, None, 200).unwrap();
        store
            .finish_run(
                failed,
                &RunEnd {
                    ended_at: 210,
                    outcome: RunOutcome::Failed,
                    error: Some("Exchange unreachable".into()),
                    ..end.clone()
                },
            )
            .unwrap();
        assert_eq!(store.last_successful_sync(org).unwrap(), Some(160));
        assert_eq!(store.sync_cursor(org).unwrap(), Some(100));

        // A rehearsal proves nothing about Exchange's state: the cursor stays.
        let rehearsal = store
            .start_run(org, RunKind::WhatIf, Some("x"), 300)
            .unwrap();
        store
            .finish_run(
                rehearsal,
                &RunEnd {
                    ended_at: 310,
                    ..end.clone()
                },
            )
            .unwrap();
        assert_eq!(store.sync_cursor(org).unwrap(), Some(100));
        assert_eq!(store.last_successful_sync(org).unwrap(), Some(160));
        let recent = store.recent_runs(org, 10).unwrap();
        assert_eq!(
            recent.iter().map(|r| r.id).collect::<Vec<_>>(),
            [rehearsal, failed, run]
        );
        assert_eq!(recent[1].error.as_deref(), Some("Exchange unreachable"));

        assert!(matches!(
            store.finish_run(RunId(999), &end),
            Err(StoreError::UnknownRun(RunId(999)))
        ));
    }
}
