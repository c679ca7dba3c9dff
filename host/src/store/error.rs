//! What can go wrong in the store, with the file and the operation it concerns.

use std::path::PathBuf;

use super::{CommandId, OrgId, RunId};
use crate::model::DeviceKey;

/// A store error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot create the data directory {}", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The store file exists but is empty: it lost its contents.
    #[error(
        "the store {} is empty (0 bytes): it was truncated or replaced, and starting over would lose the audit trail and the notices' de-duplication; restore it from a backup, or start with a new store by running once with --init",
        path.display()
    )]
    Empty { path: PathBuf },
    /// Another process writes the store of this data directory.
    #[error(
        "the data directory {} is in use by another easgate process{}: stop it first, or ask the running daemon for a sync through its admin API (POST /api/v1/organizations/{{org}}/sync)",
        data_dir.display(),
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    InUse {
        data_dir: PathBuf,
        holder: Option<u32>,
    },
    /// The writer lock file could not be opened or written.
    #[error("cannot take the lock {}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// SQLite could not open the file at all (permissions, a directory in the way, ...).
    #[error(
        "cannot open the store {}: the data directory must be writable by this process and the path a file",
        path.display()
    )]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The file is damaged or is not an SQLite database. It is never reset silently.
    #[error(
        "the store {} is corrupted or not an SQLite database ({detail}); it was left as it is: restore it from a backup, or move it aside to start with an empty store",
        path.display()
    )]
    Corrupt { path: PathBuf, detail: String },
    /// The file is an SQLite database of another program.
    #[error(
        "the store {} belongs to another program (SQLite application_id {found:#x}, or tables but no easgate schema version); easgate leaves it alone",
        path.display()
    )]
    Foreign { path: PathBuf, found: i64 },
    /// The file was written by a newer easgate.
    #[error(
        "the store {} has schema version {found}, newer than this easgate understands ({supported}); run the easgate version that wrote it, or restore a backup",
        path.display()
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: usize,
    },
    /// A read-only open found a store that a sync has not migrated to this version yet (a
    /// read-only reader cannot migrate it).
    #[error(
        "the store {} has schema version {found}, older than this easgate's ({supported}); run `easgate sync` once to migrate it",
        path.display()
    )]
    OlderSchema {
        path: PathBuf,
        found: i64,
        supported: usize,
    },
    /// SQLite would not switch the file to WAL (some network file systems cannot share the
    /// memory WAL needs).
    #[error(
        "the store {} cannot use write-ahead logging (journal mode stays `{mode}`); put the data directory on a local file system",
        path.display()
    )]
    NoWal { path: PathBuf, mode: String },
    /// A migration failed; the database keeps its previous version.
    #[error("migrating the store {} to schema version {version} failed", path.display())]
    Migration {
        path: PathBuf,
        version: usize,
        #[source]
        source: rusqlite::Error,
    },
    /// The file system refused a write: full, over a quota or size limit, or failing. SQLite
    /// rolled the change back.
    #[error(
        "the store {} could not be written while {doing}: the file system is full or failing; nothing of that change was kept, free space and run again",
        path.display()
    )]
    Unwritable {
        path: PathBuf,
        doing: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// The file, or the data directory SQLite writes its journal into, is read-only for this
    /// process.
    #[error(
        "the store {} is read-only for this process (while {doing}): easgate must be able to write the file and create files in its data directory",
        path.display()
    )]
    ReadOnly {
        path: PathBuf,
        doing: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// A statement failed.
    #[error("the store {} failed while {doing}", path.display())]
    Sql {
        path: PathBuf,
        doing: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// A value could not be encoded for storage.
    #[error("cannot encode the {what} for the store")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A stored value could not be read back (written by hand, or by a buggy version).
    #[error("the store holds a {what} it cannot read: {detail}")]
    Decode { what: &'static str, detail: String },
    /// No such sync run.
    #[error("no sync run {0} in the store")]
    UnknownRun(RunId),
    /// A decision names a device whose inventory was not saved.
    #[error("no device `{key}` in organization {org}: save the inventory before its decisions")]
    UnknownDevice { org: OrgId, key: DeviceKey },
    /// No such journal entry.
    #[error("no journal entry {0}")]
    UnknownCommand(CommandId),
    /// A journal entry cannot move to the requested state from the one it is in.
    #[error("journal entry {id} is {state}; it cannot become {to}")]
    Transition {
        id: CommandId,
        state: String,
        to: &'static str,
    },
    /// A held plan expired because a newer run of its organization planned since: approving
    /// it would apply decisions made against an inventory and policy that are gone.
    #[error(
        "the plan of sync run {run} expired: run {by} of the same organization planned since, against newer Exchange and Intune state, so nothing of it was applied; approve the newest held plan instead, if there is one"
    )]
    Superseded { run: RunId, by: RunId },
    /// A run is not in the state the operation needs (e.g. approving a plan that is not held).
    #[error("sync run {run} is {outcome}; {doing} needs a {needed} run")]
    RunState {
        run: RunId,
        outcome: String,
        doing: &'static str,
        needed: &'static str,
    },
}
