//! The store's faults through the real `easgate sync`: a full disk, a read-only data directory,
//! a corrupted database file. Each must stop the sync with an error that names the store and
//! the fault, apply nothing that is not recorded, and leave a store the next run can use (or,
//! when damaged, one it refuses to touch).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use easgate::store::{DATABASE_FILE, RunOutcome, Store};
use easgate_lab::{Lab, NewDevices};

use crate::support::lab::{
    add_notify, assert_enforced, expected, sync_lab, write_config, write_config_over,
};
use crate::support::{
    Transport, easgate_within, json_stdout, lab_organization, stderr, stdout, succeeded, within,
};

const LIMIT: Duration = Duration::from_secs(120);

/// `easgate sync --json` with `config`; `setup` runs in the child between fork and exec.
async fn sync_with(
    config: &Path,
    setup: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_easgate"));
    command
        .args(["sync", "--json", "--config", config.to_str().unwrap()])
        .env("EASGATE_LOG", "warn");
    // SAFETY: `setup` only makes system calls that are safe between fork and exec.
    unsafe { command.pre_exec(setup) };
    within(
        LIMIT,
        tokio::task::spawn_blocking(move || command.output().expect("easgate starts")),
    )
    .await
    .unwrap()
}

async fn sync_ok(config: &Path) -> serde_json::Value {
    let out = sync_with(config, || Ok(())).await;
    succeeded(&out);
    json_stdout(&out)
}

/// A lab with a synced connector in a fresh directory, then 40 new devices to decide (and
/// notices to send): the next sync has a large transaction to write.
async fn synced() -> (Lab, tempfile::TempDir, std::path::PathBuf) {
    synced_over(Transport::Rest).await
}

async fn synced_over(transport: Transport) -> (Lab, tempfile::TempDir, std::path::PathBuf) {
    let lab = sync_lab(300).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_over(&lab, dir.path(), 4, transport);
    add_notify(&config, lab.smtp_addr().port(), "5s");
    sync_ok(&config).await;
    lab.control()
        .add_devices(&NewDevices {
            count: 40,
            mailbox: None,
            enroll: None,
        })
        .unwrap();
    (lab, dir, config)
}

/// No edit reached Exchange and no mail left since `base`.
fn nothing_applied(lab: &Lab, base: &easgate_lab::CounterSnapshot) {
    let now = lab.control().counters();
    assert_eq!(
        now.calls("Set-CASMailbox"),
        base.calls("Set-CASMailbox"),
        "commands sent by a run that could not record them"
    );
    assert_eq!(now.mails, base.mails, "notices sent by a run that failed");
}

/// After a clean run: the lab as decided, no unfinished command, every notice sent.
fn converged(lab: &Lab, data: &Path) {
    assert_enforced(lab, expected);
    let store = Store::open_read_only(data).unwrap();
    let org = store
        .find_organization(&lab_organization(lab).name)
        .unwrap()
        .unwrap();
    assert!(store.unfinished(org).unwrap().is_empty());
    let counts = store.notice_counts(org).unwrap();
    assert_eq!(counts.pending, 0, "{counts:?}");
    assert_eq!(lab.control().mails().len() as u64, counts.sent);
}

