//! The directory the last sync saw: every mailbox with its allow and block lists and its UPN,
//! every user with the in-scope groups they are in. A what-if run reads it to decide with what
//! a sync would see (see the sync's `whatif`).
//!
//! A full sync replaces the organization's directory and marks it complete; a quick sync
//! updates the mailboxes and users it read (those of the changed devices) and leaves the rest
//! as the last full sync saw them.

use rusqlite::OptionalExtension;

use super::{OrgId, Store, StoreError, decode, encode};
use crate::model::{DirectoryUser, Mailbox};

/// The stored directory of an organization.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredDirectory {
    /// By identity.
    pub mailboxes: Vec<Mailbox>,
    /// By UPN.
    pub users: Vec<DirectoryUser>,
}

/// The first schema version that stores the directory.
const DIRECTORY_SCHEMA: i64 = 3;

impl Store {
    /// Saves the mailboxes and users a sync read, in one transaction. `complete`: they are all
    /// of the organization's (a full sync), so the others are forgotten.
    pub fn save_directory(
        &self,
        org: OrgId,
        mailboxes: &[Mailbox],
        users: &[DirectoryUser],
        complete: bool,
        now: i64,
    ) -> Result<(), StoreError> {
        const DOING: &str = "saving the directory";
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(self.sql(DOING))?;
        if complete {
            tx.execute("DELETE FROM mailboxes WHERE org_id = ?1", [org.0])
                .map_err(self.sql(DOING))?;
            tx.execute("DELETE FROM directory_users WHERE org_id = ?1", [org.0])
                .map_err(self.sql(DOING))?;
            tx.execute(
                "UPDATE organizations SET directory_complete_at = ?2 WHERE id = ?1",
                (org.0, now),
            )
            .map_err(self.sql(DOING))?;
        }
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO mailboxes (org_id, mailbox_key, identity, primary_smtp,
                         user_principal_name, allowed, blocked, seen_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT(org_id, mailbox_key) DO UPDATE SET
                         identity = excluded.identity, primary_smtp = excluded.primary_smtp,
                         user_principal_name = excluded.user_principal_name,
                         allowed = excluded.allowed, blocked = excluded.blocked,
                         seen_at = excluded.seen_at",
                )
                .map_err(self.sql(DOING))?;
            for m in mailboxes {
                stmt.execute(rusqlite::params![
                    org.0,
                    m.identity.to_lowercase(),
                    m.identity,
                    m.primary_smtp,
                    m.user_principal_name,
                    encode("a mailbox's allow list", &m.allowed)?,
                    encode("a mailbox's block list", &m.blocked)?,
                    now,
                ])
                .map_err(self.sql(DOING))?;
            }
        }
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO directory_users (org_id, user_key, user_principal_name, groups,
                         seen_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(org_id, user_key) DO UPDATE SET
                         user_principal_name = excluded.user_principal_name,
                         groups = excluded.groups, seen_at = excluded.seen_at",
                )
                .map_err(self.sql(DOING))?;
            for u in users {
                stmt.execute(rusqlite::params![
                    org.0,
                    u.user_principal_name.to_lowercase(),
                    u.user_principal_name,
                    encode("a user's groups", &u.groups)?,
                    now,
                ])
                .map_err(self.sql(DOING))?;
            }
        }
        tx.commit().map_err(self.sql(DOING))
    }

    /// The organization's directory as the syncs saw it, or `None` when no full sync wrote it:
    /// a store written before schema version 3 (opened read-only, unmigrated) or whose last
    /// full sync ran before the migration.
    pub fn directory(&self, org: OrgId) -> Result<Option<StoredDirectory>, StoreError> {
        const DOING: &str = "reading the directory";
        if self.schema_version()? < DIRECTORY_SCHEMA {
            return Ok(None);
        }
        let conn = self.conn();
        let complete: Option<i64> = conn
            .query_row(
                "SELECT directory_complete_at FROM organizations WHERE id = ?1",
                [org.0],
                |row| row.get(0),
            )
            .optional()
            .map_err(self.sql(DOING))?
            .flatten();
        if complete.is_none() {
            return Ok(None);
        }
        type MailboxRow = (String, String, Option<String>, String, String);
        let rows: Vec<MailboxRow> = conn
            .prepare(
                "SELECT identity, primary_smtp, user_principal_name, allowed, blocked
                 FROM mailboxes WHERE org_id = ?1 ORDER BY mailbox_key",
            )
            .and_then(|mut stmt| {
                stmt.query_map([org.0], |row| MailboxRow::try_from(row))?
                    .collect()
            })
            .map_err(self.sql(DOING))?;
        let mut mailboxes = Vec::with_capacity(rows.len());
        for (identity, primary_smtp, user_principal_name, allowed, blocked) in rows {
            mailboxes.push(Mailbox {
                identity,
                primary_smtp,
                user_principal_name,
                allowed: decode("a mailbox's allow list", &allowed)?,
                blocked: decode("a mailbox's block list", &blocked)?,
            });
        }
        let rows: Vec<(String, String)> = conn
            .prepare(
                "SELECT user_principal_name, groups FROM directory_users WHERE org_id = ?1
                 ORDER BY user_key",
            )
            .and_then(|mut stmt| {
                stmt.query_map([org.0], |row| <(String, String)>::try_from(row))?
                    .collect()
            })
            .map_err(self.sql(DOING))?;
        let users = rows
            .into_iter()
            .map(|(user_principal_name, groups)| {
                // The language is not kept: only a run's own notices use it, from its listing.
                Ok(DirectoryUser {
                    user_principal_name,
                    groups: decode("a user's groups", &groups)?,
                    locale: String::new(),
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Some(StoredDirectory { mailboxes, users }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(identity: &str, allowed: &[&str]) -> Mailbox {
        Mailbox {
            identity: identity.into(),
            primary_smtp: format!("{}@contoso.com", identity.to_lowercase()),
            user_principal_name: Some(format!("{}@corp.contoso.com", identity.to_lowercase())),
            allowed: allowed.iter().map(|s| s.to_string()).collect(),
            blocked: vec!["B1".into()],
        }
    }

    fn user(upn: &str, groups: &[&str]) -> DirectoryUser {
        DirectoryUser {
            user_principal_name: upn.into(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
            locale: String::new(),
        }
    }

    #[test]
    fn a_full_sync_replaces_the_directory_and_a_quick_one_updates_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let org = store.organization("contoso", 1).unwrap();
        // Only quick syncs so far: nothing complete to read.
        store
            .save_directory(org, &[mailbox("Alice", &["A1"])], &[], false, 2)
            .unwrap();
        assert_eq!(store.directory(org).unwrap(), None);

        let full = [mailbox("Alice", &["A1"]), mailbox("Bob", &[])];
        let users = [user("alice@corp.contoso.com", &["g1"]), user("bob@x", &[])];
        store.save_directory(org, &full, &users, true, 3).unwrap();
        let stored = store.directory(org).unwrap().unwrap();
        assert_eq!(stored.mailboxes, full);
        assert_eq!(stored.users, users);

        // A quick sync read Alice's mailbox again (case aside) and a new user.
        let alice = mailbox("ALICE", &["A1", "A2"]);
        let carol = user("carol@x", &["g2"]);
        store
            .save_directory(
                org,
                std::slice::from_ref(&alice),
                std::slice::from_ref(&carol),
                false,
                4,
            )
            .unwrap();
        let stored = store.directory(org).unwrap().unwrap();
        assert_eq!(stored.mailboxes, vec![alice, full[1].clone()]);
        assert_eq!(stored.users.len(), 3);

        // The next full sync forgets what it no longer sees.
        store
            .save_directory(org, &full[1..], std::slice::from_ref(&carol), true, 5)
            .unwrap();
        let stored = store.directory(org).unwrap().unwrap();
        assert_eq!(stored.mailboxes, full[1..].to_vec());
        assert_eq!(stored.users, vec![carol]);
        let other = store.organization("fabrikam", 6).unwrap();
        assert_eq!(store.directory(other).unwrap(), None);
    }

    #[test]
    fn a_store_written_before_the_directory_opens_read_only_without_one() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn =
                rusqlite::Connection::open(dir.path().join(super::super::DATABASE_FILE)).unwrap();
            super::super::migrations::MIGRATIONS[0]
                .apply(&conn)
                .unwrap();
            super::super::migrations::MIGRATIONS[1]
                .apply(&conn)
                .unwrap();
            conn.pragma_update(None, "user_version", 2).unwrap();
            conn.pragma_update(
                None,
                "application_id",
                super::super::migrations::APPLICATION_ID,
            )
            .unwrap();
            conn.execute(
                "INSERT INTO organizations (name, created_at) VALUES ('contoso', 1)",
                [],
            )
            .unwrap();
        }
        let store = Store::open_read_only(dir.path()).unwrap();
        assert_eq!(store.schema_version().unwrap(), 2);
        let org = store.find_organization("contoso").unwrap().unwrap();
        assert_eq!(store.directory(org).unwrap(), None);
    }
}
