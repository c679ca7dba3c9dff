//! `easgate device wipe|remove`: an administrator's remote wipe or partnership removal from
//! the command line (the work is in [`crate::admin::actions`]). Without `--yes` it shows the
//! device and asks; a reason is always required. The CLI writes the store, so it runs while no
//! daemon holds it (with a daemon running, use its admin API).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use crate::admin::actions::{self, OrgActions, Target};
use crate::config::Config;
use crate::exchange::ExchangeClient;
use crate::net::HttpSettings;
use crate::plugin::registry::RegistryOptions;
use crate::plugin::{PluginEngine, PluginRegistry};
use crate::store::{ActionResult, DeviceAction, Store};
use crate::sync::{NoticeStage, TemplateSource};

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Remote wipe (`Clear-MobileDevice`): the device resets at its next sync.
    Wipe(WipeArgs),
    /// Delete the device partnership (`Remove-MobileDevice`).
    Remove(ActionArgs),
}

#[derive(Debug, Args)]
pub struct ActionArgs {
    /// The configuration file.
    #[arg(long)]
    config: PathBuf,
    /// The organization the device belongs to.
    #[arg(long)]
    org: String,
    /// The device: its Exchange Identity (`mailbox\ExchangeActiveSyncDevices\…`) or DeviceId.
    #[arg(long)]
    device: String,
    /// Why (kept in the audit record). Required.
    #[arg(long)]
    reason: Option<String>,
    /// Do not ask for confirmation.
    #[arg(long)]
    yes: bool,
}

#[derive(Debug, Args)]
pub struct WipeArgs {
    #[command(flatten)]
    action: ActionArgs,
    /// Wipe only the mail account and its data (`-AccountOnly`), not the whole device.
    #[arg(long)]
    account_only: bool,
}

pub fn run(command: DeviceCommand) -> anyhow::Result<ExitCode> {
    let (args, action) = match command {
        DeviceCommand::Wipe(w) if w.account_only => (w.action, DeviceAction::AccountWipe),
        DeviceCommand::Wipe(w) => (w.action, DeviceAction::Wipe),
        DeviceCommand::Remove(a) => (a, DeviceAction::Remove),
    };
    // Refused before anything is looked up or asked.
    let reason = match args.reason.as_deref().map(str::trim) {
        Some(r) if !r.is_empty() => r.to_owned(),
        _ => bail!("{}", actions::ActionError::NoReason(action)),
    };
    let config = Config::load(&args.config)?;
    let Some(org) = config.organizations.iter().find(|o| o.name == args.org) else {
        bail!(
            "no organization `{}` in {}",
            args.org,
            args.config.display()
        );
    };
    let store = Arc::new(Store::open_writer(&config.sync.data_dir)?);
    // This process is the store's writer: an action left in flight by an earlier one is
    // reported (and not sent again) before this one starts.
    actions::report_interrupted(&store)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let _entered = runtime.enter();
    let http = HttpSettings::from_config(&config.network)?;
    let exchange = ExchangeClient::builder(org, &http)
        .build()
        .with_context(|| format!("organization `{}`: Exchange client", org.name))?;
    let notices = match &config.notify {
        Some(notify) => {
            let registry = Arc::new(PluginRegistry::new(
                PluginEngine::new()?,
                RegistryOptions::from_config(&config),
            )?);
            let template: TemplateSource = Arc::new(move || registry.notice_template());
            let stage = NoticeStage::from_config(org, notify, template.clone())?;
            Some((stage, template))
        }
        None => None,
    };
    let org_actions = OrgActions {
        exchange,
        notices,
        metrics: None,
    };
    let target = runtime.block_on(org_actions.lookup(&org.name, &args.device))?;
    print_target(&target, action);
    if !args.yes && !confirmed(action)? {
        println!("nothing done");
        return Ok(ExitCode::from(1));
    }
    let org_id = store.organization(&org.name, crate::timestamp::unix_now())?;
    let outcome = runtime.block_on(org_actions.perform(
        &store,
        org_id,
        &target,
        action,
        &format!("cli:{}", os_user()),
        &reason,
        crate::timestamp::unix_now(),
    ))?;
    let r = &outcome.record;
    match r.result {
        ActionResult::Done => {
            println!(
                "{}: done (audit record {}); notice: {}",
                action.as_str(),
                r.id,
                outcome.notice
            );
            if let Some(note) = &r.note {
                println!("note: {note}");
            }
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            eprintln!(
                "{}: {} (audit record {}): {}",
                action.as_str(),
                r.result.as_str(),
                r.id,
                r.error.as_deref().unwrap_or("")
            );
            Ok(ExitCode::from(2))
        }
    }
}

fn print_target(t: &Target, action: DeviceAction) {
    let or_unknown = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
    println!("organization: {}", t.organization);
    println!("device:       {}", t.identity);
    println!("device id:    {}", t.device_id);
    println!(
        "user:         {}{}",
        t.user,
        t.user_display_name
            .as_ref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default()
    );
    println!(
        "model:        {} ({})",
        or_unknown(&t.model),
        or_unknown(&t.device_type)
    );
    println!(
        "last sync:    {}",
        t.last_sync.map_or_else(
            || "unknown".to_owned(),
            |s| crate::timestamp::Timestamp(s).to_string()
        )
    );
    println!(
        "notice to:    {}",
        t.recipient
            .as_deref()
            .unwrap_or("nobody (the user's mailbox could not be read)")
    );
    println!("action:       {}", actions::effect(action));
}

/// Asks on the terminal; only `yes` goes ahead.
fn confirmed(action: DeviceAction) -> anyhow::Result<bool> {
    print!("Type `yes` to {} this device: ", action.as_str());
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}

/// Who runs the CLI, for the audit: the login name from the environment with the real uid
/// (which the environment cannot change), e.g. `alice (uid 1000)`.
fn os_user() -> String {
    let name = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into());
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(meta) = std::fs::metadata("/proc/self") {
            return format!("{name} (uid {})", meta.uid());
        }
    }
    name
}
