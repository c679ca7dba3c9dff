//! Which plugin version is active, and hot reload from the plugin directory.
//!
//! The registry always holds the built-in plugins (embedded in the binary), plus every plugin
//! of the directory: `NAME.wasm` with an optional `NAME.toml` manifest. For each world one
//! plugin name is *selected* (by default the built-in's name, so `access-policy.wasm` in the
//! directory replaces the built-in policy). The active version of a world is the selected
//! plugin's last good version, or the built-in when the selected one is missing or never
//! loaded.
//!
//! A changed file is compiled, configured and self-checked on the side; only a version that
//! passes replaces the old one, atomically (an `ArcSwap`), so evaluations in flight finish on
//! the version they started with. A rejected version is recorded with its reason and the last
//! good one keeps serving. Deleting a plugin's `.wasm` drops it (back to the built-in).
//!
//! Plugins load only from regular files directly inside the directory: a plugin name has no
//! path separator, and a symbolic link (or a FIFO, a device…) named `NAME.wasm` or `NAME.toml`
//! is rejected, so a writer of the directory cannot make the connector read, hash or report
//! on a file elsewhere. With digest pinning ([`RegistryOptions::allowed_digests`]) a version
//! whose digest is not listed is rejected before it is even compiled.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use notify_debouncer_mini::notify::RecursiveMode;
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};
use tokio::sync::watch;

use super::loaded::{LoadedPlugin, PluginSpec, load};
use super::manifest::{Manifest, ManifestError, validate_name};
use super::org_policy::{
    Binding, OrgPolicyError, OrgPolicyFailure, OrgPolicyOptions, OrgPolicyStatus, OrgSettings,
    file_of,
};
use super::{
    AccessPolicyPlugin, Digest, NoticeTemplatePlugin, PluginEngine, PluginError, PluginErrorKind,
    Source, World,
};

/// The built-in access policy, embedded (see `host/build.rs`).
pub const BUILTIN_ACCESS_POLICY: &[u8] = include_bytes!(concat!(
    env!("EASGATE_PLUGIN_WASM_DIR"),
    "/access_policy.wasm"
));
/// The built-in notice template, embedded.
pub const BUILTIN_NOTICE_TEMPLATE: &[u8] = include_bytes!(concat!(
    env!("EASGATE_PLUGIN_WASM_DIR"),
    "/notice_template.wasm"
));

/// Rejections remembered per plugin, newest last.
const REJECTIONS_KEPT: usize = 10;
/// Quiet time after a file event before the plugin is reloaded: lets a writer finish.
pub const DEBOUNCE: Duration = Duration::from_millis(20);

/// Loads a built-in plugin with `settings` (a JSON object).
pub fn load_builtin(
    engine: &PluginEngine,
    world: World,
    settings: &str,
) -> Result<LoadedPlugin, PluginError> {
    let bytes = match world {
        World::AccessPolicy => BUILTIN_ACCESS_POLICY,
        World::NoticeTemplate => BUILTIN_NOTICE_TEMPLATE,
    };
    load(
        engine,
        PluginSpec {
            name: world.builtin_name().to_owned(),
            bytes,
            source: Source::Builtin,
            manifest: None,
            settings_override: Some(settings.to_owned()),
        },
    )
}

/// How the registry is set up; see [`PluginRegistry::new`].
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// The watched plugin directory; `None` runs on the built-ins alone.
    pub dir: Option<PathBuf>,
    /// The selected access policy's name.
    pub access_policy: String,
    /// The selected notice template's name.
    pub notice_template: String,
    /// Settings (JSON objects) for the built-in plugins.
    pub builtin_access_settings: String,
    pub builtin_notice_settings: String,
    /// When set, only directory plugins whose `.wasm` has one of these digests load (the
    /// built-ins always do).
    pub allowed_digests: Option<Vec<Digest>>,
    /// The organizations with a policy of their own (`[organization.policy]`).
    pub organizations: Vec<OrgPolicyOptions>,
}

impl RegistryOptions {
    /// The options `[sync]` and the organizations' `[organization.policy]` ask for. Digests
    /// were checked when the configuration loaded.
    pub fn from_config(config: &crate::config::Config) -> Self {
        let sync = &config.sync;
        Self {
            organizations: OrgPolicyOptions::from_config(config),
            dir: sync.plugin_dir.clone(),
            access_policy: sync.access_policy.clone(),
            builtin_access_settings: sync.builtin_policy_json(),
            allowed_digests: sync
                .allowed_digests
                .as_ref()
                .map(|list| list.iter().filter_map(|d| Digest::parse(d)).collect()),
            ..Self::default()
        }
    }
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            dir: None,
            access_policy: World::AccessPolicy.builtin_name().to_owned(),
            notice_template: World::NoticeTemplate.builtin_name().to_owned(),
            builtin_access_settings: "{}".to_owned(),
            builtin_notice_settings: "{}".to_owned(),
            allowed_digests: None,
            organizations: Vec::new(),
        }
    }
}

/// A version that was refused, and why.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// `None` when the file could not even be read.
    pub digest: Option<Digest>,
    pub kind: PluginErrorKind,
    pub reason: String,
    pub at: SystemTime,
}

/// What the registry knows of one directory plugin.
#[derive(Debug, Clone)]
pub struct PluginStatus {
    pub name: String,
    pub path: PathBuf,
    /// The last good version's world and digest.
    pub loaded: Option<(World, Digest)>,
    /// Whether that version is the active one of its world.
    pub active: bool,
    pub rejections: Vec<Rejection>,
}

struct DirEntry {
    path: PathBuf,
    loaded: Option<LoadedPlugin>,
    /// The version `loaded` replaced: what serves again if `loaded` is rolled back.
    previous: Option<LoadedPlugin>,
    /// Digest of the `.wasm` and manifest bytes last looked at, to skip duplicate events.
    fingerprint: Option<Digest>,
    /// Size and modification time of both files when they were last read; see
    /// [`PluginRegistry::reload_if_changed`].
    stamp: Option<FileStamp>,
    rejections: VecDeque<Rejection>,
}

