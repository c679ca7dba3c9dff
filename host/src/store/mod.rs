//! The connector's memory: one SQLite file per data directory holding the organizations, the
//! last inventory and verdict of every device, the sync runs, the command journal, the
//! append-only decision audit and the notice outbox.
//!
//! No SQL leaves this module: callers use the typed methods of [`Store`]. Every change that must
//! not half-happen runs in one transaction (a run's verdicts, audit rows and journal entries
//! land together or not at all).
//!
//! Opening is strict: a busy timeout, an integrity check (`PRAGMA quick_check`, a single read
//! of the file: well under a second at 100 000 devices), WAL mode, foreign keys on, then the
//! migrations in [`migrations`]. A database written by a newer easgate, a damaged file and
//! another program's SQLite file are refused with an error naming the file; nothing is ever
//! reset silently.
//!
//! Durability: `synchronous = NORMAL`. In WAL mode that loses no committed transaction when the
//! process crashes (SIGKILL included), only the last few on a power loss, and never corrupts the
//! file. That is enough because the journal is not replayed: unfinished commands are re-planned
//! against fresh Exchange state ([`Store::recover`]), so a lost journal update costs at most a
//! redundant re-plan. `FULL` would add an fsync to every journal update of a 100 000-device
//! sync.

mod audit;
mod counts;
mod devices;
mod directory;
mod enforced_state;
mod error;
mod held;
mod journal;
mod known;
mod lock;
pub mod migrations;
mod outbox;
mod runs;
mod trend;
mod views;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};

pub use audit::{ActionEnd, ActionIntent, ActionRecord, ActionResult, DeviceAction};
pub use devices::{
    AuditEntry, DecisionBatch, DecisionRecord, DeviceRecord, DeviceView, StoredDecision,
};
pub use directory::StoredDirectory;
pub use enforced_state::Enforces;
pub use error::StoreError;
pub use held::Enforced;
pub use journal::{JournalEntry, JournalState, Recovery};
pub use known::{Known, KnownDevice, KnownRecord};
pub use lock::WriterLock;
pub use outbox::{
    ActionNotice, NoticeAttempt, NoticeBatch, NoticeCounts, NoticeRequest, NoticeStatus,
    OutboxNotice, Recorded,
};
pub use runs::{RunEnd, RunOutcome, RunRecord, VerdictCounts};
pub use trend::TrendPoint;
pub use views::HeldChange;

/// The file name of the store inside the data directory.
pub const DATABASE_FILE: &str = "easgate.db";

/// How long a statement waits for another connection's lock before failing (a `easgate` CLI
/// command reading while the daemon writes).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// `PRAGMA wal_autocheckpoint`: pages of 4 KiB the WAL may hold before a commit copies them back.
const WAL_CHECKPOINT_PAGES: i64 = 10_000;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// An organization's row id.
    OrgId
);
id_type!(
    /// A sync run's id, shown to operators (`easgate plan approve ID`).
    RunId
);
id_type!(
    /// A command journal entry's id.
    CommandId
);

/// The SQLite store. Cheap to share behind an `Arc`: statements are serialized on one
/// connection, and each method is short.
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
    /// Held by the process that writes the store ([`Store::open_writer`]).
    _writer: Option<WriterLock>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// Whether an SQLite error means the file is damaged or not a database.
fn is_corruption(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

/// An SQLite error as a [`StoreError`] that tells the operator what to do: a damaged file, a
/// write the file system refused, a read-only file or directory, or else the statement that
/// failed.
fn store_error(path: &Path, doing: &'static str, source: rusqlite::Error) -> StoreError {
    let path = path.to_owned();
    let write_failed = match &source {
        rusqlite::Error::SqliteFailure(e, _) => {
            e.code == ErrorCode::DiskFull
                || [
                    rusqlite::ffi::SQLITE_IOERR_WRITE,
                    rusqlite::ffi::SQLITE_IOERR_FSYNC,
                    rusqlite::ffi::SQLITE_IOERR_TRUNCATE,
                    rusqlite::ffi::SQLITE_IOERR_SHMSIZE,
                ]
                .contains(&e.extended_code)
        }
        _ => false,
    };
    if is_corruption(&source) {
        StoreError::Corrupt {
            path,
            detail: source.to_string(),
        }
    } else if write_failed {
        StoreError::Unwritable {
            path,
            doing,
            source,
        }
    } else if source.sqlite_error_code() == Some(ErrorCode::ReadOnly) {
        StoreError::ReadOnly {
            path,
            doing,
            source,
        }
    } else {
        StoreError::Sql {
            path,
            doing,
            source,
        }
    }
}

/// Creates the store `path`: migrated under a name of this process's, then hard-linked into
/// place, which fails if another process got there first (its store is then the one used).
fn create_file(path: &Path) -> Result<(), StoreError> {
    // Unique per process and per call: threads of one process may create at once too.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".new-{}-{call}", std::process::id()));
    let fresh = path.with_file_name(name);
    let _ = std::fs::remove_file(&fresh);
    // A data directory this process cannot write is named as the store's, not the aside name's.
    let made = Store::open_existing(&fresh)
        .map(drop)
        .map_err(|err| match err {
            StoreError::Open { source, .. } => StoreError::Open {
                path: path.to_owned(),
                source,
            },
            other => other,
        });
    let linked = made.and_then(|()| match std::fs::hard_link(&fresh, path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::DataDir {
            path: path.to_owned(),
            source,
        }),
    });
    for leftover in ["", "-wal", "-shm", "-journal"] {
        let mut name = fresh.clone().into_os_string();
        name.push(leftover);
        let _ = std::fs::remove_file(name);
    }
    linked
}

