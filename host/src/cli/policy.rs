//! `easgate policy check|eval|test|diff`: load a plugin the way the connector does and exercise
//! it; `diff` runs it against the last stored inventory of an organization.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use crate::plugin::json::{DEFAULT_NOW, DecisionJson, DeviceContextJson, TestCase};
use crate::plugin::loaded::{LoadedPlugin, PluginSpec, load, what_if};
use crate::plugin::registry::load_builtin;
use crate::plugin::{PluginEngine, World, types};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Load a plugin, configure it and run its manifest's self-checks; print what it is.
    Check {
        /// A `.wasm` component (its `.toml` manifest is read from beside it) or `builtin:NAME`.
        plugin: String,
        #[command(flatten)]
        settings: SettingsArg,
    },
    /// Decide a JSON array of device contexts and print the decisions as JSON.
    Eval {
        plugin: String,
        /// JSON array of device contexts (WIT field names, kebab-case; see docs/plugin-author-guide.md).
        #[arg(long)]
        input: PathBuf,
        #[command(flatten)]
        settings: SettingsArg,
        /// `sync-info.now`, Unix seconds.
        #[arg(long, default_value_t = DEFAULT_NOW)]
        now: i64,
    },
    /// Run table-driven cases; one line per case, non-zero exit if any fails.
    Test {
        plugin: String,
        /// JSON array of `{"name", "now"?, "input", "expect": {"verdict", "reason"?, "notify"?}}`.
        cases: PathBuf,
        #[command(flatten)]
        settings: SettingsArg,
    },
    /// What-if against the last stored inventory: decide every stored device with this policy,
    /// plan against the state the last sync left, print the verdict counts, the devices whose
    /// verdict changes and the commands the plan would issue. Reads the store only; asks
    /// Exchange and Intune nothing. Without `--settings`, an organization with settings of its
    /// own (`[organization.policy]`) is decided with them.
    Diff {
        /// A `.wasm` access policy (its `.toml` manifest beside it) or `builtin:access-policy`.
        plugin: String,
        /// The configuration file (its data directory, organizations and sync settings).
        #[arg(long)]
        config: PathBuf,
        /// Only this organization (default: every one).
        #[arg(long)]
        org: Option<String>,
        #[command(flatten)]
        settings: SettingsArg,
        /// Print each organization's diff as one JSON object on one line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct SettingsArg {
    /// Settings as a JSON object, instead of the manifest's.
    #[arg(long)]
    settings: Option<String>,
}

impl SettingsArg {
    fn validated(&self) -> anyhow::Result<Option<String>> {
        let Some(settings) = &self.settings else {
            return Ok(None);
        };
        let value: serde_json::Value =
            serde_json::from_str(settings).context("--settings is not valid JSON")?;
        if !value.is_object() {
            bail!("--settings must be a JSON object, e.g. '{{\"notify\": false}}'");
        }
        Ok(Some(settings.clone()))
    }
}

/// Names a compile cache directory for the `policy` commands (see `plugin::cache`): repeated
/// runs against a large Python or JavaScript plugin then skip its compilation.
pub const COMPILE_CACHE_ENV: &str = "EASGATE_COMPILE_CACHE";