impl DirEntry {
    fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            loaded: None,
            previous: None,
            fingerprint: None,
            stamp: None,
            rejections: VecDeque::new(),
        }
    }
}

/// Reads `path` if it is a regular file itself: a symbolic link is refused (`O_NOFOLLOW`, so
/// no swap between a check and the open), and so is anything else that is not a plain file (a
/// FIFO would block the reload forever: `O_NONBLOCK` makes its open return at once).
fn read_regular(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|err| {
            if err.raw_os_error() == Some(libc::ELOOP) {
                std::io::Error::other(
                    "it is a symbolic link; plugins load only from regular files inside the \
                     plugin directory",
                )
            } else {
                err
            }
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(
            "it is not a regular file; plugins load only from regular files inside the plugin \
             directory",
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Size and modification time of a plugin's `.wasm` and manifest (`None`: absent).
type FileStamp = [Option<(u64, SystemTime)>; 2];

fn file_stamp(wasm: &Path, manifest: &Path) -> FileStamp {
    [wasm, manifest].map(|path| {
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.len(), meta.modified().ok()?))
    })
}

pub struct PluginRegistry {
    engine: PluginEngine,
    options: RegistryOptions,
    builtin_access: Arc<AccessPolicyPlugin>,
    builtin_notice: Arc<NoticeTemplatePlugin>,
    active_access: ArcSwap<AccessPolicyPlugin>,
    active_notice: ArcSwap<NoticeTemplatePlugin>,
    entries: Mutex<BTreeMap<String, DirEntry>>,
    /// Serializes reloads, so that of two racing reloads of one file the later read wins.
    reload_lock: Mutex<()>,
    /// Bumped after every reload attempt, accepted or not; lets callers wait for one.
    generation: watch::Sender<u64>,
    /// For `/metrics`: directory versions loaded and rejected since start.
    reloads: Mutex<ReloadCounts>,
    /// The organizations with a policy of their own, by name. When both are held, this lock
    /// is taken first, then `entries` (see `update_orgs`), never the other way round.
    orgs: Mutex<BTreeMap<String, Binding>>,
}

/// Directory plugin versions loaded, and rejected by kind of error, since the registry started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadCounts {
    pub loaded: u64,
    pub rejected: BTreeMap<PluginErrorKind, u64>,
}

impl PluginRegistry {
    /// Loads the built-ins and every plugin in `options.dir` (creating the directory if it is
    /// missing). A built-in that fails to load is a start-up error; a directory plugin that
    /// fails is recorded as rejected.
    pub fn new(engine: PluginEngine, options: RegistryOptions) -> anyhow::Result<Arc<Self>> {
        let builtin_access = match load_builtin(
            &engine,
            World::AccessPolicy,
            &options.builtin_access_settings,
        )? {
            LoadedPlugin::Access(plugin) => plugin,
            LoadedPlugin::Notice(_) => {
                unreachable!("the built-in access policy is an access policy")
            }
        };
        let builtin_notice = match load_builtin(
            &engine,
            World::NoticeTemplate,
            &options.builtin_notice_settings,
        )? {
            LoadedPlugin::Notice(plugin) => plugin,
            LoadedPlugin::Access(_) => unreachable!("the built-in template is a template"),
        };
        let registry = Arc::new(Self {
            active_access: ArcSwap::new(builtin_access.clone()),
            active_notice: ArcSwap::new(builtin_notice.clone()),
            builtin_access,
            builtin_notice,
            engine,
            entries: Mutex::new(BTreeMap::new()),
            reload_lock: Mutex::new(()),
            generation: watch::channel(0).0,
            reloads: Mutex::new(ReloadCounts::default()),
            orgs: Mutex::new(
                options
                    .organizations
                    .iter()
                    .map(|o| (o.organization.clone(), Binding::new(o.clone())))
                    .collect(),
            ),
            options,
        });
        if let Some(dir) = &registry.options.dir {
            std::fs::create_dir_all(dir).map_err(|err| {
                anyhow::anyhow!(
                    "cannot create the plugin directory {}: {err}",
                    dir.display()
                )
            })?;
            registry.rescan();
        }
        // An empty directory reloads nothing: bind the organizations here in any case.
        registry.update_orgs();
        Ok(registry)
    }

    /// The policy that decides organization `org`'s syncs: its own (`[organization.policy]`)
    /// or, without one, the active `[sync]` policy. Hold the `Arc` for a whole sync.
    pub fn policy_for(&self, org: &str) -> Result<Arc<AccessPolicyPlugin>, OrgPolicyError> {
        let orgs = self.orgs.lock().expect("organization policies lock");
        let Some(binding) = orgs.get(org) else {
            return Ok(self.access_policy());
        };
        binding.active.clone().ok_or_else(|| OrgPolicyError {
            organization: org.to_owned(),
            failure: binding.failure.clone().unwrap_or_else(|| OrgPolicyFailure {
                kind: PluginErrorKind::Invalid,
                reason: "no policy version was put in place yet".into(),
                at: SystemTime::now(),
            }),
        })
    }

    /// The organizations with a policy of their own, and how each stands.
    pub fn org_policies(&self) -> Vec<OrgPolicyStatus> {
        let orgs = self.orgs.lock().expect("organization policies lock");
        orgs.values().map(Binding::status).collect()
    }

    /// Re-reads the organizations' settings files that changed and rebuilds what they feed.
    pub fn refresh_org_settings(&self) {
        let _serialized = self.reload_lock.lock().expect("reload lock");
        self.update_orgs();
        self.generation.send_modify(|generation| *generation += 1);
    }