/// Creates `data_dir` if needed, readable by its owner only on Unix.
fn create_data_dir(data_dir: &Path) -> Result<(), StoreError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(data_dir)
        .map_err(|source| StoreError::DataDir {
            path: data_dir.to_owned(),
            source,
        })
}

impl Store {
    /// Opens (creating when needed) the store in `data_dir`, which is created too, readable by
    /// its owner only on Unix (the store holds user names and device details).
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        create_data_dir(data_dir)?;
        Self::open_file(&data_dir.join(DATABASE_FILE))
    }

    /// [`Store::open`] for the process that writes the store: takes the data directory's
    /// [`WriterLock`], and keeps it as long as the store lives.
    pub fn open_writer(data_dir: &Path) -> Result<Self, StoreError> {
        create_data_dir(data_dir)?;
        // The store first: a data directory this process cannot write is best said by the
        // store's own errors. Opening only migrates (each step atomic), and the lock is held
        // before the caller can recover anything.
        let mut store = Self::open_file(&data_dir.join(DATABASE_FILE))?;
        store._writer = Some(WriterLock::acquire(data_dir)?);
        Ok(store)
    }

    /// Opens (creating when needed) the store in the file `path`.
    ///
    /// A new store is made under another name and linked into place whole, so that `path`
    /// never exists empty while it is being created; an existing empty file is then no store
    /// in the making but one that lost its contents (truncated, or replaced by hand), and is
    /// refused ([`StoreError::Empty`]) instead of silently starting over: the audit trail and
    /// the notices' de-duplication would be gone.
    pub fn open_file(path: &Path) -> Result<Self, StoreError> {
        match std::fs::metadata(path) {
            Ok(meta) if meta.len() == 0 => {
                return Err(StoreError::Empty {
                    path: path.to_owned(),
                });
            }
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => create_file(path)?,
            Err(source) => {
                return Err(StoreError::DataDir {
                    path: path.to_owned(),
                    source,
                });
            }
        }
        Self::open_existing(path)
    }

    /// Removes the empty file a store lost its contents to, so that the next open creates a
    /// new store: what `--init` does, by the operator's word. A file with contents is never
    /// removed. Returns whether there was one.
    pub fn forget_empty(data_dir: &Path) -> Result<bool, StoreError> {
        let path = data_dir.join(DATABASE_FILE);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.len() == 0 => {
                std::fs::remove_file(&path).map_err(|source| StoreError::DataDir {
                    path: path.clone(),
                    source,
                })?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn open_existing(path: &Path) -> Result<Self, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn =
            Connection::open_with_flags(path, flags).map_err(|source| StoreError::Open {
                path: path.to_owned(),
                source,
            })?;
        let sql =
            |doing: &'static str| move |source: rusqlite::Error| store_error(path, doing, source);
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sql("setting the busy timeout"))?;
        // Reading the header first: a file that is not a database fails here, before any
        // pragma could write to it.
        let header = read_header(&mut conn, path)?;
        check_integrity(&conn, path)?;
        header.check(path)?;
        switch_to_wal(&conn, path)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql("setting synchronous"))?;
        // A full sync of 100 000 devices sends a few hundred MB through the WAL. Copying it
        // back every 4 MB (SQLite's default) writes the same pages again and again; 40 MB
        // lets a page changed by many transactions be copied back once.
        conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)
            .map_err(sql("setting the WAL checkpoint"))?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(sql("enabling foreign keys"))?;

        migrate(&mut conn, path)?;
        Ok(Self {
            conn: Mutex::new(conn),
            path: path.to_owned(),
            _writer: None,
        })
    }

    /// Opens the existing store in `data_dir` for reading only: what-if commands read the last
    /// inventory this way, so that nothing they do can write it (no migration, no WAL switch,
    /// `query_only` on top of a read-only connection). The store must exist; a store of an
    /// older schema (not yet migrated by a newer easgate) opens too, and the methods that read
    /// tables it lacks say so ([`Store::directory`]).
    pub fn open_read_only(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join(DATABASE_FILE);
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn =
            Connection::open_with_flags(&path, flags).map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
        let sql = |doing: &'static str| {
            let path = path.clone();
            move |source: rusqlite::Error| StoreError::Sql {
                path: path.clone(),
                doing,
                source,
            }
        };
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sql("setting the busy timeout"))?;
        conn.pragma_update(None, "query_only", true)
            .map_err(sql("making the connection read-only"))?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(sql("reading the schema version"))?;
        let supported = migrations::SCHEMA_VERSION;
        if version > supported as i64 {
            return Err(StoreError::NewerSchema {
                path,
                found: version,
                supported,
            });
        }
        if version < 1 {
            return Err(StoreError::OlderSchema {
                path,
                found: version,
                supported,
            });
        }
        Ok(Self {
            conn: Mutex::new(conn),
            path,
            _writer: None,
        })
    }

    /// The id of the organization `name`, if a sync ever recorded it (never creates it).
    pub fn find_organization(&self, name: &str) -> Result<Option<OrgId>, StoreError> {
        self.conn()
            .query_row(
                "SELECT id FROM organizations WHERE name = ?1",
                [name],
                |row| row.get(0).map(OrgId),
            )
            .optional()
            .map_err(self.sql("looking up an organization"))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn()
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(self.sql("reading the schema version"))
    }

    /// The id of the organization `name`, created on first use.
    pub fn organization(&self, name: &str, now: i64) -> Result<OrgId, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO organizations (name, created_at) VALUES (?1, ?2)
             ON CONFLICT(name) DO NOTHING",
            (name, now),
        )
        .map_err(self.sql("adding an organization"))?;
        conn.query_row(
            "SELECT id FROM organizations WHERE name = ?1",
            [name],
            |row| row.get(0).map(OrgId),
        )
        .map_err(self.sql("looking up an organization"))
    }

    /// When the organization's last successful run ended.
    pub fn last_successful_sync(&self, org: OrgId) -> Result<Option<i64>, StoreError> {
        self.conn()
            .query_row(
                "SELECT last_success_sync_at FROM organizations WHERE id = ?1",
                [org.0],
                |row| row.get(0),
            )
            .optional()
            .map_err(self.sql("reading the last successful sync"))
            .map(Option::flatten)
    }

    /// Where the next quick sync starts: the start of the last successful quick or full run.
    pub fn sync_cursor(&self, org: OrgId) -> Result<Option<i64>, StoreError> {
        self.conn()
            .query_row(
                "SELECT sync_cursor FROM organizations WHERE id = ?1",
                [org.0],
                |row| row.get(0),
            )
            .optional()
            .map_err(self.sql("reading the sync cursor"))
            .map(Option::flatten)
    }

    /// The connection. A panic while it was held cannot have left a half-written change
    /// (an unfinished transaction rolls back when dropped), so a poisoned lock is taken over.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Maps an SQLite error to a [`StoreError`] saying what the store was doing.
    fn sql(&self, doing: &'static str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |source| store_error(&self.path, doing, source)
    }
}

