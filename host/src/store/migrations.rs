//! The schema, as an ordered list of migrations. Migration `i` (0-based) brings a database
//! from `user_version` `i` to `i + 1`; each runs in its own transaction together with the
//! version bump, so a crash mid-migration leaves the previous version intact. Never edit a
//! migration that has shipped: append a new one. Most are SQL; one that must read what it
//! rewrites (JSON SQL cannot check as well) is a Rust function.

use rusqlite::Connection;

use crate::model::{Command, ParamValue, Parameters};

/// `PRAGMA application_id` of an easgate store ("EASG"), so that easgate refuses to migrate an
/// SQLite file some other program owns.
pub const APPLICATION_ID: i64 = 0x4541_5347;

/// One step of the schema.
#[derive(Clone, Copy)]
pub enum Migration {
    Sql(&'static str),
    Rewrite(fn(&Connection) -> rusqlite::Result<()>),
}

impl Migration {
    /// Runs the step on `conn` (inside the caller's transaction).
    pub fn apply(&self, conn: &Connection) -> rusqlite::Result<()> {
        match self {
            Migration::Sql(sql) => conn.execute_batch(sql),
            Migration::Rewrite(f) => f(conn),
        }
    }
}

/// The migrations, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration::Sql(V1),
    Migration::Sql(V2),
    Migration::Sql(V3),
    Migration::Rewrite(v4_typed_commands),
    Migration::Sql(V5),
    Migration::Sql(V6),
    Migration::Sql(V7),
    Migration::Sql(V8),
    Migration::Sql(V9),
    Migration::Sql(V10),
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

const V1: &str = r#"
CREATE TABLE organizations (
    id                   INTEGER PRIMARY KEY,
    name                 TEXT NOT NULL UNIQUE,
    created_at           INTEGER NOT NULL,
    -- End of the last quick or full run that succeeded, for the status page.
    last_success_sync_at INTEGER,
    -- Start of that run: a quick sync asks for changes since then. The start, not the end,
    -- so that a change made while that run was going is not skipped.
    sync_cursor          INTEGER
) STRICT;

CREATE TABLE sync_runs (
    id              INTEGER PRIMARY KEY,
    org_id          INTEGER NOT NULL REFERENCES organizations(id),
    kind            TEXT NOT NULL CHECK (kind IN ('quick', 'full', 'what-if')),
    started_at      INTEGER NOT NULL,
    ended_at        INTEGER,
    outcome         TEXT NOT NULL CHECK (outcome IN
                        ('running', 'succeeded', 'partial', 'held', 'rejected', 'failed', 'interrupted')),
    -- The one access-policy version the run was pinned to.
    plugin_digest   TEXT,
    allowed         INTEGER NOT NULL DEFAULT 0,
    blocked         INTEGER NOT NULL DEFAULT 0,
    quarantined     INTEGER NOT NULL DEFAULT 0,
    exempt          INTEGER NOT NULL DEFAULT 0,
    undecided       INTEGER NOT NULL DEFAULT 0,
    devices_changed INTEGER NOT NULL DEFAULT 0,
    commands_issued INTEGER NOT NULL DEFAULT 0,
    -- Set when an operator approved or rejected a held plan.
    approval        TEXT CHECK (approval IN ('approved', 'rejected')),
    approval_at     INTEGER,
    error           TEXT
) STRICT;
CREATE INDEX sync_runs_by_org ON sync_runs(org_id, id);

CREATE TABLE devices (
    org_id        INTEGER NOT NULL REFERENCES organizations(id),
    -- Lowercase Exchange Identity: one row per partnership (DeviceId is unique per mailbox only).
    device_key    TEXT NOT NULL,
    device_id     TEXT NOT NULL,
    mailbox       TEXT,
    -- The Exchange and Intune views as JSON: read whole, never queried field by field except
    -- the access state the audit copies.
    exchange      TEXT NOT NULL,
    intune        TEXT,
    seen_at       INTEGER NOT NULL,
    verdict       TEXT CHECK (verdict IN ('allow', 'block', 'quarantine', 'exempt')),
    reason        TEXT,
    notify        INTEGER,
    plugin_digest TEXT,
    decided_at    INTEGER,
    decided_in    INTEGER REFERENCES sync_runs(id),
    PRIMARY KEY (org_id, device_key)
) STRICT;

CREATE TABLE command_journal (
    id         INTEGER PRIMARY KEY,
    sync_id    INTEGER NOT NULL REFERENCES sync_runs(id),
    org_id     INTEGER NOT NULL REFERENCES organizations(id),
    mailbox    TEXT,
    -- JSON array of the device keys the command changes.
    devices    TEXT NOT NULL,
    -- The CmdletInput object, exactly as sent.
    command    TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN
                   ('held', 'planned', 'sent', 'done', 'failed', 'rejected', 'abandoned')),
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
CREATE INDEX command_journal_by_run ON command_journal(sync_id, id);
CREATE INDEX command_journal_unfinished ON command_journal(state) WHERE state IN ('planned', 'sent');

CREATE TABLE decision_audit (
    id            INTEGER PRIMARY KEY,
    org_id        INTEGER NOT NULL REFERENCES organizations(id),
    sync_id       INTEGER NOT NULL REFERENCES sync_runs(id),
    device_key    TEXT NOT NULL,
    device_id     TEXT NOT NULL,
    -- Exchange's DeviceAccessState when the decision was made, and the previous verdict.
    old_state     TEXT NOT NULL,
    old_verdict   TEXT,
    verdict       TEXT NOT NULL CHECK (verdict IN ('allow', 'block', 'quarantine', 'exempt')),
    reason        TEXT NOT NULL,
    plugin_digest TEXT NOT NULL,
    decided_at    INTEGER NOT NULL
) STRICT;
CREATE INDEX decision_audit_by_device ON decision_audit(org_id, device_key, id);
CREATE TRIGGER decision_audit_no_update BEFORE UPDATE ON decision_audit
    BEGIN SELECT RAISE(ABORT, 'decision_audit is append-only'); END;
CREATE TRIGGER decision_audit_no_delete BEFORE DELETE ON decision_audit
    BEGIN SELECT RAISE(ABORT, 'decision_audit is append-only'); END;
"#;

/// The notice outbox: a notice is recorded in the transaction that records its verdict and
/// sent later by a notify stage, so that a crash between the two loses nothing.
const V2: &str = r#"
CREATE TABLE notices (
    -- The NoticeId: also the left part of the mail's Message-ID, so a resend after a crash
    -- carries the same Message-ID.
    id              TEXT PRIMARY KEY,
    org_id          INTEGER NOT NULL REFERENCES organizations(id),
    sync_id         INTEGER NOT NULL REFERENCES sync_runs(id),
    device_key      TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    -- The verdict the notice announces, and the policy's reason.
    state           TEXT NOT NULL CHECK (state IN ('allow', 'block', 'quarantine', 'exempt')),
    reason          TEXT NOT NULL,
    -- The user's address (To); admin copies come from the configuration at send time.
    recipient       TEXT NOT NULL,
    user_principal_name TEXT,
    -- The device's Exchange and Intune views when decided: the notice describes the device
    -- as it was when its state changed, even if it is re-inventoried or gone before sending.
    exchange        TEXT NOT NULL,
    intune          TEXT,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'given-up')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    -- The template version that rendered the last attempt, and the server's acceptance.
    template_digest TEXT,
    response        TEXT,
    created_at      INTEGER NOT NULL,
    sent_at         INTEGER,
    updated_at      INTEGER NOT NULL
) STRICT;
CREATE INDEX notices_due ON notices(org_id, next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX notices_by_device ON notices(org_id, device_key, state, created_at);
"#;

/// The directory the last sync saw (mailboxes with their lists, users with their in-scope
/// groups), so that a what-if run (`easgate policy diff`) decides with what a sync would see
/// instead of rebuilding it from the devices' verdicts.
const V3: &str = r#"
-- When a full sync last wrote the whole directory; NULL while only quick syncs (which see the
-- changed mailboxes only) or none wrote it since this migration.
ALTER TABLE organizations ADD COLUMN directory_complete_at INTEGER;

CREATE TABLE mailboxes (
    org_id              INTEGER NOT NULL REFERENCES organizations(id),
    -- Lowercase Identity: what devices.mailbox names, ignoring case.
    mailbox_key         TEXT NOT NULL,
    identity            TEXT NOT NULL,
    primary_smtp        TEXT NOT NULL,
    user_principal_name TEXT,
    -- JSON arrays of DeviceIds as Exchange spelled them when the sync read the mailbox (before
    -- it applied its plan: the devices' verdicts say what the plan changed).
    allowed             TEXT NOT NULL,
    blocked             TEXT NOT NULL,
    seen_at             INTEGER NOT NULL,
    PRIMARY KEY (org_id, mailbox_key)
) STRICT;

CREATE TABLE directory_users (
    org_id              INTEGER NOT NULL REFERENCES organizations(id),
    -- Lowercase UPN.
    user_key            TEXT NOT NULL,
    user_principal_name TEXT NOT NULL,
    -- JSON array of the in-scope group ids the user is a transitive member of.
    groups              TEXT NOT NULL,
    seen_at             INTEGER NOT NULL,
    PRIMARY KEY (org_id, user_key)
) STRICT;
"#;

/// The journal's commands, stored until now as the REST body's `CmdletInput`
/// (`{"CmdletName":…,"Parameters":{…}}`, a hashtable edit as an `#Exchange.GenericHashTable`),
/// become the wire-neutral [`Command`] (`{"cmdlet":…,"parameters":{…}}`) that any transport
/// renders. The parameters keep their order, so the REST transport sends the same bytes.
fn v4_typed_commands(conn: &Connection) -> rusqlite::Result<()> {
    let rows: Vec<(i64, String)> = conn
        .prepare("SELECT id, command FROM command_journal")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut update = conn.prepare("UPDATE command_journal SET command = ?2 WHERE id = ?1")?;
    for (id, text) in rows {
        let command = typed_command(&text).map_err(|problem| {
            rusqlite::Error::ToSqlConversionFailure(
                format!("command_journal row {id}: {problem}: {text}").into(),
            )
        })?;
        let typed = serde_json::to_string(&command)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
        update.execute(rusqlite::params![id, typed])?;
    }
    Ok(())
}

/// A journaled `CmdletInput` as a typed command, or what in it has no typed form.
fn typed_command(text: &str) -> Result<Command, String> {
    use serde_json::Value;
    // Read in the stored order (serde_json's `Value` would sort the members).
    #[derive(serde::Deserialize)]
    struct CmdletInput {
        #[serde(rename = "CmdletName")]
        cmdlet: String,
        #[serde(rename = "Parameters")]
        parameters: InOrder,
    }
    struct InOrder(Vec<(String, Value)>);
    impl<'de> serde::Deserialize<'de> for InOrder {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = InOrder;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<InOrder, A::Error> {
                    let mut out = Vec::new();
                    while let Some(entry) = map.next_entry()? {
                        out.push(entry);
                    }
                    Ok(InOrder(out))
                }
            }
            d.deserialize_map(V)
        }
    }
    let strings = |v: &Value, what: &str| -> Result<Vec<String>, String> {
        v.as_array()
            .ok_or(format!("{what} is not an array"))?
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_owned)
                    .ok_or(format!("{what} holds a non-string"))
            })
            .collect()
    };
    let input: CmdletInput = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut parameters = Parameters::new();
    for (name, value) in input.parameters.0 {
        let typed = match &value {
            Value::String(s) => ParamValue::Text(s.clone()),
            Value::Bool(b) => ParamValue::Bool(*b),
            Value::Number(n) => ParamValue::Int(
                n.as_i64()
                    .ok_or(format!("parameter `{name}`: {n} is not an integer"))?,
            ),
            Value::Array(_) => ParamValue::Texts(strings(&value, &format!("parameter `{name}`"))?),
            Value::Object(o)
                if o.get("@odata.type").and_then(Value::as_str)
                    == Some("#Exchange.GenericHashTable")
                    && o.keys()
                        .all(|k| ["@odata.type", "Add", "Remove"].contains(&k.as_str())) =>
            {
                let list = |key: &str| match o.get(key) {
                    Some(v) => strings(v, &format!("parameter `{name}`.{key}")),
                    None => Ok(Vec::new()),
                };
                ParamValue::HashEdit {
                    add: list("Add")?,
                    remove: list("Remove")?,
                }
            }
            other => return Err(format!("parameter `{name}`: no typed form for {other}")),
        };
        parameters.push(name, typed);
    }
    Ok(Command::new(input.cmdlet, parameters))
}