    /// Binds each organization with a policy of its own to the current version of its plugin
    /// and its current settings, where either changed since the last attempt.
    fn update_orgs(&self) {
        let mut orgs = self.orgs.lock().expect("organization policies lock");
        for binding in orgs.values_mut() {
            let version = match self.version_of(&binding.options.plugin) {
                Ok(version) => version,
                Err((kind, reason)) => {
                    binding.tried = None;
                    binding.fail(kind, reason);
                    continue;
                }
            };
            let origin = binding.settings_origin();
            let settings_named = match &binding.options.settings {
                OrgSettings::File(_) => format!("of {origin}"),
                _ => origin.clone(),
            };
            let described = |cause: &str| {
                format!(
                    "access policy {:?} ({}, {}) with the settings {settings_named}: {cause}",
                    version.meta.name,
                    file_of(&version.meta.source),
                    version.meta.digest,
                )
            };
            let settings = match binding.settings(&version) {
                Ok(settings) => settings,
                Err(cause) => {
                    // The cause names the file already.
                    let reason = format!(
                        "access policy {:?} ({}): {cause}",
                        version.meta.name,
                        file_of(&version.meta.source)
                    );
                    binding.tried = None;
                    binding.fail(PluginErrorKind::Configure, reason);
                    continue;
                }
            };
            let unchanged = binding
                .tried
                .as_ref()
                .is_some_and(|(v, s)| Arc::ptr_eq(v, &version) && *s == settings);
            if unchanged {
                continue;
            }
            binding.tried = Some((version.clone(), settings.clone()));
            let built = if settings == version.meta.settings {
                Ok(version.clone())
            } else {
                version.with_settings(settings).map(Arc::new)
            };
            match built {
                Ok(plugin) => {
                    tracing::info!(
                        org = %binding.options.organization,
                        plugin = %plugin.meta.name,
                        digest = %plugin.meta.digest,
                        settings = %origin,
                        "the organization's access policy is in place"
                    );
                    binding.previous = binding.active.replace(plugin);
                    binding.failure = None;
                }
                Err(err) => {
                    let text = err.to_string();
                    let cause = text
                        .strip_prefix(&format!("{}: ", version.meta.id()))
                        .unwrap_or(&text);
                    let reason = described(cause);
                    binding.fail(err.kind(), reason);
                }
            }
        }
    }

    /// The loaded access-policy version of plugin `name`: the directory's, or the built-in for
    /// the built-in's name when the directory has no good version of it. Otherwise the kind
    /// and text of why there is none, naming the file.
    fn version_of(&self, name: &str) -> Result<Arc<AccessPolicyPlugin>, (PluginErrorKind, String)> {
        let entries = self.entries.lock().expect("registry lock");
        let entry = entries.get(name);
        match entry.and_then(|e| e.loaded.as_ref()) {
            Some(LoadedPlugin::Access(plugin)) => return Ok(plugin.clone()),
            Some(LoadedPlugin::Notice(plugin)) => {
                return Err((
                    PluginErrorKind::Invalid,
                    format!(
                        "{}: is a notice template, not an access policy",
                        file_of(&plugin.meta.source)
                    ),
                ));
            }
            None => {}
        }
        if name == World::AccessPolicy.builtin_name() {
            return Ok(self.builtin_access.clone());
        }
        let path = self.options.dir.as_ref().map_or_else(
            || format!("{name}.wasm"),
            |dir| dir.join(format!("{name}.wasm")).display().to_string(),
        );
        Err(match entry.and_then(|e| e.rejections.back()) {
            // A rejection's reason names the plugin and its version.
            Some(rejection) => (
                rejection.kind,
                format!(
                    "access policy {name:?} ({path}) has no good version: {}",
                    rejection.reason
                ),
            ),
            None => (
                PluginErrorKind::Invalid,
                format!("access policy {name:?}: {path} does not exist"),
            ),
        })
    }

    /// Takes the policy of organization `org` out of service after a run in which it decided
    /// nothing (see [`roll_back_access_policy`](Self::roll_back_access_policy)). An
    /// organization with a policy of its own goes back to its previous binding, or has none
    /// until its plugin or settings change; the other organizations are untouched. Without
    /// one, the `[sync]` policy is rolled back.
    pub fn roll_back_policy_of(
        &self,
        org: &str,
        digest: &str,
        kind: PluginErrorKind,
        reason: String,
    ) -> bool {
        {
            let _serialized = self.reload_lock.lock().expect("reload lock");
            let mut orgs = self.orgs.lock().expect("organization policies lock");
            if let Some(binding) = orgs.get_mut(org) {
                let active = binding
                    .active
                    .as_ref()
                    .is_some_and(|p| p.meta.digest.hex() == digest);
                if !active {
                    return false;
                }
                binding.active = binding.previous.take();
                binding.fail(kind, reason);
                drop(orgs);
                self.generation.send_modify(|generation| *generation += 1);
                return true;
            }
        }
        self.roll_back_access_policy(digest, kind, reason)
    }

    /// The active access policy. Hold the `Arc` for a whole sync: one version throughout.
    pub fn access_policy(&self) -> Arc<AccessPolicyPlugin> {
        self.active_access.load_full()
    }

    /// The active notice template.
    pub fn notice_template(&self) -> Arc<NoticeTemplatePlugin> {
        self.active_notice.load_full()
    }

    pub fn engine(&self) -> &PluginEngine {
        &self.engine
    }