/// What a store file's header says, read in one transaction.
struct Header {
    application_id: i64,
    version: i64,
    tables: i64,
}

/// One read transaction, so that the three facts describe the same moment even while another
/// process is creating the store.
fn read_header(conn: &mut Connection, path: &Path) -> Result<Header, StoreError> {
    let sql = |doing: &'static str| move |source: rusqlite::Error| store_error(path, doing, source);
    let tx = conn.transaction().map_err(sql("reading the header"))?;
    let application_id: i64 = tx
        .pragma_query_value(None, "application_id", |row| row.get(0))
        .map_err(sql("reading the application id"))?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sql("reading the schema version"))?;
    let tables: i64 = tx
        .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
        .map_err(sql("listing tables"))?;
    tx.commit().map_err(sql("reading the header"))?;
    Ok(Header {
        application_id,
        version,
        tables,
    })
}

/// SQLite's quick check of the file.
fn check_integrity(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let sql = |doing: &'static str| move |source: rusqlite::Error| store_error(path, doing, source);
    let check: Vec<String> = {
        let mut stmt = conn
            .prepare("PRAGMA quick_check")
            .map_err(sql("checking integrity"))?;
        stmt.query_map([], |row| row.get(0))
            .map_err(sql("checking integrity"))?
            .collect::<Result<_, _>>()
            .map_err(sql("checking integrity"))?
    };
    if check.first().map(String::as_str) != Some("ok") {
        return Err(StoreError::Corrupt {
            path: path.to_owned(),
            detail: check.into_iter().take(3).collect::<Vec<_>>().join("; "),
        });
    }
    Ok(())
}