/// Held plans that wait without touching the devices' verdicts, and expire when a newer run
/// plans: a held plan's verdicts and notices are kept beside it and become the devices'
/// (with their audit rows and notices) only when the approved plan is applied.
const V5: &str = r#"
-- The newer run of the same organization whose plan made this held (or approved, not yet
-- applied) plan expire; such a run is `rejected` without an operator's decision.
ALTER TABLE sync_runs ADD COLUMN superseded_by INTEGER REFERENCES sync_runs(id);
-- Every recording of a plan looks for the plans it supersedes: only these few rows.
CREATE INDEX sync_runs_waiting ON sync_runs(org_id, id) WHERE outcome IN ('held', 'running');

CREATE TABLE held_decisions (
    sync_id    INTEGER NOT NULL REFERENCES sync_runs(id),
    device_key TEXT NOT NULL,
    verdict    TEXT NOT NULL CHECK (verdict IN ('allow', 'block', 'quarantine', 'exempt')),
    reason     TEXT NOT NULL,
    notify     INTEGER NOT NULL,
    decided_at INTEGER NOT NULL,
    PRIMARY KEY (sync_id, device_key)
) STRICT;

CREATE TABLE held_notices (
    sync_id              INTEGER NOT NULL REFERENCES sync_runs(id),
    id                   TEXT NOT NULL,
    device_key           TEXT NOT NULL,
    state                TEXT NOT NULL CHECK (state IN ('allow', 'block', 'quarantine', 'exempt')),
    reason               TEXT NOT NULL,
    recipient            TEXT NOT NULL,
    user_principal_name  TEXT,
    resend_interval_secs INTEGER NOT NULL,
    PRIMARY KEY (sync_id, id)
) STRICT;
"#;

