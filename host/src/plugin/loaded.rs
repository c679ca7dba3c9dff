//! A loaded plugin version: compiled once, pre-instantiated, configured and checked; then
//! called any number of times, each call in a fresh sandboxed instance.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use wasmtime::{Store, Trap};

use super::bindings::{Level, access, notice, types};
use super::engine::{Compilation, Limits, PluginEngine};
use super::json::{DEFAULT_NOW, DecisionJson, TestCase};
use super::manifest::{Manifest, validate_name};
use super::sandbox::{PluginLogLine, SandboxState};
use super::{Digest, PluginError, PluginId, World};

/// Where a plugin version came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Embedded in the `easgate` binary.
    Builtin,
    /// A `.wasm` file (its manifest, when there is one, sits beside it).
    File(PathBuf),
}

/// What identifies and configures a plugin version.
#[derive(Debug, Clone)]
pub struct PluginMeta {
    pub name: String,
    pub world: World,
    pub digest: Digest,
    pub source: Source,
    /// The JSON object handed to `configure`.
    pub settings: String,
    pub limits: Limits,
    /// How many manifest self-checks it passed before activation.
    pub self_checks: usize,
    /// The component's import and export names, for `easgate policy check`.
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    /// Whether the code came from the compile cache, and how long compiling or loading took.
    pub compilation: Compilation,
    pub loaded_at: SystemTime,
}

impl PluginMeta {
    pub fn id(&self) -> PluginId {
        PluginId {
            name: self.name.clone(),
            digest: self.digest,
        }
    }
}

/// A plugin version of either world.
#[derive(Clone)]
pub enum LoadedPlugin {
    Access(Arc<AccessPolicyPlugin>),
    Notice(Arc<NoticeTemplatePlugin>),
}

impl LoadedPlugin {
    pub fn meta(&self) -> &PluginMeta {
        match self {
            LoadedPlugin::Access(plugin) => &plugin.meta,
            LoadedPlugin::Notice(plugin) => &plugin.meta,
        }
    }
}

/// What to load: bytes, their name and origin, and the settings and checks to apply.
pub struct PluginSpec<'a> {
    pub name: String,
    pub bytes: &'a [u8],
    pub source: Source,
    pub manifest: Option<Manifest>,
    /// Replaces the manifest's settings (`--settings` on the CLI).
    pub settings_override: Option<String>,
}

impl<'a> PluginSpec<'a> {
    /// A `.wasm` file and the `.toml` manifest beside it, if any. `bytes` are the file's.
    pub fn from_file(path: &Path, bytes: &'a [u8]) -> Result<Self, PluginError> {
        let manifest_path = path.with_extension("toml");
        let manifest = if manifest_path.is_file() {
            Some(Manifest::load(&manifest_path)?)
        } else {
            None
        };
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = manifest
            .as_ref()
            .and_then(|m| m.name.clone())
            .unwrap_or(stem);
        Ok(Self {
            name,
            bytes,
            source: Source::File(path.to_owned()),
            manifest,
            settings_override: None,
        })
    }
}

/// Compiles, links, configures and self-checks a plugin version.
pub fn load(engine: &PluginEngine, spec: PluginSpec<'_>) -> Result<LoadedPlugin, PluginError> {
    let digest = Digest::of(spec.bytes);
    let id = PluginId {
        name: spec.name.clone(),
        digest,
    };
    let (component, compilation) = compile(engine, &spec, &id)?;

    let ty = component.component_type();
    let imports: Vec<String> = ty
        .imports(engine.engine())
        .map(|(name, _)| name.to_owned())
        .collect();
    let exports: Vec<String> = ty
        .exports(engine.engine())
        .map(|(name, _)| name.to_owned())
        .collect();
    let world = exported_world(&exports, spec.manifest.as_ref(), &id)?;
    if let Some(manifest) = &spec.manifest
        && manifest.world != world
    {
        return Err(PluginError::ManifestWorld {
            plugin: id,
            manifest: manifest.world,
            actual: world,
        });
    }
    let settings = match (&spec.settings_override, &spec.manifest) {
        (Some(settings), _) => settings.clone(),
        (None, Some(manifest)) => manifest.settings_json(),
        (None, None) => "{}".to_owned(),
    };
    let limits = spec.manifest.as_ref().map_or(engine.default_limits(), |m| {
        m.limits(engine.default_limits())
    });
    let tests = spec.manifest.map(|m| m.tests).unwrap_or_default();
    let meta = PluginMeta {
        name: spec.name,
        world,
        digest,
        source: spec.source,
        settings,
        limits,
        self_checks: tests.len(),
        imports,
        exports,
        compilation,
        loaded_at: SystemTime::now(),
    };
    instantiate(engine, &component, meta, id, &tests)
}