    /// Changes after every reload attempt; `borrow_and_update` then check what you wait for.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    pub fn reload_counts(&self) -> ReloadCounts {
        self.reloads.lock().expect("reload counts lock").clone()
    }

    /// Every directory plugin and what became of it.
    pub fn status(&self) -> Vec<PluginStatus> {
        let access = self.access_policy().meta.digest;
        let notice = self.notice_template().meta.digest;
        let entries = self.entries.lock().expect("registry lock");
        entries
            .iter()
            .map(|(name, entry)| {
                let loaded = entry
                    .loaded
                    .as_ref()
                    .map(|p| (p.meta().world, p.meta().digest));
                PluginStatus {
                    name: name.clone(),
                    path: entry.path.clone(),
                    loaded,
                    active: loaded.is_some_and(|(world, digest)| match world {
                        World::AccessPolicy => {
                            digest == access && name == &self.options.access_policy
                        }
                        World::NoticeTemplate => {
                            digest == notice && name == &self.options.notice_template
                        }
                    }),
                    rejections: entry.rejections.iter().cloned().collect(),
                }
            })
            .collect()
    }

    /// Reloads every plugin of the directory, and forgets plugins whose file is gone.
    pub fn rescan(&self) {
        let Some(dir) = &self.options.dir else { return };
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|entry| plugin_name_of(&entry.path()))
                    .collect()
            })
            .unwrap_or_else(|err| {
                tracing::error!(dir = %dir.display(), "cannot list the plugin directory: {err}");
                Vec::new()
            });
        names.extend(self.entries.lock().expect("registry lock").keys().cloned());
        names.sort();
        names.dedup();
        for name in names {
            self.reload(&name);
        }
    }

    /// Loads `NAME.wasm` from the directory again (or drops the plugin if the file is gone),
    /// then recomputes the active versions.
    pub fn reload(&self, name: &str) {
        let Some(dir) = &self.options.dir else { return };
        let _serialized = self.reload_lock.lock().expect("reload lock");
        let path = dir.join(format!("{name}.wasm"));
        let manifest_path = path.with_extension("toml");
        // Taken before reading: a write during the read leaves an older stamp, so the write's
        // own event reloads again.
        let stamp = file_stamp(&path, &manifest_path);
        match read_regular(&path) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                if self
                    .entries
                    .lock()
                    .expect("registry lock")
                    .remove(name)
                    .is_some()
                {
                    tracing::info!(
                        plugin = name,
                        "plugin file removed; falling back to the built-in if it was active"
                    );
                }
            }
            Err(err) => self.reject(
                name,
                &path,
                None,
                PluginErrorKind::Invalid,
                format!("cannot read {}: {err}", path.display()),
            ),
            Ok(bytes) => {
                let manifest = match read_regular(&manifest_path) {
                    Ok(bytes) => Some(bytes),
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
                    Err(err) => {
                        self.reject(
                            name,
                            &path,
                            Some(Digest::of(&bytes)),
                            PluginErrorKind::Invalid,
                            format!("cannot read {}: {err}", manifest_path.display()),
                        );
                        self.update_active();
                        self.generation.send_modify(|generation| *generation += 1);
                        return;
                    }
                };
                let fingerprint = Digest::of(
                    &[
                        bytes.as_slice(),
                        b"\0",
                        manifest.as_deref().unwrap_or_default(),
                    ]
                    .concat(),
                );
                let unchanged = self
                    .entries
                    .lock()
                    .expect("registry lock")
                    .get(name)
                    .is_some_and(|entry| entry.fingerprint == Some(fingerprint));
                if !unchanged {
                    self.load_file(name, &path, &bytes, manifest.as_deref(), fingerprint);
                }
                if let Some(entry) = self.entries.lock().expect("registry lock").get_mut(name) {
                    entry.stamp = Some(stamp);
                }
            }
        }
        self.update_active();
        self.generation.send_modify(|generation| *generation += 1);
    }

    /// [`reload`](Self::reload) unless both files still have the size and modification time
    /// they had when last read. The watcher calls this: reading a plugin file is itself a
    /// file-system event on Linux (inotify reports the open and close), so reloading on every
    /// event would read the file again and again, for as long as the daemon runs.
    pub fn reload_if_changed(&self, name: &str) {
        let Some(dir) = &self.options.dir else { return };
        let path = dir.join(format!("{name}.wasm"));
        let stamp = file_stamp(&path, &path.with_extension("toml"));
        let seen = self
            .entries
            .lock()
            .expect("registry lock")
            .get(name)
            .is_some_and(|entry| entry.stamp == Some(stamp));
        if !seen {
            self.reload(name);
        }
    }

    /// Loads version `bytes` of plugin `name`, with the manifest's bytes if it has one.
    fn load_file(
        &self,
        name: &str,
        path: &Path,
        bytes: &[u8],
        manifest: Option<&[u8]>,
        fingerprint: Digest,
    ) {
        let digest = Digest::of(bytes);
        if let Some(allowed) = &self.options.allowed_digests
            && !allowed.contains(&digest)
        {
            self.entries
                .lock()
                .expect("registry lock")
                .entry(name.to_owned())
                .or_insert_with(|| DirEntry::new(path))
                .fingerprint = Some(fingerprint);
            self.reject(
                name,
                path,
                Some(digest),
                PluginErrorKind::NotAllowed,
                format!(
                    "{digest} is not in sync.allowed_digests; pinned plugins only, so this \
                     version was not even compiled"
                ),
            );
            return;
        }
        let loaded = parse_manifest(path, manifest)
            .map_err(PluginError::from)
            .and_then(|manifest| self.load_version(name, path, bytes, digest, manifest));
        let mut entries = self.entries.lock().expect("registry lock");
        let entry = entries
            .entry(name.to_owned())
            .or_insert_with(|| DirEntry::new(path));
        entry.fingerprint = Some(fingerprint);
        match loaded {
            Ok(plugin) => {
                let compilation = plugin.meta().compilation;
                tracing::info!(
                    plugin = name,
                    world = %plugin.meta().world,
                    digest = %plugin.meta().digest,
                    // A Python or JavaScript plugin takes seconds to compile: say whether the
                    // compile cache spared that, and how long it took.
                    compiled_from = ?compilation.from,
                    compile_ms = compilation.took.as_millis() as u64,
                    "plugin version loaded"
                );
                entry.previous = entry.loaded.replace(plugin);
                self.reloads.lock().expect("reload counts lock").loaded += 1;
            }
            Err(err) => {
                drop(entries);
                self.reject(name, path, Some(digest), err.kind(), err.to_string());
            }
        }
    }

    /// Loads a version whose manifest was read: its name must be the file's.
    fn load_version(
        &self,
        name: &str,
        path: &Path,
        bytes: &[u8],
        digest: Digest,
        manifest: Option<Manifest>,
    ) -> Result<LoadedPlugin, PluginError> {
        let spec = PluginSpec {
            name: manifest
                .as_ref()
                .and_then(|m| m.name.clone())
                .unwrap_or_else(|| name.to_owned()),
            bytes,
            source: Source::File(path.to_owned()),
            manifest,
            settings_override: None,
        };
        if spec.name != name {
            return Err(PluginError::Compile {
                plugin: super::PluginId {
                    name: spec.name,
                    digest,
                },
                detail: format!("the manifest's name must match the file name {name:?}"),
            });
        }
        load(&self.engine, spec).and_then(|plugin| self.check_selected_world(name, plugin))
    }

    /// Takes the active access-policy version with digest `digest` (hex) out of service after
    /// a run in which it decided nothing (every batch failed, `kind` the first failure's): the
    /// plugin's previous version serves again, or the built-in if it has none, and `reason` is
    /// recorded among the plugin's rejections. Returns false when `digest` is not the active
    /// version (a newer one arrived meanwhile) or is the built-in, which has nothing to fall
    /// back to.
    pub fn roll_back_access_policy(
        &self,
        digest: &str,
        kind: PluginErrorKind,
        reason: String,
    ) -> bool {
        let _serialized = self.reload_lock.lock().expect("reload lock");
        let name = &self.options.access_policy;
        let path = {
            let mut entries = self.entries.lock().expect("registry lock");
            let Some(entry) = entries.get_mut(name) else {
                return false;
            };
            let active = matches!(&entry.loaded,
                Some(LoadedPlugin::Access(p)) if p.meta.digest.hex() == digest);
            if !active {
                return false;
            }
            entry.loaded = entry.previous.take();
            entry.path.clone()
        };
        self.reject(
            name,
            &path,
            Digest::parse(&format!("sha256:{digest}")),
            kind,
            reason,
        );
        self.update_active();
        self.generation.send_modify(|generation| *generation += 1);
        tracing::warn!(
            plugin = %name,
            digest,
            now_active = %self.access_policy().meta.digest,
            "access policy rolled back: it decided nothing in a whole run"
        );
        true
    }

    /// A version of the selected policy (or template) must be of that world: a notice template
    /// written over `access-policy.wasm` would otherwise be accepted and silently put the
    /// built-in policy in charge, instead of the last good version.
    fn check_selected_world(
        &self,
        name: &str,
        plugin: LoadedPlugin,
    ) -> Result<LoadedPlugin, PluginError> {
        let by_org = self
            .options
            .organizations
            .iter()
            .map(|org| (World::AccessPolicy, &org.plugin));
        let selected_as = [
            (World::AccessPolicy, &self.options.access_policy),
            (World::NoticeTemplate, &self.options.notice_template),
        ]
        .into_iter()
        .chain(by_org)
        .find(|(_, selected)| selected.as_str() == name)
        .map(|(world, _)| world);
        match selected_as {
            Some(world) if world != plugin.meta().world => Err(PluginError::WrongWorld {
                plugin: super::PluginId {
                    name: name.to_owned(),
                    digest: plugin.meta().digest,
                },
                world,
                detail: format!(
                    "it is a {} component, and {name:?} is the selected {world}",
                    plugin.meta().world
                ),
            }),
            _ => Ok(plugin),
        }
    }

    fn reject(
        &self,
        name: &str,
        path: &Path,
        digest: Option<Digest>,
        kind: PluginErrorKind,
        reason: String,
    ) {
        *self
            .reloads
            .lock()
            .expect("reload counts lock")
            .rejected
            .entry(kind)
            .or_default() += 1;
        tracing::warn!(
            plugin = name,
            "plugin version rejected, the last good version stays active: {reason}"
        );
        let mut entries = self.entries.lock().expect("registry lock");
        let entry = entries
            .entry(name.to_owned())
            .or_insert_with(|| DirEntry::new(path));
        if entry.rejections.len() == REJECTIONS_KEPT {
            entry.rejections.pop_front();
        }
        entry.rejections.push_back(Rejection {
            digest,
            kind,
            reason,
            at: SystemTime::now(),
        });
    }

    fn update_active(&self) {
        let entries = self.entries.lock().expect("registry lock");
        let selected = |name: &str| entries.get(name).and_then(|entry| entry.loaded.clone());
        let access = match selected(&self.options.access_policy) {
            Some(LoadedPlugin::Access(plugin)) => plugin,
            _ => self.builtin_access.clone(),
        };
        let notice = match selected(&self.options.notice_template) {
            Some(LoadedPlugin::Notice(plugin)) => plugin,
            _ => self.builtin_notice.clone(),
        };
        swap_if_changed(&self.active_access, access, World::AccessPolicy);
        swap_if_changed(&self.active_notice, notice, World::NoticeTemplate);
        drop(entries);
        self.update_orgs();
    }

    /// The directories the watcher must watch: the plugin directory and those of the
    /// organizations' settings files.
    fn watched_dirs(&self) -> Vec<PathBuf> {
        let files = self
            .options
            .organizations
            .iter()
            .filter_map(|o| match &o.settings {
                OrgSettings::File(path) => path.parent().map(Path::to_owned),
                _ => None,
            });
        let mut dirs: Vec<PathBuf> = self.options.dir.iter().cloned().chain(files).collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Whether there is anything to watch: a plugin directory or a settings file.
    pub fn watches_files(&self) -> bool {
        !self.watched_dirs().is_empty()
    }

    fn is_settings_file(&self, path: &Path) -> bool {
        self.options
            .organizations
            .iter()
            .any(|o| matches!(&o.settings, OrgSettings::File(file) if file == path))
    }

    /// Watches the plugin directory and reloads changed plugins until the watcher is dropped.
    pub fn watch(self: &Arc<Self>) -> anyhow::Result<PluginWatcher> {
        let dirs = self.watched_dirs();
        if dirs.is_empty() {
            anyhow::bail!(
                "no plugin directory nor settings file is configured, so there is nothing to watch"
            );
        }
        let plugin_dir = self.options.dir.clone();
        let registry = Arc::downgrade(self);
        let mut debouncer = new_debouncer(DEBOUNCE, move |events: DebounceEventResult| {
            let Some(registry) = registry.upgrade() else {
                return;
            };
            match events {
                Ok(events) => {
                    if events.iter().any(|e| registry.is_settings_file(&e.path)) {
                        registry.refresh_org_settings();
                    }
                    let mut names: Vec<String> = events
                        .iter()
                        .filter(|event| {
                            plugin_dir.is_some() && event.path.parent() == plugin_dir.as_deref()
                        })
                        .filter_map(|event| plugin_name_of(&event.path))
                        .collect();
                    names.sort();
                    names.dedup();
                    for name in names {
                        registry.reload_if_changed(&name);
                    }
                }
                Err(err) => {
                    tracing::error!("watching the plugin directory failed: {err}; rescanning");
                    registry.rescan();
                    registry.refresh_org_settings();
                }
            }
        })?;
        for dir in &dirs {
            debouncer
                .watcher()
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(|err| anyhow::anyhow!("cannot watch {}: {err}", dir.display()))?;
        }
        // Files may have changed between the initial scan and the watch taking effect.
        self.rescan();
        self.refresh_org_settings();
        Ok(PluginWatcher {
            _debouncer: debouncer,
        })
    }
}