/// The status page's trend of devices per verdict: the organization's counts as each run that
/// could change a verdict ended (runs only count the devices they decided, a quick sync few).
const V6: &str = r#"
CREATE TABLE verdict_trend (
    sync_id     INTEGER PRIMARY KEY REFERENCES sync_runs(id),
    org_id      INTEGER NOT NULL REFERENCES organizations(id),
    at          INTEGER NOT NULL,
    allowed     INTEGER NOT NULL,
    blocked     INTEGER NOT NULL,
    quarantined INTEGER NOT NULL,
    exempt      INTEGER NOT NULL,
    undecided   INTEGER NOT NULL
) STRICT;
CREATE INDEX verdict_trend_by_org ON verdict_trend(org_id, sync_id);
"#;

/// The user's language (Graph `preferredLanguage`, a BCP 47 tag) with each notice, taken when
/// the verdict is decided like the rest of the notice's facts; empty when the directory has none
/// (and for notices recorded before this version).
const V7: &str = r#"
ALTER TABLE notices ADD COLUMN locale TEXT NOT NULL DEFAULT '';
ALTER TABLE held_notices ADD COLUMN locale TEXT NOT NULL DEFAULT '';
"#;

/// The audit of administrators' device actions, which is also their journal: a row is written
/// `issuing` before the cmdlet is sent (see `store/audit.rs`).
const V8: &str = r#"
CREATE TABLE admin_actions (
    id           INTEGER PRIMARY KEY,
    org_id       INTEGER NOT NULL REFERENCES organizations(id),
    action       TEXT NOT NULL CHECK (action IN ('wipe', 'account-wipe', 'remove')),
    identity     TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    user         TEXT NOT NULL,
    -- `api` or `cli:<OS user>`.
    actor        TEXT NOT NULL,
    reason       TEXT NOT NULL CHECK (length(trim(reason)) > 0),
    requested_at INTEGER NOT NULL,
    finished_at  INTEGER,
    result       TEXT NOT NULL CHECK (result IN ('issuing', 'done', 'failed', 'interrupted')),
    error        TEXT
) STRICT;
CREATE INDEX admin_actions_by_org ON admin_actions(org_id, id);
"#;