/// The plugin's name checked, its bytes checked to be a component, and compiled.
fn compile(
    engine: &PluginEngine,
    spec: &PluginSpec<'_>,
    id: &PluginId,
) -> Result<(wasmtime::component::Component, Compilation), PluginError> {
    if let Err(message) = validate_name(&spec.name) {
        return Err(PluginError::Compile {
            plugin: id.clone(),
            detail: message,
        });
    }
    if spec.bytes.starts_with(b"\0asm\x01\0\0\0") {
        return Err(PluginError::CoreModule { plugin: id.clone() });
    }
    engine
        .compile(spec.bytes, &id.digest)
        .map_err(|err| PluginError::Compile {
            plugin: id.clone(),
            detail: error_chain(&err),
        })
}

/// Links the component against its world's imports and self-checks it.
fn instantiate(
    engine: &PluginEngine,
    component: &wasmtime::component::Component,
    meta: PluginMeta,
    id: PluginId,
    tests: &[TestCase],
) -> Result<LoadedPlugin, PluginError> {
    let world = meta.world;
    let wrong_world = |err: wasmtime::Error| PluginError::WrongWorld {
        plugin: id.clone(),
        world,
        detail: error_chain(&err),
    };

    match world {
        World::AccessPolicy => {
            let pre = engine
                .access_linker()
                .instantiate_pre(component)
                .map_err(wrong_world)?;
            let pre = access::AccessPolicyPre::new(pre).map_err(wrong_world)?;
            let plugin = AccessPolicyPlugin {
                meta,
                runner: Runner {
                    engine: engine.clone(),
                    id,
                },
                pre,
            };
            plugin.self_check(tests)?;
            Ok(LoadedPlugin::Access(Arc::new(plugin)))
        }
        World::NoticeTemplate => {
            let pre = engine
                .notice_linker()
                .instantiate_pre(component)
                .map_err(wrong_world)?;
            let pre = notice::NoticeTemplatePre::new(pre).map_err(wrong_world)?;
            let plugin = NoticeTemplatePlugin {
                meta,
                runner: Runner {
                    engine: engine.clone(),
                    id,
                },
                pre,
            };
            plugin.self_check()?;
            Ok(LoadedPlugin::Notice(Arc::new(plugin)))
        }
    }
}

/// Tells the worlds apart by their distinctive export, so a manifest is optional.
fn exported_world(
    exports: &[String],
    manifest: Option<&Manifest>,
    id: &PluginId,
) -> Result<World, PluginError> {
    let has = |name: &str| exports.iter().any(|export| export == name);
    if has("decide") {
        Ok(World::AccessPolicy)
    } else if has("render") {
        Ok(World::NoticeTemplate)
    } else {
        Err(PluginError::WrongWorld {
            plugin: id.clone(),
            world: manifest.map_or(World::AccessPolicy, |m| m.world),
            detail: format!(
                "it exports [{}], expected `configure` and `decide` (access-policy) or `configure` and `render` (notice-template)",
                exports.join(", ")
            ),
        })
    }
}

/// One decide call's answer, checked, and what the plugin logged meanwhile.
#[derive(Debug)]
pub struct Verdicts {
    pub decisions: Vec<types::Decision>,
    pub log: Vec<PluginLogLine>,
}

