//! The audit of administrators' device actions (remote wipe, partnership removal): who asked,
//! when, for which device, why, and what came of it.
//!
//! The record doubles as the action's journal: it is written as `issuing` before the cmdlet
//! is sent and finished after Exchange answered. A record still `issuing` when a process
//! opens the store as its writer was cut short by a crash: whether Exchange got the wipe is
//! unknown, so it becomes `interrupted` and is reported, never sent again on its own (the
//! operator looks at the device and decides).

use rusqlite::OptionalExtension;
use serde::Serialize;

use super::{ActionNotice, OrgId, Store, StoreError};

/// What an administrator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceAction {
    /// `Clear-MobileDevice`: the whole device is reset at its next sync.
    Wipe,
    /// `Clear-MobileDevice -AccountOnly`: only the mail account's data is removed.
    AccountWipe,
    /// `Remove-MobileDevice`: the partnership is deleted; the device must sync afresh.
    Remove,
}

impl DeviceAction {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceAction::Wipe => "wipe",
            DeviceAction::AccountWipe => "account-wipe",
            DeviceAction::Remove => "remove",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Wipe, Self::AccountWipe, Self::Remove]
            .into_iter()
            .find(|a| a.as_str() == text)
    }
}

/// Where an action stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionResult {
    /// Journaled; the cmdlet is being sent.
    Issuing,
    /// Exchange accepted the cmdlet.
    Done,
    /// Exchange refused it or could not be reached; nothing was changed.
    Failed,
    /// The process stopped while the cmdlet was in flight: whether Exchange applied it is
    /// unknown. Never re-sent by the connector.
    Interrupted,
}

impl ActionResult {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionResult::Issuing => "issuing",
            ActionResult::Done => "done",
            ActionResult::Failed => "failed",
            ActionResult::Interrupted => "interrupted",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Issuing, Self::Done, Self::Failed, Self::Interrupted]
            .into_iter()
            .find(|r| r.as_str() == text)
    }
}

/// An action as it is about to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionIntent<'a> {
    pub org: OrgId,
    pub action: DeviceAction,
    /// Exchange's `Identity` of the partnership.
    pub identity: &'a str,
    pub device_id: &'a str,
    /// The device's user (mailbox) as Exchange names it.
    pub user: &'a str,
    /// Who asked: `api` (the admin API's bearer) or `cli:<OS user>`.
    pub actor: &'a str,
    pub reason: &'a str,
    pub at: i64,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionRecord {
    pub id: i64,
    pub organization: String,
    pub action: DeviceAction,
    pub identity: String,
    pub device_id: String,
    pub user: String,
    pub actor: String,
    pub reason: String,
    pub requested_at: i64,
    pub finished_at: Option<i64>,
    pub result: ActionResult,
    /// Exchange's refusal or the failure, when `result` is `failed`.
    pub error: Option<String>,
    /// How Exchange's answer was read when it was not the plain one, e.g. a removal whose
    /// retry found the partnership already gone (`done`).
    pub note: Option<String>,
}

/// What came of an action's cmdlet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionEnd<'a> {
    /// Exchange applied it; the note says how that was known when not from a plain success.
    Done { note: Option<&'a str> },
    /// Exchange refused it or could not be reached.
    Failed { error: &'a str },
}

const COLUMNS: &str = "a.id, o.name, a.action, a.identity, a.device_id, a.user, a.actor, \
     a.reason, a.requested_at, a.finished_at, a.result, a.error, a.note";

fn read_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<ActionRecord> {
    let bad = |i: usize, what: String| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("unknown {what}").into(),
        )
    };
    let action: String = row.get(2)?;
    let result: String = row.get(10)?;
    Ok(ActionRecord {
        id: row.get(0)?,
        organization: row.get(1)?,
        action: DeviceAction::parse(&action).ok_or_else(|| bad(2, format!("action {action}")))?,
        identity: row.get(3)?,
        device_id: row.get(4)?,
        user: row.get(5)?,
        actor: row.get(6)?,
        reason: row.get(7)?,
        requested_at: row.get(8)?,
        finished_at: row.get(9)?,
        result: ActionResult::parse(&result).ok_or_else(|| bad(10, format!("result {result}")))?,
        error: row.get(11)?,
        note: row.get(12)?,
    })
}

