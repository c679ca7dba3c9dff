//! One writer per data directory: the daemon and `easgate sync` hold an exclusive lock on
//! `DATA_DIR/writer.lock` for as long as they live, so that a second process cannot run the
//! store's recovery under a running daemon (which would abandon its in-flight work). The lock
//! is `flock(2)`'s: the kernel drops it when the process dies, however it dies, so a SIGKILL
//! never leaves a stale lock behind. The file holds the holder's pid, for the error message.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use super::StoreError;

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "writer.lock";

/// Held while it lives.
#[derive(Debug)]
pub struct WriterLock {
    _file: File,
}

impl WriterLock {
    /// Takes the lock of `data_dir` (which must exist), or says which process holds it.
    pub fn acquire(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join(LOCK_FILE);
        let io = |source| StoreError::Lock {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        // SAFETY: flock on a descriptor this function owns; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io(err));
            }
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(StoreError::InUse {
                data_dir: data_dir.to_owned(),
                holder: holder.trim().parse().ok(),
            });
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_naming_the_holder_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = WriterLock::acquire(dir.path()).unwrap();
        let err = WriterLock::acquire(dir.path()).unwrap_err();
        assert!(
            matches!(&err, StoreError::InUse { holder: Some(pid), .. } if *pid == std::process::id()),
            "{err}"
        );
        assert!(
            err.to_string().contains(&std::process::id().to_string()),
            "{err}"
        );
        drop(first);
        WriterLock::acquire(dir.path()).unwrap();
    }
}