over_transports!(a_full_disk_stops_the_sync_with_a_clear_error_and_the_next_run_converges);
async fn a_full_disk_stops_the_sync_with_a_clear_error_and_the_next_run_converges(
    transport: Transport,
) {
    let (lab, dir, config) = synced_over(transport).await;
    let data = dir.path().join("data");
    let base = lab.control().counters();
    // A real write failure without root or a tiny file system: RLIMIT_FSIZE caps the size of
    // any file the process writes (root included), so SQLite's writes past 64 KiB of the WAL
    // or the database fail in the kernel, as on a full disk. SIGXFSZ, which the kernel sends
    // with the failure, is ignored (inherited across exec) so that the write returns an error
    // instead of killing the process.
    let out = sync_with(&config, || {
        let limit = libc::rlimit {
            rlim_cur: 64 * 1024,
            rlim_max: 64 * 1024,
        };
        // SAFETY: plain system calls on values owned here.
        unsafe {
            if libc::signal(libc::SIGXFSZ, libc::SIG_IGN) == libc::SIG_ERR
                || libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    })
    .await;
    let message = stderr(&out);
    assert!(!out.status.success(), "{}", stdout(&out));
    let path = data.join(DATABASE_FILE);
    assert!(
        message.contains(&format!(
            "the store {} could not be written while",
            path.display()
        )),
        "{message}"
    );
    assert!(
        message.contains("nothing of that change was kept"),
        "{message}"
    );
    nothing_applied(&lab, &base);
    // The failed run still closed its remote PowerShell sessions.
    assert_eq!(lab.control().powershell_shells(), 0);

    // The store is whole: it opens (integrity check included), and the failed run recorded
    // no verdict, command or notice: it stays `running` until the next start finds it.
    let store = Store::open(&data).unwrap();
    let org = store
        .find_organization(&lab_organization(&lab).name)
        .unwrap()
        .unwrap();
    let failed = store.recent_runs(org, 1).unwrap().remove(0);
    assert_eq!(failed.outcome, RunOutcome::Running, "{failed:?}");
    assert_eq!(failed.counts, Default::default(), "{failed:?}");
    assert!(store.journal(failed.id).unwrap().is_empty());
    assert!(
        store
            .notices(org, 10_000)
            .unwrap()
            .iter()
            .all(|n| n.run != Some(failed.id))
    );
    drop(store);

    let summary = sync_ok(&config).await;
    assert_eq!(summary["outcome"], "succeeded", "{summary}");
    converged(&lab, &data);
    assert_eq!(lab.control().powershell_shells(), 0);
}

/// Runs the child as `nobody` when the test runs as root, for whom permissions do not bite.
fn unprivileged() -> std::io::Result<()> {
    // SAFETY: plain system calls.
    unsafe {
        if libc::geteuid() == 0
            && (libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(65534) != 0
                || libc::setuid(65534) != 0)
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_data_directory_stops_the_sync_with_a_clear_error() {
    let (lab, dir, config) = synced().await;
    let data = dir.path().join("data");
    let db = data.join(DATABASE_FILE);
    // The connector's user may read everything and write nothing (as root, the child runs as
    // `nobody`: the files stay root's).
    chmod(dir.path(), 0o755);
    chmod(&data, 0o555);
    chmod(&db, 0o444);
    let before = std::fs::read(&db).unwrap();
    let base = lab.control().counters();
    let out = sync_with(&config, unprivileged).await;
    let message = stderr(&out);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        message.contains(&format!(
            "the store {} is read-only for this process",
            db.display()
        )),
        "{message}"
    );
    nothing_applied(&lab, &base);
    assert_eq!(std::fs::read(&db).unwrap(), before);

    // An empty data directory the connector cannot write: no store can be created.
    let fresh = tempfile::tempdir().unwrap();
    chmod(fresh.path(), 0o755);
    std::fs::create_dir(fresh.path().join("data")).unwrap();
    chmod(&fresh.path().join("data"), 0o555);
    let other = write_config(&lab, fresh.path(), 4);
    let out = sync_with(&other, unprivileged).await;
    let message = stderr(&out);
    assert!(!out.status.success(), "{}", stdout(&out));
    let never = fresh.path().join("data").join(DATABASE_FILE);
    assert!(
        message.contains(&format!(
            "cannot open the store {}: the data directory must be writable",
            never.display()
        )),
        "{message}"
    );
    assert!(!never.exists());

    chmod(&data, 0o700);
    chmod(&db, 0o600);
    let summary = sync_ok(&config).await;
    assert_eq!(summary["outcome"], "succeeded", "{summary}");
    converged(&lab, &data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_store_is_refused_and_left_as_it_is() {
    let (lab, dir, config) = synced().await;
    let db = dir.path().join("data").join(DATABASE_FILE);
    // A disk error in the middle of the file: a page of garbage after the header.
    let mut bytes = std::fs::read(&db).unwrap();
    let page = 4096;
    assert!(bytes.len() > 3 * page);
    bytes[2 * page..3 * page].fill(0xA5);
    std::fs::write(&db, &bytes).unwrap();
    let base = lab.control().counters();
    let out = sync_with(&config, || Ok(())).await;
    let message = stderr(&out);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(message.contains(&db.display().to_string()), "{message}");
    assert!(message.contains("corrupted"), "{message}");
    assert!(message.contains("left as it is"), "{message}");
    assert_eq!(std::fs::read(&db).unwrap(), bytes, "the file was changed");
    nothing_applied(&lab, &base);
    assert_eq!(
        lab.control().counters().exchange.commands,
        base.exchange.commands
    );
}

/// Regression (hostile run, hole 9): an emptied store file was taken as a new store, and the
/// run went on without its audit trail or notice de-duplication. The CLI now refuses it until
/// the operator says `--init`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_store_is_refused_until_init() {
    let (lab, dir, config) = synced().await;
    let db = dir.path().join("data").join(DATABASE_FILE);
    std::fs::File::create(&db).unwrap().set_len(0).unwrap();
    let base = lab.control().counters();
    let out = sync_with(&config, || Ok(())).await;
    let message = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{message}");
    assert!(
        message.contains("is empty (0 bytes)") && message.contains("--init"),
        "{message}"
    );
    nothing_applied(&lab, &base);
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0);

    let config = config.to_str().unwrap();
    let out = easgate_within(LIMIT, &["sync", "--init", "--config", config]).await;
    succeeded(&out);
    assert!(std::fs::metadata(&db).unwrap().len() > 0);
}
