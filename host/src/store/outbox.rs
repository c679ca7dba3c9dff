//! The notice outbox: notices recorded in the transaction that records their verdicts
//! ([`Store::record_decisions_and_notices`]), then taken by a notify stage
//! ([`Store::due_notices`]) and marked with the outcome of each attempt
//! ([`Store::notice_attempted`]).
//!
//! A notice is enqueued only for a device whose verdict changed in this very transaction (the
//! old verdict is read inside it), and only when no notice about the same device and the same
//! state was recorded within the resend interval: both facts are read under the write lock, so
//! two runs cannot both enqueue one. Its id is the [`NoticeId`], the primary key: recording
//! the same notice twice is a no-op.

use rusqlite::{OptionalExtension, Transaction};

use super::{OrgId, RunId, Store, StoreError, decode};
use crate::model::{DeviceKey, ExchangeDevice, ManagedDevice, Verdict};
use crate::notify::NoticeId;

/// A notice the sync wants for a device whose verdict it is recording; enqueued only if the
/// verdict changes and no like notice is recent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeRequest {
    pub id: NoticeId,
    /// The partnership; its decision must be in the same batch.
    pub key: DeviceKey,
    /// The verdict announced.
    pub state: Verdict,
    /// The policy's reason code.
    pub reason: String,
    /// The user's address (`To`).
    pub recipient: String,
    pub user_principal_name: Option<String>,
    /// The user's language, a BCP 47 tag; empty when unknown.
    pub locale: String,
}

/// The notices to enqueue with a batch of decisions.
#[derive(Debug, Clone, Copy)]
pub struct NoticeBatch<'a> {
    pub requests: &'a [NoticeRequest],
    /// No second notice about the same device and state within this many seconds.
    pub resend_interval_secs: i64,
}

/// The user's notice of an administrator's device action, queued with the action's result
/// (see [`Store::finish_device_action`]). Its id is [`ActionNotice::id`] of the audit row, and
/// the row can have one notice only: however often the action's end is recorded (a retried
/// request, a restart), the user gets one mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionNotice<'a> {
    /// The reason code the template gets (`admin-wipe`, …), with the verdict `block`.
    pub reason: &'a str,
    /// The user's address (`To`).
    pub recipient: &'a str,
    /// The device as Exchange showed it to the administrator.
    pub exchange: &'a ExchangeDevice,
    /// The user's language, a BCP 47 tag; empty when unknown.
    pub locale: &'a str,
    /// When a notify stage may take it up: the process that queues it tries at once and
    /// holds it until then, so that a sync running beside it does not send it too; should
    /// that process die first, the next sync after this time sends it.
    pub due_at: i64,
}

impl ActionNotice<'_> {
    /// The notice id of audit row `action`.
    pub fn id(action: i64) -> NoticeId {
        NoticeId::new(format!("admin-action-{action}")).expect("a valid notice id")
    }
}

/// Inside the transaction that records action `action`'s result: queues its notice (once).
/// Returns whether it was queued now.
pub(super) fn enqueue_action_notice(
    tx: &Transaction<'_>,
    store: &Store,
    org: OrgId,
    action: i64,
    notice: &ActionNotice<'_>,
    now: i64,
) -> Result<bool, StoreError> {
    let exchange = super::encode("Exchange view of a noticed device", notice.exchange)?;
    let queued = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO notices (id, org_id, sync_id, admin_action_id, device_key,
                 device_id, state, reason, recipient, exchange, status, next_attempt_at,
                 created_at, updated_at, locale)
             VALUES (?1, ?2, NULL, ?3, ?4, ?5, 'block', ?6, ?7, ?8, 'pending', ?9, ?10, ?10, ?11)",
        )
        .and_then(|mut stmt| {
            stmt.execute(rusqlite::params![
                ActionNotice::id(action).as_str(),
                org.0,
                action,
                notice.exchange.key().as_str(),
                notice.exchange.device_id,
                notice.reason,
                notice.recipient,
                exchange,
                notice.due_at,
                now,
                notice.locale,
            ])
        })
        .map_err(store.sql("queueing a device action's notice"))?;
    Ok(queued == 1)
}

/// What [`Store::record_decisions_and_notices`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The run's organization (what the commands' [`super::Enforces`] name).
    pub org: OrgId,
    /// The journal ids, in the order of the batch's commands.
    pub commands: Vec<crate::store::CommandId>,
    /// Notices enqueued.
    pub notices_queued: u64,
    /// Requests skipped: a notice about the same device and state is recent.
    pub notices_deduplicated: u64,
}