impl Store {
    /// Journals `intent` as `issuing`, before its cmdlet is sent. Returns the record's id.
    pub fn begin_device_action(&self, intent: &ActionIntent<'_>) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.prepare_cached(
            "INSERT INTO admin_actions
                 (org_id, action, identity, device_id, user, actor, reason, requested_at, result)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'issuing')",
        )
        .and_then(|mut stmt| {
            stmt.execute((
                intent.org.0,
                intent.action.as_str(),
                intent.identity,
                intent.device_id,
                intent.user,
                intent.actor,
                intent.reason,
                intent.at,
            ))
        })
        .map_err(self.sql("journaling a device action"))?;
        Ok(conn.last_insert_rowid())
    }

    /// Records what Exchange answered to action `id` and, when it was done and `notice` is
    /// given, queues the user's notice in the same transaction: an applied action whose result
    /// is recorded has its notice in the outbox. Only an `issuing` record is finished (once),
    /// and an action has one notice at most. Returns whether the notice was queued now.
    pub fn finish_device_action(
        &self,
        id: i64,
        end: ActionEnd<'_>,
        notice: Option<&ActionNotice<'_>>,
        at: i64,
    ) -> Result<bool, StoreError> {
        let doing = "recording a device action's result";
        let (result, error, note) = match end {
            ActionEnd::Done { note } => (ActionResult::Done, None, note),
            ActionEnd::Failed { error } => (ActionResult::Failed, Some(error), None),
        };
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(self.sql(doing))?;
        let org: Option<i64> = tx
            .prepare_cached(
                "UPDATE admin_actions SET result = ?2, error = ?3, note = ?4, finished_at = ?5
                 WHERE id = ?1 AND result = 'issuing' RETURNING org_id",
            )
            .and_then(|mut stmt| {
                stmt.query_row((id, result.as_str(), error, note, at), |row| row.get(0))
                    .optional()
            })
            .map_err(self.sql(doing))?;
        let queued = match (org, notice, result) {
            (Some(org), Some(notice), ActionResult::Done) => {
                super::outbox::enqueue_action_notice(&tx, self, OrgId(org), id, notice, at)?
            }
            _ => false,
        };
        tx.commit().map_err(self.sql(doing))?;
        Ok(queued)
    }

    /// Marks every action still `issuing` as `interrupted` and returns them: call it only as
    /// the store's one writer, when no action of this process is in flight (at start).
    pub fn interrupt_device_actions(&self, at: i64) -> Result<Vec<ActionRecord>, StoreError> {
        let doing = "reporting interrupted device actions";
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(self.sql(doing))?;
        let ids: Vec<i64> = tx
            .prepare("SELECT id FROM admin_actions WHERE result = 'issuing' ORDER BY id")
            .and_then(|mut stmt| {
                stmt.query_map([], |row| row.get(0))?
                    .collect::<rusqlite::Result<_>>()
            })
            .map_err(self.sql(doing))?;
        tx.execute(
            "UPDATE admin_actions SET result = 'interrupted', finished_at = ?1,
                 error = 'the connector stopped while the cmdlet was in flight: whether Exchange applied it is unknown; it was not sent again'
             WHERE result = 'issuing'",
            [at],
        )
        .map_err(self.sql(doing))?;
        tx.commit().map_err(self.sql(doing))?;
        drop(conn);
        ids.into_iter()
            .filter_map(|id| self.device_action(id).transpose())
            .collect()
    }

    /// One audit record.
    pub fn device_action(&self, id: i64) -> Result<Option<ActionRecord>, StoreError> {
        self.conn()
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM admin_actions a JOIN organizations o ON o.id = a.org_id
                 WHERE a.id = ?1"
            ))
            .and_then(|mut stmt| stmt.query_row([id], read_record).optional())
            .map_err(self.sql("reading a device action"))
    }

    /// The last `limit` audit records, newest first, of one organization or of all.
    pub fn device_actions(
        &self,
        org: Option<OrgId>,
        limit: usize,
    ) -> Result<Vec<ActionRecord>, StoreError> {
        let doing = "reading the device actions";
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM admin_actions a JOIN organizations o ON o.id = a.org_id
                 WHERE ?1 IS NULL OR a.org_id = ?1 ORDER BY a.id DESC LIMIT ?2"
            ))
            .map_err(self.sql(doing))?;
        stmt.query_map((org.map(|o| o.0), limit as i64), read_record)
            .map_err(self.sql(doing))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.sql(doing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(org: OrgId, action: DeviceAction, at: i64) -> ActionIntent<'static> {
        ActionIntent {
            org,
            action,
            identity: "alice\\ExchangeActiveSyncDevices\\iPhone§D1",
            device_id: "D1",
            user: "alice",
            actor: "cli:root",
            reason: "lost on the train",
            at,
        }
    }

    #[test]
    fn an_action_is_journaled_before_and_finished_after_its_cmdlet() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let org = store.organization("Contoso", 1).unwrap();
        let other = store.organization("Fabrikam", 1).unwrap();
        let wipe = store
            .begin_device_action(&intent(org, DeviceAction::Wipe, 10))
            .unwrap();
        let record = store.device_action(wipe).unwrap().unwrap();
        assert_eq!(record.result, ActionResult::Issuing);
        assert_eq!(record.finished_at, None);
        store
            .finish_device_action(wipe, ActionEnd::Done { note: None }, None, 11)
            .unwrap();
        let removal = store
            .begin_device_action(&intent(other, DeviceAction::Remove, 12))
            .unwrap();
        store
            .finish_device_action(removal, ActionEnd::Failed { error: "not found" }, None, 13)
            .unwrap();

        let all = store.device_actions(None, 10).unwrap();
        assert_eq!(
            all.iter()
                .map(|r| (r.id, r.organization.as_str(), r.result))
                .collect::<Vec<_>>(),
            [
                (removal, "Fabrikam", ActionResult::Failed),
                (wipe, "Contoso", ActionResult::Done)
            ]
        );
        assert_eq!(all[0].error.as_deref(), Some("not found"));
        assert_eq!(all[1].reason, "lost on the train");
        assert_eq!(all[1].actor, "cli:root");
        assert_eq!(all[1].finished_at, Some(11));
        assert_eq!(store.device_actions(Some(org), 10).unwrap().len(), 1);
        // A finished record stays as it was.
        store
            .finish_device_action(wipe, ActionEnd::Failed { error: "late" }, None, 14)
            .unwrap();
        assert_eq!(
            store.device_action(wipe).unwrap().unwrap().result,
            ActionResult::Done
        );
    }

    /// Regression for the crash case: a wipe journaled but never finished is reported as
    /// interrupted by the next writer, once, and nothing re-sends it.
    #[test]
    fn an_action_cut_short_by_a_crash_is_reported_as_interrupted_once() {
        let dir = tempfile::tempdir().unwrap();
        let (wipe, done) = {
            let store = Store::open(dir.path()).unwrap();
            let org = store.organization("Contoso", 1).unwrap();
            let done = store
                .begin_device_action(&intent(org, DeviceAction::AccountWipe, 5))
                .unwrap();
            store
                .finish_device_action(done, ActionEnd::Done { note: None }, None, 6)
                .unwrap();
            let wipe = store
                .begin_device_action(&intent(org, DeviceAction::Wipe, 7))
                .unwrap();
            (wipe, done)
        };
        let store = Store::open(dir.path()).unwrap();
        let interrupted = store.interrupt_device_actions(20).unwrap();
        assert_eq!(interrupted.len(), 1);
        assert_eq!(interrupted[0].id, wipe);
        assert_eq!(interrupted[0].result, ActionResult::Interrupted);
        assert!(interrupted[0].error.as_deref().unwrap().contains("unknown"));
        assert!(store.interrupt_device_actions(21).unwrap().is_empty());
        assert_eq!(
            store.device_action(done).unwrap().unwrap().result,
            ActionResult::Done
        );
    }

    /// The notice of an action is queued with its result, in the outbox where the notify stage
    /// retries it, and once: recording the end again (a retried request, a restart) queues
    /// no second one, and a failed action queues none.
    #[test]
    fn a_done_action_queues_its_notice_once_and_a_failed_one_none() {
        use crate::model::ExchangeDevice;
        use crate::store::NoticeStatus;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let org = store.organization("Contoso", 1).unwrap();
        let device = ExchangeDevice {
            device_id: "D1".into(),
            identity: "alice\\ExchangeActiveSyncDevices\\iPhone\u{a7}D1".into(),
            mailbox: Some("alice".into()),
            ..ExchangeDevice::default()
        };
        let notice = ActionNotice {
            reason: "admin-remove",
            recipient: "alice@contoso.com",
            exchange: &device,
            locale: "de-DE",
            due_at: 600,
        };
        let removal = store
            .begin_device_action(&intent(org, DeviceAction::Remove, 10))
            .unwrap();
        let gone = "Exchange answered the retry: not found";
        assert!(
            store
                .finish_device_action(
                    removal,
                    ActionEnd::Done { note: Some(gone) },
                    Some(&notice),
                    11
                )
                .unwrap()
        );
        assert!(
            !store
                .finish_device_action(removal, ActionEnd::Done { note: None }, Some(&notice), 12)
                .unwrap(),
            "the end is recorded once"
        );
        let record = store.device_action(removal).unwrap().unwrap();
        assert_eq!(
            (record.result, record.note.as_deref()),
            (ActionResult::Done, Some(gone))
        );
        let queued = store.notices(org, 10).unwrap();
        assert_eq!(queued.len(), 1);
        let n = &queued[0];
        assert_eq!(n.id, ActionNotice::id(removal));
        assert_eq!(
            (n.status, n.run, n.next_attempt_at),
            (NoticeStatus::Pending, None, 600)
        );
        assert_eq!(
            (n.reason.as_str(), n.locale.as_str()),
            ("admin-remove", "de-DE")
        );
        assert_eq!(n.exchange, device);
        assert!(
            store.due_notices(org, 599, 10).unwrap().is_empty(),
            "held by its sender"
        );
        assert_eq!(store.due_notices(org, 600, 10).unwrap().len(), 1);

        let wipe = store
            .begin_device_action(&intent(org, DeviceAction::Wipe, 20))
            .unwrap();
        assert!(
            !store
                .finish_device_action(
                    wipe,
                    ActionEnd::Failed { error: "refused" },
                    Some(&notice),
                    21
                )
                .unwrap()
        );
        assert_eq!(store.notices(org, 10).unwrap().len(), 1);
    }
}