/// A loaded access-policy version. Clone the `Arc` to pin it for a whole sync.
pub struct AccessPolicyPlugin {
    pub meta: PluginMeta,
    runner: Runner,
    pre: access::AccessPolicyPre<SandboxState>,
}

/// Its metadata: the compiled code has nothing to show.
impl std::fmt::Debug for AccessPolicyPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessPolicyPlugin")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

impl AccessPolicyPlugin {
    /// One decision per device, in order; an invalid answer rejects the whole batch.
    pub fn decide(
        &self,
        info: &types::SyncInfo,
        devices: &[types::DeviceContext],
    ) -> Result<Verdicts, PluginError> {
        let (decisions, log) = self.runner.call(
            &self.meta,
            "decide",
            info.now,
            |store| self.pre.instantiate(store),
            |instance, store, settings| instance.call_configure(store, settings),
            |instance, store| instance.call_decide(store, info, devices),
        )?;
        if decisions.len() != devices.len() {
            return Err(PluginError::WrongCount {
                plugin: self.runner.id.clone(),
                expected: devices.len(),
                got: decisions.len(),
            });
        }
        if let Some((index, decision)) = decisions
            .iter()
            .enumerate()
            .find(|(_, d)| !valid_reason(&d.reason))
        {
            return Err(PluginError::InvalidReason {
                plugin: self.runner.id.clone(),
                index,
                reason: truncated(&decision.reason, 80),
            });
        }
        Ok(Verdicts { decisions, log })
    }

    /// This version's compiled code with other `settings` (a JSON object): one organization's
    /// own. The code is shared, not compiled again. Checked as a new version is, except for the
    /// manifest's cases, which were written for the manifest's settings: `configure` must take
    /// the settings and the rehearsal batch must be decided.
    pub fn with_settings(&self, settings: String) -> Result<AccessPolicyPlugin, PluginError> {
        let plugin = AccessPolicyPlugin {
            meta: PluginMeta {
                settings,
                self_checks: 0,
                loaded_at: SystemTime::now(),
                ..self.meta.clone()
            },
            runner: self.runner.clone(),
            pre: self.pre.clone(),
        };
        plugin.self_check(&[])?;
        Ok(plugin)
    }

    /// Configures the plugin, decides the rehearsal batch ([`super::sample`]) and runs the
    /// manifest's cases, each as a what-if call: a version that loads but fails every
    /// decision never becomes active.
    fn self_check(&self, cases: &[TestCase]) -> Result<(), PluginError> {
        match self.decide(&what_if(DEFAULT_NOW), &super::sample::sample_batch()) {
            Ok(_) => {}
            // Refused settings are the operator's to fix, not the rehearsal's finding.
            Err(err @ PluginError::Configure { .. }) => return Err(err),
            Err(err) => {
                let text = err.to_string();
                let prefix = format!("{}: ", self.runner.id);
                return Err(PluginError::SelfCheck {
                    plugin: self.runner.id.clone(),
                    case: format!(
                        "the rehearsal batch of {} sample devices",
                        super::sample::SAMPLE_SIZE
                    ),
                    detail: text.strip_prefix(&prefix).unwrap_or(&text).to_owned(),
                });
            }
        }
        for case in cases {
            let info = what_if(case.now.unwrap_or(DEFAULT_NOW));
            let verdicts = self.decide(&info, &[case.input.clone().into()])?;
            let got = DecisionJson::from(&verdicts.decisions[0]);
            if let Some(detail) = case.expect.mismatch(&got) {
                return Err(PluginError::SelfCheck {
                    plugin: self.runner.id.clone(),
                    case: case.name.clone(),
                    detail,
                });
            }
        }
        Ok(())
    }
}

/// The `sync-info` of a rehearsal at `now`.
pub fn what_if(now: i64) -> types::SyncInfo {
    types::SyncInfo {
        kind: types::SyncKind::WhatIf,
        now,
        organization: "what-if".into(),
    }
}

/// A loaded notice-template version.
pub struct NoticeTemplatePlugin {
    pub meta: PluginMeta,
    runner: Runner,
    pre: notice::NoticeTemplatePre<SandboxState>,
}