/// Where a notice stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoticeStatus {
    /// Waiting for its (next) attempt.
    Pending,
    /// Accepted by the mail server.
    Sent,
    /// Could not be rendered or addressed (template error, bad address): never sent.
    Failed,
    /// Refused for good by the server, or out of attempts.
    GivenUp,
}

impl NoticeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeStatus::Pending => "pending",
            NoticeStatus::Sent => "sent",
            NoticeStatus::Failed => "failed",
            NoticeStatus::GivenUp => "given-up",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        Ok(match text {
            "pending" => NoticeStatus::Pending,
            "sent" => NoticeStatus::Sent,
            "failed" => NoticeStatus::Failed,
            "given-up" => NoticeStatus::GivenUp,
            _ => {
                return Err(StoreError::Decode {
                    what: "notice status",
                    detail: text.to_owned(),
                });
            }
        })
    }
}

/// A notice in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxNotice {
    pub id: NoticeId,
    pub org: OrgId,
    /// The run that recorded it; `None` for an administrator's device action's notice (see
    /// [`ActionNotice`]).
    pub run: Option<RunId>,
    pub key: DeviceKey,
    pub device_id: String,
    pub state: Verdict,
    pub reason: String,
    pub recipient: String,
    pub user_principal_name: Option<String>,
    /// The user's language when decided, a BCP 47 tag; empty when unknown.
    pub locale: String,
    /// The device's views when its verdict changed.
    pub exchange: ExchangeDevice,
    pub managed: Option<ManagedDevice>,
    pub status: NoticeStatus,
    pub attempts: u32,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub template_digest: Option<String>,
    pub response: Option<String>,
    pub created_at: i64,
    pub sent_at: Option<i64>,
}

/// The outcome of one attempt at a notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoticeAttempt {
    /// The server accepted it, answering this.
    Sent { response: String },
    /// It failed for now; try again at this time.
    Retry { error: String, at: i64 },
    /// The server refused it for good, or the attempts are used up.
    GiveUp { error: String },
    /// It could not be rendered or addressed; no attempt at sending was made.
    Failed { error: String },
}

/// Notices of an organization per status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct NoticeCounts {
    pub pending: u64,
    pub sent: u64,
    pub failed: u64,
    pub given_up: u64,
}

pub(super) const NOTICE_COLUMNS: &str =
    "id, org_id, sync_id, device_key, device_id, state, reason, recipient,
    user_principal_name, exchange, intune, status, attempts, next_attempt_at, last_error,
    template_digest, response, created_at, sent_at, locale";

fn notice_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<OutboxNotice, StoreError>> {
    let id: String = row.get(0)?;
    let state: String = row.get(5)?;
    let exchange: String = row.get(9)?;
    let intune: Option<String> = row.get(10)?;
    let status: String = row.get(11)?;
    let locale: String = row.get(19)?;
    let base = (
        OrgId(row.get(1)?),
        row.get::<_, Option<i64>>(2)?.map(RunId),
        DeviceKey::new(&row.get::<_, String>(3)?),
        row.get::<_, String>(4)?,
        row.get::<_, String>(6)?,
        row.get::<_, String>(7)?,
        row.get::<_, Option<String>>(8)?,
        row.get::<_, i64>(12)?,
        row.get::<_, i64>(13)?,
        row.get::<_, Option<String>>(14)?,
        row.get::<_, Option<String>>(15)?,
        row.get::<_, Option<String>>(16)?,
        row.get::<_, i64>(17)?,
        row.get::<_, Option<i64>>(18)?,
    );
    Ok((|| {
        let (
            org,
            run,
            key,
            device_id,
            reason,
            recipient,
            upn,
            attempts,
            next,
            last_error,
            digest,
            response,
            created,
            sent,
        ) = base;
        Ok(OutboxNotice {
            id: NoticeId::new(id).map_err(|e| StoreError::Decode {
                what: "notice id",
                detail: e.to_string(),
            })?,
            org,
            run,
            key,
            device_id,
            state: Verdict::parse(&state).ok_or_else(|| StoreError::Decode {
                what: "notice state",
                detail: state.clone(),
            })?,
            reason,
            recipient,
            user_principal_name: upn,
            locale,
            exchange: decode("Exchange view of a noticed device", &exchange)?,
            managed: intune
                .map(|t| decode("Intune view of a noticed device", &t))
                .transpose()?,
            status: NoticeStatus::parse(&status)?,
            attempts: attempts.max(0) as u32,
            next_attempt_at: next,
            last_error,
            template_digest: digest,
            response,
            created_at: created,
            sent_at: sent,
        })
    })())
}

