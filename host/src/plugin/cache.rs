//! The compile cache: compiled plugin versions on disk, so a restart does not recompile them.
//!
//! Compiling a component with Cranelift costs about a second per few MiB of Wasm; a Python or
//! JavaScript plugin carries its whole interpreter (12 to 20 MiB) and takes seconds to compile
//! (docs/benchmarks.md). With a cache directory configured
//! ([`PluginEngineBuilder::compile_cache`](super::engine::PluginEngineBuilder::compile_cache)),
//! each compiled version is written once and loaded back on the next start.
//!
//! An entry is keyed by the component's SHA-256 digest and by a hash of everything in the
//! engine's configuration that compiled code depends on (wasmtime's
//! `precompile_compatibility_hash`: its version, the target, Cranelift flags, tunables), so a
//! new easgate build or another engine configuration never picks up a stale entry. An entry
//! ends with a SHA-256 over its key and its bytes: loading compiled code from disk is trusting
//! it as native code, so a truncated, corrupted or renamed entry is detected before wasmtime
//! sees it and the version is compiled again from its Wasm. wasmtime checks its own header
//! (version, flags) on top of that. Nothing that goes wrong here fails a load: the cache only
//! ever saves time.
//!
//! The directory holds native code the host runs: it is created with mode 0700, and an existing
//! directory that group or others may write is refused at start-up. Entries are never pruned;
//! delete the directory at any time to reclaim the space.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::Digest;

/// Bytes of the checksum that ends every entry.
const CHECKSUM_LEN: usize = 32;

/// A directory of compiled components for one engine configuration.
#[derive(Debug, Clone)]
pub(crate) struct CompileCache {
    dir: PathBuf,
    /// Hex SHA-256 of the engine's compatibility hash: part of every entry's name.
    engine_key: String,
}

/// How a lookup went; the load reports it in [`PluginMeta`](super::PluginMeta).
#[derive(Debug)]
pub(crate) enum Lookup {
    Hit(Component),
    /// No entry for this digest and engine.
    Miss,
    /// An entry was there but unusable (corrupt, truncated, or refused by wasmtime); it is
    /// removed and the version is compiled afresh.
    Invalid(String),
}

impl CompileCache {
    /// Uses `dir`, creating it if needed.
    pub(crate) fn open(dir: &Path, engine: &Engine) -> std::io::Result<Self> {
        create_private_dir(dir)?;
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = hex(&hasher.0.finalize());
        Ok(Self {
            dir: dir.to_owned(),
            engine_key,
        })
    }

    /// Where the entry of `digest` lives: `<digest>-<engine key prefix>.cwasm`.
    pub(crate) fn entry_path(&self, digest: &Digest) -> PathBuf {
        self.dir
            .join(format!("{}-{}.cwasm", digest.hex(), &self.engine_key[..16]))
    }

    pub(crate) fn lookup(&self, engine: &Engine, digest: &Digest) -> Lookup {
        let path = self.entry_path(digest);
        let entry = match fs::read(&path) {
            Ok(entry) => entry,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Lookup::Miss,
            Err(err) => return Lookup::Invalid(format!("cannot read {}: {err}", path.display())),
        };
        let invalid = |reason: String| {
            // A bad entry would fail every start; replace it with a good one.
            let _ = fs::remove_file(&path);
            Lookup::Invalid(format!("{}: {reason}", path.display()))
        };
        let Some(split) = entry.len().checked_sub(CHECKSUM_LEN) else {
            return invalid("shorter than its checksum".into());
        };
        let (artifact, checksum) = entry.split_at(split);
        if checksum != self.checksum(digest, artifact).as_slice() {
            return invalid("checksum mismatch (truncated or corrupted)".into());
        }
        // SAFETY: wasmtime requires the bytes to be an artifact it produced itself. They are:
        // the checksum above proves they are exactly what `store` wrote for this digest and
        // engine configuration, and the directory is private to the host (see the module
        // docs). wasmtime still checks its header against this engine and errs on a mismatch.
        match unsafe { Component::deserialize(engine, artifact) } {
            Ok(component) => Lookup::Hit(component),
            Err(err) => invalid(format!("refused by wasmtime: {err}")),
        }
    }