impl NoticeTemplatePlugin {
    pub fn render(&self, notice: &types::Notice) -> Result<types::Message, PluginError> {
        let (rendered, _log) = self.runner.call(
            &self.meta,
            "render",
            // A notice carries its own dates; the template's clock says nothing of them.
            0,
            |store| self.pre.instantiate(store),
            |instance, store, settings| instance.call_configure(store, settings),
            |instance, store| instance.call_render(store, notice),
        )?;
        let message = rendered.map_err(|message| PluginError::Render {
            plugin: self.runner.id.clone(),
            message,
        })?;
        let invalid = |detail: &str| PluginError::InvalidMessage {
            plugin: self.runner.id.clone(),
            detail: detail.to_owned(),
        };
        if message.subject.trim().is_empty() || message.subject.contains(['\r', '\n']) {
            return Err(invalid("the subject must be one non-empty line"));
        }
        if message.subject.len() > 900 {
            return Err(invalid("the subject is longer than 900 bytes"));
        }
        if message.html.trim().is_empty() || message.text.trim().is_empty() {
            return Err(invalid("both the HTML and the text part must have content"));
        }
        Ok(message)
    }

    /// Configures the template and renders a sample notice, so a template that cannot render
    /// is rejected at load time rather than at the first quarantine.
    fn self_check(&self) -> Result<(), PluginError> {
        self.render(&sample_notice()).map(drop)
    }
}

/// A notice for a quarantined, unenrolled iPhone: the template self-check's input.
pub fn sample_notice() -> types::Notice {
    types::Notice {
        organization: "Contoso".into(),
        device: types::DeviceContext {
            eas: types::EasDevice {
                device_id: "APPLF17ABCDE12345".into(),
                identity: "alice@contoso.com\\ExchangeActiveSyncDevices\\iPhone§APPLF17ABCDE12345"
                    .into(),
                mailbox: "alice@contoso.com".into(),
                device_type: "iPhone".into(),
                device_model: "iPhone15,2".into(),
                device_os: "iOS 17.4.1 21E236".into(),
                user_agent: "Apple-iPhone15C2/2104.236".into(),
                first_sync: Some(DEFAULT_NOW - 86_400),
                last_success_sync: Some(DEFAULT_NOW - 3_600),
                access_state: types::AccessState::Quarantined,
                access_state_reason: "Global".into(),
            },
            managed: None,
            user: Some(types::User {
                user_principal_name: "alice@contoso.com".into(),
                primary_smtp: "alice@contoso.com".into(),
                groups: Vec::new(),
            }),
        },
        decision: types::Decision {
            verdict: types::Verdict::Quarantine,
            reason: "not-enrolled".into(),
            notify: true,
        },
        remediation_url: "https://portal.manage.microsoft.com/".into(),
        locale: "en-US".into(),
    }
}

/// Runs one call in a fresh store: instantiate, configure, then the call itself, all under the
/// plugin's deadline and memory limit; turns every failure into a [`PluginError`].
#[derive(Clone)]
struct Runner {
    engine: PluginEngine,
    id: PluginId,
}

impl Runner {
    fn call<I, R>(
        &self,
        meta: &PluginMeta,
        call: &'static str,
        now: i64,
        instantiate: impl FnOnce(&mut Store<SandboxState>) -> wasmtime::Result<I>,
        configure: impl FnOnce(
            &I,
            &mut Store<SandboxState>,
            &str,
        ) -> wasmtime::Result<Result<(), String>>,
        run: impl FnOnce(&I, &mut Store<SandboxState>) -> wasmtime::Result<R>,
    ) -> Result<(R, Vec<PluginLogLine>), PluginError> {
        let mut store = Store::new(
            self.engine.engine(),
            SandboxState::new(meta.limits.memory_bytes, now),
        );
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(self.engine.call_deadline(meta.limits.timeout));
        store.epoch_deadline_trap();

        let outcome = (|| {
            let instance = instantiate(&mut store).map_err(|err| ("instantiate", err))?;
            let configured = configure(&instance, &mut store, &meta.settings)
                .map_err(|err| ("configure", err))?;
            if let Err(message) = configured {
                return Ok(Err(message));
            }
            run(&instance, &mut store)
                .map(Ok)
                .map_err(|err| (call, err))
        })();
        let log = store.data_mut().take_log();
        self.forward_log(&log);
        match outcome {
            Ok(Ok(result)) => Ok((result, log)),
            Ok(Err(message)) => Err(PluginError::Configure {
                plugin: self.id.clone(),
                message,
            }),
            Err((call, err)) => Err(self.classify(call, err, &store, meta, &log)),
        }
    }