impl Header {
    /// The file is empty or ours, of a schema this build knows.
    fn check(&self, path: &Path) -> Result<(), StoreError> {
        let Header {
            application_id,
            version,
            tables,
        } = *self;
        if (application_id != 0 && application_id != migrations::APPLICATION_ID)
            || (application_id == 0 && tables > 0)
        {
            return Err(StoreError::Foreign {
                path: path.to_owned(),
                found: application_id,
            });
        }
        if version > migrations::SCHEMA_VERSION as i64 {
            return Err(StoreError::NewerSchema {
                path: path.to_owned(),
                found: version,
                supported: migrations::SCHEMA_VERSION,
            });
        }
        Ok(())
    }
}

/// Puts the store in WAL mode.
fn switch_to_wal(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let sql = |doing: &'static str| move |source: rusqlite::Error| store_error(path, doing, source);
    // Switching to WAL needs the file to itself, and SQLite reports a conflict at once
    // rather than through the busy handler, so it is retried here within the same bound.
    let deadline = Instant::now() + BUSY_TIMEOUT;
    let mode: String = loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)) {
            Ok(mode) => break mode,
            Err(err)
                if err.sqlite_error_code() == Some(ErrorCode::DatabaseBusy)
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(err) => return Err(sql("switching to WAL")(err)),
        }
    };
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::NoWal {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Applies the missing migrations, one transaction each. The transaction takes the write lock
/// first and re-reads the version under it, so two processes opening a new store at once do
/// not both run a migration.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    loop {
        let failed = |version: usize| {
            move |source| StoreError::Migration {
                path: path.to_owned(),
                version,
                source,
            }
        };
        let locking = |source| StoreError::Sql {
            path: path.to_owned(),
            doing: "taking the write lock to migrate",
            source,
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(locking)?;
        let current: i64 = tx
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(locking)?;
        if current > migrations::SCHEMA_VERSION as i64 {
            return Err(StoreError::NewerSchema {
                path: path.to_owned(),
                found: current,
                supported: migrations::SCHEMA_VERSION,
            });
        }
        let Some(migration) = migrations::MIGRATIONS.get(current as usize) else {
            return tx.commit().map_err(locking);
        };
        let target = current as usize + 1;
        migration.apply(&tx).map_err(failed(target))?;
        tx.pragma_update(None, "user_version", target as i64)
            .map_err(failed(target))?;
        tx.pragma_update(None, "application_id", migrations::APPLICATION_ID)
            .map_err(failed(target))?;
        tx.commit().map_err(failed(target))?;
    }
}

fn encode<T: serde::Serialize>(what: &'static str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|source| StoreError::Encode { what, source })
}