pub fn run(command: PolicyCommand) -> anyhow::Result<ExitCode> {
    let mut builder = PluginEngine::builder();
    if let Some(dir) = std::env::var_os(COMPILE_CACHE_ENV).filter(|dir| !dir.is_empty()) {
        builder = builder.compile_cache(dir);
    }
    let engine = builder.build()?;
    match command {
        PolicyCommand::Diff {
            plugin,
            config,
            org,
            settings,
            json,
        } => {
            let settings = settings.validated()?;
            let own_settings = settings.is_none();
            let policy = access_policy(load_target(&engine, &plugin, settings)?)?;
            diff(policy, own_settings, &config, org.as_deref(), json)
        }
        PolicyCommand::Check { plugin, settings } => {
            let loaded = load_target(&engine, &plugin, settings.validated()?)?;
            print_check(&loaded);
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Eval {
            plugin,
            input,
            settings,
            now,
        } => {
            let policy = access_policy(load_target(&engine, &plugin, settings.validated()?)?)?;
            let contexts: Vec<DeviceContextJson> = read_json(&input)?;
            let devices: Vec<types::DeviceContext> = contexts.into_iter().map(Into::into).collect();
            let mut decisions = Vec::with_capacity(devices.len());
            for batch in devices.chunks(1000) {
                let verdicts = policy.decide(&what_if(now), batch)?;
                decisions.extend(verdicts.decisions.iter().map(DecisionJson::from));
            }
            println!("{}", serde_json::to_string_pretty(&decisions)?);
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Test {
            plugin,
            cases,
            settings,
        } => {
            let policy = access_policy(load_target(&engine, &plugin, settings.validated()?)?)?;
            let cases: Vec<TestCase> = read_json(&cases)?;
            let mut failed = 0;
            for case in &cases {
                let info = what_if(case.now.unwrap_or(DEFAULT_NOW));
                let outcome = policy
                    .decide(&info, &[case.input.clone().into()])
                    .map_err(|err| err.to_string())
                    .and_then(|verdicts| {
                        let got = DecisionJson::from(&verdicts.decisions[0]);
                        case.expect.mismatch(&got).map_or(Ok(()), Err)
                    });
                match outcome {
                    Ok(()) => println!("ok    {}", case.name),
                    Err(detail) => {
                        failed += 1;
                        println!("FAIL  {}: {detail}", case.name);
                    }
                }
            }
            println!("{} passed, {failed} failed", cases.len() - failed);
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn diff(
    policy: std::sync::Arc<crate::plugin::AccessPolicyPlugin>,
    own_settings: bool,
    config_path: &Path,
    org: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let config = crate::config::Config::load(config_path)?;
    let orgs: Vec<_> = config
        .organizations
        .iter()
        .filter(|o| org.is_none_or(|name| o.name.eq_ignore_ascii_case(name)))
        .collect();
    if let (Some(name), true) = (org, orgs.is_empty()) {
        bail!("no organization `{name}` in {}", config_path.display());
    }
    // Read-only: a what-if never migrates, recovers or records anything.
    let store = std::sync::Arc::new(
        crate::store::Store::open_read_only(&config.sync.data_dir)
            .context("policy diff reads the store a sync wrote")?,
    );
    let now = crate::timestamp::unix_now();
    let runtime = tokio::runtime::Runtime::new()?;
    for org in orgs {
        let policy = match org.policy.as_ref().filter(|_| own_settings) {
            Some(own) => with_settings_of(&policy, own)
                .with_context(|| format!("organization `{}`", org.name))?,
            None => policy.clone(),
        };
        let diff = runtime.block_on(crate::sync::whatif::diff(
            store.clone(),
            &org.name,
            &org.sync,
            policy,
            now,
        ))?;
        if json {
            println!("{}", serde_json::to_string(&diff)?);
            continue;
        }
        print_diff(&diff);
    }
    Ok(ExitCode::SUCCESS)
}

/// `policy` with an organization's own settings, where it has some (inline or in a file).
fn with_settings_of(
    policy: &std::sync::Arc<crate::plugin::AccessPolicyPlugin>,
    own: &crate::config::OrgPolicy,
) -> anyhow::Result<std::sync::Arc<crate::plugin::AccessPolicyPlugin>> {
    let settings = match (&own.settings, &own.settings_file) {
        (Some(table), _) => serde_json::to_string(table)?,
        (None, Some(file)) => {
            crate::plugin::org_policy::read_settings(file).map_err(anyhow::Error::msg)?
        }
        (None, None) => return Ok(policy.clone()),
    };
    Ok(std::sync::Arc::new(policy.with_settings(settings)?))
}

fn print_diff(diff: &crate::sync::Diff) {
    let counts = |v: &crate::store::VerdictCounts| {
        format!(
            "allow {}, block {}, quarantine {}, exempt {}, undecided {}",
            v.allow, v.block, v.quarantine, v.exempt, v.undecided
        )
    };
    println!(
        "{}: {} stored devices, policy digest {}",
        diff.organization, diff.devices, diff.plugin_digest
    );
    if let Some(note) = diff.directory.note() {
        println!("  note: {note}");
    }
    println!("  stored:    {}", counts(&diff.stored_verdicts));
    println!("  candidate: {}", counts(&diff.verdicts));
    println!("  {} devices change verdict", diff.changes.len());
    for change in &diff.changes {
        println!(
            "  {} ({}): {} -> {} ({})",
            change.key,
            change.device_id,
            change.from.map_or("undecided", |v| v.as_str()),
            change.to.as_str(),
            change.reason
        );
    }
    println!(
        "  {} commands; restrictions {} (limit {}){}",
        diff.commands.len(),
        diff.restrictions,
        diff.restriction_limit,
        if diff.held {
            ", the guard would hold the plan"
        } else {
            ""
        }
    );
    for command in &diff.commands {
        println!(
            "  {}",
            crate::exchange::rest::cmdlet_input(&command.command)
        );
    }
    for error in &diff.errors {
        println!("  ! {error}");
    }
}

/// `builtin:NAME` or a path to a `.wasm` file.
fn load_target(
    engine: &PluginEngine,
    target: &str,
    settings: Option<String>,
) -> anyhow::Result<LoadedPlugin> {
    if let Some(name) = target.strip_prefix("builtin:") {
        let world = match name {
            "access-policy" => World::AccessPolicy,
            "notice-template" => World::NoticeTemplate,
            other => bail!(
                "unknown built-in plugin {other:?}: use builtin:access-policy or builtin:notice-template"
            ),
        };
        return Ok(load_builtin(
            engine,
            world,
            settings.as_deref().unwrap_or("{}"),
        )?);
    }
    let path = Path::new(target);
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read plugin {}", path.display()))?;
    let mut spec = PluginSpec::from_file(path, &bytes)?;
    spec.settings_override = settings;
    Ok(load(engine, spec)?)
}

fn access_policy(
    loaded: LoadedPlugin,
) -> anyhow::Result<std::sync::Arc<crate::plugin::AccessPolicyPlugin>> {
    match loaded {
        LoadedPlugin::Access(policy) => Ok(policy),
        LoadedPlugin::Notice(template) => bail!(
            "plugin {:?} is a notice template; eval and test need an access policy",
            template.meta.name
        ),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid input", path.display()))
}

fn print_check(loaded: &LoadedPlugin) {
    let meta = loaded.meta();
    println!("plugin       {}", meta.name);
    println!("world        {}", meta.world);
    println!("digest       {}", meta.digest);
    match &meta.source {
        crate::plugin::Source::Builtin => println!("source       built-in"),
        crate::plugin::Source::File(path) => println!("source       {}", path.display()),
    }
    println!("exports      {}", meta.exports.join(", "));
    println!("imports      {}", meta.imports.join(", "));
    println!("settings     {}", meta.settings);
    println!(
        "limits       {} ms per call, {} MiB memory",
        meta.limits.timeout.as_millis(),
        meta.limits.memory_bytes >> 20
    );
    println!("self-checks  {} passed", meta.self_checks);
    let compilation = &meta.compilation;
    match compilation.from {
        crate::plugin::CompiledFrom::Wasm => {
            println!("compiled     in {} ms", compilation.took.as_millis())
        }
        crate::plugin::CompiledFrom::Cache => println!(
            "compiled     loaded from the compile cache in {} ms",
            compilation.took.as_millis()
        ),
    }
}
