//! `easgate notice preview`: the notice a user would get about a stored device, rendered by the
//! active template with the organization's settings, printed and never sent.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use crate::config::{Config, Organization};
use crate::notify::{NoticeId, NoticeSettings, OutgoingNotice};
use crate::plugin::registry::RegistryOptions;
use crate::plugin::{NoticeTemplatePlugin, PluginEngine, PluginRegistry};
use crate::store::{DeviceRecord, NoticeStatus, OrgId, OutboxNotice, Store, StoredDecision};
use crate::sync::notices::template_input;
use crate::timestamp::unix_now;

#[derive(Debug, Subcommand)]
pub enum NoticeCommand {
    /// Render the notice a device's user would get, without sending it.
    Preview(PreviewArgs),
}

#[derive(Debug, Args)]
pub struct PreviewArgs {
    /// The device: its Exchange `DeviceId` or its partnership `Identity` (case-insensitive).
    #[arg(long)]
    device: String,
    /// The configuration file.
    #[arg(long)]
    config: PathBuf,
    /// The organization (default: the first one holding the device).
    #[arg(long)]
    org: Option<String>,
}

pub fn run(command: NoticeCommand) -> anyhow::Result<ExitCode> {
    let NoticeCommand::Preview(args) = command;
    let config = Config::load(&args.config)?;
    let Some(notify) = &config.notify else {
        bail!(
            "{} has no [notify] section: notices are off",
            args.config.display()
        );
    };
    // Read-only use of the store: no recovery, which is the sync's business.
    let store = Store::open(&config.sync.data_dir)?;
    let Some((org, org_id, device)) = find_device(&config, &store, &args)? else {
        bail!("no stored device `{}`", args.device);
    };
    let Some(decision) = &device.decision else {
        bail!(
            "device `{}` has no verdict yet: run a sync first",
            args.device
        );
    };
    let notice = preview_notice(&store, org_id, &device, decision)?;
    let settings = NoticeSettings::new(&org.name, &notify.for_organization(org))?;
    let registry =
        PluginRegistry::new(PluginEngine::new()?, RegistryOptions::from_config(&config))?;
    let template = registry.notice_template();
    let rendered = template
        .render(&template_input(&settings, &notice))
        .with_context(|| format!("template {} failed", template.meta.digest.short()))?;
    let input = template_input(&settings, &notice);
    let outgoing = settings.outgoing(
        notice.id.clone(),
        &input.device,
        rendered,
        std::time::SystemTime::now(),
    )?;
    print_preview(&template, decision, &outgoing);
    Ok(ExitCode::SUCCESS)
}

/// The first organization (or the one asked for) holding the device, by key or Exchange id.
fn find_device<'c>(
    config: &'c Config,
    store: &Store,
    args: &PreviewArgs,
) -> anyhow::Result<Option<(&'c Organization, OrgId, DeviceRecord)>> {
    let wanted = args.device.to_lowercase();
    for org in &config.organizations {
        if args
            .org
            .as_ref()
            .is_some_and(|name| !name.eq_ignore_ascii_case(&org.name))
        {
            continue;
        }
        let id = store.organization(&org.name, unix_now())?;
        let device = store.devices(id)?.into_iter().find(|d| {
            d.key.as_str() == wanted || d.exchange.device_id.eq_ignore_ascii_case(&wanted)
        });
        if let Some(device) = device {
            return Ok(Some((org, id, device)));
        }
    }
    Ok(None)
}

/// The notice the outbox would hold for the device's verdict, never stored.
fn preview_notice(
    store: &Store,
    org_id: OrgId,
    device: &DeviceRecord,
    decision: &StoredDecision,
) -> anyhow::Result<OutboxNotice> {
    // The user's address is the one the outbox recorded for the device's latest notice; a
    // device never noticed falls back to its mailbox as Exchange names it.
    let latest = store
        .notices(org_id, usize::MAX)?
        .into_iter()
        .find(|n| n.key == device.key);
    let (recipient, upn, locale) = match &latest {
        Some(n) => (
            n.recipient.clone(),
            n.user_principal_name.clone(),
            n.locale.clone(),
        ),
        None => (
            device.exchange.mailbox.clone().unwrap_or_default(),
            None,
            String::new(),
        ),
    };
    Ok(OutboxNotice {
        id: NoticeId::new("preview").expect("a valid id"),
        org: org_id,
        run: Some(decision.run),
        key: device.key.clone(),
        device_id: device.exchange.device_id.clone(),
        state: decision.verdict,
        reason: decision.reason.clone(),
        recipient,
        user_principal_name: upn,
        locale,
        exchange: device.exchange.clone(),
        managed: device.managed.clone(),
        status: NoticeStatus::Pending,
        attempts: 0,
        next_attempt_at: 0,
        last_error: None,
        template_digest: None,
        response: None,
        created_at: decision.decided_at,
        sent_at: None,
    })
}

/// Prints the notice as a mail client would show it.
fn print_preview(
    template: &NoticeTemplatePlugin,
    decision: &StoredDecision,
    outgoing: &OutgoingNotice,
) {
    println!(
        "Template: {} ({})",
        template.meta.name,
        template.meta.digest.short()
    );
    println!(
        "Verdict: {} ({})",
        decision.verdict.as_str(),
        decision.reason
    );
    println!("From: {}", outgoing.from);
    println!("To: {}", outgoing.recipients.to);
    for cc in &outgoing.recipients.cc {
        println!("Cc: {cc}");
    }
    println!("Subject: {}", outgoing.rendered.subject);
    println!("\n--- text ---\n{}", outgoing.rendered.text);
    println!("\n--- html ---\n{}", outgoing.rendered.html);
}