/// Inside the decisions' transaction, before the verdicts are updated: enqueues the requests
/// whose device's verdict is about to change, unless a like notice is recent.
pub(super) fn enqueue(
    tx: &Transaction<'_>,
    store: &Store,
    org: OrgId,
    run: RunId,
    now: i64,
    notices: &NoticeBatch<'_>,
) -> Result<(u64, u64), StoreError> {
    let (mut queued, mut deduplicated) = (0, 0);
    let mut old = tx
        .prepare_cached("SELECT verdict FROM devices WHERE org_id = ?1 AND device_key = ?2")
        .map_err(store.sql("enqueueing notices"))?;
    let mut recent = tx
        .prepare_cached(
            // An administrator's action's notice says something else than a verdict's: it
            // does not stand in for one.
            "SELECT 1 FROM notices
             WHERE org_id = ?1 AND device_key = ?2 AND state = ?3 AND created_at > ?4
                 AND admin_action_id IS NULL
             LIMIT 1",
        )
        .map_err(store.sql("enqueueing notices"))?;
    let mut insert = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO notices (id, org_id, sync_id, device_key, device_id, state,
                 reason, recipient, user_principal_name, exchange, intune, status,
                 next_attempt_at, created_at, updated_at, locale)
             SELECT ?1, org_id, ?3, device_key, device_id, ?4, ?5, ?6, ?7, exchange, intune,
                 'pending', ?8, ?8, ?8, ?10
             FROM devices WHERE org_id = ?2 AND device_key = ?9",
        )
        .map_err(store.sql("enqueueing notices"))?;
    for r in notices.requests {
        let previous: Option<Option<String>> = old
            .query_row(rusqlite::params![org.0, r.key.as_str()], |row| row.get(0))
            .optional()
            .map_err(store.sql("enqueueing notices"))?;
        let Some(previous) = previous else {
            return Err(StoreError::UnknownDevice {
                org,
                key: r.key.clone(),
            });
        };
        if previous.as_deref() == Some(r.state.as_str()) {
            continue;
        }
        let since = now.saturating_sub(notices.resend_interval_secs);
        let is_recent = recent
            .exists(rusqlite::params![
                org.0,
                r.key.as_str(),
                r.state.as_str(),
                since
            ])
            .map_err(store.sql("enqueueing notices"))?;
        if is_recent {
            deduplicated += 1;
            continue;
        }
        queued += insert
            .execute(rusqlite::params![
                r.id.as_str(),
                org.0,
                run.0,
                r.state.as_str(),
                r.reason,
                r.recipient,
                r.user_principal_name,
                now,
                r.key.as_str(),
                r.locale,
            ])
            .map_err(store.sql("enqueueing notices"))? as u64;
    }
    Ok((queued, deduplicated))
}

impl Store {
    /// The pending notices of `org` whose next attempt is due at `now`, oldest first, at most
    /// `limit`.
    pub fn due_notices(
        &self,
        org: OrgId,
        now: i64,
        limit: usize,
    ) -> Result<Vec<OutboxNotice>, StoreError> {
        self.query_notices(
            &format!(
                "SELECT {NOTICE_COLUMNS} FROM notices
                 WHERE org_id = ?1 AND status = 'pending' AND next_attempt_at <= ?2
                 ORDER BY created_at, id LIMIT ?3"
            ),
            rusqlite::params![org.0, now, limit.min(i64::MAX as usize) as i64],
        )
    }

    /// The notices of `org`, newest first, at most `limit`.
    pub fn notices(&self, org: OrgId, limit: usize) -> Result<Vec<OutboxNotice>, StoreError> {
        self.query_notices(
            &format!(
                "SELECT {NOTICE_COLUMNS} FROM notices WHERE org_id = ?1
                 ORDER BY created_at DESC, id DESC LIMIT ?2"
            ),
            rusqlite::params![org.0, limit.min(i64::MAX as usize) as i64],
        )
    }

    /// One notice.
    pub fn notice(&self, id: &NoticeId) -> Result<Option<OutboxNotice>, StoreError> {
        Ok(self
            .query_notices(
                &format!("SELECT {NOTICE_COLUMNS} FROM notices WHERE id = ?1"),
                rusqlite::params![id.as_str()],
            )?
            .into_iter()
            .next())
    }