    /// Writes the compiled `component` of `digest`; atomically, so a crash mid-write or a
    /// concurrent reader never sees half an entry.
    pub(crate) fn store(&self, digest: &Digest, component: &Component) -> anyhow::Result<()> {
        let artifact = component.serialize()?;
        let checksum = self.checksum(digest, &artifact);
        let path = self.entry_path(digest);
        // Unique per process and write, so two writers of one entry never share a file.
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let temp = self.dir.join(format!(
            ".{}.{}.{}.tmp",
            digest.hex(),
            std::process::id(),
            WRITES.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            let mut file = fs::File::create(&temp)?;
            file.write_all(&artifact)?;
            file.write_all(&checksum)?;
            file.sync_all()?;
            fs::rename(&temp, &path)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        Ok(written?)
    }

    /// SHA-256 over the entry's key and its bytes: binds an entry to its name.
    fn checksum(&self, digest: &Digest, artifact: &[u8]) -> [u8; CHECKSUM_LEN] {
        let mut sha = Sha256::new();
        sha.update(digest.hex().as_bytes());
        sha.update(self.engine_key.as_bytes());
        sha.update(artifact);
        sha.finalize().into()
    }
}

/// Creates `dir` private to this user, or checks that an existing one is not writable by
/// others: whoever can write an entry (checksum included) chooses native code the host runs.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir)?.permissions().mode();
        if mode & 0o022 != 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "it is writable by group or others (mode {:o}), and it holds native code \
                     the host runs; make it private (chmod 700)",
                    mode & 0o777
                ),
            ));
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Feeds a `Hash` into SHA-256, so the engine key is stable across processes and Rust
/// releases (`DefaultHasher` promises neither).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::Config;

    use super::*;

    /// A component small enough to compile in a test, different per `tag`.
    fn component(engine: &Engine, tag: &str) -> (Component, Digest) {
        let wat = format!("(component (core module (func (export \"{tag}\"))))");
        let component = Component::new(engine, &wat).unwrap();
        (component, Digest::of(wat.as_bytes()))
    }

    fn engine(configure: impl FnOnce(&mut Config)) -> Engine {
        let mut config = Config::new();
        configure(&mut config);
        Engine::new(&config).unwrap()
    }

    fn plain() -> Engine {
        engine(|_| ())
    }

    #[test]
    fn a_stored_entry_is_found_again() {
        let dir = tempfile::tempdir().unwrap();
        let engine = plain();
        let cache = CompileCache::open(&dir.path().join("cache"), &engine).unwrap();
        let (compiled, digest) = component(&engine, "a");
        assert!(matches!(cache.lookup(&engine, &digest), Lookup::Miss));
        cache.store(&digest, &compiled).unwrap();
        assert!(matches!(cache.lookup(&engine, &digest), Lookup::Hit(_)));
        // Another digest is another entry.
        let (_, other) = component(&engine, "b");
        assert!(matches!(cache.lookup(&engine, &other), Lookup::Miss));
    }

    #[test]
    fn corrupt_truncated_and_renamed_entries_are_refused_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let engine = plain();
        let cache = CompileCache::open(dir.path(), &engine).unwrap();
        let (compiled, digest) = component(&engine, "a");
        let (_, other) = component(&engine, "b");
        type Damage = fn(&mut Vec<u8>);
        let damages: [(&str, Damage); 4] = [
            ("a flipped bit", |entry| {
                let middle = entry.len() / 2;
                entry[middle] ^= 1;
            }),
            ("truncated", |entry| entry.truncate(entry.len() / 3)),
            ("shorter than a checksum", |entry| entry.truncate(5)),
            ("empty", Vec::clear),
        ];
        for (what, damage) in damages {
            cache.store(&digest, &compiled).unwrap();
            let path = cache.entry_path(&digest);
            let mut entry = fs::read(&path).unwrap();
            damage(&mut entry);
            fs::write(&path, &entry).unwrap();
            match cache.lookup(&engine, &digest) {
                Lookup::Invalid(reason) => assert!(reason.contains("cwasm"), "{what}: {reason}"),
                other => panic!("{what}: {other:?}"),
            }
            assert!(!path.exists(), "{what}: the bad entry is removed");
        }
        // An intact entry under another digest's name: the checksum binds it to its own.
        cache.store(&digest, &compiled).unwrap();
        fs::rename(cache.entry_path(&digest), cache.entry_path(&other)).unwrap();
        assert!(matches!(
            cache.lookup(&engine, &other),
            Lookup::Invalid(reason) if reason.contains("checksum")
        ));
    }

    #[cfg(unix)]
    #[test]
    fn a_directory_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
        let err = CompileCache::open(&shared, &plain())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("writable by group or others (mode 777)"),
            "{err}"
        );
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o700)).unwrap();
        CompileCache::open(&shared, &plain()).unwrap();
    }

    #[test]
    fn another_engine_configuration_misses_and_wasmtime_refuses_its_code() {
        let dir = tempfile::tempdir().unwrap();
        // Fuel metering changes the code: wasmtime checks it when loading compiled code.
        let (ours, theirs) = (
            plain(),
            engine(|config| {
                config.consume_fuel(true);
            }),
        );
        let our_cache = CompileCache::open(dir.path(), &ours).unwrap();
        let their_cache = CompileCache::open(dir.path(), &theirs).unwrap();
        assert_ne!(our_cache.engine_key, their_cache.engine_key);
        let (compiled, digest) = component(&theirs, "a");
        their_cache.store(&digest, &compiled).unwrap();
        assert!(matches!(our_cache.lookup(&ours, &digest), Lookup::Miss));

        // Even with a checksum that matches our key, wasmtime's own header check refuses code
        // compiled for another configuration, and the lookup says so instead of crashing.
        let artifact = compiled.serialize().unwrap();
        let mut entry = artifact.clone();
        entry.extend_from_slice(&our_cache.checksum(&digest, &artifact));
        fs::write(our_cache.entry_path(&digest), entry).unwrap();
        match our_cache.lookup(&ours, &digest) {
            Lookup::Invalid(reason) => assert!(reason.contains("refused by wasmtime"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
}