fn swap_if_changed<T>(slot: &ArcSwap<T>, next: Arc<T>, world: World)
where
    T: HasMeta,
{
    let current = slot.load();
    if !Arc::ptr_eq(&current, &next) {
        tracing::info!(
            %world,
            from = %current.meta().digest,
            to = %next.meta().digest,
            plugin = %next.meta().name,
            "active plugin version changed"
        );
        slot.store(next);
    }
}

trait HasMeta {
    fn meta(&self) -> &super::PluginMeta;
}

impl HasMeta for AccessPolicyPlugin {
    fn meta(&self) -> &super::PluginMeta {
        &self.meta
    }
}

impl HasMeta for NoticeTemplatePlugin {
    fn meta(&self) -> &super::PluginMeta {
        &self.meta
    }
}

/// The plugin a directory entry belongs to: `NAME.wasm` and `NAME.toml` both name `NAME`;
/// editor swap files, hidden files and other extensions name none.
fn plugin_name_of(path: &Path) -> Option<String> {
    let extension = path.extension()?.to_str()?;
    if extension != "wasm" && extension != "toml" {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    validate_name(stem).ok().map(|()| stem.to_owned())
}

/// Keeps the directory watched; dropping it stops hot reload.
pub struct PluginWatcher {
    _debouncer: Debouncer<notify_debouncer_mini::notify::RecommendedWatcher>,
}

/// The manifest beside the plugin at `path`, as read with it: it was checked to be a regular
/// file, so it is not read again.
fn parse_manifest(path: &Path, manifest: Option<&[u8]>) -> Result<Option<Manifest>, ManifestError> {
    let manifest_origin = path.with_extension("toml").display().to_string();
    manifest
        .map(|bytes| {
            let text = std::str::from_utf8(bytes).map_err(|err| ManifestError::Invalid {
                path: manifest_origin.clone(),
                message: format!("not UTF-8: {err}"),
            })?;
            Manifest::parse(text, &manifest_origin)
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn byod_strict() -> Vec<u8> {
        std::fs::read(concat!(
            env!("EASGATE_PLUGIN_WASM_DIR"),
            "/byod_strict.wasm"
        ))
        .expect("the example policy is built with the host")
    }

    fn registry(dir: &Path, allowed: Option<Vec<Digest>>) -> Arc<PluginRegistry> {
        PluginRegistry::new(
            PluginEngine::new().unwrap(),
            RegistryOptions {
                dir: Some(dir.to_owned()),
                allowed_digests: allowed,
                ..RegistryOptions::default()
            },
        )
        .unwrap()
    }

    fn last_rejection(registry: &PluginRegistry) -> Rejection {
        let status = registry.status();
        let entry = status
            .iter()
            .find(|p| p.name == "access-policy")
            .expect("the plugin is listed");
        entry.rejections.last().cloned().expect("a rejection")
    }

    #[test]
    fn a_pinned_registry_rejects_other_digests_and_keeps_the_last_allowed_version() {
        let dir = tempfile::tempdir().unwrap();
        let strict = byod_strict();
        let allowed = Digest::of(&strict);
        let builtin = Digest::of(BUILTIN_ACCESS_POLICY);
        let file = dir.path().join("access-policy.wasm");

        // Not listed at start: the built-in serves.
        std::fs::write(&file, BUILTIN_ACCESS_POLICY).unwrap();
        let pinned = registry(dir.path(), Some(vec![allowed]));
        let rejection = last_rejection(&pinned);
        assert_eq!(rejection.digest, Some(builtin));
        assert!(
            rejection.reason.contains("not in sync.allowed_digests"),
            "{}",
            rejection.reason
        );
        assert!(matches!(
            pinned.access_policy().meta.source,
            Source::Builtin
        ));

        // The listed version loads; another one after it is refused and it keeps serving.
        std::fs::write(&file, &strict).unwrap();
        pinned.reload("access-policy");
        assert_eq!(pinned.access_policy().meta.digest, allowed);
        let mut other = BUILTIN_ACCESS_POLICY.to_vec();
        // A custom section (id 0, 2 bytes: name length 1, "x"): a valid component, a new digest.
        other.extend_from_slice(&[0, 2, 1, b'x']);
        std::fs::write(&file, &other).unwrap();
        pinned.reload("access-policy");
        assert_eq!(last_rejection(&pinned).digest, Some(Digest::of(&other)));
        assert_eq!(pinned.access_policy().meta.digest, allowed);
        let status = pinned.status();
        assert_eq!(status[0].loaded.map(|(_, d)| d), Some(allowed));
        assert!(status[0].active);

        // Without pins the same file loads.
        let open = registry(dir.path(), None);
        assert_eq!(open.access_policy().meta.digest, Digest::of(&other));
    }

    /// Found by the swap-storm test: a notice template written over the selected policy's file
    /// was accepted, and the built-in policy took over from the last good version.
    #[test]
    fn a_template_in_the_selected_policys_place_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("access-policy.wasm");
        std::fs::write(&file, byod_strict()).unwrap();
        let registry = registry(dir.path(), None);
        let strict = Digest::of(&byod_strict());
        assert_eq!(registry.access_policy().meta.digest, strict);
        std::fs::write(&file, BUILTIN_NOTICE_TEMPLATE).unwrap();
        registry.reload("access-policy");
        let rejection = last_rejection(&registry);
        assert!(
            rejection.reason.contains("notice-template component"),
            "{}",
            rejection.reason
        );
        assert_eq!(registry.access_policy().meta.digest, strict);
    }

    #[test]
    fn plugins_load_only_from_regular_files_inside_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("elsewhere.wasm");
        std::fs::write(&target, byod_strict()).unwrap();
        let link = dir.path().join("access-policy.wasm");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let registry = registry(dir.path(), None);
        let rejection = last_rejection(&registry);
        assert!(
            rejection.reason.contains("symbolic link"),
            "{}",
            rejection.reason
        );
        assert!(matches!(
            registry.access_policy().meta.source,
            Source::Builtin
        ));

        // A manifest that is a link is refused too, even beside a good .wasm.
        std::fs::remove_file(&link).unwrap();
        std::fs::write(&link, byod_strict()).unwrap();
        let manifest = outside.path().join("elsewhere.toml");
        std::fs::write(&manifest, "world = \"access-policy\"\n").unwrap();
        std::os::unix::fs::symlink(&manifest, dir.path().join("access-policy.toml")).unwrap();
        registry.reload("access-policy");
        let rejection = last_rejection(&registry);
        assert!(
            rejection.reason.contains("access-policy.toml") && rejection.reason.contains("link"),
            "{}",
            rejection.reason
        );
        assert!(matches!(
            registry.access_policy().meta.source,
            Source::Builtin
        ));

        // A FIFO would block a plain read forever; it is refused at once.
        std::fs::remove_file(dir.path().join("access-policy.toml")).unwrap();
        std::fs::remove_file(&link).unwrap();
        let path = std::ffi::CString::new(link.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo touches nothing else.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        registry.reload("access-policy");
        let rejection = last_rejection(&registry);
        assert!(
            rejection.reason.contains("not a regular file"),
            "{}",
            rejection.reason
        );
    }

    fn org(name: &str, plugin: &str, settings: OrgSettings) -> OrgPolicyOptions {
        OrgPolicyOptions {
            organization: name.into(),
            plugin: plugin.into(),
            settings,
        }
    }

    fn registry_for(dir: &Path, organizations: Vec<OrgPolicyOptions>) -> Arc<PluginRegistry> {
        PluginRegistry::new(
            PluginEngine::new().unwrap(),
            RegistryOptions {
                dir: Some(dir.to_owned()),
                organizations,
                ..RegistryOptions::default()
            },
        )
        .unwrap()
    }

    /// The faulty test policy in the directory, its manifest making it a good one by default.
    fn faulty_in(dir: &Path) {
        let faulty = std::fs::read(concat!(env!("EASGATE_PLUGIN_WASM_DIR"), "/faulty.wasm"))
            .expect("the faulty policy is built with the host");
        std::fs::write(dir.join("faulty.wasm"), faulty).unwrap();
        std::fs::write(
            dir.join("faulty.toml"),
            "world = \"access-policy\"\n[settings]\nmode = \"ok\"\n",
        )
        .unwrap();
    }

    /// The verdict `org`'s policy gives a device whose user is in group `group`.
    fn verdict_for_member(registry: &PluginRegistry, org: &str, group: &str) -> types::Verdict {
        let mut device = super::super::sample::sample_device("A1");
        device.user.as_mut().unwrap().groups = vec![group.into()];
        let policy = registry.policy_for(org).unwrap();
        let info = super::super::loaded::what_if(1_735_689_600);
        policy.decide(&info, &[device]).unwrap().decisions[0].verdict
    }

    use super::super::types;

    #[test]
    fn each_organization_decides_by_its_own_settings_on_shared_code() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        faulty_in(dir.path());
        let beta_file = elsewhere.path().join("beta.toml");
        std::fs::write(&beta_file, "excludedGroups = [\"g-beta\"]\n").unwrap();
        let registry = registry_for(
            dir.path(),
            vec![
                org(
                    "alpha",
                    "access-policy",
                    OrgSettings::Inline(r#"{"excludedGroups":["g-alpha"]}"#.into()),
                ),
                org("beta", "access-policy", OrgSettings::File(beta_file)),
                org("gamma", "faulty", OrgSettings::Plugin),
            ],
        );
        let builtin = Digest::of(BUILTIN_ACCESS_POLICY);
        let alpha = registry.policy_for("alpha").unwrap();
        let beta = registry.policy_for("beta").unwrap();
        assert_eq!((alpha.meta.digest, beta.meta.digest), (builtin, builtin));
        assert_eq!(alpha.meta.settings, r#"{"excludedGroups":["g-alpha"]}"#);
        assert_eq!(beta.meta.settings, r#"{"excludedGroups":["g-beta"]}"#);
        // Not compiled again: the compilation is the built-in's own.
        assert_eq!(
            alpha.meta.compilation,
            registry.builtin_access.meta.compilation
        );
        assert_eq!(
            verdict_for_member(&registry, "alpha", "g-alpha"),
            types::Verdict::Exempt
        );
        assert_ne!(
            verdict_for_member(&registry, "beta", "g-alpha"),
            types::Verdict::Exempt
        );
        assert_eq!(
            verdict_for_member(&registry, "beta", "g-beta"),
            types::Verdict::Exempt
        );

        // Without settings of its own, the directory version itself; without a section, the
        // [sync] policy.
        let gamma = registry.policy_for("gamma").unwrap();
        let loaded = match &registry.entries.lock().unwrap()["faulty"].loaded {
            Some(LoadedPlugin::Access(p)) => p.clone(),
            _ => panic!("faulty loaded"),
        };
        assert!(Arc::ptr_eq(&gamma, &loaded));
        assert!(Arc::ptr_eq(
            &registry.policy_for("delta").unwrap(),
            &registry.access_policy()
        ));
        assert!(registry.org_policies().iter().all(|p| p.failure.is_none()));
    }

    #[test]
    fn a_broken_settings_file_fails_its_organization_only_until_fixed() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let file = elsewhere.path().join("alpha.toml");
        std::fs::write(&file, "includedGroups = \"g1\"\n").unwrap();
        let registry = registry_for(
            dir.path(),
            vec![
                org("alpha", "access-policy", OrgSettings::File(file.clone())),
                org(
                    "beta",
                    "access-policy",
                    OrgSettings::Inline(r#"{"notify":false}"#.into()),
                ),
            ],
        );
        let err = registry.policy_for("alpha").unwrap_err();
        assert_eq!(err.failure.kind, PluginErrorKind::Configure);
        let text = err.to_string();
        for needle in [
            "organization \"alpha\": access policy \"access-policy\" (built-in, sha256:",
            &format!("with the settings of {}: ", file.display()),
            "configure rejected its settings: includedGroups",
        ] {
            assert!(text.contains(needle), "{needle:?} not in {text}");
        }
        assert_eq!(text.matches("configure rejected").count(), 1, "{text}");
        assert!(registry.policy_for("beta").is_ok());

        // Not TOML: the file and line are named.
        std::fs::write(&file, "notify = false\nincludedGroups = [\n").unwrap();
        registry.refresh_org_settings();
        let text = registry.policy_for("alpha").unwrap_err().to_string();
        assert!(text.contains(&format!("{}:2: ", file.display())), "{text}");

        // Fixed: in place at the next refresh (the watcher's call).
        std::fs::write(&file, "includedGroups = [\"g1\"]\n").unwrap();
        registry.refresh_org_settings();
        let good = registry.policy_for("alpha").unwrap();
        assert_eq!(good.meta.settings, r#"{"includedGroups":["g1"]}"#);

        // Broken again: the last good pairing keeps serving, the refusal is shown.
        std::fs::write(&file, "includedGroups = 7\n").unwrap();
        registry.refresh_org_settings();
        assert!(Arc::ptr_eq(&registry.policy_for("alpha").unwrap(), &good));
        let status = registry.org_policies();
        let alpha = status.iter().find(|p| p.organization == "alpha").unwrap();
        assert!(
            alpha
                .failure
                .as_ref()
                .unwrap()
                .reason
                .contains("includedGroups"),
            "{:?}",
            alpha.failure
        );
    }

    #[test]
    fn a_missing_or_trapping_plugin_fails_its_organization_and_a_roll_back_is_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let registry = registry_for(
            dir.path(),
            vec![
                org("alpha", "faulty", OrgSettings::Plugin),
                org(
                    "beta",
                    "faulty",
                    OrgSettings::Inline(r#"{"mode":"trap","rehearsals":true}"#.into()),
                ),
                org(
                    "gamma",
                    "faulty",
                    OrgSettings::Inline(r#"{"mode":"trap"}"#.into()),
                ),
            ],
        );
        let err = registry.policy_for("alpha").unwrap_err().to_string();
        let path = dir.path().join("faulty.wasm");
        assert!(
            err.contains(&format!("{} does not exist", path.display())),
            "{err}"
        );

        // The plugin arrives: alpha and gamma serve; beta's settings trap on the rehearsal.
        faulty_in(dir.path());
        registry.reload("faulty");
        assert!(registry.policy_for("alpha").is_ok());
        let beta = registry.policy_for("beta").unwrap_err();
        assert_eq!(beta.failure.kind, PluginErrorKind::SelfCheck);
        assert!(
            beta.to_string().contains(&path.display().to_string())
                && beta.to_string().contains("trapped"),
            "{beta}"
        );

        // gamma traps on real devices only: rolled back for gamma alone.
        let gamma = registry.policy_for("gamma").unwrap();
        let digest = gamma.meta.digest.hex();
        assert!(registry.roll_back_policy_of(
            "gamma",
            &digest,
            PluginErrorKind::Trap,
            "every policy batch failed".into()
        ));
        let err = registry.policy_for("gamma").unwrap_err();
        assert_eq!(err.failure.reason, "every policy batch failed");
        assert!(registry.policy_for("alpha").is_ok());
        assert!(!registry.roll_back_policy_of(
            "gamma",
            &digest,
            PluginErrorKind::Trap,
            String::new()
        ));
    }

    #[test]
    fn only_wasm_and_manifest_files_name_plugins() {
        assert_eq!(
            plugin_name_of(Path::new("/p/byod.wasm")).as_deref(),
            Some("byod")
        );
        assert_eq!(
            plugin_name_of(Path::new("/p/byod.toml")).as_deref(),
            Some("byod")
        );
        assert_eq!(plugin_name_of(Path::new("/p/.byod.wasm.swp")), None);
        assert_eq!(plugin_name_of(Path::new("/p/byod.wasm~")), None);
        assert_eq!(plugin_name_of(Path::new("/p/README.md")), None);
        assert_eq!(plugin_name_of(Path::new("/p/Bad Name.wasm")), None);
    }
}