    pub(super) fn query_notices(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<OutboxNotice>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(sql).map_err(self.sql("listing notices"))?;
        let rows = stmt
            .query_map(params, notice_row)
            .map_err(self.sql("listing notices"))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.map_err(self.sql("listing notices"))??);
        }
        Ok(out)
    }

    /// Records the outcome of an attempt at the pending notice `id`, rendered by the template
    /// `template_digest`. A notice that is no longer pending is left alone (returns `false`):
    /// an outcome is recorded once.
    pub fn notice_attempted(
        &self,
        id: &NoticeId,
        template_digest: Option<&str>,
        attempt: &NoticeAttempt,
        now: i64,
    ) -> Result<bool, StoreError> {
        let (status, tried, error, next, response, sent_at) = match attempt {
            NoticeAttempt::Sent { response } => ("sent", 1, None, None, Some(response), Some(now)),
            NoticeAttempt::Retry { error, at } => {
                ("pending", 1, Some(error), Some(*at), None, None)
            }
            NoticeAttempt::GiveUp { error } => ("given-up", 1, Some(error), None, None, None),
            NoticeAttempt::Failed { error } => ("failed", 0, Some(error), None, None, None),
        };
        let changed = self
            .conn()
            .execute(
                "UPDATE notices SET status = ?2, attempts = attempts + ?3,
                     last_error = coalesce(?4, last_error),
                     next_attempt_at = coalesce(?5, next_attempt_at),
                     response = coalesce(?6, response), sent_at = coalesce(?7, sent_at),
                     template_digest = coalesce(?8, template_digest), updated_at = ?9
                 WHERE id = ?1 AND status = 'pending'",
                rusqlite::params![
                    id.as_str(),
                    status,
                    tried,
                    error,
                    next,
                    response,
                    sent_at,
                    template_digest,
                    now
                ],
            )
            .map_err(self.sql("recording a notice attempt"))?;
        Ok(changed == 1)
    }

    /// How many notices of `org` are in each status.
    pub fn notice_counts(&self, org: OrgId) -> Result<NoticeCounts, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT status, count(*) FROM notices WHERE org_id = ?1 GROUP BY status")
            .map_err(self.sql("counting notices"))?;
        let rows = stmt
            .query_map([org.0], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })
            .map_err(self.sql("counting notices"))?;
        let mut counts = NoticeCounts::default();
        for row in rows {
            let (status, n) = row.map_err(self.sql("counting notices"))?;
            let n = n as u64;
            match NoticeStatus::parse(&status)? {
                NoticeStatus::Pending => counts.pending = n,
                NoticeStatus::Sent => counts.sent = n,
                NoticeStatus::Failed => counts.failed = n,
                NoticeStatus::GivenUp => counts.given_up = n,
            }
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AccessState;
    use crate::model::RunKind;
    use crate::store::{DecisionBatch, DecisionRecord, DeviceView};

    fn device(id: &str) -> ExchangeDevice {
        ExchangeDevice {
            device_id: id.into(),
            identity: format!("alice\\ExchangeActiveSyncDevices\\iPhone\u{a7}{id}"),
            mailbox: Some("alice".into()),
            device_model: "iPhone15,2".into(),
            access_state: AccessState::Quarantined,
            ..ExchangeDevice::default()
        }
    }

    /// Runs one quick sync deciding `verdict` for `dev` at `at`, asking for a notice.
    fn decide(
        store: &Store,
        org: OrgId,
        dev: &ExchangeDevice,
        verdict: Verdict,
        at: i64,
    ) -> Recorded {
        let run = store
            .start_run(org, RunKind::Quick, Some("d1"), at)
            .unwrap();
        let request = NoticeRequest {
            id: NoticeId::derive(
                "Contoso",
                dev.key().as_str(),
                verdict.as_str(),
                &run.to_string(),
            ),
            key: dev.key(),
            state: verdict,
            reason: "not-enrolled".into(),
            recipient: "alice@contoso.com".into(),
            user_principal_name: None,
            locale: String::new(),
        };
        store
            .record_decisions_and_notices(
                &DecisionBatch {
                    run,
                    plugin_digest: "d1",
                    decided_at: at,
                    decisions: &[DecisionRecord {
                        key: dev.key(),
                        verdict,
                        reason: "not-enrolled".into(),
                        notify: true,
                    }],
                    commands: &[],
                    held: false,
                    shown: &[],
                },
                &NoticeBatch {
                    requests: &[request],
                    resend_interval_secs: 3600,
                },
            )
            .unwrap()
    }

    #[test]
    fn a_notice_is_queued_once_per_change_and_not_again_within_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let org = store.organization("Contoso", 1).unwrap();
        let a1 = device("A1");
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

        // First verdict: a change.
        let r = decide(&store, org, &a1, Verdict::Quarantine, 100);
        assert_eq!((r.notices_queued, r.notices_deduplicated), (1, 0));
        // Same verdict again: no change, no notice.
        let r = decide(&store, org, &a1, Verdict::Quarantine, 200);
        assert_eq!((r.notices_queued, r.notices_deduplicated), (0, 0));
        // Allowed, then quarantined again within the hour: the quarantine notice is recent.
        decide(&store, org, &a1, Verdict::Allow, 300);
        let r = decide(&store, org, &a1, Verdict::Quarantine, 400);
        assert_eq!((r.notices_queued, r.notices_deduplicated), (0, 1));
        // After the interval, a new change gets a new notice.
        decide(&store, org, &a1, Verdict::Allow, 5000);
        let r = decide(&store, org, &a1, Verdict::Quarantine, 5100);
        assert_eq!(r.notices_queued, 1);

        let all = store.notices(org, 10).unwrap();
        // The two quarantine notices, and the allow ones (the request asked for notices).
        assert_eq!(
            all.iter()
                .filter(|n| n.state == Verdict::Quarantine)
                .count(),
            2
        );
        let first = all.last().unwrap();
        assert_eq!(first.exchange, a1);
        assert_eq!(first.recipient, "alice@contoso.com");
        assert_eq!((first.status, first.attempts), (NoticeStatus::Pending, 0));
    }

    #[test]
    fn attempts_move_a_notice_through_its_states_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let org = store.organization("Contoso", 1).unwrap();
        let a1 = device("A1");
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
        decide(&store, org, &a1, Verdict::Quarantine, 100);
        let due = store.due_notices(org, 100, 10).unwrap();
        assert_eq!(due.len(), 1);
        let id = due[0].id.clone();

        let retry = NoticeAttempt::Retry {
            error: "down".into(),
            at: 160,
        };
        assert!(
            store
                .notice_attempted(&id, Some("t1"), &retry, 100)
                .unwrap()
        );
        // Not due before its time.
        assert!(store.due_notices(org, 159, 10).unwrap().is_empty());
        assert_eq!(store.due_notices(org, 160, 10).unwrap().len(), 1);

        let sent = NoticeAttempt::Sent {
            response: "250 ok".into(),
        };
        assert!(store.notice_attempted(&id, Some("t1"), &sent, 170).unwrap());
        // A second outcome for a finished notice is ignored.
        assert!(!store.notice_attempted(&id, Some("t1"), &sent, 180).unwrap());
        let n = store.notice(&id).unwrap().unwrap();
        assert_eq!(
            (n.status, n.attempts, n.sent_at, n.last_error.as_deref()),
            (NoticeStatus::Sent, 2, Some(170), Some("down"))
        );
        assert!(store.due_notices(org, 1000, 10).unwrap().is_empty());
        let counts = store.notice_counts(org).unwrap();
        assert_eq!((counts.sent, counts.pending), (1, 0));
    }

    #[test]
    fn the_outbox_is_written_with_the_verdicts_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let org = store.organization("Contoso", 1).unwrap();
        let a1 = device("A1");
        let run = store.start_run(org, RunKind::Quick, Some("d1"), 1).unwrap();
        // The device was never inventoried: the whole batch fails, no notice is left behind.
        let err = store.record_decisions_and_notices(
            &DecisionBatch {
                run,
                plugin_digest: "d1",
                decided_at: 1,
                decisions: &[],
                commands: &[],
                held: false,
                shown: &[],
            },
            &NoticeBatch {
                requests: &[NoticeRequest {
                    id: NoticeId::new("n1").unwrap(),
                    key: a1.key(),
                    state: Verdict::Quarantine,
                    reason: "x".into(),
                    recipient: "alice@contoso.com".into(),
                    user_principal_name: None,
                    locale: String::new(),
                }],
                resend_interval_secs: 0,
            },
        );
        assert!(matches!(err, Err(StoreError::UnknownDevice { .. })));
        assert!(store.notices(org, 10).unwrap().is_empty());
    }
}