fn decode<T: serde::de::DeserializeOwned>(what: &'static str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|err| StoreError::Decode {
        what,
        detail: err.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_only_store_reads_but_cannot_write_or_create() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        assert!(matches!(
            Store::open_read_only(&data),
            Err(StoreError::Open { .. })
        ));
        let org = Store::open(&data)
            .unwrap()
            .organization("contoso", 1)
            .unwrap();
        let store = Store::open_read_only(&data).unwrap();
        assert_eq!(store.find_organization("contoso").unwrap(), Some(org));
        assert_eq!(store.find_organization("fabrikam").unwrap(), None);
        let err = store.organization("fabrikam", 2).unwrap_err();
        assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
        assert!(err.to_string().contains("is read-only for this process"));
        assert_eq!(store.find_organization("fabrikam").unwrap(), None);
    }

    #[test]
    fn a_full_file_system_is_named_and_nothing_of_the_change_is_kept() {
        // `max_page_count` at the present size makes SQLite fail the first write that needs a
        // new page with SQLITE_FULL, the code a full disk gives.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        {
            let conn = store.conn();
            let pages: i64 = conn
                .pragma_query_value(None, "page_count", |row| row.get(0))
                .unwrap();
            conn.pragma_update(None, "max_page_count", pages).unwrap();
        }
        // Needs overflow pages: more than the file has.
        let long = "x".repeat(64 * 1024);
        let err = store.organization(&long, 1).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Unwritable {
                    doing: "adding an organization",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("could not be written while adding an organization"),
            "{err}"
        );
        assert_eq!(store.find_organization(&long).unwrap(), None);
        // A change that fits still goes through.
        assert!(store.organization("contoso", 1).is_ok());
    }

    #[test]
    fn a_new_store_is_migrated_in_wal_mode_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("nested/data");
        let org = {
            let store = Store::open(&data).unwrap();
            assert_eq!(
                store.schema_version().unwrap(),
                migrations::SCHEMA_VERSION as i64
            );
            let mode: String = store
                .conn()
                .pragma_query_value(None, "journal_mode", |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
            let fk: i64 = store
                .conn()
                .pragma_query_value(None, "foreign_keys", |r| r.get(0))
                .unwrap();
            assert_eq!(fk, 1);
            store.organization("Contoso", 10).unwrap()
        };
        let store = Store::open(&data).unwrap();
        assert_eq!(store.path(), data.join(DATABASE_FILE));
        assert_eq!(store.organization("Contoso", 20).unwrap(), org);
        assert_ne!(store.organization("Fabrikam", 20).unwrap(), org);
    }

    #[test]
    fn the_store_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Store>();
    }

    #[cfg(unix)]
    #[test]
    fn a_new_data_directory_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        Store::open(&data).unwrap();
        let mode = std::fs::metadata(&data).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn two_processes_creating_the_store_at_once_both_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DATABASE_FILE);
        let start = std::sync::Barrier::new(4);
        std::thread::scope(|scope| {
            let openers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        start.wait();
                        Store::open_file(&path).map(|store| store.schema_version().unwrap())
                    })
                })
                .collect();
            for opener in openers {
                assert_eq!(
                    opener.join().unwrap().unwrap(),
                    migrations::SCHEMA_VERSION as i64
                );
            }
        });
    }

    /// Regression (hostile run, hole 9): a 0-byte store file was silently taken as a new
    /// empty store, losing the audit trail and the notices' de-duplication.
    #[test]
    fn an_emptied_store_file_is_refused_until_the_operator_says_init() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let path = dir.path().join(DATABASE_FILE);
        std::fs::File::create(&path).unwrap().set_len(0).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Empty { .. }), "{err:?}");
        assert!(err.to_string().contains("--init"), "{err}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "left as it was");
        assert!(Store::forget_empty(dir.path()).unwrap());
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.schema_version().unwrap(),
            migrations::SCHEMA_VERSION as i64
        );
        // A store with contents is never forgotten.
        assert!(!Store::forget_empty(dir.path()).unwrap());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains(".new-"))
            .collect();
        assert!(names.is_empty(), "no creation leftovers: {names:?}");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DATABASE_FILE);
        drop(Store::open_file(&path).unwrap());
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "user_version", 99).unwrap();
        }
        let err = Store::open_file(&path).unwrap_err();
        assert!(
            matches!(err, StoreError::NewerSchema { found: 99, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("newer than this easgate"), "{err}");
    }

    #[test]
    fn a_corrupted_file_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DATABASE_FILE);
        let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&path, &garbage).unwrap();
        let err = Store::open_file(&path).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), garbage);
    }

    #[test]
    fn a_damaged_page_is_found_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DATABASE_FILE);
        {
            let store = Store::open_file(&path).unwrap();
            let org = store.organization("Contoso", 1).unwrap();
            for i in 0..200 {
                store
                    .organization(&format!("org-{i:04}-{}", "x".repeat(200)), 1)
                    .unwrap();
            }
            assert_eq!(org.0, 1);
            store
                .conn()
                .pragma_update(None, "wal_checkpoint", "TRUNCATE")
                .unwrap();
        }
        // Overwrite the middle of the file (past the header and schema page) with noise.
        let mut bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() > 4 * 4096, "{}", bytes.len());
        for b in &mut bytes[2 * 4096 + 100..3 * 4096] {
            *b = 0x5a;
        }
        std::fs::write(&path, &bytes).unwrap();
        let err = Store::open_file(&path).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    }

    #[test]
    fn another_programs_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("CREATE TABLE notes (body TEXT)")
                .unwrap();
        }
        let err = Store::open_file(&path).unwrap_err();
        assert!(matches!(err, StoreError::Foreign { .. }), "{err:?}");
    }
}