/// An administrator's device action mails its user through the outbox like a sync's verdict
/// does (queued, retried, counted on the status page), so a notice may come from an audit row
/// instead of a run: `sync_id` becomes optional, `admin_action_id` names the row, and being
/// UNIQUE it is what keeps a retry or a restart from queueing a second mail for one action.
/// SQLite cannot drop a NOT NULL, hence the copy. An action's `note` says how Exchange's
/// answer was read when it was not the plain one (a removal whose retry found the
/// partnership gone).
const V9: &str = r#"
CREATE TABLE notices_v10 (
    id              TEXT PRIMARY KEY,
    org_id          INTEGER NOT NULL REFERENCES organizations(id),
    sync_id         INTEGER REFERENCES sync_runs(id),
    device_key      TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('allow', 'block', 'quarantine', 'exempt')),
    reason          TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    user_principal_name TEXT,
    exchange        TEXT NOT NULL,
    intune          TEXT,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'given-up')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    template_digest TEXT,
    response        TEXT,
    created_at      INTEGER NOT NULL,
    sent_at         INTEGER,
    updated_at      INTEGER NOT NULL,
    locale          TEXT NOT NULL DEFAULT '',
    admin_action_id INTEGER UNIQUE REFERENCES admin_actions(id),
    -- From a run or from an administrator's action, never both or neither.
    CHECK ((sync_id IS NULL) <> (admin_action_id IS NULL))
) STRICT;
INSERT INTO notices_v10 (id, org_id, sync_id, device_key, device_id, state, reason, recipient,
    user_principal_name, exchange, intune, status, attempts, next_attempt_at, last_error,
    template_digest, response, created_at, sent_at, updated_at, locale)