    fn classify(
        &self,
        call: &'static str,
        err: wasmtime::Error,
        store: &Store<SandboxState>,
        meta: &PluginMeta,
        log: &[PluginLogLine],
    ) -> PluginError {
        let plugin = self.id.clone();
        if store.data().limiter.exceeded {
            return PluginError::MemoryLimit {
                plugin,
                call,
                limit_mib: meta.limits.memory_bytes >> 20,
            };
        }
        let code = err.downcast_ref::<Trap>().copied();
        if code == Some(Trap::Interrupt) {
            return PluginError::Timeout {
                plugin,
                call,
                timeout_ms: meta.limits.timeout.as_millis(),
            };
        }
        // The full chain carries the guest backtrace: worth a debug line, too long for an error.
        tracing::debug!(plugin = %plugin.name, digest = %plugin.digest.short(), "{call} failed: {}", error_chain(&err));
        let mut detail = truncated(&err.root_cause().to_string(), 300);
        // A guest panic prints its message to stderr just before the trap: the useful part.
        let last_output: Vec<&str> = log
            .iter()
            .rev()
            .take(3)
            .map(|line| line.message.as_str())
            .collect();
        if !last_output.is_empty() {
            let output: Vec<&str> = last_output.into_iter().rev().collect();
            detail.push_str(&format!(
                " (the plugin's last output: {})",
                truncated(&output.join(" | "), 500)
            ));
        }
        PluginError::Trap {
            plugin,
            call,
            code,
            detail,
        }
    }

    fn forward_log(&self, log: &[PluginLogLine]) {
        let (name, digest) = (&self.id.name, self.id.digest.short());
        for line in log {
            let message = &line.message;
            match line.level {
                Level::Trace => tracing::trace!(plugin = %name, %digest, "{message}"),
                Level::Debug => tracing::debug!(plugin = %name, %digest, "{message}"),
                Level::Info => tracing::info!(plugin = %name, %digest, "{message}"),
                Level::Warn => tracing::warn!(plugin = %name, %digest, "{message}"),
                Level::Error => tracing::error!(plugin = %name, %digest, "{message}"),
            }
        }
    }
}

/// Reasons go into the audit trail and metrics labels: short, plain, predictable.
fn valid_reason(reason: &str) -> bool {
    (1..=64).contains(&reason.len())
        && reason
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn truncated(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}… ({} bytes)", &text[..end], text.len()),
        None => text.to_owned(),
    }
}

/// An engine error with its causes on one line, bounded so a hostile plugin cannot flood logs.
fn error_chain(err: &wasmtime::Error) -> String {
    let chain: Vec<String> = err.chain().map(|cause| cause.to_string()).collect();
    truncated(&chain.join(": "), 2000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_short_plain_codes() {
        for ok in ["compliant", "not-enrolled", "os-too-old", "r2d2"] {
            assert!(valid_reason(ok), "{ok}");
        }
        for bad in ["", "Not Valid!", "with space", "ünïcode", &"x".repeat(65)] {
            assert!(!valid_reason(bad), "{bad}");
        }
    }

    #[test]
    fn truncation_keeps_char_boundaries_and_says_how_long() {
        assert_eq!(truncated("short", 10), "short");
        assert_eq!(truncated("ééééé", 2), "éé… (10 bytes)");
    }
}