SELECT id, org_id, sync_id, device_key, device_id, state, reason, recipient,
    user_principal_name, exchange, intune, status, attempts, next_attempt_at, last_error,
    template_digest, response, created_at, sent_at, updated_at, locale
FROM notices;
DROP TABLE notices;
ALTER TABLE notices_v10 RENAME TO notices;
CREATE INDEX notices_due ON notices(org_id, next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX notices_by_device ON notices(org_id, device_key, state, created_at);
ALTER TABLE admin_actions ADD COLUMN note TEXT;
"#;

/// A held plan's devices whose verdict no list edit can give (a quarantine under an allow rule
/// or default) and the state Exchange will show them in instead: the approved plan records
/// these once its commands are confirmed, as a run that was not held does at once.
const V10: &str = r#"
CREATE TABLE held_shown (
    sync_id      INTEGER NOT NULL REFERENCES sync_runs(id),
    device_key   TEXT NOT NULL,
    access_level TEXT NOT NULL CHECK (access_level IN ('Allow', 'Block', 'Quarantine')),
    reason       TEXT NOT NULL,
    PRIMARY KEY (sync_id, device_key)
) STRICT;
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_cmdlet_input_becomes_the_typed_command() {
        let c = typed_command(
            r##"{"CmdletName":"Set-CASMailbox","Parameters":{"ActiveSyncAllowedDeviceIDs":{"@odata.type":"#Exchange.GenericHashTable","Add":["A"],"Remove":[]},"Confirm":false,"Identity":"alice","N":3,"R":["x"]}}"##,
        )
        .unwrap();
        assert_eq!(
            c,
            Command::new(
                "Set-CASMailbox",
                Parameters::new()
                    .hash_edit("ActiveSyncAllowedDeviceIDs", vec!["A".into()], vec![])
                    .bool("Confirm", false)
                    .text("Identity", "alice")
                    .int("N", 3)
                    .texts("R", vec!["x".into()])
            )
        );
        for (bad, says) in [
            (
                r#"{"CmdletName":"X","Parameters":{"P":{"a":1}}}"#,
                "parameter `P`: no typed form",
            ),
            (
                r#"{"CmdletName":"X","Parameters":{"P":[1]}}"#,
                "parameter `P` holds a non-string",
            ),
            (
                r#"{"CmdletName":"X","Parameters":{"P":1.5}}"#,
                "parameter `P`: 1.5 is not an integer",
            ),
            (
                r#"{"cmdlet":"X","parameters":{}}"#,
                "missing field `CmdletName`",
            ),
        ] {
            let e = typed_command(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
